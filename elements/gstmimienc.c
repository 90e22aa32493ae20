/* gst-moshi: mimienc
 *
 * SECTION:element-mimienc
 * @title: mimienc
 * @see_also: mimidec, moshilm
 *
 * Encodes 24 kHz mono PCM with Kyutai's Mimi neural audio codec into
 * `audio/x-mimi`: one buffer per 80 ms frame (1920 samples), holding
 * `codebooks` little-endian guint16 codes (12.5 frames per second).
 *
 * The encoder is streaming and causal: each frame's codes depend on all the
 * audio before it.  The stream state is reset on flush, on a new stream and
 * on DISCONT input.  At EOS the last partial frame is padded with silence,
 * so that no input is dropped (its buffer still lasts 80 ms).
 *
 * ## Example pipeline
 * |[
 * gst-launch-1.0 filesrc location=speech.wav ! wavparse ! audioconvert ! \
 *     audioresample ! mimienc model=kyutai/moshiko-pytorch-bf16 ! \
 *     mimidec model=kyutai/moshiko-pytorch-bf16 ! autoaudiosink
 * ]|
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "gstmimienc.h"

#include <string.h>

#include "gstmoshicaps.h"
#include "gstmoshienums.h"
#include "gstmodelcache.h"
#include "gstmodelresolve.h"

GST_DEBUG_CATEGORY_STATIC (gst_mimi_enc_debug);
#define GST_CAT_DEFAULT gst_mimi_enc_debug

enum {
  PROP_0,
  PROP_MODEL,
  PROP_CODEBOOKS,
  PROP_THREADS,
  PROP_QUANTIZE,
};

#define DEFAULT_MODEL NULL
#define DEFAULT_CODEBOOKS 8
#define DEFAULT_THREADS 1
#define MAX_THREADS 64

static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE ("sink",
    GST_PAD_SINK, GST_PAD_ALWAYS, GST_STATIC_CAPS (GST_MOSHI_PCM_IN_CAPS));

static GstStaticPadTemplate src_template = GST_STATIC_PAD_TEMPLATE ("src",
    GST_PAD_SRC, GST_PAD_ALWAYS, GST_STATIC_CAPS (GST_MOSHI_MIMI_CAPS));

G_DEFINE_TYPE (GstMimiEnc, gst_mimi_enc, GST_TYPE_AUDIO_ENCODER);

static void gst_mimi_enc_set_property (GObject *object, guint prop_id,
    const GValue *value, GParamSpec *pspec);
static void gst_mimi_enc_get_property (GObject *object, guint prop_id,
    GValue *value, GParamSpec *pspec);
static void gst_mimi_enc_finalize (GObject *object);

static gboolean gst_mimi_enc_start (GstAudioEncoder *enc);
static gboolean gst_mimi_enc_stop (GstAudioEncoder *enc);
static gboolean gst_mimi_enc_set_format (GstAudioEncoder *enc,
    GstAudioInfo *info);
static GstFlowReturn gst_mimi_enc_handle_frame (GstAudioEncoder *enc,
    GstBuffer *buffer);
static void gst_mimi_enc_flush (GstAudioEncoder *enc);
static gboolean gst_mimi_enc_sink_event (GstAudioEncoder *enc, GstEvent *event);

static void
gst_mimi_enc_class_init (GstMimiEncClass *klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS (klass);
  GstAudioEncoderClass *base_class = GST_AUDIO_ENCODER_CLASS (klass);

  gobject_class->set_property = gst_mimi_enc_set_property;
  gobject_class->get_property = gst_mimi_enc_get_property;
  gobject_class->finalize = gst_mimi_enc_finalize;

  g_object_class_install_property (gobject_class, PROP_MODEL,
      g_param_spec_string ("model", "Model",
          "Mimi weights: a .safetensors file, a folder holding Kyutai's "
          "config.json (key mimi_name) or a Mimi config.json + "
          "model.safetensors, or a Hugging Face repo id looked up offline in "
          "the local Hugging Face cache (unset: kyutai/moshiko-pytorch-bf16)",
          DEFAULT_MODEL,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS
              | GST_PARAM_MUTABLE_READY));

  g_object_class_install_property (gobject_class, PROP_CODEBOOKS,
      g_param_spec_int ("codebooks", "Codebooks",
          "Codes per 80 ms frame: 1 semantic + acoustic codebooks (more is "
          "better quality and a higher bitrate; Moshi uses 8). At most the "
          "number the model stores (32 for Kyutai's Mimi)",
          1, GST_MOSHI_MAX_CODEBOOKS, DEFAULT_CODEBOOKS,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS
              | GST_PARAM_MUTABLE_READY));

  g_object_class_install_property (gobject_class, PROP_THREADS,
      g_param_spec_int ("threads", "Threads",
          "Compute threads used to encode one frame (1: no threading)", 1,
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

  gst_element_class_set_static_metadata (element_class, "Mimi audio encoder",
      "Codec/Encoder/Audio",
      "Encodes 24 kHz mono audio into Mimi codes (Kyutai's streaming neural "
      "audio codec, 12.5 frames/s)",
      "gst-moshi developers <https://github.com/gst-moshi/gst-moshi>");

  base_class->start = GST_DEBUG_FUNCPTR (gst_mimi_enc_start);
  base_class->stop = GST_DEBUG_FUNCPTR (gst_mimi_enc_stop);
  base_class->set_format = GST_DEBUG_FUNCPTR (gst_mimi_enc_set_format);
  base_class->handle_frame = GST_DEBUG_FUNCPTR (gst_mimi_enc_handle_frame);
  base_class->flush = GST_DEBUG_FUNCPTR (gst_mimi_enc_flush);
  base_class->sink_event = GST_DEBUG_FUNCPTR (gst_mimi_enc_sink_event);

  GST_DEBUG_CATEGORY_INIT (gst_mimi_enc_debug, "mimienc", 0,
      "Mimi audio encoder");
}

/* GstAudioEncoder hands the subclass data from its adapter, without the
 * input buffers' flags, so DISCONT has to be seen on the way in.  The probe
 * runs in the streaming thread just before the base class' chain function,
 * so the flag needs no lock.  Samples already waiting in the base class
 * (less than a frame) cannot be split off: the reset happens before the
 * frame that holds the first sample after the gap. */
