/* Unit tests for models/safetensors.c: synthetic files for every dtype and
 * every validation error, plus the real conformance checkpoints. */
#include "alloc.h"
#include "model-error.h"
#include "safetensors.h"

#include <glib/gstdio.h>
#include <math.h>
#include <string.h>

static char *tmp_dir;

/* ---- helpers ----------------------------------------------------------- */

static char *
write_raw (const char *name, const void *bytes, size_t len)
{
  char *path = g_build_filename (tmp_dir, name, NULL);
  GError *error = NULL;
  g_file_set_contents (path, bytes, (gssize) len, &error);
  g_assert_no_error (error);
  return path;
}

/* Writes <u64 LE strlen(header)> <header> <data>. */
static char *
write_st (const char *name, const char *header, const void *data,
    size_t data_len)
{
  size_t hlen = strlen (header);
  GByteArray *b = g_byte_array_new ();
  for (int i = 0; i < 8; i++) {
    guint8 c = (guint8) ((guint64) hlen >> (8 * i));
    g_byte_array_append (b, &c, 1);
  }
  g_byte_array_append (b, (const guint8 *) header, (guint) hlen);
  if (data_len)
    g_byte_array_append (b, data, (guint) data_len);
  char *path = write_raw (name, b->data, b->len);
  g_byte_array_unref (b);
  return path;
}

static void
assert_msg_has (const GError *error, const char *what)
{
  if (what && !strstr (error->message, what))
    g_error ("message '%s' lacks '%s'", error->message, what);
}

/* Opens a file expected to fail with `code`; the message must name the file
 * and contain each of up to two extra substrings. */
static void
expect_open_error (const char *path, int code, const char *what1,
    const char *what2)
{
  GError *error = NULL;
  StFile *f = st_open (path, &error);
  if (f)
    g_error ("%s: st_open unexpectedly succeeded", path);
  g_assert_error (error, MOSHI_MODEL_ERROR, code);
  assert_msg_has (error, path);
  assert_msg_has (error, what1);
  assert_msg_has (error, what2);
  if (g_test_verbose ())
    g_printerr ("  %s\n", error->message);
  g_error_free (error);
}

/* Writes a file with the given header and `data_len` zero bytes of data and
 * expects st_open to fail with a FORMAT error mentioning what1/what2. */
static void
expect_bad_header (const char *header, size_t data_len, const char *what1,
    const char *what2)
{
  static int counter;
  char *name = g_strdup_printf ("bad-%d.safetensors", counter++);
  void *data = g_malloc0 (data_len ? data_len : 1);
  char *path = write_st (name, header, data, data_len);
  expect_open_error (path, MOSHI_MODEL_ERROR_FORMAT, what1, what2);
  g_free (data);
  g_free (path);
  g_free (name);
}

static StFile *
open_ok (const char *path)
{
  GError *error = NULL;
  StFile *f = st_open (path, &error);
  g_assert_no_error (error);
  g_assert_nonnull (f);
  return f;
}

/* Builds a header + data area tensor by tensor. */
typedef struct {
  GString *header;
  GByteArray *data;
} Builder;

static void
add (Builder *b, const char *name, const char *dtype, const char *shape,
    const void *bytes, size_t len)
{
  size_t begin = b->data->len;
  if (len)
    g_byte_array_append (b->data, bytes, (guint) len);
  g_string_append_printf (b->header,
      "%s\"%s\": {\"dtype\": \"%s\", \"shape\": %s, \"data_offsets\": [%zu, "
      "%zu]}",
      b->header->len > 1 ? ", " : "", name, dtype, shape, begin,
      (size_t) b->data->len);
}

/* ---- synthetic files --------------------------------------------------- */

