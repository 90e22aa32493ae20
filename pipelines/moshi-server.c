/* moshi-server: talk to Moshi from a web browser.
 *
 * An HTTP + websocket server (libsoup 3) that speaks Kyutai's protocol on
 * /api/chat, so Kyutai's own web client works against it unchanged, and
 * serves our small page (pipelines/web/) on /.  Every conversation is a
 * GStreamer pipeline of our elements (pipelines/server/session.c):
 *
 *   client --ws kind 1: Ogg Opus 24 kHz--> appsrc ! oggdemux ! opusdec
 *     ! audioconvert ! audioresample ! audio/x-raw,rate=24000,channels=1
 *     ! mimienc ! moshilm name=lm ! queue ! mimidec ! audioconvert
 *     ! audioresample ! opusenc ! oggmux ! appsink --ws kind 1--> client
 *   lm.text_src ! queue ! appsink --ws kind 2 (kind 7 with MoshiVis)--> client
 *
 * All sessions name the same model files, so the plugin's model cache keeps
 * one copy of the weights; the server holds the models loaded between
 * sessions.  Protocol details, options and security notes: docs/server.md.
 *
 * Files: moshi-server.c (options, HTTP and websocket front),
 *        server/protocol.c (message kinds, Ogg page checks, query params),
 *        server/session.c (the pipeline of one session),
 *        server/image.c (a client's picture, decoded off the main loop in
 *          a process of its own, moshi-picture-decoder.c),
 *        server/models.c (default model lookup, as pipelines/env.sh).
 *
 * Usage: moshi-server [--host 127.0.0.1] [--port 8998] [--model M]
 *          [--mimi-model M] [--max-sessions N] [--token T] ...
 *        then open http://127.0.0.1:8998/ */
#include "server/image.h"
#include "server/models.h"
#include "server/protocol.h"
#include "server/session.h"

#include <glib-unix.h>
#include <gst/gst.h>
#include <libsoup/soup.h>
#include <stdio.h>
#include <string.h>

#ifndef MOSHI_SOURCE_ROOT
#define MOSHI_SOURCE_ROOT "."
#endif
#ifndef MOSHI_BUILD_PLUGIN_DIR
#define MOSHI_BUILD_PLUGIN_DIR ""
#endif
#ifndef MOSHI_WEB_ROOT_INSTALLED
#define MOSHI_WEB_ROOT_INSTALLED ""
#endif

/* Close code for "server busy".  1013 (try again later) is registered but
 * libsoup clients reject it, so: policy violation. */
#define CLOSE_BUSY SOUP_WEBSOCKET_CLOSE_POLICY_VIOLATION

typedef struct {
  gchar *host, *model, *mimi_model, *quantize, *cert, *key, *token, *web_root;
  gint port, threads, max_sessions, idle_timeout, max_message_kb, max_queued_kb;
  gboolean vision;
} Options;

typedef struct {
  Options opt;
  SoupServer *server;
  GMainLoop *loop;
  GstElement *models; /* keeps the weights loaded */
  GHashTable *clients; /* Client* set */
  guint next_id;
  guint64 sessions_total;
  gchar *web_root_canon;
  guint decodes; /* pictures being decoded (see Decode) */
} Server;

typedef struct _Decode Decode;

typedef struct {
  Server *srv;
  guint id;
  gchar *peer;
  SoupWebsocketConnection *ws;
  MsSession *session;
  GBytes *image; /* vision: the last picture given to the session */
  GBytes *url_image; /* vision: read from image_url, not yet used */
  Decode *decoding; /* vision: the picture being decoded, or NULL */
  GBytes *next_image; /* vision: the newest picture waiting for it */
  MsParams params;
  gboolean handshaken, closing;
  gint64 started, last_rx;
  guint idle_timer, start_idle;
  guint64 audio_in, audio_out, text_out, bytes_in;
} Client;

static void slog (const gchar *fmt, ...) G_GNUC_PRINTF (1, 2);

static void
slog (const gchar *fmt, ...)
{
  GDateTime *now = g_date_time_new_now_utc ();
  gchar *ts = g_date_time_format (now, "%H:%M:%S.%f");
  va_list ap;

  ts[12] = '\0'; /* milliseconds */
  fprintf (stderr, "%s moshi-server: ", ts);
  va_start (ap, fmt);
  vfprintf (stderr, fmt, ap);
  va_end (ap);
  fputc ('\n', stderr);
  g_free (ts);
  g_date_time_unref (now);
}

static gboolean
ws_open (Client *c)
{
  return c->ws
      && soup_websocket_connection_get_state (c->ws)
      == SOUP_WEBSOCKET_STATE_OPEN;
}