static gboolean
buffer_is_discont (GstBuffer **buf, guint idx, gpointer user_data)
{
  gboolean *discont = user_data;

  if (GST_BUFFER_FLAG_IS_SET (*buf, GST_BUFFER_FLAG_DISCONT)) {
    *discont = TRUE;
    return FALSE;
  }
  return TRUE;
}

static GstPadProbeReturn
gst_mimi_enc_sink_probe (GstPad *pad, GstPadProbeInfo *info, gpointer user_data)
{
  GstMimiEnc *self = GST_MIMI_ENC (user_data);
  gboolean discont = FALSE;

  if (info->type & GST_PAD_PROBE_TYPE_BUFFER) {
    discont = GST_BUFFER_FLAG_IS_SET (GST_PAD_PROBE_INFO_BUFFER (info),
        GST_BUFFER_FLAG_DISCONT);
  } else if (info->type & GST_PAD_PROBE_TYPE_BUFFER_LIST) {
    gst_buffer_list_foreach (GST_PAD_PROBE_INFO_BUFFER_LIST (info),
        buffer_is_discont, &discont);
  }
  if (discont) {
    GST_DEBUG_OBJECT (self, "DISCONT input: resetting the stream state");
    self->reset_pending = TRUE;
  }
  return GST_PAD_PROBE_OK;
}