static char *
build_all_dtypes (void)
{
  Builder b = { g_string_new ("{"), g_byte_array_new () };
  float f32[4] = { 1.0f, -2.0f, 3.5f, 1e-3f };
  uint16_t f16[8] = { 0x3c00, 0xc000, 0x0001, 0x03ff, 0x7bff, 0x7c00, 0xfc00,
    0x8000 };
  uint16_t bf16[3] = { 0x3f80, 0xc0a0, 0x7f80 };
  double f64[3] = { 0.1, -2.5, -1e300 };
  int8_t i8[2] = { -1, 127 };
  uint8_t u8[2] = { 255, 0 };
  int16_t i16 = -300;
  uint16_t u16 = 65535;
  int32_t i32 = -100000;
  uint32_t u32 = 4000000000u;
  int64_t i64 = INT64_MIN;
  uint64_t u64 = INT64_MAX, u64big = (uint64_t) INT64_MAX + 1;
  uint8_t bools[3] = { 0, 1, 2 };
  float scalar = 42.0f;
  uint16_t nan16 = 0x7e01;

  /* Odd sizes first so that later tensors start unaligned. */
  add (&b, "i8", "I8", "[2]", i8, sizeof i8);
  add (&b, "bool", "BOOL", "[3]", bools, sizeof bools);
  add (&b, "f32", "F32", "[2, 2]", f32, sizeof f32);
  add (&b, "f16", "F16", "[8]", f16, sizeof f16);
  add (&b, "bf16", "BF16", "[1, 3]", bf16, sizeof bf16);
  add (&b, "f64", "F64", "[3]", f64, sizeof f64);
  add (&b, "u8", "U8", "[2, 1]", u8, sizeof u8);
  add (&b, "i16", "I16", "[1]", &i16, sizeof i16);
  add (&b, "u16", "U16", "[1]", &u16, sizeof u16);
  add (&b, "i32", "I32", "[1]", &i32, sizeof i32);
  add (&b, "u32", "U32", "[1]", &u32, sizeof u32);
  add (&b, "i64", "I64", "[1]", &i64, sizeof i64);
  add (&b, "u64", "U64", "[1]", &u64, sizeof u64);
  add (&b, "u64big", "U64", "[1]", &u64big, sizeof u64big);
  add (&b, "empty", "F32", "[0, 3]", NULL, 0);
  add (&b, "empty_huge", "I64", "[4611686018427387904, 4, 0]", NULL, 0);
  add (&b, "scalar", "F32", "[]", &scalar, sizeof scalar);
  add (&b, "nan16", "F16", "[1]", &nan16, sizeof nan16);
  /* Trailing spaces: the Python writer pads the header to 8 bytes. */
  g_string_append (b.header,
      ", \"__metadata__\": {\"format\": \"pt\", "
      "\"note\": \"caf\\u00e9\", \"format\": \"ignored\"}}   ");
  char *path =
      write_st ("all.safetensors", b.header->str, b.data->data, b.data->len);
  g_string_free (b.header, TRUE);
  g_byte_array_unref (b.data);
  return path;
}

