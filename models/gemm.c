#include "gemm.h"

#include "alloc.h"
#include "cpu.h"
#include "gemm-amx.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#define NR MOSHI_GEMM_NR
#define QB MOSHI_Q8_BLOCK

const char *
moshi_weight_type_name (MoshiWeightType t)
{
  switch (t) {
    case MOSHI_WEIGHTS_BF16:
      return "bf16";
    case MOSHI_WEIGHTS_Q8:
      return "q8";
    case MOSHI_WEIGHTS_Q4:
      return "q4";
    default:
      return "f32";
  }
}

gboolean
moshi_weight_type_from_string (const char *s, MoshiWeightType *t)
{
  if (!s || !g_ascii_strcasecmp (s, "f32") || !g_ascii_strcasecmp (s, "none"))
    *t = MOSHI_WEIGHTS_F32;
  else if (!g_ascii_strcasecmp (s, "bf16"))
    *t = MOSHI_WEIGHTS_BF16;
  else if (!g_ascii_strcasecmp (s, "q8"))
    *t = MOSHI_WEIGHTS_Q8;
  else if (!g_ascii_strcasecmp (s, "q4"))
    *t = MOSHI_WEIGHTS_Q4;
  else
    return FALSE;
  return TRUE;
}

static uint16_t
f32_to_bf16 (float f)
{
  uint32_t u;
  memcpy (&u, &f, 4);
  if ((u & 0x7fffffff) > 0x7f800000)
    return (uint16_t) ((u >> 16) | 0x40); /* quiet NaN */
  u += 0x7fff + ((u >> 16) & 1); /* round to nearest even */
  return (uint16_t) (u >> 16);
}

static float
bf16_to_f32 (uint16_t h)
{
  uint32_t u = (uint32_t) h << 16;
  float f;
  memcpy (&f, &u, 4);
  return f;
}

static inline gboolean
is_quantized (MoshiWeightType t)
{
  return t == MOSHI_WEIGHTS_Q8 || t == MOSHI_WEIGHTS_Q4;
}

static inline int
k_padded (const MoshiPackedB *p)
{
  return is_quantized (p->type) ? (p->K + QB - 1) / QB * QB : p->K;
}

/* Byte offset of weight (k, column j of panel pn) in the Q8 layout. */
static inline size_t
q8_index (int pn, int k, int j, int KP)
{
  return (((size_t) pn * (KP / 4) + k / 4) * NR + j) * 4 + (k & 3);
}

/* Q4 blocks (gemm.h): per 32 k of a panel, the weights, then the 32
 * column scales, one stream (the weights at offset 0, the scales at
 * Q4_S_OFF).  Offsets within a block are multiples of 64
 * bytes, as are the blocks' sizes, so every 64-byte load stays aligned. */
#define Q4_WBYTES (QB * NR / 2) /* 512 */
#define Q4_SBYTES (NR * 2) /* 64 */
#define Q4_BLOCK (Q4_WBYTES + Q4_SBYTES) /* 576 */
#define Q4_S_OFF Q4_WBYTES

/* Block kb of panel pn in Q4 data. */
static inline size_t
q4_block (int pn, int kb, int KP)
{
  return ((size_t) pn * (KP / QB) + kb) * Q4_BLOCK;
}

/* Byte offset of weight (k, column j of panel pn) in the Q4 layout; its
 * nibble is the low one for j < 16, the high one for j >= 16. */
static inline size_t
q4_index (int pn, int k, int j, int KP)
{
  return q4_block (pn, k / QB, KP)
      + ((size_t) (k % QB / 4) * (NR / 2) + j % (NR / 2)) * 4 + (k & 3);
}

static inline int
q4_value (const uint8_t *data, int pn, int k, int j, int KP)
{
  const uint8_t byte = data[q4_index (pn, k, j, KP)];
  return (j < NR / 2 ? byte & 0x0f : byte >> 4) - 8;
}

/* The 32 bf16 column scales of block kb of panel pn. */
static inline const uint16_t *
q4_scales (const void *data, int pn, int kb, int KP)
{
  return (const uint16_t *) ((const uint8_t *) data + q4_block (pn, kb, KP)
      + Q4_S_OFF);
}

/* Squared error of one Q4 block (levels -8..7) stored with bf16 scale sb;
 * float sums in the order of q4_block_error_avx512, so that both pick the
 * same step.  The levels are the same as rounding with lrintf (nearest,
 * ties to even). */
static float
q4_block_error (const float *x, int n, uint16_t sb)
{
  const float scale = bf16_to_f32 (sb), inv = 1.0f / scale;
  float lane[16] = { 0 };
  for (int k = 0; k < n; k++) {
    const float q = CLAMP (rintf (x[k] * inv), -8.0f, 7.0f);
    const float e = x[k] - q * scale;
    lane[k % 16] += e * e;
  }
  /* _mm512_reduce_add_ps's tree: halves, then quarters... */
  for (int w = 8; w >= 1; w /= 2)
    for (int i = 0; i < w; i++)
      lane[i] += lane[i + w];
  return lane[0];
}

/* Sums x q and q q of the levels scale sb gives, for the least-squares
 * step, in q4_block_error's order. */
static float
q4_block_ls (const float *x, int n, uint16_t sb)
{
  const float inv = 1.0f / bf16_to_f32 (sb);
  float xq[16] = { 0 }, qq[16] = { 0 };
  for (int k = 0; k < n; k++) {
    const float q = CLAMP (rintf (x[k] * inv), -8.0f, 7.0f);
    xq[k % 16] += x[k] * q;
    qq[k % 16] += q * q;
  }
  for (int w = 8; w >= 1; w /= 2)
    for (int i = 0; i < w; i++) {
      xq[i] += xq[i + w];
      qq[i] += qq[i + w];
    }
  return xq[0] / qq[0];
}

#if defined(__x86_64__)
__attribute__ ((target ("avx512f"))) static inline void
q4_levels_avx512 (const float *x, uint16_t sb, __m512 *x0, __m512 *x1,
    __m512 *q0, __m512 *q1)
{
  const __m512 inv = _mm512_set1_ps (1.0f / bf16_to_f32 (sb));
  const __m512 lo = _mm512_set1_ps (-8.0f), hi = _mm512_set1_ps (7.0f);
  *x0 = _mm512_loadu_ps (x);
  *x1 = _mm512_loadu_ps (x + 16);
  *q0 = _mm512_min_ps (_mm512_max_ps (_mm512_roundscale_ps (_mm512_mul_ps (*x0,
                                                                inv),
                                          _MM_FROUND_TO_NEAREST_INT
                                              | _MM_FROUND_NO_EXC),
                           lo),
      hi);
  *q1 = _mm512_min_ps (_mm512_max_ps (_mm512_roundscale_ps (_mm512_mul_ps (*x1,
                                                                inv),
                                          _MM_FROUND_TO_NEAREST_INT
                                              | _MM_FROUND_NO_EXC),
                           lo),
      hi);
}

/* Rounded multiplies and adds as the scalar code's: the explicit-rounding
 * forms are never fused into FMAs by the compiler. */
#define RNE (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)

/* x: 32 floats, zero past the block's end. */
__attribute__ ((target ("avx512f"))) static float
q4_block_ls_avx512 (const float *x, uint16_t sb)
{
  __m512 x0, x1, q0, q1;
  q4_levels_avx512 (x, sb, &x0, &x1, &q0, &q1);
  const __m512 xq = _mm512_add_round_ps (_mm512_mul_round_ps (x0, q0, RNE),
      _mm512_mul_round_ps (x1, q1, RNE), RNE);
  const __m512 qq = _mm512_add_round_ps (_mm512_mul_round_ps (q0, q0, RNE),
      _mm512_mul_round_ps (q1, q1, RNE), RNE);
  return _mm512_reduce_add_ps (xq) / _mm512_reduce_add_ps (qq);
}

