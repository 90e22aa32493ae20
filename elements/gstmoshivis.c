/* gst-moshi: moshivis (see gstmoshivis.h).
 *
 * Threading: the streaming thread only decides *whether* a frame is worth
 * encoding (first frame, interval elapsed, force-key-unit, scene change)
 * and hands it to the encoder thread, newest frame wins.  The encoder
 * thread runs the tower (hundreds of ms to seconds per image on a CPU) and
 * pushes the embedding downstream, so the video branch next to it never
 * waits.  EOS goes through the encoder thread too, after the last request.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "gstmoshivis.h"

#include <string.h>

#include "gstmodelcache.h"
#include "gstmodelresolve.h"
#include "gstmoshienums.h"
#include "image-resize.h"

GST_DEBUG_CATEGORY_STATIC (gst_moshi_vis_debug);
#define GST_CAT_DEFAULT gst_moshi_vis_debug

#define EMBEDDING_MEDIA_TYPE "application/x-moshivis-embedding"

enum {
  PROP_0,
  PROP_MODEL,
  PROP_THREADS,
  PROP_INTERVAL,
  PROP_SCENE_THRESHOLD,
  PROP_CENTER_CROP,
  PROP_QUANTIZE,
  PROP_IMAGE_SIZE,
};

#define DEFAULT_THREADS 1
#define DEFAULT_INTERVAL 0
#define DEFAULT_SCENE_THRESHOLD 0.0
#define DEFAULT_CENTER_CROP FALSE

/* Below one 14-pixel patch there is nothing to look at. */
#define MIN_SIDE 14

static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE ("sink",
    GST_PAD_SINK, GST_PAD_ALWAYS,
    GST_STATIC_CAPS ("video/x-raw, format = (string) RGB, "
                     "width = (int) [ 14, MAX ], height = (int) [ 14, MAX ], "
                     "framerate = (fraction) [ 0, MAX ]"));

static GstStaticPadTemplate src_template =
    GST_STATIC_PAD_TEMPLATE ("src", GST_PAD_SRC, GST_PAD_ALWAYS,
        GST_STATIC_CAPS (EMBEDDING_MEDIA_TYPE ", tokens = (int) [ 1, MAX ], "
                                              "dim = (int) [ 1, MAX ]"));

#define gst_moshi_vis_parent_class parent_class
G_DEFINE_TYPE (GstMoshiVis, gst_moshi_vis, GST_TYPE_ELEMENT);

/* ------------------------------------------------------------ encoder --- */

/* The frame as the tower's S x S RGB input: the centred square (if asked)
 * or the whole frame, resized when it is not already S x S. */
static gboolean
frame_to_input (GstMoshiVis *self, GstBuffer *buf, const GstVideoInfo *info,
    gboolean crop, guint8 *dst, GError **error)
{
  GstVideoFrame frame;
  if (!gst_video_frame_map (&frame, (GstVideoInfo *) info, buf, GST_MAP_READ)) {
    g_set_error (error, GST_STREAM_ERROR, GST_STREAM_ERROR_DECODE,
        "cannot map a %dx%d video frame", info->width, info->height);
    return FALSE;
  }
  gboolean ok = moshi_image_fit_square (GST_VIDEO_FRAME_PLANE_DATA (&frame, 0),
      GST_VIDEO_INFO_WIDTH (info), GST_VIDEO_INFO_HEIGHT (info),
      GST_VIDEO_FRAME_PLANE_STRIDE (&frame, 0), crop, dst, self->size, error);
  gst_video_frame_unmap (&frame);
  return ok;
}

static void
post_encoded (GstMoshiVis *self, GstClockTime pts, gdouble seconds,
    guint64 replaced)
{
  GstStructure *s = gst_structure_new ("moshivis-image", "pts", G_TYPE_UINT64,
      pts, "tokens", G_TYPE_INT, self->tokens, "encode-seconds", G_TYPE_DOUBLE,
      seconds, "frames-replaced", G_TYPE_UINT64, replaced, NULL);
  gst_element_post_message (GST_ELEMENT (self),
      gst_message_new_element (GST_OBJECT (self), s));
}

