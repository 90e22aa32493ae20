/* gst-moshi: element tests for mimienc / mimidec (GstHarness), model
 * resolution and the shared model cache.
 *
 * Everything runs the real engine on the conformance models in
 * tests/data/conformance/mimi-{tiny,small} and compares with Kyutai's
 * reference vectors (vectors.safetensors: pcm, codes, decoded, decoded_q4).
 *
 * Environment: MOSHI_TEST_DATA = tests/data (else the compile-time
 * MOSHI_TEST_DATA_DIR); GST_PLUGIN_PATH must reach libgstmoshi.so.
 * The resolver and cache functions are called inside the plugin module that
 * GStreamer loaded (g_module_symbol), so the tests see the very cache the
 * elements use. */
#include <gst/check/gstcheck.h>
#include <gst/check/gstharness.h>
#include <gst/audio/audio.h>
#include <glib/gstdio.h>
#include <gmodule.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "gst-test-util.h"
#include "safetensors.h"

#define FRAME 1920
#define RATE 24000
#define FRAME_NS (80 * GST_MSECOND)
#define REF_NQ 8
#define DECODE_TOL 5e-6

#define F32_CAPS                                        \
  "audio/x-raw, format=F32LE, rate=24000, channels=1, " \
  "layout=interleaved"
#define S16_CAPS                                        \
  "audio/x-raw, format=S16LE, rate=24000, channels=1, " \
  "layout=interleaved"

/* ------------------------------------------------------------------ */
/* Reference data */

typedef struct {
  gchar *name;
  gchar *dir;
  gint n; /* samples */
  gfloat *pcm;
  gint frames;
  guint16 *codes; /* [frame][REF_NQ] */
  gfloat *decoded;
  gfloat *decoded_q4; /* may be NULL */
  guint16 *codes_bf16w; /* with bf16-rounded weights; may be NULL */
  gfloat *decoded_bf16w; /* may be NULL */
} RefCase;

static RefCase *
ref_case_load (const gchar *name)
{
  RefCase *rc = g_new0 (RefCase, 1);
  gchar *path;
  StFile *f;
  GError *err = NULL;
  const StTensor *t;
  gint64 *codes64, n;
  gint q, fr;

  rc->name = g_strdup (name);
  rc->dir = g_build_filename (test_data_dir (), "conformance", name, NULL);
  path = g_build_filename (rc->dir, "vectors.safetensors", NULL);
  f = st_open (path, &err);
  fail_unless (f != NULL, "cannot open %s: %s", path, err ? err->message : "?");
  g_free (path);

  rc->pcm = read_f32 (f, "pcm", &n);
  fail_unless (rc->pcm != NULL);
  rc->n = n;

  t = st_find (f, "codes");
  fail_unless (t != NULL && t->ndim == 3 && t->shape[1] == REF_NQ);
  rc->frames = t->shape[2];
  fail_unless_equals_int (rc->frames * FRAME, rc->n);
  codes64 = g_new (gint64, t->numel);
  fail_unless (st_read_i64 (f, t, codes64, &err));
  rc->codes = g_new (guint16, rc->frames * REF_NQ);
  for (q = 0; q < REF_NQ; q++)
    for (fr = 0; fr < rc->frames; fr++)
      rc->codes[fr * REF_NQ + q] = codes64[q * rc->frames + fr];

  t = st_find (f, "codes_bf16w");
  if (t && t->numel == rc->frames * REF_NQ) {
    fail_unless (st_read_i64 (f, t, codes64, &err));
    rc->codes_bf16w = g_new (guint16, rc->frames * REF_NQ);
    for (q = 0; q < REF_NQ; q++)
      for (fr = 0; fr < rc->frames; fr++)
        rc->codes_bf16w[fr * REF_NQ + q] = codes64[q * rc->frames + fr];
  }
  g_free (codes64);
  rc->decoded_bf16w = read_f32 (f, "decoded_bf16w", NULL);

  rc->decoded = read_f32 (f, "decoded", &n);
  fail_unless (rc->decoded != NULL && n == rc->n);
  rc->decoded_q4 = read_f32 (f, "decoded_q4", NULL);

  st_unref (f);
  return rc;
}

static void
ref_case_free (RefCase *rc)
{
  g_free (rc->name);
  g_free (rc->dir);
  g_free (rc->pcm);
  g_free (rc->codes);
  g_free (rc->decoded);
  g_free (rc->decoded_q4);
  g_free (rc->codes_bf16w);
  g_free (rc->decoded_bf16w);
  g_free (rc);
}

static gchar *
model_file (RefCase *rc)
{
  return g_build_filename (rc->dir, "model.safetensors", NULL);
}

/* ------------------------------------------------------------------ */
/* The plugin module's own functions */

typedef gchar *(*ResolveFunc) (const gchar *model, GError **error);
typedef guint (*CacheUsersFunc) (const gchar *kind, const gchar *path);
typedef guint (*CacheLoadsFunc) (void);

static gchar *
resolve_mimi (const gchar *model, GError **error)
{
  ResolveFunc f = (ResolveFunc) plugin_symbol ("gst_moshi_resolve_mimi");
  return f (model, error);
}

static guint
cache_users (const gchar *path)
{
  CacheUsersFunc f =
      (CacheUsersFunc) plugin_symbol ("gst_moshi_model_cache_users");
  return f ("mimi", path);
}

static guint
cache_loads (void)
{
  CacheLoadsFunc f =
      (CacheLoadsFunc) plugin_symbol ("gst_moshi_model_cache_loads");
  return f ();
}

/* ------------------------------------------------------------------ */
/* Harness helpers */

static GstBus *
attach_bus (GstElement *e)
{
  GstBus *bus = gst_bus_new ();

  gst_element_set_bus (e, bus);
  return bus;
}

/* Undoes attach_bus(): messages left on the bus hold the element. */
static void
detach_bus (GstElement *e, GstBus *bus)
{
  gst_element_set_bus (e, NULL);
  gst_bus_set_flushing (bus, TRUE);
  gst_object_unref (bus);
}

/* The text of the first ERROR message on `bus`, or NULL. */
static gchar *
pop_error (GstBus *bus)
{
  GstMessage *msg = gst_bus_pop_filtered (bus, GST_MESSAGE_ERROR);
  GError *err = NULL;
  gchar *dbg = NULL, *text;

  if (!msg)
    return NULL;
  gst_message_parse_error (msg, &err, &dbg);
  text = g_strdup_printf ("%s [%s]", err->message, dbg ? dbg : "");
  GST_INFO ("error message: %s", text);
  g_error_free (err);
  g_free (dbg);
  gst_message_unref (msg);
  return text;
}

static GstHarness *
new_enc (const gchar *model, gint codebooks, const gchar *caps)
{
  GstElement *e = gst_element_factory_make ("mimienc", NULL);
  GstHarness *h;

  fail_unless (e != NULL, "mimienc not found");
  g_object_set (e, "model", model, "codebooks", codebooks, NULL);
  h = gst_harness_new_with_element (e, "sink", "src");
  gst_object_unref (e);
  if (caps)
    gst_harness_set_src_caps_str (h, caps);
  return h;
}

static GstHarness *
new_dec (const gchar *model, const gchar *caps)
{
  GstElement *e = gst_element_factory_make ("mimidec", NULL);
  GstHarness *h;

  fail_unless (e != NULL, "mimidec not found");
  g_object_set (e, "model", model, NULL);
  h = gst_harness_new_with_element (e, "sink", "src");
  gst_object_unref (e);
  if (caps)
    gst_harness_set_src_caps_str (h, caps);
  return h;
}

/* Pushes pcm[off, off + n) as one buffer stamped at sample `pos`. */
static GstFlowReturn
push_pcm (GstHarness *h, const gfloat *pcm, gint off, gint n, gboolean s16,
    guint64 pos, gboolean discont)
{
  GstBuffer *buf = gst_harness_create_buffer (h, n * (s16 ? 2 : 4));
  GstMapInfo map;
  gint i;

  gst_buffer_map (buf, &map, GST_MAP_WRITE);
  for (i = 0; i < n; i++) {
    if (s16) {
      /* The reference pcm is 16-bit audio / 32768: exact. */
      gint v = (gint) lrintf (pcm[off + i] * 32768.0f);
      GST_WRITE_UINT16_LE (map.data + 2 * i,
          (guint16) CLAMP (v, -32768, 32767));
    } else {
      GST_WRITE_FLOAT_LE (map.data + 4 * i, pcm[off + i]);
    }
  }
  gst_buffer_unmap (buf, &map);
  GST_BUFFER_PTS (buf) = gst_util_uint64_scale (pos, GST_SECOND, RATE);
  GST_BUFFER_DURATION (buf) =
      gst_util_uint64_scale (pos + n, GST_SECOND, RATE) - GST_BUFFER_PTS (buf);
  if (discont)
    GST_BUFFER_FLAG_SET (buf, GST_BUFFER_FLAG_DISCONT);
  return gst_harness_push (h, buf);
}