static void
gst_mimi_enc_init (GstMimiEnc *self)
{
  GstAudioEncoder *enc = GST_AUDIO_ENCODER (self);

  self->model = g_strdup (DEFAULT_MODEL);
  self->codebooks = DEFAULT_CODEBOOKS;
  self->threads = DEFAULT_THREADS;
  self->format = GST_AUDIO_FORMAT_UNKNOWN;

  self->probe_id = gst_pad_add_probe (GST_AUDIO_ENCODER_SINK_PAD (enc),
      GST_PAD_PROBE_TYPE_BUFFER | GST_PAD_PROBE_TYPE_BUFFER_LIST,
      gst_mimi_enc_sink_probe, self, NULL);

  /* Draining hands us the last partial frame, which we pad (see
   * handle_frame); nothing else is held back. */
  gst_audio_encoder_set_drainable (enc, TRUE);
}

static void
gst_mimi_enc_set_property (GObject *object, guint prop_id, const GValue *value,
    GParamSpec *pspec)
{
  GstMimiEnc *self = GST_MIMI_ENC (object);

  /* Taken into account at the next start (READY -> PAUSED). */
  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_MODEL:
      g_free (self->model);
      self->model = g_value_dup_string (value);
      break;
    case PROP_CODEBOOKS:
      self->codebooks = g_value_get_int (value);
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
gst_mimi_enc_get_property (GObject *object, guint prop_id, GValue *value,
    GParamSpec *pspec)
{
  GstMimiEnc *self = GST_MIMI_ENC (object);

  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_MODEL:
      g_value_set_string (value, self->model);
      break;
    case PROP_CODEBOOKS:
      g_value_set_int (value, self->codebooks);
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
gst_mimi_enc_release (GstMimiEnc *self)
{
  g_clear_pointer (&self->encoder, mimi_encoder_free);
  g_clear_pointer (&self->mimi, gst_moshi_model_cache_release_mimi);
  g_clear_pointer (&self->frame, g_free);
  g_clear_pointer (&self->model_path, g_free);
  self->n_codebooks = 0;
}

static void
gst_mimi_enc_finalize (GObject *object)
{
  GstMimiEnc *self = GST_MIMI_ENC (object);

  /* Normally done by stop; kept for an element dropped while running. */
  gst_mimi_enc_release (self);
  g_free (self->model);

  G_OBJECT_CLASS (gst_mimi_enc_parent_class)->finalize (object);
}

static gboolean
gst_mimi_enc_start (GstAudioEncoder *enc)
{
  GstMimiEnc *self = GST_MIMI_ENC (enc);
  const MimiConfig *cfg;
  GError *err = NULL;
  gchar *model;
  gint codebooks, threads;
  MoshiWeightType quantize;

  GST_OBJECT_LOCK (self);
  model = g_strdup (self->model);
  codebooks = self->codebooks;
  threads = self->threads;
  quantize = self->quantize;
  GST_OBJECT_UNLOCK (self);

  self->model_path = gst_moshi_resolve_mimi (model, &err);
  if (!self->model_path)
    goto model_error;

  self->mimi =
      gst_moshi_model_cache_acquire_mimi (self->model_path, quantize, &err);
  if (!self->mimi)
    goto model_error;

  cfg = mimi_model_config (self->mimi);
  /* The caps promise 24 kHz and 80 ms frames; a model made for something
   * else would silently produce garbage timing. */
  if (cfg->sample_rate != GST_MOSHI_SAMPLE_RATE
      || cfg->frame_size != GST_MOSHI_FRAME_SAMPLES) {
    GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS,
        ("The Mimi model %s works at %d Hz with %d-sample frames; mimienc "
         "supports only %d Hz with %d-sample frames.",
            self->model_path, cfg->sample_rate, cfg->frame_size,
            GST_MOSHI_SAMPLE_RATE, GST_MOSHI_FRAME_SAMPLES),
        (NULL));
    goto failed;
  }
  if (codebooks > cfg->q_n_q) {
    GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS,
        ("codebooks=%d, but the Mimi model %s stores only %d codebooks; "
         "set codebooks to %d or less.",
            codebooks, self->model_path, cfg->q_n_q, cfg->q_n_q),
        (NULL));
    goto failed;
  }

  self->encoder = mimi_encoder_new (self->mimi, codebooks, &err);
  if (!self->encoder)
    goto model_error;
  mimi_encoder_set_threads (self->encoder, threads);
  self->n_codebooks = codebooks;
  self->frame = g_new0 (gfloat, GST_MOSHI_FRAME_SAMPLES);
  self->reset_pending = FALSE;

  GST_INFO_OBJECT (self, "encoding with %s, %d of %d codebooks, %d threads",
      self->model_path, codebooks, cfg->q_n_q, threads);
  g_free (model);
  return TRUE;

model_error:
  GST_MOSHI_ELEMENT_MODEL_ERROR (self, err, model);
  g_clear_error (&err);
failed:
  gst_mimi_enc_release (self);
  g_free (model);
  return FALSE;
}

