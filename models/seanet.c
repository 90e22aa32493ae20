#include "seanet.h"

#include "alloc.h"
#include "gemm-amx.h"
#include "model-error.h"
#include "weights.h"

#include <string.h>

int
seanet_hop (const SeanetConfig *cfg)
{
  int hop = 1;
  for (int i = 0; i < cfg->n_ratios; i++)
    hop *= cfg->ratios[i];
  return hop;
}

/* Ratio of stage i in processing order: the encoder walks them reversed. */
static int
stage_ratio (const Seanet *net, int i)
{
  const SeanetConfig *c = &net->cfg;
  return net->is_decoder ? c->ratios[i] : c->ratios[c->n_ratios - 1 - i];
}

/* Channels of the signal that stage i's resblocks see. */
static int
stage_channels (const Seanet *net, int i)
{
  const SeanetConfig *c = &net->cfg;
  if (net->is_decoder)
    return c->n_filters << (c->n_ratios - 1 - i);
  return c->n_filters << i;
}

static void
seanet_alloc (Seanet *net, const SeanetConfig *cfg, gboolean decoder)
{
  memset (net, 0, sizeof *net);
  net->cfg = *cfg;
  net->is_decoder = decoder;
  net->res = g_new0 (SeanetResBlock, cfg->n_ratios * cfg->n_residual_layers);
  if (decoder)
    net->up = g_new0 (MoshiConvTr1d, cfg->n_ratios);
  else
    net->down = g_new0 (MoshiConv1d, cfg->n_ratios);
}

/* Rows (time steps) that stage i's resblocks see for one call. */
static int
stage_rows (const Seanet *net, int i, int frame_samples)
{
  const SeanetConfig *c = &net->cfg;
  int rows = frame_samples;
  if (net->is_decoder) {
    rows = frame_samples / seanet_hop (c);
    for (int k = 0; k <= i; k++)
      rows *= c->ratios[k];
  } else {
    for (int k = 0; k < i; k++)
      rows /= stage_ratio (net, k);
  }
  return rows;
}

/* Visits every conv of the network in nn.Sequential order with its index,
 * so loading and random init share the architecture walk. */
typedef struct {
  const StFile *f;
  const char *prefix;
  uint64_t *seed; /* random init when non-NULL */
  GError **error;
} Builder;

/* Rows per frame from which a layer takes `wide_weights`.  Mimi's 16-row
 * layers hold 2.1 M weights on each side: in bf16 they read 4 MB more per
 * frame than in q4, which costs more than AMX saves on their arithmetic
 * (measured: enc + dec 0.109 RTF from 16 rows, 0.099 from 32 or 64, 0.12
 * without AMX, q4, one thread). */
#define SEANET_WIDE_ROWS 32

/* Storage for a layer whose matrix product has `rows` rows per frame. */
static MoshiWeightType
type_for_rows (const Seanet *net, int rows)
{
  G_STATIC_ASSERT (SEANET_WIDE_ROWS >= MOSHI_AMX_MIN_ROWS);
  return rows >= SEANET_WIDE_ROWS ? net->cfg.wide_weights : net->cfg.weights;
}

static gboolean
build_conv (Builder *b, const Seanet *net, MoshiConv1d *c, const char *name,
    int c_in, int c_out, int k, int stride, int dilation, int rows_out)
{
  const MoshiWeightType type = type_for_rows (net, rows_out);
  if (b->seed) {
    moshi_conv1d_random (c, b->seed, c_in, c_out, k, stride, dilation, TRUE,
        type);
    return TRUE;
  }
  return moshi_conv1d_load (c, b->f, name, c_in, c_out, k, stride, dilation,
      TRUE, FALSE, type, b->error);
}

static gboolean
build_resblock (Builder *b, const Seanet *net, SeanetResBlock *r, int idx,
    int dim, int j, int rows)
{
  const SeanetConfig *c = &net->cfg;
  char name[256];
  int hidden = dim / c->compress;
  int dilation = 1;
  for (int i = 0; i < j; i++)
    dilation *= c->dilation_base;
  return build_conv (b, net, &r->conv_k,
             weights_name (name, "%s.model.%d.block.1.conv.conv", b->prefix,
                 idx),
             dim, hidden, c->residual_kernel_size, 1, dilation, rows)
      && build_conv (b, net, &r->conv_1,
          weights_name (name, "%s.model.%d.block.3.conv.conv", b->prefix, idx),
          hidden, dim, 1, 1, 1, rows);
}

