#!/usr/bin/env bash
# Runs the MoshiVis scripts (pipelines/moshivis-*.sh) as a user would, on
# the tiny random-weight MoshiVis built with the tests (env.sh picks it
# because the Hugging Face cache is pointed at an empty folder), and checks
# what comes out: reply length, transcript, that the model looked at the
# picture exactly from XA_START on, determinism, several looks at a video,
# the live rig on test sources, and a clean error for a broken picture.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD="${1:?usage: $0 BUILD_DIR}"
export MOSHI_BUILD="$BUILD"
export GST_PLUGIN_PATH="$BUILD"
export GST_REGISTRY="$BUILD/moshivis-scripts-registry.bin"
export MOSHI_SRT_LAUNCH="$BUILD/tests/moshi-srt-launch"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export HF_HOME="$tmp/empty-hf" HF_HUB_CACHE="$tmp/empty-hf/hub"
unset MOSHI_MODEL MIMI_MODEL MOSHIVIS_MODEL || true
pass=0; fail=0
check() { if eval "$2"; then echo "ok - $1"; pass=$((pass+1)); else echo "not ok - $1"; fail=$((fail+1)); fi; }
samples() { echo $(( ($(stat -c %s "$1") - 44) / 4 )); }

# A 320x240 test card (the model wants 56x56: videoscale adapts it), a
# 3 s question (38 frames of 80 ms), and a 3 s video.
gst-launch-1.0 -q videotestsrc num-buffers=1 pattern=smpte \
  ! video/x-raw,width=320,height=240 ! pngenc ! filesink location="$tmp/pic.png"
gst-launch-1.0 -q audiotestsrc num-buffers=1 samplesperbuffer=72000 freq=330 \
  wave=square ! audio/x-raw,rate=24000,channels=1 ! wavenc \
  ! filesink location="$tmp/q.wav"
gst-launch-1.0 -q videotestsrc num-buffers=60 pattern=ball \
  ! video/x-raw,width=160,height=120,framerate=20/1 ! jpegenc ! avimux \
  ! filesink location="$tmp/v.avi"

GREEDY=1 XA_START=0 timeout 300 "$ROOT/pipelines/moshivis-describe.sh" \
  "$tmp/pic.png" "$tmp/q.wav" "$tmp/a.wav" "$tmp/a.srt" 2>"$tmp/a.log"
check "describe: the tiny random-weight MoshiVis is announced" \
  "grep -q 'RANDOM-WEIGHT MoshiVis' '$tmp/a.log'"
n=$(samples "$tmp/a.wav")
check "describe: 3 s in, 38 frames of answer out ($n samples)" "[ $n -eq 72960 ]"
check "describe: one picture, looked at in every frame (xa-start 0)" \
  "grep -q '1 picture(s) encoded; the model looked at a picture in 38 of 38 frames' '$tmp/a.log'"
check "describe: the transcript has numbered, timed cues" \
  "grep -q -- '-->' '$tmp/a.srt' && head -1 '$tmp/a.srt' | grep -qx 1"

GREEDY=1 timeout 300 "$ROOT/pipelines/moshivis-describe.sh" \
  "$tmp/pic.png" "$tmp/q.wav" "$tmp/b.wav" "$tmp/b.srt" 2>"$tmp/b.log"
check "describe: Kyutai's gate delay, 16 steps: looks in 22 of 38 frames" \
  "grep -q 'looked at a picture in 22 of 38 frames' '$tmp/b.log'"
check "describe: looking changes the answer" "! cmp -s '$tmp/a.wav' '$tmp/b.wav'"

GREEDY=1 XA_START=0 timeout 300 "$ROOT/pipelines/moshivis-describe.sh" \
  "$tmp/pic.png" "$tmp/q.wav" "$tmp/c.wav" "$tmp/c.srt" 2>/dev/null
check "describe: greedy answers are reproducible" \
  "cmp -s '$tmp/a.wav' '$tmp/c.wav' && cmp -s '$tmp/a.srt' '$tmp/c.srt'"

GREEDY=1 XA_START=0 INTERVAL=1 timeout 300 "$ROOT/pipelines/moshivis-rig-file.sh" \
  "$tmp/v.avi" "$tmp/q.wav" "$tmp/r.wav" "$tmp/r.srt" 2>"$tmp/r.log"
check "rig (files): a look every second of a 3 s video = 3 pictures" \
  "grep -q '3 picture(s) encoded; the model looked at a picture in 38 of 38 frames' '$tmp/r.log'"
n=$(samples "$tmp/r.wav")
check "rig (files): 38 frames of reply ($n samples)" "[ $n -eq 72960 ]"
GREEDY=1 XA_START=0 INTERVAL=1 timeout 300 "$ROOT/pipelines/moshivis-rig-file.sh" \
  "$tmp/v.avi" "$tmp/q.wav" "$tmp/r2.wav" "$tmp/r2.srt" 2>/dev/null
check "rig (files): reproducible whatever the threads' timing" \
  "cmp -s '$tmp/r.wav' '$tmp/r2.wav'"

set +e
VIDEO_SRC="videotestsrc is-live=true num-buffers=30 ! video/x-raw,framerate=10/1" \
AUDIO_SRC="audiotestsrc is-live=true num-buffers=30 samplesperbuffer=1920 wave=square ! audio/x-raw,rate=24000" \
VIDEO_SINK=fakesink AUDIO_SINK=fakesink XA_START=0 \
  timeout 120 "$ROOT/pipelines/moshivis-rig-live.sh" >"$tmp/live.log" 2>&1
rc=$?
set -e
check "rig (live, test sources): runs to the end (rc $rc)" \
  "[ $rc -eq 0 ] && grep -q 'Got EOS from element' '$tmp/live.log'"

head -c 5000 /dev/urandom > "$tmp/broken.png"
set +e
timeout 120 "$ROOT/pipelines/moshivis-describe.sh" "$tmp/broken.png" \
  "$tmp/q.wav" "$tmp/x.wav" "$tmp/x.srt" >"$tmp/x.log" 2>&1
rc=$?
set -e
check "describe: a broken picture is an error, not a hang (rc $rc)" \
  "[ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q 'ERROR' '$tmp/x.log'"

echo "moshivis pipelines: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
