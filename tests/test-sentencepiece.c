/* Unit tests for models/sentencepiece.c: the lm-tiny tokenizer and its
 * reference ids, synthetic models (byte fallback, whitespace rules, every
 * piece type, unusual but valid encodings) and malformed protobufs.
 *
 * The expected strings for synthetic models follow SentencePiece's
 * DecodeIds; they were cross-checked against python3-sentencepiece on the
 * same model bytes. */
#include "model-error.h"
#include "safetensors.h"
#include "sentencepiece.h"

#include <glib/gstdio.h>
#include <string.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HAVE_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define HAVE_ASAN 1
#endif
#ifdef HAVE_ASAN
#include <sanitizer/asan_interface.h>
#endif

#define SYNTH_NAME "synthetic.model"

/* ---- protobuf writer for synthetic models ------------------------------ */

static void
put_varint (GByteArray *b, guint64 v)
{
  do {
    guint8 c = (guint8) ((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
    g_byte_array_append (b, &c, 1);
    v >>= 7;
  } while (v);
}

static void
put_tag (GByteArray *b, guint32 field, int wt)
{
  put_varint (b, ((guint64) field << 3) | (guint) wt);
}

static void
put_len (GByteArray *b, guint32 field, const void *data, gsize len)
{
  put_tag (b, field, 2);
  put_varint (b, len);
  if (len)
    g_byte_array_append (b, data, (guint) len);
}

static void
put_str (GByteArray *b, guint32 field, const char *s)
{
  put_len (b, field, s, strlen (s));
}

static void
put_uint (GByteArray *b, guint32 field, guint64 v)
{
  put_tag (b, field, 0);
  put_varint (b, v);
}

static void
put_raw (GByteArray *b, const void *bytes, gsize len)
{
  g_byte_array_append (b, bytes, (guint) len);
}

/* Appends `sub` as a length-delimited field and frees it. */
static void
put_msg (GByteArray *b, guint32 field, GByteArray *sub)
{
  put_len (b, field, sub->data, sub->len);
  g_byte_array_unref (sub);
}

static GByteArray *
piece_msg (const char *piece, int type)
{
  GByteArray *p = g_byte_array_new ();
  float score = -1.5f;
  guint8 f[4];
  memcpy (f, &score, 4);
  put_str (p, 1, piece);
  put_tag (p, 2, 5);
  put_raw (p, f, 4);
  /* Like protobuf, leave the default type (NORMAL) implicit. */
  if (type != SP_PIECE_NORMAL)
    put_uint (p, 3, (guint64) type);
  return p;
}

static void
add_piece (GByteArray *model, const char *piece, int type)
{
  put_msg (model, 1, piece_msg (piece, type));
}

/* ---- the synthetic byte-fallback model --------------------------------- */

enum {
  UNK = 0,
  BOS = 1,
  EOS = 2,
  BYTE0 = 3, /* <0x00> .. <0xFF> are 3 .. 258 */
  P_A = 259, /* "▁a" */
  P_B, /* "b" */
  P_SP, /* "▁" */
  P_SPSPC, /* "▁▁c" */
  P_USER, /* "<user>", USER_DEFINED */
  P_UNUSED, /* "▁unused", UNUSED */
  P_XY, /* "x▁y" */
  N_SYNTH
};
#define B(x) (BYTE0 + (x))

typedef struct {
  const char *unk_surface; /* NULL: absent */
  int add_dummy_prefix; /* -1: absent (default true) */
  int remove_extra_whitespaces; /* -1: absent (default true) */
} SynthOpts;

static GByteArray *
build_synth (const SynthOpts *o)
{
  GByteArray *m = g_byte_array_new ();
  add_piece (m, "<unk>", SP_PIECE_UNKNOWN);
  add_piece (m, "<s>", SP_PIECE_CONTROL);
  add_piece (m, "</s>", SP_PIECE_CONTROL);
  for (int b = 0; b < 256; b++) {
    char name[8];
    g_snprintf (name, sizeof name, "<0x%02X>", b);
    add_piece (m, name, SP_PIECE_BYTE);
  }
  add_piece (m,
      "\xe2\x96\x81"
      "a",
      SP_PIECE_NORMAL);
  add_piece (m, "b", SP_PIECE_NORMAL);
  add_piece (m, "\xe2\x96\x81", SP_PIECE_NORMAL);
  add_piece (m,
      "\xe2\x96\x81\xe2\x96\x81"
      "c",
      SP_PIECE_NORMAL);
  add_piece (m, "<user>", SP_PIECE_USER_DEFINED);
  add_piece (m, "\xe2\x96\x81unused", SP_PIECE_UNUSED);
  add_piece (m, "x\xe2\x96\x81y", SP_PIECE_NORMAL);

  GByteArray *t = g_byte_array_new ();
  put_uint (t, 3, 2); /* model_type BPE: irrelevant, exercises skipping */
  put_uint (t, 35, 1); /* byte_fallback */
  put_uint (t, 40, UNK);
  put_uint (t, 41, BOS);
  put_uint (t, 42, EOS);
  put_uint (t, 43, (guint64) (gint64) -1); /* pad_id -1: 10-byte varint */
  if (o && o->unk_surface)
    put_str (t, 44, o->unk_surface);
  put_msg (m, 2, t);

  GByteArray *n = g_byte_array_new ();
  put_str (n, 1, "identity");
  if (o && o->add_dummy_prefix >= 0)
    put_uint (n, 3, (guint64) o->add_dummy_prefix);
  if (o && o->remove_extra_whitespaces >= 0)
    put_uint (n, 4, (guint64) o->remove_extra_whitespaces);
  put_msg (m, 3, n);
  return m;
}

static SpModel *
load_ok (const GByteArray *b)
{
  GError *error = NULL;
  SpModel *m = sp_model_load_from_data (b->data, b->len, SYNTH_NAME, &error);
  g_assert_no_error (error);
  g_assert_nonnull (m);
  return m;
}

static SpModel *
load_synth (const SynthOpts *o)
{
  GByteArray *b = build_synth (o);
  SpModel *m = load_ok (b);
  g_byte_array_unref (b);
  return m;
}

static void
assert_msg_has (const GError *error, const char *what)
{
  if (what && !strstr (error->message, what))
    g_error ("message '%s' lacks '%s'", error->message, what);
}

/* Loading must fail with a FORMAT error naming the model and the byte offset
 * and containing `what`. */
static void
expect_error (const guint8 *data, gsize len, const char *what)
{
  GError *error = NULL;
  SpModel *m = sp_model_load_from_data (data, len, SYNTH_NAME, &error);
  if (m)
    g_error ("loading unexpectedly succeeded (expected '%s')", what);
  g_assert_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_FORMAT);
  assert_msg_has (error, SYNTH_NAME ": byte ");
  assert_msg_has (error, what);
  g_assert_true (g_utf8_validate (error->message, -1, NULL));
  if (g_test_verbose ())
    g_printerr ("  %s\n", error->message);
  g_error_free (error);
}

static void
expect_error_ba (GByteArray *b, const char *what)
{
  expect_error (b->data, b->len, what);
  g_byte_array_unref (b);
}

/* Decodes ids whole and token by token; both must give `expected`.  The
 * streaming run appends to a non-empty string to show that the leading-space
 * rule depends on the state, not on what the caller's buffer holds. */
static void
check_decode (const SpModel *m, const int *ids, int n, const char *expected)
{
  char *whole = sp_decode_ids (m, ids, n);
  g_assert_true (g_utf8_validate (whole, -1, NULL));
  g_assert_cmpstr (whole, ==, expected);
  g_free (whole);

  GString *out = g_string_new ("prefix|");
  SpDecodeState st;
  sp_decode_state_init (&st);
  for (int i = 0; i < n; i++) {
    sp_decode_piece (m, ids[i], out, &st);
    /* Text is only ever emitted in whole characters. */
    g_assert_true (g_utf8_validate (out->str, (gssize) out->len, NULL));
  }
  sp_decode_flush (m, out, &st);
  g_assert_cmpstr (out->str + strlen ("prefix|"), ==, expected);
  g_string_free (out, TRUE);
}

#define CHECK(m, expected, ...)                                  \
  do {                                                           \
    const int ids_[] = { __VA_ARGS__ };                          \
    check_decode (m, ids_, (int) G_N_ELEMENTS (ids_), expected); \
  } while (0)

/* ---- real tokenizer ---------------------------------------------------- */

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

#define TOKENIZER "conformance/lm-tiny/tokenizer.model"
#define VECTORS "conformance/lm-tiny/vectors.safetensors"

/* The data ships with the source tree: its absence is a broken checkout or
 * environment, not a reason to pass. */
static SpModel *
load_real (char **path_out)
{
  char *path = data_path (TOKENIZER);
  if (!path) {
    g_test_fail_printf ("%s not found (set MOSHI_TEST_DATA)", TOKENIZER);
    return NULL;
  }
  GError *error = NULL;
  SpModel *m = sp_model_load (path, &error);
  g_assert_no_error (error);
  g_assert_nonnull (m);
  if (path_out)
    *path_out = path;
  else
    g_free (path);
  return m;
}

static void
test_real_pieces (void)
{
  SpModel *m = load_real (NULL);
  if (!m)
    return;
  static const char *const first[] = { "<unk>", "<s>", "</s>", "<pad>",
    "\xe2\x96\x81", "\xe2\x96\x81t", "e", "s", "he", "\xe2\x96\x81Th",
    "\xe2\x96\x81"
    "a",
    ".", "t", "es",
    "\xe2\x96\x81"
    "f",
    "re" };
  g_assert_cmpint (sp_model_vocab_size (m), ==, 100);
  for (int i = 0; i < (int) G_N_ELEMENTS (first); i++)
    g_assert_cmpstr (sp_model_piece (m, i), ==, first[i]);
  g_assert_cmpstr (sp_model_piece (m, 44), ==, "\xe2\x96\x81today");
  g_assert_cmpstr (sp_model_piece (m, 99), ==, "v");

  g_assert_cmpint (sp_model_piece_type (m, 0), ==, SP_PIECE_UNKNOWN);
  for (int i = 1; i <= 3; i++)
    g_assert_cmpint (sp_model_piece_type (m, i), ==, SP_PIECE_CONTROL);
  for (int i = 4; i < 100; i++)
    g_assert_cmpint (sp_model_piece_type (m, i), ==, SP_PIECE_NORMAL);

  g_assert_cmpint (sp_model_unk_id (m), ==, 0);
  g_assert_cmpint (sp_model_bos_id (m), ==, 1);
  g_assert_cmpint (sp_model_eos_id (m), ==, 2);
  g_assert_cmpint (sp_model_pad_id (m), ==, 3);

  /* Out of range. */
  g_assert_null (sp_model_piece (m, -1));
  g_assert_null (sp_model_piece (m, 100));
  g_assert_null (sp_model_piece (m, G_MININT));
  g_assert_null (sp_model_piece (m, G_MAXINT));
  g_assert_cmpint (sp_model_piece_type (m, -1), ==, 0);
  g_assert_cmpint (sp_model_piece_type (m, 100), ==, 0);
  sp_model_free (m);
}

static void
test_real_decode (void)
{
  static const char *const sentences[] = { "The cat sees the ball today.",
    "A farmer brings some bread!", "hello world" };
  static const int row0[] = { 9, 6, 30, 12, 32, 6, 13, 5, 8, 28, 45, 81, 44,
    11 };
  SpModel *m = load_real (NULL);
  char *vpath = data_path (VECTORS);
  if (!m || !vpath) {
    if (!vpath)
      g_test_fail_printf ("%s not found (set MOSHI_TEST_DATA)", VECTORS);
    sp_model_free (m);
    g_free (vpath);
    return;
  }
  GError *error = NULL;
  StFile *f = st_open (vpath, &error);
  g_assert_no_error (error);
  const int64_t shape[] = { 3, 17 };
  const StTensor *t = st_require (f, "text_ids", 2, shape, &error);
  g_assert_no_error (error);
  int64_t raw[3 * 17];
  g_assert_true (st_read_i64 (f, t, raw, &error));
  g_assert_no_error (error);

  for (int r = 0; r < 3; r++) {
    int ids[17], n = 0;
    for (int c = 0; c < 17 && raw[r * 17 + c] >= 0; c++)
      ids[n++] = (int) raw[r * 17 + c];
    g_assert_cmpint (n, >, 0);
    if (r == 0) {
      g_assert_cmpint (n, ==, G_N_ELEMENTS (row0));
      g_assert_cmpmem (ids, sizeof row0, row0, sizeof row0);
    }
    check_decode (m, ids, n, sentences[r]);

    /* <s> first, </s> last and <pad> anywhere are invisible: the leading
     * space is still dropped after a control piece. */
    int framed[24], k = 0;
    framed[k++] = 1;
    framed[k++] = 3;
    for (int i = 0; i < n; i++) {
      framed[k++] = ids[i];
      if (i == 1)
        framed[k++] = 3;
    }
    framed[k++] = 2;
    check_decode (m, framed, k, sentences[r]);

    /* The raw -1 padding is out of range and skipped. */
    int padded[17];
    for (int c = 0; c < 17; c++)
      padded[c] = (int) raw[r * 17 + c];
    check_decode (m, padded, 17, sentences[r]);
  }

  /* Values checked with python3-sentencepiece on this file. */
  CHECK (m, " \xe2\x81\x87  The", 0, 9, 6, 3, 1, 2);
  CHECK (m, "a", 4, 4, 10); /* leading "▁" pieces all vanish */
  CHECK (m, "", 1, 2, 3);
  CHECK (m, "", 4);
  CHECK (m, " \xe2\x81\x87 ", 0);
  CHECK (m, "a  \xe2\x81\x87  a", 10, 4, 0, 10);

  st_unref (f);
  g_free (vpath);
  sp_model_free (m);
}

/* Every proper prefix of the real file either fails cleanly or (when it
 * ends on a field boundary) loads a consistent model.  Under ASan the bytes
 * past the prefix are poisoned so that any over-read is caught; prefixes are
 * taken longest first so that each step poisons one more byte. */
static void
test_real_prefixes (void)
{
  char *path = NULL;
  SpModel *full = load_real (&path);
  if (!full)
    return;
  gchar *contents;
  gsize len;
  GError *error = NULL;
  g_file_get_contents (path, &contents, &len, &error);
  g_assert_no_error (error);
#ifdef HAVE_ASAN
  ASAN_POISON_MEMORY_REGION (contents + len, 1); /* g_file_get_contents' NUL */
#endif
  int loaded = 0;
  for (gsize l = len; l-- > 0;) {
#ifdef HAVE_ASAN
    ASAN_POISON_MEMORY_REGION (contents + l, 1);
#endif
    SpModel *m =
        sp_model_load_from_data ((const guint8 *) contents, l, path, &error);
    if (m) {
      loaded++;
      g_assert_no_error (error);
      int n = sp_model_vocab_size (m);
      g_assert_cmpint (n, >=, 1);
      g_assert_cmpint (n, <=, 100);
      for (int i = 0; i < n; i++)
        g_assert_cmpstr (sp_model_piece (m, i), ==, sp_model_piece (full, i));
      sp_model_free (m);
    } else {
      g_assert_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_FORMAT);
      assert_msg_has (error, path);
      assert_msg_has (error, ": byte ");
      g_clear_error (&error);
    }
  }
#ifdef HAVE_ASAN
  ASAN_UNPOISON_MEMORY_REGION (contents, len + 1);
#endif
  /* Prefixes ending after each of the 100 pieces, and after the trainer
   * spec, are valid models; nothing inside a field is. */
  g_assert_cmpint (loaded, ==, 101);

  /* Single-byte corruption of the vocabulary part: no crash, and either a
   * clean error or a model. */
  for (gsize i = 0; i < MIN (len, 1400); i++) {
    static const guint8 values[] = { 0x00, 0x07, 0x80, 0xff };
    guint8 saved = (guint8) contents[i];
    for (gsize v = 0; v < G_N_ELEMENTS (values); v++) {
      contents[i] = (char) values[v];
      SpModel *m = sp_model_load_from_data ((const guint8 *) contents, len,
          path, &error);
      if (m) {
        char *s = sp_decode_ids (m, (const int[]){ 0, 1, 4, 5, 6, 99 }, 6);
        g_assert_true (g_utf8_validate (s, -1, NULL));
        g_free (s);
        sp_model_free (m);
      } else {
        g_assert_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_FORMAT);
        g_clear_error (&error);
      }
    }
    contents[i] = (char) saved;
  }
  g_free (contents);
  g_free (path);
  sp_model_free (full);
}

