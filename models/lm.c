/* Moshi LM: weights and one forward step (Kyutai's LMModel). */
#include "lm-private.h"

#include <glib/gstdio.h>

#include "alloc.h"
#include "lora.h"
#include "model-error.h"
#include "weights.h"

#include <math.h>
#include <string.h>

/* ---------------------------------------------------------- embeddings --- */

static gboolean
embedding_load (LmEmbedding *e, const StFile *f, const char *prefix, int rows,
    int dim, int low_rank, MoshiWeightType type, GError **error)
{
  char name[256];
  memset (e, 0, sizeof *e);
  e->rows = rows;
  e->dim = dim;
  e->width = low_rank > 0 ? low_rank : dim;
  int64_t shape[2] = { rows, e->width };
  e->mapped =
      st_require (f, weights_name (name, "%s.weight", prefix), 2, shape, error);
  if (!e->mapped)
    return FALSE;
  if (e->mapped->dtype != ST_F32 && e->mapped->dtype != ST_BF16
      && e->mapped->dtype != ST_F16) {
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_DTYPE,
        "%s: embedding %s is %s; expected F32, BF16 or F16", st_path (f), name,
        st_dtype_name (e->mapped->dtype));
    return FALSE;
  }
  if (low_rank > 0
      && !moshi_linear_load (&e->low_rank, f,
          weights_name (name, "%s.low_rank.weight", prefix), low_rank, dim,
          type, error))
    return FALSE;
  return TRUE;
}

static void
embedding_clear (LmEmbedding *e)
{
  moshi_free (e->table); /* mapped rows belong to the model's file */
  moshi_linear_clear (&e->low_rank);
  memset (e, 0, sizeof *e);
}

/* Row `token` as float32: the owned table itself, or made into buf. */
static const float *
embedding_row (const LmEmbedding *e, int token, float *buf)
{
  if (e->table)
    return e->table + (size_t) token * e->width;
  if (e->random_seed) {
    uint64_t x = e->random_seed ^ ((uint64_t) token * 0x9E3779B97F4A7C15ull);
    for (int j = 0; j < e->width; j++) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      buf[j] = ((float) ((x >> 40) & 0xFFFF) / 32768.0f - 1.0f) * 0.05f;
    }
    return buf;
  }
  const size_t off = (size_t) token * e->width;
  const uint8_t *p = (const uint8_t *) e->mapped->data;
  if (e->mapped->dtype == ST_F32) {
    memcpy (buf, p + 4 * off, sizeof (float) * e->width);
    return buf;
  }
  p += 2 * off;
  for (int j = 0; j < e->width; j++) {
    uint16_t h = (uint16_t) (p[2 * j] | p[2 * j + 1] << 8);
    buf[j] =
        e->mapped->dtype == ST_BF16 ? st_bf16_to_f32 (h) : st_f16_to_f32 (h);
  }
  return buf;
}

/* dst[dim] += embedding of token; token < 0 embeds to zero (Kyutai's
 * zero_token_id).  `tmp` holds 2 * dim floats. */
static void
embedding_add (const LmEmbedding *e, int token, float *dst, float *tmp)
{
  if (token < 0)
    return;
  g_assert (token < e->rows);
  const float *row = embedding_row (e, token, tmp + e->dim);
  if (e->width == e->dim) {
    for (int j = 0; j < e->dim; j++)
      dst[j] += row[j];
  } else {
    moshi_linear_forward (&e->low_rank, NULL, row, 1, FALSE, tmp);
    for (int j = 0; j < e->dim; j++)
      dst[j] += tmp[j];
  }
}

/* --------------------------------------------------------------- model --- */

/* Tensor names: Kyutai's moshi checkpoints, or MoshiVis's PyTorch ones
 * (kyuteye_pt: the text side under "llm.", audio tables renamed). */
typedef struct {
  const char *text_emb, *emb, *transformer, *out_norm, *text_linear;
  const char *dep_in, *dep_text_emb, *dep_emb, *depformer, *linears;
} LmNames;

static const LmNames moshi_names = { "text_emb", "emb.%d", "transformer",
  "out_norm", "text_linear.weight", "depformer_in.%d.weight",
  "depformer_text_emb", "depformer_emb.%d", "depformer", "linears.%d.weight" };
