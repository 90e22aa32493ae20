/* soak: does memory stay flat when gst-moshi runs for a long time?
 *
 *   soak [--cycles N] [--seconds S] [--live] [--warmup W] [--max-growth-mb M]
 *
 * 1. N load/unload cycles of a Mimi model and of an LM (tiny test models),
 * 2. N start/stop cycles of a `mimienc ! mimidec` pipeline,
 * 3. S seconds (wall clock) of continuous streaming, one source feeding
 *    both `mimienc ! mimidec` and the tiny-model dialog
 *    `mimienc ! moshilm ! mimidec` (its words to a fakesink): as fast as
 *    the CPU goes, or at real-time pace with --live.  RSS is sampled all
 *    along and printed against the wall clock ("rss <s> <MB> <frames>
 *    <frames>"); after the warm-up (W seconds, default a tenth of S) the
 *    least-squares slope of RSS over time is reported in MB per hour.
 * Each phase's RSS growth after a warm-up is reported; with --max-growth-mb
 * the program fails when a phase grows more than that.  CI runs a short
 * version; docs/reliability.md has a long run. */
#include <gst/gst.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lm.h"
#include "mimi.h"

static double
rss_mb (void)
{
  long pages = 0, resident = 0;
  FILE *f = fopen ("/proc/self/statm", "r");
  if (f) {
    if (fscanf (f, "%ld %ld", &pages, &resident) != 2)
      resident = 0;
    fclose (f);
  }
  return resident * (double) sysconf (_SC_PAGESIZE) / 1048576.0;
}

static int failures;

static void
check_growth (const char *phase, double before, double after, double max_mb)
{
  double g = after - before;
  printf ("%-28s RSS %.1f -> %.1f MB (%+.2f MB)\n", phase, before, after, g);
  if (max_mb > 0 && g > max_mb) {
    printf ("FAIL %s grew %.2f MB (limit %.1f)\n", phase, g, max_mb);
    failures++;
  }
}

static void
print_error (GstMessage *m)
{
  GError *e = NULL;
  gchar *dbg = NULL;
  gst_message_parse_error (m, &e, &dbg);
  fprintf (stderr, "pipeline error: %s (%s)\n", e->message, dbg ? dbg : "");
  g_error_free (e);
  g_free (dbg);
}

static gboolean
run_pipeline (const char *desc)
{
  GError *err = NULL;
  GstElement *p = gst_parse_launch (desc, &err);
  if (!p) {
    fprintf (stderr, "%s\n", err->message);
    g_error_free (err);
    return FALSE;
  }
  gst_element_set_state (p, GST_STATE_PLAYING);
  GstBus *bus = gst_element_get_bus (p);
  GstMessage *m = gst_bus_timed_pop_filtered (bus, 60 * GST_SECOND,
      GST_MESSAGE_EOS | GST_MESSAGE_ERROR);
  gboolean ok = m && GST_MESSAGE_TYPE (m) == GST_MESSAGE_EOS;
  if (m && !ok)
    print_error (m);
  if (m)
    gst_message_unref (m);
  gst_object_unref (bus);
  gst_element_set_state (p, GST_STATE_NULL);
  gst_object_unref (p);
  return ok;
}

static GstPadProbeReturn
count_buffer (GstPad *pad, GstPadProbeInfo *info, gpointer data)
{
  (void) pad;
  (void) info;
  g_atomic_int_inc ((gint *) data);
  return GST_PAD_PROBE_OK;
}

static void
count_at (GstElement *pipeline, const char *name, gint *counter)
{
  GstElement *sink = gst_bin_get_by_name (GST_BIN (pipeline), name);
  GstPad *pad = gst_element_get_static_pad (sink, "sink");
  gst_pad_add_probe (pad, GST_PAD_PROBE_TYPE_BUFFER, count_buffer, counter,
      NULL);
  gst_object_unref (pad);
  gst_object_unref (sink);
}

/* Least-squares slope of y over x (0 with fewer than two distinct x). */
static double
ls_slope (const double *x, const double *y, int n)
{
  double mx = 0, my = 0, sxx = 0, sxy = 0;
  if (n < 2)
    return 0;
  for (int i = 0; i < n; i++) {
    mx += x[i];
    my += y[i];
  }
  mx /= n;
  my /= n;
  for (int i = 0; i < n; i++) {
    sxx += (x[i] - mx) * (x[i] - mx);
    sxy += (x[i] - mx) * (y[i] - my);
  }
  return sxx > 0 ? sxy / sxx : 0;
}

/* Phase 3.  Returns FALSE on a pipeline error or when a branch produced
 * nothing. */
