/* moshi-server's picture decoding (pipelines/server/image.c) on its own:
 * a small picture is decoded, pictures whose sides are out of range are
 * refused, and a tiny file that claims a huge picture is refused before it
 * is decoded (found by reading the code for fuzz-server-image: a 180-byte
 * PNG claiming 30000x30000 pixels made the server allocate 2.7 GB); the
 * server's way of decoding, off its main loop (ms_image_decode_async):
 * the loop goes on meanwhile, and a cancelled decode ends cleanly; it
 * runs in a decoder process of its own (moshi-picture-decoder, named by
 * MOSHI_PICTURE_DECODER in meson's test environment), so pictures that
 * make GStreamer's pngdec leak descriptors leave the server's count alone,
 * and a decoder that crashes, fails or answers nonsense is an error. */
#include "../pipelines/server/image.h"
#include "picture-util.h"

#include <glib/gstdio.h>
#include <gst/video/video.h>
#include <string.h>
#include <dirent.h>
#include <sys/resource.h>

/* An image file of w x h pixels made by GStreamer's encoder enc. */
static GBytes *
make_image (const char *enc, int w, int h)
{
  GBytes *bytes = tp_encode (enc, w, h, NULL);

  g_assert_nonnull (bytes);
  return bytes;
}

static void
check_small_picture (const char *enc)
{
  GBytes *png = make_image (enc, 16, 20);
  GError *err = NULL;
  GstSample *s = ms_image_decode (png, &err);
  GstVideoInfo info;

  g_assert_no_error (err);
  g_assert_nonnull (s);
  g_assert_true (gst_video_info_from_caps (&info, gst_sample_get_caps (s)));
  g_assert_cmpint (GST_VIDEO_INFO_FORMAT (&info), ==, GST_VIDEO_FORMAT_RGB);
  g_assert_cmpint (info.width, ==, 16);
  g_assert_cmpint (info.height, ==, 20);
  g_assert_cmpuint (gst_buffer_get_size (gst_sample_get_buffer (s)), >=,
      info.size);
  gst_sample_unref (s);
  g_bytes_unref (png);
}

static void
test_small_picture (void)
{
  check_small_picture ("pngenc");
  check_small_picture ("jpegenc");
}

static void
expect_refused (GBytes *bytes, const gchar *what)
{
  GError *err = NULL;
  GstSample *s = ms_image_decode (bytes, &err);

  g_assert_null (s);
  g_assert_nonnull (err);
  if (!strstr (err->message, what))
    g_error ("\"%s\" does not say \"%s\"", err->message, what);
  g_error_free (err);
}

static void
test_out_of_range (void)
{
  GBytes *png = make_image ("pngenc", 8, 8);

  expect_refused (png, "8192");
  g_bytes_unref (png);
  png = make_image ("pngenc", 16, 16);
  GBytes *wide = tp_png_claiming (png, 8193, 16);
  expect_refused (wide, "8192");
  g_bytes_unref (wide);
  g_bytes_unref (png);
}

static void
test_not_an_image (void)
{
  GBytes *junk = g_bytes_new_static ("not an image", 12);
  GBytes *empty = g_bytes_new (NULL, 0);

  expect_refused (junk, "undecodable image");
  expect_refused (empty, "undecodable image");
  g_bytes_unref (junk);
  g_bytes_unref (empty);
}

/* 30000 x 30000 RGB is 2.7 GB: refused at negotiation, so the process
 * never comes near that (peak RSS checked, not time). */
/* A picture behind a subtitle header: decodebin finds a SAMI subtitle
 * stream, which cannot become a picture.  Refused as soon as decodebin has
 * exposed its streams ("no picture stream"), not after the 10 s wait for a
 * picture that cannot come; the same for a demuxer that finds no stream at
 * all (both found by fuzz-server-image). */
