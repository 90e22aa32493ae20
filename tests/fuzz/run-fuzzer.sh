#!/usr/bin/env bash
# run-fuzzer.sh FUZZER SEED_DIR WORK_DIR SECONDS
# New inputs go to WORK_DIR (in the build tree), never into the seed corpus.
set -eu
mkdir -p "$3"
exec "$1" "$3" "$2" -max_total_time="$4" -rss_limit_mb=2048 -timeout=10 \
  -max_len=65536 -print_final_stats=1
