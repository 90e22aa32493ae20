/* LM configuration: Kyutai's Moshi 7B defaults and their config.json. */
#include "lm.h"

#include "json.h"
#include "model-error.h"
#include "transformer.h"

#include <string.h>

void
lm_config_default (LmConfig *c)
{
  static const int delays[17] = { 0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1,
    1, 1 };
  memset (c, 0, sizeof *c);
  c->dim = 4096;
  c->num_heads = 32;
  c->num_layers = 32;
  c->hidden_scale = 4.125;
  c->context = 3000;
  c->max_period = 10000;
  c->rms_norm = TRUE;
  c->norm_eps = 1e-8f;
  c->gating = TRUE;
  c->positional = TRANSFORMER_POS_ROPE;
  c->text_card = 32000;
  c->card = 2048;
  c->n_q = 16;
  c->dep_q = 8;
  memcpy (c->delays, delays, sizeof delays);
  c->existing_text_padding_id = 3;
  c->dep_dim = 1024;
  c->dep_dim_feedforward = 4224;
  c->dep_num_heads = 16;
  c->dep_num_layers = 6;
  c->dep_multi_linear = TRUE;
  c->dep_weights_per_step = TRUE;
  c->dep_gating = TRUE;
  c->dep_positional = TRANSFORMER_POS_NONE;
  c->dep_max_period = 10000;
  c->temp = 0.8f;
  c->temp_text = 0.7f;
  c->top_k = 250;
  c->top_k_text = 25;
  c->lora_scaling = 2.0f;
}

#define CFG_ERROR(...) \
  g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_CONFIG, __VA_ARGS__)

static gboolean
get_int (const MJsonValue *v, const char *key, int lo, int hi, int *out,
    const char *path, GError **error)
{
  int64_t n;
  if (!mjson_is_integer (v, &n) || n < lo || n > hi) {
    CFG_ERROR ("%s: \"%s\" must be an integer in [%d, %d]", path, key, lo, hi);
    return FALSE;
  }
  *out = (int) n;
  return TRUE;
}

static gboolean
get_num (const MJsonValue *v, const char *key, double lo, double hi,
    double *out, const char *path, GError **error)
{
  double x = mjson_number (v);
  if (mjson_type (v) != MJSON_NUMBER || !(x >= lo && x <= hi)) {
    CFG_ERROR ("%s: \"%s\" must be a number in [%g, %g]", path, key, lo, hi);
    return FALSE;
  }
  *out = x;
  return TRUE;
}

static gboolean
get_bool (const MJsonValue *v, const char *key, gboolean *out, const char *path,
    GError **error)
{
  if (mjson_type (v) != MJSON_BOOL) {
    CFG_ERROR ("%s: \"%s\" must be true or false", path, key);
    return FALSE;
  }
  *out = mjson_bool (v);
  return TRUE;
}

static gboolean
get_choice (const MJsonValue *v, const char *key, const char *const *names,
    const int *values, int *out, const char *path, GError **error)
{
  const char *s = mjson_string (v);
  for (int i = 0; s && names[i]; i++)
    if (!strcmp (s, names[i])) {
      *out = values[i];
      return TRUE;
    }
  GString *all = g_string_new ("");
  for (int i = 0; names[i]; i++)
    g_string_append_printf (all, "%s\"%s\"", i ? ", " : "", names[i]);
  CFG_ERROR ("%s: \"%s\" = %s is not supported (use %s)", path, key,
      s ? s : "(not a string)", all->str);
  g_string_free (all, TRUE);
  return FALSE;
}

