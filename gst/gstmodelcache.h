/* gst-moshi: process-wide cache of loaded models.
 *
 * Weights are read-only and large (Moshi 7B: GBs), and libmoshi-models
 * keeps per-stream state separate from them, so every element of the process
 * that uses the same weights file shares one loaded instance.  Entries are
 * keyed by (kind, canonical real path), loaded once even when several
 * elements start at the same time (the others wait), counted per user and
 * dropped when the last user releases them. */
#pragma once

#include <gmodule.h>
#include <gst/gst.h>

#include "lm.h"
#include "mimi.h"
#include "moshivis-image.h"
#include "sentencepiece.h"

G_BEGIN_DECLS

/* Loads the model at `path`; `user_data` is what was given to acquire(). */
typedef gpointer (*GstMoshiModelLoadFunc) (const gchar *path,
    gpointer user_data, GError **error);

/* Returns the shared instance for (`kind`, real path of `path`), loading it
 * with `load` if nobody holds it yet; NULL with `error` if loading failed.
 * `kind` must identify everything that makes `load` produce a different
 * object from the same file (e.g. "moshi-lm:q8").  `free_func` disposes of
 * the instance once the last user released it.  Each successful call must be
 * paired with gst_moshi_model_cache_release(). */
gpointer gst_moshi_model_cache_acquire (const gchar *kind, const gchar *path,
    GstMoshiModelLoadFunc load, gpointer user_data, GDestroyNotify free_func,
    GError **error);
void gst_moshi_model_cache_release (gpointer model);

/* Number of users of the entry for (`kind`, `path`); 0 when not loaded.
 * For tests and debugging. */
G_MODULE_EXPORT guint gst_moshi_model_cache_users (const gchar *kind,
    const gchar *path);
/* Number of models loaded (successfully or not) since the process started.
 * For tests: proves that concurrent acquires load once. */
G_MODULE_EXPORT guint gst_moshi_model_cache_loads (void);

#define GST_MOSHI_MODEL_KIND_MIMI "mimi"

/* Mimi convenience wrappers (kind GST_MOSHI_MODEL_KIND_MIMI). */
MimiModel *gst_moshi_model_cache_acquire_mimi (const gchar *path,
    MoshiWeightType weights, GError **error);
void gst_moshi_model_cache_release_mimi (MimiModel *model);

/* Moshi LM: kind "moshi-lm:<quantize property nick>" (e.g. "moshi-lm:none",
 * "moshi-lm:q8"), so that
 * several moshilm share one LmModel per file and precision; each element
 * keeps its own LmGen.  `config` is the config.json describing the weights,
 * or NULL for Moshi 7B's architecture; it must be the same for every user
 * of a file (it sits beside the weights). */
#define GST_MOSHI_MODEL_KIND_LM "moshi-lm"
LmModel *gst_moshi_model_cache_acquire_lm (const gchar *path,
    const gchar *config, MoshiWeightType weights, GError **error);
void gst_moshi_model_cache_release_lm (LmModel *model);

/* MoshiVis image encoders (tower + adapter): kind "moshivis-image[:type]"
 * (the tower's storage: none = float32, bf16, q8).  `config` is the
 * config.json beside the weights or NULL (defaults). */
#define GST_MOSHI_MODEL_KIND_VISION "moshivis-image"
MoshiVisImageEncoder *gst_moshi_model_cache_acquire_vision (const gchar *path,
    const gchar *config, MoshiWeightType weights, GError **error);
void gst_moshi_model_cache_release_vision (MoshiVisImageEncoder *model);

/* SentencePiece tokenizers: kind "sentencepiece". */
#define GST_MOSHI_MODEL_KIND_TOKENIZER "sentencepiece"
SpModel *gst_moshi_model_cache_acquire_tokenizer (const gchar *path,
    GError **error);
void gst_moshi_model_cache_release_tokenizer (SpModel *model);

G_END_DECLS
