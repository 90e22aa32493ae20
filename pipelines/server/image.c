/* moshi-server: decoding a client's picture.  See image.h. */
#include "image.h"

#ifndef MS_PICTURE_DECODER_INSTALLED
#define MS_PICTURE_DECODER_INSTALLED ""
#endif

#include <gio/gio.h>
#include <gst/app/gstappsink.h>
#include <gst/app/gstappsrc.h>
#include <gst/video/video.h>
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

/* How long decode () waits for a picture. */
#define DECODE_LIMIT_S 10

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

static GstSample *
decode (GBytes *bytes, GError **error)
{
  GstElement *p, *src, *dec, *sink;
  GstSample *sample = NULL;
  GstBus *bus;
  GstMessage *msg, *err_msg = NULL;
  GstCaps *caps;
  Guard g = { 0 };
  gboolean no_picture = FALSE;
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
  gst_element_set_state (p, GST_STATE_PAUSED);
  /* A picture prerolls the sink (ASYNC_DONE); a refused or undecodable one
   * ends in an ERROR, or an EOS with nothing; 10 s at most, looked at every
   * 100 ms for a demuxer that gave nothing. */
  for (int slice = 0; slice < DECODE_LIMIT_S * 10; slice++) {
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
  if (msg && GST_MESSAGE_TYPE (msg) == GST_MESSAGE_APPLICATION)
    no_picture = TRUE;
  else if (msg && GST_MESSAGE_TYPE (msg) == GST_MESSAGE_ASYNC_DONE)
    sample = gst_app_sink_try_pull_preroll (GST_APP_SINK (sink), 0);
  if (msg && GST_MESSAGE_TYPE (msg) == GST_MESSAGE_ERROR)
    err_msg = msg;
  else if (msg)
    gst_message_unref (msg);
  /* Stopped first: no streaming thread touches the guard after this. */
  gst_element_set_state (p, GST_STATE_NULL);
  if (no_picture && g.width == 0 && !g.unsized) {
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
  return decode (bytes, error);
}

/* The answer of the picture decoder process (moshi-picture-decoder,
 * ms_image_serve) on its standard output, little-endian:
 *   "MSPIC-OK" | u32 width | u32 height | RGB rows (GstVideoInfo's default
 *     layout for RGB at that size: rows padded to 4 bytes)
 *   "MSPIC-ER" | u32 GstStreamError code | u32 length | message (UTF-8) */
#define ANSWER_OK "MSPIC-OK"
#define ANSWER_ERROR "MSPIC-ER"
#define ANSWER_MAGIC 8
#define ANSWER_MAX_MESSAGE 4096
/* Far above any picture file a client sends (the websocket's message limit
 * is smaller); the decoder reads no further. */
#define MAX_INPUT_BYTES (256u << 20)
/* The decoder gives up after 10 s (decode); this covers its start-up and
 * the copy of the largest picture (200 MB) too. */
#define DECODER_TIMEOUT_S 30

/* Byte by byte: GST_WRITE_UINT32_LE / GST_READ_UINT32_LE are plain
 * (misaligned) word accesses on x86, which UBSan rejects (see
 * tests/picture-util.c). */
static void
put_u32 (guint8 *p, guint32 v)
{
  for (int i = 0; i < 4; i++)
    p[i] = (guint8) (v >> (8 * i));
}

static guint32
get_u32 (const guint8 *p)
{
  return p[0] | (guint32) p[1] << 8 | (guint32) p[2] << 16
      | (guint32) p[3] << 24;
}

static gboolean
write_all (int fd, const void *data, gsize n)
{
  const guint8 *p = data;

  while (n > 0) {
    gssize w = write (fd, p, n);

    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return FALSE;
    p += w;
    n -= (gsize) w;
  }
  return TRUE;
}

/* The sample's picture in the answer's layout (default strides), whatever
 * strides the sink's buffer has. */
static GBytes *
packed_rgb (GstSample *sample, guint32 *width, guint32 *height)
{
  GstVideoInfo info, packed;
  GstVideoFrame frame;
  guint8 *out;

  if (!gst_video_info_from_caps (&info, gst_sample_get_caps (sample))
      || !gst_video_frame_map (&frame, &info, gst_sample_get_buffer (sample),
          GST_MAP_READ))
    return NULL;
  gst_video_info_set_format (&packed, GST_VIDEO_FORMAT_RGB, info.width,
      info.height);
  out = g_malloc (packed.size);
  for (int y = 0; y < info.height; y++)
    memcpy (out + (gsize) y * packed.stride[0],
        (const guint8 *) GST_VIDEO_FRAME_PLANE_DATA (&frame, 0)
            + (gsize) y * GST_VIDEO_FRAME_PLANE_STRIDE (&frame, 0),
        (gsize) info.width * 3);
  gst_video_frame_unmap (&frame);
  *width = (guint32) info.width;
  *height = (guint32) info.height;
  return g_bytes_new_take (out, packed.size);
}

/* A decode in a thread of the decoder process, watched by its main
 * thread. */
typedef struct {
  GMutex lock;
  GCond cond;
  gboolean done;
  GBytes *bytes;
  GstSample *sample;
  GError *error;
} Watched;

static gpointer
watched_thread (gpointer data)
{
  Watched *w = data;
  GError *error = NULL;
  GstSample *sample = decode (w->bytes, &error);

  g_mutex_lock (&w->lock);
  w->sample = sample;
  w->error = error;
  w->done = TRUE;
  g_cond_signal (&w->cond);
  g_mutex_unlock (&w->lock);
  return NULL;
}

/* decode () gives up waiting for a picture after 10 s, but then has to
 * stop its pipeline, which waits for the streaming threads: a decoder
 * stuck in a loop never lets it (GStreamer 1.22's jpegdec on a JPEG with
 * a second start-of-image marker inside its header, found by
 * fuzz-server-image: a core at 100 % forever).  The decoder process
 * answers after 12 s whatever the thread does, and ends with it. */
static GstSample *
watched_decode (GBytes *bytes, GError **error)
{
  Watched *w = g_new0 (Watched, 1);
  const gint64 deadline =
      g_get_monotonic_time () + (DECODE_LIMIT_S + 2) * G_TIME_SPAN_SECOND;
  GThread *thread;
  GstSample *sample;

  g_mutex_init (&w->lock);
  g_cond_init (&w->cond);
  w->bytes = g_bytes_ref (bytes);
  thread = g_thread_new ("decode", watched_thread, w);
  g_mutex_lock (&w->lock);
  while (!w->done && g_cond_wait_until (&w->cond, &w->lock, deadline))
    ;
  if (!w->done) {
    /* Left to the end of the process. */
    g_mutex_unlock (&w->lock);
    g_thread_unref (thread);
    g_set_error (error, GST_STREAM_ERROR, GST_STREAM_ERROR_DECODE,
        "undecodable image: the system's decoder was still busy after %d s",
        DECODE_LIMIT_S + 2);
    return NULL;
  }
  g_mutex_unlock (&w->lock);
  g_thread_join (thread);
  sample = w->sample;
  if (!sample)
    g_propagate_error (error, w->error);
  g_bytes_unref (w->bytes);
  g_mutex_clear (&w->lock);
  g_cond_clear (&w->cond);
  g_free (w);
  return sample;
}

int
ms_image_serve (int in_fd, int out_fd)
{
  GByteArray *in = g_byte_array_new ();
  guint8 chunk[65536], head[ANSWER_MAGIC + 8];
  GError *error = NULL;
  GstSample *sample = NULL;
  gboolean ok;

  for (;;) {
    gssize r = read (in_fd, chunk, sizeof chunk);

    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0) {
      g_byte_array_unref (in);
      return 1;
    }
    if (r == 0)
      break;
    if (in->len + (gsize) r > MAX_INPUT_BYTES) {
      g_set_error (&error, GST_STREAM_ERROR, GST_STREAM_ERROR_DECODE,
          "undecodable image: more than %u MB", MAX_INPUT_BYTES >> 20);
      break;
    }
    g_byte_array_append (in, chunk, (guint) r);
  }
  if (!error) {
    GBytes *bytes = g_byte_array_free_to_bytes (in);

    in = NULL;
    sample = watched_decode (bytes, &error);
    g_bytes_unref (bytes);
  }
  if (in)
    g_byte_array_unref (in);
  if (sample) {
    guint32 w = 0, h = 0;
    GBytes *rgb = packed_rgb (sample, &w, &h);
    gsize n;
    const void *data;

    gst_sample_unref (sample);
    if (!rgb)
      return 1;
    memcpy (head, ANSWER_OK, ANSWER_MAGIC);
    put_u32 (head + ANSWER_MAGIC, w);
    put_u32 (head + ANSWER_MAGIC + 4, h);
    data = g_bytes_get_data (rgb, &n);
    ok = write_all (out_fd, head, sizeof head) && write_all (out_fd, data, n);
    g_bytes_unref (rgb);
  } else {
    gsize n = MIN (strlen (error->message), ANSWER_MAX_MESSAGE);
    guint32 code = error->domain == GST_STREAM_ERROR ? (guint32) error->code
                                                     : GST_STREAM_ERROR_DECODE;

    memcpy (head, ANSWER_ERROR, ANSWER_MAGIC);
    put_u32 (head + ANSWER_MAGIC, code);
    put_u32 (head + ANSWER_MAGIC + 4, (guint32) n);
    ok = write_all (out_fd, head, sizeof head)
        && write_all (out_fd, error->message, n);
    g_error_free (error);
  }
  return ok ? 0 : 1;
}

/* The sample, or the error, that the decoder's answer holds. */
static GstSample *
parse_answer (GBytes *answer, GError **error)
{
  gsize n;
  const guint8 *p = answer ? g_bytes_get_data (answer, &n) : NULL;
  guint32 a, b;

  if (!p || n < ANSWER_MAGIC + 8)
    goto malformed;
  a = get_u32 (p + ANSWER_MAGIC);
  b = get_u32 (p + ANSWER_MAGIC + 4);
  if (memcmp (p, ANSWER_ERROR, ANSWER_MAGIC) == 0) {
    gchar *msg;

    if (b > ANSWER_MAX_MESSAGE || n != ANSWER_MAGIC + 8 + (gsize) b || a == 0
        || a >= GST_STREAM_ERROR_NUM_ERRORS)
      goto malformed;
    msg = g_utf8_make_valid ((const gchar *) p + ANSWER_MAGIC + 8, b);
    g_set_error_literal (error, GST_STREAM_ERROR, (gint) a, msg);
    g_free (msg);
    return NULL;
  }
  if (memcmp (p, ANSWER_OK, ANSWER_MAGIC) == 0 && a >= MS_IMAGE_MIN_SIDE
      && a <= MS_IMAGE_MAX_SIDE && b >= MS_IMAGE_MIN_SIDE
      && b <= MS_IMAGE_MAX_SIDE) {
    GstVideoInfo info;
    GstCaps *caps;
    GstBuffer *buf;
    GBytes *rgb;
    GstSample *sample;

    gst_video_info_set_format (&info, GST_VIDEO_FORMAT_RGB, a, b);
    if (n != ANSWER_MAGIC + 8 + info.size)
      goto malformed;
    GST_VIDEO_INFO_FPS_N (&info) = 0;
    GST_VIDEO_INFO_FPS_D (&info) = 1;
    caps = gst_video_info_to_caps (&info);
    rgb = g_bytes_new_from_bytes (answer, ANSWER_MAGIC + 8, info.size);
    buf = gst_buffer_new_wrapped_bytes (rgb);
    g_bytes_unref (rgb);
    sample = gst_sample_new (buf, caps, NULL, NULL);
    gst_buffer_unref (buf);
    gst_caps_unref (caps);
    return sample;
  }
malformed:
  g_set_error (error, GST_STREAM_ERROR, GST_STREAM_ERROR_FAILED,
      "the picture decoder gave a malformed answer (%" G_GSIZE_FORMAT " bytes)",
      answer ? g_bytes_get_size (answer) : 0);
  return NULL;
}

/* Where the decoder program is: $MOSHI_PICTURE_DECODER, beside the running
 * program (moshi-server in the build tree), or where it is installed. */
static gchar *
decoder_path (GError **error)
{
  const gchar *env = g_getenv ("MOSHI_PICTURE_DECODER");
  gchar *self, *path = NULL;

  if (env && *env)
    return g_strdup (env);
  self = g_file_read_link ("/proc/self/exe", NULL);
  if (self) {
    gchar *dir = g_path_get_dirname (self);

    path = g_build_filename (dir, MS_PICTURE_DECODER_NAME, NULL);
    g_free (dir);
    if (!g_file_test (path, G_FILE_TEST_IS_EXECUTABLE))
      g_clear_pointer (&path, g_free);
  }
  if (!path && *MS_PICTURE_DECODER_INSTALLED
      && g_file_test (MS_PICTURE_DECODER_INSTALLED, G_FILE_TEST_IS_EXECUTABLE))
    path = g_strdup (MS_PICTURE_DECODER_INSTALLED);
  if (!path)
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
        "the picture decoder %s is not installed (looked beside %s%s%s); "
        "MOSHI_PICTURE_DECODER may name it",
        MS_PICTURE_DECODER_NAME, self ? self : "this program",
        *MS_PICTURE_DECODER_INSTALLED ? " and at " : "",
        MS_PICTURE_DECODER_INSTALLED);
  g_free (self);
  return path;
}