/* Encodes one frame and pushes the embedding.  Called without the lock. */
static GstFlowReturn
encode_and_push (GstMoshiVis *self, GstBuffer *in, const GstVideoInfo *info,
    guint64 replaced)
{
  GError *err = NULL;
  gboolean crop;
  gint threads;
  GST_OBJECT_LOCK (self);
  crop = self->center_crop;
  threads = self->threads;
  GST_OBJECT_UNLOCK (self);

  const gint S = self->size;
  guint8 *rgb = g_malloc ((gsize) S * S * 3);
  if (!frame_to_input (self, in, info, crop, rgb, &err)) {
    g_free (rgb);
    GST_ELEMENT_ERROR (self, STREAM, DECODE,
        ("Could not prepare a %dx%d video frame: %s", info->width, info->height,
            err->message),
        (NULL));
    g_error_free (err);
    return GST_FLOW_ERROR;
  }
  const gsize bytes = (gsize) self->tokens * self->dim * sizeof (float);
  GstBuffer *out = gst_buffer_new_allocate (NULL, bytes, NULL);
  GstMapInfo map;
  gst_buffer_map (out, &map, GST_MAP_WRITE);
  moshivis_image_encoder_set_threads (self->enc, threads);
  gint64 t0 = g_get_monotonic_time ();
  gboolean ok = moshivis_image_encoder_encode (self->enc, rgb, S, S, 3 * S,
      (float *) map.data, &err);
  gdouble seconds = (g_get_monotonic_time () - t0) / 1e6;
  gst_buffer_unmap (out, &map);
  g_free (rgb);
  if (!ok) {
    gst_buffer_unref (out);
    GST_ELEMENT_ERROR (self, STREAM, DECODE,
        ("Could not encode the image: %s", err->message), (NULL));
    g_error_free (err);
    return GST_FLOW_ERROR;
  }
  GST_BUFFER_PTS (out) = GST_BUFFER_PTS (in);
  GST_BUFFER_DURATION (out) = GST_CLOCK_TIME_NONE;
  GST_DEBUG_OBJECT (self, "encoded the frame at %" GST_TIME_FORMAT " in %.3f s",
      GST_TIME_ARGS (GST_BUFFER_PTS (in)), seconds);
  post_encoded (self, GST_BUFFER_PTS (in), seconds, replaced);
  return gst_pad_push (self->srcpad, out);
}

static gpointer
worker_main (gpointer data)
{
  GstMoshiVis *self = data;
  g_mutex_lock (&self->lock);
  while (!self->quit) {
    if (self->pending && !self->flushing) {
      GstBuffer *buf = self->pending;
      GstVideoInfo info = self->pending_info;
      guint64 replaced = self->n_replaced;
      self->pending = NULL;
      self->busy = TRUE;
      g_cond_broadcast (&self->cond);
      g_mutex_unlock (&self->lock);
      GstFlowReturn ret = encode_and_push (self, buf, &info, replaced);
      gst_buffer_unref (buf);
      g_mutex_lock (&self->lock);
      self->busy = FALSE;
      self->n_encoded++;
      if (ret != GST_FLOW_OK)
        GST_DEBUG_OBJECT (self, "push returned %s", gst_flow_get_name (ret));
      if (!self->flushing)
        self->flow = ret;
      g_cond_broadcast (&self->cond);
    } else if (self->eos_pending && !self->flushing) {
      self->eos_pending = FALSE;
      self->busy = TRUE;
      g_mutex_unlock (&self->lock);
      gst_pad_push_event (self->srcpad, gst_event_new_eos ());
      g_mutex_lock (&self->lock);
      self->busy = FALSE;
      g_cond_broadcast (&self->cond);
    } else {
      g_cond_wait (&self->cond, &self->lock);
    }
  }
  g_mutex_unlock (&self->lock);
  return NULL;
}

/* ----------------------------------------------------------- triggers --- */

static void
make_thumb (const GstVideoFrame *frame, guint8 *thumb)
{
  const gint w = GST_VIDEO_FRAME_WIDTH (frame),
             h = GST_VIDEO_FRAME_HEIGHT (frame);
  const guint8 *pix = GST_VIDEO_FRAME_PLANE_DATA (frame, 0);
  const gint stride = GST_VIDEO_FRAME_PLANE_STRIDE (frame, 0);
  const gint T = GST_MOSHI_VIS_THUMB;
  for (gint ty = 0; ty < T; ty++)
    for (gint tx = 0; tx < T; tx++) {
      /* Mean of a 2x2 sample at the cell centre: cheap, stable. */
      guint sum = 0;
      for (gint dy = 0; dy < 2; dy++)
        for (gint dx = 0; dx < 2; dx++) {
          gint y = MIN ((2 * ty + 1) * h / (2 * T) + dy, h - 1);
          gint x = MIN ((2 * tx + 1) * w / (2 * T) + dx, w - 1);
          const guint8 *p = pix + (gsize) y * stride + (gsize) x * 3;
          sum += (p[0] * 77 + p[1] * 150 + p[2] * 29) >> 8;
        }
      thumb[ty * T + tx] = (guint8) (sum / 4);
    }
}