static const LmNames moshivis_names = { "llm.text_emb", "audio_emb.%d",
  "llm.transformer", "llm.out_norm", "llm.text_linear.weight",
  "depformer_in.%d.weight", "depformer_text_emb", "depformer_emb.%d",
  "depformer", "audio_linears.%d.weight" };

static const LmNames *
names_for (const StFile *f)
{
  return st_find (f, "llm.text_emb.weight") ? &moshivis_names : &moshi_names;
}

/* Kyutai's gated MLPs use 2/3 of dim_feedforward as hidden width. */
static int
mlp_hidden (int dim_feedforward, gboolean gating)
{
  return gating ? 2 * dim_feedforward / 3 : dim_feedforward;
}

static void
model_free (LmModel *m)
{
  const LmConfig *c = &m->cfg;
  embedding_clear (&m->text_emb);
  if (m->emb)
    for (int i = 0; i < c->n_q; i++)
      embedding_clear (&m->emb[i]);
  g_free (m->emb);
  transformer_clear (&m->transformer);
  moshi_free (m->out_norm_w);
  moshi_free (m->out_norm_b);
  moshi_linear_clear (&m->text_linear);
  if (m->dep_in)
    for (int i = 0; i < m->n_dep_in; i++)
      moshi_linear_clear (&m->dep_in[i]);
  g_free (m->dep_in);
  embedding_clear (&m->dep_text_emb);
  if (m->dep_emb)
    for (int i = 0; i < c->dep_q - 1; i++)
      embedding_clear (&m->dep_emb[i]);
  g_free (m->dep_emb);
  moshi_free (m->cond_sum);
  transformer_clear (&m->depformer);
  if (m->linears)
    for (int i = 0; i < c->dep_q; i++)
      moshi_linear_clear (&m->linears[i]);
  g_free (m->linears);
  if (m->file)
    st_unref (m->file);
  moshi_pack_cache_unref (m->pack_cache); /* after the borrowed weights */
  g_free (m);
}

static TransformerConfig
main_transformer_config (const LmModel *m, MoshiWeightType weights)
{
  const LmConfig *c = &m->cfg;
  TransformerConfig tc = { 0 };
  tc.d_model = c->dim;
  tc.num_heads = c->num_heads;
  tc.num_layers = c->num_layers;
  tc.dim_feedforward = m->ff_hidden;
  tc.context = c->context;
  tc.max_period = c->max_period;
  tc.norm = c->rms_norm ? TRANSFORMER_NORM_RMS : TRANSFORMER_NORM_LAYER;
  tc.norm_eps = c->norm_eps;
  tc.gating = c->gating;
  tc.weights = weights;
  /* 8- and 4-bit models keep the KV cache in halves: at the full 3000-step
   * context the 7B's float32 cache is 3.1 GB, read whole every step. */
  tc.kv_half = weights == MOSHI_WEIGHTS_Q8 || weights == MOSHI_WEIGHTS_Q4;
  tc.positional = c->positional;
  return tc;
}

static int
depformer_sets (const LmConfig *c)
{
  if (!c->dep_weights_per_step)
    return 0;
  if (c->n_dep_schedule == 0)
    return c->dep_q;
  int sets = 0;
  for (int i = 0; i < c->n_dep_schedule; i++)
    sets = MAX (sets, c->dep_schedule[i] + 1);
  return sets;
}

static TransformerConfig
depformer_config (const LmModel *m, MoshiWeightType weights)
{
  const LmConfig *c = &m->cfg;
  TransformerConfig dc = { 0 };
  dc.d_model = c->dep_dim;
  dc.num_heads = c->dep_num_heads;
  dc.num_layers = c->dep_num_layers;
  dc.dim_feedforward = m->dep_ff_hidden;
  /* Kyutai runs the depformer without a context limit, on dep_q steps
   * from a fresh state each time: a ring of dep_q holds them all. */
  dc.context = MAX (c->dep_q, 1);
  dc.max_period = c->dep_max_period;
  dc.norm = c->rms_norm ? TRANSFORMER_NORM_RMS : TRANSFORMER_NORM_LAYER;
  dc.norm_eps = c->norm_eps;
  dc.gating = c->dep_gating;
  dc.weights = weights;
  dc.positional = c->dep_positional;
  dc.weight_sets = depformer_sets (c);
  dc.n_schedule = c->n_dep_schedule;
  memcpy (dc.schedule, c->dep_schedule, sizeof (int) * c->n_dep_schedule);
  return dc;
}

