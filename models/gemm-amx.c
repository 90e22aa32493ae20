#include "gemm-amx.h"

#include "alloc.h"
#include "cpu.h"

#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>

#define NR MOSHI_GEMM_NR
/* A tile is 16 rows of 64 bytes: 16 rows x 32 bf16 of A, or 16 k-pairs x
 * 16 columns of B (the pair-interleaved "VNNI" layout tdpbf16ps reads). */
#define TILE_ROWS 16
#define TILE_K 32
/* Rows of C per block: two A tiles against the two B tiles of a 32-column
 * panel give four 16 x 16 accumulator tiles. */
#define MB 32

#define AMX_TARGET "amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512bf16"

typedef struct {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
} __attribute__ ((packed)) TileConfig;

/* Tiles 0-3: C blocks (rows 0-15 | 16-31) x (columns 0-15 | 16-31);
 * 4-5: A rows 0-15, 16-31; 6-7: B columns 0-15, 16-31.  All 16 x 64 B. */
__attribute__ ((target (AMX_TARGET))) static void
tiles_configure (void)
{
  TileConfig cfg;
  memset (&cfg, 0, sizeof cfg);
  cfg.palette_id = 1;
  for (int t = 0; t < 8; t++) {
    cfg.rows[t] = TILE_ROWS;
    cfg.colsb[t] = 64;
  }
  _tile_loadconfig (&cfg);
}

/* Rounds n floats to bf16 (nearest even, as vcvtneps2bf16 does). */
__attribute__ ((target (AMX_TARGET))) static void
to_bf16 (uint16_t *dst, const float *src, size_t n)
{
  size_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm256_storeu_si256 ((__m256i *) (dst + i),
        (__m256i) _mm512_cvtneps_pbh (_mm512_loadu_ps (src + i)));
  if (i < n) {
    __mmask16 m = (__mmask16) ((1u << (n - i)) - 1);
    __m256i v =
        (__m256i) _mm512_cvtneps_pbh (_mm512_maskz_loadu_ps (m, src + i));
    _mm256_mask_storeu_epi16 (dst + i, m, v);
  }
}

/* One panel of B ([K][32] bf16) into tile order: for each 32-k block,
 * columns 0-15 then 16-31, each as 16 rows of (k even, k odd) pairs per
 * column.  Rows past K are zero. */
__attribute__ ((target (AMX_TARGET))) static void
panel_to_tiles (const uint16_t *Bp, int K, int KB, uint16_t *dst)
{
  static const uint16_t lo_idx[32] = { 0, 32, 1, 33, 2, 34, 3, 35, 4, 36, 5, 37,
    6, 38, 7, 39, 8, 40, 9, 41, 10, 42, 11, 43, 12, 44, 13, 45, 14, 46, 15,
    47 };
  static const uint16_t hi_idx[32] = { 16, 48, 17, 49, 18, 50, 19, 51, 20, 52,
    21, 53, 22, 54, 23, 55, 24, 56, 25, 57, 26, 58, 27, 59, 28, 60, 29, 61, 30,
    62, 31, 63 };
  const __m512i lo = _mm512_loadu_si512 (lo_idx);
  const __m512i hi = _mm512_loadu_si512 (hi_idx);
  for (int kb = 0; kb < KB; kb++) {
    uint16_t *d = dst + (size_t) kb * 2 * TILE_ROWS * NR;
    for (int r = 0; r < TILE_ROWS; r++) {
      const int k0 = kb * TILE_K + 2 * r;
      __m512i even = k0 < K
          ? _mm512_load_si512 ((const void *) (Bp + (size_t) k0 * NR))
          : _mm512_setzero_si512 ();
      __m512i odd = k0 + 1 < K
          ? _mm512_load_si512 ((const void *) (Bp + (size_t) (k0 + 1) * NR))
          : _mm512_setzero_si512 ();
      _mm512_store_si512 ((void *) (d + (size_t) r * NR),
          _mm512_permutex2var_epi16 (even, lo, odd));
      _mm512_store_si512 ((void *) (d + (size_t) (TILE_ROWS + r) * NR),
          _mm512_permutex2var_epi16 (even, hi, odd));
    }
  }
}

