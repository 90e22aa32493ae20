#!/usr/bin/env bash
# Offline conversation: Moshi listens to a recording of the caller and
# answers.  Writes Moshi's voice as a WAV and its words as SubRip subtitles
# with the time each piece of text was said.
#
#   IN (any audio file) -> 24 kHz mono -> mimienc -> moshilm -> mimidec -> OUT.wav
#                                                       `-> text -> OUT.srt
#
# The reply is on the caller's time line (moshilm stamps each frame with
# the time of the input frame it answers) and as long as the input, rounded
# up to whole 80 ms frames.  Mix IN and OUT.wav to hear the conversation.
#
# SubRip: Debian's GStreamer has a SubRip parser (subparse) but no writer,
# so the pipeline runs in moshi-srt-launch (pipelines/moshi-srt-launch.c,
# built with the project): gst-launch-1.0 plus an appsink named "srt" whose
# text becomes cues (pieces joined into phrases, split at pauses of 1 s and
# at sentence ends).
#
# As after a demuxer, each branch after moshilm starts with a queue: both
# lead to sinks, and a sink waiting for its first buffer (preroll) must not
# hold the thread that feeds the other one.
#
# Usage: pipelines/moshi-dialog-file.sh IN OUT.wav OUT.srt
#   MOSHI_MODEL, MIMI_MODEL, QUANTIZE (default none), THREADS (default: all
#   cores), TEMPERATURE, TEMPERATURE_TEXT, TOP_K, TOP_K_TEXT, SEED as in
#   moshi-dialog-live.sh; GREEDY=1 for deterministic replies.
set -euo pipefail
MOSHI_USE_LM=1
source "$(dirname "$0")/env.sh"
IN="${1:?usage: $0 IN OUT.wav OUT.srt}"
OUT="${2:?usage: $0 IN OUT.wav OUT.srt}"
SRT="${3:?usage: $0 IN OUT.wav OUT.srt}"
if [ ! -x "${MOSHI_SRT_LAUNCH:-}" ]; then
  echo "moshi-srt-launch not found: build the project (meson compile -C build)" \
       "or set MOSHI_SRT_LAUNCH=/path/to/moshi-srt-launch" >&2
  exit 1
fi
THREADS="${THREADS:-$(nproc)}"
[ "$THREADS" -gt 64 ] && THREADS=64
GREEDY_ARG=false
[ -n "${GREEDY:-}" ] && [ "${GREEDY}" != 0 ] && GREEDY_ARG=true
"$MOSHI_SRT_LAUNCH" "$SRT" \
  filesrc location="$IN" ! decodebin ! audioconvert ! audioresample \
  ! audio/x-raw,rate=24000,channels=1 \
  ! mimienc model="$MIMI_MODEL" codebooks=8 quantize="${QUANTIZE:-none}" \
  ! moshilm name=lm model="$MOSHI_MODEL" quantize="${QUANTIZE:-none}" threads="$THREADS" \
      temperature="${TEMPERATURE:--1}" temperature-text="${TEMPERATURE_TEXT:--1}" \
      top-k="${TOP_K:--1}" top-k-text="${TOP_K_TEXT:--1}" seed="${SEED:-42}" \
      greedy="$GREEDY_ARG" \
  ! queue ! mimidec model="$MIMI_MODEL" quantize="${QUANTIZE:-none}" \
  ! audioconvert ! wavenc ! filesink location="$OUT" \
  lm.text_src ! queue ! appsink name=srt
echo "wrote $OUT and $SRT" >&2
