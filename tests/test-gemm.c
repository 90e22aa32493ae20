/* Packed GEMM kernels against a plain double-precision reference, for every
 * storage type and every CPU level this machine has (the portable C path is
 * always tested). */
#include <glib.h>
#include <math.h>
#include <string.h>
#include <glib/gstdio.h>
#include <unistd.h>
#include <sys/mman.h>

#include "alloc.h"
#include "cpu.h"
#include "gemm.h"
#include "gemm-amx.h"

static float
frand (guint32 *s)
{
  *s = *s * 1664525u + 1013904223u;
  return ((*s >> 8) & 0xFFFF) / 32768.0f - 1.0f;
}

static gboolean
is_quantized (MoshiWeightType type)
{
  return type == MOSHI_WEIGHTS_Q8 || type == MOSHI_WEIGHTS_Q4;
}

/* Largest rounding error of one stored weight, as a fraction of the largest
 * |w| of its 32-block: half a quantization step.  Q8: scale = amax / 127.
 * Q4: the rms error over a block is at most that of scale = amax / 7
 * rounded to bf16 (up to 2^-8 off; a weight clipped to 7 because the scale
 * rounded down is off by at most 2^-8 amax), which the packing tries first
 * before searching for a better step; one weight's error is then at most
 * sqrt(32) times that (checked per block in check_shape).  The 1e-6 covers
 * float rounding of w / scale and q * scale. */
static double
weight_step_fraction (MoshiWeightType type)
{
  return (type == MOSHI_WEIGHTS_Q8 ? 0.5 / 127.0 : 0.5 / 7.0 * (1.0 + 0x1p-8))
      + 1e-6;
}