static void
send_bytes (Client *c, GBytes *msg)
{
  if (ws_open (c))
    soup_websocket_connection_send_message (c->ws, SOUP_WEBSOCKET_DATA_BINARY,
        msg);
  g_bytes_unref (msg);
}

/* A client's picture being decoded off the main loop (in a process of its
 * own, ms_image_decode_async): a large picture takes up to seconds, and
 * every other session must go on meanwhile.  The result comes back in the
 * main context (picture_decoded).  The client may be gone by then:
 * client_fail () and client_free () cancel its decode and forget it
 * (cancel_decode), and picture_decoded () touches the client only when
 * the decode was not cancelled; both run in the main context, so the
 * check cannot race with the free.  Server.decodes counts the decodes not
 * yet back, which the shutdown waits for (a cancelled decode comes back
 * once its process is killed and reaped). */
struct _Decode {
  Server *srv;
  Client *c; /* valid while cancel is not cancelled */
  GCancellable *cancel;
  GBytes *bytes;
};

/* The client wants no more pictures (it ends, or is freed). */
static void
cancel_decode (Client *c)
{
  if (c->decoding) {
    g_cancellable_cancel (c->decoding->cancel);
    c->decoding = NULL; /* freed by picture_decoded */
  }
  g_clear_pointer (&c->next_image, g_bytes_unref);
}

static void
stop_session (Client *c)
{
  if (c->session) {
    ms_session_free (c->session);
    c->session = NULL;
  }
}

/* Ends a session: kind-5 error (if any) then a clean close. */
static void
client_fail (Client *c, gushort code, const gchar *why)
{
  if (c->closing)
    return;
  c->closing = TRUE;
  slog ("session %u: error: %s", c->id, why);
  cancel_decode (c);
  stop_session (c);
  if (ws_open (c)) {
    send_bytes (c, ms_message_error (why));
    soup_websocket_connection_close (c->ws, code, NULL);
  }
}

static void
client_free (Client *c)
{
  cancel_decode (c);
  stop_session (c);
  if (c->idle_timer)
    g_source_remove (c->idle_timer);
  if (c->start_idle)
    g_source_remove (c->start_idle);
  if (c->ws) {
    g_signal_handlers_disconnect_by_data (c->ws, c);
    g_object_unref (c->ws);
  }
  ms_params_clear (&c->params);
  g_clear_pointer (&c->image, g_bytes_unref);
  g_clear_pointer (&c->url_image, g_bytes_unref);
  g_free (c->peer);
  g_free (c);
}

/* --- session callbacks (main context) ----------------------------------- */

static void
on_session_audio (GBytes *pages, gpointer user)
{
  Client *c = user;

  c->audio_out++;
  send_bytes (c,
      ms_message_new (MS_KIND_AUDIO, g_bytes_get_data (pages, NULL),
          g_bytes_get_size (pages)));
}

static void
on_session_text (const gchar *utf8, gsize len, gint gate, gpointer user)
{
  Client *c = user;

  c->text_out++;
  if (gate >= 0)
    send_bytes (c, ms_message_colored_text ((guint) gate, utf8, len));
  else
    send_bytes (c, ms_message_new (MS_KIND_TEXT, utf8, len));
}

static void
on_session_error (const gchar *message, gpointer user)
{
  client_fail (user, SOUP_WEBSOCKET_CLOSE_SERVER_ERROR, message);
}

/* Builds the pipeline (picture: the first picture of a vision session,
 * decoded), then sends the handshake and the settings in use. */
static gboolean
start_session (Client *c, GstSample *picture)
{
  Server *srv = c->srv;
  MsSessionConfig cfg = {
    .mimi_model = srv->opt.mimi_model,
    .lm_model = srv->opt.model,
    .quantize = srv->opt.quantize,
    .threads = srv->opt.threads,
    .vision = srv->opt.vision,
    .max_queued_bytes = (gsize) srv->opt.max_queued_kb * 1024,
  };
  gchar *name = g_strdup_printf ("session %u", c->id);
  MsSessionCallbacks cb = { on_session_audio, on_session_text,
    on_session_error };
  GError *err = NULL;
  gchar *meta;

  cfg.name = name;
  c->session = ms_session_new (&cfg, &c->params, picture, &cb, c, &err);
  g_free (name);
  if (!c->session) {
    gchar *why = g_strdup_printf ("cannot start the session: %s", err->message);

    client_fail (c, SOUP_WEBSOCKET_CLOSE_SERVER_ERROR, why);
    g_free (why);
    g_error_free (err);
    return FALSE;
  }
  send_bytes (c, ms_message_handshake ());
  c->handshaken = TRUE;
  meta = ms_session_metadata_json (c->session);
  send_bytes (c, ms_message_new (MS_KIND_METADATA, meta, strlen (meta)));
  slog ("session %u: ready, %s", c->id, meta);
  g_free (meta);
  return TRUE;
}

