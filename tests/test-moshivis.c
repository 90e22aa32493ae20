/* gst-moshi: element tests for moshivis (GstHarness).
 *
 * The element runs the tiny MoshiVis image side built into
 * <builddir>/tests/moshivis-dialog-tiny (moshivis-tiny's tower and adapter,
 * 56x56 input, 16 tokens of 64): its output for the conformance image must
 * be the reference adapter output xa_src, and it must encode only the
 * frames it is asked to (first, interval, scene change, force-key-unit).
 *
 * Environment: MOSHI_TEST_DATA = tests/data, MOSHIVIS_TINY = the built
 * model folder; GST_PLUGIN_PATH must reach libgstmoshi.so. */
#include <gst/check/gstcheck.h>
#include <gst/check/gstharness.h>
#include <gst/video/video.h>
#include <math.h>
#include <string.h>

#include "gst-test-util.h"
#include "safetensors.h"

#define S 56
#define TOKENS 16
#define DIM 64
#define FRAME_NS (100 * GST_MSECOND)
#define TOL 1e-4

static const gchar *
tiny_model (void)
{
  const gchar *m = g_getenv ("MOSHIVIS_TINY");
  fail_unless (m != NULL, "MOSHIVIS_TINY is not set");
  return m;
}

static GstHarness *
make_harness (const gchar *props, gint w, gint h)
{
  gchar *desc = g_strdup_printf ("moshivis model=\"%s\" %s", tiny_model (),
      props ? props : "");
  GstHarness *hx = gst_harness_new_parse (desc);
  g_free (desc);
  /* Not live: every requested view is encoded, whatever the CPU's speed
   * (live sources get newest-wins instead). */
  gst_harness_set_live (hx, FALSE);
  gchar *caps = g_strdup_printf ("video/x-raw, format=RGB, width=%d, "
                                 "height=%d, framerate=10/1",
      w, h);
  gst_harness_set_src_caps_str (hx, caps);
  g_free (caps);
  return hx;
}

/* An RGB frame of w x h, tightly packed (GStreamer rounds RGB rows up to
 * 4 bytes: 56 * 3 = 168 already is). */
static GstBuffer *
frame_from (const guint8 *rgb, gint w, gint h, GstClockTime pts)
{
  GstVideoInfo info;
  gst_video_info_set_format (&info, GST_VIDEO_FORMAT_RGB, w, h);
  GstBuffer *b = gst_buffer_new_allocate (NULL, info.size, NULL);
  GstMapInfo map;
  gst_buffer_map (b, &map, GST_MAP_WRITE);
  for (gint r = 0; r < h; r++)
    memcpy (map.data + (gsize) r * info.stride[0], rgb + (gsize) r * w * 3,
        (gsize) w * 3);
  gst_buffer_unmap (b, &map);
  GST_BUFFER_PTS (b) = pts;
  GST_BUFFER_DURATION (b) = FRAME_NS;
  return b;
}

static GstBuffer *
flat_frame (guint8 grey, gint w, gint h, GstClockTime pts)
{
  guint8 *rgb = g_malloc ((gsize) w * h * 3);
  memset (rgb, grey, (gsize) w * h * 3);
  GstBuffer *b = frame_from (rgb, w, h, pts);
  g_free (rgb);
  return b;
}

/* The conformance image (U8 [56, 56, 3]) and its adapter output. */
static guint8 *
ref_image (gfloat **xa_src)
{
  gchar *p = g_build_filename (test_data_dir (), "conformance", "moshivis-tiny",
      "vectors.safetensors", NULL);
  StFile *f = st_open (p, NULL);
  fail_unless (f != NULL, "cannot open %s", p);
  const StTensor *t = st_find (f, "image_u8");
  fail_unless (t && t->numel == S * S * 3);
  guint8 *img = g_memdup2 (t->data, S * S * 3);
  gint64 n;
  *xa_src = read_f32 (f, "xa_src", &n);
  fail_unless (*xa_src && n == TOKENS * DIM);
  st_unref (f);
  g_free (p);
  return img;
}

static gdouble
max_diff (const gfloat *a, const gfloat *b, gsize n)
{
  gdouble m = 0;
  for (gsize i = 0; i < n; i++)
    m = MAX (m, fabs ((gdouble) a[i] - b[i]));
  return m;
}

