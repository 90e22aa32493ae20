/* gst-moshi: turning a `model` property into a weights file on disk.
 *
 * A `model` property may name (docs/design.md, "Finding models"):
 *   a) a .safetensors file                       -> that file;
 *   b) a folder:
 *      - config.json with the spec's config_key (Kyutai repo layout,
 *        e.g. "mimi_name")                        -> that file in the folder,
 *      - config.json with the spec's own_config_key (a config describing the
 *        model itself, e.g. "seanet" in tests/data/conformance/mimi-tiny)
 *                                                 -> model.safetensors in it,
 *        (for gst_moshi_resolve_lm(), a folder whose config.json describes
 *        an LM, "dim", is the configuration even when its moshi_name
 *        names weights elsewhere, e.g. tests/data/stt-tiny),
 *      - else Kyutai's standard file names (spec->default_names);
 *   c) a Hugging Face repo id "owner/name" that is not an existing path ->
 *      looked up OFFLINE in the local Hugging Face cache
 *      ($HF_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub,
 *      else ~/.cache/huggingface/hub), folder
 *      models--owner--name/snapshots/<rev>/ (the revision in refs/main first,
 *      then any other snapshot), then rule (b) on that folder.
 * An unset (NULL or empty) property means spec->default_repo in the cache.
 *
 * Nothing is ever downloaded.  When nothing is found the GError
 * (GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_NOT_FOUND) says what was looked
 * for, where, and the huggingface-cli command that fetches it; an unreadable
 * or malformed config.json is GST_RESOURCE_ERROR_READ.
 *
 * The resolver functions are G_MODULE_EXPORT so tests can call them in the
 * plugin module itself (g_module_symbol), the one that ships. */
#pragma once

#include <gmodule.h>
#include <gst/gst.h>

G_BEGIN_DECLS

typedef struct {
  /* Human name used in messages, e.g. "Mimi codec". */
  const gchar *what;
  /* Key of a Kyutai repo config.json whose string value is the file name,
   * e.g. "mimi_name", "moshi_name", "tokenizer_name".  May be NULL. */
  const gchar *config_key;
  /* Key whose presence says that config.json describes this model itself
   * and the weights are `own_file` beside it, e.g. "seanet".  May be NULL. */
  const gchar *own_config_key;
  const gchar *own_file;
  /* Kyutai's standard file names, tried in order; NULL-terminated. */
  const gchar *const *default_names;
  /* Hugging Face repo used when the property is unset and in hints. */
  const gchar *default_repo;
} GstMoshiModelSpec;

/* Mimi: mimi_name / seanet / tokenizer-e351c8d8-checkpoint125.safetensors,
 * mimi-pytorch-e351c8d8@125.safetensors / kyutai/moshiko-pytorch-bf16. */
extern const GstMoshiModelSpec gst_moshi_mimi_model_spec;

/* Moshi LM: moshi_name / dim (a config.json of LM keyword arguments, as in
 * tests/data/conformance/lm-tiny) / model.safetensors /
 * kyutai/moshiko-pytorch-bf16. */
extern const GstMoshiModelSpec gst_moshi_lm_model_spec;
/* The LM's SentencePiece text tokenizer: tokenizer_name /
 * tokenizer_spm_32k_3.model, tokenizer.model / kyutai/moshiko-pytorch-bf16. */
extern const GstMoshiModelSpec gst_moshi_tokenizer_model_spec;

/* MoshiVis image side (tower + adapter, the image_prefix.* tensors of a
 * MoshiVis checkpoint): moshi_name / vision (a config.json with the image
 * side's "vision" object, as the tests' tiny MoshiVis) / model.safetensors /
 * kyutai/moshika-vis-pytorch-bf16. */
extern const GstMoshiModelSpec gst_moshi_vision_model_spec;

/* Returns the path (newly allocated) of the weights file described by
 * `model` (may be NULL), or NULL with `error` set. */
G_MODULE_EXPORT gchar *gst_moshi_resolve_model_file (const gchar *model,
    const GstMoshiModelSpec *spec, GError **error);

/* The MoshiVis checkpoint for `model` (gst_moshi_vision_model_spec) and
 * the config.json beside it (NULL when there is none: Kyutai's repos ship
 * none, the real architecture is then the default). */
G_MODULE_EXPORT gboolean gst_moshi_resolve_vision (const gchar *model,
    gchar **weights, gchar **config, GError **error);

/* gst_moshi_resolve_model_file() with gst_moshi_mimi_model_spec. */
G_MODULE_EXPORT gchar *gst_moshi_resolve_mimi (const gchar *model,
    GError **error);

/* The three files moshilm needs for `model` (may be NULL):
 *  - `weights`: gst_moshi_lm_model_spec;
 *  - `config`: the config.json beside the weights, or NULL when there is
 *    none (Kyutai's first repos ship none: Moshi 7B's architecture then);
 *  - `tokenizer`: gst_moshi_tokenizer_model_spec, looked for in the same
 *    place as the weights (the folder of the weights file when `model` is a
 *    path; the same Hugging Face repo when it is a repo id).
 * FALSE with `error` (and nothing allocated) when a file is missing. */
G_MODULE_EXPORT gboolean gst_moshi_resolve_lm (const gchar *model,
    gchar **weights, gchar **config, gchar **tokenizer, GError **error);

/* The Hugging Face hub cache folder the resolver looks in (newly
 * allocated); it need not exist. */
G_MODULE_EXPORT gchar *gst_moshi_hf_hub_cache_dir (void);

/* Maps an error from the resolver, the model cache or libmoshi-models to the
 * GStreamer error domain/code an element should post. */
void gst_moshi_model_error_to_gst (const GError *error, GQuark *domain,
    gint *code);

/* Posts `err` as an element error (its message is the user-facing text, the
 * property value goes in the debug string).  A macro so the message carries
 * the caller's file/function/line like GST_ELEMENT_ERROR. */
#define GST_MOSHI_ELEMENT_MODEL_ERROR(el, err, model)                     \
  G_STMT_START                                                            \
  {                                                                       \
    GQuark __dom;                                                         \
    gint __code;                                                          \
    const gchar *__model = (model);                                       \
    gst_moshi_model_error_to_gst ((err), &__dom, &__code);                \
    gst_element_message_full (GST_ELEMENT (el), GST_MESSAGE_ERROR, __dom, \
        __code, g_strdup ((err)->message),                                \
        g_strdup_printf ("model property: %s",                            \
            (__model && *__model) ? __model : "(unset)"),                 \
        __FILE__, GST_FUNCTION, __LINE__);                                \
  }                                                                       \
  G_STMT_END

G_END_DECLS
