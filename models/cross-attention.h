/* MoshiVis's gated cross-attention (Kyutai's GatedCrossAttention with
 * xa_shared and a conditional sigmoid gate): each temporal layer attends
 * from its residual stream to the image tokens and adds the result scaled
 * by a gate computed from that result:
 *
 *   u = norm_cross(x);  a = Wo MHA(Wq u, K, V);
 *   g = sigmoid(W2 relu(W1 a) - 4);  x += a * g
 *
 * Wq, Wk, Wv, Wo are one set shared by every layer (stored under layer 0 in
 * the checkpoints), so K = img Wk^T and V = img Wv^T are computed once per
 * image and serve every layer and every step.  No positions, no mask. */
#pragma once
#include <glib.h>

#include "linear.h"
#include "safetensors.h"

G_BEGIN_DECLS

/* The shared projections. */
typedef struct {
  int dim, num_heads;
  MoshiLinear q, k, v, out; /* [dim][dim] each */
} CrossAttention;

/* One layer's norm and gate. */
typedef struct {
  float *norm_w, *norm_b; /* norm_cross (bias only for LayerNorm models) */
  MoshiLinear gate_in; /* alpha.0: [hidden][dim] */
  MoshiLinear gate_out; /* alpha.2: [dim][hidden] */
} CrossAttentionGate;

/* The keys and values of one image, immutable once made: shared by every
 * layer and step, and by any number of streams (reference counted). */
typedef struct {
  gint refcount;
  int tokens, dim, num_heads;
  float *kT; /* per head, the keys in tiles (attention.h: moshi_key_index) */
  float *v; /* [tokens][dim] */
} CrossAttentionMemory;

/* Per-stream scratch for one step. */
typedef struct {
  int capacity; /* tokens */
  float *q, *attn, *a, *z, *g, *scores;
  guint8 *valid; /* all set: the image is not causal */
} CrossAttentionScratch;

/* Looks for the shared weights under `layer0` (e.g. "llm.transformer.layers.0"
 * + ".cross_attention"): PyTorch's packed mha.in_proj_weight [3d][d] (rows
 * q | k | v) or candle's in_proj_weight / in_proj_weight_q +
 * in_proj_weight_kv, then out_proj.weight.  Returns FALSE with *error NULL
 * when the file has no cross-attention at all. */
gboolean cross_attention_load (CrossAttention *xa, const StFile *f,
    const char *layer0, int dim, int num_heads, MoshiWeightType type,
    MoshiLoadCtx *ctx, GError **error);
/* Per-layer parts under `layer` ("<prefix>.layers.N"): norm_cross and
 * cross_attention.gate.alpha.{0,2}. */
gboolean cross_attention_gate_load (CrossAttentionGate *gate, const StFile *f,
    const char *layer, int dim, gboolean rms_norm, MoshiWeightType type,
    MoshiLoadCtx *ctx, GError **error);
void cross_attention_random (CrossAttention *xa, uint64_t *seed, int dim,
    int num_heads, MoshiWeightType type);
void cross_attention_gate_random (CrossAttentionGate *gate, uint64_t *seed,
    int dim, int hidden, gboolean rms_norm, MoshiWeightType type);
void cross_attention_clear (CrossAttention *xa);
void cross_attention_gate_clear (CrossAttentionGate *gate);
size_t cross_attention_bytes (const CrossAttention *xa);
size_t cross_attention_gate_bytes (const CrossAttentionGate *gate);

/* K = img Wk^T and V = img Wv^T for the image `img` [tokens][dim] (the
 * adapter output), computed once.  NULL when memory runs out. */
CrossAttentionMemory *cross_attention_memory_new (const CrossAttention *xa,
    MoshiPool *pool, const float *img, int tokens);
CrossAttentionMemory *cross_attention_memory_ref (CrossAttentionMemory *mem);
void cross_attention_memory_unref (CrossAttentionMemory *mem);
size_t cross_attention_memory_bytes (const CrossAttentionMemory *mem);

/* Makes room for `tokens` image tokens; FALSE when memory runs out. */
gboolean cross_attention_scratch_reserve (CrossAttentionScratch *s, int tokens,
    int dim);
void cross_attention_scratch_clear (CrossAttentionScratch *s);

/* One row: u is norm_cross(x) [dim]; writes the update a*g into `update`
 * [dim] and, when not NULL, the gate g into `gate` [dim].  Returns mean(g). */
float cross_attention_step (const CrossAttention *xa,
    const CrossAttentionGate *gate, const CrossAttentionMemory *mem,
    CrossAttentionScratch *scratch, MoshiPool *pool, const float *u,
    float *update, float *gate_out);

G_END_DECLS
