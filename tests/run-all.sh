#!/usr/bin/env bash
# The whole test suite, as CI runs it, on a fresh Debian bookworm machine:
#   1. install the Debian packages (.ci/install-deps.sh)
#   2. release build + every test (unit, conformance, elements, pipelines)
#   3. valgrind memcheck over the element tests of the release build
#      (tests/run-valgrind.sh, about 2 minutes)
#   4. AddressSanitizer + UBSan build + the same tests
#   5. formatting check (clang-format, .clang-format at the top)
# Ends with one line "tests: N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
bash .ci/install-deps.sh || { echo "dependency installation failed"; exit 1; }

passed=0
failed=0
count() {   # count <meson testlog.json>
  local log=$1
  [ -f "$log" ] || return
  local ok bad
  ok=$(grep -c '"result": "OK"' "$log" || true)
  bad=$(grep -c -E '"result": "(FAIL|ERROR|TIMEOUT|UNEXPECTEDPASS)"' "$log" || true)
  passed=$((passed + ok))
  failed=$((failed + bad))
}

run_suite() {   # run_suite <builddir> <meson setup args...>
  local dir=$1; shift
  if [ ! -f "$dir/build.ninja" ]; then
    meson setup "$dir" "$@" >/dev/null || { echo "meson setup $dir failed"; failed=$((failed + 1)); return; }
  fi
  if ! meson compile -C "$dir"; then
    echo "build in $dir failed"; failed=$((failed + 1)); return
  fi
  meson test -C "$dir" --print-errorlogs --num-processes 2 || true
  count "$dir/meson-logs/testlog.json"
}

echo "== release build and tests"
run_suite build
echo "== valgrind (memcheck) over the element tests"
if [ -f build/build.ninja ]; then
  bash tests/run-valgrind.sh build | tee /tmp/valgrind.log
  vg=$(grep -E '^valgrind: [0-9]+ passed, [0-9]+ failed' /tmp/valgrind.log | tail -1)
  if [ -n "$vg" ]; then
    passed=$((passed + $(echo "$vg" | awk '{print $2}')))
    failed=$((failed + $(echo "$vg" | awk '{print $4}')))
  else
    failed=$((failed + 1)); echo "valgrind: no summary"
  fi
fi
echo "== AddressSanitizer + UndefinedBehaviorSanitizer build and tests"
# Full unwinding: GLib is built without frame pointers, and the suppressions
# for its start-up allocations need the whole stack to match.
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:fast_unwind_on_malloc=0
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export LSAN_OPTIONS=suppressions=$PWD/tests/lsan.supp
run_suite build-asan -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debugoptimized

echo "== formatting (clang-format)"
if git ls-files '*.c' '*.h' | grep -v '^tests/data/' | xargs clang-format --dry-run -Werror 2>/tmp/format.log; then
  passed=$((passed + 1)); echo "format: ok"
else
  failed=$((failed + 1)); head -40 /tmp/format.log; echo "format: files need clang-format -i"
fi

echo "tests: $passed passed, $failed failed"
[ "$failed" = 0 ]