static void
test_file_errors (void)
{
  GError *error = NULL;
  const char *missing = "/nonexistent/dir/tokenizer.model";
  g_assert_null (sp_model_load (missing, &error));
  g_assert_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_IO);
  assert_msg_has (error, missing);
  g_clear_error (&error);

  /* An empty file is a valid (empty) protobuf but not a model. */
  char *dir = g_dir_make_tmp ("test-sentencepiece-XXXXXX", &error);
  g_assert_no_error (error);
  char *empty = g_build_filename (dir, "empty.model", NULL);
  g_file_set_contents (empty, "", 0, &error);
  g_assert_no_error (error);
  g_assert_null (sp_model_load (empty, &error));
  g_assert_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_FORMAT);
  assert_msg_has (error, empty);
  assert_msg_has (error, "no pieces");
  g_clear_error (&error);
  g_remove (empty);
  g_rmdir (dir);
  g_free (empty);
  g_free (dir);

  /* NULL data with length 0 is allowed; NULL name gets a placeholder. */
  g_assert_null (sp_model_load_from_data (NULL, 0, NULL, &error));
  assert_msg_has (error, "<memory>: byte 0: no pieces");
  g_clear_error (&error);
}

/* ---- synthetic models -------------------------------------------------- */

static void
test_synth_basics (void)
{
  SpModel *m = load_synth (NULL);
  g_assert_cmpint (sp_model_vocab_size (m), ==, N_SYNTH);
  g_assert_cmpstr (sp_model_piece (m, B (0xe2)), ==, "<0xE2>");
  g_assert_cmpint (sp_model_piece_type (m, B (0)), ==, SP_PIECE_BYTE);
  g_assert_cmpint (sp_model_piece_type (m, P_USER), ==, SP_PIECE_USER_DEFINED);
  g_assert_cmpint (sp_model_piece_type (m, P_UNUSED), ==, SP_PIECE_UNUSED);
  g_assert_cmpint (sp_model_piece_type (m, P_B), ==, SP_PIECE_NORMAL);
  g_assert_cmpint (sp_model_unk_id (m), ==, 0);
  g_assert_cmpint (sp_model_bos_id (m), ==, 1);
  g_assert_cmpint (sp_model_eos_id (m), ==, 2);
  g_assert_cmpint (sp_model_pad_id (m), ==, -1);

  /* Control pieces are invisible, user-defined and unused ones are text
   * (SentencePiece only hides CONTROL), inner U+2581 become spaces. */
  CHECK (m, "ab", BOS, P_A, EOS, P_B, EOS);
  CHECK (m, "<user> a", P_USER, P_A);
  CHECK (m, "unused a unused", P_UNUSED, P_A, P_UNUSED);
  CHECK (m, "x yx y", P_XY, P_XY);
  CHECK (m, " \xe2\x81\x87  a", UNK, P_A);
  CHECK (m, "a \xe2\x81\x87 b", P_A, UNK, P_B);
  sp_model_free (m);

  /* Custom unk surface. */
  SynthOpts o = { .unk_surface = "<?>", -1, -1 };
  m = load_synth (&o);
  CHECK (m, "<?> a", UNK, P_A);
  sp_model_free (m);
  /* An empty unk surface leaves the sequence at its start. */
  o.unk_surface = "";
  m = load_synth (&o);
  CHECK (m, "a", UNK, P_A);
  sp_model_free (m);
}