/* One picture in its decoder process. */
typedef struct {
  GSubprocess *proc;
  GCancellable *cancellable;
  gulong cancel_id;
  GSource *timeout;
  gboolean timed_out;
} Helper;

static void
helper_free (Helper *h)
{
  if (h->cancel_id)
    g_cancellable_disconnect (h->cancellable, h->cancel_id);
  g_clear_object (&h->cancellable);
  if (h->timeout) {
    g_source_destroy (h->timeout);
    g_source_unref (h->timeout);
  }
  g_object_unref (h->proc);
  g_free (h);
}

/* A cancellation (any thread) or the time limit (the caller's context)
 * kills the decoder; the answer comes back once it is gone. */
static void
kill_decoder (GCancellable *cancellable, gpointer proc)
{
  (void) cancellable;
  g_subprocess_force_exit (proc);
}

static gboolean
decoder_too_slow (gpointer data)
{
  Helper *h = data;

  h->timed_out = TRUE;
  g_subprocess_force_exit (h->proc);
  return G_SOURCE_REMOVE;
}

static void
decoder_done (GObject *src, GAsyncResult *res, gpointer data)
{
  GTask *task = data;
  Helper *h = g_task_get_task_data (task);
  GBytes *answer = NULL;
  GError *error = NULL;
  GstSample *sample = NULL;
  gboolean ok;

  (void) src;
  /* The process has ended and its output is read: no cancellable was
   * given to communicate, so the answer always waits for the end. */
  ok = g_subprocess_communicate_finish (h->proc, res, &answer, NULL, &error);
  if (g_cancellable_is_cancelled (h->cancellable)) {
    g_clear_error (&error);
    g_set_error (&error, G_IO_ERROR, G_IO_ERROR_CANCELLED,
        "image decoding cancelled");
  } else if (h->timed_out) {
    g_clear_error (&error);
    g_set_error (&error, GST_STREAM_ERROR, GST_STREAM_ERROR_DECODE,
        "undecodable image: not decoded within %d s", DECODER_TIMEOUT_S);
  } else if (!ok) {
    g_prefix_error (&error, "the picture decoder: ");
  } else if (g_subprocess_get_if_signaled (h->proc)) {
    int sig = g_subprocess_get_term_sig (h->proc);

    g_set_error (&error, GST_STREAM_ERROR, GST_STREAM_ERROR_DECODE,
        "undecodable image: the picture decoder died of signal %d (%s)", sig,
        g_strsignal (sig));
  } else if (g_subprocess_get_exit_status (h->proc) != 0) {
    g_set_error (&error, GST_STREAM_ERROR, GST_STREAM_ERROR_FAILED,
        "the picture decoder failed (exit status %d)",
        g_subprocess_get_exit_status (h->proc));
  } else {
    sample = parse_answer (answer, &error);
  }
  if (answer)
    g_bytes_unref (answer);
  if (sample)
    g_task_return_pointer (task, sample, (GDestroyNotify) gst_sample_unref);
  else
    g_task_return_error (task, error);
  g_object_unref (task);
}

