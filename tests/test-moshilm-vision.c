/* gst-moshi: moshilm's vision_sink (GstHarness), on the tiny MoshiVis
 * dialog model built into <builddir>/tests/moshivis-dialog-tiny.
 *
 * Two moshilm run the same user frames; one gets an image on vision_sink
 * before step IMG_STEP.  Until then both must say exactly the same; from
 * that step the gate messages are > 0 and the words and voice change; after
 * vision_sink is released the gate is 0 again.  Also: a model that cannot
 * look refuses a linked vision_sink, and malformed embeddings are errors.
 *
 * Environment: MOSHIVIS_TINY = the built model folder, MOSHI_TEST_DATA =
 * tests/data; GST_PLUGIN_PATH must reach libgstmoshi.so. */
#include <gst/check/gstcheck.h>
#include <gst/check/gstharness.h>
#include <string.h>

#include "gst-test-util.h"
#include "safetensors.h"

#define FRAME_NS (80 * GST_MSECOND)
#define NU 8
#define CARD 64
#define TOKENS 16
#define DIM 64
#define STEPS 24
#define IMG_STEP 6
#define RELEASE_STEP 16
#define MIMI8_CAPS "audio/x-mimi, codebooks=(int)8, framerate=(fraction)25/2"
#define EMB_CAPS "application/x-moshivis-embedding, tokens=(int)16, dim=(int)64"

typedef struct {
  GstElement *e;
  GstBus *bus;
  GstHarness *h, *ht, *hv;
  GstPad *vpad;
} Lm;

static Lm *
lm_new (const gchar *model, gboolean vision)
{
  Lm *lm = g_new0 (Lm, 1);
  lm->e = gst_element_factory_make ("moshilm", NULL);
  fail_unless (lm->e != NULL);
  lm->bus = gst_bus_new ();
  gst_element_set_bus (lm->e, lm->bus);
  g_object_set (lm->e, "model", model, "greedy", TRUE, "xa-start", 0, NULL);
  if (vision) {
    lm->vpad = gst_element_request_pad_simple (lm->e, "vision_sink");
    fail_unless (lm->vpad != NULL);
    lm->hv = gst_harness_new_with_element (lm->e, "vision_sink", NULL);
  }
  lm->h = gst_harness_new_with_element (lm->e, "sink", "src");
  lm->ht = gst_harness_new_with_element (lm->e, NULL, "text_src");
  gst_harness_set_src_caps_str (lm->h, MIMI8_CAPS);
  if (vision)
    gst_harness_set_src_caps_str (lm->hv, EMB_CAPS);
  return lm;
}

static void
lm_free (Lm *lm)
{
  if (lm->hv)
    gst_harness_teardown (lm->hv);
  gst_harness_teardown (lm->ht);
  gst_harness_teardown (lm->h);
  if (lm->vpad)
    gst_object_unref (lm->vpad);
  gst_element_set_bus (lm->e, NULL);
  gst_bus_set_flushing (lm->bus, TRUE);
  gst_object_unref (lm->bus);
  gst_object_unref (lm->e);
  g_free (lm);
}

static GstBuffer *
user_frame (gint t)
{
  GstBuffer *b = gst_buffer_new_allocate (NULL, NU * 2, NULL);
  GstMapInfo map;
  gst_buffer_map (b, &map, GST_MAP_WRITE);
  for (gint k = 0; k < NU; k++)
    GST_WRITE_UINT16_LE (map.data + 2 * k, (guint16) ((t * 7 + k * 5) % CARD));
  gst_buffer_unmap (b, &map);
  GST_BUFFER_PTS (b) = t * FRAME_NS;
  GST_BUFFER_DURATION (b) = FRAME_NS;
  return b;
}

/* The reference adapter output of moshivis-tiny's image. */
static GstBuffer *
image_embedding (void)
{
  gchar *p = g_build_filename (test_data_dir (), "conformance", "moshivis-tiny",
      "vectors.safetensors", NULL);
  StFile *f = st_open (p, NULL);
  fail_unless (f != NULL);
  gint64 n;
  gfloat *xa = read_f32 (f, "xa_src", &n);
  fail_unless (xa && n == TOKENS * DIM);
  GstBuffer *b = gst_buffer_new_memdup (xa, n * sizeof (float));
  g_free (xa);
  st_unref (f);
  g_free (p);
  return b;
}

