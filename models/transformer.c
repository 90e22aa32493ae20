#include "transformer.h"

#include "alloc.h"
#include "attention.h"
#include "model-error.h"
#include "vec-math.h"
#include "weights.h"

#include <math.h>
#include <string.h>

static gboolean
rope_init (Transformer *tr)
{
  const int hd = tr->cfg.d_model / tr->cfg.num_heads;
  tr->rope_freqs = moshi_alloc (sizeof (float) * MAX (hd / 2, 1));
  if (!tr->rope_freqs)
    return FALSE;
  /* Same float32 arithmetic as Kyutai's apply_rope. */
  for (int i = 0; i < hd / 2; i++)
    tr->rope_freqs[i] = expf (
        (float) i * (-(float) log (tr->cfg.max_period) * 2.0f / (float) hd));
  return TRUE;
}

static float *
load_vec (const StFile *f, const char *name, int d, gboolean rms_alpha,
    GError **error)
{
  /* Kyutai's RMSNorm stores alpha as [1, 1, d]. */
  if (rms_alpha) {
    int64_t shape[3] = { 1, 1, d };
    return weights_load (f, name, 3, shape, error);
  }
  int64_t shape[1] = { d };
  return weights_load (f, name, 1, shape, error);
}

static int
n_sets (const TransformerConfig *c)
{
  return c->weight_sets > 0 ? c->weight_sets : 1;
}

/* Weight set used at stream position `pos`. */
static int
set_for_position (const TransformerConfig *c, int64_t pos)
{
  if (c->weight_sets <= 0)
    return 0;
  int s = c->n_schedule > 0 ? c->schedule[MIN (pos, c->n_schedule - 1)]
                            : (int) MIN (pos, c->weight_sets - 1);
  return CLAMP (s, 0, c->weight_sets - 1);
}

static void
layer_alloc (TransformerLayer *L, int sets)
{
  L->in_proj = g_new0 (MoshiLinear, sets);
  L->out_proj = g_new0 (MoshiLinear, sets);
  L->ff_in = g_new0 (MoshiLinear, sets);
  L->ff_out = g_new0 (MoshiLinear, sets);
}

static MoshiWeightType
attn_weights (const TransformerConfig *cfg)
{
  return cfg->attn_q8 && cfg->weights == MOSHI_WEIGHTS_Q4 ? MOSHI_WEIGHTS_Q8
                                                          : cfg->weights;
}

