/* Mimi model assembly: SEANet + transformer + stride-2 resampling + split
 * RVQ, one 80 ms frame at a time (Kyutai's MimiModel in streaming mode). */
#include "mimi.h"

#include "alloc.h"
#include "conv.h"
#include "cpu.h"
#include "model-error.h"
#include "rvq.h"
#include "seanet.h"
#include "transformer.h"

#include <string.h>

struct MimiModel {
  gint refcount;
  MimiConfig cfg;
  int steps; /* transformer steps per frame (2) */
  MoshiWeightType weights;
  Seanet encoder, decoder;
  Transformer enc_tr, dec_tr;
  MoshiConv1d downsample; /* learnt, stride 2, replicate padding */
  MoshiConvTr1d upsample; /* depthwise, stride 2 */
  Rvq rvq;
};

struct MimiEncoder {
  MimiModel *model;
  int n_q;
  MoshiPool *pool;
  SeanetState seanet;
  TransformerState tr;
  MoshiConv1dState down;
  float *x; /* [steps][dim] */
  float *latent; /* [dim] */
  float *scratch;
};

struct MimiDecoder {
  MimiModel *model;
  int n_q;
  MoshiPool *pool;
  SeanetState seanet;
  TransformerState tr;
  MoshiConvTr1dState up;
  float *latent; /* [dim] */
  float *x; /* [steps][dim] */
  float *scratch;
};

static void
seanet_config_from (SeanetConfig *s, const MimiConfig *c,
    MoshiWeightType weights)
{
  memset (s, 0, sizeof *s);
  s->channels = c->channels;
  s->dimension = c->dimension;
  s->n_filters = c->n_filters;
  s->n_residual_layers = c->n_residual_layers;
  s->n_ratios = c->n_ratios;
  memcpy (s->ratios, c->ratios, sizeof s->ratios);
  s->kernel_size = c->kernel_size;
  s->residual_kernel_size = c->residual_kernel_size;
  s->last_kernel_size = c->last_kernel_size;
  s->dilation_base = c->dilation_base;
  s->compress = c->compress;
  s->frame_samples = c->frame_size;
  s->weights = weights;
  /* The layers over many rows are compute-bound: with approximate weights
   * asked for and AMX present, bf16 there is both faster and more precise
   * than 8 or 4 bits (float32 stays float32 everywhere: it is exact). */
  s->wide_weights = weights != MOSHI_WEIGHTS_F32 && moshi_cpu_has_amx ()
      ? MOSHI_WEIGHTS_BF16
      : weights;
}

static void
transformer_config_from (TransformerConfig *t, const MimiConfig *c,
    MoshiWeightType weights)
{
  memset (t, 0, sizeof *t);
  t->d_model = c->d_model;
  t->num_heads = c->num_heads;
  t->num_layers = c->num_layers;
  t->dim_feedforward = c->dim_feedforward;
  t->context = c->context;
  t->max_period = c->max_period;
  t->norm = TRANSFORMER_NORM_LAYER;
  t->norm_eps = 1e-5f;
  t->gating = FALSE;
  t->layer_scale = TRUE;
  t->weights = weights;
  /* float32 is exact; the approximate modes read the cache as halves. */
  t->kv_half = weights != MOSHI_WEIGHTS_F32;
  t->attn_q8 = FALSE; /* see encoder_transformer_config */
}

/* The encoder's transformer keeps its attention projections in 8 bits
 * when the rest is in 4: they cost most of q4's accuracy on the codes (the
 * mimi-small case: latent 18.0 -> 19.6 dB, codebook 0 83 -> 100 %) for a
 * sixth of its bytes.  The decoder's do not change the codes, and its
 * output barely (56.5 -> 57.0 dB): it stays all 4-bit. */
static TransformerConfig
encoder_transformer_config (const TransformerConfig *t)
{
  TransformerConfig e = *t;
  e.attn_q8 = TRUE;
  return e;
}

static MimiModel *
model_new (const MimiConfig *cfg, MoshiWeightType weights)
{
  MimiModel *m = g_new0 (MimiModel, 1);
  m->refcount = 1;
  m->cfg = *cfg;
  m->weights = weights;
  int hop = 1;
  for (int i = 0; i < cfg->n_ratios; i++)
    hop *= cfg->ratios[i];
  m->steps = cfg->frame_size / hop;
  return m;
}

static void
model_free (MimiModel *m)
{
  seanet_clear (&m->encoder);
  seanet_clear (&m->decoder);
  transformer_clear (&m->enc_tr);
  transformer_clear (&m->dec_tr);
  moshi_conv1d_clear (&m->downsample);
  moshi_convtr1d_clear (&m->upsample);
  rvq_clear (&m->rvq);
  g_free (m);
}