/* Gate of each output frame, from the moshilm-gate messages; -1 if none. */
static void
collect_gates (GstBus *bus, gdouble *gate, gint n)
{
  GstMessage *m;
  for (gint i = 0; i < n; i++)
    gate[i] = -1;
  while ((m = gst_bus_pop_filtered (bus, GST_MESSAGE_ELEMENT))) {
    const GstStructure *s = gst_message_get_structure (m);
    guint64 pts;
    gdouble g;
    if (gst_structure_has_name (s, "moshilm-gate")
        && gst_structure_get_uint64 (s, "pts", &pts)
        && gst_structure_get_double (s, "gate", &g)
        && pts / FRAME_NS < (guint64) n)
      gate[pts / FRAME_NS] = g;
    gst_message_unref (m);
  }
}

/* Pulls the audio frame of the step that just ran (none for step 0). */
static guint16 *
pull_codes (GstHarness *h)
{
  GstBuffer *b = gst_harness_try_pull (h);
  if (!b)
    return NULL;
  guint16 *codes = g_new (guint16, 8);
  gst_buffer_extract (b, 0, codes, 16);
  gst_buffer_unref (b);
  return codes;
}

GST_START_TEST (test_image_mid_stream)
{
  const gchar *model = g_getenv ("MOSHIVIS_TINY");
  fail_unless (model != NULL, "MOSHIVIS_TINY is not set");
  Lm *base = lm_new (model, FALSE), *vis = lm_new (model, TRUE);
  guint16 *a[STEPS] = { 0 }, *b[STEPS] = { 0 };
  gint differ_after = 0;
  for (gint t = 0; t < STEPS; t++) {
    if (t == IMG_STEP)
      fail_unless_equals_int (gst_harness_push (vis->hv, image_embedding ()),
          GST_FLOW_OK);
    if (t == RELEASE_STEP) {
      /* The harness releases the request pad it was given. */
      gst_harness_teardown (vis->hv);
      vis->hv = NULL;
    }
    fail_unless_equals_int (gst_harness_push (base->h, user_frame (t)),
        GST_FLOW_OK);
    fail_unless_equals_int (gst_harness_push (vis->h, user_frame (t)),
        GST_FLOW_OK);
    a[t] = pull_codes (base->h);
    b[t] = pull_codes (vis->h);
    fail_unless ((a[t] == NULL) == (b[t] == NULL));
  }
  /* Output frame s comes out of step s + 1 (Moshi's acoustic delay): the
   * slots before IMG_STEP - 1 never saw the image. */
  for (gint t = 1; t < IMG_STEP; t++)
    fail_unless (memcmp (a[t], b[t], 16) == 0,
        "frame %d differs before "
        "the image arrived",
        t - 1);
  for (gint t = IMG_STEP + 1; t < STEPS; t++)
    differ_after += memcmp (a[t], b[t], 16) != 0;
  fail_unless (differ_after > 0, "the image changed nothing");

  gdouble gate[STEPS];
  collect_gates (vis->bus, gate, STEPS);
  for (gint s = 0; s < STEPS - 1; s++) {
    fail_unless (gate[s] >= 0, "no gate message for frame %d", s);
    if (s < IMG_STEP || s >= RELEASE_STEP)
      fail_unless (gate[s] == 0.0, "frame %d: gate %g without image", s,
          gate[s]);
    else
      fail_unless (gate[s] > 0.0 && gate[s] < 1.0, "frame %d: gate %g", s,
          gate[s]);
  }
  /* The plain model posts no gates. */
  collect_gates (base->bus, gate, STEPS);
  for (gint s = 0; s < STEPS; s++)
    fail_unless (gate[s] == -1);

  /* Text buffers carry the gate too. */
  GstBuffer *tb;
  gint with_meta = 0;
  while ((tb = gst_harness_try_pull (vis->ht))) {
    GstCustomMeta *m = gst_buffer_get_custom_meta (tb, "GstMoshiGateMeta");
    fail_unless (m != NULL);
    gdouble g;
    gint intensity;
    fail_unless (gst_structure_get_double (gst_custom_meta_get_structure (m),
        "gate", &g));
    fail_unless (gst_structure_get_int (gst_custom_meta_get_structure (m),
        "intensity", &intensity));
    fail_unless (intensity >= 0 && intensity <= 10);
    with_meta++;
    gst_buffer_unref (tb);
  }
  fail_unless (with_meta > 0, "no text came out");
  for (gint t = 0; t < STEPS; t++) {
    g_free (a[t]);
    g_free (b[t]);
  }
  lm_free (base);
  lm_free (vis);
}

