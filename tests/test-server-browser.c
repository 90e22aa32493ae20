/* moshi-server in a real browser: headless Chromium (Debian `chromium`)
 * with a fake microphone playing pipelines/samples/hello.wav loads our page
 * (?autostart=1), talks to the tiny model, and must show text and play
 * audio back.  The page exposes its counters as window.moshiStats; this
 * program reads them through Chromium's DevTools protocol (a websocket,
 * with libsoup) and saves a screenshot.
 *
 * Exit status: 0 pass, 1 fail, 77 skip (meson's code) when no Chromium is
 * installed; set MOSHI_BROWSER_REQUIRED=1 to make that a failure.
 * Usage: test-server-browser [SCREENSHOT.png] */
#include "server-client.h"

#include <gst/gst.h>
#include <json-glib/json-glib.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>

static SoupWebsocketConnection *devtools;
static gint next_id = 1;
static JsonNode *reply;
static gint reply_id;

static void
child_setup (gpointer unused)
{
  prctl (PR_SET_PDEATHSIG, SIGKILL);
}

static void
on_devtools (SoupWebsocketConnection *ws, gint type, GBytes *msg, gpointer data)
{
  JsonParser *p = json_parser_new ();
  gsize len;
  const gchar *s = g_bytes_get_data (msg, &len);

  if (json_parser_load_from_data (p, s, len, NULL)) {
    JsonObject *o = json_node_get_object (json_parser_get_root (p));

    if (o && json_object_has_member (o, "id")
        && json_object_get_int_member (o, "id") == reply_id) {
      g_clear_pointer (&reply, json_node_unref);
      reply = json_node_copy (json_parser_get_root (p));
    }
  }
  g_object_unref (p);
}

/* Sends a DevTools command and waits for its answer ("result" object). */
static JsonObject *
devtools_call (const gchar *method, const gchar *params_json)
{
  gchar *cmd;
  gint64 deadline = g_get_monotonic_time () + 20 * G_USEC_PER_SEC;

  g_clear_pointer (&reply, json_node_unref);
  reply_id = next_id++;
  cmd = g_strdup_printf ("{\"id\":%d,\"method\":\"%s\",\"params\":%s}",
      reply_id, method, params_json ? params_json : "{}");
  soup_websocket_connection_send_text (devtools, cmd);
  g_free (cmd);
  while (!reply && g_get_monotonic_time () < deadline)
    g_main_context_iteration (NULL, TRUE);
  if (!reply)
    return NULL;
  return json_object_get_object_member (json_node_get_object (reply), "result");
}

