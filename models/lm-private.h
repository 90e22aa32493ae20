/* Internals shared by lm.c (model, one forward step) and lmgen.c. */
#pragma once

#include "kernels.h"
#include "linear.h"
#include "packcache.h"
#include "lm.h"
#include "transformer.h"

/* An embedding table, optionally low-rank (Kyutai's ScaledEmbedding with
 * low_rank: rows of width r, then a bias-free r -> dim linear).  The table
 * stays in the memory-mapped checkpoint (any float dtype): a step reads ~17
 * rows, so copying Moshi's 1 GB of tables would only cost RSS. */
typedef struct {
  int rows, width, dim;
  const StTensor *mapped; /* [rows][width] in the checkpoint, or */
  float *table; /* [rows][width] owned, or */
  uint64_t random_seed; /* rows made up on demand (random models) */
  MoshiLinear low_rank; /* width -> dim, when width != dim */
} LmEmbedding;

struct LmModel {
  gint refcount;
  LmConfig cfg;
  StFile *file; /* kept mapped: embeddings are read from it */
  MoshiPackCache *pack_cache; /* lends packed weights, or NULL */
  int ff_hidden, dep_ff_hidden;
  LmEmbedding text_emb; /* text_card + 1 rows */
  LmEmbedding *emb; /* [n_q], card + 1 rows */
  Transformer transformer;
  float *out_norm_w, *out_norm_b;
  MoshiLinear text_linear; /* dim -> text_card */
  int n_dep_in;
  MoshiLinear *dep_in; /* [n_dep_in] dim -> dep_dim */
  LmEmbedding dep_text_emb; /* text_card + 1 rows */
  LmEmbedding *dep_emb; /* [dep_q - 1], card + 1 rows */
  Transformer depformer;
  MoshiLinear *linears; /* [dep_q] dep_dim -> card */
  float *cond_sum; /* [dim] conditioning added to every input, or NULL */
};

/* Per-conversation compute state of the model (no sampling logic). */
typedef struct {
  MoshiPool *pool;
  TransformerState main, dep;
  float *x, *out, *dep_x, *emb_tmp;
} LmState;

gboolean lm_state_init (LmState *s, const LmModel *m);
void lm_state_clear (LmState *s);
void lm_state_reset (LmState *s, const LmModel *m);

/* One temporal step: tokens [1 + n_q] (-1 = zero embedding) ->
 * transformer_out [dim] (after out_norm) and text_logits [text_card]. */
void lm_forward_main (const LmModel *m, LmState *s, const int *tokens,
    float *transformer_out, float *text_logits);
/* Starts a depformer pass for one temporal step (fresh depformer state). */
void lm_depformer_begin (const LmModel *m, LmState *s);
/* Depformer codebook k: prev_token is the text token (k = 0) or audio token
 * k - 1; writes logits [card]. */
void lm_depformer_step (const LmModel *m, LmState *s, int k,
    const float *transformer_out, int prev_token, float *logits);

/* Calls fn on every packed linear layer a step streams, in step order:
 * the temporal transformer (transformer_for_each_linear), the text head,
 * the depformer's input projections, its transformer and its heads.  With
 * `cross_attention`, the temporal transformer's MoshiVis layers too. */
void lm_model_for_each_linear (LmModel *m, gboolean cross_attention,
    TransformerLinearFn fn, void *data);

/* The keys and values of an LmImage (for conformance checks). */
CrossAttentionMemory *lm_image_memory (const LmImage *image);
