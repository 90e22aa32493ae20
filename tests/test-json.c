/* Unit tests for models/json.c.  Every input is copied into an exact-size
 * heap buffer without a terminating NUL, so ASan flags any read past len. */
#include "json.h"
#include "model-error.h"

#include <math.h>
#include <string.h>

static MJsonValue *
parse_len (const char *text, size_t len, GError **error)
{
  char *buf = g_malloc (len ? len : 1);
  if (len)
    memcpy (buf, text, len);
  MJsonValue *v = mjson_parse (len ? buf : NULL, len, error);
  g_free (buf); /* the DOM must not point into the input */
  return v;
}

static MJsonValue *
parse_ok (const char *text)
{
  GError *error = NULL;
  MJsonValue *v = parse_len (text, strlen (text), &error);
  if (!v)
    g_error ("parsing %s failed: %s", text, error->message);
  return v;
}

/* Asserts that text fails with a FORMAT error whose message contains
 * `what` (if non-NULL) and "at byte <at>" (if at >= 0). */
static void
check_bad_len (const char *text, size_t len, const char *what, long at)
{
  GError *error = NULL;
  MJsonValue *v = parse_len (text, len, &error);
  if (v)
    g_error ("parsing '%.*s' unexpectedly succeeded", (int) len, text);
  g_assert_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_FORMAT);
  if (what && !strstr (error->message, what))
    g_error ("'%.*s': message '%s' lacks '%s'", (int) len, text, error->message,
        what);
  if (at >= 0) {
    char *s = g_strdup_printf ("at byte %ld", at);
    if (!strstr (error->message, s))
      g_error ("'%.*s': message '%s' lacks '%s'", (int) len, text,
          error->message, s);
    g_free (s);
  }
  g_error_free (error);
}

static void
check_bad (const char *text, const char *what, long at)
{
  check_bad_len (text, strlen (text), what, at);
}

static void
test_literals (void)
{
  MJsonValue *v = parse_ok (" \t\r\ntrue\n ");
  g_assert_cmpint (mjson_type (v), ==, MJSON_BOOL);
  g_assert_true (mjson_bool (v));
  mjson_free (v);
  v = parse_ok ("false");
  g_assert_cmpint (mjson_type (v), ==, MJSON_BOOL);
  g_assert_false (mjson_bool (v));
  mjson_free (v);
  v = parse_ok ("null");
  g_assert_cmpint (mjson_type (v), ==, MJSON_NULL);
  g_assert_cmpstr (mjson_type_name (mjson_type (v)), ==, "null");
  mjson_free (v);

  check_bad ("tru", "invalid literal", 0);
  check_bad ("True", "unexpected character 'T'", 0);
  check_bad ("nul", NULL, 0);
  check_bad ("nulll", "trailing data", 4);
  check_bad ("falsey", "trailing data", 5);
}

typedef struct {
  const char *text;
  double value;
  gboolean is_int;
  int64_t ival;
} NumCase;

