/* MoshiVis image side against the moshivis-tiny reference vectors (made
 * with HF's SiglipVisionTransformer and Kyutai's kyuteye_pt adapter), and
 * its behaviour on bad configurations, checkpoints and images. */
#include <glib.h>
#include <glib/gstdio.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "cpu.h"
#include "image-resize.h"
#include "model-error.h"
#include "moshivis-image.h"
#include "vec-math.h"
#include "safetensors.h"

static gchar *
case_path (const char *file)
{
  const char *data = g_getenv ("MOSHI_TEST_DATA");
  return g_build_filename (data ? data : MOSHI_TEST_DATA_DIR, "conformance",
      "moshivis-tiny", file, NULL);
}

static void
load_config (MoshiVisImageConfig *cfg)
{
  gchar *c = case_path ("config.json");
  GError *err = NULL;
  moshivis_image_config_default (cfg);
  g_assert_true (moshivis_image_config_load_json (cfg, c, &err));
  g_assert_no_error (err);
  g_free (c);
}

static MoshiVisImageEncoder *
load_tiny (void)
{
  MoshiVisImageConfig cfg;
  load_config (&cfg);
  gchar *p = case_path ("model.safetensors");
  GError *err = NULL;
  MoshiVisImageEncoder *e = moshivis_image_encoder_load (p, &cfg, &err);
  g_assert_no_error (err);
  g_assert_nonnull (e);
  g_free (p);
  return e;
}

/* A reference tensor, checked to hold `numel` values. */
static float *
ref_f32 (StFile *f, const char *name, size_t numel)
{
  const StTensor *t = st_find (f, name);
  g_assert_nonnull (t);
  g_assert_cmpint (t->numel, ==, (int64_t) numel);
  float *buf = g_new (float, numel);
  GError *err = NULL;
  g_assert_true (st_read_f32 (f, t, buf, &err));
  g_assert_no_error (err);
  return buf;
}

/* The reference image [S][S][3] u8. */
static uint8_t *
ref_image (StFile *f, const char *name, int *side)
{
  const StTensor *t = st_find (f, name);
  g_assert_nonnull (t);
  g_assert_cmpint (t->dtype, ==, ST_U8);
  g_assert_cmpint (t->ndim, ==, 3);
  g_assert_cmpint (t->shape[0], ==, t->shape[1]);
  g_assert_cmpint (t->shape[2], ==, 3);
  *side = (int) t->shape[0];
  return g_memdup2 (t->data, t->nbytes);
}

static StFile *
open_vectors (void)
{
  gchar *p = case_path ("vectors.safetensors");
  GError *err = NULL;
  StFile *f = st_open (p, &err);
  g_assert_no_error (err);
  g_free (p);
  return f;
}

static void
assert_close (const char *what, const float *ours, const float *ref, size_t n,
    double tol)
{
  double max_err = 0.0, peak = 0.0;
  for (size_t i = 0; i < n; i++) {
    double e = fabs ((double) ours[i] - ref[i]);
    max_err = isnan (e) ? INFINITY : MAX (max_err, e);
    peak = MAX (peak, fabs ((double) ref[i]));
  }
  g_test_message ("%s: max_abs_err %.3e (tol %.1e, ref peak %.3f)", what,
      max_err, tol, peak);
  if (!(max_err <= tol))
    g_error ("%s: max abs error %.3e exceeds %.1e", what, max_err, tol);
}

/* pixel_values is u8/255 then (x - 0.5)/0.5 in float32: ours must agree to
 * the last bit or so. */
static void
test_pixel_values (void)
{
  StFile *v = open_vectors ();
  MoshiVisImageConfig cfg;
  load_config (&cfg);
  int S;
  uint8_t *img = ref_image (v, "image_u8", &S);
  float *ref = ref_f32 (v, "pixel_values", (size_t) 3 * S * S);
  float *ours = g_new (float, (size_t) 3 * S * S);
  GError *err = NULL;
  g_assert_true (siglip_preprocess (&cfg.vision, img, S, S, 3 * S, ours, &err));
  g_assert_no_error (err);
  for (size_t i = 0; i < (size_t) 3 * S * S; i++)
    g_assert_cmpfloat (fabsf (ours[i] - ref[i]), <=,
        nextafterf (fabsf (ref[i]), INFINITY) - fabsf (ref[i]));
  g_free (ours);
  g_free (ref);
  g_free (img);
  st_unref (v);
}

/* Tower at the native 4x4 grid: pre- and post-post_layernorm states. */
static void
test_tower (void)
{
  MoshiVisImageEncoder *e = load_tiny ();
  const SiglipModel *m = moshivis_image_encoder_tower (e);
  const SiglipConfig *c = siglip_model_config (m);
  StFile *v = open_vectors ();
  int S;
  uint8_t *img = ref_image (v, "image_u8", &S);
  const int n = siglip_tokens_for_size (c, S, S);
  g_assert_cmpint (n, ==, 16);
  const size_t nd = (size_t) n * c->hidden_size;
  float *pre = ref_f32 (v, "vision_pre_postln", nd);
  float *post = ref_f32 (v, "vision_out", nd);
  float *o_pre = g_new (float, nd), *o_post = g_new (float, nd);
  GError *err = NULL;
  g_assert_true (siglip_forward (m, img, S, S, 3 * S, o_post, o_pre, &err));
  g_assert_no_error (err);
  assert_close ("vision_pre_postln", o_pre, pre, nd, 1e-4);
  assert_close ("vision_out", o_post, post, nd, 1e-4);
  /* The same through a padded stride (a GstVideoFrame's rows). */
  const int stride = 3 * S + 5;
  uint8_t *padded = g_malloc0 ((size_t) stride * S);
  for (int y = 0; y < S; y++)
    memcpy (padded + (size_t) y * stride, img + (size_t) y * 3 * S, 3 * S);
  g_assert_true (siglip_forward (m, padded, S, S, stride, o_post, NULL, &err));
  assert_close ("vision_out (padded stride)", o_post, post, nd, 1e-4);
  g_free (padded);
  g_free (o_pre);
  g_free (o_post);
  g_free (pre);
  g_free (post);
  g_free (img);
  st_unref (v);
  moshivis_image_encoder_unref (e);
}

