/* libFuzzer target for the MoshiVis inputs of the plugin, on the tiny
 * MoshiVis (MOSHIVIS_TINY, built with the tests):
 *  - FUZZ_VISION=moshilm: arbitrary `application/x-moshivis-embedding` caps
 *    (tokens, dim) and buffers on moshilm's vision_sink, interleaved with
 *    valid user frames on its sink so that the images are applied;
 *  - FUZZ_VISION=moshivis: arbitrary RGB video caps (width, height) and
 *    frame bytes, force-key-unit events and flushes into moshivis.
 * The plugin and libmoshi-models are compiled in and registered statically
 * (see meson.build).
 *
 * Input: byte 0 = tokens / width, byte 1 = dim / height, byte 2 = flags,
 * then records [length][flags][length bytes].  Checks beyond "no crash,
 * leak, critical warning or hang": GST_FLOW_ERROR comes with an ERROR
 * message; moshilm's audio output stays whole frames; every embedding
 * moshivis pushes has the size its caps announce. */
#include <gst/check/gstharness.h>
#include <gst/gst.h>
#include <gst/video/video.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

GST_PLUGIN_STATIC_DECLARE (moshi);

static gboolean is_lm;
static const char *model;

int LLVMFuzzerInitialize (int *argc, char ***argv);
int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  (void) argc;
  (void) argv;
  const char *v = g_getenv ("FUZZ_VISION");
  is_lm = !v || strcmp (v, "moshivis") != 0;
  model = g_getenv ("MOSHIVIS_TINY");
  if (!model)
    g_error ("MOSHIVIS_TINY must name the tiny MoshiVis model folder");
  g_setenv ("GST_PLUGIN_SYSTEM_PATH_1_0", "", TRUE);
  g_setenv ("GST_PLUGIN_PATH_1_0", "", TRUE);
  g_setenv ("GST_REGISTRY_FORK", "no", TRUE);
  if (!g_getenv ("GST_REGISTRY")) {
    gchar *reg = g_build_filename (g_get_tmp_dir (),
        "gst-moshi-fuzz-vision-registry.bin", NULL);
    g_setenv ("GST_REGISTRY", reg, TRUE);
    g_free (reg);
  }
  gst_init (NULL, NULL);
  g_log_set_always_fatal (G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_ERROR);
  GST_PLUGIN_STATIC_REGISTER (moshi);
  /* Keeps the models in the plugin's cache between inputs. */
  GstElement *pin =
      gst_element_factory_make (is_lm ? "moshilm" : "moshivis", "pin");
  g_object_set (pin, "model", model, NULL);
  if (gst_element_set_state (pin, GST_STATE_PAUSED) == GST_STATE_CHANGE_FAILURE)
    g_error ("cannot start the element on %s", model);
  return 0;
}

static void
check_error_posted (GstBus *bus, GstFlowReturn ret)
{
  if (ret != GST_FLOW_ERROR)
    return;
  GstMessage *m = gst_bus_pop_filtered (bus, GST_MESSAGE_ERROR);
  if (!m) {
    fprintf (stderr, "GST_FLOW_ERROR without an ERROR message\n");
    abort ();
  }
  gst_message_unref (m);
}

static void
drain (GstHarness *h, gsize unit)
{
  GstBuffer *b;
  while ((b = gst_harness_try_pull (h))) {
    if (unit && gst_buffer_get_size (b) % unit != 0) {
      fprintf (stderr, "output of %zu bytes, units of %zu\n",
          gst_buffer_get_size (b), unit);
      abort ();
    }
    gst_buffer_unref (b);
  }
  GstEvent *e;
  while ((e = gst_harness_try_pull_event (h)))
    gst_event_unref (e);
}

static GstBuffer *
user_frame (int t)
{
  GstBuffer *b = gst_buffer_new_allocate (NULL, 16, NULL);
  GstMapInfo map;
  gst_buffer_map (b, &map, GST_MAP_WRITE);
  for (int k = 0; k < 8; k++)
    GST_WRITE_UINT16_LE (map.data + 2 * k, (guint16) ((t * 7 + k) % 64));
  gst_buffer_unmap (b, &map);
  GST_BUFFER_PTS (b) = (GstClockTime) t * 80 * GST_MSECOND;
  GST_BUFFER_DURATION (b) = 80 * GST_MSECOND;
  return b;
}

