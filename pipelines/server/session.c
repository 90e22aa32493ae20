/* moshi-server: one conversation = one GStreamer pipeline.  See session.h. */
#include "session.h"

#include <gst/app/gstappsink.h>
#include <gst/app/gstappsrc.h>
#include <gst/video/video.h>
#include <json-glib/json-glib.h>
#include <string.h>

#ifndef MOSHI_VERSION
#define MOSHI_VERSION "dev"
#endif

/* What streaming threads hand to the main context.  `alive` is only read
 * and written in the main context, so an idle that runs after
 * ms_session_free() sees FALSE and drops its data. */
typedef struct {
  gint ref;
  gboolean alive;
  MsSessionCallbacks cb;
  gpointer user;
  gboolean vision;
} Shared;

struct _MsSession {
  GstElement *pipeline, *src, *lm;
  GstElement *img_src, *vis; /* vision sessions: the picture branch */
  guint bus_watch;
  Shared *sh;
  gsize max_queued;
  gchar *mimi_model, *lm_model, *name;
};

typedef enum { ITEM_AUDIO, ITEM_TEXT } ItemKind;

typedef struct {
  Shared *sh;
  ItemKind kind;
  GBytes *bytes;
  gint gate;
} Item;

static Shared *
shared_ref (Shared *sh)
{
  g_atomic_int_inc (&sh->ref);
  return sh;
}

static void
shared_unref (Shared *sh)
{
  if (g_atomic_int_dec_and_test (&sh->ref))
    g_free (sh);
}

static gboolean
deliver (gpointer data)
{
  Item *it = data;

  if (it->sh->alive) {
    gsize len;
    const gchar *p = g_bytes_get_data (it->bytes, &len);

    if (it->kind == ITEM_AUDIO && it->sh->cb.audio)
      it->sh->cb.audio (it->bytes, it->sh->user);
    else if (it->kind == ITEM_TEXT && it->sh->cb.text)
      it->sh->cb.text (p, len, it->gate, it->sh->user);
  }
  return G_SOURCE_REMOVE;
}

static void
item_free (gpointer data)
{
  Item *it = data;

  g_bytes_unref (it->bytes);
  shared_unref (it->sh);
  g_free (it);
}

/* MoshiVis: the gate intensity (0..10) that goes with a text piece, from
 * moshilm's GstMoshiGateMeta (0 when it has none). */
static gint
vision_gate_intensity (GstBuffer *text_buffer)
{
  GstCustomMeta *meta =
      gst_buffer_get_custom_meta (text_buffer, "GstMoshiGateMeta");
  gint intensity = 0;

  if (meta)
    gst_structure_get_int (gst_custom_meta_get_structure (meta), "intensity",
        &intensity);
  return CLAMP (intensity, 0, 10);
}

static GstFlowReturn
on_sample (GstAppSink *sink, gpointer data)
{
  Shared *sh = data;
  GstSample *sample = gst_app_sink_pull_sample (sink);
  GstBuffer *buf;
  GstMapInfo map;
  Item *it;

  if (!sample)
    return GST_FLOW_EOS;
  buf = gst_sample_get_buffer (sample);
  if (!buf || !gst_buffer_map (buf, &map, GST_MAP_READ)) {
    gst_sample_unref (sample);
    return GST_FLOW_OK;
  }
  it = g_new0 (Item, 1);
  it->sh = shared_ref (sh);
  it->bytes = g_bytes_new (map.data, map.size);
  if (strcmp (GST_OBJECT_NAME (sink), "text") == 0) {
    it->kind = ITEM_TEXT;
    it->gate = sh->vision ? vision_gate_intensity (buf) : -1;
  } else {
    it->kind = ITEM_AUDIO;
  }
  gst_buffer_unmap (buf, &map);
  gst_sample_unref (sample);
  g_idle_add_full (G_PRIORITY_DEFAULT, deliver, it, item_free);
  return GST_FLOW_OK;
}