/* max |x[i * stride]| over the 32-block of k (blocks start at k = 0). */
static double
block_amax (const float *x, size_t stride, int K, int k)
{
  double amax = 0.0;
  for (int i = k / 32 * 32; i < MIN (K, k / 32 * 32 + 32); i++)
    amax = MAX (amax, fabs (x[(size_t) i * stride]));
  return amax;
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
  /* B column n as a strided vector, and the stored weights, dequantized. */
#define B_COL(n) (transposed ? B + (size_t) (n) *K : B + (n))
  const size_t b_stride = transposed ? 1 : (size_t) N;
  double *W = g_new (double, (size_t) K *N);
  double *block_sse = g_new0 (double, (size_t) (K / 32 + 1) * N);
  for (int k = 0; k < K; k++)
    for (int n = 0; n < N; n++) {
      float want = B_COL (n)[(size_t) k * b_stride];
      float got = moshi_packed_get (&P, k, n);
      W[(size_t) k * N + n] = got;
      double tol = type == MOSHI_WEIGHTS_F32 ? 0.0
          : type == MOSHI_WEIGHTS_BF16       ? 0x1p-8 * fabsf (want)
                                             : weight_step_fraction (type)
              * block_amax (B_COL (n), b_stride, K, k);
      block_sse[(size_t) (k / 32) * N + n] +=
          ((double) got - want) * ((double) got - want);
      if (type == MOSHI_WEIGHTS_Q4)
        tol *= sqrt (32.0);
      if (fabs ((double) got - want) > tol)
        g_error ("%s: weight (%d, %d) = %g stored as %g (tolerance %g)",
            moshi_weight_type_name (type), k, n, want, got, tol);
    }
  if (type == MOSHI_WEIGHTS_Q4)
    for (int k0 = 0; k0 < K; k0 += 32)
      for (int n = 0; n < N; n++) {
        const double e = weight_step_fraction (type)
            * block_amax (B_COL (n), b_stride, K, k0);
        g_assert_cmpfloat (block_sse[(size_t) (k0 / 32) * N + n], <=,
            MIN (32, K - k0) * e * e);
      }
  g_free (block_sse);

  MoshiPool *pool = moshi_pool_new (threads);
  moshi_gemm_packed (pool, M, A, lda, &P, with_bias ? bias : NULL, accumulate,
      C, N);
  moshi_pool_free (pool);

  /* Error bounds.  Float32 sums differ from exact ones by ~K ulp (the 1e-6
   * relative terms).  bf16 weights differ from B by up to 2^-8 relative.
   * Quantized weights differ by up to e_w = step fraction x block amax of w
   * (1/14 of it for q4); with VNNI the activations are rounded as well, by
   * up to e_a = block amax of a / 254.  Then
   *   |C - A B|  <= sum_k |a| e_w + |w| e_a + e_w e_a   (vs the float B)
   *   |C - A W|  <= sum_k |w_stored| e_a                (vs stored weights)
   * The first is the worst case of 4-bit rounding and grows like K while
   * real errors grow like sqrt(K), so the second, tight check is what
   * catches a kernel that reads the wrong weight. */
  const gboolean vnni = is_quantized (type) && moshi_cpu_has_avx512_vnni ();
  /* AMX rounds the activations to bf16 too: twice the bf16 error. */
  const gboolean amx = type == MOSHI_WEIGHTS_BF16 && M >= MOSHI_AMX_MIN_ROWS
      && K >= MOSHI_AMX_MIN_K && moshi_cpu_has_amx ();
  double max_err = 0.0, max_err_stored = 0.0;
  for (int m = 0; m < M; m++)
    for (int n = 0; n < N; n++) {
      const float *a_row = A + (size_t) m * lda;
      double ref = 0.0, ref_stored = 0.0, mag = 0.0, bound_q = 0.0;
      double bound_stored = 0.0;
      for (int k = 0; k < K; k++) {
        double w = B_COL (n)[(size_t) k * b_stride];
        double ws = W[(size_t) k * N + n];
        double a = a_row[k];
        ref += a * w;
        ref_stored += a * ws;
        mag += fabs (a * w);
        if (is_quantized (type)) {
          double e_w = weight_step_fraction (type)
              * block_amax (B_COL (n), b_stride, K, k)
              * (type == MOSHI_WEIGHTS_Q4 ? sqrt (32.0) : 1.0);
          double e_a = vnni ? block_amax (a_row, 1, K, k) / 254.0 : 0.0;
          bound_q += fabs (a) * e_w + fabs (w) * e_a + e_w * e_a;
          bound_stored += fabs (ws) * e_a;
        }
      }
      double extra = (with_bias ? bias[n] : 0.0)
          + (accumulate ? C0[(size_t) m * N + n] : 0.0);
      ref += extra;
      ref_stored += extra;
      double allowed = type == MOSHI_WEIGHTS_F32 ? 1e-6 * (mag + 1.0) + 1e-6
          : type == MOSHI_WEIGHTS_BF16
          ? (amx ? 8e-3 : 4e-3) * (mag + 1.0) + 1e-6
          : bound_q + 1e-5 * (mag + 1.0);
      double got = C[(size_t) m * N + n];
      max_err = MAX (max_err, fabs (got - ref) / allowed);
      if (is_quantized (type))
        max_err_stored = MAX (max_err_stored,
            fabs (got - ref_stored) / (bound_stored + 1e-5 * (mag + 1.0)));
    }
  if (max_err > 1.0 || max_err_stored > 1.0)
    g_error ("gemm %s level %s%s M=%d N=%d K=%d lda=%d: error %.3g of allowed "
             "(%.3g against the stored weights)",
        moshi_weight_type_name (type),
        moshi_cpu_level_name (moshi_cpu_level ()),
        vnni      ? "+vnni"
            : amx ? "+amx"
                  : "",
        M, N, K, lda, max_err, max_err_stored);
#undef B_COL
  g_free (W);
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
    /* From 16 rows bf16 weights go to AMX (when the CPU has it): row
     * blocks of 32 with remainders, K past and below the 32-k tile,
     * overlapping and padded rows, N below a panel. */
    { 16, 32, 32, 32 },
    { 17, 16, 40, 1 },
    { 63, 100, 1100, 64 },
    { 480, 33, 192, 64 },
    { 40, 64, 96, 200 },
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
    if (type == MOSHI_WEIGHTS_BF16 && moshi_cpu_has_amx ()) {
      /* Both ways on an AMX machine: the AVX-512 bf16 kernels too. */
      moshi_cpu_set_amx (FALSE);
      run_all_shapes (type);
      moshi_cpu_set_amx (TRUE);
    }
  }
  moshi_cpu_set_level (top);
}

/* Random operands of one product and two outputs to compare. */
typedef struct {
  int M, N, K;
  float *A, *B, *C1, *C2;
} Operands;

static Operands
operands_new (int M, int N, int K, guint32 seed)
{
  Operands o = { M, N, K, g_new (float, (size_t) M *K),
    g_new (float, (size_t) K *N), g_new (float, (size_t) M *N),
    g_new (float, (size_t) M *N) };
  for (int i = 0; i < M * K; i++)
    o.A[i] = frand (&seed);
  for (int i = 0; i < K * N; i++)
    o.B[i] = frand (&seed);
  return o;
}

