/* SigLIP vision tower: weights and forward pass (see siglip.h). */
#include "siglip.h"

#include "alloc.h"
#include "blas.h"
#include "cpu.h"
#include "gemm.h"
#include "kernels.h"
#include "linear.h"
#include "model-error.h"
#include "vec-math.h"
#include "weights.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

/* A weight matrix, [rows][cols] row-major, kept as float32 or as bf16.
 * bf16 halves the tower's memory (1.65 GB -> 0.83 GB for So400m); the
 * forward pass widens one layer's matrices at a time into float scratch
 * for the GEMMs, so results are those of the float32 values of the same
 * bf16 numbers. */
typedef struct {
  float *f32;
  uint16_t *bf16;
  /* packed.in > 0: packed for our GEMM instead, int8 (siglip_model_to_q8)
   * or bf16 (siglip_model_to_bf16_products) */
  MoshiLinear packed;
} SigMat;

typedef struct {
  float *ln1_w, *ln1_b, *ln2_w, *ln2_b;
  /* q, k and v stacked as one [3D][D] weight so one GEMM makes all three. */
  SigMat qkv_w;
  float *qkv_b;
  SigMat out_w;
  float *out_b;
  SigMat fc1_w;
  float *fc1_b;
  SigMat fc2_w;
  float *fc2_b;
} SiglipLayer;

struct SiglipModel {
  SiglipConfig cfg;
  int grid; /* the learned position grid is grid x grid */
  float *patch_w; /* [D][3 * P * P], the conv weight [D][3][P][P] flattened */
  float *patch_b;
  float *pos; /* [grid * grid][D] */
  SiglipLayer *layers;
  float *post_w, *post_b;
  /* Attention products in bf16 through our GEMM (AMX): set by
   * siglip_model_to_bf16_products on CPUs with AMX. */
  gboolean bf16_attention;
};

static void
mat_clear (SigMat *w)
{
  moshi_free (w->f32);
  moshi_free (w->bf16);
  moshi_linear_clear (&w->packed);
  w->f32 = NULL;
  w->bf16 = NULL;
}

static void
layer_clear (SiglipLayer *l)
{
  float **p[] = { &l->ln1_w, &l->ln1_b, &l->ln2_w, &l->ln2_b, &l->qkv_b,
    &l->out_b, &l->fc1_b, &l->fc2_b };
  for (size_t i = 0; i < G_N_ELEMENTS (p); i++) {
    moshi_free (*p[i]);
    *p[i] = NULL;
  }
  mat_clear (&l->qkv_w);
  mat_clear (&l->out_w);
  mat_clear (&l->fc1_w);
  mat_clear (&l->fc2_w);
}

void
siglip_model_free (SiglipModel *m)
{
  if (!m)
    return;
  if (m->layers)
    for (int i = 0; i < m->cfg.num_layers; i++)
      layer_clear (&m->layers[i]);
  g_free (m->layers);
  moshi_free (m->patch_w);
  moshi_free (m->patch_b);
  moshi_free (m->pos);
  moshi_free (m->post_w);
  moshi_free (m->post_b);
  g_free (m);
}

const SiglipConfig *
siglip_model_config (const SiglipModel *m)
{
  return &m->cfg;
}

static SiglipModel *
model_alloc (const SiglipConfig *cfg, GError **error)
{
  if (!siglip_config_validate (cfg, error))
    return NULL;
  SiglipModel *m = g_new0 (SiglipModel, 1);
  m->cfg = *cfg;
  m->grid = cfg->image_size / cfg->patch_size;
  m->layers = g_new0 (SiglipLayer, MAX (cfg->num_layers, 1));
  return m;
}

static gboolean
oom (GError **error, const char *what, size_t bytes)
{
  g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_IO,
      "SigLIP: out of memory allocating %zu bytes for %s", bytes, what);
  return FALSE;
}

/* ------------------------------------------------------------ loading --- */

typedef struct {
  const StFile *f;
  const char *prefix;
  GError **error;
} Loader;

static float *
load (Loader *ld, const char *suffix, int ndim, int64_t d0, int64_t d1,
    int64_t d2, int64_t d3)
{
  char name[256];
  const int64_t shape[4] = { d0, d1, d2, d3 };
  weights_name (name, "%s%s", ld->prefix, suffix);
  return weights_load (ld->f, name, ndim, shape, ld->error);
}