static void
test_byte_fallback (void)
{
  SpModel *m = load_synth (NULL);
  CHECK (m, "\xe2\x82\xac", B (0xe2), B (0x82), B (0xac)); /* € */
  CHECK (m,
      "a\xe2\x82\xac"
      "b",
      P_A, B (0xe2), B (0x82), B (0xac), P_B);
  CHECK (m, "\xf0\x9f\x98\x80", B (0xf0), B (0x9f), B (0x98), B (0x80));
  CHECK (m, "\xc3\xa9\xc3\xa9", B (0xc3), B (0xa9), B (0xc3), B (0xa9));
  CHECK (m, "A\n", B ('A'), B ('\n'));
  /* A byte-fallback U+FFFD is a valid character. */
  CHECK (m, "\xef\xbf\xbd", B (0xef), B (0xbf), B (0xbd));

#define FFFD "\xef\xbf\xbd"
  CHECK (m, FFFD, B (0xff));
  CHECK (m, FFFD, B (0x80)); /* lone continuation byte */
  CHECK (m, FFFD FFFD, B (0xc0), B (0xaf)); /* overlong '/' */
  CHECK (m, FFFD FFFD FFFD, B (0xe0), B (0x80), B (0xaf)); /* overlong */
  CHECK (m, FFFD FFFD FFFD, B (0xed), B (0xa0), B (0x80)); /* surrogate */
  CHECK (m, FFFD FFFD FFFD FFFD, B (0xf4), B (0x90), B (0x80),
      B (0x80)); /* > U+10FFFF */
  CHECK (m, FFFD "A", B (0xe2), B ('A'));
  /* Incomplete at the end of the run: one U+FFFD per byte. */
  CHECK (m, FFFD FFFD, B (0xe2), B (0x82));
  CHECK (m, FFFD FFFD "b", B (0xe2), B (0x82), P_B);
  CHECK (m, FFFD FFFD FFFD " a", B (0xf0), B (0x9f), B (0x98), P_A);
  /* A control piece ends the run too. */
  CHECK (m, FFFD FFFD FFFD, B (0xe2), BOS, B (0x82), B (0xac));
  /* Mixed: valid, invalid, valid. */
  CHECK (m, "\xc3\xa9" FFFD "\xe2\x82\xac", B (0xc3), B (0xa9), B (0xfe),
      B (0xe2), B (0x82), B (0xac));

  /* Bytes are text: after a byte-fallback space the next leading U+2581 is
   * kept.  A leading byte space is never dropped. */
  CHECK (m, "  a", B (' '), P_A);
  CHECK (m, "\xe2\x82\xac a", B (0xe2), B (0x82), B (0xac), P_A);
  CHECK (m, FFFD " a", B (0xe2), P_A);

  /* <0x00> gives nothing (SentencePiece: U+0000) but still counts as text,
   * so the following leading space is kept as SentencePiece keeps it. */
  CHECK (m, " a", B (0), P_A);
  CHECK (m, "b", P_B, B (0));

  /* Streaming emits each character as soon as it is complete, and an
   * invalid byte at once. */
  GString *out = g_string_new (NULL);
  SpDecodeState st;
  sp_decode_state_init (&st);
  sp_decode_piece (m, B (0xe2), out, &st);
  sp_decode_piece (m, B (0x82), out, &st);
  g_assert_cmpuint (out->len, ==, 0);
  g_assert_cmpuint (st.n_pending, ==, 2);
  sp_decode_piece (m, B (0xac), out, &st);
  g_assert_cmpstr (out->str, ==, "\xe2\x82\xac");
  g_assert_cmpuint (st.n_pending, ==, 0);
  sp_decode_piece (m, B (0xff), out, &st);
  g_assert_cmpstr (out->str, ==, "\xe2\x82\xac" FFFD);
  sp_decode_piece (m, B (0xf0), out, &st);
  sp_decode_piece (m, B (0x9f), out, &st);
  sp_decode_piece (m, B (0x98), out, &st);
  g_assert_cmpuint (st.n_pending, ==, 3);
  sp_decode_piece (m, B (0x41), out, &st); /* 'A' breaks F0 9F 98 */
  g_assert_cmpstr (out->str, ==, "\xe2\x82\xac" FFFD FFFD FFFD FFFD "A");
  sp_decode_flush (m, out, &st);
  g_assert_cmpstr (out->str, ==, "\xe2\x82\xac" FFFD FFFD FFFD FFFD "A");
  g_string_free (out, TRUE);
#undef FFFD
  sp_model_free (m);
}