gboolean
transformer_load (Transformer *tr, const TransformerConfig *cfg,
    const StFile *f, const char *prefix, GError **error)
{
  const int d = cfg->d_model;
  const int ff = cfg->dim_feedforward;
  const int sets = n_sets (cfg);
  const MoshiWeightType wt = cfg->weights, wt_attn = attn_weights (cfg);
  char name[256];
  memset (tr, 0, sizeof *tr);
  tr->cfg = *cfg;
  tr->layers = g_new0 (TransformerLayer, cfg->num_layers);
  if (!rope_init (tr))
    goto oom;
  for (int i = 0; i < cfg->num_layers; i++) {
    TransformerLayer *L = &tr->layers[i];
    char p[200];
    g_snprintf (p, sizeof p, "%s.layers.%d", prefix, i);
    layer_alloc (L, sets);
    gboolean rms = cfg->norm == TRANSFORMER_NORM_RMS;
    const char *nw = rms ? "alpha" : "weight";
    if (!(L->norm1_w = load_vec (f, weights_name (name, "%s.norm1.%s", p, nw),
              d, rms, error)))
      goto fail;
    if (!(L->norm2_w = load_vec (f, weights_name (name, "%s.norm2.%s", p, nw),
              d, rms, error)))
      goto fail;
    if (!rms) {
      if (!(L->norm1_b = load_vec (f, weights_name (name, "%s.norm1.bias", p),
                d, FALSE, error)))
        goto fail;
      if (!(L->norm2_b = load_vec (f, weights_name (name, "%s.norm2.bias", p),
                d, FALSE, error)))
        goto fail;
    }
    if (!moshi_linear_load_stacked (L->in_proj, sets, f,
            weights_name (name, "%s.self_attn.in_proj_weight", p), d, 3 * d,
            wt_attn, cfg->lora, error))
      goto fail;
    if (!moshi_linear_load_stacked (L->out_proj, sets, f,
            weights_name (name, "%s.self_attn.out_proj.weight", p), d, d,
            wt_attn, cfg->lora, error))
      goto fail;
    for (int s = 0; s < sets; s++) {
      char gp[220];
      if (!cfg->gating)
        g_snprintf (gp, sizeof gp, "%s", p);
      else if (cfg->weight_sets > 0)
        g_snprintf (gp, sizeof gp, "%s.gating.%d", p, s);
      else
        g_snprintf (gp, sizeof gp, "%s.gating", p);
      const char *in_name = cfg->gating ? "linear_in" : "linear1";
      const char *out_name = cfg->gating ? "linear_out" : "linear2";
      if (!moshi_linear_load_lora (&L->ff_in[s], f,
              weights_name (name, "%s.%s.weight", gp, in_name), d,
              cfg->gating ? 2 * ff : ff, wt, cfg->lora, error))
        goto fail;
      if (!moshi_linear_load_lora (&L->ff_out[s], f,
              weights_name (name, "%s.%s.weight", gp, out_name), ff, d, wt,
              cfg->lora, error))
        goto fail;
    }
    if (cfg->layer_scale) {
      if (!(L->ls1 =
                  load_vec (f, weights_name (name, "%s.layer_scale_1.scale", p),
                      d, FALSE, error)))
        goto fail;
      if (!(L->ls2 =
                  load_vec (f, weights_name (name, "%s.layer_scale_2.scale", p),
                      d, FALSE, error)))
        goto fail;
    }
  }
  /* MoshiVis: the shared cross-attention sits under layer 0 only. */
  g_snprintf (name, sizeof name, "%s.layers.0", prefix);
  GError *xa_error = NULL;
  tr->cfg.cross_attention = cross_attention_load (&tr->xa, f, name, d,
      cfg->num_heads, wt, cfg->lora, &xa_error);
  if (xa_error) {
    g_propagate_error (error, xa_error);
    goto fail;
  }
  for (int i = 0; i < cfg->num_layers && tr->cfg.cross_attention; i++) {
    char p[200];
    g_snprintf (p, sizeof p, "%s.layers.%d", prefix, i);
    if (!cross_attention_gate_load (&tr->layers[i].xa_gate, f, p, d,
            cfg->norm == TRANSFORMER_NORM_RMS, wt, cfg->lora, error))
      goto fail;
  }
  return TRUE;

oom:
  g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_IO,
      "out of memory loading %s", prefix);
fail:
  transformer_clear (tr);
  return FALSE;
}

void
transformer_random (Transformer *tr, const TransformerConfig *cfg,
    uint64_t *seed)
{
  const int d = cfg->d_model;
  const int ff = cfg->dim_feedforward;
  const int sets = n_sets (cfg);
  memset (tr, 0, sizeof *tr);
  tr->cfg = *cfg;
  tr->layers = g_new0 (TransformerLayer, cfg->num_layers);
  rope_init (tr);
  for (int i = 0; i < cfg->num_layers; i++) {
    TransformerLayer *L = &tr->layers[i];
    layer_alloc (L, sets);
    L->norm1_w = weights_random (seed, d, 1.0f);
    L->norm2_w = weights_random (seed, d, 1.0f);
    if (cfg->norm == TRANSFORMER_NORM_LAYER) {
      L->norm1_b = weights_random (seed, d, 0.1f);
      L->norm2_b = weights_random (seed, d, 0.1f);
    }
    for (int s = 0; s < sets; s++) {
      moshi_linear_random (&L->in_proj[s], seed, d, 3 * d, attn_weights (cfg));
      moshi_linear_random (&L->out_proj[s], seed, d, d, attn_weights (cfg));
      moshi_linear_random (&L->ff_in[s], seed, d, cfg->gating ? 2 * ff : ff,
          cfg->weights);
      moshi_linear_random (&L->ff_out[s], seed, ff, d, cfg->weights);
    }
    if (cfg->layer_scale) {
      L->ls1 = weights_random (seed, d, 0.1f);
      L->ls2 = weights_random (seed, d, 0.1f);
    }
    if (cfg->cross_attention)
      cross_attention_gate_random (&L->xa_gate, seed, d, d / 8,
          cfg->norm == TRANSFORMER_NORM_RMS, cfg->weights);
  }
  if (cfg->cross_attention)
    cross_attention_random (&tr->xa, seed, d, cfg->num_heads, cfg->weights);
}