/* --- pictures (vision) --------------------------------------------------- */

/* A decoded picture (or its error) for a client that wants it: the first
 * one starts the session, later ones go to it.  FALSE when the client
 * ends (do not touch it any more). */
static gboolean
picture_ready (Client *c, GBytes *bytes, GstSample *sample, const GError *err)
{
  if (!c->session && !sample) {
    gchar *why = g_strdup_printf ("cannot start the session: %s", err->message);

    client_fail (c, SOUP_WEBSOCKET_CLOSE_SERVER_ERROR, why);
    g_free (why);
    return FALSE;
  }
  if (!c->session) {
    if (!start_session (c, sample))
      return FALSE;
  } else if (!sample) {
    client_fail (c, SOUP_WEBSOCKET_CLOSE_BAD_DATA, err->message);
    return FALSE;
  } else {
    ms_session_push_picture (c->session, sample, NULL);
  }
  g_clear_pointer (&c->image, g_bytes_unref);
  c->image = g_bytes_ref (bytes);
  return TRUE;
}

static void picture_decoded (GObject *src, GAsyncResult *res, gpointer data);

static void
decode_start (Client *c, GBytes *img)
{
  Decode *d = g_new0 (Decode, 1);

  d->srv = c->srv;
  d->c = c;
  d->cancel = g_cancellable_new ();
  d->bytes = g_bytes_ref (img);
  c->decoding = d;
  c->srv->decodes++;
  ms_image_decode_async (img, d->cancel, picture_decoded, d);
}

static void
picture_decoded (GObject *src, GAsyncResult *res, gpointer data)
{
  Decode *d = data;
  GError *err = NULL;
  GstSample *sample = ms_image_decode_finish (res, &err);

  (void) src;
  d->srv->decodes--;
  if (!g_cancellable_is_cancelled (d->cancel)) {
    Client *c = d->c;

    c->decoding = NULL;
    if (picture_ready (c, d->bytes, sample, err) && c->next_image) {
      GBytes *next = g_steal_pointer (&c->next_image);

      decode_start (c, next);
      g_bytes_unref (next);
    }
  }
  if (sample)
    gst_sample_unref (sample);
  g_clear_error (&err);
  g_object_unref (d->cancel);
  g_bytes_unref (d->bytes);
  g_free (d);
}

/* A picture from the client (kind 8, or the file image_url names): the
 * first one starts the session once decoded, a later one is what the model
 * looks at from then on (a camera rig's case; Kyutai's servers ignore it or
 * restart).  Order: one decode at a time per client, pictures taken in
 * the order they came; one that comes while another decodes waits for it,
 * and a newer one replaces it (the one in between is skipped: the last one
 * wins).  Every picture that is decoded is used, or its error ends the
 * session, as when decoding was done in place. */
static void
take_picture (Client *c, GBytes *img)
{
  GBytes *newest = c->next_image ? c->next_image
      : c->decoding              ? c->decoding->bytes
                                 : c->image;
  gsize n = g_bytes_get_size (img);

  if (newest && g_bytes_equal (newest, img)) {
    /* kyutai-labs/moshivis's client sends its picture twice (two runs of
     * its sending effect race): decoding and encoding it again would only
     * cost CPU. */
    slog ("session %u: the same image again (%" G_GSIZE_FORMAT
          " bytes), ignored",
        c->id, n);
  } else if (c->decoding) {
    slog ("session %u: %s, %" G_GSIZE_FORMAT
          " bytes: waits for the one being decoded%s",
        c->id, c->session ? "new image" : "image", n,
        c->next_image ? " (replaces the one waiting)" : "");
    g_clear_pointer (&c->next_image, g_bytes_unref);
    c->next_image = g_bytes_ref (img);
  } else {
    slog ("session %u: %s, %" G_GSIZE_FORMAT " bytes", c->id,
        c->session ? "new image" : "image", n);
    decode_start (c, img);
  }
}

static gboolean
start_idle_cb (gpointer data)
{
  Client *c = data;

  c->start_idle = 0;
  if (c->closing || c->session || c->decoding)
    return G_SOURCE_REMOVE;
  if (!c->srv->opt.vision) {
    start_session (c, NULL);
  } else if (c->url_image) {
    GBytes *img = g_steal_pointer (&c->url_image);

    take_picture (c, img);
    g_bytes_unref (img);
  }
  return G_SOURCE_REMOVE;
}

