#!/usr/bin/env bash
# Runs the Moshi dialog scripts (pipelines/moshi-dialog-{file,live}.sh) as a
# user would, on the bundled tiny random-weight models (lm-tiny + mimi-tiny,
# chosen by env.sh because the Hugging Face cache is pointed at an empty
# folder), and checks what comes out: the reply's length, the SubRip file
# (well formed, readable by GStreamer's subparse, within the input's time),
# determinism, and that the live script says the same words as the offline
# one for the same audio.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD="${1:?usage: $0 BUILD_DIR}"
export MOSHI_BUILD="$BUILD"
export GST_PLUGIN_PATH="$BUILD"
export GST_REGISTRY="$BUILD/moshilm-scripts-registry.bin"
export MOSHI_SRT_LAUNCH="$BUILD/tests/moshi-srt-launch"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export HF_HOME="$tmp/empty-hf" HF_HUB_CACHE="$tmp/empty-hf/hub"
unset MOSHI_MODEL MIMI_MODEL || true
pass=0; fail=0
check() { if eval "$2"; then echo "ok - $1"; pass=$((pass+1)); else echo "not ok - $1"; fail=$((fail+1)); fi; }
samples() { # data bytes of a WAV / 4 (F32) -- wavenc writes a 44-byte header
  echo $(( ($(stat -c %s "$1") - 44) / 4 ))
}
srt_text() { # the text lines of a SubRip file, without spaces
  awk 'BEGIN{s=0} /^[0-9]+$/ && s==0 {s=1; next} s==1 {s=2; next}
       /^$/ {s=0; next} s==2 {printf "%s", $0}' "$1" | tr -d ' '
}

# 2.0 s + 500 samples at 44.1 kHz stereo: resampling, downmix, padded frame.
# (a deterministic wave: noise would make every run say something else)
gst-launch-1.0 -q audiotestsrc num-buffers=1 samplesperbuffer=88922 freq=330 \
  wave=square ! audio/x-raw,rate=44100,channels=2 ! wavenc \
  ! filesink location="$tmp/in.wav"

GREEDY=1 "$ROOT/pipelines/moshi-dialog-file.sh" "$tmp/in.wav" "$tmp/out.wav" \
  "$tmp/out.srt" 2>"$tmp/file.log"
check "file: the tiny random-weight model is announced" \
  "grep -q 'RANDOM-WEIGHT test model' '$tmp/file.log'"
n=$(samples "$tmp/out.wav")
check "file: 2.02 s in, 26 frames (2.08 s) of reply out ($n samples)" "[ $n -eq 49920 ]"
check "file: the transcript has cues" "[ -s '$tmp/out.srt' ]"
check "file: SubRip cues are numbered and timed" \
  "awk 'BEGIN{s=0;n=0;ok=1} /^\$/ {s=0; next}
        s==0 { if (\$0 != n+1) ok=0; n++; s=1; next }
        s==1 { if (\$0 !~ /^[0-9][0-9]:[0-9][0-9]:[0-9][0-9],[0-9][0-9][0-9] --> [0-9][0-9]:[0-9][0-9]:[0-9][0-9],[0-9][0-9][0-9]\$/) ok=0; s=2; next }
        END { exit !(ok && n > 0) }' '$tmp/out.srt'"
last_start=$(grep -- '-->' "$tmp/out.srt" | tail -1 | sed 's/ --> .*//')
check "file: the last cue starts within the reply ($last_start)" \
  "[[ '$last_start' < '00:00:02,080' ]]"
gst-launch-1.0 -q filesrc location="$tmp/out.srt" ! subparse \
  ! fdsink fd=1 >"$tmp/subparse.txt"
check "file: GStreamer's subparse reads the transcript back" \
  "[ \"\$(tr -d ' \n' < '$tmp/subparse.txt')\" = \"\$(srt_text '$tmp/out.srt')\" ]"

GREEDY=1 "$ROOT/pipelines/moshi-dialog-file.sh" "$tmp/in.wav" "$tmp/out2.wav" \
  "$tmp/out2.srt" 2>/dev/null
check "file: greedy replies are reproducible" \
  "cmp -s '$tmp/out.wav' '$tmp/out2.wav' && cmp -s '$tmp/out.srt' '$tmp/out2.srt'"

# Live: the same 2 s of audio from a live source, in real time.
src="audiotestsrc num-buffers=25 samplesperbuffer=1920 wave=saw freq=180 is-live=true ! audio/x-raw,rate=24000,channels=1"
gst-launch-1.0 -q audiotestsrc num-buffers=25 samplesperbuffer=1920 \
  wave=saw freq=180 ! audio/x-raw,rate=24000,channels=1 ! wavenc \
  ! filesink location="$tmp/live-in.wav"
GREEDY=1 "$ROOT/pipelines/moshi-dialog-file.sh" "$tmp/live-in.wav" \
  "$tmp/live-ref.wav" "$tmp/live-ref.srt" 2>/dev/null
start=$(date +%s%N)
TEMPERATURE=0 TEMPERATURE_TEXT=0 QUANTIZE=none THREADS=1 AUDIO_SRC="$src" \
  AUDIO_SINK="fakesink sync=true" timeout 60 \
  "$ROOT/pipelines/moshi-dialog-live.sh" >"$tmp/live.txt" 2>"$tmp/live.log"
rc=$?
ms=$(( ($(date +%s%N) - start) / 1000000 ))
check "live: runs to the end of the input (rc $rc)" "[ $rc -eq 0 ]"
check "live: in real time (2 s of input took $ms ms)" "[ $ms -ge 1800 ]"
check "live: prints the same words as the offline run" \
  "[ -s '$tmp/live.txt' ] && [ \"\$(tr -d ' \n' < '$tmp/live.txt')\" = \"\$(srt_text '$tmp/live-ref.srt')\" ]"
check "live: no lag warning on the tiny model" "! grep -q 'cannot keep up' '$tmp/live.log'"

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
