/* A small client of moshi-server for its tests and load benchmark. */
#include "server-client.h"

#include <gst/app/gstappsink.h>
#include <gst/gst.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <string.h>

#ifndef MOSHI_SOURCE_ROOT
#define MOSHI_SOURCE_ROOT "."
#endif
#ifndef MOSHI_BUILD_ROOT
#define MOSHI_BUILD_ROOT "build"
#endif

gchar *
ts_sample_path (void)
{
  return g_build_filename (MOSHI_SOURCE_ROOT, "pipelines", "samples",
      "hello.wav", NULL);
}

void
ts_child_setup (gpointer unused)
{
  prctl (PR_SET_PDEATHSIG, SIGKILL);
}

gboolean
ts_server_start (TsServer *s, const gchar *const *args)
{
  GPtrArray *argv = g_ptr_array_new_with_free_func (g_free);
  const gchar *exe = g_getenv ("MOSHI_SERVER");
  GSubprocessLauncher *l;
  GInputStream *out;
  GDataInputStream *din;
  GError *err = NULL;
  gchar *line;

  memset (s, 0, sizeof *s);
  g_ptr_array_add (argv,
      g_strdup (exe ? exe : MOSHI_BUILD_ROOT "/pipelines/moshi-server"));
  g_ptr_array_add (argv, g_strdup ("--port=0"));
  g_ptr_array_add (argv,
      g_strdup (
          "--model=" MOSHI_SOURCE_ROOT "/tests/data/conformance/lm-tiny"));
  g_ptr_array_add (argv,
      g_strdup ("--mimi-model=" MOSHI_SOURCE_ROOT
                "/tests/data/conformance/mimi-tiny"));
  for (guint i = 0; args && args[i]; i++)
    g_ptr_array_add (argv, g_strdup (args[i]));
  g_ptr_array_add (argv, NULL);
  l = g_subprocess_launcher_new (G_SUBPROCESS_FLAGS_STDOUT_PIPE);
  g_subprocess_launcher_set_child_setup (l, ts_child_setup, NULL, NULL);
  if (!g_getenv ("GST_PLUGIN_PATH"))
    g_subprocess_launcher_setenv (l, "GST_PLUGIN_PATH",
        MOSHI_BUILD_ROOT "/elements", TRUE);
  s->proc = g_subprocess_launcher_spawnv (l, (const gchar *const *) argv->pdata,
      &err);
  g_object_unref (l);
  g_ptr_array_unref (argv);
  if (!s->proc) {
    g_printerr ("cannot start moshi-server: %s\n", err->message);
    g_error_free (err);
    return FALSE;
  }
  out = g_subprocess_get_stdout_pipe (s->proc);
  din = g_data_input_stream_new (out);
  while ((line = g_data_input_stream_read_line (din, NULL, NULL, NULL))) {
    const gchar *p = strstr (line, "listening on ");

    if (p) {
      s->url = g_strdup (p + strlen ("listening on "));
      if (g_str_has_suffix (s->url, "/"))
        s->url[strlen (s->url) - 1] = '\0';
      g_free (line);
      break;
    }
    g_free (line);
  }
  g_object_unref (din);
  if (!s->url) {
    g_printerr ("moshi-server did not start\n");
    g_subprocess_wait (s->proc, NULL, NULL);
    g_clear_object (&s->proc);
    return FALSE;
  }
  return TRUE;
}

gint
ts_server_stop (TsServer *s)
{
  gint status = -1;

  if (!s->proc)
    return -1;
  g_subprocess_send_signal (s->proc, SIGTERM);
  if (g_subprocess_wait (s->proc, NULL, NULL))
    status = g_subprocess_get_if_exited (s->proc)
        ? g_subprocess_get_exit_status (s->proc)
        : 128 + g_subprocess_get_term_sig (s->proc);
  g_clear_object (&s->proc);
  g_clear_pointer (&s->url, g_free);
  return status;
}

gsize
ts_server_rss_kb (TsServer *s)
{
  gchar *path = g_strdup_printf ("/proc/%s/status",
      g_subprocess_get_identifier (s->proc));
  gchar *text = NULL, *p;
  gsize kb = 0;

  if (g_file_get_contents (path, &text, NULL, NULL)
      && (p = strstr (text, "VmRSS:")))
    kb = g_ascii_strtoull (p + 6, NULL, 10);
  g_free (text);
  g_free (path);
  return kb;
}

