/* LM engine behaviour beyond the conformance vectors: configuration and
 * checkpoint errors, generator reset and seeding, bad input, reduced
 * precision. */
#include <glib.h>
#include <glib/gstdio.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "lm.h"
#include "model-error.h"
#include "safetensors.h"

static gchar *
case_path (const char *file)
{
  const char *data = g_getenv ("MOSHI_TEST_DATA");
  return g_build_filename (data ? data : MOSHI_TEST_DATA_DIR, "conformance",
      "lm-tiny", file, NULL);
}

static LmModel *
load_tiny (MoshiWeightType w, LmConfig *cfg)
{
  gchar *c = case_path ("config.json"), *p = case_path ("model.safetensors");
  GError *err = NULL;
  g_assert_true (lm_config_load_json (cfg, c, &err));
  g_assert_no_error (err);
  LmModel *m = lm_model_load (p, cfg, w, &err);
  g_assert_no_error (err);
  g_free (c);
  g_free (p);
  return m;
}

/* Reference user codes of lm-tiny, [30][8]. */
static int *
user_codes (int *steps)
{
  gchar *p = case_path ("vectors.safetensors");
  StFile *f = st_open (p, NULL);
  g_assert_nonnull (f);
  const StTensor *t = st_find (f, "lmgen_in_user_codes");
  int64_t *raw = g_new (int64_t, t->numel);
  g_assert_true (st_read_i64 (f, t, raw, NULL));
  int *out = g_new (int, t->numel);
  for (int64_t i = 0; i < t->numel; i++)
    out[i] = (int) raw[i];
  *steps = (int) t->shape[0];
  g_free (raw);
  st_unref (f);
  g_free (p);
  return out;
}

/* Runs `steps` steps; out [steps][9], -1 rows while the delays fill. */
static void
run (LmGen *g, const int *user, int steps, int *out)
{
  for (int s = 0; s < steps; s++) {
    int r = lm_gen_step (g, user + s * 8, out + s * 9, NULL, NULL);
    g_assert_cmpint (r, >=, 0);
    if (r == 0)
      for (int k = 0; k < 9; k++)
        out[s * 9 + k] = -1;
  }
}

static void
test_reset_and_seed (void)
{
  LmConfig cfg;
  LmModel *m = load_tiny (MOSHI_WEIGHTS_F32, &cfg);
  int steps;
  int *user = user_codes (&steps);
  int *a = g_new (int, steps * 9), *b = g_new (int, steps * 9);
  int *c = g_new (int, steps * 9);
  LmGenParams p;
  lm_gen_params_default (&p, &cfg);
  p.seed = 1;
  LmGen *g = lm_gen_new (m, &p, NULL);
  run (g, user, steps, a);
  lm_gen_reset (g);
  run (g, user, steps, b);
  /* Reset restarts the conversation and the random stream. */
  g_assert_cmpmem (a, sizeof (int) * steps * 9, b, sizeof (int) * steps * 9);
  lm_gen_free (g);
  p.seed = 2;
  g = lm_gen_new (m, &p, NULL);
  run (g, user, steps, c);
  g_assert_true (memcmp (a, c, sizeof (int) * steps * 9) != 0);
  lm_gen_free (g);
  /* The first max(delays) = 1 steps return nothing. */
  g_assert_cmpint (a[0], ==, -1);
  g_assert_cmpint (a[9], >=, 0);
  g_free (a);
  g_free (b);
  g_free (c);
  g_free (user);
  lm_model_unref (m);
}

/* A bad user code is refused and changes nothing: the run continues as if
 * the bad step had not been attempted. */
static void
test_bad_input (void)
{
  LmConfig cfg;
  LmModel *m = load_tiny (MOSHI_WEIGHTS_F32, &cfg);
  int steps;
  int *user = user_codes (&steps);
  int *ref = g_new (int, steps * 9), *got = g_new (int, steps * 9);
  LmGenParams p;
  lm_gen_params_default (&p, &cfg);
  p.use_sampling = FALSE;
  LmGen *g = lm_gen_new (m, &p, NULL);
  run (g, user, steps, ref);
  lm_gen_reset (g);
  int bad[8] = { 0, 1, 2, 64, 4, 5, 6, 7 };
  GError *err = NULL;
  for (int s = 0; s < steps; s++) {
    if (s == 5) {
      int out[9];
      g_assert_cmpint (lm_gen_step (g, bad, out, NULL, &err), ==, -1);
      g_assert_error (err, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_ARGUMENT);
      g_assert_nonnull (strstr (err->message, "codebook 3"));
      g_clear_error (&err);
    }
    int r = lm_gen_step (g, user + s * 8, got + s * 9, NULL, NULL);
    if (r == 0)
      for (int k = 0; k < 9; k++)
        got[s * 9 + k] = -1;
  }
  g_assert_cmpmem (ref, sizeof (int) * steps * 9, got,
      sizeof (int) * steps * 9);
  lm_gen_free (g);
  g_free (ref);
  g_free (got);
  g_free (user);
  lm_model_unref (m);
}

