#include "vec-math.h"

#include <glib.h>

#include "cpu.h"

#include <math.h>
#include <stdint.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

/* exp(x) on [-87, 88] (0 below, exp(88) above: no inf or denormals; NaN
 * stays NaN): x = n ln2 + r with |r| <= ln2/2, exp(r) by Cephes' expf
 * polynomial, 2^n through the exponent bits.  n is rounded with the
 * 1.5 * 2^23 trick so every version computes the same thing. */
#define EXP_HI 88.0f
#define EXP_LO -87.0f
#define LOG2E 1.44269504088896341f
#define LN2_HI 0.693359375f
#define LN2_LO -2.12194440e-4f
#define ROUND_MAGIC 12582912.0f /* 1.5 * 2^23 */
#define P0 1.9875691500e-4f
#define P1 1.3981999507e-3f
#define P2 8.3334519073e-3f
#define P3 4.1665795894e-2f
#define P4 1.6666665459e-1f
#define P5 5.0000001201e-1f
#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_C 0.044715f

static inline float
exp_scalar (float x)
{
  if (x < EXP_LO)
    return 0.0f; /* also exp(-inf) */
  x = x > EXP_HI ? EXP_HI : x;
  float t = x * LOG2E + ROUND_MAGIC;
  float n = t - ROUND_MAGIC;
  uint32_t ti; /* unsigned: NaN inputs give garbage bits, never UB */
  memcpy (&ti, &t, 4);
  uint32_t ni = ti - 0x4B400000u;
  float r = x - n * LN2_HI - n * LN2_LO;
  float p = P0;
  p = p * r + P1;
  p = p * r + P2;
  p = p * r + P3;
  p = p * r + P4;
  p = p * r + P5;
  float y = p * r * r + r + 1.0f;
  uint32_t bits = (ni + 127u) << 23;
  float s;
  memcpy (&s, &bits, 4);
  return y * s;
}

static void
gelu_tanh_generic (float *dst, const float *src, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    float x = src[i];
    float u = GELU_K * (x + GELU_C * x * x * x);
    dst[i] = x / (1.0f + exp_scalar (-2.0f * u));
  }
}

static void
softmax_row_generic (float *x, int n)
{
  float m = -INFINITY;
  for (int i = 0; i < n; i++)
    m = x[i] > m ? x[i] : m;
  float s = 0.0f;
  for (int i = 0; i < n; i++) {
    x[i] = exp_scalar (x[i] - m);
    s += x[i];
  }
  float inv = 1.0f / s;
  for (int i = 0; i < n; i++)
    x[i] *= inv;
}

#if defined(__x86_64__)
#define AVX2 __attribute__ ((target ("avx2,fma")))

AVX2 static inline __m256
exp_avx2 (__m256 x)
{
  /* Below EXP_LO (and -inf) the result is 0.  max/min return their second
   * operand when one is NaN, so NaN goes through as NaN. */
  const __m256 keep = _mm256_cmp_ps (x, _mm256_set1_ps (EXP_LO), _CMP_NLT_UQ);
  x = _mm256_min_ps (_mm256_set1_ps (EXP_HI),
      _mm256_max_ps (_mm256_set1_ps (EXP_LO), x));
  __m256 t =
      _mm256_fmadd_ps (x, _mm256_set1_ps (LOG2E), _mm256_set1_ps (ROUND_MAGIC));
  __m256 n = _mm256_sub_ps (t, _mm256_set1_ps (ROUND_MAGIC));
  __m256i ni = _mm256_sub_epi32 (_mm256_castps_si256 (t),
      _mm256_set1_epi32 (0x4B400000));
  __m256 r = _mm256_fnmadd_ps (n, _mm256_set1_ps (LN2_HI), x);
  r = _mm256_fnmadd_ps (n, _mm256_set1_ps (LN2_LO), r);
  __m256 p = _mm256_set1_ps (P0);
  p = _mm256_fmadd_ps (p, r, _mm256_set1_ps (P1));
  p = _mm256_fmadd_ps (p, r, _mm256_set1_ps (P2));
  p = _mm256_fmadd_ps (p, r, _mm256_set1_ps (P3));
  p = _mm256_fmadd_ps (p, r, _mm256_set1_ps (P4));
  p = _mm256_fmadd_ps (p, r, _mm256_set1_ps (P5));
  __m256 y = _mm256_fmadd_ps (_mm256_mul_ps (p, r), r,
      _mm256_add_ps (r, _mm256_set1_ps (1.0f)));
  __m256i bits =
      _mm256_slli_epi32 (_mm256_add_epi32 (ni, _mm256_set1_epi32 (127)), 23);
  return _mm256_and_ps (keep, _mm256_mul_ps (y, _mm256_castsi256_ps (bits)));
}