/* 84x84 = a 6x6 grid: the 4x4 position table is bicubically resized. */
static void
test_tower_interpolated (void)
{
  MoshiVisImageEncoder *e = load_tiny ();
  const SiglipModel *m = moshivis_image_encoder_tower (e);
  const SiglipConfig *c = siglip_model_config (m);
  StFile *v = open_vectors ();
  int S;
  uint8_t *img = ref_image (v, "image_u8_84", &S);
  g_assert_cmpint (S, ==, 84);
  const int n = siglip_tokens_for_size (c, S, S);
  g_assert_cmpint (n, ==, 36);
  const size_t nd = (size_t) n * c->hidden_size;
  float *pix_ref = ref_f32 (v, "pixel_values_84", (size_t) 3 * S * S);
  float *pix = g_new (float, (size_t) 3 * S * S);
  g_assert_true (siglip_preprocess (c, img, S, S, 3 * S, pix, NULL));
  assert_close ("pixel_values_84", pix, pix_ref, (size_t) 3 * S * S, 1e-6);
  float *ref = ref_f32 (v, "vision_out_84", nd);
  float *ours = g_new (float, nd);
  GError *err = NULL;
  g_assert_true (siglip_forward (m, img, S, S, 3 * S, ours, NULL, &err));
  g_assert_no_error (err);
  assert_close ("vision_out_84", ours, ref, nd, 2e-4);
  g_free (ours);
  g_free (ref);
  g_free (pix);
  g_free (pix_ref);
  g_free (img);
  st_unref (v);
  moshivis_image_encoder_unref (e);
}

/* Tower + adapter: the LM's cross-attention memory. */
static void
test_encode (void)
{
  MoshiVisImageEncoder *e = load_tiny ();
  StFile *v = open_vectors ();
  int S;
  uint8_t *img = ref_image (v, "image_u8", &S);
  g_assert_cmpint (moshivis_image_encoder_image_size (e), ==, 56);
  const int n = moshivis_image_encoder_tokens (e, S, S);
  const int D = moshivis_image_encoder_dim (e);
  g_assert_cmpint (n, ==, 16);
  g_assert_cmpint (D, ==, 64);
  float *ref = ref_f32 (v, "xa_src", (size_t) n * D);
  float *ours = g_new (float, (size_t) n *D);
  GError *err = NULL;
  for (int threads = 1; threads <= 2; threads++) {
    moshivis_image_encoder_set_threads (e, threads);
    memset (ours, 0, (size_t) n * D * sizeof (float));
    g_assert_true (
        moshivis_image_encoder_encode (e, img, S, S, 3 * S, ours, &err));
    g_assert_no_error (err);
    assert_close ("xa_src", ours, ref, (size_t) n * D, 1e-4);
  }
  /* A second reference shares the weights and outlives the first. */
  MoshiVisImageEncoder *e2 = moshivis_image_encoder_ref (e);
  moshivis_image_encoder_unref (e);
  g_assert_true (
      moshivis_image_encoder_encode (e2, img, S, S, 3 * S, ours, &err));
  assert_close ("xa_src (second ref)", ours, ref, (size_t) n * D, 1e-4);
  moshivis_image_encoder_unref (e2);
  g_free (ours);
  g_free (ref);
  g_free (img);
  st_unref (v);
}

/* Any picture through encode_fit: the model's own size is encoded as is, a
 * camera-shaped one equals encoding the resized square by hand. */
static void
test_encode_fit (void)
{
  MoshiVisImageEncoder *e = load_tiny ();
  StFile *v = open_vectors ();
  int S;
  uint8_t *img = ref_image (v, "image_u8", &S);
  const size_t n = (size_t) 16 * 64;
  float *ref = ref_f32 (v, "xa_src", n), *a = g_new (float, n);
  float *b = g_new (float, n);
  GError *err = NULL;
  g_assert_true (
      moshivis_image_encoder_encode_fit (e, img, S, S, 3 * S, TRUE, a, &err));
  g_assert_no_error (err);
  assert_close ("xa_src (encode_fit)", a, ref, n, 1e-4);
  /* A 4:3 picture, cropped or squeezed. */
  const int W = 160, H = 120;
  uint8_t *pic = g_malloc (W * H * 3), *sq = g_malloc (S * S * 3);
  for (int i = 0; i < W * H * 3; i++)
    pic[i] = (uint8_t) ((i * 2654435761u) >> 24);
  for (int crop = 0; crop <= 1; crop++) {
    g_assert_true (
        moshivis_image_encoder_encode_fit (e, pic, W, H, 3 * W, crop, a, &err));
    g_assert_true (
        moshi_image_fit_square (pic, W, H, 3 * W, crop, sq, S, &err));
    g_assert_true (moshivis_image_encoder_encode (e, sq, S, S, 3 * S, b, &err));
    g_assert_no_error (err);
    g_assert_cmpmem (a, n * sizeof (float), b, n * sizeof (float));
  }
  g_assert_false (
      moshivis_image_encoder_encode_fit (e, pic, W, 0, 3 * W, TRUE, a, &err));
  g_assert_error (err, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_ARGUMENT);
  g_clear_error (&err);
  g_free (pic);
  g_free (sq);
  g_free (a);
  g_free (b);
  g_free (ref);
  g_free (img);
  st_unref (v);
  moshivis_image_encoder_unref (e);
}