/* Pushes pcm[off, off + n) in chunks of `chunk` samples. */
static void
push_pcm_chunked (GstHarness *h, const gfloat *pcm, gint off, gint n,
    gint chunk, gboolean s16, guint64 pos, gboolean discont)
{
  gint done = 0;

  while (done < n) {
    gint m = MIN (chunk, n - done);

    fail_unless_equals_int (push_pcm (h, pcm, off + done, m, s16, pos + done,
                                discont && done == 0),
        GST_FLOW_OK);
    done += m;
  }
}

typedef struct {
  GArray *codes; /* guint16 */
  GArray *pts; /* GstClockTime */
  GArray *dur;
  GArray *flags; /* guint */
} EncOut;

static EncOut *
enc_out_new (void)
{
  EncOut *o = g_new0 (EncOut, 1);

  o->codes = g_array_new (FALSE, FALSE, sizeof (guint16));
  o->pts = g_array_new (FALSE, FALSE, sizeof (GstClockTime));
  o->dur = g_array_new (FALSE, FALSE, sizeof (GstClockTime));
  o->flags = g_array_new (FALSE, FALSE, sizeof (guint));
  return o;
}

static void
enc_out_free (EncOut *o)
{
  g_array_unref (o->codes);
  g_array_unref (o->pts);
  g_array_unref (o->dur);
  g_array_unref (o->flags);
  g_free (o);
}

static guint
enc_out_frames (EncOut *o)
{
  return o->pts->len;
}

/* Pulls every pending output buffer; each must be exactly one frame. */
static void
pull_codes (GstHarness *h, gint nq, EncOut *o)
{
  GstBuffer *buf;

  while ((buf = gst_harness_try_pull (h))) {
    GstMapInfo map;
    GstClockTime t;
    guint flags = GST_BUFFER_FLAGS (buf);
    gint i;

    gst_buffer_map (buf, &map, GST_MAP_READ);
    fail_unless_equals_int (map.size, 2 * nq);
    for (i = 0; i < nq; i++) {
      guint16 c = GST_READ_UINT16_LE (map.data + 2 * i);
      g_array_append_val (o->codes, c);
    }
    gst_buffer_unmap (buf, &map);
    t = GST_BUFFER_PTS (buf);
    g_array_append_val (o->pts, t);
    t = GST_BUFFER_DURATION (buf);
    g_array_append_val (o->dur, t);
    g_array_append_val (o->flags, flags);
    gst_buffer_unref (buf);
  }
}

/* Output frames [first, first + count) must equal reference frames
 * [ref_first, ...) in their first nq codebooks. */
static void
assert_codes (EncOut *o, gint nq, guint first, RefCase *rc, gint ref_first,
    gint count)
{
  gint f, q;

  fail_unless (first + count <= enc_out_frames (o),
      "only %u frames out, expected at least %d", enc_out_frames (o),
      first + count);
  for (f = 0; f < count; f++)
    for (q = 0; q < nq; q++) {
      guint16 got = g_array_index (o->codes, guint16, (first + f) * nq + q);
      guint16 want = rc->codes[(ref_first + f) * REF_NQ + q];

      fail_unless (got == want,
          "%s: frame %d codebook %d: got %u, reference %u", rc->name,
          ref_first + f, q, got, want);
    }
}

static void
assert_timestamps (EncOut *o, guint first, guint count, GstClockTime start)
{
  guint i;

  for (i = 0; i < count; i++) {
    GstClockTime pts = g_array_index (o->pts, GstClockTime, first + i);
    GstClockTime dur = g_array_index (o->dur, GstClockTime, first + i);

    fail_unless_equals_uint64 (pts, start + i * FRAME_NS);
    fail_unless_equals_uint64 (dur, FRAME_NS);
  }
}

/* Decoder output collected into one array. */
typedef struct {
  GArray *pcm; /* gfloat */
  GArray *pts, *dur, *nsamples;
} DecOut;

static DecOut *
dec_out_new (void)
{
  DecOut *o = g_new0 (DecOut, 1);

  o->pcm = g_array_new (FALSE, FALSE, sizeof (gfloat));
  o->pts = g_array_new (FALSE, FALSE, sizeof (GstClockTime));
  o->dur = g_array_new (FALSE, FALSE, sizeof (GstClockTime));
  o->nsamples = g_array_new (FALSE, FALSE, sizeof (guint));
  return o;
}

static void
dec_out_free (DecOut *o)
{
  g_array_unref (o->pcm);
  g_array_unref (o->pts);
  g_array_unref (o->dur);
  g_array_unref (o->nsamples);
  g_free (o);
}

static void
pull_pcm (GstHarness *h, DecOut *o)
{
  GstBuffer *buf;

  while ((buf = gst_harness_try_pull (h))) {
    GstMapInfo map;
    GstClockTime t;
    guint n, i;

    gst_buffer_map (buf, &map, GST_MAP_READ);
    fail_unless (map.size % (4 * FRAME) == 0, "output of %u bytes",
        (guint) map.size);
    n = map.size / 4;
    for (i = 0; i < n; i++) {
      gfloat v = GST_READ_FLOAT_LE (map.data + 4 * i);
      g_array_append_val (o->pcm, v);
    }
    gst_buffer_unmap (buf, &map);
    t = GST_BUFFER_PTS (buf);
    g_array_append_val (o->pts, t);
    t = GST_BUFFER_DURATION (buf);
    g_array_append_val (o->dur, t);
    g_array_append_val (o->nsamples, n);
    gst_buffer_unref (buf);
  }
}

static void
assert_pcm_close (const gfloat *got, const gfloat *want, gint n,
    const gchar *what)
{
  gdouble max_err = 0;
  gint i, worst = 0;

  for (i = 0; i < n; i++) {
    gdouble e = fabs ((gdouble) got[i] - want[i]);
    if (e > max_err || isnan (got[i])) {
      max_err = isnan (got[i]) ? INFINITY : e;
      worst = i;
    }
  }
  GST_INFO ("%s: max abs error %g at sample %d", what, max_err, worst);
  fail_unless (max_err <= DECODE_TOL,
      "%s: max abs error %g at sample %d (got %g, reference %g) > %g", what,
      max_err, worst, got[worst], want[worst], DECODE_TOL);
}

/* One Mimi frame (first nq reference codebooks of frame f) as a buffer. */
static GstBuffer *
frames_buffer (RefCase *rc, gint f, gint count, gint nq)
{
  GstBuffer *buf = gst_buffer_new_allocate (NULL, 2 * nq * count, NULL);
  GstMapInfo map;
  gint i, q;

  gst_buffer_map (buf, &map, GST_MAP_WRITE);
  for (i = 0; i < count; i++)
    for (q = 0; q < nq; q++)
      GST_WRITE_UINT16_LE (map.data + 2 * (i * nq + q),
          rc->codes[(f + i) * REF_NQ + q]);
  gst_buffer_unmap (buf, &map);
  GST_BUFFER_PTS (buf) = f * FRAME_NS;
  GST_BUFFER_DURATION (buf) = count * FRAME_NS;
  return buf;
}

static GstBuffer *
raw_buffer (const guint8 *data, gsize size)
{
  GstBuffer *buf = gst_buffer_new_allocate (NULL, size, NULL);

  gst_buffer_fill (buf, 0, data, size);
  GST_BUFFER_PTS (buf) = 0;
  return buf;
}

static const gchar *const ref_cases[] = { "mimi-tiny", "mimi-small" };

/* ------------------------------------------------------------------ */
/* mimienc */

GST_START_TEST (test_enc_caps)
{
  RefCase *rc = ref_case_load ("mimi-tiny");
  const gchar *formats[] = { F32_CAPS, S16_CAPS };
  gint codebooks[] = { 8, 4, 1, 16 };
  guint fi, ci;

  for (fi = 0; fi < G_N_ELEMENTS (formats); fi++)
    for (ci = 0; ci < G_N_ELEMENTS (codebooks); ci++) {
      GstHarness *h = new_enc (rc->dir, codebooks[ci], formats[fi]);
      GstCaps *caps;
      GstStructure *s;
      gint n, num, den;
      GstClockTime lat;

      fail_unless_equals_int (push_pcm (h, rc->pcm, 0, FRAME, fi == 1, 0,
                                  FALSE),
          GST_FLOW_OK);
      caps = gst_pad_get_current_caps (h->sinkpad);
      fail_unless (caps != NULL);
      s = gst_caps_get_structure (caps, 0);
      fail_unless (gst_structure_has_name (s, "audio/x-mimi"));
      fail_unless (gst_structure_get_int (s, "codebooks", &n));
      fail_unless_equals_int (n, codebooks[ci]);
      fail_unless (gst_structure_get_fraction (s, "framerate", &num, &den));
      fail_unless_equals_int (num, 25);
      fail_unless_equals_int (den, 2);
      gst_caps_unref (caps);

      lat = gst_harness_query_latency (h);
      fail_unless_equals_uint64 (lat, FRAME_NS);

      fail_unless_equals_int (gst_harness_buffers_received (h), 1);
      gst_harness_teardown (h);
    }
  ref_case_free (rc);
}