/* Kyutai's LUT conditioner for the value cfg->cond_index, as the "sum"
 * fuser adds it to every step's input: output_proj (embed[index]), [dim]. */
static float *
condition_load (const StFile *f, const LmConfig *c, GError **error)
{
  char name[256];
  int64_t eshape[2] = { c->cond_n_bins + 1, c->cond_dim };
  int64_t pshape[2] = { c->dim, c->cond_dim };
  float *embed = weights_load (f,
      weights_name (name, "condition_provider.conditioners.%s.embed.weight",
          c->cond_name),
      2, eshape, error);
  if (!embed)
    return NULL;
  float *proj = weights_load (f,
      weights_name (name,
          "condition_provider.conditioners.%s.output_proj.weight",
          c->cond_name),
      2, pshape, error);
  float *sum = proj ? moshi_alloc (sizeof (float) * c->dim) : NULL;
  if (sum) {
    const float *row = embed + (size_t) c->cond_index * c->cond_dim;
    for (int i = 0; i < c->dim; i++) {
      double acc = 0;
      for (int j = 0; j < c->cond_dim; j++)
        acc += (double) proj[(size_t) i * c->cond_dim + j] * row[j];
      sum[i] = (float) acc;
    }
  }
  moshi_free (embed);
  moshi_free (proj);
  return sum;
}

LmModel *
lm_model_load (const char *path, const LmConfig *cfg_in,
    MoshiWeightType weights, GError **error)
{
  return lm_model_load_lora (path, NULL, cfg_in, weights, error);
}

LmModel *
lm_model_load_lora (const char *path, const char *lora_path,
    const LmConfig *cfg_in, MoshiWeightType weights, GError **error)
{
  return lm_model_load_cached (path, lora_path, cfg_in, weights, NULL, NULL,
      error);
}

/* What the packed weights depend on: the files (path, size, mtime), the
 * configuration and the storage type. */
static gchar *
cache_key (const char *path, const char *lora_path, const LmConfig *cfg,
    MoshiWeightType weights)
{
  GString *k = g_string_new ("gst-moshi packed weights v1;");
  const char *files[2] = { path, lora_path };
  for (int i = 0; i < 2; i++) {
    GStatBuf st;
    if (!files[i])
      continue;
    gchar *real = g_canonicalize_filename (files[i], NULL);
    if (g_stat (files[i], &st) == 0)
      g_string_append_printf (k,
          "%s:%" G_GINT64_FORMAT ":%" G_GINT64_FORMAT ";", real,
          (gint64) st.st_size, (gint64) st.st_mtime);
    g_free (real);
  }
  gchar *sum = g_compute_checksum_for_data (G_CHECKSUM_SHA256,
      (const guchar *) cfg, sizeof *cfg);
  g_string_append_printf (k, "config %s;weights %s", sum,
      moshi_weight_type_name (weights));
  g_free (sum);
  return g_string_free (k, FALSE);
}

gboolean
lm_model_from_cache (const LmModel *m)
{
  return m->pack_cache && moshi_pack_cache_is_reading (m->pack_cache);
}

void
lm_model_for_each_linear (LmModel *m, gboolean cross_attention,
    TransformerLinearFn fn, void *data)
{
  transformer_for_each_linear (&m->transformer, cross_attention, fn, data);
  fn (&m->text_linear, data);
  for (int i = 0; i < m->n_dep_in; i++)
    fn (&m->dep_in[i], data);
  if (m->cfg.dep_q > 0) {
    transformer_for_each_linear (&m->depformer, FALSE, fn, data);
    for (int i = 0; i < m->cfg.dep_q; i++)
      fn (&m->linears[i], data);
  }
}

static void
settle_linear (MoshiLinear *l, void *data)
{
  (void) data;
  moshi_packed_settle (&l->w);
}

/* Once every weight is packed or lent and the load's temporaries are
 * gone (moshi_packed_settle). */
static void
settle_weights (LmModel *m)
{
  lm_model_for_each_linear (m, TRUE, settle_linear, NULL);
}