GST_END_TEST;

/* From files, an image waits for the audio to reach its timestamp. */
GST_START_TEST (test_timed_image)
{
  const gchar *model = g_getenv ("MOSHIVIS_TINY");
  Lm *vis = lm_new (model, TRUE);
  gst_harness_set_live (vis->h, FALSE); /* a file, not a microphone */
  GstBuffer *img = image_embedding ();
  GST_BUFFER_PTS (img) = IMG_STEP * FRAME_NS;
  fail_unless_equals_int (gst_harness_push (vis->hv, img), GST_FLOW_OK);
  /* As moshivis says of the frames it did not encode: nothing new until
   * 2 s (without it, moshilm would wait for the picture of its time). */
  fail_unless (gst_harness_push_event (vis->hv,
      gst_event_new_gap (IMG_STEP * FRAME_NS, 2 * GST_SECOND)));
  for (gint t = 0; t < 12; t++) {
    fail_unless_equals_int (gst_harness_push (vis->h, user_frame (t)),
        GST_FLOW_OK);
    g_free (pull_codes (vis->h));
  }
  gdouble gate[12];
  collect_gates (vis->bus, gate, 12);
  for (gint s = 0; s < 11; s++)
    fail_unless (s < IMG_STEP ? gate[s] == 0.0 : gate[s] > 0.0,
        "frame %d: gate %g", s, gate[s]);
  lm_free (vis);
}

GST_END_TEST;

/* From files, a vision stream that goes silent (no GAP, no EOS) holds the
 * audio only for vision-timeout seconds, with a warning; one that failed
 * holds it not at all. */
GST_START_TEST (test_silent_or_failed_vision)
{
  const gchar *model = g_getenv ("MOSHIVIS_TINY");
  Lm *vis = lm_new (model, TRUE);
  g_object_set (vis->e, "vision-timeout", 1u, NULL);
  gst_harness_set_live (vis->h, FALSE);
  GstBuffer *img = image_embedding ();
  GST_BUFFER_PTS (img) = 0;
  fail_unless_equals_int (gst_harness_push (vis->hv, img), GST_FLOW_OK);
  for (gint t = 0; t < 4; t++) {
    fail_unless_equals_int (gst_harness_push (vis->h, user_frame (t)),
        GST_FLOW_OK);
    g_free (pull_codes (vis->h));
  }
  GstMessage *m = gst_bus_pop_filtered (vis->bus, GST_MESSAGE_WARNING);
  fail_unless (m != NULL, "no warning about the silent vision stream");
  GError *err = NULL;
  gst_message_parse_warning (m, &err, NULL);
  fail_unless (strstr (err->message, "vision-timeout") != NULL, "%s",
      err->message);
  g_error_free (err);
  gst_message_unref (m);
  lm_free (vis);

  /* A broken embedding: an error, and the audio goes on at once. */
  vis = lm_new (model, TRUE);
  g_object_set (vis->e, "vision-timeout", 3600u, NULL);
  gst_harness_set_live (vis->h, FALSE);
  GstBuffer *bad = gst_buffer_new_allocate (NULL, 12, NULL);
  gst_buffer_memset (bad, 0, 0, 12);
  fail_unless_equals_int (gst_harness_push (vis->hv, bad), GST_FLOW_ERROR);
  for (gint t = 0; t < 4; t++)
    fail_unless_equals_int (gst_harness_push (vis->h, user_frame (t)),
        GST_FLOW_OK);
  lm_free (vis);
}

