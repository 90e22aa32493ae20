#!/usr/bin/env bash
# The accessibility rig: a camera and a microphone; the user asks "what
# does this label say?" and MoshiVis answers out loud while its words are
# shown on the camera picture.
#
#   camera -> tee -> videoconvert -> textoverlay (the model's words) -> screen
#              `-> queue (leaky) -> videoscale -> moshivis --------------.
#                  (a new look every INTERVAL s or on a scene change)     v
#   microphone -> 24 kHz mono -> mimienc -> moshilm.vision_sink
#                                        -> moshilm -> mimidec -> speakers
#                                                `-> text -> textoverlay
#
# moshivis encodes off the video thread and only when asked, so the
# picture on screen never waits for the model; the leaky queue in front of
# it drops frames it has no use for.  moshilm takes the newest picture at
# its next 80 ms step and keeps the conversation going.  Stop with Ctrl-C.
#
# Usage: pipelines/moshivis-rig-live.sh
#   VIDEO_SRC (default "v4l2src"; e.g. "videotestsrc is-live=true"),
#   AUDIO_SRC (default "autoaudiosrc"), VIDEO_SINK (default
#   "autovideosink"), AUDIO_SINK (default "autoaudiosink"), INTERVAL
#   (default 3 s), SCENE (default 0.15), and the variables of
#   moshivis-describe.sh (QUANTIZE=q4 is advised for real time).
set -euo pipefail
MOSHI_USE_VIS=1
source "$(dirname "$0")/env.sh"
THREADS="${THREADS:-$(nproc)}"
INTERVAL_NS=$(awk -v s="${INTERVAL:-3}" 'BEGIN { printf "%d", s * 1000000000 }')
CROP=false
[ -n "${CENTER_CROP:-}" ] && [ "${CENTER_CROP}" != 0 ] && CROP=true
# shellcheck disable=SC2086  # the *_SRC/*_SINK variables are pipeline text
exec gst-launch-1.0 -e \
  ${VIDEO_SRC:-v4l2src} ! videoconvert ! tee name=cam \
  cam. ! queue ! videoconvert ! textoverlay name=ov valignment=bottom \
      wait-text=false ! videoconvert ! ${VIDEO_SINK:-autovideosink} \
  cam. ! queue leaky=downstream max-size-buffers=1 ! videoconvert ! videoscale \
  ! video/x-raw,format=RGB \
  ! moshivis model="$MOSHIVIS_MODEL" threads=1 center-crop="$CROP" \
      interval="$INTERVAL_NS" scene-threshold="${SCENE:-0.15}" \
  ! lm.vision_sink \
  ${AUDIO_SRC:-autoaudiosrc} ! audioconvert ! audioresample \
  ! audio/x-raw,rate=24000,channels=1 \
  ! mimienc model="$MIMI_MODEL" codebooks=8 quantize="${QUANTIZE:-none}" \
  ! moshilm name=lm model="$MOSHI_MODEL" quantize="${QUANTIZE:-none}" \
      threads="$THREADS" xa-start="${XA_START:-16}" seed="${SEED:-42}" \
  ! queue ! mimidec model="$MIMI_MODEL" quantize="${QUANTIZE:-none}" \
  ! audioconvert ! audioresample ! ${AUDIO_SINK:-autoaudiosink} \
  lm.text_src ! queue ! ov.text_sink