/* Mean absolute difference of the thumbnails, in [0, 1]. */
static gdouble
thumb_distance (const guint8 *a, const guint8 *b)
{
  guint sum = 0;
  for (gint i = 0; i < GST_MOSHI_VIS_THUMB * GST_MOSHI_VIS_THUMB; i++)
    sum += ABS ((gint) a[i] - (gint) b[i]);
  return sum / (255.0 * GST_MOSHI_VIS_THUMB * GST_MOSHI_VIS_THUMB);
}

static const gchar *
should_encode (GstMoshiVis *self, GstBuffer *buf)
{
  GstClockTime interval;
  gdouble threshold;
  GST_OBJECT_LOCK (self);
  interval = self->interval;
  threshold = self->scene_threshold;
  GST_OBJECT_UNLOCK (self);
  const GstClockTime pts = GST_BUFFER_PTS (buf);
  const gchar *why = NULL;
  guint8 thumb[GST_MOSHI_VIS_THUMB * GST_MOSHI_VIS_THUMB];
  gboolean have_thumb = FALSE;

  if (threshold > 0.0 || !self->encoded_once) {
    GstVideoFrame frame;
    if (gst_video_frame_map (&frame, &self->info, buf, GST_MAP_READ)) {
      make_thumb (&frame, thumb);
      gst_video_frame_unmap (&frame);
      have_thumb = TRUE;
    }
  }
  if (!self->encoded_once)
    why = "first frame";
  else if (g_atomic_int_compare_and_exchange (&self->force, 1, 0))
    why = "force-key-unit";
  else if (interval > 0 && GST_CLOCK_TIME_IS_VALID (pts)
      && GST_CLOCK_TIME_IS_VALID (self->last_request_pts)
      && pts >= self->last_request_pts + interval)
    why = "interval";
  else if (threshold > 0.0 && have_thumb
      && thumb_distance (thumb, self->thumb) > threshold)
    why = "scene change";
  if (why) {
    self->encoded_once = TRUE;
    self->last_request_pts = pts;
    if (have_thumb)
      memcpy (self->thumb, thumb, sizeof thumb);
  }
  return why;
}

/* ---------------------------------------------------------- streaming --- */

/* Threading note for the chain: the worker broadcasts `cond` each time it
 * takes a request, which is what a non-live chain waits for. */

static GstFlowReturn
gst_moshi_vis_chain (GstPad *pad, GstObject *parent, GstBuffer *buf)
{
  GstMoshiVis *self = GST_MOSHI_VIS (parent);
  if (!self->have_info) {
    gst_buffer_unref (buf);
    GST_ELEMENT_ERROR (self, CORE, NEGOTIATION, (NULL),
        ("a video frame arrived before its caps"));
    return GST_FLOW_NOT_NEGOTIATED;
  }
  if (gst_buffer_get_size (buf) < self->info.size) {
    GST_ELEMENT_ERROR (self, STREAM, FORMAT,
        ("A video frame of %" G_GSIZE_FORMAT " bytes is shorter than its "
         "caps say (%" G_GSIZE_FORMAT ").",
            gst_buffer_get_size (buf), self->info.size),
        (NULL));
    gst_buffer_unref (buf);
    return GST_FLOW_ERROR;
  }
  const gchar *why = should_encode (self, buf);
  GstFlowReturn ret;
  g_mutex_lock (&self->lock);
  if (why) {
    GST_LOG_OBJECT (self, "frame at %" GST_TIME_FORMAT ": %s",
        GST_TIME_ARGS (GST_BUFFER_PTS (buf)), why);
    /* Still busy with an older request: live, only the newest view
     * matters and the camera must not wait; from a file, every requested
     * view is encoded (the result must not depend on the CPU's speed). */
    while (!self->live && self->pending && !self->flushing)
      g_cond_wait (&self->cond, &self->lock);
    if (self->pending) {
      gst_buffer_unref (self->pending);
      self->n_replaced++;
    }
    self->pending = buf;
    self->pending_info = self->info;
    g_cond_broadcast (&self->cond);
    buf = NULL;
  }
  ret = self->flow;
  if (buf && !self->live && GST_BUFFER_PTS_IS_VALID (buf)) {
    /* From files, tell downstream that nothing new was seen up to the end
     * of this frame (moshilm then knows the picture of that time), after
     * the views requested before it. */
    GstClockTime end = GST_BUFFER_PTS (buf)
        + (GST_BUFFER_DURATION_IS_VALID (buf) ? GST_BUFFER_DURATION (buf) : 1);
    while ((self->busy || self->pending) && !self->flushing)
      g_cond_wait (&self->cond, &self->lock);
    if (!self->flushing) {
      g_mutex_unlock (&self->lock);
      gst_pad_push_event (self->srcpad,
          gst_event_new_gap (GST_BUFFER_PTS (buf), end - GST_BUFFER_PTS (buf)));
      g_mutex_lock (&self->lock);
    }
  }
  g_mutex_unlock (&self->lock);
  if (buf)
    gst_buffer_unref (buf);
  /* Downstream not linked (e.g. no moshilm yet) must not stop the camera
   * branch next to us: report it only as OK. */
  return ret == GST_FLOW_NOT_LINKED ? GST_FLOW_OK : ret;
}

