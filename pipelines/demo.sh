#!/usr/bin/env bash
# The main job, from a fresh Debian 12 machine: install the Debian packages,
# build gst-moshi, and run the bundled speech sample through Mimi and back.
#
#   bash pipelines/demo.sh            -> /tmp/gst-moshi-demo.wav
#
# With Kyutai's Mimi in the Hugging Face cache (see README) the output is the
# real codec's reconstruction; without it, a small random-weight model is
# used and the output is not meaningful audio (the script says so).
set -euo pipefail
cd "$(dirname "$0")/.."
USER_MIMI_MODEL="${MIMI_MODEL:-}"
bash .ci/install-deps.sh
[ -f build/build.ninja ] || meson setup build >/dev/null
meson compile -C build >/dev/null
source pipelines/env.sh

echo ">> Elements:"
gst-inspect-1.0 moshi | sed -n '/^  mimi/p'

SAMPLE=pipelines/samples/hello.wav
OUT=/tmp/gst-moshi-demo.wav
CODES=/tmp/gst-moshi-demo.gdp
start=$(date +%s.%N)
pipelines/mimi-roundtrip.sh "$SAMPLE" "$OUT" >/dev/null
end=$(date +%s.%N)
pipelines/mimi-store.sh encode "$SAMPLE" "$CODES" >/dev/null

# The sample is 16-bit mono 24 kHz WAV with a 44-byte header.
secs=$(echo "($(stat -c %s "$SAMPLE") - 44) / 48000" | bc -l)
echo ">> Encoded and decoded $SAMPLE ($(printf '%.1f' "$secs") s of audio) in $(printf '%.2f' "$(echo "$end - $start" | bc -l)") s of wall time"
echo ">> Reconstructed audio:  $OUT"
echo ">> Codes file:           $CODES ($(stat -c %s "$CODES") bytes incl. GDP framing)"
echo ">> Model:                $MIMI_MODEL"
case "$MIMI_MODEL" in
  *tests/data/conformance*) echo ">> (random-weight test model: the audio is NOT meaningful; see README to get Kyutai's weights)";;
esac

echo ">> Offline dialog: Moshi answers the sample (moshi-dialog-file.sh)"
# The dialog picks its own Mimi to match the LM unless the user chose one.
MIMI_MODEL="$USER_MIMI_MODEL" GREEDY=1 pipelines/moshi-dialog-file.sh "$SAMPLE" \
  /tmp/gst-moshi-reply.wav /tmp/gst-moshi-reply.srt 2>&1 | grep -v '^>>' || true
echo ">> Reply audio: /tmp/gst-moshi-reply.wav, words with times: /tmp/gst-moshi-reply.srt"
case "${MOSHI_MODEL:-}" in
  ""|*tests/data/conformance*) echo ">> (tiny random-weight LM: the reply is NOT meaningful; see README for Kyutai's weights)";;
esac

echo ">> MoshiVis: a spoken question about a picture (moshivis-describe.sh)"
gst-launch-1.0 -q videotestsrc num-buffers=1 pattern=smpte \
  ! video/x-raw,width=320,height=240 ! pngenc \
  ! filesink location=/tmp/gst-moshi-picture.png
vis_log=$(MIMI_MODEL="$USER_MIMI_MODEL" GREEDY=1 pipelines/moshivis-describe.sh \
  /tmp/gst-moshi-picture.png "$SAMPLE" /tmp/gst-moshi-vis-answer.wav \
  /tmp/gst-moshi-vis-answer.srt 2>&1) || { echo "$vis_log"; exit 1; }
echo "$vis_log" | grep -E '^MoshiVis:' || true
echo ">> Answer: /tmp/gst-moshi-vis-answer.wav, words: /tmp/gst-moshi-vis-answer.srt"
case "$vis_log" in
  *RANDOM-WEIGHT*) echo ">> (tiny random-weight MoshiVis: it looks at the picture, but the answer is NOT meaningful)";;
esac

echo ">> Speed of the full-size Mimi architecture on this machine (random weights,"
echo ">> same compute as the real checkpoint; one thread, 80 ms frames):"
build/tests/bench-mimi --seconds 5 | sed -n 's/^\(encode RTF\|decode RTF\|enc+dec RTF\|encode ms\/frame\|decode ms\/frame\).*/   &/p'