static void
test_all_dtypes (void)
{
  char *path = build_all_dtypes ();
  StFile *f = open_ok (path);
  GError *error = NULL;

  g_assert_cmpstr (st_path (f), ==, path);
  g_assert_cmpuint (st_count (f), ==, 18);
  for (size_t i = 1; i < st_count (f); i++)
    g_assert_cmpint (strcmp (st_index (f, i - 1)->name, st_index (f, i)->name),
        <, 0);
  g_assert_null (st_index (f, st_count (f)));
  g_assert_cmpstr (st_metadata (f, "format"), ==, "pt");
  g_assert_cmpstr (st_metadata (f, "note"), ==, "caf\xc3\xa9");
  g_assert_null (st_metadata (f, "missing"));
  g_assert_null (st_find (f, "__metadata__"));
  g_assert_null (st_find (f, "nope"));
  g_assert_null (st_find (f, ""));

  const StTensor *t = st_find (f, "f32");
  g_assert_nonnull (t);
  g_assert_cmpstr (t->name, ==, "f32");
  g_assert_cmpint (t->dtype, ==, ST_F32);
  g_assert_cmpint (t->ndim, ==, 2);
  g_assert_cmpint (t->shape[0], ==, 2);
  g_assert_cmpint (t->shape[1], ==, 2);
  g_assert_cmpint (t->numel, ==, 4);
  g_assert_cmpuint (t->nbytes, ==, 16);
  float out[8];
  g_assert_true (st_read_f32 (f, t, out, &error));
  g_assert_no_error (error);
  g_assert_cmpfloat (out[0], ==, 1.0f);
  g_assert_cmpfloat (out[1], ==, -2.0f);
  g_assert_cmpfloat (out[2], ==, 3.5f);
  g_assert_cmpfloat (out[3], ==, 1e-3f);

  float *dup = st_dup_f32 (f, t, &error);
  g_assert_no_error (error);
  g_assert_cmpuint ((uintptr_t) dup % 64, ==, 0);
  g_assert_cmpmem (dup, 16, out, 16);
  moshi_free (dup);

  t = st_find (f, "f16");
  g_assert_cmpint (t->dtype, ==, ST_F16);
  g_assert_true (st_read_f32 (f, t, out, &error));
  g_assert_cmpfloat (out[0], ==, 1.0f);
  g_assert_cmpfloat (out[1], ==, -2.0f);
  g_assert_cmpfloat (out[2], ==, ldexpf (1, -24));
  g_assert_cmpfloat (out[3], ==, ldexpf (1023, -24));
  g_assert_cmpfloat (out[4], ==, 65504.0f);
  g_assert_true (isinf (out[5]) && out[5] > 0);
  g_assert_true (isinf (out[6]) && out[6] < 0);
  g_assert_true (out[7] == 0 && signbit (out[7]));

  t = st_find (f, "bf16");
  g_assert_cmpint (t->ndim, ==, 2);
  g_assert_true (st_read_f32 (f, t, out, &error));
  g_assert_cmpfloat (out[0], ==, 1.0f);
  g_assert_cmpfloat (out[1], ==, -5.0f);
  g_assert_true (isinf (out[2]));

  t = st_find (f, "f64");
  g_assert_true (st_read_f32 (f, t, out, &error));
  g_assert_cmpfloat (out[0], ==, 0.1f);
  g_assert_cmpfloat (out[1], ==, -2.5f);
  g_assert_true (isinf (out[2]) && out[2] < 0); /* out of float range */

  t = st_find (f, "nan16");
  g_assert_true (st_read_f32 (f, t, out, &error));
  g_assert_true (isnan (out[0]));

  t = st_find (f, "scalar");
  g_assert_cmpint (t->ndim, ==, 0);
  g_assert_cmpint (t->numel, ==, 1);
  g_assert_true (st_read_f32 (f, t, out, &error));
  g_assert_cmpfloat (out[0], ==, 42.0f);

  t = st_find (f, "empty");
  g_assert_cmpint (t->numel, ==, 0);
  g_assert_cmpuint (t->nbytes, ==, 0);
  g_assert_true (st_read_f32 (f, t, NULL, &error));
  dup = st_dup_f32 (f, t, &error);
  g_assert_no_error (error);
  g_assert_nonnull (dup);
  moshi_free (dup);
  t = st_find (f, "empty_huge");
  g_assert_cmpint (t->numel, ==, 0);
  g_assert_cmpint (t->shape[0], ==, 4611686018427387904LL);

  /* Integers. */
  static const struct {
    const char *name;
    int n;
    int64_t v[3];
  } ints[] = {
    { "i8", 2, { -1, 127 } },
    { "u8", 2, { 255, 0 } },
    { "i16", 1, { -300 } },
    { "u16", 1, { 65535 } },
    { "i32", 1, { -100000 } },
    { "u32", 1, { 4000000000LL } },
    { "i64", 1, { INT64_MIN } },
    { "u64", 1, { INT64_MAX } },
    { "bool", 3, { 0, 1, 1 } },
  };
  for (size_t i = 0; i < G_N_ELEMENTS (ints); i++) {
    int64_t iv[3] = { 0 };
    t = st_find (f, ints[i].name);
    g_assert_nonnull (t);
    g_assert_cmpint (t->numel, ==, ints[i].n);
    g_assert_true (st_read_i64 (f, t, iv, &error));
    g_assert_no_error (error);
    for (int k = 0; k < ints[i].n; k++)
      g_assert_cmpint (iv[k], ==, ints[i].v[k]);
  }

  int64_t iv[3];
  g_assert_false (st_read_i64 (f, st_find (f, "u64big"), iv, &error));
  g_assert_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_DTYPE);
  assert_msg_has (error, "u64big");
  g_clear_error (&error);

  /* Wrong-kind reads. */
  g_assert_false (st_read_f32 (f, st_find (f, "i64"), out, &error));
  g_assert_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_DTYPE);
  assert_msg_has (error, path);
  assert_msg_has (error, "'i64'");
  assert_msg_has (error, "I64");
  g_clear_error (&error);
  g_assert_null (st_dup_f32 (f, st_find (f, "bool"), &error));
  g_assert_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_DTYPE);
  g_clear_error (&error);
  g_assert_false (st_read_i64 (f, st_find (f, "f32"), iv, &error));
  g_assert_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_DTYPE);
  assert_msg_has (error, "'f32'");
  assert_msg_has (error, "F32");
  g_clear_error (&error);
  g_assert_false (st_read_i64 (f, st_find (f, "empty"), iv, &error));
  g_assert_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_DTYPE);
  g_clear_error (&error);

  /* Refcounting: tensors stay valid while any reference is held. */
  StFile *f2 = st_ref (f);
  g_assert_true (f2 == f);
  st_unref (f);
  t = st_find (f2, "scalar");
  g_assert_true (st_read_f32 (f2, t, out, NULL));
  g_assert_cmpfloat (out[0], ==, 42.0f);
  st_unref (f2);
  st_unref (NULL);
  g_free (path);
}