typedef struct {
  MoshiVisImageEncoder *e;
  const uint8_t *img;
  int S;
  float *out;
  gboolean ok;
} EncodeJob;

static gpointer
encode_thread (gpointer data)
{
  EncodeJob *j = data;
  j->ok = TRUE;
  for (int r = 0; r < 5 && j->ok; r++)
    j->ok = moshivis_image_encoder_encode (j->e, j->img, j->S, j->S, 3 * j->S,
        j->out, NULL);
  return NULL;
}

/* One loaded encoder serving two callers at once (two elements sharing the
 * model), with different thread counts. */
static void
test_concurrent (void)
{
  MoshiVisImageEncoder *e = load_tiny ();
  MoshiVisImageEncoder *e2 = moshivis_image_encoder_ref (e);
  moshivis_image_encoder_set_threads (e, 2);
  StFile *v = open_vectors ();
  int S;
  uint8_t *img = ref_image (v, "image_u8", &S);
  const size_t n = (size_t) 16 * 64;
  float *ref = ref_f32 (v, "xa_src", n);
  EncodeJob jobs[2] = { { e, img, S, g_new (float, n), FALSE },
    { e2, img, S, g_new (float, n), FALSE } };
  GThread *t[2];
  for (int i = 0; i < 2; i++)
    t[i] = g_thread_new ("encode", encode_thread, &jobs[i]);
  for (int i = 0; i < 2; i++) {
    g_thread_join (t[i]);
    g_assert_true (jobs[i].ok);
    assert_close ("xa_src (concurrent)", jobs[i].out, ref, n, 1e-4);
    g_free (jobs[i].out);
  }
  moshivis_image_encoder_unref (e);
  moshivis_image_encoder_unref (e2);
  g_free (ref);
  g_free (img);
  st_unref (v);
}

typedef enum {
  WRITE_F32, /* values as they are */
  WRITE_BF16, /* rounded to bf16, stored as BF16 */
  WRITE_F32_ROUNDED, /* rounded to bf16, stored as F32 */
} WriteMode;

/* The tiny checkpoint rewritten: tensor `drop` left out, tensor `swap` with
 * its two dims swapped (same bytes, wrong shape), values stored as `mode`
 * says.  Returns the new file's path (g_free; unlink). */
static gchar *
rewrite_checkpoint (const char *drop, const char *swap, WriteMode mode)
{
  gchar *src = case_path ("model.safetensors");
  StFile *f = st_open (src, NULL);
  g_assert_nonnull (f);
  GString *hdr = g_string_new ("{");
  GByteArray *data = g_byte_array_new ();
  gboolean first = TRUE;
  for (size_t i = 0; i < st_count (f); i++) {
    const StTensor *t = st_index (f, i);
    if (drop && !strcmp (t->name, drop))
      continue;
    float *v = g_new (float, MAX (t->numel, 1));
    g_assert_true (st_read_f32 (f, t, v, NULL));
    size_t off = data->len;
    for (int64_t k = 0; k < t->numel; k++) {
      uint32_t u;
      memcpy (&u, &v[k], 4);
      if (mode != WRITE_F32)
        u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000u; /* nearest even */
      if (mode == WRITE_BF16) {
        uint16_t b = (uint16_t) (u >> 16);
        g_byte_array_append (data, (const guint8 *) &b, 2);
      } else
        g_byte_array_append (data, (const guint8 *) &u, 4);
    }
    g_free (v);
    GString *shape = g_string_new ("");
    gboolean sw = swap && !strcmp (t->name, swap) && t->ndim >= 2;
    for (int d = 0; d < t->ndim; d++) {
      int dd = sw && d >= t->ndim - 2 ? 2 * t->ndim - 3 - d : d;
      g_string_append_printf (shape, "%s%" G_GINT64_FORMAT, d ? "," : "",
          t->shape[dd]);
    }
    g_string_append_printf (hdr,
        "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[%s],\"data_offsets\":[%zu,%u]}",
        first ? "" : ",", t->name, mode == WRITE_BF16 ? "BF16" : "F32",
        shape->str, off, data->len);
    g_string_free (shape, TRUE);
    first = FALSE;
  }
  g_string_append (hdr, "}");
  gchar *path = NULL;
  int fd = g_file_open_tmp ("siglip-XXXXXX.safetensors", &path, NULL);
  g_assert_cmpint (fd, >=, 0);
  guint64 len = hdr->len;
  g_assert_true (write (fd, &len, 8) == 8);
  g_assert_true (write (fd, hdr->str, hdr->len) == (ssize_t) hdr->len);
  g_assert_true (write (fd, data->data, data->len) == (ssize_t) data->len);
  close (fd);
  g_string_free (hdr, TRUE);
  g_byte_array_unref (data);
  st_unref (f);
  g_free (src);
  return path;
}

static void
expect_load_error (const char *path, const MoshiVisImageConfig *cfg, int code,
    const char *needle1, const char *needle2)
{
  GError *err = NULL;
  MoshiVisImageEncoder *e = moshivis_image_encoder_load (path, cfg, &err);
  g_assert_null (e);
  g_assert_error (err, MOSHI_MODEL_ERROR, code);
  g_test_message ("expected error: %s", err->message);
  g_assert_nonnull (strstr (err->message, needle1));
  if (needle2)
    g_assert_nonnull (strstr (err->message, needle2));
  g_error_free (err);
}

