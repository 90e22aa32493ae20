/* gst-moshi: process-wide cache of loaded models; see gstmodelcache.h. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "gstmodelcache.h"

#include <string.h>

#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <unistd.h>

#include <stdlib.h>

#include "gstmoshienums.h"

GST_DEBUG_CATEGORY_STATIC (gst_moshi_model_cache_debug);
#define GST_CAT_DEFAULT gst_moshi_model_cache_debug

typedef struct {
  gchar *key;
  gpointer model; /* NULL while loading */
  GDestroyNotify free_func;
  guint users; /* holders + threads waiting for the load */
  gboolean loading;
  GError *error; /* set when the load failed; waiters copy it */
} CacheEntry;

/* Static GMutex/GCond need no initialisation. */
static GMutex cache_lock;
static GCond cache_cond;
static GHashTable *entries_by_key; /* key -> CacheEntry */
static GHashTable *entries_by_model; /* model -> CacheEntry */
static guint n_loads;

static void
ensure_tables (void)
{
  if (G_UNLIKELY (!entries_by_key)) {
    GST_DEBUG_CATEGORY_INIT (gst_moshi_model_cache_debug, "moshimodelcache", 0,
        "gst-moshi shared model cache");
    entries_by_key = g_hash_table_new (g_str_hash, g_str_equal);
    entries_by_model = g_hash_table_new (g_direct_hash, g_direct_equal);
  }
}

/* The key must not depend on how the path was spelled (relative, through a
 * symlink such as the Hugging Face snapshot links), or two elements would
 * load the same weights twice. */
static gchar *
make_key (const gchar *kind, const gchar *path)
{
  char *real = realpath (path, NULL);
  gchar *key = g_strdup_printf ("%s:%s", kind, real ? real : path);

  free (real);
  return key;
}

static void
entry_free (CacheEntry *e)
{
  g_clear_error (&e->error);
  g_free (e->key);
  g_free (e);
}

/* Called with the lock held; drops one user and frees what is unused.
 * Returns the model the caller must free (outside the lock), if any. */
static gpointer
entry_unuse_locked (CacheEntry *e, GDestroyNotify *free_func)
{
  gpointer model = NULL;

  g_assert (e->users > 0);
  e->users--;
  if (e->users > 0)
    return NULL;

  if (g_hash_table_lookup (entries_by_key, e->key) == e)
    g_hash_table_remove (entries_by_key, e->key);
  if (e->model) {
    g_hash_table_remove (entries_by_model, e->model);
    model = e->model;
    *free_func = e->free_func;
    GST_INFO ("unloading %s", e->key);
  }
  entry_free (e);
  return model;
}

gpointer
gst_moshi_model_cache_acquire (const gchar *kind, const gchar *path,
    GstMoshiModelLoadFunc load, gpointer user_data, GDestroyNotify free_func,
    GError **error)
{
  gchar *key;
  CacheEntry *e;
  gpointer model;
  GError *err = NULL;

  g_return_val_if_fail (kind != NULL && path != NULL, NULL);
  g_return_val_if_fail (load != NULL && free_func != NULL, NULL);

  key = make_key (kind, path);

  g_mutex_lock (&cache_lock);
  ensure_tables ();

  e = g_hash_table_lookup (entries_by_key, key);
  if (e) {
    e->users++;
    /* Somebody else is loading these weights: wait for them rather than
     * reading gigabytes twice. */
    while (e->loading)
      g_cond_wait (&cache_cond, &cache_lock);
    if (e->model) {
      GST_DEBUG ("sharing %s (%u users)", key, e->users);
      model = e->model;
      g_mutex_unlock (&cache_lock);
      g_free (key);
      return model;
    } else {
      GDestroyNotify unused = NULL;

      g_propagate_error (error, g_error_copy (e->error));
      entry_unuse_locked (e, &unused);
      g_mutex_unlock (&cache_lock);
      g_free (key);
      return NULL;
    }
  }

  e = g_new0 (CacheEntry, 1);
  e->key = key;
  e->free_func = free_func;
  e->users = 1;
  e->loading = TRUE;
  g_hash_table_insert (entries_by_key, e->key, e);
  n_loads++;
  g_mutex_unlock (&cache_lock);

  /* Load without the lock: other models may be acquired meanwhile. */
  GST_INFO ("loading %s", key);
  model = load (path, user_data, &err);
  g_assert (model != NULL || err != NULL);

  g_mutex_lock (&cache_lock);
  e->loading = FALSE;
  if (model) {
    e->model = model;
    g_hash_table_insert (entries_by_model, model, e);
  } else {
    GDestroyNotify unused = NULL;

    GST_WARNING ("failed to load %s: %s", e->key, err->message);
    e->error = g_error_copy (err);
    /* Forget the failure at once so that a later attempt (after the user
     * fixed the file) loads again; waiters still hold the entry. */
    g_hash_table_remove (entries_by_key, e->key);
    entry_unuse_locked (e, &unused);
    g_propagate_error (error, err);
  }
  g_cond_broadcast (&cache_cond);
  g_mutex_unlock (&cache_lock);

  return model;
}

