/* Kyutai's SplitResidualVectorQuantizer: codebook 0 (semantic, `rvq_first`)
 * and codebooks 1.. (acoustic, `rvq_rest`) are two independent residual VQs
 * over the same latent, each with 1x1 input/output projections.  Encoding
 * picks the nearest code (Euclidean) per codebook on the running residual;
 * decoding sums the chosen codebook vectors and projects back. */
#pragma once
#include <glib.h>
#include <stdint.h>

#include "gemm.h"
#include "kernels.h"
#include "safetensors.h"

G_BEGIN_DECLS

typedef struct {
  int n_q; /* codebooks stored */
  float *in_proj; /* [dim][in_dim] */
  float *out_proj; /* [out_dim][dim] */
  MoshiPackedB *codebooks; /* [n_q], each B = E^T: K = dim, N = bins (f32) */
  float *norms; /* [n_q][bins], |e|^2 */
  /* The nearest-code search first scores every code with an int8 copy of
   * the codebook (a quarter of the bytes), then rescores exactly the few
   * codes that the copy's error bounds cannot rule out. */
  MoshiPackedB *codebooks_q8; /* [n_q], same shape, Q8 */
  float *q8_error; /* [n_q][bins], |e - e8| (rounded up) */
  float *q8_norm; /* [n_q][bins], |e8| (rounded up) */
} RvqPart;

typedef struct {
  int dim, in_dim, out_dim, bins, n_q;
  RvqPart first, rest;
} Rvq;

gboolean rvq_load (Rvq *q, const StFile *f, const char *prefix, int dim,
    int in_dim, int out_dim, int bins, int n_q, GError **error);
void rvq_random (Rvq *q, uint64_t *seed, int dim, int in_dim, int out_dim,
    int bins, int n_q);
void rvq_clear (Rvq *q);
size_t rvq_bytes (const Rvq *q);

/* scratch: at least rvq_scratch_floats() floats. */
size_t rvq_scratch_floats (const Rvq *q);
/* latent [in_dim] -> codes [n_codebooks] */
void rvq_encode (const Rvq *q, int n_codebooks, const float *latent,
    uint16_t *codes, float *scratch);
/* codes [n_codebooks] (each < bins) -> latent [out_dim] */
void rvq_decode (const Rvq *q, int n_codebooks, const uint16_t *codes,
    float *latent, float *scratch);

G_END_DECLS
