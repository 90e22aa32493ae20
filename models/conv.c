#include "conv.h"

#include "alloc.h"
#include "model-error.h"
#include "weights.h"

#include <math.h>
#include <string.h>

/* ------------------------------------------------------------ conv1d --- */

/* PyTorch stores [c_out][c_in][k]; a window of `kernel` consecutive
 * time-major input rows is kernel*c_in contiguous floats, so the GEMM B
 * operand is laid out [k][c_in][c_out]. */
static gboolean
conv1d_pack (MoshiConv1d *c, const float *torch_w, MoshiWeightType type)
{
  const size_t n = (size_t) c->c_out * c->c_in * c->kernel;
  float *b = moshi_alloc (sizeof (float) * n);
  if (!b)
    return FALSE;
  for (int o = 0; o < c->c_out; o++)
    for (int i = 0; i < c->c_in; i++)
      for (int k = 0; k < c->kernel; k++)
        b[((size_t) k * c->c_in + i) * c->c_out + o] =
            torch_w[((size_t) o * c->c_in + i) * c->kernel + k];
  gboolean ok = moshi_packed_init_typed (&c->w, b, c->kernel * c->c_in,
      c->c_out, c->c_out, FALSE, type);
  moshi_free (b);
  return ok;
}

static void
conv1d_set_shape (MoshiConv1d *c, int c_in, int c_out, int kernel, int stride,
    int dilation, gboolean replicate)
{
  memset (c, 0, sizeof *c);
  c->dilation = dilation;
  c->c_in = c_in;
  c->c_out = c_out;
  c->kernel = kernel;
  c->stride = stride;
  c->replicate = replicate;
}

gboolean
moshi_conv1d_load (MoshiConv1d *c, const StFile *f, const char *prefix,
    int c_in, int c_out, int kernel, int stride, int dilation,
    gboolean has_bias, gboolean replicate, MoshiWeightType type, GError **error)
{
  char name[256];
  conv1d_set_shape (c, c_in, c_out, kernel, stride, dilation, replicate);
  int64_t wshape[3] = { c_out, c_in, kernel };
  float *tw = weights_load (f, weights_name (name, "%s.weight", prefix), 3,
      wshape, error);
  if (!tw)
    return FALSE;
  gboolean packed = conv1d_pack (c, tw, type);
  moshi_free (tw);
  if (!packed) {
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_IO,
        "out of memory loading %s", name);
    return FALSE;
  }
  if (has_bias) {
    int64_t bshape[1] = { c_out };
    c->bias = weights_load (f, weights_name (name, "%s.bias", prefix), 1,
        bshape, error);
    if (!c->bias) {
      moshi_conv1d_clear (c);
      return FALSE;
    }
  }
  return TRUE;
}

void
moshi_conv1d_random (MoshiConv1d *c, uint64_t *seed, int c_in, int c_out,
    int kernel, int stride, int dilation, gboolean has_bias,
    MoshiWeightType type)
{
  conv1d_set_shape (c, c_in, c_out, kernel, stride, dilation, FALSE);
  float scale = 1.0f / sqrtf ((float) (c_in * kernel));
  float *tw = weights_random (seed, (size_t) c_out * c_in * kernel, scale);
  conv1d_pack (c, tw, type);
  moshi_free (tw);
  if (has_bias)
    c->bias = weights_random (seed, c_out, scale);
}

void
moshi_conv1d_clear (MoshiConv1d *c)
{
  moshi_packed_clear (&c->w);
  moshi_free (c->bias);
  c->bias = NULL;
}

size_t
moshi_conv1d_bytes (const MoshiConv1d *c)
{
  return sizeof (float)
      * ((size_t) c->c_out * c->c_in * c->kernel + (c->bias ? c->c_out : 0));
}

gboolean
moshi_conv1d_state_init (MoshiConv1dState *s, const MoshiConv1d *c, int max_t)
{
  s->hist = (c->kernel - 1) * c->dilation + 1 - c->stride;
  if (s->hist < 0)
    s->hist = 0;
  s->max_t = max_t;
  s->buf = moshi_alloc (sizeof (float) * (size_t) (s->hist + max_t) * c->c_in);
  s->first = TRUE;
  if (c->dilation > 1)
    s->cols = moshi_alloc (sizeof (float) * (size_t) (max_t / c->stride + 1)
        * c->kernel * c->c_in);
  return s->buf != NULL && (c->dilation == 1 || s->cols != NULL);
}

void
moshi_conv1d_state_clear (MoshiConv1dState *s)
{
  moshi_free (s->buf);
  moshi_free (s->cols);
  s->buf = s->cols = NULL;
}

void
moshi_conv1d_state_reset (MoshiConv1dState *s, const MoshiConv1d *c)
{
  memset (s->buf, 0, sizeof (float) * (size_t) s->hist * c->c_in);
  s->first = TRUE;
}

