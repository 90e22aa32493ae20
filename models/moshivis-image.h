/* The MoshiVis image side in one object: SigLIP tower + image adapter,
 * loaded from one MoshiVis checkpoint (tensors "image_prefix.enc.model.*",
 * "image_prefix.proj_xa.*", "image_prefix.norm_xa.alpha"; the PyTorch and
 * candle files use the same names).  encode() turns an RGB image into the
 * LM's cross-attention memory [tokens][lm_dim].
 *
 * Reference counted and read-only once loaded, so one copy of the weights
 * can serve several elements; encode() may be called from several threads
 * (each call allocates its own scratch; the calls run one at a time). */
#pragma once
#include <glib.h>
#include <stdint.h>

#include "image-adapter.h"
#include "siglip.h"
#include "weight-type.h"

G_BEGIN_DECLS

#define MOSHIVIS_IMAGE_PREFIX "image_prefix."

typedef struct {
  SiglipConfig vision;
  ImageAdapterConfig adapter;
} MoshiVisImageConfig;

/* Kyutai's moshika-vis: So400m/14-448 tower, adapter 1152 -> 4096. */
void moshivis_image_config_default (MoshiVisImageConfig *c);
/* Reads the "vision" (HF SiglipVisionConfig) and "adapter" objects of a
 * config.json over the defaults (other top-level keys are left to the LM's
 * loader).  Unknown keys and inconsistent dims are CONFIG errors. */
gboolean moshivis_image_config_load_json (MoshiVisImageConfig *c,
    const char *path, GError **error);

typedef struct MoshiVisImageEncoder MoshiVisImageEncoder;

/* cfg NULL: the defaults, checked against the tensor shapes (a checkpoint
 * of other dims is a SHAPE error naming the tensor). */
MoshiVisImageEncoder *moshivis_image_encoder_load (const char *path,
    const MoshiVisImageConfig *cfg, GError **error);
MoshiVisImageEncoder *
moshivis_image_encoder_new_random (const MoshiVisImageConfig *cfg,
    uint64_t seed, GError **error);
MoshiVisImageEncoder *moshivis_image_encoder_ref (MoshiVisImageEncoder *e);
void moshivis_image_encoder_unref (MoshiVisImageEncoder *e);

const MoshiVisImageConfig *moshivis_image_encoder_config (
    const MoshiVisImageEncoder *e);
const SiglipModel *moshivis_image_encoder_tower (const MoshiVisImageEncoder *e);
const ImageAdapter *moshivis_image_encoder_adapter (
    const MoshiVisImageEncoder *e);
/* The square input side the tower was trained at (448). */
int moshivis_image_encoder_image_size (const MoshiVisImageEncoder *e);
/* Tokens for a width x height input (0: smaller than one patch). */
int moshivis_image_encoder_tokens (const MoshiVisImageEncoder *e, int width,
    int height);
/* Width of one output token (the LM dim). */
int moshivis_image_encoder_dim (const MoshiVisImageEncoder *e);
/* Threads for this encoder's encodes (1 by default).  Encodes are
 * serialized process-wide (blas.h): concurrent callers wait their turn. */
/* Stores the tower's layer matrices as `type` before the encoder is
 * shared: MOSHI_WEIGHTS_F32 (as loaded), BF16 or Q8 (see siglip.h for the
 * errors); Q4 is not offered for the tower (ARGUMENT error). */
gboolean moshivis_image_encoder_quantize (MoshiVisImageEncoder *e,
    MoshiWeightType type, GError **error);
void moshivis_image_encoder_set_threads (MoshiVisImageEncoder *e,
    int n_threads);

/* out[tokens][dim] for an RGB u8 image (3 bytes per pixel, rows `stride`
 * bytes apart).  Any size with at least one patch; the learned position
 * grid is interpolated for sizes other than image_size. */
gboolean moshivis_image_encoder_encode (MoshiVisImageEncoder *e,
    const uint8_t *rgb, int width, int height, int stride, float *out,
    GError **error);

/* Any picture: optionally cropped to its largest centred square, resized
 * (moshi_image_fit_square: PIL-style bicubic) to the trained image_size
 * square unless it already is one, then encoded.  out holds
 * moshivis_image_encoder_tokens (e, S, S) x dim floats, S = image_size. */
gboolean moshivis_image_encoder_encode_fit (MoshiVisImageEncoder *e,
    const uint8_t *rgb, int width, int height, int stride, gboolean center_crop,
    float *out, GError **error);

G_END_DECLS
