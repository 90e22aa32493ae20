/* Packed GEMM kernels against a plain double-precision reference, for every
 * storage type and every CPU level this machine has (the portable C path is
 * always tested). */
#include <glib.h>
#include <math.h>
#include <string.h>

#include "alloc.h"
#include "cpu.h"
#include "gemm.h"

static float
frand (guint32 *s)
{
  *s = *s * 1664525u + 1013904223u;
  return ((*s >> 8) & 0xFFFF) / 32768.0f - 1.0f;
}

/* Checks C = bias + A*B (+ C0) for one shape; A rows overlap when
 * lda < K, as conv windows do. */
static void
check_shape (MoshiWeightType type, int M, int N, int K, int lda,
    gboolean transposed, gboolean with_bias, gboolean accumulate, int threads)
{
  guint32 seed = (guint32) (M * 131 + N * 7 + K * 3 + type);
  const size_t a_len = (size_t) (M - 1) * lda + K;
  float *A = g_new (float, a_len);
  float *B = g_new (float, (size_t) K *N);
  float *bias = g_new (float, N);
  float *C = g_new (float, (size_t) M *N);
  float *C0 = g_new (float, (size_t) M *N);
  for (size_t i = 0; i < a_len; i++)
    A[i] = frand (&seed);
  for (size_t i = 0; i < (size_t) K * N; i++)
    B[i] = frand (&seed);
  for (int i = 0; i < N; i++)
    bias[i] = frand (&seed);
  for (size_t i = 0; i < (size_t) M * N; i++)
    C[i] = C0[i] = frand (&seed);

  MoshiPackedB P;
  /* B is [K][N] row-major, or [N][K] when transposed. */
  g_assert_true (moshi_packed_init_typed (&P, B, K, N, transposed ? K : N,
      transposed, type));
  for (int k = 0; k < K; k += MAX (1, K / 5))
    for (int n = 0; n < N; n += MAX (1, N / 5)) {
      float want = transposed ? B[(size_t) n * K + k] : B[(size_t) k * N + n];
      float tol = type == MOSHI_WEIGHTS_F32 ? 0.0f : 0.01f;
      g_assert_cmpfloat (fabsf (moshi_packed_get (&P, k, n) - want), <=, tol);
    }

  MoshiPool *pool = moshi_pool_new (threads);
  moshi_gemm_packed (pool, M, A, lda, &P, with_bias ? bias : NULL, accumulate,
      C, N);
  moshi_pool_free (pool);

  /* Error bound: exact arithmetic on the stored (possibly rounded) weights
   * differs from float32 sums by ~K ulp; rounded weights differ from B by
   * up to 2^-8 relative (bf16) or half a quantization step (q8). */
  double max_err = 0.0, max_allowed = 0.0;
  for (int m = 0; m < M; m++)
    for (int n = 0; n < N; n++) {
      double ref = 0.0, mag = 0.0;
      for (int k = 0; k < K; k++) {
        double w = transposed ? B[(size_t) n * K + k] : B[(size_t) k * N + n];
        double a = A[(size_t) m * lda + k];
        ref += a * w;
        mag += fabs (a * w);
      }
      if (with_bias)
        ref += bias[n];
      if (accumulate)
        ref += C0[(size_t) m * N + n];
      double rel = type == MOSHI_WEIGHTS_F32 ? 1e-6
          : type == MOSHI_WEIGHTS_BF16       ? 4e-3
                                             : 8e-3;
      double allowed = rel * (mag + 1.0) + 1e-6;
      double err = fabs (C[(size_t) m * N + n] - ref);
      max_err = MAX (max_err, err / allowed);
      max_allowed = MAX (max_allowed, allowed);
    }
  if (max_err > 1.0)
    g_error ("gemm %s level %s M=%d N=%d K=%d lda=%d: error %.3g of allowed",
        moshi_weight_type_name (type),
        moshi_cpu_level_name (moshi_cpu_level ()), M, N, K, lda, max_err);
  moshi_packed_clear (&P);
  g_free (A);
  g_free (B);
  g_free (bias);
  g_free (C);
  g_free (C0);
}

