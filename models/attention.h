/* The inner loops of attention against a cache of keys and values: one
 * head, one or two queries, the cache in float32 or in IEEE half precision.
 *
 * Keys are stored transposed, [hd][ctx] (row stride ctx), so a query scores
 * every slot with contiguous vector FMAs; values row j at v + j * ldv.
 * valid[j]: slot j may be attended; [lo, hi] bounds the valid slots (at
 * least one).  out[hd] += sum_j softmax_j(scale * q.k_j) v_j; scores: [ctx]
 * scratch per query.
 *
 * Half precision is for the approximate weight modes: Mimi's attention
 * reads its whole cache (250 steps x 512 channels x 8 layers, keys and
 * values: 8 MB per transformer) for every frame, as many bytes as its 4-bit
 * weights; halves cut that in two and keep 11 significant bits.  Values
 * beyond half's range saturate at +-65504 instead of becoming infinite. */
#pragma once
#include <glib.h>
#include <stdint.h>

G_BEGIN_DECLS

void moshi_attention_head (const float *q, const float *kT, int ctx,
    const float *v, int ldv, int hd, float scale, const guint8 *valid, int lo,
    int hi, float *scores, float *out);

/* Two queries over the same cache, each with its own valid slots, bounds,
 * scores and output, in one pass over the cache: each query's results are
 * exactly moshi_attention_head's. */
void moshi_attention_head2 (const float *const q[2], const float *kT, int ctx,
    const float *v, int ldv, int hd, float scale, const guint8 *const valid[2],
    const int lo[2], const int hi[2], float *const scores[2],
    float *const out[2]);

/* The same two over a half-precision cache (kT and v in halves), and one
 * query over it. */
void moshi_attention_head2_f16 (const float *const q[2], const uint16_t *kT,
    int ctx, const uint16_t *v, int ldv, int hd, float scale,
    const guint8 *const valid[2], const int lo[2], const int hi[2],
    float *const scores[2], float *const out[2]);
void moshi_attention_head_f16 (const float *q, const uint16_t *kT, int ctx,
    const uint16_t *v, int ldv, int hd, float scale, const guint8 *valid,
    int lo, int hi, float *scores, float *out);

/* Round to nearest even, saturating. */
uint16_t moshi_f32_to_f16 (float f);
/* The same for n values (vectorized where the CPU allows). */
void moshi_f32_to_f16_n (uint16_t *dst, const float *src, size_t n);
float moshi_f16_to_f32 (uint16_t h);

G_END_DECLS