GPtrArray *
ts_make_ogg_pages (const gchar *path, gdouble *duration_s)
{
  return ts_make_ogg_pages_full (path, 0, duration_s);
}

GPtrArray *
ts_make_ogg_pages_full (const gchar *path, guint page_ms, gdouble *duration_s)
{
  gchar *desc =
      g_strdup_printf ("filesrc location=\"%s\" ! decodebin "
                       "! audioconvert ! audioresample "
                       "! audio/x-raw,rate=24000,channels=1 "
                       "! opusenc frame-size=20 "
                       "! oggmux max-delay=0 max-page-delay=%" G_GUINT64_FORMAT
                       " ! appsink name=sink sync=false",
          path, (guint64) page_ms * GST_MSECOND);
  GstElement *p = gst_parse_launch (desc, NULL);
  GstElement *sink;
  GPtrArray *pages =
      g_ptr_array_new_with_free_func ((GDestroyNotify) g_bytes_unref);
  guint64 granule = 0;
  GstSample *sample;

  g_free (desc);
  if (!p)
    return pages;
  sink = gst_bin_get_by_name (GST_BIN (p), "sink");
  gst_element_set_state (p, GST_STATE_PLAYING);
  while ((sample = gst_app_sink_pull_sample (GST_APP_SINK (sink)))) {
    GstBuffer *b = gst_sample_get_buffer (sample);
    GstMapInfo m;

    if (gst_buffer_map (b, &m, GST_MAP_READ)) {
      if (m.size >= 27 && !memcmp (m.data, "OggS", 4)) {
        guint64 g = 0;

        for (int i = 7; i >= 0; i--)
          g = (g << 8) | m.data[6 + i];
        if (g != G_MAXUINT64 && g > granule)
          granule = g;
      }
      g_ptr_array_add (pages, g_bytes_new (m.data, m.size));
      gst_buffer_unmap (b, &m);
    }
    gst_sample_unref (sample);
  }
  gst_element_set_state (p, GST_STATE_NULL);
  gst_object_unref (sink);
  gst_object_unref (p);
  if (duration_s)
    *duration_s = granule / 48000.0; /* Opus granules are 48 kHz */
  return pages;
}

static void
msg_free (gpointer data)
{
  TsMessage *m = data;

  g_bytes_unref (m->payload);
  g_free (m);
}

static void
on_message (SoupWebsocketConnection *ws, gint type, GBytes *message,
    gpointer data)
{
  TsClient *c = data;
  gsize len;
  const guint8 *p = g_bytes_get_data (message, &len);
  TsMessage *m;

  if (len == 0)
    return;
  m = g_new0 (TsMessage, 1);
  m->kind = p[0];
  m->payload = g_bytes_new_from_bytes (message, 1, len - 1);
  m->time_us = g_get_monotonic_time ();
  if (m->kind == 5 && !c->error)
    c->error = g_strndup ((const gchar *) p + 1, len - 1);
  g_ptr_array_add (c->messages, m);
  if (c->on_message)
    c->on_message (c, m, c->user);
}

static void
on_closed (SoupWebsocketConnection *ws, gpointer data)
{
  TsClient *c = data;

  c->closed = TRUE;
  c->close_code = soup_websocket_connection_get_close_code (ws);
}

static void
on_connected (GObject *src, GAsyncResult *res, gpointer data)
{
  GTask *task = data;
  GError *err = NULL;
  SoupWebsocketConnection *ws =
      soup_session_websocket_connect_finish (SOUP_SESSION (src), res, &err);

  if (ws)
    g_task_return_pointer (task, ws, g_object_unref);
  else
    g_task_return_error (task, err);
  g_object_unref (task);
}

static gboolean
accept_any_cert (SoupMessage *msg, GTlsCertificate *cert,
    GTlsCertificateFlags errors, gpointer unused)
{
  return TRUE;
}

TsClient *
ts_client_connect (const gchar *url, const gchar *query, GError **error)
{
  return ts_client_connect_auth (url, query, NULL, error);
}