static gboolean
on_bus (GstBus *bus, GstMessage *msg, gpointer data)
{
  MsSession *s = data;
  GError *err = NULL;
  gchar *dbg = NULL;

  switch (GST_MESSAGE_TYPE (msg)) {
    case GST_MESSAGE_ERROR: {
      gchar *text;

      gst_message_parse_error (msg, &err, &dbg);
      /* The input branch: say what the client got wrong. */
      if (g_str_has_prefix (GST_OBJECT_NAME (msg->src), "in")
          || g_str_has_prefix (GST_OBJECT_NAME (msg->src), "oggdemux")
          || g_str_has_prefix (GST_OBJECT_NAME (msg->src), "opusdec"))
        text = g_strdup_printf ("cannot decode the audio (Ogg Opus "
                                "expected): %s",
            err->message);
      else
        text = g_strdup_printf ("%s: %s", GST_OBJECT_NAME (msg->src),
            err->message);
      if (dbg)
        g_message ("%s: pipeline error details: %s", s->name, dbg);
      if (s->sh->alive && s->sh->cb.error)
        s->sh->cb.error (text, s->sh->user);
      g_free (text);
      break;
    }
    case GST_MESSAGE_WARNING:
      gst_message_parse_warning (msg, &err, &dbg);
      g_message ("%s: warning from %s: %s", s->name, GST_OBJECT_NAME (msg->src),
          err->message);
      break;
    case GST_MESSAGE_EOS:
      if (s->sh->alive && s->sh->cb.error)
        s->sh->cb.error ("end of stream", s->sh->user);
      break;
    default:
      break;
  }
  g_clear_error (&err);
  g_free (dbg);
  /* The callback may have freed the session; the watch is removed then and
   * returning TRUE is harmless (GLib ignores it for a destroyed source). */
  return G_SOURCE_CONTINUE;
}

static void
set_models (GstElement *bin, const MsSessionConfig *cfg)
{
  GstElement *e;
  const gchar *names[] = { "enc", "dec" };

  for (guint i = 0; i < G_N_ELEMENTS (names); i++) {
    e = gst_bin_get_by_name (GST_BIN (bin), names[i]);
    gst_util_set_object_arg (G_OBJECT (e), "quantize", cfg->quantize);
    g_object_set (e, "model", cfg->mimi_model, NULL);
    gst_object_unref (e);
  }
  e = gst_bin_get_by_name (GST_BIN (bin), "lm");
  gst_util_set_object_arg (G_OBJECT (e), "quantize", cfg->quantize);
  g_object_set (e, "model", cfg->lm_model, "threads", MAX (cfg->threads, 1),
      NULL);
  gst_object_unref (e);
}

static gboolean
pipeline_error (GstElement *pipeline, const gchar *what, GError **error)
{
  GstBus *bus = gst_element_get_bus (pipeline);
  GstMessage *m = gst_bus_pop_filtered (bus, GST_MESSAGE_ERROR);

  if (m) {
    GError *e = NULL;

    gst_message_parse_error (m, &e, NULL);
    g_set_error (error, GST_CORE_ERROR, GST_CORE_ERROR_STATE_CHANGE, "%s: %s",
        what, e->message);
    g_error_free (e);
    gst_message_unref (m);
  } else {
    g_set_error (error, GST_CORE_ERROR, GST_CORE_ERROR_STATE_CHANGE,
        "%s failed", what);
  }
  gst_object_unref (bus);
  return FALSE;
}

/* ====================================================================
 * VISION BRANCH (MoshiVis): where pictures enter a session.
 *
 *   appsrc (decoded RGB pictures, live) ! videoconvert ! videoscale
 *     ! moshivis ! lm.vision_sink
 *
 * The client's image bytes (JPEG, PNG, ... as Kyutai's kind 8) are decoded
 * first (image.c, off the main loop: moshi-server.c), so that an
 * undecodable picture is a clear error of its own;
 * each later picture is pushed with a force-key-unit so that moshivis looks
 * at it, and moshilm takes it at its next step (the conversation goes on).
 * ==================================================================== */

