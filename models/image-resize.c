#include "image-resize.h"

#include "alloc.h"

#include <math.h>
#include <string.h>

void
image_center_square (int width, int height, int *x, int *y, int *side)
{
  const int m = MIN (width, height);
  *x = (width - m) / 2;
  *y = (height - m) / 2;
  *side = m;
}

static double
cubic (double x)
{
  const double a = -0.5;
  x = fabs (x);
  if (x < 1.0)
    return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0)
    return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
  return 0.0;
}

/* Taps of one axis: for output i, source indices first[i] .. first[i] +
 * count[i] - 1 with normalised weights w[i * taps ..]. */
typedef struct {
  int taps;
  int *first, *count;
  float *w;
} Taps;

static gboolean
taps_init (Taps *t, int in, int out)
{
  const double scale = (double) in / out;
  const double widen = MAX (scale, 1.0);
  const double support = 2.0 * widen;
  t->taps = (int) ceil (support) * 2 + 1;
  t->first = g_new (int, out);
  t->count = g_new (int, out);
  t->w = moshi_alloc (sizeof (float) * (size_t) out * t->taps);
  if (!t->w)
    return FALSE;
  for (int i = 0; i < out; i++) {
    const double center = (i + 0.5) * scale;
    int lo = (int) floor (center - support + 0.5);
    int hi = (int) floor (center + support + 0.5);
    lo = MAX (lo, 0);
    hi = MIN (hi, in);
    hi = MIN (hi, lo + t->taps);
    double sum = 0.0;
    float *w = t->w + (size_t) i * t->taps;
    for (int j = lo; j < hi; j++) {
      w[j - lo] = (float) cubic ((j - center + 0.5) / widen);
      sum += w[j - lo];
    }
    for (int j = lo; j < hi && sum != 0.0; j++)
      w[j - lo] = (float) (w[j - lo] / sum);
    t->first[i] = lo;
    t->count[i] = hi - lo;
  }
  return TRUE;
}

static void
taps_clear (Taps *t)
{
  g_free (t->first);
  g_free (t->count);
  moshi_free (t->w);
}

static uint8_t
to_u8 (float v)
{
  v = roundf (v);
  return (uint8_t) CLAMP (v, 0.0f, 255.0f);
}

gboolean
image_resize_rgb (const uint8_t *src, int stride, int x, int y, int w, int h,
    uint8_t *dst, int out_w, int out_h)
{
  if (w <= 0 || h <= 0 || out_w <= 0 || out_h <= 0)
    return FALSE;
  Taps tx = { 0 }, ty = { 0 };
  /* Horizontal pass first, into float rows of the source height. */
  float *mid = moshi_alloc (sizeof (float) * (size_t) h * out_w * 3);
  gboolean ok = mid && taps_init (&tx, w, out_w) && taps_init (&ty, h, out_h);
  if (ok) {
    for (int r = 0; r < h; r++) {
      const uint8_t *row = src + (size_t) (y + r) * stride + (size_t) x * 3;
      float *m = mid + (size_t) r * out_w * 3;
      for (int i = 0; i < out_w; i++) {
        const float *wt = tx.w + (size_t) i * tx.taps;
        const uint8_t *p = row + (size_t) tx.first[i] * 3;
        float acc[3] = { 0, 0, 0 };
        for (int k = 0; k < tx.count[i]; k++)
          for (int c = 0; c < 3; c++)
            acc[c] += wt[k] * p[3 * k + c];
        memcpy (m + 3 * i, acc, sizeof acc);
      }
    }
    for (int j = 0; j < out_h; j++) {
      const float *wt = ty.w + (size_t) j * ty.taps;
      uint8_t *d = dst + (size_t) j * out_w * 3;
      for (int i = 0; i < out_w * 3; i++) {
        float acc = 0.0f;
        for (int k = 0; k < ty.count[j]; k++)
          acc += wt[k] * mid[(size_t) (ty.first[j] + k) * out_w * 3 + i];
        d[i] = to_u8 (acc);
      }
    }
  }
  taps_clear (&tx);
  taps_clear (&ty);
  moshi_free (mid);
  return ok;
}
