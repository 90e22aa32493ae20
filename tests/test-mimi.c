/* Mimi engine behaviour beyond the reference vectors: stream independence,
 * reset, threads, reduced-precision weights, argument and config errors,
 * allocation failures. */
#include <glib.h>
#include <glib/gstdio.h>
#include <math.h>
#include <string.h>

#include "alloc.h"
#include "mimi.h"
#include "model-error.h"
#include "safetensors.h"

static gchar *
case_path (const char *case_name, const char *file)
{
  const char *data = g_getenv ("MOSHI_TEST_DATA");
  if (!data)
    data = MOSHI_TEST_DATA_DIR;
  return g_build_filename (data, "conformance", case_name, file, NULL);
}

typedef struct {
  float *pcm;
  int frames;
  uint16_t *codes; /* [frames][8] */
  float *decoded;
} Ref;

static void
ref_load (Ref *r, const char *case_name)
{
  gchar *p = case_path (case_name, "vectors.safetensors");
  GError *err = NULL;
  StFile *f = st_open (p, &err);
  g_assert_no_error (err);
  const StTensor *pcm = st_find (f, "pcm"), *codes = st_find (f, "codes");
  const StTensor *dec = st_find (f, "decoded");
  g_assert_nonnull (pcm);
  r->frames = (int) (pcm->numel / MIMI_FRAME_SIZE);
  r->pcm = g_new (float, pcm->numel);
  r->decoded = g_new (float, dec->numel);
  g_assert_true (st_read_f32 (f, pcm, r->pcm, &err));
  g_assert_true (st_read_f32 (f, dec, r->decoded, &err));
  int64_t *raw = g_new (int64_t, codes->numel);
  g_assert_true (st_read_i64 (f, codes, raw, &err));
  r->codes = g_new (uint16_t, codes->numel);
  for (int q = 0; q < 8; q++)
    for (int t = 0; t < r->frames; t++)
      r->codes[t * 8 + q] = (uint16_t) raw[q * r->frames + t];
  g_free (raw);
  st_unref (f);
  g_free (p);
}

static void
ref_clear (Ref *r)
{
  g_free (r->pcm);
  g_free (r->codes);
  g_free (r->decoded);
}

static MimiModel *
load_case (const char *case_name, MoshiWeightType w)
{
  gchar *p = case_path (case_name, "model.safetensors");
  GError *err = NULL;
  MimiModel *m = mimi_model_load_typed (p, w, &err);
  g_assert_no_error (err);
  g_free (p);
  return m;
}

/* Two interleaved streams on one model give each the same codes as a
 * stream alone: no state leaks through the shared weights. */
static void
test_streams_independent (void)
{
  Ref r;
  ref_load (&r, "mimi-tiny");
  MimiModel *m = load_case ("mimi-tiny", MOSHI_WEIGHTS_F32);
  MimiEncoder *a = mimi_encoder_new (m, 8, NULL),
              *b = mimi_encoder_new (m, 8, NULL);
  float silence[MIMI_FRAME_SIZE] = { 0 };
  uint16_t ca[8], cb[8];
  for (int t = 0; t < r.frames; t++) {
    mimi_encode_frame (a, r.pcm + t * MIMI_FRAME_SIZE, ca);
    mimi_encode_frame (b, silence, cb);
    g_assert_cmpmem (ca, sizeof ca, r.codes + t * 8, sizeof ca);
  }
  mimi_encoder_free (a);
  mimi_encoder_free (b);
  mimi_model_unref (m);
  ref_clear (&r);
}

/* After reset, a stream behaves exactly like a new one. */
static void
test_reset (void)
{
  Ref r;
  ref_load (&r, "mimi-small");
  MimiModel *m = load_case ("mimi-small", MOSHI_WEIGHTS_F32);
  MimiEncoder *e = mimi_encoder_new (m, 8, NULL);
  MimiDecoder *d = mimi_decoder_new (m, 8, NULL);
  uint16_t c[8];
  float out[MIMI_FRAME_SIZE];
  for (int t = 0; t < 7; t++) {
    mimi_encode_frame (e, r.pcm + (r.frames - 1 - t) * MIMI_FRAME_SIZE, c);
    g_assert_true (mimi_decode_frame (d, c, out, NULL));
  }
  mimi_encoder_reset (e);
  mimi_decoder_reset (d);
  for (int t = 0; t < r.frames; t++) {
    mimi_encode_frame (e, r.pcm + t * MIMI_FRAME_SIZE, c);
    g_assert_cmpmem (c, sizeof c, r.codes + t * 8, sizeof c);
    g_assert_true (mimi_decode_frame (d, r.codes + t * 8, out, NULL));
    for (int i = 0; i < MIMI_FRAME_SIZE; i++)
      g_assert_cmpfloat (fabsf (out[i] - r.decoded[t * MIMI_FRAME_SIZE + i]),
          <=, 3e-6f);
  }
  mimi_encoder_free (e);
  mimi_decoder_free (d);
  mimi_model_unref (m);
  ref_clear (&r);
}

