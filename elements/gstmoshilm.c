/* gst-moshi: moshilm
 *
 * SECTION:element-moshilm
 * @title: moshilm
 * @see_also: mimienc, mimidec
 *
 * Kyutai's Moshi, the full-duplex speech-text language model: it listens to
 * the user's Mimi codes on `sink` (as made by mimienc) and speaks at the same
 * time, one 80 ms frame for every frame it hears: its voice as Mimi codes on
 * `src` (for mimidec) and its words as UTF-8 text on `text_src`.
 *
 * ## Pads
 * - `sink`: `audio/x-mimi, codebooks=[1,32]`.  The model reads n_q - dep_q
 *   user codebooks (8 for Moshi); a stream with more codebooks is accepted
 *   and only its first ones are used, a stream with fewer is a negotiation
 *   error.  A buffer holds one or more whole frames.
 * - `src`: `audio/x-mimi, codebooks=dep_q, framerate=25/2`: one buffer per
 *   frame of the model's voice.
 * - `text_src`: `text/x-raw, format=utf8`: one buffer per non-empty piece
 *   of text (e.g. " hello"; pieces carry their own leading spaces), lasting
 *   80 ms, stamped like the audio frame it belongs to.  Text padding (ids
 *   existing_text_padding_id and 0) and control pieces produce no buffer
 *   but a GAP event for the frame, so that sinks and muxers never wait for
 *   text.  May stay unlinked.
 * - `vision_sink` (request, `application/x-moshivis-embedding, tokens,
 *   dim`): MoshiVis image embeddings, as made by `moshivis`.  Each buffer is
 *   one image (tokens x dim float32, the image adapter's output).  Its keys
 *   and values are computed on the vision_sink's own streaming thread, so
 *   the audio does not wait, and the model looks at it from the next step
 *   on, keeping the conversation (a camera can show something new at any
 *   time).  Cross-attention starts at step `xa-start` of a conversation.
 *   EOS on vision_sink keeps the last image; releasing the pad removes it
 *   (the model is then exactly base Moshi again).  Needs a MoshiVis model:
 *   with another one a linked vision_sink is an error.  Once vision_sink
 *   has been requested, for each output frame moshilm posts an element message `moshilm-gate` (pts, gate in
 *   (0, 1), intensity 0..10 as Kyutai's UI colours text) and text buffers
 *   carry the same values in a `GstMoshiGateMeta` custom meta.
 *
 * moshilm pushes both source pads from its input's streaming thread, like
 * a demuxer: when both branches end in sinks, start each with a `queue`,
 * or a sink waiting for preroll on one branch starves the other.
 *
 * ## Timing
 * Moshi's streams are offset by per-codebook delays (Moshi: the acoustic
 * codebooks one step behind the text and the semantic codebook), so the
 * frame that comes out of step s is the model's frame for the time slot of
 * input frame s - max_delay.  moshilm stamps it with that input frame's
 * PTS: the model's voice and words stay on the user's time line, as in the
 * two-channel conversations Moshi was trained on, and a stream of N input
 * frames gives N output frames covering the same time.  The first output
 * appears when input frame max_delay (the 2nd, for Moshi) has been
 * processed.
 *
 * Latency (LATENCY query): 80 ms × (1 + max_delay), 160 ms for Moshi: the
 * frame for slot t leaves once input frame t + max_delay has arrived
 * (max_delay × 80 ms after frame t), and one step may take up to a frame's
 * duration (80 ms) in real time.  mimienc and mimidec report their own
 * 80 ms each.
 *
 * At EOS the last max_delay slots are completed by stepping the model
 * max_delay more times with the last user frame repeated (Kyutai's LMGen
 * has no flush).  Only what the model generates at those extra steps sees
 * the repeated frame: for Moshi that is the acoustic codebooks of the last
 * slot, whose text and semantic codebook were generated from real input.
 * Holding the last frame is the most neutral input available (Mimi has no
 * "silence" code), and it keeps the reply exactly as long as the input.
 *
 * A flush (flushing seek) or a new stream (STREAM_START) starts a new
 * conversation: the LM state and the text decoder are reset.  DISCONT input
 * is marked DISCONT on the output but the conversation goes on.
 *
 * ## Real time
 * Every frame is processed, none is dropped, nothing blocks: when the CPU
 * is too slow the output simply falls behind.  In a live pipeline, when a
 * step takes longer than 80 ms, moshilm posts a QoS message (jitter = the
 * accumulated lag, proportion = step time / 80 ms) and a warning saying how
 * far behind it is, at most once per second.  The lag is the sum of the
 * excess of each step over 80 ms, less the time gained by faster steps.
 *
 * ## Model kinds
 * The config.json's model_type chooses (docs/elements.md has the details):
 * - "moshi" (or none): dialog, as above.
 * - "stt" (Kyutai STT, dep_q 0): text only.  All n_q codebooks are the
 *   speaker's; `src` carries no data (no caps; a GAP per frame, then EOS).
 *   As in Kyutai's STT scripts, audio_silence_prefix_seconds of Mimi
 *   silence go first and ceil(audio_delay_seconds × 12.5) frames of it
 *   follow at EOS so the last words come out; the text of the step whose
 *   input starts at t is stamped t - audio_delay_seconds (when the words
 *   were said; earlier text at the first frame's PTS).  Latency adds
 *   audio_delay_seconds.
 * - "hibiki" (translation): voice and text like dialog; the first frame is
 *   fed twice (so latency is one frame less than a dialog's), and at EOS one frame of codes = card (Kyutai's end-of-input
 *   mark) then silence until the model's text EOS (at most
 *   TRANSLATION_MAX_TAIL frames), stamped on from the end of the input.
 * Silence is Mimi's codes for zeros from the model repo's Mimi (a fresh
 * encoder, at start); without one, the last frame is repeated (warning).
 *
 * ## Sampling
 * `temperature`/`top-k` (audio) and `temperature-text`/`top-k-text` default
 * to -1: the model's lm_gen_config (Moshi: 0.8/250 and 0.7/25).  A
 * temperature of 0, or `greedy=true` for both streams, takes the most
 * probable token (deterministic).  `seed` makes sampling reproducible.
 *
 * ## Example pipeline
 * |[
 * gst-launch-1.0 autoaudiosrc ! audioconvert ! audioresample ! \
 *     audio/x-raw,rate=24000,channels=1 ! mimienc ! moshilm name=lm ! \
 *     queue ! mimidec ! audioconvert ! autoaudiosink \
 *     lm.text_src ! queue ! fdsink fd=1
 * ]|
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "gstmoshilm.h"

#include <math.h>
#include <string.h>

#include "cpu.h"
#include "gstmodelcache.h"
#include "gstmodelresolve.h"
#include "gstmoshicaps.h"
#include "gstmoshienums.h"

GST_DEBUG_CATEGORY_STATIC (gst_moshi_lm_debug);
#define GST_CAT_DEFAULT gst_moshi_lm_debug

enum {
  PROP_0,
  PROP_MODEL,
  PROP_QUANTIZE,
  PROP_THREADS,
  PROP_TEMPERATURE,
  PROP_TEMPERATURE_TEXT,
  PROP_TOP_K,
  PROP_TOP_K_TEXT,
  PROP_SEED,
  PROP_GREEDY,
  PROP_XA_START,
  PROP_VISION_TIMEOUT,
};

#define DEFAULT_MODEL NULL
#define DEFAULT_THREADS 1
#define MAX_THREADS 64
#define DEFAULT_TEMPERATURE (-1.0)
#define DEFAULT_TOP_K (-1)
#define DEFAULT_SEED 42
#define DEFAULT_GREEDY FALSE
/* Kyutai's web client's "gate delay": 16 steps (1.28 s). */
#define DEFAULT_XA_START 16
/* How long a file pipeline's audio waits for the picture of its time, by
 * default; an image encode takes seconds on a CPU (docs/performance.md). */
#define DEFAULT_VISION_TIMEOUT 120
#define GATE_META "GstMoshiGateMeta"

#define TEXT_CAPS "text/x-raw, format = (string) utf8"
#define VISION_CAPS                    \
  "application/x-moshivis-embedding, " \
  "tokens = (int) [ 1, MAX ], dim = (int) [ 1, MAX ]"

/* Kyutai's "end of padding" text id (its tokenizers' <unk>). */
#define TEXT_END_OF_PADDING_ID 0

#define FRAME_US (GST_MOSHI_FRAME_DURATION / GST_USECOND)

/* Translation: at most this many frames (30 s) after the end of the input
 * while waiting for the end of the reply. */
#define TRANSLATION_MAX_TAIL 375
/* Mimi frames of silence encoded at start; later padding repeats the last
 * (Mimi has settled on silence by then). */
#define SILENCE_FRAMES 25

static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE ("sink",
    GST_PAD_SINK, GST_PAD_ALWAYS, GST_STATIC_CAPS (GST_MOSHI_MIMI_SINK_CAPS));

static GstStaticPadTemplate src_template = GST_STATIC_PAD_TEMPLATE ("src",
    GST_PAD_SRC, GST_PAD_ALWAYS, GST_STATIC_CAPS (GST_MOSHI_MIMI_CAPS));

static GstStaticPadTemplate text_src_template =
    GST_STATIC_PAD_TEMPLATE ("text_src", GST_PAD_SRC, GST_PAD_ALWAYS,
        GST_STATIC_CAPS (TEXT_CAPS));

static GstStaticPadTemplate vision_sink_template =
    GST_STATIC_PAD_TEMPLATE ("vision_sink", GST_PAD_SINK, GST_PAD_REQUEST,
        GST_STATIC_CAPS (VISION_CAPS));

G_DEFINE_TYPE (GstMoshiLm, gst_moshi_lm, GST_TYPE_ELEMENT);

static void gst_moshi_lm_set_property (GObject *object, guint prop_id,
    const GValue *value, GParamSpec *pspec);