void
transformer_clear (Transformer *tr)
{
  const int sets = n_sets (&tr->cfg);
  if (tr->layers)
    for (int i = 0; i < tr->cfg.num_layers; i++) {
      TransformerLayer *L = &tr->layers[i];
      moshi_free (L->norm1_w);
      moshi_free (L->norm1_b);
      moshi_free (L->norm2_w);
      moshi_free (L->norm2_b);
      for (int s = 0; s < sets; s++) {
        if (L->in_proj)
          moshi_linear_clear (&L->in_proj[s]);
        if (L->out_proj)
          moshi_linear_clear (&L->out_proj[s]);
        if (L->ff_in)
          moshi_linear_clear (&L->ff_in[s]);
        if (L->ff_out)
          moshi_linear_clear (&L->ff_out[s]);
      }
      g_free (L->in_proj);
      g_free (L->out_proj);
      g_free (L->ff_in);
      g_free (L->ff_out);
      moshi_free (L->ls1);
      moshi_free (L->ls2);
      cross_attention_gate_clear (&L->xa_gate);
    }
  cross_attention_clear (&tr->xa);
  g_free (tr->layers);
  moshi_free (tr->rope_freqs);
  tr->layers = NULL;
  tr->rope_freqs = NULL;
}

void
transformer_for_each_linear (Transformer *tr, gboolean cross_attention,
    TransformerLinearFn fn, void *data)
{
  const int sets = n_sets (&tr->cfg);
  for (int i = 0; i < tr->cfg.num_layers; i++) {
    TransformerLayer *L = &tr->layers[i];
    for (int s = 0; s < sets; s++) {
      fn (&L->in_proj[s], data);
      fn (&L->out_proj[s], data);
      fn (&L->ff_in[s], data);
      fn (&L->ff_out[s], data);
    }
  }
  if (!cross_attention)
    return;
  for (int i = 0; i < tr->cfg.num_layers; i++) {
    fn (&tr->layers[i].xa_gate.gate_in, data);
    fn (&tr->layers[i].xa_gate.gate_out, data);
  }
  fn (&tr->xa.q, data);
  fn (&tr->xa.k, data);
  fn (&tr->xa.v, data);
  fn (&tr->xa.out, data);
}

size_t
transformer_bytes (const Transformer *tr)
{
  const int d = tr->cfg.d_model;
  const int sets = n_sets (&tr->cfg);
  size_t n = 0;
  for (int i = 0; i < tr->cfg.num_layers; i++) {
    const TransformerLayer *L = &tr->layers[i];
    for (int s = 0; s < sets; s++)
      n += moshi_linear_bytes (&L->in_proj[s])
          + moshi_linear_bytes (&L->out_proj[s])
          + moshi_linear_bytes (&L->ff_in[s])
          + moshi_linear_bytes (&L->ff_out[s]);
    n += sizeof (float) * d * (2 + (L->norm1_b ? 2 : 0) + (L->ls1 ? 2 : 0));
    n += cross_attention_gate_bytes (&L->xa_gate);
  }
  return n + cross_attention_bytes (&tr->xa);
}