/* The calling thread's scratch (bf16 A and the workers' panels), kept
 * between calls: SEANet makes ~40 such calls per frame and fresh
 * allocations of this size cost page faults each time. */
typedef struct {
  uint16_t *data;
  size_t elems;
} Scratch;

static void
scratch_free (gpointer p)
{
  Scratch *s = p;
  moshi_free (s->data);
  g_free (s);
}

static GPrivate scratch_key = G_PRIVATE_INIT (scratch_free);

static uint16_t *
scratch_get (size_t elems)
{
  Scratch *s = g_private_get (&scratch_key);
  if (!s) {
    s = g_new0 (Scratch, 1);
    g_private_set (&scratch_key, s);
  }
  if (s->elems < elems) {
    moshi_free (s->data);
    s->elems = 0;
    s->data = moshi_alloc (elems * 2 + 64);
    if (!s->data)
      return NULL;
    s->elems = elems;
  }
  return s->data;
}

typedef struct {
  int M, n_mblocks;
  const uint16_t *A; /* bf16, row m at A + m * a_stride, KB * 32 readable */
  size_t a_stride; /* in elements */
  const MoshiPackedB *B;
  const float *bias;
  gboolean accumulate;
  float *C;
  int ldc;
  uint16_t *panels; /* per worker, one panel in tile order */
  size_t panel_elems;
} AmxJob;

/* C rows [m0, m0 + 32) x panel columns, from the four accumulator tiles
 * (stored to `acc`, 32 x 32 floats). */
__attribute__ ((target (AMX_TARGET))) static void
store_block (const AmxJob *j, int m0, int n0, const float *acc)
{
  const int ncols = MIN (NR, j->B->N - n0);
  const int rows = MIN (MB, j->M - m0);
  const __mmask16 k0 = ncols >= 16 ? 0xFFFF : (__mmask16) ((1u << ncols) - 1);
  const __mmask16 k1 = ncols >= 32 ? 0xFFFF
      : ncols <= 16                ? 0
                                   : (__mmask16) ((1u << (ncols - 16)) - 1);
  const __m512 b0 =
      j->bias ? _mm512_maskz_loadu_ps (k0, j->bias + n0) : _mm512_setzero_ps ();
  const __m512 b1 = j->bias ? _mm512_maskz_loadu_ps (k1, j->bias + n0 + 16)
                            : _mm512_setzero_ps ();
  for (int i = 0; i < rows; i++) {
    float *c = j->C + (size_t) (m0 + i) * j->ldc + n0;
    __m512 v0 = _mm512_add_ps (_mm512_load_ps (acc + i * NR), b0);
    __m512 v1 = _mm512_add_ps (_mm512_load_ps (acc + i * NR + 16), b1);
    if (j->accumulate) {
      v0 = _mm512_add_ps (v0, _mm512_maskz_loadu_ps (k0, c));
      v1 = _mm512_add_ps (v1, _mm512_maskz_loadu_ps (k1, c + 16));
    }
    _mm512_mask_storeu_ps (c, k0, v0);
    _mm512_mask_storeu_ps (c + 16, k1, v1);
  }
}

/* Work items are (panel, row block) pairs, panel-major, so a thread turns
 * each of its panels into tile order once. */
