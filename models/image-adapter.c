/* MoshiVis image adapter (see image-adapter.h). */
#include "image-adapter.h"

#include "alloc.h"
#include "blas.h"
#include "kernels.h"
#include "model-error.h"
#include "weights.h"

#include <cblas.h>
#include <string.h>

struct ImageAdapter {
  ImageAdapterConfig cfg;
  float *w; /* [out][in] */
  float *b; /* [out] or NULL */
  float *alpha; /* [out] */
};

void
image_adapter_config_default (ImageAdapterConfig *c)
{
  c->in_dim = 1152;
  c->out_dim = 4096;
  c->bias = TRUE;
  c->eps = 1e-8f;
}

void
image_adapter_free (ImageAdapter *a)
{
  if (!a)
    return;
  moshi_free (a->w);
  moshi_free (a->b);
  moshi_free (a->alpha);
  g_free (a);
}

const ImageAdapterConfig *
image_adapter_config (const ImageAdapter *a)
{
  return &a->cfg;
}

static ImageAdapter *
adapter_alloc (const ImageAdapterConfig *cfg, GError **error)
{
  if (cfg->in_dim < 1 || cfg->out_dim < 1 || cfg->in_dim > (1 << 16)
      || cfg->out_dim > (1 << 16) || !(cfg->eps >= 0)) {
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_CONFIG,
        "image adapter: dims %d -> %d must be in [1, 65536] and eps >= 0",
        cfg->in_dim, cfg->out_dim);
    return NULL;
  }
  ImageAdapter *a = g_new0 (ImageAdapter, 1);
  a->cfg = *cfg;
  return a;
}

ImageAdapter *
image_adapter_load (const StFile *f, const char *prefix,
    const ImageAdapterConfig *cfg, GError **error)
{
  ImageAdapter *a = adapter_alloc (cfg, error);
  if (!a)
    return NULL;
  char name[256];
  const char *p = prefix ? prefix : "";
  const int64_t w_shape[2] = { cfg->out_dim, cfg->in_dim };
  const int64_t v_shape[1] = { cfg->out_dim };
  if (!(a->w = weights_load (f, weights_name (name, "%sproj_xa.weight", p), 2,
            w_shape, error)))
    goto fail;
  weights_name (name, "%sproj_xa.bias", p);
  if (cfg->bias) {
    if (!(a->b = weights_load (f, name, 1, v_shape, error)))
      goto fail;
  } else if (st_find (f, name)) {
    /* A bias the configuration does not expect means another model. */
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_CONFIG,
        "%s: tensor '%s' is present but the adapter is configured without a "
        "bias",
        st_path (f), name);
    goto fail;
  }
  /* PT and candle store alpha as [1, 1, D], MLX-style files as [D]. */
  weights_name (name, "%snorm_xa.alpha", p);
  const StTensor *t = st_find (f, name);
  const int64_t a3[3] = { 1, 1, cfg->out_dim };
  if (t && t->ndim == 3)
    a->alpha = weights_load (f, name, 3, a3, error);
  else
    a->alpha = weights_load (f, name, 1, v_shape, error);
  if (!a->alpha)
    goto fail;
  return a;
fail:
  image_adapter_free (a);
  return NULL;
}

ImageAdapter *
image_adapter_new_random (const ImageAdapterConfig *cfg, uint64_t seed,
    GError **error)
{
  ImageAdapter *a = adapter_alloc (cfg, error);
  if (!a)
    return NULL;
  uint64_t s = seed;
  size_t D = cfg->out_dim;
  a->w = weights_random (&s, D * cfg->in_dim, 0.03f);
  a->b = cfg->bias ? weights_random (&s, D, 0.1f) : NULL;
  a->alpha = weights_random (&s, D, 0.1f);
  if (!a->w || (cfg->bias && !a->b) || !a->alpha) {
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_IO,
        "image adapter: out of memory for random weights");
    image_adapter_free (a);
    return NULL;
  }
  for (size_t i = 0; i < D; i++)
    a->alpha[i] += 1.0f;
  return a;
}

void
image_adapter_forward (const ImageAdapter *a, const float *in, int n,
    float *out)
{
  const int ni = a->cfg.in_dim, no = a->cfg.out_dim;
  for (int r = 0; r < n; r++) {
    if (a->b)
      memcpy (out + (size_t) r * no, a->b, no * sizeof (float));
    else
      memset (out + (size_t) r * no, 0, no * sizeof (float));
  }
  moshi_blas_lock ();
  cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, n, no, ni, 1.0f, in, ni,
      a->w, ni, 1.0f, out, no);
  moshi_blas_unlock ();
  moshi_rms_norm (out, out, a->alpha, n, no, a->cfg.eps);
}