static void
test_require (void)
{
  char *path = build_all_dtypes ();
  StFile *f = open_ok (path);
  GError *error = NULL;

  const int64_t s22[] = { 2, 2 }, s2w[] = { 2, -1 }, sww[] = { -1, -1 };
  const int64_t s23[] = { 2, 3 }, s4[] = { 4 };
  g_assert_true (st_require (f, "f32", 2, s22, &error) == st_find (f, "f32"));
  g_assert_nonnull (st_require (f, "f32", 2, s2w, &error));
  g_assert_nonnull (st_require (f, "f32", 2, sww, &error));
  g_assert_nonnull (st_require (f, "scalar", 0, NULL, &error));
  g_assert_no_error (error);

  g_assert_null (st_require (f, "nope", 2, s22, &error));
  g_assert_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_MISSING);
  char *want = g_strdup_printf ("%s: tensor 'nope' not found", path);
  g_assert_cmpstr (error->message, ==, want);
  g_free (want);
  g_clear_error (&error);

  g_assert_null (st_require (f, "f32", 2, s23, &error));
  g_assert_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_SHAPE);
  want = g_strdup_printf ("%s: tensor 'f32' has shape [2, 2], expected [2, 3]",
      path);
  g_assert_cmpstr (error->message, ==, want);
  g_free (want);
  g_clear_error (&error);

  g_assert_null (st_require (f, "f32", 1, s4, &error));
  g_assert_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_SHAPE);
  assert_msg_has (error, "has shape [2, 2], expected [4]");
  g_clear_error (&error);

  g_assert_null (st_require (f, "scalar", 1, s4, &error));
  g_assert_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_SHAPE);
  assert_msg_has (error, "has shape [], expected [4]");
  g_clear_error (&error);

  st_unref (f);
  g_free (path);
}

static void
test_dup_oom (void)
{
  char *path = build_all_dtypes ();
  StFile *f = open_ok (path);
  GError *error = NULL;
  moshi_alloc_fail_after (1);
  g_assert_null (st_dup_f32 (f, st_find (f, "f16"), &error));
  moshi_alloc_fail_after (0);
  g_assert_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_IO);
  assert_msg_has (error, "'f16'");
  assert_msg_has (error, "out of memory");
  g_clear_error (&error);
  st_unref (f);
  g_free (path);
}

static void
test_file_errors (void)
{
  char *path = g_build_filename (tmp_dir, "does-not-exist.safetensors", NULL);
  expect_open_error (path, MOSHI_MODEL_ERROR_IO, "cannot open", NULL);
  g_free (path);
  expect_open_error (tmp_dir, MOSHI_MODEL_ERROR_IO, NULL, NULL);

  path = write_raw ("empty.safetensors", "", 0);
  expect_open_error (path, MOSHI_MODEL_ERROR_FORMAT, "file is 0 bytes",
      "too short");
  g_free (path);
  path = write_raw ("short.safetensors", "\x02\0\0\0\0", 5);
  expect_open_error (path, MOSHI_MODEL_ERROR_FORMAT, "file is 5 bytes",
      "too short");
  g_free (path);

  /* N = 1000 but only 10 bytes follow. */
  path =
      write_raw ("n-large.safetensors", "\xe8\x03\0\0\0\0\0\0{}        ", 18);
  expect_open_error (path, MOSHI_MODEL_ERROR_FORMAT,
      "header length 1000 exceeds the 10 bytes after it", NULL);
  g_free (path);
  /* N = 200 MB: refused before looking at the file size. */
  path = write_raw ("n-limit.safetensors", "\0\0\0\x0c\0\0\0\0{}", 10);
  expect_open_error (path, MOSHI_MODEL_ERROR_FORMAT, "201326592", "limit");
  g_free (path);
  path =
      write_raw ("n-max.safetensors", "\xff\xff\xff\xff\xff\xff\xff\xff{}", 10);
  expect_open_error (path, MOSHI_MODEL_ERROR_FORMAT, "18446744073709551615",
      "limit");
  g_free (path);
  /* N = 0: an empty header is not JSON. */
  path = write_raw ("n-zero.safetensors", "\0\0\0\0\0\0\0\0", 8);
  expect_open_error (path, MOSHI_MODEL_ERROR_FORMAT, "invalid header",
      "end of input");
  g_free (path);

  /* Minimal valid files. */
  path = write_raw ("minimal.safetensors", "\2\0\0\0\0\0\0\0{}", 10);
  StFile *f = open_ok (path);
  g_assert_cmpuint (st_count (f), ==, 0);
  g_assert_null (st_find (f, "x"));
  g_assert_null (st_index (f, 0));
  g_assert_null (st_metadata (f, "x"));
  st_unref (f);
  g_free (path);
}

