#!/usr/bin/env bash
# Bilingual commentary: Kyutai's Hibiki translates the commentator (French
# to English) as he speaks; the translated voice is mixed over the original
# programme, turned down, and the translation is burned in as subtitles.
# The result goes to a file and, live, to HLS (and RTMP when given).
#
#   programme audio -> tee -> volume (ORIG_VOLUME) ----------------------> audiomixer
#                        `--> 24 kHz mono -> mimienc -> moshilm (Hibiki) -> mimidec -'   |
#                                                         `--text--> textoverlay        |
#   video (test pattern, or VIDEO_SRC) ------------------------> textoverlay            |
#        -> VP8 + Opus -> OUT.webm ; H.264 + AAC -> hlssink2 HLS_DIR (+ RTMP_URL) <-----'
#
# moshilm runs Hibiki as its config.json says (model_type "hibiki"): one
# frame of translated speech per frame of the commentator, on the
# programme's time line (Hibiki itself lags the speaker by a few seconds,
# as a human interpreter does), plus the English text.  At the end of the
# programme it does what Kyutai's inference does: it tells the model the
# input has ended and goes on until the model ends its translation (text
# EOS), at most 30 s; the mix and the file last that much longer.
# Subtitles of that tail come after the picture has ended: they are in
# OUT.srt and spoken in the mix, not burned in (textoverlay would wait
# forever for video, hence the leaky queue before it).
#
# HLS: hlssink2 writes HLS_DIR/playlist.m3u8 and its segments; serve the
# folder with any HTTP server on loopback (e.g. `busybox httpd -f -p
# 127.0.0.1:8080 -h HLS_DIR`) and open http://127.0.0.1:8080/playlist.m3u8.
# RTMP: set RTMP_URL (e.g. rtmp://127.0.0.1/live/commentary) to also push
# to an RTMP server (nginx-rtmp, MediaMTX...); none is started here.
#
# Usage: pipelines/bilingual-commentary.sh IN OUT.webm HLS_DIR [OUT.srt]
#   IN: the programme (any file with audio: the commentary is its audio).
#   MOSHI_MODEL (a Hibiki repo, folder or file; default
#   kyutai/hibiki-2b-pytorch-bf16, then hibiki-1b, from the Hugging Face
#   cache, else the tiny random-weight tests/data/hibiki-tiny whose
#   translation is NOT meaningful), MIMI_MODEL, QUANTIZE (none), THREADS
#   (all cores), CODEBOOKS (16; 8 for the tiny), ORIG_VOLUME (0.3),
#   VIDEO_SRC, RTMP_URL.  Needs x264enc (gstreamer1.0-plugins-ugly) for HLS.
set -euo pipefail
MOSHI_USE_LM=1
MOSHI_LM_KIND=translation
source "$(dirname "$0")/env.sh"
IN="${1:?usage: $0 IN OUT.webm HLS_DIR [OUT.srt]}"
OUT="${2:?usage: $0 IN OUT.webm HLS_DIR [OUT.srt]}"
HLS="${3:?usage: $0 IN OUT.webm HLS_DIR [OUT.srt]}"
SRT="${4:-/dev/null}"
if [ ! -x "${MOSHI_SRT_LAUNCH:-}" ]; then
  echo "moshi-srt-launch not found: build the project (meson compile -C build)" \
       "or set MOSHI_SRT_LAUNCH=/path/to/moshi-srt-launch" >&2
  exit 1
fi
THREADS="${THREADS:-$(nproc)}"
[ "$THREADS" -gt 64 ] && THREADS=64
CODEBOOKS="${CODEBOOKS:-16}"
[ "$MOSHI_LM_IS_TINY" = 1 ] && CODEBOOKS=8
mkdir -p "$HLS"
# The test pattern lasts as long as the programme's audio (8 kHz S16).
tmp=$(mktemp)
gst-launch-1.0 -q filesrc location="$IN" ! decodebin ! audioconvert \
  ! audioresample ! audio/x-raw,format=S16LE,rate=8000,channels=1 \
  ! filesink location="$tmp"
SECONDS_IN=$(( ($(stat -c %s "$tmp") + 15999) / 16000 ))
rm -f "$tmp"
VIDEO="${VIDEO_SRC:-videotestsrc pattern=ball num-buffers=$((SECONDS_IN * 25))}"
RTMP=""
if [ -n "${RTMP_URL:-}" ]; then
  RTMP="v. ! queue ! flv.video au. ! queue ! flv.audio \
    flvmux name=flv streamable=true ! rtmp2sink location=\"$RTMP_URL\""
fi
eval "\"\$MOSHI_SRT_LAUNCH\" \"\$SRT\" \
  filesrc location=\"\$IN\" ! decodebin ! audioconvert ! audioresample \
  ! audio/x-raw,rate=48000,channels=2 ! tee name=a \
  a. ! queue ! volume volume=${ORIG_VOLUME:-0.3} ! mix. \
  a. ! queue ! audioconvert ! audioresample ! audio/x-raw,rate=24000,channels=1 \
  ! mimienc model=\"\$MIMI_MODEL\" codebooks=$CODEBOOKS quantize=\"${QUANTIZE:-none}\" \
  ! moshilm name=lm model=\"\$MOSHI_MODEL\" quantize=\"${QUANTIZE:-none}\" \
    threads=$THREADS \
  ! queue ! mimidec model=\"\$MIMI_MODEL\" quantize=\"${QUANTIZE:-none}\" \
  ! audioconvert ! audioresample ! mix. \
  audiomixer name=mix ! audio/x-raw,rate=48000,channels=2 ! tee name=m \
  lm.text_src ! tee name=t \
  t. ! queue ! appsink name=srt \
  t. ! queue leaky=downstream max-size-buffers=0 max-size-bytes=0 \
    max-size-time=60000000000 ! ov.text_sink \
  $VIDEO ! videoconvert ! videoscale ! videorate \
  ! video/x-raw,width=640,height=360,framerate=25/1 \
  ! queue max-size-time=10000000000 max-size-buffers=0 max-size-bytes=0 \
  ! textoverlay name=ov valignment=bottom font-desc=\"Sans 20\" \
  ! tee name=vraw \
  vraw. ! queue ! videoconvert ! vp8enc deadline=1 ! queue ! webmmux name=mux \
  ! filesink location=\"\$OUT\" \
  m. ! queue ! audioconvert ! opusenc ! queue ! mux. \
  vraw. ! queue ! videoconvert ! x264enc tune=zerolatency key-int-max=50 \
  ! h264parse ! tee name=v \
  m. ! queue ! audioconvert ! voaacenc ! aacparse ! tee name=au \
  v. ! queue ! hls.video au. ! queue ! hls.audio \
  hlssink2 name=hls target-duration=2 playlist-length=0 max-files=0 \
    location=\"\$HLS/segment%05d.ts\" playlist-location=\"\$HLS/playlist.m3u8\" \
  $RTMP"
echo "wrote $OUT, $HLS/playlist.m3u8${4:+ and $SRT}" >&2