/* Pushes EOS and collects every embedding, checking that EOS comes last. */
static GList *
drain (GstHarness *hx)
{
  GList *out = NULL;
  fail_unless (gst_harness_push_event (hx, gst_event_new_eos ()));
  for (;;) {
    GstEvent *ev = gst_harness_pull_event (hx);
    fail_unless (ev != NULL, "no EOS came out");
    gboolean eos = GST_EVENT_TYPE (ev) == GST_EVENT_EOS;
    gst_event_unref (ev);
    if (eos)
      break;
  }
  GstBuffer *b;
  while ((b = gst_harness_try_pull (hx)))
    out = g_list_append (out, b);
  return out;
}

static GstClockTime
pts_at (GList *l, guint i)
{
  return GST_BUFFER_PTS (GST_BUFFER (g_list_nth_data (l, i)));
}

GST_START_TEST (test_caps_and_reference)
{
  gfloat *xa_src;
  guint8 *img = ref_image (&xa_src);
  GstHarness *hx = make_harness (NULL, S, S);
  fail_unless_equals_int (gst_harness_push (hx, frame_from (img, S, S, 0)),
      GST_FLOW_OK);
  GstBuffer *out = gst_harness_pull (hx);
  fail_unless (out != NULL);
  GstCaps *caps = gst_pad_get_current_caps (hx->sinkpad);
  GstStructure *st = gst_caps_get_structure (caps, 0);
  gint tokens, dim;
  fail_unless (gst_structure_has_name (st, "application/x-moshivis-embedding"));
  fail_unless (gst_structure_get_int (st, "tokens", &tokens));
  fail_unless (gst_structure_get_int (st, "dim", &dim));
  fail_unless_equals_int (tokens, TOKENS);
  fail_unless_equals_int (dim, DIM);
  gst_caps_unref (caps);
  fail_unless_equals_int (gst_buffer_get_size (out), TOKENS * DIM * 4);
  fail_unless_equals_uint64 (GST_BUFFER_PTS (out), 0);
  GstMapInfo map;
  gst_buffer_map (out, &map, GST_MAP_READ);
  gdouble e = max_diff ((const gfloat *) map.data, xa_src, TOKENS * DIM);
  fail_unless (e <= TOL, "embedding differs from xa_src by %g", e);
  gst_buffer_unmap (out, &map);
  gst_buffer_unref (out);

  /* The model's square comes first in the caps, for videoscale. */
  GstCaps *want = gst_pad_peer_query_caps (hx->srcpad, NULL);
  st = gst_caps_get_structure (want, 0);
  gint w, h;
  fail_unless (gst_structure_get_int (st, "width", &w)
      && gst_structure_get_int (st, "height", &h));
  fail_unless_equals_int (w, S);
  fail_unless_equals_int (h, S);
  gst_caps_unref (want);
  gst_harness_teardown (hx);
  g_free (img);
  g_free (xa_src);
}

GST_END_TEST;

GST_START_TEST (test_interval_and_eos)
{
  GstHarness *hx = make_harness ("interval=1000000000", S, S);
  for (gint i = 0; i < 25; i++)
    fail_unless_equals_int (gst_harness_push (hx,
                                flat_frame ((guint8) (i * 9), S, S,
                                    i * FRAME_NS)),
        GST_FLOW_OK);
  GList *out = drain (hx);
  /* 0, 1 s, 2 s: never every frame. */
  fail_unless_equals_int (g_list_length (out), 3);
  fail_unless_equals_uint64 (pts_at (out, 0), 0);
  fail_unless_equals_uint64 (pts_at (out, 1), GST_SECOND);
  fail_unless_equals_uint64 (pts_at (out, 2), 2 * GST_SECOND);
  g_list_free_full (out, (GDestroyNotify) gst_buffer_unref);
  gst_harness_teardown (hx);
}

GST_END_TEST;

GST_START_TEST (test_scene_change)
{
  GstHarness *hx = make_harness ("scene-threshold=0.3", S, S);
  /* dark, dark, dark, bright, bright, slightly brighter, dark */
  const guint8 grey[] = { 20, 20, 22, 220, 220, 230, 20 };
  for (guint i = 0; i < G_N_ELEMENTS (grey); i++)
    gst_harness_push (hx, flat_frame (grey[i], S, S, i * FRAME_NS));
  GList *out = drain (hx);
  fail_unless_equals_int (g_list_length (out), 3);
  fail_unless_equals_uint64 (pts_at (out, 0), 0);
  fail_unless_equals_uint64 (pts_at (out, 1), 3 * FRAME_NS);
  fail_unless_equals_uint64 (pts_at (out, 2), 6 * FRAME_NS);
  g_list_free_full (out, (GDestroyNotify) gst_buffer_unref);
  gst_harness_teardown (hx);
}

GST_END_TEST;

