/* libFuzzer target for the parts of moshi-server that read what a client
 * sends (pipelines/server/protocol.c): the Ogg page check of audio
 * messages, the OpusHead rate rewrite of the first one, and the /api/chat
 * query parameters.
 *
 * Input: a first byte 'q' makes the rest a query string (name=value pairs
 * split at '&' and '=' as a URL decoder would hand them over); anything
 * else is a websocket message, kind byte first.  Checks: no crash, no
 * read past the message (ASan), and the results are consistent: a page
 * count only for data made of whole pages, values inside their ranges. */
#include "protocol.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

static void
fuzz_query (const char *text, size_t len)
{
  gchar *s = g_strndup (text, len);
  gchar **pairs = g_strsplit (s, "&", 64);
  GHashTable *q = g_hash_table_new (g_str_hash, g_str_equal);
  MsParams p;

  for (guint i = 0; pairs[i]; i++) {
    gchar *eq = strchr (pairs[i], '=');
    if (eq)
      *eq = '\0';
    g_hash_table_insert (q, pairs[i], eq ? eq + 1 : NULL);
  }
  ms_params_init (&p);
  ms_params_parse (&p, q);
  if ((p.text_temperature != -1
          && (p.text_temperature < 0 || p.text_temperature > 100))
      || (p.text_topk != -1 && p.text_topk < 0)
      || (p.audio_topk != -1 && p.audio_topk < 0) || p.xa_start < -1
      || p.center_crop < -1 || p.center_crop > 1)
    __builtin_trap ();
  ms_params_clear (&p);
  g_hash_table_unref (q);
  g_strfreev (pairs);
  g_free (s);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  GError *err = NULL;

  if (size == 0)
    return 0;
  if (data[0] == 'q') {
    fuzz_query ((const char *) data + 1, size - 1);
    return 0;
  }
  /* An exact-size copy: ASan then sees any read past the message. */
  guint8 *msg = g_memdup2 (data + 1, size - 1);
  switch (data[0]) {
    case MS_KIND_AUDIO: {
      guint pages = ms_ogg_check_pages (msg, size - 1, &err);
      if ((pages == 0) != (err != NULL))
        __builtin_trap ();
      /* A page is at least its 27-byte header. */
      if (pages > 0 && (size - 1) < 27 * (gsize) pages)
        __builtin_trap ();
      g_clear_error (&err);
      /* The OpusHead rate rewrite (first audio message of a session): on
       * any bytes no crash; on checked pages, whole pages again, the same
       * number, differing from the input in at most 8 bytes (the rate and
       * the CRC of one page), and only for a rate no Opus decoder runs at. */
      guint32 old_rate = 0;
      guint8 *fixed = ms_ogg_fix_opus_head_rate (msg, size - 1, &old_rate);
      if (fixed && pages > 0) {
        guint diff = 0;
        if (ms_ogg_check_pages (fixed, size - 1, NULL) != pages)
          __builtin_trap ();
        for (size_t i = 0; i < size - 1; i++)
          diff += fixed[i] != msg[i];
        if (diff == 0 || diff > 8 || old_rate == 24000 || old_rate == 48000
            || old_rate == 16000 || old_rate == 12000 || old_rate == 8000
            || old_rate == 0)
          __builtin_trap ();
      }
      g_free (fixed);
      break;
    }
    case MS_KIND_COLORED_TEXT:
      if (size > 2) {
        GBytes *b =
            ms_message_colored_text (msg[0], (const gchar *) msg + 1, size - 2);
        gsize n;
        const guint8 *p = g_bytes_get_data (b, &n);
        if (n != size || p[0] != MS_KIND_COLORED_TEXT || p[1] > 10)
          __builtin_trap ();
        g_bytes_unref (b);
      }
      break;
    default: {
      GBytes *b = ms_message_new (data[0], msg, size - 1);
      if (g_bytes_get_size (b) != size)
        __builtin_trap ();
      g_bytes_unref (b);
      break;
    }
  }
  g_free (msg);
  return 0;
}