/* The q, k, v biases of a layer, stacked as one [3D]. */
static float *
load_qkv_bias (Loader *ld, int layer, int D)
{
  float *all = moshi_alloc (3 * (size_t) D * sizeof (float));
  if (!all) {
    oom (ld->error, "the q/k/v biases", 3 * (size_t) D * sizeof (float));
    return NULL;
  }
  static const char *const names[3] = { "q", "k", "v" };
  for (int i = 0; i < 3; i++) {
    char suffix[128];
    g_snprintf (suffix, sizeof suffix,
        "encoder.layers.%d.self_attn.%s_proj.bias", layer, names[i]);
    float *b = load (ld, suffix, 1, D, 0, 0, 0);
    if (!b) {
      moshi_free (all);
      return NULL;
    }
    memcpy (all + (size_t) i * D, b, D * sizeof (float));
    moshi_free (b);
  }
  return all;
}

/* Weight matrices `subs` (n_parts of [rows][cols]) of layer `layer`,
 * stacked by rows into one SigMat: bf16 when every part is stored as BF16
 * (copied as is: lossless), float32 otherwise (any dtype weights_load
 * reads). */
static gboolean
load_mat (Loader *ld, int layer, const char *const *subs, int n_parts, int rows,
    int cols, SigMat *out)
{
  const int64_t shape[2] = { rows, cols };
  const StTensor *t[3];
  char name[256];
  gboolean bf16 = TRUE;
  for (int p = 0; p < n_parts; p++) {
    weights_name (name, "%sencoder.layers.%d.%s", ld->prefix, layer, subs[p]);
    if (!(t[p] = st_require (ld->f, name, 2, shape, ld->error)))
      return FALSE;
    bf16 = bf16 && t[p]->dtype == ST_BF16;
  }
  const size_t part = (size_t) rows * cols;
  const size_t bytes = n_parts * part * (bf16 ? 2 : 4);
  void *all = moshi_alloc (bytes);
  if (!all)
    return oom (ld->error, t[0]->name, bytes);
  for (int p = 0; p < n_parts; p++) {
    if (bf16) {
      memcpy ((uint16_t *) all + p * part, t[p]->data, part * 2);
      continue;
    }
    float *w = weights_load (ld->f, t[p]->name, 2, shape, ld->error);
    if (!w) {
      moshi_free (all);
      return FALSE;
    }
    memcpy ((float *) all + p * part, w, part * sizeof (float));
    moshi_free (w);
  }
  if (bf16)
    out->bf16 = all;
  else
    out->f32 = all;
  return TRUE;
}

static gboolean
load_layer (Loader *ld, int i, const SiglipConfig *c, SiglipLayer *l)
{
  static const char *const qkv[3] = { "self_attn.q_proj.weight",
    "self_attn.k_proj.weight", "self_attn.v_proj.weight" };
  static const char *const out[1] = { "self_attn.out_proj.weight" };
  static const char *const fc1[1] = { "mlp.fc1.weight" };
  static const char *const fc2[1] = { "mlp.fc2.weight" };
  const int D = c->hidden_size, F = c->intermediate_size;
  char s[128];
#define LOAD(dst, sub, n)                                     \
  do {                                                        \
    g_snprintf (s, sizeof s, "encoder.layers.%d.%s", i, sub); \
    if (!(dst = load (ld, s, 1, n, 0, 0, 0)))                 \
      return FALSE;                                           \
  } while (0)
  LOAD (l->ln1_w, "layer_norm1.weight", D);
  LOAD (l->ln1_b, "layer_norm1.bias", D);
  if (!load_mat (ld, i, qkv, 3, D, D, &l->qkv_w)
      || !(l->qkv_b = load_qkv_bias (ld, i, D))
      || !load_mat (ld, i, out, 1, D, D, &l->out_w))
    return FALSE;
  LOAD (l->out_b, "self_attn.out_proj.bias", D);
  LOAD (l->ln2_w, "layer_norm2.weight", D);
  LOAD (l->ln2_b, "layer_norm2.bias", D);
  if (!load_mat (ld, i, fc1, 1, F, D, &l->fc1_w))
    return FALSE;
  LOAD (l->fc1_b, "mlp.fc1.bias", F);
  if (!load_mat (ld, i, fc2, 1, D, F, &l->fc2_w))
    return FALSE;
  LOAD (l->fc2_b, "mlp.fc2.bias", D);
#undef LOAD
  return TRUE;
}

