#!/usr/bin/env bash
# "What is in this picture?": MoshiVis looks at one image and answers a
# spoken question about it.  Writes the spoken answer as a WAV and the
# words as SubRip subtitles, and says how much the model looked at the
# picture (its cross-attention gates).
#
#   IMAGE (JPEG, PNG, ...) -> decodebin -> imagefreeze -> videoconvert
#       -> videoscale (to the model's square, 448x448) -> moshivis ----.
#                                                                      v
#   QUESTION (any audio) -> 24 kHz mono -> mimienc -> moshilm.vision_sink
#                                                  -> moshilm -> mimidec -> OUT.wav
#                                                          `-> text -> OUT.srt
#
# imagefreeze hands the single decoded picture on as one video frame (its
# num-buffers=1): moshivis encodes it once, moshilm computes its keys and
# values once and attends to it from step XA_START (default 16 = 1.28 s,
# Kyutai's "gate delay") until the end of the answer.
#
# Usage: pipelines/moshivis-describe.sh IMAGE QUESTION OUT.wav OUT.srt
#   MOSHIVIS_MODEL (file, folder or Hugging Face repo id; default
#   kyutai/moshika-vis-pytorch-bf16 from the local cache, else the tiny
#   random-weight test model), MIMI_MODEL, QUANTIZE (none, bf16, q8, q4),
#   THREADS, XA_START, CENTER_CROP=1 (keep the aspect ratio), GREEDY=1,
#   SEED.
set -euo pipefail
MOSHI_USE_VIS=1
source "$(dirname "$0")/env.sh"
IMAGE="${1:?usage: $0 IMAGE QUESTION OUT.wav OUT.srt}"
QUESTION="${2:?usage: $0 IMAGE QUESTION OUT.wav OUT.srt}"
OUT="${3:?usage: $0 IMAGE QUESTION OUT.wav OUT.srt}"
SRT="${4:?usage: $0 IMAGE QUESTION OUT.wav OUT.srt}"
if [ ! -x "${MOSHI_SRT_LAUNCH:-}" ]; then
  echo "moshi-srt-launch not found: build the project (meson compile -C build)" >&2
  exit 1
fi
THREADS="${THREADS:-$(nproc)}"
GREEDY_ARG=false
[ -n "${GREEDY:-}" ] && [ "${GREEDY}" != 0 ] && GREEDY_ARG=true
CROP=false
[ -n "${CENTER_CROP:-}" ] && [ "${CENTER_CROP}" != 0 ] && CROP=true
"$MOSHI_SRT_LAUNCH" "$SRT" \
  filesrc location="$IMAGE" ! decodebin ! imagefreeze num-buffers=1 \
  ! videoconvert ! videoscale ! video/x-raw,format=RGB \
  ! moshivis model="$MOSHIVIS_MODEL" threads="$THREADS" center-crop="$CROP" \
  ! lm.vision_sink \
  filesrc location="$QUESTION" ! decodebin ! audioconvert ! audioresample \
  ! audio/x-raw,rate=24000,channels=1 \
  ! mimienc model="$MIMI_MODEL" codebooks=8 quantize="${QUANTIZE:-none}" \
  ! moshilm name=lm model="$MOSHI_MODEL" quantize="${QUANTIZE:-none}" \
      threads="$THREADS" xa-start="${XA_START:-16}" seed="${SEED:-42}" \
      greedy="$GREEDY_ARG" \
  ! queue ! mimidec model="$MIMI_MODEL" quantize="${QUANTIZE:-none}" \
  ! audioconvert ! wavenc ! filesink location="$OUT" \
  lm.text_src ! queue ! appsink name=srt
echo "wrote $OUT and $SRT" >&2
