/* libFuzzer target: arbitrary caps, buffers and events into mimidec,
 * moshilm or mimienc (FUZZ_ELEMENT=mimidec|moshilm|mimienc, default
 * mimidec) on the tiny conformance models, through a GstHarness.
 *
 * The element and the whole plugin, with libmoshi-models, are compiled into
 * this program with the sanitizers (see meson.build) and registered
 * statically; no system plugin is loaded.
 *
 * Input: byte 0 = codebooks field, byte 1 = caps flags, byte 2 = property
 * flags, then records [length][flags][length bytes of payload] pushed as
 * one buffer each (flags: DISCONT, no PTS, PTS backwards, EOS, flush,
 * a new caps event, gap).  For mimienc the caps are PCM ones (format, rate,
 * channels, layout) and a buffer is its payload repeated to 32x its length
 * (PCM frames are 7680 bytes), NaN and infinite samples included.
 *
 * Speed: by default one element (and its harnesses) serves every input,
 * reset between inputs so that every input starts from a freshly started
 * element without creating one each time (the model comes from the
 * plugin's cache, kept loaded by an element started once); FUZZ_FRESH=1
 * builds a new one for each input, FUZZ_RESET=flush resets with a flush
 * (tests/fuzz/fuzz-harness.h, shared with fuzz-vision.c).  Pushing
 * stops once FUZZ_MAX_FRAMES (default 48, three times the tiny models'
 * 16-frame attention context) frames came out or the payload pushed holds
 * that many frames: the model's arithmetic is most of the time per frame.
 *
 * Properties checked beyond "no crash, leak, critical warning or hang": a
 * push that returns GST_FLOW_ERROR has posted an ERROR message; every
 * output buffer of mimidec is whole 1920-sample F32 frames, every
 * audio/x-mimi buffer of moshilm and mimienc whole frames of its
 * codebooks. */
#include "fuzz-harness.h"

#include <gst/audio/audio.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static gboolean is_lm, is_enc;
/* Work per input: pushing stops once this many frames came out (or the
 * payload pushed holds this many 8-codebook / PCM frames). */
static guint max_frames = 48;
static const char *element;
static gchar *model;
static FuzzTarget target;

int LLVMFuzzerInitialize (int *argc, char ***argv);
int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

static void configure (GstElement *e, guint8 pflags);

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  (void) argc;
  (void) argv;
  const char *el = g_getenv ("FUZZ_ELEMENT");
  is_lm = el && strcmp (el, "moshilm") == 0;
  is_enc = el && strcmp (el, "mimienc") == 0;
  element = is_lm ? "moshilm" : is_enc ? "mimienc" : "mimidec";
  fuzz_harness_read_env (&max_frames);
  const char *dir = g_getenv ("MOSHI_TEST_DATA");
  if (!dir)
    dir = MOSHI_TEST_DATA_DIR;
  model = is_lm ? g_build_filename (dir, "conformance", "lm-tiny", NULL)
                : g_build_filename (dir, "conformance", "mimi-tiny",
                    "model.safetensors", NULL);
  target = (FuzzTarget){ .factory = element,
    .model = model,
    .text_src = is_lm,
    .configure = configure };
  fuzz_harness_init (&target, "gst-moshi-fuzz-registry.bin");
  return 0;
}

/* mimienc: PCM caps, mostly the ones it accepts (F32LE or S16LE, 24 kHz,
 * mono), sometimes not. */
static GstCaps *
make_pcm_caps (guint8 cb, guint8 flags, guint8 extra)
{
  gint rate = (flags & 8) ? (gint) extra * 1000 : 24000;
  gint channels = (flags & 32) ? (gint) extra : 1;
  return gst_caps_new_simple ("audio/x-raw", "format", G_TYPE_STRING,
      (flags & 1)       ? "S16LE"
          : (flags & 2) ? "U8"
                        : "F32LE",
      "rate", G_TYPE_INT, rate, "channels", G_TYPE_INT, channels, "layout",
      G_TYPE_STRING, (flags & 16) ? "non-interleaved" : "interleaved", NULL);
}

static GstCaps *
make_caps (guint8 cb, guint8 flags, guint8 extra)
{
  if (is_enc)
    return make_pcm_caps (cb, flags, extra);
  GstCaps *caps = gst_caps_new_empty_simple ("audio/x-mimi");
  GstStructure *s = gst_caps_get_structure (caps, 0);
  if (!(flags & 1)) {
    if (flags & 2)
      gst_structure_set (s, "codebooks", G_TYPE_STRING, "8", NULL);
    else if (flags & 64)
      gst_structure_set (s, "codebooks", G_TYPE_DOUBLE, 8.0, NULL);
    else
      gst_structure_set (s, "codebooks", G_TYPE_INT, (gint) (gint8) cb, NULL);
  }
  if (flags & 4)
    gst_structure_set (s, "framerate", GST_TYPE_FRACTION, 25, 2, NULL);
  if (flags & 8)
    gst_structure_set (s, "framerate", GST_TYPE_FRACTION, extra, 1 + cb, NULL);
  if (flags & 16)
    gst_structure_set (s, "rate", G_TYPE_INT, (gint) extra * 1000, NULL);
  if (flags & 32)
    gst_structure_set (s, "channels", G_TYPE_INT, (gint) extra, NULL);
  return caps;
}