SiglipModel *
siglip_model_load (const StFile *f, const char *prefix, const SiglipConfig *cfg,
    GError **error)
{
  g_return_val_if_fail (f && cfg, NULL);
  SiglipModel *m = model_alloc (cfg, error);
  if (!m)
    return NULL;
  Loader ld = { f, prefix ? prefix : "", error };
  const int D = cfg->hidden_size, P = cfg->patch_size;
  if (!(m->patch_w =
              load (&ld, "embeddings.patch_embedding.weight", 4, D, 3, P, P))
      || !(m->patch_b =
               load (&ld, "embeddings.patch_embedding.bias", 1, D, 0, 0, 0))
      || !(m->pos = load (&ld, "embeddings.position_embedding.weight", 2,
               (int64_t) m->grid * m->grid, D, 0, 0)))
    goto fail;
  for (int i = 0; i < cfg->num_layers; i++)
    if (!load_layer (&ld, i, cfg, &m->layers[i]))
      goto fail;
  if (!(m->post_w = load (&ld, "post_layernorm.weight", 1, D, 0, 0, 0))
      || !(m->post_b = load (&ld, "post_layernorm.bias", 1, D, 0, 0, 0)))
    goto fail;
  return m;
fail:
  siglip_model_free (m);
  return NULL;
}

/* ------------------------------------------------------ random weights --- */

static float *
rnd (uint64_t *seed, size_t n, float scale, float offset, GError **error)
{
  float *w = weights_random (seed, n, scale);
  if (!w) {
    oom (error, "random weights", n * sizeof (float));
    return NULL;
  }
  for (size_t i = 0; offset != 0.0f && i < n; i++)
    w[i] += offset;
  return w;
}

SiglipModel *
siglip_model_new_random (const SiglipConfig *cfg, uint64_t seed, GError **error)
{
  SiglipModel *m = model_alloc (cfg, error);
  if (!m)
    return NULL;
  const size_t D = cfg->hidden_size, F = cfg->intermediate_size;
  const size_t K = 3 * (size_t) cfg->patch_size * cfg->patch_size;
  /* Linear weights ~ 1/sqrt(fan_in) keep activations O(1) through the
   * layers, so the timing is that of ordinary numbers. */
  const float sd = 1.0f / sqrtf ((float) D), sf = 1.0f / sqrtf ((float) F);
  uint64_t s = seed;
  if (!(m->patch_w = rnd (&s, D * K, 1.0f / sqrtf ((float) K), 0, error))
      || !(m->patch_b = rnd (&s, D, 0.1f, 0, error))
      || !(m->pos = rnd (&s, (size_t) m->grid * m->grid * D, 0.1f, 0, error))
      || !(m->post_w = rnd (&s, D, 0.1f, 1.0f, error))
      || !(m->post_b = rnd (&s, D, 0.1f, 0, error)))
    goto fail;
  for (int i = 0; i < cfg->num_layers; i++) {
    SiglipLayer *l = &m->layers[i];
    if (!(l->ln1_w = rnd (&s, D, 0.1f, 1.0f, error))
        || !(l->ln1_b = rnd (&s, D, 0.1f, 0, error))
        || !(l->qkv_w.f32 = rnd (&s, 3 * D * D, sd, 0, error))
        || !(l->qkv_b = rnd (&s, 3 * D, 0.1f, 0, error))
        || !(l->out_w.f32 = rnd (&s, D * D, sd, 0, error))
        || !(l->out_b = rnd (&s, D, 0.1f, 0, error))
        || !(l->ln2_w = rnd (&s, D, 0.1f, 1.0f, error))
        || !(l->ln2_b = rnd (&s, D, 0.1f, 0, error))
        || !(l->fc1_w.f32 = rnd (&s, F * D, sd, 0, error))
        || !(l->fc1_b = rnd (&s, F, 0.1f, 0, error))
        || !(l->fc2_w.f32 = rnd (&s, D * F, sf, 0, error))
        || !(l->fc2_b = rnd (&s, D, 0.1f, 0, error)))
      goto fail;
  }
  return m;
fail:
  siglip_model_free (m);
  return NULL;
}

/* ------------------------------------------------------------- bf16 --- */

