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

/* The image memory of one stream, and scratch for one step. */
typedef struct {
  int tokens, capacity;
  float *kT; /* [heads][head_dim][capacity], keys transposed per head */
  float *v; /* [capacity][dim] */
  float *q, *attn, *a, *z, *g, *scores; /* per-step scratch */
  guint8 *valid; /* [capacity], all set: the image is not causal */
} CrossAttentionMemory;

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

/* Replaces the memory with the image `img` [tokens][dim] (the adapter
 * output): K and V computed here, once.  img NULL or tokens 0 empties it.
 * FALSE when memory runs out (the memory is then empty). */
gboolean cross_attention_memory_set (CrossAttentionMemory *mem,
    const CrossAttention *xa, MoshiPool *pool, const float *img, int tokens);
void cross_attention_memory_clear (CrossAttentionMemory *mem);
size_t cross_attention_memory_bytes (const CrossAttentionMemory *mem,
    const CrossAttention *xa);

/* One row: u is norm_cross(x) [dim]; writes the update a*g into `update`
 * [dim] and, when not NULL, the gate g into `gate` [dim].  Returns mean(g). */
float cross_attention_step (const CrossAttention *xa,
    const CrossAttentionGate *gate, CrossAttentionMemory *mem, MoshiPool *pool,
    const float *u, float *update, float *gate_out);

G_END_DECLS