static gboolean
gst_mimi_enc_stop (GstAudioEncoder *enc)
{
  GstMimiEnc *self = GST_MIMI_ENC (enc);

  gst_mimi_enc_release (self);
  self->format = GST_AUDIO_FORMAT_UNKNOWN;
  return TRUE;
}

static gboolean
gst_mimi_enc_set_format (GstAudioEncoder *enc, GstAudioInfo *info)
{
  GstMimiEnc *self = GST_MIMI_ENC (enc);
  GstCaps *caps, *allowed;
  gboolean ok;

  /* The template only lets F32LE / S16LE, 24 kHz, mono through. */
  self->format = GST_AUDIO_INFO_FORMAT (info);

  caps =
      gst_caps_new_simple (GST_MOSHI_MIMI_MEDIA_TYPE, "codebooks", G_TYPE_INT,
          self->n_codebooks, "framerate", GST_TYPE_FRACTION, 25, 2, NULL);

  /* The number of codebooks is the user's choice (a property), so when
   * downstream wants another one, say so instead of letting the source
   * report a bare "not-negotiated". */
  allowed = gst_pad_get_allowed_caps (GST_AUDIO_ENCODER_SRC_PAD (enc));
  if (allowed && !gst_caps_can_intersect (allowed, caps)) {
    gchar *str = gst_caps_to_string (allowed);

    GST_ELEMENT_ERROR (self, CORE, NEGOTIATION,
        ("Downstream does not accept Mimi frames with %d codebooks (it "
         "accepts %s); set the codebooks property to match.",
            self->n_codebooks, str),
        (NULL));
    g_free (str);
    gst_caps_unref (allowed);
    gst_caps_unref (caps);
    return FALSE;
  }
  if (allowed)
    gst_caps_unref (allowed);

  ok = gst_audio_encoder_set_output_format (enc, caps);
  gst_caps_unref (caps);
  if (!ok)
    return FALSE;

  /* Exactly one 1920-sample frame per handle_frame call.  Not hard-min:
   * with hard-min the base class silently discards the leftover at EOS,
   * whereas we want to pad and encode it. */
  gst_audio_encoder_set_frame_samples_min (enc, GST_MOSHI_FRAME_SAMPLES);
  gst_audio_encoder_set_frame_samples_max (enc, GST_MOSHI_FRAME_SAMPLES);
  gst_audio_encoder_set_frame_max (enc, 1);
  gst_audio_encoder_set_hard_min (enc, FALSE);

  /* A frame leaves once all its 1920 samples are in. */
  gst_audio_encoder_set_latency (enc, GST_MOSHI_FRAME_DURATION,
      GST_MOSHI_FRAME_DURATION);

  return TRUE;
}