gboolean
transformer_state_init (TransformerState *s, const Transformer *tr, int max_t)
{
  const TransformerConfig *c = &tr->cfg;
  const size_t d = c->d_model;
  const size_t ctx = c->context;
  const size_t ffw = (size_t) c->dim_feedforward * (c->gating ? 2 : 1);
  memset (s, 0, sizeof *s);
  s->max_t = max_t;
  s->slot_pos = g_new (int64_t, ctx);
  const size_t kv_elem = c->kv_half ? 2 : sizeof (float);
  s->k = moshi_alloc (kv_elem * c->num_layers * moshi_key_slots (ctx) * d);
  s->v = moshi_alloc (kv_elem * c->num_layers * ctx * d);
  s->h = moshi_alloc (sizeof (float) * max_t * d);
  s->qkv = moshi_alloc (sizeof (float) * max_t * 3 * d);
  s->attn = moshi_alloc (sizeof (float) * max_t * d);
  s->ff = moshi_alloc (sizeof (float) * max_t * ffw);
  s->scores = moshi_alloc (sizeof (float) * 2 * ctx * c->num_heads);
  s->valid = moshi_alloc (2 * ctx);
  if (!(s->k && s->v && s->h && s->qkv && s->attn && s->ff && s->scores
          && s->valid)) {
    transformer_state_clear (s);
    return FALSE;
  }
  transformer_state_reset (s, tr);
  return TRUE;
}

void
transformer_state_clear (TransformerState *s)
{
  g_free (s->slot_pos);
  moshi_free (s->k);
  moshi_free (s->v);
  moshi_free (s->h);
  moshi_free (s->qkv);
  moshi_free (s->attn);
  moshi_free (s->ff);
  moshi_free (s->scores);
  moshi_free (s->valid);
  cross_attention_memory_unref (s->xa_mem);
  cross_attention_scratch_clear (&s->xa_scratch);
  memset (s, 0, sizeof *s);
}

void
transformer_state_reset (TransformerState *s, const Transformer *tr)
{
  s->offset = 0;
  for (int i = 0; i < tr->cfg.context; i++)
    s->slot_pos[i] = -1;
}

size_t
transformer_state_bytes (const TransformerState *s, const Transformer *tr)
{
  const TransformerConfig *c = &tr->cfg;
  const size_t d = c->d_model;
  const size_t ffw = (size_t) c->dim_feedforward * (c->gating ? 2 : 1);
  const size_t kv_elem = c->kv_half ? 2 : sizeof (float);
  return sizeof (int64_t) * c->context
      + kv_elem * (size_t) c->num_layers
      * (moshi_key_slots (c->context) + c->context) * d
      + sizeof (float)
      * ((size_t) s->max_t * (5 * d + ffw)
          + 2 * (size_t) c->context * c->num_heads)
      + 2 * (size_t) c->context + sizeof (float) * 5 * s->xa_scratch.capacity;
}

gboolean
transformer_set_cross_memory (const Transformer *tr, TransformerState *s,
    CrossAttentionMemory *mem)
{
  cross_attention_memory_unref (s->xa_mem);
  s->xa_mem = NULL;
  if (!mem)
    return TRUE;
  if (!tr->cfg.cross_attention || mem->dim != tr->cfg.d_model
      || !cross_attention_scratch_reserve (&s->xa_scratch, mem->tokens,
          tr->cfg.d_model))
    return FALSE;
  s->xa_mem = cross_attention_memory_ref (mem);
  return TRUE;
}

/* Rotates interleaved pairs (x[2i], x[2i+1]) of each head by angle pos*f_i. */
static void
rope_apply (const Transformer *tr, float *x, int64_t pos)
{
  const int H = tr->cfg.num_heads;
  const int hd = tr->cfg.d_model / H;
  for (int i = 0; i < hd / 2; i++) {
    float angle = tr->rope_freqs[i] * (float) pos;
    float cr = cosf (angle), ci = sinf (angle);
    for (int h = 0; h < H; h++) {
      float *p = x + h * hd + 2 * i;
      float re = p[0], im = p[1];
      p[0] = re * cr - im * ci;
      p[1] = re * ci + im * cr;
    }
  }
}