/* Reduced precision keeps the greedy run mostly on the float32 track. */
static void
test_quantized (gconstpointer data)
{
  MoshiWeightType w = GPOINTER_TO_INT (data);
  LmConfig cfg;
  LmModel *m32 = load_tiny (MOSHI_WEIGHTS_F32, &cfg);
  LmModel *mq = load_tiny (w, &cfg);
  int steps;
  int *user = user_codes (&steps);
  LmGenParams p;
  lm_gen_params_default (&p, &cfg);
  p.use_sampling = FALSE;
  LmGen *g32 = lm_gen_new (m32, &p, NULL), *gq = lm_gen_new (mq, &p, NULL);
  float l32[100], lq[100];
  double err = 0, peak = 0;
  /* Same inputs each step (teacher forcing on the f32 tokens is implicit:
   * compare the first step's logits, where inputs are identical). */
  LmGenTrace t32 = { .text_logits = l32 }, tq = { .text_logits = lq };
  int o[9];
  lm_gen_step (g32, user, o, &t32, NULL);
  lm_gen_step (gq, user, o, &tq, NULL);
  for (int i = 0; i < 100; i++) {
    err = MAX (err, fabs (l32[i] - lq[i]));
    peak = MAX (peak, fabs (l32[i]));
  }
  g_test_message ("%s: first-step text logits max err %.3g (peak %.3g)",
      moshi_weight_type_name (w), err, peak);
  const double rel = w == MOSHI_WEIGHTS_BF16 ? 0.02
      : w == MOSHI_WEIGHTS_Q8                ? 0.08
                                             : 0.35;
  g_assert_cmpfloat (err, <=, rel * peak);
  g_assert_cmpfloat (err, >, 0.0);
  lm_gen_free (g32);
  lm_gen_free (gq);
  g_free (user);
  lm_model_unref (m32);
  lm_model_unref (mq);
}

/* Writes lm-tiny's config with `from` replaced by `to` and expects an
 * error mentioning `expect`. */
static void
expect_config_error (const char *from, const char *to, const char *expect)
{
  gchar *src = case_path ("config.json"), *text = NULL;
  g_assert_true (g_file_get_contents (src, &text, NULL, NULL));
  g_assert_nonnull (strstr (text, from));
  GString *s = g_string_new (text);
  g_string_replace (s, from, to, 1);
  gchar *path = NULL;
  int fd = g_file_open_tmp ("lm-config-XXXXXX.json", &path, NULL);
  g_assert_cmpint (fd, >=, 0);
  close (fd);
  g_assert_true (g_file_set_contents (path, s->str, -1, NULL));
  LmConfig cfg;
  GError *err = NULL;
  g_assert_false (lm_config_load_json (&cfg, path, &err));
  g_assert_nonnull (err);
  if (!strstr (err->message, expect))
    g_error ("'%s' does not mention '%s'", err->message, expect);
  g_clear_error (&err);
  g_unlink (path);
  g_free (path);
  g_string_free (s, TRUE);
  g_free (text);
  g_free (src);
}

static void
test_config_errors (void)
{
  expect_config_error ("\"dim\": 64", "\"dim\": 64, \"dimm\": 3",
      "unknown key \"dimm\"");
  expect_config_error ("\"n_q\": 16", "\"n_q\": 15", "delays");
  expect_config_error ("\"norm\": \"rms_norm_f32\"", "\"norm\": \"batch_norm\"",
      "norm");
  expect_config_error ("\"num_heads\": 4", "\"num_heads\": 5", "heads");
  expect_config_error ("\"dep_q\": 8", "\"dep_q\": 17", "dep_q");
  expect_config_error ("\"card\": 64", "\"card\": \"64\"", "card");
  expect_config_error ("\"dim\": 64",
      "\"dim\": 64, \"fuser\": {\"sum\": [\"x\"]}", "fuser");
  expect_config_error ("\"dim\": 64", "\"dim\": 64, \"layer_scale\": 0.1",
      "layer_scale");
  expect_config_error ("{", "[", "JSON");
}

/* Copies lm-tiny's checkpoint, dropping `skip` or growing the first dim of
 * `grow`, and expects loading to name that tensor. */
static void
expect_checkpoint_error (const char *skip, const char *grow, int code)
{
  gchar *src = case_path ("model.safetensors");
  StFile *f = st_open (src, NULL);
  g_assert_nonnull (f);
  GString *hdr = g_string_new ("{");
  GByteArray *data = g_byte_array_new ();
  for (size_t i = 0; i < st_count (f); i++) {
    const StTensor *t = st_index (f, i);
    if (skip && !strcmp (t->name, skip))
      continue;
    gboolean g = grow && !strcmp (t->name, grow);
    size_t nbytes = t->nbytes + (g ? t->nbytes / t->shape[0] : 0);
    g_string_append_printf (hdr, "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[",
        hdr->len > 1 ? "," : "", t->name);
    for (int d = 0; d < t->ndim; d++)
      g_string_append_printf (hdr, "%s%" G_GINT64_FORMAT, d ? "," : "",
          t->shape[d] + (g && d == 0));
    g_string_append_printf (hdr, "],\"data_offsets\":[%u,%zu]}", data->len,
        data->len + nbytes);
    g_byte_array_append (data, t->data, t->nbytes);
    for (size_t j = t->nbytes; j < nbytes; j++)
      g_byte_array_append (data, (const guint8 *) "", 1);
  }
  g_string_append (hdr, "}");
  gchar *path = NULL;
  int fd = g_file_open_tmp ("lm-ckpt-XXXXXX.safetensors", &path, NULL);
  FILE *fp = fdopen (fd, "wb");
  guint64 n = hdr->len;
  fwrite (&n, 8, 1, fp);
  fwrite (hdr->str, 1, hdr->len, fp);
  fwrite (data->data, 1, data->len, fp);
  fclose (fp);
  LmConfig cfg;
  gchar *cp = case_path ("config.json");
  g_assert_true (lm_config_load_json (&cfg, cp, NULL));
  GError *err = NULL;
  g_assert_null (lm_model_load (path, &cfg, MOSHI_WEIGHTS_F32, &err));
  g_assert_error (err, MOSHI_MODEL_ERROR, code);
  g_assert_nonnull (strstr (err->message, skip ? skip : grow));
  g_clear_error (&err);
  g_unlink (path);
  g_free (path);
  g_free (cp);
  g_string_free (hdr, TRUE);
  g_byte_array_unref (data);
  st_unref (f);
  g_free (src);
}