/* How a leading U+2581 is dropped depends on the NormalizerSpec flags. */
static void
test_leading_space (void)
{
  /* add_dummy_prefix, remove_extra_whitespaces: absent means true. */
  SynthOpts both = { NULL, -1, -1 };
  SynthOpts adp_only = { NULL, 1, 0 };
  SynthOpts rew_only = { NULL, 0, 1 };
  SynthOpts neither = { NULL, 0, 0 };
  SpModel *m;

  /* remove_extra_whitespaces: every leading U+2581 goes until text shows. */
  m = load_synth (&both);
  CHECK (m, "a", P_SP, P_SP, P_A);
  CHECK (m, " c", P_SPSPC); /* only the first of the piece */
  CHECK (m, "a a", BOS, P_A, P_A);
  CHECK (m, "b a", P_B, P_A);
  CHECK (m, "", P_SP);
  sp_model_free (m);
  m = load_synth (&rew_only);
  CHECK (m, "a", P_SP, P_SP, P_A);
  CHECK (m, " c", P_SPSPC);
  sp_model_free (m);

  /* add_dummy_prefix alone: exactly one leading U+2581 goes. */
  m = load_synth (&adp_only);
  CHECK (m, "  a", P_SP, P_SP, P_A);
  CHECK (m, " a", P_SP, BOS, P_A);
  CHECK (m, "a a", P_A, P_A);
  CHECK (m, " c", P_SPSPC);
  sp_model_free (m);

  /* Neither: spaces are kept. */
  m = load_synth (&neither);
  CHECK (m, "  a", P_SP, P_A);
  CHECK (m, " a", BOS, P_A);
  sp_model_free (m);
}

