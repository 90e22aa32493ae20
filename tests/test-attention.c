/* test-attention: the attention inner loops (models/attention.c) at every
 * CPU level: two queries in one pass give bit-identical results to one at
 * a time; the half-precision cache stays within half's rounding of the
 * float32 result; and the float <-> half conversions round to nearest even,
 * saturate, and keep subnormals.  A streaming transformer with its cache in
 * halves follows the float32 one over a context that wraps. */
#include <glib.h>
#include <math.h>
#include <string.h>

#include "attention.h"
#include "cpu.h"
#include "transformer.h"

static float
frand (guint32 *s)
{
  *s = *s * 1664525u + 1013904223u;
  return (float) ((*s >> 8) / 16777216.0 * 2.0 - 1.0);
}

/* Exact half value of h, independently of the library. */
static double
half_value (uint16_t h)
{
  const int e = (h >> 10) & 0x1f, m = h & 0x3ff;
  const double s = (h & 0x8000) ? -1.0 : 1.0;
  if (e == 0)
    return s * ldexp (m, -24);
  return s * ldexp (1024 + m, e - 25);
}

static void
test_half_conversion (void)
{
  /* Every finite half converts to float exactly and back to itself. */
  for (uint32_t h = 0; h < 0x10000; h++) {
    if (((h >> 10) & 0x1f) == 0x1f)
      continue;
    const float f = moshi_f16_to_f32 ((uint16_t) h);
    g_assert_cmpfloat (f, ==, (float) half_value ((uint16_t) h));
    if (h != 0x8000) /* -0 */
      g_assert_cmpuint (moshi_f32_to_f16 (f), ==, h);
  }
  /* Floats between halves go to the nearest, ties to even. */
  guint32 s = 1;
  for (int i = 0; i < 200000; i++) {
    const float f = ldexpf (frand (&s), (int) (frand (&s) * 20.0f) - 6);
    const uint16_t h = moshi_f32_to_f16 (f);
    const double got = half_value (h);
    const double up = half_value ((uint16_t) (h + 1));
    const double down = half_value ((uint16_t) (h - 1));
    g_assert_cmpfloat (fabs (got - f), <=, fabs (up - f));
    g_assert_cmpfloat (fabs (got - f), <=, fabs (down - f));
  }
  g_assert_cmpuint (moshi_f32_to_f16 (1.0f + 0x1p-11f), ==, 0x3c00);
  g_assert_cmpuint (moshi_f32_to_f16 (1.0f + 3 * 0x1p-11f), ==, 0x3c02);
  /* Saturation instead of infinity; subnormals. */
  g_assert_cmpuint (moshi_f32_to_f16 (65519.0f), ==, 0x7bff);
  g_assert_cmpuint (moshi_f32_to_f16 (1e9f), ==, 0x7bff);
  g_assert_cmpuint (moshi_f32_to_f16 (-INFINITY), ==, 0xfbff);
  g_assert_cmpuint (moshi_f32_to_f16 (0x1p-24f), ==, 0x0001);
  g_assert_cmpuint (moshi_f32_to_f16 (0x1p-26f), ==, 0x0000);
  g_assert_true (isnan (moshi_f16_to_f32 (moshi_f32_to_f16 (NAN))));
}

/* moshi_f32_to_f16_n (vectorized) gives moshi_f32_to_f16's bits for every
 * input: all float bit patterns with the low 12 mantissa bits walked at
 * three offsets (every exponent, sign, the rounding boundaries, subnormal
 * halves, overflow, infinities, NaNs), at every CPU level, with lengths
 * that leave partial vectors. */
static void
test_half_conversion_vector (void)
{
  const size_t n = (size_t) 1 << 20;
  float *src = g_new (float, n);
  uint16_t *got = g_new (uint16_t, n);
  const MoshiCpuLevel top = moshi_cpu_level ();
  for (uint32_t low = 0; low < 3; low++) {
    for (size_t i = 0; i < n; i++) {
      /* the high 20 bits of the pattern from i, the low 12 from `low` */
      const uint32_t bits = (uint32_t) i << 12
          | (low == 0        ? 0x000u
                  : low == 1 ? 0x800u
                             : 0xfffu);
      memcpy (&src[i], &bits, 4);
    }
    for (int level = MOSHI_CPU_GENERIC; level <= (int) top; level++) {
      moshi_cpu_set_level ((MoshiCpuLevel) level);
      for (size_t off = 0; off < n; off += 4093)
        moshi_f32_to_f16_n (got + off, src + off, MIN (4093, n - off));
      for (size_t i = 0; i < n; i++)
        if (got[i] != moshi_f32_to_f16 (src[i]))
          g_error ("level %d: %a (0x%08x) -> 0x%04x, scalar 0x%04x", level,
              src[i], (unsigned) ((uint32_t) i << 12), got[i],
              moshi_f32_to_f16 (src[i]));
    }
  }
  moshi_cpu_set_level (top);
  g_free (src);
  g_free (got);
}

