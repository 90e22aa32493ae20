/* Dense kernels besides the GEMM (gemm.h): the per-stream thread pool,
 * activations, norms and the attention inner loop.  Row-major everywhere; activations are stored
 * time-major, [T][C], so one time step's channels are contiguous. */
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

/* One head of attention against a ring of cached keys and values.
 *   kT: keys transposed, [hd][ctx] (row stride ctx); v: values, row j at
 *   v + j * ldv; valid[j]: slot j may be attended; [lo, hi] bounds the valid
 *   slots.  out[hd] = sum_j softmax_j(scale * q.k_j) v_j.  scores: [ctx]
 *   scratch.  Needs at least one valid slot. */
void moshi_attention_head (const float *q, const float *kT, int ctx,
    const float *v, int ldv, int hd, float scale, const guint8 *valid, int lo,
    int hi, float *scores, float *out);

/* moshi_attention_head for two queries over the same cache, with their own
 * valid slots, bounds, score scratch and outputs: the same results, the
 * cache read once. */
void moshi_attention_head2 (const float *const q[2], const float *kT, int ctx,
    const float *v, int ldv, int hd, float scale, const guint8 *const valid[2],
    const int lo[2], const int hi[2], float *const scores[2],
    float *const out[2]);

float moshi_dot (const float *a, const float *b, int n);

G_END_DECLS