static void
test_checkpoint_errors (void)
{
  MoshiVisImageConfig cfg;
  load_config (&cfg);
  static const char *const missing[] = {
    "image_prefix.enc.model.encoder.layers.1.self_attn.v_proj.bias",
    "image_prefix.enc.model.post_layernorm.weight",
    "image_prefix.enc.model.embeddings.position_embedding.weight",
    "image_prefix.proj_xa.bias",
    "image_prefix.norm_xa.alpha",
  };
  for (size_t i = 0; i < G_N_ELEMENTS (missing); i++) {
    gchar *p = rewrite_checkpoint (missing[i], NULL, WRITE_F32);
    expect_load_error (p, &cfg, MOSHI_MODEL_ERROR_MISSING, missing[i], NULL);
    g_unlink (p);
    g_free (p);
  }
  /* Wrong shapes name the tensor, the expected and the found shape. */
  gchar *p = rewrite_checkpoint (NULL,
      "image_prefix.enc.model.encoder.layers.0.mlp.fc1.weight", WRITE_F32);
  expect_load_error (p, &cfg, MOSHI_MODEL_ERROR_SHAPE,
      "image_prefix.enc.model.encoder.layers.0.mlp.fc1.weight", "[48, 32]");
  g_unlink (p);
  g_free (p);
  p = rewrite_checkpoint (NULL, "image_prefix.proj_xa.weight", WRITE_F32);
  expect_load_error (p, &cfg, MOSHI_MODEL_ERROR_SHAPE,
      "image_prefix.proj_xa.weight", "[64, 32]");
  g_unlink (p);
  g_free (p);

  /* No configuration: the So400m defaults do not fit the tiny tensors. */
  gchar *tiny = case_path ("model.safetensors");
  expect_load_error (tiny, NULL, MOSHI_MODEL_ERROR_SHAPE,
      "image_prefix.enc.model.embeddings.patch_embedding.weight",
      "[1152, 3, 14, 14]");
  /* A bias the configuration does not expect. */
  MoshiVisImageConfig nb = cfg;
  nb.adapter.bias = FALSE;
  expect_load_error (tiny, &nb, MOSHI_MODEL_ERROR_CONFIG,
      "image_prefix.proj_xa.bias", NULL);

  /* Truncated file: cut inside the data. */
  gchar *contents;
  gsize len;
  g_assert_true (g_file_get_contents (tiny, &contents, &len, NULL));
  gchar *cut = NULL;
  int fd = g_file_open_tmp ("siglip-cut-XXXXXX.safetensors", &cut, NULL);
  g_assert_true (write (fd, contents, len - 1000) == (ssize_t) (len - 1000));
  close (fd);
  GError *err = NULL;
  g_assert_null (moshivis_image_encoder_load (cut, &cfg, &err));
  g_assert_error (err, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_FORMAT);
  g_test_message ("expected error: %s", err->message);
  g_clear_error (&err);
  g_unlink (cut);
  g_free (cut);
  g_free (contents);
  g_assert_null (moshivis_image_encoder_load ("/nonexistent/model.safetensors",
      &cfg, &err));
  g_assert_error (err, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_IO);
  g_clear_error (&err);
  g_free (tiny);
}

/* The whole checkpoint in BF16: loads, and the output stays close (the
 * weights themselves changed by up to 0.2 %). */
static void
test_bf16 (void)
{
  MoshiVisImageConfig cfg;
  load_config (&cfg);
  gchar *p = rewrite_checkpoint (NULL, NULL, WRITE_BF16);
  GError *err = NULL;
  MoshiVisImageEncoder *e = moshivis_image_encoder_load (p, &cfg, &err);
  g_assert_no_error (err);
  StFile *v = open_vectors ();
  int S;
  uint8_t *img = ref_image (v, "image_u8", &S);
  const size_t n = (size_t) 16 * 64;
  float *ref = ref_f32 (v, "xa_src", n), *ours = g_new (float, n);
  g_assert_true (
      moshivis_image_encoder_encode (e, img, S, S, 3 * S, ours, &err));
  double dot = 0, na = 0, nb = 0;
  for (size_t i = 0; i < n; i++) {
    dot += (double) ours[i] * ref[i];
    na += (double) ours[i] * ours[i];
    nb += (double) ref[i] * ref[i];
  }
  double cosine = dot / sqrt (na * nb);
  g_test_message ("bf16 xa_src cosine %.6f", cosine);
  g_assert_cmpfloat (cosine, >, 0.999);
  moshivis_image_encoder_unref (e);
  g_free (ours);
  g_free (ref);
  g_free (img);
  st_unref (v);
  g_unlink (p);
  g_free (p);
}

static SiglipModel *
load_tower (const char *path, const SiglipConfig *c)
{
  GError *err = NULL;
  StFile *f = st_open (path, &err);
  g_assert_no_error (err);
  SiglipModel *m = siglip_model_load (f, "image_prefix.enc.model.", c, &err);
  g_assert_no_error (err);
  st_unref (f);
  return m;
}

static double
cosine (const float *a, const float *b, size_t n)
{
  double dot = 0, na = 0, nb = 0;
  for (size_t i = 0; i < n; i++) {
    dot += (double) a[i] * b[i];
    na += (double) a[i] * a[i];
    nb += (double) b[i] * b[i];
  }
  return dot / sqrt (na * nb);
}

/* Weights kept as bf16 (a BF16 checkpoint) compute exactly what float32
 * storage of the same rounded values computes; siglip_model_to_bf16 halves
 * the matrices of a float32 model and stays close to the reference. */