MimiModel *
mimi_model_load_with_config (const char *path, const MimiConfig *cfg,
    MoshiWeightType weights, GError **error)
{
  if (!mimi_config_validate (cfg, path, error))
    return NULL;
  StFile *f = st_open (path, error);
  if (!f)
    return NULL;

  MimiModel *m = model_new (cfg, weights);
  SeanetConfig sc;
  TransformerConfig tc;
  const int dim = cfg->dimension, stride = m->steps;
  seanet_config_from (&sc, cfg, weights);
  transformer_config_from (&tc, cfg, weights);
  const TransformerConfig etc = encoder_transformer_config (&tc);
  gboolean ok = seanet_load (&m->encoder, &sc, FALSE, f, "encoder", error)
      && seanet_load (&m->decoder, &sc, TRUE, f, "decoder", error)
      && transformer_load (&m->enc_tr, &etc, f,
          "encoder_transformer.transformer", error)
      && transformer_load (&m->dec_tr, &tc, f,
          "decoder_transformer.transformer", error)
      && moshi_conv1d_load (&m->downsample, f, "downsample.conv.conv.conv", dim,
          dim, 2 * stride, stride, 1, FALSE, TRUE, weights, error)
      && moshi_convtr1d_load (&m->upsample, f, "upsample.convtr.convtr.convtr",
          dim, dim, 2 * stride, stride, FALSE, TRUE, weights, error)
      && rvq_load (&m->rvq, f, "quantizer", cfg->q_dimension, dim, dim,
          cfg->q_bins, cfg->q_n_q, error)
      /* Everything is copied; a file truncated meanwhile fails here. */
      && st_finish_load (f, error);
  st_unref (f);
  if (!ok) {
    model_free (m);
    return NULL;
  }
  return m;
}

MimiModel *
mimi_model_load (const char *path, GError **error)
{
  return mimi_model_load_typed (path, MOSHI_WEIGHTS_F32, error);
}

MimiModel *
mimi_model_load_typed (const char *path, MoshiWeightType weights,
    GError **error)
{
  MimiConfig cfg;
  mimi_config_default (&cfg);
  gchar *dir = g_path_get_dirname (path);
  gchar *json = g_build_filename (dir, "config.json", NULL);
  g_free (dir);
  /* A config.json beside the weights describes small/test models; Kyutai's
   * repo-level config.json (for the LM) has no "seanet" and is ignored. */
  if (g_file_test (json, G_FILE_TEST_IS_REGULAR)) {
    gchar *text = NULL;
    if (g_file_get_contents (json, &text, NULL, NULL)
        && strstr (text, "\"seanet\"") != NULL) {
      if (!mimi_config_load_json (&cfg, json, error)) {
        g_free (text);
        g_free (json);
        return NULL;
      }
    }
    g_free (text);
  }
  g_free (json);
  return mimi_model_load_with_config (path, &cfg, weights, error);
}

MimiModel *
mimi_model_new_random (const MimiConfig *cfg, uint64_t seed,
    MoshiWeightType weights)
{
  if (!mimi_config_validate (cfg, "random model", NULL))
    return NULL;
  MimiModel *m = model_new (cfg, weights);
  SeanetConfig sc;
  TransformerConfig tc;
  const int dim = cfg->dimension, stride = m->steps;
  uint64_t s = seed * 2654435761u + 1;
  seanet_config_from (&sc, cfg, weights);
  transformer_config_from (&tc, cfg, weights);
  seanet_random (&m->encoder, &sc, FALSE, &s);
  seanet_random (&m->decoder, &sc, TRUE, &s);
  const TransformerConfig etc = encoder_transformer_config (&tc);
  transformer_random (&m->enc_tr, &etc, &s);
  transformer_random (&m->dec_tr, &tc, &s);
  moshi_conv1d_random (&m->downsample, &s, dim, dim, 2 * stride, stride, 1,
      FALSE, weights);
  m->downsample.replicate = TRUE;
  moshi_convtr1d_random (&m->upsample, &s, dim, dim, 2 * stride, stride, FALSE,
      TRUE, weights);
  rvq_random (&m->rvq, &s, cfg->q_dimension, dim, dim, cfg->q_bins, cfg->q_n_q);
  return m;
}

MimiModel *
mimi_model_ref (MimiModel *m)
{
  g_atomic_int_inc (&m->refcount);
  return m;
}

void
mimi_model_unref (MimiModel *m)
{
  if (m && g_atomic_int_dec_and_test (&m->refcount))
    model_free (m);
}

MoshiWeightType
mimi_model_weight_type (const MimiModel *m)
{
  return m->weights;
}

const MimiConfig *
mimi_model_config (const MimiModel *m)
{
  return &m->cfg;
}

