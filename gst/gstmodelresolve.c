/* gst-moshi: model property -> weights file, offline.
 * See gstmodelresolve.h for the rules; docs/design.md "Finding models". */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "gstmodelresolve.h"

#include <string.h>
#include <json-glib/json-glib.h>

#include "model-error.h"

static const gchar *const mimi_default_names[] = {
  "tokenizer-e351c8d8-checkpoint125.safetensors",
  "mimi-pytorch-e351c8d8@125.safetensors", NULL
};

const GstMoshiModelSpec gst_moshi_mimi_model_spec = {
  .what = "Mimi codec",
  .config_key = "mimi_name",
  .own_config_key = "seanet",
  .own_file = "model.safetensors",
  .default_names = mimi_default_names,
  .default_repo = "kyutai/moshiko-pytorch-bf16",
};

static const gchar *const lm_default_names[] = { "model.safetensors", NULL };

const GstMoshiModelSpec gst_moshi_lm_model_spec = {
  .what = "Moshi language model",
  .config_key = "moshi_name",
  /* Every LM config.json spells its width; a Mimi or repo-only config
   * does not. */
  .own_config_key = "dim",
  .own_file = "model.safetensors",
  .default_names = lm_default_names,
  .default_repo = "kyutai/moshiko-pytorch-bf16",
};

static const gchar *const vision_default_names[] = { "model.safetensors",
  NULL };

const GstMoshiModelSpec gst_moshi_vision_model_spec = {
  .what = "MoshiVis image encoder",
  .config_key = "moshi_name",
  .own_config_key = "vision",
  .own_file = "model.safetensors",
  .default_names = vision_default_names,
  .default_repo = "kyutai/moshika-vis-pytorch-bf16",
};

static const gchar *const tokenizer_default_names[] = {
  "tokenizer_spm_32k_3.model", "tokenizer.model", NULL
};

const GstMoshiModelSpec gst_moshi_tokenizer_model_spec = {
  .what = "text tokenizer (SentencePiece .model)",
  .config_key = "tokenizer_name",
  .own_config_key = NULL,
  .own_file = NULL,
  .default_names = tokenizer_default_names,
  .default_repo = "kyutai/moshiko-pytorch-bf16",
};

typedef enum {
  FOLDER_FOUND,
  FOLDER_NOTHING,
  FOLDER_ERROR,
} FolderResult;

gchar *
gst_moshi_hf_hub_cache_dir (void)
{
  const gchar *v;

  /* Same precedence as huggingface_hub's constants.py, so that whatever
   * huggingface-cli downloaded into is where we look. */
  v = g_getenv ("HF_HUB_CACHE");
  if (v && *v)
    return g_strdup (v);
  v = g_getenv ("HUGGINGFACE_HUB_CACHE"); /* legacy name */
  if (v && *v)
    return g_strdup (v);
  v = g_getenv ("HF_HOME");
  if (v && *v)
    return g_build_filename (v, "hub", NULL);
  v = g_getenv ("XDG_CACHE_HOME");
  if (v && *v)
    return g_build_filename (v, "huggingface", "hub", NULL);
  return g_build_filename (g_get_home_dir (), ".cache", "huggingface", "hub",
      NULL);
}

/* The command that gets the weights of `spec` for `repo`: the file alone
 * for our default repo (its name is known), the whole repo otherwise (other
 * repos name their files in config.json, which is needed too). */
static gchar *
download_hint (const GstMoshiModelSpec *spec, const gchar *repo,
    const gchar *file, const gchar *local_dir)
{
  GString *s = g_string_new ("huggingface-cli download ");

  if (!repo)
    repo = spec->default_repo;
  g_string_append (s, repo);
  if (file)
    g_string_append_printf (s, " %s", file);
  else if (g_strcmp0 (repo, spec->default_repo) == 0 && spec->default_names
      && spec->default_names[0])
    g_string_append_printf (s, " %s", spec->default_names[0]);
  if (local_dir)
    g_string_append_printf (s, " --local-dir '%s'", local_dir);
  return g_string_free (s, FALSE);
}

