/* gst-moshi: element tests for moshilm (GstHarness).
 *
 * The element runs the real LM on tests/data/conformance/lm-tiny and is
 * compared with Kyutai's greedy LMGen run recorded in vectors.safetensors:
 * lmgen_in_user_codes [30, 8] in, lmgen_out_tokens [30, 9] out (row s is
 * what step s returned: -1 at step 0, then the text token and 8 audio codes
 * of time slot s - 1).  moshilm stamps the frame of slot t with the PTS of
 * input frame t, and completes the last slot at EOS by repeating the last
 * user frame; the test computes that last frame with libmoshi-models
 * directly.
 *
 * Environment: MOSHI_TEST_DATA = tests/data (else the compile-time
 * MOSHI_TEST_DATA_DIR); GST_PLUGIN_PATH must reach libgstmoshi.so. */
#include <gst/check/gstcheck.h>
#include <gst/check/gstharness.h>
#include <glib/gstdio.h>
#include <gmodule.h>
#include <string.h>

#include "lm.h"
#include "gst-test-util.h"
#include "safetensors.h"
#include "sentencepiece.h"

#define FRAME_NS (80 * GST_MSECOND)
#define STEPS 30
#define NU 8 /* user codebooks */
#define DQ 8 /* model codebooks */
#define CARD 64
#define TEXT_PAD 3

#define MIMI8_CAPS "audio/x-mimi, codebooks=(int)8, framerate=(fraction)25/2"

/* ------------------------------------------------------------------ */
/* Reference */

typedef struct {
  gchar *dir, *file;
  gint64 user[STEPS][NU];
  gint64 out[STEPS][1 + DQ];
  /* Slot STEPS - 1 as completed at EOS (last user frame repeated). */
  gint last_frame[1 + DQ];
  SpModel *sp;
} Ref;

static void
read_i64 (StFile *f, const gchar *name, gint64 *dst, gint64 numel)
{
  const StTensor *t = st_find (f, name);
  GError *err = NULL;

  fail_unless (t != NULL && t->numel == numel, "%s missing or wrong size",
      name);
  fail_unless (st_read_i64 (f, t, dst, &err), "%s: %s", name,
      err ? err->message : "?");
}

/* Kyutai's LMGen again, through libmoshi-models, with one more step. */
static void
compute_eos_frame (Ref *r)
{
  gchar *config = g_build_filename (r->dir, "config.json", NULL);
  LmConfig cfg;
  LmModel *m;
  LmGen *g;
  LmGenParams p;
  GError *err = NULL;
  int codes[NU], out[1 + DQ];
  gint s, k;

  fail_unless (lm_config_load_json (&cfg, config, &err), "%s",
      err ? err->message : "?");
  m = lm_model_load (r->file, &cfg, MOSHI_WEIGHTS_F32, &err);
  fail_unless (m != NULL, "%s", err ? err->message : "?");
  lm_gen_params_default (&p, &cfg);
  p.use_sampling = FALSE;
  g = lm_gen_new (m, &p, &err);
  fail_unless (g != NULL);
  for (s = 0; s <= STEPS; s++) {
    for (k = 0; k < NU; k++)
      codes[k] = r->user[MIN (s, STEPS - 1)][k];
    fail_unless (lm_gen_step (g, codes, out, NULL, &err) == (s > 0));
    /* The library itself agrees with the reference. */
    if (s > 0 && s < STEPS)
      for (k = 0; k <= DQ; k++)
        fail_unless_equals_int (out[k], r->out[s][k]);
  }
  memcpy (r->last_frame, out, sizeof out);
  lm_gen_free (g);
  lm_model_unref (m);
  g_free (config);
}

static Ref *
ref_load (void)
{
  Ref *r = g_new0 (Ref, 1);
  gchar *path, *tok;
  StFile *f;
  GError *err = NULL;

  r->dir = g_build_filename (test_data_dir (), "conformance", "lm-tiny", NULL);
  r->file = g_build_filename (r->dir, "model.safetensors", NULL);
  path = g_build_filename (r->dir, "vectors.safetensors", NULL);
  f = st_open (path, &err);
  fail_unless (f != NULL, "cannot open %s: %s", path, err ? err->message : "?");
  read_i64 (f, "lmgen_in_user_codes", &r->user[0][0], STEPS * NU);
  read_i64 (f, "lmgen_out_tokens", &r->out[0][0], STEPS * (1 + DQ));
  st_unref (f);
  g_free (path);

  tok = g_build_filename (r->dir, "tokenizer.model", NULL);
  r->sp = sp_model_load (tok, &err);
  fail_unless (r->sp != NULL, "%s", err ? err->message : "?");
  g_free (tok);

  compute_eos_frame (r);
  return r;
}

static void
ref_free (Ref *r)
{
  sp_model_free (r->sp);
  g_free (r->dir);
  g_free (r->file);
  g_free (r);
}

/* The frame of time slot t (0 <= t < STEPS) as moshilm must output it. */
static const gint64 *
ref_slot (const Ref *r, gint t, gint64 *tmp)
{
  gint k;

  if (t < STEPS - 1)
    return r->out[t + 1];
  for (k = 0; k <= DQ; k++)
    tmp[k] = r->last_frame[k];
  return tmp;
}

