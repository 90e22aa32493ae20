/* LMGen: Kyutai's streaming generation loop around the LM.
 *
 * Tokens live in a small cache in delayed coordinates: column p holds what
 * the transformer reads at step p.  The model's own tokens sampled at step s
 * go to column s + 1 (whatever their delay); user codebook i given at step s
 * goes to column s + delay_i; while s <= delay_i a stream reads its initial
 * token (text_card for text, card for audio).  The aligned output frame of
 * step s (s >= max_delay) is column s + 1 - max_delay + delay_k of each
 * generated stream. */
#include "lm-private.h"

#include "alloc.h"
#include "model-error.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct LmGen {
  LmModel *model;
  LmGenParams params;
  LmState state;
  int max_delay;
  int ct; /* cache columns: max_delay + 3 */
  int *cache; /* [1 + n_q][ct] */
  int64_t offset; /* steps done */
  uint64_t rng;
  float *transformer_out, *text_logits, *dep_logits;
  float *probs; /* [max(card, text_card)] */
  int *order; /* [max(card, text_card)] */
  int *input; /* [1 + n_q] */
  int xa_start; /* first step that attends to the image */
};

void
lm_gen_params_default (LmGenParams *p, const LmConfig *cfg)
{
  memset (p, 0, sizeof *p);
  p->use_sampling = TRUE;
  p->temp = cfg->temp;
  p->temp_text = cfg->temp_text;
  p->top_k = cfg->top_k;
  p->top_k_text = cfg->top_k_text;
  p->seed = 42;
}

LmGen *
lm_gen_new (LmModel *m, const LmGenParams *p, GError **error)
{
  const LmConfig *c = &m->cfg;
  LmGen *g = g_new0 (LmGen, 1);
  g->model = lm_model_ref (m);
  g->params = *p;
  for (int i = 0; i <= c->n_q; i++)
    g->max_delay = MAX (g->max_delay, c->delays[i]);
  g->ct = g->max_delay + 3;
  const int vmax = MAX (c->card, c->text_card);
  g->cache = g_new0 (int, (size_t) (1 + c->n_q) * g->ct);
  g->transformer_out = moshi_alloc (sizeof (float) * c->dim);
  g->text_logits = moshi_alloc (sizeof (float) * c->text_card);
  g->dep_logits = moshi_alloc (sizeof (float) * c->card);
  g->probs = moshi_alloc (sizeof (float) * vmax);
  g->order = g_new0 (int, vmax);
  g->input = g_new0 (int, 1 + c->n_q);
  if (!lm_state_init (&g->state, m) || !g->transformer_out || !g->text_logits
      || !g->dep_logits || !g->probs) {
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_IO,
        "out of memory creating an LM generator");
    lm_gen_free (g);
    return NULL;
  }
  lm_gen_reset (g);
  return g;
}

void
lm_gen_free (LmGen *g)
{
  if (!g)
    return;
  lm_state_clear (&g->state);
  g_free (g->cache);
  moshi_free (g->transformer_out);
  moshi_free (g->text_logits);
  moshi_free (g->dep_logits);
  moshi_free (g->probs);
  g_free (g->order);
  g_free (g->input);
  lm_model_unref (g->model);
  g_free (g);
}

void
lm_gen_reset (LmGen *g)
{
  const LmConfig *c = &g->model->cfg;
  lm_state_reset (&g->state, g->model);
  /* Kyutai's "ungenerated" marker; never read before being written. */
  for (int i = 0; i < (1 + c->n_q) * g->ct; i++)
    g->cache[i] = -2;
  g->offset = 0;
  g->rng = g->params.seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull;
}

void
lm_gen_set_threads (LmGen *g, int n_threads)
{
  if (n_threads < 1)
    n_threads = 1;
  if (moshi_pool_threads (g->state.pool) == n_threads)
    return;
  moshi_pool_free (g->state.pool);
  g->state.pool = moshi_pool_new (n_threads);
}

int
lm_gen_user_codebooks (const LmGen *g)
{
  return g->model->cfg.n_q - g->model->cfg.dep_q;
}

/* Exp(1) draws for the exponential race (xoshiro-style splitmix). */
static float
rng_exponential (uint64_t *s)
{
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  double u = ((z >> 11) + 0.5) / 9007199254740992.0; /* (0, 1) */
  return (float) -log (u);
}

