/* gst-moshi: moshilm, the Moshi speech-text LM (user's Mimi codes in, the
 * model's Mimi codes and text out). */
#pragma once

#include <gst/gst.h>
#include <gst/base/gstflowcombiner.h>

#include "lm.h"
#include "sentencepiece.h"

G_BEGIN_DECLS

#define GST_TYPE_MOSHI_LM (gst_moshi_lm_get_type ())
G_DECLARE_FINAL_TYPE (GstMoshiLm, gst_moshi_lm, GST, MOSHI_LM, GstElement)

/* One step whose output has not come out yet (the delays): the timestamp of
 * its input frame and whether that frame followed a discontinuity. */
/* An image waiting for the audio to reach its time (NULL: remove). */
typedef struct {
  LmImage *image;
  GstClockTime pts;
} GstMoshiLmImage;

typedef struct {
  GstClockTime pts;
  gboolean discont;
  gfloat gate; /* MoshiVis gate summary of the step that made its text */
} GstMoshiLmSlot;

struct _GstMoshiLm {
  GstElement parent;

  GstPad *sinkpad, *srcpad, *textpad;
  GstFlowCombiner *combiner;

  /* properties (object lock) */
  gchar *model;
  MoshiWeightType quantize;
  gint threads;
  gdouble temperature, temperature_text;
  gint top_k, top_k_text;
  guint64 seed;
  gboolean greedy;

  /* between READY->PAUSED and PAUSED->READY; used by the streaming
   * thread only while the pads are active */
  gchar *model_path, *tokenizer_path; /* for messages */
  LmModel *lm; /* shared, from the model cache */
  SpModel *sp; /* shared, from the model cache */
  LmGen *gen; /* this conversation */
  gint n_user; /* user codebooks the model reads (n_q - dep_q) */
  gint dep_q; /* codebooks of the model's voice */
  gint max_delay; /* steps before the first output frame */
  gint text_padding_id;
  LmKind kind; /* dialog, STT or translation (the config's model_type) */
  GstClockTime stt_delay; /* STT: how far the text lags the audio */
  gint prefix_frames; /* STT: silence frames fed before the audio */
  gint pad_frames; /* STT / translation: silence frames fed at EOS */
  guint16 *silence; /* [prefix_frames + pad_frames][n_user] Mimi codes of
                     * silence, or NULL: no Mimi found, the last frame is
                     * repeated */
  gint n_silence; /* frames in silence */
  gint text_eos_id; /* translation: the text token that ends the reply */
  gint64 test_step_delay_us; /* test hook, see gst_moshi_lm_start() */

  /* stream state (streaming thread) */
  gint in_codebooks; /* from the caps; 0 = not negotiated */
  int *user_codes, *last_codes, *out_codes;
  gboolean have_last; /* last_codes holds the last frame fed */
  GstMoshiLmSlot *slots; /* ring of max_delay + 1 */
  gint slot_head, n_slots;
  GstClockTime next_pts; /* expected PTS of the next input frame */
  GstClockTime last_out_pts; /* of the last frame pushed */
  gboolean discont; /* the next input frame starts a discontinuity */
  gboolean started; /* the stream's first frame has been seen */
  GstClockTime first_pts; /* of the stream's first frame */
  GstClockTime tail_pts; /* translation: PTS of the next frame after EOS */
  SpDecodeState sp_state;
  GString *text;
  GstSegment segment;
  gboolean live; /* upstream is live (asked at the first buffer) */
  gboolean live_known;
  /* real time (see the element docs): excess of step time over 80 ms,
   * accumulated; monotonic time of the last report */
  gint64 lag_us, last_lag_report_us;
  guint64 steps, late_steps;

  /* MoshiVis: images arrive on vision_sink (any thread), are prepared
   * there (keys and values) and applied at the next step */
  GstPad *visionpad; /* requested, or NULL */
  gint xa_start; /* property */
  guint vision_timeout; /* property, seconds */
  gboolean has_xa; /* the model can look at images */
  gboolean vision_requested; /* a vision_sink was asked for: report gates */
  gint vision_tokens, vision_dim; /* from the vision_sink caps */
  GMutex vision_lock;
  GCond vision_cond;
  GQueue images; /* under vision_lock: GstMoshiLmImage, oldest first */
  gboolean vision_unblock; /* under vision_lock: nobody waits any more */
  GstClockTime vision_pos; /* under vision_lock: the vision stream has said
                            * everything before this time (files) */
  gboolean vision_eos; /* under vision_lock */
  gboolean image_active; /* the generator has an image (streaming thread) */
};

G_END_DECLS