static void
test_checkpoint_errors (void)
{
  expect_checkpoint_error ("depformer.layers.1.gating.5.linear_out.weight",
      NULL, MOSHI_MODEL_ERROR_MISSING);
  expect_checkpoint_error ("emb.15.weight", NULL, MOSHI_MODEL_ERROR_MISSING);
  expect_checkpoint_error (NULL, "depformer.layers.0.self_attn.in_proj_weight",
      MOSHI_MODEL_ERROR_SHAPE);
  expect_checkpoint_error (NULL, "text_linear.weight", MOSHI_MODEL_ERROR_SHAPE);
}

/* ---------------------------------------------------------------- LoRA --- */

typedef struct {
  const char *name;
  int rows, cols;
  float *data;
  const StTensor *like; /* when set, written with this shape */
} NamedTensor;

/* Writes float32 tensors as a safetensors file. */
static void
write_tensors (const char *path, const NamedTensor *t, int n)
{
  GString *hdr = g_string_new ("{");
  size_t off = 0;
  for (int i = 0; i < n; i++) {
    size_t bytes = sizeof (float) * t[i].rows * t[i].cols;
    GString *shape = g_string_new ("");
    if (t[i].like)
      for (int d = 0; d < t[i].like->ndim; d++)
        g_string_append_printf (shape, "%s%" G_GINT64_FORMAT, d ? "," : "",
            t[i].like->shape[d]);
    else
      g_string_append_printf (shape, "%d,%d", t[i].rows, t[i].cols);
    g_string_append_printf (hdr,
        "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[%s],"
        "\"data_offsets\":[%zu,%zu]}",
        i ? "," : "", t[i].name, shape->str, off, off + bytes);
    g_string_free (shape, TRUE);
    off += bytes;
  }
  g_string_append (hdr, "}");
  FILE *fp = fopen (path, "wb");
  g_assert_nonnull (fp);
  guint64 len = hdr->len;
  fwrite (&len, 8, 1, fp);
  fwrite (hdr->str, 1, hdr->len, fp);
  for (int i = 0; i < n; i++)
    fwrite (t[i].data, sizeof (float), (size_t) t[i].rows * t[i].cols, fp);
  fclose (fp);
  g_string_free (hdr, TRUE);
}

/* Adapters on a mix of weights (plain, stacked per-step, gated MLP, the
 * heads); the model loaded with them must equal a checkpoint in which
 * W + scaling * B A was merged by hand. */
