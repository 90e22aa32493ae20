/* Elementwise kernels where a library expf/tanhf per element would cost as
 * much as a good share of the matrix products: the vision tower's (one 448
 * image: ~120 M GELUs and ~450 M softmax exponentials), and the
 * transformers' attention softmax and gated SiLU (a full 3000-step context
 * is 3 M exponentials a step for the 7B).  Versions are chosen at run time
 * (cpu.h): AVX-512 and AVX2+FMA for the tower's, AVX-512 for attention's and
 * the SiLU, each with a portable C fallback.  All use the same exp
 * approximation (Cody-Waite reduction + degree-6 polynomial, ~2 ulp). */
#pragma once
#include <stddef.h>

/* y = x * sigmoid(2u) = 0.5 x (1 + tanh(u)), u = sqrt(2/pi)(x + 0.044715x^3):
 * PyTorch's gelu(approximate="tanh"). In place allowed. */
void moshi_gelu_tanh (float *dst, const float *src, size_t n);

/* Row-wise softmax in place over `rows` rows of n values (row stride ld). */
void moshi_softmax_rows (float *x, int rows, int n, size_t ld);

/* Attention's softmax over slots [lo, hi] of x where keep[j] != 0 (at
 * least one): x[j] = exp(x[j] - max) there and 0 at the other slots of the
 * range; returns 1 / the sum, the division left to the caller.  The sum is
 * accumulated in double. */
float moshi_softmax_kept (float *x, const unsigned char *keep, int lo, int hi);

/* dst[i] = silu(gate[i]) * value[i] = gate / (1 + exp(-gate)) * value:
 * the gated feed-forward of Moshi's transformers.  dst may be gate. */
void moshi_silu_mul (float *dst, const float *gate, const float *value,
    size_t n);
