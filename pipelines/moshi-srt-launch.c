/* moshi-srt-launch: gst-launch-1.0 plus a SubRip (.srt) writer.
 *
 * Usage: moshi-srt-launch OUT.srt PIPELINE-DESCRIPTION...
 *
 * Runs the pipeline like `gst-launch-1.0 -q` (until EOS, an error or
 * Ctrl-C) and writes the timed text that reaches the element named `srt`
 * (an appsink, e.g. `lm.text_src ! appsink name=srt`) as SubRip cues.
 *
 * Why a program: Debian's GStreamer 1.22 plugins parse SubRip (subparse)
 * but none writes it, and gst-launch-1.0 cannot turn buffer timestamps into
 * text.  Anything else (the audio) is done by the pipeline itself.
 *
 * Cues: moshilm sends one buffer per piece of text (often part of a word,
 * with its own leading space), stamped with the 80 ms frame it was said in.
 * Pieces are joined into a cue until a silence of a second or more, the end
 * of a sentence, or about two subtitle lines (~80 bytes) at a word break.
 * A cue lasts from its first piece to the end of its last, at least 1 s
 * unless the next cue starts earlier.  Times are stream times (running
 * time of the text, as stamped by moshilm: the user's time line). */
#include <glib-unix.h>
#include <gst/app/gstappsink.h>
#include <gst/gst.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#define GAP_NS (1 * GST_SECOND)
#define MIN_CUE_NS (1 * GST_SECOND)
#define MAX_CUE_BYTES 80

typedef struct {
  GstClockTime start, end;
  GString *text;
} Cue;

typedef struct {
  GArray *cues; /* Cue */
  GMainLoop *loop;
  int status;
  /* MoshiVis: how much the model looked (moshilm-gate messages) and how
   * many pictures it was shown (moshivis-image messages) */
  guint gate_frames, looking_frames, images;
  gdouble gate_sum, gate_max;
} App;

static gboolean
ends_sentence (const GString *s)
{
  return s->len > 0 && strchr (".!?", s->str[s->len - 1]) != NULL;
}

static void
add_piece (App *app, GstClockTime pts, GstClockTime dur, const gchar *text,
    gsize len)
{
  Cue *last = app->cues->len
      ? &g_array_index (app->cues, Cue, app->cues->len - 1)
      : NULL;
  gboolean word_break = len > 0 && text[0] == ' ';

  if (!GST_CLOCK_TIME_IS_VALID (pts))
    pts = last ? last->end : 0;
  if (!GST_CLOCK_TIME_IS_VALID (dur))
    dur = 80 * GST_MSECOND;

  if (!last || pts >= last->end + GAP_NS
      || (word_break
          && (ends_sentence (last->text)
              || last->text->len >= MAX_CUE_BYTES))) {
    Cue c = { pts, pts + dur, g_string_new (NULL) };

    /* A cue does not start with the space of its first word. */
    while (len > 0 && text[0] == ' ')
      text++, len--;
    g_string_append_len (c.text, text, len);
    g_array_append_val (app->cues, c);
  } else {
    g_string_append_len (last->text, text, len);
    last->end = MAX (last->end, pts + dur);
  }
}

static GstFlowReturn
on_sample (GstAppSink *sink, gpointer data)
{
  App *app = data;
  GstSample *sample = gst_app_sink_pull_sample (sink);
  GstBuffer *buf;
  GstMapInfo map;
  const GstSegment *seg;
  GstClockTime pts;

  if (!sample)
    return GST_FLOW_EOS;
  buf = gst_sample_get_buffer (sample);
  seg = gst_sample_get_segment (sample);
  pts = GST_BUFFER_PTS (buf);
  if (seg && seg->format == GST_FORMAT_TIME && GST_CLOCK_TIME_IS_VALID (pts))
    pts = gst_segment_to_stream_time (seg, GST_FORMAT_TIME, pts);
  if (gst_buffer_map (buf, &map, GST_MAP_READ)) {
    add_piece (app, pts, GST_BUFFER_DURATION (buf), (const gchar *) map.data,
        map.size);
    gst_buffer_unmap (buf, &map);
  }
  gst_sample_unref (sample);
  return GST_FLOW_OK;
}

static void
write_time (FILE *f, GstClockTime t)
{
  guint64 ms = t / GST_MSECOND;

  fprintf (f, "%02u:%02u:%02u,%03u", (guint) (ms / 3600000),
      (guint) (ms / 60000 % 60), (guint) (ms / 1000 % 60), (guint) (ms % 1000));
}

static gboolean
write_srt (App *app, const gchar *path)
{
  FILE *f = fopen (path, "w");
  guint i, n = 0;

  if (!f) {
    g_printerr ("moshi-srt-launch: cannot write %s\n", path);
    return FALSE;
  }
  for (i = 0; i < app->cues->len; i++) {
    Cue *c = &g_array_index (app->cues, Cue, i);
    GstClockTime end = MAX (c->end, c->start + MIN_CUE_NS);

    if (i + 1 < app->cues->len)
      end = MIN (end, g_array_index (app->cues, Cue, i + 1).start);
    end = MAX (end, c->end);
    g_strstrip (c->text->str);
    c->text->len = strlen (c->text->str);
    if (c->text->len == 0)
      continue;
    fprintf (f, "%u\n", ++n);
    write_time (f, c->start);
    fputs (" --> ", f);
    write_time (f, end);
    fprintf (f, "\n%s\n\n", c->text->str);
  }
  return fclose (f) == 0;
}