static void
test_bf16_storage (void)
{
  MoshiVisImageConfig cfg;
  load_config (&cfg);
  gchar *pb = rewrite_checkpoint (NULL, NULL, WRITE_BF16);
  gchar *pr = rewrite_checkpoint (NULL, NULL, WRITE_F32_ROUNDED);
  gchar *pf = case_path ("model.safetensors");
  SiglipModel *mb = load_tower (pb, &cfg.vision);
  SiglipModel *mr = load_tower (pr, &cfg.vision);
  SiglipModel *mf = load_tower (pf, &cfg.vision);
  const size_t f32_bytes = siglip_model_weight_bytes (mr);
  g_assert_cmpuint (siglip_model_weight_bytes (mf), ==, f32_bytes);
  g_assert_cmpuint (siglip_model_weight_bytes (mb), <, f32_bytes);
  GError *err = NULL;
  g_assert_true (siglip_model_to_bf16 (mf, &err));
  g_assert_no_error (err);
  g_assert_cmpuint (siglip_model_weight_bytes (mf), ==,
      siglip_model_weight_bytes (mb));

  StFile *v = open_vectors ();
  int S;
  uint8_t *img = ref_image (v, "image_u8", &S);
  const size_t n = (size_t) 16 * 32;
  float *ref = ref_f32 (v, "vision_out", n);
  float *ob = g_new (float, n), * or = g_new (float, n), *of = g_new (float, n);
  for (int threads = 1; threads <= 2; threads++) {
    siglip_set_threads (threads);
    g_assert_true (siglip_forward (mb, img, S, S, 3 * S, ob, NULL, &err));
    g_assert_true (siglip_forward (mr, img, S, S, 3 * S, or, NULL, &err));
    g_assert_true (siglip_forward (mf, img, S, S, 3 * S, of, NULL, &err));
    g_assert_no_error (err);
    g_assert_cmpmem (ob, n * sizeof (float), or, n * sizeof (float));
    double c = cosine (of, ref, n);
    g_test_message ("to_bf16 vision_out cosine %.6f", c);
    g_assert_cmpfloat (c, >, 0.9999);
  }
  siglip_set_threads (1);
  g_free (ob);
  g_free (or);
  g_free (of);
  g_free (ref);
  g_free (img);
  st_unref (v);
  siglip_model_free (mb);
  siglip_model_free (mr);
  siglip_model_free (mf);
  g_unlink (pb);
  g_unlink (pr);
  g_free (pb);
  g_free (pr);
  g_free (pf);
}

/* Layer matrices packed for our GEMM, from a float32 and from a bf16
 * checkpoint, on 1 and 2 threads: fewer bytes than float32, outputs within
 * the stated cosine of the reference.
 *   q8: a quarter of the bytes, int8 products (VNNI where present); 0.999.
 *   bf16 products: half the bytes; with AMX the products (and the
 *   attention's) round the activations to bf16 too; 0.9999. */
typedef struct {
  const char *name;
  gboolean (*convert) (SiglipModel *, GError **);
  double min_cosine;
} PackedCase;

static const PackedCase packed_q8 = { "q8", siglip_model_to_q8, 0.999 };
static const PackedCase packed_bf16 = { "bf16 products",
  siglip_model_to_bf16_products, 0.9999 };

static void
test_packed (gconstpointer data)
{
  const PackedCase *pc = data;
  MoshiVisImageConfig cfg;
  load_config (&cfg);
  gchar *pf = case_path ("model.safetensors");
  gchar *pb = rewrite_checkpoint (NULL, NULL, WRITE_BF16);
  SiglipModel *mf = load_tower (pf, &cfg.vision);
  SiglipModel *mb = load_tower (pb, &cfg.vision);
  const size_t f32_bytes = siglip_model_weight_bytes (mf);
  GError *err = NULL;
  g_assert_true (pc->convert (mf, &err));
  g_assert_true (pc->convert (mb, &err));
  g_assert_no_error (err);
  g_assert_cmpuint (siglip_model_weight_bytes (mf), <, f32_bytes);

  StFile *v = open_vectors ();
  int S;
  uint8_t *img = ref_image (v, "image_u8", &S);
  const size_t n = (size_t) 16 * 32;
  float *ref = ref_f32 (v, "vision_out", n);
  float *of = g_new (float, n), *ob = g_new (float, n);
  for (int threads = 1; threads <= 2; threads++) {
    siglip_set_threads (threads);
    g_assert_true (siglip_forward (mf, img, S, S, 3 * S, of, NULL, &err));
    g_assert_true (siglip_forward (mb, img, S, S, 3 * S, ob, NULL, &err));
    g_assert_no_error (err);
    double c = cosine (of, ref, n), cb = cosine (ob, ref, n), e = 0;
    for (size_t i = 0; i < n; i++)
      e = MAX (e, fabs ((double) of[i] - ref[i]));
    g_test_message ("%s (%s) vision_out cosine %.6f (from bf16 %.6f), max "
                    "abs err %.3g",
        pc->name, moshi_cpu_has_amx () ? "AMX" : "no AMX", c, cb, e);
    g_assert_cmpfloat (c, >, pc->min_cosine);
    g_assert_cmpfloat (cb, >, pc->min_cosine);
  }
  siglip_set_threads (1);
  g_free (of);
  g_free (ob);
  g_free (ref);
  g_free (img);
  st_unref (v);
  siglip_model_free (mf);
  siglip_model_free (mb);
  g_unlink (pb);
  g_free (pb);
  g_free (pf);
}

static void
expect_config_error (const char *json, const char *needle)
{
  gchar *path = NULL;
  int fd = g_file_open_tmp ("siglip-config-XXXXXX.json", &path, NULL);
  g_assert_true (write (fd, json, strlen (json)) == (ssize_t) strlen (json));
  close (fd);
  MoshiVisImageConfig cfg;
  moshivis_image_config_default (&cfg);
  GError *err = NULL;
  g_assert_false (moshivis_image_config_load_json (&cfg, path, &err));
  g_assert_nonnull (err);
  g_test_message ("expected error: %s", err->message);
  g_assert_nonnull (strstr (err->message, needle));
  g_error_free (err);
  g_unlink (path);
  g_free (path);
}