/* x: 32 floats, zero past the block's end. */
__attribute__ ((target ("avx512f"))) static float
q4_block_error_avx512 (const float *x, uint16_t sb)
{
  __m512 x0, x1, q0, q1;
  q4_levels_avx512 (x, sb, &x0, &x1, &q0, &q1);
  const __m512 scale = _mm512_set1_ps (bf16_to_f32 (sb));
  const __m512 e0 =
      _mm512_sub_round_ps (x0, _mm512_mul_round_ps (q0, scale, RNE), RNE);
  const __m512 e1 =
      _mm512_sub_round_ps (x1, _mm512_mul_round_ps (q1, scale, RNE), RNE);
  const __m512 sq = _mm512_add_round_ps (_mm512_mul_round_ps (e0, e0, RNE),
      _mm512_mul_round_ps (e1, e1, RNE), RNE);
  return _mm512_reduce_add_ps (sq);
}
#undef RNE
#endif

/* The bf16 scale of one Q4 block with the least squared error found: first
 * amax / 7 (plain rounding: the error of every weight within half a step),
 * then 20 steps from amax / 6 to amax / 8.85, then twice the least-squares
 * step for the levels the best one picked.  Plain rounding wastes level -8
 * and is not the best step for most blocks: this search takes ~1 dB off
 * the error of Gaussian-like weights (tests/test-gemm.c) and, on the
 * mimi-small case, the latent from 12.7 to 18 dB SNR. */
static uint16_t
q4_block_scale (const float *x, int n)
{
  float amax = 0.0f;
  for (int k = 0; k < n; k++)
    amax = MAX (amax, fabsf (x[k]));
  if (amax == 0.0f)
    return 0;
#if defined(__x86_64__)
  const gboolean vec = moshi_cpu_level () >= MOSHI_CPU_AVX512;
  float padded[32] = { 0 };
  memcpy (padded, x, sizeof (float) * n);
#define BLOCK_ERROR(sb) \
  (vec ? q4_block_error_avx512 (padded, sb) : q4_block_error (x, n, sb))
#define BLOCK_LS(sb) \
  (vec ? q4_block_ls_avx512 (padded, sb) : q4_block_ls (x, n, sb))
#else
#define BLOCK_ERROR(sb) q4_block_error (x, n, sb)
#define BLOCK_LS(sb) q4_block_ls (x, n, sb)
#endif
  uint16_t best = f32_to_bf16 (amax / 7.0f);
  float best_err = BLOCK_ERROR (best);
  for (int c = 0; c < 22; c++) {
    uint16_t sb = f32_to_bf16 (amax / (6.0f + 0.15f * c));
    if (c >= 20) /* least squares, from the best so far */
      sb = f32_to_bf16 (BLOCK_LS (best));
    const float err = sb ? BLOCK_ERROR (sb) : INFINITY;
    if (err < best_err) {
      best_err = err;
      best = sb;
    }
  }
#undef BLOCK_ERROR
#undef BLOCK_LS
  return best;
}

typedef struct {
  MoshiPackedB *p;
  const float *b;
  int ldb, pn0, pn1;
  gboolean transposed;
} PackJob;

/* Packs panels [pn0, pn1) of p from b; panels share no bytes, so ranges
 * can be packed by different threads. */
static void
pack_panels (const PackJob *job)
{
  MoshiPackedB *p = job->p;
  const float *b = job->b;
  const int K = p->K, N = p->N, ldb = job->ldb, pn0 = job->pn0, pn1 = job->pn1;
  const gboolean transposed = job->transposed;
  const MoshiWeightType type = p->type;
  const int KP = k_padded (p);
#define B_AT(k, n) \
  (transposed ? b[(size_t) (n) *ldb + (k)] : b[(size_t) (k) *ldb + (n)])
  for (int pn = pn0; pn < pn1; pn++) {
    for (int j = 0; j < NR; j++) {
      const int n = pn * NR + j;
      if (n >= N)
        continue;
      if (type == MOSHI_WEIGHTS_Q8) {
        for (int kb = 0; kb < KP / QB; kb++) {
          float amax = 0.0f;
          for (int k = kb * QB; k < MIN (K, kb * QB + QB); k++)
            amax = MAX (amax, fabsf (B_AT (k, n)));
          float scale = amax / 127.0f;
          float inv = scale > 0.0f ? 1.0f / scale : 0.0f;
          const size_t sidx = ((size_t) pn * (KP / QB) + kb) * NR + j;
          p->scales[sidx] = scale;
          int8_t *q = (int8_t *) p->data;
          for (int k = kb * QB; k < MIN (K, kb * QB + QB); k++)
            q[q8_index (pn, k, j, KP)] =
                (int8_t) lrintf (CLAMP (B_AT (k, n) * inv, -127.0f, 127.0f));
        }
      } else if (type == MOSHI_WEIGHTS_Q4) {
        uint8_t *q = (uint8_t *) p->data;
        const int shift = j < NR / 2 ? 0 : 4;
        if (j == 0) /* columns past N keep scale 0 */
          for (int kb = 0; kb < KP / QB; kb++)
            memset (q + q4_block (pn, kb, KP) + Q4_S_OFF, 0, Q4_SBYTES);
        for (int kb = 0; kb < KP / QB; kb++) {
          float x[QB];
          const int nk = MIN (K, kb * QB + QB) - kb * QB;
          for (int k = 0; k < nk; k++)
            x[k] = B_AT (kb * QB + k, n);
          const uint16_t sb = q4_block_scale (x, nk);
          const float scale = bf16_to_f32 (sb);
          const float inv = scale > 0.0f ? 1.0f / scale : 0.0f;
          ((uint16_t *) q4_scales (q, pn, kb, KP))[j] = sb;
          for (int k = 0; k < nk; k++) {
            int v = (int) CLAMP (rintf (x[k] * inv), -8.0f, 7.0f);
            uint8_t *byte = &q[q4_index (pn, kb * QB + k, j, KP)];
            *byte = (uint8_t) ((*byte & (0xf0 >> shift)) | (v + 8) << shift);
          }
        }
      } else {
        for (int k = 0; k < K; k++) {
          size_t idx = ((size_t) pn * KP + k) * NR + j;
          if (type == MOSHI_WEIGHTS_F32)
            ((float *) p->data)[idx] = B_AT (k, n);
          else
            ((uint16_t *) p->data)[idx] = f32_to_bf16 (B_AT (k, n));
        }
      }
    }
  }
#undef B_AT
}

static void packed_sizes (const MoshiPackedB *p, size_t bytes[4]);

static gpointer
pack_thread (gpointer data)
{
  pack_panels (data);
  return NULL;
}

gboolean
moshi_packed_init_typed (MoshiPackedB *p, const float *b, int K, int N, int ldb,
    gboolean transposed, MoshiWeightType type)
{
  memset (p, 0, sizeof *p);
  p->K = K;
  p->N = N;
  p->type = type;
  p->n_panels = (N + NR - 1) / NR;
  size_t bytes[4];
  packed_sizes (p, bytes);
  const size_t data_bytes = bytes[0];
  p->data = moshi_alloc (data_bytes);
  gboolean ok = p->data != NULL;
  if (type == MOSHI_WEIGHTS_Q8) {
    p->scales = moshi_alloc (bytes[1]);
    ok = ok && p->scales;
  }
  if (!ok) {
    moshi_packed_clear (p);
    return FALSE;
  }
  if (type == MOSHI_WEIGHTS_Q4)
    /* q = 0 in both nibbles; pack_panels sets the scales. */
    memset (p->data, 0x88, data_bytes);
  /* Big quantized matrices (the LM's) take seconds each, Q4's step
   * search most: their panels are shared out over the cores. */
  const size_t work = (size_t) K * N * (type == MOSHI_WEIGHTS_Q4 ? 8 : 1);
  const int n_threads = (int) MIN ((size_t) MIN (g_get_num_processors (), 8),
      MAX (work >> 22, 1));
  PackJob jobs[8];
  GThread *threads[8] = { NULL };
  for (int t = 0; t < n_threads; t++) {
    jobs[t] = (PackJob){ p, b, ldb, p->n_panels * t / n_threads,
      p->n_panels * (t + 1) / n_threads, transposed };
    if (t > 0)
      threads[t] = g_thread_try_new ("moshi-pack", pack_thread, &jobs[t], NULL);
  }
  pack_panels (&jobs[0]);
  for (int t = 1; t < n_threads; t++) {
    if (threads[t])
      g_thread_join (threads[t]);
    else
      pack_panels (&jobs[t]); /* no thread: do it here */
  }
  return TRUE;
}