static gboolean
set_caps (GstMoshiVis *self, GstCaps *caps)
{
  GstVideoInfo info;
  if (!gst_video_info_from_caps (&info, caps)
      || GST_VIDEO_INFO_FORMAT (&info) != GST_VIDEO_FORMAT_RGB
      || info.width < MIN_SIDE || info.height < MIN_SIDE) {
    GST_ELEMENT_ERROR (self, CORE, NEGOTIATION, (NULL),
        ("moshivis needs RGB video of at least %dx%d pixels, got "
         "%" GST_PTR_FORMAT,
            MIN_SIDE, MIN_SIDE, caps));
    return FALSE;
  }
  self->info = info;
  self->have_info = TRUE;
  GstQuery *q = gst_query_new_latency ();
  self->live = gst_pad_peer_query (self->sinkpad, q)
      && (gst_query_parse_latency (q, &self->live, NULL, NULL), self->live);
  gst_query_unref (q);
  GstCaps *out = gst_caps_new_simple (EMBEDDING_MEDIA_TYPE, "tokens",
      G_TYPE_INT, self->tokens, "dim", G_TYPE_INT, self->dim, NULL);
  gboolean ok = gst_pad_set_caps (self->srcpad, out);
  gst_caps_unref (out);
  return ok;
}

/* Waits until the encoder thread has nothing left to do. */
static void
wait_idle (GstMoshiVis *self)
{
  g_mutex_lock (&self->lock);
  while (self->worker
      && (self->busy || self->eos_pending
          || (self->pending && !self->flushing)))
    g_cond_wait (&self->cond, &self->lock);
  g_mutex_unlock (&self->lock);
}

static gboolean
gst_moshi_vis_sink_event (GstPad *pad, GstObject *parent, GstEvent *event)
{
  GstMoshiVis *self = GST_MOSHI_VIS (parent);
  switch (GST_EVENT_TYPE (event)) {
    case GST_EVENT_CAPS: {
      GstCaps *caps;
      gst_event_parse_caps (event, &caps);
      gboolean ok = set_caps (self, caps);
      gst_event_unref (event);
      return ok;
    }
    case GST_EVENT_EOS:
      g_mutex_lock (&self->lock);
      self->eos_pending = TRUE;
      g_cond_broadcast (&self->cond);
      g_mutex_unlock (&self->lock);
      gst_event_unref (event);
      return TRUE;
    case GST_EVENT_FLUSH_START:
      g_mutex_lock (&self->lock);
      self->flushing = TRUE;
      gst_clear_buffer (&self->pending);
      self->eos_pending = FALSE;
      g_cond_broadcast (&self->cond);
      g_mutex_unlock (&self->lock);
      return gst_pad_push_event (self->srcpad, event);
    case GST_EVENT_FLUSH_STOP:
      wait_idle (self);
      g_mutex_lock (&self->lock);
      self->flushing = FALSE;
      self->flow = GST_FLOW_OK;
      g_mutex_unlock (&self->lock);
      /* A new stream position: look again from its first frame. */
      self->encoded_once = FALSE;
      self->last_request_pts = GST_CLOCK_TIME_NONE;
      return gst_pad_push_event (self->srcpad, event);
    case GST_EVENT_CUSTOM_DOWNSTREAM:
      if (gst_video_event_is_force_key_unit (event)) {
        g_atomic_int_set (&self->force, 1);
        gst_event_unref (event);
        return TRUE;
      }
      break;
    default:
      break;
  }
  return gst_pad_event_default (pad, parent, event);
}