static void
norm (const Transformer *tr, float *dst, const float *src, const float *w,
    const float *b, int t)
{
  const TransformerConfig *c = &tr->cfg;
  if (c->norm == TRANSFORMER_NORM_RMS)
    moshi_rms_norm (dst, src, w, t, c->d_model, c->norm_eps);
  else
    moshi_layer_norm (dst, src, w, b, t, c->d_model, c->norm_eps);
}

/* One query row or a pair of them against one layer's cache, the heads
 * split over the pool's threads: a head reads only its own keys and values
 * ([heads][...] blocks, contiguous) and writes only its own slice of the
 * output and its own score rows. */
typedef struct {
  const TransformerConfig *c;
  const void *kc, *vc; /* this layer's cache */
  int key_slots; /* moshi_key_slots (context): a head's key tiles */
  const float *q[2];
  float *out[2];
  float *scores; /* [heads][2][context] */
  const guint8 *valid[2];
  int lo[2], hi[2];
  int nq;
  float scale;
} AttendJob;

static void
attend_heads (void *arg, int index, int count)
{
  const AttendJob *j = arg;
  const TransformerConfig *c = j->c;
  const int H = c->num_heads, hd = c->d_model / H, ctx = c->context;
  for (int h = H * index / count; h < H * (index + 1) / count; h++) {
    float *sc[2] = { j->scores + (size_t) h * 2 * ctx,
      j->scores + ((size_t) h * 2 + 1) * ctx };
    const float *qh[2] = { j->q[0] + h * hd, j->q[j->nq - 1] + h * hd };
    float *oh[2] = { j->out[0] + h * hd, j->out[j->nq - 1] + h * hd };
    const size_t koff = (size_t) h * hd * j->key_slots;
    const size_t voff = (size_t) h * hd * ctx;
    if (c->kv_half) {
      const uint16_t *kh = (const uint16_t *) j->kc + koff;
      const uint16_t *vh = (const uint16_t *) j->vc + voff;
      if (j->nq == 2)
        moshi_attention_head2_f16 (qh, kh, vh, hd, hd, j->scale, j->valid,
            j->lo, j->hi, sc, oh);
      else
        moshi_attention_head_f16 (qh[0], kh, vh, hd, hd, j->scale, j->valid[0],
            j->lo[0], j->hi[0], sc[0], oh[0]);
    } else {
      const float *kh = (const float *) j->kc + koff;
      const float *vh = (const float *) j->vc + voff;
      if (j->nq == 2)
        moshi_attention_head2 (qh, kh, vh, hd, hd, j->scale, j->valid, j->lo,
            j->hi, sc, oh);
      else
        moshi_attention_head (qh[0], kh, vh, hd, hd, j->scale, j->valid[0],
            j->lo[0], j->hi[0], sc[0], oh[0]);
    }
  }
}