gboolean
moshi_packed_init (MoshiPackedB *p, const float *b, int K, int N, int ldb,
    gboolean transposed)
{
  return moshi_packed_init_typed (p, b, K, N, ldb, transposed,
      MOSHI_WEIGHTS_F32);
}

static void
packed_sizes (const MoshiPackedB *p, size_t bytes[4])
{
  const size_t elems = (size_t) p->n_panels * k_padded (p) * NR;
  const size_t n_scales = elems / QB;
  bytes[0] = p->type == MOSHI_WEIGHTS_F32 ? 4 * elems
      : p->type == MOSHI_WEIGHTS_BF16     ? 2 * elems
      : p->type == MOSHI_WEIGHTS_Q8       ? elems
                                          : n_scales / NR * Q4_BLOCK;
  bytes[1] = p->type == MOSHI_WEIGHTS_Q8 ? sizeof (float) * n_scales : 0;
  /* Once Q8 column sums and Q4 scales (now inside the data); the slots
   * keep the file layout. */
  bytes[2] = 0;
  bytes[3] = 0;
}

void
moshi_packed_layout (const MoshiPackedB *p, void *ptrs[4], size_t bytes[4])
{
  packed_sizes (p, bytes);
  ptrs[0] = p->data;
  ptrs[1] = p->scales;
  ptrs[2] = NULL;
  ptrs[3] = NULL;
}

void
moshi_packed_borrow (MoshiPackedB *p, int K, int N, MoshiWeightType type,
    void *const ptrs[4])
{
  memset (p, 0, sizeof *p);
  p->K = K;
  p->N = N;
  p->type = type;
  p->n_panels = (N + NR - 1) / NR;
  p->borrowed = TRUE;
  p->data = ptrs[0];
  p->scales = ptrs[1];
}

void
moshi_packed_clear (MoshiPackedB *p)
{
  if (p->borrowed) {
    memset (p, 0, sizeof *p);
    return;
  }
  moshi_free (p->data);
  moshi_free (p->scales);
  p->data = NULL;
  p->scales = NULL;
}

gboolean
moshi_packed_settle (MoshiPackedB *p)
{
  if (!p->data)
    return TRUE;
  size_t bytes[4];
  packed_sizes (p, bytes);
  void *data = moshi_alloc_huge (bytes[0]);
  void *scales = bytes[1] > 0 ? moshi_alloc_huge (bytes[1]) : NULL;
  if (!data || (bytes[1] > 0 && !scales)) {
    moshi_free (data);
    moshi_free (scales);
    return FALSE;
  }
  memcpy (data, p->data, bytes[0]);
  if (scales)
    memcpy (scales, p->scales, bytes[1]);
  if (p->borrowed) {
    /* A cache file's pages: out of our RSS, the file stays mapped. */
    moshi_release_pages (p->data, bytes[0]);
    if (p->scales)
      moshi_release_pages (p->scales, bytes[1]);
    p->borrowed = FALSE;
  } else {
    moshi_free (p->data);
    moshi_free (p->scales);
  }
  p->data = data;
  p->scales = scales;
  return TRUE;
}

size_t
moshi_packed_bytes (const MoshiPackedB *p)
{
  size_t bytes[4];
  packed_sizes (p, bytes);
  return bytes[0] + bytes[1] + bytes[2] + bytes[3];
}

float
moshi_packed_get (const MoshiPackedB *p, int k, int n)
{
  const int KP = k_padded (p);
  const size_t idx = ((size_t) (n / NR) * KP + k) * NR + n % NR;
  switch (p->type) {
    case MOSHI_WEIGHTS_BF16:
      return bf16_to_f32 (((const uint16_t *) p->data)[idx]);
    case MOSHI_WEIGHTS_Q8:
      return ((const int8_t *) p->data)[q8_index (n / NR, k, n % NR, KP)]
          * p->scales[((size_t) (n / NR) * (KP / QB) + k / QB) * NR + n % NR];
    case MOSHI_WEIGHTS_Q4:
      return (float) q4_value (p->data, n / NR, k, n % NR, KP)
          * bf16_to_f32 (q4_scales (p->data, n / NR, k / QB, KP)[n % NR]);
    default:
      return ((const float *) p->data)[idx];
  }
}

/* A panel call: rows [0, M) of A against one 32-column panel of B. */
typedef struct {
  const MoshiPackedB *B;
  int panel;
  const float *bias; /* already offset to the panel, or NULL */
  gboolean accumulate;
  int ncols; /* valid columns in this panel */
} PanelArgs;

static inline void
store_row (float *c, const float *sum, const PanelArgs *pa)
{
  for (int j = 0; j < pa->ncols; j++) {
    float v = sum[j] + (pa->bias ? pa->bias[j] : 0.0f);
    c[j] = pa->accumulate ? c[j] + v : v;
  }
}

/* ------------------------------------------------------------ generic --- */

static void
panel_generic (int M, const float *A, int lda, const PanelArgs *pa, float *C,
    int ldc)
{
  const MoshiPackedB *B = pa->B;
  const int K = B->K, KP = k_padded (B);
  for (int m = 0; m < M; m++) {
    float sum[NR] = { 0 };
    const float *a = A + (size_t) m * lda;
    if (B->type == MOSHI_WEIGHTS_F32) {
      const float *Bp = (const float *) B->data + (size_t) pa->panel * KP * NR;
      for (int k = 0; k < K; k++)
        for (int j = 0; j < NR; j++)
          sum[j] += a[k] * Bp[(size_t) k * NR + j];
    } else if (B->type == MOSHI_WEIGHTS_BF16) {
      const uint16_t *Bp =
          (const uint16_t *) B->data + (size_t) pa->panel * KP * NR;
      for (int k = 0; k < K; k++)
        for (int j = 0; j < NR; j++)
          sum[j] += a[k] * bf16_to_f32 (Bp[(size_t) k * NR + j]);
    } else if (B->type == MOSHI_WEIGHTS_Q8) {
      const int8_t *Bq = (const int8_t *) B->data;
      const float *S = B->scales + (size_t) pa->panel * (KP / QB) * NR;
      for (int kb = 0; kb * QB < K; kb++) {
        float part[NR] = { 0 };
        for (int k = kb * QB; k < MIN (K, kb * QB + QB); k++)
          for (int j = 0; j < NR; j++)
            part[j] += a[k] * (float) Bq[q8_index (pa->panel, k, j, KP)];
        for (int j = 0; j < NR; j++)
          sum[j] += part[j] * S[(size_t) kb * NR + j];
      }
    } else {
      const uint8_t *Bq = (const uint8_t *) B->data;
      for (int kb = 0; kb * QB < K; kb++) {
        const uint16_t *S = q4_scales (Bq, pa->panel, kb, KP);
        float part[NR] = { 0 };
        for (int k = kb * QB; k < MIN (K, kb * QB + QB); k++)
          for (int j = 0; j < NR; j++)
            part[j] += a[k] * (float) q4_value (Bq, pa->panel, k, j, KP);
        for (int j = 0; j < NR; j++)
          sum[j] += part[j] * bf16_to_f32 (S[j]);
      }
    }
    store_row (C + (size_t) m * ldc, sum, pa);
  }
}

#if defined(__x86_64__)

/* --------------------------------------------------------------- AVX2 --- */

#define AVX2_MR 3

__attribute__ ((target ("avx2,fma"))) static inline void
tile_avx2 (int mr, const float *A, int lda, const float *Bp, int K,
    const PanelArgs *pa, float *C, int ldc)
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
    float sum[NR] __attribute__ ((aligned (32)));
    for (int j = 0; j < 4; j++)
      _mm256_store_ps (sum + 8 * j, acc[i][j]);
    store_row (C + (size_t) i * ldc, sum, pa);
  }
}

