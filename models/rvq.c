#include "rvq.h"

#include "alloc.h"
#include "model-error.h"
#include "weights.h"

#include <float.h>
#include <string.h>

/* Kyutai's EuclideanCodebook epsilon for unused entries. */
#define CODEBOOK_EPSILON 1e-5f

static gboolean
part_alloc (RvqPart *p, int n_q, int dim, int in_dim, int out_dim, int bins)
{
  memset (p, 0, sizeof *p);
  p->n_q = n_q;
  p->codebooks = moshi_alloc (sizeof (float) * (size_t) MAX (n_q, 1) * bins * dim);
  p->norms = moshi_alloc (sizeof (float) * (size_t) MAX (n_q, 1) * bins);
  return p->codebooks && p->norms;
}

static void
part_norms (RvqPart *p, int dim, int bins)
{
  for (size_t e = 0; e < (size_t) p->n_q * bins; e++)
    p->norms[e] = moshi_dot (p->codebooks + e * dim, p->codebooks + e * dim, dim);
}

static gboolean
part_load (RvqPart *p, const StFile *f, const char *prefix, int n_q, int dim,
    int in_dim, int out_dim, int bins, GError **error)
{
  char name[256];
  if (!part_alloc (p, n_q, dim, in_dim, out_dim, bins)) {
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_IO,
        "out of memory loading %s", prefix);
    return FALSE;
  }
  int64_t ish[3] = { dim, in_dim, 1 }, osh[3] = { out_dim, dim, 1 };
  p->in_proj = weights_load (f, weights_name (name, "%s.input_proj.weight", prefix), 3, ish, error);
  if (!p->in_proj)
    return FALSE;
  p->out_proj = weights_load (f, weights_name (name, "%s.output_proj.weight", prefix), 3, osh, error);
  if (!p->out_proj)
    return FALSE;
  for (int i = 0; i < n_q; i++) {
    int64_t esh[2] = { bins, dim }, ush[1] = { bins };
    float *sum = weights_load (f, weights_name (name,
            "%s.vq.layers.%d._codebook.embedding_sum", prefix, i), 2, esh, error);
    if (!sum)
      return FALSE;
    float *usage = weights_load (f, weights_name (name,
            "%s.vq.layers.%d._codebook.cluster_usage", prefix, i), 1, ush, error);
    if (!usage) {
      moshi_free (sum);
      return FALSE;
    }
    /* The checkpoint stores running sums; the codebook is their mean. */
    float *cb = p->codebooks + (size_t) i * bins * dim;
    for (int b = 0; b < bins; b++) {
      float u = MAX (usage[b], CODEBOOK_EPSILON);
      for (int j = 0; j < dim; j++)
        cb[(size_t) b * dim + j] = sum[(size_t) b * dim + j] / u;
    }
    moshi_free (sum);
    moshi_free (usage);
  }
  part_norms (p, dim, bins);
  return TRUE;
}

static void
part_clear (RvqPart *p)
{
  moshi_free (p->in_proj);
  moshi_free (p->out_proj);
  moshi_free (p->codebooks);
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
  if (!part_load (&q->first, f, weights_name (name, "%s.rvq_first", prefix),
          1, dim, in_dim, out_dim, bins, error)
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
  part_alloc (p, n_q, dim, in_dim, out_dim, bins);
  p->in_proj = weights_random (seed, (size_t) dim * in_dim, 0.05f);
  p->out_proj = weights_random (seed, (size_t) out_dim * dim, 0.05f);
  moshi_free (p->codebooks);
  p->codebooks = weights_random (seed, (size_t) MAX (n_q, 1) * bins * dim, 1.0f);
  part_norms (p, dim, bins);
}

void
rvq_random (Rvq *q, uint64_t *seed, int dim, int in_dim, int out_dim,
    int bins, int n_q)
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
  return sizeof (float) * ((size_t) 2 * q->dim * (q->in_dim + q->out_dim)
      + (size_t) q->n_q * q->bins * (q->dim + 1));
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
    const float *cb = p->codebooks + (size_t) i * bins * dim;
    const float *nrm = p->norms + (size_t) i * bins;
    /* argmin |r - e|^2 = argmin |e|^2 - 2 r.e ; first index wins ties,
     * like torch.argmin. */
    matvec (cb, residual, dots, bins, dim);
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
    const float *e = cb + (size_t) best * dim;
    for (int j = 0; j < dim; j++)
      residual[j] -= e[j];
  }
}

void
rvq_encode (const Rvq *q, int n_codebooks, const float *latent,
    uint16_t *codes, float *scratch)
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
  for (int i = 0; i < n; i++) {
    const float *e = p->codebooks + ((size_t) i * q->bins + codes[i]) * dim;
    for (int j = 0; j < dim; j++)
      sum[j] += e[j];
  }
  for (int r = 0; r < q->out_dim; r++)
    latent[r] += moshi_dot (p->out_proj + (size_t) r * dim, sum, dim);
}

void
rvq_decode (const Rvq *q, int n_codebooks, const uint16_t *codes,
    float *latent, float *scratch)
{
  memset (latent, 0, sizeof (float) * q->out_dim);
  part_decode_add (q, &q->first, 1, codes, latent, scratch);
  if (n_codebooks > 1)
    part_decode_add (q, &q->rest, n_codebooks - 1, codes + 1, latent, scratch);
}
