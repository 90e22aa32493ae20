#!/usr/bin/env bash
# Live conversation with Moshi: microphone -> mimienc -> moshilm -> mimidec
# -> speakers, and Moshi's words printed on stdout as it says them.
#
# Moshi is full duplex: it listens and speaks at the same time, one 80 ms
# frame for every frame it hears.  Latency from your voice to its reply is
# mimienc's 80 ms + moshilm's 160 ms (one frame of acoustic delay + one
# frame of compute budget) + mimidec's 80 ms + the audio devices.  When the
# CPU cannot run a step in 80 ms, moshilm warns (and posts QoS) once per
# second with the lag; it never drops frames.  Use headphones: Moshi hears
# what the speakers play.
#
# Usage: pipelines/moshi-dialog-live.sh      (Ctrl-C to stop)
#   MOSHI_MODEL   the LM (see env.sh; default: Kyutai's Moshi in the HF cache)
#   MIMI_MODEL    the codec (must be the one the LM was trained with)
#   QUANTIZE      none, bf16 or q8 (default q8: 7B weights in real time need
#                 the smaller memory traffic), THREADS (default: all cores)
#   TEMPERATURE, TEMPERATURE_TEXT, TOP_K, TOP_K_TEXT (default -1: the
#                 model's own settings), SEED
#   AUDIO_SRC / AUDIO_SINK  replace autoaudiosrc / autoaudiosink (e.g. for
#                 tests: "audiotestsrc num-buffers=50 is-live=true")
set -euo pipefail
MOSHI_USE_LM=1
source "$(dirname "$0")/env.sh"
THREADS="${THREADS:-$(nproc)}"
[ "$THREADS" -gt 64 ] && THREADS=64
# shellcheck disable=SC2086 # AUDIO_SRC / AUDIO_SINK are pipeline fragments
exec gst-launch-1.0 -q \
  ${AUDIO_SRC:-autoaudiosrc} ! audioconvert ! audioresample \
  ! audio/x-raw,rate=24000,channels=1 \
  ! mimienc model="$MIMI_MODEL" codebooks=8 quantize="${QUANTIZE:-q8}" threads=1 \
  ! moshilm name=lm model="$MOSHI_MODEL" quantize="${QUANTIZE:-q8}" threads="$THREADS" \
      temperature="${TEMPERATURE:--1}" temperature-text="${TEMPERATURE_TEXT:--1}" \
      top-k="${TOP_K:--1}" top-k-text="${TOP_K_TEXT:--1}" seed="${SEED:-42}" \
  ! queue ! mimidec model="$MIMI_MODEL" quantize="${QUANTIZE:-q8}" threads=1 \
  ! audioconvert ! audioresample ! ${AUDIO_SINK:-autoaudiosink} \
  lm.text_src ! queue ! fdsink fd=1 sync=false