__attribute__ ((target ("avx2,fma"))) static inline void
store_tile_avx2 (int mr, __m256 acc[][4], const PanelArgs *pa, float *C,
    int ldc)
{
  if (pa->ncols == NR) {
    __m256 bias[4];
    for (int j = 0; j < 4; j++)
      bias[j] =
          pa->bias ? _mm256_loadu_ps (pa->bias + 8 * j) : _mm256_setzero_ps ();
    for (int i = 0; i < mr; i++) {
      float *c = C + (size_t) i * ldc;
      for (int j = 0; j < 4; j++) {
        __m256 v = _mm256_add_ps (acc[i][j], bias[j]);
        if (pa->accumulate)
          v = _mm256_add_ps (v, _mm256_loadu_ps (c + 8 * j));
        _mm256_storeu_ps (c + 8 * j, v);
      }
    }
    return;
  }
  for (int i = 0; i < mr; i++) {
    float sum[NR] __attribute__ ((aligned (32)));
    for (int j = 0; j < 4; j++)
      _mm256_store_ps (sum + 8 * j, acc[i][j]);
    store_row (C + (size_t) i * ldc, sum, pa);
  }
}

/* 8 bf16 values to f32. */
__attribute__ ((target ("avx2,fma"))) static inline __m256
bf16x8_to_ps_avx2 (const uint16_t *p)
{
  return _mm256_castsi256_ps (
      _mm256_slli_epi32 (_mm256_cvtepu16_epi32 (
                             _mm_loadu_si128 ((const __m128i *) p)),
          16));
}

/* BF16 weights: the F32 tile with the weights widened on the fly. */
__attribute__ ((target ("avx2,fma"), always_inline)) static inline void
tile_avx2_bf16 (const int MR, const float *A, int lda, const uint16_t *Bp,
    int K, const PanelArgs *pa, float *C, int ldc)
{
  __m256 acc[AVX2_MR][4];
  for (int i = 0; i < MR; i++)
    for (int j = 0; j < 4; j++)
      acc[i][j] = _mm256_setzero_ps ();
  for (int k = 0; k < K; k++) {
    const uint16_t *b = Bp + (size_t) k * NR;
    __m256 a[AVX2_MR];
    for (int i = 0; i < MR; i++)
      a[i] = _mm256_broadcast_ss (A + (size_t) i * lda + k);
    for (int j = 0; j < 4; j++) {
      __m256 w = bf16x8_to_ps_avx2 (b + 8 * j);
      for (int i = 0; i < MR; i++)
        acc[i][j] = _mm256_fmadd_ps (a[i], w, acc[i][j]);
    }
  }
  store_tile_avx2 (MR, acc, pa, C, ldc);
}

/* Quantized weights on AVX2 (no VNNI): the activations stay float32 and
 * the stored weights are widened exactly to float, 8 columns x 1 k per
 * vector, then multiplied in float; each 32-block's sums are scaled once at
 * its end.  One 32-byte load holds 8 columns x 4 k (the [K/4][32][4]
 * layout); k = 4g + r is byte r of each 32-bit lane.  vpshufb moves it to
 * the lane's top byte with zeros below, which converts exactly to q x 2^24
 * (Q8) or, after isolating a nibble there, q x 2^28 (Q4); the power of two
 * comes out, exactly, at the end of the block.  This keeps the shuffles off
 * the ports that the conversions and FMAs compete for. */
#define Q_FMA(J, W)                                         \
  do {                                                      \
    const __m256 w_ = _mm256_cvtepi32_ps (W);               \
    for (int i = 0; i < MR; i++)                            \
      part[i][J] = _mm256_fmadd_ps (av[i], w_, part[i][J]); \
  } while (0)

/* vpshufb control: byte R of each 32-bit lane to its top byte, 0 below. */
#define TOP_BYTE(R)                                        \
  _mm256_setr_epi32 ((int) (0x808080u | (0u + (R)) << 24), \
      (int) (0x808080u | (4u + (R)) << 24),                \
      (int) (0x808080u | (8u + (R)) << 24),                \
      (int) (0x808080u | (12u + (R)) << 24),               \
      (int) (0x808080u | (0u + (R)) << 24),                \
      (int) (0x808080u | (4u + (R)) << 24),                \
      (int) (0x808080u | (8u + (R)) << 24),                \
      (int) (0x808080u | (12u + (R)) << 24))

#define BROADCAST_A(R)         \
  __m256 av[AVX2_MR];          \
  for (int i = 0; i < MR; i++) \
  av[i] = _mm256_broadcast_ss (a + (size_t) i * lda + (R))

/* One group of 4 k (a[i * lda + r], r < 4) against 32 columns of Q8:
 * 128 bytes, 32 per 8 columns, accumulated as 2^24 x the products.  k
 * outer, columns inner, so that only MR broadcast activations are live next
 * to the 4 MR sums. */
#define Q8_K(R)                                                     \
  do {                                                              \
    BROADCAST_A (R);                                                \
    const __m256i ctl = TOP_BYTE (R);                               \
    for (int j = 0; j < 4; j++)                                     \
      Q_FMA (j,                                                     \
          _mm256_shuffle_epi8 (_mm256_load_si256 (                  \
                                   (const __m256i *) (b + 32 * j)), \
              ctl));                                                \
  } while (0)

__attribute__ ((target ("avx2,fma"), always_inline)) static inline void
q8_group_avx2 (const int MR, const float *a, size_t lda, const int8_t *b,
    __m256 part[][4])
{
  Q8_K (0);
  Q8_K (1);
  Q8_K (2);
  Q8_K (3);
}
#undef Q8_K

/* The same for Q4, as 2^28 x the products: 64 bytes, the first 32 holding
 * columns 0-7 (low nibbles) and 16-23 (high), the next 32 columns 8-15 and
 * 24-31.  XOR with 8 turns each nibble q + 8 into q as 4-bit two's
 * complement; with its byte on top, a shift left by 4 (low nibble) or a
 * mask (high) leaves q x 2^28. */
#define Q4_K(R)                                       \
  do {                                                \
    BROADCAST_A (R);                                  \
    const __m256i ctl = TOP_BYTE (R);                 \
    const __m256i t0 = _mm256_shuffle_epi8 (y0, ctl); \
    const __m256i t1 = _mm256_shuffle_epi8 (y1, ctl); \
    Q_FMA (0, _mm256_slli_epi32 (t0, 4));             \
    Q_FMA (1, _mm256_slli_epi32 (t1, 4));             \
    Q_FMA (2, _mm256_and_si256 (t0, hi));             \
    Q_FMA (3, _mm256_and_si256 (t1, hi));             \
  } while (0)

__attribute__ ((target ("avx2,fma"), always_inline)) static inline void
q4_group_avx2 (const int MR, const float *a, size_t lda, const uint8_t *b,
    __m256 part[][4])
{
  const __m256i eights = _mm256_set1_epi8 ((char) 0x88);
  const __m256i hi = _mm256_set1_epi32 ((int) 0xF0000000u);
  const __m256i y0 =
      _mm256_xor_si256 (_mm256_load_si256 ((const __m256i *) b), eights);
  const __m256i y1 =
      _mm256_xor_si256 (_mm256_load_si256 ((const __m256i *) (b + 32)), eights);
  Q4_K (0);
  Q4_K (1);
  Q4_K (2);
  Q4_K (3);
}
#undef Q4_K
#undef BROADCAST_A
#undef TOP_BYTE
#undef Q_FMA