static void
test_no_picture_stream (void)
{
  GBytes *png = make_image ("pngenc", 16, 16);
  static const char sami[] = "<SAMI>\n<BODY>\n";
  gsize n;
  const guint8 *data = g_bytes_get_data (png, &n);
  guint8 *buf = g_malloc (sizeof sami - 1 + n);

  memcpy (buf, sami, sizeof sami - 1);
  memcpy (buf + sizeof sami - 1, data, n);
  GBytes *odd = g_bytes_new_take (buf, sizeof sami - 1 + n);
  expect_refused (odd, "no picture stream");
  g_bytes_unref (odd);
  g_bytes_unref (png);
  /* A RealMedia signature and nothing else: rmdemux finds no stream and
   * says nothing; refused half a second after the end of the input reached
   * it. */
  GBytes *rm = g_bytes_new_static (".RMF", 4);
  expect_refused (rm, "no picture stream");
  g_bytes_unref (rm);
}

static void
test_huge_claim (void)
{
  GBytes *png = make_image ("pngenc", 16, 16);
  GBytes *huge = tp_png_claiming (png, 30000, 30000);
  struct rusage ru;

  expect_refused (huge, "8192");
  getrusage (RUSAGE_SELF, &ru);
  /* ru_maxrss is in kilobytes; this program needs a few tens of MB. */
  g_assert_cmpint (ru.ru_maxrss, <, 512 * 1024);
  g_bytes_unref (huge);
  g_bytes_unref (png);
}

typedef struct {
  GMainLoop *loop;
  GstSample *sample;
  GError *error;
  guint results;
  gboolean idle_ran; /* by the time the result came */
  gboolean idle_first;
} Async;

static void
on_decoded (GObject *src, GAsyncResult *res, gpointer data)
{
  Async *a = data;

  g_assert_null (src);
  a->sample = ms_image_decode_finish (res, &a->error);
  a->results++;
  a->idle_first = a->idle_ran;
  g_main_loop_quit (a->loop);
}

static gboolean
on_idle (gpointer data)
{
  ((Async *) data)->idle_ran = TRUE;
  return G_SOURCE_REMOVE;
}

/* Decodes bytes with ms_image_decode_async; an idle source is added to
 * the main context just after the call. cancel: cancelled after the call
 * (before: already cancelled). */
static void
decode_async (Async *a, GBytes *bytes, GCancellable *cancel)
{
  guint idle;

  memset (a, 0, sizeof *a);
  a->loop = g_main_loop_new (NULL, FALSE);
  ms_image_decode_async (bytes, cancel, on_decoded, a);
  idle = g_idle_add (on_idle, a);
  if (cancel)
    g_cancellable_cancel (cancel);
  g_main_loop_run (a->loop);
  g_main_loop_unref (a->loop);
  /* A result that came first leaves the idle source pending, with a
   * pointer to a, which may live on the caller's stack. */
  if (!a->idle_ran)
    g_source_remove (idle);
  g_assert_cmpuint (a->results, ==, 1);
}

/* The same results as ms_image_decode, in the caller's main context. */
static void
test_async (void)
{
  GBytes *png = make_image ("pngenc", 16, 20);
  GBytes *junk = g_bytes_new_static ("not an image", 12);
  Async a;
  GstVideoInfo info;

  decode_async (&a, png, NULL);
  g_assert_no_error (a.error);
  g_assert_true (
      gst_video_info_from_caps (&info, gst_sample_get_caps (a.sample)));
  g_assert_cmpint (info.width, ==, 16);
  g_assert_cmpint (info.height, ==, 20);
  gst_sample_unref (a.sample);
  decode_async (&a, junk, NULL);
  g_assert_null (a.sample);
  g_assert_nonnull (a.error);
  g_assert_nonnull (strstr (a.error->message, "undecodable image"));
  g_error_free (a.error);
  g_bytes_unref (junk);
  g_bytes_unref (png);
}

/* A large picture (8192 x 8192, the largest side accepted: 256 MB of RGBA
 * to inflate and convert) decodes in a thread: the main loop runs an idle
 * source added after the call before the result comes.  Order of events,
 * not time. */
static void
test_async_main_loop_runs (void)
{
  GBytes *big = tp_png_blank (8192, 8192);
  Async a;
  GstVideoInfo info;

  decode_async (&a, big, NULL);
  g_assert_no_error (a.error);
  g_assert_true (a.idle_first);
  g_assert_true (
      gst_video_info_from_caps (&info, gst_sample_get_caps (a.sample)));
  g_assert_cmpint (GST_VIDEO_INFO_FORMAT (&info), ==, GST_VIDEO_FORMAT_RGB);
  g_assert_cmpint (info.width, ==, 8192);
  g_assert_cmpint (info.height, ==, 8192);
  gst_sample_unref (a.sample);
  g_bytes_unref (big);
}

