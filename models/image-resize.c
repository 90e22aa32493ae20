/* PIL-style bicubic resize and centre crop (see image-resize.h). */
#include "image-resize.h"

#include "alloc.h"
#include "model-error.h"

#include <math.h>

#define MAX_SIDE 16384

void
moshi_image_center_square (int width, int height, int *x, int *y, int *side)
{
  int m = MIN (width, height);
  *side = MAX (m, 0);
  *x = MAX ((width - *side) / 2, 0);
  *y = MAX ((height - *side) / 2, 0);
}

/* PIL's bicubic filter, a = -0.5 (support 2). */
static double
bicubic (double x)
{
  const double a = -0.5;
  x = fabs (x);
  if (x < 1.0)
    return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0)
    return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
  return 0.0;
}

/* PIL's precompute_coeffs: for each output index, the first input index
 * and `ksize` normalised weights (zero past the taps used). */
typedef struct {
  int ksize;
  int *start, *count;
  float *k; /* [out][ksize] */
} Coeffs;

static gboolean
coeffs_init (Coeffs *c, int in, int out)
{
  const double scale = (double) in / out;
  const double filterscale = MAX (scale, 1.0);
  const double support = 2.0 * filterscale;
  c->ksize = (int) ceil (support) * 2 + 1;
  c->start = g_try_new (int, out);
  c->count = g_try_new (int, out);
  c->k = moshi_alloc ((size_t) out * c->ksize * sizeof (float));
  if (!c->start || !c->count || !c->k)
    return FALSE;
  for (int o = 0; o < out; o++) {
    const double center = (o + 0.5) * scale;
    int xmin = (int) (center - support + 0.5);
    int xmax = (int) (center + support + 0.5);
    xmin = MAX (xmin, 0);
    xmax = MIN (xmax, in) - xmin;
    xmax = MIN (xmax, c->ksize);
    float *k = c->k + (size_t) o * c->ksize;
    double ww = 0.0, w[128];
    for (int x = 0; x < xmax; x++) {
      w[x] = bicubic ((x + xmin - center + 0.5) / filterscale);
      ww += w[x];
    }
    for (int x = 0; x < xmax; x++)
      k[x] = (float) (ww != 0.0 ? w[x] / ww : 0.0);
    c->start[o] = xmin;
    c->count[o] = MAX (xmax, 0);
  }
  return TRUE;
}

static void
coeffs_clear (Coeffs *c)
{
  g_free (c->start);
  g_free (c->count);
  moshi_free (c->k);
}

static inline uint8_t
clip8 (float v)
{
  v = floorf (v + 0.5f);
  return (uint8_t) (v < 0.0f ? 0.0f : (v > 255.0f ? 255.0f : v));
}

gboolean
moshi_image_resize_rgb (const uint8_t *src, int w, int h, int stride,
    uint8_t *dst, int dw, int dh, int dst_stride, GError **error)
{
  if (!src || !dst || w < 1 || h < 1 || dw < 1 || dh < 1 || w > MAX_SIDE
      || h > MAX_SIDE || dw > MAX_SIDE || dh > MAX_SIDE || stride < 3 * w
      || dst_stride < 3 * dw) {
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_ARGUMENT,
        "image resize: bad arguments (source %p %dx%d stride %d, destination "
        "%p %dx%d stride %d; sides in [1, %d], strides >= 3 * width)",
        (const void *) src, w, h, stride, (void *) dst, dw, dh, dst_stride,
        MAX_SIDE);
    return FALSE;
  }
  /* Downscaling by more than ~30x would need more than 128 taps; no camera
   * to 448 comes close, but refuse rather than overflow. */
  if ((double) w / dw > 30.0 || (double) h / dh > 30.0) {
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_ARGUMENT,
        "image resize: %dx%d -> %dx%d shrinks more than 30x", w, h, dw, dh);
    return FALSE;
  }
  Coeffs cx = { 0 }, cy = { 0 };
  uint8_t *tmp = moshi_alloc ((size_t) h * dw * 3);
  gboolean ok = tmp && coeffs_init (&cx, w, dw) && coeffs_init (&cy, h, dh);
  if (!ok) {
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_IO,
        "image resize: out of memory");
    goto out;
  }
  /* Horizontal pass into an 8-bit intermediate, as PIL does. */
  for (int y = 0; y < h; y++) {
    const uint8_t *s = src + (size_t) y * stride;
    uint8_t *t = tmp + (size_t) y * dw * 3;
    for (int o = 0; o < dw; o++) {
      const float *k = cx.k + (size_t) o * cx.ksize;
      const uint8_t *p = s + (size_t) cx.start[o] * 3;
      float r = 0, g = 0, b = 0;
      for (int i = 0; i < cx.count[o]; i++, p += 3) {
        r += k[i] * p[0];
        g += k[i] * p[1];
        b += k[i] * p[2];
      }
      t[3 * o] = clip8 (r);
      t[3 * o + 1] = clip8 (g);
      t[3 * o + 2] = clip8 (b);
    }
  }
  for (int o = 0; o < dh; o++) {
    const float *k = cy.k + (size_t) o * cy.ksize;
    uint8_t *d = dst + (size_t) o * dst_stride;
    for (int x = 0; x < 3 * dw; x++) {
      float acc = 0;
      const uint8_t *p = tmp + (size_t) cy.start[o] * dw * 3 + x;
      for (int i = 0; i < cy.count[o]; i++, p += (size_t) dw * 3)
        acc += k[i] * *p;
      d[x] = clip8 (acc);
    }
  }
out:
  coeffs_clear (&cx);
  coeffs_clear (&cy);
  moshi_free (tmp);
  return ok;
}

gboolean
moshi_image_fit_square (const uint8_t *src, int w, int h, int stride,
    gboolean center_crop, uint8_t *dst, int side, GError **error)
{
  int x = 0, y = 0, m;
  /* The crop is checked against the whole picture's rows, not only the
   * square's. */
  if (center_crop && src && w > 0 && h > 0 && stride >= 3 * w && w <= MAX_SIDE
      && h <= MAX_SIDE) {
    moshi_image_center_square (w, h, &x, &y, &m);
    return moshi_image_resize_rgb (src + (size_t) y * stride + (size_t) x * 3,
        m, m, stride, dst, side, side, 3 * side, error);
  }
  return moshi_image_resize_rgb (src, w, h, stride, dst, side, side, 3 * side,
      error);
}