size_t
moshi_conv1d_state_bytes (const MoshiConv1dState *s, const MoshiConv1d *c)
{
  return sizeof (float)
      * ((size_t) (s->hist + s->max_t) * c->c_in
          + (c->dilation > 1
                  ? (size_t) (s->max_t / c->stride + 1) * c->kernel * c->c_in
                  : 0));
}

static void
conv1d_run (const MoshiConv1d *c, MoshiConv1dState *s, MoshiPool *pool,
    int t_in, float *y, gboolean accumulate)
{
  const int cin = c->c_in;
  g_assert (t_in > 0 && t_in <= s->max_t && t_in % c->stride == 0);
  if (s->first && c->replicate) {
    const float *first_row = s->buf + (size_t) s->hist * cin;
    for (int r = 0; r < s->hist; r++)
      memcpy (s->buf + (size_t) r * cin, first_row, sizeof (float) * cin);
  }
  s->first = FALSE;

  const int t_out = t_in / c->stride;
  if (c->dilation == 1) {
    /* Output row t reads the kernel*c_in contiguous floats starting at row
     * t*stride of the history-prefixed buffer: overlapping rows of A
     * (lda = stride * c_in), so no im2col copy. */
    moshi_gemm_packed (pool, t_out, s->buf, c->stride * cin, &c->w, c->bias,
        accumulate, y, c->c_out);
  } else {
    for (int t = 0; t < t_out; t++)
      for (int k = 0; k < c->kernel; k++)
        memcpy (s->cols + ((size_t) t * c->kernel + k) * cin,
            s->buf + ((size_t) t * c->stride + (size_t) k * c->dilation) * cin,
            sizeof (float) * cin);
    moshi_gemm_packed (pool, t_out, s->cols, c->kernel * cin, &c->w, c->bias,
        accumulate, y, c->c_out);
  }

  if (s->hist > 0)
    memmove (s->buf, s->buf + (size_t) t_in * cin,
        sizeof (float) * (size_t) s->hist * cin);
}

void
moshi_conv1d_run (const MoshiConv1d *c, MoshiConv1dState *s, MoshiPool *pool,
    int t_in, float *y)
{
  conv1d_run (c, s, pool, t_in, y, FALSE);
}

void
moshi_conv1d_run_add (const MoshiConv1d *c, MoshiConv1dState *s,
    MoshiPool *pool, int t_in, float *y)
{
  conv1d_run (c, s, pool, t_in, y, TRUE);
}

/* ---------------------------------------------------------- convtr1d --- */

static void
convtr1d_set_shape (MoshiConvTr1d *c, int c_in, int c_out, int kernel,
    int stride, gboolean depthwise)
{
  memset (c, 0, sizeof *c);
  c->c_in = c_in;
  c->c_out = c_out;
  c->kernel = kernel;
  c->stride = stride;
  c->depthwise = depthwise;
}

/* [c_in][c_out][k] -> B [c_in][k * c_out], so one GEMM gives, per input
 * row, all kernel taps of all output channels. */
static gboolean
convtr1d_pack (MoshiConvTr1d *c, const float *tw, MoshiWeightType type)
{
  const int K = c->kernel, co = c->c_out;
  float *b = moshi_alloc (sizeof (float) * (size_t) c->c_in * co * K);
  if (!b)
    return FALSE;
  for (int i = 0; i < c->c_in; i++)
    for (int o = 0; o < co; o++)
      for (int k = 0; k < K; k++)
        b[((size_t) i * K + k) * co + o] = tw[((size_t) i * co + o) * K + k];
  gboolean ok =
      moshi_packed_init_typed (&c->w, b, c->c_in, K * co, K * co, FALSE, type);
  moshi_free (b);
  return ok;
}

gboolean
moshi_convtr1d_load (MoshiConvTr1d *c, const StFile *f, const char *prefix,
    int c_in, int c_out, int kernel, int stride, gboolean has_bias,
    gboolean depthwise, MoshiWeightType type, GError **error)
{
  char name[256];
  convtr1d_set_shape (c, c_in, c_out, kernel, stride, depthwise);
  if (depthwise && c_in != c_out) {
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_CONFIG,
        "%s: depthwise transposed conv needs equal channels (%d vs %d)", prefix,
        c_in, c_out);
    return FALSE;
  }
  int64_t wshape[3] = { c_in, depthwise ? 1 : c_out, kernel };
  float *tw = weights_load (f, weights_name (name, "%s.weight", prefix), 3,
      wshape, error);
  if (!tw)
    return FALSE;
  if (depthwise) {
    c->dw = tw; /* [c][1][k] is already [c][k] */
  } else {
    gboolean packed = convtr1d_pack (c, tw, type);
    moshi_free (tw);
    if (!packed) {
      g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_IO,
          "out of memory loading %s", name);
      return FALSE;
    }
  }
  if (has_bias) {
    int64_t bshape[1] = { c_out };
    c->bias = weights_load (f, weights_name (name, "%s.bias", prefix), 1,
        bshape, error);
    if (!c->bias) {
      moshi_convtr1d_clear (c);
      return FALSE;
    }
  }
  return TRUE;
}

