/* MoshiVis on the LM side, beyond the conformance vectors: images that
 * arrive, change and leave in the middle of a conversation, xa_start,
 * sharing one prepared image, and the errors of the image API. */
#include <glib.h>
#include <math.h>
#include <string.h>

#include "alloc.h"
#include "lm.h"
#include "model-error.h"
#include "safetensors.h"

static gchar *
case_path (const char *name, const char *file)
{
  const char *data = g_getenv ("MOSHI_TEST_DATA");
  return g_build_filename (data ? data : MOSHI_TEST_DATA_DIR, "conformance",
      name, file, NULL);
}

/* moshivis-tiny's LM (its README): dim 64, 4 heads, 2 layers, 4 audio
 * codebooks of 16, text 32, no depformer. */
static LmModel *
load_vis_tiny (void)
{
  LmConfig cfg;
  lm_config_default (&cfg);
  cfg.dim = 64;
  cfg.num_heads = 4;
  cfg.num_layers = 2;
  cfg.hidden_scale = 4.125;
  cfg.context = 3000;
  cfg.text_card = 32;
  cfg.n_q = 4;
  cfg.card = 16;
  cfg.dep_q = 0;
  memset (cfg.delays, 0, sizeof cfg.delays);
  gchar *p = case_path ("moshivis-tiny", "model.safetensors");
  GError *err = NULL;
  LmModel *m = lm_model_load (p, &cfg, MOSHI_WEIGHTS_F32, &err);
  g_assert_no_error (err);
  g_assert_true (lm_model_has_cross_attention (m));
  g_free (p);
  return m;
}

/* The reference adapter output of moshivis-tiny, [16][64]. */
static float *
image_tokens (int *tokens)
{
  gchar *p = case_path ("moshivis-tiny", "vectors.safetensors");
  StFile *f = st_open (p, NULL);
  g_assert_nonnull (f);
  const StTensor *t = st_find (f, "xa_src");
  g_assert_nonnull (t);
  float *img = st_dup_f32 (f, t, NULL);
  g_assert_nonnull (img);
  *tokens = (int) t->shape[1];
  st_unref (f);
  g_free (p);
  return img;
}

static LmGen *
greedy_gen (LmModel *m)
{
  LmGenParams p;
  lm_gen_params_default (&p, lm_model_config (m));
  p.use_sampling = FALSE;
  LmGen *g = lm_gen_new (m, &p, NULL);
  g_assert_nonnull (g);
  return g;
}

/* One step with fixed user codes; returns the gate summary and the text
 * logits in `logits` [32]. */
static float
step (LmGen *g, int t, float *logits)
{
  int user[4] = { t % 16, (3 * t + 1) % 16, (5 * t + 2) % 16, 7 };
  int out[1];
  float summary = -1.0f;
  LmGenTrace tr = { 0 };
  tr.text_logits = logits;
  tr.gate_summary = &summary;
  GError *err = NULL;
  g_assert_cmpint (lm_gen_step (g, user, out, &tr, &err), ==, 1);
  g_assert_no_error (err);
  g_assert_cmpfloat (summary, ==, lm_gen_gate_summary (g));
  return summary;
}

static gboolean
same (const float *a, const float *b, int n)
{
  return memcmp (a, b, sizeof (float) * n) == 0;
}

static void
test_image_mid_conversation (void)
{
  LmModel *m = load_vis_tiny ();
  int n;
  float *img = image_tokens (&n);
  LmImage *image = lm_image_new (m, img, n, 64, 1, NULL);
  g_assert_nonnull (image);
  g_assert_cmpint (lm_image_tokens (image), ==, n);
  LmGen *base = greedy_gen (m), *vis = greedy_gen (m);
  float lb[32], lv[32];
  for (int t = 0; t < 10; t++) {
    if (t == 3)
      g_assert_true (lm_gen_set_image (vis, image, NULL));
    if (t == 7)
      g_assert_true (lm_gen_set_image (vis, NULL, NULL));
    float gb = step (base, t, lb), gv = step (vis, t, lv);
    g_assert_cmpfloat (gb, ==, 0.0f);
    if (t < 3) {
      /* Before the image: exactly the base model. */
      g_assert_true (same (lb, lv, 32));
      g_assert_cmpfloat (gv, ==, 0.0f);
    } else if (t < 7) {
      /* From the step after it arrives on, the model looks. */
      g_assert_false (same (lb, lv, 32));
      g_assert_cmpfloat (gv, >, 0.0f);
      g_assert_cmpfloat (gv, <, 1.0f);
    } else {
      /* Gone: no cross-attention (the history still differs). */
      g_assert_cmpfloat (gv, ==, 0.0f);
    }
  }
  /* The image survives a reset: a new conversation about the same view. */
  g_assert_true (lm_gen_set_image (vis, image, NULL));
  lm_gen_reset (vis);
  g_assert_cmpfloat (step (vis, 0, lv), >, 0.0f);
  lm_gen_free (base);
  lm_gen_free (vis);
  lm_image_unref (image);
  moshi_free (img);
  lm_model_unref (m);
}