static gboolean
mat_to_bf16 (SigMat *w, size_t n)
{
  if (!w->f32)
    return TRUE;
  uint16_t *h = moshi_alloc (n * sizeof (uint16_t));
  if (!h)
    return FALSE;
  for (size_t i = 0; i < n; i++) {
    uint32_t u;
    memcpy (&u, &w->f32[i], 4);
    /* Round to nearest even; NaN stays NaN (quiet bit kept). */
    h[i] = (u & 0x7FFFFFFF) > 0x7F800000
        ? (uint16_t) ((u >> 16) | 0x40)
        : (uint16_t) ((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
  }
  moshi_free (w->f32);
  w->f32 = NULL;
  w->bf16 = h;
  return TRUE;
}

gboolean
siglip_model_to_bf16 (SiglipModel *m, GError **error)
{
  const size_t D = m->cfg.hidden_size, F = m->cfg.intermediate_size;
  for (int i = 0; i < m->cfg.num_layers; i++) {
    SiglipLayer *l = &m->layers[i];
    if (!mat_to_bf16 (&l->qkv_w, 3 * D * D) || !mat_to_bf16 (&l->out_w, D * D)
        || !mat_to_bf16 (&l->fc1_w, F * D) || !mat_to_bf16 (&l->fc2_w, D * F))
      return oom (error, "bf16 weights", F * D * sizeof (uint16_t));
  }
  return TRUE;
}

/* [rows][cols] packed as `type` for our GEMM, from float32 or bf16. */
static gboolean
mat_to_packed (SigMat *w, int rows, int cols, MoshiWeightType type)
{
  if (w->packed.in)
    return TRUE;
  const size_t n = (size_t) rows * cols;
  float *f = w->f32;
  if (!f) {
    f = moshi_alloc (n * sizeof (float));
    if (!f)
      return FALSE;
    for (size_t i = 0; i < n; i++) {
      uint32_t u = (uint32_t) w->bf16[i] << 16;
      memcpy (&f[i], &u, 4);
    }
  }
  gboolean ok = moshi_linear_init (&w->packed, f, cols, rows, type);
  if (f != w->f32)
    moshi_free (f);
  if (!ok) {
    memset (&w->packed, 0, sizeof w->packed);
    return FALSE;
  }
  moshi_free (w->f32);
  moshi_free (w->bf16);
  w->f32 = NULL;
  w->bf16 = NULL;
  return TRUE;
}

static gboolean
model_to_packed (SiglipModel *m, MoshiWeightType type, GError **error)
{
  const int D = m->cfg.hidden_size, F = m->cfg.intermediate_size;
  for (int i = 0; i < m->cfg.num_layers; i++) {
    SiglipLayer *l = &m->layers[i];
    if (!mat_to_packed (&l->qkv_w, 3 * D, D, type)
        || !mat_to_packed (&l->out_w, D, D, type)
        || !mat_to_packed (&l->fc1_w, F, D, type)
        || !mat_to_packed (&l->fc2_w, D, F, type))
      return oom (error, "packed weights", (size_t) F * D * sizeof (float));
  }
  return TRUE;
}

gboolean
siglip_model_to_q8 (SiglipModel *m, GError **error)
{
  return model_to_packed (m, MOSHI_WEIGHTS_Q8, error);
}

gboolean
siglip_model_to_bf16_products (SiglipModel *m, GError **error)
{
  if (!model_to_packed (m, MOSHI_WEIGHTS_BF16, error))
    return FALSE;
  m->bf16_attention = moshi_cpu_has_amx ();
  return TRUE;
}

size_t
siglip_model_weight_bytes (const SiglipModel *m)
{
  const size_t D = m->cfg.hidden_size, F = m->cfg.intermediate_size;
  const size_t P = m->cfg.patch_size;
  size_t bytes = (3 * P * P * D + D + (size_t) m->grid * m->grid * D + 2 * D)
      * sizeof (float);
  for (int i = 0; i < m->cfg.num_layers; i++) {
    const SiglipLayer *l = &m->layers[i];
    const SigMat *w[4] = { &l->qkv_w, &l->out_w, &l->fc1_w, &l->fc2_w };
    const size_t n[4] = { 3 * D * D, D * D, F * D, D * F };
    for (int k = 0; k < 4; k++)
      bytes += w[k]->packed.in ? moshi_linear_bytes (&w[k]->packed)
                               : n[k] * (w[k]->bf16 ? 2 : 4);
    bytes += (4 * D + 3 * D + D + F + D) * sizeof (float);
  }
  return bytes;
}

static gboolean
model_has_bf16 (const SiglipModel *m)
{
  for (int i = 0; i < m->cfg.num_layers; i++) {
    const SiglipLayer *l = &m->layers[i];
    if (l->qkv_w.bf16 || l->out_w.bf16 || l->fc1_w.bf16 || l->fc2_w.bf16)
      return TRUE;
  }
  return FALSE;
}

/* ---------------------------------------------------------- forward --- */

/* PyTorch's cubic convolution kernel with A = -0.75 (upsample_bicubic2d):
 * weights of the 4 taps around a source position with fraction t. */
static void
cubic_weights (double t, double w[4])
{
  const double A = -0.75;
  double x;
  x = t + 1.0;
  w[0] = ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
  x = t;
  w[1] = ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
  x = 1.0 - t;
  w[2] = ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
  x = 2.0 - t;
  w[3] = ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
}

/* Source taps (clamped to the border, as PyTorch does) and weights of
 * output index i when resizing `in` samples to `out`, align_corners=False:
 * src = (i + 0.5) * in / out - 0.5, not clamped at 0 for cubic. */
static void
cubic_taps (int i, int in, int out, int idx[4], double w[4])
{
  double src = (i + 0.5) * ((double) in / out) - 0.5;
  double fl = floor (src);
  cubic_weights (src - fl, w);
  for (int k = 0; k < 4; k++)
    idx[k] = CLAMP ((int) fl - 1 + k, 0, in - 1);
}

void
siglip_resize_table (const float *src, int gh, int gw, int C, float *dst,
    int oh, int ow)
{
  for (int y = 0; y < oh; y++) {
    int iy[4];
    double wy[4];
    cubic_taps (y, gh, oh, iy, wy);
    for (int x = 0; x < ow; x++) {
      int ix[4];
      double wx[4];
      cubic_taps (x, gw, ow, ix, wx);
      float *d = dst + ((size_t) y * ow + x) * C;
      for (int c = 0; c < C; c++) {
        double acc = 0.0;
        for (int a = 0; a < 4; a++) {
          const float *row = src + (size_t) iy[a] * gw * C;
          double r = 0.0;
          for (int b = 0; b < 4; b++)
            r += wx[b] * row[(size_t) ix[b] * C + c];
          acc += wy[a] * r;
        }
        d[c] = (float) acc;
      }
    }
  }
}

gboolean
siglip_preprocess (const SiglipConfig *c, const uint8_t *rgb, int width,
    int height, int stride, float *out, GError **error)
{
  if (!rgb || !out || width <= 0 || height <= 0 || stride < 3 * width) {
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_ARGUMENT,
        "SigLIP: bad image (pixels %p, output %p, %dx%d, stride %d bytes; "
        "need a non-empty RGB image with stride >= 3 * width)",
        (const void *) rgb, (void *) out, width, height, stride);
    return FALSE;
  }
  const size_t plane = (size_t) width * height;
  for (int y = 0; y < height; y++) {
    const uint8_t *row = rgb + (size_t) y * stride;
    for (int x = 0; x < width; x++)
      for (int ch = 0; ch < 3; ch++) {
        /* The reference's float32 steps: u8 / 255, then (x - mean) / std. */
        float v = (float) row[3 * x + ch] / 255.0f;
        out[ch * plane + (size_t) y * width + x] =
            (v - c->image_mean[ch]) / c->image_std[ch];
      }
  }
  return TRUE;
}

/* C[M][N] (+)= alpha * A[M][K] * B^T, B stored [N][K] (a Linear weight). */
static void
gemm_nt (int M, int N, int K, float alpha, const float *A, int lda,
    const float *B, int ldb, float beta, float *C, int ldc)
{
  cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, alpha, A, lda,
      B, ldb, beta, C, ldc);
}