/* --- websocket ----------------------------------------------------------- */

static void
on_ws_message (SoupWebsocketConnection *ws, gint type, GBytes *message,
    gpointer data)
{
  Client *c = data;
  gsize len;
  const guint8 *p = g_bytes_get_data (message, &len);
  GError *err = NULL;

  c->last_rx = g_get_monotonic_time ();
  c->bytes_in += len;
  if (c->closing)
    return;
  if (type != SOUP_WEBSOCKET_DATA_BINARY) {
    slog ("session %u: text websocket message ignored (%" G_GSIZE_FORMAT
          " bytes)",
        c->id, len);
    return;
  }
  if (len == 0) {
    slog ("session %u: empty message ignored", c->id);
    return;
  }
  switch (p[0]) {
    case MS_KIND_AUDIO:
      if (!c->handshaken || !c->session) {
        client_fail (c, SOUP_WEBSOCKET_CLOSE_POLICY_VIOLATION,
            "audio before the handshake");
        return;
      }
      if (!ms_ogg_check_pages (p + 1, len - 1, &err)) {
        client_fail (c, SOUP_WEBSOCKET_CLOSE_BAD_DATA, err->message);
        g_error_free (err);
        return;
      }
      {
        /* opus-recorder (Kyutai's client) writes the AudioContext's rate,
         * e.g. 44100, in OpusHead: protocol.h says why it is rewritten. */
        guint32 old_rate = 0;
        guint8 *fixed = c->audio_in == 0
            ? ms_ogg_fix_opus_head_rate (p + 1, len - 1, &old_rate)
            : NULL;
        gboolean ok;

        if (fixed)
          slog ("session %u: OpusHead input rate %u Hz read as 24000 Hz "
                "(informational field; not an Opus decoder rate)",
              c->id, old_rate);
        ok = ms_session_push_audio (c->session, fixed ? fixed : p + 1, len - 1,
            &err);
        g_free (fixed);
        if (!ok) {
          client_fail (c, SOUP_WEBSOCKET_CLOSE_BAD_DATA, err->message);
          g_error_free (err);
          return;
        }
      }
      c->audio_in++;
      break;
    case MS_KIND_IMAGE:
      if (!c->srv->opt.vision) {
        slog ("session %u: image (%" G_GSIZE_FORMAT
              " bytes) ignored: not a vision model",
            c->id, len - 1);
      } else if (c->handshaken && !c->session) {
        slog ("session %u: image ignored: no session", c->id);
      } else {
        /* The first picture, or a new one mid-conversation: see
         * take_picture. */
        GBytes *img = g_bytes_new_from_bytes (message, 1, len - 1);

        take_picture (c, img);
        g_bytes_unref (img);
      }
      break;
    case MS_KIND_CONTROL:
      slog ("session %u: control %d ignored (full streaming mode)", c->id,
          len > 1 ? p[1] : -1);
      break;
    case MS_KIND_PING:
      break;
    case MS_KIND_METADATA:
    case MS_KIND_TEXT:
    case MS_KIND_HANDSHAKE:
    case MS_KIND_ERROR:
      slog ("session %u: kind %d from the client ignored", c->id, p[0]);
      break;
    default:
      slog ("session %u: unknown kind %d ignored", c->id, p[0]);
      break;
  }
}

static void
on_ws_error (SoupWebsocketConnection *ws, GError *error, gpointer data)
{
  Client *c = data;

  slog ("session %u: websocket error: %s", c->id, error->message);
}

static void
on_ws_closed (SoupWebsocketConnection *ws, gpointer data)
{
  Client *c = data;
  gdouble secs = (g_get_monotonic_time () - c->started) / 1e6;

  slog ("session %u: end (%s, %.1f s, close code %u; in: %" G_GUINT64_FORMAT
        " audio messages, %" G_GUINT64_FORMAT " bytes; out: %" G_GUINT64_FORMAT
        " audio, %" G_GUINT64_FORMAT " text)",
      c->id, c->peer, secs, soup_websocket_connection_get_close_code (ws),
      c->audio_in, c->bytes_in, c->audio_out, c->text_out);
  g_hash_table_remove (c->srv->clients, c);
}

static gboolean
idle_check (gpointer data)
{
  Client *c = data;
  gint64 quiet = g_get_monotonic_time () - c->last_rx;

  if (!c->closing && quiet > (gint64) c->srv->opt.idle_timeout * G_USEC_PER_SEC)
    client_fail (c, SOUP_WEBSOCKET_CLOSE_POLICY_VIOLATION,
        "idle timeout: nothing received for too long");
  return G_SOURCE_CONTINUE;
}