static int
argmax (const float *x, int n)
{
  int best = 0;
  for (int i = 1; i < n; i++)
    if (x[i] > x[best])
      best = i;
  return best;
}

/* Descending probability, ties by index (stable, like torch.topk).  The
 * keys come through qsort_r's argument: generators sample concurrently. */
static int
cmp_desc (const void *a, const void *b, void *keys)
{
  const float *p = keys;
  float x = p[*(const int *) a], y = p[*(const int *) b];
  if (x != y)
    return x > y ? -1 : 1;
  return *(const int *) a - *(const int *) b;
}

/* Kyutai's sample_token: greedy argmax, or softmax(logits / temp) over the
 * top-k, drawn by the exponential race argmax(p_i / E_i) with E_i ~ Exp(1)
 * (`noise` supplies the E_i in top-k order when not NULL). */
static int
sample (LmGen *g, const float *logits, int n, gboolean use_sampling, float temp,
    int top_k, const float *noise)
{
  if (!use_sampling || temp <= 0.0f)
    return argmax (logits, n);
  float mx = -FLT_MAX;
  for (int i = 0; i < n; i++)
    mx = MAX (mx, logits[i] / temp);
  double sum = 0.0;
  for (int i = 0; i < n; i++) {
    g->probs[i] = expf (logits[i] / temp - mx);
    sum += g->probs[i];
  }
  for (int i = 0; i < n; i++) {
    g->probs[i] = (float) (g->probs[i] / sum);
    g->order[i] = i;
  }
  int k = top_k > 0 ? MIN (top_k, n) : n;
  qsort_r (g->order, n, sizeof (int), cmp_desc, g->probs);
  int best = g->order[0];
  double best_score = -1.0;
  for (int i = 0; i < k; i++) {
    float e = noise ? noise[i] : rng_exponential (&g->rng);
    double score = g->probs[g->order[i]] / (double) e;
    if (score > best_score) {
      best_score = score;
      best = g->order[i];
    }
  }
  return best;
}

int
lm_gen_step (LmGen *g, const int *user_codes, int *out, LmGenTrace *trace,
    GError **error)
{
  const LmModel *m = g->model;
  const LmConfig *c = &m->cfg;
  const int K = 1 + c->n_q, CT = g->ct;
  const int n_user = c->n_q - c->dep_q;

  /* All codes = card: Hibiki's end-of-input frame (see lm.h). */
  gboolean all_card = n_user > 0;
  for (int i = 0; i < n_user; i++)
    all_card = all_card && user_codes[i] == c->card;
  for (int i = 0; i < n_user && !all_card; i++)
    if (user_codes[i] < 0 || user_codes[i] >= c->card) {
      g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_ARGUMENT,
          "user code %d of codebook %d is out of range (the model has %d "
          "entries per codebook)",
          user_codes[i], i, c->card);
      return -1;
    }

  for (int i = 0; i < n_user; i++) {
    const int k = 1 + c->dep_q + i;
    g->cache[k * CT + (g->offset + c->delays[k]) % CT] = user_codes[i];
  }
  const int pos = (int) (g->offset % CT);
  for (int k = 0; k < K; k++) {
    if (g->offset <= c->delays[k])
      g->cache[k * CT + pos] = k == 0 ? c->text_card : c->card;
    g->input[k] = g->cache[k * CT + pos];
  }
  if (trace && trace->main_input)
    memcpy (trace->main_input, g->input, sizeof (int) * K);

  TransformerState *ts = &g->state.main;
  ts->xa_enabled = g->offset >= g->xa_start;
  ts->xa_trace_gates = trace ? trace->xa_gates : NULL;
  ts->xa_trace_updates = trace ? trace->xa_updates : NULL;
  lm_forward_main (m, &g->state, g->input, g->transformer_out, g->text_logits);
  ts->xa_trace_gates = ts->xa_trace_updates = NULL;
  if (trace && trace->gate_summary)
    *trace->gate_summary = ts->xa_gate_summary;
  const int text = sample (g, g->text_logits, c->text_card,
      g->params.use_sampling, g->params.temp_text, g->params.top_k_text,
      trace ? trace->text_noise : NULL);
  if (trace && trace->transformer_out)
    memcpy (trace->transformer_out, g->transformer_out,
        sizeof (float) * c->dim);
  if (trace && trace->text_logits)
    memcpy (trace->text_logits, g->text_logits, sizeof (float) * c->text_card);
  if (trace && trace->text_token)
    *trace->text_token = text;

  const int next = (int) ((g->offset + 1) % CT);
  g->cache[next] = text;
  lm_depformer_begin (m, &g->state);
  int prev = text;
  for (int k = 0; k < c->dep_q; k++) {
    lm_depformer_step (m, &g->state, k, g->transformer_out, prev,
        g->dep_logits);
    const float *noise = trace && trace->audio_noise ? trace->audio_noise
            + (size_t) k
                * MIN (g->params.top_k > 0 ? g->params.top_k : c->card, c->card)
                                                     : NULL;
    prev = sample (g, g->dep_logits, c->card, g->params.use_sampling,
        g->params.temp, g->params.top_k, noise);
    if (trace && trace->depformer_logits)
      memcpy (trace->depformer_logits + (size_t) k * c->card, g->dep_logits,
          sizeof (float) * c->card);
    if (trace && trace->audio_tokens)
      trace->audio_tokens[k] = prev;
    g->cache[(1 + k) * CT + next] = prev;
  }
  g->offset++;

  if (g->offset <= g->max_delay)
    return 0;
  for (int k = 0; k <= c->dep_q; k++)
    out[k] = g->cache[k * CT + (g->offset - g->max_delay + c->delays[k]) % CT];
  return 1;
}