static gboolean
on_message (GstBus *bus, GstMessage *msg, gpointer data)
{
  App *app = data;

  switch (GST_MESSAGE_TYPE (msg)) {
    case GST_MESSAGE_EOS:
      g_main_loop_quit (app->loop);
      break;
    case GST_MESSAGE_ERROR: {
      GError *err = NULL;
      gchar *dbg = NULL;

      gst_message_parse_error (msg, &err, &dbg);
      g_printerr ("ERROR from %s: %s\n%s\n", GST_OBJECT_NAME (msg->src),
          err->message, dbg ? dbg : "");
      g_error_free (err);
      g_free (dbg);
      app->status = 1;
      g_main_loop_quit (app->loop);
      break;
    }
    case GST_MESSAGE_WARNING: {
      GError *err = NULL;

      gst_message_parse_warning (msg, &err, NULL);
      g_printerr ("WARNING from %s: %s\n", GST_OBJECT_NAME (msg->src),
          err->message);
      g_error_free (err);
      break;
    }
    case GST_MESSAGE_ELEMENT: {
      const GstStructure *s = gst_message_get_structure (msg);
      gdouble gate;

      if (gst_structure_has_name (s, "moshivis-image"))
        app->images++;
      if (gst_structure_has_name (s, "moshilm-gate")
          && gst_structure_get_double (s, "gate", &gate)) {
        app->gate_frames++;
        app->looking_frames += gate > 0.0;
        app->gate_sum += gate;
        app->gate_max = MAX (app->gate_max, gate);
      }
      break;
    }
    default:
      break;
  }
  return TRUE;
}

static gboolean
on_interrupt (gpointer data)
{
  GstElement *pipeline = data;

  /* Like gst-launch-1.0 -e: finish the files properly. */
  gst_element_send_event (pipeline, gst_event_new_eos ());
  return G_SOURCE_CONTINUE;
}

int
main (int argc, char **argv)
{
  App app = { 0 };
  GstElement *pipeline, *sink;
  GError *err = NULL;
  GstBus *bus;
  GstAppSinkCallbacks cb = { 0 };
  guint i;

  gst_init (&argc, &argv);
  if (argc < 3) {
    g_printerr ("usage: %s OUT.srt PIPELINE-DESCRIPTION...\n"
                "The pipeline must have an appsink named srt receiving "
                "text/x-raw.\n",
        argv[0]);
    return 2;
  }
  pipeline = gst_parse_launchv ((const gchar **) argv + 2, &err);
  if (!pipeline || err) {
    g_printerr ("moshi-srt-launch: bad pipeline: %s\n",
        err ? err->message : "?");
    g_clear_error (&err);
    if (pipeline)
      gst_object_unref (pipeline);
    return 2;
  }
  sink = gst_bin_get_by_name (GST_BIN (pipeline), "srt");
  if (!sink || !GST_IS_APP_SINK (sink)) {
    g_printerr ("moshi-srt-launch: the pipeline has no appsink name=srt\n");
    if (sink)
      gst_object_unref (sink);
    gst_object_unref (pipeline);
    return 2;
  }
  /* Offline: as fast as the pipeline goes; the timestamps set the cues. */
  g_object_set (sink, "sync", FALSE, NULL);
  cb.new_sample = on_sample;
  gst_app_sink_set_callbacks (GST_APP_SINK (sink), &cb, &app, NULL);
  gst_object_unref (sink);

  app.cues = g_array_new (FALSE, FALSE, sizeof (Cue));
  app.loop = g_main_loop_new (NULL, FALSE);
  bus = gst_element_get_bus (pipeline);
  gst_bus_add_watch (bus, on_message, &app);
  g_unix_signal_add (SIGINT, on_interrupt, pipeline);

  if (gst_element_set_state (pipeline, GST_STATE_PLAYING)
      == GST_STATE_CHANGE_FAILURE) {
    /* The error message says why; let the bus deliver it. */
    app.status = 1;
    while (TRUE) {
      GstMessage *msg = gst_bus_pop_filtered (bus, GST_MESSAGE_ERROR);
      if (!msg)
        break;
      on_message (bus, msg, &app);
      gst_message_unref (msg);
    }
  } else {
    g_main_loop_run (app.loop);
  }
  gst_element_set_state (pipeline, GST_STATE_NULL);
  gst_bus_remove_watch (bus);
  gst_object_unref (bus);
  gst_object_unref (pipeline);

  if (app.status == 0 && !write_srt (&app, argv[1]))
    app.status = 1;
  if (app.gate_frames > 0)
    g_printerr ("MoshiVis: %u picture(s) encoded; the model looked at a "
                "picture in %u of %u frames (mean gate %.3f, max %.3f)\n",
        app.images, app.looking_frames, app.gate_frames,
        app.gate_sum / app.gate_frames, app.gate_max);
  for (i = 0; i < app.cues->len; i++)
    g_string_free (g_array_index (app.cues, Cue, i).text, TRUE);
  g_array_free (app.cues, TRUE);
  g_main_loop_unref (app.loop);
  return app.status;
}