static void
operands_free (Operands *o)
{
  g_free (o->A);
  g_free (o->B);
  g_free (o->C1);
  g_free (o->C2);
}

static const MoshiWeightType all_types[] = { MOSHI_WEIGHTS_F32,
  MOSHI_WEIGHTS_BF16, MOSHI_WEIGHTS_Q8, MOSHI_WEIGHTS_Q4 };

/* Splitting the work over threads only changes who computes each column,
 * never the summation order (activations are quantized once, before the
 * split): results must be bit-identical, for every type and CPU level and
 * any number of threads, including more threads than items (every item
 * must be computed once, whoever takes it: the output starts as NaN). */
static void
threads_identical (int M, int N, int K)
{
  Operands o = operands_new (M, N, K, 1);
  float *A = o.A, *B = o.B, *C1 = o.C1, *C2 = o.C2;
  const MoshiWeightType *types = all_types;
  const int thread_counts[] = { 2, 3, 5 };
  MoshiPool *p1 = moshi_pool_new (1);
  MoshiCpuLevel top = moshi_cpu_level ();
  for (size_t n = 0; n < G_N_ELEMENTS (thread_counts); n++) {
    MoshiPool *pn = moshi_pool_new (thread_counts[n]);
    for (int level = MOSHI_CPU_GENERIC; level <= (int) top; level++) {
      moshi_cpu_set_level ((MoshiCpuLevel) level);
      for (size_t t = 0; t < G_N_ELEMENTS (all_types); t++) {
        MoshiPackedB P;
        g_assert_true (
            moshi_packed_init_typed (&P, B, K, N, N, FALSE, types[t]));
        moshi_gemm_packed (p1, M, A, K, &P, NULL, FALSE, C1, N);
        for (int i = 0; i < M * N; i++)
          C2[i] = NAN;
        moshi_gemm_packed (pn, M, A, K, &P, NULL, FALSE, C2, N);
        g_assert_cmpmem (C1, sizeof (float) * M * N, C2,
            sizeof (float) * M * N);
        moshi_packed_clear (&P);
      }
    }
    moshi_pool_free (pn);
  }
  moshi_cpu_set_level (top);
  moshi_pool_free (p1);
  operands_free (&o);
}

/* moshi_alloc_huge: 2 MB-aligned, zero-filled and writable to its last
 * byte, at sizes below, at and past a huge page; a failed madvise (THP off)
 * must not matter. */
static void
test_alloc_huge (void)
{
  const size_t sizes[] = { 1, 4095, 4096, (size_t) 2 << 20,
    ((size_t) 2 << 20) + 1, ((size_t) 5 << 20) + 123 };
  for (size_t i = 0; i < G_N_ELEMENTS (sizes); i++) {
    uint8_t *p = moshi_alloc_huge (sizes[i]);
    g_assert_nonnull (p);
    g_assert_cmpuint ((uintptr_t) p % ((uintptr_t) 2 << 20), ==, 0);
    for (size_t k = 0; k < sizes[i]; k += 4096)
      g_assert_cmpuint (p[k], ==, 0);
    g_assert_cmpuint (p[sizes[i] - 1], ==, 0);
    memset (p, 0xA5, sizes[i]);
    moshi_free (p);
  }
  moshi_alloc_fail_after (1);
  g_assert_null (moshi_alloc_huge (100));
  moshi_alloc_fail_after (0);
}

/* Settling moves weights into huge-page memory without changing a result
 * bit, whether they were packed here or borrowed from a mapped file. */