void
moshi_convtr1d_random (MoshiConvTr1d *c, uint64_t *seed, int c_in, int c_out,
    int kernel, int stride, gboolean has_bias, gboolean depthwise,
    MoshiWeightType type)
{
  convtr1d_set_shape (c, c_in, c_out, kernel, stride, depthwise);
  float scale = 1.0f / sqrtf ((float) (c_in * kernel));
  float *tw = weights_random (seed,
      (size_t) c_in * (depthwise ? 1 : c_out) * kernel, scale);
  if (depthwise) {
    c->dw = tw;
  } else {
    convtr1d_pack (c, tw, type);
    moshi_free (tw);
  }
  if (has_bias)
    c->bias = weights_random (seed, c_out, scale);
}

void
moshi_convtr1d_clear (MoshiConvTr1d *c)
{
  moshi_packed_clear (&c->w);
  moshi_free (c->dw);
  moshi_free (c->bias);
  c->dw = c->bias = NULL;
}

size_t
moshi_convtr1d_bytes (const MoshiConvTr1d *c)
{
  return sizeof (float)
      * ((size_t) c->c_in * (c->depthwise ? 1 : c->c_out) * c->kernel
          + (c->bias ? c->c_out : 0));
}

gboolean
moshi_convtr1d_state_init (MoshiConvTr1dState *s, const MoshiConvTr1d *c,
    int max_t)
{
  int pt = c->kernel - c->stride;
  s->max_t = max_t;
  s->partial = moshi_alloc (sizeof (float) * (size_t) MAX (pt, 1) * c->c_out);
  s->cols = c->depthwise
      ? moshi_alloc (16)
      : moshi_alloc (sizeof (float) * (size_t) max_t * c->kernel * c->c_out);
  s->full = moshi_alloc (
      sizeof (float) * ((size_t) max_t * c->stride + MAX (pt, 0)) * c->c_out);
  return s->partial && s->cols && s->full;
}

void
moshi_convtr1d_state_clear (MoshiConvTr1dState *s)
{
  moshi_free (s->partial);
  moshi_free (s->cols);
  moshi_free (s->full);
  s->partial = s->cols = s->full = NULL;
}

void
moshi_convtr1d_state_reset (MoshiConvTr1dState *s, const MoshiConvTr1d *c)
{
  int pt = c->kernel - c->stride;
  memset (s->partial, 0, sizeof (float) * (size_t) MAX (pt, 1) * c->c_out);
}

size_t
moshi_convtr1d_state_bytes (const MoshiConvTr1dState *s, const MoshiConvTr1d *c)
{
  int pt = MAX (c->kernel - c->stride, 0);
  return sizeof (float)
      * ((size_t) MAX (pt, 1) * c->c_out
          + (c->depthwise ? 4 : (size_t) s->max_t * c->kernel * c->c_out)
          + ((size_t) s->max_t * c->stride + pt) * c->c_out);
}

void
moshi_convtr1d_run (const MoshiConvTr1d *c, MoshiConvTr1dState *s,
    MoshiPool *pool, const float *x, int t_in, float *y)
{
  const int S = c->stride, K = c->kernel, co = c->c_out;
  const int pt = K - S;
  const int rows_full = t_in * S + pt;
  g_assert (t_in > 0 && t_in <= s->max_t && pt >= 0);
  float *full = s->full;
  memset (full, 0, sizeof (float) * (size_t) rows_full * co);

  if (c->depthwise) {
    for (int t = 0; t < t_in; t++)
      for (int k = 0; k < K; k++) {
        float *dst = full + (size_t) (t * S + k) * co;
        const float *src = x + (size_t) t * co;
        for (int ch = 0; ch < co; ch++)
          dst[ch] += src[ch] * c->dw[(size_t) ch * K + k];
      }
  } else {
    moshi_gemm_packed (pool, t_in, x, c->c_in, &c->w, NULL, FALSE, s->cols,
        K * co);
    /* Overlap-add: input row t, tap k lands on output row t*S + k. */
    for (int t = 0; t < t_in; t++)
      for (int k = 0; k < K; k++) {
        float *dst = full + (size_t) (t * S + k) * co;
        const float *src = s->cols + ((size_t) t * K + k) * co;
        for (int ch = 0; ch < co; ch++)
          dst[ch] += src[ch];
      }
  }

  for (int r = 0; r < pt; r++) {
    float *dst = full + (size_t) r * co;
    const float *p = s->partial + (size_t) r * co;
    for (int ch = 0; ch < co; ch++)
      dst[ch] += p[ch];
  }
  const int rows_out = t_in * S;
  if (pt > 0)
    memcpy (s->partial, full + (size_t) rows_out * co,
        sizeof (float) * (size_t) pt * co);
  if (c->bias) {
    for (int r = 0; r < rows_out; r++) {
      float *dst = y + (size_t) r * co;
      const float *src = full + (size_t) r * co;
      for (int ch = 0; ch < co; ch++)
        dst[ch] = src[ch] + c->bias[ch];
    }
  } else {
    memcpy (y, full, sizeof (float) * (size_t) rows_out * co);
  }
}