static gboolean
attach_vision_branch (MsSession *s, const MsSessionConfig *cfg,
    const MsParams *params, GError **error)
{
  GstElement *branch;
  GstPad *srcpad, *sinkpad;
  gboolean ok;
  GstElementFactory *vis = gst_element_factory_find ("moshivis");

  if (!vis) {
    g_set_error (error, GST_CORE_ERROR, GST_CORE_ERROR_MISSING_PLUGIN,
        "the moshivis element is not available");
    return FALSE;
  }
  gst_object_unref (vis);
  branch = gst_parse_bin_from_description ("appsrc name=img is-live=true "
                                           "do-timestamp=true format=time "
                                           "! videoconvert ! videoscale "
                                           "! moshivis name=vis",
      TRUE, error);
  if (!branch)
    return FALSE;
  gst_bin_add (GST_BIN (s->pipeline), branch);
  s->img_src = gst_bin_get_by_name (GST_BIN (branch), "img");
  s->vis = gst_bin_get_by_name (GST_BIN (branch), "vis");
  /* The picture side comes from the same MoshiVis checkpoint as the LM. */
  g_object_set (s->vis, "model", cfg->lm_model, "threads",
      MAX (cfg->threads, 1), NULL);
  if (params->center_crop >= 0)
    g_object_set (s->vis, "center-crop", params->center_crop == 1, NULL);
  if (params->xa_start >= 0)
    g_object_set (s->lm, "xa-start", params->xa_start, NULL);
  /* image_resolution: the model's own size (448) is always used; Kyutai's
   * Rust server also clamps to at most 448. */
  sinkpad = gst_element_request_pad_simple (s->lm, "vision_sink");
  srcpad = gst_element_get_static_pad (branch, "src");
  ok = sinkpad && srcpad && gst_pad_link (srcpad, sinkpad) == GST_PAD_LINK_OK;
  if (srcpad)
    gst_object_unref (srcpad);
  if (sinkpad)
    gst_object_unref (sinkpad);
  if (!ok)
    g_set_error (error, GST_CORE_ERROR, GST_CORE_ERROR_NEGOTIATION,
        "cannot link the vision branch to moshilm's vision_sink");
  return ok;
}

/* Hands a decoded picture to the branch.  moshivis encodes the first
 * frame of a stream by itself; for later ones a force-key-unit, set before
 * the frame is queued, makes it look again. */
static void
push_picture (MsSession *s, GstSample *sample, gboolean again)
{
  if (again) {
    GstPad *pad = gst_element_get_static_pad (s->vis, "sink");

    gst_pad_send_event (pad,
        gst_video_event_new_downstream_force_key_unit (GST_CLOCK_TIME_NONE,
            GST_CLOCK_TIME_NONE, GST_CLOCK_TIME_NONE, TRUE, 0));
    gst_object_unref (pad);
  }
  gst_app_src_push_sample (GST_APP_SRC (s->img_src), sample);
}

gboolean
ms_session_push_picture (MsSession *s, GstSample *picture, GError **error)
{
  if (!s->img_src) {
    g_set_error (error, GST_CORE_ERROR, GST_CORE_ERROR_FAILED,
        "this session does not take images");
    return FALSE;
  }
  push_picture (s, picture, TRUE);
  return TRUE;
}

static const gchar *session_desc =
    "appsrc name=in is-live=true format=bytes caps=application/ogg "
    "! oggdemux ! opusdec ! audioconvert ! audioresample "
    "! audio/x-raw,rate=24000,channels=1 "
    "! mimienc name=enc codebooks=8 "
    "! moshilm name=lm "
    "! queue ! mimidec name=dec ! audioconvert ! audioresample "
    "! audio/x-raw,rate=24000,channels=1 "
    "! opusenc audio-type=voice bitrate=32000 frame-size=20 "
    "! oggmux max-delay=0 max-page-delay=0 "
    "! appsink name=audio sync=false async=false "
    "lm.text_src ! queue ! appsink name=text sync=false async=false";