static gboolean
token_equal (const gchar *a, const gchar *b)
{
  gsize la = strlen (a), lb = strlen (b);
  guint diff = la != lb;

  for (gsize i = 0; i < lb; i++)
    diff |= (guint) (guchar) a[i % (la ? la : 1)] ^ (guchar) b[i];
  return diff == 0;
}

static gboolean
authorized (Server *srv, SoupServerMessage *msg, GHashTable *query)
{
  const gchar *want = srv->opt.token, *got;

  if (!want || !*want)
    return TRUE;
  got = soup_message_headers_get_one (soup_server_message_get_request_headers (
                                          msg),
      "Authorization");
  if (got && g_str_has_prefix (got, "Bearer ") && token_equal (got + 7, want))
    return TRUE;
  for (guint i = 0; i < 2 && query; i++) {
    got = g_hash_table_lookup (query, i ? "worker_auth_id" : "token");
    if (got && token_equal (got, want))
      return TRUE;
  }
  return FALSE;
}

/* The contents of a regular file under the web root (path from the URL,
 * "/" = index.html), or NULL. */
static gchar *
web_root_read (Server *srv, const gchar *path, gsize *len, gchar **canon_out)
{
  gchar *file, *canon, *contents = NULL;

  if (!path || path[0] != '/' || strstr (path, "..") || strchr (path, '\\'))
    return NULL;
  file = g_build_filename (srv->web_root_canon,
      strcmp (path, "/") ? path : "/index.html", NULL);
  canon = g_canonicalize_filename (file, NULL);
  g_free (file);
  if (!g_str_has_prefix (canon, srv->web_root_canon)
      || !g_file_test (canon, G_FILE_TEST_IS_REGULAR)
      || !g_file_get_contents (canon, &contents, len, NULL)) {
    g_free (canon);
    return NULL;
  }
  if (canon_out)
    *canon_out = canon;
  else
    g_free (canon);
  return contents;
}

static void
on_websocket (SoupServer *server, SoupServerMessage *msg, const char *path,
    SoupWebsocketConnection *ws, gpointer data)
{
  Server *srv = data;
  Client *c = g_new0 (Client, 1);
  GUri *uri = soup_server_message_get_uri (msg);
  const gchar *q = g_uri_get_query (uri);
  GHashTable *query =
      q ? g_uri_parse_params (q, -1, "&", G_URI_PARAMS_NONE, NULL) : NULL;
  const gchar *host = soup_server_message_get_remote_host (msg);

  c->srv = srv;
  c->id = ++srv->next_id;
  c->peer = g_strdup (host ? host : "?");
  c->ws = g_object_ref (ws);
  c->started = c->last_rx = g_get_monotonic_time ();
  ms_params_init (&c->params);
  g_hash_table_add (srv->clients, c);
  g_signal_connect (ws, "message", G_CALLBACK (on_ws_message), c);
  g_signal_connect (ws, "error", G_CALLBACK (on_ws_error), c);
  g_signal_connect (ws, "closed", G_CALLBACK (on_ws_closed), c);
  soup_websocket_connection_set_max_incoming_payload_size (ws,
      (guint64) srv->opt.max_message_kb * 1024);
  c->idle_timer = g_timeout_add_seconds (1, idle_check, c);
  srv->sessions_total++;
  slog ("session %u: start from %s (%u open)", c->id, c->peer,
      g_hash_table_size (srv->clients));

  if (!authorized (srv, msg, query)) {
    client_fail (c, SOUP_WEBSOCKET_CLOSE_POLICY_VIOLATION,
        "unauthorized: missing or wrong access token");
  } else if ((gint) g_hash_table_size (srv->clients) > srv->opt.max_sessions) {
    gchar *why = g_strdup_printf ("server busy: %d sessions already, try "
                                  "again later",
        srv->opt.max_sessions);

    client_fail (c, CLOSE_BUSY, why);
    g_free (why);
  } else {
    ms_params_parse (&c->params, query);
    if (c->params.ignored->len)
      slog ("session %u: parameters not supported, ignored: %s", c->id,
          c->params.ignored->str);
    if (c->params.invalid->len)
      slog ("session %u: invalid parameters, ignored: %s", c->id,
          c->params.invalid->str);
    /* kyutai-labs/moshi's client, in its vision mode, names a picture of
     * its own page (image_url) instead of sending it (kind 8): read it
     * from the web root. */
    if (c->params.image_url && !srv->opt.vision) {
      slog ("session %u: image_url ignored: not a vision model", c->id);
    } else if (c->params.image_url) {
      gsize n = 0;
      gchar *img = web_root_read (srv, c->params.image_url, &n, NULL);
      gchar *safe = g_strescape (c->params.image_url, NULL);

      if (img) {
        slog ("session %u: image from image_url %s, %" G_GSIZE_FORMAT " bytes",
            c->id, safe, n);
        c->url_image = g_bytes_new_take (img, n);
      } else {
        slog ("session %u: image_url %s: no such file in the web root; "
              "waiting for an image (kind 8)",
            c->id, safe);
      }
      g_free (safe);
    }
    /* The handshake goes out when the pipeline runs: from the loop, so
     * that the upgrade response is sent first. A vision session waits
     * for its image (kind 8) instead, unless image_url gave one. */
    if (!srv->opt.vision || c->url_image)
      c->start_idle = g_idle_add (start_idle_cb, c);
  }
  if (query)
    g_hash_table_unref (query);
}

