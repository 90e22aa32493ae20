/* Mimi: Kyutai's streaming neural audio codec, frame by frame.
 *
 *   24 kHz mono PCM, 1920 samples (80 ms)  <->  n_q codes (12.5 Hz)
 *
 * A MimiModel holds read-only weights and may be shared by any number of
 * encoder/decoder streams, in any threads.  Each MimiEncoder / MimiDecoder
 * owns the streaming state of one stream (conv paddings, transposed-conv
 * overlaps, transformer KV rings, RoPE offset) and must be used by one thread
 * at a time. */
#pragma once
#include <glib.h>
#include <stdint.h>

#include "weight-type.h"

G_BEGIN_DECLS

#define MIMI_SAMPLE_RATE 24000
#define MIMI_FRAME_SIZE 1920
#define MIMI_MAX_CODEBOOKS 32

typedef struct {
  /* SEANet */
  int channels; /* audio channels, 1 */
  int dimension; /* latent dimension (512) */
  int n_filters; /* 64 */
  int n_residual_layers; /* 1 */
  int ratios[8]; /* decoder order: 8, 6, 5, 4 */
  int n_ratios;
  int kernel_size; /* 7 */
  int residual_kernel_size; /* 3 */
  int last_kernel_size; /* 3 */
  int dilation_base; /* 2 */
  int compress; /* 2 */
  gboolean true_skip; /* TRUE (only TRUE is supported) */
  /* transformer (encoder and decoder are identical in shape) */
  int d_model; /* 512 */
  int num_heads; /* 8 */
  int num_layers; /* 8 */
  int dim_feedforward; /* 2048 */
  int context; /* 250 */
  double max_period; /* 10000 */
  /* quantizer */
  int q_dimension; /* 256 */
  int q_n_q; /* 32 codebooks stored */
  int q_bins; /* 2048 */
  /* rates */
  int sample_rate; /* 24000 */
  double frame_rate; /* 12.5 */
  int frame_size; /* 1920 */
  int num_codebooks; /* default used codebooks, 8 */
} MimiConfig;

typedef struct MimiModel MimiModel;
typedef struct MimiEncoder MimiEncoder;
typedef struct MimiDecoder MimiDecoder;

/* Kyutai's released Mimi architecture (tokenizer-e351c8d8-checkpoint125). */
void mimi_config_default (MimiConfig *cfg);
/* Reads a Kyutai-schema mimi config.json (keys seanet/transformer/quantizer,
 * as in tests/data/conformance/mimi-tiny/config.json) over the defaults. */
gboolean mimi_config_load_json (MimiConfig *cfg, const char *path,
    GError **error);
/* Checks that the values describe a buildable Mimi; `path` names the source
 * in error messages. */
gboolean mimi_config_validate (const MimiConfig *cfg, const char *path,
    GError **error);

/* Loads a .safetensors Mimi checkpoint.  If a config.json that describes a
 * Mimi (has a "seanet" key) sits beside the file, it overrides the defaults.
 * F32, BF16 and F16 weights are accepted. */
MimiModel *mimi_model_load (const char *path, GError **error);
/* Same, storing the conv and linear weights as `weights` (F32 is exact and
 * the default; BF16/Q8 trade ~1e-3 relative error for 2x/4x less memory
 * traffic, which is what bounds streaming speed). */
MimiModel *mimi_model_load_typed (const char *path, MoshiWeightType weights,
    GError **error);
MimiModel *mimi_model_load_with_config (const char *path, const MimiConfig *cfg,
    MoshiWeightType weights, GError **error);
/* Random weights of the given architecture (benchmarks, tests). */
MimiModel *mimi_model_new_random (const MimiConfig *cfg, uint64_t seed,
    MoshiWeightType weights);
MoshiWeightType mimi_model_weight_type (const MimiModel *m);
MimiModel *mimi_model_ref (MimiModel *m);
void mimi_model_unref (MimiModel *m);
const MimiConfig *mimi_model_config (const MimiModel *m);
/* Bytes of weights held in memory by the model. */
size_t mimi_model_weight_bytes (const MimiModel *m);

/* n_codebooks: 1..config.q_n_q.  Returns NULL with error when out of range. */
MimiEncoder *mimi_encoder_new (MimiModel *m, int n_codebooks, GError **error);
void mimi_encoder_free (MimiEncoder *e);
void mimi_encoder_reset (MimiEncoder *e);
int mimi_encoder_codebooks (const MimiEncoder *e);
size_t mimi_encoder_state_bytes (const MimiEncoder *e);
/* pcm: frame_size floats.  codes: n_codebooks values in [0, bins). */
void mimi_encode_frame (MimiEncoder *e, const float *pcm, uint16_t *codes);

MimiDecoder *mimi_decoder_new (MimiModel *m, int n_codebooks, GError **error);
void mimi_decoder_free (MimiDecoder *d);
void mimi_decoder_reset (MimiDecoder *d);
int mimi_decoder_codebooks (const MimiDecoder *d);
size_t mimi_decoder_state_bytes (const MimiDecoder *d);
/* codes: n_codebooks values; each must be < bins, else FALSE with error and
 * the state is untouched.  pcm: frame_size floats out. */
gboolean mimi_decode_frame (MimiDecoder *d, const uint16_t *codes, float *pcm,
    GError **error);

/* Intermediate values of one frame, for conformance checks; each pointer
 * may be NULL.  Layout is time-major: [steps][channels] with
 * steps = frame_size / hop (2 for Mimi). */
typedef struct {
  float *seanet_out; /* [steps][dimension] */
  float *transformer_out; /* [steps][dimension] */
  float *latent; /* [dimension], after the stride-2 downsample */
} MimiEncodeTrace;

typedef struct {
  float *quantized; /* [dimension], sum of codebook vectors, projected */
  float *upsampled; /* [steps][dimension] */
  float *transformer_out; /* [steps][dimension] */
} MimiDecodeTrace;

void mimi_encode_frame_traced (MimiEncoder *e, const float *pcm,
    uint16_t *codes, MimiEncodeTrace *trace);
gboolean mimi_decode_frame_traced (MimiDecoder *d, const uint16_t *codes,
    float *pcm, MimiDecodeTrace *trace, GError **error);

/* Compute threads used by one stream's frame (1 = no threading). */
void mimi_encoder_set_threads (MimiEncoder *e, int n_threads);
void mimi_decoder_set_threads (MimiDecoder *d, int n_threads);

G_END_DECLS