static void
test_out_of_range (void)
{
  SpModel *m = load_synth (NULL);
  GString *out = g_string_new (NULL);
  SpDecodeState st;
  sp_decode_state_init (&st);
  g_assert_false (sp_decode_piece (m, -1, out, &st));
  g_assert_false (sp_decode_piece (m, N_SYNTH, out, &st));
  g_assert_false (sp_decode_piece (m, G_MAXINT, out, &st));
  g_assert_false (sp_decode_piece (m, G_MININT, out, &st));
  g_assert_cmpuint (out->len, ==, 0);
  g_assert_true (st.at_start);
  g_assert_true (sp_decode_piece (m, P_A, out, &st));
  g_assert_cmpstr (out->str, ==, "a");
  g_string_free (out, TRUE);

  /* Skipped ids change nothing: they neither end a byte run nor the start
   * of the sequence. */
  CHECK (m, "a", -1, P_A);
  CHECK (m, "\xe2\x82\xac", B (0xe2), -7, B (0x82), N_SYNTH, B (0xac));
  CHECK (m, "", -1, G_MAXINT);

  char *s = sp_decode_ids (m, NULL, 0);
  g_assert_cmpstr (s, ==, "");
  g_free (s);
  sp_model_free (m);
}

/* Random sequences: token-by-token decoding equals whole decoding, and the
 * output is always valid UTF-8. */
static void
test_streaming_random (void)
{
  SpModel *synth = load_synth (NULL);
  SpModel *real = load_real (NULL);
  GRand *rand = g_rand_new_with_seed (1244);
  for (int iter = 0; iter < 2000; iter++) {
    const SpModel *m = (iter & 1) && real ? real : synth;
    int vocab = sp_model_vocab_size (m);
    int ids[40];
    int n = g_rand_int_range (rand, 0, 40);
    for (int i = 0; i < n; i++) {
      int r = g_rand_int_range (rand, 0, 100);
      if (m == synth && r < 60)
        /* Mostly bytes, biased towards UTF-8 lead and continuation bytes. */
        ids[i] = B (r < 30 ? 0x80 + g_rand_int_range (rand, 0, 0x40)
                           : g_rand_int_range (rand, 0, 256));
      else if (r < 3)
        ids[i] = -1;
      else
        ids[i] = g_rand_int_range (rand, 0, vocab);
    }
    char *whole = sp_decode_ids (m, ids, n);
    g_assert_true (g_utf8_validate (whole, -1, NULL));
    GString *out = g_string_new (NULL);
    SpDecodeState st;
    sp_decode_state_init (&st);
    for (int i = 0; i < n; i++)
      sp_decode_piece (m, ids[i], out, &st);
    sp_decode_flush (m, out, &st);
    g_assert_cmpstr (out->str, ==, whole);
    g_string_free (out, TRUE);
    g_free (whole);
  }
  g_rand_free (rand);
  sp_model_free (synth);
  sp_model_free (real);
}

