/* MoshiVis image encoder: tower + adapter from one checkpoint (see
 * moshivis-image.h). */
#include "moshivis-image.h"

#include "alloc.h"
#include "cpu.h"
#include "blas.h"
#include "image-resize.h"
#include "model-error.h"

#include <string.h>

#define CFG_ERROR(...) \
  g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_CONFIG, __VA_ARGS__)

struct MoshiVisImageEncoder {
  gint refcount;
  gint threads;
  MoshiVisImageConfig cfg;
  SiglipModel *tower;
  ImageAdapter *adapter;
};

void
moshivis_image_config_default (MoshiVisImageConfig *c)
{
  siglip_config_default (&c->vision);
  image_adapter_config_default (&c->adapter);
}

static gboolean
parse_adapter (ImageAdapterConfig *a, const MJsonValue *o, const char *path,
    GError **error)
{
  if (mjson_type (o) != MJSON_OBJECT) {
    CFG_ERROR ("%s: \"adapter\" must be an object", path);
    return FALSE;
  }
  for (size_t i = 0; i < mjson_len (o); i++) {
    const char *k = mjson_key_at (o, i);
    const MJsonValue *v = mjson_at (o, i);
    int64_t n;
    if (!strcmp (k, "proj_xa_in") || !strcmp (k, "proj_xa_out")) {
      if (!mjson_is_integer (v, &n) || n < 1 || n > 65536) {
        CFG_ERROR ("%s: adapter \"%s\" must be an integer in [1, 65536]", path,
            k);
        return FALSE;
      }
      *(strcmp (k, "proj_xa_in") ? &a->out_dim : &a->in_dim) = (int) n;
    } else if (!strcmp (k, "proj_xa_bias")) {
      if (mjson_type (v) != MJSON_BOOL) {
        CFG_ERROR ("%s: adapter \"proj_xa_bias\" must be true or false", path);
        return FALSE;
      }
      a->bias = mjson_bool (v);
    } else if (!strcmp (k, "norm_xa")) {
      /* Only the RMS norm exists for MoshiVis; whatever its spelling, it is
       * computed as the mean of squares (spec section 3). */
      const char *s = mjson_string (v);
      if (!s || g_ascii_strncasecmp (s, "rms", 3) != 0) {
        CFG_ERROR ("%s: adapter \"norm_xa\" = %s is not supported (only an "
                   "RMS norm, \"rms ...\")",
            path, s ? s : "(not a string)");
        return FALSE;
      }
    } else if (!strcmp (k, "norm_xa_eps")) {
      double x = mjson_number (v);
      if (mjson_type (v) != MJSON_NUMBER || !(x >= 0 && x <= 1)) {
        CFG_ERROR ("%s: adapter \"norm_xa_eps\" must be a number in [0, 1]",
            path);
        return FALSE;
      }
      a->eps = (float) x;
    } else {
      CFG_ERROR ("%s: unknown adapter configuration key \"%s\"", path, k);
      return FALSE;
    }
  }
  return TRUE;
}

gboolean
moshivis_image_config_load_json (MoshiVisImageConfig *c, const char *path,
    GError **error)
{
  MJsonValue *root = mjson_parse_object_file (path, error);
  if (!root)
    return FALSE;
  gboolean ok = TRUE;
  const MJsonValue *v = mjson_get (root, "vision");
  const MJsonValue *a = mjson_get (root, "adapter");
  gchar *where = g_strdup_printf ("%s: \"vision\"", path);
  if (v)
    ok = siglip_config_parse (&c->vision, v, where, error);
  g_free (where);
  if (ok && a)
    ok = parse_adapter (&c->adapter, a, path, error);
  if (ok && c->adapter.in_dim != c->vision.hidden_size) {
    CFG_ERROR ("%s: adapter proj_xa_in (%d) differs from the vision "
               "hidden_size (%d)",
        path, c->adapter.in_dim, c->vision.hidden_size);
    ok = FALSE;
  }
  mjson_free (root);
  return ok;
}

static MoshiVisImageEncoder *
encoder_new (const MoshiVisImageConfig *cfg, GError **error)
{
  if (cfg->adapter.in_dim != cfg->vision.hidden_size) {
    CFG_ERROR ("MoshiVis image encoder: adapter input (%d) differs from the "
               "vision hidden_size (%d)",
        cfg->adapter.in_dim, cfg->vision.hidden_size);
    return NULL;
  }
  MoshiVisImageEncoder *e = g_new0 (MoshiVisImageEncoder, 1);
  e->refcount = 1;
  e->threads = 1;
  e->cfg = *cfg;
  return e;
}

MoshiVisImageEncoder *
moshivis_image_encoder_load (const char *path, const MoshiVisImageConfig *cfg,
    GError **error)
{
  MoshiVisImageConfig def;
  if (!cfg) {
    moshivis_image_config_default (&def);
    cfg = &def;
  }
  MoshiVisImageEncoder *e = encoder_new (cfg, error);
  if (!e)
    return NULL;
  StFile *f = st_open (path, error);
  if (!f) {
    moshivis_image_encoder_unref (e);
    return NULL;
  }
  e->tower = siglip_model_load (f, MOSHIVIS_IMAGE_PREFIX "enc.model.",
      &cfg->vision, error);
  if (e->tower)
    e->adapter =
        image_adapter_load (f, MOSHIVIS_IMAGE_PREFIX, &cfg->adapter, error);
  /* A file truncated while it was read fails the load (see mapguard.h). */
  gboolean ok = e->adapter && st_finish_load (f, error);
  st_unref (f);
  if (!ok) {
    moshivis_image_encoder_unref (e);
    return NULL;
  }
  return e;
}