GST_END_TEST;

static void
check_enc_reference (const gchar *name, gboolean s16, gint chunk, gint nq)
{
  RefCase *rc = ref_case_load (name);
  GstHarness *h = new_enc (rc->dir, nq, s16 ? S16_CAPS : F32_CAPS);
  EncOut *o = enc_out_new ();

  GST_INFO ("%s: %s, %d-sample buffers, %d codebooks", name,
      s16 ? "S16LE" : "F32LE", chunk, nq);
  push_pcm_chunked (h, rc->pcm, 0, rc->n, chunk, s16, 0, FALSE);
  fail_unless (gst_harness_push_event (h, gst_event_new_eos ()));
  pull_codes (h, nq, o);

  fail_unless_equals_int (enc_out_frames (o), rc->frames);
  assert_codes (o, nq, 0, rc, 0, rc->frames);
  assert_timestamps (o, 0, rc->frames, 0);

  enc_out_free (o);
  gst_harness_teardown (h);
  ref_case_free (rc);
}

/* Odd-sized input buffers: the base class must assemble exact frames. */
GST_START_TEST (test_enc_reference_f32)
{
  guint i;

  for (i = 0; i < G_N_ELEMENTS (ref_cases); i++) {
    check_enc_reference (ref_cases[i], FALSE, 1000, 8);
    check_enc_reference (ref_cases[i], FALSE, 7 * FRAME + 13, 8);
  }
}

GST_END_TEST;

GST_START_TEST (test_enc_reference_s16)
{
  guint i;

  for (i = 0; i < G_N_ELEMENTS (ref_cases); i++)
    check_enc_reference (ref_cases[i], TRUE, 1000, 8);
}

GST_END_TEST;

/* Residual VQ: fewer codebooks give a prefix of the 8 reference ones. */
GST_START_TEST (test_enc_fewer_codebooks)
{
  check_enc_reference ("mimi-tiny", FALSE, 1000, 4);
  check_enc_reference ("mimi-tiny", FALSE, 1000, 1);
}

GST_END_TEST;

GST_START_TEST (test_enc_eos_padding)
{
  RefCase *rc = ref_case_load ("mimi-tiny");
  GstHarness *h = new_enc (rc->dir, 8, F32_CAPS);
  EncOut *o = enc_out_new ();
  GstEvent *ev;
  gboolean saw_eos = FALSE;

  fail_unless_equals_int (push_pcm (h, rc->pcm, 0, 3 * FRAME + 500, FALSE, 0,
                              FALSE),
      GST_FLOW_OK);
  pull_codes (h, 8, o);
  /* The partial frame waits for more input... */
  fail_unless_equals_int (enc_out_frames (o), 3);

  /* ...and is padded and encoded at EOS, as a whole 80 ms frame. */
  fail_unless (gst_harness_push_event (h, gst_event_new_eos ()));
  pull_codes (h, 8, o);
  fail_unless_equals_int (enc_out_frames (o), 4);
  assert_codes (o, 8, 0, rc, 0, 3);
  assert_timestamps (o, 0, 4, 0);

  /* EOS comes after the last frame. */
  while ((ev = gst_harness_try_pull_event (h))) {
    if (GST_EVENT_TYPE (ev) == GST_EVENT_EOS)
      saw_eos = TRUE;
    gst_event_unref (ev);
  }
  fail_unless (saw_eos);

  enc_out_free (o);
  gst_harness_teardown (h);
  ref_case_free (rc);
}

GST_END_TEST;

/* Exactly one frame of input and nothing else: no padding frame. */
GST_START_TEST (test_enc_eos_exact)
{
  RefCase *rc = ref_case_load ("mimi-tiny");
  GstHarness *h = new_enc (rc->dir, 8, F32_CAPS);
  EncOut *o = enc_out_new ();

  fail_unless_equals_int (push_pcm (h, rc->pcm, 0, 2 * FRAME, FALSE, 0, FALSE),
      GST_FLOW_OK);
  fail_unless (gst_harness_push_event (h, gst_event_new_eos ()));
  pull_codes (h, 8, o);
  fail_unless_equals_int (enc_out_frames (o), 2);
  assert_codes (o, 8, 0, rc, 0, 2);

  enc_out_free (o);
  gst_harness_teardown (h);
  ref_case_free (rc);
}

GST_END_TEST;

/* After a DISCONT the encoder starts from a fresh state: feeding the
 * reference input again reproduces the reference codes from frame 0. */
GST_START_TEST (test_enc_discont)
{
  RefCase *rc = ref_case_load ("mimi-tiny");
  GstHarness *h = new_enc (rc->dir, 8, F32_CAPS);
  GstHarness *h2 = new_enc (rc->dir, 8, F32_CAPS);
  EncOut *o = enc_out_new ();
  EncOut *o2 = enc_out_new ();
  guint64 restart = 10 * FRAME + RATE; /* 1 s gap after 10 frames */
  gint f, q, differ = 0;

  push_pcm_chunked (h, rc->pcm, 0, 10 * FRAME, 2 * FRAME, FALSE, 0, FALSE);
  push_pcm_chunked (h, rc->pcm, 0, rc->n, 1000, FALSE, restart, TRUE);
  fail_unless (gst_harness_push_event (h, gst_event_new_eos ()));
  pull_codes (h, 8, o);

  fail_unless_equals_int (enc_out_frames (o), 10 + rc->frames);
  assert_codes (o, 8, 0, rc, 0, 10);
  assert_codes (o, 8, 10, rc, 0, rc->frames);
  assert_timestamps (o, 0, 10, 0);
  assert_timestamps (o, 10, rc->frames,
      gst_util_uint64_scale (restart, GST_SECOND, RATE));
  fail_unless (g_array_index (o->flags, guint, 10) & GST_BUFFER_FLAG_DISCONT);

  /* Control: the same input without DISCONT continues the old state and
   * does not give the reference codes, so the test above means something. */
  push_pcm_chunked (h2, rc->pcm, 0, 10 * FRAME, 2 * FRAME, FALSE, 0, FALSE);
  push_pcm_chunked (h2, rc->pcm, 0, rc->n, 1000, FALSE, 10 * FRAME, FALSE);
  pull_codes (h2, 8, o2);
  fail_unless_equals_int (enc_out_frames (o2), 10 + rc->frames);
  for (f = 0; f < rc->frames; f++)
    for (q = 0; q < 8; q++)
      differ += g_array_index (o2->codes, guint16, (10 + f) * 8 + q)
          != rc->codes[f * REF_NQ + q];
  fail_unless (differ > 0, "stream state seems to have no effect");

  enc_out_free (o);
  enc_out_free (o2);
  gst_harness_teardown (h);
  gst_harness_teardown (h2);
  ref_case_free (rc);
}

GST_END_TEST;

static void
harness_flush (GstHarness *h)
{
  GstSegment seg;

  fail_unless (gst_harness_push_event (h, gst_event_new_flush_start ()));
  fail_unless (gst_harness_push_event (h, gst_event_new_flush_stop (TRUE)));
  gst_segment_init (&seg, GST_FORMAT_TIME);
  fail_unless (gst_harness_push_event (h, gst_event_new_segment (&seg)));
}

GST_START_TEST (test_enc_flush)
{
  RefCase *rc = ref_case_load ("mimi-tiny");
  GstHarness *h = new_enc (rc->dir, 8, F32_CAPS);
  EncOut *o = enc_out_new ();

  /* 7.5 frames: a flush must also drop the pending half frame. */
  push_pcm_chunked (h, rc->pcm, 0, 7 * FRAME + FRAME / 2, 1000, FALSE, 0,
      FALSE);
  pull_codes (h, 8, o);
  fail_unless_equals_int (enc_out_frames (o), 7);
  enc_out_free (o);

  harness_flush (h);

  o = enc_out_new ();
  push_pcm_chunked (h, rc->pcm, 0, rc->n, 1000, FALSE, 0, FALSE);
  fail_unless (gst_harness_push_event (h, gst_event_new_eos ()));
  pull_codes (h, 8, o);
  fail_unless_equals_int (enc_out_frames (o), rc->frames);
  assert_codes (o, 8, 0, rc, 0, rc->frames);
  assert_timestamps (o, 0, rc->frames, 0);

  /* Flushing after EOS (the base class has nothing pending then) must
   * reset the state as well. */
  harness_flush (h);
  enc_out_free (o);
  o = enc_out_new ();
  push_pcm_chunked (h, rc->pcm, 0, 5 * FRAME, 1000, FALSE, 0, FALSE);
  pull_codes (h, 8, o);
  assert_codes (o, 8, 0, rc, 0, 5);

  enc_out_free (o);
  gst_harness_teardown (h);
  ref_case_free (rc);
}