/* Valid encodings a careless reader might refuse (python3-sentencepiece
 * loads this model and decodes the same text). */
static void
test_wire_format_valid (void)
{
  static const guint8 group[] = {
    /* field 9 start-group { field 10 varint 5, field 11 start-group {
     * field 12 fixed64 } end 11 } end 9 */
    (9 << 3) | 3, (10 << 3) | 0, 5, (11 << 3) | 3, (12 << 3) | 1, 1, 2, 3, 4, 5,
    6, 7, 8, (11 << 3) | 4, (9 << 3) | 4
  };
  GByteArray *b = g_byte_array_new ();
  /* Unknown fields of every wire type, at the top level... */
  put_uint (b, 100, 12345678901234ULL);
  put_raw (b, group, sizeof group);
  put_tag (b, 7, 5);
  put_raw (b, "\1\2\3\4", 4);
  put_tag (b, 8, 1);
  put_raw (b, "\1\2\3\4\5\6\7\10", 8);
  put_len (b, 4, NULL, 0); /* empty self_test_data */
  /* ... and inside a piece, whose fields come in an unusual order; a
   * repeated scalar keeps the last value. */
  GByteArray *p = g_byte_array_new ();
  put_uint (p, 3, SP_PIECE_NORMAL);
  put_raw (p, group, sizeof group);
  put_str (p, 1, "first");
  put_uint (p, 99, 1);
  put_str (p, 1, "<unk>");
  put_uint (p, 3, SP_PIECE_UNKNOWN);
  put_msg (b, 1, p);
  add_piece (b, "\xe2\x96\x81hi", SP_PIECE_NORMAL);
  /* A trainer spec split in two messages merges; an int32 written as a
   * 5-byte varint keeps its low 32 bits, as protobuf does. */
  GByteArray *t = g_byte_array_new ();
  put_uint (t, 40, 0);
  put_uint (t, 41, 0xffffffffu); /* bos_id -1 */
  put_raw (t, group, sizeof group);
  put_msg (b, 2, t);
  add_piece (b, "</s>", SP_PIECE_CONTROL);
  t = g_byte_array_new ();
  put_uint (t, 42, 2);
  put_uint (t, 43, 1);
  put_msg (b, 2, t);
  /* Empty normalizer spec: flags keep their defaults.  Field 5
   * (denormalizer_spec) is skipped. */
  put_len (b, 3, NULL, 0);
  GByteArray *d = g_byte_array_new ();
  put_str (d, 1, "identity");
  put_msg (b, 5, d);

  SpModel *m = load_ok (b);
  g_assert_cmpint (sp_model_vocab_size (m), ==, 3);
  g_assert_cmpstr (sp_model_piece (m, 0), ==, "<unk>");
  g_assert_cmpint (sp_model_piece_type (m, 0), ==, SP_PIECE_UNKNOWN);
  g_assert_cmpint (sp_model_unk_id (m), ==, 0);
  g_assert_cmpint (sp_model_bos_id (m), ==, -1);
  g_assert_cmpint (sp_model_eos_id (m), ==, 2);
  g_assert_cmpint (sp_model_pad_id (m), ==, 1);
  CHECK (m, "hi hi", 1, 2, 1);
  sp_model_free (m);
  g_byte_array_unref (b);

  /* No trainer spec: proto defaults (bos 1 and eos 2 exist here, pad -1). */
  b = g_byte_array_new ();
  add_piece (b, "<unk>", SP_PIECE_UNKNOWN);
  add_piece (b, "<s>", SP_PIECE_CONTROL);
  add_piece (b, "</s>", SP_PIECE_CONTROL);
  m = load_ok (b);
  g_assert_cmpint (sp_model_unk_id (m), ==, 0);
  g_assert_cmpint (sp_model_bos_id (m), ==, 1);
  g_assert_cmpint (sp_model_eos_id (m), ==, 2);
  g_assert_cmpint (sp_model_pad_id (m), ==, -1);
  sp_model_free (m);
  g_byte_array_unref (b);

  /* Recorded ids outside the vocabulary read as -1. */
  b = g_byte_array_new ();
  add_piece (b, "<unk>", SP_PIECE_UNKNOWN);
  t = g_byte_array_new ();
  put_uint (t, 41, 7);
  put_uint (t, 42, (guint64) (gint64) -5);
  put_msg (b, 2, t);
  m = load_ok (b);
  g_assert_cmpint (sp_model_unk_id (m), ==, 0);
  g_assert_cmpint (sp_model_bos_id (m), ==, -1);
  g_assert_cmpint (sp_model_eos_id (m), ==, -1);
  sp_model_free (m);
  g_byte_array_unref (b);
}

/* A model with one valid piece <unk> followed by `tail`. */
static GByteArray *
with_tail (const void *tail, gsize len)
{
  GByteArray *b = g_byte_array_new ();
  add_piece (b, "<unk>", SP_PIECE_UNKNOWN);
  put_raw (b, tail, len);
  return b;
}

