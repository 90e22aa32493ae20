/* SigLIP configuration: So400m/14-448 defaults and HF's SiglipVisionConfig
 * JSON schema. */
#include "siglip.h"

#include "model-error.h"

#include <math.h>
#include <string.h>

#define CFG_ERROR(...) \
  g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_CONFIG, __VA_ARGS__)

void
siglip_config_default (SiglipConfig *c)
{
  memset (c, 0, sizeof *c);
  c->image_size = 448;
  c->patch_size = 14;
  c->num_channels = 3;
  c->hidden_size = 1152;
  c->num_layers = 27;
  c->num_heads = 16;
  c->intermediate_size = 4304;
  c->act = SIGLIP_GELU_TANH;
  c->layer_norm_eps = 1e-6f;
  for (int i = 0; i < 3; i++) {
    c->image_mean[i] = 0.5f;
    c->image_std[i] = 0.5f;
  }
}

static gboolean
get_int (const MJsonValue *v, const char *key, int lo, int hi, int *out,
    const char *where, GError **error)
{
  int64_t n;
  if (!mjson_is_integer (v, &n) || n < lo || n > hi) {
    CFG_ERROR ("%s: \"%s\" must be an integer in [%d, %d]", where, key, lo, hi);
    return FALSE;
  }
  *out = (int) n;
  return TRUE;
}

static gboolean
get_triple (const MJsonValue *v, const char *key, float lo, float hi,
    float out[3], const char *where, GError **error)
{
  if (mjson_type (v) != MJSON_ARRAY || mjson_len (v) != 3) {
    CFG_ERROR ("%s: \"%s\" must be an array of 3 numbers (R, G, B)", where,
        key);
    return FALSE;
  }
  for (int i = 0; i < 3; i++) {
    const MJsonValue *x = mjson_at (v, i);
    double d = mjson_number (x);
    if (mjson_type (x) != MJSON_NUMBER || !(d >= lo && d <= hi)) {
      CFG_ERROR ("%s: \"%s\"[%d] must be a number in [%g, %g]", where, key, i,
          lo, hi);
      return FALSE;
    }
    out[i] = (float) d;
  }
  return TRUE;
}

/* HF keys that describe training or other heads and do not change the
 * forward pass of the tower. */
static const char *const ignored_keys[] = {
  "model_type",
  "attention_dropout",
  "projection_dim",
  "num_image_tokens",
  "torch_dtype",
  "transformers_version",
  "_name_or_path",
  "architectures",
  "initializer_range",
  NULL,
};

gboolean
siglip_config_parse (SiglipConfig *c, const MJsonValue *obj, const char *where,
    GError **error)
{
  if (mjson_type (obj) != MJSON_OBJECT) {
    CFG_ERROR ("%s: the vision configuration must be a JSON object", where);
    return FALSE;
  }
  for (size_t i = 0; i < mjson_len (obj); i++) {
    const char *k = mjson_key_at (obj, i);
    const MJsonValue *v = mjson_at (obj, i);
    gboolean ok = TRUE, known = TRUE;
    if (!strcmp (k, "image_size"))
      ok = get_int (v, k, 1, 1 << 14, &c->image_size, where, error);
    else if (!strcmp (k, "patch_size"))
      ok = get_int (v, k, 1, 1024, &c->patch_size, where, error);
    else if (!strcmp (k, "num_channels"))
      ok = get_int (v, k, 3, 3, &c->num_channels, where, error);
    else if (!strcmp (k, "hidden_size"))
      ok = get_int (v, k, 1, 1 << 16, &c->hidden_size, where, error);
    else if (!strcmp (k, "num_hidden_layers"))
      ok = get_int (v, k, 0, 1024, &c->num_layers, where, error);
    else if (!strcmp (k, "num_attention_heads"))
      ok = get_int (v, k, 1, 1024, &c->num_heads, where, error);
    else if (!strcmp (k, "intermediate_size"))
      ok = get_int (v, k, 1, 1 << 18, &c->intermediate_size, where, error);
    else if (!strcmp (k, "layer_norm_eps")) {
      double x = mjson_number (v);
      if (mjson_type (v) != MJSON_NUMBER || !(x > 0 && x <= 1)) {
        CFG_ERROR ("%s: \"layer_norm_eps\" must be a number in (0, 1]", where);
        ok = FALSE;
      } else
        c->layer_norm_eps = (float) x;
    } else if (!strcmp (k, "hidden_act")) {
      const char *s = mjson_string (v);
      if (s && (!strcmp (s, "gelu_pytorch_tanh") || !strcmp (s, "gelu_new")))
        c->act = SIGLIP_GELU_TANH;
      else if (s && !strcmp (s, "gelu"))
        c->act = SIGLIP_GELU_ERF;
      else {
        CFG_ERROR ("%s: \"hidden_act\" = %s is not supported (use "
                   "\"gelu_pytorch_tanh\", \"gelu_new\" or \"gelu\")",
            where, s ? s : "(not a string)");
        ok = FALSE;
      }
    } else if (!strcmp (k, "vision_use_head")) {
      /* MoshiVis takes every token; a pooling head is another model. */
      if (mjson_type (v) != MJSON_BOOL || mjson_bool (v)) {
        CFG_ERROR ("%s: \"vision_use_head\" must be false (the attention "
                   "pooling head is not implemented)",
            where);
        ok = FALSE;
      }
    } else if (!strcmp (k, "image_mean"))
      ok = get_triple (v, k, -1e3f, 1e3f, c->image_mean, where, error);
    else if (!strcmp (k, "image_std"))
      ok = get_triple (v, k, 1e-6f, 1e3f, c->image_std, where, error);
    else {
      known = FALSE;
      for (int j = 0; ignored_keys[j]; j++)
        if (!strcmp (k, ignored_keys[j]))
          known = TRUE;
    }
    if (!known) {
      CFG_ERROR ("%s: unknown vision configuration key \"%s\"", where, k);
      return FALSE;
    }
    if (!ok)
      return FALSE;
  }
  if (!siglip_config_validate (c, error)) {
    g_prefix_error (error, "%s: ", where);
    return FALSE;
  }
  return TRUE;
}