LmModel *
lm_model_load_cached (const char *path, const char *lora_path,
    const LmConfig *cfg_in, MoshiWeightType weights, const char *cache_path,
    gchar **cache_warning, GError **error)
{
  LmConfig defaults;
  if (!cfg_in) {
    lm_config_default (&defaults);
    cfg_in = &defaults;
  }
  if (cfg_in->lora && !lora_path) {
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_MISSING,
        "%s: the configuration says this model is a LoRA fine-tune (\"lora\": "
        "true) but no adapter file was given (the repo config's lora_name)",
        path);
    return NULL;
  }
  MoshiLoadCtx lora = { NULL, cfg_in->lora_scaling, 0, NULL };
  MoshiLoadCtx *lp = &lora;
  if (lora_path) {
    lora.file = st_open (lora_path, error);
    if (!lora.file)
      return NULL;
  }
  if (cache_path && weights != MOSHI_WEIGHTS_F32) {
    gchar *key = cache_key (path, lora_path, cfg_in, weights);
    GError *cerr = NULL;
    lora.cache = moshi_pack_cache_open (cache_path, key, &cerr);
    g_free (key);
    if (!lora.cache && cache_warning)
      *cache_warning = g_strdup (cerr->message);
    g_clear_error (&cerr);
  }
  StFile *f = st_open (path, error);
  if (!f) {
    if (lora.file)
      st_unref (lora.file);
    moshi_pack_cache_unref (lora.cache);
    return NULL;
  }
  LmModel *m = g_new0 (LmModel, 1);
  m->refcount = 1;
  m->cfg = *cfg_in;
  m->file = st_ref (f);
  const LmConfig *c = &m->cfg;
  const LmNames *nm = names_for (f);
  char name[256];
  gboolean ok = FALSE;

  m->ff_hidden = mlp_hidden ((int) (c->hidden_scale * c->dim), c->gating);
  m->dep_ff_hidden = mlp_hidden (c->dep_dim_feedforward, c->dep_gating);

  if (!embedding_load (&m->text_emb, f, nm->text_emb, c->text_card + 1, c->dim,
          0, weights, error))
    goto out;
  m->emb = g_new0 (LmEmbedding, MAX (c->n_q, 1));
  for (int i = 0; i < c->n_q; i++)
    if (!embedding_load (&m->emb[i], f, weights_name (name, nm->emb, i),
            c->card + 1, c->dim, 0, weights, error))
      goto out;

  TransformerConfig tc = main_transformer_config (m, weights);
  tc.lora = lp;
  if (!transformer_load (&m->transformer, &tc, f, nm->transformer, error))
    goto out;

  if (c->rms_norm) {
    int64_t shape[3] = { 1, 1, c->dim };
    m->out_norm_w = weights_load (f,
        weights_name (name, "%s.alpha", nm->out_norm), 3, shape, error);
  } else {
    int64_t shape[1] = { c->dim };
    m->out_norm_w = weights_load (f,
        weights_name (name, "%s.weight", nm->out_norm), 1, shape, error);
    if (m->out_norm_w)
      m->out_norm_b = weights_load (f,
          weights_name (name, "%s.bias", nm->out_norm), 1, shape, error);
    else
      goto out;
  }
  if (!m->out_norm_w || (!c->rms_norm && !m->out_norm_b))
    goto out;
  if (!moshi_linear_load_lora (&m->text_linear, f, nm->text_linear, c->dim,
          c->text_card, weights, lp, error))
    goto out;
  if (c->cond_dim > 0 && !(m->cond_sum = condition_load (f, c, error)))
    goto out;

  /* Depformer. */
  if (c->dep_q > 0) {
    const int sets = depformer_sets (c);
    m->n_dep_in =
        c->dep_multi_linear ? (c->n_dep_schedule > 0 ? sets : c->dep_q) : 1;
    m->dep_in = g_new0 (MoshiLinear, m->n_dep_in);
    for (int i = 0; i < m->n_dep_in; i++)
      if (!moshi_linear_load_lora (&m->dep_in[i], f,
              weights_name (name, nm->dep_in, i), c->dim, c->dep_dim, weights,
              lp, error))
        goto out;
    if (!embedding_load (&m->dep_text_emb, f, nm->dep_text_emb,
            c->text_card + 1, c->dep_dim, c->dep_low_rank, weights, error))
      goto out;
    m->dep_emb = g_new0 (LmEmbedding, MAX (c->dep_q - 1, 1));
    for (int i = 0; i < c->dep_q - 1; i++)
      if (!embedding_load (&m->dep_emb[i], f,
              weights_name (name, nm->dep_emb, i), c->card + 1, c->dep_dim,
              c->dep_low_rank, weights, error))
        goto out;
    TransformerConfig dc = depformer_config (m, weights);
    dc.lora = lp;
    if (!transformer_load (&m->depformer, &dc, f, nm->depformer, error))
      goto out;
    m->linears = g_new0 (MoshiLinear, c->dep_q);
    for (int i = 0; i < c->dep_q; i++)
      if (!moshi_linear_load_lora (&m->linears[i], f,
              weights_name (name, nm->linears, i), c->dep_dim, c->card, weights,
              lp, error))
        goto out;
  }
  m->cfg.cross_attention = m->transformer.cfg.cross_attention;
  /* Adapters already merged into cached weights count as applied. */
  if (lora.file && lora.applied == 0
      && !(lora.cache && moshi_pack_cache_lent (lora.cache) > 0)) {
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_MISSING,
        "%s: no tensor of this LoRA file adapts a weight of %s", lora_path,
        path);
    goto out;
  }
  /* Copying the weights reads a cache file once more: before the check
   * that no file was truncated while the model was read. */
  settle_weights (m);
  /* A file truncated while it was read fails the load (mapguard.h). */
  if (!st_finish_load (f, error)
      || (lora.file && !st_finish_load (lora.file, error))
      || (lora.cache && !moshi_pack_cache_finish_load (lora.cache, error)))
    goto out;
  ok = TRUE;