/* --- static files -------------------------------------------------------- */

static const gchar *
mime_type (const gchar *path)
{
  static const gchar *map[][2] = { { ".html", "text/html; charset=utf-8" },
    { ".js", "text/javascript; charset=utf-8" },
    { ".mjs", "text/javascript; charset=utf-8" },
    { ".css", "text/css; charset=utf-8" }, { ".json", "application/json" },
    { ".wasm", "application/wasm" }, { ".png", "image/png" },
    { ".jpg", "image/jpeg" }, { ".svg", "image/svg+xml" },
    { ".ico", "image/x-icon" }, { ".woff2", "font/woff2" },
    { ".txt", "text/plain; charset=utf-8" } };

  for (guint i = 0; i < G_N_ELEMENTS (map); i++)
    if (g_str_has_suffix (path, map[i][0]))
      return map[i][1];
  return "application/octet-stream";
}

static void
on_http (SoupServer *server, SoupServerMessage *msg, const char *path,
    GHashTable *query, gpointer data)
{
  Server *srv = data;
  const gchar *method = soup_server_message_get_method (msg);
  gchar *canon = NULL, *contents;
  gsize len = 0;
  SoupMessageHeaders *h = soup_server_message_get_response_headers (msg);

  if (strcmp (method, "GET") != 0 && strcmp (method, "HEAD") != 0) {
    soup_server_message_set_status (msg, SOUP_STATUS_METHOD_NOT_ALLOWED, NULL);
    return;
  }
  contents = web_root_read (srv, path, &len, &canon);
  if (!contents) {
    soup_server_message_set_status (msg, SOUP_STATUS_NOT_FOUND, NULL);
  } else {
    soup_message_headers_replace (h, "Cache-Control", "no-cache");
    soup_message_headers_replace (h, "X-Content-Type-Options", "nosniff");
    soup_server_message_set_response (msg, mime_type (canon), SOUP_MEMORY_TAKE,
        contents, len);
    contents = NULL;
    soup_server_message_set_status (msg, SOUP_STATUS_OK, NULL);
  }
  g_free (contents);
  g_free (canon);
}

/* --- main ---------------------------------------------------------------- */

static gchar *
find_web_root (const gchar *opt)
{
  const gchar *env = g_getenv ("MOSHI_WEB_ROOT");
  gchar *src = g_build_filename (MOSHI_SOURCE_ROOT, "pipelines", "web", NULL);
  const gchar *cands[] = { opt, env, MOSHI_WEB_ROOT_INSTALLED, src };
  gchar *found = NULL;

  for (guint i = 0; i < G_N_ELEMENTS (cands) && !found; i++) {
    gchar *index;

    if (!cands[i] || !*cands[i])
      continue;
    index = g_build_filename (cands[i], "index.html", NULL);
    if (g_file_test (index, G_FILE_TEST_IS_REGULAR) || i == 0)
      found = g_canonicalize_filename (cands[i], NULL);
    g_free (index);
  }
  g_free (src);
  return found;
}

static gboolean
have_element (const gchar *name)
{
  GstElementFactory *f = gst_element_factory_find (name);

  if (f)
    gst_object_unref (f);
  return f != NULL;
}

static gboolean
on_signal (gpointer data)
{
  Server *srv = data;

  slog ("stopping");
  g_main_loop_quit (srv->loop);
  return G_SOURCE_REMOVE;
}

