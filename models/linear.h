/* A bias-free linear layer y = x W^T, the unit every transformer matmul goes
 * through, so that quantized weight formats plug in at one place. */
#pragma once
#include <glib.h>
#include <stdint.h>

#include "gemm.h"
#include "kernels.h"
#include "lora.h"
#include "safetensors.h"

G_BEGIN_DECLS

typedef struct {
  int in, out;
  MoshiPackedB w; /* W^T packed, K = in, N = out */
} MoshiLinear;

gboolean moshi_linear_load (MoshiLinear *l, const StFile *f, const char *name,
    int in, int out, MoshiWeightType type, GError **error);
void moshi_linear_random (MoshiLinear *l, uint64_t *seed, int in, int out,
    MoshiWeightType type);
/* Same, merging the LoRA adapter of `name` when `lora` has one. */
gboolean moshi_linear_load_lora (MoshiLinear *l, const StFile *f,
    const char *name, int in, int out, MoshiWeightType type, MoshiLoadCtx *lora,
    GError **error);
/* Loads a [sets * out][in] tensor stacked over `sets` (per-step weights,
 * packed q|k|v projections) as `sets` layers of [out][in] each. */
gboolean moshi_linear_load_stacked (MoshiLinear *dst, int sets, const StFile *f,
    const char *name, int in, int out, MoshiWeightType type, MoshiLoadCtx *lora,
    GError **error);
/* Packs w ([out][in], PyTorch layout; not taken over) as the layer. */
gboolean moshi_linear_init (MoshiLinear *l, const float *w, int in, int out,
    MoshiWeightType type);
void moshi_linear_clear (MoshiLinear *l);
size_t moshi_linear_bytes (const MoshiLinear *l);

/* y[rows][out] = (accumulate ? y : 0) + x[rows][in] W^T */
void moshi_linear_forward (const MoshiLinear *l, MoshiPool *pool,
    const float *x, int rows, gboolean accumulate, float *y);

G_END_DECLS
