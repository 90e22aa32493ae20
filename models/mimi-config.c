/* Mimi configuration: Kyutai's defaults and their config.json schema. */
#include "mimi.h"

#include "json.h"
#include "model-error.h"

#include <math.h>
#include <string.h>

void
mimi_config_default (MimiConfig *c)
{
  memset (c, 0, sizeof *c);
  c->channels = 1;
  c->dimension = 512;
  c->n_filters = 64;
  c->n_residual_layers = 1;
  c->n_ratios = 4;
  c->ratios[0] = 8;
  c->ratios[1] = 6;
  c->ratios[2] = 5;
  c->ratios[3] = 4;
  c->kernel_size = 7;
  c->residual_kernel_size = 3;
  c->last_kernel_size = 3;
  c->dilation_base = 2;
  c->compress = 2;
  c->true_skip = TRUE;
  c->d_model = 512;
  c->num_heads = 8;
  c->num_layers = 8;
  c->dim_feedforward = 2048;
  c->context = 250;
  c->max_period = 10000.0;
  c->q_dimension = 256;
  c->q_n_q = 32;
  c->q_bins = 2048;
  c->sample_rate = 24000;
  c->frame_rate = 12.5;
  c->frame_size = 1920;
  c->num_codebooks = 8;
}

#define CFG_ERROR(...) \
  g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_CONFIG, __VA_ARGS__)

/* Reads an integer member into *out when present; limits guard against
 * configs that would make us allocate absurd amounts of memory. */
static gboolean
get_int (const MJsonValue *obj, const char *section, const char *key, int lo,
    int hi, int *out, const char *path, GError **error)
{
  const MJsonValue *v = mjson_get (obj, key);
  int64_t n;
  if (!v)
    return TRUE;
  if (!mjson_is_integer (v, &n) || n < lo || n > hi) {
    CFG_ERROR ("%s: \"%s.%s\" must be an integer in [%d, %d]", path, section,
        key, lo, hi);
    return FALSE;
  }
  *out = (int) n;
  return TRUE;
}

static gboolean
get_number (const MJsonValue *obj, const char *section, const char *key,
    double lo, double hi, double *out, const char *path, GError **error)
{
  const MJsonValue *v = mjson_get (obj, key);
  if (!v)
    return TRUE;
  double x = mjson_number (v);
  if (mjson_type (v) != MJSON_NUMBER || !(x >= lo && x <= hi)) {
    CFG_ERROR ("%s: \"%s.%s\" must be a number in [%g, %g]", path, section, key,
        lo, hi);
    return FALSE;
  }
  *out = x;
  return TRUE;
}

/* For options we implement only one value of: absent or equal is fine. */
static gboolean
expect_string (const MJsonValue *obj, const char *section, const char *key,
    const char *want, const char *path, GError **error)
{
  const MJsonValue *v = mjson_get (obj, key);
  if (!v)
    return TRUE;
  const char *s = mjson_string (v);
  if (!s || g_ascii_strcasecmp (s, want) != 0) {
    CFG_ERROR ("%s: \"%s.%s\" = %s is not supported (only \"%s\")", path,
        section, key, s ? s : "(not a string)", want);
    return FALSE;
  }
  return TRUE;
}

static gboolean
expect_bool (const MJsonValue *obj, const char *section, const char *key,
    gboolean want, const char *path, GError **error)
{
  const MJsonValue *v = mjson_get (obj, key);
  if (!v)
    return TRUE;
  if (mjson_type (v) != MJSON_BOOL || mjson_bool (v) != want) {
    CFG_ERROR ("%s: \"%s.%s\" must be %s", path, section, key,
        want ? "true" : "false");
    return FALSE;
  }
  return TRUE;
}