static gboolean
gst_moshi_vis_src_event (GstPad *pad, GstObject *parent, GstEvent *event)
{
  GstMoshiVis *self = GST_MOSHI_VIS (parent);
  if (gst_video_event_is_force_key_unit (event)) {
    /* Asked by downstream (e.g. an app wanting a fresh look). */
    g_atomic_int_set (&self->force, 1);
    gst_event_unref (event);
    return TRUE;
  }
  return gst_pad_event_default (pad, parent, event);
}

/* Any RGB size is accepted; without center-crop the model's own square
 * comes first so that an upstream videoscale picks it. */
static GstCaps *
sink_caps (GstMoshiVis *self, GstCaps *filter)
{
  GstCaps *any = gst_pad_get_pad_template_caps (self->sinkpad);
  GstCaps *caps;
  gboolean crop;
  GST_OBJECT_LOCK (self);
  crop = self->center_crop;
  GST_OBJECT_UNLOCK (self);
  if (self->size > 0 && !crop) {
    caps = gst_caps_new_simple ("video/x-raw", "format", G_TYPE_STRING, "RGB",
        "width", G_TYPE_INT, self->size, "height", G_TYPE_INT, self->size,
        "framerate", GST_TYPE_FRACTION_RANGE, 0, 1, G_MAXINT, 1, NULL);
    caps = gst_caps_merge (caps, any);
  } else {
    caps = any;
  }
  if (filter) {
    GstCaps *tmp =
        gst_caps_intersect_full (filter, caps, GST_CAPS_INTERSECT_FIRST);
    gst_caps_unref (caps);
    caps = tmp;
  }
  return caps;
}

static gboolean
gst_moshi_vis_sink_query (GstPad *pad, GstObject *parent, GstQuery *query)
{
  GstMoshiVis *self = GST_MOSHI_VIS (parent);
  if (GST_QUERY_TYPE (query) == GST_QUERY_CAPS) {
    GstCaps *filter, *caps;
    gst_query_parse_caps (query, &filter);
    caps = sink_caps (self, filter);
    gst_query_set_caps_result (query, caps);
    gst_caps_unref (caps);
    return TRUE;
  }
  return gst_pad_query_default (pad, parent, query);
}

/* -------------------------------------------------------------- state --- */

static gboolean
start (GstMoshiVis *self)
{
  GError *err = NULL;
  gchar *model, *config = NULL;
  MoshiWeightType quantize;
  GST_OBJECT_LOCK (self);
  model = g_strdup (self->model);
  quantize = self->quantize;
  GST_OBJECT_UNLOCK (self);
  gboolean ok =
      gst_moshi_resolve_vision (model, &self->model_path, &config, &err);
  if (ok) {
    self->enc = gst_moshi_model_cache_acquire_vision (self->model_path, config,
        quantize, &err);
    ok = self->enc != NULL;
  }
  if (!ok) {
    GST_MOSHI_ELEMENT_MODEL_ERROR (self, err, model);
    g_clear_error (&err);
    g_free (model);
    g_free (config);
    return FALSE;
  }
  self->size = moshivis_image_encoder_image_size (self->enc);
  self->tokens =
      moshivis_image_encoder_tokens (self->enc, self->size, self->size);
  self->dim = moshivis_image_encoder_dim (self->enc);
  GST_INFO_OBJECT (self, "image encoder %s: %dx%d input, %d tokens of %d",
      self->model_path, self->size, self->size, self->tokens, self->dim);
  g_free (model);
  g_free (config);

  self->have_info = FALSE;
  self->encoded_once = FALSE;
  self->last_request_pts = GST_CLOCK_TIME_NONE;
  g_atomic_int_set (&self->force, 0);
  self->flow = GST_FLOW_OK;
  self->quit = self->flushing = self->eos_pending = self->busy = FALSE;
  self->n_encoded = self->n_replaced = 0;
  self->worker = g_thread_new ("moshivis-encode", worker_main, self);
  return TRUE;
}