static void
test_config_errors (void)
{
  expect_config_error ("{\"vision\": {\"hidden_size\": 32, \"colour\": 1}}",
      "unknown vision configuration key \"colour\"");
  expect_config_error ("{\"vision\": {\"hidden_act\": \"relu\"}}",
      "\"hidden_act\" = relu is not supported");
  expect_config_error ("{\"vision\": {\"vision_use_head\": true}}",
      "vision_use_head");
  expect_config_error ("{\"vision\": {\"num_attention_heads\": 5}}",
      "multiple of num_attention_heads");
  expect_config_error ("{\"vision\": {\"num_channels\": 4}}", "num_channels");
  expect_config_error ("{\"vision\": {\"image_std\": [0.5, 0, 0.5]}}",
      "\"image_std\"[1]");
  expect_config_error ("{\"vision\": {\"patch_size\": 14, \"image_size\": 7}}",
      "image_size (7) must be at least patch_size (14)");
  expect_config_error ("{\"vision\": []}", "must be a JSON object");
  expect_config_error ("{\"adapter\": {\"proj_xa_in\": 1152, \"gain\": 2}}",
      "unknown adapter configuration key \"gain\"");
  expect_config_error ("{\"adapter\": {\"norm_xa\": \"layer_norm\"}}",
      "\"norm_xa\" = layer_norm is not supported");
  expect_config_error ("{\"adapter\": {\"proj_xa_in\": 64}}",
      "proj_xa_in (64) differs from the vision hidden_size (1152)");
  expect_config_error ("{\"vision\": {\"hidden_size\": 32", "");

  /* No "vision"/"adapter" objects: the MoshiVis defaults. */
  MoshiVisImageConfig cfg;
  moshivis_image_config_default (&cfg);
  g_assert_cmpint (cfg.vision.image_size, ==, 448);
  g_assert_cmpint (cfg.vision.hidden_size, ==, 1152);
  g_assert_cmpint (cfg.vision.num_layers, ==, 27);
  g_assert_cmpint (cfg.vision.num_heads, ==, 16);
  g_assert_cmpint (cfg.vision.intermediate_size, ==, 4304);
  g_assert_cmpint (cfg.adapter.out_dim, ==, 4096);
  /* The spec's count for So400m/14-448 (section 2.4). */
  g_assert_cmpint (siglip_param_count (&cfg.vision), ==, 413327088);
  g_assert_cmpint (siglip_tokens_for_size (&cfg.vision, 448, 448), ==, 1024);
  g_assert_cmpint (siglip_tokens_for_size (&cfg.vision, 512, 512), ==, 1296);
  g_assert_cmpint (siglip_tokens_for_size (&cfg.vision, 13, 448), ==, 0);
}

static void
expect_encode_error (MoshiVisImageEncoder *e, const uint8_t *rgb, int w, int h,
    int stride, float *out, const char *needle)
{
  GError *err = NULL;
  g_assert_false (
      moshivis_image_encoder_encode (e, rgb, w, h, stride, out, &err));
  g_assert_error (err, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_ARGUMENT);
  g_test_message ("expected error: %s", err->message);
  g_assert_nonnull (strstr (err->message, needle));
  g_error_free (err);
}

static void
test_bad_images (void)
{
  MoshiVisImageEncoder *e = load_tiny ();
  uint8_t *img = g_malloc0 (3 * 100 * 100);
  float *out = g_new0 (float, 64 * 64);
  expect_encode_error (e, NULL, 56, 56, 168, out, "no image");
  expect_encode_error (e, img, 56, 56, 168, NULL, "no output buffer");
  expect_encode_error (e, img, 0, 56, 168, out, "0x56 image is not supported");
  expect_encode_error (e, img, 56, -1, 168, out, "sides must be in [1, 1024]");
  expect_encode_error (e, img, 56, 56, 100, out,
      "stride 100 bytes is less than 3 * width = 168");
  expect_encode_error (e, img, 13, 13, 39, out, "smaller than one 14x14 patch");
  expect_encode_error (e, img, 100, 13, 300, out, "smaller than one");
  expect_encode_error (e, img, 1025, 56, 3075, out,
      "sides must be in [1, 1024]");
  expect_encode_error (NULL, img, 56, 56, 168, out, "no encoder");
  GError *err = NULL;
  /* A non-square picture runs on its own grid (here 2 x 7 patches). */
  g_assert_cmpint (moshivis_image_encoder_tokens (e, 100, 28), ==, 14);
  g_assert_true (
      moshivis_image_encoder_encode (e, img, 100, 28, 300, out, &err));
  g_assert_no_error (err);
  for (int i = 0; i < 14 * 64; i++)
    g_assert_true (isfinite (out[i]));
  g_free (out);
  g_free (img);
  moshivis_image_encoder_unref (e);
}

/* Every allocation of the loader and of a forward pass may fail: a clean
 * GError each time, never a crash or a leak (ASan build). */
static void
test_alloc_failures (void)
{
  MoshiVisImageConfig cfg;
  load_config (&cfg);
  gchar *p = case_path ("model.safetensors");
  int failures = 0;
  MoshiVisImageEncoder *e = NULL;
  for (long n = 1; n < 1000 && !e; n++) {
    GError *err = NULL;
    moshi_alloc_fail_after (n);
    e = moshivis_image_encoder_load (p, &cfg, &err);
    moshi_alloc_fail_after (0);
    if (e) {
      g_assert_no_error (err);
      break;
    }
    g_assert_nonnull (err);
    failures++;
    g_clear_error (&err);
  }
  g_assert_nonnull (e);
  g_assert_cmpint (failures, >, 30);
  uint8_t img[84 * 84 * 3];
  for (size_t i = 0; i < sizeof img; i++)
    img[i] = (uint8_t) (i * 7);
  float out[36 * 64];
  int encode_failures = 0;
  for (long n = 1; n < 100; n++) {
    GError *err = NULL;
    moshi_alloc_fail_after (n);
    gboolean ok =
        moshivis_image_encoder_encode (e, img, 84, 84, 84 * 3, out, &err);
    moshi_alloc_fail_after (0);
    if (ok) {
      g_assert_no_error (err);
      break;
    }
    g_assert_error (err, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_IO);
    encode_failures++;
    g_clear_error (&err);
  }
  g_assert_cmpint (encode_failures, >=, 2);
  moshivis_image_encoder_unref (e);
  g_free (p);
}

