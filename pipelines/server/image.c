/* moshi-server: decoding a client's picture.  See image.h. */
#include "image.h"

#include <gio/gio.h>
#include <gst/app/gstappsink.h>
#include <gst/app/gstappsrc.h>
#include <gst/video/video.h>
#include <string.h>

/* What the decoder guard saw (written by streaming threads, read once the
 * pipeline is stopped). */
typedef struct {
  GMutex lock;
  gint width, height; /* of a picture refused for its size, else 0 */
  gchar *unsized; /* caps of a picture refused for want of a size */
  GstElement *demuxer; /* the demuxer decodebin plugged, if any (a ref) */
  gint64 demuxer_eos; /* when the input's end reached it, or 0 */
} Guard;

/* A decoder allocates the whole picture as soon as it has read its header,
 * whatever the caps downstream: a 180-byte PNG that claims 30000x30000
 * pixels took 3.6 GB (found by reading the code for fuzz-server-image).
 * So decodebin may plug a decoder only for input whose parsed caps give a
 * picture size within the limits (parsers of PNG, JPEG, JPEG 2000, H.264,
 * ... give it); formats whose size is known only by decoding them are
 * refused. */
static gint
guard_select (GstElement *bin, GstPad *pad, GstCaps *caps,
    GstElementFactory *factory, gpointer data)
{
  Guard *g = data;
  const gchar *klass =
      gst_element_factory_get_metadata (factory, GST_ELEMENT_METADATA_KLASS);
  const GstStructure *s;
  gint w = 0, h = 0;

  (void) bin;
  (void) pad;
  if (!klass || !strstr (klass, "Decoder"))
    return 0; /* GST_AUTOPLUG_SELECT_TRY: typefind, parsers, demuxers */
  s = gst_caps_get_size (caps) > 0 ? gst_caps_get_structure (caps, 0) : NULL;
  if (s && gst_structure_get_int (s, "width", &w)
      && gst_structure_get_int (s, "height", &h) && w >= MS_IMAGE_MIN_SIDE
      && w <= MS_IMAGE_MAX_SIDE && h >= MS_IMAGE_MIN_SIDE
      && h <= MS_IMAGE_MAX_SIDE)
    return 0;
  g_mutex_lock (&g->lock);
  if (w > 0 && h > 0) {
    g->width = w;
    g->height = h;
  } else if (!g->unsized) {
    g->unsized = s ? g_strdup (gst_structure_get_name (s)) : g_strdup ("?");
  }
  g_mutex_unlock (&g->lock);
  return 2; /* GST_AUTOPLUG_SELECT_SKIP */
}

/* decodebin's "no-more-pads" (a streaming thread): when none of its
 * streams linked to videoconvert (a subtitle or audio stream, found by
 * fuzz-server-image: a PNG behind a SAMI header), nothing will ever preroll
 * the sink; say so on the bus instead of letting the wait time out. */
static void
no_more_pads (GstElement *dec, gpointer convert_sink)
{
  if (!gst_pad_is_linked (convert_sink)) {
    GstBus *bus = gst_element_get_bus (dec);

    if (bus) {
      gst_bus_post (bus,
          gst_message_new_application (NULL,
              gst_structure_new_empty ("ms-image-no-picture")));
      gst_object_unref (bus);
    }
  }
}

/* The input's end reaching the demuxer (a streaming thread). */
static GstPadProbeReturn
demuxer_eos (GstPad *pad, GstPadProbeInfo *info, gpointer data)
{
  Guard *g = data;

  (void) pad;
  if (GST_EVENT_TYPE (GST_PAD_PROBE_INFO_EVENT (info)) == GST_EVENT_EOS) {
    g_mutex_lock (&g->lock);
    g->demuxer_eos = g_get_monotonic_time ();
    g_mutex_unlock (&g->lock);
  }
  return GST_PAD_PROBE_OK;
}

/* decodebin's "element-added": keeps its demuxer and watches for the end
 * of the input reaching it (see demuxer_gave_nothing). */
static void
element_added (GstBin *bin, GstElement *element, gpointer data)
{
  Guard *g = data;
  GstElementFactory *f = gst_element_get_factory (element);
  const gchar *klass = f
      ? gst_element_factory_get_metadata (f, GST_ELEMENT_METADATA_KLASS)
      : NULL;
  GstPad *sink;

  (void) bin;
  if (!klass || !strstr (klass, "Demux"))
    return;
  g_mutex_lock (&g->lock);
  if (!g->demuxer) {
    g->demuxer = gst_object_ref (element);
    sink = gst_element_get_static_pad (element, "sink");
    if (sink) {
      gst_pad_add_probe (sink, GST_PAD_PROBE_TYPE_EVENT_DOWNSTREAM, demuxer_eos,
          g, NULL);
      gst_object_unref (sink);
    }
  }
  g_mutex_unlock (&g->lock);
}