static void
run_all_shapes (MoshiWeightType type)
{
  const int shapes[][4] = {
    /* M, N, K, lda */
    { 1, 1, 1, 1 },
    { 2, 33, 17, 17 },
    { 7, 64, 100, 100 },
    { 13, 31, 7, 1 },
    { 6, 96, 64, 32 },
    { 200, 40, 48, 8 },
    { 2, 512, 512, 512 },
    { 97, 70, 33, 33 },
    { 5, 17, 65, 130 },
  };
  for (size_t i = 0; i < G_N_ELEMENTS (shapes); i++)
    for (int t = 0; t < 2; t++)
      check_shape (type, shapes[i][0], shapes[i][1], shapes[i][2], shapes[i][3],
          t, i % 2 == 0, i % 3 == 0, 1 + (int) (i % 2));
}

static void
test_levels (gconstpointer data)
{
  MoshiWeightType type = GPOINTER_TO_INT (data);
  MoshiCpuLevel top = moshi_cpu_level ();
  for (int level = MOSHI_CPU_GENERIC; level <= (int) top; level++) {
    moshi_cpu_set_level ((MoshiCpuLevel) level);
    run_all_shapes (type);
  }
  moshi_cpu_set_level (top);
}

/* Splitting the work over threads only changes who computes each column,
 * never the summation order: results must be bit-identical. */
static void
test_threads_identical (void)
{
  const int M = 9, N = 300, K = 257;
  float *A = g_new (float, (size_t) M *K), *B = g_new (float, (size_t) K *N);
  float *C1 = g_new (float, (size_t) M *N), *C2 = g_new (float, (size_t) M *N);
  guint32 seed = 1;
  for (int i = 0; i < M * K; i++)
    A[i] = frand (&seed);
  for (int i = 0; i < K * N; i++)
    B[i] = frand (&seed);
  MoshiPackedB P;
  g_assert_true (moshi_packed_init (&P, B, K, N, N, FALSE));
  MoshiPool *p1 = moshi_pool_new (1), *p2 = moshi_pool_new (2);
  moshi_gemm_packed (p1, M, A, K, &P, NULL, FALSE, C1, N);
  moshi_gemm_packed (p2, M, A, K, &P, NULL, FALSE, C2, N);
  g_assert_cmpmem (C1, sizeof (float) * M * N, C2, sizeof (float) * M * N);
  moshi_pool_free (p1);
  moshi_pool_free (p2);
  moshi_packed_clear (&P);
  g_free (A);
  g_free (B);
  g_free (C1);
  g_free (C2);
}

static void
test_weight_type_names (void)
{
  MoshiWeightType t;
  g_assert_true (moshi_weight_type_from_string ("q8", &t));
  g_assert_cmpint (t, ==, MOSHI_WEIGHTS_Q8);
  g_assert_true (moshi_weight_type_from_string ("none", &t));
  g_assert_cmpint (t, ==, MOSHI_WEIGHTS_F32);
  g_assert_true (moshi_weight_type_from_string ("BF16", &t));
  g_assert_cmpint (t, ==, MOSHI_WEIGHTS_BF16);
  g_assert_false (moshi_weight_type_from_string ("q3", &t));
  g_assert_cmpstr (moshi_weight_type_name (MOSHI_WEIGHTS_Q8), ==, "q8");
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_data_func ("/gemm/f32", GINT_TO_POINTER (MOSHI_WEIGHTS_F32),
      test_levels);
  g_test_add_data_func ("/gemm/bf16", GINT_TO_POINTER (MOSHI_WEIGHTS_BF16),
      test_levels);
  g_test_add_data_func ("/gemm/q8", GINT_TO_POINTER (MOSHI_WEIGHTS_Q8),
      test_levels);
  g_test_add_func ("/gemm/threads-identical", test_threads_identical);
  g_test_add_func ("/gemm/weight-type-names", test_weight_type_names);
  return g_test_run ();
}
