/* moshi-server's picture decoding (pipelines/server/image.c) on its own:
 * a small picture is decoded, pictures whose sides are out of range are
 * refused, and a tiny file that claims a huge picture is refused before it
 * is decoded (found by reading the code for fuzz-server-image: a 180-byte
 * PNG claiming 30000x30000 pixels made the server allocate 2.7 GB). */
#include "../pipelines/server/image.h"
#include "picture-util.h"

#include <gst/video/video.h>
#include <string.h>
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

int
main (int argc, char **argv)
{
  gst_init (&argc, &argv);
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/server-image/small-picture", test_small_picture);
  g_test_add_func ("/server-image/out-of-range", test_out_of_range);
  g_test_add_func ("/server-image/not-an-image", test_not_an_image);
  g_test_add_func ("/server-image/huge-claim", test_huge_claim);
  return g_test_run ();
}