/* One tile of MR rows x 32 columns for Q8 or Q4 weights. */
__attribute__ ((target ("avx2,fma"), always_inline)) static inline void
tile_avx2_quant (const int MR, const gboolean q4, const float *A, int lda,
    const PanelArgs *pa, float *C, int ldc)
{
  const MoshiPackedB *B = pa->B;
  const int K = B->K, KP = k_padded (B), KB = KP / QB;
  /* Bytes per group of 4 k and per block (Q4: weights and scales). */
  const size_t gbytes = q4 ? 2 * NR : 4 * NR;
  const size_t block = q4 ? Q4_BLOCK : (QB / 4) * gbytes;
  const uint8_t *Bp =
      (const uint8_t *) B->data + (size_t) pa->panel * KB * block;
  __m256 acc[AVX2_MR][4];
  for (int i = 0; i < MR; i++)
    for (int j = 0; j < 4; j++)
      acc[i][j] = _mm256_setzero_ps ();
  for (int kb = 0; kb < KB; kb++) {
    __m256 part[AVX2_MR][4];
    for (int i = 0; i < MR; i++)
      for (int j = 0; j < 4; j++)
        part[i][j] = _mm256_setzero_ps ();
    const int k0 = kb * QB;
    const int nk = MIN (QB, K - k0);
    const uint8_t *bb = Bp + (size_t) kb * block;
    int g = 0;
    for (; 4 * g + 4 <= nk; g++) {
      const float *a = A + k0 + 4 * g;
      if (q4)
        q4_group_avx2 (MR, a, lda, bb + g * gbytes, part);
      else
        q8_group_avx2 (MR, a, lda, (const int8_t *) bb + g * gbytes, part);
    }
    if (4 * g < nk) {
      /* Last k of the matrix: A ends there, the padded weights are 0. */
      float at[AVX2_MR * 4] = { 0 };
      for (int i = 0; i < MR; i++)
        for (int r = 0; r < nk - 4 * g; r++)
          at[i * 4 + r] = A[(size_t) i * lda + k0 + 4 * g + r];
      if (q4)
        q4_group_avx2 (MR, at, 4, bb + g * gbytes, part);
      else
        q8_group_avx2 (MR, at, 4, (const int8_t *) bb + g * gbytes, part);
    }
    for (int j = 0; j < 4; j++) {
      const __m256 s = q4
          ? bf16x8_to_ps_avx2 ((const uint16_t *) (bb + Q4_S_OFF) + 8 * j)
          : _mm256_loadu_ps (
              B->scales + ((size_t) pa->panel * KB + kb) * NR + 8 * j);
      /* Exact: a power of two. */
      const __m256 unit = _mm256_set1_ps (q4 ? 0x1p-28f : 0x1p-24f);
      for (int i = 0; i < MR; i++)
        acc[i][j] =
            _mm256_fmadd_ps (_mm256_mul_ps (part[i][j], unit), s, acc[i][j]);
    }
  }
  store_tile_avx2 (MR, acc, pa, C, ldc);
}

#define DEFINE_TILES_AVX2(MR)                                                  \
  __attribute__ ((                                                             \
      target ("avx2,fma"))) static void tile_avx2_bf16_##MR (const float *A,   \
      int lda, const PanelArgs *pa, float *C, int ldc)                         \
  {                                                                            \
    const MoshiPackedB *B = pa->B;                                             \
    tile_avx2_bf16 (MR, A, lda,                                                \
        (const uint16_t *) B->data + (size_t) pa->panel * B->K * NR, B->K, pa, \
        C, ldc);                                                               \
  }                                                                            \
  __attribute__ ((                                                             \
      target ("avx2,fma"))) static void tile_avx2_q8_##MR (const float *A,     \
      int lda, const PanelArgs *pa, float *C, int ldc)                         \
  {                                                                            \
    tile_avx2_quant (MR, FALSE, A, lda, pa, C, ldc);                           \
  }                                                                            \
  __attribute__ ((                                                             \
      target ("avx2,fma"))) static void tile_avx2_q4_##MR (const float *A,     \
      int lda, const PanelArgs *pa, float *C, int ldc)                         \
  {                                                                            \
    tile_avx2_quant (MR, TRUE, A, lda, pa, C, ldc);                            \
  }

DEFINE_TILES_AVX2 (1)
DEFINE_TILES_AVX2 (2)
DEFINE_TILES_AVX2 (3)

typedef void (*TileAvx2) (const float *, int, const PanelArgs *, float *, int);

static const TileAvx2 tiles_avx2_bf16[AVX2_MR + 1] = { NULL, tile_avx2_bf16_1,
  tile_avx2_bf16_2, tile_avx2_bf16_3 };
static const TileAvx2 tiles_avx2_q8[AVX2_MR + 1] = { NULL, tile_avx2_q8_1,
  tile_avx2_q8_2, tile_avx2_q8_3 };
static const TileAvx2 tiles_avx2_q4[AVX2_MR + 1] = { NULL, tile_avx2_q4_1,
  tile_avx2_q4_2, tile_avx2_q4_3 };

static void
panel_avx2 (int M, const float *A, int lda, const PanelArgs *pa, float *C,
    int ldc)
{
  const MoshiPackedB *B = pa->B;
  if (B->type != MOSHI_WEIGHTS_F32) {
    const TileAvx2 *tiles = B->type == MOSHI_WEIGHTS_BF16 ? tiles_avx2_bf16
        : B->type == MOSHI_WEIGHTS_Q8                     ? tiles_avx2_q8
                                                          : tiles_avx2_q4;
    for (int m = 0; m < M; m += AVX2_MR)
      tiles[MIN (AVX2_MR, M - m)](A + (size_t) m * lda, lda, pa,
          C + (size_t) m * ldc, ldc);
    return;
  }
  const float *Bp = (const float *) B->data + (size_t) pa->panel * B->K * NR;
  int m = 0;
  for (; m + AVX2_MR <= M; m += AVX2_MR)
    tile_avx2 (AVX2_MR, A + (size_t) m * lda, lda, Bp, B->K, pa,
        C + (size_t) m * ldc, ldc);
  if (m < M)
    tile_avx2 (M - m, A + (size_t) m * lda, lda, Bp, B->K, pa,
        C + (size_t) m * ldc, ldc);
}

/* ------------------------------------------------------------ AVX-512 --- */

#define AVX512_MR 6

__attribute__ ((target ("avx512f"))) static inline void
store_tile_avx512 (int mr, __m512 *acc0, __m512 *acc1, const PanelArgs *pa,
    float *C, int ldc)
{
  const int ncols = pa->ncols;
  __mmask16 m0 = ncols >= 16 ? 0xFFFF : (__mmask16) ((1u << ncols) - 1);
  __mmask16 m1 = ncols >= 32 ? 0xFFFF
      : ncols <= 16          ? 0
                             : (__mmask16) ((1u << (ncols - 16)) - 1);
  __m512 bias0 =
      pa->bias ? _mm512_maskz_loadu_ps (m0, pa->bias) : _mm512_setzero_ps ();
  __m512 bias1 = pa->bias ? _mm512_maskz_loadu_ps (m1, pa->bias + 16)
                          : _mm512_setzero_ps ();
  for (int i = 0; i < mr; i++) {
    float *c = C + (size_t) i * ldc;
    __m512 v0 = _mm512_add_ps (acc0[i], bias0);
    __m512 v1 = _mm512_add_ps (acc1[i], bias1);
    if (pa->accumulate) {
      v0 = _mm512_add_ps (v0, _mm512_maskz_loadu_ps (m0, c));
      v1 = _mm512_add_ps (v1, _mm512_maskz_loadu_ps (m1, c + 16));
    }
    _mm512_mask_storeu_ps (c, m0, v0);
    _mm512_mask_storeu_ps (c + 16, m1, v1);
  }
}

/* Loads 32 weights of row k of a panel as two f32 vectors. */
#define LOAD_F32(Bp, k, b0, b1)                                \
  do {                                                         \
    const float *b_ = (const float *) (Bp) + (size_t) (k) *NR; \
    b0 = _mm512_load_ps (b_);                                  \
    b1 = _mm512_load_ps (b_ + 16);                             \
  } while (0)
#define LOAD_BF16(Bp, k, b0, b1)                                          \
  do {                                                                    \
    const uint16_t *b_ = (const uint16_t *) (Bp) + (size_t) (k) *NR;      \
    b0 = _mm512_castsi512_ps (                                            \
        _mm512_slli_epi32 (_mm512_cvtepu16_epi32 (                        \
                               _mm256_load_si256 ((const __m256i *) b_)), \
            16));                                                         \
    b1 = _mm512_castsi512_ps (                                            \
        _mm512_slli_epi32 (_mm512_cvtepu16_epi32 (_mm256_load_si256 (     \
                               (const __m256i *) (b_ + 16))),             \
            16));                                                         \
  } while (0)
