/* Kyutai's Moshi language model (moshi.models.lm.LMModel) and its streaming
 * generator (LMGen), one 80 ms step at a time.
 *
 * Per step the temporal transformer reads the sum of the embeddings of one
 * text token and n_q audio tokens (dep_q of the model's own voice, the rest
 * the user's), and predicts the next text token; the depformer then
 * predicts the model's dep_q audio codebooks of the step in order, each from
 * the temporal output and the previous token.  Streams are offset by
 * per-codebook delays; LMGen hides them and returns aligned frames.  With
 * dep_q = 0 (Kyutai STT) there is no depformer: the model only writes text
 * and all n_q audio streams are the user's. */
#pragma once
#include <glib.h>
#include <stdint.h>

#include "weight-type.h"

G_BEGIN_DECLS

#define LM_MAX_CODEBOOKS 64
#define LM_MAX_SCHEDULE 64

/* What a model does (config key model_type). */
typedef enum {
  LM_KIND_DIALOG, /* "moshi": full-duplex dialog (voice + text) */
  LM_KIND_STT, /* "stt": speech to text, dep_q 0 (Kyutai STT) */
  LM_KIND_TRANSLATION, /* "hibiki": speech translation (voice + text) */
} LmKind;

typedef struct {
  /* temporal transformer */
  int dim, num_heads, num_layers;
  double hidden_scale;
  int context;
  double max_period;
  gboolean rms_norm; /* "rms_norm_f32" / "rms_norm" (else layer_norm) */
  float norm_eps; /* 1e-8 for the *_f32 norms, else 1e-5 */
  gboolean gating; /* "silu" (else an MLP with GELU) */
  int positional; /* TransformerPositional: rope / none / sin */
  /* tokens */
  int text_card, card, n_q, dep_q;
  int delays[LM_MAX_CODEBOOKS + 1]; /* text, then n_q audio streams */
  int existing_text_padding_id;
  /* depformer */
  int dep_dim, dep_dim_feedforward, dep_num_heads, dep_num_layers;
  gboolean dep_multi_linear, dep_weights_per_step, dep_gating;
  int dep_positional;
  double dep_max_period;
  int dep_schedule[LM_MAX_SCHEDULE];
  int n_dep_schedule;
  int dep_low_rank; /* 0: plain embeddings */
  /* LoRA fine-tune (config keys lora, lora_scaling; the adapter file is
   * the repo config's lora_name) */
  gboolean lora;
  float lora_scaling;
  /* MoshiVis: gated cross-attention to an image in every temporal layer.
   * Set on load when the checkpoint has it; for random models, asked. */
  gboolean cross_attention;
  /* lm_gen_config defaults */
  float temp, temp_text;
  int top_k, top_k_text;
  /* model_type, and stt_config for LM_KIND_STT: the text lags the audio by
   * audio_delay_seconds; audio_silence_prefix_seconds of silence are fed
   * before the audio (Kyutai's defaults when absent: 0). */
  LmKind kind;
  double stt_audio_delay_s, stt_silence_prefix_s;
  /* Kyutai's LUT conditioner summed into every step's input (the
   * "conditioners" and "fuser": {"sum": [...]} keys, Hibiki): a table
   * condition_provider.conditioners.<cond_name>.embed [cond_n_bins + 1]
   * [cond_dim] projected to dim by ...output_proj; the value used is
   * possible_values[cond_index] (Hibiki: "very_good", as Kyutai's
   * run_inference).  cond_dim 0: none. */
  char cond_name[64];
  int cond_n_bins, cond_dim, cond_index;
} LmConfig;

/* Moshi 7B (Kyutai's configs/moshi_7b_202409.json). */
void lm_config_default (LmConfig *cfg);
/* Kyutai's config.json schema (the LM keyword arguments, optionally with the
 * repo keys moshi_name, mimi_name, tokenizer_name, lm_gen_config, ...).
 * Keys absent from the file take the defaults of Kyutai's LMModel (not
 * Moshi 7B's): e.g. LayerNorm, no gating, sinusoidal positions; the
 * depformer inherits the main transformer's settings unless a depformer_*
 * key overrides them.  Unknown keys and features we do not implement are
 * errors. */
gboolean lm_config_load_json (LmConfig *cfg, const char *path, GError **error);

typedef struct LmModel LmModel;

LmModel *lm_model_load (const char *path, const LmConfig *cfg,
    MoshiWeightType weights, GError **error);
/* Same, merging the LoRA adapters of `lora_path` (a safetensors file with
 * <weight stem>.lora_A/.lora_B tensors) scaled by cfg->lora_scaling.  A
 * config with lora = true needs lora_path; an adapter file that matches no
 * weight is an error. */
LmModel *lm_model_load_lora (const char *path, const char *lora_path,
    const LmConfig *cfg, MoshiWeightType weights, GError **error);
/* Same, with a cache of the packed weights at `cache_path` (NULL: none):
 * read when it matches this model, LoRA, configuration and storage type,
 * else written for the next start.  A cache that cannot be written is only
 * a warning, returned in `cache_warning` (may be NULL). */
LmModel *lm_model_load_cached (const char *path, const char *lora_path,
    const LmConfig *cfg, MoshiWeightType weights, const char *cache_path,
    gchar **cache_warning, GError **error);
