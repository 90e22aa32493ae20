/* gst-moshi: mimidec
 *
 * SECTION:element-mimidec
 * @title: mimidec
 * @see_also: mimienc, moshilm
 *
 * Decodes Kyutai Mimi codes (`audio/x-mimi`, as made by mimienc or by
 * moshilm's voice) into 24 kHz mono F32LE audio: 1920 samples (80 ms) per
 * frame.  The number of codebooks comes from the caps; it can be anything
 * from 1 to the number the model stores.  An input buffer may hold several
 * whole frames.
 *
 * The decoder is streaming: each frame's audio depends on the frames before
 * it.  The state is reset on flush, on a new stream and on DISCONT input.
 * Bad input (a buffer that is not a whole number of frames, a code outside
 * the codebook) is an error, never a crash.
 *
 * ## Example pipeline
 * |[
 * gst-launch-1.0 audiotestsrc ! audio/x-raw,rate=24000,channels=1 ! \
 *     mimienc model=/path/to/mimi.safetensors ! \
 *     mimidec model=/path/to/mimi.safetensors ! audioconvert ! autoaudiosink
 * ]|
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "gstmimidec.h"

#include <string.h>

#include "gstmoshicaps.h"
#include "gstmoshienums.h"
#include "gstmodelcache.h"
#include "gstmodelresolve.h"

GST_DEBUG_CATEGORY_STATIC (gst_mimi_dec_debug);
#define GST_CAT_DEFAULT gst_mimi_dec_debug

enum {
  PROP_0,
  PROP_MODEL,
  PROP_THREADS,
  PROP_QUANTIZE,
};

#define DEFAULT_MODEL NULL
#define DEFAULT_THREADS 1
#define MAX_THREADS 64

static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE ("sink",
    GST_PAD_SINK, GST_PAD_ALWAYS, GST_STATIC_CAPS (GST_MOSHI_MIMI_SINK_CAPS));

static GstStaticPadTemplate src_template = GST_STATIC_PAD_TEMPLATE ("src",
    GST_PAD_SRC, GST_PAD_ALWAYS, GST_STATIC_CAPS (GST_MOSHI_PCM_OUT_CAPS));

G_DEFINE_TYPE (GstMimiDec, gst_mimi_dec, GST_TYPE_AUDIO_DECODER);

static void gst_mimi_dec_set_property (GObject *object, guint prop_id,
    const GValue *value, GParamSpec *pspec);
static void gst_mimi_dec_get_property (GObject *object, guint prop_id,
    GValue *value, GParamSpec *pspec);
static void gst_mimi_dec_finalize (GObject *object);

static gboolean gst_mimi_dec_start (GstAudioDecoder *dec);
static gboolean gst_mimi_dec_stop (GstAudioDecoder *dec);
static gboolean gst_mimi_dec_set_format (GstAudioDecoder *dec, GstCaps *caps);
static GstFlowReturn gst_mimi_dec_handle_frame (GstAudioDecoder *dec,
    GstBuffer *buffer);
static void gst_mimi_dec_flush (GstAudioDecoder *dec, gboolean hard);
static gboolean gst_mimi_dec_sink_event (GstAudioDecoder *dec, GstEvent *event);

static void
gst_mimi_dec_class_init (GstMimiDecClass *klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS (klass);
  GstAudioDecoderClass *base_class = GST_AUDIO_DECODER_CLASS (klass);

  gobject_class->set_property = gst_mimi_dec_set_property;
  gobject_class->get_property = gst_mimi_dec_get_property;
  gobject_class->finalize = gst_mimi_dec_finalize;

  g_object_class_install_property (gobject_class, PROP_MODEL,
      g_param_spec_string ("model", "Model",
          "Mimi weights: a .safetensors file, a folder holding Kyutai's "
          "config.json (key mimi_name) or a Mimi config.json + "
          "model.safetensors, or a Hugging Face repo id looked up offline in "
          "the local Hugging Face cache (unset: kyutai/moshiko-pytorch-bf16)",
          DEFAULT_MODEL,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS
              | GST_PARAM_MUTABLE_READY));

  g_object_class_install_property (gobject_class, PROP_THREADS,
      g_param_spec_int ("threads", "Threads",
          "Compute threads used to decode one frame (1: no threading)", 1,
          MAX_THREADS, DEFAULT_THREADS,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS
              | GST_PARAM_MUTABLE_READY));

  g_object_class_install_property (gobject_class, PROP_QUANTIZE,
      g_param_spec_enum ("quantize", "Quantize",
          "How the weights are stored: none (float32, exact), bf16 or q8 "
          "(faster streaming, small error; see docs/models.md)",
          GST_TYPE_MOSHI_QUANTIZE, MOSHI_WEIGHTS_F32,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS
              | GST_PARAM_MUTABLE_READY));

  gst_element_class_add_static_pad_template (element_class, &sink_template);
  gst_element_class_add_static_pad_template (element_class, &src_template);

  gst_element_class_set_static_metadata (element_class, "Mimi audio decoder",
      "Codec/Decoder/Audio",
      "Decodes Mimi codes (Kyutai's streaming neural audio codec, "
      "12.5 frames/s) into 24 kHz mono audio",
      "gst-moshi developers <https://github.com/gst-moshi/gst-moshi>");

  base_class->start = GST_DEBUG_FUNCPTR (gst_mimi_dec_start);
  base_class->stop = GST_DEBUG_FUNCPTR (gst_mimi_dec_stop);
  base_class->set_format = GST_DEBUG_FUNCPTR (gst_mimi_dec_set_format);
  base_class->handle_frame = GST_DEBUG_FUNCPTR (gst_mimi_dec_handle_frame);
  base_class->flush = GST_DEBUG_FUNCPTR (gst_mimi_dec_flush);
  base_class->sink_event = GST_DEBUG_FUNCPTR (gst_mimi_dec_sink_event);

  GST_DEBUG_CATEGORY_INIT (gst_mimi_dec_debug, "mimidec", 0,
      "Mimi audio decoder");
}

static void
gst_mimi_dec_init (GstMimiDec *self)
{
  GstAudioDecoder *dec = GST_AUDIO_DECODER (self);

  self->model = g_strdup (DEFAULT_MODEL);
  self->threads = DEFAULT_THREADS;

  /* Without caps we do not know the number of codebooks, hence the frame
   * size. */
  gst_audio_decoder_set_needs_format (dec, TRUE);
  gst_audio_decoder_set_drainable (dec, TRUE);
}

