/* Dense kernels besides the GEMM (gemm.h): the per-stream thread pool,
 * activations and norms (attention's inner loops: attention.h).  Row-major
 * everywhere; activations are stored time-major, [T][C], so one time step's
 * channels are contiguous. */
#pragma once
#include <glib.h>
#include <stddef.h>

G_BEGIN_DECLS

/* A small fixed pool of worker threads owned by one stream.  NULL or a
 * 1-thread pool runs everything in the caller. */
typedef struct MoshiPool MoshiPool;
typedef void (*MoshiPoolFn) (void *ctx, int index, int count);

MoshiPool *moshi_pool_new (int n_threads);
void moshi_pool_free (MoshiPool *pool);
int moshi_pool_threads (const MoshiPool *pool);
/* Calls fn(ctx, i, n) for i in [0, n), n = threads; returns when all are done.
 * The caller runs index 0. */
void moshi_pool_run (MoshiPool *pool, MoshiPoolFn fn, void *ctx);

/* Elementwise, in place or out of place (dst may equal src). */
void moshi_elu (float *dst, const float *src, size_t n); /* alpha = 1 */
void moshi_gelu (float *dst, const float *src, size_t n); /* exact (erf) */
/* dst += scale[c] * src, over rows of C channels. */
void moshi_add_scaled_rows (float *dst, const float *src, const float *scale,
    int rows, int C);

/* Row-wise norms over C channels for `rows` rows. weight/bias may be NULL. */
void moshi_layer_norm (float *dst, const float *src, const float *weight,
    const float *bias, int rows, int C, float eps);
void moshi_rms_norm (float *dst, const float *src, const float *weight,
    int rows, int C, float eps);

float moshi_dot (const float *a, const float *b, int n);

G_END_DECLS
