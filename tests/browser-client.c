/* Headless Chromium for the browser tests; see browser-client.h. */
#include "browser-client.h"

#include "server-client.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

struct TsBrowser {
  GSubprocess *proc;
  gchar *profile; /* temporary --user-data-dir */
  SoupSession *http;
  SoupWebsocketConnection *devtools;
  gboolean connect_done; /* the DevTools websocket attempt finished */
  gint next_id, reply_id;
  JsonNode *reply;
};

gchar *
ts_browser_find (void)
{
  const gchar *cands[] = { "chromium", "chromium-browser", "google-chrome" };
  const gchar *env = g_getenv ("MOSHI_CHROMIUM");
  gchar *browser = NULL;

  if (env && *env)
    return g_strdup (env);
  for (guint i = 0; i < G_N_ELEMENTS (cands) && !browser; i++)
    browser = g_find_program_in_path (cands[i]);
  return browser;
}

static void
on_devtools (SoupWebsocketConnection *ws, gint type, GBytes *msg, gpointer data)
{
  TsBrowser *b = data;
  JsonParser *p = json_parser_new ();
  gsize len;
  const gchar *s = g_bytes_get_data (msg, &len);

  if (json_parser_load_from_data (p, s, len, NULL)) {
    JsonObject *o = json_node_get_object (json_parser_get_root (p));

    if (o && json_object_has_member (o, "id")
        && json_object_get_int_member (o, "id") == b->reply_id) {
      g_clear_pointer (&b->reply, json_node_unref);
      b->reply = json_node_copy (json_parser_get_root (p));
    }
  }
  g_object_unref (p);
}

static void
on_ws_ready (GObject *src, GAsyncResult *res, gpointer data)
{
  TsBrowser *b = data;

  b->devtools =
      soup_session_websocket_connect_finish (SOUP_SESSION (src), res, NULL);
  b->connect_done = TRUE;
}

/* The page target's debugger websocket, from /json/list. */
static gchar *
find_page_target (SoupSession *http, gint port)
{
  gchar *list_url = g_strdup_printf ("http://127.0.0.1:%d/json/list", port);
  gchar *ws_url = NULL;
  gint64 deadline = g_get_monotonic_time () + 20 * G_USEC_PER_SEC;

  while (!ws_url && g_get_monotonic_time () < deadline) {
    SoupMessage *m = soup_message_new ("GET", list_url);
    GBytes *body = soup_session_send_and_read (http, m, NULL, NULL);
    JsonParser *p = json_parser_new ();

    if (body
        && json_parser_load_from_data (p, g_bytes_get_data (body, NULL),
            g_bytes_get_size (body), NULL)) {
      JsonArray *a = json_node_get_array (json_parser_get_root (p));

      for (guint i = 0; a && i < json_array_get_length (a); i++) {
        JsonObject *t = json_array_get_object_element (a, i);

        if (!g_strcmp0 (json_object_get_string_member (t, "type"), "page")
            && json_object_has_member (t, "webSocketDebuggerUrl"))
          ws_url = g_strdup (
              json_object_get_string_member (t, "webSocketDebuggerUrl"));
      }
    }
    if (body)
      g_bytes_unref (body);
    g_object_unref (p);
    g_object_unref (m);
    if (!ws_url)
      g_usleep (200000);
  }
  g_free (list_url);
  return ws_url;
}

TsBrowser *
ts_browser_start (const gchar *browser, const gchar *wav, const gchar *url,
    const gchar *window_size, gchar **error)
{
  TsBrowser *b = g_new0 (TsBrowser, 1);
  b->next_id = 1;
  gchar *fake = g_strdup_printf ("--use-file-for-fake-audio-capture=%s", wav);
  gchar *udd, *win, *port_file, *port_text = NULL, *ws_url = NULL;
  GSubprocessLauncher *l;
  GError *err = NULL;
  gint64 deadline;

  b->profile = g_dir_make_tmp ("moshi-browser-XXXXXX", NULL);
  udd = g_strdup_printf ("--user-data-dir=%s", b->profile);
  win = g_strdup_printf ("--window-size=%s", window_size);
  {
    const gchar *args[] = { browser, "--headless=new", "--no-sandbox",
      "--disable-gpu", "--no-first-run", "--no-default-browser-check",
      "--remote-debugging-port=0", udd, "--use-fake-device-for-media-stream",
      "--use-fake-ui-for-media-stream", fake,
      "--autoplay-policy=no-user-gesture-required", win, url, NULL };

    l = g_subprocess_launcher_new (
        G_SUBPROCESS_FLAGS_STDOUT_SILENCE | G_SUBPROCESS_FLAGS_STDERR_SILENCE);
    g_subprocess_launcher_set_child_setup (l, ts_child_setup, NULL, NULL);
    b->proc = g_subprocess_launcher_spawnv (l, args, &err);
    g_object_unref (l);
  }
  g_free (fake);
  g_free (udd);
  g_free (win);
  if (!b->proc) {
    *error = g_strdup_printf ("cannot start %s: %s", browser, err->message);
    g_error_free (err);
    ts_browser_free (b);
    return NULL;
  }
  /* Chromium writes its DevTools port into the profile folder. */
  port_file = g_build_filename (b->profile, "DevToolsActivePort", NULL);
  deadline = g_get_monotonic_time () + 30 * G_USEC_PER_SEC;
  while (!g_file_get_contents (port_file, &port_text, NULL, NULL)
      && g_get_monotonic_time () < deadline)
    g_usleep (100000);
  g_free (port_file);
  if (!port_text) {
    *error = g_strdup ("Chromium did not open its DevTools port (does it run "
                       "in this sandbox?)");
    ts_browser_free (b);
    return NULL;
  }
  b->http = soup_session_new ();
  ws_url = find_page_target (b->http, atoi (port_text));
  g_free (port_text);
  if (!ws_url) {
    *error = g_strdup ("no page target in Chromium");
    ts_browser_free (b);
    return NULL;
  }
  {
    SoupMessage *m = soup_message_new ("GET", ws_url);

    soup_session_websocket_connect_async (b->http, m, NULL, NULL,
        G_PRIORITY_DEFAULT, NULL, on_ws_ready, b);
    while (!b->connect_done)
      g_main_context_iteration (NULL, TRUE);
    g_object_unref (m);
  }
  g_free (ws_url);
  if (!b->devtools) {
    *error = g_strdup ("cannot connect to Chromium's DevTools");
    ts_browser_free (b);
    return NULL;
  }
  soup_websocket_connection_set_max_incoming_payload_size (b->devtools, 0);
  g_signal_connect (b->devtools, "message", G_CALLBACK (on_devtools), b);
  return b;
}