static gboolean
stream (const char *mimi, const char *lm, double seconds, double warmup,
    gboolean live, double max_growth)
{
  gchar *desc = g_strdup_printf (
      "audiotestsrc is-live=%s samplesperbuffer=1920 wave=pink-noise "
      "! audio/x-raw,rate=24000,channels=1,format=F32LE ! tee name=t "
      "t. ! queue ! mimienc model=\"%s\" ! mimidec model=\"%s\" "
      "! fakesink name=codec sync=false "
      "t. ! queue ! mimienc model=\"%s\" ! moshilm name=lm model=\"%s\" "
      "! queue ! mimidec model=\"%s\" ! fakesink name=dialog sync=false "
      "lm.text_src ! queue ! fakesink sync=false async=false",
      live ? "true" : "false", mimi, mimi, mimi, lm, mimi);
  GError *err = NULL;
  GstElement *p = gst_parse_launch (desc, &err);
  g_free (desc);
  if (!p) {
    fprintf (stderr, "%s\n", err->message);
    g_error_free (err);
    return FALSE;
  }
  gint codec = 0, dialog = 0;
  count_at (p, "codec", &codec);
  count_at (p, "dialog", &dialog);

  /* About 200 samples over the run, 0.25 to 30 s apart. */
  double interval = CLAMP (seconds / 200, 0.25, 30);
  int cap = (int) (seconds / interval) + 16, n = 0;
  double *t = g_new (double, cap), *r = g_new (double, cap);
  GstBus *bus = gst_element_get_bus (p);
  gboolean ok = TRUE;
  gint64 t0 = g_get_monotonic_time ();

  gst_element_set_state (p, GST_STATE_PLAYING);
  printf ("streaming %.0f s (%s), RSS every %.2f s: rss <s> <MB> "
          "<codec frames> <dialog frames>\n",
      seconds, live ? "real-time pace" : "as fast as the CPU goes", interval);
  for (;;) {
    double now = (g_get_monotonic_time () - t0) / 1e6;
    double next = (n + 1) * interval;
    GstMessage *m = gst_bus_timed_pop_filtered (bus,
        (GstClockTime) (MAX (next - now, 0) * GST_SECOND),
        GST_MESSAGE_EOS | GST_MESSAGE_ERROR);
    if (m) {
      ok = FALSE;
      if (GST_MESSAGE_TYPE (m) == GST_MESSAGE_ERROR)
        print_error (m);
      else
        fprintf (stderr, "unexpected EOS\n");
      gst_message_unref (m);
      break;
    }
    now = (g_get_monotonic_time () - t0) / 1e6;
    if (n < cap) {
      t[n] = now;
      r[n] = rss_mb ();
      printf ("rss %.1f %.2f %d %d\n", t[n], r[n], g_atomic_int_get (&codec),
          g_atomic_int_get (&dialog));
      fflush (stdout);
      n++;
    }
    if (now >= seconds || n >= cap)
      break;
  }
  if (ok) {
    gst_element_send_event (p, gst_event_new_eos ());
    GstMessage *m = gst_bus_timed_pop_filtered (bus, 120 * GST_SECOND,
        GST_MESSAGE_EOS | GST_MESSAGE_ERROR);
    if (!m || GST_MESSAGE_TYPE (m) != GST_MESSAGE_EOS) {
      if (m)
        print_error (m);
      else
        fprintf (stderr, "no EOS after 120 s\n");
      ok = FALSE;
    }
    if (m)
      gst_message_unref (m);
  }
  gst_object_unref (bus);
  gst_element_set_state (p, GST_STATE_NULL);
  gst_object_unref (p);

  double elapsed = (g_get_monotonic_time () - t0) / 1e6;
  printf ("streamed %.1f s: %d frames through mimienc ! mimidec (%.0f s of "
          "audio), %d through the dialog\n",
      elapsed, codec, codec / 12.5, dialog);
  if (codec == 0 || dialog == 0) {
    fprintf (stderr, "a branch produced nothing\n");
    ok = FALSE;
  }
  int w = 0;
  while (w < n && t[w] < warmup)
    w++;
  if (w < n) {
    double mb_per_s = ls_slope (t + w, r + w, n - w);
    double lo = r[w], hi = r[w];
    for (int i = w; i < n; i++) {
      lo = MIN (lo, r[i]);
      hi = MAX (hi, r[i]);
    }
    printf ("after warm-up (%.0f s, %d samples): RSS %.2f -> %.2f MB, "
            "min %.2f, max %.2f, slope %+.3f MB/hour\n",
        t[w], n - w, r[w], r[n - 1], lo, hi, mb_per_s * 3600);
    check_growth ("continuous streaming", r[w], r[n - 1], max_growth);
  }
  g_free (t);
  g_free (r);
  return ok;
}