static GByteArray *
one_piece (const void *text, gsize len, int type)
{
  GByteArray *b = g_byte_array_new ();
  add_piece (b, "<unk>", SP_PIECE_UNKNOWN);
  GByteArray *p = g_byte_array_new ();
  put_len (p, 1, text, len);
  if (type != SP_PIECE_NORMAL)
    put_uint (p, 3, (guint64) type);
  put_msg (b, 1, p);
  return b;
}

static void
test_malformed (void)
{
  /* Wire format. */
  static const guint8 trunc_varint[] = { 0x28, 0x80 };
  expect_error_ba (with_tail (trunc_varint, 2), "truncated varint");
  static const guint8 trunc_tag[] = { 0x80 };
  expect_error_ba (with_tail (trunc_tag, 1), "truncated varint");
  static const guint8 long_varint[] = { 0x28, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0x81, 0x00 };
  expect_error_ba (with_tail (long_varint, sizeof long_varint),
      "varint longer than 10 bytes");
  static const guint8 big_varint[] = { 0x28, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0x02 };
  expect_error_ba (with_tail (big_varint, sizeof big_varint),
      "varint overflows 64 bits");
  /* Overlong but in range (padding with 0x80) is still at most 10 bytes. */
  static const guint8 padded_varint[] = { 0x28, 0x81, 0x80, 0x80, 0x80, 0x80,
    0x80, 0x80, 0x80, 0x80, 0x00 };
  GByteArray *b = with_tail (padded_varint, sizeof padded_varint);
  SpModel *m = load_ok (b);
  sp_model_free (m);
  g_byte_array_unref (b);

  static const guint8 past_end[] = { 0x22, 0x05, 'a', 'b' };
  expect_error_ba (with_tail (past_end, sizeof past_end),
      "length 5 runs past the end (2 bytes left)");
  static const guint8 huge_len[] = { 0x22, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0x01 };
  expect_error_ba (with_tail (huge_len, sizeof huge_len), "runs past the end");
  static const guint8 wt6[] = { (5 << 3) | 6 };
  expect_error_ba (with_tail (wt6, 1), "field 5: invalid wire type 6");
  static const guint8 wt7[] = { (5 << 3) | 7 };
  expect_error_ba (with_tail (wt7, 1), "invalid wire type 7");
  static const guint8 field0[] = { 0x00, 0x00 };
  expect_error_ba (with_tail (field0, 2), "invalid field number 0");
  static const guint8 field_big[] = { 0xf8, 0xff, 0xff, 0xff, 0x7f, 0x00 };
  expect_error_ba (with_tail (field_big, sizeof field_big),
      "invalid field number");
  static const guint8 trunc_fixed32[] = { (7 << 3) | 5, 1, 2, 3 };
  expect_error_ba (with_tail (trunc_fixed32, 4), "truncated 4-byte fixed");
  static const guint8 trunc_fixed64[] = { (7 << 3) | 1, 1, 2, 3, 4, 5, 6, 7 };
  expect_error_ba (with_tail (trunc_fixed64, 8), "truncated 8-byte fixed");
  static const guint8 end_group[] = { (9 << 3) | 4 };
  expect_error_ba (with_tail (end_group, 1),
      "field 9: end-group without start-group");
  static const guint8 bad_group[] = { (9 << 3) | 3, (8 << 3) | 4 };
  expect_error_ba (with_tail (bad_group, 2),
      "end-group does not match start-group of field 9");
  static const guint8 open_group[] = { (9 << 3) | 3, 0x28, 0x01 };
  expect_error_ba (with_tail (open_group, 3), "group of field 9 is not closed");
  guint8 deep[65];
  memset (deep, (9 << 3) | 3, sizeof deep);
  expect_error_ba (with_tail (deep, sizeof deep), "groups nested deeper");
  /* Inside a sub-message, lengths are checked against the sub-message. */
  static const guint8 inner[] = { 0x0a, 0x03, 0x0a, 0x05, 'a', 'b', 'c', 'd',
    'e' };
  expect_error_ba (with_tail (inner, sizeof inner),
      "length 5 runs past the end (1 bytes left)");

  /* Known fields with the wrong wire type. */
  static const guint8 pieces_varint[] = { 0x08, 0x01 };
  expect_error_ba (with_tail (pieces_varint, 2),
      "field 1 (pieces): wire type varint, expected length-delimited");
  static const guint8 trainer_varint[] = { 0x10, 0x01 };
  expect_error_ba (with_tail (trainer_varint, 2), "field 2 (trainer_spec)");
  static const guint8 bad_type_wt[] = { 0x0a, 0x05, 0x0a, 0x01, 'x', 0x1d,
    0x01 };
  expect_error_ba (with_tail (bad_type_wt, sizeof bad_type_wt),
      "field 3 (type): wire type fixed32, expected varint");
  static const guint8 bad_score_wt[] = { 0x0a, 0x05, 0x0a, 0x01, 'x', 0x10,
    0x01 };
  expect_error_ba (with_tail (bad_score_wt, sizeof bad_score_wt),
      "field 2 (score)");
  static const guint8 bad_unk_id[] = { 0x12, 0x03, 0xc2, 0x02, 0x00 };
  expect_error_ba (with_tail (bad_unk_id, sizeof bad_unk_id),
      "field 40 (unk_id): wire type length-delimited");

  /* Offsets point at the problem. */
  b = with_tail (past_end, sizeof past_end);
  char *want = g_strdup_printf ("byte %u: length 5", b->len - 3);
  expect_error_ba (b, want);
  g_free (want);

  /* Pieces. */
  expect_error_ba (one_piece ("\xff", 1, SP_PIECE_NORMAL),
      "piece 1: text is not valid UTF-8");
  expect_error_ba (one_piece ("a\0b", 3, SP_PIECE_NORMAL), "not valid UTF-8");
  expect_error_ba (one_piece ("\xc0\xaf", 2, SP_PIECE_NORMAL),
      "not valid UTF-8");
  expect_error_ba (one_piece ("\xed\xa0\x80", 3, SP_PIECE_NORMAL),
      "not valid UTF-8");
  expect_error_ba (one_piece ("\xe2\x96", 2, SP_PIECE_NORMAL),
      "not valid UTF-8");
  expect_error_ba (one_piece ("", 0, SP_PIECE_NORMAL), "piece 1: empty piece");
  static const guint8 no_text[] = { 0x0a, 0x02, 0x18, 0x01 };
  expect_error_ba (with_tail (no_text, sizeof no_text), "piece 1: empty piece");
  expect_error_ba (one_piece ("x", 1, 7), "piece 1: invalid type 7");
  expect_error_ba (one_piece ("x", 1, 0), "piece 1: invalid type 0");

  b = g_byte_array_new ();
  add_piece (b, "a", SP_PIECE_NORMAL);
  expect_error_ba (b, "no piece of type UNKNOWN");
  b = g_byte_array_new ();
  add_piece (b, "<unk>", SP_PIECE_UNKNOWN);
  add_piece (b, "<unk2>", SP_PIECE_UNKNOWN);
  expect_error_ba (b, "piece 1: second piece of type UNKNOWN (piece 0");
  b = g_byte_array_new ();
  add_piece (b, "<unk>", SP_PIECE_UNKNOWN);
  add_piece (b, "a", SP_PIECE_NORMAL);
  add_piece (b, "a", SP_PIECE_CONTROL);
  expect_error_ba (b, "piece 2: 'a' duplicates piece 1");
  /* Long names are cut on a character boundary. */
  b = g_byte_array_new ();
  add_piece (b, "<unk>", SP_PIECE_UNKNOWN);
  GString *lng = g_string_new (NULL);
  for (int i = 0; i < 20; i++)
    g_string_append (lng, "\xc3\xa9");
  add_piece (b, lng->str, SP_PIECE_NORMAL);
  add_piece (b, lng->str, SP_PIECE_NORMAL);
  expect_error_ba (b, "...' duplicates piece 1");
  g_string_free (lng, TRUE);

  /* Byte pieces. */
  expect_error_ba (one_piece ("<0xe2>", 6, SP_PIECE_BYTE),
      "piece 1: byte piece '<0xe2>' is not of the form <0xNN>");
  expect_error_ba (one_piece ("<0x4G>", 6, SP_PIECE_BYTE), "not of the form");
  expect_error_ba (one_piece ("<0x123>", 7, SP_PIECE_BYTE), "not of the form");
  expect_error_ba (one_piece ("<0x41>", 6, SP_PIECE_BYTE),
      "piece 1: byte piece found but trainer_spec.byte_fallback is false");
  b = g_byte_array_new ();
  add_piece (b, "<unk>", SP_PIECE_UNKNOWN);
  for (int i = 0; i < 256; i++)
    if (i != 0x7f) {
      char name[8];
      g_snprintf (name, sizeof name, "<0x%02X>", i);
      add_piece (b, name, SP_PIECE_BYTE);
    }
  GByteArray *t = g_byte_array_new ();
  put_uint (t, 35, 1);
  put_msg (b, 2, t);
  expect_error_ba (b, "byte piece <0x7F> is missing");
  /* A normal piece spelled like a byte is just text. */
  b = one_piece ("<0x41>", 6, SP_PIECE_NORMAL);
  m = load_ok (b);
  CHECK (m, "<0x41>", 1);
  sp_model_free (m);
  g_byte_array_unref (b);

  /* unk_surface must be valid UTF-8 too. */
  static const guint8 bad_surface[] = { 0x12, 0x04, 0xe2, 0x02, 0x01, 0xff };
  expect_error_ba (with_tail (bad_surface, sizeof bad_surface),
      "trainer_spec.unk_surface is not valid UTF-8");
  /* Bad wire data inside the normalizer spec is found too. */
  static const guint8 bad_norm[] = { 0x1a, 0x02, 0x18, 0x80 };
  expect_error_ba (with_tail (bad_norm, sizeof bad_norm), "truncated varint");
}