/* "config.json (key "mimi_name" or "seanet"), a, b" */
static gchar *
describe_folder_search (const GstMoshiModelSpec *spec)
{
  GString *s = g_string_new (NULL);
  guint i;

  if (spec->config_key || spec->own_config_key) {
    g_string_append (s, "config.json (key ");
    if (spec->config_key)
      g_string_append_printf (s, "\"%s\"", spec->config_key);
    if (spec->config_key && spec->own_config_key)
      g_string_append (s, " or ");
    if (spec->own_config_key)
      g_string_append_printf (s, "\"%s\"", spec->own_config_key);
    g_string_append (s, ")");
  }
  for (i = 0; spec->default_names && spec->default_names[i]; i++)
    g_string_append_printf (s, "%s%s", s->len ? ", " : "",
        spec->default_names[i]);
  return g_string_free (s, FALSE);
}

/* Rule (b).  `repo` is the Hugging Face repo the folder is a snapshot of, or
 * NULL for a plain folder; it only changes the download hint. */
static FolderResult
resolve_in_folder (const gchar *folder, const GstMoshiModelSpec *spec,
    const gchar *repo, gchar **out, GError **error)
{
  gchar *config = g_build_filename (folder, "config.json", NULL);
  FolderResult res = FOLDER_NOTHING;
  guint i;

  if (g_file_test (config, G_FILE_TEST_IS_REGULAR)) {
    JsonParser *parser = json_parser_new ();
    GError *err = NULL;
    JsonNode *root;
    JsonObject *obj;

    if (!json_parser_load_from_file (parser, config, &err)) {
      g_set_error (error, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_READ,
          "Cannot read %s: %s", config, err->message);
      g_clear_error (&err);
      g_object_unref (parser);
      res = FOLDER_ERROR;
      goto done;
    }
    root = json_parser_get_root (parser);
    if (!root || !JSON_NODE_HOLDS_OBJECT (root)) {
      g_set_error (error, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_READ,
          "%s is not a JSON object, so it describes no model", config);
      g_object_unref (parser);
      res = FOLDER_ERROR;
      goto done;
    }
    obj = json_node_get_object (root);

    if (spec->config_key && json_object_has_member (obj, spec->config_key)) {
      JsonNode *node = json_object_get_member (obj, spec->config_key);

      if (JSON_NODE_HOLDS_VALUE (node)
          && json_node_get_value_type (node) == G_TYPE_STRING
          && *json_node_get_string (node)) {
        const gchar *name = json_node_get_string (node);
        gchar *path = g_path_is_absolute (name)
            ? g_strdup (name)
            : g_build_filename (folder, name, NULL);

        /* g_file_test follows symlinks: a Hugging Face snapshot entry whose
         * blob never finished downloading counts as missing. */
        if (g_file_test (path, G_FILE_TEST_IS_REGULAR)) {
          *out = path;
          res = FOLDER_FOUND;
        } else {
          gchar *hint = download_hint (spec, repo, name, repo ? NULL : folder);

          g_set_error (error, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_NOT_FOUND,
              "%s names the %s file \"%s\" (key \"%s\"), but %s does not "
              "exist. Get it with: %s",
              config, spec->what, name, spec->config_key, path, hint);
          g_free (hint);
          g_free (path);
          res = FOLDER_ERROR;
        }
        g_object_unref (parser);
        goto done;
      }
    }

    if (spec->own_config_key
        && json_object_has_member (obj, spec->own_config_key)) {
      gchar *path = g_build_filename (folder, spec->own_file, NULL);

      if (g_file_test (path, G_FILE_TEST_IS_REGULAR)) {
        *out = path;
        res = FOLDER_FOUND;
      } else {
        g_set_error (error, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_NOT_FOUND,
            "%s describes a %s (key \"%s\"), but its weights %s do not exist",
            config, spec->what, spec->own_config_key, path);
        g_free (path);
        res = FOLDER_ERROR;
      }
      g_object_unref (parser);
      goto done;
    }
    g_object_unref (parser);
  }

  for (i = 0; spec->default_names && spec->default_names[i]; i++) {
    gchar *path = g_build_filename (folder, spec->default_names[i], NULL);

    if (g_file_test (path, G_FILE_TEST_IS_REGULAR)) {
      *out = path;
      res = FOLDER_FOUND;
      goto done;
    }
    g_free (path);
  }

done:
  g_free (config);
  return res;
}