/* C[M][N] (+)= A[M][K] W^T through the layer matrix `mat`: OpenBLAS on
 * the float values `w`, or our GEMM when it is stored packed. */
static void
mat_product (const SigMat *mat, const float *w, MoshiPool *pool, int M, int N,
    int K, const float *A, gboolean accumulate, float *C)
{
  if (mat->packed.in)
    moshi_linear_forward (&mat->packed, pool, A, M, accumulate, C);
  else
    gemm_nt (M, N, K, 1.0f, A, K, w, K, accumulate ? 1.0f : 0.0f, C, N);
}

/* Row-parallel elementwise steps.  BLAS threads the GEMMs itself; these
 * would otherwise leave the other cores idle for ~10% of the time. */
typedef enum {
  ROWS_LAYER_NORM, /* dst = LN(src; w, b) */
  ROWS_ADD_BIAS, /* dst += b */
  ROWS_BIAS_ACT, /* dst = act(dst + b) */
} RowsOp;

typedef struct {
  RowsOp op;
  float *dst;
  const float *src, *w, *b;
  int rows, C;
  float eps;
  SiglipAct act;
} RowsJob;

static void
rows_part (void *ctx, int index, int count)
{
  const RowsJob *j = ctx;
  const int r0 = (int) ((int64_t) j->rows * index / count);
  const int r1 = (int) ((int64_t) j->rows * (index + 1) / count);
  float *d = j->dst + (size_t) r0 * j->C;
  if (j->op == ROWS_LAYER_NORM) {
    moshi_layer_norm (d, j->src + (size_t) r0 * j->C, j->w, j->b, r1 - r0, j->C,
        j->eps);
    return;
  }
  for (int r = r0; r < r1; r++, d += j->C)
    for (int i = 0; i < j->C; i++)
      d[i] += j->b[i];
  if (j->op != ROWS_BIAS_ACT)
    return;
  d = j->dst + (size_t) r0 * j->C;
  if (j->act == SIGLIP_GELU_TANH)
    moshi_gelu_tanh (d, d, (size_t) (r1 - r0) * j->C);
  else
    moshi_gelu (d, d, (size_t) (r1 - r0) * j->C);
}

