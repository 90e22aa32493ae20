/* A small client of moshi-server for its tests and load benchmark:
 * starts the server, makes Ogg Opus pages with GStreamer, talks
 * Kyutai's websocket protocol with libsoup. */
#pragma once

#include <gio/gio.h>
#include <libsoup/soup.h>

G_BEGIN_DECLS

typedef struct {
  GSubprocess *proc;
  gchar *url; /* http://127.0.0.1:PORT */
} TsServer;

/* GSubprocessLauncher child setup: the child (server, browser) dies with
 * its test, so an aborted test leaves nothing running (nor holding the
 * test's output pipes). */
void ts_child_setup (gpointer unused);

/* Starts build/pipelines/moshi-server with the tiny models and args
 * (NULL-terminated); waits for its "listening on" line. */
gboolean ts_server_start (TsServer *s, const gchar *const *args);
/* SIGTERM, then waits; returns the exit status (0 = clean). */
gint ts_server_stop (TsServer *s);
/* Resident memory of the server, KiB. */
gsize ts_server_rss_kb (TsServer *s);

/* Ogg pages (GBytes each, in order) of path encoded as Opus 24 kHz mono,
 * one 20 ms packet per page; *duration_s gets the audio length. */
GPtrArray *ts_make_ogg_pages (const gchar *path, gdouble *duration_s);
/* The same with page_ms of packets per page (0: one packet per page). */
GPtrArray *ts_make_ogg_pages_full (const gchar *path, guint page_ms,
    gdouble *duration_s);

typedef struct {
  guint8 kind;
  GBytes *payload; /* without the kind byte */
  gint64 time_us; /* g_get_monotonic_time () at arrival */
} TsMessage;

typedef struct {
  SoupSession *session;
  SoupWebsocketConnection *ws;
  GPtrArray *messages; /* TsMessage* */
  gboolean closed;
  gushort close_code;
  gchar *error; /* first kind-5 payload */
  /* called for each message (may be NULL) */
  void (*on_message) (gpointer client, TsMessage *m, gpointer user);
  gpointer user;
} TsClient;

/* Connects to url + "/api/chat" + query (e.g. "?text_topk=5" or "");
 * iterates the default main context until connected or timeout. */
TsClient *ts_client_connect (const gchar *url, const gchar *query,
    GError **error);
/* The same with an Authorization header (NULL: none). */
TsClient *ts_client_connect_auth (const gchar *url, const gchar *query,
    const gchar *authorization, GError **error);
void ts_client_send (TsClient *c, guint8 kind, const void *data, gsize len);
/* Iterates the main context until pred(c, user) or timeout (seconds);
 * returns pred's last value. pred NULL: just waits. */
gboolean ts_client_wait (TsClient *c, gboolean (*pred) (TsClient *, gpointer),
    gpointer user, gdouble timeout);
guint ts_client_count (TsClient *c, guint8 kind);
/* Closes (if open) and frees; abrupt = drop the connection without a
 * close handshake (a vanishing client). */
void ts_client_free (TsClient *c, gboolean abrupt);

/* The path of pipelines/samples/hello.wav. */
gchar *ts_sample_path (void);

G_END_DECLS