/* A demuxer that found no stream in the bytes and says nothing (rmdemux
 * after the 4 bytes ".RMF", found by fuzz-server-image) never exposes a pad
 * and never posts an error: the wait would last its 10 s.  Half a second
 * after the input's end reached it (headers parsed long before), a
 * demuxer still without any output gives no picture. */
static gboolean
demuxer_gave_nothing (Guard *g)
{
  gboolean nothing;

  g_mutex_lock (&g->lock);
  nothing = g->demuxer && g->demuxer_eos
      && g_get_monotonic_time () - g->demuxer_eos > G_USEC_PER_SEC / 2
      && g->demuxer->numsrcpads == 0;
  g_mutex_unlock (&g->lock);
  return nothing;
}

/* GCancellable "cancelled" handler (any thread): wakes the wait on the
 * decoding pipeline's bus. */
static void
post_cancelled (GCancellable *cancellable, gpointer bus)
{
  (void) cancellable;
  gst_bus_post (bus,
      gst_message_new_application (NULL,
          gst_structure_new_empty ("ms-image-cancelled")));
}

static GstSample *
decode (GBytes *bytes, GCancellable *cancellable, GError **error)
{
  GstElement *p, *src, *dec, *sink;
  GstSample *sample = NULL;
  GstBus *bus;
  GstMessage *msg, *err_msg = NULL;
  GstCaps *caps;
  Guard g = { 0 };
  gulong cancel_id = 0;
  gboolean cancelled = FALSE, no_picture = FALSE;
  GstElement *convert;
  GstPad *convert_sink;

  /* No buffer can wrap nothing (found by fuzz-server-image: a kind-8
   * message without payload made GStreamer critical warnings). */
  if (g_bytes_get_size (bytes) == 0) {
    g_set_error (error, GST_STREAM_ERROR, GST_STREAM_ERROR_DECODE,
        "undecodable image: no bytes");
    return NULL;
  }
  p = gst_parse_launch ("appsrc name=src ! decodebin name=dec ! videoconvert "
                        "name=convert ! appsink name=sink sync=false",
      error);
  if (!p)
    return NULL;
  g_mutex_init (&g.lock);
  src = gst_bin_get_by_name (GST_BIN (p), "src");
  dec = gst_bin_get_by_name (GST_BIN (p), "dec");
  sink = gst_bin_get_by_name (GST_BIN (p), "sink");
  g_signal_connect (dec, "autoplug-select", G_CALLBACK (guard_select), &g);
  g_signal_connect (dec, "element-added", G_CALLBACK (element_added), &g);
  convert = gst_bin_get_by_name (GST_BIN (p), "convert");
  convert_sink = gst_element_get_static_pad (convert, "sink");
  gst_object_unref (convert);
  g_signal_connect (dec, "no-more-pads", G_CALLBACK (no_more_pads),
      convert_sink);
  caps =
      gst_caps_new_simple ("video/x-raw", "format", G_TYPE_STRING, "RGB", NULL);
  gst_app_sink_set_caps (GST_APP_SINK (sink), caps);
  gst_caps_unref (caps);
  gst_app_src_push_buffer (GST_APP_SRC (src),
      gst_buffer_new_wrapped_bytes (g_bytes_ref (bytes)));
  gst_app_src_end_of_stream (GST_APP_SRC (src));
  bus = gst_element_get_bus (p);
  /* A cancellation posts an APPLICATION message that ends the wait below
   * (at once when already cancelled). */
  if (cancellable)
    cancel_id = g_cancellable_connect (cancellable, G_CALLBACK (post_cancelled),
        gst_object_ref (bus), gst_object_unref);
  gst_element_set_state (p, GST_STATE_PAUSED);
  /* A picture prerolls the sink (ASYNC_DONE); a refused or undecodable one
   * ends in an ERROR, or an EOS with nothing; 10 s at most, looked at every
   * 100 ms for a demuxer that gave nothing. */
  for (int slice = 0; slice < 100; slice++) {
    msg = gst_bus_timed_pop_filtered (bus, GST_SECOND / 10,
        GST_MESSAGE_ASYNC_DONE | GST_MESSAGE_ERROR | GST_MESSAGE_EOS
            | GST_MESSAGE_APPLICATION);
    if (msg)
      break;
    if (demuxer_gave_nothing (&g)) {
      no_picture = TRUE;
      break;
    }
  }
  if (cancellable)
    g_cancellable_disconnect (cancellable, cancel_id);
  if (msg && GST_MESSAGE_TYPE (msg) == GST_MESSAGE_APPLICATION) {
    if (gst_message_has_name (msg, "ms-image-no-picture"))
      no_picture = TRUE;
    else
      cancelled = TRUE;
  } else if (msg && GST_MESSAGE_TYPE (msg) == GST_MESSAGE_ASYNC_DONE)
    sample = gst_app_sink_try_pull_preroll (GST_APP_SINK (sink), 0);
  if (msg && GST_MESSAGE_TYPE (msg) == GST_MESSAGE_ERROR)
    err_msg = msg;
  else if (msg)
    gst_message_unref (msg);
  /* Stopped first: no streaming thread touches the guard after this. */
  gst_element_set_state (p, GST_STATE_NULL);
  if (cancelled) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_CANCELLED,
        "image decoding cancelled");
  } else if (no_picture && g.width == 0 && !g.unsized) {
    g_set_error (error, GST_STREAM_ERROR, GST_STREAM_ERROR_DECODE,
        "undecodable image: no picture stream in %" G_GSIZE_FORMAT " bytes",
        g_bytes_get_size (bytes));
  } else if (!sample && g.width > 0) {
    g_set_error (error, GST_STREAM_ERROR, GST_STREAM_ERROR_FORMAT,
        "image of %dx%d pixels: sides from %d to %d are accepted", g.width,
        g.height, MS_IMAGE_MIN_SIDE, MS_IMAGE_MAX_SIDE);
  } else if (!sample && g.unsized) {
    g_set_error (error, GST_STREAM_ERROR, GST_STREAM_ERROR_DECODE,
        "undecodable image: %s gives its picture size only once decoded "
        "(JPEG or PNG are fine)",
        g.unsized);
  } else if (!sample) {
    msg = err_msg ? g_steal_pointer (&err_msg)
                  : gst_bus_pop_filtered (bus, GST_MESSAGE_ERROR);
    if (msg) {
      GError *e = NULL;

      gst_message_parse_error (msg, &e, NULL);
      g_set_error (error, GST_STREAM_ERROR, GST_STREAM_ERROR_DECODE,
          "undecodable image: %s", e->message);
      g_error_free (e);
      gst_message_unref (msg);
    } else {
      g_set_error (error, GST_STREAM_ERROR, GST_STREAM_ERROR_DECODE,
          "undecodable image: no picture in %" G_GSIZE_FORMAT " bytes",
          g_bytes_get_size (bytes));
    }
  } else {
    GstVideoInfo info;

    gst_video_info_init (&info);
    if (!gst_video_info_from_caps (&info, gst_sample_get_caps (sample))
        || info.width > MS_IMAGE_MAX_SIDE || info.height > MS_IMAGE_MAX_SIDE
        || info.width < MS_IMAGE_MIN_SIDE || info.height < MS_IMAGE_MIN_SIDE) {
      g_set_error (error, GST_STREAM_ERROR, GST_STREAM_ERROR_FORMAT,
          "image of %dx%d pixels: sides from %d to %d are accepted", info.width,
          info.height, MS_IMAGE_MIN_SIDE, MS_IMAGE_MAX_SIDE);
      g_clear_pointer (&sample, gst_sample_unref);
    }
  }
  if (err_msg)
    gst_message_unref (err_msg);
  gst_object_unref (bus);
  g_free (g.unsized);
  if (g.demuxer)
    gst_object_unref (g.demuxer);
  g_mutex_clear (&g.lock);
  gst_object_unref (src);
  gst_object_unref (dec);
  gst_object_unref (sink);
  gst_object_unref (convert_sink);
  gst_object_unref (p);
  return sample;
}

GstSample *
ms_image_decode (GBytes *bytes, GError **error)
{
  return decode (bytes, NULL, error);
}

static void
decode_thread (GTask *task, gpointer source, gpointer data,
    GCancellable *cancellable)
{
  GError *error = NULL;
  GstSample *sample = decode (data, cancellable, &error);

  (void) source;
  if (sample)
    g_task_return_pointer (task, sample, (GDestroyNotify) gst_sample_unref);
  else
    g_task_return_error (task, error);
}

void
ms_image_decode_async (GBytes *bytes, GCancellable *cancellable,
    GAsyncReadyCallback callback, gpointer user_data)
{
  GTask *task = g_task_new (NULL, cancellable, callback, user_data);

  g_task_set_source_tag (task, ms_image_decode_async);
  g_task_set_task_data (task, g_bytes_ref (bytes),
      (GDestroyNotify) g_bytes_unref);
  g_task_run_in_thread (task, decode_thread);
  g_object_unref (task);
}

GstSample *
ms_image_decode_finish (GAsyncResult *result, GError **error)
{
  g_return_val_if_fail (g_task_is_valid (result, NULL), NULL);
  return g_task_propagate_pointer (G_TASK (result), error);
}
