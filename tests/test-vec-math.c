/* test-vec-math: the vectorized elementwise kernels of the language
 * models (models/vec-math.c) at every CPU level this machine has, against
 * double precision: attention's masked softmax and the gated feed-forward's
 * SiLU.  (The vision tower's GELU and row softmax: test-siglip.) */
#include <glib.h>
#include <math.h>
#include <string.h>

#include "cpu.h"
#include "vec-math.h"

static float
frand (guint32 *s)
{
  *s = *s * 1664525u + 1013904223u;
  return (float) ((*s >> 8) / 16777216.0 * 2.0 - 1.0);
}

/* moshi_softmax_kept at every CPU level: ranges that start and end inside
 * vectors, slots dropped by the mask become 0, slots outside [lo, hi] are
 * not touched, and exp / sum match a double-precision reference. */
static void
test_softmax_kept (void)
{
  const MoshiCpuLevel top = moshi_cpu_level ();
  const int n = 300;
  const int ranges[][2] = { { 0, 0 }, { 3, 17 }, { 0, 299 }, { 21, 250 },
    { 290, 299 }, { 16, 31 } };
  guint32 seed = 5;
  float x[300], orig[300];
  guint8 keep[300];
  for (int level = MOSHI_CPU_GENERIC; level <= (int) top; level++) {
    moshi_cpu_set_level ((MoshiCpuLevel) level);
    for (guint r = 0; r < G_N_ELEMENTS (ranges); r++) {
      const int lo = ranges[r][0], hi = ranges[r][1];
      for (int j = 0; j < n; j++) {
        orig[j] = x[j] = 20.0f * frand (&seed);
        keep[j] = j == lo || frand (&seed) > -0.6f;
      }
      const float inv = moshi_softmax_kept (x, keep, lo, hi);
      double m = -INFINITY, sum = 0.0;
      for (int j = lo; j <= hi; j++)
        if (keep[j])
          m = MAX (m, orig[j]);
      for (int j = lo; j <= hi; j++)
        if (keep[j])
          sum += exp ((double) orig[j] - m);
      g_assert_cmpfloat (fabs (inv * sum - 1.0), <, 3e-6);
      for (int j = 0; j < n; j++) {
        if (j < lo || j > hi)
          g_assert_cmpfloat (x[j], ==, orig[j]);
        else if (!keep[j])
          g_assert_cmpfloat (x[j], ==, 0.0f);
        else /* x - max rounded to float (up to 2e-6 here), then ~2 ulp */
          g_assert_cmpfloat (fabs (x[j] - exp ((double) orig[j] - m)), <=,
              3e-6 * exp ((double) orig[j] - m));
      }
    }
  }
  moshi_cpu_set_level (top);
}

/* moshi_silu_mul at every CPU level: lengths with vector tails, gates over
 * and beyond exp's clamped range, in place (dst = gate), NaN kept. */
static void
test_silu_mul (void)
{
  const MoshiCpuLevel top = moshi_cpu_level ();
  const size_t sizes[] = { 1, 15, 16, 17, 2816, 11264 + 5 };
  guint32 seed = 3;
  for (int level = MOSHI_CPU_GENERIC; level <= (int) top; level++) {
    moshi_cpu_set_level ((MoshiCpuLevel) level);
    for (guint k = 0; k < G_N_ELEMENTS (sizes); k++) {
      const size_t n = sizes[k];
      float *g = g_new (float, n), *v = g_new (float, n), *y = g_new (float, n);
      for (size_t i = 0; i < n; i++) {
        /* mostly |g| < 12, a few far out (exp(-g) clamped or 0) */
        g[i] = i % 97 == 5 ? 150.0f * frand (&seed) : 12.0f * frand (&seed);
        v[i] = 3.0f * frand (&seed);
      }
      moshi_silu_mul (y, g, v, n);
      for (size_t i = 0; i < n; i++) {
        const double ref = g[i] / (1.0 + exp (-(double) g[i])) * v[i];
        g_assert_cmpfloat (fabs (y[i] - ref), <=, 1e-6 * fabs (ref) + 1e-30);
      }
      /* in place */
      memcpy (y, g, sizeof (float) * n);
      moshi_silu_mul (y, y, v, n);
      for (size_t i = 0; i < n; i++) {
        const double ref = g[i] / (1.0 + exp (-(double) g[i])) * v[i];
        g_assert_cmpfloat (fabs (y[i] - ref), <=, 1e-6 * fabs (ref) + 1e-30);
      }
      g[0] = NAN;
      moshi_silu_mul (y, g, v, n);
      g_assert_true (isnan (y[0]));
      g_free (g);
      g_free (v);
      g_free (y);
    }
  }
  moshi_cpu_set_level (top);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/vec-math/softmax-kept", test_softmax_kept);
  g_test_add_func ("/vec-math/silu-mul", test_silu_mul);
  return g_test_run ();
}