static gboolean
seanet_build (Seanet *net, Builder *b)
{
  const SeanetConfig *c = &net->cfg;
  const int nres = c->n_residual_layers, frame = c->frame_samples;
  const int latent_rows = frame / seanet_hop (c);
  char name[256];
  int idx = 0;

  if (!net->is_decoder) {
    if (!build_conv (b, net, &net->conv_in,
            weights_name (name, "%s.model.%d.conv.conv", b->prefix, idx++),
            c->channels, c->n_filters, c->kernel_size, 1, 1, frame))
      return FALSE;
    for (int i = 0; i < c->n_ratios; i++) {
      int ch = stage_channels (net, i), r = stage_ratio (net, i);
      int rows = stage_rows (net, i, frame);
      for (int j = 0; j < nres; j++)
        if (!build_resblock (b, net, &net->res[i * nres + j], idx++, ch, j,
                rows))
          return FALSE;
      idx++; /* ELU */
      if (!build_conv (b, net, &net->down[i],
              weights_name (name, "%s.model.%d.conv.conv", b->prefix, idx++),
              ch, ch * 2, r * 2, r, 1, rows / r))
        return FALSE;
    }
    idx++; /* ELU */
    return build_conv (b, net, &net->conv_out,
        weights_name (name, "%s.model.%d.conv.conv", b->prefix, idx),
        c->n_filters << c->n_ratios, c->dimension, c->last_kernel_size, 1, 1,
        latent_rows);
  }

  if (!build_conv (b, net, &net->conv_in,
          weights_name (name, "%s.model.%d.conv.conv", b->prefix, idx++),
          c->dimension, c->n_filters << c->n_ratios, c->kernel_size, 1, 1,
          latent_rows))
    return FALSE;
  for (int i = 0; i < c->n_ratios; i++) {
    int ch = stage_channels (net, i), r = stage_ratio (net, i);
    int rows = stage_rows (net, i, frame);
    /* The transposed conv's product has a row per input row. */
    const MoshiWeightType up_type = type_for_rows (net, rows / r);
    idx++; /* ELU */
    weights_name (name, "%s.model.%d.convtr.convtr", b->prefix, idx++);
    if (b->seed) {
      moshi_convtr1d_random (&net->up[i], b->seed, ch * 2, ch, r * 2, r, TRUE,
          FALSE, up_type);
    } else if (!moshi_convtr1d_load (&net->up[i], b->f, name, ch * 2, ch, r * 2,
                   r, TRUE, FALSE, up_type, b->error)) {
      return FALSE;
    }
    for (int j = 0; j < nres; j++)
      if (!build_resblock (b, net, &net->res[i * nres + j], idx++, ch, j, rows))
        return FALSE;
  }
  idx++; /* ELU */
  return build_conv (b, net, &net->conv_out,
      weights_name (name, "%s.model.%d.conv.conv", b->prefix, idx),
      c->n_filters, c->channels, c->last_kernel_size, 1, 1, frame);
}

gboolean
seanet_load (Seanet *net, const SeanetConfig *cfg, gboolean decoder,
    const StFile *f, const char *prefix, GError **error)
{
  seanet_alloc (net, cfg, decoder);
  Builder b = { f, prefix, NULL, error };
  if (!seanet_build (net, &b)) {
    seanet_clear (net);
    return FALSE;
  }
  return TRUE;
}

void
seanet_random (Seanet *net, const SeanetConfig *cfg, gboolean decoder,
    uint64_t *seed)
{
  seanet_alloc (net, cfg, decoder);
  Builder b = { NULL, decoder ? "decoder" : "encoder", seed, NULL };
  seanet_build (net, &b);
}

void
seanet_clear (Seanet *net)
{
  const SeanetConfig *c = &net->cfg;
  moshi_conv1d_clear (&net->conv_in);
  moshi_conv1d_clear (&net->conv_out);
  if (net->res)
    for (int i = 0; i < c->n_ratios * c->n_residual_layers; i++) {
      moshi_conv1d_clear (&net->res[i].conv_k);
      moshi_conv1d_clear (&net->res[i].conv_1);
    }
  for (int i = 0; i < c->n_ratios; i++) {
    if (net->down)
      moshi_conv1d_clear (&net->down[i]);
    if (net->up)
      moshi_convtr1d_clear (&net->up[i]);
  }
  g_free (net->res);
  g_free (net->down);
  g_free (net->up);
  net->res = NULL;
  net->down = NULL;
  net->up = NULL;
}