struct LmImage {
  gint refcount;
  CrossAttentionMemory *mem; /* K and V through the model's Wk, Wv */
  LmModel *model;
};

LmImage *
lm_image_new (LmModel *m, const float *img, int tokens, int dim, int n_threads,
    GError **error)
{
  if (!lm_model_has_cross_attention (m)) {
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_ARGUMENT,
        "this model has no cross-attention: it cannot look at images (a "
        "MoshiVis checkpoint is needed)");
    return NULL;
  }
  if (!img || tokens <= 0 || dim != m->cfg.dim) {
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_SHAPE,
        "image embedding of %d tokens x %d values; the model expects at least "
        "one token of %d values",
        tokens, dim, m->cfg.dim);
    return NULL;
  }
  MoshiPool *pool = moshi_pool_new (MAX (n_threads, 1));
  CrossAttentionMemory *mem =
      cross_attention_memory_new (&m->transformer.xa, pool, img, tokens);
  moshi_pool_free (pool);
  if (!mem) {
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_IO,
        "out of memory for the image keys and values of %d tokens", tokens);
    return NULL;
  }
  LmImage *image = g_new0 (LmImage, 1);
  image->refcount = 1;
  image->mem = mem;
  image->model = lm_model_ref (m);
  return image;
}

LmImage *
lm_image_ref (LmImage *image)
{
  g_atomic_int_inc (&image->refcount);
  return image;
}

void
lm_image_unref (LmImage *image)
{
  if (!image || !g_atomic_int_dec_and_test (&image->refcount))
    return;
  cross_attention_memory_unref (image->mem);
  lm_model_unref (image->model);
  g_free (image);
}

CrossAttentionMemory *
lm_image_memory (const LmImage *image)
{
  return image->mem;
}

int
lm_image_tokens (const LmImage *image)
{
  return image->mem->tokens;
}

gboolean
lm_gen_set_image (LmGen *g, LmImage *image, GError **error)
{
  const LmModel *m = g->model;
  if (image && image->model != m) {
    /* K and V went through another model's projections. */
    transformer_set_cross_memory (&m->transformer, &g->state.main, NULL);
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_ARGUMENT,
        "the image was prepared for another model than this generator's");
    return FALSE;
  }
  if (!transformer_set_cross_memory (&m->transformer, &g->state.main,
          image ? image->mem : NULL)) {
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_IO,
        "out of memory for the cross-attention of an image of %d tokens",
        image->mem->tokens);
    return FALSE;
  }
  return TRUE;
}

void
lm_gen_set_xa_start (LmGen *g, int xa_start)
{
  g->xa_start = MAX (xa_start, 0);
}

float
lm_gen_gate_summary (const LmGen *g)
{
  return g->state.main.xa_gate_summary;
}
