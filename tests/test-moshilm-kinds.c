/* gst-moshi: moshilm with the other model kinds (Kyutai STT, Hibiki
 * translation), and its lag reports (QoS), with GstHarness.
 *
 * The models are tests/data/stt-tiny and tests/data/hibiki-tiny: Kyutai's
 * config.json schema for those kinds over lm-tiny's random weights (there
 * are no Kyutai reference vectors for them).  The element is checked
 * against the library itself: the same LMGen, fed what Kyutai's scripts
 * feed it (silence prefix and padding for STT; the first frame twice, the
 * end-of-input frame and silence for Hibiki), must give exactly the same
 * tokens, at the times the element documents. */
#include <gst/check/gstcheck.h>
#include <gst/check/gstharness.h>
#include <string.h>

#include "gst-test-util.h"
#include "lm.h"
#include "mimi.h"
#include "sentencepiece.h"

#define FRAME_NS (80 * GST_MSECOND)
#define N 30 /* input frames */
#define CARD 64
#define TEXT_PAD 3
/* stt-tiny's stt_config: delay 0.5 s (ceil (6.25) = 7 padding frames),
 * prefix 0.2 s (3 frames). */
#define STT_DELAY (500 * GST_MSECOND)
#define STT_PAD 7
#define STT_PREFIX 3
#define TAIL_MAX 375 /* moshilm's TRANSLATION_MAX_TAIL */
#define SILENCE_FRAMES 25 /* moshilm's SILENCE_FRAMES */

typedef struct {
  GstClockTime pts;
  gchar *text;
} Piece;

static gchar *
data_path (const gchar *a, const gchar *b)
{
  return g_build_filename (test_data_dir (), a, b, NULL);
}

/* Deterministic user codes, [N][nu]. */
static guint16 *
user_codes_seeded (gint nu, guint32 seed)
{
  GRand *rand = g_rand_new_with_seed (seed);
  guint16 *c = g_new (guint16, N * nu);

  for (gint i = 0; i < N * nu; i++)
    c[i] = (guint16) g_rand_int_range (rand, 0, CARD);
  g_rand_free (rand);
  return c;
}

static guint16 *
user_codes (gint nu)
{
  return user_codes_seeded (nu, 1234);
}

/* Mimi-tiny's codes for frames of zeros from a fresh encoder, [n][nu]. */
static guint16 *
silence_codes (gint nu, gint n)
{
  gchar *path = data_path ("conformance", "mimi-tiny");
  gchar *file = g_build_filename (path, "model.safetensors", NULL);
  gchar *cfgp = g_build_filename (path, "config.json", NULL);
  MimiConfig cfg;
  GError *err = NULL;
  MimiModel *m;
  MimiEncoder *e;
  guint16 *c = g_new (guint16, n * nu);
  float *zeros;

  fail_unless (mimi_config_load_json (&cfg, cfgp, &err), "%s",
      err ? err->message : "?");
  m = mimi_model_load (file, &err);
  fail_unless (m != NULL, "%s", err ? err->message : "?");
  e = mimi_encoder_new (m, nu, &err);
  fail_unless (e != NULL);
  zeros = g_new0 (float, cfg.frame_size);
  for (gint i = 0; i < n; i++)
    mimi_encode_frame (e, zeros, c + i * nu);
  g_free (zeros);
  mimi_encoder_free (e);
  mimi_model_unref (m);
  g_free (cfgp);
  g_free (file);
  g_free (path);
  return c;
}

typedef struct {
  LmModel *m;
  LmGen *g;
  SpModel *sp;
  LmConfig cfg;
} Lib;

static void
lib_open (Lib *l, const gchar *kind_dir)
{
  gchar *cfgp = data_path (kind_dir, "config.json");
  gchar *w = data_path ("conformance", "lm-tiny/model.safetensors");
  gchar *t = data_path ("conformance", "lm-tiny/tokenizer.model");
  LmGenParams p;
  GError *err = NULL;

  fail_unless (lm_config_load_json (&l->cfg, cfgp, &err), "%s",
      err ? err->message : "?");
  l->m = lm_model_load (w, &l->cfg, MOSHI_WEIGHTS_F32, &err);
  fail_unless (l->m != NULL, "%s", err ? err->message : "?");
  lm_gen_params_default (&p, &l->cfg);
  p.use_sampling = FALSE;
  l->g = lm_gen_new (l->m, &p, &err);
  fail_unless (l->g != NULL);
  l->sp = sp_model_load (t, &err);
  fail_unless (l->sp != NULL);
  g_free (cfgp);
  g_free (w);
  g_free (t);
}

