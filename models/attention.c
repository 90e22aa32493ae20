#include "attention.h"

#include "cpu.h"
#include "vec-math.h"

#include <math.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

/* ----------------------------------------------------- half precision --- */

uint16_t
moshi_f32_to_f16 (float f)
{
  uint32_t x;
  memcpy (&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000, ax = x & 0x7fffffff;
  if (ax > 0x7f800000)
    return (uint16_t) (sign | 0x7e00); /* NaN */
  if (ax >= 0x477ff000) /* rounds to infinity (65520 and up): saturate */
    return (uint16_t) (sign | 0x7bff);
  if (ax < 0x38800000) { /* below 2^-14: a subnormal half, steps of 2^-24 */
    float a;
    memcpy (&a, &ax, 4);
    return (uint16_t) (sign | (uint32_t) lrintf (a * 16777216.0f));
  }
  uint32_t h = ((ax >> 23) - 127 + 15) << 10 | (ax & 0x7fffff) >> 13;
  const uint32_t rest = ax & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (h & 1)))
    h++; /* a carry into the exponent is still right */
  return (uint16_t) (sign | h);
}

#if defined(__x86_64__)
__attribute__ ((target ("avx512f,avx512bw,avx512vl,f16c"))) static void
f32_to_f16_avx512 (uint16_t *dst, const float *src, size_t n)
{
  const __m512 big = _mm512_set1_ps (65504.0f);
  const __m512i abs_mask = _mm512_set1_epi32 (0x7fffffff);
  for (size_t i = 0; i < n; i += 16) {
    const __mmask16 m =
        n - i >= 16 ? 0xFFFF : (__mmask16) ((1u << (n - i)) - 1);
    const __m512 x = _mm512_maskz_loadu_ps (m, src + i);
    const __m512i sign =
        _mm512_andnot_si512 (abs_mask, _mm512_castps_si512 (x));
    const __m512 ax = _mm512_castsi512_ps (
        _mm512_and_si512 (_mm512_castps_si512 (x), abs_mask));
    /* As moshi_f32_to_f16: what would round to infinity saturates to the
     * largest half, NaN becomes the quiet NaN 0x7e00 with its sign. */
    const __mmask16 nan = _mm512_cmp_ps_mask (x, x, _CMP_UNORD_Q);
    const __mmask16 over = _mm512_cmp_ps_mask (ax, big, _CMP_GT_OQ);
    __m512 y = _mm512_mask_blend_ps (over, x,
        _mm512_castsi512_ps (
            _mm512_or_si512 (sign, _mm512_castps_si512 (big))));
    __m256i h =
        _mm512_cvtps_ph (y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256i qnan =
        _mm256_or_si256 (_mm512_cvtepi32_epi16 (_mm512_srli_epi32 (sign, 16)),
            _mm256_set1_epi16 (0x7e00));
    h = _mm256_mask_blend_epi16 (nan, h, qnan);
    _mm256_mask_storeu_epi16 (dst + i, m, h);
  }
}
#endif

void
moshi_f32_to_f16_n (uint16_t *dst, const float *src, size_t n)
{
#if defined(__x86_64__)
  if (moshi_cpu_level () >= MOSHI_CPU_AVX512) {
    f32_to_f16_avx512 (dst, src, n);
    return;
  }
#endif
  for (size_t i = 0; i < n; i++)
    dst[i] = moshi_f32_to_f16 (src[i]);
}

float
moshi_f16_to_f32 (uint16_t h)
{
  const uint32_t sign = (uint32_t) (h & 0x8000) << 16;
  const uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ff;
  uint32_t x;
  if (e == 0) {
    float f = (float) m * (1.0f / 16777216.0f);
    memcpy (&x, &f, 4);
    x |= sign;
  } else if (e == 31) {
    x = sign | 0x7f800000 | m << 13;
  } else {
    x = sign | (e - 15 + 127) << 23 | m << 13;
  }
  float f;
  memcpy (&f, &x, 4);
  return f;
}

/* ---------------------------------------------------------- one query --- */

#if defined(__x86_64__)
static void attention_head_avx512 (const float *q, const float *kT,
    const float *v, int ldv, int hd, float scale, const guint8 *valid, int lo,
    int hi, float *sc, float *out);
#endif

void
moshi_attention_head (const float *q, const float *kT, const float *v, int ldv,
    int hd, float scale, const guint8 *valid, int lo, int hi, float *sc,
    float *out)
{
#if defined(__x86_64__)
  if (moshi_cpu_level () >= MOSHI_CPU_AVX512) {
    attention_head_avx512 (q, kT, v, ldv, hd, scale, valid, lo, hi, sc, out);
    return;
  }
#endif
  for (int j = lo; j <= hi; j++)
    sc[j] = 0.0f;
  for (int c = 0; c < hd; c++) {
    const float qc = q[c] * scale;
    for (int j = lo; j <= hi; j++)
      sc[j] += qc * kT[moshi_key_index (hd, c, j)];
  }
  /* Softmax left undivided: 1 / sum goes into the value weights. */
  const float inv = moshi_softmax_kept (sc, valid, lo, hi);
  for (int j = lo; j <= hi; j++)
    if (valid[j])
      for (int c = 0; c < hd; c++)
        out[c] += sc[j] * inv * v[(size_t) j * ldv + c];
}

/* ---------------------------------------------------------- two queries --- */

/* One query over a half-precision cache, portable. */
static void
head_f16_generic (const float *q, const uint16_t *kT, const uint16_t *v,
    int ldv, int hd, float scale, const guint8 *valid, int lo, int hi,
    float *sc, float *out)
{
  for (int j = lo; j <= hi; j++)
    sc[j] = 0.0f;
  for (int c = 0; c < hd; c++) {
    const float qc = q[c] * scale;
    for (int j = lo; j <= hi; j++)
      sc[j] += qc * moshi_f16_to_f32 (kT[moshi_key_index (hd, c, j)]);
  }
  const float inv = moshi_softmax_kept (sc, valid, lo, hi);
  for (int j = lo; j <= hi; j++)
    if (valid[j])
      for (int c = 0; c < hd; c++)
        out[c] += sc[j] * inv * moshi_f16_to_f32 (v[(size_t) j * ldv + c]);
}

#if defined(__x86_64__)
#define PAIR_TARGET "avx512f,avx512bw,avx512vl,f16c"

/* 16 cache entries from element i of a float32 or half cache. */
__attribute__ ((target (PAIR_TARGET), always_inline)) static inline __m512
load16 (const void *p, size_t i, __mmask16 m, const gboolean half)
{
  if (half)
    return _mm512_cvtph_ps (
        _mm256_maskz_loadu_epi16 (m, (const uint16_t *) p + i));
  return _mm512_maskz_loadu_ps (m, (const float *) p + i);
}

/* nq (1 or 2) queries in one pass over the cache; per query the arithmetic
 * and its order are the same whether it is alone or paired (a query's
 * output does not depend on its partner: tests/test-attention.c).  nq and
 * half are constants at each call: the compiler drops the unused paths. */
__attribute__ ((target (PAIR_TARGET), always_inline)) static inline void
heads_avx512 (const float *const q[2], const void *kT, const void *v, int ldv,
    int hd, float scale, const guint8 *const valid[2], const int lo[2],
    const int hi[2], float *const sc[2], float *const out[2], const int nq,
    const gboolean half)
{
  const int es = half ? 2 : 4; /* bytes per cache element */
  const int lo_all = nq == 2 ? MIN (lo[0], lo[1]) : lo[0];
  const int hi_all = nq == 2 ? MAX (hi[0], hi[1]) : hi[0];
  const size_t tile = (size_t) MOSHI_KEY_TILE * hd; /* elements per tile */
  /* Four tiles (64 slots) at a time, from the tile holding lo_all. */
  for (int j0 = lo_all / 16 * 16; j0 <= hi_all; j0 += 64) {
    /* Slots of tile b that are in [lo_all, hi_all]: the others are neither
     * read (a masked load does not touch memory) nor stored. */
    __mmask16 mk[4];
    for (int b = 0; b < 4; b++) {
      const int jb = j0 + 16 * b;
      const int first = MAX (lo_all - jb, 0), last = MIN (hi_all - jb, 15);
      mk[b] = last < first
          ? 0
          : (__mmask16) (((1u << (last + 1)) - 1) & ~((1u << first) - 1));
    }
    const char *cur = (const char *) kT + (size_t) (j0 / 16) * tile * es;
    const gboolean more = j0 + 64 <= hi_all;
    __m512 acc0[4], acc1[4];
    for (int b = 0; b < 4; b++)
      acc0[b] = acc1[b] = _mm512_setzero_ps ();
    for (int c = 0; c < hd; c++) {
      const __m512 qc0 = _mm512_set1_ps (q[0][c] * scale);
      const __m512 qc1 = _mm512_set1_ps (q[1][c] * scale);
      /* The cache was evicted by the frame's weights: ask for the next
       * four tiles' rows of this channel now. */
      if (more && (c * 16 * es) % 64 == 0)
        for (int b = 0; b < 4; b++)
          _mm_prefetch (cur + ((4 + b) * tile + (size_t) c * 16) * es,
              _MM_HINT_T0);
      for (int b = 0; b < 4; b++) {
        const __m512 k = load16 (cur, b * tile + (size_t) c * 16, mk[b], half);
        acc0[b] = _mm512_fmadd_ps (qc0, k, acc0[b]);
        if (nq == 2)
          acc1[b] = _mm512_fmadd_ps (qc1, k, acc1[b]);
      }
    }
    for (int b = 0; b < 4; b++) {
      _mm512_mask_storeu_ps (sc[0] + j0 + 16 * b, mk[b], acc0[b]);
      if (nq == 2)
        _mm512_mask_storeu_ps (sc[1] + j0 + 16 * b, mk[b], acc1[b]);
    }
  }
  const float inv0 = moshi_softmax_kept (sc[0], valid[0], lo[0], hi[0]);
  const float inv1 =
      nq == 2 ? moshi_softmax_kept (sc[1], valid[1], lo[1], hi[1]) : 0.0f;
  /* Values: 128 channels (8 vectors per query: 16 accumulators for a
   * pair, of 32 registers) per pass over the slots, so that a head of
   * 128 reads each value row once, in order. */
  for (int c0 = 0; c0 < hd; c0 += 128) {
    const int w = MIN (128, hd - c0);
    __mmask16 mv[8];
    __m512 o0[8], o1[8];
    for (int b = 0; b < 8; b++) {
      int r = w - 16 * b;
      mv[b] = r >= 16 ? 0xFFFF : r <= 0 ? 0 : (__mmask16) ((1u << r) - 1);
      o0[b] = _mm512_maskz_loadu_ps (mv[b], out[0] + c0 + 16 * b);
      o1[b] = nq == 2 ? _mm512_maskz_loadu_ps (mv[b], out[1] + c0 + 16 * b)
                      : _mm512_setzero_ps ();
    }
    for (int j = lo_all; j <= hi_all; j++) {
      const char *ahead = (const char *) v + ((size_t) (j + 8) * ldv + c0) * es;
      for (int l = 0; l < w * es; l += 64)
        _mm_prefetch (ahead + l, _MM_HINT_T0);
      const gboolean u0 = j >= lo[0] && j <= hi[0] && valid[0][j];
      const gboolean u1 = nq == 2 && j >= lo[1] && j <= hi[1] && valid[1][j];
      if (!u0 && !u1)
        continue;
      const __m512 p0 = _mm512_set1_ps (u0 ? sc[0][j] * inv0 : 0.0f);
      const __m512 p1 = _mm512_set1_ps (u1 ? sc[1][j] * inv1 : 0.0f);
      const size_t row = (size_t) j * ldv + c0;
      for (int b = 0; b < 8; b++) {
        if (!mv[b])
          continue;
        const __m512 x = load16 (v, row + 16 * b, mv[b], half);
        if (u0)
          o0[b] = _mm512_fmadd_ps (p0, x, o0[b]);
        if (u1)
          o1[b] = _mm512_fmadd_ps (p1, x, o1[b]);
      }
    }
    for (int b = 0; b < 8; b++) {
      _mm512_mask_storeu_ps (out[0] + c0 + 16 * b, mv[b], o0[b]);
      if (nq == 2)
        _mm512_mask_storeu_ps (out[1] + c0 + 16 * b, mv[b], o1[b]);
    }
  }
}

__attribute__ ((target (PAIR_TARGET))) static void
head2_f32_avx512 (const float *const q[2], const float *kT, const float *v,
    int ldv, int hd, float scale, const guint8 *const valid[2], const int lo[2],
    const int hi[2], float *const sc[2], float *const out[2])
{
  heads_avx512 (q, kT, v, ldv, hd, scale, valid, lo, hi, sc, out, 2, FALSE);
}

__attribute__ ((target (PAIR_TARGET))) static void
head2_f16_avx512 (const float *const q[2], const uint16_t *kT,
    const uint16_t *v, int ldv, int hd, float scale,
    const guint8 *const valid[2], const int lo[2], const int hi[2],
    float *const sc[2], float *const out[2])
{
  heads_avx512 (q, kT, v, ldv, hd, scale, valid, lo, hi, sc, out, 2, TRUE);
}

/* One query: the pair kernel with nq = 1 (inlined, half constant). */
__attribute__ ((target (PAIR_TARGET), always_inline)) static inline void
head1_avx512 (const float *q, const void *kT, const void *v, int ldv, int hd,
    float scale, const guint8 *valid, int lo, int hi, float *sc, float *out,
    const gboolean half)
{
  const float *qs[2] = { q, q };
  const guint8 *vs[2] = { valid, valid };
  const int los[2] = { lo, lo }, his[2] = { hi, hi };
  float *scs[2] = { sc, sc }, *outs[2] = { out, out };
  heads_avx512 (qs, kT, v, ldv, hd, scale, vs, los, his, scs, outs, 1, half);
}

/* One query over a float32 cache. */
__attribute__ ((target (PAIR_TARGET))) static void
attention_head_avx512 (const float *q, const float *kT, const float *v, int ldv,
    int hd, float scale, const guint8 *valid, int lo, int hi, float *sc,
    float *out)
{
  head1_avx512 (q, kT, v, ldv, hd, scale, valid, lo, hi, sc, out, FALSE);
}

/* One query over a half cache. */
__attribute__ ((target (PAIR_TARGET))) static void
head1_f16_avx512 (const float *q, const uint16_t *kT, const uint16_t *v,
    int ldv, int hd, float scale, const guint8 *valid, int lo, int hi,
    float *sc, float *out)
{
  head1_avx512 (q, kT, v, ldv, hd, scale, valid, lo, hi, sc, out, TRUE);
}
#endif

void
moshi_attention_head2 (const float *const q[2], const float *kT, const float *v,
    int ldv, int hd, float scale, const guint8 *const valid[2], const int lo[2],
    const int hi[2], float *const scores[2], float *const out[2])
{
#if defined(__x86_64__)
  if (moshi_cpu_level () >= MOSHI_CPU_AVX512) {
    head2_f32_avx512 (q, kT, v, ldv, hd, scale, valid, lo, hi, scores, out);
    return;
  }
#endif
  for (int i = 0; i < 2; i++)
    moshi_attention_head (q[i], kT, v, ldv, hd, scale, valid[i], lo[i], hi[i],
        scores[i], out[i]);
}

void
moshi_attention_head2_f16 (const float *const q[2], const uint16_t *kT,
    const uint16_t *v, int ldv, int hd, float scale,
    const guint8 *const valid[2], const int lo[2], const int hi[2],
    float *const scores[2], float *const out[2])
{
#if defined(__x86_64__)
  if (moshi_cpu_level () >= MOSHI_CPU_AVX512) {
    head2_f16_avx512 (q, kT, v, ldv, hd, scale, valid, lo, hi, scores, out);
    return;
  }
#endif
  for (int i = 0; i < 2; i++)
    head_f16_generic (q[i], kT, v, ldv, hd, scale, valid[i], lo[i], hi[i],
        scores[i], out[i]);
}

void
moshi_attention_head_f16 (const float *q, const uint16_t *kT, const uint16_t *v,
    int ldv, int hd, float scale, const guint8 *valid, int lo, int hi,
    float *scores, float *out)
{
#if defined(__x86_64__)
  if (moshi_cpu_level () >= MOSHI_CPU_AVX512) {
    head1_f16_avx512 (q, kT, v, ldv, hd, scale, valid, lo, hi, scores, out);
    return;
  }
#endif
  head_f16_generic (q, kT, v, ldv, hd, scale, valid, lo, hi, scores, out);
}