static void
run_rows (MoshiPool *pool, RowsOp op, float *dst, const float *src,
    const float *w, const float *b, int rows, int C, float eps, SiglipAct act)
{
  RowsJob j = { op, dst, src, w, b, rows, C, eps, act };
  moshi_pool_run (pool, rows_part, &j);
}

/* Attention, heads split over the pool's threads, each running its heads'
 * GEMMs single-threaded with its own [N][N] score buffer: the per-head
 * products are small (K or N = head_dim), so one thread per head beats
 * threading each product. */
typedef struct {
  const float *qkv; /* [N][3D]: q | k | v, head h at columns h * hd */
  float *out; /* [N][D] */
  float *scores; /* [threads][N][N] */
  int N, D, H;
  gint next_head; /* heads are taken in turn: a thread that the OS
                   * delays for a while simply does fewer of them */
  gboolean bf16; /* products through our bf16 GEMM (AMX) */
  gint failed; /* out of memory packing a head (bf16) */
} AttnJob;

/* One head's two products with bf16 operands on AMX: keys and values are
 * packed as the B operands (a few hundred KB per head, next to the
 * N x N x hd products). */
static gboolean
head_bf16 (const float *q, const float *k, const float *v, int N, int D, int hd,
    float scale, float *s, float *out)
{
  MoshiPackedB kb, vb;
  if (!moshi_packed_init_typed (&kb, k, hd, N, 3 * D, TRUE, MOSHI_WEIGHTS_BF16))
    return FALSE;
  if (!moshi_packed_init_typed (&vb, v, N, hd, 3 * D, FALSE,
          MOSHI_WEIGHTS_BF16)) {
    moshi_packed_clear (&kb);
    return FALSE;
  }
  moshi_gemm_packed (NULL, N, q, 3 * D, &kb, NULL, FALSE, s, N);
  for (size_t i = 0; i < (size_t) N * N; i++)
    s[i] *= scale;
  moshi_softmax_rows (s, N, N, N);
  moshi_gemm_packed (NULL, N, s, N, &vb, NULL, FALSE, out, D);
  moshi_packed_clear (&kb);
  moshi_packed_clear (&vb);
  return TRUE;
}

/* Bytes of one head's keys or values in bf16, per token. */
static size_t
hd_bytes (int D, int H)
{
  return (size_t) (D / H) * 2 * sizeof (uint16_t);
}

static void
attn_part (void *ctx, int index, int count)
{
  AttnJob *j = ctx;
  const int N = j->N, D = j->D, hd = D / j->H;
  const float scale = 1.0f / sqrtf ((float) hd);
  float *s = j->scores + (size_t) index * N * N;
  for (int h; (h = g_atomic_int_add (&j->next_head, 1)) < j->H;) {
    const float *q = j->qkv + h * hd, *k = q + D, *v = q + 2 * D;
    if (j->bf16) {
      if (!head_bf16 (q, k, v, N, D, hd, scale, s, j->out + h * hd))
        g_atomic_int_set (&j->failed, 1);
      continue;
    }
    gemm_nt (N, N, hd, scale, q, 3 * D, k, 3 * D, 0.0f, s, N);
    moshi_softmax_rows (s, N, N, N);
    cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasNoTrans, N, hd, N, 1.0f, s,
        N, v, 3 * D, 0.0f, j->out + h * hd, D);
  }
}

/* bf16 matrices widened to float, split over the pool. */
typedef struct {
  const SigMat *w[4];
  size_t n[4];
  float *dst[4];
} WidenJob;

static void
widen_part (void *ctx, int index, int count)
{
  const WidenJob *j = ctx;
  for (int k = 0; k < 4; k++) {
    const uint16_t *h = j->w[k]->bf16;
    if (!h)
      continue;
    const size_t a = j->n[k] * index / count, b = j->n[k] * (index + 1) / count;
    float *d = j->dst[k];
    for (size_t i = a; i < b; i++) {
      uint32_t u = (uint32_t) h[i] << 16;
      memcpy (&d[i], &u, 4);
    }
  }
}

