/* Streaming causal Conv1d and ConvTranspose1d, following Kyutai's
 * StreamingConv1d / StreamingConvTranspose1d.
 *
 * Activations are time-major [T][C].  A conv keeps the last
 * (kernel - stride) input rows of the previous call as its left padding
 * (zeros at start, or the first input row repeated for pad_mode
 * "replicate"); a transposed conv keeps the (kernel - stride) overlapping
 * output rows of the previous call (without bias) and adds them to the start
 * of the next output. */
#pragma once
#include <glib.h>

#include "gemm.h"
#include "kernels.h"
#include "safetensors.h"

G_BEGIN_DECLS

typedef struct {
  int c_in, c_out, kernel, stride, dilation;
  gboolean replicate; /* pad_mode "replicate" instead of zeros */
  MoshiPackedB w; /* B operand: [kernel * c_in][c_out] */
  float *bias; /* [c_out] or NULL */
} MoshiConv1d;

typedef struct {
  int hist; /* (kernel-1)*dilation + 1 - stride rows */
  int max_t; /* largest input chunk, in rows */
  float *buf; /* [hist + max_t][c_in]: history, then input */
  float *cols; /* dilated convs only: im2col [max_t][kernel * c_in] */
  gboolean first;
} MoshiConv1dState;

/* Loads `<prefix>.weight` [c_out, c_in, kernel] and, if has_bias,
 * `<prefix>.bias`. */
gboolean moshi_conv1d_load (MoshiConv1d *c, const StFile *f, const char *prefix,
    int c_in, int c_out, int kernel, int stride, int dilation,
    gboolean has_bias, gboolean replicate, MoshiWeightType type,
    GError **error);
void moshi_conv1d_random (MoshiConv1d *c, uint64_t *seed, int c_in, int c_out,
    int kernel, int stride, int dilation, gboolean has_bias,
    MoshiWeightType type);
void moshi_conv1d_clear (MoshiConv1d *c);
size_t moshi_conv1d_bytes (const MoshiConv1d *c);

gboolean moshi_conv1d_state_init (MoshiConv1dState *s, const MoshiConv1d *c,
    int max_t);
void moshi_conv1d_state_clear (MoshiConv1dState *s);
void moshi_conv1d_state_reset (MoshiConv1dState *s, const MoshiConv1d *c);
size_t moshi_conv1d_state_bytes (const MoshiConv1dState *s,
    const MoshiConv1d *c);

/* Where the next input chunk must be written ([max_t][c_in] room). */
static inline float *
moshi_conv1d_input (MoshiConv1dState *s, const MoshiConv1d *c)
{
  return s->buf + (size_t) s->hist * c->c_in;
}

/* Runs the conv on the t_in rows written at moshi_conv1d_input() (t_in a
 * multiple of stride); writes t_in / stride rows of c_out to y. */
void moshi_conv1d_run (const MoshiConv1d *c, MoshiConv1dState *s,
    MoshiPool *pool, int t_in, float *y);
/* Same, but adds the result to y (residual connections). */
void moshi_conv1d_run_add (const MoshiConv1d *c, MoshiConv1dState *s,
    MoshiPool *pool, int t_in, float *y);

typedef struct {
  int c_in, c_out, kernel, stride;
  gboolean depthwise; /* groups == channels (c_in == c_out) */
  MoshiPackedB w; /* dense: B operand [c_in][kernel * c_out] */
  float *dw; /* depthwise: [c][kernel] */
  float *bias; /* [c_out] or NULL */
} MoshiConvTr1d;

typedef struct {
  int max_t;
  float *partial; /* [kernel - stride][c_out] overlap, no bias */
  float *cols; /* [max_t][kernel * c_out] GEMM output */
  float *full; /* [max_t * stride + kernel - stride][c_out] */
} MoshiConvTr1dState;

/* Loads `<prefix>.weight` [c_in, c_out (1 if depthwise), kernel]. */
gboolean moshi_convtr1d_load (MoshiConvTr1d *c, const StFile *f,
    const char *prefix, int c_in, int c_out, int kernel, int stride,
    gboolean has_bias, gboolean depthwise, MoshiWeightType type,
    GError **error);
void moshi_convtr1d_random (MoshiConvTr1d *c, uint64_t *seed, int c_in,
    int c_out, int kernel, int stride, gboolean has_bias, gboolean depthwise,
    MoshiWeightType type);
void moshi_convtr1d_clear (MoshiConvTr1d *c);
size_t moshi_convtr1d_bytes (const MoshiConvTr1d *c);

gboolean moshi_convtr1d_state_init (MoshiConvTr1dState *s,
    const MoshiConvTr1d *c, int max_t);
void moshi_convtr1d_state_clear (MoshiConvTr1dState *s);
void moshi_convtr1d_state_reset (MoshiConvTr1dState *s, const MoshiConvTr1d *c);
size_t moshi_convtr1d_state_bytes (const MoshiConvTr1dState *s,
    const MoshiConvTr1d *c);

/* x: [t_in][c_in] -> y: [t_in * stride][c_out]. */
void moshi_convtr1d_run (const MoshiConvTr1d *c, MoshiConvTr1dState *s,
    MoshiPool *pool, const float *x, int t_in, float *y);

G_END_DECLS
