/* MoshiVis image adapter ("image_prefix"): turns SigLIP tokens into the
 * LM's cross-attention memory.
 *
 *   x = proj_xa(v) = v W^T + b          Linear in_dim -> out_dim
 *   y = x * alpha / sqrt(mean(x^2) + eps)   norm_xa, eps 1e-8
 *
 * The norm is the mean-of-squares RMSNorm of Kyutai's Rust and MLX back
 * ends (docs/moshivis-spec.md section 3), not kyuteye_pt's unbiased-variance
 * flavour. */
#pragma once
#include <glib.h>
#include <stdint.h>

#include "safetensors.h"

G_BEGIN_DECLS

typedef struct {
  int in_dim; /* SigLIP hidden size (1152) */
  int out_dim; /* LM width (4096) */
  gboolean bias; /* proj_xa has a bias (MoshiVis: yes) */
  float eps; /* norm_xa epsilon (1e-8) */
} ImageAdapterConfig;

void image_adapter_config_default (ImageAdapterConfig *c);

typedef struct ImageAdapter ImageAdapter;

/* Loads `prefix`proj_xa.weight [out, in], proj_xa.bias [out] and
 * norm_xa.alpha ([1,1,out] in PT/candle checkpoints, [out] elsewhere). */
ImageAdapter *image_adapter_load (const StFile *f, const char *prefix,
    const ImageAdapterConfig *cfg, GError **error);
ImageAdapter *image_adapter_new_random (const ImageAdapterConfig *cfg,
    uint64_t seed, GError **error);
void image_adapter_free (ImageAdapter *a);
const ImageAdapterConfig *image_adapter_config (const ImageAdapter *a);

/* out[n][out_dim] from in[n][in_dim]. */
void image_adapter_forward (const ImageAdapter *a, const float *in, int n,
    float *out);

G_END_DECLS
