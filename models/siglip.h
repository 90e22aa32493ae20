/* SigLIP vision tower (HF SiglipVisionTransformer, no pooling head), as used
 * by MoshiVis: So400m/14 from PaliGemma 2 at 448x448 by default.
 *
 *   RGB u8 -> (u8/255 - mean)/std -> patch conv (valid, stride = patch)
 *   -> + position table (bicubically resized when the grid differs)
 *   -> N pre-LN encoder layers -> post_layernorm -> [tokens][hidden]
 *
 * Weights are float32 in memory; the matrix products go through OpenBLAS
 * (the tower runs ~1000 tokens at once, so it is compute bound and BLAS's
 * packing pays off).  A loaded model is read-only; siglip_forward() may be
 * called from several threads, each call allocates its own scratch and the
 * calls run one at a time (blas.h).
 * See docs/moshivis-spec.md sections 1-2. */
#pragma once
#include <glib.h>
#include <stdint.h>

#include "json.h"
#include "safetensors.h"

G_BEGIN_DECLS

typedef enum {
  SIGLIP_GELU_TANH, /* "gelu_pytorch_tanh", "gelu_new": the reference */
  SIGLIP_GELU_ERF, /* "gelu" */
} SiglipAct;

typedef struct {
  int image_size; /* side of the trained square grid, in pixels */
  int patch_size;
  int num_channels; /* must be 3 (RGB) */
  int hidden_size;
  int num_layers;
  int num_heads;
  int intermediate_size;
  SiglipAct act;
  float layer_norm_eps;
  float image_mean[3], image_std[3];
} SiglipConfig;

/* So400m/14 at 448 (PaliGemma 2 448), the MoshiVis tower. */
void siglip_config_default (SiglipConfig *c);
/* Reads an HF SiglipVisionConfig object (e.g. the "vision" object of a
 * MoshiVis test config.json) over the defaults.  Unknown keys, an
 * unsupported hidden_act, a pooling head or values out of range are
 * MOSHI_MODEL_ERROR_CONFIG errors naming `where` and the key. */
gboolean siglip_config_parse (SiglipConfig *c, const MJsonValue *obj,
    const char *where, GError **error);
/* Checks the values a hand-built config could get wrong. */
gboolean siglip_config_validate (const SiglipConfig *c, GError **error);

/* Grid and token count for an input of width x height pixels: the patch conv
 * drops the trailing (size mod patch) rows and columns.  0 tokens when the
 * image is smaller than one patch. */
int siglip_tokens_for_size (const SiglipConfig *c, int width, int height);
/* Multiply-adds x 2 of one forward pass (patch conv, projections,
 * attention, MLP), for benchmarks. */
double siglip_flops (const SiglipConfig *c, int width, int height);
/* Parameters of the tower (413,327,088 for So400m/14-448). */
int64_t siglip_param_count (const SiglipConfig *c);

typedef struct SiglipModel SiglipModel;

/* Loads the tower from tensors named `prefix` + HF SigLIP names
 * (e.g. "image_prefix.enc.model." in Kyutai's checkpoints).  F32, BF16 and
 * F16 tensors are accepted; every shape is checked against cfg and errors
 * name the tensor with expected vs found shape.  Weight matrices stored as
 * BF16 stay bf16 in memory (see siglip_model_to_bf16), the rest is float32. */
SiglipModel *siglip_model_load (const StFile *f, const char *prefix,
    const SiglipConfig *cfg, GError **error);
/* Random weights of cfg's shapes (deterministic in seed), for benchmarks. */
SiglipModel *siglip_model_new_random (const SiglipConfig *cfg, uint64_t seed,
    GError **error);
void siglip_model_free (SiglipModel *m);
const SiglipConfig *siglip_model_config (const SiglipModel *m);
/* Stores the layers' weight matrices (99.5 % of the tower) as bf16,
 * rounded to nearest even: half the memory, <= 0.2 % weight error.  A BF16
 * checkpoint is kept in bf16 as loaded (no rounding).  IO error when out of
 * memory (the model stays usable). */
gboolean siglip_model_to_bf16 (SiglipModel *m, GError **error);
/* Stores the layers' weight matrices as our q8 blocks (int8, one scale per
 * 32 inputs; a quarter of float32) and runs their products through the
 * integer VNNI/AVX2 kernels with activations quantized per 32 values:
 * faster where int8 beats float GEMM, at an error measured in
 * tests/test-siglip.c and docs/models.md (outputs within cosine 0.999 of
 * float32).  IO error when out of memory (the model may then be partly
 * converted, and is still correct). */
gboolean siglip_model_to_q8 (SiglipModel *m, GError **error);
/* Stores the layers' weight matrices packed as bf16 for our GEMM (half of
 * float32).  On CPUs with AMX (moshi_cpu_has_amx) those products and the
 * attention's run on AMX tiles with the activations rounded to bf16 as
 * well: several times faster than float32, outputs within cosine 0.9999 of
 * it (tests/test-siglip.c, docs/models.md).  Elsewhere the AVX-512/AVX2
 * kernels run them with float activations.  IO error when out of memory
 * (the model may then be partly converted, and is still correct). */
gboolean siglip_model_to_bf16_products (SiglipModel *m, GError **error);
/* Bytes of weights held. */
size_t siglip_model_weight_bytes (const SiglipModel *m);

/* Threads for siglip_forward (the BLAS products and the elementwise steps);
 * process-wide, like OpenBLAS's own setting.  Forward passes are serialized
 * (blas.h), each applies the count current when it starts. */
void siglip_set_threads (int n_threads);

/* Checks an RGB u8 input: non-NULL, sides in [1, 1024], stride >= 3 * width,
 * at least one patch.  ARGUMENT errors say which. */
gboolean siglip_check_image (const SiglipConfig *c, const uint8_t *rgb,
    int width, int height, int stride, GError **error);

/* RGB u8 (rows of `stride` bytes, 3 bytes per pixel) to float planes
 * out[3][height][width]: (u8/255 - mean)/std, the reference pixel_values. */
gboolean siglip_preprocess (const SiglipConfig *c, const uint8_t *rgb,
    int width, int height, int stride, float *out, GError **error);

/* Runs the tower on an RGB u8 image of any size with at least one patch:
 * out[tokens][hidden], token n = patch (n / grid_w, n % grid_w).
 * pre_postln (may be NULL) receives the encoder output before
 * post_layernorm, same shape.  Allocation failure and bad arguments are
 * GErrors. */
gboolean siglip_forward (const SiglipModel *m, const uint8_t *rgb, int width,
    int height, int stride, float *out, float *pre_postln, GError **error);
/* The same from preprocessed planes pixels[3][height][width]. */
gboolean siglip_forward_pixels (const SiglipModel *m, const float *pixels,
    int width, int height, float *out, float *pre_postln, GError **error);

/* Bicubic resize (PyTorch interpolate, A = -0.75, align_corners = False, no
 * antialias) of a [gh][gw][C] table to [oh][ow][C]: the HF position-table
 * interpolation. */
void siglip_resize_table (const float *src, int gh, int gw, int C, float *dst,
    int oh, int ow);

G_END_DECLS