GST_END_TEST;

GST_START_TEST (test_enc_wrong_caps)
{
  RefCase *rc = ref_case_load ("mimi-tiny");
  const gchar *bad[] = {
    "audio/x-raw, format=F32LE, rate=16000, channels=1, layout=interleaved",
    "audio/x-raw, format=F32LE, rate=24000, channels=2, layout=interleaved",
    "audio/x-raw, format=S32LE, rate=24000, channels=1, layout=interleaved",
  };
  guint i;

  for (i = 0; i < G_N_ELEMENTS (bad); i++) {
    GstHarness *h = new_enc (rc->dir, 8, NULL);
    GstCaps *caps = gst_caps_from_string (bad[i]);
    GstPad *sink = gst_element_get_static_pad (h->element, "sink");

    fail_if (gst_pad_query_accept_caps (sink, caps), "accepted %s", bad[i]);
    fail_if (gst_pad_send_event (sink, gst_event_new_caps (caps)),
        "caps event %s accepted", bad[i]);
    gst_caps_unref (caps);
    gst_object_unref (sink);
    gst_harness_teardown (h);
  }
  ref_case_free (rc);
}

GST_END_TEST;

/* Downstream insists on another number of codebooks: a clear error. */
GST_START_TEST (test_enc_downstream_codebooks)
{
  RefCase *rc = ref_case_load ("mimi-tiny");
  GstHarness *h = new_enc (rc->dir, 8, NULL);
  GstBus *bus = attach_bus (h->element);
  gchar *msg;

  gst_harness_set_sink_caps_str (h, "audio/x-mimi, codebooks=(int)4");
  gst_harness_set_src_caps_str (h, F32_CAPS);
  fail_if (push_pcm (h, rc->pcm, 0, FRAME, FALSE, 0, FALSE) == GST_FLOW_OK);
  msg = pop_error (bus);
  fail_unless (msg != NULL);
  fail_unless (strstr (msg, "8 codebooks")
          && strstr (msg,
              "codebooks "
              "property"),
      "message: %s", msg);
  g_free (msg);
  detach_bus (h->element, bus);
  gst_harness_teardown (h);
  ref_case_free (rc);
}

GST_END_TEST;

GST_START_TEST (test_enc_too_many_codebooks)
{
  RefCase *rc = ref_case_load ("mimi-tiny"); /* 16 codebooks stored */
  GstElement *e = gst_element_factory_make ("mimienc", NULL);
  GstBus *bus = attach_bus (e);
  gchar *msg;

  g_object_set (e, "model", rc->dir, "codebooks", 20, NULL);
  fail_unless_equals_int (gst_element_set_state (e, GST_STATE_PAUSED),
      GST_STATE_CHANGE_FAILURE);
  msg = pop_error (bus);
  fail_unless (msg != NULL);
  fail_unless (strstr (msg, "codebooks=20") && strstr (msg, "only 16"),
      "message: %s", msg);
  g_free (msg);

  gst_element_set_state (e, GST_STATE_NULL);
  detach_bus (e, bus);
  gst_object_unref (e);
  ref_case_free (rc);
}

GST_END_TEST;

static void
check_missing_model (const gchar *factory, const gchar *model,
    const gchar *must_mention, const gchar *must_mention2)
{
  GstElement *e = gst_element_factory_make (factory, NULL);
  GstBus *bus = attach_bus (e);
  gchar *msg;

  g_object_set (e, "model", model, NULL);
  fail_unless_equals_int (gst_element_set_state (e, GST_STATE_PAUSED),
      GST_STATE_CHANGE_FAILURE);
  msg = pop_error (bus);
  fail_unless (msg != NULL, "%s: no error message", factory);
  fail_unless (strstr (msg, must_mention) != NULL,
      "%s: message '%s' does "
      "not mention '%s'",
      factory, msg, must_mention);
  if (must_mention2)
    fail_unless (strstr (msg, must_mention2) != NULL,
        "%s: message '%s' does "
        "not mention '%s'",
        factory, msg, must_mention2);
  g_free (msg);
  gst_element_set_state (e, GST_STATE_NULL);
  detach_bus (e, bus);
  gst_object_unref (e);
}

GST_START_TEST (test_missing_model)
{
  gchar *tmp = g_dir_make_tmp ("gst-moshi-XXXXXX", NULL);
  gchar *hf = g_build_filename (tmp, "hf", NULL);
  gchar *bad_file;

  g_setenv ("HF_HOME", hf, TRUE);
  g_unsetenv ("HF_HUB_CACHE");
  g_unsetenv ("HUGGINGFACE_HUB_CACHE");

  check_missing_model ("mimienc", "/nonexistent/dir/mimi.safetensors",
      "/nonexistent/dir/mimi.safetensors", NULL);
  check_missing_model ("mimidec", "/nonexistent/dir/mimi.safetensors",
      "/nonexistent/dir/mimi.safetensors", NULL);
  /* An empty folder: say what was looked for and how to get it. */
  check_missing_model ("mimienc", tmp, tmp,
      "huggingface-cli download kyutai/moshiko-pytorch-bf16 "
      "tokenizer-e351c8d8-checkpoint125.safetensors");
  /* A repo id that is not in the cache. */
  check_missing_model ("mimidec", "someone/some-mimi",
      "models--someone--some-mimi", "huggingface-cli download");

  /* A file that exists but is no model: the engine's error comes through. */
  bad_file = g_build_filename (tmp, "broken.safetensors", NULL);
  fail_unless (g_file_set_contents (bad_file, "not a model", -1, NULL));
  check_missing_model ("mimienc", bad_file, "broken.safetensors", NULL);
  g_unlink (bad_file);
  g_free (bad_file);

  g_rmdir (tmp);
  g_free (hf);
  g_free (tmp);
}

GST_END_TEST;

/* A .safetensors file given directly, here the bf16 copy of the tiny
 * model (its config.json sits beside it): Kyutai's bf16-weight reference. */
GST_START_TEST (test_bf16_file)
{
  RefCase *rc = ref_case_load ("mimi-tiny");
  gchar *file = g_build_filename (rc->dir, "model.bf16.safetensors", NULL);
  GstHarness *h;
  EncOut *o = enc_out_new ();
  DecOut *od = dec_out_new ();
  gint f, q;

  fail_unless (rc->codes_bf16w != NULL && rc->decoded_bf16w != NULL);
  h = new_enc (file, 8, F32_CAPS);
  push_pcm_chunked (h, rc->pcm, 0, rc->n, 1000, FALSE, 0, FALSE);
  pull_codes (h, 8, o);
  fail_unless_equals_int (enc_out_frames (o), rc->frames);
  for (f = 0; f < rc->frames; f++)
    for (q = 0; q < 8; q++)
      fail_unless_equals_int (g_array_index (o->codes, guint16, f * 8 + q),
          rc->codes_bf16w[f * REF_NQ + q]);
  gst_harness_teardown (h);

  h = new_dec (file, "audio/x-mimi, codebooks=(int)8");
  for (f = 0; f < rc->frames; f++) {
    GstBuffer *buf = gst_buffer_new_allocate (NULL, 16, NULL);
    GstMapInfo map;

    gst_buffer_map (buf, &map, GST_MAP_WRITE);
    for (q = 0; q < 8; q++)
      GST_WRITE_UINT16_LE (map.data + 2 * q, rc->codes_bf16w[f * REF_NQ + q]);
    gst_buffer_unmap (buf, &map);
    GST_BUFFER_PTS (buf) = f * FRAME_NS;
    fail_unless_equals_int (gst_harness_push (h, buf), GST_FLOW_OK);
  }
  pull_pcm (h, od);
  fail_unless_equals_int (od->pcm->len, rc->n);
  assert_pcm_close ((gfloat *) od->pcm->data, rc->decoded_bf16w, rc->n,
      "mimi-tiny bf16 weights");
  gst_harness_teardown (h);

  enc_out_free (o);
  dec_out_free (od);
  g_free (file);
  ref_case_free (rc);
}

GST_END_TEST;

/* ------------------------------------------------------------------ */
/* mimidec */

