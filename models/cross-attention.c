#include "cross-attention.h"

#include "alloc.h"
#include "attention.h"
#include "model-error.h"
#include "weights.h"

#include <math.h>
#include <string.h>

/* Kyutai's gate: sigmoid shifted left so a fresh gate starts nearly shut. */
#define GATE_SHIFT 4.0f

gboolean
cross_attention_load (CrossAttention *xa, const StFile *f, const char *layer0,
    int dim, int num_heads, MoshiWeightType type, MoshiLoadCtx *ctx,
    GError **error)
{
  char name[256], out_name[256];
  memset (xa, 0, sizeof *xa);
  xa->dim = dim;
  xa->num_heads = num_heads;
  /* PyTorch keeps the projections in an `mha` submodule; candle drops it. */
  const char *sub[2] = { ".cross_attention.mha", ".cross_attention" };
  for (int i = 0; i < 2; i++) {
    char base[220];
    g_snprintf (base, sizeof base, "%s%s", layer0, sub[i]);
    weights_name (out_name, "%s.out_proj.weight", base);
    if (!st_find (f, out_name))
      continue;
    MoshiLinear qkv[3];
    gboolean ok;
    if (st_find (f, weights_name (name, "%s.in_proj_weight", base))) {
      ok = moshi_linear_load_stacked (qkv, 3, f, name, dim, dim, type, ctx,
          error);
    } else {
      ok = moshi_linear_load_stacked (qkv, 1, f,
          weights_name (name, "%s.in_proj_weight_q", base), dim, dim, type, ctx,
          error);
      if (ok) {
        ok = moshi_linear_load_stacked (qkv + 1, 2, f,
            weights_name (name, "%s.in_proj_weight_kv", base), dim, dim, type,
            ctx, error);
        if (!ok)
          moshi_linear_clear (&qkv[0]);
      }
    }
    if (!ok)
      return FALSE;
    xa->q = qkv[0];
    xa->k = qkv[1];
    xa->v = qkv[2];
    if (!moshi_linear_load_lora (&xa->out, f, out_name, dim, dim, type, ctx,
            error)) {
      cross_attention_clear (xa);
      return FALSE;
    }
    return TRUE;
  }
  return FALSE;
}

static float *
load_norm (const StFile *f, const char *layer, int dim, gboolean rms,
    const char *what, GError **error)
{
  char name[256];
  weights_name (name, "%s.norm_cross.%s", layer, what);
  if (rms) {
    /* PyTorch stores alpha as [1, 1, d], MLX as [d]. */
    const StTensor *t = st_find (f, name);
    if (t && t->ndim == 1) {
      int64_t shape[1] = { dim };
      return weights_load (f, name, 1, shape, error);
    }
    int64_t shape[3] = { 1, 1, dim };
    return weights_load (f, name, 3, shape, error);
  }
  int64_t shape[1] = { dim };
  return weights_load (f, name, 1, shape, error);
}

gboolean
cross_attention_gate_load (CrossAttentionGate *gate, const StFile *f,
    const char *layer, int dim, gboolean rms_norm, MoshiWeightType type,
    MoshiLoadCtx *ctx, GError **error)
{
  char name[256];
  memset (gate, 0, sizeof *gate);
  gate->norm_w =
      load_norm (f, layer, dim, rms_norm, rms_norm ? "alpha" : "weight", error);
  if (!gate->norm_w)
    goto fail;
  if (!rms_norm
      && !(gate->norm_b = load_norm (f, layer, dim, FALSE, "bias", error)))
    goto fail;
  /* The hidden width is the checkpoint's (Kyutai: dim / 8). */
  weights_name (name, "%s.cross_attention.gate.alpha.0.weight", layer);
  const StTensor *t = st_find (f, name);
  if (!t || t->ndim != 2 || t->shape[1] != dim || t->shape[0] < 1
      || t->shape[0] > dim) {
    int64_t shape[2] = { dim / 8, dim };
    if (!st_require (f, name, 2, shape, error))
      goto fail;
  }
  const int hidden = t ? (int) t->shape[0] : dim / 8;
  if (!moshi_linear_load_lora (&gate->gate_in, f, name, dim, hidden, type, ctx,
          error))
    goto fail;
  if (!moshi_linear_load_lora (&gate->gate_out, f,
          weights_name (name, "%s.cross_attention.gate.alpha.2.weight", layer),
          hidden, dim, type, ctx, error))
    goto fail;
  return TRUE;
fail:
  cross_attention_gate_clear (gate);
  return FALSE;
}

