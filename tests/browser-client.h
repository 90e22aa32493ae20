/* Headless Chromium driven through its DevTools protocol (a websocket,
 * with libsoup), for the browser tests of moshi-server: a fake microphone
 * plays a WAV, scripts run in the page, screenshots are saved. */
#pragma once

#include <json-glib/json-glib.h>
#include <libsoup/soup.h>

G_BEGIN_DECLS

typedef struct TsBrowser TsBrowser;

/* $MOSHI_CHROMIUM, else chromium, chromium-browser or google-chrome in the
 * PATH; NULL when none. */
gchar *ts_browser_find (void);
/* Starts `browser` headless on `url` with its fake microphone playing
 * `wav` and a window of `window_size` ("W,H"), then connects to the page's
 * DevTools target.  NULL with a message in *error. */
TsBrowser *ts_browser_start (const gchar *browser, const gchar *wav,
    const gchar *url, const gchar *window_size, gchar **error);
/* Sends a DevTools command and waits (20 s at most) for its "result"
 * object, owned by the browser until the next call; NULL on timeout. */
JsonObject *ts_browser_call (TsBrowser *b, const gchar *method,
    const gchar *params_json);
/* Runtime.evaluate of expr (as a user gesture when asked): its string
 * value, or NULL. */
gchar *ts_browser_eval (TsBrowser *b, const gchar *expr, gboolean gesture);
/* Saves a PNG screenshot of the page; FALSE when none came. */
gboolean ts_browser_screenshot (TsBrowser *b, const gchar *path);
/* Stops the browser and removes its profile. */
void ts_browser_free (TsBrowser *b);

/* Integer member k of o, 0 when absent. */
gint64 ts_json_int (JsonObject *o, const gchar *k);
/* Iterates the default main context for `seconds`. */
void ts_pump (gdouble seconds);

G_END_DECLS