static void
check_dec_reference (const gchar *name, gint per_buffer)
{
  RefCase *rc = ref_case_load (name);
  GstHarness *h = new_dec (rc->dir,
      "audio/x-mimi, codebooks=(int)8, framerate=(fraction)25/2");
  DecOut *o = dec_out_new ();
  GstCaps *caps;
  GstAudioInfo info;
  gint f;
  guint i;

  for (f = 0; f < rc->frames; f += per_buffer) {
    gint count = MIN (per_buffer, rc->frames - f);
    fail_unless_equals_int (gst_harness_push (h,
                                frames_buffer (rc, f, count, 8)),
        GST_FLOW_OK);
  }
  fail_unless (gst_harness_push_event (h, gst_event_new_eos ()));
  pull_pcm (h, o);

  caps = gst_pad_get_current_caps (h->sinkpad);
  fail_unless (gst_audio_info_from_caps (&info, caps));
  fail_unless_equals_int (GST_AUDIO_INFO_FORMAT (&info),
      GST_AUDIO_FORMAT_F32LE);
  fail_unless_equals_int (GST_AUDIO_INFO_RATE (&info), RATE);
  fail_unless_equals_int (GST_AUDIO_INFO_CHANNELS (&info), 1);
  gst_caps_unref (caps);

  fail_unless_equals_int (o->pcm->len, rc->n);
  assert_pcm_close ((gfloat *) o->pcm->data, rc->decoded, rc->n, name);

  /* One output buffer per input buffer, stamped like it. */
  fail_unless_equals_int (o->pts->len,
      (rc->frames + per_buffer - 1) / per_buffer);
  for (i = 0, f = 0; i < o->pts->len; i++) {
    guint n = g_array_index (o->nsamples, guint, i);

    fail_unless_equals_uint64 (g_array_index (o->pts, GstClockTime, i),
        f * FRAME_NS);
    fail_unless_equals_uint64 (g_array_index (o->dur, GstClockTime, i),
        (n / FRAME) * FRAME_NS);
    f += n / FRAME;
  }

  fail_unless_equals_uint64 (gst_harness_query_latency (h), FRAME_NS);

  dec_out_free (o);
  gst_harness_teardown (h);
  ref_case_free (rc);
}

GST_START_TEST (test_dec_reference)
{
  guint i;

  for (i = 0; i < G_N_ELEMENTS (ref_cases); i++)
    check_dec_reference (ref_cases[i], 1);
}

GST_END_TEST;

GST_START_TEST (test_dec_multiframe)
{
  guint i;

  for (i = 0; i < G_N_ELEMENTS (ref_cases); i++) {
    check_dec_reference (ref_cases[i], 3);
    check_dec_reference (ref_cases[i], 25);
  }
}

GST_END_TEST;

GST_START_TEST (test_dec_q4)
{
  RefCase *rc = ref_case_load ("mimi-tiny");
  GstHarness *h = new_dec (rc->dir, "audio/x-mimi, codebooks=(int)4");
  DecOut *o = dec_out_new ();
  gint f;

  fail_unless (rc->decoded_q4 != NULL);
  for (f = 0; f < rc->frames; f++)
    fail_unless_equals_int (gst_harness_push (h, frames_buffer (rc, f, 1, 4)),
        GST_FLOW_OK);
  pull_pcm (h, o);
  fail_unless_equals_int (o->pcm->len, rc->n);
  assert_pcm_close ((gfloat *) o->pcm->data, rc->decoded_q4, rc->n,
      "mimi-tiny q4");

  dec_out_free (o);
  gst_harness_teardown (h);
  ref_case_free (rc);
}

GST_END_TEST;

/* quantize=q8/bf16: output stays close to the float32 reference (SNR bound
 * from the weight rounding) but is not identical (the property took
 * effect), and each precision is its own cache entry. */
GST_START_TEST (test_quantize)
{
  RefCase *rc = ref_case_load ("mimi-small");
  gchar *file = model_file (rc);
  guint loads0 = cache_loads ();
  const gchar *names[] = { "q8", "bf16" };
  const gdouble min_snr[] = { 25.0, 35.0 };
  guint i;

  for (i = 0; i < G_N_ELEMENTS (names); i++) {
    GstHarness *exact = new_dec (rc->dir, "audio/x-mimi, codebooks=(int)8");
    GstHarness *h;
    GstElement *e = gst_element_factory_make ("mimidec", NULL);
    DecOut *o = dec_out_new ();
    gdouble sig = 0, err = 0, snr;
    gint f, j;

    gst_util_set_object_arg (G_OBJECT (e), "quantize", names[i]);
    g_object_set (e, "model", rc->dir, NULL);
    h = gst_harness_new_with_element (e, "sink", "src");
    gst_object_unref (e);
    gst_harness_set_src_caps_str (h, "audio/x-mimi, codebooks=(int)8");
    /* Two entries now: the float32 model and this precision. */
    fail_unless_equals_int (cache_users (file), 1);
    fail_unless_equals_int (cache_loads () - loads0, 2 * i + 2);

    for (f = 0; f < rc->frames; f++)
      fail_unless_equals_int (gst_harness_push (h, frames_buffer (rc, f, 1, 8)),
          GST_FLOW_OK);
    pull_pcm (h, o);
    fail_unless_equals_int (o->pcm->len, rc->n);
    for (j = 0; j < rc->n; j++) {
      gdouble d = g_array_index (o->pcm, gfloat, j) - rc->decoded[j];
      sig += (gdouble) rc->decoded[j] * rc->decoded[j];
      err += d * d;
    }
    snr = 10 * log10 (sig / MAX (err, 1e-30));
    GST_INFO ("quantize=%s: SNR %.1f dB", names[i], snr);
    fail_unless (err > 0, "quantize=%s gave float32-exact output", names[i]);
    fail_unless (snr >= min_snr[i], "quantize=%s: SNR %.1f dB < %.1f", names[i],
        snr, min_snr[i]);

    dec_out_free (o);
    gst_harness_teardown (h);
    gst_harness_teardown (exact);
  }
  g_free (file);
  ref_case_free (rc);
}

GST_END_TEST;

GST_START_TEST (test_dec_discont_and_flush)
{
  RefCase *rc = ref_case_load ("mimi-tiny");
  GstHarness *h = new_dec (rc->dir, "audio/x-mimi, codebooks=(int)8");
  DecOut *o;
  gint f;

  /* 10 frames, then the stream again from frame 0 marked DISCONT. */
  for (f = 0; f < 10; f++)
    fail_unless_equals_int (gst_harness_push (h, frames_buffer (rc, f, 1, 8)),
        GST_FLOW_OK);
  for (f = 0; f < rc->frames; f++) {
    GstBuffer *buf = frames_buffer (rc, f, 1, 8);

    GST_BUFFER_PTS (buf) += 2 * GST_SECOND;
    if (f == 0)
      GST_BUFFER_FLAG_SET (buf, GST_BUFFER_FLAG_DISCONT);
    fail_unless_equals_int (gst_harness_push (h, buf), GST_FLOW_OK);
  }
  o = dec_out_new ();
  pull_pcm (h, o);
  fail_unless_equals_int (o->pcm->len, 10 * FRAME + rc->n);
  assert_pcm_close ((gfloat *) o->pcm->data, rc->decoded, 10 * FRAME,
      "before DISCONT");
  assert_pcm_close ((gfloat *) o->pcm->data + 10 * FRAME, rc->decoded, rc->n,
      "after DISCONT");
  fail_unless_equals_uint64 (g_array_index (o->pts, GstClockTime, 10),
      2 * GST_SECOND);
  dec_out_free (o);

  /* A flushing seek: start again, from a fresh state. */
  harness_flush (h);
  for (f = 0; f < rc->frames; f++)
    fail_unless_equals_int (gst_harness_push (h, frames_buffer (rc, f, 1, 8)),
        GST_FLOW_OK);
  o = dec_out_new ();
  pull_pcm (h, o);
  fail_unless_equals_int (o->pcm->len, rc->n);
  assert_pcm_close ((gfloat *) o->pcm->data, rc->decoded, rc->n, "after flush");
  dec_out_free (o);

  gst_harness_teardown (h);
  ref_case_free (rc);
}

GST_END_TEST;