typedef struct {
  int ctx, hd, ldv;
  float *key; /* [ctx][hd]: the keys as a plain matrix, for the reference */
  float *kT, *v; /* the cache: keys in tiles (attention.h), values rows */
  uint16_t *kT16, *v16;
  float q[2][256];
  guint8 valid[2][300];
  int lo[2], hi[2];
} Case;

/* Slots before `first` are not valid for either query (a ring not yet
 * full, or a window starting inside a tile). */
static void
case_init (Case *c, guint32 seed, int ctx, int hd, int first)
{
  memset (c, 0, sizeof *c);
  c->ctx = ctx;
  c->hd = hd;
  c->ldv = hd + 3;
  const size_t room = (size_t) moshi_key_slots (ctx) * hd;
  c->key = g_new (float, (size_t) ctx *hd);
  c->kT = g_new (float, room);
  c->v = g_new (float, (size_t) ctx * c->ldv);
  c->kT16 = g_new (uint16_t, room);
  c->v16 = g_new (uint16_t, (size_t) ctx * c->ldv);
  /* The padding of the last tile is NaN: a kernel that read it into a
   * score would show it. */
  for (size_t i = 0; i < room; i++) {
    c->kT[i] = NAN;
    c->kT16[i] = 0x7e00;
  }
  for (int j = 0; j < ctx; j++)
    for (int d = 0; d < hd; d++) {
      const float k = 3.0f * frand (&seed);
      c->key[(size_t) j * hd + d] = k;
      c->kT[moshi_key_index (hd, d, j)] = k;
      c->kT16[moshi_key_index (hd, d, j)] = moshi_f32_to_f16 (k);
    }
  for (size_t i = 0; i < (size_t) ctx * c->ldv; i++) {
    c->v[i] = frand (&seed);
    c->v16[i] = moshi_f32_to_f16 (c->v[i]);
  }
  /* A ring that has wrapped: query 1 sees one slot more than query 0,
   * and a few slots are not valid for either. */
  for (int r = 0; r < 2; r++) {
    for (int d = 0; d < hd; d++)
      c->q[r][d] = frand (&seed);
    c->lo[r] = ctx;
    c->hi[r] = -1;
    for (int j = 0; j < ctx; j++) {
      c->valid[r][j] = j >= first && (j % 7 != 3) && (r == 1 || j != ctx / 2);
      if (c->valid[r][j]) {
        c->lo[r] = MIN (c->lo[r], j);
        c->hi[r] = MAX (c->hi[r], j);
      }
    }
  }
}

static void
case_clear (Case *c)
{
  g_free (c->key);
  g_free (c->kT);
  g_free (c->v);
  g_free (c->kT16);
  g_free (c->v16);
}

/* Softmax attention in double from the plain key matrix: what the cache
 * layout must give back. */
static void
reference (const Case *c, int r, float scale, double *out)
{
  double *w = g_new0 (double, c->ctx), mx = -INFINITY, sum = 0.0;
  for (int j = c->lo[r]; j <= c->hi[r]; j++) {
    if (!c->valid[r][j])
      continue;
    double dot = 0.0;
    for (int d = 0; d < c->hd; d++)
      dot += (double) c->q[r][d] * c->key[(size_t) j * c->hd + d];
    w[j] = dot * scale;
    mx = MAX (mx, w[j]);
  }
  for (int j = c->lo[r]; j <= c->hi[r]; j++)
    if (c->valid[r][j]) {
      w[j] = exp (w[j] - mx);
      sum += w[j];
    }
  for (int d = 0; d < c->hd; d++) {
    out[d] = 0.0;
    for (int j = c->lo[r]; j <= c->hi[r]; j++)
      if (c->valid[r][j])
        out[d] += w[j] / sum * c->v[(size_t) j * c->ldv + d];
  }
  g_free (w);
}

