/* moshi-server: Kyutai's websocket protocol, as bytes.  See protocol.h. */
#include "protocol.h"

#include <stdlib.h>
#include <string.h>

GBytes *
ms_message_new (MsKind kind, const void *payload, gsize len)
{
  guint8 *buf = g_malloc (len + 1);

  buf[0] = (guint8) kind;
  if (len)
    memcpy (buf + 1, payload, len);
  return g_bytes_new_take (buf, len + 1);
}

GBytes *
ms_message_handshake (void)
{
  static const guint8 zeros[8] = { 0 };

  return ms_message_new (MS_KIND_HANDSHAKE, zeros, sizeof zeros);
}

GBytes *
ms_message_error (const gchar *text)
{
  return ms_message_new (MS_KIND_ERROR, text, strlen (text));
}

GBytes *
ms_message_colored_text (guint intensity, const gchar *text, gsize len)
{
  guint8 *buf = g_malloc (len + 2);

  buf[0] = MS_KIND_COLORED_TEXT;
  buf[1] = (guint8) MIN (intensity, 10);
  memcpy (buf + 2, text, len);
  return g_bytes_new_take (buf, len + 2);
}

static guint32 crc_table[256];

static gpointer
crc_table_init (gpointer unused)
{
  for (guint32 i = 0; i < 256; i++) {
    guint32 r = i << 24;
    for (int b = 0; b < 8; b++)
      r = (r & 0x80000000u) ? (r << 1) ^ 0x04c11db7u : r << 1;
    crc_table[i] = r;
  }
  return NULL;
}

guint32
ms_ogg_crc (const guint8 *data, gsize len)
{
  static GOnce once = G_ONCE_INIT;
  guint32 crc = 0;

  g_once (&once, crc_table_init, NULL);
  for (gsize i = 0; i < len; i++)
    crc = (crc << 8) ^ crc_table[((crc >> 24) ^ data[i]) & 0xff];
  return crc;
}

guint
ms_ogg_check_pages (const guint8 *data, gsize len, GError **error)
{
  guint pages = 0;
  gsize off = 0;

  if (len == 0) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
        "empty audio message");
    return 0;
  }
  while (off < len) {
    const guint8 *p = data + off;
    gsize left = len - off, hdr, body = 0, total;
    guint8 copy[27];
    guint32 crc, want;

    if (left < 27) {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
          "truncated Ogg page header (%" G_GSIZE_FORMAT " bytes)", left);
      return 0;
    }
    if (memcmp (p, "OggS", 4) != 0 || p[4] != 0) {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
          "not an Ogg page (bad capture pattern or version)");
      return 0;
    }
    hdr = 27 + (gsize) p[26];
    if (left < hdr) {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
          "truncated Ogg page (segment table)");
      return 0;
    }
    for (guint i = 0; i < p[26]; i++)
      body += p[27 + i];
    total = hdr + body;
    if (left < total) {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
          "truncated Ogg page (%" G_GSIZE_FORMAT " of %" G_GSIZE_FORMAT
          " bytes)",
          left, total);
      return 0;
    }
    want = (guint32) p[22] | (guint32) p[23] << 8 | (guint32) p[24] << 16
        | (guint32) p[25] << 24;
    memcpy (copy, p, 27);
    memset (copy + 22, 0, 4);
    crc = ms_ogg_crc (copy, 27);
    /* Continue the CRC over the rest of the page. */
    for (gsize i = 27; i < total; i++)
      crc = (crc << 8) ^ crc_table[((crc >> 24) ^ p[i]) & 0xff];
    if (crc != want) {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
          "Ogg page checksum mismatch");
      return 0;
    }
    off += total;
    pages++;
  }
  return pages;
}

static gboolean
is_opus_rate (guint32 r)
{
  return r == 0 || r == 8000 || r == 12000 || r == 16000 || r == 24000
      || r == 48000;
}

guint8 *
ms_ogg_fix_opus_head_rate (const guint8 *data, gsize len, guint32 *old_rate)
{
  gsize off = 0;

  while (off + 27 <= len) {
    const guint8 *p = data + off;
    gsize hdr = 27 + (gsize) p[26], body = 0;

    if (hdr > len - off)
      return NULL;
    for (guint i = 0; i < p[26]; i++)
      body += p[27 + i];
    if (hdr + body > len - off)
      return NULL;
    /* A BOS page whose first packet is an OpusHead (>= 19 bytes). */
    if ((p[5] & 0x02) && body >= 19 && p[26] > 0 && p[27] >= 19
        && !memcmp (p + hdr, "OpusHead", 8)) {
      const guint8 *r = p + hdr + 12;
      guint32 rate = (guint32) r[0] | (guint32) r[1] << 8 | (guint32) r[2] << 16
          | (guint32) r[3] << 24;

      if (!is_opus_rate (rate)) {
        guint8 *out = g_memdup2 (data, len), *q = out + off;
        guint32 crc;

        q[hdr + 12] = 24000 & 0xff;
        q[hdr + 13] = (24000 >> 8) & 0xff;
        q[hdr + 14] = 0;
        q[hdr + 15] = 0;
        memset (q + 22, 0, 4);
        crc = ms_ogg_crc (q, hdr + body);
        q[22] = crc & 0xff;
        q[23] = (crc >> 8) & 0xff;
        q[24] = (crc >> 16) & 0xff;
        q[25] = crc >> 24;
        if (old_rate)
          *old_rate = rate;
        return out;
      }
    }
    off += hdr + body;
  }
  return NULL;
}