GST_START_TEST (test_dec_wrong_caps)
{
  RefCase *rc = ref_case_load ("mimi-tiny"); /* 16 codebooks stored */
  const gchar *bad[] = {
    "audio/x-mimi, codebooks=(int)40",
    "audio/x-mimi, codebooks=(int)0",
    "audio/x-mimi",
    "audio/x-raw, format=F32LE, rate=24000, channels=1",
  };
  GstHarness *h;
  GstCaps *caps;
  GstPad *sink;
  GstBus *bus;
  gchar *msg;
  guint i;

  for (i = 0; i < G_N_ELEMENTS (bad); i++) {
    h = new_dec (rc->dir, NULL);
    caps = gst_caps_from_string (bad[i]);
    sink = gst_element_get_static_pad (h->element, "sink");
    fail_if (gst_pad_send_event (sink, gst_event_new_caps (caps)),
        "caps %s accepted", bad[i]);
    gst_caps_unref (caps);
    gst_object_unref (sink);
    gst_harness_teardown (h);
  }

  /* Within the template but more than the model stores: a negotiation
   * error that says so. */
  h = new_dec (rc->dir, NULL);
  bus = attach_bus (h->element);
  sink = gst_element_get_static_pad (h->element, "sink");
  caps = gst_caps_from_string ("audio/x-mimi, codebooks=(int)20");
  fail_if (gst_pad_send_event (sink, gst_event_new_caps (caps)));
  gst_caps_unref (caps);
  msg = pop_error (bus);
  fail_unless (msg != NULL);
  fail_unless (strstr (msg, "20 codebooks") && strstr (msg, "only 16"),
      "message: %s", msg);
  g_free (msg);
  gst_object_unref (sink);
  detach_bus (h->element, bus);
  gst_harness_teardown (h);

  /* Data without caps is refused, not guessed. */
  h = new_dec (rc->dir, NULL);
  {
    GstSegment seg;

    gst_segment_init (&seg, GST_FORMAT_TIME);
    fail_unless (gst_harness_push_event (h, gst_event_new_segment (&seg)));
  }
  fail_if (gst_harness_push (h, frames_buffer (rc, 0, 1, 8)) == GST_FLOW_OK);
  gst_harness_teardown (h);

  ref_case_free (rc);
}

GST_END_TEST;

static void
check_dec_bad_buffer (RefCase *rc, GstBuffer *buf, const gchar *expect)
{
  GstHarness *h = new_dec (rc->dir, "audio/x-mimi, codebooks=(int)8");
  GstBus *bus = attach_bus (h->element);
  gchar *msg;

  /* A good frame first: errors must not depend on a fresh state. */
  fail_unless_equals_int (gst_harness_push (h, frames_buffer (rc, 0, 1, 8)),
      GST_FLOW_OK);
  fail_unless_equals_int (gst_harness_push (h, buf), GST_FLOW_ERROR);
  msg = pop_error (bus);
  fail_unless (msg != NULL, "no error message for %s", expect);
  fail_unless (strstr (msg, expect) != NULL, "message '%s' lacks '%s'", msg,
      expect);
  g_free (msg);
  detach_bus (h->element, bus);
  gst_harness_teardown (h);
}

GST_START_TEST (test_dec_bad_buffers)
{
  RefCase *rc = ref_case_load ("mimi-tiny"); /* bins = 64 */
  guint8 junk[64];
  guint i;

  for (i = 0; i < sizeof (junk); i++)
    junk[i] = (guint8) (i * 37 + 11);

  check_dec_bad_buffer (rc, raw_buffer (junk, 15),
      "buffer of 15 bytes is not a whole number of 8-codebook frames "
      "(16 bytes each)");
  check_dec_bad_buffer (rc, raw_buffer (junk, 1), "buffer of 1 bytes");
  check_dec_bad_buffer (rc, raw_buffer (junk, 33), "buffer of 33 bytes");

  /* Whole frames, codes out of range. */
  {
    guint8 frame[16] = { 0 };

    GST_WRITE_UINT16_LE (frame + 6, 64); /* == bins */
    check_dec_bad_buffer (rc, raw_buffer (frame, 16), "Invalid Mimi frame");
    GST_WRITE_UINT16_LE (frame + 6, 0xffff);
    check_dec_bad_buffer (rc, raw_buffer (frame, 16), "Invalid Mimi frame");
  }
  /* Garbage that is a whole number of frames: large codes, refused. */
  check_dec_bad_buffer (rc, raw_buffer (junk, 64), "Invalid Mimi frame");

  /* Empty buffers are dropped by the base class, not an error. */
  {
    GstHarness *h = new_dec (rc->dir, "audio/x-mimi, codebooks=(int)8");

    fail_unless_equals_int (gst_harness_push (h, gst_buffer_new ()),
        GST_FLOW_OK);
    fail_unless_equals_int (gst_harness_push (h, frames_buffer (rc, 0, 1, 8)),
        GST_FLOW_OK);
    gst_harness_teardown (h);
  }

  ref_case_free (rc);
}

GST_END_TEST;

/* Random byte soup must never crash the decoder. */
GST_START_TEST (test_dec_fuzz)
{
  RefCase *rc = ref_case_load ("mimi-tiny");
  GRand *rand = g_rand_new_with_seed (1234);
  gint iter;

  for (iter = 0; iter < 50; iter++) {
    GstHarness *h = new_dec (rc->dir, "audio/x-mimi, codebooks=(int)8");
    gsize size = g_rand_int_range (rand, 1, 200);
    guint8 *data = g_malloc (size);
    gsize i;
    GstFlowReturn ret;

    for (i = 0; i < size; i++)
      data[i] = g_rand_int (rand);
    /* Keep codes small half of the time so that some buffers decode. */
    if (iter % 2)
      for (i = 1; i < size; i += 2)
        data[i] = 0, data[i - 1] &= 63;
    ret = gst_harness_push (h, raw_buffer (data, size));
    fail_unless (ret == GST_FLOW_OK || ret == GST_FLOW_ERROR);
    if (ret == GST_FLOW_OK)
      fail_unless (size % 16 == 0);
    g_free (data);
    gst_harness_teardown (h);
  }
  g_rand_free (rand);
  ref_case_free (rc);
}

GST_END_TEST;

/* ------------------------------------------------------------------ */
/* Model cache */

GST_START_TEST (test_cache_shared)
{
  RefCase *rc = ref_case_load ("mimi-tiny");
  gchar *file = model_file (rc);
  gchar *other_spelling =
      g_build_filename (rc->dir, ".", "model.safetensors", NULL);
  guint loads0 = cache_loads ();
  GstHarness *enc1, *enc2, *dec;
  EncOut *o1 = enc_out_new (), *o2 = enc_out_new ();

  fail_unless_equals_int (cache_users (file), 0);
  enc1 = new_enc (rc->dir, 8, F32_CAPS);
  enc2 = new_enc (other_spelling, 8, F32_CAPS);
  dec = new_dec (file, "audio/x-mimi, codebooks=(int)8");
  fail_unless_equals_int (cache_users (file), 3);
  fail_unless_equals_int (cache_loads () - loads0, 1);

  /* Shared weights, separate states: interleaved streams stay exact. */
  push_pcm_chunked (enc1, rc->pcm, 0, rc->n, 1000, FALSE, 0, FALSE);
  push_pcm_chunked (enc2, rc->pcm, 0, 12 * FRAME, 999, FALSE, 0, FALSE);
  pull_codes (enc1, 8, o1);
  pull_codes (enc2, 8, o2);
  assert_codes (o1, 8, 0, rc, 0, rc->frames);
  assert_codes (o2, 8, 0, rc, 0, 12);

  gst_harness_teardown (enc1);
  fail_unless_equals_int (cache_users (file), 2);
  gst_harness_teardown (dec);
  gst_harness_teardown (enc2);
  /* The last user gone, the model is unloaded; a new user loads again. */
  fail_unless_equals_int (cache_users (file), 0);
  enc1 = new_enc (file, 8, F32_CAPS);
  fail_unless_equals_int (cache_users (file), 1);
  fail_unless_equals_int (cache_loads () - loads0, 2);
  gst_harness_teardown (enc1);
  fail_unless_equals_int (cache_users (file), 0);

  enc_out_free (o1);
  enc_out_free (o2);
  g_free (other_spelling);
  g_free (file);
  ref_case_free (rc);
}

GST_END_TEST;

static gpointer
start_element (gpointer data)
{
  return GINT_TO_POINTER (
      gst_element_set_state (GST_ELEMENT (data), GST_STATE_PAUSED));
}

/* Elements started at the same time load the model once. */
GST_START_TEST (test_cache_concurrent)
{
  RefCase *rc = ref_case_load ("mimi-small");
  gchar *file = model_file (rc);
  guint loads0 = cache_loads ();
  GstElement *e[4];
  GThread *t[4];
  guint i;

  for (i = 0; i < G_N_ELEMENTS (e); i++) {
    e[i] = gst_element_factory_make (i % 2 ? "mimidec" : "mimienc", NULL);
    g_object_set (e[i], "model", rc->dir, NULL);
  }
  for (i = 0; i < G_N_ELEMENTS (e); i++)
    t[i] = g_thread_new ("start", start_element, e[i]);
  for (i = 0; i < G_N_ELEMENTS (e); i++)
    fail_if (
        GPOINTER_TO_INT (g_thread_join (t[i])) == GST_STATE_CHANGE_FAILURE);

  fail_unless_equals_int (cache_users (file), G_N_ELEMENTS (e));
  fail_unless_equals_int (cache_loads () - loads0, 1);

  for (i = 0; i < G_N_ELEMENTS (e); i++) {
    gst_element_set_state (e[i], GST_STATE_NULL);
    gst_object_unref (e[i]);
  }
  fail_unless_equals_int (cache_users (file), 0);
  g_free (file);
  ref_case_free (rc);
}

