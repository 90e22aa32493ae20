/* Kyutai's own web client (kyutai-labs/moshi client/, built with
 * `npm ci && npm run build`) against moshi-server, in headless Chromium
 * with a fake microphone playing pipelines/samples/hello.wav.
 *
 * The server serves the client's dist/ folder (--web-root); this program
 * injects tests/kyutai-client-probe.js (counts websocket messages by kind,
 * the Ogg pages the client sends, the samples its Opus decoder worker
 * returns, console errors) through Chromium's DevTools protocol, clicks
 * "Connect" and checks that the conversation works: handshake, metadata
 * accepted by the client's schema, audio both ways, decoded audio played,
 * text shown, no kind-5 error, no close, no exception.  Saves a
 * screenshot.
 *
 * Needs a built client: KYUTAI_CLIENT_DIST=/path/to/client/dist.  Without
 * it (CI has no network for npm), or without Chromium, it is skipped
 * (exit 77).  KYUTAI_CLIENT_SECONDS (default 20) sets how long to talk.
 *
 * KYUTAI_CLIENT_VISION=1: the server runs --vision on the tiny MoshiVis of
 * the build tree, the page is opened with ?worker_addr=same (the moshivis
 * client talks to a queue service otherwise) and a picture of the client's
 * gallery is clicked.  kyutai-labs/moshivis's client sends it as kind 8;
 * kyutai-labs/moshi's (its "Go to Moshi Vision" mode) only names it in
 * the query (image_url), which the server reads from its web root.  The
 * text must come as kind 7 (coloured text).
 * Usage: test-kyutai-client [SCREENSHOT.png] */
#include "browser-client.h"
#include "server-client.h"

#include <gst/gst.h>
#include <json-glib/json-glib.h>
#include <string.h>

static JsonObject *
eval_json (TsBrowser *b, const gchar *expr, JsonParser *p)
{
  gchar *s = ts_browser_eval (b, expr, FALSE);
  JsonObject *o = NULL;

  if (s && json_parser_load_from_data (p, s, -1, NULL))
    o = json_node_get_object (json_parser_get_root (p));
  g_free (s);
  return o;
}

static gint64
member_int (JsonObject *o, const gchar *obj, const gchar *k)
{
  JsonObject *m;

  if (!o || !json_object_has_member (o, obj))
    return 0;
  m = json_object_get_object_member (o, obj);
  return m ? ts_json_int (m, k) : 0;
}

static guint
array_len (JsonObject *o, const gchar *k)
{
  return o && json_object_has_member (o, k)
      ? json_array_get_length (json_object_get_array_member (o, k))
      : 0;
}

/* What the page shows and what the probe counted, as one JSON object. */
static const gchar *state_js =
    "JSON.stringify({s: window.kyutaiStats || null,"
    " text: (document.querySelector('.player-text') || {}).innerText || '',"
    " stats: (document.querySelector('.player-stats') || {}).innerText || '',"
    " info: document.body.innerText.includes('Our server is running'),"
    " connected: !!document.querySelector('.bg-green-700')})";

static const gchar *click_js =
    "(() => { const b = [...document.querySelectorAll('button')]"
    ".find(b => b.textContent.trim() == 'Connect');"
    " if (!b) return 'no button'; b.click(); return 'clicked'; })()";

static const gchar *disconnect_js =
    "(() => { const b = [...document.querySelectorAll('button')]"
    ".find(b => b.textContent.trim() == 'Disconnect');"
    " if (!b) return 'no button'; b.click(); return 'clicked'; })()";

/* Vision: the first picture of the gallery (a button whose background is
 * the image; clicking it connects).  kyutai-labs/moshi's client shows its
 * gallery after "Go to Moshi Vision"; kyutai-labs/moshivis's at once. */
static const gchar *click_vision_js =
    "(() => { const bs = [...document.querySelectorAll('button')];"
    " const b = bs.find(b => b.style.backgroundImage.includes('images/demo'));"
    " if (b) { b.click(); return 'clicked'; }"
    " const s = bs.find(b => b.textContent.includes('Go to Moshi Vision'));"
    " if (s) { s.click(); return 'switched'; }"
    " return 'no button'; })()";

