#!/usr/bin/env bash
# File round trip through the Mimi codec:
#   any audio file -> 24 kHz mono -> mimienc (8 codebooks, 12.5 frames/s,
#   1.1 kbps of information) -> mimidec -> WAV.
#
# Usage: pipelines/mimi-roundtrip.sh [IN] [OUT.wav]
#   IN defaults to pipelines/samples/hello.wav, OUT to /tmp/mimi-roundtrip.wav.
#   MIMI_MODEL, CODEBOOKS (1..32, default 8), THREADS and QUANTIZE (none,
#   bf16, q8: faster, with a small error) may be set.
set -euo pipefail
source "$(dirname "$0")/env.sh"
IN="${1:-$ROOT/pipelines/samples/hello.wav}"
OUT="${2:-/tmp/mimi-roundtrip.wav}"
gst-launch-1.0 -q \
  filesrc location="$IN" ! decodebin ! audioconvert ! audioresample \
  ! audio/x-raw,rate=24000,channels=1 \
  ! mimienc model="$MIMI_MODEL" codebooks="${CODEBOOKS:-8}" quantize="${QUANTIZE:-none}" threads="${THREADS:-1}" \
  ! mimidec model="$MIMI_MODEL" quantize="${QUANTIZE:-none}" threads="${THREADS:-1}" \
  ! audioconvert ! wavenc ! filesink location="$OUT"
echo "wrote $OUT"