GST_END_TEST;

/* ------------------------------------------------------------------ */
/* Model resolution */

static gchar *
tmp_dir (void)
{
  gchar *d = g_dir_make_tmp ("gst-moshi-XXXXXX", NULL);

  fail_unless (d != NULL);
  return d;
}

static void
write_file (const gchar *dir, const gchar *name, const gchar *contents)
{
  gchar *path = g_build_filename (dir, name, NULL);
  gchar *parent = g_path_get_dirname (path);

  fail_unless (g_mkdir_with_parents (parent, 0755) == 0);
  fail_unless (g_file_set_contents (path, contents, -1, NULL));
  g_free (parent);
  g_free (path);
}

static void
rm_rf (const gchar *path)
{
  GDir *dir;

  if (!g_file_test (path, G_FILE_TEST_IS_SYMLINK)
      && g_file_test (path, G_FILE_TEST_IS_DIR)) {
    const gchar *name;

    dir = g_dir_open (path, 0, NULL);
    while (dir && (name = g_dir_read_name (dir))) {
      gchar *child = g_build_filename (path, name, NULL);
      rm_rf (child);
      g_free (child);
    }
    if (dir)
      g_dir_close (dir);
    g_rmdir (path);
  } else {
    g_unlink (path);
  }
}

/* Points every Hugging Face location at `hub_parent`/hub via HF_HOME. */
static void
set_hf_home (const gchar *hf_home)
{
  g_unsetenv ("HF_HUB_CACHE");
  g_unsetenv ("HUGGINGFACE_HUB_CACHE");
  g_unsetenv ("XDG_CACHE_HOME");
  g_setenv ("HF_HOME", hf_home, TRUE);
}

static void
assert_resolves (const gchar *model, const gchar *expected)
{
  GError *err = NULL;
  gchar *got = resolve_mimi (model, &err);

  fail_unless (got != NULL, "'%s' did not resolve: %s", model,
      err ? err->message : "?");
  fail_unless_equals_string (got, expected);
  g_free (got);
}

static void
assert_fails (const gchar *model, const gchar *m1, const gchar *m2)
{
  GError *err = NULL;
  gchar *got = resolve_mimi (model, &err);

  fail_unless (got == NULL, "'%s' resolved to %s", model, got);
  fail_unless (err != NULL);
  GST_INFO ("'%s': %s", model, err->message);
  fail_unless (strstr (err->message, m1) != NULL, "'%s' not in '%s'", m1,
      err->message);
  if (m2)
    fail_unless (strstr (err->message, m2) != NULL, "'%s' not in '%s'", m2,
        err->message);
  g_error_free (err);
}

GST_START_TEST (test_resolve_file_and_folder)
{
  RefCase *rc = ref_case_load ("mimi-tiny");
  gchar *file = model_file (rc);
  gchar *config = g_build_filename (rc->dir, "config.json", NULL);
  gchar *bf16 = g_build_filename (rc->dir, "model.bf16.safetensors", NULL);

  assert_resolves (file, file);
  assert_resolves (bf16, bf16);
  /* Folder with a Mimi config.json ("seanet"): model.safetensors. */
  assert_resolves (rc->dir, file);
  assert_resolves (config, file);

  g_free (bf16);
  g_free (config);
  g_free (file);
  ref_case_free (rc);
}

GST_END_TEST;

GST_START_TEST (test_resolve_kyutai_folder)
{
  gchar *d = tmp_dir ();
  gchar *expected;

  /* Kyutai repo layout: config.json names the Mimi file. */
  write_file (d, "config.json",
      "{\"moshi_name\": \"model.safetensors\", "
      "\"mimi_name\": \"my-mimi.safetensors\", "
      "\"tokenizer_name\": \"tokenizer.model\", \"dim\": 4096}");
  assert_fails (d, "my-mimi.safetensors", "huggingface-cli download");
  write_file (d, "my-mimi.safetensors", "x");
  expected = g_build_filename (d, "my-mimi.safetensors", NULL);
  assert_resolves (d, expected);
  g_free (expected);
  rm_rf (d);

  /* No config.json: Kyutai's standard names. */
  g_mkdir (d, 0755);
  assert_fails (d, d,
      "huggingface-cli download kyutai/moshiko-pytorch-bf16 "
      "tokenizer-e351c8d8-checkpoint125.safetensors");
  write_file (d, "mimi-pytorch-e351c8d8@125.safetensors", "x");
  expected =
      g_build_filename (d, "mimi-pytorch-e351c8d8@125.safetensors", NULL);
  assert_resolves (d, expected);
  g_free (expected);
  write_file (d, "tokenizer-e351c8d8-checkpoint125.safetensors", "x");
  expected = g_build_filename (d,
      "tokenizer-e351c8d8-checkpoint125.safetensors", NULL);
  assert_resolves (d, expected);

  /* A config.json for something else (an LM) does not stop the search. */
  write_file (d, "config.json", "{\"dim\": 64, \"n_q\": 16}");
  assert_resolves (d, expected);
  g_free (expected);

  /* A broken config.json is reported, not ignored. */
  write_file (d, "config.json", "{\"mimi_name\": ");
  assert_fails (d, "config.json", NULL);

  rm_rf (d);
  g_free (d);
}

GST_END_TEST;

/* Builds hub/models--owner--name/{blobs,refs/main,snapshots/<rev>/...} like
 * huggingface-cli does (snapshot entries are symlinks to blobs). */
static gchar *
make_hf_snapshot (const gchar *hub, const gchar *repo_dir, const gchar *rev,
    const gchar *mimi_name, gboolean with_file)
{
  gchar *snap = g_build_filename (hub, repo_dir, "snapshots", rev, NULL);
  gchar *blobs = g_build_filename (hub, repo_dir, "blobs", NULL);
  gchar *config = g_strdup_printf ("{\"mimi_name\": \"%s\", "
                                   "\"moshi_name\": \"model.safetensors\"}",
      mimi_name);
  gchar *blob = g_strdup_printf ("blob-%s", rev);
  gchar *link, *target;

  write_file (blobs, blob, "weights");
  write_file (snap, "config.json", config);
  if (with_file) {
    link = g_build_filename (snap, mimi_name, NULL);
    target = g_build_filename ("..", "..", "blobs", blob, NULL);
    fail_unless (symlink (target, link) == 0);
    g_free (target);
    g_free (link);
  }
  g_free (blob);
  g_free (config);
  g_free (blobs);
  return snap;
}

