# Sourced by the pipeline scripts: finds the plugin and a Mimi model.
#
# Plugin: the in-tree build (build/) unless gst-moshi is installed.
# Model:  $MIMI_MODEL if set; else Kyutai's Mimi from the local Hugging Face
#         cache (kyutai/moshiko-pytorch-bf16); else the small random-weight
#         test model bundled with the sources, which runs the same code but
#         whose audio is NOT meaningful.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -d "$ROOT/build" ]; then
  export GST_PLUGIN_PATH="$ROOT/build${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}"
fi

hf_hub="${HF_HUB_CACHE:-${HF_HOME:-$HOME/.cache/huggingface}/hub}"
find_real_mimi() {
  local snap
  for snap in "$hf_hub"/models--kyutai--moshiko-pytorch-bf16/snapshots/* \
              "$hf_hub"/models--kyutai--moshika-pytorch-bf16/snapshots/* \
              "$hf_hub"/models--kyutai--mimi/snapshots/*; do
    for f in tokenizer-e351c8d8-checkpoint125.safetensors \
             mimi-pytorch-e351c8d8@125.safetensors model.safetensors; do
      if [ -f "$snap/$f" ]; then echo "$snap/$f"; return 0; fi
    done
  done
  return 1
}

if [ -z "${MIMI_MODEL:-}" ]; then
  if MIMI_MODEL="$(find_real_mimi)"; then
    echo ">> Using Kyutai's Mimi: $MIMI_MODEL" >&2
  else
    MIMI_MODEL="$ROOT/tests/data/conformance/mimi-small"
    cat >&2 <<MSG
>> Kyutai's Mimi weights were not found in $hf_hub.
>> Using the small RANDOM-WEIGHT test model ($MIMI_MODEL):
>> the pipeline runs exactly as it would with the real codec, but the
>> decoded audio is not meaningful speech.  To use the real codec:
>>     huggingface-cli download kyutai/moshiko-pytorch-bf16 tokenizer-e351c8d8-checkpoint125.safetensors
>> (or set MIMI_MODEL=/path/to/tokenizer-e351c8d8-checkpoint125.safetensors)
MSG
  fi
fi
export MIMI_MODEL