static gboolean
parse_seanet (MimiConfig *c, const MJsonValue *s, const char *path,
    GError **error)
{
  const char *sec = "seanet";
  if (!(get_int (s, sec, "channels", 1, 1, &c->channels, path, error)
          && get_int (s, sec, "dimension", 1, 4096, &c->dimension, path, error)
          && get_int (s, sec, "n_filters", 1, 1024, &c->n_filters, path, error)
          && get_int (s, sec, "n_residual_layers", 0, 8, &c->n_residual_layers,
              path, error)
          && get_int (s, sec, "kernel_size", 1, 64, &c->kernel_size, path,
              error)
          && get_int (s, sec, "residual_kernel_size", 1, 64,
              &c->residual_kernel_size, path, error)
          && get_int (s, sec, "last_kernel_size", 1, 64, &c->last_kernel_size,
              path, error)
          && get_int (s, sec, "dilation_base", 1, 8, &c->dilation_base, path,
              error)
          && get_int (s, sec, "compress", 1, 16, &c->compress, path, error)
          && expect_bool (s, sec, "causal", TRUE, path, error)
          && expect_bool (s, sec, "true_skip", TRUE, path, error)
          && expect_string (s, sec, "activation", "ELU", path, error)
          && expect_string (s, sec, "norm", "none", path, error)
          && expect_string (s, sec, "pad_mode", "constant", path, error)))
    return FALSE;
  if (mjson_get (s, "lstm")) {
    int64_t lstm = 0;
    if (!mjson_is_integer (mjson_get (s, "lstm"), &lstm) || lstm != 0) {
      CFG_ERROR ("%s: \"seanet.lstm\" is not supported (Mimi uses 0)", path);
      return FALSE;
    }
  }
  const MJsonValue *r = mjson_get (s, "ratios");
  if (r) {
    size_t n = mjson_len (r);
    if (mjson_type (r) != MJSON_ARRAY || n < 1 || n > 8) {
      CFG_ERROR ("%s: \"seanet.ratios\" must be an array of 1 to 8 integers",
          path);
      return FALSE;
    }
    c->n_ratios = (int) n;
    for (size_t i = 0; i < n; i++) {
      int64_t x;
      if (!mjson_is_integer (mjson_at (r, i), &x) || x < 1 || x > 64) {
        CFG_ERROR ("%s: \"seanet.ratios\"[%zu] must be an integer in [1, 64]",
            path, i);
        return FALSE;
      }
      c->ratios[i] = (int) x;
    }
  }
  return TRUE;
}

static gboolean
parse_transformer (MimiConfig *c, const MJsonValue *t, const char *path,
    GError **error)
{
  const char *sec = "transformer";
  int input_dim = -1;
  if (!(get_int (t, sec, "d_model", 1, 8192, &c->d_model, path, error)
          && get_int (t, sec, "num_heads", 1, 256, &c->num_heads, path, error)
          && get_int (t, sec, "num_layers", 0, 128, &c->num_layers, path, error)
          && get_int (t, sec, "dim_feedforward", 1, 65536, &c->dim_feedforward,
              path, error)
          && get_int (t, sec, "context", 1, 100000, &c->context, path, error)
          && get_int (t, sec, "input_dimension", 1, 8192, &input_dim, path,
              error)
          && get_number (t, sec, "max_period", 1.0, 1e12, &c->max_period, path,
              error)
          && expect_bool (t, sec, "causal", TRUE, path, error)
          && expect_string (t, sec, "norm", "layer_norm", path, error)
          && expect_string (t, sec, "gating", "none", path, error)
          && expect_string (t, sec, "positional_embedding", "rope", path,
              error)))
    return FALSE;
  if (input_dim >= 0 && input_dim != c->d_model) {
    CFG_ERROR ("%s: \"transformer.input_dimension\" (%d) differs from d_model "
               "(%d); projected Mimi transformers are not supported",
        path, input_dim, c->d_model);
    return FALSE;
  }
  const MJsonValue *od = mjson_get (t, "output_dimensions");
  if (od) {
    int64_t x;
    if (mjson_type (od) != MJSON_ARRAY || mjson_len (od) != 1
        || !mjson_is_integer (mjson_at (od, 0), &x) || x != c->d_model) {
      CFG_ERROR ("%s: \"transformer.output_dimensions\" must be [d_model]",
          path);
      return FALSE;
    }
  }
  const MJsonValue *ls = mjson_get (t, "layer_scale");
  if (ls && mjson_type (ls) == MJSON_NULL) {
    CFG_ERROR ("%s: \"transformer.layer_scale\" must be set (Mimi uses "
               "LayerScale)",
        path);
    return FALSE;
  }
  return TRUE;
}

