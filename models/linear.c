#include "linear.h"

#include "alloc.h"
#include "weights.h"

#include <math.h>
#include <string.h>

gboolean
moshi_linear_load (MoshiLinear *l, const StFile *f, const char *name, int in,
    int out, GError **error)
{
  memset (l, 0, sizeof *l);
  l->in = in;
  l->out = out;
  int64_t shape[2] = { out, in };
  l->w = weights_load (f, name, 2, shape, error);
  return l->w != NULL;
}

void
moshi_linear_random (MoshiLinear *l, uint64_t *seed, int in, int out)
{
  memset (l, 0, sizeof *l);
  l->in = in;
  l->out = out;
  l->w = weights_random (seed, (size_t) in * out, 1.0f / sqrtf ((float) in));
}

void
moshi_linear_clear (MoshiLinear *l)
{
  moshi_free (l->w);
  l->w = NULL;
}

size_t
moshi_linear_bytes (const MoshiLinear *l)
{
  return sizeof (float) * (size_t) l->in * l->out;
}

void
moshi_linear_forward (const MoshiLinear *l, MoshiPool *pool, const float *x,
    int rows, float beta, float *y)
{
  moshi_sgemm_nt (pool, rows, l->out, l->in, x, l->in, l->w, l->in, beta, y,
      l->out);
}