static void
test_header_errors (void)
{
  const char *e = "\"dtype\": \"F32\", \"shape\": [2]";
  char *h;

  expect_bad_header ("{\"a\": ", 0, "invalid header",
      "JSON: unexpected end of input at byte 6");
  expect_bad_header ("{\"a\": {}} x", 0, "trailing data", NULL);
  expect_bad_header ("[]", 0, "header: expected an object, found array", NULL);
  expect_bad_header ("\"str\"", 0, "header: expected an object, found string",
      NULL);
  expect_bad_header ("{\"t\": 5}", 0, "tensor 't'",
      "entry: expected an object, found number");
  expect_bad_header ("{\"t\": [1]}", 0, "tensor 't'", "expected an object");

  /* Missing / ill-typed fields. */
  expect_bad_header ("{\"t\": {\"shape\": [2], \"data_offsets\": [0, 8]}}", 8,
      "tensor 't'", "missing \"dtype\"");
  expect_bad_header ("{\"w\": {\"dtype\": \"F32\", \"data_offsets\": [0, 8]}}",
      8, "tensor 'w'", "missing \"shape\"");
  expect_bad_header ("{\"t\": {\"dtype\": \"F32\", \"shape\": [2]}}", 8,
      "tensor 't'", "missing \"data_offsets\"");
  expect_bad_header ("{\"t\": {\"dtype\": 4, \"shape\": [2], \"data_offsets\": "
                     "[0, 8]}}",
      8, "tensor 't'", "\"dtype\": expected a string, found number");
  expect_bad_header ("{\"t\": {\"dtype\": \"F32\", \"shape\": \"2\", "
                     "\"data_offsets\": [0, 8]}}",
      8, "tensor 't'", "\"shape\": expected an array, found string");
  expect_bad_header ("{\"t\": {\"dtype\": \"F8_E4M3\", \"shape\": [2], "
                     "\"data_offsets\": [0, 2]}}",
      2, "tensor 't'", "unknown dtype \"F8_E4M3\"");
  expect_bad_header ("{\"t\": {\"dtype\": \"f32\", \"shape\": [2], "
                     "\"data_offsets\": [0, 8]}}",
      8, "tensor 't'", "unknown dtype \"f32\"");
  expect_bad_header ("{\"t\": {\"dtype\": \"F32\\u0000x\", \"shape\": [2], "
                     "\"data_offsets\": [0, 8]}}",
      8, "tensor 't'", "unknown dtype \"F32...\"");

  /* Shapes. */
  expect_bad_header ("{\"t\": {\"dtype\": \"F32\", \"shape\": [2, -1], "
                     "\"data_offsets\": [0, 8]}}",
      8, "tensor 't'", "shape[1] is not a non-negative integer");
  expect_bad_header ("{\"t\": {\"dtype\": \"F32\", \"shape\": [2.5], "
                     "\"data_offsets\": [0, 8]}}",
      8, "tensor 't'", "shape[0] is not a non-negative integer");
  expect_bad_header ("{\"t\": {\"dtype\": \"F32\", \"shape\": [\"2\"], "
                     "\"data_offsets\": [0, 8]}}",
      8, "tensor 't'", "shape[0]");
  expect_bad_header ("{\"t\": {\"dtype\": \"F32\", \"shape\": [1e30], "
                     "\"data_offsets\": [0, 8]}}",
      8, "tensor 't'", "shape[0]");
  expect_bad_header ("{\"t\": {\"dtype\": \"F32\", \"shape\": "
                     "[1,1,1,1,1,1,1,1,2], \"data_offsets\": [0, 8]}}",
      8, "tensor 't'", "9 dimensions, at most 8");
  expect_bad_header ("{\"t\": {\"dtype\": \"U8\", \"shape\": [4294967296, "
                     "4294967296], \"data_offsets\": [0, 8]}}",
      8, "tensor 't'", "element count overflows");
  expect_bad_header ("{\"t\": {\"dtype\": \"F64\", \"shape\": "
                     "[2305843009213693952], \"data_offsets\": [0, 8]}}",
      8, "tensor 't'", "element count overflows");

  /* Offsets. */
  h = g_strdup_printf ("{\"t\": {%s, \"data_offsets\": [8, 0]}}", e);
  expect_bad_header (h, 8, "tensor 't'", "end 0 < begin 8");
  g_free (h);
  h = g_strdup_printf ("{\"t\": {%s, \"data_offsets\": [0, 12]}}", e);
  expect_bad_header (h, 8, "tensor 't'",
      "data_offsets [0, 12] outside the data area (8 bytes)");
  g_free (h);
  h = g_strdup_printf ("{\"t\": {%s, \"data_offsets\": [-8, 0]}}", e);
  expect_bad_header (h, 8, "tensor 't'", "non-negative integers");
  g_free (h);
  h = g_strdup_printf ("{\"t\": {%s, \"data_offsets\": [0]}}", e);
  expect_bad_header (h, 8, "tensor 't'", "array of 2");
  g_free (h);
  h = g_strdup_printf ("{\"t\": {%s, \"data_offsets\": [0, 8, 16]}}", e);
  expect_bad_header (h, 16, "tensor 't'", "array of 2");
  g_free (h);
  h = g_strdup_printf ("{\"t\": {%s, \"data_offsets\": [0, 8.5]}}", e);
  expect_bad_header (h, 16, "tensor 't'", "array of 2");
  g_free (h);
  h = g_strdup_printf ("{\"t\": {%s, \"data_offsets\": {\"a\": 0}}}", e);
  expect_bad_header (h, 16, "tensor 't'", "array of 2");
  g_free (h);
  h = g_strdup_printf (
      "{\"t\": {%s, \"data_offsets\": [0, 9223372036854775807]}}", e);
  expect_bad_header (h, 8, "tensor 't'", "outside the data area");
  g_free (h);

  /* Size mismatch: F32 [2] needs 8 bytes. */
  h = g_strdup_printf ("{\"t\": {%s, \"data_offsets\": [0, 12]}}", e);
  expect_bad_header (h, 12, "tensor 't'",
      "data is 12 bytes, expected 2 elements x 4 bytes (F32) = 8");
  g_free (h);
  expect_bad_header ("{\"e\": {\"dtype\": \"F32\", \"shape\": [0], "
                     "\"data_offsets\": [0, 4]}}",
      4, "tensor 'e'", "data is 4 bytes");

  /* Overlaps: partial, contained, identical, and after an enclosing one. */
  h = g_strdup_printf ("{\"a\": {%s, \"data_offsets\": [0, 8]}, \"b\": {%s, "
                       "\"data_offsets\": [4, 12]}}",
      e, e);
  expect_bad_header (h, 12, "tensor 'b'", "overlaps tensor 'a' [0, 8)");
  g_free (h);
  h = g_strdup_printf ("{\"b\": {%s, \"data_offsets\": [8, 16]}, \"a\": {%s, "
                       "\"data_offsets\": [8, 16]}}",
      e, e);
  expect_bad_header (h, 16, "data [8, 16) overlaps tensor", NULL);
  g_free (h);
  h = g_strdup_printf ("{\"big\": {\"dtype\": \"F32\", \"shape\": [8], "
                       "\"data_offsets\": [0, 32]},"
                       " \"x\": {%s, \"data_offsets\": [4, 12]}}",
      e);
  expect_bad_header (h, 32, "tensor 'x'", "overlaps tensor 'big'");
  g_free (h);
  h = g_strdup_printf ("{\"big\": {\"dtype\": \"F32\", \"shape\": [8], "
                       "\"data_offsets\": [0, 32]},"
                       " \"x\": {%s, \"data_offsets\": [4, 12]}, \"y\": {%s, "
                       "\"data_offsets\": [20, 28]}}",
      e, e);
  expect_bad_header (h, 32, "overlaps tensor 'big'", NULL);
  g_free (h);
  h = g_strdup_printf ("{\"big\": {\"dtype\": \"F32\", \"shape\": [4], "
                       "\"data_offsets\": [0, 16]},"
                       " \"x\": {%s, \"data_offsets\": [0, 8]}, \"y\": {%s, "
                       "\"data_offsets\": [12, 20]}}",
      e, e);
  expect_bad_header (h, 20, "tensor 'big'", "tensor 'x'");
  g_free (h);

  /* Duplicates and odd names. */
  h = g_strdup_printf ("{\"t\": {%s, \"data_offsets\": [0, 8]}, \"t\": {%s, "
                       "\"data_offsets\": [8, 16]}}",
      e, e);
  expect_bad_header (h, 16, "tensor 't'", "duplicate tensor name");
  g_free (h);
  h = g_strdup_printf ("{\"a\\u0000b\": {%s, \"data_offsets\": [0, 8]}}", e);
  expect_bad_header (h, 8, "tensor 'a'", "NUL");
  g_free (h);
  expect_bad_header ("{\"__metadata__\": {}, \"__metadata__\": {}}", 0,
      "duplicate \"__metadata__\"", NULL);
  expect_bad_header ("{\"__metadata__\": [\"x\"]}", 0,
      "\"__metadata__\": expected an object, found array", NULL);
  expect_bad_header ("{\"__metadata__\": {\"k\": 1}}", 0,
      "__metadata__ entry 'k': expected a string, found number", NULL);
}