static gboolean
looks_like_repo_id (const gchar *s)
{
  const gchar *slash = strchr (s, '/');
  const gchar *p;

  if (!slash || slash == s || slash[1] == '\0' || strchr (slash + 1, '/'))
    return FALSE;
  if (s[0] == '.' || slash[1] == '.' || strstr (s, "..")
      || g_str_has_suffix (s, ".safetensors"))
    return FALSE;
  for (p = s; *p; p++) {
    if (!g_ascii_isalnum (*p) && *p != '-' && *p != '_' && *p != '.'
        && p != slash)
      return FALSE;
  }
  return TRUE;
}

static gint
compare_strings (gconstpointer a, gconstpointer b)
{
  return g_strcmp0 (*(const gchar *const *) a, *(const gchar *const *) b);
}

/* Rule (c).  `unset`: the property was empty and `repo` is the default. */
static gchar *
resolve_repo (const gchar *repo, const GstMoshiModelSpec *spec, gboolean unset,
    GError **error)
{
  gchar *hub = gst_moshi_hf_hub_cache_dir ();
  gchar **parts = g_strsplit (repo, "/", 2);
  gchar *repo_dir_name = g_strdup_printf ("models--%s--%s", parts[0], parts[1]);
  gchar *repo_dir = g_build_filename (hub, repo_dir_name, NULL);
  gchar *snapshots = g_build_filename (repo_dir, "snapshots", NULL);
  gchar *ref_file = g_build_filename (repo_dir, "refs", "main", NULL);
  GPtrArray *revs = g_ptr_array_new_with_free_func (g_free);
  GError *first_error = NULL;
  gchar *found = NULL;
  gchar *ref = NULL;
  GDir *dir;
  guint i;

  /* refs/main holds the commit hash huggingface-cli last resolved "main"
   * to: the snapshot a user most likely means. */
  if (g_file_get_contents (ref_file, &ref, NULL, NULL)) {
    g_strstrip (ref);
    if (*ref && !strchr (ref, '/') && strcmp (ref, ".") && strcmp (ref, ".."))
      g_ptr_array_add (revs, g_strdup (ref));
  }
  /* Then any other snapshot, in a stable order. */
  dir = g_dir_open (snapshots, 0, NULL);
  if (dir) {
    GPtrArray *others = g_ptr_array_new ();
    const gchar *name;

    while ((name = g_dir_read_name (dir))) {
      if (g_strcmp0 (name, ref) != 0)
        g_ptr_array_add (others, g_strdup (name));
    }
    g_ptr_array_sort (others, compare_strings);
    for (i = 0; i < others->len; i++)
      g_ptr_array_add (revs, others->pdata[i]);
    g_ptr_array_free (others, TRUE);
    g_dir_close (dir);
  }

  for (i = 0; i < revs->len && !found; i++) {
    gchar *snap = g_build_filename (snapshots, revs->pdata[i], NULL);
    GError *err = NULL;

    if (g_file_test (snap, G_FILE_TEST_IS_DIR)) {
      FolderResult r = resolve_in_folder (snap, spec, repo, &found, &err);

      if (r == FOLDER_ERROR) {
        if (!first_error)
          first_error = err;
        else
          g_clear_error (&err);
      }
    }
    g_free (snap);
  }

  if (found) {
    g_clear_error (&first_error);
  } else if (first_error) {
    g_propagate_error (error, first_error);
  } else {
    gchar *hint = download_hint (spec, repo, NULL, NULL);
    gchar *searched = describe_folder_search (spec);
    const gchar *alternatives = unset ? ", or set the model property to a "
                                        ".safetensors file or a folder"
                                      : "";

    if (!g_file_test (repo_dir, G_FILE_TEST_IS_DIR)) {
      g_set_error (error, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_NOT_FOUND,
          "%s%s %s is not in the local Hugging Face cache (no folder %s; "
          "models are never downloaded at run time). Download the %s "
          "with: %s%s",
          unset ? "No model set, and the default" : "Hugging Face repo",
          unset ? " model" : "", repo, repo_dir, spec->what, hint,
          alternatives);
    } else {
      g_set_error (error, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_NOT_FOUND,
          "The local Hugging Face cache of %s (%s) has no %s: looked in "
          "every snapshot for %s. Download it with: %s%s",
          repo, snapshots, spec->what, searched, hint, alternatives);
    }
    g_free (searched);
    g_free (hint);
  }

  g_free (ref);
  g_ptr_array_unref (revs);
  g_free (ref_file);
  g_free (snapshots);
  g_free (repo_dir);
  g_free (repo_dir_name);
  g_strfreev (parts);
  g_free (hub);
  return found;
}