static void gst_moshi_lm_get_property (GObject *object, guint prop_id,
    GValue *value, GParamSpec *pspec);
static void gst_moshi_lm_finalize (GObject *object);
static GstStateChangeReturn gst_moshi_lm_change_state (GstElement *element,
    GstStateChange transition);
static void gst_moshi_lm_release_pad (GstElement *element, GstPad *pad);
static void images_clear (GstMoshiLm *self);
static void vision_advance (GstMoshiLm *self, GstClockTime pos);
static void vision_unblock (GstMoshiLm *self, gboolean unblock);
static void vision_failed (GstMoshiLm *self);
static GstPad *gst_moshi_lm_request_new_pad (GstElement *element,
    GstPadTemplate *templ, const gchar *name, const GstCaps *caps);

static GstFlowReturn gst_moshi_lm_chain (GstPad *pad, GstObject *parent,
    GstBuffer *buffer);
static gboolean gst_moshi_lm_sink_event (GstPad *pad, GstObject *parent,
    GstEvent *event);
static gboolean gst_moshi_lm_sink_query (GstPad *pad, GstObject *parent,
    GstQuery *query);
static gboolean gst_moshi_lm_src_query (GstPad *pad, GstObject *parent,
    GstQuery *query);

static void
gst_moshi_lm_class_init (GstMoshiLmClass *klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS (klass);

  gobject_class->set_property = gst_moshi_lm_set_property;
  gobject_class->get_property = gst_moshi_lm_get_property;
  gobject_class->finalize = gst_moshi_lm_finalize;

  g_object_class_install_property (gobject_class, PROP_MODEL,
      g_param_spec_string ("model", "Model",
          "Moshi LM weights: a .safetensors file (with config.json and the "
          "tokenizer beside it, else Moshi 7B's architecture), a folder "
          "holding Kyutai's config.json (keys moshi_name, tokenizer_name) or "
          "an LM config.json + model.safetensors + tokenizer.model, or a "
          "Hugging Face repo id looked up offline in the local Hugging Face "
          "cache (unset: kyutai/moshiko-pytorch-bf16)",
          DEFAULT_MODEL,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS
              | GST_PARAM_MUTABLE_READY));

  g_object_class_install_property (gobject_class, PROP_QUANTIZE,
      g_param_spec_enum ("quantize", "Quantize",
          "How the weights are stored: none (float32, exact), bf16, q8 or "
          "q4 (faster streaming, small error; see docs/models.md)",
          GST_TYPE_MOSHI_QUANTIZE, MOSHI_WEIGHTS_F32,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS
              | GST_PARAM_MUTABLE_READY));

  g_object_class_install_property (gobject_class, PROP_THREADS,
      g_param_spec_int ("threads", "Threads",
          "Compute threads used for one step (1: no threading)", 1, MAX_THREADS,
          DEFAULT_THREADS,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS
              | GST_PARAM_MUTABLE_READY));

  g_object_class_install_property (gobject_class, PROP_TEMPERATURE,
      g_param_spec_double ("temperature", "Audio temperature",
          "Sampling temperature of the model's audio codes (-1: the "
          "model's lm_gen_config, 0.8 for Moshi; 0: greedy, always the most "
          "probable code)",
          -1.0, 100.0, DEFAULT_TEMPERATURE,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS
              | GST_PARAM_MUTABLE_READY));

  g_object_class_install_property (gobject_class, PROP_TEMPERATURE_TEXT,
      g_param_spec_double ("temperature-text", "Text temperature",
          "Sampling temperature of the model's text tokens (-1: the model's "
          "lm_gen_config, 0.7 for Moshi; 0: greedy)",
          -1.0, 100.0, DEFAULT_TEMPERATURE,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS
              | GST_PARAM_MUTABLE_READY));

  g_object_class_install_property (gobject_class, PROP_TOP_K,
      g_param_spec_int ("top-k", "Audio top-k",
          "Sample audio codes among the k most probable (-1: the model's "
          "lm_gen_config, 250 for Moshi; 0: no limit)",
          -1, G_MAXINT, DEFAULT_TOP_K,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS
              | GST_PARAM_MUTABLE_READY));

  g_object_class_install_property (gobject_class, PROP_TOP_K_TEXT,
      g_param_spec_int ("top-k-text", "Text top-k",
          "Sample text tokens among the k most probable (-1: the model's "
          "lm_gen_config, 25 for Moshi; 0: no limit)",
          -1, G_MAXINT, DEFAULT_TOP_K,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS
              | GST_PARAM_MUTABLE_READY));

  g_object_class_install_property (gobject_class, PROP_SEED,
      g_param_spec_uint64 ("seed", "Seed",
          "Seed of the sampler: the same seed, settings and input give the "
          "same conversation (restarted on flush)",
          0, G_MAXUINT64, DEFAULT_SEED,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS
              | GST_PARAM_MUTABLE_READY));

  g_object_class_install_property (gobject_class, PROP_XA_START,
      g_param_spec_int ("xa-start", "Cross-attention start",
          "MoshiVis: the model looks at the image from this step of a "
          "conversation on (80 ms steps; Kyutai's default 16 = 1.28 s)",
          0, G_MAXINT, DEFAULT_XA_START,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS
              | GST_PARAM_MUTABLE_READY));

  g_object_class_install_property (gobject_class, PROP_VISION_TIMEOUT,
      g_param_spec_uint ("vision-timeout", "Vision timeout",
          "MoshiVis, file pipelines: seconds the audio waits for the picture "
          "of its time on vision_sink before going on without it",
          0, G_MAXUINT, DEFAULT_VISION_TIMEOUT,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS
              | GST_PARAM_MUTABLE_PLAYING));

  g_object_class_install_property (gobject_class, PROP_GREEDY,
      g_param_spec_boolean ("greedy", "Greedy",
          "Always take the most probable text token and audio code (no "
          "sampling; same as both temperatures 0)",
          DEFAULT_GREEDY,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS
              | GST_PARAM_MUTABLE_READY));

  gst_element_class_add_static_pad_template (element_class, &sink_template);
  gst_element_class_add_static_pad_template (element_class, &src_template);
  gst_element_class_add_static_pad_template (element_class, &text_src_template);
  gst_element_class_add_static_pad_template (element_class,
      &vision_sink_template);

  gst_element_class_set_static_metadata (element_class,
      "Moshi speech-text language model", "Filter/Audio/Text",
      "Kyutai's Moshi full-duplex dialog model: listens to the user's Mimi "
      "codes and answers with its own Mimi codes and text, 12.5 frames/s",
      "gst-moshi developers <https://github.com/gst-moshi/gst-moshi>");

  element_class->change_state = GST_DEBUG_FUNCPTR (gst_moshi_lm_change_state);
  element_class->request_new_pad =
      GST_DEBUG_FUNCPTR (gst_moshi_lm_request_new_pad);
  element_class->release_pad = GST_DEBUG_FUNCPTR (gst_moshi_lm_release_pad);
  {
    static const gchar *tags[] = { NULL };
    gst_meta_register_custom (GATE_META, tags, NULL, NULL, NULL);
  }

  GST_DEBUG_CATEGORY_INIT (gst_moshi_lm_debug, "moshilm", 0,
      "Moshi speech-text language model");
}

static void
gst_moshi_lm_init (GstMoshiLm *self)
{
  self->sinkpad = gst_pad_new_from_static_template (&sink_template, "sink");
  gst_pad_set_chain_function (self->sinkpad,
      GST_DEBUG_FUNCPTR (gst_moshi_lm_chain));
  gst_pad_set_event_function (self->sinkpad,
      GST_DEBUG_FUNCPTR (gst_moshi_lm_sink_event));
  gst_pad_set_query_function (self->sinkpad,
      GST_DEBUG_FUNCPTR (gst_moshi_lm_sink_query));
  gst_element_add_pad (GST_ELEMENT (self), self->sinkpad);

  self->srcpad = gst_pad_new_from_static_template (&src_template, "src");
  gst_pad_set_query_function (self->srcpad,
      GST_DEBUG_FUNCPTR (gst_moshi_lm_src_query));
  gst_pad_use_fixed_caps (self->srcpad);
  gst_element_add_pad (GST_ELEMENT (self), self->srcpad);

  self->textpad =
      gst_pad_new_from_static_template (&text_src_template, "text_src");
  gst_pad_set_query_function (self->textpad,
      GST_DEBUG_FUNCPTR (gst_moshi_lm_src_query));
  gst_pad_use_fixed_caps (self->textpad);
  gst_element_add_pad (GST_ELEMENT (self), self->textpad);

  self->combiner = gst_flow_combiner_new ();
  gst_flow_combiner_add_pad (self->combiner, self->srcpad);
  gst_flow_combiner_add_pad (self->combiner, self->textpad);

  self->model = g_strdup (DEFAULT_MODEL);
  self->quantize = MOSHI_WEIGHTS_F32;
  self->threads = DEFAULT_THREADS;
  self->temperature = DEFAULT_TEMPERATURE;
  self->temperature_text = DEFAULT_TEMPERATURE;
  self->top_k = DEFAULT_TOP_K;
  self->top_k_text = DEFAULT_TOP_K;
  self->seed = DEFAULT_SEED;
  self->greedy = DEFAULT_GREEDY;
  self->xa_start = DEFAULT_XA_START;
  self->vision_timeout = DEFAULT_VISION_TIMEOUT;
  g_mutex_init (&self->vision_lock);
  g_cond_init (&self->vision_cond);
  g_queue_init (&self->images);

  self->text = g_string_new (NULL);
  self->next_pts = GST_CLOCK_TIME_NONE;
  gst_segment_init (&self->segment, GST_FORMAT_TIME);
}

