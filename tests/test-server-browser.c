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
#include "browser-client.h"
#include "server-client.h"

#include <gst/gst.h>

int
main (int argc, char **argv)
{
  const gchar *server_args[] = { "--idle-timeout=60", NULL };
  gchar *browser, *wav, *url, *why = NULL, *last = NULL;
  TsServer server;
  TsBrowser *b;
  int status = 1;
  gint64 deadline;
  gboolean ok = FALSE;

  gst_init (&argc, &argv);
  browser = ts_browser_find ();
  if (!browser) {
    g_print ("SKIP: no Chromium found (apt-get install chromium)\n");
    return g_getenv ("MOSHI_BROWSER_REQUIRED") ? 1 : 77;
  }
  if (!ts_server_start (&server, server_args)) {
    g_free (browser);
    return 1;
  }
  wav = ts_sample_path ();
  url = g_strdup_printf ("%s/?autostart=1&text_seed=3", server.url);
  b = ts_browser_start (browser, wav, url, "1000,800", &why);
  if (!b) {
    g_print ("FAIL: %s\n", why);
    goto out;
  }

  /* Converse until text has appeared and 3 s of reply were played. */
  deadline = g_get_monotonic_time () + 90 * G_USEC_PER_SEC;
  while (!ok && g_get_monotonic_time () < deadline) {
    gchar *s =
        ts_browser_eval (b, "JSON.stringify(window.moshiStats || {})", FALSE);
    JsonParser *p = json_parser_new ();

    if (s && json_parser_load_from_data (p, s, -1, NULL)) {
      JsonObject *o = json_node_get_object (json_parser_get_root (p));

      ok = o && ts_json_int (o, "textRecv") > 0
          && ts_json_int (o, "playedSamples") > 3 * 24000
          && ts_json_int (o, "audioSent") > 50;
      g_free (last);
      last = g_strdup (s);
    }
    g_object_unref (p);
    g_free (s);
    if (!ok)
      ts_pump (0.5);
  }
  g_print ("page counters: %s\n", last ? last : "(none)");
  if (argc > 1 && ts_browser_screenshot (b, argv[1]))
    g_print ("screenshot: %s\n", argv[1]);
  g_print ("%s: text and played audio %s\n", ok ? "PASS" : "FAIL",
      ok ? "seen" : "not seen within 90 s");
  status = ok ? 0 : 1;
out:
  ts_browser_free (b);
  if (ts_server_stop (&server) != 0 && status == 0) {
    g_print ("FAIL: the server did not exit cleanly\n");
    status = 1;
  }
  g_free (why);
  g_free (last);
  g_free (wav);
  g_free (url);
  g_free (browser);
  return status;
}