void
gst_moshi_model_cache_release (gpointer model)
{
  CacheEntry *e;
  GDestroyNotify free_func = NULL;
  gpointer to_free = NULL;

  if (!model)
    return;

  g_mutex_lock (&cache_lock);
  ensure_tables ();
  e = g_hash_table_lookup (entries_by_model, model);
  if (e)
    to_free = entry_unuse_locked (e, &free_func);
  else
    g_critical ("gst-moshi: releasing model %p that the cache does not hold",
        model);
  g_mutex_unlock (&cache_lock);

  if (to_free)
    free_func (to_free);
}

guint
gst_moshi_model_cache_users (const gchar *kind, const gchar *path)
{
  gchar *key = make_key (kind, path);
  CacheEntry *e;
  guint users = 0;

  g_mutex_lock (&cache_lock);
  ensure_tables ();
  e = g_hash_table_lookup (entries_by_key, key);
  if (e && e->model)
    users = e->users;
  g_mutex_unlock (&cache_lock);
  g_free (key);
  return users;
}

guint
gst_moshi_model_cache_loads (void)
{
  guint n;

  g_mutex_lock (&cache_lock);
  n = n_loads;
  g_mutex_unlock (&cache_lock);
  return n;
}

/* The same file stored at another precision is another model: "base",
 * or "base:<type>" when not float32. */
static gchar *
kind_for_weights (const gchar *base, MoshiWeightType weights)
{
  return weights == MOSHI_WEIGHTS_F32
      ? g_strdup (base)
      : g_strdup_printf ("%s:%s", base, moshi_weight_type_name (weights));
}

static gpointer
load_mimi (const gchar *path, gpointer user_data, GError **error)
{
  return mimi_model_load_typed (path, GPOINTER_TO_INT (user_data), error);
}

MimiModel *
gst_moshi_model_cache_acquire_mimi (const gchar *path, MoshiWeightType weights,
    GError **error)
{
  gchar *kind = kind_for_weights (GST_MOSHI_MODEL_KIND_MIMI, weights);
  MimiModel *m = gst_moshi_model_cache_acquire (kind, path, load_mimi,
      GINT_TO_POINTER (weights), (GDestroyNotify) mimi_model_unref, error);
  g_free (kind);
  return m;
}

void
gst_moshi_model_cache_release_mimi (MimiModel *model)
{
  gst_moshi_model_cache_release (model);
}

typedef struct {
  const gchar *config;
  MoshiWeightType weights;
} LmLoadArgs;

/* Loads the LM, reading or writing its packed-weights cache (quantized
 * storage only): beside the weights when that folder is writable (the
 * Hugging Face cache is), else in the user's cache folder.
 * GST_MOSHI_NO_WEIGHT_CACHE=1 turns it off. */
static LmModel *
load_lm_cached (const gchar *path, const gchar *lora_path, const LmConfig *cfg,
    MoshiWeightType weights, GError **error)
{
  if (weights == MOSHI_WEIGHTS_F32 || g_getenv ("GST_MOSHI_NO_WEIGHT_CACHE"))
    return lm_model_load_lora (path, lora_path, cfg, weights, error);
  gchar *beside = g_strdup_printf ("%s.%s.moshipack", path,
      moshi_weight_type_name (weights));
  gchar *warning = NULL;
  gchar *dir = g_path_get_dirname (path);
  const gchar *cache_path = beside;
  gchar *user_path = NULL;
  if (g_access (dir, W_OK) != 0) {
    gchar *real = g_canonicalize_filename (path, NULL);
    gchar *sum = g_compute_checksum_for_string (G_CHECKSUM_SHA1, real, -1);
    gchar *udir = g_build_filename (g_get_user_cache_dir (), "gst-moshi", NULL);
    g_mkdir_with_parents (udir, 0700);
    user_path = g_strdup_printf ("%s/%s.%s.moshipack", udir, sum,
        moshi_weight_type_name (weights));
    cache_path = user_path;
    g_free (udir);
    g_free (sum);
    g_free (real);
  }
  LmModel *m = lm_model_load_cached (path, lora_path, cfg, weights, cache_path,
      &warning, error);
  if (m)
    GST_INFO ("%s: packed weights %s %s", path,
        lm_model_from_cache (m) ? "mapped from"
            : warning           ? "not written to"
                                : "written to",
        cache_path);
  if (warning)
    GST_WARNING ("%s", warning);
  g_free (warning);
  g_free (dir);
  g_free (beside);
  g_free (user_path);
  return m;
}

