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
 * moshivis pushes has the size its caps announce.
 *
 * As in fuzz-element.c, one element serves every input, reset to a fresh
 * start (READY and back) before each; FUZZ_FRESH=1 makes a new one per
 * input.  moshilm gets at most FUZZ_MAX_FRAMES (default 24, more than the
 * tiny model's 16-step context) user frames per input. */
#include <gst/check/gstharness.h>
#include <gst/gst.h>
#include <gst/video/video.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

GST_PLUGIN_STATIC_DECLARE (moshi);

static gboolean is_lm, fresh, flush_reset;
/* moshilm: user frames per input (the LM steps are most of the time). */
static int max_frames = 24;
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
  fresh = g_getenv ("FUZZ_FRESH") && atoi (g_getenv ("FUZZ_FRESH")) > 0;
  flush_reset = g_strcmp0 (g_getenv ("FUZZ_RESET"), "flush") == 0;
  if (g_getenv ("FUZZ_MAX_FRAMES"))
    max_frames = MAX (atoi (g_getenv ("FUZZ_MAX_FRAMES")), 1);
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

/* The element under test and its harnesses: one for the whole run, reset
 * after each input (see fixture_stop), or a new one per input with
 * FUZZ_FRESH=1. */
typedef struct {
  GstElement *e;
  GstBus *bus;
  GstPad *vpad; /* moshilm's requested vision_sink */
  GstHarness *h, *hv, *ht;
} Fixture;

static Fixture reused;

static void
configure (GstElement *e, guint8 flags)
{
  if (is_lm)
    /* vision-timeout 0: a vision stream that says nothing (no GAP, no EOS)
     * must not hold the audio; the wait itself is covered by the tests. */
    g_object_set (e, "greedy", TRUE, "xa-start", flags & 7, "vision-timeout",
        0u, NULL);
  else
    g_object_set (e, "center-crop", (flags & 1) != 0, "scene-threshold",
        (flags & 2) ? 0.05 : 0.0, "interval",
        (guint64) ((flags & 4) ? 200 * GST_MSECOND : 0), NULL);
}

static void
fixture_new (Fixture *f, guint8 flags)
{
  memset (f, 0, sizeof *f);
  f->e = gst_element_factory_make (is_lm ? "moshilm" : "moshivis", NULL);
  f->bus = gst_bus_new ();
  gst_element_set_bus (f->e, f->bus);
  g_object_set (f->e, "model", model, NULL);
  configure (f->e, flags);
  if (is_lm) {
    f->vpad = gst_element_request_pad_simple (f->e, "vision_sink");
    f->hv = gst_harness_new_with_element (f->e, "vision_sink", NULL);
    f->h = gst_harness_new_with_element (f->e, "sink", "src");
    f->ht = gst_harness_new_with_element (f->e, NULL, "text_src");
  } else {
    f->h = gst_harness_new_with_element (f->e, "sink", "src");
  }
}

static void
fixture_free (Fixture *f)
{
  if (f->ht)
    gst_harness_teardown (f->ht);
  gst_harness_teardown (f->h);
  if (f->hv)
    gst_harness_teardown (f->hv);
  if (f->vpad)
    gst_object_unref (f->vpad);
  gst_element_set_bus (f->e, NULL);
  gst_bus_set_flushing (f->bus, TRUE);
  gst_object_unref (f->bus);
  gst_object_unref (f->e);
}

static void
discard (GstHarness *h)
{
  GstBuffer *b;
  GstEvent *e;
  if (!h)
    return;
  while ((b = gst_harness_try_pull (h)))
    gst_buffer_unref (b);
  while ((e = gst_harness_try_pull_event (h)))
    gst_event_unref (e);
}

static void
reactivate (GstPad *pad)
{
  if (!pad)
    return;
  gst_pad_set_active (pad, FALSE);
  gst_pad_set_active (pad, TRUE);
}

/* Reuse mode, after each input (as in fuzz-element.c): READY (stop() frees
 * the stream state, the element's pads drop their sticky events), or with
 * FUZZ_RESET=flush a flush of both sink pads (moshilm's start resolves and
 * parses its model files: 3x slower; properties then stay those of the
 * first input and inputs are not independent); output, events and messages
 * dropped, and the harnesses' own pads reactivated (no EOS, flush or caps
 * carries over). */
static void
fixture_stop (Fixture *f)
{
  if (flush_reset) {
    gst_harness_push_event (f->h, gst_event_new_flush_start ());
    gst_harness_push_event (f->h, gst_event_new_flush_stop (TRUE));
    if (f->hv) {
      gst_harness_push_event (f->hv, gst_event_new_flush_start ());
      gst_harness_push_event (f->hv, gst_event_new_flush_stop (TRUE));
    }
  } else if (gst_element_set_state (f->e, GST_STATE_READY)
      == GST_STATE_CHANGE_FAILURE) {
    g_error ("no change to READY");
  }
  discard (f->h);
  discard (f->ht);
  discard (f->hv);
  reactivate (f->h->srcpad);
  reactivate (f->h->sinkpad);
  if (f->ht)
    reactivate (f->ht->sinkpad);
  if (f->hv)
    reactivate (f->hv->srcpad);
  gst_bus_set_flushing (f->bus, TRUE);
  gst_bus_set_flushing (f->bus, FALSE);
}

/* Reuse mode, before an input: its properties, PLAYING, new streams. */
static void
fixture_restart (Fixture *f, guint8 flags)
{
  if (!flush_reset) {
    configure (f->e, flags);
    if (gst_element_set_state (f->e, GST_STATE_PLAYING)
        == GST_STATE_CHANGE_FAILURE)
      g_error ("no restart");
  }
  gst_harness_push_event (f->h, gst_event_new_stream_start ("fuzz"));
  if (f->hv)
    gst_harness_push_event (f->hv, gst_event_new_stream_start ("fuzz-vision"));
}

static void
fuzz_moshilm (Fixture *f, const uint8_t *data, size_t size)
{
  GstBus *bus = f->bus;
  GstHarness *h = f->h, *hv = f->hv, *ht = f->ht;
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
  while (pos + 2 <= size && t < max_frames) {
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
}

static void
fuzz_moshivis (Fixture *f, const uint8_t *data, size_t size)
{
  GstBus *bus = f->bus;
  GstHarness *h = f->h;
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
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  Fixture fresh_f, *f;

  if (size < 3)
    return 0;
  if (fresh) {
    fixture_new (&fresh_f, data[2]);
    f = &fresh_f;
  } else {
    if (!reused.e)
      fixture_new (&reused, data[2]);
    else
      fixture_restart (&reused, data[2]);
    f = &reused;
  }
  if (is_lm)
    fuzz_moshilm (f, data, size);
  else
    fuzz_moshivis (f, data, size);
  if (fresh)
    fixture_free (f);
  else
    fixture_stop (f);
  return 0;
}