static void
test_lora (void)
{
  static const struct {
    const char *base;
    int sets;
  } targets[] = {
    { "transformer.layers.0.self_attn.in_proj_weight", 1 },
    { "transformer.layers.1.gating.linear_out.weight", 1 },
    { "depformer.layers.0.self_attn.in_proj_weight", 8 },
    { "depformer.layers.1.gating.2.linear_in.weight", 1 },
    { "text_linear.weight", 1 },
    { "linears.3.weight", 1 },
  };
  const int rank = 4, nt = G_N_ELEMENTS (targets);
  const float scaling = 1.5f;
  gchar *src = case_path ("model.safetensors");
  StFile *f = st_open (src, NULL);
  g_assert_nonnull (f);
  NamedTensor *ad = g_new0 (NamedTensor, 2 * nt);
  GHashTable *merged = g_hash_table_new (g_str_hash, g_str_equal);
  guint32 seed = 99;
  for (int i = 0; i < nt; i++) {
    const StTensor *t = st_find (f, targets[i].base);
    g_assert_nonnull (t);
    int out = (int) t->shape[0] / targets[i].sets, in = (int) t->shape[1];
    int sets = targets[i].sets;
    gchar *stem = g_strndup (targets[i].base, strlen (targets[i].base) - 7);
    NamedTensor *A = &ad[2 * i], *B = &ad[2 * i + 1];
    A->name = g_strdup_printf ("%s.lora_A.weight", stem);
    B->name = g_strdup_printf ("%s.lora_B.weight", stem);
    g_free (stem);
    A->rows = sets * rank;
    A->cols = in;
    B->rows = sets * out;
    B->cols = rank;
    A->data = g_new (float, (size_t) A->rows * A->cols);
    B->data = g_new (float, (size_t) B->rows * B->cols);
    for (int j = 0; j < A->rows * A->cols; j++)
      A->data[j] =
          ((seed = seed * 1664525u + 1013904223u) >> 9) / 8388608.0f - 0.5f;
    for (int j = 0; j < B->rows * B->cols; j++)
      B->data[j] =
          ((seed = seed * 1664525u + 1013904223u) >> 9) / 8388608.0f - 0.5f;
    float *w = g_new (float, t->numel);
    g_assert_true (st_read_f32 (f, t, w, NULL));
    for (int st = 0; st < sets; st++)
      for (int o = 0; o < out; o++)
        for (int c = 0; c < in; c++) {
          double acc = 0;
          for (int r = 0; r < rank; r++)
            acc += (double) B->data[((size_t) st * out + o) * rank + r]
                * A->data[((size_t) st * rank + r) * in + c];
          w[((size_t) st * out + o) * in + c] += (float) (scaling * acc);
        }
    g_hash_table_insert (merged, (gpointer) targets[i].base, w);
  }
  /* The merged checkpoint: every tensor, the targets replaced. */
  NamedTensor *all = g_new0 (NamedTensor, st_count (f));
  float **owned = g_new0 (float *, st_count (f));
  for (size_t i = 0; i < st_count (f); i++) {
    const StTensor *t = st_index (f, i);
    all[i].name = t->name;
    all[i].like = t;
    all[i].rows = (int) t->shape[0];
    all[i].cols = (int) (t->numel / t->shape[0]);
    float *w = g_hash_table_lookup (merged, t->name);
    if (!w) {
      w = owned[i] = g_new (float, t->numel);
      g_assert_true (st_read_f32 (f, t, w, NULL));
    }
    all[i].data = w;
  }
  gchar *dir = g_dir_make_tmp ("lm-lora-XXXXXX", NULL);
  gchar *merged_path = g_build_filename (dir, "merged.safetensors", NULL);
  gchar *lora_path = g_build_filename (dir, "lora.safetensors", NULL);
  write_tensors (merged_path, all, (int) st_count (f));
  write_tensors (lora_path, ad, 2 * nt);

  LmConfig cfg;
  gchar *cp = case_path ("config.json");
  g_assert_true (lm_config_load_json (&cfg, cp, NULL));
  cfg.lora = TRUE;
  cfg.lora_scaling = scaling;
  GError *err = NULL;
  LmModel *with =
      lm_model_load_lora (src, lora_path, &cfg, MOSHI_WEIGHTS_F32, &err);
  g_assert_no_error (err);
  g_assert_null (lm_model_load (src, &cfg, MOSHI_WEIGHTS_F32, &err));
  g_assert_nonnull (strstr (err->message, "lora"));
  g_clear_error (&err);
  cfg.lora = FALSE;
  LmModel *hand = lm_model_load (merged_path, &cfg, MOSHI_WEIGHTS_F32, &err);
  LmModel *base = lm_model_load (src, &cfg, MOSHI_WEIGHTS_F32, &err);
  g_assert_no_error (err);

  int steps;
  int *user = user_codes (&steps);
  LmGenParams p;
  lm_gen_params_default (&p, &cfg);
  p.use_sampling = FALSE;
  LmGen *gw = lm_gen_new (with, &p, NULL), *gh = lm_gen_new (hand, &p, NULL);
  LmGen *gb = lm_gen_new (base, &p, NULL);
  float lw[100], lh[100], lb[100], dw[8 * 64], dh[8 * 64];
  double err_max = 0, diff_base = 0;
  for (int s = 0; s < steps; s++) {
    int ow[9], oh[9], ob[9];
    LmGenTrace tw = { .text_logits = lw, .depformer_logits = dw };
    LmGenTrace th = { .text_logits = lh, .depformer_logits = dh };
    LmGenTrace tb = { .text_logits = lb };
    int rw = lm_gen_step (gw, user + s * 8, ow, &tw, NULL);
    int rh = lm_gen_step (gh, user + s * 8, oh, &th, NULL);
    lm_gen_step (gb, user + s * 8, ob, &tb, NULL);
    g_assert_cmpint (rw, ==, rh);
    if (rw)
      g_assert_cmpmem (ow, sizeof ow, oh, sizeof oh);
    for (int i = 0; i < 100; i++) {
      err_max = MAX (err_max, fabs (lw[i] - lh[i]));
      diff_base = MAX (diff_base, fabs (lw[i] - lb[i]));
    }
    for (int i = 0; i < 8 * 64; i++)
      err_max = MAX (err_max, fabs (dw[i] - dh[i]));
  }
  g_test_message ("LoRA vs hand-merged: max logit diff %.3g; vs base %.3g",
      err_max, diff_base);
  g_assert_cmpfloat (err_max, <=, 1e-4);
  g_assert_cmpfloat (diff_base, >, 1e-2); /* the adapters do something */

  /* An adapter file that fits nothing is refused. */
  NamedTensor stray = { "nothing.lora_A.weight", 2, 2, lw, NULL };
  write_tensors (lora_path, &stray, 1);
  cfg.lora = TRUE;
  g_assert_null (
      lm_model_load_lora (src, lora_path, &cfg, MOSHI_WEIGHTS_F32, &err));
  g_assert_nonnull (strstr (err->message, "no tensor"));
  g_clear_error (&err);

  lm_gen_free (gw);
  lm_gen_free (gh);
  lm_gen_free (gb);
  lm_model_unref (with);
  lm_model_unref (hand);
  lm_model_unref (base);
  g_free (user);
  g_unlink (merged_path);
  g_unlink (lora_path);
  g_rmdir (dir);
  g_free (dir);
  g_free (merged_path);
  g_free (lora_path);
  g_free (cp);
  for (size_t i = 0; i < st_count (f); i++)
    g_free (owned[i]);
  g_free (owned);
  g_free (all);
  GHashTableIter it;
  gpointer k, v;
  g_hash_table_iter_init (&it, merged);
  while (g_hash_table_iter_next (&it, &k, &v))
    g_free (v);
  g_hash_table_unref (merged);
  for (int i = 0; i < 2 * nt; i++) {
    g_free ((gchar *) ad[i].name);
    g_free (ad[i].data);
  }
  g_free (ad);
  st_unref (f);
  g_free (src);
}