static gpointer
load_lm (const gchar *path, gpointer user_data, GError **error)
{
  const LmLoadArgs *args = user_data;
  LmConfig cfg;

  if (args->config) {
    if (!lm_config_load_json (&cfg, args->config, error))
      return NULL;
  } else {
    lm_config_default (&cfg);
  }
  if (!cfg.lora)
    return load_lm_cached (path, NULL, &cfg, args->weights, error);

  /* A LoRA fine-tune: Kyutai's repo config names the adapter file
   * (lora_name), which sits beside the config. */
  gpointer model = NULL;
  JsonParser *parser = json_parser_new ();
  gchar *lora_path = NULL;
  if (json_parser_load_from_file (parser, args->config, error)) {
    JsonNode *root = json_parser_get_root (parser);
    JsonObject *o =
        JSON_NODE_HOLDS_OBJECT (root) ? json_node_get_object (root) : NULL;
    const gchar *name = o && json_object_has_member (o, "lora_name")
        ? json_object_get_string_member (o, "lora_name")
        : NULL;
    if (name) {
      gchar *dir = g_path_get_dirname (args->config);
      lora_path = g_build_filename (dir, name, NULL);
      g_free (dir);
      if (!g_file_test (lora_path, G_FILE_TEST_EXISTS)) {
        g_set_error (error, G_FILE_ERROR, G_FILE_ERROR_NOENT,
            "%s says this model is a LoRA fine-tune with adapters in %s, "
            "which is missing: download it with the rest of the repo "
            "(huggingface-cli download <repo> %s)",
            args->config, lora_path, name);
        goto out;
      }
    }
    model = load_lm_cached (path, lora_path, &cfg, args->weights, error);
  }
out:
  g_free (lora_path);
  g_object_unref (parser);
  return model;
}

LmModel *
gst_moshi_model_cache_acquire_lm (const gchar *path, const gchar *config,
    MoshiWeightType weights, GError **error)
{
  LmLoadArgs args = { config, weights };
  GEnumClass *quantize = g_type_class_ref (GST_TYPE_MOSHI_QUANTIZE);
  GEnumValue *v = g_enum_get_value (quantize, weights);
  /* The quantize property's nick ("none", "bf16", "q8", ...).  A LoRA
   * config makes other weights out of the same base file: then the config
   * is part of what identifies the model. */
  LmConfig probe;
  gboolean lora =
      config && lm_config_load_json (&probe, config, NULL) && probe.lora;
  /* So does a config.json that is not the one beside the weights (a model
   * kind reusing another model's weights, e.g. tests/data/stt-tiny). */
  gchar *wdir = g_path_get_dirname (path);
  gchar *cdir = config ? g_path_get_dirname (config) : NULL;
  if (cdir && strcmp (wdir, cdir))
    lora = TRUE;
  g_free (wdir);
  g_free (cdir);
  gchar *kind = g_strdup_printf ("%s:%s%s%s", GST_MOSHI_MODEL_KIND_LM,
      v ? v->value_nick : moshi_weight_type_name (weights), lora ? ":" : "",
      lora ? config : "");
  LmModel *m = gst_moshi_model_cache_acquire (kind, path, load_lm, &args,
      (GDestroyNotify) lm_model_unref, error);
  g_type_class_unref (quantize);
  g_free (kind);
  return m;
}

void
gst_moshi_model_cache_release_lm (LmModel *model)
{
  gst_moshi_model_cache_release (model);
}

static gpointer
load_tokenizer (const gchar *path, gpointer user_data, GError **error)
{
  return sp_model_load (path, error);
}

typedef struct {
  const gchar *config;
  MoshiWeightType weights;
} VisionLoad;

static gpointer
load_vision (const gchar *path, gpointer user_data, GError **error)
{
  const VisionLoad *v = user_data;
  MoshiVisImageConfig cfg;
  moshivis_image_config_default (&cfg);
  if (v->config && !moshivis_image_config_load_json (&cfg, v->config, error))
    return NULL;
  MoshiVisImageEncoder *e = moshivis_image_encoder_load (path, &cfg, error);
  if (e && !moshivis_image_encoder_quantize (e, v->weights, error)) {
    moshivis_image_encoder_unref (e);
    return NULL;
  }
  return e;
}

MoshiVisImageEncoder *
gst_moshi_model_cache_acquire_vision (const gchar *path, const gchar *config,
    MoshiWeightType weights, GError **error)
{
  VisionLoad v = { config, weights };
  gchar *kind = kind_for_weights (GST_MOSHI_MODEL_KIND_VISION, weights);
  MoshiVisImageEncoder *e = gst_moshi_model_cache_acquire (kind, path,
      load_vision, &v, (GDestroyNotify) moshivis_image_encoder_unref, error);
  g_free (kind);
  return e;
}

void
gst_moshi_model_cache_release_vision (MoshiVisImageEncoder *model)
{
  gst_moshi_model_cache_release (model);
}

SpModel *
gst_moshi_model_cache_acquire_tokenizer (const gchar *path, GError **error)
{
  return gst_moshi_model_cache_acquire (GST_MOSHI_MODEL_KIND_TOKENIZER, path,
      load_tokenizer, NULL, (GDestroyNotify) sp_model_free, error);
}

void
gst_moshi_model_cache_release_tokenizer (SpModel *model)
{
  gst_moshi_model_cache_release (model);
}