static gboolean
parse_quantizer (MimiConfig *c, const MJsonValue *q, const char *path,
    GError **error)
{
  const char *sec = "quantizer";
  int in_dim = c->dimension, out_dim = c->dimension;
  if (!(get_int (q, sec, "dimension", 1, 4096, &c->q_dimension, path, error)
          && get_int (q, sec, "n_q", 1, MIMI_MAX_CODEBOOKS, &c->q_n_q, path,
              error)
          && get_int (q, sec, "bins", 1, 65536, &c->q_bins, path, error)
          && get_int (q, sec, "input_dimension", 1, 8192, &in_dim, path, error)
          && get_int (q, sec, "output_dimension", 1, 8192, &out_dim, path,
              error)))
    return FALSE;
  if (in_dim != c->dimension || out_dim != c->dimension) {
    CFG_ERROR ("%s: quantizer input/output dimension (%d/%d) must equal "
               "seanet.dimension (%d)",
        path, in_dim, out_dim, c->dimension);
    return FALSE;
  }
  return TRUE;
}

gboolean
mimi_config_validate (const MimiConfig *c, const char *path, GError **error)
{
  int hop = 1;
  for (int i = 0; i < c->n_ratios; i++)
    hop *= c->ratios[i];
  if (c->d_model != c->dimension) {
    CFG_ERROR ("%s: transformer.d_model (%d) must equal seanet.dimension (%d)",
        path, c->d_model, c->dimension);
    return FALSE;
  }
  if (c->d_model % c->num_heads || (c->d_model / c->num_heads) % 2) {
    CFG_ERROR ("%s: d_model %d must split into %d heads of even size", path,
        c->d_model, c->num_heads);
    return FALSE;
  }
  if (c->n_filters << c->n_ratios > 65536 || c->n_filters % c->compress) {
    CFG_ERROR ("%s: seanet n_filters %d with %d ratios and compress %d is not "
               "a usable architecture",
        path, c->n_filters, c->n_ratios, c->compress);
    return FALSE;
  }
  double enc_rate = (double) c->sample_rate / hop;
  double stride = enc_rate / c->frame_rate;
  if (fabs (stride - round (stride)) > 1e-9 || round (stride) < 1
      || c->frame_size != hop * (int) round (stride)) {
    CFG_ERROR ("%s: sample_rate %d / hop %d / frame_rate %g / frame_size %d "
               "are inconsistent",
        path, c->sample_rate, hop, c->frame_rate, c->frame_size);
    return FALSE;
  }
  if (c->context < (int) round (stride)) {
    CFG_ERROR ("%s: transformer context %d is shorter than one frame", path,
        c->context);
    return FALSE;
  }
  if (c->num_codebooks < 1 || c->num_codebooks > c->q_n_q) {
    CFG_ERROR ("%s: num_codebooks %d must be in [1, quantizer.n_q = %d]", path,
        c->num_codebooks, c->q_n_q);
    return FALSE;
  }
  return TRUE;
}

gboolean
mimi_config_load_json (MimiConfig *c, const char *path, GError **error)
{
  gboolean ok = FALSE;
  MJsonValue *root = NULL;

  root = mjson_parse_object_file (path, error);
  if (!root)
    return FALSE;
  const MJsonValue *s = mjson_get (root, "seanet");
  const MJsonValue *t = mjson_get (root, "transformer");
  const MJsonValue *q = mjson_get (root, "quantizer");
  if (!s || mjson_type (s) != MJSON_OBJECT) {
    CFG_ERROR ("%s: no \"seanet\" object: not a Mimi config", path);
    goto out;
  }
  if ((t && mjson_type (t) != MJSON_OBJECT)
      || (q && mjson_type (q) != MJSON_OBJECT)) {
    CFG_ERROR ("%s: \"transformer\" and \"quantizer\" must be objects", path);
    goto out;
  }
  double frame_rate = c->frame_rate;
  if (!parse_seanet (c, s, path, error)
      || (t && !parse_transformer (c, t, path, error))
      || (q && !parse_quantizer (c, q, path, error))
      || !get_int (root, "config", "sample_rate", 8000, 192000, &c->sample_rate,
          path, error)
      || !get_int (root, "config", "channels", 1, 1, &c->channels, path, error)
      || !get_int (root, "config", "frame_size", 1, 1 << 20, &c->frame_size,
          path, error)
      || !get_int (root, "config", "num_codebooks", 1, MIMI_MAX_CODEBOOKS,
          &c->num_codebooks, path, error)
      || !get_number (root, "config", "frame_rate", 0.1, 1000.0, &frame_rate,
          path, error))
    goto out;
  c->frame_rate = frame_rate;
  ok = mimi_config_validate (c, path, error);
out:
  mjson_free (root);
  return ok;
}