AVX2 static void
gelu_tanh_avx2 (float *dst, const float *src, size_t n)
{
  size_t i = 0;
  const __m256 k = _mm256_set1_ps (-2.0f * GELU_K);
  const __m256 c = _mm256_set1_ps (GELU_C), one = _mm256_set1_ps (1.0f);
  for (; i + 8 <= n; i += 8) {
    __m256 x = _mm256_loadu_ps (src + i);
    __m256 x2 = _mm256_mul_ps (x, x);
    __m256 u = _mm256_mul_ps (k, _mm256_fmadd_ps (_mm256_mul_ps (c, x2), x, x));
    __m256 d = _mm256_add_ps (one, exp_avx2 (u));
    _mm256_storeu_ps (dst + i, _mm256_div_ps (x, d));
  }
  gelu_tanh_generic (dst + i, src + i, n - i);
}

AVX2 static float
hmax_avx2 (__m256 v)
{
  __m128 m =
      _mm_max_ps (_mm256_castps256_ps128 (v), _mm256_extractf128_ps (v, 1));
  m = _mm_max_ps (m, _mm_movehl_ps (m, m));
  m = _mm_max_ss (m, _mm_shuffle_ps (m, m, 1));
  return _mm_cvtss_f32 (m);
}

AVX2 static float
hsum_avx2 (__m256 v)
{
  __m128 s =
      _mm_add_ps (_mm256_castps256_ps128 (v), _mm256_extractf128_ps (v, 1));
  s = _mm_add_ps (s, _mm_movehl_ps (s, s));
  s = _mm_add_ss (s, _mm_shuffle_ps (s, s, 1));
  return _mm_cvtss_f32 (s);
}

AVX2 static void
softmax_row_avx2 (float *x, int n)
{
  int i = 0;
  __m256 vm = _mm256_set1_ps (-INFINITY);
  for (; i + 8 <= n; i += 8)
    vm = _mm256_max_ps (vm, _mm256_loadu_ps (x + i));
  float m = hmax_avx2 (vm);
  for (; i < n; i++)
    m = x[i] > m ? x[i] : m;
  __m256 mm = _mm256_set1_ps (m), vs = _mm256_setzero_ps ();
  for (i = 0; i + 8 <= n; i += 8) {
    __m256 e = exp_avx2 (_mm256_sub_ps (_mm256_loadu_ps (x + i), mm));
    _mm256_storeu_ps (x + i, e);
    vs = _mm256_add_ps (vs, e);
  }
  float s = hsum_avx2 (vs);
  for (; i < n; i++) {
    x[i] = exp_scalar (x[i] - m);
    s += x[i];
  }
  __m256 inv = _mm256_set1_ps (1.0f / s);
  for (i = 0; i + 8 <= n; i += 8)
    _mm256_storeu_ps (x + i, _mm256_mul_ps (_mm256_loadu_ps (x + i), inv));
  for (; i < n; i++)
    x[i] *= 1.0f / s;
}

/* The same 16 lanes at a time. */
#define AVX512 __attribute__ ((target ("avx512f")))

AVX512 static inline __m512
exp_avx512 (__m512 x)
{
  const __mmask16 keep =
      _mm512_cmp_ps_mask (x, _mm512_set1_ps (EXP_LO), _CMP_NLT_UQ);
  x = _mm512_min_ps (_mm512_set1_ps (EXP_HI),
      _mm512_max_ps (_mm512_set1_ps (EXP_LO), x));
  __m512 t =
      _mm512_fmadd_ps (x, _mm512_set1_ps (LOG2E), _mm512_set1_ps (ROUND_MAGIC));
  __m512 n = _mm512_sub_ps (t, _mm512_set1_ps (ROUND_MAGIC));
  __m512i ni = _mm512_sub_epi32 (_mm512_castps_si512 (t),
      _mm512_set1_epi32 (0x4B400000));
  __m512 r = _mm512_fnmadd_ps (n, _mm512_set1_ps (LN2_HI), x);
  r = _mm512_fnmadd_ps (n, _mm512_set1_ps (LN2_LO), r);
  __m512 p = _mm512_set1_ps (P0);
  p = _mm512_fmadd_ps (p, r, _mm512_set1_ps (P1));
  p = _mm512_fmadd_ps (p, r, _mm512_set1_ps (P2));
  p = _mm512_fmadd_ps (p, r, _mm512_set1_ps (P3));
  p = _mm512_fmadd_ps (p, r, _mm512_set1_ps (P4));
  p = _mm512_fmadd_ps (p, r, _mm512_set1_ps (P5));
  __m512 y = _mm512_fmadd_ps (_mm512_mul_ps (p, r), r,
      _mm512_add_ps (r, _mm512_set1_ps (1.0f)));
  __m512i bits =
      _mm512_slli_epi32 (_mm512_add_epi32 (ni, _mm512_set1_epi32 (127)), 23);
  return _mm512_maskz_mul_ps (keep, y, _mm512_castsi512_ps (bits));
}

