/* What the element fuzzers (fuzz-element.c, fuzz-vision.c) share: the
 * environment (FUZZ_FRESH, FUZZ_RESET, FUZZ_MAX_FRAMES), GStreamer with the
 * plugin registered statically, and the element under test in its
 * harnesses, reused from input to input (or made anew for each).
 *
 * Reuse: one element (and its harnesses) serves every input.  After each
 * input it goes back to READY (its stop() frees all stream state, its pads
 * drop their sticky events), or with FUZZ_RESET=flush it gets a flush of
 * its sink pads instead (never stopped: faster for moshilm, whose start
 * resolves and parses its model files; an input's properties are then
 * those of the first input, and inputs are not independent); the input's
 * output, events and messages are dropped, and the harnesses' own pads are
 * reactivated so that no EOS, flush or caps carries over.  Done at the end
 * of the input rather than at the start of the next, so that what an input
 * allocates is freed within it (libFuzzer's leak check reruns an input
 * that ends with more mallocs than frees).  Before the next input: its
 * properties, PLAYING, and a new stream-start on each input.  FUZZ_FRESH=1
 * builds a new element and harnesses for each input instead (slower; for
 * bugs that only a never-started element would show, and to replay a
 * crash without the reset). */
#pragma once

#include <gst/check/gstharness.h>
#include <gst/gst.h>

G_BEGIN_DECLS

/* The element under test. */
typedef struct {
  const char *factory; /* e.g. "moshilm" */
  const char *model; /* its model property */
  /* Also a harness on a requested vision_sink (made first), and one on
   * text_src (moshilm). */
  gboolean vision_sink, text_src;
  /* Sets the properties an input picks (the element is stopped). */
  void (*configure) (GstElement *e, guint8 flags);
} FuzzTarget;

/* The element and its harnesses: h on sink and src, hv on the requested
 * vision_sink (vpad), ht on text_src; NULL when the target has none. */
typedef struct {
  GstElement *e;
  GstBus *bus;
  GstPad *vpad;
  GstHarness *h, *hv, *ht;
} FuzzFixture;

/* FUZZ_FRESH, FUZZ_RESET; FUZZ_MAX_FRAMES into *max_frames (at least 1)
 * when set. */
void fuzz_harness_read_env (guint *max_frames);

/* Only our plugin, registered statically (no scanning; the registry is
 * registry_name in the temporary folder unless GST_REGISTRY says
 * otherwise); critical warnings fatal; and an element of the target that
 * stays started, so that the model stays in the plugin's model cache and
 * each input does not load it again. */
void fuzz_harness_init (const FuzzTarget *target, const char *registry_name);

/* Before an input: the fixture to use, configured for flags. */
FuzzFixture *fuzz_fixture_begin (const FuzzTarget *target, guint8 flags);
/* After it: reset (reuse) or freed (FUZZ_FRESH). */
void fuzz_fixture_end (FuzzFixture *f);

/* A push that returned GST_FLOW_ERROR must have posted an ERROR. */
void fuzz_check_error_posted (GstBus *bus, GstFlowReturn ret, const char *what);

/* Pulls all output of h (and drops its events); with unit > 0, every
 * buffer must be whole units of that many bytes.  Returns the units. */
guint fuzz_drain (GstHarness *h, gsize unit);

G_END_DECLS
