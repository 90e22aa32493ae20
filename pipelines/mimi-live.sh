#!/usr/bin/env bash
# Live: microphone -> Mimi codes -> speakers, 80 ms frames.  Listen to what
# the codec keeps of your voice at ~1.1 kbps.  Total algorithmic latency is
# one frame (80 ms) plus the audio devices' buffering.
#
# Usage: pipelines/mimi-live.sh      (Ctrl-C to stop)
#   MIMI_MODEL, CODEBOOKS, THREADS as in mimi-roundtrip.sh.
set -euo pipefail
source "$(dirname "$0")/env.sh"
exec gst-launch-1.0 \
  autoaudiosrc ! audioconvert ! audioresample \
  ! audio/x-raw,rate=24000,channels=1 \
  ! mimienc model="$MIMI_MODEL" codebooks="${CODEBOOKS:-8}" quantize="${QUANTIZE:-none}" threads="${THREADS:-1}" \
  ! mimidec model="$MIMI_MODEL" quantize="${QUANTIZE:-none}" threads="${THREADS:-1}" \
  ! audioconvert ! audioresample ! autoaudiosink