MoshiVisImageEncoder *
moshivis_image_encoder_new_random (const MoshiVisImageConfig *cfg,
    uint64_t seed, GError **error)
{
  MoshiVisImageEncoder *e = encoder_new (cfg, error);
  if (!e)
    return NULL;
  e->tower = siglip_model_new_random (&cfg->vision, seed, error);
  if (e->tower)
    e->adapter = image_adapter_new_random (&cfg->adapter, seed + 1, error);
  if (!e->adapter) {
    moshivis_image_encoder_unref (e);
    return NULL;
  }
  return e;
}

MoshiVisImageEncoder *
moshivis_image_encoder_ref (MoshiVisImageEncoder *e)
{
  g_atomic_int_inc (&e->refcount);
  return e;
}

void
moshivis_image_encoder_unref (MoshiVisImageEncoder *e)
{
  if (!e || !g_atomic_int_dec_and_test (&e->refcount))
    return;
  siglip_model_free (e->tower);
  image_adapter_free (e->adapter);
  g_free (e);
}

const MoshiVisImageConfig *
moshivis_image_encoder_config (const MoshiVisImageEncoder *e)
{
  return &e->cfg;
}

const SiglipModel *
moshivis_image_encoder_tower (const MoshiVisImageEncoder *e)
{
  return e->tower;
}

const ImageAdapter *
moshivis_image_encoder_adapter (const MoshiVisImageEncoder *e)
{
  return e->adapter;
}

int
moshivis_image_encoder_image_size (const MoshiVisImageEncoder *e)
{
  return e->cfg.vision.image_size;
}

int
moshivis_image_encoder_tokens (const MoshiVisImageEncoder *e, int width,
    int height)
{
  return siglip_tokens_for_size (&e->cfg.vision, width, height);
}

int
moshivis_image_encoder_dim (const MoshiVisImageEncoder *e)
{
  return e->cfg.adapter.out_dim;
}

void
moshivis_image_encoder_set_threads (MoshiVisImageEncoder *e, int n_threads)
{
  g_atomic_int_set (&e->threads, MAX (n_threads, 1));
}

gboolean
moshivis_image_encoder_encode (MoshiVisImageEncoder *e, const uint8_t *rgb,
    int width, int height, int stride, float *out, GError **error)
{
  if (!e || !out) {
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_ARGUMENT,
        "MoshiVis image encoder: no %s", e ? "output buffer" : "encoder");
    return FALSE;
  }
  if (!siglip_check_image (&e->cfg.vision, rgb, width, height, stride, error))
    return FALSE;
  /* The tower's tokens are narrower or wider than the LM's: own buffer. */
  const int n = siglip_tokens_for_size (&e->cfg.vision, width, height);
  const size_t bytes = (size_t) n * e->cfg.vision.hidden_size * sizeof (float);
  float *v = moshi_alloc (bytes);
  if (!v) {
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_IO,
        "MoshiVis image encoder: out of memory allocating %zu bytes", bytes);
    return FALSE;
  }
  /* Held across both so this encoder's thread count is the one used. */
  moshi_blas_lock ();
  siglip_set_threads (g_atomic_int_get (&e->threads));
  gboolean ok =
      siglip_forward (e->tower, rgb, width, height, stride, v, NULL, error);
  if (ok)
    image_adapter_forward (e->adapter, v, n, out);
  moshi_blas_unlock ();
  moshi_free (v);
  return ok;
}

gboolean
moshivis_image_encoder_encode_fit (MoshiVisImageEncoder *e, const uint8_t *rgb,
    int width, int height, int stride, gboolean center_crop, float *out,
    GError **error)
{
  if (!e) {
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_ARGUMENT,
        "MoshiVis image encoder: no encoder");
    return FALSE;
  }
  const int S = e->cfg.vision.image_size;
  if (width == S && height == S)
    return moshivis_image_encoder_encode (e, rgb, width, height, stride, out,
        error);
  uint8_t *sq = moshi_alloc ((size_t) 3 * S * S);
  if (!sq) {
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_IO,
        "MoshiVis image encoder: out of memory for a %dx%d picture", S, S);
    return FALSE;
  }
  gboolean ok = moshi_image_fit_square (rgb, width, height, stride, center_crop,
                    sq, S, error)
      && moshivis_image_encoder_encode (e, sq, S, S, 3 * S, out, error);
  moshi_free (sq);
  return ok;
}

gboolean
moshivis_image_encoder_quantize (MoshiVisImageEncoder *e, MoshiWeightType type,
    GError **error)
{
  switch (type) {
    case MOSHI_WEIGHTS_F32:
      return TRUE;
    case MOSHI_WEIGHTS_BF16:
      /* With AMX, bf16 products too (several times faster); elsewhere
       * OpenBLAS on the widened bf16 values beats our bf16 kernels. */
      return moshi_cpu_has_amx ()
          ? siglip_model_to_bf16_products (e->tower, error)
          : siglip_model_to_bf16 (e->tower, error);
    case MOSHI_WEIGHTS_Q8:
      return siglip_model_to_q8 (e->tower, error);
    default:
      g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_ARGUMENT,
          "the vision tower is offered in float32, bf16 or q8, not %s",
          moshi_weight_type_name (type));
      return FALSE;
  }
}