static void
gst_moshi_lm_set_property (GObject *object, guint prop_id, const GValue *value,
    GParamSpec *pspec)
{
  GstMoshiLm *self = GST_MOSHI_LM (object);

  /* Taken into account at the next start (READY -> PAUSED). */
  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_MODEL:
      g_free (self->model);
      self->model = g_value_dup_string (value);
      break;
    case PROP_QUANTIZE:
      self->quantize = g_value_get_enum (value);
      break;
    case PROP_THREADS:
      self->threads = g_value_get_int (value);
      break;
    case PROP_TEMPERATURE:
      self->temperature = g_value_get_double (value);
      break;
    case PROP_TEMPERATURE_TEXT:
      self->temperature_text = g_value_get_double (value);
      break;
    case PROP_TOP_K:
      self->top_k = g_value_get_int (value);
      break;
    case PROP_TOP_K_TEXT:
      self->top_k_text = g_value_get_int (value);
      break;
    case PROP_SEED:
      self->seed = g_value_get_uint64 (value);
      break;
    case PROP_GREEDY:
      self->greedy = g_value_get_boolean (value);
      break;
    case PROP_XA_START:
      self->xa_start = g_value_get_int (value);
      break;
    case PROP_VISION_TIMEOUT:
      self->vision_timeout = g_value_get_uint (value);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

static void
gst_moshi_lm_get_property (GObject *object, guint prop_id, GValue *value,
    GParamSpec *pspec)
{
  GstMoshiLm *self = GST_MOSHI_LM (object);

  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_MODEL:
      g_value_set_string (value, self->model);
      break;
    case PROP_QUANTIZE:
      g_value_set_enum (value, self->quantize);
      break;
    case PROP_THREADS:
      g_value_set_int (value, self->threads);
      break;
    case PROP_TEMPERATURE:
      g_value_set_double (value, self->temperature);
      break;
    case PROP_TEMPERATURE_TEXT:
      g_value_set_double (value, self->temperature_text);
      break;
    case PROP_TOP_K:
      g_value_set_int (value, self->top_k);
      break;
    case PROP_TOP_K_TEXT:
      g_value_set_int (value, self->top_k_text);
      break;
    case PROP_SEED:
      g_value_set_uint64 (value, self->seed);
      break;
    case PROP_GREEDY:
      g_value_set_boolean (value, self->greedy);
      break;
    case PROP_XA_START:
      g_value_set_int (value, self->xa_start);
      break;
    case PROP_VISION_TIMEOUT:
      g_value_set_uint (value, self->vision_timeout);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

static void
gst_moshi_lm_release (GstMoshiLm *self)
{
  g_clear_pointer (&self->gen, lm_gen_free);
  g_mutex_lock (&self->vision_lock);
  images_clear (self);
  g_mutex_unlock (&self->vision_lock);
  self->image_active = FALSE;
  self->has_xa = FALSE;
  g_clear_pointer (&self->lm, gst_moshi_model_cache_release_lm);
  g_clear_pointer (&self->sp, gst_moshi_model_cache_release_tokenizer);
  g_clear_pointer (&self->user_codes, g_free);
  g_clear_pointer (&self->last_codes, g_free);
  g_clear_pointer (&self->out_codes, g_free);
  g_clear_pointer (&self->slots, g_free);
  g_clear_pointer (&self->silence, g_free);
  g_clear_pointer (&self->model_path, g_free);
  g_clear_pointer (&self->tokenizer_path, g_free);
  self->n_user = self->dep_q = self->max_delay = 0;
  self->in_codebooks = 0;
}

static void
gst_moshi_lm_finalize (GObject *object)
{
  GstMoshiLm *self = GST_MOSHI_LM (object);

  /* Normally done on PAUSED -> READY; kept for an element dropped while
   * running. */
  gst_moshi_lm_release (self);
  gst_flow_combiner_free (self->combiner);
  g_string_free (self->text, TRUE);
  g_free (self->model);
  g_mutex_clear (&self->vision_lock);
  g_cond_clear (&self->vision_cond);

  G_OBJECT_CLASS (gst_moshi_lm_parent_class)->finalize (object);
}

/* ------------------------------------------------------------------ */
/* Conversation state */

/* A new conversation: nothing heard, nothing said. */
static void
gst_moshi_lm_reset_stream (GstMoshiLm *self)
{
  if (self->gen && self->steps > 0)
    lm_gen_reset (self->gen);
  self->steps = 0;
  self->late_steps = 0;
  self->lag_us = 0;
  self->last_lag_report_us = 0;
  self->have_last = FALSE;
  self->slot_head = self->n_slots = 0;
  self->next_pts = GST_CLOCK_TIME_NONE;
  self->last_out_pts = GST_CLOCK_TIME_NONE;
  self->discont = TRUE;
  self->started = FALSE;
  self->first_pts = GST_CLOCK_TIME_NONE;
  self->tail_pts = GST_CLOCK_TIME_NONE;
  sp_decode_state_init (&self->sp_state);
  g_string_truncate (self->text, 0);
}

static void
slot_push (GstMoshiLm *self, GstClockTime pts, gboolean discont)
{
  gint cap = self->max_delay + 1;
  GstMoshiLmSlot *s;

  g_assert (self->n_slots < cap);
  s = &self->slots[(self->slot_head + self->n_slots) % cap];
  s->pts = pts;
  s->discont = discont;
  s->gate = 0.0f;
  self->n_slots++;
}

static GstMoshiLmSlot
slot_pop (GstMoshiLm *self)
{
  GstMoshiLmSlot s = self->slots[self->slot_head];

  g_assert (self->n_slots > 0);
  self->slot_head = (self->slot_head + 1) % (self->max_delay + 1);
  self->n_slots--;
  return s;
}

/* Undoes the last slot_push() (the step failed). */
static void
slot_unpush (GstMoshiLm *self)
{
  g_assert (self->n_slots > 0);
  self->n_slots--;
}

/* ------------------------------------------------------------------ */
/* Loading */

static void
post_progress (GstMoshiLm *self, GstProgressType type, const gchar *text)
{
  gst_element_post_message (GST_ELEMENT (self),
      gst_message_new_progress (GST_OBJECT (self), type, "load-model", text));
}

static const gchar *
kind_name (LmKind kind)
{
  switch (kind) {
    case LM_KIND_STT:
      return "speech-to-text";
    case LM_KIND_TRANSLATION:
      return "translation";
    default:
      return "dialog";
  }
}

/* Mimi codes of silence, as Kyutai's scripts make them: frames of zeros
 * through a Mimi encoder (a fresh one here: moshilm does not see the
 * user's encoder).  The Mimi is the one of the model's repo (config key
 * mimi_name, or Kyutai's file names beside the LM).  Without one, the
 * padding repeats the last frame (a warning says so). */
static void
gst_moshi_lm_load_silence (GstMoshiLm *self, const gchar *model,
    const LmConfig *cfg, MoshiWeightType quantize)
{
  GError *err = NULL;
  gchar *where, *path;
  MimiModel *mimi = NULL;
  MimiEncoder *enc = NULL;
  gint n, i;
  float *zeros = NULL;
  uint16_t *codes;

  /* A weights file: its folder (its config.json names the Mimi). */
  where = (model && g_str_has_suffix (model, ".safetensors"))
      ? g_path_get_dirname (self->model_path)
      : g_strdup (model);
  path = gst_moshi_resolve_mimi (where, &err);
  if (path)
    mimi = gst_moshi_model_cache_acquire_mimi (path, quantize, &err);
  if (mimi && mimi_model_config (mimi)->q_bins != cfg->card)
    g_set_error (&err, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_SETTINGS,
        "its codebooks have %d entries, the model's %d",
        mimi_model_config (mimi)->q_bins, cfg->card);
  else if (mimi)
    enc = mimi_encoder_new (mimi, self->n_user, &err);
  if (enc) {
    n = self->prefix_frames + MIN (self->pad_frames, SILENCE_FRAMES);
    self->silence = g_new0 (guint16, (gsize) n * self->n_user);
    zeros = g_new0 (float, mimi_model_config (mimi)->frame_size);
    codes = g_new0 (uint16_t, self->n_user);
    for (i = 0; i < n; i++) {
      mimi_encode_frame (enc, zeros, codes);
      memcpy (self->silence + (gsize) i * self->n_user, codes,
          sizeof (guint16) * self->n_user);
    }
    self->n_silence = n;
    g_free (codes);
    g_free (zeros);
    mimi_encoder_free (enc);
  } else {
    GST_ELEMENT_WARNING (self, RESOURCE, NOT_FOUND,
        ("No usable Mimi codec for the model %s (%s): the %s model's "
         "silence padding repeats the last frame instead, which may change "
         "the last words.",
            self->model_path, err ? err->message : "?", kind_name (self->kind)),
        (NULL));
  }
  g_clear_error (&err);
  if (mimi)
    gst_moshi_model_cache_release_mimi (mimi);
  g_free (path);
  g_free (where);
}

/* Silence frame i (prefix frames first, then the padding; the last one
 * repeats), or the last frame fed when there is no Mimi. */
static void
gst_moshi_lm_set_silence (GstMoshiLm *self, gint i)
{
  if (self->silence) {
    const guint16 *s =
        self->silence + (gsize) MIN (i, self->n_silence - 1) * self->n_user;
    for (gint k = 0; k < self->n_user; k++)
      self->user_codes[k] = s[k];
  } else {
    memcpy (self->user_codes, self->last_codes, sizeof (int) * self->n_user);
  }
}

static gboolean
gst_moshi_lm_start (GstMoshiLm *self)
{
  GError *err = NULL;
  gchar *model, *config = NULL, *msg;
  gboolean vision_linked;
  const LmConfig *cfg;
  LmGenParams params;
  MoshiWeightType quantize;
  gdouble temperature, temperature_text;
  gint top_k, top_k_text, threads, i;
  guint64 seed;
  gboolean greedy;
  GEnumClass *qclass;
  GEnumValue *qvalue;

  GST_OBJECT_LOCK (self);
  model = g_strdup (self->model);
  quantize = self->quantize;
  threads = self->threads;
  temperature = self->temperature;
  temperature_text = self->temperature_text;
  top_k = self->top_k;
  top_k_text = self->top_k_text;
  seed = self->seed;
  greedy = self->greedy;
  GST_OBJECT_UNLOCK (self);

  qclass = g_type_class_ref (GST_TYPE_MOSHI_QUANTIZE);
  qvalue = g_enum_get_value (qclass, quantize);

  msg = g_strdup_printf ("Loading the Moshi language model %s",
      (model && *model) ? model : "(default: kyutai/moshiko-pytorch-bf16)");
  post_progress (self, GST_PROGRESS_TYPE_START, msg);
  g_free (msg);

  /* Load now rather than at the first caps: a missing model is a state
   * change failure the application sees at once. */
  if (!gst_moshi_resolve_lm (model, &self->model_path, &config,
          &self->tokenizer_path, &err))
    goto model_error;

  self->lm = gst_moshi_model_cache_acquire_lm (self->model_path, config,
      quantize, &err);
  if (!self->lm)
    goto model_error;
  self->sp =
      gst_moshi_model_cache_acquire_tokenizer (self->tokenizer_path, &err);
  if (!self->sp)
    goto model_error;

  cfg = lm_model_config (self->lm);
  self->kind = cfg->kind;
  self->dep_q = cfg->dep_q;
  self->n_user = cfg->n_q - cfg->dep_q;
  self->text_padding_id = cfg->existing_text_padding_id;
  if ((self->kind == LM_KIND_STT
              ? self->dep_q != 0
              : (self->dep_q < 1 || self->dep_q > GST_MOSHI_MAX_CODEBOOKS))
      || self->n_user < 1 || self->n_user > GST_MOSHI_MAX_CODEBOOKS) {
    GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS,
        ("The model %s (%s) has %d audio codebooks of its own and %d of the "
         "user's; moshilm needs 1 to %d of the user's, and of its own 0 for "
         "a speech-to-text model, 1 to %d for a dialog or translation "
         "model.",
            self->model_path, kind_name (self->kind), self->dep_q, self->n_user,
            GST_MOSHI_MAX_CODEBOOKS, GST_MOSHI_MAX_CODEBOOKS),
        (NULL));
    goto failed;
  }
  /* Kyutai's STT scripts: prefix_s of silence before the audio, and as
   * many frames as the delay after it, so that the last words come out. */
  self->stt_delay = 0;
  self->prefix_frames = self->pad_frames = 0;
  if (self->kind == LM_KIND_STT) {
    self->stt_delay = (GstClockTime) (cfg->stt_audio_delay_s * GST_SECOND);
    self->prefix_frames = (gint) ceil (cfg->stt_silence_prefix_s * 12.5 - 1e-9);
    self->pad_frames = (gint) ceil (cfg->stt_audio_delay_s * 12.5 - 1e-9);
  } else if (self->kind == LM_KIND_TRANSLATION) {
    self->pad_frames = TRANSLATION_MAX_TAIL;
  }
  self->text_eos_id = sp_model_eos_id (self->sp);
  if (self->prefix_frames + self->pad_frames > 0)
    gst_moshi_lm_load_silence (self, model, cfg, quantize);
  /* Test hook (tests/test-moshilm-kinds.c, lag/QoS): every step sleeps this long,
   * read once here, so a tiny model can be "too slow" for real time. */
  self->test_step_delay_us = 0;
  if (g_getenv ("GST_MOSHI_LM_TEST_STEP_DELAY_MS"))
    self->test_step_delay_us = 1000
        * g_ascii_strtoll (g_getenv ("GST_MOSHI_LM_TEST_STEP_DELAY_MS"), NULL,
            10);
  if (sp_model_vocab_size (self->sp) < cfg->text_card)
    GST_WARNING_OBJECT (self,
        "the tokenizer %s has %d pieces, the model %d text tokens: the "
        "extra tokens are not shown",
        self->tokenizer_path, sp_model_vocab_size (self->sp), cfg->text_card);

  self->max_delay = 0;
  for (i = 0; i <= cfg->n_q; i++)
    self->max_delay = MAX (self->max_delay, cfg->delays[i]);

  lm_gen_params_default (&params, cfg);
  if (temperature >= 0)
    params.temp = temperature;
  if (temperature_text >= 0)
    params.temp_text = temperature_text;
  if (top_k >= 0)
    params.top_k = top_k;
  if (top_k_text >= 0)
    params.top_k_text = top_k_text;
  params.seed = seed;
  if (greedy)
    params.use_sampling = FALSE;

  self->gen = lm_gen_new (self->lm, &params, &err);
  if (!self->gen)
    goto model_error;
  lm_gen_set_threads (self->gen, threads);
  self->has_xa = lm_model_has_cross_attention (self->lm);
  GST_OBJECT_LOCK (self);
  lm_gen_set_xa_start (self->gen, self->xa_start);
  vision_linked = self->visionpad && gst_pad_is_linked (self->visionpad);
  GST_OBJECT_UNLOCK (self);
  if (vision_linked && !self->has_xa) {
    GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS,
        ("The model %s cannot look at images: vision_sink is linked but the "
         "model has no cross-attention. Use a MoshiVis model (e.g. "
         "kyutai/moshika-vis-pytorch-bf16) or unlink vision_sink.",
            self->model_path),
        (NULL));
    goto failed;
  }

  self->user_codes = g_new0 (int, self->n_user);
  self->last_codes = g_new0 (int, self->n_user);
  self->out_codes = g_new0 (int, 1 + self->dep_q);
  self->slots = g_new0 (GstMoshiLmSlot, self->max_delay + 1);
  self->in_codebooks = 0;
  self->live_known = FALSE;
  self->live = FALSE;
  self->steps = 0; /* lm_gen_new() made a fresh conversation */
  gst_moshi_lm_reset_stream (self);
  gst_segment_init (&self->segment, GST_FORMAT_TIME);

  GST_INFO_OBJECT (self,
      "Moshi LM %s (config %s, tokenizer %s): %d user + %d model "
      "codebooks, max delay %d, quantize=%s (%zu MB), CPU kernels %s, "
      "%d thread(s); sampling %s: temp %.2f/%.2f (audio/text), top-k "
      "%d/%d, seed %" G_GUINT64_FORMAT,
      self->model_path, config ? config : "Moshi 7B default",
      self->tokenizer_path, self->n_user, self->dep_q, self->max_delay,
      qvalue ? qvalue->value_nick : "?", lm_model_weight_bytes (self->lm) >> 20,
      moshi_cpu_level_name (moshi_cpu_level ()), threads,
      params.use_sampling ? "on" : "off (greedy)", params.temp,
      params.temp_text, params.top_k, params.top_k_text, params.seed);

  msg = g_strdup_printf ("Loaded %s (quantize=%s, %s CPU kernels)",
      self->model_path, qvalue ? qvalue->value_nick : "?",
      moshi_cpu_level_name (moshi_cpu_level ()));
  post_progress (self, GST_PROGRESS_TYPE_COMPLETE, msg);
  g_free (msg);
  g_type_class_unref (qclass);
  g_free (config);
  g_free (model);
  return TRUE;

model_error:
  GST_MOSHI_ELEMENT_MODEL_ERROR (self, err, model);
  g_clear_error (&err);
failed:
  post_progress (self, GST_PROGRESS_TYPE_ERROR, "Loading the model failed");
  gst_moshi_lm_release (self);
  g_type_class_unref (qclass);
  g_free (config);
  g_free (model);
  return FALSE;
}