static GstFlowReturn
gst_mimi_enc_handle_frame (GstAudioEncoder *enc, GstBuffer *buffer)
{
  GstMimiEnc *self = GST_MIMI_ENC (enc);
  uint16_t codes[GST_MOSHI_MAX_CODEBOOKS];
  GstMapInfo in, out;
  GstBuffer *outbuf;
  gsize n, i;

  /* Drain: we hold no data of our own. */
  if (!buffer)
    return GST_FLOW_OK;

  if (G_UNLIKELY (!self->encoder)) {
    GST_ELEMENT_ERROR (self, CORE, NEGOTIATION, (NULL),
        ("encoder not started"));
    return GST_FLOW_NOT_NEGOTIATED;
  }

  if (self->reset_pending) {
    GST_DEBUG_OBJECT (self, "resetting the stream state");
    mimi_encoder_reset (self->encoder);
    self->reset_pending = FALSE;
  }

  if (!gst_buffer_map (buffer, &in, GST_MAP_READ)) {
    GST_ELEMENT_ERROR (self, STREAM, ENCODE, (NULL), ("cannot map input"));
    return GST_FLOW_ERROR;
  }

  if (self->format == GST_AUDIO_FORMAT_S16LE) {
    const guint8 *p = in.data;

    n = MIN (in.size / 2, GST_MOSHI_FRAME_SAMPLES);
    for (i = 0; i < n; i++)
      self->frame[i] = (gint16) GST_READ_UINT16_LE (p + 2 * i) / 32768.0f;
  } else {
    n = MIN (in.size / 4, GST_MOSHI_FRAME_SAMPLES);
#if G_BYTE_ORDER == G_LITTLE_ENDIAN
    memcpy (self->frame, in.data, n * sizeof (gfloat));
#else
    for (i = 0; i < n; i++)
      self->frame[i] = GST_READ_FLOAT_LE (in.data + 4 * i);
#endif
  }
  gst_buffer_unmap (buffer, &in);

  /* Fewer than 1920 samples only come when the base class drains (EOS,
   * format change): pad with silence so the tail is not lost. */
  if (n < GST_MOSHI_FRAME_SAMPLES) {
    GST_DEBUG_OBJECT (self,
        "padding the last frame: %" G_GSIZE_FORMAT " samples + %" G_GSIZE_FORMAT
        " zeros",
        n, (gsize) GST_MOSHI_FRAME_SAMPLES - n);
    memset (self->frame + n, 0,
        (GST_MOSHI_FRAME_SAMPLES - n) * sizeof (gfloat));
  }

  mimi_encode_frame (self->encoder, self->frame, codes);

  outbuf = gst_audio_encoder_allocate_output_buffer (enc,
      self->n_codebooks * sizeof (guint16));
  gst_buffer_map (outbuf, &out, GST_MAP_WRITE);
  for (i = 0; i < (gsize) self->n_codebooks; i++)
    GST_WRITE_UINT16_LE (out.data + 2 * i, codes[i]);
  gst_buffer_unmap (outbuf, &out);

  /* Always a whole frame: for the padded last frame this claims more
   * samples than were left, which the base class accepts while draining and
   * which gives the buffer its true 80 ms duration. */
  return gst_audio_encoder_finish_frame (enc, outbuf, GST_MOSHI_FRAME_SAMPLES);
}

static void
gst_mimi_enc_flush (GstAudioEncoder *enc)
{
  GstMimiEnc *self = GST_MIMI_ENC (enc);

  self->reset_pending = TRUE;
}

static gboolean
gst_mimi_enc_sink_event (GstAudioEncoder *enc, GstEvent *event)
{
  GstMimiEnc *self = GST_MIMI_ENC (enc);

  switch (GST_EVENT_TYPE (event)) {
    case GST_EVENT_FLUSH_STOP:
      /* The base class calls ->flush only if it has undrained data; after
       * EOS + flushing seek it does not, yet the state is stale. */
    case GST_EVENT_STREAM_START:
      self->reset_pending = TRUE;
      break;
    default:
      break;
  }

  return GST_AUDIO_ENCODER_CLASS (gst_mimi_enc_parent_class)
      ->sink_event (enc, event);
}