/* Properties that an input picks, set while the element is stopped. */
static void
configure (GstElement *e, guint8 pflags)
{
  if (is_lm) {
    g_object_set (e, "seed", (guint64) pflags, NULL);
    if (pflags & 1)
      g_object_set (e, "temperature", 0.0, "temperature-text", 0.0, NULL);
    else /* the defaults (-1: the model's own), as a new element has */
      g_object_set (e, "temperature", -1.0, "temperature-text", -1.0, NULL);
  }
  if (is_enc)
    g_object_set (e, "codebooks", 1 + (pflags % 8), NULL);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  if (size < 3)
    return 0;
  const guint8 cb = data[0], cflags = data[1], pflags = data[2];
  size_t pos = 3;
  FuzzFixture *f = fuzz_fixture_begin (&target, pflags);
  GstHarness *h = f->h, *ht = f->ht;
  GstBus *bus = f->bus;
  gst_harness_set_src_caps (h, make_caps (cb, cflags, pflags));

  gsize out_frame = is_lm || is_enc ? 0 : 1920 * sizeof (float);
  guint out_frames = 0;
  gsize pushed = 0;
  const gsize max_bytes = (gsize) max_frames * (is_enc ? 7680 : 16);
  GstClockTime pts = 0;
  GstFlowReturn ret = GST_FLOW_OK;
  while (pos + 2 <= size && ret == GST_FLOW_OK && out_frames < max_frames
      && pushed < max_bytes) {
    size_t len = MIN (data[pos], size - pos - 2);
    guint8 rf = data[pos + 1];
    pos += 2;
    GstBuffer *buf;
    if (is_enc && len > 0) {
      /* PCM frames are 4-8 KB: the payload, repeated to 32x its length
       * plus the flags byte's low bits (so odd sizes happen too). */
      gsize n = len * 32 + (rf >> 6);
      buf = gst_buffer_new_allocate (NULL, n, NULL);
      GstMapInfo map;
      gst_buffer_map (buf, &map, GST_MAP_WRITE);
      for (gsize k = 0; k < n; k++)
        map.data[k] = data[pos + k % len];
      gst_buffer_unmap (buf, &map);
    } else {
      buf = len ? gst_buffer_new_memdup (data + pos, len) : gst_buffer_new ();
    }
    pos += len;
    pushed += gst_buffer_get_size (buf);
    if (rf & 1)
      GST_BUFFER_FLAG_SET (buf, GST_BUFFER_FLAG_DISCONT);
    if (rf & 2) {
      GST_BUFFER_PTS (buf) = GST_CLOCK_TIME_NONE;
    } else {
      if ((rf & 4) && pts >= GST_SECOND)
        pts -= GST_SECOND;
      GST_BUFFER_PTS (buf) = pts;
      pts += 80 * GST_MSECOND;
    }
    ret = gst_harness_push (h, buf);
    fuzz_check_error_posted (bus, ret, "push");
    if (rf & 8)
      gst_harness_push_event (h, gst_event_new_eos ());
    if (rf & 16) {
      gst_harness_push_event (h, gst_event_new_flush_start ());
      gst_harness_push_event (h, gst_event_new_flush_stop (TRUE));
      GstSegment seg;
      gst_segment_init (&seg, GST_FORMAT_TIME);
      gst_harness_push_event (h, gst_event_new_segment (&seg));
    }
    if (rf & 32) {
      GstCaps *c2 = make_caps (rf ^ cb, cflags ^ rf, pflags);
      gst_harness_push_event (h, gst_event_new_caps (c2));
      gst_caps_unref (c2);
    }
    if (rf & 64)
      gst_harness_push_event (h,
          gst_event_new_gap (pts, 80 * GST_MSECOND * (1 + (rf >> 7))));
    GstCaps *oc = gst_pad_get_current_caps (h->sinkpad);
    if ((is_lm || is_enc) && oc) {
      gint n;
      if (gst_structure_get_int (gst_caps_get_structure (oc, 0), "codebooks",
              &n))
        out_frame = (gsize) n * 2;
    }
    if (oc)
      gst_caps_unref (oc);
    out_frames += fuzz_drain (h, out_frame);
    if (ht)
      fuzz_drain (ht, 0);
  }
  if (ret == GST_FLOW_OK)
    gst_harness_push_event (h, gst_event_new_eos ());
  fuzz_drain (h, out_frame);
  if (ht)
    fuzz_drain (ht, 0);
  fuzz_fixture_end (f);
  return 0;
}