void
ms_image_decode_async (GBytes *bytes, GCancellable *cancellable,
    GAsyncReadyCallback callback, gpointer user_data)
{
  GTask *task = g_task_new (NULL, cancellable, callback, user_data);
  GError *error = NULL;
  gchar *path = decoder_path (&error);
  Helper *h;
  GSubprocess *proc = NULL;

  g_task_set_source_tag (task, ms_image_decode_async);
  /* A decoder that dies before it has read the picture must not take the
   * server with it (SIGPIPE on the write to its input). */
  signal (SIGPIPE, SIG_IGN);
  if (path)
    proc = g_subprocess_new (G_SUBPROCESS_FLAGS_STDIN_PIPE
            | G_SUBPROCESS_FLAGS_STDOUT_PIPE
            | G_SUBPROCESS_FLAGS_STDERR_SILENCE,
        &error, path, NULL);
  g_free (path);
  if (!proc) {
    g_prefix_error (&error, "cannot start the picture decoder: ");
    g_task_return_error (task, error);
    g_object_unref (task);
    return;
  }
  h = g_new0 (Helper, 1);
  h->proc = proc;
  g_task_set_task_data (task, h, (GDestroyNotify) helper_free);
  if (cancellable) {
    h->cancellable = g_object_ref (cancellable);
    /* At once when already cancelled. */
    h->cancel_id = g_cancellable_connect (cancellable,
        G_CALLBACK (kill_decoder), g_object_ref (proc), g_object_unref);
  }
  h->timeout = g_timeout_source_new_seconds (DECODER_TIMEOUT_S);
  g_source_set_callback (h->timeout, decoder_too_slow, h, NULL);
  g_source_attach (h->timeout, g_main_context_get_thread_default ());
  g_subprocess_communicate_async (proc, bytes, NULL, decoder_done, task);
}

GstSample *
ms_image_decode_finish (GAsyncResult *result, GError **error)
{
  g_return_val_if_fail (g_task_is_valid (result, NULL), NULL);
  return g_task_propagate_pointer (G_TASK (result), error);
}
