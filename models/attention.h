/* The inner loops of attention against a cache of keys and values: one
 * head, one or two queries, the cache in float32 or in IEEE half precision.
 *
 * Keys are stored transposed in tiles of MOSHI_KEY_TILE slots (see
 * moshi_key_index), so a query scores 16 slots at a time with contiguous
 * vector FMAs; values row j at v + j * ldv.  valid[j]: slot j may be
 * attended; [lo, hi] bounds the valid slots (at least one).  out[hd] +=
 * sum_j softmax_j(scale * q.k_j) v_j; scores: scratch per query, written
 * only in [lo, hi].
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

/* One head's keys: channel c of slot j is element
 * ((j / 16) * hd + c) * 16 + j % 16.  A tile (16 slots x hd channels, 4 KB
 * in halves at hd 128) is contiguous: writing one step's key touches a
 * head's one tile, and a query streams whole tiles.  (Rows of [hd][ctx], the
 * layout before, put each channel of a step on a page of its own: 4096
 * scattered stores per layer and step for the 7B; its cache write and
 * attention fell from ~10-15 to ~4 ms a step: docs/performance.md.)  A
 * cache of ctx slots needs moshi_key_slots (ctx) slots of room. */
#define MOSHI_KEY_TILE 16

static inline size_t
moshi_key_index (int hd, int c, int j)
{
  return ((size_t) (j / MOSHI_KEY_TILE) * hd + c) * MOSHI_KEY_TILE
      + j % MOSHI_KEY_TILE;
}

static inline int
moshi_key_slots (int ctx)
{
  return (ctx + MOSHI_KEY_TILE - 1) / MOSHI_KEY_TILE * MOSHI_KEY_TILE;
}

void moshi_attention_head (const float *q, const float *kT, const float *v,
    int ldv, int hd, float scale, const guint8 *valid, int lo, int hi,
    float *scores, float *out);

/* Two queries over the same cache, each with its own valid slots, bounds,
 * scores and output, in one pass over the cache: each query's results are
 * exactly moshi_attention_head's. */
void moshi_attention_head2 (const float *const q[2], const float *kT,
    const float *v, int ldv, int hd, float scale, const guint8 *const valid[2],
    const int lo[2], const int hi[2], float *const scores[2],
    float *const out[2]);

/* The same two over a half-precision cache (kT and v in halves), and one
 * query over it. */
void moshi_attention_head2_f16 (const float *const q[2], const uint16_t *kT,
    const uint16_t *v, int ldv, int hd, float scale,
    const guint8 *const valid[2], const int lo[2], const int hi[2],
    float *const scores[2], float *const out[2]);
void moshi_attention_head_f16 (const float *q, const uint16_t *kT,
    const uint16_t *v, int ldv, int hd, float scale, const guint8 *valid,
    int lo, int hi, float *scores, float *out);

/* Round to nearest even, saturating. */
uint16_t moshi_f32_to_f16 (float f);
/* The same for n values (vectorized where the CPU allows). */
void moshi_f32_to_f16_n (uint16_t *dst, const float *src, size_t n);
float moshi_f16_to_f32 (uint16_t h);

G_END_DECLS
