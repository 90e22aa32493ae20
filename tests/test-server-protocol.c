/* moshi-server's protocol codec (pipelines/server/protocol.c) on its own:
 * message building, the Ogg page checker against pages made by GStreamer's
 * oggmux (every truncation, every single-byte change, random bytes), and
 * the query parameters. */
#include "../pipelines/server/protocol.h"

#include <string.h>

/* Two pages written by oggmux + opusenc (OpusHead BOS, OpusTags). */
static GByteArray *
sample_pages (void)
{
  static const guint8 head[] = { 'O', 'p', 'u', 's', 'H', 'e', 'a', 'd', 1, 1,
    0x38, 1, 0xc0, 0x5d, 0, 0, 0, 0, 0 };
  GByteArray *a = g_byte_array_new ();
  const guint8 *bodies[2] = { head,
    (const guint8 *) "OpusTags\x03\0\0\0abc"
                     "\0\0\0\0" };
  gsize lens[2] = { sizeof head, 19 };

  for (guint i = 0; i < 2; i++) {
    guint8 hdr[28] = { 'O', 'g', 'g', 'S', 0, i == 0 ? 2 : 0 };
    guint32 crc;
    guint off = a->len;

    hdr[14] = 0x11;
    hdr[18] = i;
    hdr[26] = 1;
    hdr[27] = (guint8) lens[i];
    g_byte_array_append (a, hdr, sizeof hdr);
    g_byte_array_append (a, bodies[i], lens[i]);
    crc = ms_ogg_crc (a->data + off, a->len - off);
    a->data[off + 22] = crc & 0xff;
    a->data[off + 23] = (crc >> 8) & 0xff;
    a->data[off + 24] = (crc >> 16) & 0xff;
    a->data[off + 25] = crc >> 24;
  }
  return a;
}

static void
test_messages (void)
{
  GBytes *m = ms_message_handshake ();
  gsize len;
  const guint8 *p = g_bytes_get_data (m, &len);

  g_assert_cmpuint (len, ==, 9);
  for (guint i = 0; i < len; i++)
    g_assert_cmpint (p[i], ==, 0);
  g_bytes_unref (m);
  m = ms_message_colored_text (42, "hi", 2);
  p = g_bytes_get_data (m, &len);
  g_assert_cmpuint (len, ==, 4);
  g_assert_cmpint (p[0], ==, 7);
  g_assert_cmpint (p[1], ==, 10); /* clamped */
  g_assert_cmpmem (p + 2, 2, "hi", 2);
  g_bytes_unref (m);
  m = ms_message_error ("boom");
  p = g_bytes_get_data (m, &len);
  g_assert_cmpint (p[0], ==, 5);
  g_assert_cmpmem (p + 1, len - 1, "boom", 4);
  g_bytes_unref (m);
}

static void
test_crc (void)
{
  /* The Ogg CRC (poly 0x04c11db7, no reflection, init 0) of "123456789". */
  g_assert_cmphex (ms_ogg_crc ((const guint8 *) "123456789", 9), ==,
      0x89a1897f);
}

static void
test_pages (void)
{
  GByteArray *a = sample_pages ();
  GError *err = NULL;

  g_assert_cmpuint (ms_ogg_check_pages (a->data, a->len, &err), ==, 2);
  g_assert_no_error (err);
  /* Every truncation is refused (except the one right after page 1). */
  for (guint n = 0; n < a->len; n++) {
    guint pages = ms_ogg_check_pages (a->data, n, &err);

    if (n == 28 + 19) {
      g_assert_cmpuint (pages, ==, 1);
    } else {
      g_assert_cmpuint (pages, ==, 0);
      g_assert_nonnull (err);
      g_clear_error (&err);
    }
  }
  /* Every single-byte change is caught (CRC or structure). */
  for (guint i = 0; i < a->len; i++) {
    for (guint bit = 0; bit < 8; bit++) {
      a->data[i] ^= 1u << bit;
      g_assert_cmpuint (ms_ogg_check_pages (a->data, a->len, NULL), ==, 0);
      a->data[i] ^= 1u << bit;
    }
  }
  g_byte_array_unref (a);
}

/* Sets page 1's OpusHead input rate and its CRC. */
static void
set_head_rate (GByteArray *a, guint32 rate)
{
  guint32 crc;

  for (guint i = 0; i < 4; i++)
    a->data[28 + 12 + i] = (rate >> (8 * i)) & 0xff;
  memset (a->data + 22, 0, 4);
  crc = ms_ogg_crc (a->data, 28 + 19);
  for (guint i = 0; i < 4; i++)
    a->data[22 + i] = (crc >> (8 * i)) & 0xff;
}

