/* weights_load on Kyutai-style 8-bit checkpoints: an I8 `<name>` with a
 * per-row `<name>_scb` dequantizes to q * scb / 127 (bitsandbytes
 * LLM.int8()), whatever float dtype the scale has; a missing or misshapen
 * scale is an error that names the tensors.  The safetensors files are
 * written here byte by byte (8-byte little-endian header length, JSON
 * header, data), so the test needs no Python. */
#include <glib.h>
#include <glib/gstdio.h>
#include <math.h>
#include <string.h>

#include "alloc.h"
#include "model-error.h"
#include "safetensors.h"
#include "weights.h"

typedef struct {
  const char *name;
  const char *dtype; /* safetensors spelling: "I8", "F32", ... */
  int ndim;
  int64_t shape[2];
  const void *data;
  size_t nbytes;
} Tensor;

static char *tmp_dir;

/* Writes the tensors, back to back in the data area, to tmp_dir/name. */
static char *
write_safetensors (const char *name, const Tensor *t, size_t n)
{
  GString *header = g_string_new ("{");
  size_t offset = 0;
  for (size_t i = 0; i < n; i++) {
    g_string_append_printf (header, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[",
        i ? "," : "", t[i].name, t[i].dtype);
    for (int d = 0; d < t[i].ndim; d++)
      g_string_append_printf (header, "%s%" G_GINT64_FORMAT, d ? "," : "",
          t[i].shape[d]);
    g_string_append_printf (header, "],\"data_offsets\":[%zu,%zu]}", offset,
        offset + t[i].nbytes);
    offset += t[i].nbytes;
  }
  g_string_append_c (header, '}');

  GByteArray *file = g_byte_array_new ();
  guint8 len[8];
  for (int i = 0; i < 8; i++)
    len[i] = (guint8) ((guint64) header->len >> (8 * i));
  g_byte_array_append (file, len, 8);
  g_byte_array_append (file, (const guint8 *) header->str, header->len);
  for (size_t i = 0; i < n; i++)
    g_byte_array_append (file, t[i].data, (guint) t[i].nbytes);

  char *path = g_build_filename (tmp_dir, name, NULL);
  GError *error = NULL;
  g_assert_true (
      g_file_set_contents (path, (const char *) file->data, file->len, &error));
  g_assert_no_error (error);
  g_byte_array_unref (file);
  g_string_free (header, TRUE);
  return path;
}

static StFile *
open_file (const char *name, const Tensor *t, size_t n)
{
  char *path = write_safetensors (name, t, n);
  GError *error = NULL;
  StFile *f = st_open (path, &error);
  g_assert_no_error (error);
  g_assert_nonnull (f);
  g_free (path);
  return f;
}

static const int8_t q[3 * 4] = {
  127, -127, 0, 1, /* row 0 */
  -1, 64, -64, 100, /* row 1 */
  5, -5, 126, -128, /* row 2: -128 is outside bnb's range but valid I8 */
};
static const int64_t w_shape[2] = { 3, 4 };

/* Loads lin.weight with the given scale tensor; checks q * scb / 127
 * against the float values of the scale. */
static void
check_dequant (const char *file, const char *scb_dtype, const void *scb,
    size_t scb_bytes, const float *scb_values)
{
  const Tensor t[] = {
    { "lin.weight", "I8", 2, { 3, 4 }, q, sizeof q },
    { "lin.weight_scb", scb_dtype, 1, { 3 }, scb, scb_bytes },
  };
  StFile *f = open_file (file, t, G_N_ELEMENTS (t));
  GError *error = NULL;
  float *w = weights_load (f, "lin.weight", 2, w_shape, &error);
  g_assert_no_error (error);
  g_assert_nonnull (w);
  for (int r = 0; r < 3; r++)
    for (int c = 0; c < 4; c++) {
      const int i = r * 4 + c;
      double want = (double) q[i] * scb_values[r] / 127.0;
      /* Rounded once from the exact value: within half a float ulp. */
      g_assert_cmpfloat (fabs (w[i] - want), <=, fabs (want) * 0x1p-24 + 1e-30);
    }
  /* Spot values: a full-scale weight is +-scb, zero stays zero. */
  g_assert_cmpfloat (w[0], ==, scb_values[0]);
  g_assert_cmpfloat (w[1], ==, -scb_values[0]);
  g_assert_cmpfloat (w[2], ==, 0.0f);
  moshi_free (w);
  st_unref (f);
}

static void
test_scb_f32 (void)
{
  const float scb[3] = { 0.5f, 2.0f, 1.2345e-3f };
  check_dequant ("f32.safetensors", "F32", scb, sizeof scb, scb);
}

/* A model cast to bf16/f16 after quantization casts its scales too. */
static void
test_scb_half (void)
{
  const float values[3] = { 0.5f, 2.0f, 0.375f };
  const uint16_t bf16[3] = { 0x3F00, 0x4000, 0x3EC0 };
  const uint16_t f16[3] = { 0x3800, 0x4000, 0x3600 };
  check_dequant ("bf16.safetensors", "BF16", bf16, sizeof bf16, values);
  check_dequant ("f16.safetensors", "F16", f16, sizeof f16, values);
}

/* Float tensors next to quantized ones load unchanged. */
static void
test_float_unchanged (void)
{
  const float bias[3] = { 1.5f, -2.0f, 0.25f };
  const float scb[3] = { 1.0f, 1.0f, 1.0f };
  const Tensor t[] = {
    { "lin.bias", "F32", 1, { 3 }, bias, sizeof bias },
    { "lin.weight", "I8", 2, { 3, 4 }, q, sizeof q },
    { "lin.weight_scb", "F32", 1, { 3 }, scb, sizeof scb },
  };
  StFile *f = open_file ("mixed.safetensors", t, G_N_ELEMENTS (t));
  GError *error = NULL;
  const int64_t shape[1] = { 3 };
  float *b = weights_load (f, "lin.bias", 1, shape, &error);
  g_assert_no_error (error);
  g_assert_cmpmem (b, sizeof bias, bias, sizeof bias);
  moshi_free (b);
  st_unref (f);
}

/* Loads `name` from the tensors and expects `code`, with every string of
 * `needles` in the message. */
static void
expect_error (const char *file, const Tensor *t, size_t n, const char *name,
    const int64_t *shape, int code, const char *const *needles)
{
  StFile *f = open_file (file, t, n);
  GError *error = NULL;
  float *w = weights_load (f, name, 2, shape, &error);
  g_assert_null (w);
  g_assert_error (error, MOSHI_MODEL_ERROR, code);
  g_test_message ("%s", error->message);
  for (; *needles; needles++)
    if (!strstr (error->message, *needles))
      g_error ("'%s' not in error message: %s", *needles, error->message);
  g_error_free (error);
  st_unref (f);
}

static void
test_missing_scb (void)
{
  const Tensor t[] = { { "lin.weight", "I8", 2, { 3, 4 }, q, sizeof q } };
  const char *const needles[] = { "'lin.weight'", "'lin.weight_scb'", "I8",
    NULL };
  expect_error ("missing.safetensors", t, 1, "lin.weight", w_shape,
      MOSHI_MODEL_ERROR_MISSING, needles);
}

/* Any I8 tensor needs its scale, not only `.weight`s; a scale of another
 * tensor does not count. */
static void
test_i8_without_scb (void)
{
  const float scb[3] = { 1.0f, 1.0f, 1.0f };
  const Tensor t[] = {
    { "emb.table", "I8", 2, { 3, 4 }, q, sizeof q },
    { "emb.weight_scb", "F32", 1, { 3 }, scb, sizeof scb },
  };
  const char *const needles[] = { "'emb.table'", "'emb.table_scb'", NULL };
  expect_error ("noscb.safetensors", t, G_N_ELEMENTS (t), "emb.table", w_shape,
      MOSHI_MODEL_ERROR_MISSING, needles);
}

static void
test_scb_wrong_shape (void)
{
  const float scb[4] = { 1.0f, 1.0f, 1.0f, 1.0f };
  const Tensor t[] = {
    { "lin.weight", "I8", 2, { 3, 4 }, q, sizeof q },
    { "lin.weight_scb", "F32", 1, { 4 }, scb, sizeof scb },
  };
  const char *const needles[] = { "'lin.weight_scb'", "'lin.weight'", "[4]",
    "[3]", NULL };
  expect_error ("shape.safetensors", t, G_N_ELEMENTS (t), "lin.weight", w_shape,
      MOSHI_MODEL_ERROR_SHAPE, needles);

  /* [3, 1] holds the right count but is not bitsandbytes' layout. */
  const Tensor t2[] = {
    { "lin.weight", "I8", 2, { 3, 4 }, q, sizeof q },
    { "lin.weight_scb", "F32", 2, { 3, 1 }, scb, 3 * sizeof (float) },
  };
  const char *const needles2[] = { "'lin.weight_scb'", "[3, 1]", NULL };
  expect_error ("shape2.safetensors", t2, G_N_ELEMENTS (t2), "lin.weight",
      w_shape, MOSHI_MODEL_ERROR_SHAPE, needles2);
}

static void
test_scb_wrong_dtype (void)
{
  const int32_t scb[3] = { 1, 1, 1 };
  const Tensor t[] = {
    { "lin.weight", "I8", 2, { 3, 4 }, q, sizeof q },
    { "lin.weight_scb", "I32", 1, { 3 }, scb, sizeof scb },
  };
  const char *const needles[] = { "'lin.weight_scb'", "I32", NULL };
  expect_error ("dtype.safetensors", t, G_N_ELEMENTS (t), "lin.weight", w_shape,
      MOSHI_MODEL_ERROR_DTYPE, needles);
}

/* The weight's own shape is checked as for float weights. */
static void
test_weight_wrong_shape (void)
{
  const float scb[3] = { 1.0f, 1.0f, 1.0f };
  const Tensor t[] = {
    { "lin.weight", "I8", 2, { 3, 4 }, q, sizeof q },
    { "lin.weight_scb", "F32", 1, { 3 }, scb, sizeof scb },
  };
  const int64_t want[2] = { 4, 3 };
  const char *const needles[] = { "'lin.weight'", NULL };
  expect_error ("wshape.safetensors", t, G_N_ELEMENTS (t), "lin.weight", want,
      MOSHI_MODEL_ERROR_SHAPE, needles);
}

/* Allocation failures (the scale copy, then the weights) are errors, and
 * leak nothing (ASan). */
static void
test_alloc_failure (void)
{
  const float scb[3] = { 1.0f, 2.0f, 3.0f };
  const Tensor t[] = {
    { "lin.weight", "I8", 2, { 3, 4 }, q, sizeof q },
    { "lin.weight_scb", "F32", 1, { 3 }, scb, sizeof scb },
  };
  StFile *f = open_file ("oom.safetensors", t, G_N_ELEMENTS (t));
  for (long n = 1; n <= 2; n++) {
    GError *error = NULL;
    moshi_alloc_fail_after (n);
    float *w = weights_load (f, "lin.weight", 2, w_shape, &error);
    moshi_alloc_fail_after (0);
    g_assert_null (w);
    g_assert_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_IO);
    g_error_free (error);
  }
  st_unref (f);
}