static gboolean
get_int_array (const MJsonValue *v, const char *key, int lo, int hi, int *out,
    int max_n, int *n_out, const char *path, GError **error)
{
  if (mjson_type (v) != MJSON_ARRAY || mjson_len (v) > (size_t) max_n) {
    CFG_ERROR ("%s: \"%s\" must be an array of at most %d integers", path, key,
        max_n);
    return FALSE;
  }
  for (size_t i = 0; i < mjson_len (v); i++) {
    int64_t x;
    if (!mjson_is_integer (mjson_at (v, i), &x) || x < lo || x > hi) {
      CFG_ERROR ("%s: \"%s\"[%zu] must be an integer in [%d, %d]", path, key, i,
          lo, hi);
      return FALSE;
    }
    out[i] = (int) x;
  }
  *n_out = (int) mjson_len (v);
  return TRUE;
}

/* Keys that configure what other loaders do (files, sampling of other
 * tools) or only training: accepted and ignored here. */
static const char *const ignored_keys[] = {
  "moshi_name",
  "mimi_name",
  "tokenizer_name",
  "lora_name",
  "lora_rank",
  "mimi_config_name",
  "tts_config",
  "model_id",
  "depformer_causal",
  "causal",
  "_oracle",
  /* MoshiVis's image side (read by moshivis_image_config_load_json) */
  "vision",
  "adapter",
  "depformer_context",
  "dtype",
  "existing_text_end_padding_id",
  "extra_heads_dim",
  /* Kyutai STT 2.6B's voice-activity heads: extra outputs read from the
   * transformer, with no effect on the text; not computed. */
  "extra_heads_num_heads",
  NULL,
};

/* Keys of features this implementation does not have: an error unless
 * null / empty, so a model that needs them is never run wrongly. */
static const char *const unsupported_keys[] = {
  "cross_attention",
  "demux_second_stream",
  "text_card_out",
  "norm_emb",
  "bias_proj",
  "layer_scale",
  "depformer_layer_scale",
  NULL,
};

static gboolean
in_list (const char *const *list, const char *key)
{
  for (int i = 0; list[i]; i++)
    if (!strcmp (list[i], key))
      return TRUE;
  return FALSE;
}

static gboolean
is_empty (const MJsonValue *v)
{
  MJsonType t = mjson_type (v);
  if (t == MJSON_NULL)
    return TRUE;
  if (t == MJSON_BOOL)
    return !mjson_bool (v);
  if (t == MJSON_ARRAY || t == MJSON_OBJECT)
    return mjson_len (v) == 0;
  int64_t n;
  return mjson_is_integer (v, &n) && n == 0;
}

static gboolean
parse_gen_config (LmConfig *c, const MJsonValue *o, const char *path,
    GError **error)
{
  if (mjson_type (o) != MJSON_OBJECT) {
    CFG_ERROR ("%s: \"lm_gen_config\" must be an object", path);
    return FALSE;
  }
  for (size_t i = 0; i < mjson_len (o); i++) {
    const char *k = mjson_key_at (o, i);
    const MJsonValue *v = mjson_at (o, i);
    double x;
    if (!strcmp (k, "temp") || !strcmp (k, "temp_text")) {
      if (!get_num (v, k, 0.0, 100.0, &x, path, error))
        return FALSE;
      *(strcmp (k, "temp") ? &c->temp_text : &c->temp) = (float) x;
    } else if (!strcmp (k, "top_k")) {
      if (!get_int (v, k, 0, 1 << 20, &c->top_k, path, error))
        return FALSE;
    } else if (!strcmp (k, "top_k_text")) {
      if (!get_int (v, k, 0, 1 << 20, &c->top_k_text, path, error))
        return FALSE;
    }
    /* Other generation options (cfg_coef, ...) do not change the model. */
  }
  return TRUE;
}

static gboolean
parse_stt_config (LmConfig *c, const MJsonValue *o, const char *path,
    GError **error)
{
  if (mjson_type (o) != MJSON_OBJECT) {
    CFG_ERROR ("%s: \"stt_config\" must be an object", path);
    return FALSE;
  }
  for (size_t i = 0; i < mjson_len (o); i++) {
    const char *k = mjson_key_at (o, i);
    const MJsonValue *v = mjson_at (o, i);
    if (!strcmp (k, "audio_delay_seconds")) {
      if (!get_num (v, k, 0.0, 60.0, &c->stt_audio_delay_s, path, error))
        return FALSE;
    } else if (!strcmp (k, "audio_silence_prefix_seconds")) {
      if (!get_num (v, k, 0.0, 60.0, &c->stt_silence_prefix_s, path, error))
        return FALSE;
    }
    /* Other keys (e.g. the server's batching options) do not change how
     * the model is run. */
  }
  return TRUE;
}