/* One tile of MR rows x 32 columns for F32 and BF16 weights; MR is a
 * compile-time constant so the accumulators stay in registers. */
#define DEFINE_TILE_AVX512(NAME, MR, LOAD, ETYPE)                              \
  __attribute__ ((                                                             \
      target ("avx512f,avx512bw"))) static void NAME##_##MR (const float *A,   \
      int lda, const ETYPE *Bp, int K, const PanelArgs *pa, float *C, int ldc) \
  {                                                                            \
    __m512 acc0[MR], acc1[MR];                                                 \
    for (int i = 0; i < MR; i++)                                               \
      acc0[i] = acc1[i] = _mm512_setzero_ps ();                                \
    for (int k = 0; k < K; k++) {                                              \
      __m512 b0, b1;                                                           \
      LOAD (Bp, k, b0, b1);                                                    \
      for (int i = 0; i < MR; i++) {                                           \
        __m512 a = _mm512_set1_ps (A[(size_t) i * lda + k]);                   \
        acc0[i] = _mm512_fmadd_ps (a, b0, acc0[i]);                            \
        acc1[i] = _mm512_fmadd_ps (a, b1, acc1[i]);                            \
      }                                                                        \
    }                                                                          \
    store_tile_avx512 (MR, acc0, acc1, pa, C, ldc);                            \
  }

/* Quantized weights are consumed fast enough that one thread's DRAM
 * stream, not the kernel, is the limit: both VNNI kernels ask for the line
 * 4 KB ahead (the panels are contiguous) into L2, measured ~20 % faster on
 * 2 x 4096 x 11264 q4 with the weights out of cache; 2 and 8 KB and the
 * other hints were no better (docs/performance.md).  Prefetches never
 * fault past the end. */
#define VNNI_PREFETCH 4096

/* Q8 x Q8 with AVX-512 VNNI.  vpdpbusd multiplies 4 unsigned by 4 signed
 * bytes per lane.  The weights are made its unsigned operand by flipping
 * their sign bit (q + 128, one xor per 64 bytes); the activations arrive
 * quantized per row and 32-block as signed bytes with one scale per block
 * and the block's sum SS.  So sum (qw + 128) qa = sum qw qa + 128 SS: the
 * accumulators start at -128 SS, per row and block, and no per-column
 * correction has to be read with the weights (see the Q4 kernel below). */
#define DEFINE_TILE_VNNI(MR)                                                  \
  __attribute__ ((target ("avx512f,avx512bw,avx512vnni"))) static void        \
      tile_vnni_##MR (const uint8_t *QA, int ldq, const float *SA,            \
          const int32_t *SS, int lds, const PanelArgs *pa, float *C, int ldc) \
  {                                                                           \
    const MoshiPackedB *B = pa->B;                                            \
    const int KP = k_padded (B), KB = KP / QB;                                \
    const int8_t *Bp =                                                        \
        (const int8_t *) B->data + (size_t) pa->panel * KP * NR;              \
    const float *S = B->scales + (size_t) pa->panel * KB * NR;                \
    const __m512i sign = _mm512_set1_epi8 ((char) 0x80);                      \
    __m512 acc0[MR], acc1[MR];                                                \
    for (int i = 0; i < MR; i++)                                              \
      acc0[i] = acc1[i] = _mm512_setzero_ps ();                               \
    for (int kb = 0; kb < KB; kb++) {                                         \
      __m512i d0[MR], d1[MR];                                                 \
      for (int i = 0; i < MR; i++)                                            \
        d0[i] = d1[i] = _mm512_set1_epi32 (-128 * SS[(size_t) i * lds + kb]); \
      const int8_t *bb = Bp + (size_t) kb * QB * NR;                          \
      for (int g = 0; g < QB / 4; g++) {                                      \
        __m512i b0 = _mm512_xor_si512 (_mm512_load_si512 (                    \
                                           (const void *) (bb + g * 4 * NR)), \
            sign);                                                            \
        __m512i b1 = _mm512_xor_si512 (_mm512_load_si512 ((const void *) (bb  \
                                           + g * 4 * NR + 64)),               \
            sign);                                                            \
        _mm_prefetch ((const char *) bb + VNNI_PREFETCH + g * 4 * NR,         \
            _MM_HINT_T1);                                                     \
        _mm_prefetch ((const char *) bb + VNNI_PREFETCH + g * 4 * NR + 64,    \
            _MM_HINT_T1);                                                     \
        for (int i = 0; i < MR; i++) {                                        \
          int32_t a4;                                                         \
          memcpy (&a4, QA + (size_t) i * ldq + kb * QB + g * 4, 4);           \
          __m512i a = _mm512_set1_epi32 (a4);                                 \
          d0[i] = _mm512_dpbusd_epi32 (d0[i], b0, a);                         \
          d1[i] = _mm512_dpbusd_epi32 (d1[i], b1, a);                         \
        }                                                                     \
      }                                                                       \
      __m512 s0 = _mm512_load_ps (S + (size_t) kb * NR);                      \
      __m512 s1 = _mm512_load_ps (S + (size_t) kb * NR + 16);                 \
      for (int i = 0; i < MR; i++) {                                          \
        __m512 sa = _mm512_set1_ps (SA[(size_t) i * lds + kb]);               \
        acc0[i] = _mm512_fmadd_ps (_mm512_cvtepi32_ps (d0[i]),                \
            _mm512_mul_ps (sa, s0), acc0[i]);                                 \
        acc1[i] = _mm512_fmadd_ps (_mm512_cvtepi32_ps (d1[i]),                \
            _mm512_mul_ps (sa, s1), acc1[i]);                                 \
      }                                                                       \
    }                                                                         \
    store_tile_avx512 (MR, acc0, acc1, pa, C, ldc);                           \
  }

__attribute__ ((target ("avx512f"))) static inline __m512
bf16x16_to_ps (const uint16_t *p)
{
  return _mm512_castsi512_ps (
      _mm512_slli_epi32 (_mm512_cvtepu16_epi32 (
                             _mm256_load_si256 ((const __m256i *) p)),
          16));
}

/* Q4 x Q8 with AVX-512 VNNI, the same scheme: the weights are vpdpbusd's
 * unsigned operand (q + 8 in [0, 15] from the low nibbles; 16 (q + 8) from
 * the high nibbles, masked in place), so sum (qw + 8) qa = sum qw qa +
 * 8 SS, and the high half's factor 16 goes into its scales. */
