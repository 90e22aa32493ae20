#!/usr/bin/env bash
# The accessibility rig, from files: what a camera saw (VIDEO) and what its
# user said (AUDIO) in, the model's spoken replies (OUT.wav) and its words
# (OUT.srt) out.  The same pipeline as moshivis-rig-live.sh with files for
# the camera and the microphone; the tests run it.
#
#   VIDEO -> decodebin -> videoconvert -> videoscale -> moshivis --------.
#           (a new look every INTERVAL seconds or on a scene change)     v
#   AUDIO -> decodebin -> 24 kHz mono -> mimienc -> moshilm.vision_sink
#                                                -> moshilm -> mimidec -> OUT.wav
#                                                        `-> text -> OUT.srt
#
# From files, each picture reaches the model when the conversation reaches
# the picture's time (moshilm holds it until then; the video branch waits),
# so the replies are the same however fast the CPU is.  AUDIO may be the
# video file itself when it has a sound track.
#
# Usage: pipelines/moshivis-rig-file.sh VIDEO AUDIO OUT.wav OUT.srt
#   INTERVAL (seconds between looks, default 2), SCENE (scene-change
#   threshold 0..1, default 0.15), plus the variables of
#   moshivis-describe.sh.
set -euo pipefail
MOSHI_USE_VIS=1
source "$(dirname "$0")/env.sh"
VIDEO="${1:?usage: $0 VIDEO AUDIO OUT.wav OUT.srt}"
AUDIO="${2:?usage: $0 VIDEO AUDIO OUT.wav OUT.srt}"
OUT="${3:?usage: $0 VIDEO AUDIO OUT.wav OUT.srt}"
SRT="${4:?usage: $0 VIDEO AUDIO OUT.wav OUT.srt}"
if [ ! -x "${MOSHI_SRT_LAUNCH:-}" ]; then
  echo "moshi-srt-launch not found: build the project (meson compile -C build)" >&2
  exit 1
fi
THREADS="${THREADS:-$(nproc)}"
INTERVAL_NS=$(awk -v s="${INTERVAL:-2}" 'BEGIN { printf "%d", s * 1000000000 }')
GREEDY_ARG=false
[ -n "${GREEDY:-}" ] && [ "${GREEDY}" != 0 ] && GREEDY_ARG=true
CROP=false
[ -n "${CENTER_CROP:-}" ] && [ "${CENTER_CROP}" != 0 ] && CROP=true
"$MOSHI_SRT_LAUNCH" "$SRT" \
  filesrc location="$VIDEO" ! decodebin ! videoconvert ! videoscale \
  ! video/x-raw,format=RGB \
  ! moshivis model="$MOSHIVIS_MODEL" threads="$THREADS" center-crop="$CROP" \
      interval="$INTERVAL_NS" scene-threshold="${SCENE:-0.15}" \
  ! lm.vision_sink \
  filesrc location="$AUDIO" ! decodebin ! audioconvert ! audioresample \
  ! audio/x-raw,rate=24000,channels=1 \
  ! mimienc model="$MIMI_MODEL" codebooks=8 quantize="${QUANTIZE:-none}" \
  ! moshilm name=lm model="$MOSHI_MODEL" quantize="${QUANTIZE:-none}" \
      threads="$THREADS" xa-start="${XA_START:-16}" seed="${SEED:-42}" \
      greedy="$GREEDY_ARG" \
  ! queue ! mimidec model="$MIMI_MODEL" quantize="${QUANTIZE:-none}" \
  ! audioconvert ! wavenc ! filesink location="$OUT" \
  lm.text_src ! queue ! appsink name=srt
echo "wrote $OUT and $SRT" >&2
