/* gst-moshi: moshivis, MoshiVis's image side (SigLIP tower + adapter) as an
 * element: RGB video frames in, the LM's cross-attention memory out, for
 * moshilm's vision_sink.  It encodes the first frame and then only when
 * asked (interval, force-key-unit, scene change), on its own thread, so
 * that the video it watches keeps flowing. */
#pragma once

#include <gst/gst.h>
#include <gst/video/video.h>

#include "moshivis-image.h"

G_BEGIN_DECLS

#define GST_TYPE_MOSHI_VIS (gst_moshi_vis_get_type ())
G_DECLARE_FINAL_TYPE (GstMoshiVis, gst_moshi_vis, GST, MOSHI_VIS, GstElement)

#define GST_MOSHI_VIS_THUMB 16 /* side of the scene-change thumbnail */

struct _GstMoshiVis {
  GstElement parent;

  GstPad *sinkpad, *srcpad;

  /* properties (object lock) */
  gchar *model;
  gint threads;
  GstClockTime interval;
  gdouble scene_threshold;
  gboolean center_crop;
  MoshiWeightType quantize;

  /* between READY->PAUSED and PAUSED->READY */
  gchar *model_path;
  MoshiVisImageEncoder *enc; /* shared, from the model cache */
  gint size; /* the tower's square input side */
  gint tokens, dim; /* of one output buffer */

  /* streaming thread */
  GstVideoInfo info;
  gboolean have_info;
  gboolean encoded_once; /* the first frame went to the encoder */
  GstClockTime last_request_pts;
  guint8 thumb[GST_MOSHI_VIS_THUMB * GST_MOSHI_VIS_THUMB];
  gint force; /* atomic: a force-key-unit event arrived */
  gboolean live; /* upstream is live: drop rather than wait when busy */

  /* encoder thread; everything below under `lock` */
  GThread *worker;
  GMutex lock;
  GCond cond;
  GstBuffer *pending; /* newest frame waiting to be encoded */
  GstVideoInfo pending_info;
  gboolean busy; /* the worker is encoding or pushing */
  gboolean eos_pending; /* push EOS once the pending frame is done */
  gboolean flushing, quit;
  GstFlowReturn flow; /* of the last push */
  guint64 n_encoded, n_replaced;
};

G_END_DECLS