static void
test_valid_layouts (void)
{
  /* Non-contiguous data with holes, out-of-order offsets, empty tensors at
   * the same offset as others, extra entry keys: all accepted. */
  char data[40] = { 0 };
  const char *header =
      "{\"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [24, "
      "32], \"extra\": 1},"
      " \"a\": {\"dtype\": \"U8\", \"shape\": [3], \"data_offsets\": [1, 4]},"
      " \"z\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [2, 2]},"
      " \"y\": {\"dtype\": \"F16\", \"shape\": [1, 0, 5], \"data_offsets\": "
      "[40, 40]},"
      " \"c\": {\"dtype\": \"I64\", \"shape\": [1], \"data_offsets\": [4, "
      "12]}}";
  char *path = write_st ("layout.safetensors", header, data, sizeof data);
  StFile *f = open_ok (path);
  g_assert_cmpuint (st_count (f), ==, 5);
  g_assert_cmpstr (st_index (f, 0)->name, ==, "a");
  g_assert_cmpstr (st_index (f, 1)->name, ==, "b");
  g_assert_cmpstr (st_index (f, 2)->name, ==, "c");
  g_assert_cmpstr (st_index (f, 3)->name, ==, "y");
  g_assert_cmpstr (st_index (f, 4)->name, ==, "z");
  g_assert_cmpint (st_find (f, "y")->numel, ==, 0);
  st_unref (f);
  g_free (path);
}

