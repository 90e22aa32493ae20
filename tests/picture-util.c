/* Picture files for the tests: see picture-util.h. */
#include "picture-util.h"

#include <gio/gio.h>
#include <gst/app/gstappsink.h>
#include <string.h>

GBytes *
tp_encode (const gchar *encoder, gint width, gint height, const gchar *pattern)
{
  gchar *desc = g_strdup_printf ("videotestsrc num-buffers=1 pattern=%s "
                                 "! video/x-raw,width=%d,height=%d "
                                 "! %s ! appsink name=sink",
      pattern ? pattern : "smpte", width, height, encoder);
  GstElement *p = gst_parse_launch (desc, NULL);
  GstElement *sink;
  GstSample *s;
  GBytes *bytes = NULL;

  g_free (desc);
  if (!p)
    return NULL;
  sink = gst_bin_get_by_name (GST_BIN (p), "sink");
  gst_element_set_state (p, GST_STATE_PLAYING);
  s = gst_app_sink_pull_sample (GST_APP_SINK (sink));
  if (s) {
    GstMapInfo map;

    if (gst_buffer_map (gst_sample_get_buffer (s), &map, GST_MAP_READ)) {
      bytes = g_bytes_new (map.data, map.size);
      gst_buffer_unmap (gst_sample_get_buffer (s), &map);
    }
    gst_sample_unref (s);
  }
  gst_element_set_state (p, GST_STATE_NULL);
  gst_object_unref (sink);
  gst_object_unref (p);
  return bytes;
}

static guint32
png_crc (const guint8 *p, gsize n)
{
  guint32 c = 0xffffffffu;

  for (gsize i = 0; i < n; i++) {
    c ^= p[i];
    for (int k = 0; k < 8; k++)
      c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
  }
  return c ^ 0xffffffffu;
}

/* Big-endian, byte by byte: p need not be aligned (GST_WRITE_UINT32_BE
 * stores a whole word, which UBSan reports at an odd address). */
static void
write_be32 (guint8 *p, guint32 v)
{
  p[0] = (guint8) (v >> 24);
  p[1] = (guint8) (v >> 16);
  p[2] = (guint8) (v >> 8);
  p[3] = (guint8) v;
}

GBytes *
tp_png_claiming (GBytes *png, guint32 width, guint32 height)
{
  gsize n;
  const guint8 *data = g_bytes_get_data (png, &n);
  guint8 *p = g_memdup2 (data, n);

  g_assert (n > 33 && memcmp (p + 12, "IHDR", 4) == 0);
  write_be32 (p + 16, width);
  write_be32 (p + 20, height);
  write_be32 (p + 29, png_crc (p + 12, 17));
  return g_bytes_new_take (p, n);
}

static void
append_chunk (GByteArray *png, const gchar *type, const guint8 *data, gsize n)
{
  guint8 word[4];
  guint start;

  write_be32 (word, (guint32) n);
  g_byte_array_append (png, word, 4);
  start = png->len;
  g_byte_array_append (png, (const guint8 *) type, 4);
  if (n)
    g_byte_array_append (png, data, n);
  write_be32 (word, png_crc (png->data + start, n + 4));
  g_byte_array_append (png, word, 4);
}

GBytes *
tp_png_blank (guint32 width, guint32 height)
{
  static const guint8 signature[8] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a,
    '\n' };
  GConverter *z =
      G_CONVERTER (g_zlib_compressor_new (G_ZLIB_COMPRESSOR_FORMAT_ZLIB, 9));
  gsize row = 1 + (gsize) width * 4; /* filter byte 0, then RGBA */
  guint8 *zeros = g_malloc0 (row), *out = g_malloc (65536);
  guint8 ihdr[13];
  GByteArray *png = g_byte_array_new (), *idat = g_byte_array_new ();

  write_be32 (ihdr, width);
  write_be32 (ihdr + 4, height);
  ihdr[8] = 8; /* bits per sample */
  ihdr[9] = 6; /* RGBA */
  ihdr[10] = ihdr[11] = ihdr[12] = 0; /* deflate, filter 0, no interlace */
  for (guint32 y = 0; y < height; y++) {
    gboolean last = y + 1 == height;
    gsize done = 0;
    GConverterResult r;

    do {
      gsize nr = 0, nw = 0;

      r = g_converter_convert (z, zeros + done, row - done, out, 65536,
          last ? G_CONVERTER_INPUT_AT_END : G_CONVERTER_NO_FLAGS, &nr, &nw,
          NULL);
      g_assert (r != G_CONVERTER_ERROR);
      done += nr;
      g_byte_array_append (idat, out, (guint) nw);
    } while (done < row || (last && r != G_CONVERTER_FINISHED));
  }
  g_byte_array_append (png, signature, sizeof signature);
  append_chunk (png, "IHDR", ihdr, sizeof ihdr);
  append_chunk (png, "IDAT", idat->data, idat->len);
  append_chunk (png, "IEND", NULL, 0);
  g_byte_array_unref (idat);
  g_free (zeros);
  g_free (out);
  g_object_unref (z);
  return g_byte_array_free_to_bytes (png);
}
