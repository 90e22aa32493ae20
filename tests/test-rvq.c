/* test-rvq: the residual VQ's nearest-code search (an int8 pass with error
 * bounds, then exact rescoring of the remaining candidates) must return
 * exactly the code a brute-force search in double precision returns, at
 * every CPU level, for ordinary inputs and for near-ties. */
#include <glib.h>
#include <math.h>
#include <string.h>

#include "alloc.h"
#include "cpu.h"
#include "kernels.h"
#include "rvq.h"

static float
frand (guint32 *s)
{
  *s = *s * 1664525u + 1013904223u;
  return (float) ((*s >> 8) / 16777216.0 * 2.0 - 1.0);
}

/* The codes of one part, searched by brute force on the same float32
 * residuals the library computes. */
static void
reference_part (const Rvq *q, const RvqPart *p, int n, const float *latent,
    uint16_t *codes)
{
  const int dim = q->dim, bins = q->bins;
  float *r = g_new (float, dim);
  for (int j = 0; j < dim; j++)
    r[j] = moshi_dot (p->in_proj + (size_t) j * q->in_dim, latent, q->in_dim);
  for (int i = 0; i < n; i++) {
    const MoshiPackedB *cb = &p->codebooks[i];
    int best = 0;
    double best_d = INFINITY;
    for (int b = 0; b < bins; b++) {
      double dot = 0.0;
      for (int k = 0; k < dim; k++)
        dot += (double) r[k] * moshi_packed_get (cb, k, b);
      double d = p->norms[(size_t) i * bins + b] - 2.0 * dot;
      if (d < best_d) {
        best_d = d;
        best = b;
      }
    }
    codes[i] = (uint16_t) best;
    for (int k = 0; k < dim; k++)
      r[k] -= moshi_packed_get (cb, k, best);
  }
  g_free (r);
}

static void
reference_encode (const Rvq *q, int n, const float *latent, uint16_t *codes)
{
  reference_part (q, &q->first, 1, latent, codes);
  if (n > 1)
    reference_part (q, &q->rest, n - 1, latent, codes + 1);
}

static int
check_latents (const Rvq *q, int n_q, const float *latents, int count)
{
  float *scratch = g_new (float, rvq_scratch_floats (q));
  uint16_t got[32], want[32];
  int differ = 0;
  for (int t = 0; t < count; t++) {
    const float *x = latents + (size_t) t * q->in_dim;
    rvq_encode (q, n_q, x, got, scratch);
    reference_encode (q, n_q, x, want);
    for (int i = 0; i < n_q; i++)
      if (got[i] != want[i]) {
        g_printerr ("latent %d codebook %d (%s): got %u, nearest is %u\n", t, i,
            moshi_cpu_level_name (moshi_cpu_level ()), got[i], want[i]);
        differ++;
      }
  }
  g_free (scratch);
  return differ;
}

/* Full-size shapes (256-d codes, 2048 per codebook, 8 codebooks), latents
 * of very different scales: the int8 pass's error grows with the scale. */
static void
test_random_latents (void)
{
  Rvq q;
  uint64_t seed = 7;
  rvq_random (&q, &seed, 256, 512, 512, 2048, 8);
  const int count = 60;
  float *latents = g_new (float, (size_t) count * 512);
  guint32 s = 3;
  for (int t = 0; t < count; t++) {
    const float scale = t % 3 == 0 ? 1e-3f : t % 3 == 1 ? 1.0f : 40.0f;
    for (int j = 0; j < 512; j++)
      latents[(size_t) t * 512 + j] = scale * frand (&s);
  }
  MoshiCpuLevel top = moshi_cpu_level ();
  for (int level = MOSHI_CPU_GENERIC; level <= (int) top; level++) {
    moshi_cpu_set_level ((MoshiCpuLevel) level);
    g_assert_cmpint (check_latents (&q, 8, latents, count), ==, 0);
  }
  moshi_cpu_set_level (top);
  g_free (latents);
  rvq_clear (&q);
}

/* Solves A x = y (n x n, row-major) by Gaussian elimination with partial
 * pivoting, in double. */
static void
solve (const float *A, const double *y, int n, float *x)
{
  double *M = g_new (double, (size_t) n *(n + 1));
  for (int i = 0; i < n; i++) {
    for (int j = 0; j < n; j++)
      M[(size_t) i * (n + 1) + j] = A[(size_t) i * n + j];
    M[(size_t) i * (n + 1) + n] = y[i];
  }
  for (int c = 0; c < n; c++) {
    int piv = c;
    for (int r = c + 1; r < n; r++)
      if (fabs (M[(size_t) r * (n + 1) + c])
          > fabs (M[(size_t) piv * (n + 1) + c]))
        piv = r;
    for (int j = 0; j <= n; j++) {
      double t = M[(size_t) c * (n + 1) + j];
      M[(size_t) c * (n + 1) + j] = M[(size_t) piv * (n + 1) + j];
      M[(size_t) piv * (n + 1) + j] = t;
    }
    for (int r = 0; r < n; r++) {
      if (r == c)
        continue;
      double f = M[(size_t) r * (n + 1) + c] / M[(size_t) c * (n + 1) + c];
      for (int j = c; j <= n; j++)
        M[(size_t) r * (n + 1) + j] -= f * M[(size_t) c * (n + 1) + j];
    }
  }
  for (int i = 0; i < n; i++)
    x[i] = (float) (M[(size_t) i * (n + 1) + n] / M[(size_t) i * (n + 1) + i]);
  g_free (M);
}

/* Residuals placed half-way between two codes (plus a perturbation of
 * 1e-7 .. 1e-3 of their distance): the int8 scores cannot tell the two
 * apart, so the search must rescore both and agree with brute force. */
static void
test_near_ties (void)
{
  const int dim = 64, bins = 256;
  Rvq q;
  uint64_t seed = 11;
  rvq_random (&q, &seed, dim, dim, dim, bins, 2);
  const int count = 80;
  float *latents = g_new (float, (size_t) count *dim);
  double *target = g_new (double, dim);
  guint32 s = 5;
  for (int t = 0; t < count; t++) {
    const int a = (int) ((frand (&s) + 1.0f) * 0.5f * (bins - 1));
    const int b = (a + 1 + t) % bins;
    const double eps =
        pow (10.0, -7.0 + 4.0 * (t % 5) / 4.0) * (t % 2 ? 1.0 : -1.0);
    for (int k = 0; k < dim; k++) {
      double ea = moshi_packed_get (&q.first.codebooks[0], k, a);
      double eb = moshi_packed_get (&q.first.codebooks[0], k, b);
      target[k] = 0.5 * (ea + eb) + eps * (ea - eb);
    }
    solve (q.first.in_proj, target, dim, latents + (size_t) t * dim);
  }
  MoshiCpuLevel top = moshi_cpu_level ();
  for (int level = MOSHI_CPU_GENERIC; level <= (int) top; level++) {
    moshi_cpu_set_level ((MoshiCpuLevel) level);
    g_assert_cmpint (check_latents (&q, 1, latents, count), ==, 0);
  }
  moshi_cpu_set_level (top);
  g_free (target);
  g_free (latents);
  rvq_clear (&q);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/rvq/random-latents", test_random_latents);
  g_test_add_func ("/rvq/near-ties", test_near_ties);
  return g_test_run ();
}
