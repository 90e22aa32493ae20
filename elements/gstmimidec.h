/* gst-moshi: mimidec, Mimi codes -> PCM. */
#pragma once

#include <gst/gst.h>
#include <gst/audio/gstaudiodecoder.h>

#include "mimi.h"

G_BEGIN_DECLS

#define GST_TYPE_MIMI_DEC (gst_mimi_dec_get_type ())
G_DECLARE_FINAL_TYPE (GstMimiDec, gst_mimi_dec, GST, MIMI_DEC, GstAudioDecoder)

struct _GstMimiDec {
  GstAudioDecoder parent;

  /* properties (object lock) */
  gchar *model;
  gint threads;
  MoshiWeightType quantize;

  /* between start and stop (stream lock) */
  gchar *model_path; /* resolved weights file, for messages */
  MimiModel *mimi; /* shared, from the model cache */
  MimiDecoder *decoder; /* this stream's state, made in set_format */
  gint n_codebooks; /* from the caps */
  guint16 *codes; /* n_codebooks host-order codes of a frame */
  gboolean reset_pending; /* flush / new stream: reset first */
};

G_END_DECLS
