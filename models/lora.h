/* LoRA adapters (Kyutai's moshi/modules/lora.py), merged into the base
 * weights at load: W' = W + scaling * B A, with A = <stem>.lora_A.weight
 * [rank, in] and B = <stem>.lora_B.weight [out, rank] for a base weight
 * <stem>.weight (or <stem>_weight).  Stacked per-step weights carry stacked
 * adapters ([sets * rank, in] and [sets * out, rank]).  Merging keeps the
 * streaming cost of the base model. */
#pragma once
#include <glib.h>

#include "packcache.h"
#include "safetensors.h"

G_BEGIN_DECLS

/* What a model load adds to plain tensor reading: LoRA adapters to merge
 * and a cache of packed weights to read from or fill. */
typedef struct {
  StFile *file; /* LoRA adapters, or NULL */
  float scaling;
  int applied; /* adapters merged so far */
  MoshiPackCache *cache; /* or NULL */
} MoshiLoadCtx;

/* Adds the adapter of base tensor `base_name` (if the file has one) to
 * w [sets * out][in].  No adapter: TRUE, nothing changes.  Bad shapes:
 * FALSE with an error naming the tensors. */
gboolean moshi_lora_merge (MoshiLoadCtx *lora, const char *base_name, float *w,
    int sets, int out, int in, GError **error);

G_END_DECLS