MsSession *
ms_session_new (const MsSessionConfig *cfg, const MsParams *params,
    GstSample *picture, const MsSessionCallbacks *cb, gpointer user,
    GError **error)
{
  MsSession *s = g_new0 (MsSession, 1);
  GstAppSinkCallbacks sink_cb = { 0 };
  const gchar *sinks[] = { "audio", "text" };
  GstBus *bus;

  s->sh = g_new0 (Shared, 1);
  s->sh->ref = 1;
  s->sh->alive = TRUE;
  s->sh->cb = *cb;
  s->sh->user = user;
  s->sh->vision = cfg->vision;
  s->max_queued = cfg->max_queued_bytes;
  s->mimi_model = g_strdup (cfg->mimi_model);
  s->lm_model = g_strdup (cfg->lm_model);
  s->name = g_strdup (cfg->name ? cfg->name : "session");

  s->pipeline = gst_parse_launch (session_desc, error);
  if (!s->pipeline) {
    ms_session_free (s);
    return NULL;
  }
  set_models (s->pipeline, cfg);
  s->src = gst_bin_get_by_name (GST_BIN (s->pipeline), "in");
  s->lm = gst_bin_get_by_name (GST_BIN (s->pipeline), "lm");
  if (params->text_temperature >= 0)
    g_object_set (s->lm, "temperature-text", params->text_temperature, NULL);
  if (params->audio_temperature >= 0)
    g_object_set (s->lm, "temperature", params->audio_temperature, NULL);
  if (params->text_topk >= 0)
    g_object_set (s->lm, "top-k-text", params->text_topk, NULL);
  if (params->audio_topk >= 0)
    g_object_set (s->lm, "top-k", params->audio_topk, NULL);
  if (params->has_seed)
    g_object_set (s->lm, "seed", params->seed, NULL);

  sink_cb.new_sample = on_sample;
  for (guint i = 0; i < G_N_ELEMENTS (sinks); i++) {
    GstElement *sink = gst_bin_get_by_name (GST_BIN (s->pipeline), sinks[i]);

    gst_app_sink_set_callbacks (GST_APP_SINK (sink), &sink_cb,
        shared_ref (s->sh), (GDestroyNotify) shared_unref);
    gst_object_unref (sink);
  }

  if (cfg->vision) {
    if (!picture)
      g_set_error (error, GST_CORE_ERROR, GST_CORE_ERROR_FAILED,
          "a vision session needs an image first");
    if (!picture || !attach_vision_branch (s, cfg, params, error)) {
      ms_session_free (s);
      return NULL;
    }
    push_picture (s, picture, FALSE);
  }

  if (gst_element_set_state (s->pipeline, GST_STATE_PLAYING)
      == GST_STATE_CHANGE_FAILURE) {
    pipeline_error (s->pipeline, "starting the session", error);
    ms_session_free (s);
    return NULL;
  }
  bus = gst_element_get_bus (s->pipeline);
  s->bus_watch = gst_bus_add_watch (bus, on_bus, s);
  gst_object_unref (bus);
  return s;
}

gboolean
ms_session_push_audio (MsSession *s, const guint8 *data, gsize len,
    GError **error)
{
  guint64 queued = gst_app_src_get_current_level_bytes (GST_APP_SRC (s->src));
  GstFlowReturn ret;

  if (s->max_queued && queued + len > s->max_queued) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_NO_SPACE,
        "audio arrives faster than the model runs (%" G_GUINT64_FORMAT
        " bytes waiting)",
        queued);
    return FALSE;
  }
  ret = gst_app_src_push_buffer (GST_APP_SRC (s->src),
      gst_buffer_new_memdup (data, len));
  if (ret != GST_FLOW_OK) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_BROKEN_PIPE,
        "the session pipeline does not take audio any more (%s)",
        gst_flow_get_name (ret));
    return FALSE;
  }
  return TRUE;
}

/* The picture side moshivis really encodes; 0 without a vision branch. */
static gint
vision_image_size (MsSession *s)
{
  gint size = 0;

  if (s->vis)
    g_object_get (s->vis, "image-size", &size, NULL);
  return size;
}