TsClient *
ts_client_connect_auth (const gchar *url, const gchar *query,
    const gchar *authorization, GError **error)
{
  TsClient *c = g_new0 (TsClient, 1);
  gchar *ws_url =
      g_strdup_printf ("ws%s/api/chat%s", url + 4, query ? query : "");
  SoupMessage *msg = soup_message_new ("GET", ws_url);
  GTask *task;
  gint64 deadline = g_get_monotonic_time () + 10 * G_USEC_PER_SEC;

  g_free (ws_url);
  c->session = soup_session_new ();
  c->messages = g_ptr_array_new_with_free_func (msg_free);
  if (!msg) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "bad URL");
    ts_client_free (c, TRUE);
    return NULL;
  }
  /* Tests use a self-signed certificate for wss://. */
  g_signal_connect (msg, "accept-certificate", G_CALLBACK (accept_any_cert),
      NULL);
  if (authorization)
    soup_message_headers_replace (soup_message_get_request_headers (msg),
        "Authorization", authorization);
  task = g_task_new (NULL, NULL, NULL, NULL);
  soup_session_websocket_connect_async (c->session, msg, NULL, NULL,
      G_PRIORITY_DEFAULT, NULL, on_connected, g_object_ref (task));
  while (!g_task_get_completed (task) && g_get_monotonic_time () < deadline)
    g_main_context_iteration (NULL, TRUE);
  g_object_unref (msg);
  if (!g_task_get_completed (task)) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_TIMED_OUT, "connect timeout");
    g_object_unref (task);
    ts_client_free (c, TRUE);
    return NULL;
  }
  c->ws = g_task_propagate_pointer (task, error);
  g_object_unref (task);
  if (!c->ws) {
    ts_client_free (c, TRUE);
    return NULL;
  }
  soup_websocket_connection_set_max_incoming_payload_size (c->ws, 0);
  g_signal_connect (c->ws, "message", G_CALLBACK (on_message), c);
  g_signal_connect (c->ws, "closed", G_CALLBACK (on_closed), c);
  return c;
}

void
ts_client_send (TsClient *c, guint8 kind, const void *data, gsize len)
{
  guint8 *buf = g_malloc (len + 1);

  buf[0] = kind;
  if (len)
    memcpy (buf + 1, data, len);
  if (c->ws
      && soup_websocket_connection_get_state (c->ws)
          == SOUP_WEBSOCKET_STATE_OPEN)
    soup_websocket_connection_send_binary (c->ws, buf, len + 1);
  g_free (buf);
}

static gboolean
wake (gpointer data)
{
  *(gboolean *) data = TRUE;
  return G_SOURCE_REMOVE;
}

gboolean
ts_client_wait (TsClient *c, gboolean (*pred) (TsClient *, gpointer),
    gpointer user, gdouble timeout)
{
  gboolean timed_out = FALSE;
  guint t = g_timeout_add ((guint) (timeout * 1000), wake, &timed_out);
  gboolean ok = FALSE;

  while (!(ok = pred && pred (c, user)) && !timed_out)
    g_main_context_iteration (NULL, TRUE);
  if (!timed_out)
    g_source_remove (t);
  return ok;
}

guint
ts_client_count (TsClient *c, guint8 kind)
{
  guint n = 0;

  for (guint i = 0; i < c->messages->len; i++)
    n += ((TsMessage *) c->messages->pdata[i])->kind == kind;
  return n;
}

static gboolean
is_closed (TsClient *c, gpointer unused)
{
  return c->closed;
}

void
ts_client_free (TsClient *c, gboolean abrupt)
{
  if (c->ws) {
    if (!abrupt
        && soup_websocket_connection_get_state (c->ws)
            == SOUP_WEBSOCKET_STATE_OPEN) {
      soup_websocket_connection_close (c->ws, SOUP_WEBSOCKET_CLOSE_NORMAL,
          NULL);
      ts_client_wait (c, is_closed, NULL, 5);
    } else if (abrupt) {
      g_io_stream_close (soup_websocket_connection_get_io_stream (c->ws), NULL,
          NULL);
    }
    g_signal_handlers_disconnect_by_data (c->ws, c);
    g_object_unref (c->ws);
  }
  if (c->session)
    g_object_unref (c->session);
  g_ptr_array_unref (c->messages);
  g_free (c->error);
  g_free (c);
}