/* Random weights at small So400m-like shapes: the benchmark's constructor
 * gives finite, deterministic output, and 1 or 2 threads agree. */
static void
test_random_model (void)
{
  MoshiVisImageConfig cfg;
  moshivis_image_config_default (&cfg);
  cfg.vision.hidden_size = 64;
  cfg.vision.num_heads = 4;
  cfg.vision.num_layers = 2;
  cfg.vision.intermediate_size = 96;
  cfg.vision.image_size = 112;
  cfg.adapter.in_dim = 64;
  cfg.adapter.out_dim = 32;
  GError *err = NULL;
  MoshiVisImageEncoder *a = moshivis_image_encoder_new_random (&cfg, 5, &err);
  MoshiVisImageEncoder *b = moshivis_image_encoder_new_random (&cfg, 5, &err);
  g_assert_no_error (err);
  const int n = moshivis_image_encoder_tokens (a, 112, 112);
  g_assert_cmpint (n, ==, 64);
  uint8_t *img = g_malloc (112 * 112 * 3);
  for (int i = 0; i < 112 * 112 * 3; i++)
    img[i] = (uint8_t) ((i * 2654435761u) >> 24);
  float *o1 = g_new (float, n * 32), *o2 = g_new (float, n * 32);
  moshivis_image_encoder_set_threads (a, 1);
  moshivis_image_encoder_set_threads (b, 2);
  g_assert_true (
      moshivis_image_encoder_encode (a, img, 112, 112, 336, o1, &err));
  g_assert_true (
      moshivis_image_encoder_encode (b, img, 112, 112, 336, o2, &err));
  g_assert_no_error (err);
  for (int i = 0; i < n * 32; i++) {
    g_assert_true (isfinite (o1[i]));
    g_assert_cmpfloat (fabsf (o1[i] - o2[i]), <=, 1e-4f);
  }
  cfg.adapter.in_dim = 65;
  g_assert_null (moshivis_image_encoder_new_random (&cfg, 5, &err));
  g_assert_error (err, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_CONFIG);
  g_clear_error (&err);
  g_free (o1);
  g_free (o2);
  g_free (img);
  moshivis_image_encoder_unref (a);
  moshivis_image_encoder_unref (b);
}

/* The vectorised GELU and softmax (vec-math.c) against double precision,
 * over the range the tower sees and beyond (run at each CPU level). */
static void
test_vec_math (void)
{
  const int n = 4001;
  float *x = g_new (float, n), *y = g_new (float, n);
  for (int i = 0; i < n; i++)
    x[i] = -40.0f + 80.0f * i / (n - 1);
  moshi_gelu_tanh (y, x, n);
  double max_err = 0;
  for (int i = 0; i < n; i++) {
    double v = x[i];
    double ref =
        0.5 * v * (1.0 + tanh (sqrt (2.0 / M_PI) * (v + 0.044715 * v * v * v)));
    max_err = MAX (max_err, fabs (y[i] - ref) / MAX (1.0, fabs (ref)));
  }
  g_test_message ("gelu_tanh max rel error %.3e", max_err);
  g_assert_cmpfloat (max_err, <, 1e-6);

  /* Softmax rows of odd lengths (vector tails), wide ranges, one -inf. */
  const int rows = 3, len = 37;
  float *s = g_new (float, rows *len);
  double *e = g_new (double, len);
  for (int r = 0; r < rows; r++)
    for (int i = 0; i < len; i++)
      s[r * len + i] = (float) ((i * 7919 % 101) - 50) * (r + 1) * 0.5f;
  s[5] = -INFINITY;
  float *orig = g_memdup2 (s, rows * len * sizeof (float));
  moshi_softmax_rows (s, rows, len, len);
  for (int r = 0; r < rows; r++) {
    double m = -INFINITY, sum = 0, err = 0, total = 0;
    for (int i = 0; i < len; i++)
      m = MAX (m, orig[r * len + i]);
    for (int i = 0; i < len; i++)
      sum += (e[i] = exp ((double) orig[r * len + i] - m));
    for (int i = 0; i < len; i++) {
      err = MAX (err, fabs (s[r * len + i] - e[i] / sum));
      total += s[r * len + i];
    }
    g_assert_cmpfloat (err, <, 1e-6);
    g_assert_cmpfloat (fabs (total - 1.0), <, 1e-5);
  }
  g_assert_cmpfloat (s[5], ==, 0.0f);
  /* NaN in, NaN out (a broken activation must not look healthy). */
  x[0] = NAN;
  moshi_gelu_tanh (y, x, 9);
  g_assert_true (isnan (y[0]));
  g_free (orig);
  g_free (e);
  g_free (s);
  g_free (x);
  g_free (y);
}

/* ------------------------------------------------------------ resize --- */

static void
test_center_square (void)
{
  int x, y, m;
  moshi_image_center_square (640, 480, &x, &y, &m);
  g_assert_cmpint (m, ==, 480);
  g_assert_cmpint (x, ==, 80);
  g_assert_cmpint (y, ==, 0);
  moshi_image_center_square (101, 200, &x, &y, &m);
  g_assert_cmpint (m, ==, 101);
  g_assert_cmpint (x, ==, 0);
  g_assert_cmpint (y, ==, 49); /* (200 - 101) / 2, integer division */
}