static void
check_case (int ctx, int hd, int first)
{
  Case c;
  case_init (&c, (guint32) (ctx * 31 + hd + first), ctx, hd, first);
  float one[2][256], two[2][256], half[2][256];
  float *sc = g_new (float, 2 * ctx);
  const float scale = 1.0f / sqrtf ((float) hd);
  for (int r = 0; r < 2; r++) {
    memset (one[r], 0, sizeof one[r]);
    moshi_attention_head (c.q[r], c.kT, c.v, c.ldv, hd, scale, c.valid[r],
        c.lo[r], c.hi[r], sc, one[r]);
    double ref[256];
    reference (&c, r, scale, ref);
    for (int d = 0; d < hd; d++)
      g_assert_cmpfloat (fabs (one[r][d] - ref[d]), <, 1e-5);
  }
  const float *q[2] = { c.q[0], c.q[1] };
  const guint8 *valid[2] = { c.valid[0], c.valid[1] };
  float *scores[2] = { sc, sc + ctx };
  float *out[2] = { two[0], two[1] };
  memset (two, 0, sizeof two);
  moshi_attention_head2 (q, c.kT, c.v, c.ldv, hd, scale, valid, c.lo, c.hi,
      scores, out);
  g_assert_cmpmem (one[0], sizeof (float) * hd, two[0], sizeof (float) * hd);
  g_assert_cmpmem (one[1], sizeof (float) * hd, two[1], sizeof (float) * hd);

  float *hout[2] = { half[0], half[1] };
  memset (half, 0, sizeof half);
  moshi_attention_head2_f16 (q, c.kT16, c.v16, c.ldv, hd, scale, valid, c.lo,
      c.hi, scores, hout);
  /* Halves carry 2^-11 relative error: logits of size ~3 move by ~1e-3,
   * outputs (averages of values in [-1, 1]) by about as much. */
  for (int r = 0; r < 2; r++)
    for (int d = 0; d < hd; d++)
      g_assert_cmpfloat (fabsf (half[r][d] - one[r][d]), <, 4e-3f);
  /* One query alone: the pair's arithmetic for that query, bit for bit. */
  float lone[256] = { 0 };
  moshi_attention_head_f16 (c.q[1], c.kT16, c.v16, c.ldv, hd, scale, c.valid[1],
      c.lo[1], c.hi[1], sc, lone);
  g_assert_cmpmem (lone, sizeof (float) * hd, half[1], sizeof (float) * hd);
  g_free (sc);
  case_clear (&c);
}

static void
test_attention (void)
{
  MoshiCpuLevel top = moshi_cpu_level ();
  for (int level = MOSHI_CPU_GENERIC; level <= (int) top; level++) {
    moshi_cpu_set_level ((MoshiCpuLevel) level);
    check_case (250, 64, 0);
    check_case (37, 128, 0);
    check_case (300, 40, 0);
    /* windows that start and end inside tiles, shorter than four tiles */
    check_case (250, 64, 21);
    check_case (37, 128, 30);
    check_case (300, 40, 235);
    /* a head wider than one pass of the value loop (128 channels) */
    check_case (70, 200, 0);
    check_case (70, 256, 9);
  }
  moshi_cpu_set_level (top);
}

/* Same weights, cache in float32 and in halves: 1 and 2 rows per call
 * (the lone-query path and the pair), past the 16-step context. */
static void
test_transformer_half_cache (void)
{
  TransformerConfig cfg = { 0 };
  cfg.d_model = 64;
  cfg.num_heads = 4;
  cfg.num_layers = 2;
  cfg.dim_feedforward = 128;
  cfg.context = 16;
  cfg.max_period = 10000;
  cfg.norm = TRANSFORMER_NORM_LAYER;
  cfg.norm_eps = 1e-5f;
  cfg.layer_scale = TRUE;
  cfg.weights = MOSHI_WEIGHTS_F32;
  Transformer t32, t16;
  uint64_t s1 = 9, s2 = 9;
  transformer_random (&t32, &cfg, &s1);
  cfg.kv_half = TRUE;
  transformer_random (&t16, &cfg, &s2);
  for (int rows = 1; rows <= 2; rows++) {
    TransformerState a, b;
    g_assert_true (transformer_state_init (&a, &t32, 2));
    g_assert_true (transformer_state_init (&b, &t16, 2));
    guint32 seed = 17;
    double max_err = 0.0, peak = 0.0;
    for (int step = 0; step < 40; step++) {
      float x[2 * 64], y[2 * 64];
      for (int i = 0; i < rows * 64; i++)
        x[i] = y[i] = frand (&seed);
      transformer_forward (&t32, &a, NULL, x, rows);
      transformer_forward (&t16, &b, NULL, y, rows);
      for (int i = 0; i < rows * 64; i++) {
        max_err = MAX (max_err, fabsf (x[i] - y[i]));
        peak = MAX (peak, fabsf (x[i]));
      }
    }
    g_test_message ("%d rows per call: max err %.3g (peak %.3g)", rows, max_err,
        peak);
    g_assert_cmpfloat (max_err, >, 0.0);
    g_assert_cmpfloat (max_err, <, 2e-3 * peak);
    transformer_state_clear (&a);
    transformer_state_clear (&b);
  }
  transformer_clear (&t32);
  transformer_clear (&t16);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/attention/half-conversion", test_half_conversion);
  g_test_add_func ("/attention/half-conversion-vector",
      test_half_conversion_vector);
  g_test_add_func ("/attention/pair-and-half", test_attention);
  g_test_add_func ("/attention/transformer-half-cache",
      test_transformer_half_cache);
  return g_test_run ();
}