__attribute__ ((target (AMX_TARGET))) static void
amx_part (void *data, int index, int count)
{
  const AmxJob *j = data;
  const MoshiPackedB *B = j->B;
  const int KB = (B->K + TILE_K - 1) / TILE_K;
  const long n_items = (long) B->n_panels * j->n_mblocks;
  const long i0 = n_items * index / count, i1 = n_items * (index + 1) / count;
  if (i0 >= i1)
    return;
  uint16_t *panel = j->panels + (size_t) index * j->panel_elems;
  float acc[MB * NR] __attribute__ ((aligned (64)));
  const size_t a_bytes = j->a_stride * 2;
  int converted = -1;
  tiles_configure ();
  for (long it = i0; it < i1; it++) {
    const int p = (int) (it / j->n_mblocks), mb = (int) (it % j->n_mblocks);
    if (p != converted) {
      panel_to_tiles ((const uint16_t *) B->data + (size_t) p * B->K * NR, B->K,
          KB, panel);
      converted = p;
    }
    const uint16_t *a0 = j->A + (size_t) mb * MB * j->a_stride;
    const uint16_t *a1 = a0 + (size_t) TILE_ROWS * j->a_stride;
    _tile_zero (0);
    _tile_zero (1);
    _tile_zero (2);
    _tile_zero (3);
    for (int kb = 0; kb < KB; kb++) {
      const uint16_t *bt = panel + (size_t) kb * 2 * TILE_ROWS * NR;
      _tile_loadd (4, a0 + kb * TILE_K, a_bytes);
      _tile_loadd (5, a1 + kb * TILE_K, a_bytes);
      _tile_loadd (6, bt, 64);
      _tile_loadd (7, bt + TILE_ROWS * NR, 64);
      _tile_dpbf16ps (0, 4, 6);
      _tile_dpbf16ps (1, 4, 7);
      _tile_dpbf16ps (2, 5, 6);
      _tile_dpbf16ps (3, 5, 7);
    }
    _tile_stored (0, acc, NR * 4);
    _tile_stored (1, acc + 16, NR * 4);
    _tile_stored (2, acc + TILE_ROWS * NR, NR * 4);
    _tile_stored (3, acc + TILE_ROWS * NR + 16, NR * 4);
    store_block (j, mb * MB, p * NR, acc);
  }
  _tile_release ();
}

gboolean
moshi_gemm_amx_bf16 (MoshiPool *pool, int M, const float *A, int lda,
    const MoshiPackedB *B, const float *bias, gboolean accumulate, float *C,
    int ldc)
{
  g_assert (B->type == MOSHI_WEIGHTS_BF16 && moshi_cpu_has_amx ());
  const int K = B->K, KP = (K + TILE_K - 1) / TILE_K * TILE_K;
  const int n_mblocks = (M + MB - 1) / MB, m_pad = n_mblocks * MB;
  /* A in bf16, with every tile row readable and zero past the data.
   * Overlapping rows (conv windows, lda < K) are converted once as the
   * span they cover and read with a row stride of lda; the k past K of a
   * row then reads the next rows' values, which meet B's zero rows.
   * Otherwise each row is copied to its own KP-long, zero-padded row. */
  const gboolean span = lda < K;
  const size_t stride = span ? (size_t) lda : (size_t) KP;
  const size_t len = (size_t) (m_pad - 1) * stride + KP;
  const double flops = 2.0 * M * B->N * K;
  const int workers = moshi_pool_threads (pool) > 1 && flops > 4e6
          && (long) B->n_panels * n_mblocks >= 2
      ? moshi_pool_threads (pool)
      : 1;
  const size_t panel_elems = (size_t) (KP / TILE_K) * 2 * TILE_ROWS * NR;
  uint16_t *a = scratch_get ((len + 31) / 32 * 32 + panel_elems * workers);
  if (!a)
    return FALSE;
  uint16_t *panels = a + (len + 31) / 32 * 32;
  if (span) {
    const size_t used = (size_t) (M - 1) * lda + K;
    to_bf16 (a, A, used);
    memset (a + used, 0, (len - used) * 2);
  } else {
    for (int m = 0; m < M; m++) {
      to_bf16 (a + (size_t) m * stride, A + (size_t) m * lda, K);
      memset (a + (size_t) m * stride + K, 0, (stride - K) * 2);
    }
    memset (a + (size_t) M * stride, 0, (len - (size_t) M * stride) * 2);
  }
  AmxJob job = { M, n_mblocks, a, stride, B, bias, accumulate, C, ldc, panels,
    panel_elems };
  if (workers > 1)
    moshi_pool_run (pool, amx_part, &job);
  else
    amx_part (&job, 0, 1);
  return TRUE;
}

#else

gboolean
moshi_gemm_amx_bf16 (MoshiPool *pool, int M, const float *A, int lda,
    const MoshiPackedB *B, const float *bias, gboolean accumulate, float *C,
    int ldc)
{
  return FALSE;
}

#endif