/* One more than SP_MAX_VOCAB pieces (all "a": the count is checked before
 * duplicates). */
static void
test_vocab_limit (void)
{
  static const guint8 piece[] = { 0x0a, 0x03, 0x0a, 0x01, 'a' };
  GByteArray *b = g_byte_array_sized_new (5 * (SP_MAX_VOCAB + 1));
  for (int i = 0; i <= SP_MAX_VOCAB; i++)
    put_raw (b, piece, sizeof piece);
  char *want = g_strdup_printf ("byte %d: more than %d pieces",
      5 * SP_MAX_VOCAB + 2, SP_MAX_VOCAB);
  expect_error_ba (b, want);
  g_free (want);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/sentencepiece/real-pieces", test_real_pieces);
  g_test_add_func ("/sentencepiece/real-decode", test_real_decode);
  g_test_add_func ("/sentencepiece/real-prefixes", test_real_prefixes);
  g_test_add_func ("/sentencepiece/file-errors", test_file_errors);
  g_test_add_func ("/sentencepiece/synth-basics", test_synth_basics);
  g_test_add_func ("/sentencepiece/byte-fallback", test_byte_fallback);
  g_test_add_func ("/sentencepiece/leading-space", test_leading_space);
  g_test_add_func ("/sentencepiece/out-of-range", test_out_of_range);
  g_test_add_func ("/sentencepiece/streaming-random", test_streaming_random);
  g_test_add_func ("/sentencepiece/wire-format-valid", test_wire_format_valid);
  g_test_add_func ("/sentencepiece/malformed", test_malformed);
  g_test_add_func ("/sentencepiece/vocab-limit", test_vocab_limit);
  return g_test_run ();
}