/* Two threads split columns only: results are bit-identical. */
static void
test_threads (void)
{
  Ref r;
  ref_load (&r, "mimi-small");
  MimiModel *m = load_case ("mimi-small", MOSHI_WEIGHTS_F32);
  MimiDecoder *d1 = mimi_decoder_new (m, 8, NULL),
              *d2 = mimi_decoder_new (m, 8, NULL);
  mimi_decoder_set_threads (d2, 2);
  float o1[MIMI_FRAME_SIZE], o2[MIMI_FRAME_SIZE];
  for (int t = 0; t < r.frames; t++) {
    g_assert_true (mimi_decode_frame (d1, r.codes + t * 8, o1, NULL));
    g_assert_true (mimi_decode_frame (d2, r.codes + t * 8, o2, NULL));
    g_assert_cmpmem (o1, sizeof o1, o2, sizeof o2);
  }
  mimi_decoder_free (d1);
  mimi_decoder_free (d2);
  mimi_model_unref (m);
  ref_clear (&r);
}

static double
snr_db (const float *ref, const float *x, size_t n)
{
  double s = 0, e = 0;
  for (size_t i = 0; i < n; i++) {
    s += (double) ref[i] * ref[i];
    e += ((double) x[i] - ref[i]) * ((double) x[i] - ref[i]);
  }
  return 10.0 * log10 (s / MAX (e, 1e-30));
}

/* Reduced-precision weights: decoded audio stays close to the float32
 * reference and most codes agree.  The bounds are what the weight rounding
 * allows (bf16: 8 bits of mantissa, q8: 7 bits + sign per 32-block). */
static void
test_reduced_precision (gconstpointer data)
{
  MoshiWeightType w = GPOINTER_TO_INT (data);
  Ref r;
  ref_load (&r, "mimi-small");
  MimiModel *m = load_case ("mimi-small", w);
  g_assert_cmpint (mimi_model_weight_type (m), ==, w);
  MimiEncoder *e = mimi_encoder_new (m, 8, NULL);
  MimiDecoder *d = mimi_decoder_new (m, 8, NULL);
  float *out = g_new (float, (size_t) r.frames *MIMI_FRAME_SIZE);
  int same = 0, same0 = 0;
  for (int t = 0; t < r.frames; t++) {
    uint16_t c[8];
    mimi_encode_frame (e, r.pcm + t * MIMI_FRAME_SIZE, c);
    for (int q = 0; q < 8; q++)
      same += c[q] == r.codes[t * 8 + q];
    same0 += c[0] == r.codes[t * 8];
    g_assert_true (mimi_decode_frame (d, r.codes + t * 8,
        out + t * MIMI_FRAME_SIZE, NULL));
  }
  double snr = snr_db (r.decoded, out, (size_t) r.frames * MIMI_FRAME_SIZE);
  double agree = (double) same / (r.frames * 8);
  double agree0 = (double) same0 / r.frames;
  g_test_message ("%s: decoded SNR %.1f dB, code agreement %.1f %% "
                  "(semantic codebook %.1f %%)",
      moshi_weight_type_name (w), snr, 100 * agree, 100 * agree0);
  /* bf16: 8 mantissa bits; q8: 7 bits + sign per 32-block; q4: 3 bits +
   * sign per 32-block, a coarse approximation meant for speed. */
  const double min_snr = w == MOSHI_WEIGHTS_BF16 ? 35.0
      : w == MOSHI_WEIGHTS_Q8                    ? 25.0
                                                 : 10.0;
  g_assert_cmpfloat (snr, >=, min_snr);
  /* q4 moves the encoder's latents enough to change many of the acoustic
   * codes of this random-weight model, which quantize residual noise; the
   * semantic codebook must hold (its step search and the encoder's 8-bit
   * attention projections keep it: 100 % here, 37 % without them). */
  if (w != MOSHI_WEIGHTS_Q4)
    g_assert_cmpfloat (agree, >=, 0.8);
  else
    g_assert_cmpfloat (agree0, >=, 0.8);
  g_free (out);
  mimi_encoder_free (e);
  mimi_decoder_free (d);
  mimi_model_unref (m);
  ref_clear (&r);
}

static void
test_codebook_errors (void)
{
  MimiModel *m = load_case ("mimi-tiny", MOSHI_WEIGHTS_F32);
  GError *err = NULL;
  g_assert_null (mimi_encoder_new (m, 0, &err));
  g_assert_error (err, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_ARGUMENT);
  g_clear_error (&err);
  g_assert_null (mimi_decoder_new (m, 17, &err)); /* the tiny model stores 16 */
  g_assert_nonnull (strstr (err->message, "16"));
  g_clear_error (&err);
  MimiDecoder *d = mimi_decoder_new (m, 4, &err);
  g_assert_no_error (err);
  uint16_t bad[4] = { 1, 2, 64, 3 }; /* 64 bins: 64 is out of range */
  float out[MIMI_FRAME_SIZE];
  g_assert_false (mimi_decode_frame (d, bad, out, &err));
  g_assert_error (err, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_ARGUMENT);
  g_assert_nonnull (strstr (err->message, "codebook 2"));
  g_clear_error (&err);
  mimi_decoder_free (d);
  mimi_model_unref (m);
}

