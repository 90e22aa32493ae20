#!/usr/bin/env bash
# Runs the shipped pipeline scripts as a user would, on a 2 s clip, and checks
# what comes out: sample counts, and that every way of moving the codes
# (file round trip, GDP file, RTP over loopback UDP) gives the same audio.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD="${1:?usage: $0 BUILD_DIR}"
export GST_PLUGIN_PATH="$BUILD"
export MOSHI_BUILD="$BUILD"
export MIMI_MODEL="$ROOT/tests/data/conformance/mimi-tiny"
export GST_REGISTRY="$BUILD/scripts-registry.bin"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"; kill $(jobs -p) 2>/dev/null || true' EXIT
pass=0; fail=0
check() { if eval "$2"; then echo "ok - $1"; pass=$((pass+1)); else echo "not ok - $1"; fail=$((fail+1)); fi; }
samples() { # data bytes of a WAV / 4 (F32) -- wavenc writes a 44-byte header
  echo $(( ($(stat -c %s "$1") - 44) / 4 ))
}

# 2.0 s + 500 samples of a tone at 44.1 kHz stereo: exercises resampling,
# downmix and the padded last frame.
gst-launch-1.0 -q audiotestsrc num-buffers=1 samplesperbuffer=88922 freq=330 \
  ! audio/x-raw,rate=44100,channels=2 ! wavenc ! filesink location="$tmp/in.wav"

"$ROOT/pipelines/mimi-roundtrip.sh" "$tmp/in.wav" "$tmp/rt.wav" >/dev/null 2>&1
n=$(samples "$tmp/rt.wav")
check "roundtrip: 2.02 s at 44.1 kHz stereo becomes 26 whole 24 kHz frames ($n samples)" "[ $n -eq 49920 ]"

"$ROOT/pipelines/mimi-store.sh" encode "$tmp/in.wav" "$tmp/codes.gdp" >/dev/null 2>&1
"$ROOT/pipelines/mimi-store.sh" decode "$tmp/codes.gdp" "$tmp/store.wav" >/dev/null 2>&1
check "codes file decodes to the same audio as the round trip" "cmp -s '$tmp/rt.wav' '$tmp/store.wav'"

PORT=$((20000 + RANDOM % 20000))
PORT=$PORT "$ROOT/pipelines/mimi-rtp-receive.sh" "$tmp/rtp.wav" >/dev/null 2>&1 &
recv=$!
sleep 1
PORT=$PORT timeout 60 "$ROOT/pipelines/mimi-rtp-send.sh" "$tmp/in.wav" >/dev/null 2>&1
sleep 1
kill -INT $recv; wait $recv || true
n=$(samples "$tmp/rtp.wav")
check "RTP loopback delivers every frame ($n samples)" "[ $n -eq 49920 ]"
check "RTP output equals the round trip" "cmp -s <(tail -c +45 '$tmp/rt.wav') <(tail -c +45 '$tmp/rtp.wav')"

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
