/* gst-moshi: caps shared by the elements of the plugin.
 *
 * Kept in one header so that an encoder and the elements that consume its
 * output (mimidec, moshilm) can never disagree about the stream format; see
 * docs/design.md, "Stream formats between elements". */
#pragma once

#include <gst/gst.h>
#include <gst/audio/audio.h>

G_BEGIN_DECLS

/* Mimi works on 24 kHz mono, 1920-sample (80 ms) frames, 12.5 frames/s. */
#define GST_MOSHI_SAMPLE_RATE 24000
#define GST_MOSHI_FRAME_SAMPLES 1920
#define GST_MOSHI_FRAME_DURATION (80 * GST_MSECOND)
#define GST_MOSHI_MAX_CODEBOOKS 32

#define GST_MOSHI_MIMI_MEDIA_TYPE "audio/x-mimi"

/* One buffer = one or more frames; one frame = `codebooks` little-endian
 * guint16 codes.  `framerate` is the frame rate (12.5 Hz), optional on
 * input so that hand-written caps need not spell it. */
#define GST_MOSHI_MIMI_CAPS                                   \
  GST_MOSHI_MIMI_MEDIA_TYPE ", codebooks = (int) [ 1, 32 ], " \
                            "framerate = (fraction) 25/2"

#define GST_MOSHI_MIMI_SINK_CAPS \
  GST_MOSHI_MIMI_MEDIA_TYPE ", codebooks = (int) [ 1, 32 ]"

/* PCM accepted by mimienc: the model computes in float, S16LE is taken as
 * well because it is what most sources and wavparse produce. */
#define GST_MOSHI_PCM_IN_CAPS                         \
  "audio/x-raw, format = (string) { F32LE, S16LE }, " \
  "rate = (int) 24000, channels = (int) 1, layout = (string) interleaved"

/* PCM produced by mimidec (and the LM's voice after mimidec). */
#define GST_MOSHI_PCM_OUT_CAPS             \
  "audio/x-raw, format = (string) F32LE, " \
  "rate = (int) 24000, channels = (int) 1, layout = (string) interleaved"

G_END_DECLS
