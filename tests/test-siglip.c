/* MoshiVis image side against the moshivis-tiny reference vectors (made
 * with HF's SiglipVisionTransformer and Kyutai's kyuteye_pt adapter), and
 * its behaviour on bad configurations, checkpoints and images. */
#include <glib.h>
#include <glib/gstdio.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "model-error.h"
#include "moshivis-image.h"
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

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/siglip/pixel-values", test_pixel_values);
  g_test_add_func ("/siglip/tower", test_tower);
  g_test_add_func ("/siglip/tower-interpolated", test_tower_interpolated);
  g_test_add_func ("/siglip/encode", test_encode);
  return g_test_run ();
}