static gchar *
eval_string (const gchar *expr)
{
  gchar *params, *q = g_strescape (expr, NULL), *out = NULL;
  JsonObject *r;

  params =
      g_strdup_printf ("{\"expression\":\"%s\",\"returnByValue\":true}", q);
  r = devtools_call ("Runtime.evaluate", params);
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

static gint64
stat_int (JsonObject *o, const gchar *k)
{
  return json_object_has_member (o, k) ? json_object_get_int_member (o, k) : 0;
}

static void
on_ws_ready (GObject *src, GAsyncResult *res, gpointer data)
{
  devtools =
      soup_session_websocket_connect_finish (SOUP_SESSION (src), res, NULL);
  *(gboolean *) data = TRUE;
}

int
main (int argc, char **argv)
{
  gchar *browser = NULL;
  const gchar *cands[] = { "chromium", "chromium-browser", "google-chrome" };
  const gchar *server_args[] = { "--idle-timeout=60", NULL };
  gchar *tmp, *wav, *url, *port_file, *port_text = NULL, *ws_url = NULL;
  GSubprocessLauncher *l;
  GSubprocess *chrome;
  GError *err = NULL;
  TsServer server;
  SoupSession *http;
  int status = 1;
  gint64 deadline;
  gboolean done = FALSE, ok = FALSE;
  gchar *last = NULL;

  gst_init (&argc, &argv);
  for (guint i = 0; i < G_N_ELEMENTS (cands) && !browser; i++)
    browser = g_find_program_in_path (cands[i]);
  if (g_getenv ("MOSHI_CHROMIUM")) {
    g_free (browser);
    browser = g_strdup (g_getenv ("MOSHI_CHROMIUM"));
  }
  if (!browser) {
    g_print ("SKIP: no Chromium found (apt-get install chromium)\n");
    return g_getenv ("MOSHI_BROWSER_REQUIRED") ? 1 : 77;
  }
  if (!ts_server_start (&server, server_args)) {
    g_free (browser);
    return 1;
  }
  tmp = g_dir_make_tmp ("moshi-browser-XXXXXX", NULL);
  wav = ts_sample_path ();
  url = g_strdup_printf ("%s/?autostart=1&text_seed=3", server.url);
  {
    gchar *fake = g_strdup_printf ("--use-file-for-fake-audio-capture=%s", wav);
    gchar *udd = g_strdup_printf ("--user-data-dir=%s", tmp);
    const gchar *args[] = { browser, "--headless=new", "--no-sandbox",
      "--disable-gpu", "--no-first-run", "--no-default-browser-check",
      "--remote-debugging-port=0", udd, "--use-fake-device-for-media-stream",
      "--use-fake-ui-for-media-stream", fake,
      "--autoplay-policy=no-user-gesture-required", "--window-size=1000,800",
      url, NULL };

    l = g_subprocess_launcher_new (
        G_SUBPROCESS_FLAGS_STDOUT_SILENCE | G_SUBPROCESS_FLAGS_STDERR_SILENCE);
    g_subprocess_launcher_set_child_setup (l, child_setup, NULL, NULL);
    chrome = g_subprocess_launcher_spawnv (l, args, &err);
    g_object_unref (l);
    g_free (fake);
    g_free (udd);
  }
  if (!chrome) {
    g_print ("FAIL: cannot start %s: %s\n", browser, err->message);
    goto out;
  }
  /* Chromium writes its DevTools port here. */
  port_file = g_build_filename (tmp, "DevToolsActivePort", NULL);
  deadline = g_get_monotonic_time () + 30 * G_USEC_PER_SEC;
  while (!g_file_get_contents (port_file, &port_text, NULL, NULL)
      && g_get_monotonic_time () < deadline)
    g_usleep (100000);
  g_free (port_file);
  if (!port_text) {
    g_print ("FAIL: Chromium did not open its DevTools port (does it run "
             "in this sandbox?)\n");
    goto out;
  }
  http = soup_session_new ();
  {
    gchar *list_url =
        g_strdup_printf ("http://127.0.0.1:%d/json/list", atoi (port_text));
    deadline = g_get_monotonic_time () + 20 * G_USEC_PER_SEC;
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
  }
  if (!ws_url) {
    g_print ("FAIL: no page target in Chromium\n");
    g_object_unref (http);
    goto out;
  }
  {
    SoupMessage *m = soup_message_new ("GET", ws_url);

    soup_session_websocket_connect_async (http, m, NULL, NULL,
        G_PRIORITY_DEFAULT, NULL, on_ws_ready, &done);
    while (!done)
      g_main_context_iteration (NULL, TRUE);
    g_object_unref (m);
  }
  if (!devtools) {
    g_print ("FAIL: cannot connect to Chromium's DevTools\n");
    g_object_unref (http);
    goto out;
  }
  soup_websocket_connection_set_max_incoming_payload_size (devtools, 0);
  g_signal_connect (devtools, "message", G_CALLBACK (on_devtools), NULL);

  /* Converse until text has appeared and 3 s of reply were played. */
  deadline = g_get_monotonic_time () + 90 * G_USEC_PER_SEC;
  while (!ok && g_get_monotonic_time () < deadline) {
    gchar *s = eval_string ("JSON.stringify(window.moshiStats || {})");
    JsonParser *p = json_parser_new ();

    if (s && json_parser_load_from_data (p, s, -1, NULL)) {
      JsonObject *o = json_node_get_object (json_parser_get_root (p));

      ok = o && stat_int (o, "textRecv") > 0
          && stat_int (o, "playedSamples") > 3 * 24000
          && stat_int (o, "audioSent") > 50;
      g_free (last);
      last = g_strdup (s);
    }
    g_object_unref (p);
    g_free (s);
    if (!ok) {
      gint64 until = g_get_monotonic_time () + 500000;

      while (g_get_monotonic_time () < until)
        g_main_context_iteration (NULL, FALSE), g_usleep (10000);
    }
  }
  g_print ("page counters: %s\n", last ? last : "(none)");
  if (argc > 1) {
    JsonObject *r =
        devtools_call ("Page.captureScreenshot", "{\"format\":\"png\"}");

    if (r && json_object_has_member (r, "data")) {
      gsize n;
      guchar *png =
          g_base64_decode (json_object_get_string_member (r, "data"), &n);

      if (g_file_set_contents (argv[1], (const gchar *) png, n, NULL))
        g_print ("screenshot: %s\n", argv[1]);
      g_free (png);
    }
  }
  g_print ("%s: text and played audio %s\n", ok ? "PASS" : "FAIL",
      ok ? "seen" : "not seen within 90 s");
  status = ok ? 0 : 1;
  g_signal_handlers_disconnect_by_func (devtools, on_devtools, NULL);
  g_clear_object (&devtools);
  g_object_unref (http);
out:
  if (chrome) {
    g_subprocess_send_signal (chrome, SIGTERM);
    g_subprocess_wait (chrome, NULL, NULL);
    g_object_unref (chrome);
  }
  if (ts_server_stop (&server) != 0 && status == 0) {
    g_print ("FAIL: the server did not exit cleanly\n");
    status = 1;
  }
  {
    gchar *rm[] = { "rm", "-rf", tmp, NULL };
    g_spawn_sync (NULL, rm, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL,
        NULL, NULL);
  }
  g_clear_pointer (&reply, json_node_unref);
  g_clear_error (&err);
  g_free (last);
  g_free (port_text);
  g_free (ws_url);
  g_free (tmp);
  g_free (wav);
  g_free (url);
  g_free (browser);
  return status;
}