int
main (int argc, char **argv)
{
  gchar *browser = NULL;
  const gchar *dist = g_getenv ("KYUTAI_CLIENT_DIST");
  const gchar *secs_env = g_getenv ("KYUTAI_CLIENT_SECONDS");
  gdouble talk_s = secs_env ? g_ascii_strtod (secs_env, NULL) : 20;
  gboolean vision = !g_strcmp0 (g_getenv ("KYUTAI_CLIENT_VISION"), "1");
  gchar *web_root_arg, *index_html;
  const gchar *server_args[] = { "--idle-timeout=60", NULL, NULL, NULL, NULL };
  gchar *wav, *url, *start_error = NULL;
  gchar *probe = NULL, *probe_path;
  TsBrowser *b;
  GError *err = NULL;
  TsServer server;
  int status = 1;
  gint64 deadline, talk_until = 0;
  gboolean clicked = FALSE;
  gchar *last = NULL;
  GString *why = g_string_new (NULL);

  gst_init (&argc, &argv);
  if (!dist || !*dist) {
    g_print ("SKIP: KYUTAI_CLIENT_DIST is not set (build kyutai-labs/moshi "
             "client/ with npm ci && npm run build, then point it at "
             "client/dist)\n");
    return 77;
  }
  index_html = g_build_filename (dist, "index.html", NULL);
  if (!g_file_test (index_html, G_FILE_TEST_IS_REGULAR)) {
    g_print ("SKIP: no %s\n", index_html);
    g_free (index_html);
    return 77;
  }
  g_free (index_html);
  browser = ts_browser_find ();
  if (!browser) {
    g_print ("SKIP: no Chromium found (apt-get install chromium)\n");
    return 77;
  }
  probe_path = g_build_filename (MOSHI_SOURCE_ROOT, "tests",
      "kyutai-client-probe.js", NULL);
  if (!g_file_get_contents (probe_path, &probe, NULL, &err)) {
    g_print ("FAIL: %s\n", err->message);
    return 1;
  }
  g_free (probe_path);
  web_root_arg = g_strdup_printf ("--web-root=%s", dist);
  server_args[1] = web_root_arg;
  if (vision) {
    server_args[2] = "--vision";
    server_args[3] = "--model=" MOSHI_BUILD_ROOT "/tests/moshivis-dialog-tiny";
  }
  if (!ts_server_start (&server, server_args)) {
    g_free (browser);
    return 1;
  }
  wav = ts_sample_path ();
  url =
      g_strdup_printf ("%s/%s", server.url, vision ? "?worker_addr=same" : "");
  b = ts_browser_start (browser, wav, "about:blank", "1100,900", &start_error);
  if (!b) {
    g_print ("FAIL: %s\n", start_error);
    goto out;
  }

  /* The probe first, then the client's page. */
  {
    JsonBuilder *jb = json_builder_new ();
    JsonGenerator *g = json_generator_new ();
    gchar *params;

    json_builder_begin_object (jb);
    json_builder_set_member_name (jb, "source");
    json_builder_add_string_value (jb, probe);
    json_builder_end_object (jb);
    json_generator_set_root (g, json_builder_get_root (jb));
    params = json_generator_to_data (g, NULL);
    ts_browser_call (b, "Page.enable", NULL);
    ts_browser_call (b, "Page.addScriptToEvaluateOnNewDocument", params);
    g_free (params);
    g_object_unref (g);
    g_object_unref (jb);
    params = g_strdup_printf ("{\"url\":\"%s\"}", url);
    ts_browser_call (b, "Page.navigate", params);
    g_free (params);
  }

  /* Click Connect (a user gesture, as the client wants for its
   * AudioContext), then talk for talk_s seconds. */
  deadline = g_get_monotonic_time () + 60 * G_USEC_PER_SEC;
  while (g_get_monotonic_time () < deadline) {
    gchar *r;

    if (!clicked) {
      r = ts_browser_eval (b, vision ? click_vision_js : click_js, TRUE);
      if (!g_strcmp0 (r, "clicked")) {
        clicked = TRUE;
        talk_until = g_get_monotonic_time () + talk_s * G_USEC_PER_SEC;
        deadline = talk_until + 5 * G_USEC_PER_SEC;
        g_print ("clicked %s\n", vision ? "a picture" : "Connect");
      }
      g_free (r);
    } else {
      JsonParser *p = json_parser_new ();
      JsonObject *o = eval_json (b, state_js, p);

      if (o) {
        g_free (last);
        last = json_to_string (json_parser_get_root (p), FALSE);
      }
      g_object_unref (p);
      if (g_get_monotonic_time () > talk_until)
        break;
    }
    ts_pump (0.5);
  }
  g_print ("page state: %s\n", last ? last : "(none)");
  if (argc > 1 && ts_browser_screenshot (b, argv[1]))
    g_print ("screenshot: %s\n", argv[1]);
  if (!clicked)
    g_string_append (why, " no Connect button;");
  if (last) {
    JsonParser *p = json_parser_new ();
    JsonObject *o, *s;

    json_parser_load_from_data (p, last, -1, NULL);
    o = json_node_get_object (json_parser_get_root (p));
    s = json_object_has_member (o, "s")
            && JSON_NODE_HOLDS_OBJECT (json_object_get_member (o, "s"))
        ? json_object_get_object_member (o, "s")
        : NULL;
    if (!s)
      g_string_append (why, " probe not loaded;");
    if (member_int (s, "recv", "0") != 1)
      g_string_append (why, " no handshake (kind 0);");
    if (!json_object_get_boolean_member (o, "info"))
      g_string_append (why, " metadata (kind 4) not shown as server info;");
    if (member_int (s, "sent", "1") < 10 * talk_s / 2)
      g_string_append (why, " too little audio sent;");
    if (member_int (s, "recv", "1") < 10 * talk_s / 2)
      g_string_append (why, " too little audio received;");
    if (ts_json_int (s, "decodedSamples") < 16000 * talk_s / 2)
      g_string_append (why, " too little audio decoded by the client;");
    if (!strlen (json_object_get_string_member (o, "text")))
      g_string_append (why, " no text shown;");
    /* Its client may send the picture twice (two runs of its sending
     * effect race before either marks it sent). */
    if (vision && member_int (s, "sent", "8") < 1
        && !strstr (json_object_get_string_member (s, "url"), "image_url="))
      g_string_append (why, " no image (kind 8 or image_url) sent;");
    if (vision && member_int (s, "recv", "7") < 1)
      g_string_append (why, " no coloured text (kind 7);");
    if (s && json_object_has_member (s, "closed")
        && !JSON_NODE_HOLDS_NULL (json_object_get_member (s, "closed")))
      g_string_append (why, " websocket closed during the talk;");
    if (array_len (s, "recvErrors"))
      g_string_append (why, " kind-5 error received;");
    if (array_len (s, "exceptions"))
      g_string_append (why, " exceptions in the page;");
    if (array_len (s, "consoleErrors"))
      g_string_append (why, " console errors;");
    g_object_unref (p);
  } else
    g_string_append (why, " no page state;");
  /* Then the client's Disconnect button: a clean close, no error. */
  if (clicked) {
    gchar *r = ts_browser_eval (b, disconnect_js, TRUE), *closed = NULL;

    deadline = g_get_monotonic_time () + 10 * G_USEC_PER_SEC;
    while (!g_strcmp0 (r, "clicked") && g_get_monotonic_time () < deadline) {
      g_free (closed);
      closed = ts_browser_eval (b,
          "JSON.stringify([window.kyutaiStats.closed,"
          " window.kyutaiStats.recvErrors])",
          FALSE);
      if (closed && !g_str_has_prefix (closed, "[null"))
        break;
      ts_pump (0.2);
    }
    g_print ("Disconnect: %s, close and errors: %s\n", r ? r : "?",
        closed ? closed : "?");
    if (g_strcmp0 (r, "clicked") || !closed
        || g_str_has_prefix (closed, "[null") || !strstr (closed, ",[]]"))
      g_string_append (why, " Disconnect did not close cleanly;");
    g_free (closed);
    g_free (r);
  }
  status = why->len ? 1 : 0;
  g_print ("%s:%s\n", status ? "FAIL" : "PASS",
      why->len ? why->str : " Kyutai's client talked to moshi-server");
out:
  ts_browser_free (b);
  if (ts_server_stop (&server) != 0 && status == 0) {
    g_print ("FAIL: the server did not exit cleanly\n");
    status = 1;
  }
  g_clear_error (&err);
  g_string_free (why, TRUE);
  g_free (last);
  g_free (start_error);
  g_free (wav);
  g_free (url);
  g_free (probe);
  g_free (web_root_arg);
  g_free (browser);
  return status;
}