GST_START_TEST (test_force_key_unit)
{
  GstHarness *hx = make_harness (NULL, S, S);
  gst_harness_push (hx, flat_frame (10, S, S, 0));
  gst_harness_push (hx, flat_frame (10, S, S, FRAME_NS));
  /* From upstream (downstream event) and from downstream (upstream). */
  fail_unless (gst_harness_push_event (hx,
      gst_video_event_new_downstream_force_key_unit (GST_CLOCK_TIME_NONE,
          GST_CLOCK_TIME_NONE, GST_CLOCK_TIME_NONE, TRUE, 0)));
  gst_harness_push (hx, flat_frame (10, S, S, 2 * FRAME_NS));
  gst_harness_push (hx, flat_frame (10, S, S, 3 * FRAME_NS));
  fail_unless (gst_harness_push_upstream_event (hx,
      gst_video_event_new_upstream_force_key_unit (GST_CLOCK_TIME_NONE, TRUE,
          0)));
  gst_harness_push (hx, flat_frame (10, S, S, 4 * FRAME_NS));
  GList *out = drain (hx);
  fail_unless_equals_int (g_list_length (out), 3);
  fail_unless_equals_uint64 (pts_at (out, 1), 2 * FRAME_NS);
  fail_unless_equals_uint64 (pts_at (out, 2), 4 * FRAME_NS);
  g_list_free_full (out, (GDestroyNotify) gst_buffer_unref);
  gst_harness_teardown (hx);
}

GST_END_TEST;

GST_START_TEST (test_center_crop_and_resize)
{
  gfloat *xa_src;
  guint8 *img = ref_image (&xa_src);
  /* The reference image in the middle of a wider frame, crop on: exactly
   * the reference (the square is already 56 x 56). */
  const gint W = 100;
  guint8 *wide = g_malloc0 ((gsize) W * S * 3);
  for (gint r = 0; r < S; r++)
    memcpy (wide + ((gsize) r * W + (W - S) / 2) * 3, img + (gsize) r * S * 3,
        S * 3);
  GstHarness *hx = make_harness ("center-crop=true", W, S);
  gst_harness_push (hx, frame_from (wide, W, S, 0));
  GstBuffer *out = gst_harness_pull (hx);
  GstMapInfo map;
  gst_buffer_map (out, &map, GST_MAP_READ);
  gdouble e = max_diff ((const gfloat *) map.data, xa_src, TOKENS * DIM);
  fail_unless (e <= TOL, "cropped embedding differs by %g", e);
  gst_buffer_unmap (out, &map);
  gst_buffer_unref (out);
  gst_harness_teardown (hx);

  /* Without crop, a frame of another size is resized, not refused. */
  hx = make_harness (NULL, W, S);
  fail_unless_equals_int (gst_harness_push (hx, frame_from (wide, W, S, 0)),
      GST_FLOW_OK);
  out = gst_harness_pull (hx);
  fail_unless_equals_int (gst_buffer_get_size (out), TOKENS * DIM * 4);
  gst_buffer_unref (out);
  gst_harness_teardown (hx);
  g_free (wide);
  g_free (img);
  g_free (xa_src);
}

GST_END_TEST;

/* quantize=q8: the stated error (cosine > 0.999 to the float32
 * reference); q4 is refused with a message. */
GST_START_TEST (test_quantize)
{
  gfloat *xa_src;
  guint8 *img = ref_image (&xa_src);
  GstHarness *hx = make_harness ("quantize=q8", S, S);
  gst_harness_push (hx, frame_from (img, S, S, 0));
  GstBuffer *out = gst_harness_pull (hx);
  GstMapInfo map;
  gst_buffer_map (out, &map, GST_MAP_READ);
  const gfloat *o = (const gfloat *) map.data;
  gdouble dot = 0, na = 0, nb = 0;
  for (gint i = 0; i < TOKENS * DIM; i++) {
    dot += (gdouble) o[i] * xa_src[i];
    na += (gdouble) o[i] * o[i];
    nb += (gdouble) xa_src[i] * xa_src[i];
  }
  fail_unless (dot / sqrt (na * nb) > 0.999, "q8 cosine %g",
      dot / sqrt (na * nb));
  gst_buffer_unmap (out, &map);
  gst_buffer_unref (out);
  gst_harness_teardown (hx);

  GstElement *e = gst_element_factory_make ("moshivis", NULL);
  gst_util_set_object_arg (G_OBJECT (e), "quantize", "q4");
  g_object_set (e, "model", tiny_model (), NULL);
  GstBus *bus = gst_bus_new ();
  gst_element_set_bus (e, bus);
  fail_unless_equals_int (gst_element_set_state (e, GST_STATE_PAUSED),
      GST_STATE_CHANGE_FAILURE);
  GstMessage *m = gst_bus_pop_filtered (bus, GST_MESSAGE_ERROR);
  fail_unless (m != NULL);
  GError *err = NULL;
  gst_message_parse_error (m, &err, NULL);
  fail_unless (strstr (err->message, "q4") != NULL, "%s", err->message);
  g_error_free (err);
  gst_message_unref (m);
  gst_element_set_state (e, GST_STATE_NULL);
  gst_element_set_bus (e, NULL);
  gst_object_unref (bus);
  gst_object_unref (e);
  g_free (img);
  g_free (xa_src);
}

