#include "rvq.h"

#include "alloc.h"
#include "model-error.h"
#include "weights.h"

#include <float.h>
#include <math.h>
#include <string.h>

/* Kyutai's EuclideanCodebook epsilon for unused entries. */
#define CODEBOOK_EPSILON 1e-5f

static gboolean
part_alloc (RvqPart *p, int n_q, int bins)
{
  memset (p, 0, sizeof *p);
  p->n_q = n_q;
  p->codebooks = g_new0 (MoshiPackedB, MAX (n_q, 1));
  p->codebooks_q8 = g_new0 (MoshiPackedB, MAX (n_q, 1));
  const size_t n = sizeof (float) * (size_t) MAX (n_q, 1) * bins;
  p->norms = moshi_alloc (n);
  p->q8_error = moshi_alloc (n);
  p->q8_norm = moshi_alloc (n);
  return p->norms && p->q8_error && p->q8_norm;
}

/* Stores codebook i ([bins][dim] vectors) for the nearest-code search: the
 * float32 vectors, their squared norms, and the int8 copy with, per code,
 * its rounding error and norm for the search's bounds. */
static gboolean
part_set_codebook (RvqPart *p, int i, const float *cb, int dim, int bins)
{
  for (int b = 0; b < bins; b++)
    p->norms[(size_t) i * bins + b] =
        moshi_dot (cb + (size_t) b * dim, cb + (size_t) b * dim, dim);
  if (!moshi_packed_init (&p->codebooks[i], cb, dim, bins, dim, TRUE)
      || !moshi_packed_init_typed (&p->codebooks_q8[i], cb, dim, bins, dim,
          TRUE, MOSHI_WEIGHTS_Q8))
    return FALSE;
  for (int b = 0; b < bins; b++) {
    double err = 0.0, norm = 0.0;
    for (int k = 0; k < dim; k++) {
      const double e8 = moshi_packed_get (&p->codebooks_q8[i], k, b);
      err += (cb[(size_t) b * dim + k] - e8) * (cb[(size_t) b * dim + k] - e8);
      norm += e8 * e8;
    }
    /* Rounded up, so that they stay bounds once in float32. */
    p->q8_error[(size_t) i * bins + b] = (float) (sqrt (err) * (1 + 1e-6));
    p->q8_norm[(size_t) i * bins + b] = (float) (sqrt (norm) * (1 + 1e-6));
  }
  return TRUE;
}

static gboolean
part_load (RvqPart *p, const StFile *f, const char *prefix, int n_q, int dim,
    int in_dim, int out_dim, int bins, GError **error)
{
  char name[256];
  float *cb = moshi_alloc (sizeof (float) * (size_t) bins * dim);
  if (!part_alloc (p, n_q, bins) || !cb) {
    moshi_free (cb);
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_IO,
        "out of memory loading %s", prefix);
    return FALSE;
  }
  int64_t ish[3] = { dim, in_dim, 1 }, osh[3] = { out_dim, dim, 1 };
  p->in_proj = weights_load (f,
      weights_name (name, "%s.input_proj.weight", prefix), 3, ish, error);
  if (!p->in_proj)
    goto fail;
  p->out_proj = weights_load (f,
      weights_name (name, "%s.output_proj.weight", prefix), 3, osh, error);
  if (!p->out_proj)
    goto fail;
  for (int i = 0; i < n_q; i++) {
    int64_t esh[2] = { bins, dim }, ush[1] = { bins };
    float *sum = weights_load (f,
        weights_name (name, "%s.vq.layers.%d._codebook.embedding_sum", prefix,
            i),
        2, esh, error);
    if (!sum)
      goto fail;
    float *usage = weights_load (f,
        weights_name (name, "%s.vq.layers.%d._codebook.cluster_usage", prefix,
            i),
        1, ush, error);
    if (!usage) {
      moshi_free (sum);
      goto fail;
    }
    /* The checkpoint stores running sums; the codebook is their mean. */
    for (int b = 0; b < bins; b++) {
      float u = MAX (usage[b], CODEBOOK_EPSILON);
      for (int j = 0; j < dim; j++)
        cb[(size_t) b * dim + j] = sum[(size_t) b * dim + j] / u;
    }
    moshi_free (sum);
    moshi_free (usage);
    if (!part_set_codebook (p, i, cb, dim, bins)) {
      g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_IO,
          "out of memory loading %s", prefix);
      goto fail;
    }
  }
  moshi_free (cb);
  return TRUE;
fail:
  moshi_free (cb);
  return FALSE;
}