static void
test_settle (void)
{
  const int M = 3, K = 300, N = 200;
  Operands o = operands_new (M, N, K, 7);
  float *A = o.A, *B = o.B, *C1 = o.C1, *C2 = o.C2;
  const MoshiWeightType *types = all_types;
  for (size_t t = 0; t < G_N_ELEMENTS (all_types); t++) {
    MoshiPackedB P;
    g_assert_true (moshi_packed_init_typed (&P, B, K, N, N, FALSE, types[t]));
    moshi_gemm_packed (NULL, M, A, K, &P, NULL, FALSE, C1, N);

    /* The same arrays in a file, mapped read-only and lent (as the pack
     * cache does); written before P moves. */
    void *ptrs[4];
    size_t bytes[4];
    moshi_packed_layout (&P, ptrs, bytes);
    gchar *path = NULL;
    const int fd = g_file_open_tmp ("test-gemm-XXXXXX", &path, NULL);
    g_assert_cmpint (fd, >=, 0);
    size_t off[2] = { 0, (bytes[0] + 4095) / 4096 * 4096 };
    g_assert_cmpint (pwrite (fd, ptrs[0], bytes[0], 0), ==, (ssize_t) bytes[0]);
    if (bytes[1] > 0)
      g_assert_cmpint (pwrite (fd, ptrs[1], bytes[1], off[1]), ==,
          (ssize_t) bytes[1]);
    const size_t file_len = off[1] + bytes[1];
    uint8_t *map = mmap (NULL, file_len, PROT_READ, MAP_PRIVATE, fd, 0);
    g_assert_true (map != MAP_FAILED);

    const void *old = P.data;
    g_assert_true (moshi_packed_settle (&P));
    g_assert_true (P.data != old);
    g_assert_cmpuint ((uintptr_t) P.data % ((uintptr_t) 2 << 20), ==, 0);
    moshi_gemm_packed (NULL, M, A, K, &P, NULL, FALSE, C2, N);
    g_assert_cmpmem (C1, sizeof (float) * M * N, C2, sizeof (float) * M * N);

    /* Out of memory: the weights stay, still usable. */
    const void *settled = P.data;
    moshi_alloc_fail_after (1);
    g_assert_false (moshi_packed_settle (&P));
    moshi_alloc_fail_after (0);
    g_assert_true (P.data == settled);

    MoshiPackedB L;
    void *lent[4] = { map, bytes[1] > 0 ? map + off[1] : NULL, NULL, NULL };
    moshi_packed_borrow (&L, K, N, types[t], lent);
    g_assert_true (moshi_packed_settle (&L));
    g_assert_false (L.borrowed);
    g_assert_true ((const uint8_t *) L.data != map);
    for (int i = 0; i < M * N; i++)
      C2[i] = NAN;
    moshi_gemm_packed (NULL, M, A, K, &L, NULL, FALSE, C2, N);
    g_assert_cmpmem (C1, sizeof (float) * M * N, C2, sizeof (float) * M * N);
    moshi_packed_clear (&L); /* frees the copy, not the file */
    munmap (map, file_len);
    close (fd);
    g_unlink (path);
    g_free (path);
    moshi_packed_clear (&P);
  }
  operands_free (&o);
}

static void
test_threads_identical (void)
{
  threads_identical (9, 300, 257);
  threads_identical (70, 300, 257); /* AMX-sized for bf16 */
  threads_identical (1, 2000, 512); /* a streaming step's shape */
  threads_identical (1, 64, 4096); /* two panels, five threads */
  threads_identical (200, 96, 300); /* several row blocks */
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
  g_assert_true (moshi_weight_type_from_string ("q4", &t));
  g_assert_cmpint (t, ==, MOSHI_WEIGHTS_Q4);
  g_assert_false (moshi_weight_type_from_string ("q3", &t));
  g_assert_cmpstr (moshi_weight_type_name (MOSHI_WEIGHTS_Q8), ==, "q8");
  g_assert_cmpstr (moshi_weight_type_name (MOSHI_WEIGHTS_Q4), ==, "q4");
}

/* Q8 stores a byte per weight plus a 4-byte scale per 32, Q4 half a byte
 * plus a 2-byte scale per 32: the sizes
 * the memory-traffic argument relies on. */
static void
test_packed_bytes (void)
{
  float *B = g_new0 (float, 64 * 64);
  const struct {
    MoshiWeightType type;
    size_t bytes;
  } want[] = {
    { MOSHI_WEIGHTS_F32, 4 * 4096 },
    { MOSHI_WEIGHTS_BF16, 2 * 4096 },
    { MOSHI_WEIGHTS_Q8, 4096 + 4 * 128 },
    { MOSHI_WEIGHTS_Q4, 2048 + 2 * 128 },
  };
  for (size_t i = 0; i < G_N_ELEMENTS (want); i++) {
    MoshiPackedB P;
    g_assert_true (
        moshi_packed_init_typed (&P, B, 64, 64, 64, FALSE, want[i].type));
    g_assert_cmpuint (moshi_packed_bytes (&P), ==, want[i].bytes);
    moshi_packed_clear (&P);
  }
  g_free (B);
}

/* Q4's step search: on Gaussian-like weights (sums of uniforms) the
 * squared error of the stored weights must be clearly below that of
 * rounding with amax / 7, the scale a plain quantizer takes (computed here
 * with a float scale, which only flatters it). */