AVX512 static void
gelu_tanh_avx512 (float *dst, const float *src, size_t n)
{
  size_t i = 0;
  const __m512 k = _mm512_set1_ps (-2.0f * GELU_K);
  const __m512 c = _mm512_set1_ps (GELU_C), one = _mm512_set1_ps (1.0f);
  for (; i + 16 <= n; i += 16) {
    __m512 x = _mm512_loadu_ps (src + i);
    __m512 x2 = _mm512_mul_ps (x, x);
    __m512 u = _mm512_mul_ps (k, _mm512_fmadd_ps (_mm512_mul_ps (c, x2), x, x));
    __m512 d = _mm512_add_ps (one, exp_avx512 (u));
    _mm512_storeu_ps (dst + i, _mm512_div_ps (x, d));
  }
  gelu_tanh_generic (dst + i, src + i, n - i);
}

AVX512 static void
softmax_row_avx512 (float *x, int n)
{
  int i = 0;
  __m512 vm = _mm512_set1_ps (-INFINITY);
  for (; i + 16 <= n; i += 16)
    vm = _mm512_max_ps (vm, _mm512_loadu_ps (x + i));
  float m = _mm512_reduce_max_ps (vm);
  for (; i < n; i++)
    m = x[i] > m ? x[i] : m;
  __m512 mm = _mm512_set1_ps (m), vs = _mm512_setzero_ps ();
  for (i = 0; i + 16 <= n; i += 16) {
    __m512 e = exp_avx512 (_mm512_sub_ps (_mm512_loadu_ps (x + i), mm));
    _mm512_storeu_ps (x + i, e);
    vs = _mm512_add_ps (vs, e);
  }
  float s = _mm512_reduce_add_ps (vs);
  for (; i < n; i++) {
    x[i] = exp_scalar (x[i] - m);
    s += x[i];
  }
  const float inv = 1.0f / s;
  __m512 vinv = _mm512_set1_ps (inv);
  for (i = 0; i + 16 <= n; i += 16)
    _mm512_storeu_ps (x + i, _mm512_mul_ps (_mm512_loadu_ps (x + i), vinv));
  for (; i < n; i++)
    x[i] *= inv;
}
#endif

void
moshi_gelu_tanh (float *dst, const float *src, size_t n)
{
#if defined(__x86_64__)
  if (moshi_cpu_level () >= MOSHI_CPU_AVX512) {
    gelu_tanh_avx512 (dst, src, n);
    return;
  }
  if (moshi_cpu_level () >= MOSHI_CPU_AVX2) {
    gelu_tanh_avx2 (dst, src, n);
    return;
  }
#endif
  gelu_tanh_generic (dst, src, n);
}

static void
silu_mul_generic (float *dst, const float *gate, const float *value, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    const float g = gate[i];
    dst[i] = g / (1.0f + exp_scalar (-g)) * value[i];
  }
}

#if defined(__x86_64__)
__attribute__ ((target ("avx512f"))) static void
silu_mul_avx512 (float *dst, const float *gate, const float *value, size_t n)
{
  const __m512 one = _mm512_set1_ps (1.0f);
  for (size_t i = 0; i < n; i += 16) {
    const __mmask16 m =
        n - i >= 16 ? 0xFFFF : (__mmask16) ((1u << (n - i)) - 1);
    const __m512 g = _mm512_maskz_loadu_ps (m, gate + i);
    const __m512 e = exp_avx512 (_mm512_sub_ps (_mm512_setzero_ps (), g));
    const __m512 y = _mm512_mul_ps (_mm512_div_ps (g, _mm512_add_ps (one, e)),
        _mm512_maskz_loadu_ps (m, value + i));
    _mm512_mask_storeu_ps (dst + i, m, y);
  }
}
#endif