void
cross_attention_random (CrossAttention *xa, uint64_t *seed, int dim,
    int num_heads, MoshiWeightType type)
{
  memset (xa, 0, sizeof *xa);
  xa->dim = dim;
  xa->num_heads = num_heads;
  moshi_linear_random (&xa->q, seed, dim, dim, type);
  moshi_linear_random (&xa->k, seed, dim, dim, type);
  moshi_linear_random (&xa->v, seed, dim, dim, type);
  moshi_linear_random (&xa->out, seed, dim, dim, type);
}

void
cross_attention_gate_random (CrossAttentionGate *gate, uint64_t *seed, int dim,
    int hidden, gboolean rms_norm, MoshiWeightType type)
{
  memset (gate, 0, sizeof *gate);
  gate->norm_w = weights_random (seed, dim, 1.0f);
  if (!rms_norm)
    gate->norm_b = weights_random (seed, dim, 0.1f);
  moshi_linear_random (&gate->gate_in, seed, dim, hidden, type);
  moshi_linear_random (&gate->gate_out, seed, hidden, dim, type);
}

void
cross_attention_clear (CrossAttention *xa)
{
  moshi_linear_clear (&xa->q);
  moshi_linear_clear (&xa->k);
  moshi_linear_clear (&xa->v);
  moshi_linear_clear (&xa->out);
}

void
cross_attention_gate_clear (CrossAttentionGate *gate)
{
  moshi_free (gate->norm_w);
  moshi_free (gate->norm_b);
  moshi_linear_clear (&gate->gate_in);
  moshi_linear_clear (&gate->gate_out);
  memset (gate, 0, sizeof *gate);
}

size_t
cross_attention_bytes (const CrossAttention *xa)
{
  return moshi_linear_bytes (&xa->q) + moshi_linear_bytes (&xa->k)
      + moshi_linear_bytes (&xa->v) + moshi_linear_bytes (&xa->out);
}

size_t
cross_attention_gate_bytes (const CrossAttentionGate *gate)
{
  return moshi_linear_bytes (&gate->gate_in)
      + moshi_linear_bytes (&gate->gate_out)
      + sizeof (float) * gate->gate_out.out * (gate->norm_b ? 2 : 1);
}

CrossAttentionMemory *
cross_attention_memory_new (const CrossAttention *xa, MoshiPool *pool,
    const float *img, int tokens)
{
  const int d = xa->dim, H = xa->num_heads, hd = d / H;
  CrossAttentionMemory *mem = g_new0 (CrossAttentionMemory, 1);
  mem->refcount = 1;
  mem->tokens = tokens;
  mem->dim = d;
  mem->num_heads = H;
  mem->kT = moshi_alloc (sizeof (float) * moshi_key_slots (tokens) * d);
  mem->v = moshi_alloc (sizeof (float) * tokens * d);
  if (!mem->kT || !mem->v) {
    cross_attention_memory_unref (mem);
    return NULL;
  }
  /* K lands in v first, then goes per head into key tiles (attention.h),
   * the layout the attention kernel scores 16 keys at a time from. */
  moshi_linear_forward (&xa->k, pool, img, tokens, FALSE, mem->v);
  const size_t head_keys = (size_t) moshi_key_slots (tokens) * hd;
  for (int h = 0; h < H; h++)
    for (int j = 0; j < tokens; j++)
      for (int c = 0; c < hd; c++)
        mem->kT[h * head_keys + moshi_key_index (hd, c, j)] =
            mem->v[(size_t) j * d + h * hd + c];
  moshi_linear_forward (&xa->v, pool, img, tokens, FALSE, mem->v);
  return mem;
}