int
main (int argc, char **argv)
{
  Server srv = { 0 };
  Options *o = &srv.opt;
  gboolean tiny = FALSE;
  GError *err = NULL;
  int status = 0;
  GOptionEntry entries[] = { { "host", 0, 0, G_OPTION_ARG_STRING, &o->host,
                                 "Address to listen on (default 127.0.0.1)",
                                 "ADDR" },
    { "port", 0, 0, G_OPTION_ARG_INT, &o->port,
        "TCP port (default 8998; 0 = any free port)", "PORT" },
    { "model", 0, 0, G_OPTION_ARG_STRING, &o->model,
        "Moshi LM, as moshilm's model property (file, folder or HF repo id)",
        "M" },
    { "mimi-model", 0, 0, G_OPTION_ARG_STRING, &o->mimi_model,
        "Mimi codec, as mimienc's model property", "M" },
    { "quantize", 0, 0, G_OPTION_ARG_STRING, &o->quantize,
        "none, bf16, q8 or q4 (default none)", "Q" },
    { "threads", 0, 0, G_OPTION_ARG_INT, &o->threads,
        "Compute threads per session for moshilm (default 1)", "N" },
    { "max-sessions", 0, 0, G_OPTION_ARG_INT, &o->max_sessions,
        "Concurrent conversations (default 4); more get an error", "N" },
    { "max-message-kb", 0, 0, G_OPTION_ARG_INT, &o->max_message_kb,
        "Largest websocket message accepted, KiB (default 1024)", "KB" },
    { "max-queued-kb", 0, 0, G_OPTION_ARG_INT, &o->max_queued_kb,
        "Input audio waiting for the model before the session is ended, "
        "KiB (default 2048)",
        "KB" },
    { "idle-timeout", 0, 0, G_OPTION_ARG_INT, &o->idle_timeout,
        "Close a session after this many seconds without a message "
        "(default 30)",
        "S" },
    { "cert", 0, 0, G_OPTION_ARG_FILENAME, &o->cert,
        "TLS certificate (PEM); with --key, serve https/wss", "FILE" },
    { "key", 0, 0, G_OPTION_ARG_FILENAME, &o->key, "TLS private key (PEM)",
        "FILE" },
    { "token", 0, 0, G_OPTION_ARG_STRING, &o->token,
        "Access token required on /api/chat (also $MOSHI_SERVER_TOKEN)", "T" },
    { "web-root", 0, 0, G_OPTION_ARG_FILENAME, &o->web_root,
        "Folder of the page served on / (default: the installed or source "
        "pipelines/web)",
        "DIR" },
    { "vision", 0, 0, G_OPTION_ARG_NONE, &o->vision,
        "MoshiVis model: an image (kind 8) starts each session", NULL },
    { NULL } };
  GOptionContext *ctx = g_option_context_new ("- Moshi web dialog server");

  o->port = 8998;
  o->threads = 1;
  o->max_sessions = 4;
  o->max_message_kb = 1024;
  o->max_queued_kb = 2048;
  o->idle_timeout = 30;
  g_option_context_add_main_entries (ctx, entries, NULL);
  g_option_context_add_group (ctx, gst_init_get_option_group ());
  if (!g_option_context_parse (ctx, &argc, &argv, &err)) {
    g_printerr ("moshi-server: %s\n", err->message);
    return 2;
  }
  g_option_context_free (ctx);
  if (!o->host)
    o->host = g_strdup ("127.0.0.1");
  if (!o->quantize)
    o->quantize = g_strdup ("none");
  if (!o->token && g_getenv ("MOSHI_SERVER_TOKEN"))
    o->token = g_strdup (g_getenv ("MOSHI_SERVER_TOKEN"));
  if (o->max_sessions < 1 || o->threads < 1 || o->idle_timeout < 1
      || o->max_message_kb < 1 || o->max_queued_kb < 1 || o->port < 0
      || o->port > 65535 || (!o->cert != !o->key)) {
    g_printerr ("moshi-server: invalid option value (see --help)\n");
    return 2;
  }

  /* Run from the build tree without GST_PLUGIN_PATH: use the plugin built
   * next to this program. */
  if (!have_element ("moshilm")) {
    gst_registry_scan_path (gst_registry_get (), MOSHI_BUILD_PLUGIN_DIR);
    if (!have_element ("moshilm")) {
      g_printerr ("moshi-server: the gst-moshi plugin (moshilm) is not "
                  "installed: set GST_PLUGIN_PATH to its folder\n");
      return 1;
    }
  }
  srv.web_root_canon = find_web_root (o->web_root);
  if (!srv.web_root_canon) {
    g_printerr ("moshi-server: no web page found: pass --web-root\n");
    return 1;
  }
  if (!ms_models_find (o->vision, &o->model, &o->mimi_model, &tiny, &err)) {
    g_printerr ("moshi-server: %s\n", err->message);
    return 1;
  }
  {
    MsSessionConfig cfg = { .mimi_model = o->mimi_model,
      .lm_model = o->model,
      .quantize = o->quantize,
      .threads = o->threads,
      .vision = o->vision };

    slog ("loading %s and %s (quantize %s)", o->model, o->mimi_model,
        o->quantize);
    srv.models = ms_models_hold (&cfg, &err);
    if (!srv.models) {
      g_printerr ("moshi-server: %s\n", err->message);
      return 1;
    }
  }

  srv.clients =
      g_hash_table_new_full (NULL, NULL, (GDestroyNotify) client_free, NULL);
  srv.server = soup_server_new ("server-header", "gst-moshi", NULL);
  if (o->cert) {
    GTlsCertificate *cert =
        g_tls_certificate_new_from_files (o->cert, o->key, &err);

    if (!cert) {
      g_printerr ("moshi-server: TLS: %s\n", err->message);
      return 1;
    }
    soup_server_set_tls_certificate (srv.server, cert);
    g_object_unref (cert);
  }
  soup_server_add_websocket_handler (srv.server, "/api/chat", NULL, NULL,
      on_websocket, &srv, NULL);
  soup_server_add_handler (srv.server, NULL, on_http, &srv, NULL);
  {
    GInetAddress *addr = g_inet_address_new_from_string (o->host);
    GSocketAddress *sa;
    GSList *uris;

    if (!addr) {
      GResolver *r = g_resolver_get_default ();
      GList *l = g_resolver_lookup_by_name (r, o->host, NULL, &err);

      g_object_unref (r);
      if (!l) {
        g_printerr ("moshi-server: %s\n", err->message);
        return 1;
      }
      addr = g_object_ref (l->data);
      g_resolver_free_addresses (l);
    }
    sa = g_inet_socket_address_new (addr, (guint16) o->port);
    g_object_unref (addr);
    if (!soup_server_listen (srv.server, sa,
            o->cert ? SOUP_SERVER_LISTEN_HTTPS : 0, &err)) {
      g_printerr ("moshi-server: cannot listen on %s:%d: %s\n", o->host,
          o->port, err->message);
      g_object_unref (sa);
      return 1;
    }
    g_object_unref (sa);
    uris = soup_server_get_uris (srv.server);
    for (GSList *l = uris; l; l = l->next) {
      gchar *s = g_uri_to_string (l->data);

      /* Scripts and tests read this line (port 0 = chosen here). */
      printf ("moshi-server: listening on %s\n", s);
      g_free (s);
    }
    fflush (stdout);
    g_slist_free_full (uris, (GDestroyNotify) g_uri_unref);
  }
  slog ("page from %s; max %d sessions%s%s", srv.web_root_canon,
      o->max_sessions, o->token ? "; access token required" : "",
      tiny ? "; TINY RANDOM-WEIGHT MODELS (replies are not meaningful)" : "");

  srv.loop = g_main_loop_new (NULL, FALSE);
  g_unix_signal_add (SIGINT, on_signal, &srv);
  g_unix_signal_add (SIGTERM, on_signal, &srv);
  g_main_loop_run (srv.loop);

  /* Tell the clients (kind 5 + close "going away"), give them up to 2 s to
   * answer the close, then drop what is left. */
  {
    GList *open = g_hash_table_get_keys (srv.clients);
    gint64 deadline = g_get_monotonic_time () + 2 * G_USEC_PER_SEC;

    for (GList *l = open; l; l = l->next)
      client_fail (l->data, SOUP_WEBSOCKET_CLOSE_GOING_AWAY,
          "server shutting down");
    g_list_free (open);
    while (
        g_hash_table_size (srv.clients) && g_get_monotonic_time () < deadline)
      g_main_context_iteration (NULL, FALSE) || (g_usleep (10000), 0);
  }
  slog ("%" G_GUINT64_FORMAT " sessions served", srv.sessions_total);
  soup_server_disconnect (srv.server);
  g_hash_table_destroy (srv.clients);
  /* Pictures still being decoded (cancelled by client_free: they end
   * soon): their threads use GStreamer, which must outlive them. */
  while (srv.decodes > 0)
    g_main_context_iteration (NULL, TRUE);
  g_object_unref (srv.server);
  gst_element_set_state (srv.models, GST_STATE_NULL);
  gst_object_unref (srv.models);
  g_main_loop_unref (srv.loop);
  g_free (srv.web_root_canon);
  g_free (o->host);
  g_free (o->model);
  g_free (o->mimi_model);
  g_free (o->quantize);
  g_free (o->cert);
  g_free (o->key);
  g_free (o->token);
  g_free (o->web_root);
  gst_deinit ();
  return status;
}