static GstStateChangeReturn
gst_moshi_lm_change_state (GstElement *element, GstStateChange transition)
{
  GstMoshiLm *self = GST_MOSHI_LM (element);
  GstStateChangeReturn ret;

  switch (transition) {
    case GST_STATE_CHANGE_READY_TO_PAUSED:
      if (!gst_moshi_lm_start (self))
        return GST_STATE_CHANGE_FAILURE;
      vision_unblock (self, FALSE);
      g_mutex_lock (&self->vision_lock);
      self->vision_pos = GST_CLOCK_TIME_NONE;
      self->vision_eos = FALSE;
      g_mutex_unlock (&self->vision_lock);
      gst_flow_combiner_reset (self->combiner);
      break;
    case GST_STATE_CHANGE_PAUSED_TO_READY:
      /* A vision_sink waiting for the audio must not block deactivation. */
      vision_unblock (self, TRUE);
      break;
    default:
      break;
  }

  ret = GST_ELEMENT_CLASS (gst_moshi_lm_parent_class)
            ->change_state (element, transition);
  if (ret == GST_STATE_CHANGE_FAILURE) {
    if (transition == GST_STATE_CHANGE_READY_TO_PAUSED)
      gst_moshi_lm_release (self);
    return ret;
  }

  switch (transition) {
    case GST_STATE_CHANGE_PAUSED_TO_READY:
      /* The pads are inactive now: no streaming thread uses the state. */
      gst_moshi_lm_release (self);
      break;
    default:
      break;
  }
  return ret;
}

/* Images waiting for the audio (file pipelines): two are enough to keep
 * the vision branch one image ahead. */
#define MAX_QUEUED_IMAGES 2

/* Called with vision_lock. */
static void
images_clear (GstMoshiLm *self)
{
  GstMoshiLmImage *e;
  while ((e = g_queue_pop_head (&self->images))) {
    if (e->image)
      lm_image_unref (e->image);
    g_free (e);
  }
  g_cond_broadcast (&self->vision_cond);
}

/* Called with vision_lock; takes `image` (NULL: remove the image). */
static void
images_push (GstMoshiLm *self, LmImage *image, GstClockTime pts)
{
  GstMoshiLmImage *e = g_new0 (GstMoshiLmImage, 1);
  e->image = image;
  e->pts = pts;
  g_queue_push_tail (&self->images, e);
}

