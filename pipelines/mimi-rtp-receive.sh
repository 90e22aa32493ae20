#!/usr/bin/env bash
# Receiver half of "codes over the network": UDP -> RTP jitter buffer ->
# rtpgstdepay (recovers audio/x-mimi caps) -> mimidec -> speakers, or a WAV
# file when OUT is given.
#
# Usage: pipelines/mimi-rtp-receive.sh [OUT.wav]    PORT (default 5004)
set -euo pipefail
source "$(dirname "$0")/env.sh"
if [ -n "${1:-}" ]; then
  SINK="audioconvert ! wavenc ! filesink location=$1"
  EOS="-e"
else
  SINK="audioconvert ! audioresample ! autoaudiosink"
  EOS=""
fi
exec gst-launch-1.0 $EOS \
  udpsrc port="${PORT:-5004}" \
    caps="application/x-rtp,media=application,clock-rate=90000,encoding-name=X-GST" \
  ! rtpjitterbuffer latency=100 ! rtpgstdepay \
  ! mimidec model="$MIMI_MODEL" quantize="${QUANTIZE:-none}" ! $SINK
