/* gst-moshi: mimienc, PCM -> Mimi codes. */
#pragma once

#include <gst/gst.h>
#include <gst/audio/gstaudioencoder.h>

#include "mimi.h"

G_BEGIN_DECLS

#define GST_TYPE_MIMI_ENC (gst_mimi_enc_get_type ())
G_DECLARE_FINAL_TYPE (GstMimiEnc, gst_mimi_enc, GST, MIMI_ENC, GstAudioEncoder)

struct _GstMimiEnc {
  GstAudioEncoder parent;

  /* properties (object lock) */
  gchar *model;
  gint codebooks;
  gint threads;
  MoshiWeightType quantize;

  /* between start and stop (stream lock) */
  gchar *model_path; /* resolved weights file, for messages */
  MimiModel *mimi; /* shared, from the model cache */
  MimiEncoder *encoder; /* this stream's state */
  gint n_codebooks; /* what `encoder` was made for */
  GstAudioFormat format;
  gfloat *frame; /* GST_MOSHI_FRAME_SAMPLES floats */
  gboolean reset_pending; /* DISCONT / flush: reset first */
  gulong probe_id;
};

G_END_DECLS