/* Called with vision_lock. */
static void
vision_advance (GstMoshiLm *self, GstClockTime pos)
{
  if (!GST_CLOCK_TIME_IS_VALID (self->vision_pos) || pos > self->vision_pos)
    self->vision_pos = pos;
}

/* The vision stream will say nothing more (an error on it): the audio must
 * not wait for it. */
static void
vision_failed (GstMoshiLm *self)
{
  g_mutex_lock (&self->vision_lock);
  self->vision_eos = TRUE;
  g_cond_broadcast (&self->vision_cond);
  g_mutex_unlock (&self->vision_lock);
}

/* Lets a vision_sink waiting for the audio go (EOS, stop) or not. */
static void
vision_unblock (GstMoshiLm *self, gboolean unblock)
{
  g_mutex_lock (&self->vision_lock);
  self->vision_unblock = unblock;
  g_cond_broadcast (&self->vision_cond);
  g_mutex_unlock (&self->vision_lock);
}

static GstFlowReturn gst_moshi_lm_vision_chain (GstPad *pad, GstObject *parent,
    GstBuffer *buffer);

static gboolean gst_moshi_lm_vision_event (GstPad *pad, GstObject *parent,
    GstEvent *event);

static GstPad *
gst_moshi_lm_request_new_pad (GstElement *element, GstPadTemplate *templ,
    const gchar *name, const GstCaps *caps)
{
  GstMoshiLm *self = GST_MOSHI_LM (element);
  GstPad *pad;

  GST_OBJECT_LOCK (self);
  if (self->visionpad) {
    GST_OBJECT_UNLOCK (self);
    GST_WARNING_OBJECT (self, "there is already a vision_sink pad");
    return NULL;
  }
  GST_OBJECT_UNLOCK (self);
  pad = gst_pad_new_from_template (templ, "vision_sink");
  gst_pad_set_chain_function (pad,
      GST_DEBUG_FUNCPTR (gst_moshi_lm_vision_chain));
  gst_pad_set_event_function (pad,
      GST_DEBUG_FUNCPTR (gst_moshi_lm_vision_event));
  GST_OBJECT_LOCK (self);
  self->visionpad = pad;
  self->vision_requested = TRUE;
  GST_OBJECT_UNLOCK (self);
  if (GST_STATE (self) > GST_STATE_READY)
    gst_pad_set_active (pad, TRUE);
  gst_element_add_pad (element, pad);
  return pad;
}

/* Releasing vision_sink removes the image: base Moshi from the next step. */
static void
gst_moshi_lm_release_pad (GstElement *element, GstPad *pad)
{
  GstMoshiLm *self = GST_MOSHI_LM (element);

  GST_OBJECT_LOCK (self);
  if (pad != self->visionpad) {
    GST_OBJECT_UNLOCK (self);
    return;
  }
  self->visionpad = NULL;
  GST_OBJECT_UNLOCK (self);
  g_mutex_lock (&self->vision_lock);
  images_clear (self);
  images_push (self, NULL, GST_CLOCK_TIME_NONE);
  g_mutex_unlock (&self->vision_lock);
  gst_pad_set_active (pad, FALSE);
  gst_element_remove_pad (element, pad);
}

static gboolean
gst_moshi_lm_vision_event (GstPad *pad, GstObject *parent, GstEvent *event)
{
  GstMoshiLm *self = GST_MOSHI_LM (parent);
  gboolean ok = TRUE;

  if (GST_EVENT_TYPE (event) == GST_EVENT_CAPS) {
    GstCaps *caps;
    GstStructure *s;
    gint tokens = 0, dim = 0;

    gst_event_parse_caps (event, &caps);
    s = gst_caps_get_structure (caps, 0);
    ok = gst_structure_get_int (s, "tokens", &tokens)
        && gst_structure_get_int (s, "dim", &dim) && tokens > 0;
    if (ok && self->lm && dim != lm_model_config (self->lm)->dim) {
      GST_ELEMENT_ERROR (self, CORE, NEGOTIATION,
          ("The image embeddings have %d values per token; this model "
           "needs %d (the image encoder and the LM must come from the same "
           "MoshiVis checkpoint).",
              dim, lm_model_config (self->lm)->dim),
          (NULL));
      ok = FALSE;
    }
    if (!ok)
      vision_failed (self);
    if (ok) {
      self->vision_tokens = tokens;
      self->vision_dim = dim;
    }
  }
  /* How far the vision stream has got, for file pipelines: the audio
   * waits for the picture of its time (see gst_moshi_lm_wait_vision). */
  g_mutex_lock (&self->vision_lock);
  switch (GST_EVENT_TYPE (event)) {
    case GST_EVENT_GAP: {
      GstClockTime ts, dur;
      gst_event_parse_gap (event, &ts, &dur);
      if (GST_CLOCK_TIME_IS_VALID (ts))
        vision_advance (self, ts + (GST_CLOCK_TIME_IS_VALID (dur) ? dur : 0));
      break;
    }
    case GST_EVENT_EOS:
      self->vision_eos = TRUE;
      break;
    case GST_EVENT_FLUSH_STOP:
    case GST_EVENT_STREAM_START:
      self->vision_eos = FALSE;
      self->vision_pos = GST_CLOCK_TIME_NONE;
      break;
    default:
      break;
  }
  g_cond_broadcast (&self->vision_cond);
  g_mutex_unlock (&self->vision_lock);
  /* The image stream's own events stay here: its EOS keeps the last image
   * (the conversation goes on), its segments do not time the audio. */
  gst_event_unref (event);
  return ok;
}

static GstFlowReturn
gst_moshi_lm_vision_chain (GstPad *pad, GstObject *parent, GstBuffer *buffer)
{
  GstMoshiLm *self = GST_MOSHI_LM (parent);
  GError *err = NULL;
  GstMapInfo map;
  LmImage *image;
  GstClockTime pts;
  gsize want;
  gint threads;

  if (!self->lm || self->vision_tokens == 0) {
    gst_buffer_unref (buffer);
    GST_ELEMENT_ERROR (self, CORE, NEGOTIATION, (NULL),
        ("an image embedding arrived before its caps"));
    vision_failed (self);
    return GST_FLOW_NOT_NEGOTIATED;
  }
  pts = GST_BUFFER_PTS (buffer);
  want = (gsize) self->vision_tokens * self->vision_dim * sizeof (float);
  if (gst_buffer_get_size (buffer) != want
      || !gst_buffer_map (buffer, &map, GST_MAP_READ)) {
    GST_ELEMENT_ERROR (self, STREAM, FORMAT,
        ("An image embedding of %" G_GSIZE_FORMAT " bytes does not match its "
         "caps (%d tokens x %d floats = %" G_GSIZE_FORMAT " bytes).",
            gst_buffer_get_size (buffer), self->vision_tokens, self->vision_dim,
            want),
        (NULL));
    gst_buffer_unref (buffer);
    vision_failed (self);
    return GST_FLOW_ERROR;
  }
  GST_OBJECT_LOCK (self);
  threads = self->threads;
  GST_OBJECT_UNLOCK (self);
  {
    /* The buffer's floats may not be aligned for the kernels. */
    float *copy = g_memdup2 (map.data, want);
    gint64 t0 = g_get_monotonic_time ();
    image = lm_image_new (self->lm, copy, self->vision_tokens, self->vision_dim,
        threads, &err);
    GST_DEBUG_OBJECT (self, "image of %d tokens prepared in %.0f ms",
        self->vision_tokens, (g_get_monotonic_time () - t0) / 1e3);
    g_free (copy);
  }
  gst_buffer_unmap (buffer, &map);
  gst_buffer_unref (buffer);
  if (!image) {
    GST_ELEMENT_ERROR (self, STREAM, FORMAT,
        ("Cannot use the image: %s", err->message), (NULL));
    g_clear_error (&err);
    vision_failed (self);
    return GST_FLOW_ERROR;
  }
  g_mutex_lock (&self->vision_lock);
  if (self->live) {
    /* Live: the newest view replaces whatever has not been used yet. */
    images_clear (self);
  } else {
    /* From files, images wait for the audio to reach their time; the
     * vision branch waits too rather than piling images up. */
    while (g_queue_get_length (&self->images) >= MAX_QUEUED_IMAGES
        && !self->vision_unblock)
      g_cond_wait (&self->vision_cond, &self->vision_lock);
  }
  images_push (self, image, pts);
  if (GST_CLOCK_TIME_IS_VALID (pts))
    vision_advance (self, pts);
  g_cond_broadcast (&self->vision_cond);
  g_mutex_unlock (&self->vision_lock);
  return GST_FLOW_OK;
}

/* From files, the step of the audio frame at `pts` waits until the vision
 * stream has passed `pts` (or ended): a picture of that time must not
 * arrive late because the image encoder is slower than the LM.  Live, or
 * without a linked vision_sink, nothing waits. */
static void
gst_moshi_lm_wait_vision (GstMoshiLm *self, GstClockTime pts)
{
  GstPad *vpad;
  gboolean linked;

  if (self->live || !GST_CLOCK_TIME_IS_VALID (pts))
    return;
  GST_OBJECT_LOCK (self);
  vpad = self->visionpad;
  linked = vpad && gst_pad_is_linked (vpad);
  GST_OBJECT_UNLOCK (self);
  if (!linked)
    return;
  g_mutex_lock (&self->vision_lock);
  {
    /* A vision branch that stalls must not stall the conversation for
     * ever: after VISION_WAIT_S without news, stop waiting (warned once;
     * a flush or a new stream waits again). */
    guint wait_s;
    GST_OBJECT_LOCK (self);
    wait_s = self->vision_timeout;
    GST_OBJECT_UNLOCK (self);
    gint64 until = g_get_monotonic_time () + wait_s * G_TIME_SPAN_SECOND;
    while (!self->vision_eos && !self->vision_unblock
        && (!GST_CLOCK_TIME_IS_VALID (self->vision_pos)
            || self->vision_pos <= pts)) {
      if (!g_cond_wait_until (&self->vision_cond, &self->vision_lock, until)) {
        self->vision_eos = TRUE;
        g_mutex_unlock (&self->vision_lock);
        GST_ELEMENT_WARNING (self, STREAM, FAILED,
            ("The pictures on vision_sink did not reach %" GST_TIME_FORMAT
             " within %u s (vision-timeout): the conversation goes on "
             "without waiting for them.",
                GST_TIME_ARGS (pts), wait_s),
            (NULL));
        return;
      }
    }
  }
  g_mutex_unlock (&self->vision_lock);
}

