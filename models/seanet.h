/* SEANet encoder and decoder (Kyutai's moshi/modules/seanet.py), streaming.
 *
 * Encoder: conv(k7) -> [resblocks, ELU, strided conv] per ratio (reversed)
 *          -> ELU -> conv(k3) to `dimension`.
 * Decoder: conv(k7) -> [ELU, transposed conv, resblocks] per ratio
 *          -> ELU -> conv(k3) to audio.
 * Resblock: x + conv1x1(ELU(conv_k(ELU(x)))) (true skip, compress 2).
 * Tensor names follow nn.Sequential indices, e.g. encoder.model.3.conv.conv. */
#pragma once
#include <glib.h>

#include "conv.h"
#include "kernels.h"
#include "safetensors.h"

G_BEGIN_DECLS

typedef struct {
  int channels, dimension, n_filters, n_residual_layers;
  int ratios[8];
  int n_ratios;
  int kernel_size, residual_kernel_size, last_kernel_size;
  int dilation_base, compress;
  /* Storage of the weights: `weights` for layers that see few rows per
   * frame (bandwidth-bound: the fewer bytes the better), `wide_weights` for
   * those whose matrix product has at least 32 rows for a frame of
   * `frame_samples` (compute-bound: bf16 on AMX CPUs).  Either may be the
   * same. */
  MoshiWeightType weights, wide_weights;
  int frame_samples;
} SeanetConfig;

typedef struct {
  MoshiConv1d conv_k; /* block.1: dim -> dim/compress, dilated */
  MoshiConv1d conv_1; /* block.3: dim/compress -> dim, k = 1 */
} SeanetResBlock;

typedef struct {
  SeanetConfig cfg;
  gboolean is_decoder;
  MoshiConv1d conv_in, conv_out;
  /* per stage: n_residual_layers resblocks and one strided (tr)conv */
  SeanetResBlock *res; /* [n_ratios * n_residual_layers] */
  MoshiConv1d *down; /* encoder: [n_ratios] */
  MoshiConvTr1d *up; /* decoder: [n_ratios] */
} Seanet;

typedef struct {
  MoshiConv1dState conv_in, conv_out;
  MoshiConv1dState *res_k, *res_1;
  MoshiConv1dState *down;
  MoshiConvTr1dState *up;
  float *h, *tmp; /* ping-pong activations, max rows*channels */
  size_t scratch_floats;
} SeanetState;

gboolean seanet_load (Seanet *net, const SeanetConfig *cfg, gboolean decoder,
    const StFile *f, const char *prefix, GError **error);
void seanet_random (Seanet *net, const SeanetConfig *cfg, gboolean decoder,
    uint64_t *seed);
void seanet_clear (Seanet *net);
size_t seanet_bytes (const Seanet *net);
int seanet_hop (const SeanetConfig *cfg); /* product of ratios */

/* frame_samples: audio samples per call (a multiple of the hop). */
gboolean seanet_state_init (SeanetState *s, const Seanet *net,
    int frame_samples);
void seanet_state_clear (SeanetState *s, const Seanet *net);
void seanet_state_reset (SeanetState *s, const Seanet *net);
size_t seanet_state_bytes (const SeanetState *s, const Seanet *net);

/* Encoder: pcm [frame_samples][channels] -> latent [frame_samples/hop][dimension]. */
void seanet_encode (const Seanet *net, SeanetState *s, MoshiPool *pool,
    const float *pcm, float *latent);
/* Decoder: latent [frame_samples/hop][dimension] -> pcm [frame_samples][channels]. */
void seanet_decode (const Seanet *net, SeanetState *s, MoshiPool *pool,
    const float *latent, float *pcm);

G_END_DECLS