/* Every allocation of an LM load may fail: each failure is an error and
 * frees everything else (ASan's leak check in CI). */
static void
test_alloc_failures (void)
{
  gchar *c = case_path ("config.json"), *p = case_path ("model.safetensors");
  LmConfig cfg;
  g_assert_true (lm_config_load_json (&cfg, c, NULL));
  int failures = 0;
  for (long n = 1; n < 5000; n++) {
    GError *err = NULL;
    moshi_alloc_fail_after (n);
    LmModel *m = lm_model_load (p, &cfg, MOSHI_WEIGHTS_Q8, &err);
    moshi_alloc_fail_after (0);
    if (m) {
      g_assert_no_error (err);
      lm_model_unref (m);
      break;
    }
    g_assert_nonnull (err);
    failures++;
    g_clear_error (&err);
  }
  g_assert_cmpint (failures, >, 50);
  g_free (c);
  g_free (p);
}

/* Greedy run; returns all steps' text logits [steps][100] and outputs. */
static void
greedy_trace (LmModel *m, const LmConfig *cfg, const int *user, int steps,
    float *logits, int *out)
{
  LmGenParams p;
  lm_gen_params_default (&p, cfg);
  p.use_sampling = FALSE;
  LmGen *g = lm_gen_new (m, &p, NULL);
  for (int s = 0; s < steps; s++) {
    LmGenTrace t = { .text_logits = logits + s * 100 };
    if (lm_gen_step (g, user + s * 8, out + s * 9, &t, NULL) == 0)
      for (int k = 0; k < 9; k++)
        out[s * 9 + k] = -1;
  }
  lm_gen_free (g);
}

/* The packed-weights cache: written on the first load, lent on the next
 * with bit-identical results, rewritten when stale or truncated, and a
 * cache that cannot be written only warns. */
static void
test_pack_cache (void)
{
  gchar *c = case_path ("config.json"), *p = case_path ("model.safetensors");
  LmConfig cfg;
  g_assert_true (lm_config_load_json (&cfg, c, NULL));
  gchar *dir = g_dir_make_tmp ("lm-cache-XXXXXX", NULL);
  gchar *cache = g_build_filename (dir, "model.q8.moshipack", NULL);
  int steps;
  int *user = user_codes (&steps);
  float *l1 = g_new (float, steps * 100), *l2 = g_new (float, steps * 100);
  int *o1 = g_new (int, steps * 9), *o2 = g_new (int, steps * 9);
  GError *err = NULL;
  gchar *warn = NULL;

  LmModel *m = lm_model_load_cached (p, NULL, &cfg, MOSHI_WEIGHTS_Q8, cache,
      &warn, &err);
  g_assert_no_error (err);
  g_assert_null (warn);
  g_assert_false (lm_model_from_cache (m));
  g_assert_true (g_file_test (cache, G_FILE_TEST_EXISTS));
  greedy_trace (m, &cfg, user, steps, l1, o1);
  lm_model_unref (m);

  m = lm_model_load_cached (p, NULL, &cfg, MOSHI_WEIGHTS_Q8, cache, &warn,
      &err);
  g_assert_no_error (err);
  g_assert_true (lm_model_from_cache (m));
  greedy_trace (m, &cfg, user, steps, l2, o2);
  lm_model_unref (m);
  g_assert_cmpmem (l1, sizeof (float) * steps * 100, l2,
      sizeof (float) * steps * 100);
  g_assert_cmpmem (o1, sizeof (int) * steps * 9, o2, sizeof (int) * steps * 9);

  /* Truncated: not used, written again. */
  gchar *data = NULL;
  gsize len = 0;
  g_assert_true (g_file_get_contents (cache, &data, &len, NULL));
  g_assert_true (g_file_set_contents (cache, data, len / 2, NULL));
  m = lm_model_load_cached (p, NULL, &cfg, MOSHI_WEIGHTS_Q8, cache, &warn,
      &err);
  g_assert_no_error (err);
  g_assert_false (lm_model_from_cache (m));
  lm_model_unref (m);
  gchar *again = NULL;
  gsize len2 = 0;
  g_assert_true (g_file_get_contents (cache, &again, &len2, NULL));
  g_assert_cmpuint (len2, ==, len);
  g_free (again);
  g_free (data);

  /* Another storage type is another key: rewritten, not lent; Q4 (scales
   * inside the weights' stream) lent gives the same outputs too. */
  m = lm_model_load_cached (p, NULL, &cfg, MOSHI_WEIGHTS_Q4, cache, &warn,
      &err);
  g_assert_no_error (err);
  g_assert_false (lm_model_from_cache (m));
  greedy_trace (m, &cfg, user, steps, l1, o1);
  lm_model_unref (m);
  m = lm_model_load_cached (p, NULL, &cfg, MOSHI_WEIGHTS_Q4, cache, &warn,
      &err);
  g_assert_true (lm_model_from_cache (m));
  greedy_trace (m, &cfg, user, steps, l2, o2);
  lm_model_unref (m);
  g_assert_cmpmem (l1, sizeof (float) * steps * 100, l2,
      sizeof (float) * steps * 100);
  g_assert_cmpmem (o1, sizeof (int) * steps * 9, o2, sizeof (int) * steps * 9);

  /* Unwritable: the model loads, the reason comes back as a warning. */
  m = lm_model_load_cached (p, NULL, &cfg, MOSHI_WEIGHTS_Q8,
      "/nonexistent-dir/x.moshipack", &warn, &err);
  g_assert_no_error (err);
  g_assert_nonnull (m);
  g_assert_nonnull (warn);
  g_assert_nonnull (strstr (warn, "/nonexistent-dir/x.moshipack"));
  g_free (warn);
  lm_model_unref (m);

  g_unlink (cache);
  g_rmdir (dir);
  g_free (dir);
  g_free (cache);
  g_free (user);
  g_free (l1);
  g_free (l2);
  g_free (o1);
  g_free (o2);
  g_free (c);
  g_free (p);
}

