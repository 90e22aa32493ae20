# Sourced by the pipeline scripts: finds the plugin and a Mimi model.
#
# Plugin: the in-tree build ($MOSHI_BUILD, default build/) unless gst-moshi
#         is installed.
# Model:  $MIMI_MODEL if set; else Kyutai's Mimi from the local Hugging Face
#         cache (kyutai/moshiko-pytorch-bf16); else the small random-weight
#         test model bundled with the sources, which runs the same code but
#         whose audio is NOT meaningful.
# LM:     only for scripts that set MOSHI_USE_LM=1 before sourcing this:
#         (MOSHI_LM_KIND=stt: kyutai/stt-1b-en_fr or stt-2.6b-en, else the
#         tiny tests/data/stt-tiny; MOSHI_LM_KIND=translation:
#         kyutai/hibiki-2b-pytorch-bf16 or hibiki-1b, else tests/data/hibiki-tiny;
#         both on lm-tiny's random weights, paired with mimi-tiny)
#         $MOSHI_MODEL if set (file, folder or repo id, as moshilm's model
#         property); else kyutai/moshiko-pytorch-bf16 (or moshika, or their
#         q8 variants) in the local Hugging Face cache; else the bundled
#         random-weight tiny LM tests/data/conformance/lm-tiny, whose replies
#         are NOT meaningful.  The tiny LM reads 8 user codebooks of 64
#         entries, so it is paired with the tiny Mimi (mimi-tiny, 64-entry
#         codebooks) unless MIMI_MODEL is set.
# Helper: $MOSHI_SRT_LAUNCH, the moshi-srt-launch program (SubRip writer,
#         pipelines/moshi-srt-launch.c), from the build or the PATH.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# MOSHI_BUILD: another build folder than build/ (e.g. the tests' own).
MOSHI_BUILD="${MOSHI_BUILD:-$ROOT/build}"
if [ -d "$MOSHI_BUILD" ]; then
  export GST_PLUGIN_PATH="$MOSHI_BUILD${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}"
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