static void
fuzz_moshilm (const uint8_t *data, size_t size)
{
  GstElement *e = gst_element_factory_make ("moshilm", NULL);
  GstBus *bus = gst_bus_new ();
  gst_element_set_bus (e, bus);
  /* vision-timeout 0: a vision stream that says nothing (no GAP, no EOS)
   * must not hold the audio; the wait itself is covered by the tests. */
  g_object_set (e, "model", model, "greedy", TRUE, "xa-start", data[2] & 7,
      "vision-timeout", 0u, NULL);
  GstPad *vpad = gst_element_request_pad_simple (e, "vision_sink");
  GstHarness *hv = gst_harness_new_with_element (e, "vision_sink", NULL);
  GstHarness *h = gst_harness_new_with_element (e, "sink", "src");
  GstHarness *ht = gst_harness_new_with_element (e, NULL, "text_src");
  gst_harness_set_live (h, (data[2] & 8) != 0);
  gst_harness_set_src_caps_str (h,
      "audio/x-mimi, codebooks=(int)8, framerate=(fraction)25/2");
  gchar *caps = g_strdup_printf ("application/x-moshivis-embedding, "
                                 "tokens=(int)%d, dim=(int)%d",
      (data[2] & 16) ? 16 : data[0], (data[2] & 32) ? 64 : data[1]);
  gst_harness_set_src_caps_str (hv, caps);
  g_free (caps);
  size_t pos = 3;
  int t = 0;
  while (pos + 2 <= size && t < 40) {
    size_t len = data[pos] * 32u + (data[pos + 1] & 15);
    guint8 flags = data[pos + 1];
    pos += 2;
    len = MIN (len, size - pos);
    GstBuffer *b =
        len ? gst_buffer_new_memdup (data + pos, len) : gst_buffer_new ();
    pos += len;
    if (flags & 16)
      GST_BUFFER_PTS (b) = (GstClockTime) t * 80 * GST_MSECOND;
    check_error_posted (bus, gst_harness_push (hv, b));
    if (flags & 32)
      gst_harness_push_event (hv,
          gst_event_new_gap ((GstClockTime) t * 80 * GST_MSECOND, GST_SECOND));
    if (flags & 64)
      gst_harness_push_event (hv, gst_event_new_eos ());
    for (int k = 0; k <= (flags >> 7); k++)
      check_error_posted (bus, gst_harness_push (h, user_frame (t++)));
    drain (h, 16);
    drain (ht, 0);
  }
  gst_harness_push_event (hv, gst_event_new_eos ());
  gst_harness_push_event (h, gst_event_new_eos ());
  drain (h, 16);
  drain (ht, 0);
  gst_harness_teardown (ht);
  gst_harness_teardown (h);
  gst_harness_teardown (hv);
  gst_object_unref (vpad);
  gst_element_set_bus (e, NULL);
  gst_bus_set_flushing (bus, TRUE);
  gst_object_unref (bus);
  gst_object_unref (e);
}

static void
fuzz_moshivis (const uint8_t *data, size_t size)
{
  GstElement *e = gst_element_factory_make ("moshivis", NULL);
  GstBus *bus = gst_bus_new ();
  gst_element_set_bus (e, bus);
  g_object_set (e, "model", model, "center-crop", (data[2] & 1) != 0,
      "scene-threshold", (data[2] & 2) ? 0.05 : 0.0, "interval",
      (guint64) ((data[2] & 4) ? 200 * GST_MSECOND : 0), NULL);
  GstHarness *h = gst_harness_new_with_element (e, "sink", "src");
  gst_harness_set_live (h, (data[2] & 8) != 0);
  /* Sides of 1..255 pixels: many below the 14-pixel patch. */
  gchar *caps = g_strdup_printf ("video/x-raw, format=RGB, width=(int)%d, "
                                 "height=(int)%d, framerate=(fraction)10/1",
      MAX (data[0], 1), MAX (data[1], 1));
  gst_harness_set_src_caps_str (h, caps);
  g_free (caps);
  GstVideoInfo info;
  gst_video_info_set_format (&info, GST_VIDEO_FORMAT_RGB, MAX (data[0], 1),
      MAX (data[1], 1));
  size_t pos = 3;
  int t = 0;
  while (pos + 2 <= size && t < 20) {
    guint8 flags = data[pos + 1];
    /* Mostly whole frames, from the fuzzer's bytes repeated; sometimes
     * a short buffer. */
    size_t len = (flags & 1) ? data[pos] : info.size;
    pos += 2;
    GstBuffer *b = gst_buffer_new_allocate (NULL, len, NULL);
    GstMapInfo map;
    gst_buffer_map (b, &map, GST_MAP_WRITE);
    for (size_t i = 0; i < len; i++)
      map.data[i] = size > pos ? data[pos + i % (size - pos)] : 0;
    gst_buffer_unmap (b, &map);
    pos += MIN ((size_t) 64, size - pos);
    GST_BUFFER_PTS (b) = (GstClockTime) t++ * 100 * GST_MSECOND;
    GST_BUFFER_DURATION (b) = 100 * GST_MSECOND;
    if (flags & 2)
      gst_harness_push_event (h,
          gst_video_event_new_downstream_force_key_unit (GST_CLOCK_TIME_NONE,
              GST_CLOCK_TIME_NONE, GST_CLOCK_TIME_NONE, TRUE, 0));
    check_error_posted (bus, gst_harness_push (h, b));
    if (flags & 4) {
      gst_harness_push_event (h, gst_event_new_flush_start ());
      gst_harness_push_event (h, gst_event_new_flush_stop (TRUE));
      GstSegment seg;
      gst_segment_init (&seg, GST_FORMAT_TIME);
      gst_harness_push_event (h, gst_event_new_segment (&seg));
    }
  }
  gst_harness_push_event (h, gst_event_new_eos ());
  /* The tiny encoder: 16 tokens of 64 floats. */
  drain (h, 16 * 64 * 4);
  gst_harness_teardown (h);
  gst_element_set_bus (e, NULL);
  gst_bus_set_flushing (bus, TRUE);
  gst_object_unref (bus);
  gst_object_unref (e);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  if (size < 3)
    return 0;
  if (is_lm)
    fuzz_moshilm (data, size);
  else
    fuzz_moshivis (data, size);
  return 0;
}