/* ------------------------------------------------------- model kinds --- */

/* lm-tiny's config.json with `extra` inserted after its "dim" key, written
 * to a temporary file (returned). */
static gchar *
tiny_config_with (const char *extra)
{
  gchar *src = case_path ("config.json"), *text = NULL, *path = NULL;
  g_assert_true (g_file_get_contents (src, &text, NULL, NULL));
  GString *s = g_string_new (text);
  gchar *with = g_strdup_printf ("\"dim\": 64, %s", extra);
  g_string_replace (s, "\"dim\": 64", with, 1);
  int fd = g_file_open_tmp ("lm-kind-XXXXXX.json", &path, NULL);
  g_assert_cmpint (fd, >=, 0);
  close (fd);
  g_assert_true (g_file_set_contents (path, s->str, -1, NULL));
  g_string_free (s, TRUE);
  g_free (with);
  g_free (text);
  g_free (src);
  return path;
}

static void
test_config_kinds (void)
{
  LmConfig cfg;
  GError *err = NULL;
  gchar *p;

  /* Kyutai's STT keys (configs/stt_2.6b_en.json). */
  p = tiny_config_with ("\"model_type\": \"stt\", \"stt_config\": "
                        "{\"audio_delay_seconds\": 2.5, "
                        "\"audio_silence_prefix_seconds\": 1.0}, "
                        "\"extra_heads_num_heads\": 4, \"extra_heads_dim\": 6");
  g_assert_true (lm_config_load_json (&cfg, p, &err));
  g_assert_no_error (err);
  g_assert_cmpint (cfg.kind, ==, LM_KIND_STT);
  g_assert_cmpfloat (cfg.stt_audio_delay_s, ==, 2.5);
  g_assert_cmpfloat (cfg.stt_silence_prefix_s, ==, 1.0);
  g_unlink (p);
  g_free (p);
  /* Hibiki, with its LUT conditioner summed into the input. */
  p = tiny_config_with ("\"model_type\": \"hibiki\", \"conditioners\": "
                        "{\"description\": {\"type\": \"lut\", \"lut\": "
                        "{\"n_bins\": 31, \"dim\": 16, \"tokenizer\": "
                        "\"noop\", \"possible_values\": [\"very_bad\", "
                        "\"bad\", \"neutral\", \"good\", \"very_good\"]}}}, "
                        "\"fuser\": {\"sum\": [\"description\"], "
                        "\"cross\": [], \"prepend\": []}");
  g_assert_true (lm_config_load_json (&cfg, p, &err));
  g_assert_no_error (err);
  g_assert_cmpint (cfg.kind, ==, LM_KIND_TRANSLATION);
  g_assert_cmpstr (cfg.cond_name, ==, "description");
  g_assert_cmpint (cfg.cond_n_bins, ==, 31);
  g_assert_cmpint (cfg.cond_dim, ==, 16);
  g_assert_cmpint (cfg.cond_index, ==, 4);
  g_unlink (p);
  g_free (p);
  /* No key: a dialog model. */
  p = case_path ("config.json");
  g_assert_true (lm_config_load_json (&cfg, p, NULL));
  g_assert_cmpint (cfg.kind, ==, LM_KIND_DIALOG);
  g_assert_cmpint (cfg.cond_dim, ==, 0);
  g_free (p);

  expect_config_error ("\"dim\": 64", "\"dim\": 64, \"model_type\": \"tts\"",
      "model_type");
  expect_config_error ("\"dim\": 64",
      "\"dim\": 64, \"stt_config\": {\"audio_delay_seconds\": -1}",
      "audio_delay_seconds");
  expect_config_error ("\"dim\": 64",
      "\"dim\": 64, \"model_type\": \"hibiki\", \"conditioners\": {\"d\": "
      "{\"type\": \"tensor\", \"tensor\": {\"dim\": 4}}}",
      "lut");
  /* A conditioned model that is not Hibiki: nobody knows its value. */
  expect_config_error ("\"dim\": 64",
      "\"dim\": 64, \"conditioners\": {\"d\": {\"type\": \"lut\", \"lut\": "
      "{\"n_bins\": 4, \"dim\": 4, \"possible_values\": [\"very_good\"]}}}, "
      "\"fuser\": {\"sum\": [\"d\"]}",
      "Hibiki");
  expect_config_error ("\"dim\": 64",
      "\"dim\": 64, \"fuser\": {\"cross\": [\"d\"]}", "fuser");
}