static void
test_numbers (void)
{
  static const NumCase cases[] = {
    { "0", 0, TRUE, 0 },
    { "-0", -0.0, TRUE, 0 },
    { "7", 7, TRUE, 7 },
    { "-123", -123, TRUE, -123 },
    { "9223372036854775807", 9223372036854775807.0, TRUE, INT64_MAX },
    { "-9223372036854775808", -9223372036854775808.0, TRUE, INT64_MIN },
    { "9223372036854775808", 9223372036854775808.0, FALSE, 0 },
    { "-9223372036854775809", -9223372036854775809.0, FALSE, 0 },
    /* 2^53 + 1 is not a double, but is an exact int64. */
    { "9007199254740993", 9007199254740992.0, TRUE, 9007199254740993LL },
    { "1.5", 1.5, FALSE, 0 },
    { "-0.25", -0.25, FALSE, 0 },
    { "1.0", 1, TRUE, 1 },
    { "1e3", 1000, TRUE, 1000 },
    { "1E+3", 1000, TRUE, 1000 },
    { "1.5e1", 15, TRUE, 15 },
    { "1500e-2", 15, TRUE, 15 },
    { "0.0e99", 0, TRUE, 0 },
    { "12.5", 12.5, FALSE, 0 },
    { "1e-2", 0.01, FALSE, 0 },
    { "1e18", 1e18, TRUE, 1000000000000000000LL },
    { "1e19", 1e19, FALSE, 0 },
    { "9.223372036854775807e18", 9223372036854775807.0, TRUE, INT64_MAX },
    { "1.0000000000000000001", 1, FALSE, 0 },
    { "1e-400", 0, FALSE, 0 },
    { "1e0000000000000000000000001", 10, TRUE, 10 },
    { "1.7976931348623157e308", 1.7976931348623157e308, FALSE, 0 },
    { "0.000000000000000000000000000000000000000000001e45", 1, TRUE, 1 },
  };
  for (size_t i = 0; i < G_N_ELEMENTS (cases); i++) {
    MJsonValue *v = parse_ok (cases[i].text);
    int64_t iv = 42;
    g_assert_cmpint (mjson_type (v), ==, MJSON_NUMBER);
    g_assert_cmpfloat (mjson_number (v), ==, cases[i].value);
    if (cases[i].value == 0)
      g_assert_cmpint (signbit (mjson_number (v)), ==,
          signbit (cases[i].value));
    if (mjson_is_integer (v, &iv) != cases[i].is_int)
      g_error ("%s: is_integer should be %d", cases[i].text, cases[i].is_int);
    if (cases[i].is_int)
      g_assert_cmpint (iv, ==, cases[i].ival);
    else
      g_assert_cmpint (iv, ==, 42); /* untouched */
    g_assert_true (mjson_is_integer (v, NULL) == cases[i].is_int);
    mjson_free (v);
  }

  check_bad ("01", "leading zero", 1);
  check_bad ("-01", "leading zero", 2);
  check_bad ("-", "expected digit", 1);
  check_bad ("1.", "after '.'", 2);
  check_bad (".5", "unexpected character '.'", 0);
  check_bad ("+1", "unexpected character '+'", 0);
  check_bad ("1e", "exponent", 2);
  check_bad ("1e+", "exponent", 3);
  check_bad ("1.e5", "after '.'", 2);
  check_bad ("-a", "expected digit", 1);
  check_bad ("0x10", "trailing data", 1);
  check_bad ("Infinity", NULL, 0);
  check_bad ("NaN", NULL, 0);
  check_bad ("-Infinity", "expected digit", 1);
  check_bad ("1e400", "out of range", 0);
  check_bad ("[0, -1e999]", "out of range", 4);
  check_bad ("1 2", "trailing data", 2);
}