static void
test_half_conversions (void)
{
  /* Exhaustive against an independent computation in double. */
  for (uint32_t h = 0; h < 65536; h++) {
    int sign = h >> 15, exp = (h >> 10) & 31, mant = h & 1023;
    double ref;
    if (exp == 0)
      ref = ldexp (mant, -24);
    else if (exp == 31)
      ref = mant ? NAN : INFINITY;
    else
      ref = ldexp (1024 + mant, exp - 25);
    if (sign)
      ref = -ref;
    float got = st_f16_to_f32 ((uint16_t) h);
    if (isnan (ref)) {
      g_assert_true (isnan (got));
    } else {
      if ((double) got != ref)
        g_error ("f16 0x%04x: got %g, expected %g", h, got, ref);
      g_assert_cmpint (signbit (got) != 0, ==, sign);
    }

    /* bf16 is the top half of a float32. */
    float b = st_bf16_to_f32 ((uint16_t) h);
    uint32_t bits;
    memcpy (&bits, &b, 4);
    g_assert_cmpuint (bits, ==, h << 16);
  }
  g_assert_cmpuint (st_dtype_size (ST_BF16), ==, 2);
  g_assert_cmpuint (st_dtype_size (ST_F64), ==, 8);
  g_assert_cmpuint (st_dtype_size (ST_BOOL), ==, 1);
  g_assert_cmpuint (st_dtype_size (ST_U32), ==, 4);
  g_assert_cmpstr (st_dtype_name (ST_BF16), ==, "BF16");
  g_assert_cmpstr (st_dtype_name (ST_U64), ==, "U64");
}

/* ---- real checkpoints -------------------------------------------------- */

static char *
data_path (const char *rel)
{
  const char *dir = g_getenv ("MOSHI_TEST_DATA");
#ifdef MOSHI_TEST_DATA_DIR
  if (!dir || !*dir)
    dir = MOSHI_TEST_DATA_DIR;
#endif
  if (!dir || !*dir)
    return NULL;
  char *path = g_build_filename (dir, rel, NULL);
  if (!g_file_test (path, G_FILE_TEST_EXISTS)) {
    g_free (path);
    return NULL;
  }
  return path;
}

/* float32 -> bf16 round-to-nearest-even, as torch's .to(torch.bfloat16). */
static uint32_t
round_bf16_bits (float x)
{
  uint32_t b;
  memcpy (&b, &x, 4);
  if (isnan (x))
    return (b | 0x00400000u) & 0xffff0000u;
  b += 0x7fff + ((b >> 16) & 1);
  return b & 0xffff0000u;
}