/* STT: dep_q 0 over lm-tiny's weights (all 16 codebooks are the user's,
 * delays 0): a text token every step, the one the teacher-forced pass finds
 * most probable for the same sequence. */
static void
test_stt_text_only (void)
{
  gchar *p = tiny_config_with ("\"model_type\": \"stt\", "
                               "\"delays\": [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, "
                               "0, 0, 0, 0, 0, 0, 0], \"_x\": null");
  gchar *w = case_path ("model.safetensors");
  LmConfig cfg;
  GError *err = NULL;
  /* (the original "delays" comes later in the file and would win) */
  gchar *text = NULL;
  g_assert_true (g_file_get_contents (p, &text, NULL, NULL));
  GString *s = g_string_new (text);
  g_string_replace (s, "\"_x\": null,", "", 1);
  g_string_replace (s, "\"dep_q\": 8", "\"dep_q\": 0", 1);
  gchar *d = strstr (s->str, "\"delays\": [\n");
  g_assert_nonnull (d);
  gchar *end = strchr (d, ']');
  g_string_erase (s, d - s->str, end + 2 - d);
  g_assert_true (g_file_set_contents (p, s->str, -1, NULL));
  g_string_free (s, TRUE);
  g_free (text);

  g_assert_true (lm_config_load_json (&cfg, p, &err));
  g_assert_no_error (err);
  g_assert_cmpint (cfg.dep_q, ==, 0);
  LmModel *m = lm_model_load (w, &cfg, MOSHI_WEIGHTS_F32, &err);
  g_assert_no_error (err);
  LmGenParams gp;
  lm_gen_params_default (&gp, &cfg);
  gp.use_sampling = FALSE;
  LmGen *g = lm_gen_new (m, &gp, NULL);
  g_assert_cmpint (lm_gen_user_codebooks (g), ==, 16);
  const int T = 20;
  /* LMGen reads user frame s at step s (frame 0 not at all: initial
   * tokens), the teacher-forced pass reads codes[t] at step t + 1. */
  int *codes = g_new0 (int, 17 * T);
  GRand *rand = g_rand_new_with_seed (7);
  for (int t = 0; t < T; t++) {
    int user[16], out[1];
    for (int k = 0; k < 16; k++) {
      user[k] = g_rand_int_range (rand, 0, 64);
      if (t > 0)
        codes[(1 + k) * T + t - 1] = user[k];
    }
    g_assert_cmpint (lm_gen_step (g, user, out, NULL, NULL), ==, 1);
    codes[t] = out[0];
  }
  float *tl = g_new (float, 100 * T);
  guint8 *tm = g_new (guint8, T);
  g_assert_true (lm_forward_teacher (m, codes, T, NULL, NULL, tl, tm, &err));
  for (int t = 0; t < T; t++) {
    int best = 0;
    for (int i = 1; i < 100; i++)
      if (tl[t * 100 + i] > tl[t * 100 + best])
        best = i;
    g_assert_cmpint (best, ==, codes[t]);
  }
  g_free (tl);
  g_free (tm);
  g_rand_free (rand);
  g_free (codes);
  lm_gen_free (g);
  lm_model_unref (m);
  g_unlink (p);
  g_free (p);
  g_free (w);
}

/* Hibiki: the conditioner's vector added to every step's input is the
 * same model as that vector added to every text embedding row; and the
 * text EOS (2) reads as padding (3). */
