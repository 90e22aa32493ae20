/* libFuzzer target for the pictures a client sends to moshi-server (Kyutai's
 * kind-8 message, or a web-root file named by image_url): the input is the
 * image file, decoded by pipelines/server/image.c (appsrc ! decodebin !
 * videoconvert ! appsink) with the system's GStreamer decoders.
 *
 * Only image.c is instrumented for coverage: the decoders are the system's
 * (GStreamer fuzzes its own parsers); what this checks is our side of it,
 * with ASan over the whole process: no crash, critical warning in our
 * thread, leak of a GStreamer object (GStreamer's leaks tracer: none made
 * for an input outlives it; LSan is off, see meson.build) or hang, no picture outside the accepted sides
 * (and none decoded to find out: -rss_limit_mb catches a huge allocation),
 * an RGB sample at least as big as its caps say, or an error that says
 * what was wrong. */
#include "image.h"
#include "picture-util.h"

#include <gst/video/video.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize (int *argc, char ***argv);
int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

static GstTracer *leaks;
static GThread *fuzz_thread;

/* A critical warning in the fuzzer's thread (ours, or GStreamer's on a
 * call of ours) is a bug; one in a streaming thread comes from a system
 * plugin (e.g. a typefinder suggesting invalid caps for some bytes): it is
 * printed, and is not ours to fix. */
static void
log_handler (const gchar *domain, GLogLevelFlags level, const gchar *message,
    gpointer data)
{
  g_log_default_handler (domain, level, message, data);
  if ((level & (G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_ERROR))
      && g_thread_self () == fuzz_thread)
    abort ();
}

/* Adds a leaks-tracer checkpoint to net: +1 per object created, -1 per
 * object freed, by address (an address reused within the input counts
 * once per object). */
static void
add_checkpoint (GHashTable *net)
{
  GstStructure *cp = NULL;
  const char *lists[] = { "objects-created-list", "objects-removed-list" };

  g_signal_emit_by_name (leaks, "activity-get-checkpoint", &cp);
  for (int k = 0; k < 2; k++) {
    const GValue *list = gst_structure_get_value (cp, lists[k]);
    for (guint i = 0; list && i < gst_value_list_get_size (list); i++) {
      const GstStructure *o =
          gst_value_get_structure (gst_value_list_get_value (list, i));
      const gchar *addr = gst_structure_get_string (o, "address");
      gchar *key = g_strdup (addr);
      gint n = GPOINTER_TO_INT (g_hash_table_lookup (net, key));
      g_hash_table_insert (net, key, GINT_TO_POINTER (n + (k == 0 ? 1 : -1)));
    }
  }
  gst_structure_free (cp);
}

/* Objects made since tracking started and still alive: listed on stderr,
 * counted.  Objects can be freed by another thread just after the
 * pipeline stopped (a streaming thread, or the thread decodebin starts to
 * free the groups it hid): up to 5 s of grace before something counts (1 s
 * was once too short with two fuzzers and a build on the 2 cores; the
 * input, run alone 150 times, left nothing). */
static guint
leaked_objects (void)
{
  GHashTable *net =
      g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  guint n = 0;

  for (int tries = 0; tries < 500; tries++) {
    GHashTableIter it;
    gpointer key, value;

    add_checkpoint (net);
    n = 0;
    g_hash_table_iter_init (&it, net);
    while (g_hash_table_iter_next (&it, &key, &value))
      n += GPOINTER_TO_INT (value) > 0;
    if (n == 0)
      break;
    g_usleep (10000);
  }
  if (n > 0) {
    GHashTableIter it;
    gpointer key, value;

    g_hash_table_iter_init (&it, net);
    while (g_hash_table_iter_next (&it, &key, &value))
      if (GPOINTER_TO_INT (value) > 0)
        fprintf (stderr, "still alive: %s\n", (const char *) key);
  }
  g_hash_table_unref (net);
  return n;
}

/* Decodes a small picture made by encoder enc (or junk without one). */
static void
warm_up (const char *enc)
{
  GBytes *bytes = enc ? tp_encode (enc, 32, 24, NULL) : NULL;
  if (!bytes)
    bytes = g_bytes_new ("junk", 4);
  GstSample *s = ms_image_decode (bytes, NULL);
  if (s)
    gst_sample_unref (s);
  g_bytes_unref (bytes);
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  (void) argc;
  (void) argv;
  g_setenv ("GST_REGISTRY_FORK", "no", TRUE);
  if (!g_getenv ("GST_REGISTRY")) {
    gchar *reg = g_build_filename (g_get_tmp_dir (),
        "gst-moshi-fuzz-image-registry.bin", NULL);
    g_setenv ("GST_REGISTRY", reg, TRUE);
    g_free (reg);
  }
  /* GStreamer's leaks tracer, for the objects image.c handles itself:
   * pipeline, elements, pads, bus, messages, the sample.  Not buffers, caps,
   * events or pools: the system's pngdec leaks its buffer pool and two
   * buffers when libpng fails mid-picture (a bad IDAT CRC), which is
   * GStreamer's to fix. */
  g_setenv ("GST_TRACERS",
      "leaks(filters=\"GstElement,GstPad,GstBus,GstSample,GstMessage\")", TRUE);
  gst_init (NULL, NULL);
  GList *tracers = gst_tracing_get_active_tracers ();
  for (GList *l = tracers; l; l = l->next)
    if (strcmp (G_OBJECT_TYPE_NAME (l->data), "GstLeaksTracer") == 0)
      leaks = gst_object_ref (l->data);
  g_list_free_full (tracers, gst_object_unref);
  if (!leaks)
    g_error ("no GStreamer leaks tracer");
  /* First uses set things up once (plugins loaded, types registered). */
  warm_up ("pngenc");
  warm_up ("jpegenc");
  warm_up (NULL);
  fuzz_thread = g_thread_self ();
  g_log_set_default_handler (log_handler, NULL);
  return 0;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  g_signal_emit_by_name (leaks, "activity-start-tracking");
  GBytes *bytes = g_bytes_new (data, size);
  GError *err = NULL;
  GstSample *s = ms_image_decode (bytes, &err);

  if (s) {
    GstVideoInfo info;
    GstBuffer *b = gst_sample_get_buffer (s);

    if (err || !b || !gst_video_info_from_caps (&info, gst_sample_get_caps (s))
        || GST_VIDEO_INFO_FORMAT (&info) != GST_VIDEO_FORMAT_RGB
        || info.width < MS_IMAGE_MIN_SIDE || info.width > MS_IMAGE_MAX_SIDE
        || info.height < MS_IMAGE_MIN_SIDE || info.height > MS_IMAGE_MAX_SIDE
        || gst_buffer_get_size (b) < info.size) {
      gchar *c = gst_caps_to_string (gst_sample_get_caps (s));
      fprintf (stderr, "bad picture %s\n", c);
      g_free (c);
      abort ();
    }
    gst_sample_unref (s);
  } else if (!err || !strstr (err->message, "image")) {
    fprintf (stderr, "no picture and no error naming the image\n");
    abort ();
  }
  g_clear_error (&err);
  g_bytes_unref (bytes);
  /* Every object traced (see LLVMFuzzerInitialize) made for this input is
   * gone. */
  guint leaked = leaked_objects ();
  g_signal_emit_by_name (leaks, "activity-stop-tracking");
  if (leaked > 0) {
    fprintf (stderr, "%u GStreamer objects made for the input are alive\n",
        leaked);
    abort ();
  }
  return 0;
}