static void
test_opus_head_rate (void)
{
  GByteArray *a = sample_pages ();
  const guint32 fine[] = { 0, 8000, 12000, 16000, 24000, 48000 };
  guint32 old = 0;
  guint8 *fixed;

  for (guint i = 0; i < G_N_ELEMENTS (fine); i++) {
    set_head_rate (a, fine[i]);
    g_assert_null (ms_ogg_fix_opus_head_rate (a->data, a->len, &old));
  }
  /* opus-recorder on a 44.1 kHz AudioContext (Kyutai's client). */
  set_head_rate (a, 44100);
  g_assert_cmpuint (ms_ogg_check_pages (a->data, a->len, NULL), ==, 2);
  fixed = ms_ogg_fix_opus_head_rate (a->data, a->len, &old);
  g_assert_nonnull (fixed);
  g_assert_cmpuint (old, ==, 44100);
  g_assert_cmpuint (ms_ogg_check_pages (fixed, a->len, NULL), ==, 2);
  g_assert_cmpuint (fixed[28 + 12] | fixed[28 + 13] << 8 | fixed[28 + 14] << 16
          | (guint32) fixed[28 + 15] << 24,
      ==, 24000);
  /* Nothing else changed but the rate and the CRC. */
  for (guint i = 0; i < a->len; i++)
    if (!(i >= 22 && i < 26) && !(i >= 40 && i < 44))
      g_assert_cmpint (fixed[i], ==, a->data[i]);
  g_free (fixed);
  /* Only on a BOS page; the OpusTags page alone is left as is. */
  g_assert_null (ms_ogg_fix_opus_head_rate (a->data + 47, a->len - 47, NULL));
  /* Truncated input never reads past its end (ASan) nor fixes half a page. */
  for (guint n = 0; n < 47; n++)
    g_assert_null (ms_ogg_fix_opus_head_rate (a->data, n, NULL));
  g_byte_array_unref (a);
}

static void
test_random (void)
{
  GRand *r = g_rand_new_with_seed (7);
  guint8 buf[600];

  for (guint round = 0; round < 20000; round++) {
    gsize n = g_rand_int_range (r, 0, sizeof buf);

    for (gsize i = 0; i < n; i++)
      buf[i] = g_rand_int (r);
    if (n >= 4 && round % 2)
      memcpy (buf, "OggS\0", 5); /* get past the capture pattern */
    if (n >= 27 && round % 4 == 1)
      buf[26] = g_rand_int_range (r, 0, 4);
    g_assert_cmpuint (ms_ogg_check_pages (buf, n, NULL), ==, 0);
    g_free (ms_ogg_fix_opus_head_rate (buf, n, NULL)); /* bounds (ASan) */
  }
  g_rand_free (r);
}

static void
test_params (void)
{
  GHashTable *q = g_uri_parse_params (
      "text_temperature=0.7&text_topk=25&audio_temperature=0.8"
      "&audio_topk=250&audio_seed=5&text_seed=9&pad_mult=0"
      "&repetition_penalty=1.2&image_resolution=448&token=x",
      -1, "&", G_URI_PARAMS_NONE, NULL);
  MsParams p;

  ms_params_init (&p);
  ms_params_parse (&p, q);
  g_assert_cmpfloat (p.text_temperature, ==, 0.7);
  g_assert_cmpfloat (p.audio_temperature, ==, 0.8);
  g_assert_cmpint (p.text_topk, ==, 25);
  g_assert_cmpint (p.audio_topk, ==, 250);
  g_assert_true (p.has_seed);
  g_assert_cmpuint (p.seed, ==, 9); /* text_seed wins */
  g_assert_cmpint (p.image_resolution, ==, 448);
  g_assert_cmpstr (p.ignored->str, ==, "pad_mult=0, repetition_penalty=1.2");
  g_assert_cmpstr (p.invalid->str, ==, "");
  ms_params_clear (&p);
  g_hash_table_unref (q);

  q = g_uri_parse_params ("text_temperature=nan&text_topk=1e3&audio_seed=-1"
                          "&audio_temperature=&audio_topk=99999999999",
      -1, "&", G_URI_PARAMS_NONE, NULL);
  ms_params_init (&p);
  ms_params_parse (&p, q);
  g_assert_cmpfloat (p.text_temperature, ==, -1);
  g_assert_cmpfloat (p.audio_temperature, ==, -1);
  g_assert_cmpint (p.text_topk, ==, -1);
  g_assert_cmpint (p.audio_topk, ==, -1);
  g_assert_false (p.has_seed);
  g_assert_nonnull (strstr (p.invalid->str, "text_temperature=nan"));
  ms_params_clear (&p);
  g_hash_table_unref (q);

  /* image_url: only a path of the web root. */
  {
    const gchar *ok[] = { "/assets/images/demo/image1.jpg", "/a.png" };
    const gchar *bad[] = { "", "a.png", "//host/a.png", "http://h/a.png",
      "/../a.png", "/x/..%2Fa.png", "/a\\b.png" };

    for (guint i = 0; i < G_N_ELEMENTS (ok) + G_N_ELEMENTS (bad); i++) {
      gboolean good = i < G_N_ELEMENTS (ok);
      const gchar *v = good ? ok[i] : bad[i - G_N_ELEMENTS (ok)];

      q = g_hash_table_new (g_str_hash, g_str_equal);
      g_hash_table_insert (q, (gpointer) "image_url", (gpointer) v);
      ms_params_init (&p);
      ms_params_parse (&p, q);
      if (good) {
        g_assert_cmpstr (p.image_url, ==, v);
        g_assert_cmpstr (p.invalid->str, ==, "");
      } else {
        g_assert_null (p.image_url);
        g_assert_true (g_str_has_prefix (p.invalid->str, "image_url="));
      }
      ms_params_clear (&p);
      g_hash_table_unref (q);
    }
  }

  ms_params_init (&p);
  ms_params_parse (&p, NULL);
  g_assert_false (p.has_seed);
  ms_params_clear (&p);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/server-protocol/messages", test_messages);
  g_test_add_func ("/server-protocol/crc", test_crc);
  g_test_add_func ("/server-protocol/pages", test_pages);
  g_test_add_func ("/server-protocol/opus-head-rate", test_opus_head_rate);
  g_test_add_func ("/server-protocol/random", test_random);
  g_test_add_func ("/server-protocol/params", test_params);
  return g_test_run ();
}