#define DEFINE_TILE_VNNI_Q4(MR)                                               \
  __attribute__ ((target ("avx512f,avx512bw,avx512vnni"))) static void        \
      tile_vnni_q4_##MR (const uint8_t *QA, int ldq, const float *SA,         \
          const int32_t *SS, int lds, const PanelArgs *pa, float *C, int ldc) \
  {                                                                           \
    const MoshiPackedB *B = pa->B;                                            \
    const int KP = k_padded (B), KB = KP / QB;                                \
    const uint8_t *Bp =                                                       \
        (const uint8_t *) B->data + q4_block (pa->panel, 0, KP);              \
    const __m512i lo_mask = _mm512_set1_epi8 (0x0f);                          \
    const __m512i hi_mask = _mm512_set1_epi8 ((char) 0xf0);                   \
    __m512 acc0[MR], acc1[MR];                                                \
    for (int i = 0; i < MR; i++)                                              \
      acc0[i] = acc1[i] = _mm512_setzero_ps ();                               \
    for (int kb = 0; kb < KB; kb++) {                                         \
      __m512i d0[MR], d1[MR];                                                 \
      for (int i = 0; i < MR; i++) {                                          \
        const int32_t sum = SS[(size_t) i * lds + kb];                        \
        d0[i] = _mm512_set1_epi32 (-8 * sum);                                 \
        d1[i] = _mm512_set1_epi32 (-128 * sum);                               \
      }                                                                       \
      const uint8_t *bb = Bp + (size_t) kb * Q4_BLOCK;                        \
      const uint16_t *S = (const uint16_t *) (bb + Q4_S_OFF);                 \
      /* The block's 9 lines, VNNI_PREFETCH ahead. */                         \
      _mm_prefetch ((const char *) bb + VNNI_PREFETCH + Q4_BLOCK - 64,        \
          _MM_HINT_T1);                                                       \
      for (int g = 0; g < QB / 4; g++) {                                      \
        __m512i x = _mm512_load_si512 ((const void *) (bb + g * 2 * NR));     \
        _mm_prefetch ((const char *) bb + VNNI_PREFETCH + g * 2 * NR,         \
            _MM_HINT_T1);                                                     \
        __m512i b0 = _mm512_and_si512 (x, lo_mask);                           \
        __m512i b1 = _mm512_and_si512 (x, hi_mask);                           \
        for (int i = 0; i < MR; i++) {                                        \
          int32_t a4;                                                         \
          memcpy (&a4, QA + (size_t) i * ldq + kb * QB + g * 4, 4);           \
          __m512i a = _mm512_set1_epi32 (a4);                                 \
          d0[i] = _mm512_dpbusd_epi32 (d0[i], b0, a);                         \
          d1[i] = _mm512_dpbusd_epi32 (d1[i], b1, a);                         \
        }                                                                     \
      }                                                                       \
      __m512 s0 = bf16x16_to_ps (S);                                          \
      __m512 s1 = _mm512_mul_ps (bf16x16_to_ps (S + 16),                      \
          _mm512_set1_ps (1.0f / 16.0f));                                     \
      for (int i = 0; i < MR; i++) {                                          \
        __m512 sa = _mm512_set1_ps (SA[(size_t) i * lds + kb]);               \
        acc0[i] = _mm512_fmadd_ps (_mm512_cvtepi32_ps (d0[i]),                \
            _mm512_mul_ps (sa, s0), acc0[i]);                                 \
        acc1[i] = _mm512_fmadd_ps (_mm512_cvtepi32_ps (d1[i]),                \
            _mm512_mul_ps (sa, s1), acc1[i]);                                 \
      }                                                                       \
    }                                                                         \
    store_tile_avx512 (MR, acc0, acc1, pa, C, ldc);                           \
  }

#define DEFINE_ALL(MR)                                    \
  DEFINE_TILE_AVX512 (tile_f32, MR, LOAD_F32, float)      \
  DEFINE_TILE_AVX512 (tile_bf16, MR, LOAD_BF16, uint16_t) \
  DEFINE_TILE_VNNI (MR)                                   \
  DEFINE_TILE_VNNI_Q4 (MR)

DEFINE_ALL (1)
DEFINE_ALL (2)
DEFINE_ALL (3)
DEFINE_ALL (4)
DEFINE_ALL (5)
DEFINE_ALL (6)

typedef void (*TileF32) (const float *, int, const float *, int,
    const PanelArgs *, float *, int);
typedef void (*TileBF16) (const float *, int, const uint16_t *, int,
    const PanelArgs *, float *, int);
typedef void (*TileVnni) (const uint8_t *, int, const float *, const int32_t *,
    int, const PanelArgs *, float *, int);
typedef void (*TileVnniQ4) (const uint8_t *, int, const float *,
    const int32_t *, int, const PanelArgs *, float *, int);

static const TileF32 tiles_f32[AVX512_MR + 1] = { NULL, tile_f32_1, tile_f32_2,
  tile_f32_3, tile_f32_4, tile_f32_5, tile_f32_6 };
static const TileBF16 tiles_bf16[AVX512_MR + 1] = { NULL, tile_bf16_1,
  tile_bf16_2, tile_bf16_3, tile_bf16_4, tile_bf16_5, tile_bf16_6 };
static const TileVnni tiles_vnni[AVX512_MR + 1] = { NULL, tile_vnni_1,
  tile_vnni_2, tile_vnni_3, tile_vnni_4, tile_vnni_5, tile_vnni_6 };
static const TileVnniQ4 tiles_vnni_q4[AVX512_MR + 1] = { NULL, tile_vnni_q4_1,
  tile_vnni_q4_2, tile_vnni_q4_3, tile_vnni_q4_4, tile_vnni_q4_5,
  tile_vnni_q4_6 };

static void
panel_avx512 (int M, const float *A, int lda, const PanelArgs *pa, float *C,
    int ldc)
{
  const MoshiPackedB *B = pa->B;
  const int KP = k_padded (B);
  const size_t off = (size_t) pa->panel * KP * NR;
  for (int m = 0; m < M; m += AVX512_MR) {
    const int mr = MIN (AVX512_MR, M - m);
    const float *a = A + (size_t) m * lda;
    float *c = C + (size_t) m * ldc;
    switch (B->type) {
      case MOSHI_WEIGHTS_F32:
        tiles_f32[mr](a, lda, (const float *) B->data + off, B->K, pa, c, ldc);
        break;
      case MOSHI_WEIGHTS_BF16:
        tiles_bf16[mr](a, lda, (const uint16_t *) B->data + off, B->K, pa, c,
            ldc);
        break;
      case MOSHI_WEIGHTS_Q8:
      case MOSHI_WEIGHTS_Q4:
        /* AVX-512 without VNNI (moshi_gemm_packed sends VNNI CPUs to the
         * integer path): the AVX2 kernels, float activations. */
        panel_avx2 (mr, a, lda, pa, c, ldc);
        break;
    }
  }
}

#endif /* __x86_64__ */

#if defined(__x86_64__)
/* Quantizes rows of A for the VNNI kernels: per 32-block, q = round(a / s)
 * with s = max|a| / 127, stored as signed bytes, and each block's sum of q
 * in SS (the kernels' correction for their unsigned weights, see
 * DEFINE_TILE_VNNI).  Padding past K is q = 0. */
__attribute__ ((target ("avx512f,avx512bw"))) static void
quantize_rows_avx512 (int M, const float *A, int lda, int K, int KP,
    uint8_t *QA, float *SA, int32_t *SS)
{
  const int KB = KP / QB;
  for (int m = 0; m < M; m++) {
    const float *a = A + (size_t) m * lda;
    uint8_t *q = QA + (size_t) m * KP;
    for (int kb = 0; kb < KB; kb++) {
      const int k0 = kb * QB;
      const int n = MIN (QB, K - k0);
      __mmask16 m0 = n >= 16 ? 0xFFFF
          : n <= 0           ? 0
                             : (__mmask16) ((1u << n) - 1);
      __mmask16 m1 = n >= 32 ? 0xFFFF
          : n <= 16          ? 0
                             : (__mmask16) ((1u << (n - 16)) - 1);
      __m512 x0 = _mm512_maskz_loadu_ps (m0, a + k0);
      __m512 x1 = _mm512_maskz_loadu_ps (m1, a + k0 + 16);
      __m512 amax = _mm512_max_ps (_mm512_abs_ps (x0), _mm512_abs_ps (x1));
      float mx = _mm512_reduce_max_ps (amax);
      float s = mx / 127.0f;
      SA[(size_t) m * KB + kb] = s;
      __m512 inv = _mm512_set1_ps (s > 0.0f ? 1.0f / s : 0.0f);
      __m512i q0 = _mm512_cvtps_epi32 (_mm512_mul_ps (x0, inv));
      __m512i q1 = _mm512_cvtps_epi32 (_mm512_mul_ps (x1, inv));
      SS[(size_t) m * KB + kb] =
          _mm512_reduce_add_epi32 (_mm512_add_epi32 (q0, q1));
      _mm_storeu_si128 ((__m128i *) (q + k0), _mm512_cvtepi32_epi8 (q0));
      _mm_storeu_si128 ((__m128i *) (q + k0 + 16), _mm512_cvtepi32_epi8 (q1));
    }
  }
}

