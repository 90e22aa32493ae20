#!/usr/bin/env bash
# Sender half of "codes over the network": audio -> mimienc -> RTP (generic
# GStreamer payload, caps sent in-band) -> UDP.  Run mimi-rtp-receive.sh
# first, with the same PORT.
#
# Usage: pipelines/mimi-rtp-send.sh [IN]   (default: the bundled sample;
#        IN=live for the microphone).  HOST (default 127.0.0.1), PORT (5004).
#
# Payload per 80 ms frame: 8 codebooks x 16-bit = 16 bytes (the information
# is 8 x 11 bits = 88 bits, i.e. 1.1 kbps); RTP/UDP/IP headers dominate.
set -euo pipefail
source "$(dirname "$0")/env.sh"
IN="${1:-$ROOT/pipelines/samples/hello.wav}"
if [ "$IN" = live ]; then
  SRC="autoaudiosrc"
else
  SRC="filesrc location=$IN ! decodebin"
fi
exec gst-launch-1.0 \
  $SRC ! audioconvert ! audioresample ! audio/x-raw,rate=24000,channels=1 \
  ! mimienc model="$MIMI_MODEL" codebooks="${CODEBOOKS:-8}" quantize="${QUANTIZE:-none}" \
  ! rtpgstpay config-interval=1 \
  ! udpsink host="${HOST:-127.0.0.1}" port="${PORT:-5004}" sync=true