void
moshi_silu_mul (float *dst, const float *gate, const float *value, size_t n)
{
#if defined(__x86_64__)
  if (moshi_cpu_level () >= MOSHI_CPU_AVX512) {
    silu_mul_avx512 (dst, gate, value, n);
    return;
  }
#endif
  silu_mul_generic (dst, gate, value, n);
}

static float
softmax_kept_generic (float *x, const unsigned char *keep, int lo, int hi)
{
  float m = -INFINITY;
  for (int j = lo; j <= hi; j++)
    if (keep[j])
      m = x[j] > m ? x[j] : m;
  double s = 0.0;
  for (int j = lo; j <= hi; j++) {
    x[j] = keep[j] ? exp_scalar (x[j] - m) : 0.0f;
    s += x[j];
  }
  return (float) (1.0 / s);
}

#if defined(__x86_64__)
/* The loops below start at lo, so a window [j, j + 16) only ends early:
 * its lanes up to hi, and of those the ones keep[] marks. */
__attribute__ ((target ("avx512f,avx512bw,avx512vl"))) static inline __mmask16
upto16 (int j, int hi)
{
  return hi - j >= 15 ? 0xFFFF : (__mmask16) ((1u << (hi - j + 1)) - 1);
}

__attribute__ ((target ("avx512f,avx512bw,avx512vl"))) static inline __mmask16
kept16 (const unsigned char *keep, int j, __mmask16 range)
{
  const __m128i k = _mm_maskz_loadu_epi8 (range, keep + j);
  return _mm_test_epi8_mask (k, k) & range;
}

__attribute__ ((target ("avx512f,avx512bw,avx512vl"))) static float
softmax_kept_avx512 (float *x, const unsigned char *keep, int lo, int hi)
{
  __m512 vm = _mm512_set1_ps (-INFINITY);
  for (int j = lo; j <= hi; j += 16) {
    const __mmask16 k = kept16 (keep, j, upto16 (j, hi));
    vm = _mm512_mask_max_ps (vm, k, vm, _mm512_maskz_loadu_ps (k, x + j));
  }
  const __m512 mm = _mm512_set1_ps (_mm512_reduce_max_ps (vm));
  __m512d s0 = _mm512_setzero_pd (), s1 = s0;
  for (int j = lo; j <= hi; j += 16) {
    const __mmask16 range = upto16 (j, hi);
    const __mmask16 k = kept16 (keep, j, range);
    const __m512 e = _mm512_maskz_mov_ps (k,
        exp_avx512 (_mm512_sub_ps (_mm512_maskz_loadu_ps (k, x + j), mm)));
    _mm512_mask_storeu_ps (x + j, range, e);
    s0 = _mm512_add_pd (s0, _mm512_cvtps_pd (_mm512_castps512_ps256 (e)));
    s1 = _mm512_add_pd (s1,
        _mm512_cvtps_pd (_mm256_castpd_ps (
            _mm512_extractf64x4_pd (_mm512_castps_pd (e), 1))));
  }
  return (float) (1.0 / _mm512_reduce_add_pd (_mm512_add_pd (s0, s1)));
}
#endif

float
moshi_softmax_kept (float *x, const unsigned char *keep, int lo, int hi)
{
#if defined(__x86_64__)
  if (moshi_cpu_level () >= MOSHI_CPU_AVX512)
    return softmax_kept_avx512 (x, keep, lo, hi);
#endif
  return softmax_kept_generic (x, keep, lo, hi);
}

void
moshi_softmax_rows (float *x, int rows, int n, size_t ld)
{
#if defined(__x86_64__)
  if (moshi_cpu_level () >= MOSHI_CPU_AVX512) {
    for (int r = 0; r < rows; r++)
      softmax_row_avx512 (x + (size_t) r * ld, n);
    return;
  }
  if (moshi_cpu_level () >= MOSHI_CPU_AVX2) {
    for (int r = 0; r < rows; r++)
      softmax_row_avx2 (x + (size_t) r * ld, n);
    return;
  }
#endif
  for (int r = 0; r < rows; r++)
    softmax_row_generic (x + (size_t) r * ld, n);
}