/* Expected text buffers for slots [0, n_slots): pts -> text. */
typedef struct {
  GstClockTime pts;
  gchar *text;
} TextPiece;

static GArray *
ref_text (const Ref *r, gint n_slots)
{
  GArray *a = g_array_new (FALSE, FALSE, sizeof (TextPiece));
  SpDecodeState st;
  GString *s = g_string_new (NULL);
  gint64 tmp[1 + DQ];
  gint t;

  sp_decode_state_init (&st);
  for (t = 0; t < n_slots; t++) {
    gint tokid = ref_slot (r, t, tmp)[0];

    g_string_truncate (s, 0);
    if (tokid != TEXT_PAD && tokid != 0)
      sp_decode_piece (r->sp, tokid, s, &st);
    if (s->len) {
      TextPiece p = { t * FRAME_NS, g_strdup (s->str) };
      g_array_append_val (a, p);
    }
  }
  g_string_free (s, TRUE);
  return a;
}

static void
text_pieces_free (GArray *a)
{
  guint i;

  for (i = 0; i < a->len; i++)
    g_free (g_array_index (a, TextPiece, i).text);
  g_array_free (a, TRUE);
}

/* ------------------------------------------------------------------ */
/* The plugin module's own functions (the cache the elements use) */

typedef guint (*CacheUsersFunc) (const gchar *kind, const gchar *path);
typedef gboolean (*ResolveLmFunc) (const gchar *model, gchar **weights,
    gchar **config, gchar **tokenizer, GError **error);

static guint
cache_users (const gchar *kind, const gchar *path)
{
  CacheUsersFunc f =
      (CacheUsersFunc) plugin_symbol ("gst_moshi_model_cache_users");
  return f (kind, path);
}

static gboolean
resolve_lm (const gchar *model, gchar **w, gchar **c, gchar **t, GError **e)
{
  ResolveLmFunc f = (ResolveLmFunc) plugin_symbol ("gst_moshi_resolve_lm");
  return f (model, w, c, t, e);
}

/* ------------------------------------------------------------------ */
/* Harness helpers */

typedef struct {
  GstElement *e;
  GstHarness *h; /* sink -> src */
  GstHarness *ht; /* text_src */
  GstBus *bus;
} Lm;

/* moshilm with `model` and the NULL-terminated property list that follows,
 * fed `caps` (may be NULL). */
static Lm *
lm_new_props (const gchar *model, const gchar *caps, const gchar *first, ...)
{
  Lm *lm = g_new0 (Lm, 1);
  va_list args;

  lm->e = gst_element_factory_make ("moshilm", NULL);
  fail_unless (lm->e != NULL, "moshilm not found");
  lm->bus = gst_bus_new ();
  gst_element_set_bus (lm->e, lm->bus);
  g_object_set (lm->e, "model", model, NULL);
  va_start (args, first);
  if (first)
    g_object_set_valist (G_OBJECT (lm->e), first, args);
  va_end (args);
  lm->h = gst_harness_new_with_element (lm->e, "sink", "src");
  lm->ht = gst_harness_new_with_element (lm->e, NULL, "text_src");
  if (caps)
    gst_harness_set_src_caps_str (lm->h, caps);
  return lm;
}

/* Greedy (temperatures 0), as the reference. */
static Lm *
lm_new_full (const gchar *model, const gchar *caps)
{
  return lm_new_props (model, caps, "temperature", 0.0, "temperature-text", 0.0,
      NULL);
}

static Lm *
lm_new (const Ref *r)
{
  return lm_new_full (r->dir, MIMI8_CAPS);
}

static void
lm_free (Lm *lm)
{
  gst_harness_teardown (lm->ht);
  gst_harness_teardown (lm->h);
  gst_element_set_bus (lm->e, NULL);
  gst_bus_set_flushing (lm->bus, TRUE);
  gst_object_unref (lm->bus);
  gst_object_unref (lm->e);
  g_free (lm);
}

/* The text of the first ERROR message on the bus, or NULL. */
static gchar *
pop_message (GstBus *bus, GstMessageType type)
{
  GstMessage *msg = gst_bus_pop_filtered (bus, type);
  GError *err = NULL;
  gchar *dbg = NULL, *text;

  if (!msg)
    return NULL;
  if (type == GST_MESSAGE_ERROR)
    gst_message_parse_error (msg, &err, &dbg);
  else
    gst_message_parse_warning (msg, &err, &dbg);
  text = g_strdup_printf ("%s [%s]", err->message, dbg ? dbg : "");
  GST_INFO ("message: %s", text);
  g_error_free (err);
  g_free (dbg);
  gst_message_unref (msg);
  return text;
}

static void
assert_message (GstBus *bus, GstMessageType type, const gchar *what)
{
  gchar *text = pop_message (bus, type);

  fail_unless (text != NULL, "no %s message", gst_message_type_get_name (type));
  fail_unless (strstr (text, what) != NULL, "'%s' not in '%s'", what, text);
  g_free (text);
}

