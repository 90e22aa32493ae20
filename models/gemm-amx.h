/* GEMM against BF16-packed weights on Intel AMX (Sapphire Rapids and later).
 *
 * The compute-bound layers (SEANet convolutions over hundreds of time rows,
 * the vision tower) do far more arithmetic per weight than the 1-2 row
 * streaming layers; AMX's tile unit multiplies bf16 matrices about 20 times
 * faster than AVX-512 FMAs do in float32.  The activations are rounded to
 * bf16 as well (2^-9 relative), the sums are float32.  Only used for
 * MOSHI_WEIGHTS_BF16 (already approximate), never for exact float32. */
#pragma once
#include "gemm.h"

G_BEGIN_DECLS

/* Fewest rows of A for which moshi_gemm_packed uses AMX: below that the
 * weights are read for too little arithmetic and the AVX-512 kernels,
 * which keep A in float32, are as fast.  Nor for K < 32, less than one
 * tile deep: converting A to bf16 then costs more than the products (Mimi's
 * first convolution, 1920 x 7 -> 64: 51 us with AMX, 27 without; its last,
 * 1920 x 192 -> 1, is still 6x faster with AMX). */
#define MOSHI_AMX_MIN_ROWS 16
#define MOSHI_AMX_MIN_K 32

/* Same contract as moshi_gemm_packed; B must be MOSHI_WEIGHTS_BF16 and
 * moshi_cpu_has_amx () TRUE.  FALSE (nothing written) when its scratch
 * memory cannot be allocated: the caller then uses the AVX-512 kernels. */
gboolean moshi_gemm_amx_bf16 (MoshiPool *pool, int M, const float *A, int lda,
    const MoshiPackedB *B, const float *bias, gboolean accumulate, float *C,
    int ldc);

G_END_DECLS