GST_START_TEST (test_resolve_hf_cache)
{
  const gchar *mimi = "tokenizer-e351c8d8-checkpoint125.safetensors";
  const gchar *repo_dir = "models--kyutai--moshiko-pytorch-bf16";
  gchar *home = tmp_dir ();
  gchar *hub = g_build_filename (home, "hub", NULL);
  gchar *snap1, *snap2, *snap3, *expected, *refs, *hub2;

  set_hf_home (home);

  /* Nothing cached: the message says where we looked and what to run. */
  assert_fails (NULL,
      "huggingface-cli download kyutai/moshiko-pytorch-bf16 "
      "tokenizer-e351c8d8-checkpoint125.safetensors",
      hub);
  assert_fails ("", "huggingface", NULL);
  assert_fails ("kyutai/moshiko-pytorch-bf16", repo_dir, "huggingface-cli");

  snap1 = make_hf_snapshot (hub, repo_dir, "aaa111", mimi, TRUE);
  snap2 = make_hf_snapshot (hub, repo_dir, "bbb222", mimi, TRUE);
  /* Without refs/main: any snapshot (the first in name order). */
  expected = g_build_filename (snap1, mimi, NULL);
  assert_resolves ("kyutai/moshiko-pytorch-bf16", expected);
  g_free (expected);

  /* refs/main wins. */
  refs = g_build_filename (hub, repo_dir, "refs", NULL);
  write_file (refs, "main", "bbb222");
  expected = g_build_filename (snap2, mimi, NULL);
  assert_resolves ("kyutai/moshiko-pytorch-bf16", expected);
  /* Unset property: the default repo. */
  assert_resolves (NULL, expected);
  assert_resolves ("", expected);
  g_free (expected);

  /* refs/main names a snapshot whose Mimi blob never arrived: another
   * complete snapshot is used. */
  snap3 = make_hf_snapshot (hub, repo_dir, "ccc333", mimi, FALSE);
  write_file (refs, "main", "ccc333\n");
  expected = g_build_filename (snap1, mimi, NULL);
  assert_resolves ("kyutai/moshiko-pytorch-bf16", expected);
  g_free (expected);
  g_free (snap3);

  /* Another repo, only partly downloaded: say which file is missing. */
  g_free (make_hf_snapshot (hub, "models--kyutai--stt-1b-en_fr", "r1",
      "mimi-pytorch-e351c8d8@125.safetensors", FALSE));
  assert_fails ("kyutai/stt-1b-en_fr", "mimi-pytorch-e351c8d8@125.safetensors",
      "huggingface-cli download kyutai/stt-1b-en_fr");

  /* HF_HUB_CACHE takes precedence over HF_HOME. */
  hub2 = g_build_filename (home, "other-hub", NULL);
  g_mkdir (hub2, 0755);
  g_setenv ("HF_HUB_CACHE", hub2, TRUE);
  assert_fails ("kyutai/moshiko-pytorch-bf16", hub2, NULL);
  g_unsetenv ("HF_HUB_CACHE");

  /* An existing folder with the same name as a repo id wins over the
   * cache (relative paths are paths first). */
  {
    gchar *cwd = g_get_current_dir ();
    gchar *local;

    fail_unless (g_chdir (home) == 0);
    write_file (home,
        "kyutai/moshiko-pytorch-bf16/"
        "tokenizer-e351c8d8-"
        "checkpoint125.safetensors",
        "x");
    local = g_build_filename ("kyutai/moshiko-pytorch-bf16", mimi, NULL);
    assert_resolves ("kyutai/moshiko-pytorch-bf16", local);
    g_free (local);
    fail_unless (g_chdir (cwd) == 0);
    g_free (cwd);
  }

  /* Not a path and not a repo id. */
  assert_fails ("/nonexistent/mimi.safetensors",
      "/nonexistent/mimi.safetensors", NULL);
  assert_fails ("nonexistent-model", "nonexistent-model", "repo id");
  assert_fails ("a/b/c", "a/b/c", NULL);

  rm_rf (home);
  g_free (hub2);
  g_free (refs);
  g_free (snap1);
  g_free (snap2);
  g_free (hub);
  g_free (home);
}

GST_END_TEST;

/* The elements go through the resolver: a repo id in a (fake) Hugging Face
 * cache holding the tiny model works end to end. */
GST_START_TEST (test_element_hf_repo)
{
  RefCase *rc = ref_case_load ("mimi-tiny");
  gchar *home = tmp_dir ();
  gchar *snap = g_build_filename (home, "hub", "models--test--mimi-tiny",
      "snapshots", "0123abcd", NULL);
  gchar *src, *dst;
  GstHarness *h;
  EncOut *o = enc_out_new ();
  const gchar *files[] = { "config.json", "model.safetensors" };
  guint i;

  set_hf_home (home);
  fail_unless (g_mkdir_with_parents (snap, 0755) == 0);
  for (i = 0; i < G_N_ELEMENTS (files); i++) {
    src = g_build_filename (rc->dir, files[i], NULL);
    dst = g_build_filename (snap, files[i], NULL);
    fail_unless (symlink (src, dst) == 0);
    g_free (src);
    g_free (dst);
  }

  h = new_enc ("test/mimi-tiny", 8, F32_CAPS);
  push_pcm_chunked (h, rc->pcm, 0, rc->n, 1000, FALSE, 0, FALSE);
  pull_codes (h, 8, o);
  assert_codes (o, 8, 0, rc, 0, rc->frames);
  gst_harness_teardown (h);

  enc_out_free (o);
  rm_rf (home);
  g_free (snap);
  g_free (home);
  ref_case_free (rc);
}

GST_END_TEST;

GST_START_TEST (test_properties)
{
  GstElement *enc = gst_element_factory_make ("mimienc", NULL);
  GstElement *dec = gst_element_factory_make ("mimidec", NULL);
  GstElementFactory *f;
  gchar *model;
  gint codebooks, threads;

  g_object_get (enc, "model", &model, "codebooks", &codebooks, "threads",
      &threads, NULL);
  fail_unless (model == NULL);
  fail_unless_equals_int (codebooks, 8);
  fail_unless_equals_int (threads, 1);
  g_object_set (enc, "model", "x/y", "codebooks", 32, "threads", 4, NULL);
  g_object_get (enc, "model", &model, "codebooks", &codebooks, "threads",
      &threads, NULL);
  fail_unless_equals_string (model, "x/y");
  fail_unless_equals_int (codebooks, 32);
  fail_unless_equals_int (threads, 4);
  g_free (model);

  g_object_get (dec, "threads", &threads, NULL);
  fail_unless_equals_int (threads, 1);

  f = gst_element_get_factory (enc);
  fail_unless_equals_string (gst_element_factory_get_klass (f),
      "Codec/Encoder/Audio");
  f = gst_element_get_factory (dec);
  fail_unless_equals_string (gst_element_factory_get_klass (f),
      "Codec/Decoder/Audio");

  gst_object_unref (enc);
  gst_object_unref (dec);
}

GST_END_TEST;

/* threads > 1 must not change the result. */
GST_START_TEST (test_threads)
{
  RefCase *rc = ref_case_load ("mimi-small");
  GstElement *e = gst_element_factory_make ("mimienc", NULL);
  GstElement *d = gst_element_factory_make ("mimidec", NULL);
  GstHarness *h;
  EncOut *o = enc_out_new ();
  DecOut *od = dec_out_new ();
  gint f;

  g_object_set (e, "model", rc->dir, "threads", 3, NULL);
  h = gst_harness_new_with_element (e, "sink", "src");
  gst_harness_set_src_caps_str (h, F32_CAPS);
  push_pcm_chunked (h, rc->pcm, 0, rc->n, 4000, FALSE, 0, FALSE);
  pull_codes (h, 8, o);
  assert_codes (o, 8, 0, rc, 0, rc->frames);
  gst_harness_teardown (h);

  g_object_set (d, "model", rc->dir, "threads", 2, NULL);
  h = gst_harness_new_with_element (d, "sink", "src");
  gst_harness_set_src_caps_str (h, "audio/x-mimi, codebooks=(int)8");
  for (f = 0; f < rc->frames; f++)
    fail_unless_equals_int (gst_harness_push (h, frames_buffer (rc, f, 1, 8)),
        GST_FLOW_OK);
  pull_pcm (h, od);
  fail_unless_equals_int (od->pcm->len, rc->n);
  assert_pcm_close ((gfloat *) od->pcm->data, rc->decoded, rc->n,
      "mimi-small threads=2");
  gst_harness_teardown (h);

  gst_object_unref (e);
  gst_object_unref (d);
  enc_out_free (o);
  dec_out_free (od);
  ref_case_free (rc);
}

GST_END_TEST;

static Suite *
moshi_elements_suite (void)
{
  Suite *s = suite_create ("moshi-elements");
  TCase *tc;

  tc = tcase_create ("mimienc");
  suite_add_tcase (s, tc);
  tcase_add_test (tc, test_properties);
  tcase_add_test (tc, test_enc_caps);
  tcase_add_test (tc, test_enc_reference_f32);
  tcase_add_test (tc, test_enc_reference_s16);
  tcase_add_test (tc, test_enc_fewer_codebooks);
  tcase_add_test (tc, test_enc_eos_padding);
  tcase_add_test (tc, test_enc_eos_exact);
  tcase_add_test (tc, test_enc_discont);
  tcase_add_test (tc, test_enc_flush);
  tcase_add_test (tc, test_enc_wrong_caps);
  tcase_add_test (tc, test_enc_too_many_codebooks);
  tcase_add_test (tc, test_enc_downstream_codebooks);
  tcase_add_test (tc, test_missing_model);
  tcase_add_test (tc, test_threads);
  tcase_add_test (tc, test_bf16_file);

  tc = tcase_create ("mimidec");
  suite_add_tcase (s, tc);
  tcase_add_test (tc, test_dec_reference);
  tcase_add_test (tc, test_dec_multiframe);
  tcase_add_test (tc, test_dec_q4);
  tcase_add_test (tc, test_quantize);
  tcase_add_test (tc, test_dec_discont_and_flush);
  tcase_add_test (tc, test_dec_wrong_caps);
  tcase_add_test (tc, test_dec_bad_buffers);
  tcase_add_test (tc, test_dec_fuzz);

  tc = tcase_create ("models");
  suite_add_tcase (s, tc);
  tcase_add_test (tc, test_cache_shared);
  tcase_add_test (tc, test_cache_concurrent);
  tcase_add_test (tc, test_resolve_file_and_folder);
  tcase_add_test (tc, test_resolve_kyutai_folder);
  tcase_add_test (tc, test_resolve_hf_cache);
  tcase_add_test (tc, test_element_hf_repo);

  return s;
}

GST_CHECK_MAIN (moshi_elements);