/* The float32 matrices of layer l: as stored, or widened into ws. */
static void
layer_weights (MoshiPool *pool, const SiglipLayer *l, int D, int F, float *ws,
    const float *out[4])
{
  const size_t dd = (size_t) D * D, fd = (size_t) F * D;
  WidenJob j = { { &l->qkv_w, &l->out_w, &l->fc1_w, &l->fc2_w },
    { 3 * dd, dd, fd, fd },
    { ws, ws + 3 * dd, ws + 4 * dd, ws + 4 * dd + fd } };
  gboolean any = FALSE;
  for (int k = 0; k < 4; k++) {
    out[k] = j.w[k]->bf16 ? j.dst[k] : j.w[k]->f32; /* NULL when packed */
    any = any || j.w[k]->bf16;
  }
  if (any)
    moshi_pool_run (pool, widen_part, &j);
}

/* Process-wide, like OpenBLAS's own setting; applied by each forward pass
 * under the BLAS lock (blas.h). */
static gint siglip_threads = 1;

void
siglip_set_threads (int n_threads)
{
  n_threads = CLAMP (n_threads, 1, 256);
  g_atomic_int_set (&siglip_threads, n_threads);
}

/* Largest image side accepted.  The element resizes pictures to the
 * trained 448 first; past ~1024 pixels the attention (tokens^2 scores per
 * thread: 113 MB at 1024) and its quadratic time are no longer reasonable. */
#define SIGLIP_MAX_SIDE 1024

gboolean
siglip_forward_pixels (const SiglipModel *m, const float *pixels, int width,
    int height, float *out, float *pre_postln, GError **error)
{
  const SiglipConfig *c = &m->cfg;
  if (!pixels || !out || width <= 0 || height <= 0 || width > SIGLIP_MAX_SIDE
      || height > SIGLIP_MAX_SIDE) {
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_ARGUMENT,
        "SigLIP: bad input (pixels %p, output %p, %dx%d; sides must be in "
        "[1, %d])",
        (const void *) pixels, (void *) out, width, height, SIGLIP_MAX_SIDE);
    return FALSE;
  }
  const int P = c->patch_size, D = c->hidden_size, F = c->intermediate_size;
  const int H = c->num_heads;
  const int gh = height / P, gw = width / P, N = gh * gw;
  if (N == 0) {
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_ARGUMENT,
        "SigLIP: a %dx%d image is smaller than one %dx%d patch", width, height,
        P, P);
    return FALSE;
  }
  const int threads = MIN (g_atomic_int_get (&siglip_threads), H);
  const int K = 3 * P * P;
  const size_t nd = (size_t) N * D;
  /* Scratch: x (residual stream), y (normed / attention output), qkv, the
   * MLP hidden (also im2col patches and the resized position table), one
   * [N][N] score buffer per thread. */
  size_t hid = MAX ((size_t) N * F, (size_t) N * K);
  if (gh != m->grid || gw != m->grid)
    hid = MAX (hid, nd);
  /* bf16 weights: one layer's matrices widened to float at a time. */
  const size_t wsz =
      model_has_bf16 (m) ? (size_t) D * (4 * (size_t) D + 2 * (size_t) F) : 0;
  const size_t bytes =
      (nd * 5 + hid + (size_t) threads * N * N + wsz) * sizeof (float);
  float *buf = moshi_alloc (bytes);
  if (!buf)
    return oom (error, "the activations", bytes);
  float *x = buf, *y = x + nd, *qkv = y + nd, *h = qkv + 3 * nd;
  float *scores = h + hid, *ws = scores + (size_t) threads * N * N;
  moshi_blas_lock ();
  moshi_blas_set_threads (threads);
  MoshiPool *pool = threads > 1 ? moshi_pool_new (threads) : NULL;

  /* Patch embedding as a GEMM over im2col rows [N][3][P][P], the conv
   * weight's layout. */
  const size_t plane = (size_t) width * height;
  for (int py = 0; py < gh; py++)
    for (int px = 0; px < gw; px++) {
      float *row = h + ((size_t) py * gw + px) * K;
      for (int ch = 0; ch < 3; ch++)
        for (int i = 0; i < P; i++)
          memcpy (row + (ch * P + i) * P,
              pixels + ch * plane + (size_t) (py * P + i) * width
                  + (size_t) px * P,
              P * sizeof (float));
    }
  gemm_nt (N, D, K, 1.0f, h, K, m->patch_w, K, 0.0f, x, D);
  run_rows (pool, ROWS_ADD_BIAS, x, NULL, NULL, m->patch_b, N, D, 0, 0);
  if (gh == m->grid && gw == m->grid)
    moshi_add_scaled_rows (x, m->pos, NULL, N, D);
  else {
    siglip_resize_table (m->pos, m->grid, m->grid, D, h, gh, gw);
    moshi_add_scaled_rows (x, h, NULL, N, D);
  }

  AttnJob attn = { qkv, y, scores, N, D, H, 0, m->bf16_attention, FALSE };
  const float eps = c->layer_norm_eps;
  for (int li = 0; li < c->num_layers; li++) {
    const SiglipLayer *l = &m->layers[li];
    const float *w[4]; /* qkv, out, fc1, fc2 */
    layer_weights (pool, l, D, F, ws, w);
    /* x += out(softmax(q k^T / sqrt(hd)) v) */
    run_rows (pool, ROWS_LAYER_NORM, y, x, l->ln1_w, l->ln1_b, N, D, eps, 0);
    mat_product (&l->qkv_w, w[0], pool, N, 3 * D, D, y, FALSE, qkv);
    run_rows (pool, ROWS_ADD_BIAS, qkv, NULL, NULL, l->qkv_b, N, 3 * D, 0, 0);
    if (pool)
      moshi_blas_set_threads (1);
    attn.next_head = 0;
    moshi_pool_run (pool, attn_part, &attn);
    if (pool)
      moshi_blas_set_threads (threads);
    if (g_atomic_int_get (&attn.failed)) {
      moshi_pool_free (pool);
      moshi_blas_unlock ();
      moshi_free (buf);
      return oom (error, "the attention's bf16 operands",
          (size_t) N * hd_bytes (D, H));
    }
    mat_product (&l->out_w, w[1], pool, N, D, D, y, TRUE, x);
    run_rows (pool, ROWS_ADD_BIAS, x, NULL, NULL, l->out_b, N, D, 0, 0);
    /* x += fc2(gelu(fc1(LN2(x)))) */
    run_rows (pool, ROWS_LAYER_NORM, y, x, l->ln2_w, l->ln2_b, N, D, eps, 0);
    mat_product (&l->fc1_w, w[2], pool, N, F, D, y, FALSE, h);
    run_rows (pool, ROWS_BIAS_ACT, h, NULL, NULL, l->fc1_b, N, F, 0, c->act);
    mat_product (&l->fc2_w, w[3], pool, N, D, F, h, TRUE, x);
    run_rows (pool, ROWS_ADD_BIAS, x, NULL, NULL, l->fc2_b, N, D, 0, 0);
  }
  if (pre_postln)
    memcpy (pre_postln, x, nd * sizeof (float));
  run_rows (pool, ROWS_LAYER_NORM, out, x, m->post_w, m->post_b, N, D, eps, 0);
  moshi_pool_free (pool);
  moshi_blas_unlock ();
  moshi_free (buf);
  return TRUE;
}

