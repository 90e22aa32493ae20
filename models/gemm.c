#include "gemm.h"

#include "alloc.h"
#include "cpu.h"

#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#define NR MOSHI_GEMM_NR

gboolean
moshi_packed_init (MoshiPackedB *p, const float *b, int K, int N, int ldb,
    gboolean transposed)
{
  p->K = K;
  p->N = N;
  p->n_panels = (N + NR - 1) / NR;
  p->data = moshi_alloc (sizeof (float) * (size_t) p->n_panels * K * NR);
  if (!p->data)
    return FALSE;
  for (int pn = 0; pn < p->n_panels; pn++)
    for (int k = 0; k < K; k++) {
      float *dst = p->data + ((size_t) pn * K + k) * NR;
      for (int j = 0; j < NR; j++) {
        int n = pn * NR + j;
        if (n < N)
          dst[j] = transposed ? b[(size_t) n * ldb + k] : b[(size_t) k * ldb + n];
      }
    }
  return TRUE;
}

void
moshi_packed_clear (MoshiPackedB *p)
{
  moshi_free (p->data);
  p->data = NULL;
}

size_t
moshi_packed_bytes (const MoshiPackedB *p)
{
  return sizeof (float) * (size_t) p->n_panels * p->K * NR;
}

float
moshi_packed_get (const MoshiPackedB *p, int k, int n)
{
  return p->data[((size_t) (n / NR) * p->K + k) * NR + n % NR];
}

/* Writes one tile's sums to C with the epilogue (bias, accumulate). */
static inline void
store_row (float *c, const float *sum, const float *bias, int ncols,
    gboolean accumulate)
{
  for (int j = 0; j < ncols; j++) {
    float v = sum[j] + (bias ? bias[j] : 0.0f);
    c[j] = accumulate ? c[j] + v : v;
  }
}

/* ------------------------------------------------------------ generic --- */

static void
panel_generic (int M, const float *A, int lda, const float *Bp, int K,
    const float *bias, gboolean accumulate, float *C, int ldc, int ncols)
{
  for (int m = 0; m < M; m++) {
    float sum[NR] = { 0 };
    const float *a = A + (size_t) m * lda;
    for (int k = 0; k < K; k++) {
      const float av = a[k];
      const float *b = Bp + (size_t) k * NR;
      for (int j = 0; j < NR; j++)
        sum[j] += av * b[j];
    }
    store_row (C + (size_t) m * ldc, sum, bias, ncols, accumulate);
  }
}

#if defined(__x86_64__)

/* --------------------------------------------------------------- AVX2 --- */

#define AVX2_MR 3

__attribute__((target ("avx2,fma")))
static inline void
tile_avx2 (int mr, const float *A, int lda, const float *Bp, int K,
    const float *bias, gboolean accumulate, float *C, int ldc, int ncols)
{
  __m256 acc[AVX2_MR][4];
  for (int i = 0; i < AVX2_MR; i++)
    for (int j = 0; j < 4; j++)
      acc[i][j] = _mm256_setzero_ps ();
  for (int k = 0; k < K; k++) {
    const float *b = Bp + (size_t) k * NR;
    __m256 b0 = _mm256_load_ps (b), b1 = _mm256_load_ps (b + 8);
    __m256 b2 = _mm256_load_ps (b + 16), b3 = _mm256_load_ps (b + 24);
    for (int i = 0; i < AVX2_MR; i++) {
      if (i >= mr)
        break;
      __m256 a = _mm256_broadcast_ss (A + (size_t) i * lda + k);
      acc[i][0] = _mm256_fmadd_ps (a, b0, acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps (a, b1, acc[i][1]);
      acc[i][2] = _mm256_fmadd_ps (a, b2, acc[i][2]);
      acc[i][3] = _mm256_fmadd_ps (a, b3, acc[i][3]);
    }
  }
  for (int i = 0; i < mr; i++) {
    float sum[NR] __attribute__((aligned (32)));
    for (int j = 0; j < 4; j++)
      _mm256_store_ps (sum + 8 * j, acc[i][j]);
    store_row (C + (size_t) i * ldc, sum, bias, ncols, accumulate);
  }
}

__attribute__((target ("avx2,fma")))
static void
panel_avx2 (int M, const float *A, int lda, const float *Bp, int K,
    const float *bias, gboolean accumulate, float *C, int ldc, int ncols)
{
  int m = 0;
  for (; m + AVX2_MR <= M; m += AVX2_MR)
    tile_avx2 (AVX2_MR, A + (size_t) m * lda, lda, Bp, K, bias, accumulate,
        C + (size_t) m * ldc, ldc, ncols);
  if (m < M)
    tile_avx2 (M - m, A + (size_t) m * lda, lda, Bp, K, bias, accumulate,
        C + (size_t) m * ldc, ldc, ncols);
}

/* ------------------------------------------------------------ AVX-512 --- */

#define AVX512_MR 6

/* One tile of MR rows x 32 columns; MR is a compile-time constant at each
 * call site so the accumulators stay in registers. */
#define DEFINE_TILE_AVX512(MR)                                               \
__attribute__((target ("avx512f")))                                          \
static void                                                                  \
tile_avx512_##MR (const float *A, int lda, const float *Bp, int K,           \
    const float *bias, gboolean accumulate, float *C, int ldc, int ncols)    \
{                                                                            \
  __m512 acc0[MR], acc1[MR];                                                 \
  for (int i = 0; i < MR; i++) {                                             \
    acc0[i] = _mm512_setzero_ps ();                                          \
    acc1[i] = _mm512_setzero_ps ();                                          \
  }                                                                          \
  for (int k = 0; k < K; k++) {                                              \
    const float *b = Bp + (size_t) k * NR;                                   \
    __m512 b0 = _mm512_load_ps (b), b1 = _mm512_load_ps (b + 16);            \
    for (int i = 0; i < MR; i++) {                                           \
      __m512 a = _mm512_set1_ps (A[(size_t) i * lda + k]);                   \
      acc0[i] = _mm512_fmadd_ps (a, b0, acc0[i]);                            \
      acc1[i] = _mm512_fmadd_ps (a, b1, acc1[i]);                            \
    }                                                                        \
  }                                                                          \
  __mmask16 m0 = ncols >= 16 ? 0xFFFF : (__mmask16) ((1u << ncols) - 1);     \
  __mmask16 m1 = ncols >= 32 ? 0xFFFF                                        \
      : ncols <= 16 ? 0 : (__mmask16) ((1u << (ncols - 16)) - 1);            \
  __m512 bias0 = bias ? _mm512_maskz_loadu_ps (m0, bias) : _mm512_setzero_ps (); \
  __m512 bias1 = bias ? _mm512_maskz_loadu_ps (m1, bias + 16) : _mm512_setzero_ps (); \
  for (int i = 0; i < MR; i++) {                                             \
    float *c = C + (size_t) i * ldc;                                         \
    __m512 v0 = _mm512_add_ps (acc0[i], bias0);                              \
    __m512 v1 = _mm512_add_ps (acc1[i], bias1);                              \
    if (accumulate) {                                                        \
      v0 = _mm512_add_ps (v0, _mm512_maskz_loadu_ps (m0, c));                \
      v1 = _mm512_add_ps (v1, _mm512_maskz_loadu_ps (m1, c + 16));           \
    }                                                                        \
    _mm512_mask_storeu_ps (c, m0, v0);                                       \
    _mm512_mask_storeu_ps (c + 16, m1, v1);                                  \
  }                                                                          \
}

