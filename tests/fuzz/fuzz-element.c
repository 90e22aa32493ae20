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
 * Speed: by default one element (and its harnesses) serves every input:
 * before each input it goes to READY (its stop() frees all stream state, its
 * pads drop their sticky events) and back to PLAYING, the harness's own
 * pads deactivated and activated again, and a new stream-start, so that every input starts from a
 * freshly started element without creating one each time (the model comes
 * from the plugin's cache, kept loaded by an element started once).  FUZZ_FRESH=1 builds a new element and harnesses for each
 * input instead, as before (slower; for bugs that only a never-started
 * element would show, and to replay a crash without the reset).  Pushing
 * stops once FUZZ_MAX_FRAMES (default 48, three times the tiny models'
 * 16-frame attention context) frames came out or the payload pushed holds
 * that many frames: the model's arithmetic is most of the time per frame.
 *
 * Properties checked beyond "no crash, leak, critical warning or hang": a
 * push that returns GST_FLOW_ERROR has posted an ERROR message; every
 * output buffer of mimidec is whole 1920-sample F32 frames, every
 * audio/x-mimi buffer of moshilm and mimienc whole frames of its
 * codebooks. */
#include <gst/audio/audio.h>
#include <gst/check/gstharness.h>
#include <gst/gst.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

GST_PLUGIN_STATIC_DECLARE (moshi);

static gboolean is_lm, is_enc, fresh, flush_reset;
/* Work per input: pushing stops once this many frames came out (or the
 * payload pushed holds this many 8-codebook / PCM frames). */
static guint max_frames = 48;
static const char *element;
static gchar *model;

int LLVMFuzzerInitialize (int *argc, char ***argv);
int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  (void) argc;
  (void) argv;
  const char *el = g_getenv ("FUZZ_ELEMENT");
  is_lm = el && strcmp (el, "moshilm") == 0;
  is_enc = el && strcmp (el, "mimienc") == 0;
  element = is_lm ? "moshilm" : is_enc ? "mimienc" : "mimidec";
  fresh = g_getenv ("FUZZ_FRESH") && atoi (g_getenv ("FUZZ_FRESH")) > 0;
  flush_reset = g_strcmp0 (g_getenv ("FUZZ_RESET"), "flush") == 0;
  if (g_getenv ("FUZZ_MAX_FRAMES"))
    max_frames = MAX (atoi (g_getenv ("FUZZ_MAX_FRAMES")), 1);
  const char *dir = g_getenv ("MOSHI_TEST_DATA");
  if (!dir)
    dir = MOSHI_TEST_DATA_DIR;
  model = is_lm ? g_build_filename (dir, "conformance", "lm-tiny", NULL)
                : g_build_filename (dir, "conformance", "mimi-tiny",
                    "model.safetensors", NULL);
  /* Only our plugin, registered below: no scanning, no registry file. */
  g_setenv ("GST_PLUGIN_SYSTEM_PATH_1_0", "", TRUE);
  g_setenv ("GST_PLUGIN_PATH_1_0", "", TRUE);
  g_setenv ("GST_REGISTRY_FORK", "no", TRUE);
  /* Never /dev/null: GStreamer writes its registry to a temporary file
   * renamed over this path. */
  if (!g_getenv ("GST_REGISTRY")) {
    gchar *reg = g_build_filename (g_get_tmp_dir (),
        "gst-moshi-fuzz-registry.bin", NULL);
    g_setenv ("GST_REGISTRY", reg, TRUE);
    g_free (reg);
  }
  gst_init (NULL, NULL);
  /* A critical warning is a bug too. */
  g_log_set_always_fatal (G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_ERROR);
  GST_PLUGIN_STATIC_REGISTER (moshi);
  /* An element that stays started keeps the model in the plugin's model
   * cache, so that each input does not load it again. */
  GstElement *pin = gst_element_factory_make (element, "pin");
  g_object_set (pin, "model", model, NULL);
  if (gst_element_set_state (pin, GST_STATE_PAUSED) == GST_STATE_CHANGE_FAILURE)
    g_error ("cannot start %s on %s", element, model);
  return 0;
}

static void
check_error_posted (GstBus *bus, GstFlowReturn ret, const char *what)
{
  if (ret != GST_FLOW_ERROR)
    return;
  GstMessage *m = gst_bus_pop_filtered (bus, GST_MESSAGE_ERROR);
  if (!m) {
    fprintf (stderr, "%s returned GST_FLOW_ERROR without an ERROR message\n",
        what);
    abort ();
  }
  gst_message_unref (m);
}