static void
test_real_mimi (void)
{
  char *p32 = data_path ("conformance/mimi-tiny/model.safetensors");
  char *p16 = data_path ("conformance/mimi-tiny/model.bf16.safetensors");
  if (!p32 || !p16) {
    /* The data ships with the source tree: its absence is a broken
     * checkout or environment, not a reason to pass. */
    g_test_fail_printf ("test data not found (set MOSHI_TEST_DATA)");
    g_free (p32);
    g_free (p16);
    return;
  }
  StFile *f32 = open_ok (p32), *f16 = open_ok (p16);
  GError *error = NULL;
  g_assert_cmpuint (st_count (f32), ==, 150);
  g_assert_cmpuint (st_count (f16), ==, st_count (f32));

  const int64_t shape[] = { 8, 1, 7 };
  const StTensor *w =
      st_require (f32, "encoder.model.0.conv.conv.weight", 3, shape, &error);
  g_assert_no_error (error);
  g_assert_cmpint (w->dtype, ==, ST_F32);
  const StTensor *wb =
      st_require (f16, "encoder.model.0.conv.conv.weight", 3, shape, &error);
  g_assert_no_error (error);
  g_assert_cmpint (wb->dtype, ==, ST_BF16);

  float *a = st_dup_f32 (f32, w, &error);
  g_assert_no_error (error);
  gboolean nonzero = FALSE;
  for (int i = 0; i < 56; i++)
    nonzero |= a[i] != 0 && isfinite (a[i]);
  g_assert_true (nonzero);
  moshi_free (a);

  /* Every tensor: same name/shape, and bf16 == round_bf16(f32) bit for bit. */
  size_t checked = 0;
  for (size_t i = 0; i < st_count (f32); i++) {
    const StTensor *t = st_index (f32, i), *u = st_index (f16, i);
    g_assert_cmpstr (t->name, ==, u->name);
    g_assert_cmpint (t->dtype, ==, ST_F32);
    g_assert_cmpint (u->dtype, ==, ST_BF16);
    g_assert_cmpint (t->ndim, ==, u->ndim);
    for (int d = 0; d < t->ndim; d++)
      g_assert_cmpint (t->shape[d], ==, u->shape[d]);
    float *x = st_dup_f32 (f32, t, &error);
    g_assert_no_error (error);
    float *y = g_new (float, t->numel ? t->numel : 1);
    g_assert_true (st_read_f32 (f16, u, y, &error));
    g_assert_no_error (error);
    for (int64_t k = 0; k < t->numel; k++) {
      uint32_t yb;
      memcpy (&yb, &y[k], 4);
      if (yb != round_bf16_bits (x[k]))
        g_error ("%s[%" G_GINT64_FORMAT
                 "]: bf16 %g (0x%08x) != round(%g) (0x%08x)",
            t->name, k, y[k], yb, x[k], round_bf16_bits (x[k]));
      checked++;
    }
    moshi_free (x);
    g_free (y);
  }
  /* 427081 parameters plus buffers (cluster_usage, embedding_sum ...). */
  g_assert_cmpuint (checked, ==, 444505);
  st_unref (f32);
  st_unref (f16);
  g_free (p32);
  g_free (p16);
}

static void
test_real_vectors (void)
{
  char *path = data_path ("conformance/mimi-tiny/vectors.safetensors");
  if (!path) {
    /* The data ships with the source tree: its absence is a broken
     * checkout or environment, not a reason to pass. */
    g_test_fail_printf ("test data not found (set MOSHI_TEST_DATA)");
    return;
  }
  StFile *f = open_ok (path);
  GError *error = NULL;
  const int64_t shape[] = { 1, 8, 25 };
  const StTensor *t = st_require (f, "codes", 3, shape, &error);
  g_assert_no_error (error);
  g_assert_cmpint (t->dtype, ==, ST_I64);
  int64_t codes[200];
  g_assert_true (st_read_i64 (f, t, codes, &error));
  g_assert_no_error (error);
  for (int i = 0; i < 200; i++) {
    g_assert_cmpint (codes[i], >=, 0);
    g_assert_cmpint (codes[i], <, 64); /* bins = 64 */
  }
  const int64_t pcm_shape[] = { 1, 1, -1 };
  t = st_require (f, "decoded", 3, pcm_shape, &error);
  g_assert_no_error (error);
  g_assert_cmpint (t->shape[2], ==, 48000);
  st_unref (f);
  g_free (path);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  GError *error = NULL;
  tmp_dir = g_dir_make_tmp ("test-safetensors-XXXXXX", &error);
  g_assert_no_error (error);

  g_test_add_func ("/safetensors/all-dtypes", test_all_dtypes);
  g_test_add_func ("/safetensors/require", test_require);
  g_test_add_func ("/safetensors/dup-oom", test_dup_oom);
  g_test_add_func ("/safetensors/file-errors", test_file_errors);
  g_test_add_func ("/safetensors/header-errors", test_header_errors);
  g_test_add_func ("/safetensors/valid-layouts", test_valid_layouts);
  g_test_add_func ("/safetensors/half-conversions", test_half_conversions);
  g_test_add_func ("/safetensors/real-mimi", test_real_mimi);
  g_test_add_func ("/safetensors/real-vectors", test_real_vectors);
  int ret = g_test_run ();

  GDir *dir = g_dir_open (tmp_dir, 0, NULL);
  const char *name;
  while (dir && (name = g_dir_read_name (dir))) {
    char *p = g_build_filename (tmp_dir, name, NULL);
    g_unlink (p);
    g_free (p);
  }
  if (dir)
    g_dir_close (dir);
  g_rmdir (tmp_dir);
  g_free (tmp_dir);
  return ret;
}