/* Kyutai's "conditioners": one LUT conditioner ({"type": "lut", "lut":
 * {"n_bins", "dim", "tokenizer": "noop", "possible_values"}}), whose value
 * is chosen by the model kind (Hibiki: "very_good"). */
static gboolean
parse_conditioners (LmConfig *c, const MJsonValue *o, const char *path,
    GError **error)
{
  if (is_empty (o))
    return TRUE;
  if (mjson_type (o) != MJSON_OBJECT || mjson_len (o) != 1) {
    CFG_ERROR ("%s: \"conditioners\" must hold one conditioner (gst-moshi "
               "supports Hibiki's single LUT conditioner)",
        path);
    return FALSE;
  }
  const char *name = mjson_key_at (o, 0);
  const MJsonValue *cond = mjson_at (o, 0);
  const char *type = mjson_string (mjson_get (cond, "type"));
  const MJsonValue *lut = mjson_get (cond, "lut");
  if (!type || strcmp (type, "lut") || !lut || strlen (name) >= 64) {
    CFG_ERROR ("%s: conditioner \"%s\" is of type \"%s\"; only \"lut\" "
               "conditioners are supported",
        path, name, type ? type : "(none)");
    return FALSE;
  }
  const MJsonValue *values = mjson_get (lut, "possible_values");
  const char *tok = mjson_string (mjson_get (lut, "tokenizer"));
  if (!mjson_get (lut, "n_bins") || !mjson_get (lut, "dim")
      || !get_int (mjson_get (lut, "n_bins"), "n_bins", 1, 1 << 20,
          &c->cond_n_bins, path, error)
      || !get_int (mjson_get (lut, "dim"), "dim", 1, 65536, &c->cond_dim, path,
          error))
    return FALSE;
  if ((tok && strcmp (tok, "noop")) || !values
      || mjson_type (values) != MJSON_ARRAY) {
    CFG_ERROR ("%s: conditioner \"%s\" needs the \"noop\" tokenizer and a "
               "\"possible_values\" list",
        path, name);
    return FALSE;
  }
  /* Kyutai's run_inference conditions Hibiki on "very_good". */
  c->cond_index = -1;
  for (size_t i = 0; i < mjson_len (values); i++) {
    const char *s = mjson_string (mjson_at (values, i));
    if (s && !strcmp (s, "very_good"))
      c->cond_index = (int) i;
  }
  if (c->cond_index < 0 || c->cond_index >= c->cond_n_bins) {
    CFG_ERROR ("%s: conditioner \"%s\" has no value \"very_good\" (the "
               "value Kyutai's inference uses)",
        path, name);
    return FALSE;
  }
  g_strlcpy (c->cond_name, name, sizeof c->cond_name);
  return TRUE;
}

/* Kyutai's "fuser": only "sum" is supported; returns in *sum_name the one
 * condition it sums (NULL: none). */