void
ms_params_init (MsParams *p)
{
  memset (p, 0, sizeof *p);
  p->text_temperature = p->audio_temperature = -1;
  p->text_topk = p->audio_topk = -1;
  p->image_resolution = -1;
  p->xa_start = -1;
  p->center_crop = -1;
  p->ignored = g_string_new (NULL);
  p->invalid = g_string_new (NULL);
}

void
ms_params_clear (MsParams *p)
{
  if (p->ignored)
    g_string_free (p->ignored, TRUE);
  if (p->invalid)
    g_string_free (p->invalid, TRUE);
  p->ignored = p->invalid = NULL;
  g_clear_pointer (&p->image_url, g_free);
}

static void
note (GString *s, const gchar *k, const gchar *v)
{
  gchar *safe = g_strescape (v, NULL);

  if (strlen (safe) > 40)
    safe[40] = '\0';
  g_string_append_printf (s, "%s%s=%s", s->len ? ", " : "", k, safe);
  g_free (safe);
}

static gboolean
parse_double (const gchar *v, gdouble lo, gdouble hi, gdouble *out)
{
  gchar *end = NULL;
  gdouble d = g_ascii_strtod (v, &end);

  if (!*v || *end || !(d >= lo && d <= hi))
    return FALSE;
  *out = d;
  return TRUE;
}

static gboolean
parse_int (const gchar *v, gint64 lo, gint64 hi, gint64 *out)
{
  gchar *end = NULL;
  gint64 d;

  if (!*v)
    return FALSE;
  d = g_ascii_strtoll (v, &end, 10);
  if (*end || d < lo || d > hi)
    return FALSE;
  *out = d;
  return TRUE;
}

void
ms_params_parse (MsParams *p, GHashTable *query)
{
  GList *keys;

  if (!query)
    return;
  /* Sorted, so that the logs do not depend on hash order. */
  keys = g_list_sort (g_hash_table_get_keys (query), (GCompareFunc) strcmp);
  for (GList *l = keys; l; l = l->next) {
    const gchar *key = l->data, *val = g_hash_table_lookup (query, key);
    gdouble d;
    gint64 i;

    if (!val)
      val = "";
    if (!strcmp (key, "text_temperature")) {
      if (parse_double (val, 0, 100, &d))
        p->text_temperature = d;
      else
        note (p->invalid, key, val);
    } else if (!strcmp (key, "audio_temperature")) {
      if (parse_double (val, 0, 100, &d))
        p->audio_temperature = d;
      else
        note (p->invalid, key, val);
    } else if (!strcmp (key, "text_topk")) {
      if (parse_int (val, 0, G_MAXINT, &i))
        p->text_topk = (gint) i;
      else
        note (p->invalid, key, val);
    } else if (!strcmp (key, "audio_topk")) {
      if (parse_int (val, 0, G_MAXINT, &i))
        p->audio_topk = (gint) i;
      else
        note (p->invalid, key, val);
    } else if (!strcmp (key, "text_seed") || !strcmp (key, "audio_seed")) {
      /* moshilm has one sampler seed: text_seed wins when both are given. */
      gchar *end = NULL;
      guint64 s;

      if (!*val || val[0] == '-') {
        note (p->invalid, key, val);
        continue;
      }
      s = g_ascii_strtoull (val, &end, 10);
      if (*end) {
        note (p->invalid, key, val);
      } else if (!p->has_seed || !strcmp (key, "text_seed")) {
        p->seed = s;
        p->has_seed = TRUE;
      }
    } else if (!strcmp (key, "image_resolution")) {
      if (parse_int (val, 16, 4096, &i))
        p->image_resolution = (gint) i;
      else
        note (p->invalid, key, val);
    } else if (!strcmp (key, "xa_start")) {
      if (parse_int (val, 0, 100000, &i))
        p->xa_start = (gint) i;
      else
        note (p->invalid, key, val);
    } else if (!strcmp (key, "center_crop")) {
      if (!strcmp (val, "true") || !strcmp (val, "1"))
        p->center_crop = 1;
      else if (!strcmp (val, "false") || !strcmp (val, "0"))
        p->center_crop = 0;
      else
        note (p->invalid, key, val);
    } else if (!strcmp (key, "image_url")) {
      /* Only a path of our own web root: no scheme, no host ("//..."), no
       * "..", no backslash. */
      if (val[0] == '/' && val[1] != '/' && !strstr (val, "..")
          && !strchr (val, '\\') && strlen (val) < 1024) {
        g_free (p->image_url);
        p->image_url = g_strdup (val);
      } else {
        note (p->invalid, key, val);
      }
    } else if (!strcmp (key, "token") || !strcmp (key, "worker_auth_id")) {
      /* Access token: checked by the front, never logged. */
    } else {
      note (p->ignored, key, val);
    }
  }
  g_list_free (keys);
}