find_real_moshi() {
  local snap repo repos="moshiko-pytorch-bf16 moshika-pytorch-bf16 moshiko-pytorch-q8 moshika-pytorch-q8"
  case "${MOSHI_LM_KIND:-dialog}" in
    stt) repos="stt-1b-en_fr stt-2.6b-en" ;;
    translation) repos="hibiki-2b-pytorch-bf16 hibiki-1b-pytorch-bf16" ;;
  esac
  for repo in $repos; do
    for snap in "$hf_hub"/models--kyutai--$repo/snapshots/*; do
      if [ -f "$snap/model.safetensors" ] || [ -f "$snap/config.json" ]; then
        echo "$snap"; return 0
      fi
    done
  done
  return 1
}

# MoshiVis (scripts that set MOSHI_USE_VIS=1): $MOSHIVIS_MODEL if set (file,
# folder or repo id; used for both moshivis and moshilm); else
# kyutai/moshika-vis-pytorch-bf16 in the local Hugging Face cache; else the
# tiny random-weight MoshiVis built with the tests
# ($MOSHI_BUILD/tests/moshivis-dialog-tiny: lm-tiny + moshivis-tiny's image
# side, 56x56 pictures), paired with the tiny Mimi.
find_real_moshivis() {
  local snap
  for snap in "$hf_hub"/models--kyutai--moshika-vis-pytorch-bf16/snapshots/*; do
    if [ -f "$snap/model.safetensors" ]; then echo "$snap"; return 0; fi
  done
  return 1
}
if [ -n "${MOSHI_USE_VIS:-}" ]; then
  MOSHI_USE_LM=1
  if [ -z "${MOSHIVIS_MODEL:-}" ]; then
    if MOSHIVIS_MODEL="$(find_real_moshivis)"; then
      echo ">> Using Kyutai's MoshiVis: $MOSHIVIS_MODEL" >&2
    else
      MOSHIVIS_MODEL="$MOSHI_BUILD/tests/moshivis-dialog-tiny"
      if [ ! -f "$MOSHIVIS_MODEL/model.safetensors" ]; then
        echo "MoshiVis weights not found and the tiny test model is not built:" \
             "run meson compile -C $MOSHI_BUILD, or download" \
             "kyutai/moshika-vis-pytorch-bf16" >&2
        exit 1
      fi
      cat >&2 <<MSG
>> ******************************************************************
>> Kyutai's MoshiVis weights were not found in $hf_hub.
>> Using the tiny RANDOM-WEIGHT MoshiVis ($MOSHIVIS_MODEL):
>> the pipeline runs exactly as it would with MoshiVis (it looks at the
>> picture: its gates open), but what it says is NOT meaningful.  For the
>> real model:  huggingface-cli download kyutai/moshika-vis-pytorch-bf16
>> ******************************************************************
MSG
      if [ -z "${MIMI_MODEL:-}" ]; then
        MIMI_MODEL="$ROOT/tests/data/conformance/mimi-tiny"
        echo ">> Pairing it with the tiny random-weight Mimi: $MIMI_MODEL" >&2
      fi
    fi
  fi
  MOSHI_MODEL="${MOSHI_MODEL:-$MOSHIVIS_MODEL}"
  export MOSHIVIS_MODEL
fi

MOSHI_LM_IS_TINY=0
if [ -n "${MOSHI_USE_LM:-}" ] && [ -z "${MOSHI_MODEL:-}" ]; then
  if MOSHI_MODEL="$(find_real_moshi)"; then
    echo ">> Using Kyutai's ${MOSHI_LM_KIND:-dialog} model: $MOSHI_MODEL" >&2
    # Kyutai's STT and Hibiki repos name their own Mimi (mimi_name).
    [ "${MOSHI_LM_KIND:-dialog}" != dialog ] && MIMI_MODEL="${MIMI_MODEL:-$MOSHI_MODEL}"
  else
    case "${MOSHI_LM_KIND:-dialog}" in
      stt) MOSHI_MODEL="$ROOT/tests/data/stt-tiny" ;;
      translation) MOSHI_MODEL="$ROOT/tests/data/hibiki-tiny" ;;
      *) MOSHI_MODEL="$ROOT/tests/data/conformance/lm-tiny" ;;
    esac
    MOSHI_LM_IS_TINY=1
    cat >&2 <<MSG
>> ******************************************************************
>> Kyutai's Moshi weights were not found in $hf_hub.
>> Using the tiny RANDOM-WEIGHT test model ($MOSHI_MODEL):
>> the pipeline runs exactly as it would with Moshi, but the reply
>> (voice and text) is NOT meaningful.  To talk to Moshi:
>>     huggingface-cli download kyutai/moshiko-pytorch-bf16
>> (or set MOSHI_MODEL=/path/to/a/moshi/folder)
>> ******************************************************************
MSG
    if [ -z "${MIMI_MODEL:-}" ]; then
      # The tiny LM's codebooks have 64 entries, as the tiny Mimi's.
      MIMI_MODEL="$ROOT/tests/data/conformance/mimi-tiny"
      echo ">> Pairing it with the tiny random-weight Mimi: $MIMI_MODEL" >&2
    fi
  fi
fi
if [ -n "${MOSHI_USE_LM:-}" ]; then
  export MOSHI_MODEL MOSHI_LM_IS_TINY
  if [ -z "${MOSHI_SRT_LAUNCH:-}" ]; then
    for MOSHI_SRT_LAUNCH in "$MOSHI_BUILD/tests/moshi-srt-launch" \
        "$(command -v moshi-srt-launch || true)"; do
      [ -x "$MOSHI_SRT_LAUNCH" ] && break
    done
  fi
  export MOSHI_SRT_LAUNCH
fi

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