int
main (int argc, char **argv)
{
  int cycles = 200;
  double seconds = 10, max_growth = 0, warmup = -1;
  gboolean live = FALSE;
  GOptionEntry entries[] = { { "cycles", 'c', 0, G_OPTION_ARG_INT, &cycles,
                                 "Load and start/stop cycles", "N" },
    { "seconds", 's', 0, G_OPTION_ARG_DOUBLE, &seconds,
        "Continuous streaming time (wall clock)", "S" },
    { "live", 'l', 0, G_OPTION_ARG_NONE, &live,
        "Stream at real-time pace (default: as fast as the CPU goes)", NULL },
    { "warmup", 'w', 0, G_OPTION_ARG_DOUBLE, &warmup,
        "Streaming warm-up left out of the growth figures (default S/10)",
        "W" },
    { "max-growth-mb", 'm', 0, G_OPTION_ARG_DOUBLE, &max_growth,
        "Fail above this growth per phase", "MB" },
    { NULL } };
  GOptionContext *ctx = g_option_context_new ("- memory soak");
  g_option_context_add_main_entries (ctx, entries, NULL);
  g_option_context_add_group (ctx, gst_init_get_option_group ());
  GError *err = NULL;
  if (!g_option_context_parse (ctx, &argc, &argv, &err)) {
    fprintf (stderr, "%s\n", err->message);
    return 2;
  }
  g_option_context_free (ctx);
  if (warmup < 0)
    warmup = seconds / 10;
#ifdef __SANITIZE_ADDRESS__
  /* ASan keeps freed memory in quarantine, so RSS says nothing here; its
   * leak checker at exit is the check in this build. */
  if (max_growth > 0)
    printf ("AddressSanitizer build: RSS growth reported, not checked\n");
  max_growth = 0;
#endif
  const char *data = g_getenv ("MOSHI_TEST_DATA");
  gchar *mimi = g_build_filename (data ? data : MOSHI_TEST_DATA_DIR,
      "conformance", "mimi-tiny", NULL);
  gchar *mimi_file = g_build_filename (mimi, "model.safetensors", NULL);
  gchar *lm_dir = g_build_filename (data ? data : MOSHI_TEST_DATA_DIR,
      "conformance", "lm-tiny", NULL);
  gchar *lm_cfg = g_build_filename (lm_dir, "config.json", NULL);
  gchar *lm_file = g_build_filename (lm_dir, "model.safetensors", NULL);

  /* 1. model load/unload */
  double r0 = 0;
  for (int i = 0; i < cycles; i++) {
    MimiModel *m = mimi_model_load (mimi_file, &err);
    LmConfig cfg;
    LmModel *lm = NULL;
    if (!m || !lm_config_load_json (&cfg, lm_cfg, &err)
        || !(lm = lm_model_load (lm_file, &cfg, MOSHI_WEIGHTS_Q8, &err))) {
      fprintf (stderr, "%s\n", err->message);
      return 1;
    }
    MimiEncoder *e = mimi_encoder_new (m, 8, NULL);
    LmGenParams p;
    lm_gen_params_default (&p, &cfg);
    LmGen *g = lm_gen_new (lm, &p, NULL);
    mimi_encoder_free (e);
    lm_gen_free (g);
    mimi_model_unref (m);
    lm_model_unref (lm);
    if (i == cycles / 10)
      r0 = rss_mb ();
  }
  check_growth ("model load/unload", r0, rss_mb (), max_growth);

  /* 2. pipeline start/stop */
  gchar *desc =
      g_strdup_printf ("audiotestsrc num-buffers=3 samplesperbuffer=1920 "
                       "! audio/x-raw,rate=24000,channels=1,format=F32LE ! "
                       "mimienc model=%s "
                       "! mimidec model=%s ! fakesink",
          mimi, mimi);
  for (int i = 0; i < cycles; i++) {
    if (!run_pipeline (desc))
      return 1;
    if (i == cycles / 10)
      r0 = rss_mb ();
  }
  check_growth ("pipeline start/stop", r0, rss_mb (), max_growth);
  g_free (desc);

  /* 3. continuous streaming, codec and dialog */
  if (!stream (mimi, lm_dir, seconds, warmup, live, max_growth))
    return 1;

  g_free (mimi);
  g_free (mimi_file);
  g_free (lm_dir);
  g_free (lm_cfg);
  g_free (lm_file);
  printf ("%d passed, %d failed\n", 3 - failures, failures);
  return failures ? 1 : 0;
}
