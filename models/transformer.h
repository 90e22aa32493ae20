/* Kyutai's StreamingTransformer: pre-norm layers of causal self-attention
 * (RoPE, attention limited to `context` past steps through a ring KV cache)
 * and a feed-forward block, with optional LayerScale.  One implementation
 * serves Mimi (LayerNorm, GELU MLP, LayerScale), the LM's temporal
 * transformer (RMSNorm, SiLU-gated MLP) and its depformer (per-step weight
 * sets, no positional embedding). */
#pragma once
#include <glib.h>
#include <stdint.h>

#include "cross-attention.h"
#include "kernels.h"
#include "linear.h"
#include "safetensors.h"

G_BEGIN_DECLS

typedef enum {
  TRANSFORMER_NORM_LAYER, /* nn.LayerNorm(eps=1e-5), weight + bias */
  TRANSFORMER_NORM_RMS, /* Kyutai RMSNorm, `alpha` weight */
} TransformerNorm;

typedef enum {
  TRANSFORMER_POS_ROPE, /* rotary, on q and k */
  TRANSFORMER_POS_NONE,
  TRANSFORMER_POS_SIN, /* sinusoidal embedding added to the input */
} TransformerPositional;

#define TRANSFORMER_MAX_SCHEDULE 64

typedef struct {
  int d_model;
  int num_heads;
  int num_layers;
  int dim_feedforward; /* hidden width of the MLP */
  int context; /* attention window and KV ring capacity */
  double max_period; /* RoPE */
  TransformerNorm norm;
  float norm_eps;
  gboolean gating; /* SiLU-gated MLP (LM) instead of GELU (Mimi) */
  gboolean layer_scale;
  MoshiWeightType weights; /* storage of the linear layers */
  /* Keys and values cached as IEEE halves (attention.h): for approximate
   * weight modes, where the cache's bytes matter as much as the weights'. */
  gboolean kv_half;
  /* With Q4 weights, keep the attention projections (in_proj, out_proj) in
   * Q8: softmax turns their rounding into the largest share of a 4-bit
   * transformer's error (Mimi: tests/mimi-accuracy). */
  gboolean attn_q8;
  TransformerPositional positional;
  /* Per-step weights (Kyutai's weights_per_step): 0 = one set shared by all
   * steps; n > 0 = n sets, step s (stream position) uses set schedule[s]
   * (identity when n_schedule == 0).  Attention in/out projections are
   * stored stacked over the sets; the MLP as gating.<set>. */
  int weight_sets;
  int schedule[TRANSFORMER_MAX_SCHEDULE];
  int n_schedule;
  MoshiLoadCtx *lora; /* adapters merged while loading, or NULL */
  /* MoshiVis: gated cross-attention to an image after every self-attention
   * block.  Set by transformer_load when the checkpoint has it. */
  gboolean cross_attention;
} TransformerConfig;

typedef struct {
  float *norm1_w, *norm1_b, *norm2_w, *norm2_b;
  /* One entry per weight set (see TransformerConfig.weight_sets). */
  MoshiLinear *in_proj; /* [3*d][d], rows q | k | v */
  MoshiLinear *out_proj; /* [d][d] */
  MoshiLinear *ff_in; /* [ff][d] (gated: [2*ff][d]) */
  MoshiLinear *ff_out; /* [d][ff] */
  float *ls1, *ls2; /* LayerScale, [d] */
  CrossAttentionGate xa_gate; /* norm_cross + gate (cross_attention) */
} TransformerLayer;

typedef struct {
  TransformerConfig cfg;
  TransformerLayer *layers;
  float *rope_freqs; /* [head_dim / 2] */
  CrossAttention xa; /* shared by all layers (cross_attention) */
} Transformer;

typedef struct {
  int max_t; /* most steps per call */
  int64_t offset; /* position of the next step */
  int64_t *slot_pos; /* [context]: position held by each ring slot, -1 empty */
  /* Keys [layers][heads][moshi_key_slots (context) slots in tiles of 16]
   * (attention.h: moshi_key_index), so that a query scores 16 slots with
   * contiguous vector FMAs; values [layers][heads][context][head_dim];
   * float, or uint16_t halves with cfg.kv_half. */
  void *k, *v;
  float *h, *qkv, *attn, *ff, *scores; /* scratch */
  guint8 *valid; /* [context] slot usable by the current query */
  /* Cross-attention (models with cross_attention): the image memory, and
   * whether the next forward applies it (the caller's xa_start rule). */
  CrossAttentionMemory *xa_mem; /* NULL: no image */
  CrossAttentionScratch xa_scratch;
  gboolean xa_enabled;
  float xa_gate_summary; /* of the last row forwarded; 0 when skipped */
  float *xa_trace_gates; /* [layers][d] of the last row, or NULL */
  float *xa_trace_updates; /* [layers][d] of the last row, or NULL */
} TransformerState;

/* Loads `<prefix>.layers.N.*` with Kyutai's checkpoint names; the gated
 * cross-attention too when layer 0 has one (cfg->cross_attention is then
 * set in tr->cfg). */
gboolean transformer_load (Transformer *tr, const TransformerConfig *cfg,
    const StFile *f, const char *prefix, GError **error);
void transformer_random (Transformer *tr, const TransformerConfig *cfg,
    uint64_t *seed);
void transformer_clear (Transformer *tr);
/* Calls fn on every linear layer of the transformer in the order a step
 * runs them (per layer: in_proj, out_proj, ff_in, ff_out of each weight
 * set), then, with `cross_attention`, the MoshiVis gates of every layer and
 * the shared q, k, v, out (a model without them yields empty layers). */
typedef void (*TransformerLinearFn) (MoshiLinear *l, void *data);
void transformer_for_each_linear (Transformer *tr, gboolean cross_attention,
    TransformerLinearFn fn, void *data);
size_t transformer_bytes (const Transformer *tr);

gboolean transformer_state_init (TransformerState *s, const Transformer *tr,
    int max_t);
void transformer_state_clear (TransformerState *s);
void transformer_state_reset (TransformerState *s, const Transformer *tr);
size_t transformer_state_bytes (const TransformerState *s,
    const Transformer *tr);

/* Replaces the image the layers attend to (NULL: none; a reference is
 * taken).  FALSE when scratch memory runs out or the model has no
 * cross-attention (the state is then without image). */
gboolean transformer_set_cross_memory (const Transformer *tr,
    TransformerState *s, CrossAttentionMemory *mem);

/* x: [t][d_model], updated in place; t <= max_t and t <= context. */
void transformer_forward (const Transformer *tr, TransformerState *s,
    MoshiPool *pool, float *x, int t);

G_END_DECLS
