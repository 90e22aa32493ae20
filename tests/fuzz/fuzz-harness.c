/* The element fuzzers' shared harness: see fuzz-harness.h. */
#include "fuzz-harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

GST_PLUGIN_STATIC_DECLARE (moshi);

static gboolean fresh, flush_reset;

void
fuzz_harness_read_env (guint *max_frames)
{
  fresh = g_getenv ("FUZZ_FRESH") && atoi (g_getenv ("FUZZ_FRESH")) > 0;
  flush_reset = g_strcmp0 (g_getenv ("FUZZ_RESET"), "flush") == 0;
  if (g_getenv ("FUZZ_MAX_FRAMES"))
    *max_frames = (guint) MAX (atoi (g_getenv ("FUZZ_MAX_FRAMES")), 1);
}

void
fuzz_harness_init (const FuzzTarget *target, const char *registry_name)
{
  /* Only our plugin, registered below: no scanning. */
  g_setenv ("GST_PLUGIN_SYSTEM_PATH_1_0", "", TRUE);
  g_setenv ("GST_PLUGIN_PATH_1_0", "", TRUE);
  g_setenv ("GST_REGISTRY_FORK", "no", TRUE);
  /* Never /dev/null: GStreamer writes its registry to a temporary file
   * renamed over this path. */
  if (!g_getenv ("GST_REGISTRY")) {
    gchar *reg = g_build_filename (g_get_tmp_dir (), registry_name, NULL);
    g_setenv ("GST_REGISTRY", reg, TRUE);
    g_free (reg);
  }
  gst_init (NULL, NULL);
  /* A critical warning is a bug too. */
  g_log_set_always_fatal (G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_ERROR);
  GST_PLUGIN_STATIC_REGISTER (moshi);
  /* An element that stays started keeps the model in the plugin's model
   * cache, so that each input does not load it again. */
  GstElement *pin = gst_element_factory_make (target->factory, "pin");
  g_object_set (pin, "model", target->model, NULL);
  if (gst_element_set_state (pin, GST_STATE_PAUSED) == GST_STATE_CHANGE_FAILURE)
    g_error ("cannot start %s on %s", target->factory, target->model);
}

void
fuzz_check_error_posted (GstBus *bus, GstFlowReturn ret, const char *what)
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

guint
fuzz_drain (GstHarness *h, gsize unit)
{
  GstBuffer *b;
  guint units = 0;
  while ((b = gst_harness_try_pull (h))) {
    if (unit)
      units += gst_buffer_get_size (b) / unit;
    if (unit && gst_buffer_get_size (b) % unit != 0) {
      fprintf (stderr, "output buffer of %zu bytes, units of %zu\n",
          gst_buffer_get_size (b), unit);
      abort ();
    }
    gst_buffer_unref (b);
  }
  GstEvent *e;
  while ((e = gst_harness_try_pull_event (h)))
    gst_event_unref (e);
  return units;
}

/* A new element, configured, started and wrapped in harnesses. */
static void
fixture_new (FuzzFixture *f, const FuzzTarget *t, guint8 flags)
{
  memset (f, 0, sizeof *f);
  f->e = gst_element_factory_make (t->factory, NULL);
  g_assert (f->e);
  f->bus = gst_bus_new ();
  gst_element_set_bus (f->e, f->bus);
  g_object_set (f->e, "model", t->model, NULL);
  t->configure (f->e, flags);
  if (t->vision_sink) {
    f->vpad = gst_element_request_pad_simple (f->e, "vision_sink");
    f->hv = gst_harness_new_with_element (f->e, "vision_sink", NULL);
  }
  f->h = gst_harness_new_with_element (f->e, "sink", "src");
  if (t->text_src)
    f->ht = gst_harness_new_with_element (f->e, NULL, "text_src");
}

static void
fixture_free (FuzzFixture *f)
{
  if (f->ht)
    gst_harness_teardown (f->ht);
  gst_harness_teardown (f->h);
  if (f->hv)
    gst_harness_teardown (f->hv);
  if (f->vpad)
    gst_object_unref (f->vpad);
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
  if (!h)
    return;
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

static void
flush (GstHarness *h)
{
  gst_harness_push_event (h, gst_event_new_flush_start ());
  gst_harness_push_event (h, gst_event_new_flush_stop (TRUE));
}

/* Reuse mode, after each input (see fuzz-harness.h). */
static void
fixture_stop (FuzzFixture *f)
{
  if (flush_reset) {
    flush (f->h);
    if (f->hv)
      flush (f->hv);
  } else if (gst_element_set_state (f->e, GST_STATE_READY)
      == GST_STATE_CHANGE_FAILURE) {
    g_error ("%s: no change to READY", GST_ELEMENT_NAME (f->e));
  }
  discard (f->h);
  discard (f->ht);
  discard (f->hv);
  reactivate (f->h->srcpad);
  reactivate (f->h->sinkpad);
  if (f->ht)
    reactivate (f->ht->sinkpad);
  if (f->hv)
    reactivate (f->hv->srcpad);
  gst_bus_set_flushing (f->bus, TRUE);
  gst_bus_set_flushing (f->bus, FALSE);
}

/* Reuse mode, before an input: its properties, PLAYING, new streams. */
static void
fixture_restart (FuzzFixture *f, const FuzzTarget *t, guint8 flags)
{
  if (!flush_reset) {
    t->configure (f->e, flags);
    if (gst_element_set_state (f->e, GST_STATE_PLAYING)
        == GST_STATE_CHANGE_FAILURE)
      g_error ("%s: no restart", GST_ELEMENT_NAME (f->e));
  }
  gst_harness_push_event (f->h, gst_event_new_stream_start ("fuzz"));
  if (f->hv)
    gst_harness_push_event (f->hv, gst_event_new_stream_start ("fuzz-vision"));
}

static FuzzFixture reused, fresh_f;

FuzzFixture *
fuzz_fixture_begin (const FuzzTarget *target, guint8 flags)
{
  if (fresh) {
    fixture_new (&fresh_f, target, flags);
    return &fresh_f;
  }
  if (!reused.e)
    fixture_new (&reused, target, flags);
  else
    fixture_restart (&reused, target, flags);
  return &reused;
}

void
fuzz_fixture_end (FuzzFixture *f)
{
  if (fresh)
    fixture_free (f);
  else
    fixture_stop (f);
}