static void
test_xa_start_and_sharing (void)
{
  LmModel *m = load_vis_tiny ();
  int n;
  float *img = image_tokens (&n);
  LmImage *image = lm_image_new (m, img, n, 64, 2, NULL);
  LmGen *a = greedy_gen (m), *b = greedy_gen (m), *c = greedy_gen (m);
  lm_gen_set_xa_start (a, 2);
  lm_gen_set_xa_start (b, 2);
  g_assert_true (lm_gen_set_image (a, image, NULL));
  g_assert_true (lm_gen_set_image (b, image, NULL));
  g_assert_true (lm_gen_set_image (c, image, NULL));
  /* The generators hold their own references. */
  lm_image_unref (image);
  float la[32], lb[32], lc[32];
  for (int t = 0; t < 5; t++) {
    float ga = step (a, t, la), gb = step (b, t, lb), gc = step (c, t, lc);
    g_assert_true (same (la, lb, 32));
    g_assert_cmpfloat (ga, ==, gb);
    if (t < 2)
      g_assert_cmpfloat (ga, ==, 0.0f);
    else
      g_assert_cmpfloat (ga, >, 0.0f);
    g_assert_cmpfloat (gc, >, 0.0f);
  }
  lm_gen_free (a);
  lm_gen_free (b);
  lm_gen_free (c);
  moshi_free (img);
  lm_model_unref (m);
}

static void
test_errors (void)
{
  LmModel *vis = load_vis_tiny ();
  int n;
  float *img = image_tokens (&n);
  GError *err = NULL;
  /* Wrong width, no tokens. */
  g_assert_null (lm_image_new (vis, img, n, 32, 1, &err));
  g_assert_error (err, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_SHAPE);
  g_assert_nonnull (strstr (err->message, "64"));
  g_clear_error (&err);
  g_assert_null (lm_image_new (vis, img, 0, 64, 1, &err));
  g_assert_error (err, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_SHAPE);
  g_clear_error (&err);

  /* A model without cross-attention cannot look. */
  gchar *c = case_path ("lm-tiny", "config.json");
  gchar *p = case_path ("lm-tiny", "model.safetensors");
  LmConfig cfg;
  g_assert_true (lm_config_load_json (&cfg, c, NULL));
  LmModel *base = lm_model_load (p, &cfg, MOSHI_WEIGHTS_F32, NULL);
  g_assert_nonnull (base);
  g_assert_false (lm_model_has_cross_attention (base));
  g_assert_null (lm_image_new (base, img, n, cfg.dim, 1, &err));
  g_assert_error (err, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_ARGUMENT);
  g_assert_nonnull (strstr (err->message, "cross-attention"));
  g_clear_error (&err);

  /* An image prepared for another model is refused, leaving no image. */
  LmImage *image = lm_image_new (vis, img, n, 64, 1, NULL);
  LmModel *vis2 = load_vis_tiny ();
  LmGen *g = greedy_gen (vis2);
  g_assert_false (lm_gen_set_image (g, image, &err));
  g_assert_error (err, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_ARGUMENT);
  g_clear_error (&err);
  float l[32];
  g_assert_cmpfloat (step (g, 0, l), ==, 0.0f);

  /* Running out of memory while preparing an image is an error. */
  for (int k = 0; k < 3; k++) {
    moshi_alloc_fail_after (k);
    LmImage *x = lm_image_new (vis, img, n, 64, 1, &err);
    moshi_alloc_fail_after (-1);
    if (x) {
      lm_image_unref (x);
      break;
    }
    g_assert_error (err, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_IO);
    g_clear_error (&err);
  }
  lm_gen_free (g);
  lm_image_unref (image);
  lm_model_unref (vis2);
  lm_model_unref (base);
  lm_model_unref (vis);
  g_free (c);
  g_free (p);
  moshi_free (img);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/moshivis-lm/image-mid-conversation",
      test_image_mid_conversation);
  g_test_add_func ("/moshivis-lm/xa-start-and-sharing",
      test_xa_start_and_sharing);
  g_test_add_func ("/moshivis-lm/errors", test_errors);
  return g_test_run ();
}