/* TRUE when the model's packed weights came from its cache file. */
gboolean lm_model_from_cache (const LmModel *m);
/* Random weights with the shapes of `cfg` (benchmarks): packed layer by
 * layer, so a 7B model needs only its packed size in memory; embedding rows
 * are generated on demand, like the mapped tables of a real checkpoint. */
LmModel *lm_model_new_random (const LmConfig *cfg, uint64_t seed,
    MoshiWeightType weights);
/* MoshiVis: TRUE when the model can attend to an image (its checkpoint has
 * the gated cross-attention); the image embeddings then have
 * lm_model_config (m)->dim values per token. */
gboolean lm_model_has_cross_attention (const LmModel *m);
LmModel *lm_model_ref (LmModel *m);
void lm_model_unref (LmModel *m);
const LmConfig *lm_model_config (const LmModel *m);
size_t lm_model_weight_bytes (const LmModel *m);

/* Teacher-forced forward over a whole sequence (Kyutai's LMModel.forward,
 * as used for training and scoring): codes [1 + n_q][T] (text row first,
 * -1 = zero token).  Outputs are aligned with the codes: logits
 * [dep_q][T][card] predicts codes[1 + k][t], text_logits [T][text_card]
 * predicts codes[0][t]; mask entries are 0 (and logits NaN) where the
 * delays leave no valid prediction or the target is -1. */
gboolean lm_forward_teacher (LmModel *m, const int *codes, int T, float *logits,
    guint8 *mask, float *text_logits, guint8 *text_mask, GError **error);

/* ------------------------------------------------------------ LMGen --- */

typedef struct {
  gboolean use_sampling;
  float temp, temp_text; /* <= 0: greedy */
  int top_k, top_k_text; /* <= 0: all */
  uint64_t seed;
} LmGenParams;

/* Kyutai's LMGen defaults from the model's lm_gen_config. */
void lm_gen_params_default (LmGenParams *p, const LmConfig *cfg);

typedef struct LmGen LmGen;

/* Intermediate values of one step, for conformance checks; each pointer
 * may be NULL.  Noise arrays, when given, replace the sampler's own
 * Exp(1) draws (element i goes with the i-th most probable token). */
typedef struct {
  int *main_input; /* [1 + n_q] tokens fed to the transformer */
  float *transformer_out; /* [dim], after out_norm */
  float *text_logits; /* [text_card] */
  float *depformer_logits; /* [dep_q][card] */
  int *text_token; /* [1] sampled at this step */
  int *audio_tokens; /* [dep_q] sampled at this step */
  const float *text_noise; /* [top_k_text] */
  const float *audio_noise; /* [dep_q][top_k] */
  float *gate_summary; /* [1] MoshiVis gate summary of the step */
  float *xa_gates; /* [num_layers][dim] gates g, when cross-attention ran */
  float *xa_updates; /* [num_layers][dim] updates a * g, likewise */
} LmGenTrace;

LmGen *lm_gen_new (LmModel *m, const LmGenParams *p, GError **error);
void lm_gen_free (LmGen *g);
void lm_gen_reset (LmGen *g);
void lm_gen_set_threads (LmGen *g, int n_threads);
/* MoshiVis: an image made ready for the model's cross-attention, i.e. the
 * keys and values of the image adapter's output img [tokens][dim] through
 * the shared Wk, Wv (computed once here: the expensive part, ~2*tokens*dim^2
 * multiply-adds, so callers may run it on another thread than the steps).
 * Immutable and reference counted; several generators may share one.
 * Errors: a model without cross-attention, a wrong dim, no tokens, out of
 * memory. */
typedef struct LmImage LmImage;
LmImage *lm_image_new (LmModel *m, const float *img, int tokens, int dim,
    int n_threads, GError **error);
LmImage *lm_image_ref (LmImage *image);
void lm_image_unref (LmImage *image);
int lm_image_tokens (const LmImage *image);

/* Replaces the image the generator attends to from its next step on,
 * keeping the conversation (NULL: no image, exactly the base model).  Cheap.
 * The image survives lm_gen_reset.  FALSE with error when the image belongs
 * to a model of other dims or memory runs out (there is then no image). */
gboolean lm_gen_set_image (LmGen *g, LmImage *image, GError **error);
/* Cross-attention is skipped for the steps t < xa_start of a conversation
 * (Kyutai's "gate delay"; 0 by default). */
void lm_gen_set_xa_start (LmGen *g, int xa_start);
/* Mean gate of the last (up to) 10 layers at the last step, in (0, 1); 0
 * when cross-attention did not run.  Kyutai's UI colours text with it. */
float lm_gen_gate_summary (const LmGen *g);

/* Number of user codebooks expected per step (n_q - dep_q). */
int lm_gen_user_codebooks (const LmGen *g);

/* One step: user_codes [n_q - dep_q] (values < card; or all of them = card,
 * the initial token, which Kyutai feeds Hibiki once after the end of its
 * input) in.  Returns 1 when a
 * frame comes out: out[0] is the text token and out[1..dep_q] the model's
 * audio codes, aligned; 0 while the delays fill (the first max(delays)
 * steps); -1 with error on bad input (the state is then unchanged). */
int lm_gen_step (LmGen *g, const int *user_codes, int *out, LmGenTrace *trace,
    GError **error);

G_END_DECLS
