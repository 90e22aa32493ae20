#include "rvq.h"

#include "alloc.h"
#include "model-error.h"
#include "weights.h"

#include <float.h>
#include <string.h>

/* Kyutai's EuclideanCodebook epsilon for unused entries. */
#define CODEBOOK_EPSILON 1e-5f

static gboolean
part_alloc (RvqPart *p, int n_q, int bins)
{
  memset (p, 0, sizeof *p);
  p->n_q = n_q;
  p->codebooks = g_new0 (MoshiPackedB, MAX (n_q, 1));
  p->norms = moshi_alloc (sizeof (float) * (size_t) MAX (n_q, 1) * bins);
  return p->norms != NULL;
}

/* Stores codebook i ([bins][dim] vectors) for the nearest-code GEMM, and
 * the squared norms the distance needs.  The search always runs in float32:
 * codes must match the reference exactly. */
static gboolean
part_set_codebook (RvqPart *p, int i, const float *cb, int dim, int bins)
{
  for (int b = 0; b < bins; b++)
    p->norms[(size_t) i * bins + b] =
        moshi_dot (cb + (size_t) b * dim, cb + (size_t) b * dim, dim);
  return moshi_packed_init (&p->codebooks[i], cb, dim, bins, dim, TRUE);
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
  if (p->codebooks)
    for (int i = 0; i < MAX (p->n_q, 1); i++)
      moshi_packed_clear (&p->codebooks[i]);
  g_free (p->codebooks);
  moshi_free (p->norms);
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
          + (size_t) q->n_q * q->bins);
  for (int i = 0; i < q->first.n_q; i++)
    n += moshi_packed_bytes (&q->first.codebooks[i]);
  for (int i = 0; i < q->rest.n_q; i++)
    n += moshi_packed_bytes (&q->rest.codebooks[i]);
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

/* Residual VQ encode of one part: codes for codebooks [0, n). */
static void
part_encode (const Rvq *q, const RvqPart *p, int n, const float *latent,
    uint16_t *codes, float *scratch)
{
  const int dim = q->dim, bins = q->bins;
  float *residual = scratch;
  float *dots = scratch + dim;
  matvec (p->in_proj, latent, residual, dim, q->in_dim);
  for (int i = 0; i < n; i++) {
    const MoshiPackedB *cb = &p->codebooks[i];
    const float *nrm = p->norms + (size_t) i * bins;
    /* argmin |r - e|^2 = argmin |e|^2 - 2 r.e ; first index wins ties,
     * like torch.argmin. */
    moshi_gemm_packed (NULL, 1, residual, dim, cb, NULL, FALSE, dots, bins);
    int best = 0;
    float best_d = FLT_MAX;
    for (int b = 0; b < bins; b++) {
      float dist = nrm[b] - 2.0f * dots[b];
      if (dist < best_d) {
        best_d = dist;
        best = b;
      }
    }
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