out:
  st_unref (f);
  if (lora.file)
    st_unref (lora.file);
  if (ok && lora.cache) {
    GError *cerr = NULL;
    if (!moshi_pack_cache_finish (lora.cache, &cerr) && cache_warning)
      *cache_warning = g_strdup (cerr->message);
    g_clear_error (&cerr);
    m->pack_cache = lora.cache; /* the model's weights may point into it */
  } else {
    moshi_pack_cache_unref (lora.cache);
  }
  if (!ok) {
    model_free (m);
    return NULL;
  }
  return m;
}

LmModel *
lm_model_new_random (const LmConfig *cfg, uint64_t seed,
    MoshiWeightType weights)
{
  LmModel *m = g_new0 (LmModel, 1);
  m->refcount = 1;
  m->cfg = *cfg;
  const LmConfig *c = &m->cfg;
  uint64_t s = seed * 2654435761u + 7;
  m->ff_hidden = mlp_hidden ((int) (c->hidden_scale * c->dim), c->gating);
  m->dep_ff_hidden = mlp_hidden (c->dep_dim_feedforward, c->dep_gating);
  LmEmbedding proto = { .dim = c->dim, .width = c->dim };
  m->text_emb = proto;
  m->text_emb.rows = c->text_card + 1;
  m->text_emb.random_seed = ++s;
  m->emb = g_new0 (LmEmbedding, MAX (c->n_q, 1));
  for (int i = 0; i < c->n_q; i++) {
    m->emb[i] = proto;
    m->emb[i].rows = c->card + 1;
    m->emb[i].random_seed = ++s;
  }
  TransformerConfig tc = main_transformer_config (m, weights);
  tc.cross_attention = c->cross_attention;
  transformer_random (&m->transformer, &tc, &s);
  m->out_norm_w = weights_random (&s, c->dim, 1.0f);
  if (!c->rms_norm)
    m->out_norm_b = weights_random (&s, c->dim, 0.1f);
  moshi_linear_random (&m->text_linear, &s, c->dim, c->text_card, weights);
  if (c->dep_q > 0) {
    const int sets = depformer_sets (c);
    m->n_dep_in =
        c->dep_multi_linear ? (c->n_dep_schedule > 0 ? sets : c->dep_q) : 1;
    m->dep_in = g_new0 (MoshiLinear, m->n_dep_in);
    for (int i = 0; i < m->n_dep_in; i++)
      moshi_linear_random (&m->dep_in[i], &s, c->dim, c->dep_dim, weights);
    LmEmbedding dp = { .dim = c->dep_dim, .width = c->dep_dim };
    m->dep_text_emb = dp;
    m->dep_text_emb.rows = c->text_card + 1;
    m->dep_text_emb.random_seed = ++s;
    m->dep_emb = g_new0 (LmEmbedding, MAX (c->dep_q - 1, 1));
    for (int i = 0; i < c->dep_q - 1; i++) {
      m->dep_emb[i] = dp;
      m->dep_emb[i].rows = c->card + 1;
      m->dep_emb[i].random_seed = ++s;
    }
    TransformerConfig dc = depformer_config (m, weights);
    transformer_random (&m->depformer, &dc, &s);
    m->linears = g_new0 (MoshiLinear, c->dep_q);
    for (int i = 0; i < c->dep_q; i++)
      moshi_linear_random (&m->linears[i], &s, c->dep_dim, c->card, weights);
  }
  settle_weights (m);
  return m;
}

