/* gst-moshi: a live source that stalls, then bursts.
 *
 * A live appsrc sends a few frames in real time, stops for several seconds
 * (a network hiccup, a stalled capture thread), then delivers the frames it
 * held back all at once, then more in real time.  Through
 * `mimienc ! mimidec` and `mimienc ! moshilm ! mimidec`: every input frame
 * gives exactly one output frame, timestamps continuous, no DISCONT, and
 * the pipeline reaches EOS.  A watchdog (a bounded wait for each output
 * buffer and for EOS) turns a hang into a failure; no timing threshold is
 * checked.
 *
 * Environment: as test-elements (MOSHI_TEST_DATA, GST_PLUGIN_PATH). */
#include <gst/check/gstcheck.h>
#include <math.h>
#include <string.h>

#include "gst-test-util.h"

#define FRAME 1920
#define FRAME_NS (80 * GST_MSECOND)
/* Before the stall, held back by the stall, after it. */
#define N_BEFORE 6
#define N_BURST 60
#define N_AFTER 4
#define STALL_US (3 * G_USEC_PER_SEC)
/* Watchdog: far above any honest wait, even under valgrind. */
#define WATCHDOG (120 * GST_SECOND)

static GstBuffer *
pcm_frame (gint i)
{
  GstBuffer *buf = gst_buffer_new_allocate (NULL, FRAME * 4, NULL);
  GstMapInfo map;
  gfloat *s;
  gint k;

  gst_buffer_map (buf, &map, GST_MAP_WRITE);
  s = (gfloat *) map.data;
  /* A chirp, so that the encoder sees changing input. */
  for (k = 0; k < FRAME; k++) {
    gdouble t = (i * FRAME + k) / 24000.0;
    s[k] = 0.3f * (gfloat) sin (2 * G_PI * (200 + 40 * t) * t);
  }
  gst_buffer_unmap (buf, &map);
  GST_BUFFER_PTS (buf) = i * FRAME_NS;
  GST_BUFFER_DURATION (buf) = FRAME_NS;
  return buf;
}

static void
push (GstElement *src, gint i)
{
  GstFlowReturn ret;
  GstBuffer *buf = pcm_frame (i);

  g_signal_emit_by_name (src, "push-buffer", buf, &ret);
  gst_buffer_unref (buf);
  fail_unless_equals_int (ret, GST_FLOW_OK);
}

static void
check_stall_burst (gboolean with_lm)
{
  gchar *mimi =
      g_build_filename (test_data_dir (), "conformance", "mimi-tiny", NULL);
  gchar *lm =
      g_build_filename (test_data_dir (), "conformance", "lm-tiny", NULL);
  gchar *lm_part = with_lm
      ? g_strdup_printf ("moshilm name=lm model=\"%s\" ! queue ! ", lm)
      : g_strdup ("");
  gchar *desc =
      g_strdup_printf ("appsrc name=src is-live=true format=time "
                       "max-bytes=0 caps=\"audio/x-raw, "
                       "format=F32LE, rate=24000, channels=1, "
                       "layout=interleaved\" ! "
                       "mimienc model=\"%s\" ! %smimidec model=\"%s\" ! "
                       "appsink name=sink sync=false %s",
          mimi, lm_part, mimi,
          with_lm ? "lm.text_src ! queue ! fakesink sync=false async=false"
                  : "");
  GError *err = NULL;
  GstElement *pipeline = gst_parse_launch (desc, &err);
  GstElement *src, *sink;
  GstClockTime next = 0;
  gint64 got = 0, want = (gint64) (N_BEFORE + N_BURST + N_AFTER) * FRAME;
  GstBus *bus;
  GstMessage *msg;
  gint i;

  fail_unless (pipeline != NULL, "%s: %s", desc, err ? err->message : "?");
  src = gst_bin_get_by_name (GST_BIN (pipeline), "src");
  sink = gst_bin_get_by_name (GST_BIN (pipeline), "sink");
  fail_if (gst_element_set_state (pipeline, GST_STATE_PLAYING)
      == GST_STATE_CHANGE_FAILURE);

  /* Real time, then the stall, then the burst, then real time again. */
  for (i = 0; i < N_BEFORE; i++) {
    push (src, i);
    g_usleep (80 * 1000);
  }
  g_usleep (STALL_US);
  for (; i < N_BEFORE + N_BURST; i++)
    push (src, i);
  for (; i < N_BEFORE + N_BURST + N_AFTER; i++) {
    g_usleep (80 * 1000);
    push (src, i);
  }
  {
    GstFlowReturn ret;
    g_signal_emit_by_name (src, "end-of-stream", &ret);
    fail_unless_equals_int (ret, GST_FLOW_OK);
  }

  /* Everything out, in order, each sample once. */
  for (;;) {
    GstSample *sample = NULL;
    GstBuffer *buf;
    gboolean eos;

    g_signal_emit_by_name (sink, "try-pull-sample", WATCHDOG, &sample);
    if (!sample) {
      g_object_get (sink, "eos", &eos, NULL);
      fail_unless (eos,
          "no output for %" GST_TIME_FORMAT " after %" G_GINT64_FORMAT
          " of %" G_GINT64_FORMAT " samples: hung",
          GST_TIME_ARGS (WATCHDOG), got, want);
      break;
    }
    buf = gst_sample_get_buffer (sample);
    fail_unless_equals_uint64 (GST_BUFFER_PTS (buf), next);
    fail_if (GST_BUFFER_FLAG_IS_SET (buf, GST_BUFFER_FLAG_DISCONT) && got > 0,
        "DISCONT at %" GST_TIME_FORMAT, GST_TIME_ARGS (GST_BUFFER_PTS (buf)));
    fail_unless_equals_int (gst_buffer_get_size (buf) % (FRAME * 4), 0);
    got += gst_buffer_get_size (buf) / 4;
    next = got / FRAME * FRAME_NS;
    gst_sample_unref (sample);
  }
  fail_unless_equals_int64 (got, want);

  bus = gst_element_get_bus (pipeline);
  msg = gst_bus_pop_filtered (bus, GST_MESSAGE_ERROR);
  fail_if (msg != NULL, "pipeline error");
  gst_object_unref (bus);
  fail_unless_equals_int (gst_element_set_state (pipeline, GST_STATE_NULL),
      GST_STATE_CHANGE_SUCCESS);
  gst_object_unref (src);
  gst_object_unref (sink);
  gst_object_unref (pipeline);
  g_free (desc);
  g_free (lm_part);
  g_free (lm);
  g_free (mimi);
}

GST_START_TEST (test_stall_burst_codec)
{
  check_stall_burst (FALSE);
}

GST_END_TEST;

GST_START_TEST (test_stall_burst_lm)
{
  check_stall_burst (TRUE);
}

GST_END_TEST;

static Suite *
moshi_stall_suite (void)
{
  Suite *s = suite_create ("moshi-stall");
  TCase *tc = tcase_create ("stall");

  suite_add_tcase (s, tc);
  tcase_set_timeout (tc, 600);
  tcase_add_test (tc, test_stall_burst_codec);
  tcase_add_test (tc, test_stall_burst_lm);
  return s;
}

GST_CHECK_MAIN (moshi_stall);