static void
panel_vnni (int M, const uint8_t *QA, int ldq, const float *SA,
    const int32_t *SS, int lds, const PanelArgs *pa, float *C, int ldc)
{
  for (int m = 0; m < M; m += AVX512_MR) {
    const int mr = MIN (AVX512_MR, M - m);
    if (pa->B->type == MOSHI_WEIGHTS_Q4)
      tiles_vnni_q4[mr](QA + (size_t) m * ldq, ldq, SA + (size_t) m * lds,
          SS + (size_t) m * lds, lds, pa, C + (size_t) m * ldc, ldc);
    else
      tiles_vnni[mr](QA + (size_t) m * ldq, ldq, SA + (size_t) m * lds,
          SS + (size_t) m * lds, lds, pa, C + (size_t) m * ldc, ldc);
  }
}
#endif

typedef void (
    *PanelFn) (int, const float *, int, const PanelArgs *, float *, int);

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

/* Threads split a product's items (row block, run of panels) as one
 * contiguous range each, so that every thread streams its weights in
 * order and its prefetches run on into its own next item.  A thread done
 * with its range takes items from the end of another's: a thread slowed by
 * anything else on its core leaves the rest of its share to the others
 * instead of making every product wait for it.  A range is [lo, hi) in
 * one 64-bit word, so that its owner (from the front) and a thief (from
 * the back) agree with one compare-and-swap; each word has its own cache
 * line, as the owners update theirs at every item.  Measured on the LM's
 * product sequences (two threads, q4, weights out of cache): ~3 % less
 * time for the temporal transformer's products and ~7 % for the
 * depformer's than one shared item counter (docs/performance.md). */
typedef struct {
  uint64_t lo_hi; /* lo | hi << 32 */
} __attribute__ ((aligned (64))) ItemRange;

#define MAX_RANGES 16

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
  const uint8_t *QA; /* VNNI path: quantized A, [M][KP] */
  const float *SA; /* and its scales, [M][KP / 32] */
  const int32_t *SS; /* and, for Q4, its block sums, [M][KP / 32] */
  int chunk; /* panels per item */
  int n_items;
  int n_ranges;
  ItemRange *ranges;
} PackedJob;

/* Rows per block: keeps a block of A rows hot in L1/L2 while one panel of
 * B streams through, for the large-M (early SEANet) layers. */
#define M_BLOCK 96

/* Rows [m0, m0 + mb) against panels [p0, p1). */
static void
packed_run (const PackedJob *j, int m0, int mb, int p0, int p1)
{
  const MoshiPackedB *B = j->B;
  const int KP = k_padded (B);
  for (int p = p0; p < p1; p++) {
    int n0 = p * NR;
    PanelArgs pa = { B, p, j->bias ? j->bias + n0 : NULL, j->accumulate,
      MIN (NR, B->N - n0) };
    float *c = j->C + (size_t) m0 * j->ldc + n0;
#if defined(__x86_64__)
    if (j->QA) {
      panel_vnni (mb, j->QA + (size_t) m0 * KP, KP,
          j->SA + (size_t) m0 * (KP / QB),
          j->SS ? j->SS + (size_t) m0 * (KP / QB) : NULL, KP / QB, &pa, c,
          j->ldc);
      continue;
    }
#endif
    j->panel (mb, j->A + (size_t) m0 * j->lda, j->lda, &pa, c, j->ldc);
  }
}

/* The next item for thread `index`: the front of its own range, else the
 * back of another's; -1 when none is left. */
static int
take_item (PackedJob *j, int index)
{
  for (int t = 0; t < j->n_ranges; t++) {
    const int r = (index + t) % j->n_ranges;
    const gboolean own = t == 0 && index < j->n_ranges;
    uint64_t cur = __atomic_load_n (&j->ranges[r].lo_hi, __ATOMIC_RELAXED);
    for (;;) {
      const uint32_t lo = (uint32_t) cur, hi = (uint32_t) (cur >> 32);
      if (lo >= hi)
        break;
      const uint64_t next = own ? ((uint64_t) hi << 32) | (lo + 1)
                                : ((uint64_t) (hi - 1) << 32) | lo;
      if (__atomic_compare_exchange_n (&j->ranges[r].lo_hi, &cur, next, TRUE,
              __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        return own ? (int) lo : (int) hi - 1;
    }
  }
  return -1;
}

static void
packed_part (void *data, int index, int count)
{
  PackedJob *j = data;
  const int n_chunks = (j->B->n_panels + j->chunk - 1) / j->chunk;
  for (;;) {
    /* Items in row-block-major order: one thread alone walks every panel
     * for a block of rows before the next block. */
    const int it = count == 1 ? index++ : take_item (j, index);
    if (it < 0 || it >= j->n_items)
      break;
    const int m0 = it / n_chunks * M_BLOCK, c = it % n_chunks;
    packed_run (j, m0, MIN (M_BLOCK, j->M - m0), c * j->chunk,
        MIN (j->B->n_panels, (c + 1) * j->chunk));
  }
}

void
moshi_gemm_packed (MoshiPool *pool, int M, const float *A, int lda,
    const MoshiPackedB *B, const float *bias, gboolean accumulate, float *C,
    int ldc)
{
  if (M <= 0 || B->N <= 0)
    return;
  if (B->type == MOSHI_WEIGHTS_BF16 && M >= MOSHI_AMX_MIN_ROWS
      && B->K >= MOSHI_AMX_MIN_K && moshi_cpu_has_amx ()
      && moshi_gemm_amx_bf16 (pool, M, A, lda, B, bias, accumulate, C, ldc))
    return;
  PackedJob job = { select_panel (), M, A, lda, B, bias, accumulate, C, ldc,
    NULL, NULL, NULL };
  uint8_t *qa = NULL;
#if defined(__x86_64__)
  uint8_t qa_stack[4096] __attribute__ ((aligned (64)));
  float sa_stack[128];
  int32_t ss_stack[128];
  if (is_quantized (B->type) && moshi_cpu_has_avx512_vnni ()) {
    const int KP = k_padded (B);
    const size_t need = (size_t) M * KP, nblocks = (size_t) M * (KP / QB);
    uint8_t *q = qa_stack;
    float *sa = sa_stack;
    int32_t *ss = ss_stack;
    if (need > sizeof qa_stack || nblocks > G_N_ELEMENTS (sa_stack)) {
      const size_t q_bytes = (need + 63) & ~(size_t) 63;
      qa = g_malloc (q_bytes + (sizeof (float) + sizeof (int32_t)) * nblocks);
      q = qa;
      sa = (float *) (qa + q_bytes);
      ss = (int32_t *) (sa + nblocks);
    }
    quantize_rows_avx512 (M, A, lda, B->K, KP, q, sa, ss);
    job.QA = q;
    job.SA = sa;
    job.SS = ss;
  }
#endif
  double flops = 2.0 * M * B->N * B->K;
  const int threads = moshi_pool_threads (pool);
  const int n_mblocks = (M + M_BLOCK - 1) / M_BLOCK;
  if (threads > 1 && flops > 4e5 && B->n_panels >= 2) {
    /* Items of ~16 KB of weights or more: each costs one compare-and-swap
     * and, for a thief, the restart of a prefetch stream; at most 1/64 of
     * a thread's share, so that the last thread keeps the others waiting
     * for little at the end of the product. */
    const size_t panel_bytes = moshi_packed_bytes (B) / B->n_panels;
    job.chunk = MAX (B->n_panels * n_mblocks / (64 * threads),
        (int) ((16384 + panel_bytes - 1) / panel_bytes));
    job.chunk = MAX (1, MIN (job.chunk, B->n_panels));
    job.n_items = n_mblocks * ((B->n_panels + job.chunk - 1) / job.chunk);
    ItemRange ranges[MAX_RANGES];
    job.n_ranges = MIN (threads, MAX_RANGES);
    job.ranges = ranges;
    for (int r = 0; r < job.n_ranges; r++) {
      const uint64_t lo = (uint64_t) job.n_items * r / job.n_ranges;
      const uint64_t hi = (uint64_t) job.n_items * (r + 1) / job.n_ranges;
      ranges[r].lo_hi = lo | hi << 32;
    }
    moshi_pool_run (pool, packed_part, &job);
  } else {
    job.chunk = B->n_panels;
    job.n_items = n_mblocks;
    packed_part (&job, 0, 1);
  }
  g_free (qa);
}