/* Cancelled mid-decode, or before it started: the callback comes once,
 * with G_IO_ERROR_CANCELLED, and nothing leaks (ASan). */
static void
test_async_cancel (void)
{
  GBytes *big = tp_png_blank (8192, 8192);
  GCancellable *cancel = g_cancellable_new ();
  Async a;

  decode_async (&a, big, cancel);
  g_assert_null (a.sample);
  g_assert_error (a.error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  g_clear_error (&a.error);
  /* Already cancelled. */
  decode_async (&a, big, cancel);
  g_assert_null (a.sample);
  g_assert_error (a.error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  g_clear_error (&a.error);
  g_object_unref (cancel);
  g_bytes_unref (big);
}

/* Open file descriptors of this process. */
static guint
open_descriptors (void)
{
  DIR *d = opendir ("/proc/self/fd");
  guint n = 0;

  g_assert_nonnull (d);
  while (readdir (d))
    n++;
  closedir (d);
  return n;
}

/* GLib's worker closes a child's pidfd just after the answer came back:
 * the count once two readings 20 ms apart agree (1 s at most). */
static guint
settled_descriptors (void)
{
  guint n = open_descriptors ();

  for (int i = 0; i < 50; i++) {
    guint again;

    g_usleep (20000);
    again = open_descriptors ();
    if (again == n)
      break;
    n = again;
  }
  return n;
}

static GBytes *
read_data_file (const char *name)
{
  gchar *path = g_build_filename (MOSHI_SOURCE_ROOT, "tests", "data",
      "pictures", name, NULL);
  gchar *data;
  gsize n;

  if (!g_file_get_contents (path, &data, &n, NULL))
    g_error ("cannot read %s", path);
  g_free (path);
  return g_bytes_new_take (data, n);
}

/* A 16 x 16 PNG whose second row has filter type 7 (fuzz-server-image):
 * libpng fails mid-picture, and GStreamer 1.22's pngdec then leaks its
 * buffer pool, two descriptors each time (in-process, the most likely end
 * of a fuzzer with 20 000 after 445 512 inputs).  Decoded the server's way, each in its
 * own process, the server's count stays the same. */
static void
test_async_broken_pictures (void)
{
  GBytes *bad = read_data_file ("bad-filter.png");
  Async a;
  guint before;

  /* The first decode sets up what stays (GLib's worker thread). */
  decode_async (&a, bad, NULL);
  g_assert_null (a.sample);
  g_clear_error (&a.error);
  before = settled_descriptors ();
  for (int i = 0; i < 40; i++) {
    decode_async (&a, bad, NULL);
    g_assert_null (a.sample);
    g_assert_error (a.error, GST_STREAM_ERROR, GST_STREAM_ERROR_DECODE);
    g_assert_nonnull (strstr (a.error->message, "undecodable image"));
    g_clear_error (&a.error);
  }
  g_assert_cmpuint (settled_descriptors (), ==, before);
  g_bytes_unref (bad);
}

/* A 318-byte JPEG with a second start-of-image marker inside its header
 * (fuzz-server-image): GStreamer 1.22's jpegdec loops for ever in its
 * streaming thread, so the decoding pipeline cannot even be stopped.  The
 * decoder process answers after 12 s and ends, spinning thread and all. */
static void
test_async_stuck_decoder (void)
{
  GBytes *loop = read_data_file ("jpeg-soi-loop.jpg");
  Async a;

  decode_async (&a, loop, NULL);
  g_assert_null (a.sample);
  g_assert_error (a.error, GST_STREAM_ERROR, GST_STREAM_ERROR_DECODE);
  g_assert_nonnull (strstr (a.error->message, "still busy after 12 s"));
  g_clear_error (&a.error);
  g_bytes_unref (loop);
}

/* Decodes bytes with the program at `decoder` in place of
 * moshi-picture-decoder; the error must say `what`. */
static void
expect_failure_with (const char *decoder, GBytes *bytes, const char *what)
{
  gchar *saved = g_strdup (g_getenv ("MOSHI_PICTURE_DECODER"));
  Async a;

  g_setenv ("MOSHI_PICTURE_DECODER", decoder, TRUE);
  decode_async (&a, bytes, NULL);
  g_setenv ("MOSHI_PICTURE_DECODER", saved, TRUE);
  g_assert_null (a.sample);
  g_assert_nonnull (a.error);
  if (!strstr (a.error->message, what))
    g_error ("\"%s\" does not say \"%s\"", a.error->message, what);
  g_clear_error (&a.error);
  g_free (saved);
}

/* The same with a shell script as the decoder. */
static void
expect_decoder_failure (const char *dir, const char *script, GBytes *bytes,
    const char *what)
{
  gchar *path = g_build_filename (dir, "decoder.sh", NULL);
  gchar *text = g_strdup_printf ("#!/bin/sh\n%s\n", script);

  g_assert_true (g_file_set_contents (path, text, -1, NULL));
  g_assert_cmpint (g_chmod (path, 0700), ==, 0);
  expect_failure_with (path, bytes, what);
  g_unlink (path);
  g_free (path);
  g_free (text);
}

/* A decoder process that is missing, crashes, fails, answers nonsense or
 * a picture of the wrong size, or quits without reading its input (1 MB:
 * more than a pipe holds, so the write to it fails, and must not kill this
 * process with SIGPIPE): each is an error that says so. */
static void
test_async_decoder_failures (void)
{
  gchar *dir = g_dir_make_tmp ("picture-decoder-XXXXXX", NULL);
  GBytes *png = make_image ("pngenc", 16, 16);
  GBytes *big = g_bytes_new_take (g_malloc0 (1 << 20), 1 << 20);
  gchar *missing = g_build_filename (dir, "missing", NULL);

  g_assert_nonnull (dir);
  expect_failure_with (missing, png, "cannot start the picture decoder");
  expect_decoder_failure (dir, "cat >/dev/null; kill -SEGV $$", png,
      "died of signal 11");
  expect_decoder_failure (dir, "cat >/dev/null; exit 3", png, "exit status 3");
  expect_decoder_failure (dir, "cat >/dev/null; echo nonsense", png,
      "malformed answer");
  /* "MSPIC-OK", 16 x 16, and 3 bytes of the 768 that says. */
  expect_decoder_failure (dir,
      "cat >/dev/null; printf 'MSPIC-OK\\020\\0\\0\\0\\020\\0\\0\\0abc'", png,
      "malformed answer");
  /* An error answer with code 0 (no GstStreamError). */
  expect_decoder_failure (dir,
      "cat >/dev/null; printf 'MSPIC-ER\\0\\0\\0\\0\\002\\0\\0\\0hi'", png,
      "malformed answer");
  expect_decoder_failure (dir, "exit 0", big, "picture decoder");
  g_rmdir (dir);
  g_free (dir);
  g_free (missing);
  g_bytes_unref (big);
  g_bytes_unref (png);
}

int
main (int argc, char **argv)
{
  gst_init (&argc, &argv);
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/server-image/small-picture", test_small_picture);
  g_test_add_func ("/server-image/out-of-range", test_out_of_range);
  g_test_add_func ("/server-image/not-an-image", test_not_an_image);
  g_test_add_func ("/server-image/huge-claim", test_huge_claim);
  g_test_add_func ("/server-image/no-picture-stream", test_no_picture_stream);
  g_test_add_func ("/server-image/async", test_async);
  g_test_add_func ("/server-image/async-main-loop-runs",
      test_async_main_loop_runs);
  g_test_add_func ("/server-image/async-cancel", test_async_cancel);
  g_test_add_func ("/server-image/async-broken-pictures",
      test_async_broken_pictures);
  g_test_add_func ("/server-image/async-stuck-decoder",
      test_async_stuck_decoder);
  g_test_add_func ("/server-image/async-decoder-failures",
      test_async_decoder_failures);
  return g_test_run ();
}