static void
test_q4_search (void)
{
  const int K = 4096, N = 64;
  float *B = g_new (float, (size_t) K *N);
  guint32 seed = 11;
  for (size_t i = 0; i < (size_t) K * N; i++)
    B[i] = frand (&seed) + frand (&seed) + frand (&seed);
  MoshiPackedB P;
  g_assert_true (
      moshi_packed_init_typed (&P, B, K, N, N, FALSE, MOSHI_WEIGHTS_Q4));
  double sse = 0.0, sse_plain = 0.0;
  for (int n = 0; n < N; n++)
    for (int k0 = 0; k0 < K; k0 += 32) {
      const double amax = block_amax (B + n, N, K, k0), step = amax / 7.0;
      for (int k = k0; k < k0 + 32; k++) {
        const double w = B[(size_t) k * N + n];
        const double got = moshi_packed_get (&P, k, n);
        sse += (got - w) * (got - w);
        const double plain = step > 0 ? step * rint (w / step) : 0.0;
        sse_plain += (plain - w) * (plain - w);
      }
    }
  g_test_message ("q4 squared error %.4g, plain rounding %.4g (%.2f dB)", sse,
      sse_plain, 10.0 * log10 (sse_plain / sse));
  g_assert_cmpfloat (sse, <, 0.85 * sse_plain);
  moshi_packed_clear (&P);
  g_free (B);
}

/* Weights that are exact multiples of a power-of-two scale (each block
 * holds all of -7..7) survive Q4 exactly, and all-zero columns give zero
 * scales without dividing by zero; then, at every level, the only error
 * left is the activations' int8 rounding with VNNI. */
static void
test_q4_exact (void)
{
  const int M = 3, K = 64, N = 40;
  float *A = g_new (float, (size_t) M *K), *B = g_new (float, (size_t) K *N);
  float *C = g_new (float, (size_t) M *N);
  guint32 seed = 7;
  for (int i = 0; i < M * K; i++)
    A[i] = frand (&seed);
  for (int k = 0; k < K; k++)
    for (int n = 0; n < N; n++)
      B[(size_t) k * N + n] =
          n % 8 == 5 ? 0.0f : ldexpf ((float) ((k + n) % 15 - 7), -(n % 4));
  MoshiPackedB P;
  g_assert_true (
      moshi_packed_init_typed (&P, B, K, N, N, FALSE, MOSHI_WEIGHTS_Q4));
  for (int k = 0; k < K; k++)
    for (int n = 0; n < N; n++)
      g_assert_cmpfloat (moshi_packed_get (&P, k, n), ==,
          B[(size_t) k * N + n]);
  MoshiCpuLevel top = moshi_cpu_level ();
  for (int level = MOSHI_CPU_GENERIC; level <= (int) top; level++) {
    moshi_cpu_set_level ((MoshiCpuLevel) level);
    const gboolean vnni = moshi_cpu_has_avx512_vnni ();
    moshi_gemm_packed (NULL, M, A, K, &P, NULL, FALSE, C, N);
    for (int m = 0; m < M; m++)
      for (int n = 0; n < N; n++) {
        double ref = 0.0, bound = 1e-5;
        for (int k = 0; k < K; k++) {
          double w = B[(size_t) k * N + n];
          ref += (double) A[(size_t) m * K + k] * w;
          bound += 1e-5 * fabs (w);
          if (vnni)
            bound +=
                fabs (w) * block_amax (A + (size_t) m * K, 1, K, k) / 254.0;
        }
        g_assert_cmpfloat (fabs (C[(size_t) m * N + n] - ref), <=, bound);
        if (n % 8 == 5)
          g_assert_cmpfloat (C[(size_t) m * N + n], ==, 0.0f);
      }
  }
  moshi_cpu_set_level (top);
  moshi_packed_clear (&P);
  g_free (A);
  g_free (B);
  g_free (C);
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
  g_test_add_data_func ("/gemm/q4", GINT_TO_POINTER (MOSHI_WEIGHTS_Q4),
      test_levels);
  g_test_add_func ("/gemm/q4-exact", test_q4_exact);
  g_test_add_func ("/gemm/q4-search", test_q4_search);
  g_test_add_func ("/gemm/packed-bytes", test_packed_bytes);
  g_test_add_func ("/gemm/threads-identical", test_threads_identical);
  g_test_add_func ("/gemm/alloc-huge", test_alloc_huge);
  g_test_add_func ("/gemm/settle", test_settle);
  g_test_add_func ("/gemm/weight-type-names", test_weight_type_names);
  return g_test_run ();
}