static void
lib_close (Lib *l)
{
  lm_gen_free (l->g);
  lm_model_unref (l->m);
  sp_model_free (l->sp);
}

/* One library step on 16-bit codes; returns what lm_gen_step() does. */
static gint
lib_step (Lib *l, const guint16 *codes, gint nu, int *out)
{
  int in[64];
  GError *err = NULL;
  gint r;

  for (gint k = 0; k < nu; k++)
    in[k] = codes[k];
  r = lm_gen_step (l->g, in, out, NULL, &err);
  fail_unless (r >= 0, "%s", err ? err->message : "?");
  return r;
}

/* The element's text rule: padding ids 3 and 0 say nothing. */
static gchar *
decode (Lib *l, int tok, SpDecodeState *st)
{
  GString *s = g_string_new (NULL);

  if (tok != TEXT_PAD && tok != 0)
    sp_decode_piece (l->sp, tok, s, st);
  return g_string_free (s, FALSE);
}

static void
pieces_free (GArray *a)
{
  for (guint i = 0; i < a->len; i++)
    g_free (g_array_index (a, Piece, i).text);
  g_array_free (a, TRUE);
}

typedef struct {
  GstElement *e;
  GstHarness *h, *ht;
  GstBus *bus;
} Lm;

static Lm *
lm_new (const gchar *kind_dir, gint codebooks)
{
  Lm *lm = g_new0 (Lm, 1);
  gchar *model = data_path (kind_dir, NULL);
  gchar *caps = g_strdup_printf ("audio/x-mimi, codebooks=(int)%d, "
                                 "framerate=(fraction)25/2",
      codebooks);

  lm->e = gst_element_factory_make ("moshilm", NULL);
  fail_unless (lm->e != NULL);
  lm->bus = gst_bus_new ();
  gst_element_set_bus (lm->e, lm->bus);
  g_object_set (lm->e, "model", model, "greedy", TRUE, NULL);
  lm->h = gst_harness_new_with_element (lm->e, "sink", "src");
  lm->ht = gst_harness_new_with_element (lm->e, NULL, "text_src");
  gst_harness_set_src_caps_str (lm->h, caps);
  g_free (caps);
  g_free (model);
  return lm;
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

static void
push_user (Lm *lm, const guint16 *codes, gint nu, gint first, gint n)
{
  GstBuffer *buf = gst_buffer_new_allocate (NULL, (gsize) n * nu * 2, NULL);
  GstMapInfo map;

  gst_buffer_map (buf, &map, GST_MAP_WRITE);
  for (gint i = 0; i < n * nu; i++)
    GST_WRITE_UINT16_LE (map.data + 2 * i, codes[first * nu + i]);
  gst_buffer_unmap (buf, &map);
  GST_BUFFER_PTS (buf) = first * FRAME_NS;
  GST_BUFFER_DURATION (buf) = n * FRAME_NS;
  fail_unless_equals_int (gst_harness_push (lm->h, buf), GST_FLOW_OK);
}

/* Text buffers of text_src, in order; counts its GAP events. */
static GArray *
pull_text (Lm *lm, guint *gaps)
{
  GArray *a = g_array_new (FALSE, FALSE, sizeof (Piece));
  GstBuffer *buf;
  GstEvent *ev;

  while ((buf = gst_harness_try_pull (lm->ht))) {
    Piece p;
    GstMapInfo map;

    gst_buffer_map (buf, &map, GST_MAP_READ);
    p.pts = GST_BUFFER_PTS (buf);
    p.text = g_strndup ((const gchar *) map.data, map.size);
    gst_buffer_unmap (buf, &map);
    gst_buffer_unref (buf);
    g_array_append_val (a, p);
  }
  *gaps = 0;
  while ((ev = gst_harness_try_pull_event (lm->ht))) {
    if (GST_EVENT_TYPE (ev) == GST_EVENT_GAP)
      (*gaps)++;
    gst_event_unref (ev);
  }
  return a;
}

static void
check_pieces (GArray *got, GArray *want)
{
  fail_unless_equals_int (got->len, want->len);
  for (guint i = 0; i < want->len; i++) {
    Piece *g = &g_array_index (got, Piece, i);
    Piece *w = &g_array_index (want, Piece, i);

    fail_unless_equals_uint64 (g->pts, w->pts);
    fail_unless_equals_string (g->text, w->text);
  }
}

/* ------------------------------------------------------------------ */
/* STT */

GST_START_TEST (test_stt)
{
  const gint nu = 16;
  guint16 *user = user_codes (nu);
  guint16 *sil = silence_codes (nu, STT_PREFIX + STT_PAD);
  GArray *want = g_array_new (FALSE, FALSE, sizeof (Piece));
  GArray *got;
  SpDecodeState st;
  Lib l;
  Lm *lm;
  int out[1];
  guint gaps, in_stream = 0, src_events = 0;
  GstEvent *ev;
  gint j;

  /* Kyutai's stt scripts, through the library: prefix, audio, padding.
   * The text of the step at input time t is stamped t - delay, clamped at
   * the start. */
  lib_open (&l, "stt-tiny");
  fail_unless_equals_int (l.cfg.kind, LM_KIND_STT);
  fail_unless_equals_int (l.cfg.dep_q, 0);
  fail_unless_equals_int (lm_gen_user_codebooks (l.g), nu);
  sp_decode_state_init (&st);
  for (j = 0; j < STT_PREFIX + N + STT_PAD; j++) {
    const guint16 *c = j < STT_PREFIX ? sil + j * nu
        : j < STT_PREFIX + N          ? user + (j - STT_PREFIX) * nu
                             : sil + (STT_PREFIX + j - STT_PREFIX - N) * nu;
    gint64 t =
        (gint64) (j - STT_PREFIX) * (gint64) FRAME_NS - (gint64) STT_DELAY;
    Piece p;

    fail_unless_equals_int (lib_step (&l, c, nu, out), 1);
    p.text = decode (&l, out[0], &st);
    p.pts = j >= STT_PREFIX && t >= 0 ? (GstClockTime) t : 0;
    if (j >= STT_PREFIX && t >= 0)
      in_stream++;
    if (*p.text)
      g_array_append_val (want, p);
    else
      g_free (p.text);
  }
  fail_unless (want->len > 0, "the tiny model says nothing: no test");
  /* Every frame of audio has its text slot, the last ones from the
   * padding at EOS. */
  fail_unless_equals_int (in_stream, N);

  lm = lm_new ("stt-tiny", nu);
  push_user (lm, user, nu, 0, 10);
  push_user (lm, user, nu, 10, N - 10);
  /* Before EOS, the text of the last 0.5 s is still to come. */
  got = pull_text (lm, &gaps);
  {
    GArray *rest;
    guint gaps2;

    fail_unless (gst_harness_push_event (lm->h, gst_event_new_eos ()));
    rest = pull_text (lm, &gaps2);
    fail_unless (rest->len + gaps2 > 0, "EOS flushed nothing");
    for (guint i = 0; i < rest->len; i++) {
      Piece p = g_array_index (rest, Piece, i);
      g_array_append_val (got, p);
    }
    g_array_free (rest, TRUE);
    gaps += gaps2;
  }
  check_pieces (got, want);
  /* In-stream text buffers (the others are stamped at 0, clamped) plus
   * gaps cover every input frame. */
  {
    for (guint i = 0; i < got->len; i++) {
      Piece *p = &g_array_index (got, Piece, i);
      fail_unless (p->pts < N * FRAME_NS, "text after the audio");
      if (i > 0)
        fail_unless (p->pts >= g_array_index (got, Piece, i - 1).pts);
    }
    guint later = 0;

    for (guint i = 0; i < got->len; i++)
      later += g_array_index (got, Piece, i).pts > 0;
    /* 0.5 s is not a whole number of frames: in-stream text is never at 0 */
    fail_unless (later + gaps == N, "%u text buffers in the stream, %u gaps",
        later, gaps);
  }

  /* src: no data, no caps; gaps (one per text slot), then EOS. */
  fail_unless (gst_harness_try_pull (lm->h) == NULL);
  while ((ev = gst_harness_try_pull_event (lm->h))) {
    fail_if (GST_EVENT_TYPE (ev) == GST_EVENT_CAPS);
    if (GST_EVENT_TYPE (ev) == GST_EVENT_GAP)
      src_events++;
    gst_event_unref (ev);
  }
  fail_unless_equals_int (src_events, N);

  pieces_free (got);
  pieces_free (want);
  lm_free (lm);
  lib_close (&l);
  g_free (user);
  g_free (sil);
}

GST_END_TEST;

GST_START_TEST (test_stt_latency)
{
  Lm *lm = lm_new ("stt-tiny", 16);
  GstQuery *q = gst_query_new_latency ();
  GstClockTime min, max;
  gboolean live;

  gst_harness_set_upstream_latency (lm->h, 10 * GST_MSECOND);
  fail_unless (gst_pad_peer_query (lm->ht->sinkpad, q));
  gst_query_parse_latency (q, &live, &min, &max);
  /* One frame of processing + the text's 0.5 s delay. */
  fail_unless_equals_uint64 (min,
      10 * GST_MSECOND + 80 * GST_MSECOND + STT_DELAY);
  gst_query_unref (q);
  lm_free (lm);
}

GST_END_TEST;

/* ------------------------------------------------------------------ */
/* Hibiki */

GST_START_TEST (test_translation)
{
  const gint nu = 8, dq = 8;
  guint16 *user = NULL;
  guint16 *sil = silence_codes (nu, SILENCE_FRAMES);
  guint16 marker[8];
  gboolean eos_seen = FALSE;
  guint32 seed;
  GArray *frames = g_array_new (FALSE, FALSE, sizeof (int) * 9);
  Lib l;
  Lm *lm;
  int out[9];
  gint j, eos_id, n_out, tail = 0;
  GstBuffer *buf;
  GstEvent *ev;
  gboolean got_eos = FALSE;

  lib_open (&l, "hibiki-tiny");
  fail_unless_equals_int (l.cfg.kind, LM_KIND_TRANSLATION);
  eos_id = sp_model_eos_id (l.sp);
  for (j = 0; j < nu; j++)
    marker[j] = CARD;
  /* Kyutai's run_inference: the first frame twice, the input, one frame of
   * `card` codes, then silence until the text EOS.  The input is the first
   * (deterministic) one after which the random model does write an EOS,
   * so that both ends (EOS and the 30 s limit) are exercised. */
  for (seed = 1; seed <= 200 && !eos_seen; seed++) {
    g_free (user);
    user = user_codes_seeded (nu, seed);
    g_array_set_size (frames, 0);
    lm_gen_reset (l.g);
    lib_step (&l, user, nu, out);
    for (j = 0; j < N; j++)
      if (lib_step (&l, user + j * nu, nu, out))
        g_array_append_val (frames, out);
    for (j = 0; j <= TAIL_MAX; j++) {
      const guint16 *c = j == 0 ? marker : sil + MIN (j - 1, 24) * nu;

      if (lib_step (&l, c, nu, out)) {
        g_array_append_val (frames, out);
        if ((gint) frames->len > N && out[0] == eos_id) {
          eos_seen = TRUE;
          break;
        }
      }
    }
  }
  GST_INFO ("seed %u: EOS %s", seed - 1, eos_seen ? "seen" : "never");
  n_out = frames->len;
  fail_unless (n_out >= N);

  lm = lm_new ("hibiki-tiny", nu);
  push_user (lm, user, nu, 0, N);
  /* Streaming: one frame out per frame in, max_delay (2) - 1 behind (the
   * first frame is fed twice), as the latency says. */
  fail_unless_equals_int (gst_harness_buffers_in_queue (lm->h), N - 1);
  {
    GstQuery *q = gst_query_new_latency ();
    GstClockTime min, max;
    gboolean live;

    fail_unless (gst_pad_peer_query (lm->h->sinkpad, q));
    gst_query_parse_latency (q, &live, &min, &max);
    fail_unless_equals_uint64 (min, 2 * FRAME_NS);
    gst_query_unref (q);
  }
  fail_unless (gst_harness_push_event (lm->h, gst_event_new_eos ()));
  for (j = 0; j < n_out; j++) {
    GstMapInfo map;
    const int *want = &g_array_index (frames, int, j * 9);

    buf = gst_harness_try_pull (lm->h);
    fail_unless (buf != NULL, "frame %d of %d missing", j, n_out);
    /* One frame per input frame, then the tail, on one time line. */
    fail_unless_equals_uint64 (GST_BUFFER_PTS (buf), j * FRAME_NS);
    fail_unless_equals_uint64 (GST_BUFFER_DURATION (buf), FRAME_NS);
    gst_buffer_map (buf, &map, GST_MAP_READ);
    fail_unless_equals_int (map.size, dq * 2);
    for (gint k = 0; k < dq; k++)
      fail_unless_equals_int (GST_READ_UINT16_LE (map.data + 2 * k),
          want[1 + k]);
    gst_buffer_unmap (buf, &map);
    gst_buffer_unref (buf);
    if (j >= N)
      tail++;
  }
  fail_unless (gst_harness_try_pull (lm->h) == NULL, "frames after the end");
  while ((ev = gst_harness_try_pull_event (lm->h))) {
    if (GST_EVENT_TYPE (ev) == GST_EVENT_EOS)
      got_eos = TRUE;
    gst_event_unref (ev);
  }
  fail_unless (got_eos);
  GST_INFO ("%d input frames, %d output frames (tail %d)", N, n_out, tail);

  lm_free (lm);
  lib_close (&l);
  g_array_free (frames, TRUE);
  g_free (user);
  g_free (sil);
}

GST_END_TEST;

/* ------------------------------------------------------------------ */
/* Lag / QoS */

/* Every step made slower than a frame (the test hook sleeps 100 ms in
 * each step) in a live stream: a QoS message and a warning with the lag,
 * and still every frame out, in order. */
GST_START_TEST (test_lag_qos)
{
  const gint nu = 8, n = 6;
  guint16 *user = user_codes (nu);
  Lm *lm;
  GstMessage *msg;
  guint qos = 0, warnings = 0;
  gint j;

  g_setenv ("GST_MOSHI_LM_TEST_STEP_DELAY_MS", "100", TRUE);
  {
    gchar *model = data_path ("conformance", "lm-tiny");

    lm = g_new0 (Lm, 1);
    lm->e = gst_element_factory_make ("moshilm", NULL);
    lm->bus = gst_bus_new ();
    gst_element_set_bus (lm->e, lm->bus);
    g_object_set (lm->e, "model", model, "greedy", TRUE, NULL);
    lm->h = gst_harness_new_with_element (lm->e, "sink", "src");
    lm->ht = gst_harness_new_with_element (lm->e, NULL, "text_src");
    g_free (model);
  }
  g_unsetenv ("GST_MOSHI_LM_TEST_STEP_DELAY_MS");
  gst_harness_set_src_caps_str (lm->h,
      "audio/x-mimi, codebooks=(int)8, framerate=(fraction)25/2");
  /* The harness's upstream answers the LATENCY query as live. */
  gst_harness_set_upstream_latency (lm->h, 0);
  gst_harness_set_live (lm->h, TRUE);
  for (j = 0; j < n; j++)
    push_user (lm, user, nu, j, 1);
  fail_unless (gst_harness_push_event (lm->h, gst_event_new_eos ()));

  /* No frame lost or reordered: the lag policy is to fall behind. */
  for (j = 0; j < n; j++) {
    GstBuffer *buf = gst_harness_try_pull (lm->h);

    fail_unless (buf != NULL, "frame %d lost", j);
    fail_unless_equals_uint64 (GST_BUFFER_PTS (buf), j * FRAME_NS);
    gst_buffer_unref (buf);
  }
  fail_unless (gst_harness_try_pull (lm->h) == NULL);

  while ((msg = gst_bus_pop (lm->bus))) {
    if (GST_MESSAGE_TYPE (msg) == GST_MESSAGE_QOS) {
      gboolean live;
      guint64 rt, st, ts, dur, processed, dropped;
      gint64 jitter;
      gdouble proportion;
      gint quality;
      GstFormat fmt;

      gst_message_parse_qos (msg, &live, &rt, &st, &ts, &dur);
      gst_message_parse_qos_values (msg, &jitter, &proportion, &quality);
      gst_message_parse_qos_stats (msg, &fmt, &processed, &dropped);
      fail_unless (live);
      /* Lower bounds only: each step took at least the 100 ms slept. */
      fail_unless (jitter >= 20 * GST_MSECOND, "jitter %" G_GINT64_FORMAT,
          jitter);
      fail_unless (proportion >= 1.25, "proportion %f", proportion);
      fail_unless_equals_int (fmt, GST_FORMAT_BUFFERS);
      fail_unless_equals_uint64 (dropped, 0);
      fail_unless (processed >= 1);
      fail_unless (GST_CLOCK_TIME_IS_VALID (ts) && ts < n * FRAME_NS);
      qos++;
    } else if (GST_MESSAGE_TYPE (msg) == GST_MESSAGE_WARNING) {
      GError *err = NULL;

      gst_message_parse_warning (msg, &err, NULL);
      fail_unless (strstr (err->message, "cannot keep up") != NULL, "%s",
          err->message);
      fail_unless (strstr (err->message, "ms behind") != NULL);
      g_error_free (err);
      warnings++;
    }
    gst_message_unref (msg);
  }
  /* At most one report per second: 6 steps of >= 100 ms give 1 or more. */
  fail_unless (qos >= 1);
  fail_unless_equals_int (qos, warnings);

  lm_free (lm);
  g_free (user);
}

GST_END_TEST;

static Suite *
moshilm_kinds_suite (void)
{
  Suite *s = suite_create ("moshilm-kinds");
  TCase *tc = tcase_create ("kinds");

  suite_add_tcase (s, tc);
  tcase_add_test (tc, test_stt);
  tcase_add_test (tc, test_stt_latency);
  tcase_add_test (tc, test_translation);
  tcase_add_test (tc, test_lag_qos);
  return s;
}

GST_CHECK_MAIN (moshilm_kinds);
