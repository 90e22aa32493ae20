#!/usr/bin/env bash
# Live captions: Kyutai's speech-to-text model (kyutai/stt-1b-en_fr or
# stt-2.6b-en) transcribes a programme's audio; the words are burned into
# the picture and written as SubRip subtitles.
#
#   audio -> 24 kHz mono -> mimienc -> moshilm (STT) --text--> textoverlay -> VP8 -.
#     |                                                 `--> OUT.srt               +-> OUT.webm
#     `-------------------------------------------------------------> Opus -------'
#   video (videotestsrc, or VIDEO_SRC) --------------------> textoverlay
#
# moshilm runs an STT model as its config.json says (model_type "stt"): text
# only on text_src, stamped with the time the words were SPOKEN (the model
# writes them audio_delay_seconds later, 0.5 s for stt-1b-en_fr; moshilm
# takes the delay off the timestamps and reports it in its latency), so the
# captions line up with the speech; at the end of the audio it feeds Mimi
# silence for the delay, as Kyutai's scripts do, so the last words come out.
# Its src pad carries no data in this kind and stays unlinked.
#
# Usage: pipelines/live-captions.sh IN OUT.webm OUT.srt
#   IN: any audio file (its audio is transcribed; the picture is a test
#       pattern unless VIDEO_SRC gives a video source, e.g.
#       VIDEO_SRC="filesrc location=talk.mp4 ! decodebin ! videoconvert").
#   Live: AUDIO_SRC="autoaudiosrc" (IN is then ignored, give "-") with
#       DURATION=seconds, or stop it with Ctrl-C.
#   MOSHI_MODEL (an STT repo, folder or file; default kyutai/stt-1b-en_fr,
#   then stt-2.6b-en from the Hugging Face cache, else the tiny random-weight
#   tests/data/stt-tiny whose captions are NOT meaningful), MIMI_MODEL,
#   QUANTIZE (none), THREADS (all cores), CODEBOOKS (32; 16 for the tiny).
set -euo pipefail
MOSHI_USE_LM=1
MOSHI_LM_KIND=stt
source "$(dirname "$0")/env.sh"
IN="${1:?usage: $0 IN OUT.webm OUT.srt}"
OUT="${2:?usage: $0 IN OUT.webm OUT.srt}"
SRT="${3:?usage: $0 IN OUT.webm OUT.srt}"
if [ ! -x "${MOSHI_SRT_LAUNCH:-}" ]; then
  echo "moshi-srt-launch not found: build the project (meson compile -C build)" \
       "or set MOSHI_SRT_LAUNCH=/path/to/moshi-srt-launch" >&2
  exit 1
fi
THREADS="${THREADS:-$(nproc)}"
[ "$THREADS" -gt 64 ] && THREADS=64
CODEBOOKS="${CODEBOOKS:-32}"
[ "$MOSHI_LM_IS_TINY" = 1 ] && CODEBOOKS=16
LIVE=false
if [ -n "${AUDIO_SRC:-}" ]; then
  AUDIO="$AUDIO_SRC"
  LIVE=true
  SECONDS_IN="${DURATION:-36000}"
else
  AUDIO="filesrc location=\"$IN\" ! decodebin"
  # The test pattern lasts as long as the audio: measure it (8 kHz mono S16).
  tmp=$(mktemp)
  gst-launch-1.0 -q filesrc location="$IN" ! decodebin ! audioconvert \
    ! audioresample ! audio/x-raw,format=S16LE,rate=8000,channels=1 \
    ! filesink location="$tmp"
  SECONDS_IN=$(( ($(stat -c %s "$tmp") + 15999) / 16000 ))
  rm -f "$tmp"
fi
VIDEO="${VIDEO_SRC:-videotestsrc is-live=$LIVE pattern=smpte num-buffers=$((SECONDS_IN * 25))}"
eval "\"\$MOSHI_SRT_LAUNCH\" \"\$SRT\" \
  $AUDIO ! audioconvert ! audioresample ! audio/x-raw,rate=24000,channels=1 \
  ! tee name=a \
  a. ! queue ! mimienc model=\"\$MIMI_MODEL\" codebooks=$CODEBOOKS \
    quantize=\"${QUANTIZE:-none}\" \
  ! moshilm name=lm model=\"\$MOSHI_MODEL\" quantize=\"${QUANTIZE:-none}\" \
    threads=$THREADS \
  lm.text_src ! tee name=t \
  t. ! queue ! appsink name=srt \
  t. ! queue leaky=downstream max-size-buffers=0 max-size-bytes=0 \
    max-size-time=60000000000 ! ov.text_sink \
  $VIDEO ! videoconvert ! videoscale ! videorate \
  ! video/x-raw,width=640,height=360,framerate=25/1 \
  ! queue max-size-time=10000000000 max-size-buffers=0 max-size-bytes=0 \
  ! textoverlay name=ov valignment=bottom font-desc=\"Sans 20\" \
  ! videoconvert ! vp8enc deadline=1 ! queue ! webmmux name=mux \
  ! filesink location=\"\$OUT\" \
  a. ! queue ! audioconvert ! audioresample ! opusenc ! queue ! mux."
echo "wrote $OUT and $SRT" >&2