/* frames [first, first + n) of the reference user codes as one buffer of
 * `cb` codebooks (codebooks past 8 hold `extra`). */
static GstBuffer *
user_buffer (const Ref *r, gint first, gint n, gint cb, guint16 extra)
{
  GstBuffer *buf = gst_buffer_new_allocate (NULL, (gsize) n * cb * 2, NULL);
  GstMapInfo map;
  gint f, k;

  gst_buffer_map (buf, &map, GST_MAP_WRITE);
  for (f = 0; f < n; f++)
    for (k = 0; k < cb; k++)
      GST_WRITE_UINT16_LE (map.data + 2 * (f * cb + k),
          k < NU ? (guint16) r->user[first + f][k] : extra);
  gst_buffer_unmap (buf, &map);
  GST_BUFFER_PTS (buf) = first * FRAME_NS;
  GST_BUFFER_DURATION (buf) = n * FRAME_NS;
  return buf;
}

static void
push_frames (Lm *lm, const Ref *r, gint first, gint n, gint per_buffer, gint cb,
    guint16 extra)
{
  gint f;

  /* Not inside fail_unless_equals_int(): it has a local named `first`. */
  for (f = first; f < first + n; f += per_buffer) {
    GstBuffer *buf =
        user_buffer (r, f, MIN (per_buffer, first + n - f), cb, extra);
    GstFlowReturn ret = gst_harness_push (lm->h, buf);

    fail_unless_equals_int (ret, GST_FLOW_OK);
  }
}

/* Pulls every audio frame now queued; checks it is slot `*t` of the
 * reference (codes, PTS, duration) and advances *t. */
static void
check_audio (Lm *lm, const Ref *r, gint *t)
{
  GstBuffer *buf;
  gint64 tmp[1 + DQ];

  while ((buf = gst_harness_try_pull (lm->h))) {
    GstMapInfo map;
    const gint64 *want;
    gint k;

    fail_unless (*t < STEPS, "more frames than input");
    want = ref_slot (r, *t, tmp);
    gst_buffer_map (buf, &map, GST_MAP_READ);
    fail_unless_equals_int (map.size, DQ * 2);
    for (k = 0; k < DQ; k++)
      fail_unless_equals_int (GST_READ_UINT16_LE (map.data + 2 * k),
          want[1 + k]);
    gst_buffer_unmap (buf, &map);
    fail_unless_equals_uint64 (GST_BUFFER_PTS (buf), *t * FRAME_NS);
    fail_unless_equals_uint64 (GST_BUFFER_DURATION (buf), FRAME_NS);
    fail_unless_equals_int (GST_BUFFER_FLAG_IS_SET (buf,
                                GST_BUFFER_FLAG_DISCONT),
        *t == 0);
    gst_buffer_unref (buf);
    (*t)++;
  }
}

/* Pulls every text buffer; they must be the expected pieces [*i, ...). */
static void
check_text (Lm *lm, GArray *want, guint *i)
{
  GstBuffer *buf;

  while ((buf = gst_harness_try_pull (lm->ht))) {
    GstMapInfo map;
    TextPiece *p;

    fail_unless (*i < want->len, "unexpected text buffer");
    p = &g_array_index (want, TextPiece, *i);
    gst_buffer_map (buf, &map, GST_MAP_READ);
    fail_unless (map.size == strlen (p->text)
            && memcmp (map.data, p->text, map.size) == 0,
        "text %u: got '%.*s', want '%s'", *i, (int) map.size,
        (const char *) map.data, p->text);
    gst_buffer_unmap (buf, &map);
    fail_unless_equals_uint64 (GST_BUFFER_PTS (buf), p->pts);
    fail_unless_equals_uint64 (GST_BUFFER_DURATION (buf), FRAME_NS);
    gst_buffer_unref (buf);
    (*i)++;
  }
}

/* The next event of `h` of type `type`, skipping others; NULL if none. */
static GstEvent *
find_event (GstHarness *h, GstEventType type)
{
  GstEvent *ev;

  while ((ev = gst_harness_try_pull_event (h))) {
    if (GST_EVENT_TYPE (ev) == type)
      return ev;
    gst_event_unref (ev);
  }
  return NULL;
}

/* Feeds the whole reference in buffers of `per_buffer` frames, then EOS,
 * and checks everything that comes out. */
static void
run_reference (Lm *lm, const Ref *r, gint per_buffer, gint cb, guint16 extra)
{
  GArray *want = ref_text (r, STEPS);
  gint t = 0;
  guint i = 0;
  GstEvent *ev;

  /* lm-tiny's greedy run says something: the text check is not empty. */
  fail_unless (want->len >= 10);
  push_frames (lm, r, 0, STEPS, per_buffer, cb, extra);
  check_audio (lm, r, &t);
  check_text (lm, want, &i);
  /* Everything but the last slot, which waits for the next input. */
  fail_unless_equals_int (t, STEPS - 1);

  fail_unless (gst_harness_push_event (lm->h, gst_event_new_eos ()));
  check_audio (lm, r, &t);
  check_text (lm, want, &i);
  fail_unless_equals_int (t, STEPS);
  fail_unless_equals_int (i, want->len);
  /* EOS on both source pads. */
  ev = find_event (lm->h, GST_EVENT_EOS);
  fail_unless (ev != NULL);
  gst_event_unref (ev);
  ev = find_event (lm->ht, GST_EVENT_EOS);
  fail_unless (ev != NULL);
  gst_event_unref (ev);
  text_pieces_free (want);
}