static gchar *
resolve_folder (const gchar *folder, const GstMoshiModelSpec *spec,
    GError **error)
{
  gchar *found = NULL;
  FolderResult r = resolve_in_folder (folder, spec, NULL, &found, error);

  if (r == FOLDER_NOTHING) {
    gchar *searched = describe_folder_search (spec);
    gchar *hint = download_hint (spec, NULL, NULL, folder);

    g_set_error (error, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_NOT_FOUND,
        "No %s in folder %s: looked for %s. Get Kyutai's with: %s", spec->what,
        folder, searched, hint);
    g_free (hint);
    g_free (searched);
  }
  return found;
}

gchar *
gst_moshi_resolve_model_file (const gchar *model, const GstMoshiModelSpec *spec,
    GError **error)
{
  gchar *path, *found = NULL;

  g_return_val_if_fail (spec != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  if (!model || !*model)
    return resolve_repo (spec->default_repo, spec, TRUE, error);

  /* A shell leaves "model=~/x" alone (not an assignment), so be kind. */
  if (g_str_has_prefix (model, "~/"))
    path = g_build_filename (g_get_home_dir (), model + 2, NULL);
  else
    path = g_strdup (model);

  if (g_file_test (path, G_FILE_TEST_IS_DIR)) {
    found = resolve_folder (path, spec, error);
  } else if (g_file_test (path, G_FILE_TEST_EXISTS)) {
    gchar *base = g_path_get_basename (path);

    /* Pointing at a config.json means "the model this config describes". */
    if (strcmp (base, "config.json") == 0) {
      gchar *folder = g_path_get_dirname (path);

      found = resolve_folder (folder, spec, error);
      g_free (folder);
    } else {
      found = g_strdup (path);
    }
    g_free (base);
  } else if (looks_like_repo_id (model)) {
    found = resolve_repo (model, spec, FALSE, error);
  } else {
    gchar *hint = download_hint (spec, NULL, NULL, NULL);

    g_set_error (error, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_NOT_FOUND,
        "%s model %s not found: no such file or folder%s. Set model to a "
        ".safetensors file, a folder holding one (with Kyutai's config.json), "
        "or a Hugging Face repo id in the local cache; e.g. run: %s",
        spec->what, path,
        g_str_has_suffix (path, ".safetensors")
            ? ""
            : ", and not a Hugging Face repo id (owner/name)",
        hint);
    g_free (hint);
  }

  g_free (path);
  return found;
}

gchar *
gst_moshi_resolve_mimi (const gchar *model, GError **error)
{
  return gst_moshi_resolve_model_file (model, &gst_moshi_mimi_model_spec,
      error);
}

/* TRUE when `folder`/config.json describes an LM itself (has "dim"): then
 * it is the model's configuration even when its moshi_name points to
 * weights elsewhere (e.g. tests/data/stt-tiny reusing lm-tiny's weights). */
static gboolean
folder_has_own_lm_config (const gchar *folder)
{
  gchar *path = g_build_filename (folder, "config.json", NULL);
  JsonParser *parser = json_parser_new ();
  gboolean own = FALSE;

  if (json_parser_load_from_file (parser, path, NULL)) {
    JsonNode *root = json_parser_get_root (parser);
    own = root && JSON_NODE_HOLDS_OBJECT (root)
        && json_object_has_member (json_node_get_object (root), "dim");
  }
  g_object_unref (parser);
  g_free (path);
  return own;
}

gboolean
gst_moshi_resolve_lm (const gchar *model, gchar **weights, gchar **config,
    gchar **tokenizer, GError **error)
{
  gchar *w, *folder, *c, *t, *path;
  gboolean is_path;

  g_return_val_if_fail (weights && config && tokenizer, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  w = gst_moshi_resolve_model_file (model, &gst_moshi_lm_model_spec, error);
  if (!w)
    return FALSE;

  /* Not realpath(): a Hugging Face snapshot entry is a symlink into blobs/,
   * its neighbours are in the snapshot folder. */
  folder = g_path_get_dirname (w);
  c = g_build_filename (folder, "config.json", NULL);
  if (!g_file_test (c, G_FILE_TEST_IS_REGULAR))
    g_clear_pointer (&c, g_free);

  if (model && *model) {
    path = g_str_has_prefix (model, "~/")
        ? g_build_filename (g_get_home_dir (), model + 2, NULL)
        : g_strdup (model);
    is_path = g_file_test (path, G_FILE_TEST_EXISTS);
    if (is_path && g_file_test (path, G_FILE_TEST_IS_DIR)
        && folder_has_own_lm_config (path)) {
      g_free (c);
      c = g_build_filename (path, "config.json", NULL);
      g_free (folder);
      folder = g_strdup (path);
    }
    g_free (path);
  } else {
    is_path = FALSE;
  }
  /* A repo id (or the default repo) is looked up as a repo again so that a
   * missing tokenizer gets the right download hint. */
  t = gst_moshi_resolve_model_file (is_path ? folder : model,
      &gst_moshi_tokenizer_model_spec, error);
  g_free (folder);
  if (!t) {
    g_free (c);
    g_free (w);
    return FALSE;
  }

  *weights = w;
  *config = c;
  *tokenizer = t;
  return TRUE;
}

gboolean
gst_moshi_resolve_vision (const gchar *model, gchar **weights, gchar **config,
    GError **error)
{
  g_return_val_if_fail (weights && config, FALSE);
  gchar *w =
      gst_moshi_resolve_model_file (model, &gst_moshi_vision_model_spec, error);
  if (!w)
    return FALSE;
  gchar *folder = g_path_get_dirname (w);
  gchar *c = g_build_filename (folder, "config.json", NULL);
  g_free (folder);
  if (!g_file_test (c, G_FILE_TEST_IS_REGULAR))
    g_clear_pointer (&c, g_free);
  *weights = w;
  *config = c;
  return TRUE;
}

void
gst_moshi_model_error_to_gst (const GError *error, GQuark *domain, gint *code)
{
  *domain = GST_RESOURCE_ERROR;
  *code = GST_RESOURCE_ERROR_FAILED;

  if (!error)
    return;

  if (error->domain == GST_RESOURCE_ERROR || error->domain == GST_CORE_ERROR
      || error->domain == GST_STREAM_ERROR
      || error->domain == GST_LIBRARY_ERROR) {
    *domain = error->domain;
    *code = error->code;
  } else if (error->domain == MOSHI_MODEL_ERROR) {
    switch (error->code) {
      case MOSHI_MODEL_ERROR_IO:
        *code = GST_RESOURCE_ERROR_OPEN_READ;
        break;
      case MOSHI_MODEL_ERROR_FORMAT:
        *code = GST_RESOURCE_ERROR_READ;
        break;
      default:
        /* The file is readable but is not a model these settings can use
         * (missing tensor, wrong shape, bad config, codebooks...). */
        *code = GST_RESOURCE_ERROR_SETTINGS;
        break;
    }
  } else if (error->domain == G_FILE_ERROR) {
    *code = error->code == G_FILE_ERROR_NOENT ? GST_RESOURCE_ERROR_NOT_FOUND
                                              : GST_RESOURCE_ERROR_OPEN_READ;
  }
}