gboolean
siglip_check_image (const SiglipConfig *c, const uint8_t *rgb, int width,
    int height, int stride, GError **error)
{
#define ARG_ERROR(...)                                               \
  g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_ARGUMENT, \
      "SigLIP: " __VA_ARGS__)
  if (!rgb) {
    ARG_ERROR ("no image (pixels are NULL)");
    return FALSE;
  }
  if (width <= 0 || height <= 0 || width > SIGLIP_MAX_SIDE
      || height > SIGLIP_MAX_SIDE) {
    ARG_ERROR ("a %dx%d image is not supported: sides must be in [1, %d]",
        width, height, SIGLIP_MAX_SIDE);
    return FALSE;
  }
  if (stride < 3 * width) {
    ARG_ERROR ("row stride %d bytes is less than 3 * width = %d (RGB)", stride,
        3 * width);
    return FALSE;
  }
  if (siglip_tokens_for_size (c, width, height) == 0) {
    ARG_ERROR ("a %dx%d image is smaller than one %dx%d patch", width, height,
        c->patch_size, c->patch_size);
    return FALSE;
  }
#undef ARG_ERROR
  return TRUE;
}

gboolean
siglip_forward (const SiglipModel *m, const uint8_t *rgb, int width, int height,
    int stride, float *out, float *pre_postln, GError **error)
{
  if (!siglip_check_image (&m->cfg, rgb, width, height, stride, error))
    return FALSE;
  if (!out) {
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_ARGUMENT,
        "SigLIP: no output buffer");
    return FALSE;
  }
  const size_t bytes = (size_t) 3 * width * height * sizeof (float);
  float *pix = moshi_alloc (bytes);
  if (!pix)
    return oom (error, "the pixel planes", bytes);
  gboolean ok =
      siglip_preprocess (&m->cfg, rgb, width, height, stride, pix, error)
      && siglip_forward_pixels (m, pix, width, height, out, pre_postln, error);
  moshi_free (pix);
  return ok;
}