static void
part_clear (RvqPart *p)
{
  moshi_free (p->in_proj);
  moshi_free (p->out_proj);
  for (int i = 0; i < MAX (p->n_q, 1); i++) {
    if (p->codebooks)
      moshi_packed_clear (&p->codebooks[i]);
    if (p->codebooks_q8)
      moshi_packed_clear (&p->codebooks_q8[i]);
  }
  g_free (p->codebooks);
  g_free (p->codebooks_q8);
  moshi_free (p->norms);
  moshi_free (p->q8_error);
  moshi_free (p->q8_norm);
  memset (p, 0, sizeof *p);
}

gboolean
rvq_load (Rvq *q, const StFile *f, const char *prefix, int dim, int in_dim,
    int out_dim, int bins, int n_q, GError **error)
{
  char name[256];
  memset (q, 0, sizeof *q);
  q->dim = dim;
  q->in_dim = in_dim;
  q->out_dim = out_dim;
  q->bins = bins;
  q->n_q = n_q;
  if (!part_load (&q->first, f, weights_name (name, "%s.rvq_first", prefix), 1,
          dim, in_dim, out_dim, bins, error)
      || !part_load (&q->rest, f, weights_name (name, "%s.rvq_rest", prefix),
          n_q - 1, dim, in_dim, out_dim, bins, error)) {
    rvq_clear (q);
    return FALSE;
  }
  return TRUE;
}

static void
part_random (RvqPart *p, uint64_t *seed, int n_q, int dim, int in_dim,
    int out_dim, int bins)
{
  part_alloc (p, n_q, bins);
  p->in_proj = weights_random (seed, (size_t) dim * in_dim, 0.05f);
  p->out_proj = weights_random (seed, (size_t) out_dim * dim, 0.05f);
  for (int i = 0; i < n_q; i++) {
    float *cb = weights_random (seed, (size_t) bins * dim, 1.0f);
    part_set_codebook (p, i, cb, dim, bins);
    moshi_free (cb);
  }
}

void
rvq_random (Rvq *q, uint64_t *seed, int dim, int in_dim, int out_dim, int bins,
    int n_q)
{
  memset (q, 0, sizeof *q);
  q->dim = dim;
  q->in_dim = in_dim;
  q->out_dim = out_dim;
  q->bins = bins;
  q->n_q = n_q;
  part_random (&q->first, seed, 1, dim, in_dim, out_dim, bins);
  part_random (&q->rest, seed, n_q - 1, dim, in_dim, out_dim, bins);
}

void
rvq_clear (Rvq *q)
{
  part_clear (&q->first);
  part_clear (&q->rest);
}

size_t
rvq_bytes (const Rvq *q)
{
  size_t n = sizeof (float)
      * ((size_t) 2 * q->dim * (q->in_dim + q->out_dim)
          + (size_t) 3 * q->n_q * q->bins);
  for (int i = 0; i < q->first.n_q; i++)
    n += moshi_packed_bytes (&q->first.codebooks[i])
        + moshi_packed_bytes (&q->first.codebooks_q8[i]);
  for (int i = 0; i < q->rest.n_q; i++)
    n += moshi_packed_bytes (&q->rest.codebooks[i])
        + moshi_packed_bytes (&q->rest.codebooks_q8[i]);
  return n;
}

size_t
rvq_scratch_floats (const Rvq *q)
{
  return (size_t) 3 * q->dim + q->bins;
}

static void
matvec (const float *W, const float *x, float *y, int rows, int cols)
{
  for (int r = 0; r < rows; r++)
    y[r] = moshi_dot (W + (size_t) r * cols, x, cols);
}

/* r . e_b in double, e_b read from the float32 packed codebook. */
static double
dot_exact (const MoshiPackedB *cb, int b, const float *r)
{
  const float *col = (const float *) cb->data
      + (size_t) (b / MOSHI_GEMM_NR) * cb->K * MOSHI_GEMM_NR
      + b % MOSHI_GEMM_NR;
  double sum = 0.0;
  for (int k = 0; k < cb->K; k++)
    sum += (double) r[k] * col[(size_t) k * MOSHI_GEMM_NR];
  return sum;
}

/* Bound on |r - r8|, r8 being r as the int8 GEMM may round it: per
 * 32-block to steps of max|r| / 127, half a step each at most. */
static double
activation_error (const float *r, int dim)
{
  double sq = 0.0;
  for (int k0 = 0; k0 < dim; k0 += MOSHI_Q8_BLOCK) {
    const int n = MIN (MOSHI_Q8_BLOCK, dim - k0);
    float amax = 0.0f;
    for (int k = k0; k < k0 + n; k++)
      amax = MAX (amax, fabsf (r[k]));
    const double half_step = amax / 127.0 / 2.0 * (1 + 1e-6);
    sq += n * half_step * half_step;
  }
  return sqrt (sq);
}