static void
stop (GstMoshiVis *self)
{
  if (self->worker) {
    g_mutex_lock (&self->lock);
    self->quit = TRUE;
    g_cond_broadcast (&self->cond);
    g_mutex_unlock (&self->lock);
    g_thread_join (self->worker);
    self->worker = NULL;
  }
  gst_clear_buffer (&self->pending);
  if (self->enc)
    gst_moshi_model_cache_release_vision (self->enc);
  self->enc = NULL;
  g_clear_pointer (&self->model_path, g_free);
  self->size = 0;
}

static GstStateChangeReturn
gst_moshi_vis_change_state (GstElement *element, GstStateChange transition)
{
  GstMoshiVis *self = GST_MOSHI_VIS (element);
  GstStateChangeReturn ret;
  if (transition == GST_STATE_CHANGE_READY_TO_PAUSED && !start (self))
    return GST_STATE_CHANGE_FAILURE;
  if (transition == GST_STATE_CHANGE_PAUSED_TO_READY) {
    /* Unblock a worker stuck in a downstream push before joining it. */
    g_mutex_lock (&self->lock);
    self->flushing = TRUE;
    g_cond_broadcast (&self->cond);
    g_mutex_unlock (&self->lock);
  }
  ret = GST_ELEMENT_CLASS (parent_class)->change_state (element, transition);
  if (transition == GST_STATE_CHANGE_PAUSED_TO_READY
      || (transition == GST_STATE_CHANGE_READY_TO_PAUSED
          && ret == GST_STATE_CHANGE_FAILURE))
    stop (self);
  return ret;
}

/* --------------------------------------------------------- properties --- */