LmModel *
lm_model_ref (LmModel *m)
{
  g_atomic_int_inc (&m->refcount);
  return m;
}

void
lm_model_unref (LmModel *m)
{
  if (m && g_atomic_int_dec_and_test (&m->refcount))
    model_free (m);
}

gboolean
lm_model_has_cross_attention (const LmModel *m)
{
  return m->transformer.cfg.cross_attention;
}

const LmConfig *
lm_model_config (const LmModel *m)
{
  return &m->cfg;
}

size_t
lm_model_weight_bytes (const LmModel *m)
{
  const LmConfig *c = &m->cfg;
  size_t n = transformer_bytes (&m->transformer)
      + transformer_bytes (&m->depformer)
      + moshi_linear_bytes (&m->text_linear);
  /* Embedding tables stay in the mapped file: not counted here. */
  for (int i = 0; i < m->n_dep_in; i++)
    n += moshi_linear_bytes (&m->dep_in[i]);
  for (int i = 0; i < c->dep_q; i++)
    n += moshi_linear_bytes (&m->linears[i]);
  return n;
}

/* --------------------------------------------------------------- state --- */

gboolean
lm_state_init (LmState *s, const LmModel *m)
{
  const LmConfig *c = &m->cfg;
  memset (s, 0, sizeof *s);
  s->pool = moshi_pool_new (1);
  gboolean ok = transformer_state_init (&s->main, &m->transformer, 1);
  if (c->dep_q > 0)
    ok = ok && transformer_state_init (&s->dep, &m->depformer, 1);
  s->x = moshi_alloc (sizeof (float) * c->dim);
  s->out = moshi_alloc (sizeof (float) * c->dim);
  s->dep_x = moshi_alloc (sizeof (float) * MAX (c->dep_dim, 1));
  s->emb_tmp = moshi_alloc (sizeof (float) * 2 * MAX (c->dim, c->dep_dim));
  ok = ok && s->x && s->out && s->dep_x && s->emb_tmp;
  if (!ok)
    lm_state_clear (s);
  return ok;
}

void
lm_state_clear (LmState *s)
{
  transformer_state_clear (&s->main);
  transformer_state_clear (&s->dep);
  moshi_free (s->x);
  moshi_free (s->out);
  moshi_free (s->dep_x);
  moshi_free (s->emb_tmp);
  moshi_pool_free (s->pool);
  memset (s, 0, sizeof *s);
}

void
lm_state_reset (LmState *s, const LmModel *m)
{
  transformer_state_reset (&s->main, &m->transformer);
  if (m->cfg.dep_q > 0)
    transformer_state_reset (&s->dep, &m->depformer);
}

/* ------------------------------------------------------------- forward --- */

void
lm_forward_main (const LmModel *m, LmState *s, const int *tokens,
    float *transformer_out, float *text_logits)
{
  const LmConfig *c = &m->cfg;
  /* Hibiki: Kyutai's loader gives the text EOS (2) the embedding of
   * padding (3), so that an early EOS reads as padding. */
  const int text =
      c->kind == LM_KIND_TRANSLATION && tokens[0] == 2 ? 3 : tokens[0];
  if (m->cond_sum)
    memcpy (s->x, m->cond_sum, sizeof (float) * c->dim);
  else
    memset (s->x, 0, sizeof (float) * c->dim);
  embedding_add (&m->text_emb, text, s->x, s->emb_tmp);
  for (int i = 0; i < c->n_q; i++)
    embedding_add (&m->emb[i], tokens[1 + i], s->x, s->emb_tmp);
  transformer_forward (&m->transformer, &s->main, s->pool, s->x, 1);
  if (c->rms_norm)
    moshi_rms_norm (transformer_out, s->x, m->out_norm_w, 1, c->dim,
        c->norm_eps);
  else
    moshi_layer_norm (transformer_out, s->x, m->out_norm_w, m->out_norm_b, 1,
        c->dim, c->norm_eps);
  moshi_linear_forward (&m->text_linear, s->pool, transformer_out, 1, FALSE,
      text_logits);
}