/* ------------------------------------------------------------------ */
/* Tests */

GST_START_TEST (test_properties)
{
  GstElement *e = gst_element_factory_make ("moshilm", NULL);
  gdouble temp, temp_text;
  gint top_k, top_k_text, threads;
  guint64 seed;
  gboolean greedy;
  gchar *model;

  fail_unless (e != NULL);
  g_object_get (e, "temperature", &temp, "temperature-text", &temp_text,
      "top-k", &top_k, "top-k-text", &top_k_text, "seed", &seed, "greedy",
      &greedy, "threads", &threads, "model", &model, NULL);
  fail_unless (temp == -1.0 && temp_text == -1.0);
  fail_unless_equals_int (top_k, -1);
  fail_unless_equals_int (top_k_text, -1);
  fail_unless_equals_uint64 (seed, 42);
  fail_unless (!greedy);
  fail_unless_equals_int (threads, 1);
  fail_unless (model == NULL);
  gst_util_set_object_arg (G_OBJECT (e), "quantize", "q8");
  g_object_set (e, "seed", G_GUINT64_CONSTANT (1) << 40, NULL);
  g_object_get (e, "seed", &seed, NULL);
  fail_unless_equals_uint64 (seed, G_GUINT64_CONSTANT (1) << 40);
  gst_object_unref (e);
}

GST_END_TEST;

GST_START_TEST (test_reference)
{
  Ref *r = ref_load ();
  Lm *lm = lm_new (r);
  GstMessage *msg;
  gboolean started = FALSE, completed = FALSE;

  run_reference (lm, r, 1, NU, 0);

  /* Loading was announced. */
  while ((msg = gst_bus_pop_filtered (lm->bus, GST_MESSAGE_PROGRESS))) {
    GstProgressType type;

    gst_message_parse_progress (msg, &type, NULL, NULL);
    started |= type == GST_PROGRESS_TYPE_START;
    completed |= type == GST_PROGRESS_TYPE_COMPLETE;
    gst_message_unref (msg);
  }
  fail_unless (started && completed);
  fail_unless (pop_message (lm->bus, GST_MESSAGE_ERROR) == NULL);
  lm_free (lm);
  ref_free (r);
}

GST_END_TEST;

/* greedy=true is the same as temperatures 0. */
GST_START_TEST (test_greedy_property)
{
  Ref *r = ref_load ();
  Lm *lm =
      lm_new_props (r->dir, MIMI8_CAPS, "greedy", TRUE, "threads", 2, NULL);

  run_reference (lm, r, 1, NU, 0);
  lm_free (lm);
  ref_free (r);
}

GST_END_TEST;

/* Several frames per buffer, and more codebooks than the model reads. */
GST_START_TEST (test_multiframe_and_extra_codebooks)
{
  Ref *r = ref_load ();
  Lm *lm = lm_new (r);

  run_reference (lm, r, 7, NU, 0);
  lm_free (lm);

  lm = lm_new_full (r->dir, "audio/x-mimi, codebooks=(int)12");
  /* The extra codebooks hold codes the model could not take: unused. */
  run_reference (lm, r, 30, 12, 60000);
  lm_free (lm);
  ref_free (r);
}

GST_END_TEST;

/* A flush starts the conversation over. */
GST_START_TEST (test_flush)
{
  Ref *r = ref_load ();
  Lm *lm = lm_new (r);
  GstBuffer *buf;
  GstSegment seg;

  push_frames (lm, r, 0, 11, 1, NU, 0);
  while ((buf = gst_harness_try_pull (lm->h)))
    gst_buffer_unref (buf);
  while ((buf = gst_harness_try_pull (lm->ht)))
    gst_buffer_unref (buf);

  fail_unless (gst_harness_push_event (lm->h, gst_event_new_flush_start ()));
  fail_unless (gst_harness_push_event (lm->h, gst_event_new_flush_stop (TRUE)));
  gst_segment_init (&seg, GST_FORMAT_TIME);
  fail_unless (gst_harness_push_event (lm->h, gst_event_new_segment (&seg)));
  run_reference (lm, r, 1, NU, 0);

  /* A new stream too. */
  fail_unless (
      gst_harness_push_event (lm->h, gst_event_new_stream_start ("again")));
  fail_unless (gst_harness_push_event (lm->h, gst_event_new_segment (&seg)));
  run_reference (lm, r, 3, NU, 0);
  lm_free (lm);
  ref_free (r);
}

GST_END_TEST;

/* Stream-start, caps and segment reach both source pads; each source pad
 * has a stream id of its own. */