size_t
mimi_model_weight_bytes (const MimiModel *m)
{
  return seanet_bytes (&m->encoder) + seanet_bytes (&m->decoder)
      + transformer_bytes (&m->enc_tr) + transformer_bytes (&m->dec_tr)
      + moshi_conv1d_bytes (&m->downsample)
      + moshi_convtr1d_bytes (&m->upsample) + rvq_bytes (&m->rvq);
}

static gboolean
check_codebooks (const MimiModel *m, int n_q, GError **error)
{
  if (n_q < 1 || n_q > m->cfg.q_n_q) {
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_ARGUMENT,
        "%d codebooks requested, but this Mimi model has %d (use 1 to %d)", n_q,
        m->cfg.q_n_q, m->cfg.q_n_q);
    return FALSE;
  }
  return TRUE;
}

/* ----------------------------------------------------------- encoder --- */

MimiEncoder *
mimi_encoder_new (MimiModel *m, int n_codebooks, GError **error)
{
  if (!check_codebooks (m, n_codebooks, error))
    return NULL;
  const int dim = m->cfg.dimension;
  MimiEncoder *e = g_new0 (MimiEncoder, 1);
  e->model = mimi_model_ref (m);
  e->n_q = n_codebooks;
  e->pool = moshi_pool_new (1);
  gboolean ok = seanet_state_init (&e->seanet, &m->encoder, m->cfg.frame_size)
      && transformer_state_init (&e->tr, &m->enc_tr, m->steps)
      && moshi_conv1d_state_init (&e->down, &m->downsample, m->steps);
  e->x = moshi_alloc (sizeof (float) * m->steps * dim);
  e->latent = moshi_alloc (sizeof (float) * dim);
  e->scratch = moshi_alloc (sizeof (float) * rvq_scratch_floats (&m->rvq));
  if (!ok || !e->x || !e->latent || !e->scratch) {
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_IO,
        "out of memory creating a Mimi encoder stream");
    mimi_encoder_free (e);
    return NULL;
  }
  return e;
}

void
mimi_encoder_free (MimiEncoder *e)
{
  if (!e)
    return;
  MimiModel *m = e->model;
  seanet_state_clear (&e->seanet, &m->encoder);
  transformer_state_clear (&e->tr);
  moshi_conv1d_state_clear (&e->down);
  moshi_free (e->x);
  moshi_free (e->latent);
  moshi_free (e->scratch);
  moshi_pool_free (e->pool);
  mimi_model_unref (m);
  g_free (e);
}

void
mimi_encoder_reset (MimiEncoder *e)
{
  MimiModel *m = e->model;
  seanet_state_reset (&e->seanet, &m->encoder);
  transformer_state_reset (&e->tr, &m->enc_tr);
  moshi_conv1d_state_reset (&e->down, &m->downsample);
}

int
mimi_encoder_codebooks (const MimiEncoder *e)
{
  return e->n_q;
}

size_t
mimi_encoder_state_bytes (const MimiEncoder *e)
{
  const MimiModel *m = e->model;
  return seanet_state_bytes (&e->seanet, &m->encoder)
      + transformer_state_bytes (&e->tr, &m->enc_tr)
      + moshi_conv1d_state_bytes (&e->down, &m->downsample)
      + sizeof (float)
      * ((size_t) (m->steps + 1) * m->cfg.dimension
          + rvq_scratch_floats (&m->rvq));
}

void
mimi_encoder_set_threads (MimiEncoder *e, int n_threads)
{
  if (n_threads < 1)
    n_threads = 1;
  if (moshi_pool_threads (e->pool) == n_threads)
    return;
  moshi_pool_free (e->pool);
  e->pool = moshi_pool_new (n_threads);
}

void
mimi_encode_frame_traced (MimiEncoder *e, const float *pcm, uint16_t *codes,
    MimiEncodeTrace *trace)
{
  MimiModel *m = e->model;
  const size_t dim = m->cfg.dimension;
  seanet_encode (&m->encoder, &e->seanet, e->pool, pcm, e->x);
  if (trace && trace->seanet_out)
    memcpy (trace->seanet_out, e->x, sizeof (float) * m->steps * dim);
  transformer_forward (&m->enc_tr, &e->tr, e->pool, e->x, m->steps);
  if (trace && trace->transformer_out)
    memcpy (trace->transformer_out, e->x, sizeof (float) * m->steps * dim);
  memcpy (moshi_conv1d_input (&e->down, &m->downsample), e->x,
      sizeof (float) * m->steps * dim);
  moshi_conv1d_run (&m->downsample, &e->down, e->pool, m->steps, e->latent);
  if (trace && trace->latent)
    memcpy (trace->latent, e->latent, sizeof (float) * dim);
  rvq_encode (&m->rvq, e->n_q, e->latent, codes, e->scratch);
}

