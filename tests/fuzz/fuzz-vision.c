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
 * start (READY and back) between inputs; FUZZ_FRESH=1 makes a new one per
 * input, FUZZ_RESET=flush resets with a flush of both sink pads
 * (tests/fuzz/fuzz-harness.h).  moshilm gets at most FUZZ_MAX_FRAMES
 * (default 24, more than the tiny model's 16-step context) user frames per
 * input. */
#include "fuzz-harness.h"

#include <gst/video/video.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static gboolean is_lm;
/* moshilm: user frames per input (the LM steps are most of the time). */
static guint max_frames = 24;
static FuzzTarget target;

int LLVMFuzzerInitialize (int *argc, char ***argv);
int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

static void configure (GstElement *e, guint8 flags);

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  (void) argc;
  (void) argv;
  const char *v = g_getenv ("FUZZ_VISION");
  is_lm = !v || strcmp (v, "moshivis") != 0;
  fuzz_harness_read_env (&max_frames);
  gchar *model = g_strdup (g_getenv ("MOSHIVIS_TINY"));
  if (!model)
    g_error ("MOSHIVIS_TINY must name the tiny MoshiVis model folder");
  target = (FuzzTarget){ .factory = is_lm ? "moshilm" : "moshivis",
    .model = model,
    .vision_sink = is_lm,
    .text_src = is_lm,
    .configure = configure };
  fuzz_harness_init (&target, "gst-moshi-fuzz-vision-registry.bin");
  return 0;
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
fuzz_moshilm (FuzzFixture *f, const uint8_t *data, size_t size)
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
  while (pos + 2 <= size && t < (int) max_frames) {
    size_t len = data[pos] * 32u + (data[pos + 1] & 15);
    guint8 flags = data[pos + 1];
    pos += 2;
    len = MIN (len, size - pos);
    GstBuffer *b =
        len ? gst_buffer_new_memdup (data + pos, len) : gst_buffer_new ();
    pos += len;
    if (flags & 16)
      GST_BUFFER_PTS (b) = (GstClockTime) t * 80 * GST_MSECOND;
    fuzz_check_error_posted (bus, gst_harness_push (hv, b), "push");
    if (flags & 32)
      gst_harness_push_event (hv,
          gst_event_new_gap ((GstClockTime) t * 80 * GST_MSECOND, GST_SECOND));
    if (flags & 64)
      gst_harness_push_event (hv, gst_event_new_eos ());
    for (int k = 0; k <= (flags >> 7); k++)
      fuzz_check_error_posted (bus, gst_harness_push (h, user_frame (t++)),
          "push");
    fuzz_drain (h, 16);
    fuzz_drain (ht, 0);
  }
  gst_harness_push_event (hv, gst_event_new_eos ());
  gst_harness_push_event (h, gst_event_new_eos ());
  fuzz_drain (h, 16);
  fuzz_drain (ht, 0);
}

static void
fuzz_moshivis (FuzzFixture *f, const uint8_t *data, size_t size)
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
    fuzz_check_error_posted (bus, gst_harness_push (h, b), "push");
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
  fuzz_drain (h, 16 * 64 * 4);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  if (size < 3)
    return 0;
  FuzzFixture *f = fuzz_fixture_begin (&target, data[2]);
  if (is_lm)
    fuzz_moshilm (f, data, size);
  else
    fuzz_moshivis (f, data, size);
  fuzz_fixture_end (f);
  return 0;
}
