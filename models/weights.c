#include "weights.h"

#include "alloc.h"
#include "model-error.h"

#include <stdarg.h>
#include <stdio.h>

const char *
weights_name (char buf[256], const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  vsnprintf (buf, 256, fmt, ap);
  va_end (ap);
  return buf;
}

float *
weights_load (const StFile *f, const char *name, int ndim, const int64_t *shape,
    GError **error)
{
  const StTensor *t = st_require (f, name, ndim, shape, error);
  if (!t)
    return NULL;
  return st_dup_f32 (f, t, error);
}

float *
weights_load_optional (const StFile *f, const char *name, int ndim,
    const int64_t *shape, GError **error)
{
  if (!st_find (f, name))
    return NULL;
  return weights_load (f, name, ndim, shape, error);
}

float *
weights_random (uint64_t *seed, size_t n, float scale)
{
  float *w = moshi_alloc (n * sizeof (float));
  if (!w)
    return NULL;
  uint64_t s = *seed ? *seed : 0x9E3779B97F4A7C15ull;
  for (size_t i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    w[i] = scale * ((float) ((s >> 40) & 0xFFFFFF) / 8388608.0f - 1.0f);
  }
  *seed = s;
  return w;
}