static void
test_resize (void)
{
  const int W = 37, H = 23;
  uint8_t *src = g_malloc (W * H * 3), *dst = g_malloc (64 * 64 * 3);
  for (int i = 0; i < W * H * 3; i++)
    src[i] = (uint8_t) ((i * 2654435761u) >> 24);
  GError *err = NULL;
  /* Same size: PIL's filter has weight 1 at 0 and 0 at +-1, +-2: a copy. */
  g_assert_true (
      moshi_image_resize_rgb (src, W, H, W * 3, dst, W, H, W * 3, &err));
  g_assert_cmpmem (src, W * H * 3, dst, W * H * 3);
  /* A region at its own size (pointer + the whole picture's stride):
   * exactly the region's pixels, nothing read outside it. */
  uint8_t *region = g_malloc (10 * 10 * 3);
  g_assert_true (moshi_image_resize_rgb (src + 3 * (W * 3) + 5 * 3, 10, 10,
      W * 3, region, 10, 10, 30, &err));
  for (int r = 0; r < 10; r++)
    g_assert_cmpmem (region + r * 30, 30, src + (3 + r) * W * 3 + 5 * 3, 30);
  g_free (region);
  /* A flat colour stays flat, up and down (weights are normalised). */
  memset (src, 0, W * H * 3);
  for (int i = 0; i < W * H; i++) {
    src[3 * i] = 200;
    src[3 * i + 1] = 17;
    src[3 * i + 2] = 255;
  }
  g_assert_true (
      moshi_image_fit_square (src, W, H, W * 3, FALSE, dst, 64, &err));
  for (int i = 0; i < 64 * 64; i++) {
    g_assert_cmpint (dst[3 * i], ==, 200);
    g_assert_cmpint (dst[3 * i + 1], ==, 17);
    g_assert_cmpint (dst[3 * i + 2], ==, 255);
  }
  g_assert_true (moshi_image_fit_square (src, W, H, W * 3, TRUE, dst, 9, &err));
  g_assert_cmpint (dst[0], ==, 200);
  g_assert_no_error (err);
  /* Downscaling averages: a 1-pixel checkerboard halved is mid grey
   * (antialiased; without the widened filter it would alias). */
  uint8_t *cb = g_malloc (64 * 64 * 3), *half = g_malloc (32 * 32 * 3);
  for (int y = 0; y < 64; y++)
    for (int x = 0; x < 64; x++)
      memset (cb + (y * 64 + x) * 3, ((x + y) & 1) ? 255 : 0, 3);
  g_assert_true (
      moshi_image_resize_rgb (cb, 64, 64, 192, half, 32, 32, 96, &err));
  for (int y = 4; y < 28; y++)
    for (int x = 4; x < 28; x++)
      g_assert_cmpint (abs (half[(y * 32 + x) * 3] - 128), <=, 1);
  /* Shrunk 8x, every pixel, edges included, stays grey. */
  uint8_t eighth[8 * 8 * 3];
  g_assert_true (
      moshi_image_resize_rgb (cb, 64, 64, 192, eighth, 8, 8, 24, &err));
  for (int i = 0; i < 8 * 8 * 3; i++) {
    g_assert_cmpint (eighth[i], >=, 120);
    g_assert_cmpint (eighth[i], <=, 135);
  }
  /* Bad arguments. */
  g_assert_false (
      moshi_image_resize_rgb (NULL, W, H, W * 3, dst, 8, 8, 24, &err));
  g_assert_error (err, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_ARGUMENT);
  g_clear_error (&err);
  g_assert_false (
      moshi_image_resize_rgb (src, W, H, W * 2, dst, 8, 8, 24, &err));
  g_assert_error (err, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_ARGUMENT);
  g_clear_error (&err);
  g_assert_false (
      moshi_image_fit_square (src, 0, H, W * 3, TRUE, dst, 8, &err));
  g_assert_error (err, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_ARGUMENT);
  g_clear_error (&err);
  /* A row stride too small for the picture, though not for its square. */
  g_assert_false (
      moshi_image_fit_square (src, W, H, H * 3, TRUE, dst, 8, &err));
  g_assert_error (err, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_ARGUMENT);
  g_test_message ("expected error: %s", err->message);
  g_clear_error (&err);
  g_free (cb);
  g_free (half);
  g_free (src);
  g_free (dst);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/siglip/pixel-values", test_pixel_values);
  g_test_add_func ("/siglip/tower", test_tower);
  g_test_add_func ("/siglip/tower-interpolated", test_tower_interpolated);
  g_test_add_func ("/siglip/encode", test_encode);
  g_test_add_func ("/siglip/encode-fit", test_encode_fit);
  g_test_add_func ("/siglip/concurrent", test_concurrent);
  g_test_add_func ("/siglip/bf16", test_bf16);
  g_test_add_func ("/siglip/bf16-storage", test_bf16_storage);
  g_test_add_data_func ("/siglip/q8", &packed_q8, test_packed);
  g_test_add_data_func ("/siglip/bf16-products", &packed_bf16, test_packed);
  g_test_add_func ("/siglip/checkpoint-errors", test_checkpoint_errors);
  g_test_add_func ("/siglip/config-errors", test_config_errors);
  g_test_add_func ("/siglip/bad-images", test_bad_images);
  g_test_add_func ("/siglip/alloc-failures", test_alloc_failures);
  g_test_add_func ("/siglip/random-model", test_random_model);
  g_test_add_func ("/siglip/vec-math", test_vec_math);
  g_test_add_func ("/siglip/center-square", test_center_square);
  g_test_add_func ("/siglip/resize", test_resize);
  return g_test_run ();
}