/* At the step of the audio frame at `pts`: the newest image due by then
 * (or none) becomes the model's.  Images without time, removals, and all
 * images in a live pipeline are due at once. */
static void
gst_moshi_lm_apply_image (GstMoshiLm *self, GstClockTime pts)
{
  GError *err = NULL;
  GstMoshiLmImage *due = NULL, *head;

  g_mutex_lock (&self->vision_lock);
  while ((head = g_queue_peek_head (&self->images))
      && (!head->image || self->live || !GST_CLOCK_TIME_IS_VALID (head->pts)
          || !GST_CLOCK_TIME_IS_VALID (pts) || head->pts <= pts)) {
    g_queue_pop_head (&self->images);
    if (due && due->image)
      lm_image_unref (due->image);
    g_free (due);
    due = head;
  }
  if (due)
    g_cond_broadcast (&self->vision_cond);
  g_mutex_unlock (&self->vision_lock);
  if (!due)
    return;
  if (!lm_gen_set_image (self->gen, due->image, &err)) {
    GST_ELEMENT_WARNING (self, STREAM, FORMAT,
        ("The image could not be used; going on without it: %s", err->message),
        (NULL));
    g_clear_error (&err);
    self->image_active = FALSE;
  } else {
    self->image_active = due->image != NULL;
  }
  GST_DEBUG_OBJECT (self, "%s at step %" G_GUINT64_FORMAT,
      due->image ? "new image" : "image removed", self->steps);
  if (due->image)
    lm_image_unref (due->image);
  g_free (due);
}

/* Kyutai's UI colour of a gate summary: 0..10. */
static gint
gate_intensity (gfloat gate)
{
  gdouble x = CLAMP ((gate - 0.005) / 0.016, 0.0, 1.0);
  return (gint) (x * 10.0 + 0.5);
}

static void
post_gate (GstMoshiLm *self, const GstMoshiLmSlot *slot)
{
  GstStructure *s = gst_structure_new ("moshilm-gate", "pts", G_TYPE_UINT64,
      slot->pts, "gate", G_TYPE_DOUBLE, (gdouble) slot->gate, "intensity",
      G_TYPE_INT, gate_intensity (slot->gate), NULL);
  gst_element_post_message (GST_ELEMENT (self),
      gst_message_new_element (GST_OBJECT (self), s));
}

/* The text of this step's token (out_codes[0]) at `pts`: a buffer, or a
 * GAP when the token is padding and `gap` is set.  `gate` >= 0: MoshiVis's
 * gate summary, attached to the buffer. */
static GstFlowReturn
gst_moshi_lm_push_text (GstMoshiLm *self, GstClockTime pts, gboolean discont,
    gboolean gap, gfloat gate)
{
  GstBuffer *buf;
  gint tok = self->out_codes[0];

  g_string_truncate (self->text, 0);
  if (tok != self->text_padding_id && tok != TEXT_END_OF_PADDING_ID
      && !sp_decode_piece (self->sp, tok, self->text, &self->sp_state))
    GST_DEBUG_OBJECT (self, "text token %d is not in the tokenizer", tok);
  if (self->text->len == 0) {
    /* Text is sparse: a GAP tells downstream (sinks prerolling, muxers,
     * textoverlay) that there is nothing for this frame, so that nobody
     * waits for text that will not come. */
    if (gap && GST_CLOCK_TIME_IS_VALID (pts))
      gst_pad_push_event (self->textpad,
          gst_event_new_gap (pts, GST_MOSHI_FRAME_DURATION));
    return GST_FLOW_OK;
  }
  GST_LOG_OBJECT (self, "text at %" GST_TIME_FORMAT ": \"%s\"",
      GST_TIME_ARGS (pts), self->text->str);
  buf = gst_buffer_new_memdup (self->text->str, self->text->len);
  GST_BUFFER_PTS (buf) = pts;
  GST_BUFFER_DURATION (buf) = GST_MOSHI_FRAME_DURATION;
  if (discont)
    GST_BUFFER_FLAG_SET (buf, GST_BUFFER_FLAG_DISCONT);
  if (gate >= 0.0f) {
    GstCustomMeta *meta = gst_buffer_add_custom_meta (buf, GATE_META);
    gst_structure_set (gst_custom_meta_get_structure (meta), "gate",
        G_TYPE_DOUBLE, (gdouble) gate, "intensity", G_TYPE_INT,
        gate_intensity (gate), NULL);
  }
  return gst_flow_combiner_update_pad_flow (self->combiner, self->textpad,
      gst_pad_push (self->textpad, buf));
}

/* Output of one step for the oldest pending slot (dialog, translation). */
static GstFlowReturn
gst_moshi_lm_push_output (GstMoshiLm *self, GstMoshiLmSlot slot)
{
  GstBuffer *buf;
  GstMapInfo map;
  GstFlowReturn ret, tret;
  gboolean vision;
  gint k;

  buf = gst_buffer_new_allocate (NULL, (gsize) self->dep_q * 2, NULL);
  gst_buffer_map (buf, &map, GST_MAP_WRITE);
  for (k = 0; k < self->dep_q; k++)
    GST_WRITE_UINT16_LE (map.data + 2 * k, (guint16) self->out_codes[1 + k]);
  gst_buffer_unmap (buf, &map);
  GST_BUFFER_PTS (buf) = slot.pts;
  GST_BUFFER_DURATION (buf) = GST_MOSHI_FRAME_DURATION;
  if (slot.discont)
    GST_BUFFER_FLAG_SET (buf, GST_BUFFER_FLAG_DISCONT);
  self->last_out_pts = slot.pts;

  ret = gst_flow_combiner_update_pad_flow (self->combiner, self->srcpad,
      gst_pad_push (self->srcpad, buf));
  vision = self->has_xa && self->vision_requested;
  if (vision)
    post_gate (self, &slot);
  tret = gst_moshi_lm_push_text (self, slot.pts, slot.discont, TRUE,
      vision ? slot.gate : -1.0f);
  return tret != GST_FLOW_OK ? tret : ret;
}

/* STT: the text of a step whose input frame starts at `pts` (NONE for the
 * silence prefix) is about the audio stt_delay earlier: stamped so.  Text
 * that would fall before the stream's first frame is stamped at its start
 * (Kyutai's timestamps clamp at 0).  `src` carries no data, only a GAP per
 * frame so that a sink linked to it prerolls and follows the time. */
static GstFlowReturn
gst_moshi_lm_push_stt (GstMoshiLm *self, GstClockTime pts)
{
  gboolean in_stream = GST_CLOCK_TIME_IS_VALID (pts)
      && GST_CLOCK_TIME_IS_VALID (self->first_pts)
      && pts >= self->first_pts + self->stt_delay;
  GstClockTime t = in_stream ? pts - self->stt_delay : self->first_pts;
  gboolean discont = self->discont;

  if (in_stream) {
    gst_pad_push_event (self->srcpad,
        gst_event_new_gap (t, GST_MOSHI_FRAME_DURATION));
    self->last_out_pts = t;
    self->discont = FALSE;
  }
  return gst_moshi_lm_push_text (self, t, discont && in_stream, in_stream,
      -1.0f);
}

/* Real-time bookkeeping; see "Real time" in the element docs. */
static void
gst_moshi_lm_account_time (GstMoshiLm *self, gint64 step_us, GstClockTime pts)
{
  gint64 now;

  self->lag_us = MAX (0, self->lag_us + step_us - (gint64) FRAME_US);
  if (step_us <= (gint64) FRAME_US || !self->live)
    return;
  self->late_steps++;
  now = g_get_monotonic_time ();
  if (self->last_lag_report_us != 0
      && now - self->last_lag_report_us < G_USEC_PER_SEC)
    return;
  self->last_lag_report_us = now;

  GST_ELEMENT_WARNING (self, CORE, CLOCK,
      ("moshilm cannot keep up with real time: one step took %.0f ms for "
       "80 ms of audio, the reply is %.0f ms behind (%" G_GUINT64_FORMAT
       " of %" G_GUINT64_FORMAT " steps too slow). Use quantize=q8 or bf16, "
       "more threads, or a faster CPU.",
          step_us / 1000.0, self->lag_us / 1000.0, self->late_steps,
          self->steps),
      (NULL));
  {
    GstClockTime rt =
        gst_segment_to_running_time (&self->segment, GST_FORMAT_TIME, pts);
    GstClockTime st =
        gst_segment_to_stream_time (&self->segment, GST_FORMAT_TIME, pts);
    GstMessage *qos = gst_message_new_qos (GST_OBJECT (self), TRUE, rt, st, pts,
        GST_MOSHI_FRAME_DURATION);

    gst_message_set_qos_values (qos, self->lag_us * GST_USECOND,
        (gdouble) step_us / FRAME_US, 1000000);
    gst_message_set_qos_stats (qos, GST_FORMAT_BUFFERS, self->steps, 0);
    gst_element_post_message (GST_ELEMENT (self), qos);
  }
}

/* How a step's input relates to the stream (see gst_moshi_lm_step()). */
typedef enum {
  STEP_INPUT, /* a real input frame: it gets a slot */
  STEP_PAD, /* padding (prefix, EOS): no slot of its own */
  STEP_TAIL, /* translation after EOS: an output frame past the input */
} StepMode;

