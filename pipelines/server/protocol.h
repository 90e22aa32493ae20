/* moshi-server: Kyutai's websocket protocol, as bytes (no I/O here).
 *
 * One websocket binary message = one kind byte + payload:
 *   0 handshake (server -> client: u32 protocol version 0, u32 model
 *     version 0, little endian, as Kyutai's Rust server sends)
 *   1 audio: Ogg pages of Opus, 24 kHz mono (both ways)
 *   2 text: a UTF-8 piece of the model's words
 *   3 control (one byte), 4 metadata (UTF-8 JSON), 5 error (UTF-8),
 *   6 ping (no payload)
 *   7 coloured text (MoshiVis): gate intensity byte 0..10 + UTF-8
 *   8 image (MoshiVis, client -> server): the encoded image file
 * Unknown kinds are ignored. */
#pragma once

#include <gio/gio.h>

G_BEGIN_DECLS

typedef enum {
  MS_KIND_HANDSHAKE = 0,
  MS_KIND_AUDIO = 1,
  MS_KIND_TEXT = 2,
  MS_KIND_CONTROL = 3,
  MS_KIND_METADATA = 4,
  MS_KIND_ERROR = 5,
  MS_KIND_PING = 6,
  MS_KIND_COLORED_TEXT = 7,
  MS_KIND_IMAGE = 8,
} MsKind;

/* The largest Ogg page: 27-byte header + 255 lacing values + 255 * 255. */
#define MS_OGG_MAX_PAGE (27 + 255 + 255 * 255)

/* A message: kind byte followed by the payload. */
GBytes *ms_message_new (MsKind kind, const void *payload, gsize len);
/* Handshake as Kyutai's Rust server sends it: 0 + 8 zero bytes. */
GBytes *ms_message_handshake (void);
GBytes *ms_message_error (const gchar *text);
/* Kind 7: intensity clamped to 0..10, then the text. */
GBytes *ms_message_colored_text (guint intensity, const gchar *text, gsize len);

/* Ogg CRC-32 (polynomial 0x04c11db7, as in the page checksum) of data. */
guint32 ms_ogg_crc (const guint8 *data, gsize len);

/* Checks that data is one or more whole, well-formed Ogg pages (capture
 * pattern, version 0, length, CRC). Returns the number of pages, or 0
 * with error set. */
guint ms_ogg_check_pages (const guint8 *data, gsize len, GError **error);

/* Opus decoders run at 8, 12, 16, 24 or 48 kHz, and OpusHead's "input
 * sample rate" field is informational only (RFC 7845, 5.1): an encoder
 * writes there the rate of its source, e.g. 44100 from opus-recorder (Kyutai's
 * web client) on a 44.1 kHz AudioContext.  GStreamer's oggdemux puts it in
 * the caps (rate=44100), which opusdec then refuses.  data must be whole
 * pages (ms_ogg_check_pages).  When a BOS page holds an OpusHead whose rate
 * is not one of the five Opus rates (nor 0, unspecified), returns a copy
 * of data with that field set to 24000 (the protocol's rate) and the page
 * CRC recomputed, and the old value in *old_rate; else NULL. */
guint8 *ms_ogg_fix_opus_head_rate (const guint8 *data, gsize len,
    guint32 *old_rate);

/* Session settings from the /api/chat query (Kyutai's client names). */
typedef struct {
  gdouble text_temperature, audio_temperature; /* -1 = model default */
  gint text_topk, audio_topk; /* -1 = model default */
  gboolean has_seed;
  guint64 seed;
  gint image_resolution; /* -1 = unset */
  gint xa_start; /* MoshiVis gate delay in steps; -1 = unset */
  gint center_crop; /* MoshiVis: -1 = unset, 0 or 1 */
  /* MoshiVis: image_url as kyutai-labs/moshi's client sends it in its
   * vision mode (instead of a kind-8 image): a path of this server's web
   * root ("/assets/..."); NULL = unset.  Other URLs are refused (invalid):
   * the server fetches nothing from elsewhere. */
  gchar *image_url;
  /* Parameters received but not supported by moshilm: "name=value, ..." */
  GString *ignored;
  /* Malformed values: "name=value, ..." */
  GString *invalid;
} MsParams;

void ms_params_init (MsParams *p);
void ms_params_clear (MsParams *p);
/* Fills p from the decoded query (string -> string; may be NULL). */
void ms_params_parse (MsParams *p, GHashTable *query);

G_END_DECLS