void
transformer_forward (const Transformer *tr, TransformerState *s,
    MoshiPool *pool, float *x, int t)
{
  const TransformerConfig *c = &tr->cfg;
  const int d = c->d_model, H = c->num_heads, hd = d / H, ctx = c->context;
  const int key_slots = moshi_key_slots (ctx);
  const float scale = 1.0f / sqrtf ((float) hd);
  g_assert (t > 0 && t <= s->max_t && t <= ctx);

  if (c->positional == TRANSFORMER_POS_SIN) {
    /* Kyutai's create_sin_embedding: [cos | sin] of pos / period^(i/(h-1)). */
    const int half = d / 2;
    for (int i = 0; i < t; i++) {
      float *row = x + (size_t) i * d;
      const float pos = (float) (s->offset + i);
      for (int j = 0; j < half; j++) {
        float phase = pos
            / powf ((float) c->max_period,
                (float) j / (float) MAX (half - 1, 1));
        row[j] += cosf (phase);
        row[half + j] += sinf (phase);
      }
    }
  }

  /* Every layer writes the new steps to the same ring slots. */
  for (int i = 0; i < t; i++)
    s->slot_pos[(s->offset + i) % ctx] = s->offset + i;

  /* The gate summary averages the last (up to) 10 layers' mean gate. */
  const gboolean xa_on = c->cross_attention && s->xa_enabled && s->xa_mem;
  const int summary_layers = MIN (10, c->num_layers);
  float gate_sum = 0.0f;

  for (int l = 0; l < c->num_layers; l++) {
    const TransformerLayer *L = &tr->layers[l];
    const gboolean half = c->kv_half;
    float *kc = half ? NULL : (float *) s->k + (size_t) l * key_slots * d;
    float *vc = half ? NULL : (float *) s->v + (size_t) l * ctx * d;
    uint16_t *kc16 =
        half ? (uint16_t *) s->k + (size_t) l * key_slots * d : NULL;
    uint16_t *vc16 = half ? (uint16_t *) s->v + (size_t) l * ctx * d : NULL;

    /* --- self-attention block --- */
    norm (tr, s->h, x, L->norm1_w, L->norm1_b, t);
    /* Rows of one call share a weight set unless the set changes with the
     * position: then each row runs on its own. */
    for (int i = 0; i < t; i++) {
      const int set = set_for_position (c, s->offset + i);
      const int rows = c->weight_sets > 0 ? 1 : t;
      moshi_linear_forward (&L->in_proj[set], pool, s->h + (size_t) i * d, rows,
          FALSE, s->qkv + (size_t) i * 3 * d);
      if (rows == t)
        break;
    }
    for (int i = 0; i < t; i++) {
      float *q = s->qkv + (size_t) i * 3 * d;
      float *k = q + d, *v = q + 2 * d;
      int64_t pos = s->offset + i;
      if (c->positional == TRANSFORMER_POS_ROPE) {
        rope_apply (tr, q, pos);
        rope_apply (tr, k, pos);
      }
      int slot = (int) (pos % ctx);
      /* Head h's key goes into its tiles (attention.h: moshi_key_index),
       * its value row to [h][slot][head_dim]. */
      for (int h = 0; h < H; h++) {
        /* channel c of this slot: at + c * MOSHI_KEY_TILE */
        const size_t at =
            (size_t) h * hd * key_slots + moshi_key_index (hd, 0, slot);
        const size_t vrow = ((size_t) h * ctx + slot) * hd;
        const float *kh = k + h * hd;
        for (int c0 = 0; c0 < hd; c0 += 256) {
          const int n = MIN (256, hd - c0);
          if (half) {
            uint16_t k16[256];
            moshi_f32_to_f16_n (k16, kh + c0, n);
            for (int c = 0; c < n; c++)
              kc16[at + (size_t) (c0 + c) * MOSHI_KEY_TILE] = k16[c];
          } else {
            for (int c = 0; c < n; c++)
              kc[at + (size_t) (c0 + c) * MOSHI_KEY_TILE] = kh[c0 + c];
          }
        }
        if (half)
          moshi_f32_to_f16_n (vc16 + vrow, v + h * hd, hd);
        else
          memcpy (vc + vrow, v + h * hd, sizeof (float) * hd);
      }
    }
    /* Queries two at a time: one pass over the cache serves both. */
    for (int i = 0; i < t; i += 2) {
      AttendJob job = { .c = c,
        .kc = half ? (void *) kc16 : (void *) kc,
        .vc = half ? (void *) vc16 : (void *) vc,
        .key_slots = key_slots,
        .scores = s->scores,
        .nq = MIN (2, t - i),
        .scale = scale };
      for (int r = 0; r < job.nq; r++) {
        job.q[r] = s->qkv + (size_t) (i + r) * 3 * d;
        job.out[r] = s->attn + (size_t) (i + r) * d;
        guint8 *ok = s->valid + (size_t) r * ctx;
        job.valid[r] = ok;
        memset (job.out[r], 0, sizeof (float) * d);
        /* Valid slots: written, not in the future, inside the window. */
        const int64_t pos_q = s->offset + i + r;
        job.lo[r] = ctx;
        job.hi[r] = -1;
        for (int j = 0; j < ctx; j++) {
          int64_t pk = s->slot_pos[j];
          int64_t delta = pos_q - pk;
          ok[j] = pk >= 0 && delta >= 0 && delta < ctx;
          if (ok[j]) {
            job.lo[r] = MIN (job.lo[r], j);
            job.hi[r] = MAX (job.hi[r], j);
          }
        }
      }
      moshi_pool_run (pool, attend_heads, &job);
    }
    for (int i = 0; i < t; i++) {
      const int set = set_for_position (c, s->offset + i);
      const int rows = c->weight_sets > 0 ? 1 : t;
      moshi_linear_forward (&L->out_proj[set], pool, s->attn + (size_t) i * d,
          rows, FALSE, s->h + (size_t) i * d);
      if (rows == t)
        break;
    }
    moshi_add_scaled_rows (x, s->h, L->ls1, t, d);

    /* --- gated cross-attention to the image (MoshiVis) --- */
    if (xa_on) {
      norm (tr, s->h, x, L->xa_gate.norm_w, L->xa_gate.norm_b, t);
      for (int i = 0; i < t; i++) {
        const gboolean last = i == t - 1;
        float *gates = last && s->xa_trace_gates
            ? s->xa_trace_gates + (size_t) l * d
            : NULL;
        float *upd = s->attn + (size_t) i * d;
        float mean = cross_attention_step (&tr->xa, &L->xa_gate, s->xa_mem,
            &s->xa_scratch, pool, s->h + (size_t) i * d, upd, gates);
        if (last && s->xa_trace_updates)
          memcpy (s->xa_trace_updates + (size_t) l * d, upd,
              sizeof (float) * d);
        if (last && l >= c->num_layers - summary_layers)
          gate_sum += mean;
      }
      moshi_add_scaled_rows (x, s->attn, NULL, t, d);
    }

    /* --- feed-forward block --- */
    norm (tr, s->h, x, L->norm2_w, L->norm2_b, t);
    const int ff = c->dim_feedforward;
    const int ffw = c->gating ? 2 * ff : ff;
    for (int i = 0; i < t; i++) {
      const int set = set_for_position (c, s->offset + i);
      const int rows = c->weight_sets > 0 ? 1 : t;
      moshi_linear_forward (&L->ff_in[set], pool, s->h + (size_t) i * d, rows,
          FALSE, s->ff + (size_t) i * ffw);
      if (rows == t)
        break;
    }
    if (c->gating) {
      /* linear_in gives [gate | value]; hidden = silu(gate) * value. */
      for (int i = 0; i < t; i++) {
        /* Row i's output lands at row i of [t][ff], which starts at or
         * before its own [gate | value] (row i of [t][2 ff]): for i > 0
         * it overlaps the previous row's input, already consumed. */
        const float *row = s->ff + (size_t) i * 2 * ff;
        moshi_silu_mul (s->ff + (size_t) i * ff, row, row + ff, ff);
      }
    } else {
      moshi_gelu (s->ff, s->ff, (size_t) t * ff);
    }
    for (int i = 0; i < t; i++) {
      const int set = set_for_position (c, s->offset + i);
      const int rows = c->weight_sets > 0 ? 1 : t;
      moshi_linear_forward (&L->ff_out[set], pool, s->ff + (size_t) i * ff,
          rows, FALSE, s->h + (size_t) i * d);
      if (rows == t)
        break;
    }
    moshi_add_scaled_rows (x, s->h, L->ls2, t, d);
  }
  s->xa_gate_summary = xa_on ? gate_sum / (float) summary_layers : 0.0f;
  s->offset += t;
}