GST_END_TEST;

GST_START_TEST (test_bad_input)
{
  /* Too small to hold one patch: refused at negotiation. */
  gchar *desc = g_strdup_printf ("moshivis model=\"%s\"", tiny_model ());
  GstHarness *hx = gst_harness_new_parse (desc);
  g_free (desc);
  gst_harness_play (hx);
  GstCaps *small = gst_caps_from_string ("video/x-raw, format=RGB, "
                                         "width=8, height=8, framerate=10/1");
  fail_if (gst_pad_peer_query_accept_caps (hx->srcpad, small));
  gst_caps_unref (small);
  gst_harness_teardown (hx);

  /* A truncated frame is an error, not a read past the buffer. */
  hx = make_harness (NULL, S, S);
  GstBuffer *b = gst_buffer_new_allocate (NULL, 100, NULL);
  gst_buffer_memset (b, 0, 0x55, 100);
  fail_unless_equals_int (gst_harness_push (hx, b), GST_FLOW_ERROR);
  gst_harness_teardown (hx);

  /* A missing model fails the state change with a message naming it. */
  GstElement *e = gst_element_factory_make ("moshivis", NULL);
  g_object_set (e, "model", "/nonexistent/moshivis", NULL);
  GstBus *bus = gst_bus_new ();
  gst_element_set_bus (e, bus);
  fail_unless_equals_int (gst_element_set_state (e, GST_STATE_PAUSED),
      GST_STATE_CHANGE_FAILURE);
  GstMessage *m = gst_bus_pop_filtered (bus, GST_MESSAGE_ERROR);
  fail_unless (m != NULL);
  GError *err = NULL;
  gst_message_parse_error (m, &err, NULL);
  fail_unless (strstr (err->message, "/nonexistent/moshivis") != NULL, "%s",
      err->message);
  g_error_free (err);
  gst_message_unref (m);
  gst_element_set_state (e, GST_STATE_NULL);
  gst_element_set_bus (e, NULL);
  gst_object_unref (bus);
  gst_object_unref (e);
}

GST_END_TEST;

GST_START_TEST (test_flush_looks_again)
{
  GstHarness *hx = make_harness (NULL, S, S);
  gst_harness_push (hx, flat_frame (10, S, S, 0));
  gst_buffer_unref (gst_harness_pull (hx));
  gst_harness_push (hx, flat_frame (10, S, S, FRAME_NS));
  fail_unless (gst_harness_push_event (hx, gst_event_new_flush_start ()));
  fail_unless (gst_harness_push_event (hx, gst_event_new_flush_stop (TRUE)));
  GstSegment seg;
  gst_segment_init (&seg, GST_FORMAT_TIME);
  fail_unless (gst_harness_push_event (hx, gst_event_new_segment (&seg)));
  gst_harness_push (hx, flat_frame (10, S, S, 0));
  GstBuffer *out = gst_harness_pull (hx);
  fail_unless (out != NULL, "no new look after a flush");
  gst_buffer_unref (out);
  gst_harness_teardown (hx);
}

GST_END_TEST;

static Suite *
moshivis_suite (void)
{
  Suite *s = suite_create ("moshivis");
  TCase *tc = tcase_create ("general");
  tcase_set_timeout (tc, 300);
  suite_add_tcase (s, tc);
  tcase_add_test (tc, test_caps_and_reference);
  tcase_add_test (tc, test_interval_and_eos);
  tcase_add_test (tc, test_scene_change);
  tcase_add_test (tc, test_force_key_unit);
  tcase_add_test (tc, test_center_crop_and_resize);
  tcase_add_test (tc, test_quantize);
  tcase_add_test (tc, test_bad_input);
  tcase_add_test (tc, test_flush_looks_again);
  return s;
}

GST_CHECK_MAIN (moshivis);
