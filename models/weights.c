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

/* Kyutai's 8-bit checkpoints (kyutai/moshika-pytorch-q8 and the like,
 * written by moshi/utils/quantize.py through bitsandbytes'
 * int8_vectorwise_quant) store a quantized linear as `<name>`: I8
 * [out, in] plus `<name>_scb`: float32 [out], the LLM.int8() "SCB" row
 * absmax, and dequantize as w = q * scb / 127.  Doing the same here turns
 * them into float weights for every loader (which may then repack them as
 * bf16/q8/q4).  Rows are all dims but the last, as in bitsandbytes; scb may
 * be any float dtype (a model cast to bf16 casts it too). */
static float *
dequantize_scb (const StFile *f, const StTensor *t, GError **error)
{
  char *scb_name = g_strconcat (t->name, "_scb", NULL);
  const StTensor *s = st_find (f, scb_name);
  /* rows = -1 (matches no scale shape) if a zero-sized hostile shape makes
   * the leading dims' product overflow. */
  int64_t rows = 1, cols = t->ndim ? t->shape[t->ndim - 1] : 1;
  for (int i = 0; i + 1 < t->ndim && rows >= 0; i++)
    if (__builtin_mul_overflow (rows, t->shape[i], &rows))
      rows = -1;
  float *w = NULL, *scb = NULL;
  if (!s) {
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_MISSING,
        "%s: tensor '%s' is I8 but its scale tensor '%s' (one per row, "
        "w = q * scb / 127) is missing",
        st_path (f), t->name, scb_name);
    goto out;
  }
  if (s->ndim != 1 || s->shape[0] != rows) {
    GString *found = g_string_new ("[");
    for (int i = 0; i < s->ndim; i++)
      g_string_append_printf (found, "%s%" G_GINT64_FORMAT, i ? ", " : "",
          s->shape[i]);
    g_string_append_c (found, ']');
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_SHAPE,
        "%s: scale tensor '%s' of I8 tensor '%s' has shape %s, expected "
        "[%" G_GINT64_FORMAT "] (one per row)",
        st_path (f), scb_name, t->name, found->str, rows);
    g_string_free (found, TRUE);
    goto out;
  }
  /* Checks scb's dtype before the big allocation. */
  scb = st_dup_f32 (f, s, error);
  if (!scb)
    goto out;
  w = moshi_alloc ((size_t) t->numel * sizeof (float));
  if (!w) {
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_IO,
        "%s: tensor '%s': out of memory allocating %zu bytes", st_path (f),
        t->name, (size_t) t->numel * sizeof (float));
    goto out;
  }
  /* In double, rounded once: within half an ulp of q * scb / 127, where
   * bitsandbytes' float32 (q * scb) * (1 / 127) may be an ulp off. */
  const int8_t *q = t->data;
  for (int64_t r = 0; r < rows && t->numel; r++)
    for (int64_t c = 0; c < cols; c++) {
      const size_t i = (size_t) (r * cols + c);
      w[i] = (float) ((double) q[i] * scb[r] / 127.0);
    }
out:
  moshi_free (scb);
  g_free (scb_name);
  return w;
}

float *
weights_load (const StFile *f, const char *name, int ndim, const int64_t *shape,
    GError **error)
{
  const StTensor *t = st_require (f, name, ndim, shape, error);
  if (!t)
    return NULL;
  if (t->dtype == ST_I8)
    return dequantize_scb (f, t, error);
  return st_dup_f32 (f, t, error);
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