JsonObject *
ts_browser_call (TsBrowser *b, const gchar *method, const gchar *params_json)
{
  gint64 deadline = g_get_monotonic_time () + 20 * G_USEC_PER_SEC;
  gchar *cmd;

  g_clear_pointer (&b->reply, json_node_unref);
  b->reply_id = b->next_id++;
  cmd = g_strdup_printf ("{\"id\":%d,\"method\":\"%s\",\"params\":%s}",
      b->reply_id, method, params_json ? params_json : "{}");
  soup_websocket_connection_send_text (b->devtools, cmd);
  g_free (cmd);
  while (!b->reply && g_get_monotonic_time () < deadline)
    g_main_context_iteration (NULL, TRUE);
  if (!b->reply)
    return NULL;
  return json_object_get_object_member (json_node_get_object (b->reply),
      "result");
}

gchar *
ts_browser_eval (TsBrowser *b, const gchar *expr, gboolean gesture)
{
  gchar *q = g_strescape (expr, NULL), *out = NULL;
  gchar *params = g_strdup_printf ("{\"expression\":\"%s\","
                                   "\"returnByValue\":true,\"userGesture\":%s}",
      q, gesture ? "true" : "false");
  JsonObject *r = ts_browser_call (b, "Runtime.evaluate", params);

  if (r && json_object_has_member (r, "result")) {
    JsonObject *v = json_object_get_object_member (r, "result");

    if (json_object_has_member (v, "value")
        && JSON_NODE_HOLDS_VALUE (json_object_get_member (v, "value")))
      out = g_strdup (json_object_get_string_member (v, "value"));
  }
  g_free (params);
  g_free (q);
  return out;
}

gboolean
ts_browser_screenshot (TsBrowser *b, const gchar *path)
{
  JsonObject *r =
      ts_browser_call (b, "Page.captureScreenshot", "{\"format\":\"png\"}");
  gboolean ok = FALSE;

  if (r && json_object_has_member (r, "data")) {
    gsize n;
    guchar *png =
        g_base64_decode (json_object_get_string_member (r, "data"), &n);

    ok = g_file_set_contents (path, (const gchar *) png, n, NULL);
    g_free (png);
  }
  return ok;
}

void
ts_browser_free (TsBrowser *b)
{
  if (!b)
    return;
  if (b->devtools) {
    g_signal_handlers_disconnect_by_func (b->devtools, on_devtools, b);
    g_object_unref (b->devtools);
  }
  if (b->http)
    g_object_unref (b->http);
  if (b->proc) {
    g_subprocess_send_signal (b->proc, SIGTERM);
    g_subprocess_wait (b->proc, NULL, NULL);
    g_object_unref (b->proc);
  }
  if (b->profile) {
    gchar *rm[] = { "rm", "-rf", b->profile, NULL };
    g_spawn_sync (NULL, rm, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL,
        NULL, NULL);
  }
  g_clear_pointer (&b->reply, json_node_unref);
  g_free (b->profile);
  g_free (b);
}

gint64
ts_json_int (JsonObject *o, const gchar *k)
{
  return json_object_has_member (o, k) ? json_object_get_int_member (o, k) : 0;
}

void
ts_pump (gdouble seconds)
{
  gint64 until = g_get_monotonic_time () + seconds * G_USEC_PER_SEC;

  while (g_get_monotonic_time () < until)
    g_main_context_iteration (NULL, FALSE), g_usleep (10000);
}