size_t
seanet_bytes (const Seanet *net)
{
  const SeanetConfig *c = &net->cfg;
  size_t n =
      moshi_conv1d_bytes (&net->conv_in) + moshi_conv1d_bytes (&net->conv_out);
  for (int i = 0; i < c->n_ratios * c->n_residual_layers; i++)
    n += moshi_conv1d_bytes (&net->res[i].conv_k)
        + moshi_conv1d_bytes (&net->res[i].conv_1);
  for (int i = 0; i < c->n_ratios; i++)
    n += net->is_decoder ? moshi_convtr1d_bytes (&net->up[i])
                         : moshi_conv1d_bytes (&net->down[i]);
  return n;
}

gboolean
seanet_state_init (SeanetState *s, const Seanet *net, int frame_samples)
{
  const SeanetConfig *c = &net->cfg;
  const int nres = c->n_residual_layers;
  const int latent_rows = frame_samples / seanet_hop (c);
  gboolean ok = TRUE;
  memset (s, 0, sizeof *s);
  s->res_k = g_new0 (MoshiConv1dState, c->n_ratios * nres);
  s->res_1 = g_new0 (MoshiConv1dState, c->n_ratios * nres);
  if (net->is_decoder)
    s->up = g_new0 (MoshiConvTr1dState, c->n_ratios);
  else
    s->down = g_new0 (MoshiConv1dState, c->n_ratios);

  size_t scratch = 0;
  if (net->is_decoder) {
    ok &= moshi_conv1d_state_init (&s->conv_in, &net->conv_in, latent_rows);
    ok &= moshi_conv1d_state_init (&s->conv_out, &net->conv_out, frame_samples);
    scratch = (size_t) latent_rows * (c->n_filters << c->n_ratios);
  } else {
    ok &= moshi_conv1d_state_init (&s->conv_in, &net->conv_in, frame_samples);
    ok &= moshi_conv1d_state_init (&s->conv_out, &net->conv_out, latent_rows);
    scratch =
        (size_t) latent_rows * MAX (c->dimension, c->n_filters << c->n_ratios);
  }
  for (int i = 0; i < c->n_ratios; i++) {
    int rows = stage_rows (net, i, frame_samples);
    int ch = stage_channels (net, i);
    for (int j = 0; j < nres; j++) {
      ok &= moshi_conv1d_state_init (&s->res_k[i * nres + j],
          &net->res[i * nres + j].conv_k, rows);
      ok &= moshi_conv1d_state_init (&s->res_1[i * nres + j],
          &net->res[i * nres + j].conv_1, rows);
    }
    if (net->is_decoder)
      ok &= moshi_convtr1d_state_init (&s->up[i], &net->up[i],
          rows / stage_ratio (net, i));
    else
      ok &= moshi_conv1d_state_init (&s->down[i], &net->down[i], rows);
    scratch = MAX (scratch, (size_t) rows * ch);
  }
  scratch = MAX (scratch, (size_t) frame_samples * c->channels);
  s->scratch_floats = scratch;
  s->h = moshi_alloc (sizeof (float) * scratch);
  s->tmp = moshi_alloc (sizeof (float) * scratch);
  ok &= s->h && s->tmp;
  if (!ok)
    seanet_state_clear (s, net);
  return ok;
}

void
seanet_state_clear (SeanetState *s, const Seanet *net)
{
  const SeanetConfig *c = &net->cfg;
  const int nres = c->n_residual_layers;
  moshi_conv1d_state_clear (&s->conv_in);
  moshi_conv1d_state_clear (&s->conv_out);
  for (int i = 0; i < c->n_ratios; i++) {
    for (int j = 0; j < nres; j++) {
      if (s->res_k)
        moshi_conv1d_state_clear (&s->res_k[i * nres + j]);
      if (s->res_1)
        moshi_conv1d_state_clear (&s->res_1[i * nres + j]);
    }
    if (s->up)
      moshi_convtr1d_state_clear (&s->up[i]);
    if (s->down)
      moshi_conv1d_state_clear (&s->down[i]);
  }
  g_free (s->res_k);
  g_free (s->res_1);
  g_free (s->up);
  g_free (s->down);
  moshi_free (s->h);
  moshi_free (s->tmp);
  memset (s, 0, sizeof *s);
}

void
seanet_state_reset (SeanetState *s, const Seanet *net)
{
  const SeanetConfig *c = &net->cfg;
  const int nres = c->n_residual_layers;
  moshi_conv1d_state_reset (&s->conv_in, &net->conv_in);
  moshi_conv1d_state_reset (&s->conv_out, &net->conv_out);
  for (int i = 0; i < c->n_ratios; i++) {
    for (int j = 0; j < nres; j++) {
      moshi_conv1d_state_reset (&s->res_k[i * nres + j],
          &net->res[i * nres + j].conv_k);
      moshi_conv1d_state_reset (&s->res_1[i * nres + j],
          &net->res[i * nres + j].conv_1);
    }
    if (net->is_decoder)
      moshi_convtr1d_state_reset (&s->up[i], &net->up[i]);
    else
      moshi_conv1d_state_reset (&s->down[i], &net->down[i]);
  }
}