GST_START_TEST (test_events)
{
  Ref *r = ref_load ();
  Lm *lm = lm_new (r);
  GstEvent *ev;
  const gchar *id_a, *id_t;
  GstCaps *caps, *want;
  GstEvent *ev_t;

  push_frames (lm, r, 0, 2, 1, NU, 0);
  ev = find_event (lm->h, GST_EVENT_STREAM_START);
  ev_t = find_event (lm->ht, GST_EVENT_STREAM_START);
  fail_unless (ev && ev_t);
  gst_event_parse_stream_start (ev, &id_a);
  gst_event_parse_stream_start (ev_t, &id_t);
  fail_unless (g_strcmp0 (id_a, id_t) != 0);
  gst_event_unref (ev);
  gst_event_unref (ev_t);

  ev = find_event (lm->h, GST_EVENT_CAPS);
  fail_unless (ev != NULL);
  gst_event_parse_caps (ev, &caps);
  want = gst_caps_from_string (MIMI8_CAPS);
  fail_unless (gst_caps_is_equal (caps, want));
  gst_caps_unref (want);
  gst_event_unref (ev);
  ev = find_event (lm->ht, GST_EVENT_CAPS);
  fail_unless (ev != NULL);
  gst_event_parse_caps (ev, &caps);
  want = gst_caps_from_string ("text/x-raw, format=(string)utf8");
  fail_unless (gst_caps_is_equal (caps, want));
  gst_caps_unref (want);
  gst_event_unref (ev);
  ev = find_event (lm->ht, GST_EVENT_SEGMENT);
  fail_unless (ev != NULL);
  gst_event_unref (ev);

  lm_free (lm);
  ref_free (r);
}

GST_END_TEST;

GST_START_TEST (test_latency)
{
  Ref *r = ref_load ();
  Lm *lm = lm_new (r);
  GstQuery *q = gst_query_new_latency ();
  GstClockTime min, max;
  gboolean live;
  GstPad *pads[2];
  guint i;

  gst_harness_set_upstream_latency (lm->h, 10 * GST_MSECOND);
  pads[0] = lm->h->sinkpad;
  pads[1] = lm->ht->sinkpad;
  for (i = 0; i < 2; i++) {
    gst_query_unref (q);
    q = gst_query_new_latency ();
    /* Asked from downstream, as a sink does. */
    fail_unless (gst_pad_peer_query (pads[i], q));
    gst_query_parse_latency (q, &live, &min, &max);
    /* lm-tiny's max delay is 1: 80 ms * (1 + 1) on top of upstream. */
    fail_unless_equals_uint64 (min, 10 * GST_MSECOND + 160 * GST_MSECOND);
  }
  gst_query_unref (q);
  lm_free (lm);
  ref_free (r);
}

GST_END_TEST;

GST_START_TEST (test_wrong_caps)
{
  Ref *r = ref_load ();
  Lm *lm = lm_new_full (r->dir, NULL);
  GstCaps *caps;

  /* Fewer codebooks than the model listens to: a clear error. */
  caps = gst_caps_from_string ("audio/x-mimi, codebooks=(int)4");
  gst_harness_push_event (lm->h, gst_event_new_stream_start ("x"));
  /* (the harness reports sticky events as stored, whatever we said) */
  gst_harness_push_event (lm->h, gst_event_new_caps (caps));
  gst_caps_unref (caps);
  assert_message (lm->bus, GST_MESSAGE_ERROR, "codebooks=8");
  {
    GstSegment seg;

    gst_segment_init (&seg, GST_FORMAT_TIME);
    gst_harness_push_event (lm->h, gst_event_new_segment (&seg));
  }
  fail_unless_equals_int (gst_harness_push (lm->h, user_buffer (r, 0, 1, 4, 0)),
      GST_FLOW_NOT_NEGOTIATED);

  /* What the sink pad offers says so too. */
  caps = gst_pad_peer_query_caps (lm->h->srcpad, NULL);
  {
    GstCaps *four = gst_caps_from_string ("audio/x-mimi, codebooks=(int)4");
    GstCaps *eight = gst_caps_from_string ("audio/x-mimi, codebooks=(int)8");
    fail_if (gst_caps_can_intersect (caps, four));
    fail_unless (gst_caps_can_intersect (caps, eight));
    gst_caps_unref (four);
    gst_caps_unref (eight);
  }
  gst_caps_unref (caps);

  /* Not Mimi at all. */
  caps = gst_caps_from_string ("text/x-raw, format=(string)utf8");
  fail_if (gst_pad_peer_query_accept_caps (lm->h->srcpad, caps));
  gst_caps_unref (caps);
  lm_free (lm);
  ref_free (r);
}

GST_END_TEST;

