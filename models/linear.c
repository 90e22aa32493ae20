#include "linear.h"

#include "alloc.h"
#include "model-error.h"
#include "weights.h"

#include <math.h>
#include <string.h>

static gboolean
linear_pack (MoshiLinear *l, float *w, MoshiWeightType type, const char *name,
    GError **error)
{
  gboolean ok =
      moshi_packed_init_typed (&l->w, w, l->in, l->out, l->in, TRUE, type);
  moshi_free (w);
  if (!ok)
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_IO,
        "out of memory packing %s", name);
  return ok;
}

gboolean
moshi_linear_init (MoshiLinear *l, const float *w, int in, int out,
    MoshiWeightType type)
{
  memset (l, 0, sizeof *l);
  l->in = in;
  l->out = out;
  return moshi_packed_init_typed (&l->w, w, in, out, in, TRUE, type);
}

gboolean
moshi_linear_load_lora (MoshiLinear *l, const StFile *f, const char *name,
    int in, int out, MoshiWeightType type, MoshiLoadCtx *lora, GError **error)
{
  memset (l, 0, sizeof *l);
  l->in = in;
  l->out = out;
  MoshiPackCache *cache = lora ? lora->cache : NULL;
  if (cache && moshi_pack_cache_take (cache, name, in, out, type, &l->w))
    return TRUE;
  int64_t shape[2] = { out, in };
  float *w = weights_load (f, name, 2, shape, error);
  if (!w)
    return FALSE;
  if (!moshi_lora_merge (lora, name, w, 1, out, in, error)) {
    moshi_free (w);
    return FALSE;
  }
  if (!linear_pack (l, w, type, name, error))
    return FALSE;
  if (cache)
    moshi_pack_cache_put (cache, name, &l->w);
  return TRUE;
}

gboolean
moshi_linear_load (MoshiLinear *l, const StFile *f, const char *name, int in,
    int out, MoshiWeightType type, GError **error)
{
  return moshi_linear_load_lora (l, f, name, in, out, type, NULL, error);
}

void
moshi_linear_random (MoshiLinear *l, uint64_t *seed, int in, int out,
    MoshiWeightType type)
{
  memset (l, 0, sizeof *l);
  l->in = in;
  l->out = out;
  float *w =
      weights_random (seed, (size_t) in * out, 1.0f / sqrtf ((float) in));
  linear_pack (l, w, type, "random", NULL);
}

void
moshi_linear_clear (MoshiLinear *l)
{
  moshi_packed_clear (&l->w);
}

size_t
moshi_linear_bytes (const MoshiLinear *l)
{
  return moshi_packed_bytes (&l->w);
}

void
moshi_linear_forward (const MoshiLinear *l, MoshiPool *pool, const float *x,
    int rows, gboolean accumulate, float *y)
{
  moshi_gemm_packed (pool, rows, x, l->in, &l->w, NULL, accumulate, y, l->out);
}

/* Loads a [sets * rows][cols] stacked tensor into `sets` linears. */
gboolean
moshi_linear_load_stacked (MoshiLinear *dst, int sets, const StFile *f,
    const char *name, int cols, int rows, MoshiWeightType type,
    MoshiLoadCtx *lora, GError **error)
{
  MoshiPackCache *cache = lora ? lora->cache : NULL;
  char set_name[300];
  int taken = 0;
  for (int s = 0; s < sets && cache; s++) {
    g_snprintf (set_name, sizeof set_name, "%s#%d", name, s);
    if (!moshi_pack_cache_take (cache, set_name, cols, rows, type, &dst[s].w))
      break;
    taken++;
  }
  for (int s = 0; s < taken; s++) {
    dst[s].in = cols;
    dst[s].out = rows;
  }
  if (taken == sets)
    return TRUE;
  for (int s = 0; s < taken; s++)
    moshi_linear_clear (&dst[s]);
  int64_t shape[2] = { (int64_t) sets * rows, cols };
  float *w = weights_load (f, name, 2, shape, error);
  if (!w)
    return FALSE;
  if (!moshi_lora_merge (lora, name, w, sets, rows, cols, error)) {
    moshi_free (w);
    return FALSE;
  }
  gboolean ok = TRUE;
  for (int s = 0; s < sets && ok; s++) {
    ok = moshi_linear_init (&dst[s], w + (size_t) s * rows * cols, cols, rows,
        type);
    if (ok && cache) {
      g_snprintf (set_name, sizeof set_name, "%s#%d", name, s);
      moshi_pack_cache_put (cache, set_name, &dst[s].w);
    }
  }
  moshi_free (w);
  if (!ok)
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_IO,
        "out of memory packing %s", name);
  return ok;
}