static gboolean
parse_fuser (const MJsonValue *o, const char **sum_name, const char *path,
    GError **error)
{
  *sum_name = NULL;
  if (is_empty (o))
    return TRUE;
  if (mjson_type (o) != MJSON_OBJECT) {
    CFG_ERROR ("%s: \"fuser\" must be an object", path);
    return FALSE;
  }
  for (size_t i = 0; i < mjson_len (o); i++) {
    const char *k = mjson_key_at (o, i);
    const MJsonValue *v = mjson_at (o, i);
    if (!strcmp (k, "sum") && mjson_type (v) == MJSON_ARRAY
        && mjson_len (v) <= 1) {
      if (mjson_len (v) == 1)
        *sum_name = mjson_string (mjson_at (v, 0));
    } else if ((!strcmp (k, "cross") || !strcmp (k, "prepend"))
        && is_empty (v)) {
      continue;
    } else if (!strcmp (k, "cross_attention_pos_emb")
        || !strcmp (k, "cross_attention_pos_emb_scale")) {
      continue;
    } else {
      CFG_ERROR ("%s: fuser \"%s\" is not supported by gst-moshi (only one "
                 "\"sum\" condition)",
          path, k);
      return FALSE;
    }
  }
  return TRUE;
}

/* Kyutai's LMModel / StreamingTransformer constructor defaults. */
static void
lm_config_library_defaults (LmConfig *c)
{
  memset (c, 0, sizeof *c);
  c->dim = 128;
  c->num_heads = 8;
  c->num_layers = 1;
  c->hidden_scale = 4;
  c->context = 3000; /* LMModel's None (unbounded): capped */
  c->max_period = 10000;
  c->rms_norm = FALSE;
  c->norm_eps = 1e-5f;
  c->gating = FALSE;
  c->positional = TRANSFORMER_POS_SIN;
  c->text_card = 32000;
  c->card = 1024;
  c->n_q = 8;
  c->dep_q = 8;
  c->existing_text_padding_id = 3;
  c->dep_dim = 256;
  c->dep_positional = TRANSFORMER_POS_SIN;
  c->lora_scaling = 2.0f; /* Kyutai's get_moshi_lm default */
  c->temp = 0.8f;
  c->temp_text = 0.7f;
  c->top_k = 250;
  c->top_k_text = 25;
}

static gboolean
lm_config_validate (LmConfig *c, int n_delays, const char *path, GError **error)
{
  if (c->dep_q > c->n_q || c->n_q > LM_MAX_CODEBOOKS) {
    CFG_ERROR ("%s: dep_q (%d) must be <= n_q (%d) <= %d", path, c->dep_q,
        c->n_q, LM_MAX_CODEBOOKS);
    return FALSE;
  }
  if (n_delays != c->n_q + 1) {
    CFG_ERROR ("%s: \"delays\" has %d entries, expected n_q + 1 = %d", path,
        n_delays, c->n_q + 1);
    return FALSE;
  }
  if (c->dim % c->num_heads || c->dep_dim % c->dep_num_heads
      || (c->positional == TRANSFORMER_POS_ROPE
          && (c->dim / c->num_heads) % 2)) {
    CFG_ERROR ("%s: dims %d / %d do not split into %d / %d heads", path, c->dim,
        c->dep_dim, c->num_heads, c->dep_num_heads);
    return FALSE;
  }
  if (c->dep_q > 0 && c->dep_weights_per_step && c->n_dep_schedule > 0
      && c->n_dep_schedule != c->dep_q) {
    CFG_ERROR ("%s: \"depformer_weights_per_step_schedule\" has %d entries, "
               "expected dep_q = %d",
        path, c->n_dep_schedule, c->dep_q);
    return FALSE;
  }
  return TRUE;
}