/* Pulls and checks all output; returns the number of whole frames. */
static guint
drain (GstHarness *h, gsize frame_bytes)
{
  GstBuffer *b;
  guint frames = 0;
  while ((b = gst_harness_try_pull (h))) {
    if (frame_bytes)
      frames += gst_buffer_get_size (b) / frame_bytes;
    if (frame_bytes && gst_buffer_get_size (b) % frame_bytes != 0) {
      fprintf (stderr, "output buffer of %zu bytes, frames are %zu\n",
          gst_buffer_get_size (b), frame_bytes);
      abort ();
    }
    gst_buffer_unref (b);
  }
  GstEvent *e;
  while ((e = gst_harness_try_pull_event (h)))
    gst_event_unref (e);
  return frames;
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

/* Elements and harnesses (see the top comment). */
typedef struct {
  GstElement *e;
  GstBus *bus;
  GstHarness *h, *ht;
} Fixture;

static Fixture reused;

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

/* A new element, configured, started and wrapped in harnesses. */
static void
fixture_new (Fixture *f, guint8 pflags)
{
  f->e = gst_element_factory_make (element, NULL);
  g_assert (f->e);
  f->bus = gst_bus_new ();
  gst_element_set_bus (f->e, f->bus);
  g_object_set (f->e, "model", model, NULL);
  configure (f->e, pflags);
  f->h = gst_harness_new_with_element (f->e, "sink", "src");
  f->ht = is_lm ? gst_harness_new_with_element (f->e, NULL, "text_src") : NULL;
}

static void
fixture_free (Fixture *f)
{
  if (f->ht)
    gst_harness_teardown (f->ht);
  gst_harness_teardown (f->h);
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
  while ((b = gst_harness_try_pull (h)))
    gst_buffer_unref (b);
  while ((e = gst_harness_try_pull_event (h)))
    gst_event_unref (e);
}

static void
reactivate (GstPad *pad)
{
  gst_pad_set_active (pad, FALSE);
  gst_pad_set_active (pad, TRUE);
}

/* Reuse mode: after each input the element goes back to READY (its stop()
 * frees all stream state, its pads drop their sticky events), the output,
 * events and messages of the input are dropped, and the harness's own pads
 * are reactivated so that no EOS, flush or caps carries over.  Done at the
 * end of the input rather than at the start of the next, so that what an
 * input allocates is freed within it (libFuzzer's leak check reruns an
 * input that ends with more mallocs than frees).  FUZZ_RESET=flush: a
 * flush instead of READY (the element is never stopped: faster for moshilm,
 * whose start resolves and parses its model files; an input's properties
 * are then those of the first input, and inputs are not independent). */
static void
fixture_stop (Fixture *f)
{
  if (flush_reset) {
    gst_harness_push_event (f->h, gst_event_new_flush_start ());
    gst_harness_push_event (f->h, gst_event_new_flush_stop (TRUE));
  } else if (gst_element_set_state (f->e, GST_STATE_READY)
      == GST_STATE_CHANGE_FAILURE) {
    g_error ("%s: no change to READY", element);
  }
  discard (f->h);
  if (f->ht)
    discard (f->ht);
  reactivate (f->h->srcpad);
  reactivate (f->h->sinkpad);
  if (f->ht)
    reactivate (f->ht->sinkpad);
  gst_bus_set_flushing (f->bus, TRUE);
  gst_bus_set_flushing (f->bus, FALSE);
}

/* Reuse mode, before an input: its properties, PLAYING, a new stream. */
static void
fixture_restart (Fixture *f, guint8 pflags)
{
  if (!flush_reset) {
    configure (f->e, pflags);
    if (gst_element_set_state (f->e, GST_STATE_PLAYING)
        == GST_STATE_CHANGE_FAILURE)
      g_error ("%s: no restart", element);
  }
  gst_harness_push_event (f->h, gst_event_new_stream_start ("fuzz"));
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  if (size < 3)
    return 0;
  const guint8 cb = data[0], cflags = data[1], pflags = data[2];
  size_t pos = 3;
  Fixture fresh_f, *f;

  if (fresh) {
    fixture_new (&fresh_f, pflags);
    f = &fresh_f;
  } else {
    if (!reused.e)
      fixture_new (&reused, pflags);
    else
      fixture_restart (&reused, pflags);
    f = &reused;
  }
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
    check_error_posted (bus, ret, "push");
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
    out_frames += drain (h, out_frame);
    if (ht)
      drain (ht, 0);
  }
  if (ret == GST_FLOW_OK)
    gst_harness_push_event (h, gst_event_new_eos ());
  drain (h, out_frame);
  if (ht)
    drain (ht, 0);
  if (fresh)
    fixture_free (f);
  else
    fixture_stop (f);
  return 0;
}