static void
remove_dir (const char *dir)
{
  GDir *d = g_dir_open (dir, 0, NULL);
  const char *name;
  while (d && (name = g_dir_read_name (d))) {
    char *path = g_build_filename (dir, name, NULL);
    g_unlink (path);
    g_free (path);
  }
  if (d)
    g_dir_close (d);
  g_rmdir (dir);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  GError *error = NULL;
  tmp_dir = g_dir_make_tmp ("test-weights-XXXXXX", &error);
  g_assert_no_error (error);
  g_test_add_func ("/weights/scb-f32", test_scb_f32);
  g_test_add_func ("/weights/scb-half", test_scb_half);
  g_test_add_func ("/weights/float-unchanged", test_float_unchanged);
  g_test_add_func ("/weights/missing-scb", test_missing_scb);
  g_test_add_func ("/weights/i8-without-scb", test_i8_without_scb);
  g_test_add_func ("/weights/scb-wrong-shape", test_scb_wrong_shape);
  g_test_add_func ("/weights/scb-wrong-dtype", test_scb_wrong_dtype);
  g_test_add_func ("/weights/weight-wrong-shape", test_weight_wrong_shape);
  g_test_add_func ("/weights/alloc-failure", test_alloc_failure);
  int ret = g_test_run ();
  remove_dir (tmp_dir);
  g_free (tmp_dir);
  return ret;
}
