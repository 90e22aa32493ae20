#!/usr/bin/env bash
# Codes stored in a file and played back later.
#
#   pipelines/mimi-store.sh encode IN CODES.gdp   audio file -> codes file
#   pipelines/mimi-store.sh decode CODES.gdp OUT.wav   codes file -> WAV
#
# The codes file uses GStreamer's data protocol (gdppay/gdpdepay), which keeps
# the audio/x-mimi caps and every frame's timestamp: any GStreamer app can
# read it back with `filesrc ! gdpdepay`.  Its size is ~2.6 kB per second
# (16 bytes of codes + framing per 80 ms frame, for 8 codebooks).
set -euo pipefail
source "$(dirname "$0")/env.sh"
case "${1:-}" in
  encode)
    gst-launch-1.0 -q filesrc location="$2" ! decodebin ! audioconvert ! audioresample \
      ! audio/x-raw,rate=24000,channels=1 \
      ! mimienc model="$MIMI_MODEL" codebooks="${CODEBOOKS:-8}" quantize="${QUANTIZE:-none}" \
      ! gdppay ! filesink location="$3"
    echo "wrote $3 ($(stat -c %s "$3") bytes)";;
  decode)
    gst-launch-1.0 -q filesrc location="$2" ! gdpdepay \
      ! mimidec model="$MIMI_MODEL" quantize="${QUANTIZE:-none}" ! audioconvert ! wavenc ! filesink location="$3"
    echo "wrote $3";;
  *)
    echo "usage: $0 encode IN CODES.gdp | decode CODES.gdp OUT.wav" >&2; exit 2;;
esac