/* Writes a copy of mimi-tiny's config with one edit and loads the model
 * through it. */
static void
expect_config_error (const char *from, const char *to, const char *expect)
{
  gchar *src_cfg = case_path ("mimi-tiny", "config.json");
  gchar *src_model = case_path ("mimi-tiny", "model.safetensors");
  gchar *dir = g_dir_make_tmp ("mimi-cfg-XXXXXX", NULL);
  gchar *cfg = g_build_filename (dir, "config.json", NULL);
  gchar *model = g_build_filename (dir, "model.safetensors", NULL);
  gchar *text = NULL;
  g_assert_true (g_file_get_contents (src_cfg, &text, NULL, NULL));
  g_assert_nonnull (strstr (text, from));
  GString *s = g_string_new (text);
  g_string_replace (s, from, to, 1);
  g_assert_true (g_file_set_contents (cfg, s->str, -1, NULL));
  g_assert_cmpint (symlink (src_model, model), ==, 0);
  GError *err = NULL;
  MimiModel *m = mimi_model_load (model, &err);
  g_assert_null (m);
  g_assert_nonnull (err);
  if (!strstr (err->message, expect))
    g_error ("error '%s' does not mention '%s'", err->message, expect);
  g_clear_error (&err);
  g_unlink (model);
  g_unlink (cfg);
  g_rmdir (dir);
  g_string_free (s, TRUE);
  g_free (text);
  g_free (src_cfg);
  g_free (src_model);
  g_free (dir);
  g_free (cfg);
  g_free (model);
}

static void
test_config_errors (void)
{
  expect_config_error ("\"n_filters\": 8", "\"n_filters\": 16", "shape");
  expect_config_error ("\"d_model\": 32", "\"d_model\": 33", "d_model");
  expect_config_error ("\"num_heads\": 2", "\"num_heads\": -1", "num_heads");
  expect_config_error ("\"norm\": \"layer_norm\"", "\"norm\": \"rms_norm\"",
      "transformer.norm");
  expect_config_error ("\"bins\": 64", "\"bins\": 65", "shape");
  expect_config_error ("\"ratios\": [", "\"ratios\": \"x\", \"r\": [",
      "ratios");
  expect_config_error ("{", "{ \"seanet\": 3,", "seanet");
  expect_config_error ("\"sample_rate\": 24000", "\"sample_rate\": 16000",
      "inconsistent");
  expect_config_error ("\"context\": 16", "\"context\": 0", "context");
  expect_config_error ("\"context\": 16", "\"context\": 1e400", "out of range");
  expect_config_error ("\"channels\": 1,\n  \"frame_rate\"",
      "\"channels\": 1,, \"frame_rate\"", "config.json");
}

/* Every allocation of a model load may fail: each failure must give an
 * error and free everything else (ASan checks the leaks). */
static void
test_alloc_failures (void)
{
  gchar *p = case_path ("mimi-tiny", "model.safetensors");
  int failures = 0;
  for (long n = 1; n < 2000; n++) {
    GError *err = NULL;
    moshi_alloc_fail_after (n);
    MimiModel *m = mimi_model_load (p, &err);
    moshi_alloc_fail_after (0);
    if (m) {
      g_assert_no_error (err);
      mimi_model_unref (m);
      break; /* n is past the last allocation */
    }
    g_assert_nonnull (err);
    failures++;
    g_clear_error (&err);
  }
  g_assert_cmpint (failures, >, 50);
  g_free (p);
}

static void
test_missing_file (void)
{
  GError *err = NULL;
  g_assert_null (mimi_model_load ("/nonexistent/mimi.safetensors", &err));
  g_assert_error (err, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_IO);
  g_assert_nonnull (strstr (err->message, "/nonexistent/mimi.safetensors"));
  g_clear_error (&err);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/mimi/streams-independent", test_streams_independent);
  g_test_add_func ("/mimi/reset", test_reset);
  g_test_add_func ("/mimi/threads", test_threads);
  g_test_add_data_func ("/mimi/weights-bf16",
      GINT_TO_POINTER (MOSHI_WEIGHTS_BF16), test_reduced_precision);
  g_test_add_data_func ("/mimi/weights-q8", GINT_TO_POINTER (MOSHI_WEIGHTS_Q8),
      test_reduced_precision);
  g_test_add_data_func ("/mimi/weights-q4", GINT_TO_POINTER (MOSHI_WEIGHTS_Q4),
      test_reduced_precision);
  g_test_add_func ("/mimi/codebook-errors", test_codebook_errors);
  g_test_add_func ("/mimi/config-errors", test_config_errors);
  g_test_add_func ("/mimi/alloc-failures", test_alloc_failures);
  g_test_add_func ("/mimi/missing-file", test_missing_file);
  return g_test_run ();
}
