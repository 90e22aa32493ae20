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

#include <gst/app/gstappsink.h>
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

/* How many objects of the types traced are alive (printed with print). */
static guint
live_objects (gboolean print)
{
  GstStructure *info = NULL;
  g_signal_emit_by_name (leaks, "get-live-objects", &info);
  const GValue *list = gst_structure_get_value (info, "live-objects-list");
  guint n = gst_value_list_get_size (list);
  if (print) {
    gchar *s = gst_structure_to_string (info);
    fprintf (stderr, "%s\n", s);
    g_free (s);
  }
  gst_structure_free (info);
  return n;
}

/* Decodes a small picture made by encoder enc (or junk without one). */
static void
warm_up (const char *enc)
{
  GBytes *bytes = NULL;
  if (enc) {
    gchar *desc = g_strdup_printf ("videotestsrc num-buffers=1 "
                                   "! video/x-raw,width=32,height=24 "
                                   "! %s ! appsink name=sink",
        enc);
    GstElement *p = gst_parse_launch (desc, NULL);
    g_free (desc);
    if (p) {
      GstElement *sink = gst_bin_get_by_name (GST_BIN (p), "sink");
      gst_element_set_state (p, GST_STATE_PLAYING);
      GstSample *s = gst_app_sink_pull_sample (GST_APP_SINK (sink));
      if (s) {
        GstMapInfo map;
        gst_buffer_map (gst_sample_get_buffer (s), &map, GST_MAP_READ);
        bytes = g_bytes_new (map.data, map.size);
        gst_buffer_unmap (gst_sample_get_buffer (s), &map);
        gst_sample_unref (s);
      }
      gst_element_set_state (p, GST_STATE_NULL);
      gst_object_unref (sink);
      gst_object_unref (p);
    }
  }
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
  /* GStreamer's leaks tracer: see LLVMFuzzerTestOneInput. */
  g_setenv ("GST_TRACERS",
      "leaks(filters=\"GstElement,GstPad,GstBus,GstBufferPool,GstBuffer,"
      "GstBufferList,GstCaps,GstSample,GstMessage,GstEvent,GstQuery,"
      "GstMemory\")",
      TRUE);
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
  guint before = live_objects (FALSE);
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
  /* Every GStreamer object and mini object (pipeline, elements, pads,
   * buffers, caps, samples, events, messages) made for this input is gone. */
  guint live = live_objects (FALSE);
  if (live > before) {
    fprintf (stderr, "%u GStreamer objects alive, %u before\n", live, before);
    live_objects (TRUE);
    abort ();
  }
  return 0;
}