void
mimi_encode_frame (MimiEncoder *e, const float *pcm, uint16_t *codes)
{
  mimi_encode_frame_traced (e, pcm, codes, NULL);
}

/* ----------------------------------------------------------- decoder --- */

MimiDecoder *
mimi_decoder_new (MimiModel *m, int n_codebooks, GError **error)
{
  if (!check_codebooks (m, n_codebooks, error))
    return NULL;
  const int dim = m->cfg.dimension;
  MimiDecoder *d = g_new0 (MimiDecoder, 1);
  d->model = mimi_model_ref (m);
  d->n_q = n_codebooks;
  d->pool = moshi_pool_new (1);
  gboolean ok = seanet_state_init (&d->seanet, &m->decoder, m->cfg.frame_size)
      && transformer_state_init (&d->tr, &m->dec_tr, m->steps)
      && moshi_convtr1d_state_init (&d->up, &m->upsample, 1);
  d->latent = moshi_alloc (sizeof (float) * dim);
  d->x = moshi_alloc (sizeof (float) * m->steps * dim);
  d->scratch = moshi_alloc (sizeof (float) * rvq_scratch_floats (&m->rvq));
  if (!ok || !d->x || !d->latent || !d->scratch) {
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_IO,
        "out of memory creating a Mimi decoder stream");
    mimi_decoder_free (d);
    return NULL;
  }
  return d;
}

void
mimi_decoder_free (MimiDecoder *d)
{
  if (!d)
    return;
  MimiModel *m = d->model;
  seanet_state_clear (&d->seanet, &m->decoder);
  transformer_state_clear (&d->tr);
  moshi_convtr1d_state_clear (&d->up);
  moshi_free (d->latent);
  moshi_free (d->x);
  moshi_free (d->scratch);
  moshi_pool_free (d->pool);
  mimi_model_unref (m);
  g_free (d);
}

void
mimi_decoder_reset (MimiDecoder *d)
{
  MimiModel *m = d->model;
  seanet_state_reset (&d->seanet, &m->decoder);
  transformer_state_reset (&d->tr, &m->dec_tr);
  moshi_convtr1d_state_reset (&d->up, &m->upsample);
}

int
mimi_decoder_codebooks (const MimiDecoder *d)
{
  return d->n_q;
}

size_t
mimi_decoder_state_bytes (const MimiDecoder *d)
{
  const MimiModel *m = d->model;
  return seanet_state_bytes (&d->seanet, &m->decoder)
      + transformer_state_bytes (&d->tr, &m->dec_tr)
      + moshi_convtr1d_state_bytes (&d->up, &m->upsample)
      + sizeof (float)
      * ((size_t) (m->steps + 1) * m->cfg.dimension
          + rvq_scratch_floats (&m->rvq));
}

void
mimi_decoder_set_threads (MimiDecoder *d, int n_threads)
{
  if (n_threads < 1)
    n_threads = 1;
  if (moshi_pool_threads (d->pool) == n_threads)
    return;
  moshi_pool_free (d->pool);
  d->pool = moshi_pool_new (n_threads);
}

gboolean
mimi_decode_frame_traced (MimiDecoder *d, const uint16_t *codes, float *pcm,
    MimiDecodeTrace *trace, GError **error)
{
  MimiModel *m = d->model;
  const size_t dim = m->cfg.dimension;
  for (int i = 0; i < d->n_q; i++) {
    if (codes[i] >= m->cfg.q_bins) {
      g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_ARGUMENT,
          "code %u in codebook %d is out of range (this model has %d entries "
          "per codebook)",
          codes[i], i, m->cfg.q_bins);
      return FALSE;
    }
  }
  rvq_decode (&m->rvq, d->n_q, codes, d->latent, d->scratch);
  if (trace && trace->quantized)
    memcpy (trace->quantized, d->latent, sizeof (float) * dim);
  moshi_convtr1d_run (&m->upsample, &d->up, d->pool, d->latent, 1, d->x);
  if (trace && trace->upsampled)
    memcpy (trace->upsampled, d->x, sizeof (float) * m->steps * dim);
  transformer_forward (&m->dec_tr, &d->tr, d->pool, d->x, m->steps);
  if (trace && trace->transformer_out)
    memcpy (trace->transformer_out, d->x, sizeof (float) * m->steps * dim);
  seanet_decode (&m->decoder, &d->seanet, d->pool, d->x, pcm);
  return TRUE;
}

gboolean
mimi_decode_frame (MimiDecoder *d, const uint16_t *codes, float *pcm,
    GError **error)
{
  return mimi_decode_frame_traced (d, codes, pcm, NULL, error);
}