GST_START_TEST (test_bad_buffers)
{
  Ref *r = ref_load ();
  Lm *lm = lm_new (r);
  GstBuffer *buf;
  GRand *rand = g_rand_new_with_seed (99);
  gint iter;

  /* Not a whole frame. */
  buf = gst_buffer_new_allocate (NULL, 15, NULL);
  gst_buffer_memset (buf, 0, 0, 15);
  fail_unless_equals_int (gst_harness_push (lm->h, buf), GST_FLOW_ERROR);
  assert_message (lm->bus, GST_MESSAGE_ERROR, "not a whole number");
  /* A code outside the codebook. */
  buf = user_buffer (r, 0, 1, NU, 0);
  gst_buffer_memset (buf, 6, 0xff, 2);
  fail_unless_equals_int (gst_harness_push (lm->h, buf), GST_FLOW_ERROR);
  assert_message (lm->bus, GST_MESSAGE_ERROR, "out of range");
  /* Empty buffers are no frames. */
  fail_unless_equals_int (gst_harness_push (lm->h, gst_buffer_new ()),
      GST_FLOW_OK);
  lm_free (lm);

  /* The failed step left the state alone: the conversation is exact. */
  lm = lm_new (r);
  buf = user_buffer (r, 0, 1, NU, 0);
  gst_buffer_memset (buf, 0, 0xff, 2);
  fail_unless_equals_int (gst_harness_push (lm->h, buf), GST_FLOW_ERROR);
  run_reference (lm, r, 1, NU, 0);
  lm_free (lm);

  /* Garbage: errors, never a crash. */
  for (iter = 0; iter < 30; iter++) {
    gsize size = g_rand_int_range (rand, 1, 100), i;
    guint8 *data = g_malloc (size);
    GstFlowReturn ret;

    lm = lm_new (r);
    for (i = 0; i < size; i++)
      data[i] = g_rand_int (rand);
    if (iter % 2)
      for (i = 1; i < size; i += 2)
        data[i] = 0, data[i - 1] &= 63;
    ret = gst_harness_push (lm->h, gst_buffer_new_wrapped (data, size));
    fail_unless (ret == GST_FLOW_OK || ret == GST_FLOW_ERROR);
    if (ret == GST_FLOW_OK)
      fail_unless (size % 16 == 0);
    lm_free (lm);
  }
  g_rand_free (rand);
  ref_free (r);
}

GST_END_TEST;

/* Two elements share one model and keep separate conversations. */
GST_START_TEST (test_shared_model)
{
  Ref *r = ref_load ();
  Lm *a, *b;
  GArray *want = ref_text (r, STEPS);
  gint ta = 0, tb = 0, f;
  guint ia = 0, ib = 0;

  fail_unless_equals_int (cache_users ("moshi-lm:none", r->file), 0);
  a = lm_new (r);
  b = lm_new (r);
  fail_unless_equals_int (cache_users ("moshi-lm:none", r->file), 2);
  /* Interleaved: the two states never mix. */
  for (f = 0; f < STEPS; f++) {
    push_frames (a, r, f, 1, 1, NU, 0);
    push_frames (b, r, f, 1, 1, NU, 0);
    check_audio (a, r, &ta);
    check_audio (b, r, &tb);
    check_text (a, want, &ia);
    check_text (b, want, &ib);
  }
  fail_unless_equals_int (ta, STEPS - 1);
  fail_unless_equals_int (tb, STEPS - 1);
  lm_free (a);
  fail_unless_equals_int (cache_users ("moshi-lm:none", r->file), 1);
  lm_free (b);
  fail_unless_equals_int (cache_users ("moshi-lm:none", r->file), 0);
  text_pieces_free (want);
  ref_free (r);
}

GST_END_TEST;

/* Sampling with a seed is reproducible, also after a flush. */
GST_START_TEST (test_sampling_seed)
{
  Ref *r = ref_load ();
  GByteArray *out[3];
  guint i;

  for (i = 0; i < 3; i++) {
    Lm *lm =
        lm_new_props (r->dir, MIMI8_CAPS, "seed", (guint64) (i == 2 ? 8 : 7),
            "temperature", 1.0, "temperature-text", 1.0, "top-k", 0, NULL);
    GstBuffer *buf;

    push_frames (lm, r, 0, STEPS, 1, NU, 0);
    out[i] = g_byte_array_new ();
    while ((buf = gst_harness_try_pull (lm->h))) {
      GstMapInfo map;

      gst_buffer_map (buf, &map, GST_MAP_READ);
      g_byte_array_append (out[i], map.data, map.size);
      gst_buffer_unmap (buf, &map);
      gst_buffer_unref (buf);
    }
    fail_unless_equals_int (out[i]->len, (STEPS - 1) * DQ * 2);
    lm_free (lm);
  }
  fail_unless (memcmp (out[0]->data, out[1]->data, out[0]->len) == 0);
  /* Different seeds: 29 frames of 8 codes sampled at temperature 1 from 64
   * entries do not all agree. */
  fail_if (memcmp (out[0]->data, out[2]->data, out[0]->len) == 0);
  for (i = 0; i < 3; i++)
    g_byte_array_unref (out[i]);
  ref_free (r);
}

GST_END_TEST;