/* One LM step on self->user_codes.  `pts`: the input frame's PTS (STT:
 * also of padding frames, whose text is then stamped from it; translation
 * tail: the PTS of the output frame once no slot is pending). */
static GstFlowReturn
gst_moshi_lm_step (GstMoshiLm *self, GstClockTime pts, StepMode mode)
{
  GError *err = NULL;
  gint64 t0, dt;
  gboolean stt = self->kind == LM_KIND_STT;
  GstMoshiLmSlot tail;
  int r;

  if (mode == STEP_INPUT && !stt)
    slot_push (self, pts, self->discont);

  if (self->has_xa) {
    if (mode == STEP_INPUT)
      gst_moshi_lm_wait_vision (self, pts);
    gst_moshi_lm_apply_image (self, pts);
  }
  t0 = g_get_monotonic_time ();
  if (G_UNLIKELY (self->test_step_delay_us > 0))
    g_usleep (self->test_step_delay_us);
  r = lm_gen_step (self->gen, self->user_codes, self->out_codes, NULL, &err);
  dt = g_get_monotonic_time () - t0;
  if (r < 0) {
    if (mode == STEP_INPUT && !stt)
      slot_unpush (self);
    GST_ELEMENT_ERROR (self, STREAM, DECODE,
        ("Invalid user Mimi frame at %" GST_TIME_FORMAT ": %s. The input "
         "must come from a Mimi encoder whose codebooks match the model's.",
            GST_TIME_ARGS (pts), err->message),
        (NULL));
    g_clear_error (&err);
    return GST_FLOW_ERROR;
  }
  self->steps++;
  if (mode == STEP_INPUT) {
    if (!stt) {
      self->discont = FALSE;
      /* This step made the text of the slot it was given. */
      self->slots[(self->slot_head + self->n_slots - 1) % (self->max_delay + 1)]
          .gate = lm_gen_gate_summary (self->gen);
    }
    memcpy (self->last_codes, self->user_codes, sizeof (int) * self->n_user);
    self->have_last = TRUE;
    gst_moshi_lm_account_time (self, dt, pts);
  }

  if (r == 0)
    return GST_FLOW_OK;
  if (stt)
    return gst_moshi_lm_push_stt (self, pts);
  if (self->n_slots > 0)
    return gst_moshi_lm_push_output (self, slot_pop (self));
  if (mode != STEP_TAIL)
    return GST_FLOW_OK;
  tail.pts = self->tail_pts;
  tail.discont = FALSE;
  tail.gate = lm_gen_gate_summary (self->gen);
  if (GST_CLOCK_TIME_IS_VALID (self->tail_pts))
    self->tail_pts += GST_MOSHI_FRAME_DURATION;
  return gst_moshi_lm_push_output (self, tail);
}

/* EOS (see "Timing" and "Model kinds" in the element docs). */
static void
gst_moshi_lm_drain (GstMoshiLm *self)
{
  gint i;

  if (!self->gen || !self->have_last)
    return;
  switch (self->kind) {
    case LM_KIND_STT:
      /* Kyutai's STT scripts: as many frames of silence as the delay,
       * continuing the time line, then the model's own delays. */
      for (i = 0; i < self->pad_frames + self->max_delay; i++) {
        GstClockTime pts = GST_CLOCK_TIME_IS_VALID (self->next_pts)
            ? self->next_pts + i * GST_MOSHI_FRAME_DURATION
            : GST_CLOCK_TIME_NONE;

        gst_moshi_lm_set_silence (self, self->prefix_frames + i);
        if (gst_moshi_lm_step (self, pts, STEP_PAD) != GST_FLOW_OK)
          break;
      }
      break;
    case LM_KIND_TRANSLATION:
      /* Kyutai's run_inference for Hibiki: one frame of codes `card` says
       * the input has ended, then silence until the model's text says the
       * reply has (its EOS), at most TRANSLATION_MAX_TAIL frames. */
      self->tail_pts = self->next_pts;
      for (i = 0; i <= self->pad_frames; i++) {
        if (i == 0)
          for (gint k = 0; k < self->n_user; k++)
            self->user_codes[k] = lm_model_config (self->lm)->card;
        else
          gst_moshi_lm_set_silence (self, i - 1);
        if (gst_moshi_lm_step (self, GST_CLOCK_TIME_NONE, STEP_TAIL)
            != GST_FLOW_OK)
          break;
        if (self->n_slots == 0 && self->text_eos_id >= 0
            && self->out_codes[0] == self->text_eos_id) {
          GST_DEBUG_OBJECT (self, "end of the translation after %d frames",
              i + 1);
          break;
        }
      }
      break;
    default:
      /* Dialog: the last frame held (see "Timing"). */
      for (i = 0; i < self->max_delay && self->n_slots > 0; i++) {
        memcpy (self->user_codes, self->last_codes,
            sizeof (int) * self->n_user);
        /* Errors are posted; EOS goes on regardless. */
        if (gst_moshi_lm_step (self, GST_CLOCK_TIME_NONE, STEP_PAD)
            != GST_FLOW_OK)
          break;
      }
      break;
  }

  /* An incomplete UTF-8 character held back by the decoder. */
  g_string_truncate (self->text, 0);
  sp_decode_flush (self->sp, self->text, &self->sp_state);
  if (self->text->len > 0) {
    GstBuffer *buf = gst_buffer_new_memdup (self->text->str, self->text->len);

    GST_BUFFER_PTS (buf) = self->last_out_pts;
    GST_BUFFER_DURATION (buf) = GST_MOSHI_FRAME_DURATION;
    gst_flow_combiner_update_pad_flow (self->combiner, self->textpad,
        gst_pad_push (self->textpad, buf));
  }
}

/* Before the stream's first frame (in user_codes): STT feeds Kyutai's
 * silence prefix; translation feeds the first frame twice, as Kyutai's
 * run_inference does (LMGen's first step reads only initial tokens). */
static GstFlowReturn
gst_moshi_lm_begin (GstMoshiLm *self, GstClockTime pts)
{
  GstFlowReturn ret = GST_FLOW_OK;
  int *first;
  gint i;

  self->started = TRUE;
  self->first_pts = pts;
  if (self->kind == LM_KIND_TRANSLATION)
    return gst_moshi_lm_step (self, pts, STEP_PAD);
  if (self->kind != LM_KIND_STT || self->prefix_frames == 0)
    return GST_FLOW_OK;
  first = g_memdup2 (self->user_codes, sizeof (int) * self->n_user);
  /* Without Mimi silence, the first frame stands for it. */
  memcpy (self->last_codes, first, sizeof (int) * self->n_user);
  for (i = 0; i < self->prefix_frames && ret == GST_FLOW_OK; i++) {
    gst_moshi_lm_set_silence (self, i);
    ret = gst_moshi_lm_step (self, GST_CLOCK_TIME_NONE, STEP_PAD);
  }
  memcpy (self->user_codes, first, sizeof (int) * self->n_user);
  g_free (first);
  return ret;
}

static void
gst_moshi_lm_check_live (GstMoshiLm *self)
{
  GstQuery *q = gst_query_new_latency ();

  if (gst_pad_peer_query (self->sinkpad, q))
    gst_query_parse_latency (q, &self->live, NULL, NULL);
  gst_query_unref (q);
  self->live_known = TRUE;
  GST_DEBUG_OBJECT (self, "upstream is %slive", self->live ? "" : "not ");
}

static GstFlowReturn
gst_moshi_lm_chain (GstPad *pad, GstObject *parent, GstBuffer *buffer)
{
  GstMoshiLm *self = GST_MOSHI_LM (parent);
  GstFlowReturn ret = GST_FLOW_OK;
  GstMapInfo in;
  GstClockTime base;
  gsize frame_bytes, n_frames, f;
  gint i;

  if (G_UNLIKELY (!self->gen || self->in_codebooks == 0)) {
    GST_ELEMENT_ERROR (self, CORE, NEGOTIATION,
        ("moshilm received data before its format (caps) was set"),
        ("gen %p, codebooks %d", self->gen, self->in_codebooks));
    gst_buffer_unref (buffer);
    return GST_FLOW_NOT_NEGOTIATED;
  }
  if (G_UNLIKELY (!self->live_known))
    gst_moshi_lm_check_live (self);

  if (!gst_buffer_map (buffer, &in, GST_MAP_READ)) {
    GST_ELEMENT_ERROR (self, STREAM, DECODE, (NULL), ("cannot map input"));
    gst_buffer_unref (buffer);
    return GST_FLOW_ERROR;
  }

  frame_bytes = (gsize) self->in_codebooks * sizeof (guint16);
  if (in.size % frame_bytes != 0) {
    GST_ELEMENT_ERROR (self, STREAM, DECODE,
        ("buffer of %u bytes is not a whole number of %d-codebook Mimi "
         "frames (%d bytes each)",
            (guint) in.size, self->in_codebooks, (gint) frame_bytes),
        (NULL));
    gst_buffer_unmap (buffer, &in);
    gst_buffer_unref (buffer);
    return GST_FLOW_ERROR;
  }
  n_frames = in.size / frame_bytes;

  if (GST_BUFFER_IS_DISCONT (buffer)) {
    GST_DEBUG_OBJECT (self, "discontinuity at %" GST_TIME_FORMAT,
        GST_TIME_ARGS (GST_BUFFER_PTS (buffer)));
    self->discont = TRUE;
  }
  base = GST_BUFFER_PTS_IS_VALID (buffer) ? GST_BUFFER_PTS (buffer)
                                          : self->next_pts;

  for (f = 0; f < n_frames && ret == GST_FLOW_OK; f++) {
    const guint8 *p = in.data + f * frame_bytes;
    GstClockTime pts = GST_CLOCK_TIME_IS_VALID (base)
        ? base + f * GST_MOSHI_FRAME_DURATION
        : GST_CLOCK_TIME_NONE;

    /* The first n_user codebooks; extra ones are not the model's input. */
    for (i = 0; i < self->n_user; i++)
      self->user_codes[i] = GST_READ_UINT16_LE (p + 2 * i);
    if (G_UNLIKELY (!self->started))
      ret = gst_moshi_lm_begin (self, pts);
    if (ret == GST_FLOW_OK)
      ret = gst_moshi_lm_step (self, pts, STEP_INPUT);
  }
  self->next_pts = GST_CLOCK_TIME_IS_VALID (base)
      ? base + n_frames * GST_MOSHI_FRAME_DURATION
      : GST_CLOCK_TIME_NONE;

  gst_buffer_unmap (buffer, &in);
  gst_buffer_unref (buffer);
  return ret;
}