/* Index of the nearest code to r: argmin |r - e|^2 = argmin |e|^2 - 2 r.e,
 * the first index winning ties like torch.argmin.  Every code is scored
 * with the int8 codebook, whose dot products are off by at most
 *   |r.e - r8.e8| <= |r| |e - e8| + |r - r8| |e8| (+ float rounding),
 * so only codes whose score interval reaches below the best upper bound
 * can be nearest; those few are rescored exactly.  The result is the code
 * an exact search finds, for a quarter of the memory traffic. */
static int
nearest_code (const RvqPart *p, int i, int bins, const float *r, int dim,
    float *approx_dot)
{
  const float *nrm = p->norms + (size_t) i * bins;
  const float *err = p->q8_error + (size_t) i * bins;
  const float *n8 = p->q8_norm + (size_t) i * bins;
  const double r_norm = sqrt (moshi_dot (r, r, dim)) * (1 + 1e-5);
  const double r_err = activation_error (r, dim);
  /* Float rounding of the int8 path's per-block sums (~1e-6 relative),
   * with a wide margin. */
  const double r_err_all = r_err + 1e-4 * (r_norm + r_err);
  moshi_gemm_packed (NULL, 1, r, dim, &p->codebooks_q8[i], NULL, FALSE,
      approx_dot, bins);
  /* Distances and bounds in double: |e|^2 - 2 r.e cancels heavily. */
  double best_upper = INFINITY;
  for (int b = 0; b < bins; b++) {
    const double d = nrm[b] - 2.0 * approx_dot[b];
    const double e = 2.0 * (r_norm * err[b] + r_err_all * n8[b]);
    best_upper = MIN (best_upper, d + e);
  }
  best_upper += 1e-9 * fabs (best_upper);
  int best = -1;
  double best_d = 0.0;
  for (int b = 0; b < bins; b++) {
    const double d = nrm[b] - 2.0 * approx_dot[b];
    const double e = 2.0 * (r_norm * err[b] + r_err_all * n8[b]);
    if (d - e > best_upper)
      continue;
    const double exact = nrm[b] - 2.0 * dot_exact (&p->codebooks[i], b, r);
    if (best < 0 || exact < best_d) {
      best_d = exact;
      best = b;
    }
  }
  return best;
}

/* Residual VQ encode of one part: codes for codebooks [0, n). */
static void
part_encode (const Rvq *q, const RvqPart *p, int n, const float *latent,
    uint16_t *codes, float *scratch)
{
  const int dim = q->dim, bins = q->bins;
  float *residual = scratch;
  float *approx = scratch + dim;
  matvec (p->in_proj, latent, residual, dim, q->in_dim);
  for (int i = 0; i < n; i++) {
    const MoshiPackedB *cb = &p->codebooks[i];
    const int best = nearest_code (p, i, bins, residual, dim, approx);
    codes[i] = (uint16_t) best;
    for (int j = 0; j < dim; j++)
      residual[j] -= moshi_packed_get (cb, j, best);
  }
}

void
rvq_encode (const Rvq *q, int n_codebooks, const float *latent, uint16_t *codes,
    float *scratch)
{
  part_encode (q, &q->first, 1, latent, codes, scratch);
  if (n_codebooks > 1)
    part_encode (q, &q->rest, n_codebooks - 1, latent, codes + 1, scratch);
}

static void
part_decode_add (const Rvq *q, const RvqPart *p, int n, const uint16_t *codes,
    float *latent, float *scratch)
{
  const int dim = q->dim;
  float *sum = scratch;
  memset (sum, 0, sizeof (float) * dim);
  for (int i = 0; i < n; i++)
    for (int j = 0; j < dim; j++)
      sum[j] += moshi_packed_get (&p->codebooks[i], j, codes[i]);
  for (int r = 0; r < q->out_dim; r++)
    latent[r] += moshi_dot (p->out_proj + (size_t) r * dim, sum, dim);
}

void
rvq_decode (const Rvq *q, int n_codebooks, const uint16_t *codes, float *latent,
    float *scratch)
{
  memset (latent, 0, sizeof (float) * q->out_dim);
  part_decode_add (q, &q->first, 1, codes, latent, scratch);
  if (n_codebooks > 1)
    part_decode_add (q, &q->rest, n_codebooks - 1, codes + 1, latent, scratch);
}