/* Fewer frames than the delay: EOS still gives one frame per input. */
GST_START_TEST (test_eos_short)
{
  Ref *r = ref_load ();
  Lm *lm = lm_new (r);
  GstBuffer *buf;
  GstEvent *ev;

  push_frames (lm, r, 0, 1, 1, NU, 0);
  fail_unless (gst_harness_try_pull (lm->h) == NULL);
  fail_unless (gst_harness_push_event (lm->h, gst_event_new_eos ()));
  buf = gst_harness_try_pull (lm->h);
  fail_unless (buf != NULL);
  fail_unless_equals_uint64 (GST_BUFFER_PTS (buf), 0);
  gst_buffer_unref (buf);
  fail_unless (gst_harness_try_pull (lm->h) == NULL);
  ev = find_event (lm->h, GST_EVENT_EOS);
  fail_unless (ev != NULL);
  gst_event_unref (ev);
  lm_free (lm);

  /* No frame at all: only EOS. */
  lm = lm_new (r);
  fail_unless (gst_harness_push_event (lm->h, gst_event_new_eos ()));
  fail_unless (gst_harness_try_pull (lm->h) == NULL);
  ev = find_event (lm->ht, GST_EVENT_EOS);
  fail_unless (ev != NULL);
  gst_event_unref (ev);
  lm_free (lm);
  ref_free (r);
}

GST_END_TEST;

/* Frames without text get a GAP on text_src, so nobody waits for text. */
GST_START_TEST (test_text_gaps)
{
  Ref *r = ref_load ();
  Lm *lm = lm_new (r);
  GArray *want = ref_text (r, STEPS - 1);
  GstEvent *ev;
  guint gaps = 0;

  push_frames (lm, r, 0, STEPS, 1, NU, 0);
  while ((ev = gst_harness_try_pull_event (lm->ht))) {
    if (GST_EVENT_TYPE (ev) == GST_EVENT_GAP) {
      GstClockTime ts, dur;

      gst_event_parse_gap (ev, &ts, &dur);
      fail_unless_equals_uint64 (dur, FRAME_NS);
      fail_unless_equals_uint64 (ts % FRAME_NS, 0);
      gaps++;
    }
    gst_event_unref (ev);
  }
  fail_unless_equals_int (gaps + want->len, STEPS - 1);
  text_pieces_free (want);
  lm_free (lm);
  ref_free (r);
}

GST_END_TEST;

static void
check_missing (const gchar *model, const gchar *m1, const gchar *m2)
{
  GstElement *e = gst_element_factory_make ("moshilm", NULL);
  GstBus *bus = gst_bus_new ();
  gchar *text;

  gst_element_set_bus (e, bus);
  g_object_set (e, "model", model, NULL);
  fail_unless_equals_int (gst_element_set_state (e, GST_STATE_PAUSED),
      GST_STATE_CHANGE_FAILURE);
  text = pop_message (bus, GST_MESSAGE_ERROR);
  fail_unless (text != NULL);
  fail_unless (strstr (text, m1) != NULL, "'%s' not in '%s'", m1, text);
  fail_unless (!m2 || strstr (text, m2) != NULL, "'%s' not in '%s'", m2, text);
  g_free (text);
  gst_element_set_state (e, GST_STATE_NULL);
  gst_element_set_bus (e, NULL);
  gst_bus_set_flushing (bus, TRUE);
  gst_object_unref (bus);
  gst_object_unref (e);
}

static void
copy_file (const gchar *from, const gchar *to)
{
  gchar *data;
  gsize len;

  fail_unless (g_file_get_contents (from, &data, &len, NULL));
  fail_unless (g_file_set_contents (to, data, len, NULL));
  g_free (data);
}

GST_START_TEST (test_missing_model)
{
  Ref *r = ref_load ();
  gchar *tmp = g_dir_make_tmp ("gst-moshi-lm-XXXXXX", NULL);
  gchar *hf = g_build_filename (tmp, "hf", NULL);
  gchar *cfg = g_build_filename (tmp, "config.json", NULL);
  gchar *src_cfg = g_build_filename (r->dir, "config.json", NULL);
  gchar *w = g_build_filename (tmp, "model.safetensors", NULL);

  g_setenv ("HF_HOME", hf, TRUE);
  g_unsetenv ("HF_HUB_CACHE");
  g_unsetenv ("HUGGINGFACE_HUB_CACHE");

  check_missing ("/nonexistent/dir/lm.safetensors",
      "/nonexistent/dir/lm.safetensors", NULL);
  check_missing (tmp, "Moshi language model", "huggingface-cli download");
  check_missing ("someone/some-moshi", "models--someone--some-moshi",
      "huggingface-cli download");
  /* Unset: the default repo, absent from this empty cache. */
  check_missing ("", "kyutai/moshiko-pytorch-bf16", "huggingface-cli download");

  /* Weights and config but no tokenizer: says which file and where. */
  copy_file (src_cfg, cfg);
  copy_file (r->file, w);
  check_missing (tmp, "text tokenizer", "tokenizer_spm_32k_3.model");
  /* A config naming a tokenizer that is not there. */
  fail_unless (g_file_set_contents (cfg,
      "{\"moshi_name\": \"model.safetensors\", "
      "\"tokenizer_name\": \"tok.model\"}",
      -1, NULL));
  check_missing (tmp, "tok.model", "tokenizer_name");

  g_unlink (cfg);
  g_unlink (w);
  g_rmdir (tmp);
  g_free (w);
  g_free (src_cfg);
  g_free (cfg);
  g_free (hf);
  g_free (tmp);
  ref_free (r);
}