static void
test_hibiki_conditioner (void)
{
  const int dim = 64, bins = 5, cdim = 4, idx = 4;
  gchar *src = case_path ("model.safetensors");
  StFile *f = st_open (src, NULL);
  g_assert_nonnull (f);
  const int n = (int) st_count (f);
  NamedTensor *a = g_new0 (NamedTensor, n + 2), *b = g_new0 (NamedTensor, n);
  float *embed = g_new (float, (bins + 1) * cdim);
  float *proj = g_new (float, dim *cdim);
  float *v = g_new (float, dim);
  float *text = NULL;
  GRand *rand = g_rand_new_with_seed (3);
  for (int i = 0; i < (bins + 1) * cdim; i++)
    embed[i] = (float) g_rand_double_range (rand, -1, 1);
  for (int i = 0; i < dim * cdim; i++)
    proj[i] = (float) g_rand_double_range (rand, -0.5, 0.5);
  for (int i = 0; i < dim; i++) {
    double acc = 0;
    for (int j = 0; j < cdim; j++)
      acc += (double) proj[i * cdim + j] * embed[idx * cdim + j];
    v[i] = (float) acc;
  }
  for (int i = 0; i < n; i++) {
    const StTensor *t = st_index (f, i);
    g_assert_cmpint (t->dtype, ==, ST_F32);
    NamedTensor nt = { t->name, (int) t->numel, 1, (float *) t->data, t };
    a[i] = b[i] = nt;
    if (!strcmp (t->name, "text_emb.weight")) {
      text = g_memdup2 (t->data, t->nbytes);
      for (int64_t r = 0; r < t->shape[0]; r++)
        for (int j = 0; j < dim; j++)
          text[r * dim + j] += v[j];
      b[i].data = text;
    }
  }
  g_assert_nonnull (text);
  a[n] =
      (NamedTensor){ "condition_provider.conditioners.description.embed.weight",
        bins + 1, cdim, embed, NULL };
  a[n + 1] = (NamedTensor){
    "condition_provider.conditioners.description.output_proj.weight", dim, cdim,
    proj, NULL
  };
  gchar *pa = NULL, *pb = NULL;
  close (g_file_open_tmp ("lm-cond-XXXXXX.safetensors", &pa, NULL));
  close (g_file_open_tmp ("lm-plus-XXXXXX.safetensors", &pb, NULL));
  write_tensors (pa, a, n + 2);
  write_tensors (pb, b, n);
  gchar *ca = tiny_config_with ("\"model_type\": \"hibiki\", "
                                "\"conditioners\": {\"description\": "
                                "{\"type\": \"lut\", \"lut\": {\"n_bins\": 5, "
                                "\"dim\": 4, \"tokenizer\": \"noop\", "
                                "\"possible_values\": [\"very_bad\", \"bad\", "
                                "\"neutral\", \"good\", \"very_good\"]}}}, "
                                "\"fuser\": {\"sum\": [\"description\"]}");
  gchar *cb = tiny_config_with ("\"model_type\": \"hibiki\"");
  LmConfig cfa, cfb;
  GError *err = NULL;
  g_assert_true (lm_config_load_json (&cfa, ca, &err));
  g_assert_true (lm_config_load_json (&cfb, cb, &err));
  LmModel *ma = lm_model_load (pa, &cfa, MOSHI_WEIGHTS_F32, &err);
  g_assert_no_error (err);
  LmModel *mb = lm_model_load (pb, &cfb, MOSHI_WEIGHTS_F32, &err);
  g_assert_no_error (err);
  LmConfig plain;
  LmModel *m0 = load_tiny (MOSHI_WEIGHTS_F32, &plain);

  int steps;
  int *user = user_codes (&steps);
  int *oa = g_new (int, steps * 9), *ob = g_new (int, steps * 9);
  int *o0 = g_new (int, steps * 9);
  LmGenParams gp;
  lm_gen_params_default (&gp, &cfa);
  gp.use_sampling = FALSE;
  LmGen *ga = lm_gen_new (ma, &gp, NULL), *gb = lm_gen_new (mb, &gp, NULL);
  LmGen *g0 = lm_gen_new (m0, &gp, NULL);
  run (ga, user, steps, oa);
  run (gb, user, steps, ob);
  run (g0, user, steps, o0);
  g_assert_cmpmem (oa, sizeof (int) * steps * 9, ob, sizeof (int) * steps * 9);
  g_assert_true (memcmp (oa, o0, sizeof (int) * steps * 9) != 0);

  /* EOS reads as padding: same logits with text 2 or 3 in the history. */
  const int T = 6;
  int codes[17 * 6];
  float *l2 = g_new (float, 8 * T * 64), *l3 = g_new (float, 8 * T * 64);
  float *t2 = g_new (float, T * 100), *t3 = g_new (float, T * 100);
  guint8 mk[8 * 6], tm[6];
  for (int i = 0; i < 17 * T; i++)
    codes[i] = i < T ? 5 : (i * 7) % 64;
  codes[2] = 2;
  g_assert_true (lm_forward_teacher (ma, codes, T, l2, mk, t2, tm, NULL));
  codes[2] = 3;
  g_assert_true (lm_forward_teacher (ma, codes, T, l3, mk, t3, tm, NULL));
  /* (the target of step 2 differs, its logits do not) */
  for (int t = 0; t < T; t++)
    for (int i = 0; i < 100; i++)
      g_assert_cmpfloat (t2[t * 100 + i], ==, t3[t * 100 + i]);

  g_free (l2);
  g_free (l3);
  g_free (t2);
  g_free (t3);
  lm_gen_free (ga);
  lm_gen_free (gb);
  lm_gen_free (g0);
  g_free (oa);
  g_free (ob);
  g_free (o0);
  g_free (user);
  lm_model_unref (ma);
  lm_model_unref (mb);
  lm_model_unref (m0);
  g_unlink (pa);
  g_unlink (pb);
  g_unlink (ca);
  g_unlink (cb);
  g_free (pa);
  g_free (pb);
  g_free (ca);
  g_free (cb);
  g_free (embed);
  g_free (proj);
  g_free (v);
  g_free (text);
  g_free (a);
  g_free (b);
  g_rand_free (rand);
  st_unref (f);
  g_free (src);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/lm/reset-and-seed", test_reset_and_seed);
  g_test_add_func ("/lm/bad-input", test_bad_input);
  g_test_add_data_func ("/lm/bf16", GINT_TO_POINTER (MOSHI_WEIGHTS_BF16),
      test_quantized);
  g_test_add_data_func ("/lm/q8", GINT_TO_POINTER (MOSHI_WEIGHTS_Q8),
      test_quantized);
  g_test_add_data_func ("/lm/q4", GINT_TO_POINTER (MOSHI_WEIGHTS_Q4),
      test_quantized);
  g_test_add_func ("/lm/config-errors", test_config_errors);
  g_test_add_func ("/lm/checkpoint-errors", test_checkpoint_errors);
  g_test_add_func ("/lm/lora", test_lora);
  g_test_add_func ("/lm/alloc-failures", test_alloc_failures);
  g_test_add_func ("/lm/pack-cache", test_pack_cache);
  g_test_add_func ("/lm/config-kinds", test_config_kinds);
  g_test_add_func ("/lm/stt-text-only", test_stt_text_only);
  g_test_add_func ("/lm/hibiki-conditioner", test_hibiki_conditioner);
  return g_test_run ();
}
