/* GEMM against pre-packed weights: C[M,N] (+)= A[M,K] * B[K,N] (+ bias).
 *
 * Streaming runs tiny batches (2 to 1920 rows per call) against the same
 * weights every 80 ms, so BLAS libraries spend most of their time re-packing
 * the weight operand on each call.  Here B is packed once at load time into
 * panels of 32 columns, [panel][K][32], and the micro-kernels read A in
 * place (any row stride, so conv windows need no im2col copy).
 *
 * Kernels: AVX-512 (6x32 tile) for every storage type (Q8/Q4 need VNNI),
 * AVX2+FMA (3x32 tile) for every storage type (Q8/Q4 weights widened to
 * float, activations kept float), portable C for all; chosen at run time
 * through cpu.h. */
#pragma once
#include <glib.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels.h"
#include "weight-type.h"

G_BEGIN_DECLS

#define MOSHI_GEMM_NR 32
#define MOSHI_Q8_BLOCK 32

typedef struct {
  int K, N;
  int n_panels;
  MoshiWeightType type;
  /* F32:  float    [n_panels][K][32]
   * BF16: uint16_t [n_panels][K][32]
   * Q8:   int8_t   [n_panels][K32 / 4][32][4], K32 = K rounded up to 32
   *       (groups of 4 consecutive k per column: the operand layout of
   *       AVX-512 VNNI's vpdpbusd), scales [n_panels][K32 / 32][32] floats.
   *       Padding is zero.
   * Q4:   uint8_t  [n_panels][K32 / 32][576]: per panel, one contiguous
   *       stream of 32-k blocks, each 512 bytes of weights then 64 bytes of
   *       scales, so that a kernel reads one stream, not two.  The weights
   *       are [8][16][4]: byte (g, j, r) holds weight (k = 32 kb + 4g + r,
   *       column j) in its low nibble and (k, column j + 16) in its high
   *       nibble, each as q + 8 with q in [-8, 7].  Masking 64 bytes with
   *       0x0F / 0xF0 gives the Q8-layout vpdpbusd operands of columns 0-15
   *       and 16-31 (as q + 8, the second times 16) without any shift.  The
   *       scales are 32 bf16 (uint16_t), one per column.
   *       Padding is q = 0, scale 0. */
  void *data;
  float *scales;
  gboolean borrowed; /* arrays point into a mapped cache file: not freed */
} MoshiPackedB;

/* The arrays of a packed matrix (data, scales and two unused slots: once
 * Q8 column sums and Q4 scales, both now gone) and their byte sizes, for
 * writing them to a cache file; unused ones are 0. */
void moshi_packed_layout (const MoshiPackedB *p, void *ptrs[4],
    size_t bytes[4]);
/* Shapes p as a K x N matrix of `type` whose arrays are the given memory
 * (64-byte aligned, sizes as moshi_packed_layout says), without copying. */
void moshi_packed_borrow (MoshiPackedB *p, int K, int N, MoshiWeightType type,
    void *const ptrs[4]);

/* b(k, n) is element (k, n) of the logical B: from a row-major [K][N]
 * matrix (ldb) or, when `transposed`, from a [N][K] matrix (a PyTorch Linear
 * weight, for y = x W^T).  Returns FALSE on allocation failure. */
gboolean moshi_packed_init (MoshiPackedB *p, const float *b, int K, int N,
    int ldb, gboolean transposed);
gboolean moshi_packed_init_typed (MoshiPackedB *p, const float *b, int K, int N,
    int ldb, gboolean transposed, MoshiWeightType type);
void moshi_packed_clear (MoshiPackedB *p);
/* Moves packed weights into fresh 2 MB-aligned memory with transparent
 * huge pages (moshi_alloc_huge).  A model calls it once loaded, one matrix
 * at a time, when the load's temporaries are gone: on the test VM a 7B's
 * products ran ~10 % faster from such copies than from the pages they had
 * been packed into between the load's temporaries (a plain small-page copy:
 * ~7 %; docs/performance.md, session 7).  Weights borrowed from a cache
 * file are copied too and their file pages released (moshi_release_pages),
 * so the RSS does not count them twice; the copy reads the file, so a
 * loader does it before it checks the file was not truncated meanwhile.
 * FALSE when out of memory: the weights then stay where they were. */
gboolean moshi_packed_settle (MoshiPackedB *p);
size_t moshi_packed_bytes (const MoshiPackedB *p);
/* Element (k, n), for tests and rare scalar uses. */
float moshi_packed_get (const MoshiPackedB *p, int k, int n);

/* C[m][n] = (accumulate ? C[m][n] : 0) + (bias ? bias[n] : 0)
 *           + sum_k A[m*lda + k] * B[k][n]
 * Rows of A may overlap (lda < K is fine: conv windows).
 * With Q8 or Q4 weights on a CPU with AVX-512 VNNI, A is quantized per row
 * and 32-block to int8 as well and the products run in integer arithmetic
 * (adds ~0.4 % relative error per block); elsewhere A stays float32. */
void moshi_gemm_packed (MoshiPool *pool, int M, const float *A, int lda,
    const MoshiPackedB *B, const float *bias, gboolean accumulate, float *C,
    int ldc);

G_END_DECLS