DEFINE_TILE_AVX512 (1)
DEFINE_TILE_AVX512 (2)
DEFINE_TILE_AVX512 (3)
DEFINE_TILE_AVX512 (4)
DEFINE_TILE_AVX512 (5)
DEFINE_TILE_AVX512 (6)

typedef void (*TileFn) (const float *, int, const float *, int, const float *,
    gboolean, float *, int, int);

static const TileFn tiles_avx512[AVX512_MR + 1] = {
  NULL, tile_avx512_1, tile_avx512_2, tile_avx512_3, tile_avx512_4,
  tile_avx512_5, tile_avx512_6,
};

static void
panel_avx512 (int M, const float *A, int lda, const float *Bp, int K,
    const float *bias, gboolean accumulate, float *C, int ldc, int ncols)
{
  int m = 0;
  for (; m + AVX512_MR <= M; m += AVX512_MR)
    tile_avx512_6 (A + (size_t) m * lda, lda, Bp, K, bias, accumulate,
        C + (size_t) m * ldc, ldc, ncols);
  if (m < M)
    tiles_avx512[M - m] (A + (size_t) m * lda, lda, Bp, K, bias, accumulate,
        C + (size_t) m * ldc, ldc, ncols);
}

#endif /* __x86_64__ */

typedef void (*PanelFn) (int, const float *, int, const float *, int,
    const float *, gboolean, float *, int, int);

static PanelFn
select_panel (void)
{
#if defined(__x86_64__)
  switch (moshi_cpu_level ()) {
    case MOSHI_CPU_AVX512:
      return panel_avx512;
    case MOSHI_CPU_AVX2:
      return panel_avx2;
    default:
      break;
  }
#endif
  return panel_generic;
}

typedef struct {
  PanelFn panel;
  int M;
  const float *A;
  int lda;
  const MoshiPackedB *B;
  const float *bias;
  gboolean accumulate;
  float *C;
  int ldc;
} PackedJob;

/* Rows per block: keeps a block of A rows hot in L1/L2 while one panel of
 * B streams through, for the large-M (early SEANet) layers. */
#define M_BLOCK 96

static void
packed_part (void *data, int index, int count)
{
  const PackedJob *j = data;
  const MoshiPackedB *B = j->B;
  int p0 = (int) ((long) B->n_panels * index / count);
  int p1 = (int) ((long) B->n_panels * (index + 1) / count);
  for (int m0 = 0; m0 < j->M; m0 += M_BLOCK) {
    int mb = MIN (M_BLOCK, j->M - m0);
    for (int p = p0; p < p1; p++) {
      int n0 = p * NR;
      int ncols = MIN (NR, B->N - n0);
      j->panel (mb, j->A + (size_t) m0 * j->lda, j->lda,
          B->data + (size_t) p * B->K * NR, B->K,
          j->bias ? j->bias + n0 : NULL, j->accumulate,
          j->C + (size_t) m0 * j->ldc + n0, j->ldc, ncols);
    }
  }
}

void
moshi_gemm_packed (MoshiPool *pool, int M, const float *A, int lda,
    const MoshiPackedB *B, const float *bias, gboolean accumulate, float *C,
    int ldc)
{
  if (M <= 0 || B->N <= 0)
    return;
  PackedJob job = { select_panel (), M, A, lda, B, bias, accumulate, C, ldc };
  double flops = 2.0 * M * B->N * B->K;
  if (moshi_pool_threads (pool) > 1 && flops > 4e5 && B->n_panels >= 2)
    moshi_pool_run (pool, packed_part, &job);
  else
    packed_part (&job, 0, 1);
}