GST_END_TEST;

GST_START_TEST (test_bad_embeddings)
{
  const gchar *model = g_getenv ("MOSHIVIS_TINY");
  Lm *vis = lm_new (model, TRUE);
  /* Wrong size for the caps. */
  GstBuffer *b = gst_buffer_new_allocate (NULL, 100, NULL);
  gst_buffer_memset (b, 0, 0, 100);
  fail_unless_equals_int (gst_harness_push (vis->hv, b), GST_FLOW_ERROR);
  GstMessage *m = gst_bus_pop_filtered (vis->bus, GST_MESSAGE_ERROR);
  fail_unless (m != NULL);
  GError *err = NULL;
  gst_message_parse_error (m, &err, NULL);
  fail_unless (strstr (err->message, "does not match its caps") != NULL, "%s",
      err->message);
  g_error_free (err);
  gst_message_unref (m);
  lm_free (vis);

  /* Embeddings of another width than the model's. */
  vis = lm_new (model, TRUE);
  gst_harness_set_src_caps_str (vis->hv,
      "application/x-moshivis-embedding, tokens=(int)16, dim=(int)32");
  b = gst_buffer_new_allocate (NULL, 16 * 32 * 4, NULL);
  gst_buffer_memset (b, 0, 0, 16 * 32 * 4);
  fail_unless (gst_harness_push (vis->hv, b) != GST_FLOW_OK);
  m = gst_bus_pop_filtered (vis->bus, GST_MESSAGE_ERROR);
  fail_unless (m != NULL);
  gst_message_parse_error (m, &err, NULL);
  fail_unless (strstr (err->message, "values per token") != NULL, "%s",
      err->message);
  g_error_free (err);
  gst_message_unref (m);
  lm_free (vis);
}

GST_END_TEST;

GST_START_TEST (test_model_cannot_look)
{
  gchar *lm_tiny =
      g_build_filename (test_data_dir (), "conformance", "lm-tiny", NULL);
  GstElement *e = gst_element_factory_make ("moshilm", NULL);
  g_object_set (e, "model", lm_tiny, NULL);
  GstPad *vpad = gst_element_request_pad_simple (e, "vision_sink");
  fail_unless (vpad != NULL);
  GstPad *src = gst_pad_new ("fake", GST_PAD_SRC);
  fail_unless_equals_int (gst_pad_link (src, vpad), GST_PAD_LINK_OK);
  GstBus *bus = gst_bus_new ();
  gst_element_set_bus (e, bus);
  fail_unless_equals_int (gst_element_set_state (e, GST_STATE_PAUSED),
      GST_STATE_CHANGE_FAILURE);
  GstMessage *m = gst_bus_pop_filtered (bus, GST_MESSAGE_ERROR);
  fail_unless (m != NULL);
  GError *err = NULL;
  gst_message_parse_error (m, &err, NULL);
  fail_unless (strstr (err->message, "cannot look at images") != NULL, "%s",
      err->message);
  g_error_free (err);
  gst_message_unref (m);
  gst_element_set_state (e, GST_STATE_NULL);
  gst_pad_unlink (src, vpad);
  gst_object_unref (src);
  gst_element_release_request_pad (e, vpad);
  gst_object_unref (vpad);
  gst_element_set_bus (e, NULL);
  gst_object_unref (bus);
  gst_object_unref (e);
  g_free (lm_tiny);
}

GST_END_TEST;

static Suite *
moshilm_vision_suite (void)
{
  Suite *s = suite_create ("moshilm-vision");
  TCase *tc = tcase_create ("general");
  tcase_set_timeout (tc, 300);
  suite_add_tcase (s, tc);
  tcase_add_test (tc, test_image_mid_stream);
  tcase_add_test (tc, test_timed_image);
  tcase_add_test (tc, test_silent_or_failed_vision);
  tcase_add_test (tc, test_bad_embeddings);
  tcase_add_test (tc, test_model_cannot_look);
  return s;
}

GST_CHECK_MAIN (moshilm_vision);