static gboolean
gst_moshi_lm_set_caps (GstMoshiLm *self, GstCaps *caps)
{
  const GstStructure *s = gst_caps_get_structure (caps, 0);
  GstCaps *out;
  gint codebooks;
  gboolean ok;

  if (!self->gen)
    return FALSE;
  if (!gst_structure_get_int (s, "codebooks", &codebooks)) {
    GST_ELEMENT_ERROR (self, CORE, NEGOTIATION,
        ("Mimi caps without a fixed number of codebooks: %" GST_PTR_FORMAT,
            caps),
        (NULL));
    return FALSE;
  }
  if (codebooks < self->n_user) {
    GST_ELEMENT_ERROR (self, CORE, NEGOTIATION,
        ("The user's Mimi stream has %d codebooks, but the Moshi model %s "
         "listens to %d; encode with mimienc codebooks=%d (more are "
         "accepted, the extra ones are ignored).",
            codebooks, self->model_path, self->n_user, self->n_user),
        (NULL));
    return FALSE;
  }
  if (codebooks > self->n_user)
    GST_INFO_OBJECT (self, "using the first %d of %d codebooks", self->n_user,
        codebooks);
  self->in_codebooks = codebooks;

  /* STT: src carries no data, hence no caps (see "Model kinds"). */
  ok = TRUE;
  if (self->dep_q > 0) {
    out = gst_caps_new_simple (GST_MOSHI_MIMI_MEDIA_TYPE, "codebooks",
        G_TYPE_INT, self->dep_q, "framerate", GST_TYPE_FRACTION, 25, 2, NULL);
    ok = gst_pad_push_event (self->srcpad, gst_event_new_caps (out));
    gst_caps_unref (out);
  }
  out = gst_caps_from_string (TEXT_CAPS);
  /* Text caps failing (nobody linked) must not stop the voice. */
  gst_pad_push_event (self->textpad, gst_event_new_caps (out));
  gst_caps_unref (out);
  return ok;
}

/* One stream-start per source pad: each carries its own stream. */
static void
gst_moshi_lm_push_stream_start (GstMoshiLm *self, GstEvent *event)
{
  const gchar *upstream_id = NULL;
  GstStreamFlags flags = GST_STREAM_FLAG_NONE;
  guint group_id;
  gboolean have_group;
  GstPad *pads[2] = { self->srcpad, self->textpad };
  const gchar *names[2] = { "moshilm-audio", "moshilm-text" };
  guint i;

  gst_event_parse_stream_start (event, &upstream_id);
  gst_event_parse_stream_flags (event, &flags);
  have_group = gst_event_parse_group_id (event, &group_id);

  for (i = 0; i < G_N_ELEMENTS (pads); i++) {
    gchar *id =
        g_strdup_printf ("%s/%s", upstream_id ? upstream_id : "", names[i]);
    GstEvent *e = gst_event_new_stream_start (id);

    gst_event_set_stream_flags (e, flags);
    if (have_group)
      gst_event_set_group_id (e, group_id);
    gst_pad_push_event (pads[i], e);
    g_free (id);
  }
}

static gboolean
gst_moshi_lm_sink_event (GstPad *pad, GstObject *parent, GstEvent *event)
{
  GstMoshiLm *self = GST_MOSHI_LM (parent);
  gboolean ret;

  GST_LOG_OBJECT (self, "event %" GST_PTR_FORMAT, event);

  switch (GST_EVENT_TYPE (event)) {
    case GST_EVENT_STREAM_START:
      /* A new stream is a new conversation. */
      gst_moshi_lm_reset_stream (self);
      gst_flow_combiner_reset (self->combiner);
      gst_moshi_lm_push_stream_start (self, event);
      gst_event_unref (event);
      return TRUE;
    case GST_EVENT_CAPS: {
      GstCaps *caps;

      gst_event_parse_caps (event, &caps);
      ret = gst_moshi_lm_set_caps (self, caps);
      gst_event_unref (event);
      return ret;
    }
    case GST_EVENT_SEGMENT:
      gst_event_copy_segment (event, &self->segment);
      if (self->segment.format != GST_FORMAT_TIME) {
        GST_ELEMENT_ERROR (self, STREAM, FORMAT,
            ("moshilm needs a TIME segment (got %s): put it after mimienc "
             "or another element that timestamps the Mimi frames",
                gst_format_get_name (self->segment.format)),
            (NULL));
        gst_event_unref (event);
        return FALSE;
      }
      break;
    case GST_EVENT_FLUSH_START:
      vision_unblock (self, TRUE);
      break;
    case GST_EVENT_FLUSH_STOP:
      /* A flushing seek: the conversation starts over. */
      vision_unblock (self, FALSE);
      gst_moshi_lm_reset_stream (self);
      gst_flow_combiner_reset (self->combiner);
      gst_segment_init (&self->segment, GST_FORMAT_TIME);
      break;
    case GST_EVENT_EOS:
      gst_moshi_lm_drain (self);
      /* No more steps: images from files must not wait for them. */
      vision_unblock (self, TRUE);
      break;
    default:
      break;
  }

  /* Forwarded to both source pads. */
  return gst_pad_event_default (pad, parent, event);
}

/* What the sink pad can take: at least the user codebooks of the model. */
static GstCaps *
gst_moshi_lm_sink_caps (GstMoshiLm *self)
{
  GstCaps *caps;

  /* n_user is set before the pads are activated and cleared after. */
  if (self->n_user > 0) {
    caps = gst_caps_new_simple (GST_MOSHI_MIMI_MEDIA_TYPE, NULL, NULL);
    gst_caps_set_simple (caps, "codebooks", GST_TYPE_INT_RANGE, self->n_user,
        GST_MOSHI_MAX_CODEBOOKS, NULL);
  } else {
    caps = gst_pad_get_pad_template_caps (self->sinkpad);
  }
  return caps;
}

static gboolean
gst_moshi_lm_sink_query (GstPad *pad, GstObject *parent, GstQuery *query)
{
  GstMoshiLm *self = GST_MOSHI_LM (parent);

  switch (GST_QUERY_TYPE (query)) {
    case GST_QUERY_CAPS: {
      GstCaps *filter, *caps = gst_moshi_lm_sink_caps (self);

      gst_query_parse_caps (query, &filter);
      if (filter) {
        GstCaps *tmp =
            gst_caps_intersect_full (filter, caps, GST_CAPS_INTERSECT_FIRST);
        gst_caps_unref (caps);
        caps = tmp;
      }
      gst_query_set_caps_result (query, caps);
      gst_caps_unref (caps);
      return TRUE;
    }
    case GST_QUERY_ACCEPT_CAPS: {
      /* Anything of the template: too few codebooks is then refused by the
       * caps event with a message that says what to change, rather than a
       * bare "not negotiated". */
      GstCaps *caps, *templ = gst_pad_get_pad_template_caps (pad);

      gst_query_parse_accept_caps (query, &caps);
      gst_query_set_accept_caps_result (query,
          gst_caps_is_subset (caps, templ));
      gst_caps_unref (templ);
      return TRUE;
    }
    default:
      return gst_pad_query_default (pad, parent, query);
  }
}

static gboolean
gst_moshi_lm_src_query (GstPad *pad, GstObject *parent, GstQuery *query)
{
  GstMoshiLm *self = GST_MOSHI_LM (parent);

  switch (GST_QUERY_TYPE (query)) {
    case GST_QUERY_LATENCY: {
      gboolean live;
      GstClockTime min, max, ours;

      if (!gst_pad_peer_query (self->sinkpad, query))
        return FALSE;
      gst_query_parse_latency (query, &live, &min, &max);
      /* See "Timing" and "Model kinds" in the element docs.  Translation
       * feeds the first frame twice: its slots leave one step earlier. */
      ours = GST_MOSHI_FRAME_DURATION
              * (1 + self->max_delay
                  - (self->kind == LM_KIND_TRANSLATION && self->max_delay > 0))
          + self->stt_delay;
      min += ours;
      if (GST_CLOCK_TIME_IS_VALID (max))
        max += ours;
      GST_DEBUG_OBJECT (self,
          "latency: ours %" GST_TIME_FORMAT ", total min "
          "%" GST_TIME_FORMAT,
          GST_TIME_ARGS (ours), GST_TIME_ARGS (min));
      gst_query_set_latency (query, live, min, max);
      return TRUE;
    }
    case GST_QUERY_CAPS: {
      GstCaps *filter, *caps;

      if (pad == self->srcpad && self->dep_q > 0)
        caps = gst_caps_new_simple (GST_MOSHI_MIMI_MEDIA_TYPE, "codebooks",
            G_TYPE_INT, self->dep_q, "framerate", GST_TYPE_FRACTION, 25, 2,
            NULL);
      else
        caps = gst_pad_get_pad_template_caps (pad);
      gst_query_parse_caps (query, &filter);
      if (filter) {
        GstCaps *tmp =
            gst_caps_intersect_full (filter, caps, GST_CAPS_INTERSECT_FIRST);
        gst_caps_unref (caps);
        caps = tmp;
      }
      gst_query_set_caps_result (query, caps);
      gst_caps_unref (caps);
      return TRUE;
    }
    default:
      return gst_pad_query_default (pad, parent, query);
  }
}