void
lm_depformer_begin (const LmModel *m, LmState *s)
{
  transformer_state_reset (&s->dep, &m->depformer);
}

void
lm_depformer_step (const LmModel *m, LmState *s, int k,
    const float *transformer_out, int prev_token, float *logits)
{
  const LmConfig *c = &m->cfg;
  int in_index = 0;
  if (c->dep_multi_linear)
    in_index = c->n_dep_schedule > 0 ? c->dep_schedule[k] : k;
  moshi_linear_forward (&m->dep_in[in_index], s->pool, transformer_out, 1,
      FALSE, s->dep_x);
  embedding_add (k == 0 ? &m->dep_text_emb : &m->dep_emb[k - 1], prev_token,
      s->dep_x, s->emb_tmp);
  transformer_forward (&m->depformer, &s->dep, s->pool, s->dep_x, 1);
  moshi_linear_forward (&m->linears[k], s->pool, s->dep_x, 1, FALSE, logits);
}

/* ------------------------------------------------------ teacher forced --- */

gboolean
lm_forward_teacher (LmModel *m, const int *codes, int T, float *logits,
    guint8 *mask, float *text_logits, guint8 *text_mask, GError **error)
{
  const LmConfig *c = &m->cfg;
  const int K = 1 + c->n_q, dq = c->dep_q;
  for (int i = 0; i < K * T; i++) {
    int limit = i / T == 0 ? c->text_card : c->card;
    if (codes[i] < -1 || codes[i] >= limit) {
      g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_ARGUMENT,
          "code %d at stream %d, step %d is out of range [-1, %d)", codes[i],
          i / T, i % T, limit);
      return FALSE;
    }
  }
  LmState s;
  if (!lm_state_init (&s, m)) {
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_IO,
        "out of memory for a teacher-forced pass");
    return FALSE;
  }
  /* delayed[k][p], p in [0, T]: the initial token at p = 0 and while the
   * stream's delay has not passed, then the codes shifted by the delay. */
  int *delayed = g_new (int, (size_t) K *(T + 1));
  for (int k = 0; k < K; k++) {
    const int init = k == 0 ? c->text_card : c->card;
    for (int p = 0; p <= T; p++) {
      int t = p - 1 - c->delays[k];
      delayed[k * (T + 1) + p] = t < 0 ? init : codes[k * T + t];
    }
  }
  float *out = g_new (float, c->dim);
  float *tl = g_new (float, c->text_card);
  float *dl = g_new (float, (size_t) MAX (dq, 1) * c->card * T);
  float *tls = g_new (float, (size_t) c->text_card *T);
  int *in = g_new (int, K);
  for (int t = 0; t < T; t++) {
    for (int k = 0; k < K; k++)
      in[k] = delayed[k * (T + 1) + t];
    lm_forward_main (m, &s, in, out, tl);
    memcpy (tls + (size_t) t * c->text_card, tl, sizeof (float) * c->text_card);
    lm_depformer_begin (m, &s);
    for (int k = 0; k < dq; k++)
      lm_depformer_step (m, &s, k, out, delayed[k * (T + 1) + t + 1],
          dl + ((size_t) k * T + t) * c->card);
  }
  /* Undelay: the prediction of codes[k][t] was made at step t + delay. */
  for (int k = 0; k <= dq; k++) {
    const int d = c->delays[k];
    const int n = k == 0 ? c->text_card : c->card;
    for (int t = 0; t < T; t++) {
      gboolean ok = t + d < T && codes[k * T + t] != -1;
      float *dst = k == 0 ? text_logits + (size_t) t * n
                          : logits + ((size_t) (k - 1) * T + t) * n;
      const float *src = k == 0 ? tls + (size_t) (t + d) * n
                                : dl + ((size_t) (k - 1) * T + t + d) * n;
      if (t + d < T)
        memcpy (dst, src, sizeof (float) * n);
      else
        for (int j = 0; j < n; j++)
          dst[j] = NAN;
      if (k == 0)
        text_mask[t] = ok;
      else
        mask[(size_t) (k - 1) * T + t] = ok;
    }
  }
  g_free (delayed);
  g_free (out);
  g_free (tl);
  g_free (dl);
  g_free (tls);
  g_free (in);
  lm_state_clear (&s);
  return TRUE;
}