gboolean
siglip_config_validate (const SiglipConfig *c, GError **error)
{
  if (c->num_channels != 3) {
    CFG_ERROR ("num_channels = %d, only 3 (RGB) is supported", c->num_channels);
    return FALSE;
  }
  if (c->patch_size < 1 || c->image_size < c->patch_size) {
    CFG_ERROR ("image_size (%d) must be at least patch_size (%d) >= 1",
        c->image_size, c->patch_size);
    return FALSE;
  }
  if (c->hidden_size < 1 || c->num_heads < 1
      || c->hidden_size % c->num_heads != 0) {
    CFG_ERROR ("hidden_size (%d) must be a multiple of num_attention_heads "
               "(%d)",
        c->hidden_size, c->num_heads);
    return FALSE;
  }
  if (c->num_layers < 0 || c->intermediate_size < 1) {
    CFG_ERROR ("num_hidden_layers (%d) must be >= 0 and intermediate_size "
               "(%d) >= 1",
        c->num_layers, c->intermediate_size);
    return FALSE;
  }
  if (!(c->layer_norm_eps > 0)) {
    CFG_ERROR ("layer_norm_eps must be positive");
    return FALSE;
  }
  for (int i = 0; i < 3; i++)
    if (!(c->image_std[i] > 0) || !isfinite (c->image_mean[i])) {
      CFG_ERROR ("image_std must be positive and image_mean finite");
      return FALSE;
    }
  return TRUE;
}

int
siglip_tokens_for_size (const SiglipConfig *c, int width, int height)
{
  if (width < c->patch_size || height < c->patch_size)
    return 0;
  return (width / c->patch_size) * (height / c->patch_size);
}

double
siglip_flops (const SiglipConfig *c, int width, int height)
{
  double n = siglip_tokens_for_size (c, width, height);
  double d = c->hidden_size, f = c->intermediate_size;
  double k = (double) c->num_channels * c->patch_size * c->patch_size;
  double per_layer = 2 * n * d * 3 * d /* q, k, v */
      + 2 * n * n * d /* q k^T, all heads */
      + 2 * n * n * d /* p v */
      + 2 * n * d * d /* out */
      + 2 * 2 * n * d * f; /* fc1, fc2 */
  return 2 * n * k * d + c->num_layers * per_layer;
}

int64_t
siglip_param_count (const SiglipConfig *c)
{
  const int64_t D = c->hidden_size, F = c->intermediate_size;
  const int64_t K = (int64_t) c->num_channels * c->patch_size * c->patch_size;
  const int64_t g = c->image_size / c->patch_size;
  const int64_t layer = 4 * (D * D + D) + 2 * D * F + F + D + 4 * D;
  return K * D + D + g * g * D + c->num_layers * layer + 2 * D;
}