gboolean
lm_config_load_json (LmConfig *c, const char *path, GError **error)
{
  gboolean ok = FALSE;
  MJsonValue *root = NULL;
  int n_delays = 1;
  /* Depformer settings given explicitly; the rest follow the main ones. */
  gboolean dep_heads = FALSE, dep_layers = FALSE, dep_gate = FALSE;
  gboolean dep_period = FALSE, dep_ff = FALSE;

  lm_config_library_defaults (c);

  root = mjson_parse_object_file (path, error);
  if (!root)
    return FALSE;
  /* Kyutai's create_norm_fn: the *_f32 variants use eps 1e-8. */
  static const char *const norm_names[] = { "rms_norm_f32", "rms_norm",
    "layer_norm", "layer_norm_f32", NULL };
  static const int norm_values[] = { 3, 1, 0, 2 };
  static const char *const gating_names[] = { "silu", "none", NULL };
  static const int gating_values[] = { 1, 0 };
  static const char *const pos_names[] = { "rope", "none", "sin", NULL };
  static const int pos_values[] = { TRANSFORMER_POS_ROPE, TRANSFORMER_POS_NONE,
    TRANSFORMER_POS_SIN };
  static const char *const kind_names[] = { "moshi", "stt", "hibiki", NULL };
  static const int kind_values[] = { LM_KIND_DIALOG, LM_KIND_STT,
    LM_KIND_TRANSLATION };
  const char *fuser_sum = NULL;

  for (size_t i = 0; i < mjson_len (root); i++) {
    const char *k = mjson_key_at (root, i);
    const MJsonValue *v = mjson_at (root, i);
    gboolean good;
    int choice = 0;
    if (!strcmp (k, "dim"))
      good = get_int (v, k, 1, 65536, &c->dim, path, error);
    else if (!strcmp (k, "num_heads"))
      good = get_int (v, k, 1, 1024, &c->num_heads, path, error);
    else if (!strcmp (k, "num_layers"))
      good = get_int (v, k, 0, 1024, &c->num_layers, path, error);
    else if (!strcmp (k, "hidden_scale"))
      good = get_num (v, k, 0.01, 64, &c->hidden_scale, path, error);
    else if (!strcmp (k, "context"))
      good = get_int (v, k, 1, 1 << 20, &c->context, path, error);
    else if (!strcmp (k, "max_period"))
      good = get_num (v, k, 1, 1e12, &c->max_period, path, error);
    else if (!strcmp (k, "norm")) {
      good = get_choice (v, k, norm_names, norm_values, &choice, path, error);
      c->rms_norm = choice & 1;
      c->norm_eps = choice & 2 ? 1e-8f : 1e-5f;
    } else if (!strcmp (k, "gating")) {
      good =
          get_choice (v, k, gating_names, gating_values, &choice, path, error);
      c->gating = choice;
    } else if (!strcmp (k, "positional_embedding"))
      good =
          get_choice (v, k, pos_names, pos_values, &c->positional, path, error);
    else if (!strcmp (k, "text_card"))
      good = get_int (v, k, 1, 1 << 20, &c->text_card, path, error);
    else if (!strcmp (k, "card"))
      good = get_int (v, k, 1, 65535, &c->card, path, error);
    else if (!strcmp (k, "n_q"))
      good = get_int (v, k, 0, LM_MAX_CODEBOOKS, &c->n_q, path, error);
    else if (!strcmp (k, "dep_q"))
      good = get_int (v, k, 0, LM_MAX_CODEBOOKS, &c->dep_q, path, error);
    else if (!strcmp (k, "delays"))
      good = get_int_array (v, k, 0, 1000, c->delays, LM_MAX_CODEBOOKS + 1,
          &n_delays, path, error);
    else if (!strcmp (k, "existing_text_padding_id"))
      good = get_int (v, k, -1, 1 << 20, &c->existing_text_padding_id, path,
          error);
    else if (!strcmp (k, "depformer_dim"))
      good = get_int (v, k, 1, 65536, &c->dep_dim, path, error);
    else if (!strcmp (k, "depformer_dim_feedforward"))
      good = mjson_type (v) == MJSON_NULL
          || (dep_ff = get_int (v, k, 1, 1 << 20, &c->dep_dim_feedforward, path,
                  error));
    else if (!strcmp (k, "depformer_num_heads"))
      good = dep_heads =
          get_int (v, k, 1, 1024, &c->dep_num_heads, path, error);
    else if (!strcmp (k, "depformer_num_layers"))
      good = dep_layers =
          get_int (v, k, 0, 1024, &c->dep_num_layers, path, error);
    else if (!strcmp (k, "depformer_multi_linear"))
      good = get_bool (v, k, &c->dep_multi_linear, path, error);
    else if (!strcmp (k, "depformer_weights_per_step"))
      good = get_bool (v, k, &c->dep_weights_per_step, path, error);
    else if (!strcmp (k, "depformer_weights_per_step_schedule"))
      good = mjson_type (v) == MJSON_NULL
          ? (c->n_dep_schedule = 0, TRUE)
          : get_int_array (v, k, 0, LM_MAX_SCHEDULE - 1, c->dep_schedule,
              LM_MAX_SCHEDULE, &c->n_dep_schedule, path, error);
    else if (!strcmp (k, "depformer_gating")) {
      good = dep_gate =
          get_choice (v, k, gating_names, gating_values, &choice, path, error);
      c->dep_gating = choice;
    } else if (!strcmp (k, "depformer_pos_emb"))
      good = get_choice (v, k, pos_names, pos_values, &c->dep_positional, path,
          error);
    else if (!strcmp (k, "depformer_max_period"))
      good = dep_period =
          get_num (v, k, 1, 1e12, &c->dep_max_period, path, error);
    else if (!strcmp (k, "depformer_low_rank_embeddings"))
      good = mjson_type (v) == MJSON_NULL
          ? (c->dep_low_rank = 0, TRUE)
          : get_int (v, k, 1, 65536, &c->dep_low_rank, path, error);
    else if (!strcmp (k, "lora"))
      good = get_bool (v, k, &c->lora, path, error);
    else if (!strcmp (k, "lora_scaling")) {
      double x = 0;
      good = get_num (v, k, -1e6, 1e6, &x, path, error);
      c->lora_scaling = (float) x;
    } else if (!strcmp (k, "lm_gen_config"))
      good = parse_gen_config (c, v, path, error);
    else if (!strcmp (k, "model_type")) {
      good = get_choice (v, k, kind_names, kind_values, &choice, path, error);
      c->kind = (LmKind) choice;
    } else if (!strcmp (k, "stt_config"))
      good = parse_stt_config (c, v, path, error);
    else if (!strcmp (k, "conditioners"))
      good = parse_conditioners (c, v, path, error);
    else if (!strcmp (k, "fuser"))
      good = parse_fuser (v, &fuser_sum, path, error);
    else if (in_list (ignored_keys, k))
      good = TRUE;
    else if (in_list (unsupported_keys, k)) {
      good = is_empty (v);
      if (!good)
        CFG_ERROR ("%s: \"%s\" is set, but this model feature is not "
                   "supported by gst-moshi yet",
            path, k);
    } else {
      CFG_ERROR ("%s: unknown key \"%s\"", path, k);
      good = FALSE;
    }
    if (!good)
      goto out;
  }
  if (!dep_heads)
    c->dep_num_heads = c->num_heads;
  if (!dep_layers)
    c->dep_num_layers = c->num_layers;
  if (!dep_gate)
    c->dep_gating = c->gating;
  if (!dep_period)
    c->dep_max_period = c->max_period;
  if (!dep_ff)
    c->dep_dim_feedforward = (int) (c->hidden_scale * c->dep_dim);
  /* A conditioner acts only through the fuser (Kyutai's LMGen). */
  if (fuser_sum && (c->cond_dim == 0 || strcmp (fuser_sum, c->cond_name))) {
    CFG_ERROR ("%s: the fuser sums the condition \"%s\", which is not a "
               "conditioner of the model",
        path, fuser_sum);
    goto out;
  }
  if (!fuser_sum)
    c->cond_dim = 0;
  if (c->cond_dim > 0 && c->kind != LM_KIND_TRANSLATION) {
    CFG_ERROR ("%s: the model is conditioned (\"conditioners\"), which "
               "gst-moshi supports for Hibiki (model_type \"hibiki\") only",
        path);
    goto out;
  }
  ok = lm_config_validate (c, n_delays, path, error);
out:
  mjson_free (root);
  return ok;
}