static void
gst_moshi_vis_set_property (GObject *object, guint prop_id, const GValue *value,
    GParamSpec *pspec)
{
  GstMoshiVis *self = GST_MOSHI_VIS (object);
  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_MODEL:
      g_free (self->model);
      self->model = g_value_dup_string (value);
      break;
    case PROP_THREADS:
      self->threads = g_value_get_int (value);
      break;
    case PROP_INTERVAL:
      self->interval = g_value_get_uint64 (value);
      break;
    case PROP_SCENE_THRESHOLD:
      self->scene_threshold = g_value_get_double (value);
      break;
    case PROP_CENTER_CROP:
      self->center_crop = g_value_get_boolean (value);
      break;
    case PROP_QUANTIZE:
      self->quantize = g_value_get_enum (value);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

static void
gst_moshi_vis_get_property (GObject *object, guint prop_id, GValue *value,
    GParamSpec *pspec)
{
  GstMoshiVis *self = GST_MOSHI_VIS (object);
  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_MODEL:
      g_value_set_string (value, self->model);
      break;
    case PROP_THREADS:
      g_value_set_int (value, self->threads);
      break;
    case PROP_INTERVAL:
      g_value_set_uint64 (value, self->interval);
      break;
    case PROP_SCENE_THRESHOLD:
      g_value_set_double (value, self->scene_threshold);
      break;
    case PROP_CENTER_CROP:
      g_value_set_boolean (value, self->center_crop);
      break;
    case PROP_QUANTIZE:
      g_value_set_enum (value, self->quantize);
      break;
    case PROP_IMAGE_SIZE:
      g_value_set_int (value, self->size);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

static void
gst_moshi_vis_finalize (GObject *object)
{
  GstMoshiVis *self = GST_MOSHI_VIS (object);
  stop (self);
  g_free (self->model);
  g_mutex_clear (&self->lock);
  g_cond_clear (&self->cond);
  G_OBJECT_CLASS (parent_class)->finalize (object);
}

static void
gst_moshi_vis_class_init (GstMoshiVisClass *klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS (klass);

  gobject_class->set_property = gst_moshi_vis_set_property;
  gobject_class->get_property = gst_moshi_vis_get_property;
  gobject_class->finalize = gst_moshi_vis_finalize;
  element_class->change_state = gst_moshi_vis_change_state;

  g_object_class_install_property (gobject_class, PROP_MODEL,
      g_param_spec_string ("model", "Model",
          "MoshiVis checkpoint: a .safetensors file, a folder, or a Hugging "
          "Face repo id found offline in the local cache (default "
          "kyutai/moshika-vis-pytorch-bf16)",
          NULL,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS
              | GST_PARAM_MUTABLE_READY));
  g_object_class_install_property (gobject_class, PROP_THREADS,
      g_param_spec_int ("threads", "Threads",
          "Threads for the image encoder's matrix products", 1, 256,
          DEFAULT_THREADS,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS
              | GST_PARAM_MUTABLE_PLAYING));
  g_object_class_install_property (gobject_class, PROP_INTERVAL,
      g_param_spec_uint64 ("interval", "Interval",
          "Look again every this many nanoseconds of video (0: only the "
          "first frame, force-key-unit events and scene changes)",
          0, G_MAXUINT64, DEFAULT_INTERVAL,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS
              | GST_PARAM_MUTABLE_PLAYING));
  g_object_class_install_property (gobject_class, PROP_SCENE_THRESHOLD,
      g_param_spec_double ("scene-threshold", "Scene threshold",
          "Look again when the picture changes by more than this (mean "
          "absolute difference of a 16x16 grey thumbnail, 0..1; 0: never)",
          0.0, 1.0, DEFAULT_SCENE_THRESHOLD,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS
              | GST_PARAM_MUTABLE_PLAYING));
  g_object_class_install_property (gobject_class, PROP_CENTER_CROP,
      g_param_spec_boolean ("center-crop", "Centre crop",
          "Keep the aspect ratio: use the largest centred square of the "
          "frame (any size accepted) instead of stretching it",
          DEFAULT_CENTER_CROP,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS
              | GST_PARAM_MUTABLE_READY));
  g_object_class_install_property (gobject_class, PROP_QUANTIZE,
      g_param_spec_enum ("quantize", "Quantize",
          "How the image tower's layer matrices are stored: none (float32, "
          "exact), bf16 (half the memory; on CPUs with AMX also bf16 "
          "products, ~2.6x faster, cosine > 0.9999 to float32) or q8 (a "
          "quarter, ~1.8x faster with VNNI, cosine > 0.999; see "
          "docs/models.md); q4 is not offered for the tower",
          GST_TYPE_MOSHI_QUANTIZE, MOSHI_WEIGHTS_F32,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS
              | GST_PARAM_MUTABLE_READY));
  g_object_class_install_property (gobject_class, PROP_IMAGE_SIZE,
      g_param_spec_int ("image-size", "Image size",
          "Side of the square picture the image encoder takes, in pixels "
          "(0 until the model is loaded)",
          0, G_MAXINT, 0, G_PARAM_READABLE | G_PARAM_STATIC_STRINGS));

  gst_element_class_add_static_pad_template (element_class, &sink_template);
  gst_element_class_add_static_pad_template (element_class, &src_template);
  gst_element_class_set_static_metadata (element_class,
      "MoshiVis image encoder", "Filter/Video/Analyzer",
      "Turns video frames into MoshiVis image embeddings (SigLIP + adapter) "
      "for moshilm's vision_sink, only when asked: first frame, interval, "
      "force-key-unit or scene change",
      "gst-moshi <https://github.com/gst-moshi/gst-moshi>");
  GST_DEBUG_CATEGORY_INIT (gst_moshi_vis_debug, "moshivis", 0,
      "MoshiVis image encoder");
}

static void
gst_moshi_vis_init (GstMoshiVis *self)
{
  self->sinkpad = gst_pad_new_from_static_template (&sink_template, "sink");
  gst_pad_set_chain_function (self->sinkpad, gst_moshi_vis_chain);
  gst_pad_set_event_function (self->sinkpad, gst_moshi_vis_sink_event);
  gst_pad_set_query_function (self->sinkpad, gst_moshi_vis_sink_query);
  gst_element_add_pad (GST_ELEMENT (self), self->sinkpad);
  self->srcpad = gst_pad_new_from_static_template (&src_template, "src");
  gst_pad_set_event_function (self->srcpad, gst_moshi_vis_src_event);
  gst_pad_use_fixed_caps (self->srcpad);
  gst_element_add_pad (GST_ELEMENT (self), self->srcpad);

  self->threads = DEFAULT_THREADS;
  self->interval = DEFAULT_INTERVAL;
  self->scene_threshold = DEFAULT_SCENE_THRESHOLD;
  self->center_crop = DEFAULT_CENTER_CROP;
  self->quantize = MOSHI_WEIGHTS_F32;
  self->last_request_pts = GST_CLOCK_TIME_NONE;
  g_mutex_init (&self->lock);
  g_cond_init (&self->cond);
}