gchar *
ms_session_metadata_json (MsSession *s)
{
  JsonBuilder *b = json_builder_new ();
  JsonGenerator *gen = json_generator_new ();
  JsonNode *root;
  gdouble tt, at;
  gint tk, ak;
  guint64 seed;
  gchar *out;

  g_object_get (s->lm, "temperature-text", &tt, "temperature", &at,
      "top-k-text", &tk, "top-k", &ak, "seed", &seed, NULL);
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "text_temperature");
  json_builder_add_double_value (b, tt);
  json_builder_set_member_name (b, "text_topk");
  json_builder_add_int_value (b, tk);
  json_builder_set_member_name (b, "audio_temperature");
  json_builder_add_double_value (b, at);
  json_builder_set_member_name (b, "audio_topk");
  json_builder_add_int_value (b, ak);
  json_builder_set_member_name (b, "seed");
  json_builder_add_int_value (b, (gint64) seed);
  json_builder_set_member_name (b, "lm_model_file");
  json_builder_add_string_value (b, s->lm_model);
  json_builder_set_member_name (b, "mimi_model_file");
  json_builder_add_string_value (b, s->mimi_model);
  json_builder_set_member_name (b, "instance_name");
  json_builder_add_string_value (b, "gst-moshi");
  json_builder_set_member_name (b, "vision");
  json_builder_add_boolean_value (b, s->sh->vision);
  /* Fields Kyutai's client expects in its server info (it shows them, and
   * ignores the whole message when one is missing); moshilm has no
   * padding multiplier or repetition penalty: their neutral values. */
  json_builder_set_member_name (b, "pad_mult");
  json_builder_add_double_value (b, 0.0);
  json_builder_set_member_name (b, "repetition_penalty_context");
  json_builder_add_int_value (b, 0);
  json_builder_set_member_name (b, "repetition_penalty");
  json_builder_add_double_value (b, 1.0);
  /* And those kyutai-labs/moshivis's client requires too (its schema
   * drops the whole message without them): the side of the pictures
   * moshivis really encodes (0: not a vision session, as Kyutai's Rust
   * server when no resolution was asked), no gating influence on the text
   * temperature (moshilm has none), and a name for the session as its
   * servers make one for their logs. */
  json_builder_set_member_name (b, "image_resolution");
  json_builder_add_int_value (b, vision_image_size (s));
  json_builder_set_member_name (b, "text_temperature_gating_influence");
  json_builder_add_double_value (b, 0.0);
  json_builder_set_member_name (b, "base_filename");
  {
    gint64 now = g_get_real_time ();
    gchar *base = g_strdup_printf ("gst-moshi-%" G_GINT64_FORMAT "-%06d",
        now / G_USEC_PER_SEC, (gint) (now % G_USEC_PER_SEC));

    json_builder_add_string_value (b, base);
    g_free (base);
  }
  json_builder_set_member_name (b, "build_info");
  json_builder_begin_object (b);
  {
    static const gchar *keys[] = { "build_timestamp", "build_date",
      "git_branch", "git_timestamp", "git_date", "git_hash", "git_describe",
      "rustc_host_triple", "rustc_version", "cargo_target_triple" };

    for (guint i = 0; i < G_N_ELEMENTS (keys); i++) {
      json_builder_set_member_name (b, keys[i]);
      json_builder_add_string_value (b,
          !strcmp (keys[i], "git_describe") ? "gst-moshi " MOSHI_VERSION : "");
    }
  }
  json_builder_end_object (b);
  json_builder_end_object (b);
  root = json_builder_get_root (b);
  json_generator_set_root (gen, root);
  out = json_generator_to_data (gen, NULL);
  json_node_unref (root);
  g_object_unref (gen);
  g_object_unref (b);
  return out;
}

void
ms_session_free (MsSession *s)
{
  if (!s)
    return;
  s->sh->alive = FALSE;
  if (s->bus_watch)
    g_source_remove (s->bus_watch);
  if (s->pipeline) {
    gst_element_set_state (s->pipeline, GST_STATE_NULL);
    gst_object_unref (s->pipeline);
  }
  if (s->src)
    gst_object_unref (s->src);
  if (s->lm)
    gst_object_unref (s->lm);
  if (s->img_src)
    gst_object_unref (s->img_src);
  if (s->vis)
    gst_object_unref (s->vis);
  shared_unref (s->sh);
  g_free (s->mimi_model);
  g_free (s->lm_model);
  g_free (s->name);
  g_free (s);
}

GstElement *
ms_models_hold (const MsSessionConfig *cfg, GError **error)
{
  /* Vision: the image encoder too (moshivis), from the same checkpoint. */
  GstElement *p = gst_parse_launch (cfg->vision
          ? "appsrc is-live=true "
            "caps=audio/x-raw,format=F32LE,rate=24000,"
            "channels=1,layout=interleaved "
            "! mimienc name=enc codebooks=8 ! moshilm name=lm "
            "! mimidec name=dec ! fakesink "
            "appsrc is-live=true caps=video/x-raw,format=RGB,width=64,"
            "height=64,framerate=0/1 ! moshivis name=vis ! fakesink"
          : "appsrc is-live=true "
            "caps=audio/x-raw,format=F32LE,rate=24000,"
            "channels=1,layout=interleaved "
            "! mimienc name=enc codebooks=8 ! moshilm name=lm "
            "! mimidec name=dec ! fakesink",
      error);

  if (!p)
    return NULL;
  set_models (p, cfg);
  if (cfg->vision) {
    GstElement *vis = gst_bin_get_by_name (GST_BIN (p), "vis");

    g_object_set (vis, "model", cfg->lm_model, NULL);
    gst_object_unref (vis);
  }
  if (gst_element_set_state (p, GST_STATE_PAUSED) == GST_STATE_CHANGE_FAILURE) {
    pipeline_error (p, "loading the models", error);
    gst_element_set_state (p, GST_STATE_NULL);
    gst_object_unref (p);
    return NULL;
  }
  return p;
}
