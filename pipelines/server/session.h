/* moshi-server: one conversation = one GStreamer pipeline.
 *
 *   appsrc (Ogg Opus bytes from the client)
 *     ! oggdemux ! opusdec ! audioconvert ! audioresample
 *     ! audio/x-raw,rate=24000,channels=1
 *     ! mimienc ! moshilm name=lm ! queue ! mimidec
 *     ! audioconvert ! audioresample ! opusenc ! oggmux ! appsink (-> kind 1)
 *   lm.text_src ! queue ! appsink (-> kind 2, or kind 7 in a vision session)
 *
 * Every session names the same model files, so the plugin's model cache
 * shares one copy of the weights; each moshilm has its own state.
 * Callbacks run in the main context (the thread of the server's loop),
 * never after ms_session_free() returned. */
#pragma once

#include "protocol.h"
#include <gst/gst.h>

G_BEGIN_DECLS

typedef struct {
  const gchar *mimi_model;
  const gchar *lm_model;
  const gchar *quantize; /* none, bf16, q8, q4 */
  gint threads; /* moshilm compute threads */
  gboolean vision; /* MoshiVis model: image first, kind 7 out */
  gsize max_queued_bytes; /* input the pipeline has not taken yet */
  const gchar *name; /* for the logs, e.g. "session 3" */
} MsSessionConfig;

typedef struct {
  void (*audio) (GBytes *ogg_pages, gpointer user);
  /* gate: MoshiVis gate intensity 0..10, or -1 for an ordinary model */
  void (*text) (const gchar *utf8, gsize len, gint gate, gpointer user);
  void (*error) (const gchar *message, gpointer user);
} MsSessionCallbacks;

typedef struct _MsSession MsSession;

/* Builds the pipeline and starts it (models come from the cache: fast
 * when the server holds them).  picture: a vision session's first picture,
 * decoded (ms_image_decode*, image.h); NULL otherwise. */
MsSession *ms_session_new (const MsSessionConfig *cfg, const MsParams *params,
    GstSample *picture, const MsSessionCallbacks *cb, gpointer user,
    GError **error);
/* One message of Ogg pages (already checked by ms_ogg_check_pages). */
gboolean ms_session_push_audio (MsSession *s, const guint8 *data, gsize len,
    GError **error);
/* Vision sessions: a new picture (decoded, as for ms_session_new) for the
 * rest of the conversation; FALSE with error when the session takes none. */
gboolean ms_session_push_picture (MsSession *s, GstSample *picture,
    GError **error);
/* The sampling settings moshilm really uses, as Kyutai's metadata JSON. */
gchar *ms_session_metadata_json (MsSession *s);
/* Stops the pipeline and frees everything; no callback after this. */
void ms_session_free (MsSession *s);

/* Loads the models once and keeps them loaded (the cache frees a model
 * when its last user goes). Returns NULL with error set when they cannot
 * be loaded. */
GstElement *ms_models_hold (const MsSessionConfig *cfg, GError **error);

G_END_DECLS