GST_END_TEST;

/* Kyutai's repo layout in the Hugging Face cache: config.json with
 * moshi_name / tokenizer_name and LM keyword arguments. */
GST_START_TEST (test_resolve_lm)
{
  Ref *r = ref_load ();
  gchar *tmp = g_dir_make_tmp ("gst-moshi-lm-XXXXXX", NULL);
  gchar *snap = g_build_filename (tmp, "hub", "models--kyutai--tiny-lm",
      "snapshots", "abc123", NULL);
  gchar *src_tok = g_build_filename (r->dir, "tokenizer.model", NULL);
  gchar *p, *wp, *tp, *cp, *json, *weights, *config, *tokenizer;
  GError *err = NULL;
  Lm *lm;

  /* The tiny folder itself. */
  fail_unless (resolve_lm (r->dir, &weights, &config, &tokenizer, &err));
  fail_unless (g_str_has_suffix (weights, "lm-tiny/model.safetensors"));
  fail_unless (g_str_has_suffix (config, "lm-tiny/config.json"));
  fail_unless (g_str_has_suffix (tokenizer, "lm-tiny/tokenizer.model"));
  g_free (weights);
  g_free (config);
  g_free (tokenizer);

  fail_unless (g_mkdir_with_parents (snap, 0755) == 0);
  p = g_build_filename (r->dir, "config.json", NULL);
  fail_unless (g_file_get_contents (p, &json, NULL, NULL));
  g_free (p);
  /* Same kwargs, plus the repo keys. */
  {
    gchar *brace = strchr (json, '{');
    gchar *patched = g_strdup_printf ("{\"moshi_name\": \"lm.safetensors\", "
                                      "\"tokenizer_name\": \"spm.model\",%s",
        brace + 1);
    cp = g_build_filename (snap, "config.json", NULL);
    fail_unless (g_file_set_contents (cp, patched, -1, NULL));
    g_free (patched);
  }
  g_free (json);
  wp = g_build_filename (snap, "lm.safetensors", NULL);
  tp = g_build_filename (snap, "spm.model", NULL);
  copy_file (r->file, wp);
  copy_file (src_tok, tp);

  g_setenv ("HF_HOME", tmp, TRUE);
  g_unsetenv ("HF_HUB_CACHE");
  g_unsetenv ("HUGGINGFACE_HUB_CACHE");
  fail_unless (resolve_lm ("kyutai/tiny-lm", &weights, &config, &tokenizer,
                   &err),
      "%s", err ? err->message : "?");
  fail_unless_equals_string (weights, wp);
  fail_unless_equals_string (config, cp);
  fail_unless_equals_string (tokenizer, tp);
  g_free (weights);
  g_free (config);
  g_free (tokenizer);

  /* And the element runs from it. */
  lm = lm_new_full ("kyutai/tiny-lm", MIMI8_CAPS);
  run_reference (lm, r, 5, NU, 0);
  lm_free (lm);

  g_unlink (tp);
  fail_if (resolve_lm ("kyutai/tiny-lm", &weights, &config, &tokenizer, &err));
  fail_unless (err && strstr (err->message, "spm.model"));
  g_clear_error (&err);

  g_unlink (wp);
  g_unlink (cp);
  g_free (wp);
  g_free (tp);
  g_free (cp);
  g_free (src_tok);
  /* rmdir the snapshot tree */
  {
    gchar *d = g_strdup (snap);
    while (g_str_has_prefix (d, tmp) && strcmp (d, tmp) != 0) {
      gchar *parent = g_path_get_dirname (d);
      g_rmdir (d);
      g_free (d);
      d = parent;
    }
    g_free (d);
  }
  g_rmdir (tmp);
  g_free (snap);
  g_free (tmp);
  ref_free (r);
}

GST_END_TEST;

static Suite *
moshilm_suite (void)
{
  Suite *s = suite_create ("moshilm");
  TCase *tc = tcase_create ("moshilm");

  suite_add_tcase (s, tc);
  tcase_add_test (tc, test_properties);
  tcase_add_test (tc, test_reference);
  tcase_add_test (tc, test_greedy_property);
  tcase_add_test (tc, test_multiframe_and_extra_codebooks);
  tcase_add_test (tc, test_flush);
  tcase_add_test (tc, test_events);
  tcase_add_test (tc, test_latency);
  tcase_add_test (tc, test_wrong_caps);
  tcase_add_test (tc, test_bad_buffers);
  tcase_add_test (tc, test_shared_model);
  tcase_add_test (tc, test_sampling_seed);
  tcase_add_test (tc, test_eos_short);
  tcase_add_test (tc, test_text_gaps);
  tcase_add_test (tc, test_missing_model);
  tcase_add_test (tc, test_resolve_lm);
  return s;
}

GST_CHECK_MAIN (moshilm);