static void
gst_mimi_dec_set_property (GObject *object, guint prop_id, const GValue *value,
    GParamSpec *pspec)
{
  GstMimiDec *self = GST_MIMI_DEC (object);

  /* Taken into account at the next start (READY -> PAUSED). */
  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_MODEL:
      g_free (self->model);
      self->model = g_value_dup_string (value);
      break;
    case PROP_THREADS:
      self->threads = g_value_get_int (value);
      break;
    case PROP_QUANTIZE:
      self->quantize = g_value_get_enum (value);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

static void
gst_mimi_dec_get_property (GObject *object, guint prop_id, GValue *value,
    GParamSpec *pspec)
{
  GstMimiDec *self = GST_MIMI_DEC (object);

  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_MODEL:
      g_value_set_string (value, self->model);
      break;
    case PROP_THREADS:
      g_value_set_int (value, self->threads);
      break;
    case PROP_QUANTIZE:
      g_value_set_enum (value, self->quantize);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

static void
gst_mimi_dec_release (GstMimiDec *self)
{
  g_clear_pointer (&self->decoder, mimi_decoder_free);
  g_clear_pointer (&self->mimi, gst_moshi_model_cache_release_mimi);
  g_clear_pointer (&self->codes, g_free);
  g_clear_pointer (&self->model_path, g_free);
  self->n_codebooks = 0;
}

static void
gst_mimi_dec_finalize (GObject *object)
{
  GstMimiDec *self = GST_MIMI_DEC (object);

  /* Normally done by stop; kept for an element dropped while running. */
  gst_mimi_dec_release (self);
  g_free (self->model);

  G_OBJECT_CLASS (gst_mimi_dec_parent_class)->finalize (object);
}

static gboolean
gst_mimi_dec_start (GstAudioDecoder *dec)
{
  GstMimiDec *self = GST_MIMI_DEC (dec);
  const MimiConfig *cfg;
  GError *err = NULL;
  gchar *model;
  MoshiWeightType quantize;

  GST_OBJECT_LOCK (self);
  model = g_strdup (self->model);
  quantize = self->quantize;
  GST_OBJECT_UNLOCK (self);

  /* Load now rather than at the first caps: a missing model is a state
   * change failure the application sees at once. */
  self->model_path = gst_moshi_resolve_mimi (model, &err);
  if (!self->model_path)
    goto model_error;

  self->mimi =
      gst_moshi_model_cache_acquire_mimi (self->model_path, quantize, &err);
  if (!self->mimi)
    goto model_error;

  cfg = mimi_model_config (self->mimi);
  if (cfg->sample_rate != GST_MOSHI_SAMPLE_RATE
      || cfg->frame_size != GST_MOSHI_FRAME_SAMPLES) {
    GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS,
        ("The Mimi model %s works at %d Hz with %d-sample frames; mimidec "
         "supports only %d Hz with %d-sample frames.",
            self->model_path, cfg->sample_rate, cfg->frame_size,
            GST_MOSHI_SAMPLE_RATE, GST_MOSHI_FRAME_SAMPLES),
        (NULL));
    goto failed;
  }

  GST_INFO_OBJECT (self, "decoding with %s (%d codebooks stored)",
      self->model_path, cfg->q_n_q);
  g_free (model);
  return TRUE;

model_error:
  GST_MOSHI_ELEMENT_MODEL_ERROR (self, err, model);
  g_clear_error (&err);
failed:
  gst_mimi_dec_release (self);
  g_free (model);
  return FALSE;
}

static gboolean
gst_mimi_dec_stop (GstAudioDecoder *dec)
{
  gst_mimi_dec_release (GST_MIMI_DEC (dec));
  return TRUE;
}

static gboolean
gst_mimi_dec_set_format (GstAudioDecoder *dec, GstCaps *caps)
{
  GstMimiDec *self = GST_MIMI_DEC (dec);
  const GstStructure *s = gst_caps_get_structure (caps, 0);
  const MimiConfig *cfg;
  GstAudioInfo info;
  GError *err = NULL;
  gint codebooks, threads;

  if (!self->mimi)
    return FALSE;
  cfg = mimi_model_config (self->mimi);

  if (!gst_structure_get_int (s, "codebooks", &codebooks)) {
    GST_ELEMENT_ERROR (self, CORE, NEGOTIATION,
        ("Mimi caps without a fixed number of codebooks: %" GST_PTR_FORMAT,
            caps),
        (NULL));
    return FALSE;
  }
  if (codebooks < 1 || codebooks > cfg->q_n_q) {
    GST_ELEMENT_ERROR (self, CORE, NEGOTIATION,
        ("The Mimi stream has %d codebooks, but the model %s stores only %d; "
         "encode with codebooks=%d or less, or use a model with more "
         "codebooks.",
            codebooks, self->model_path, cfg->q_n_q, cfg->q_n_q),
        (NULL));
    return FALSE;
  }

  /* Same number of codebooks: the same stream goes on (e.g. caps only
   * gained a framerate), keep its state. */
  if (self->decoder && codebooks != self->n_codebooks) {
    g_clear_pointer (&self->decoder, mimi_decoder_free);
    g_clear_pointer (&self->codes, g_free);
  }
  if (!self->decoder) {
    self->decoder = mimi_decoder_new (self->mimi, codebooks, &err);
    if (!self->decoder) {
      GST_MOSHI_ELEMENT_MODEL_ERROR (self, err, self->model_path);
      g_clear_error (&err);
      return FALSE;
    }
    GST_OBJECT_LOCK (self);
    threads = self->threads;
    GST_OBJECT_UNLOCK (self);
    mimi_decoder_set_threads (self->decoder, threads);
    self->codes = g_new0 (guint16, codebooks);
    self->n_codebooks = codebooks;
    self->reset_pending = FALSE;
  }

  gst_audio_info_init (&info);
  gst_audio_info_set_format (&info, GST_AUDIO_FORMAT_F32LE,
      GST_MOSHI_SAMPLE_RATE, 1, NULL);
  if (!gst_audio_decoder_set_output_format (dec, &info))
    return FALSE;

  /* Reported for symmetry with the encoder: a frame of audio is 80 ms. */
  gst_audio_decoder_set_latency (dec, GST_MOSHI_FRAME_DURATION,
      GST_MOSHI_FRAME_DURATION);

  GST_DEBUG_OBJECT (self, "decoding %d codebooks", codebooks);
  return TRUE;
}

static GstFlowReturn
gst_mimi_dec_handle_frame (GstAudioDecoder *dec, GstBuffer *buffer)
{
  GstMimiDec *self = GST_MIMI_DEC (dec);
  GstMapInfo in, out;
  GstBuffer *outbuf;
  gsize frame_bytes, n_frames, f;
  gint i;
  GError *err = NULL;

  /* Drain: we hold no data of our own. */
  if (!buffer)
    return GST_FLOW_OK;

  if (G_UNLIKELY (!self->decoder)) {
    GST_ELEMENT_ERROR (self, CORE, NEGOTIATION, (NULL),
        ("decoder not negotiated"));
    return GST_FLOW_NOT_NEGOTIATED;
  }

  if (self->reset_pending) {
    GST_DEBUG_OBJECT (self, "resetting the stream state");
    mimi_decoder_reset (self->decoder);
    self->reset_pending = FALSE;
  }

  if (!gst_buffer_map (buffer, &in, GST_MAP_READ)) {
    GST_ELEMENT_ERROR (self, STREAM, DECODE, (NULL), ("cannot map input"));
    return GST_FLOW_ERROR;
  }

  frame_bytes = (gsize) self->n_codebooks * sizeof (guint16);
  if (in.size % frame_bytes != 0) {
    GST_ELEMENT_ERROR (self, STREAM, DECODE,
        ("buffer of %u bytes is not a whole number of %d-codebook frames "
         "(%d bytes each)",
            (guint) in.size, self->n_codebooks, (gint) frame_bytes),
        (NULL));
    gst_buffer_unmap (buffer, &in);
    return GST_FLOW_ERROR;
  }
  n_frames = in.size / frame_bytes;

  outbuf = gst_audio_decoder_allocate_output_buffer (dec,
      n_frames * GST_MOSHI_FRAME_SAMPLES * sizeof (gfloat));
  gst_buffer_map (outbuf, &out, GST_MAP_WRITE);

  for (f = 0; f < n_frames; f++) {
    const guint8 *p = in.data + f * frame_bytes;
    gfloat *pcm = (gfloat *) out.data + f * GST_MOSHI_FRAME_SAMPLES;

    for (i = 0; i < self->n_codebooks; i++)
      self->codes[i] = GST_READ_UINT16_LE (p + 2 * i);

    /* The engine checks every code against the codebook size and leaves
     * the state untouched on error. */
    if (!mimi_decode_frame (self->decoder, self->codes, pcm, &err)) {
      GST_ELEMENT_ERROR (self, STREAM, DECODE,
          ("Invalid Mimi frame %" G_GSIZE_FORMAT " of %" G_GSIZE_FORMAT
           " in buffer: %s",
              f + 1, n_frames, err->message),
          (NULL));
      g_clear_error (&err);
      gst_buffer_unmap (outbuf, &out);
      gst_buffer_unref (outbuf);
      gst_buffer_unmap (buffer, &in);
      return GST_FLOW_ERROR;
    }
  }
  /* F32LE output, the engine writes host floats. */
#if G_BYTE_ORDER != G_LITTLE_ENDIAN
  for (f = 0; f < n_frames * GST_MOSHI_FRAME_SAMPLES; f++) {
    guint32 *w = (guint32 *) out.data + f;
    *w = GUINT32_TO_LE (*w);
  }
#endif

  gst_buffer_unmap (outbuf, &out);
  gst_buffer_unmap (buffer, &in);

  return gst_audio_decoder_finish_frame (dec, outbuf, 1);
}

static void
gst_mimi_dec_flush (GstAudioDecoder *dec, gboolean hard)
{
  GstMimiDec *self = GST_MIMI_DEC (dec);

  /* hard: flushing seek; otherwise DISCONT input.  Either way the next
   * frame does not continue the previous ones. */
  self->reset_pending = TRUE;
}

static gboolean
gst_mimi_dec_sink_event (GstAudioDecoder *dec, GstEvent *event)
{
  GstMimiDec *self = GST_MIMI_DEC (dec);

  switch (GST_EVENT_TYPE (event)) {
    case GST_EVENT_FLUSH_STOP:
      /* The base class calls ->flush only once it has produced output. */
    case GST_EVENT_STREAM_START:
      self->reset_pending = TRUE;
      break;
    default:
      break;
  }

  return GST_AUDIO_DECODER_CLASS (gst_mimi_dec_parent_class)
      ->sink_event (dec, event);
}