CrossAttentionMemory *
cross_attention_memory_ref (CrossAttentionMemory *mem)
{
  g_atomic_int_inc (&mem->refcount);
  return mem;
}

void
cross_attention_memory_unref (CrossAttentionMemory *mem)
{
  if (!mem || !g_atomic_int_dec_and_test (&mem->refcount))
    return;
  moshi_free (mem->kT);
  moshi_free (mem->v);
  g_free (mem);
}

size_t
cross_attention_memory_bytes (const CrossAttentionMemory *mem)
{
  return mem ? sizeof (float)
          * ((size_t) moshi_key_slots (mem->tokens) + mem->tokens) * mem->dim
             : 0;
}

void
cross_attention_scratch_clear (CrossAttentionScratch *s)
{
  moshi_free (s->q);
  moshi_free (s->attn);
  moshi_free (s->a);
  moshi_free (s->z);
  moshi_free (s->g);
  moshi_free (s->scores);
  moshi_free (s->valid);
  memset (s, 0, sizeof *s);
}

gboolean
cross_attention_scratch_reserve (CrossAttentionScratch *s, int tokens, int dim)
{
  if (tokens <= s->capacity && s->q)
    return TRUE;
  cross_attention_scratch_clear (s);
  s->q = moshi_alloc (sizeof (float) * dim);
  s->attn = moshi_alloc (sizeof (float) * dim);
  s->a = moshi_alloc (sizeof (float) * dim);
  s->z = moshi_alloc (sizeof (float) * dim); /* gate width <= dim */
  s->g = moshi_alloc (sizeof (float) * dim);
  s->scores = moshi_alloc (sizeof (float) * MAX (tokens, 1));
  s->valid = moshi_alloc (MAX (tokens, 1));
  if (!(s->q && s->attn && s->a && s->z && s->g && s->scores && s->valid)) {
    cross_attention_scratch_clear (s);
    return FALSE;
  }
  memset (s->valid, 1, MAX (tokens, 1));
  s->capacity = tokens;
  return TRUE;
}

float
cross_attention_step (const CrossAttention *xa, const CrossAttentionGate *gate,
    const CrossAttentionMemory *mem, CrossAttentionScratch *s, MoshiPool *pool,
    const float *u, float *update, float *gate_values)
{
  const int d = xa->dim, H = xa->num_heads, hd = d / H, n = mem->tokens;
  const int hidden = gate->gate_in.out;
  const float scale = 1.0f / sqrtf ((float) hd);
  g_assert (n <= s->capacity);
  moshi_linear_forward (&xa->q, pool, u, 1, FALSE, s->q);
  memset (s->attn, 0, sizeof (float) * d);
  for (int h = 0; h < H; h++)
    moshi_attention_head (s->q + h * hd,
        mem->kT + (size_t) h * hd * moshi_key_slots (n), mem->v + h * hd, d, hd,
        scale, s->valid, 0, n - 1, s->scores, s->attn + h * hd);
  moshi_linear_forward (&xa->out, pool, s->attn, 1, FALSE, s->a);
  moshi_linear_forward (&gate->gate_in, pool, s->a, 1, FALSE, s->z);
  for (int j = 0; j < hidden; j++)
    s->z[j] = MAX (s->z[j], 0.0f);
  moshi_linear_forward (&gate->gate_out, pool, s->z, 1, FALSE, s->g);
  double sum = 0.0;
  for (int j = 0; j < d; j++) {
    const float g = 1.0f / (1.0f + expf (-(s->g[j] - GATE_SHIFT)));
    s->g[j] = g;
    update[j] = s->a[j] * g;
    sum += g;
  }
  if (gate_values)
    memcpy (gate_values, s->g, sizeof (float) * d);
  return (float) (sum / d);
}