size_t
seanet_state_bytes (const SeanetState *s, const Seanet *net)
{
  const SeanetConfig *c = &net->cfg;
  const int nres = c->n_residual_layers;
  size_t n = moshi_conv1d_state_bytes (&s->conv_in, &net->conv_in)
      + moshi_conv1d_state_bytes (&s->conv_out, &net->conv_out)
      + 2 * sizeof (float) * s->scratch_floats;
  for (int i = 0; i < c->n_ratios; i++) {
    for (int j = 0; j < nres; j++)
      n += moshi_conv1d_state_bytes (&s->res_k[i * nres + j],
               &net->res[i * nres + j].conv_k)
          + moshi_conv1d_state_bytes (&s->res_1[i * nres + j],
              &net->res[i * nres + j].conv_1);
    n += net->is_decoder
        ? moshi_convtr1d_state_bytes (&s->up[i], &net->up[i])
        : moshi_conv1d_state_bytes (&s->down[i], &net->down[i]);
  }
  return n;
}

/* h += conv_1(ELU(conv_k(ELU(h)))), for `rows` rows. */
static void
resblock_run (const SeanetResBlock *r, MoshiConv1dState *sk,
    MoshiConv1dState *s1, MoshiPool *pool, float *h, int rows)
{
  const int dim = r->conv_k.c_in;
  moshi_elu (moshi_conv1d_input (sk, &r->conv_k), h, (size_t) rows * dim);
  float *mid = moshi_conv1d_input (s1, &r->conv_1);
  moshi_conv1d_run (&r->conv_k, sk, pool, rows, mid);
  moshi_elu (mid, mid, (size_t) rows * r->conv_1.c_in);
  moshi_conv1d_run_add (&r->conv_1, s1, pool, rows, h);
}

void
seanet_encode (const Seanet *net, SeanetState *s, MoshiPool *pool,
    const float *pcm, float *latent)
{
  const SeanetConfig *c = &net->cfg;
  const int nres = c->n_residual_layers;
  int rows = stage_rows (net, 0, s->conv_in.max_t);

  memcpy (moshi_conv1d_input (&s->conv_in, &net->conv_in), pcm,
      sizeof (float) * (size_t) rows * c->channels);
  moshi_conv1d_run (&net->conv_in, &s->conv_in, pool, rows, s->h);

  for (int i = 0; i < c->n_ratios; i++) {
    int ch = stage_channels (net, i);
    for (int j = 0; j < nres; j++)
      resblock_run (&net->res[i * nres + j], &s->res_k[i * nres + j],
          &s->res_1[i * nres + j], pool, s->h, rows);
    moshi_elu (moshi_conv1d_input (&s->down[i], &net->down[i]), s->h,
        (size_t) rows * ch);
    moshi_conv1d_run (&net->down[i], &s->down[i], pool, rows, s->h);
    rows /= stage_ratio (net, i);
  }
  moshi_elu (moshi_conv1d_input (&s->conv_out, &net->conv_out), s->h,
      (size_t) rows * (c->n_filters << c->n_ratios));
  moshi_conv1d_run (&net->conv_out, &s->conv_out, pool, rows, latent);
}

void
seanet_decode (const Seanet *net, SeanetState *s, MoshiPool *pool,
    const float *latent, float *pcm)
{
  const SeanetConfig *c = &net->cfg;
  const int nres = c->n_residual_layers;
  int rows = s->conv_in.max_t;

  memcpy (moshi_conv1d_input (&s->conv_in, &net->conv_in), latent,
      sizeof (float) * (size_t) rows * c->dimension);
  moshi_conv1d_run (&net->conv_in, &s->conv_in, pool, rows, s->h);

  for (int i = 0; i < c->n_ratios; i++) {
    int ch = stage_channels (net, i);
    moshi_elu (s->tmp, s->h, (size_t) rows * ch * 2);
    moshi_convtr1d_run (&net->up[i], &s->up[i], pool, s->tmp, rows, s->h);
    rows *= stage_ratio (net, i);
    for (int j = 0; j < nres; j++)
      resblock_run (&net->res[i * nres + j], &s->res_k[i * nres + j],
          &s->res_1[i * nres + j], pool, s->h, rows);
  }
  moshi_elu (moshi_conv1d_input (&s->conv_out, &net->conv_out), s->h,
      (size_t) rows * c->n_filters);
  moshi_conv1d_run (&net->conv_out, &s->conv_out, pool, rows, pcm);
}