static void
test_strings (void)
{
  MJsonValue *v = parse_ok ("\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\"");
  g_assert_cmpint (mjson_type (v), ==, MJSON_STRING);
  g_assert_cmpstr (mjson_string (v), ==, "a\"b\\c/d\b\f\n\r\t");
  g_assert_cmpuint (mjson_string_len (v), ==, 12);
  mjson_free (v);

  v = parse_ok ("\"\"");
  g_assert_cmpstr (mjson_string (v), ==, "");
  g_assert_cmpuint (mjson_string_len (v), ==, 0);
  mjson_free (v);

  /* \u escapes: 1-, 2-, 3-byte and surrogate-pair (4-byte) encodings. */
  v = parse_ok ("\"\\u0041\\u00e9\\u20AC\\uD83D\\uDE00\"");
  g_assert_cmpstr (mjson_string (v), ==,
      "A\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
  mjson_free (v);
  v = parse_ok ("\"\\uDBFF\\uDFFF\"");
  g_assert_cmpstr (mjson_string (v), ==, "\xf4\x8f\xbf\xbf");
  mjson_free (v);

  /* Embedded NUL keeps its length. */
  v = parse_ok ("\"a\\u0000b\"");
  g_assert_cmpuint (mjson_string_len (v), ==, 3);
  g_assert_cmpmem (mjson_string (v), 4, "a\0b", 4);
  mjson_free (v);

  /* Raw UTF-8 (2, 3, 4 bytes) and DEL pass through unchanged. */
  const char *raw =
      "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\x7f\xf4\x8f\xbf\xbf\"";
  v = parse_ok (raw);
  g_assert_cmpuint (mjson_string_len (v), ==, strlen (raw) - 2);
  g_assert_cmpmem (mjson_string (v), strlen (raw) - 2, raw + 1,
      strlen (raw) - 2);
  mjson_free (v);

  check_bad ("\"abc", "unterminated string", 4);
  check_bad ("\"abc\\", "unterminated escape", 5);
  check_bad ("\"a\\x\"", "invalid escape", 2);
  check_bad ("\"\\u12G4\"", "invalid hex digit", 5);
  check_bad ("\"\\u12\"", "invalid hex digit", 5);
  check_bad ("\"\\u12", "end of input", 5);
  check_bad ("\"\\uD800\"", "unpaired high surrogate", 1);
  check_bad ("\"\\uD800x\"", "unpaired high surrogate", 1);
  check_bad ("\"\\uD800\\n\"", "unpaired high surrogate", 1);
  check_bad ("\"\\uD800\\u0041\"", "unpaired high surrogate", 1);
  check_bad ("\"\\uD800\\uD800\"", "unpaired high surrogate", 1);
  check_bad ("\"\\uD800\\u", "end of input", 9);
  check_bad ("\"ab\\uDC00\"", "unpaired low surrogate", 3);
  check_bad ("\"a\nb\"", "control character 0x0a", 2);
  check_bad ("\"a\tb\"", "control character 0x09", 2);
  check_bad_len ("\"a\0b\"", 5, "control character 0x00", 2);
  check_bad ("\"\xc0\x80\"", "invalid UTF-8", 1); /* overlong NUL */
  check_bad ("\"\xe0\x80\xaf\"", "invalid UTF-8", 1); /* overlong '/' */
  check_bad ("\"\xed\xa0\x80\"", "invalid UTF-8", 1); /* UTF-8 surrogate */
  check_bad ("\"\xf4\x90\x80\x80\"", "invalid UTF-8", 1); /* > U+10FFFF */
  check_bad ("\"\xf5\x80\x80\x80\"", "invalid UTF-8", 1);
  check_bad ("\"\xff\"", "invalid UTF-8", 1);
  check_bad ("\"a\x80\"", "invalid UTF-8", 2); /* stray continuation */
  check_bad ("\"\xc3(\"", "invalid UTF-8", 1);
  check_bad_len ("\"\xe2\x82", 3, "invalid UTF-8", 1); /* cut at len */
  check_bad ("'a'", "unexpected character", 0);
}

static void
test_arrays (void)
{
  MJsonValue *v = parse_ok ("[ ]");
  g_assert_cmpint (mjson_type (v), ==, MJSON_ARRAY);
  g_assert_cmpuint (mjson_len (v), ==, 0);
  g_assert_null (mjson_at (v, 0));
  mjson_free (v);

  v = parse_ok ("[1, \"two\", [3], {\"four\": 4}, true, null, -7.5]");
  g_assert_cmpuint (mjson_len (v), ==, 7);
  g_assert_cmpfloat (mjson_number (mjson_at (v, 0)), ==, 1);
  g_assert_cmpstr (mjson_string (mjson_at (v, 1)), ==, "two");
  g_assert_cmpint (mjson_type (mjson_at (v, 2)), ==, MJSON_ARRAY);
  g_assert_cmpfloat (mjson_number (mjson_at (mjson_at (v, 2), 0)), ==, 3);
  g_assert_cmpfloat (mjson_number (mjson_get (mjson_at (v, 3), "four")), ==, 4);
  g_assert_true (mjson_bool (mjson_at (v, 4)));
  g_assert_cmpint (mjson_type (mjson_at (v, 5)), ==, MJSON_NULL);
  g_assert_cmpfloat (mjson_number (mjson_at (v, 6)), ==, -7.5);
  g_assert_null (mjson_at (v, 7));
  g_assert_null (mjson_key_at (v, 0));
  g_assert_null (mjson_get (v, "four"));
  mjson_free (v);

  /* Large arrays grow geometrically. */
  GString *s = g_string_new ("[");
  for (int i = 0; i < 100000; i++)
    g_string_append_printf (s, "%s%d", i ? "," : "", i);
  g_string_append_c (s, ']');
  v = parse_ok (s->str);
  g_assert_cmpuint (mjson_len (v), ==, 100000);
  int64_t last;
  g_assert_true (mjson_is_integer (mjson_at (v, 99999), &last));
  g_assert_cmpint (last, ==, 99999);
  mjson_free (v);
  g_string_free (s, TRUE);

  check_bad ("[", "end of input", 1);
  check_bad ("[1", "end of input", 2);
  check_bad ("[1,", "end of input", 3);
  check_bad ("[1,]", "unexpected character ']'", 3);
  check_bad ("[,1]", "unexpected character ','", 1);
  check_bad ("[1 2]", "unexpected character '2'", 3);
  check_bad ("[1:2]", "unexpected character ':'", 2);
  check_bad ("[]]", "trailing data", 2);
  check_bad ("]", "unexpected character ']'", 0);
}

static void
test_objects (void)
{
  MJsonValue *v = parse_ok ("{}");
  g_assert_cmpint (mjson_type (v), ==, MJSON_OBJECT);
  g_assert_cmpuint (mjson_len (v), ==, 0);
  g_assert_null (mjson_get (v, "a"));
  mjson_free (v);

  /* Document order is kept; lookup returns the first of duplicate keys. */
  v = parse_ok ("{\"z\": 1, \"a\": {\"x\": [true]}, \"z\": 2, \"\": \"empty\","
                " \"k\\u0000x\": 3, \"\\u00e9\": 4}");
  g_assert_cmpuint (mjson_len (v), ==, 6);
  g_assert_cmpstr (mjson_key_at (v, 0), ==, "z");
  g_assert_cmpstr (mjson_key_at (v, 1), ==, "a");
  g_assert_cmpstr (mjson_key_at (v, 2), ==, "z");
  g_assert_cmpstr (mjson_key_at (v, 3), ==, "");
  g_assert_cmpuint (mjson_key_len_at (v, 4), ==, 3);
  g_assert_cmpuint (mjson_key_len_at (v, 0), ==, 1);
  g_assert_null (mjson_key_at (v, 6));
  g_assert_cmpfloat (mjson_number (mjson_get (v, "z")), ==, 1);
  g_assert_cmpfloat (mjson_number (mjson_at (v, 2)), ==, 2);
  g_assert_true (
      mjson_bool (mjson_at (mjson_get (mjson_get (v, "a"), "x"), 0)));
  g_assert_cmpstr (mjson_string (mjson_get (v, "")), ==, "empty");
  /* "k\0x" must not match "k". */
  g_assert_null (mjson_get (v, "k"));
  g_assert_cmpfloat (mjson_number (mjson_get (v, "\xc3\xa9")), ==, 4);
  g_assert_null (mjson_get (v, "missing"));
  mjson_free (v);

  check_bad ("{", "end of input", 1);
  check_bad ("{\"a\"", "end of input", 4);
  check_bad ("{\"a\":", "end of input", 5);
  check_bad ("{\"a\" 1}", "unexpected character '1'", 5);
  check_bad ("{\"a\":1,}", "unexpected character '}'", 7);
  check_bad ("{\"a\":1 \"b\":2}", "unexpected character '\"'", 7);
  check_bad ("{1:2}", "unexpected character '1'", 1);
  check_bad ("{a:2}", "unexpected character 'a'", 1);
  check_bad ("{,}", "unexpected character ','", 1);
  check_bad ("{\"a\":1}}", "trailing data", 7);
  check_bad ("{\"\\uDC00\":1}", "unpaired low surrogate", 2);
}

static void
test_accessors_wrong_type (void)
{
  MJsonValue *v = parse_ok ("[\"s\", 3, {\"k\": null}]");
  const MJsonValue *s = mjson_at (v, 0), *n = mjson_at (v, 1),
                   *o = mjson_at (v, 2);
  g_assert_cmpfloat (mjson_number (s), ==, 0);
  g_assert_false (mjson_is_integer (s, NULL));
  g_assert_null (mjson_string (n));
  g_assert_cmpuint (mjson_string_len (n), ==, 0);
  g_assert_false (mjson_bool (n));
  g_assert_cmpuint (mjson_len (s), ==, 0);
  g_assert_null (mjson_at (n, 0));
  g_assert_null (mjson_get (s, "k"));
  g_assert_nonnull (mjson_get (o, "k"));
  g_assert_cmpint (mjson_type (mjson_get (o, "k")), ==, MJSON_NULL);
  /* NULL-tolerant accessors make chained lookups safe. */
  g_assert_null (mjson_get (mjson_get (o, "nope"), "deeper"));
  g_assert_cmpfloat (mjson_number (NULL), ==, 0);
  g_assert_cmpuint (mjson_len (NULL), ==, 0);
  g_assert_cmpstr (mjson_type_name (MJSON_OBJECT), ==, "object");
  g_assert_cmpstr (mjson_type_name (MJSON_ARRAY), ==, "array");
  g_assert_cmpstr (mjson_type_name (MJSON_NUMBER), ==, "number");
  g_assert_cmpstr (mjson_type_name (MJSON_STRING), ==, "string");
  g_assert_cmpstr (mjson_type_name (MJSON_BOOL), ==, "boolean");
  mjson_free (v);
  mjson_free (NULL);
}

static void
test_depth (void)
{
  GString *s = g_string_new (NULL);
  for (int i = 0; i < 64; i++)
    g_string_append (s, i % 2 ? "{\"k\":" : "[");
  g_string_append (s, "1");
  for (int i = 63; i >= 0; i--)
    g_string_append (s, i % 2 ? "}" : "]");
  MJsonValue *v = parse_ok (s->str);
  mjson_free (v);

  g_string_truncate (s, 0);
  for (int i = 0; i < 65; i++)
    g_string_append_c (s, '[');
  g_string_append (s, "1");
  for (int i = 0; i < 65; i++)
    g_string_append_c (s, ']');
  check_bad (s->str, "nesting deeper than 64", 64);

  /* A huge unterminated nest must not recurse past the limit. */
  g_string_truncate (s, 0);
  for (int i = 0; i < 1000000; i++)
    g_string_append_c (s, '[');
  check_bad (s->str, "nesting", 64);
  g_string_free (s, TRUE);
}

static void
test_empty_and_truncated (void)
{
  check_bad_len (NULL, 0, "unexpected end of input", 0);
  check_bad ("   \n", "unexpected end of input", 4);
  check_bad ("\xef\xbb\xbf{}", "unexpected byte 0xef", 0); /* no BOM */

  /* Every proper prefix of a valid document is an error, never a crash or
   * a read beyond len. */
  const char *doc = "{\"a\": [1, -2.5e-3, \"x\\u00e9\\uD83D\\uDE00\xc3\xa9\", "
                    "true, false, null], \"b\": {\"c\": {}}, \"d\": []}";
  size_t n = strlen (doc);
  MJsonValue *v = parse_ok (doc);
  mjson_free (v);
  for (size_t len = 0; len < n; len++) {
    GError *error = NULL;
    v = parse_len (doc, len, &error);
    g_assert_null (v);
    g_assert_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_FORMAT);
    g_error_free (error);
  }
}

static void
test_null_error (void)
{
  /* A NULL GError** is allowed. */
  g_assert_null (mjson_parse ("[1,", 3, NULL));
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/json/literals", test_literals);
  g_test_add_func ("/json/numbers", test_numbers);
  g_test_add_func ("/json/strings", test_strings);
  g_test_add_func ("/json/arrays", test_arrays);
  g_test_add_func ("/json/objects", test_objects);
  g_test_add_func ("/json/accessors-wrong-type", test_accessors_wrong_type);
  g_test_add_func ("/json/depth", test_depth);
  g_test_add_func ("/json/empty-and-truncated", test_empty_and_truncated);
  g_test_add_func ("/json/null-error", test_null_error);
  return g_test_run ();
}
