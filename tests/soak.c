/* soak: does memory stay flat when gst-moshi runs for a long time?
 *
 *   soak [--cycles N] [--seconds S] [--max-growth-mb M]
 *
 * 1. N load/unload cycles of a Mimi model and of an LM (tiny test models),
 * 2. N start/stop cycles of a `mimienc ! mimidec` pipeline,
 * 3. S seconds of continuous `audiotestsrc ! mimienc ! mimidec ! fakesink`
 *    (as fast as the CPU goes), RSS printed every few seconds.
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

static gboolean
run_pipeline (const char *desc, int buffers_limit)
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
  if (m && !ok) {
    GError *e = NULL;
    gst_message_parse_error (m, &e, NULL);
    fprintf (stderr, "pipeline error: %s\n", e->message);
    g_error_free (e);
  }
  if (m)
    gst_message_unref (m);
  gst_object_unref (bus);
  gst_element_set_state (p, GST_STATE_NULL);
  gst_object_unref (p);
  return ok;
}

int
main (int argc, char **argv)
{
  int cycles = 200;
  double seconds = 10, max_growth = 0;
  GOptionEntry entries[] = { { "cycles", 'c', 0, G_OPTION_ARG_INT, &cycles,
                                 "Load and start/stop cycles", "N" },
    { "seconds", 's', 0, G_OPTION_ARG_DOUBLE, &seconds,
        "Continuous streaming time", "S" },
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
    if (!run_pipeline (desc, 3))
      return 1;
    if (i == cycles / 10)
      r0 = rss_mb ();
  }
  check_growth ("pipeline start/stop", r0, rss_mb (), max_growth);
  g_free (desc);

  /* 3. continuous streaming */
  int frames = (int) (seconds * 12.5 * 20); /* tiny model: ~20x real time */
  desc = g_strdup_printf ("audiotestsrc num-buffers=%d samplesperbuffer=1920 "
                          "wave=pink-noise ! "
                          "audio/x-raw,rate=24000,channels=1,format=F32LE "
                          "! mimienc model=%s ! mimidec model=%s ! fakesink",
      frames, mimi, mimi);
  gint64 t0 = g_get_monotonic_time ();
  r0 = rss_mb ();
  if (!run_pipeline (desc, frames))
    return 1;
  printf ("streamed %d frames (%.0f s of audio) in %.1f s\n", frames,
      frames / 12.5, (g_get_monotonic_time () - t0) / 1e6);
  check_growth ("continuous streaming", r0, rss_mb (), max_growth);
  g_free (desc);

  g_free (mimi);
  g_free (mimi_file);
  g_free (lm_dir);
  g_free (lm_cfg);
  g_free (lm_file);
  printf ("%d passed, %d failed\n", 3 - failures, failures);
  return failures ? 1 : 0;
}
