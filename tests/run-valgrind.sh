#!/usr/bin/env bash
# run-valgrind.sh BUILDDIR [PROGRAM[:CHECKS] ...]
# valgrind memcheck over the GStreamer element tests of a release (not
# sanitized) build: any invalid access, use of uninitialised memory or
# definite leak fails.  Default programs: test-elements (a subset of its
# checks, to bound the time), test-moshilm and test-stall, two at a time.
# CHECKS is a comma-separated GST_CHECKS list (all when absent).
# Logs: BUILDDIR/meson-logs/valgrind-PROGRAM.log.  Last line:
# "valgrind: N passed, N failed"; exit status 1 when any failed.
set -uo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:?usage: run-valgrind.sh BUILDDIR [PROGRAM[:CHECKS]...]}" && pwd)
shift
if [ $# = 0 ]; then
  # The mimienc/mimidec checks that cover each code path once on mimi-tiny
  # (the mimi-small and multi-thread variants add minutes, not paths).
  set -- "test-elements:test_properties,test_enc_caps,test_enc_fewer_codebooks,test_enc_eos_padding,test_enc_discont,test_enc_flush,test_enc_wrong_caps,test_missing_model,test_dec_multiframe,test_dec_discont_and_flush,test_dec_wrong_caps,test_dec_bad_buffers,test_dec_fuzz,test_cache_shared,test_resolve_file_and_folder" \
    test-moshilm test-stall
fi
command -v valgrind >/dev/null || { echo "valgrind: not installed"; echo "valgrind: 0 passed, 1 failed"; exit 1; }

export MOSHI_TEST_DATA=$src/tests/data
export GST_PLUGIN_PATH=$build/elements
export GST_REGISTRY_FORK=no
export CK_FORK=no CK_DEFAULT_TIMEOUT=1800
mkdir -p "$build/meson-logs"

run_one() {   # run_one PROGRAM[:CHECKS]
  local prog=${1%%:*} checks="" log
  [ "$prog" != "$1" ] && checks=${1#*:}
  log=$build/meson-logs/valgrind-$prog.log
  export GST_REGISTRY=$build/tests/$prog-valgrind-registry.bin
  # Build the registry outside valgrind: scanning every system plugin
  # inside it takes minutes and is not what we test.
  GST_CHECKS=__registry_only__ "$build/tests/$prog" >/dev/null 2>&1
  local t0=$SECONDS
  GST_CHECKS=$checks G_SLICE=always-malloc G_DEBUG=gc-friendly \
    valgrind --error-exitcode=1 --leak-check=full \
      --errors-for-leak-kinds=definite --show-leak-kinds=definite \
      --num-callers=40 \
      --suppressions=/usr/share/glib-2.0/valgrind/glib.supp \
      --suppressions="$src/tests/valgrind.supp" \
      "$build/tests/$prog" >"$log" 2>&1
  local rc=$?
  if [ $rc = 0 ] && grep -q "100%: Checks" "$log"; then
    echo "valgrind $prog: ok ($((SECONDS - t0)) s, $(grep -o 'Checks: [0-9]*' "$log"))"
    return 0
  fi
  echo "valgrind $prog: FAILED (exit $rc), see $log"
  grep -E "^==[0-9]+== (Invalid|Conditional|Use of|Syscall|Mismatched|.*definitely lost)|Failures: [1-9]|Checks:" -A8 "$log" | head -60
  return 1
}

passed=0
failed=0
declare -A name_of=()
reap() {   # waits for any one run, counts it and shows its summary
  local pid
  if wait -n -p pid; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
  cat "$build/meson-logs/valgrind-${name_of[$pid]}.out"
  unset "name_of[$pid]"
}
for p in "$@"; do
  # Two at a time (two cores).
  while [ ${#name_of[@]} -ge 2 ]; do reap; done
  run_one "$p" >"$build/meson-logs/valgrind-${p%%:*}.out" 2>&1 &
  name_of[$!]=${p%%:*}
done
while [ ${#name_of[@]} -gt 0 ]; do reap; done
echo "valgrind: $passed passed, $failed failed"
[ "$failed" = 0 ]
