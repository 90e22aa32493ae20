/* SentencePiece `.model` reader and detokenizer; see sentencepiece.h.
 *
 * The file is a serialized ModelProto (src/sentencepiece_model.proto in
 * google/sentencepiece).  We need very little of it:
 *
 *   ModelProto      1: repeated SentencePiece pieces
 *                   2: TrainerSpec trainer_spec
 *                   3: NormalizerSpec normalizer_spec
 *   SentencePiece   1: string piece   2: float score   3: Type type = NORMAL
 *   TrainerSpec    35: bool byte_fallback   40..43: int32 unk/bos/eos/pad_id
 *                  44: string unk_surface
 *   NormalizerSpec  3: bool add_dummy_prefix = true
 *                   4: bool remove_extra_whitespaces = true
 *
 * so a ~100-line wire-format reader does the job.  It accepts every valid
 * encoding (fields in any order, repeated scalars where the last one wins,
 * repeated sub-messages that merge, unknown fields of every wire type
 * including groups) and rejects anything that is not well formed, naming the
 * byte offset.  A known field with an unexpected wire type is an error rather
 * than silently ignored: no real encoder produces one.
 *
 * Decoding follows SentencePieceProcessor::Decode (sentencepiece_processor.cc,
 * identical from v0.1.97 to v0.2.x):
 *  - CONTROL pieces (<s>, </s>, <pad>) produce nothing;
 *  - the UNKNOWN piece produces TrainerSpec.unk_surface, default " \u2047 ";
 *  - NORMAL, USER_DEFINED and UNUSED pieces produce their text with every
 *    U+2581 replaced by a space, except that while nothing visible has been
 *    produced yet a leading U+2581 is dropped (undoing add_dummy_prefix);
 *  - consecutive BYTE pieces "<0xNN>" are joined and decoded as UTF-8, each
 *    byte that does not start a well-formed character giving U+FFFD.
 * One deliberate difference: <0x00> decodes to nothing instead of U+0000, so
 * that the text is always a NUL-free C string; everything else is the same
 * as SentencePiece's text with its NULs removed.
 * A denormalizer_spec (ModelProto field 5, only present when a model was
 * trained with a custom decoding rule) is ignored. */
#include "sentencepiece.h"

#include "model-error.h"

#include <stdarg.h>
#include <string.h>

/* ModelProto files are well under 100 MB even for 256k vocabularies; the cap
 * keeps all sizes comfortably inside guint32. */
#define SP_MAX_FILE (1024u * 1024 * 1024)
/* Protobuf's own parser stops at 100 levels; only unknown groups can nest. */
#define PB_MAX_GROUP_DEPTH 64

#define SPACE_SYMBOL "\xe2\x96\x81" /* U+2581 LOWER ONE EIGHTH BLOCK */
#define SPACE_SYMBOL_LEN 3
#define REPLACEMENT_CHAR "\xef\xbf\xbd" /* U+FFFD */
#define DEFAULT_UNK_SURFACE " \xe2\x81\x87 " /* U+2047 DOUBLE QUESTION MARK */

typedef struct {
  const char *piece; /* NUL-terminated, in SpModel.strings */
  const char *surface; /* piece with U+2581 -> ' ', in SpModel.strings */
  guint32 surface_len;
  guint8 type; /* SpPieceType */
  guint8 byte; /* BYTE pieces: the byte they stand for */
  gboolean space_prefix; /* piece starts with U+2581 */
} SpPiece;

struct SpModel {
  SpPiece *pieces;
  int n;
  char *strings; /* one allocation for every piece and surface */
  char *unk_surface;
  gsize unk_surface_len;
  int unk_id, bos_id, eos_id, pad_id;
  /* NormalizerSpec flags that decide how the leading space is dropped. */
  gboolean add_dummy_prefix, remove_extra_whitespaces;
};

/* ---- UTF-8 ------------------------------------------------------------- */

typedef enum {
  UTF8_VALID, /* a well-formed character of *len bytes */
  UTF8_INVALID, /* p[0] starts no well-formed character, whatever follows */
  UTF8_INCOMPLETE, /* p[0..n) is a proper prefix of a well-formed character */
} Utf8Status;

/* Classifies the bytes at p[0..n), n >= 1, by Unicode's table of well-formed
 * byte sequences (Table 3-7).  This is exactly the set SentencePiece's
 * DecodeUTF8 accepts: it rejects overlong forms, surrogates and code points
 * past U+10FFFF.  Because validity is decided byte by byte from the left, an
 * INVALID answer never changes when more bytes arrive, which is what lets
 * the streaming decoder emit U+FFFD without waiting. */
static Utf8Status
utf8_char (const guint8 *p, gsize n, gsize *len)
{
  guint8 c = p[0];
  gsize need;
  guint8 lo = 0x80, hi = 0xbf; /* allowed range of the second byte */
  if (c < 0x80) {
    *len = 1;
    return UTF8_VALID;
  } else if (c >= 0xc2 && c <= 0xdf) {
    need = 2;
  } else if (c >= 0xe0 && c <= 0xef) {
    need = 3;
    if (c == 0xe0)
      lo = 0xa0; /* overlong below U+0800 */
    else if (c == 0xed)
      hi = 0x9f; /* surrogates U+D800..U+DFFF */
  } else if (c >= 0xf0 && c <= 0xf4) {
    need = 4;
    if (c == 0xf0)
      lo = 0x90; /* overlong below U+10000 */
    else if (c == 0xf4)
      hi = 0x8f; /* past U+10FFFF */
  } else {
    return UTF8_INVALID; /* continuation byte, C0, C1, F5..FF */
  }
  for (gsize i = 1; i < need; i++) {
    if (i >= n)
      return UTF8_INCOMPLETE;
    if (p[i] < lo || p[i] > hi)
      return UTF8_INVALID;
    lo = 0x80;
    hi = 0xbf;
  }
  *len = need;
  return UTF8_VALID;
}

/* Valid UTF-8 without NUL (pieces are handed out as C strings). */
static gboolean
utf8_string_ok (const guint8 *p, gsize n)
{
  gsize i = 0, len;
  while (i < n) {
    if (p[i] == 0 || utf8_char (p + i, n - i, &len) != UTF8_VALID)
      return FALSE;
    i += len;
  }
  return TRUE;
}

/* ---- protobuf wire format ---------------------------------------------- */

enum {
  WT_VARINT = 0,
  WT_I64 = 1,
  WT_LEN = 2,
  WT_SGROUP = 3,
  WT_EGROUP = 4,
  WT_I32 = 5,
};

static const char *
wire_type_name (int wt)
{
  static const char *const names[] = { "varint", "fixed64", "length-delimited",
    "start-group", "end-group", "fixed32" };
  return wt >= 0 && wt < (int) G_N_ELEMENTS (names) ? names[wt] : "invalid";
}

typedef struct {
  const guint8 *base; /* start of the file, for error offsets */
  const guint8 *p, *end; /* the message being read */
  const char *name;
  GError **error;
} PbReader;

static gboolean pb_fail (PbReader *r, const guint8 *at, const char *fmt, ...)
    G_GNUC_PRINTF (3, 4);

/* Always returns FALSE so that callers can `return pb_fail (...)`. */
static gboolean
pb_fail (PbReader *r, const guint8 *at, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  char *msg = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  g_set_error (r->error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_FORMAT,
      "%s: byte %zu: %s", r->name, (gsize) (at - r->base), msg);
  g_free (msg);
  return FALSE;
}

static gboolean
pb_varint (PbReader *r, guint64 *out)
{
  const guint8 *start = r->p;
  guint64 v = 0;
  for (int i = 0;; i++) {
    if (r->p == r->end)
      return pb_fail (r, start, "truncated varint");
    guint8 b = *r->p++;
    /* The 10th byte must end the varint and holds bit 63 only. */
    if (i == 9 && (b & 0x80))
      return pb_fail (r, start, "varint longer than 10 bytes");
    if (i == 9 && b > 1)
      return pb_fail (r, start, "varint overflows 64 bits");
    v |= (guint64) (b & 0x7f) << (7 * i);
    if (!(b & 0x80)) {
      *out = v;
      return TRUE;
    }
  }
}

/* Reads a tag; *at is set to where it starts, for later messages. */
static gboolean
pb_tag (PbReader *r, guint32 *field, int *wt, const guint8 **at)
{
  guint64 tag;
  *at = r->p;
  if (!pb_varint (r, &tag))
    return FALSE;
  /* Field numbers are 1 .. 2^29 - 1. */
  if (tag >> 3 == 0 || tag >> 3 > (1u << 29) - 1)
    return pb_fail (r, *at, "invalid field number %" G_GUINT64_FORMAT,
        tag >> 3);
  *field = (guint32) (tag >> 3);
  *wt = (int) (tag & 7);
  if (*wt > WT_I32)
    return pb_fail (r, *at, "field %u: invalid wire type %d", *field, *wt);
  return TRUE;
}

/* Reads a length prefix and returns the payload as a sub-reader. */
static gboolean
pb_len (PbReader *r, PbReader *sub)
{
  const guint8 *at = r->p;
  guint64 n;
  if (!pb_varint (r, &n))
    return FALSE;
  if (n > (guint64) (r->end - r->p))
    return pb_fail (r, at,
        "length %" G_GUINT64_FORMAT " runs past the end (%td bytes left)", n,
        r->end - r->p);
  *sub = *r;
  sub->end = r->p + n;
  r->p += n;
  return TRUE;
}

static gboolean
pb_fixed (PbReader *r, gsize n)
{
  if ((gsize) (r->end - r->p) < n)
    return pb_fail (r, r->p, "truncated %zu-byte fixed value", n);
  r->p += n;
  return TRUE;
}

/* Skips the value of a field whose tag has just been read.  Groups are
 * skipped without recursion, matching start and end tags on a small stack. */
static gboolean
pb_skip (PbReader *r, guint32 field, int wt, const guint8 *tag_at)
{
  guint32 stack[PB_MAX_GROUP_DEPTH];
  int depth = 0;
  for (;;) {
    PbReader sub = { 0 };
    guint64 v = 0;
    switch (wt) {
      case WT_VARINT:
        if (!pb_varint (r, &v))
          return FALSE;
        break;
      case WT_I64:
        if (!pb_fixed (r, 8))
          return FALSE;
        break;
      case WT_I32:
        if (!pb_fixed (r, 4))
          return FALSE;
        break;
      case WT_LEN:
        if (!pb_len (r, &sub))
          return FALSE;
        break;
      case WT_SGROUP:
        if (depth == PB_MAX_GROUP_DEPTH)
          return pb_fail (r, tag_at, "groups nested deeper than %d",
              PB_MAX_GROUP_DEPTH);
        stack[depth++] = field;
        break;
      case WT_EGROUP:
        if (depth == 0)
          return pb_fail (r, tag_at, "field %u: end-group without start-group",
              field);
        if (stack[depth - 1] != field)
          return pb_fail (r, tag_at,
              "field %u: end-group does not match start-group of field %u",
              field, stack[depth - 1]);
        depth--;
        break;
      default:
        g_assert_not_reached ();
    }
    if (depth == 0)
      return TRUE;
    if (r->p == r->end)
      return pb_fail (r, r->p, "group of field %u is not closed",
          stack[depth - 1]);
    if (!pb_tag (r, &field, &wt, &tag_at))
      return FALSE;
  }
}

static gboolean
pb_expect (PbReader *r, guint32 field, int wt, int expected, const char *what,
    const guint8 *tag_at)
{
  if (wt == expected)
    return TRUE;
  return pb_fail (r, tag_at, "field %u (%s): wire type %s, expected %s", field,
      what, wire_type_name (wt), wire_type_name (expected));
}

/* ---- ModelProto -------------------------------------------------------- */

/* A piece as parsed, still pointing into the input. */
typedef struct {
  const guint8 *text;
  gsize len;
  int type;
  const guint8 *at; /* start of the SentencePiece message */
} RawPiece;

typedef struct {
  GArray *pieces; /* RawPiece */
  /* TrainerSpec, with the proto defaults. */
  gint32 unk_id, bos_id, eos_id, pad_id;
  gboolean byte_fallback;
  const guint8 *unk_surface; /* NULL: absent */
  gsize unk_surface_len;
  gboolean add_dummy_prefix, remove_extra_whitespaces;
} Parsed;

static gboolean
parse_piece (PbReader *r, Parsed *ps)
{
  int index = (int) ps->pieces->len;
  RawPiece rp = { .type = SP_PIECE_NORMAL, .at = r->p };
  gboolean have_text = FALSE;
  if (index >= SP_MAX_VOCAB)
    return pb_fail (r, r->p, "more than %d pieces", SP_MAX_VOCAB);
  while (r->p < r->end) {
    guint32 field = 0;
    int wt = 0;
    const guint8 *at;
    PbReader sub = { 0 };
    guint64 v = 0;
    if (!pb_tag (r, &field, &wt, &at))
      return FALSE;
    switch (field) {
      case 1:
        if (!pb_expect (r, field, wt, WT_LEN, "piece", at) || !pb_len (r, &sub))
          return FALSE;
        if (!utf8_string_ok (sub.p, (gsize) (sub.end - sub.p)))
          return pb_fail (r, sub.p,
              "piece %d: text is not valid UTF-8 (or contains NUL)", index);
        rp.text = sub.p;
        rp.len = (gsize) (sub.end - sub.p);
        have_text = TRUE;
        break;
      case 2:
        /* The score only matters for encoding. */
        if (!pb_expect (r, field, wt, WT_I32, "score", at) || !pb_fixed (r, 4))
          return FALSE;
        break;
      case 3:
        if (!pb_expect (r, field, wt, WT_VARINT, "type", at)
            || !pb_varint (r, &v))
          return FALSE;
        if (v < SP_PIECE_NORMAL || v > SP_PIECE_BYTE)
          return pb_fail (r, at, "piece %d: invalid type %" G_GINT64_FORMAT,
              index, (gint64) v);
        rp.type = (int) v;
        break;
      default:
        if (!pb_skip (r, field, wt, at))
          return FALSE;
    }
  }
  /* SentencePiece refuses empty pieces too ("piece must not be empty"). */
  if (!have_text || rp.len == 0)
    return pb_fail (r, rp.at, "piece %d: empty piece", index);
  g_array_append_val (ps->pieces, rp);
  return TRUE;
}

/* int32 fields: protobuf keeps the low 32 bits of the varint (negative
 * values are sign-extended to 10 bytes on the wire). */
static gboolean
parse_int32 (PbReader *r, guint32 field, int wt, const char *what,
    const guint8 *at, gint32 *out)
{
  guint64 v;
  if (!pb_expect (r, field, wt, WT_VARINT, what, at) || !pb_varint (r, &v))
    return FALSE;
  *out = (gint32) (guint32) v;
  return TRUE;
}

static gboolean
parse_bool (PbReader *r, guint32 field, int wt, const char *what,
    const guint8 *at, gboolean *out)
{
  guint64 v;
  if (!pb_expect (r, field, wt, WT_VARINT, what, at) || !pb_varint (r, &v))
    return FALSE;
  *out = v != 0;
  return TRUE;
}

static gboolean
parse_trainer_spec (PbReader *r, Parsed *ps)
{
  while (r->p < r->end) {
    guint32 field = 0;
    int wt = 0;
    const guint8 *at;
    PbReader sub = { 0 };
    gboolean ok;
    if (!pb_tag (r, &field, &wt, &at))
      return FALSE;
    switch (field) {
      case 35:
        ok = parse_bool (r, field, wt, "byte_fallback", at, &ps->byte_fallback);
        break;
      case 40:
        ok = parse_int32 (r, field, wt, "unk_id", at, &ps->unk_id);
        break;
      case 41:
        ok = parse_int32 (r, field, wt, "bos_id", at, &ps->bos_id);
        break;
      case 42:
        ok = parse_int32 (r, field, wt, "eos_id", at, &ps->eos_id);
        break;
      case 43:
        ok = parse_int32 (r, field, wt, "pad_id", at, &ps->pad_id);
        break;
      case 44:
        ok = pb_expect (r, field, wt, WT_LEN, "unk_surface", at)
            && pb_len (r, &sub);
        if (ok && !utf8_string_ok (sub.p, (gsize) (sub.end - sub.p)))
          return pb_fail (r, sub.p,
              "trainer_spec.unk_surface is not valid UTF-8 (or contains NUL)");
        if (ok) {
          ps->unk_surface = sub.p;
          ps->unk_surface_len = (gsize) (sub.end - sub.p);
        }
        break;
      default:
        ok = pb_skip (r, field, wt, at);
    }
    if (!ok)
      return FALSE;
  }
  return TRUE;
}

static gboolean
parse_normalizer_spec (PbReader *r, Parsed *ps)
{
  while (r->p < r->end) {
    guint32 field = 0;
    int wt = 0;
    const guint8 *at;
    gboolean ok;
    if (!pb_tag (r, &field, &wt, &at))
      return FALSE;
    if (field == 3)
      ok = parse_bool (r, field, wt, "add_dummy_prefix", at,
          &ps->add_dummy_prefix);
    else if (field == 4)
      ok = parse_bool (r, field, wt, "remove_extra_whitespaces", at,
          &ps->remove_extra_whitespaces);
    else
      ok = pb_skip (r, field, wt, at);
    if (!ok)
      return FALSE;
  }
  return TRUE;
}

static gboolean
parse_model_proto (PbReader *r, Parsed *ps)
{
  while (r->p < r->end) {
    guint32 field = 0;
    int wt = 0;
    const guint8 *at;
    PbReader sub = { 0 };
    gboolean ok;
    if (!pb_tag (r, &field, &wt, &at))
      return FALSE;
    switch (field) {
      case 1:
        ok = pb_expect (r, field, wt, WT_LEN, "pieces", at) && pb_len (r, &sub)
            && parse_piece (&sub, ps);
        break;
      case 2:
        /* A repeated sub-message merges into the previous one, which is what
         * parsing into the same Parsed does. */
        ok = pb_expect (r, field, wt, WT_LEN, "trainer_spec", at)
            && pb_len (r, &sub) && parse_trainer_spec (&sub, ps);
        break;
      case 3:
        ok = pb_expect (r, field, wt, WT_LEN, "normalizer_spec", at)
            && pb_len (r, &sub) && parse_normalizer_spec (&sub, ps);
        break;
      default:
        ok = pb_skip (r, field, wt, at);
    }
    if (!ok)
      return FALSE;
  }
  return TRUE;
}

/* At most 32 bytes of a piece for an error message, cut on a character
 * boundary so that the message stays valid UTF-8.  Free with g_free. */
static char *
quote_piece (const guint8 *text, gsize len)
{
  gsize cut = 0, clen;
  while (cut < len && utf8_char (text + cut, len - cut, &clen) == UTF8_VALID
      && cut + clen <= 32)
    cut += clen;
  return g_strdup_printf ("'%.*s%s'", (int) cut, (const char *) text,
      cut < len ? "..." : "");
}

/* "<0xNN>" with upper-case hex, exactly as SentencePiece's ByteToPiece
 * spells it; anything else is not a byte piece. */
static int
byte_piece_value (const guint8 *s, gsize len)
{
  static const char hex[] = "0123456789ABCDEF";
  if (len != 6 || memcmp (s, "<0x", 3) != 0 || s[5] != '>')
    return -1;
  const char *h = s[3] ? strchr (hex, s[3]) : NULL;
  const char *l = s[4] ? strchr (hex, s[4]) : NULL;
  if (!h || !l)
    return -1;
  return (int) ((h - hex) * 16 + (l - hex));
}

/* The whole-vocabulary rules SentencePiece's ModelInterface enforces when it
 * loads a model, so that we never accept a model it would refuse. */
static gboolean
check_vocab (PbReader *r, const Parsed *ps)
{
  const RawPiece *rp = (const RawPiece *) ps->pieces->data;
  int n = (int) ps->pieces->len;
  int unk = -1;
  gboolean ok = TRUE;
  guint8 byte_seen[256] = { 0 };

  if (n == 0)
    return pb_fail (r, r->end, "no pieces");
  for (int i = 0; i < n; i++) {
    if (rp[i].type == SP_PIECE_UNKNOWN) {
      if (unk >= 0)
        return pb_fail (r, rp[i].at,
            "piece %d: second piece of type UNKNOWN (piece %d is one)", i, unk);
      unk = i;
    } else if (rp[i].type == SP_PIECE_BYTE) {
      int b = byte_piece_value (rp[i].text, rp[i].len);
      if (b < 0) {
        char *q = quote_piece (rp[i].text, rp[i].len);
        pb_fail (r, rp[i].at,
            "piece %d: byte piece %s is not of the form <0xNN>", i, q);
        g_free (q);
        return FALSE;
      }
      if (!ps->byte_fallback)
        return pb_fail (r, rp[i].at,
            "piece %d: byte piece found but trainer_spec.byte_fallback is "
            "false",
            i);
      byte_seen[b] = 1;
    }
  }
  if (unk < 0)
    return pb_fail (r, r->end, "no piece of type UNKNOWN");
  if (ps->byte_fallback)
    for (int b = 0; b < 256; b++)
      if (!byte_seen[b])
        return pb_fail (r, r->end,
            "trainer_spec.byte_fallback is true but byte piece <0x%02X> is "
            "missing",
            b);

  /* SentencePiece maps ids back to pieces and pieces to ids while decoding,
   * so a duplicate would decode as the other id; refuse them all. */
  GHashTable *seen = g_hash_table_new (g_str_hash, g_str_equal);
  GPtrArray *keys = g_ptr_array_new_with_free_func (g_free);
  for (int i = 0; i < n && ok; i++) {
    char *key = g_strndup ((const char *) rp[i].text, rp[i].len);
    g_ptr_array_add (keys, key);
    gpointer prev;
    if (g_hash_table_lookup_extended (seen, key, NULL, &prev)) {
      char *q = quote_piece (rp[i].text, rp[i].len);
      ok = pb_fail (r, rp[i].at, "piece %d: %s duplicates piece %d", i, q,
          GPOINTER_TO_INT (prev));
      g_free (q);
    } else
      g_hash_table_insert (seen, key, GINT_TO_POINTER (i));
  }
  g_hash_table_unref (seen);
  g_ptr_array_unref (keys);
  return ok;
}

/* Copies the parsed vocabulary out of the input into the model. */
static void
build_model (SpModel *m, const Parsed *ps)
{
  const RawPiece *rp = (const RawPiece *) ps->pieces->data;
  guint n = ps->pieces->len; /* 1 .. SP_MAX_VOCAB */
  /* Each piece twice (raw and surface; the surface is never longer) plus
   * NULs. */
  gsize total = 0;
  for (guint i = 0; i < n; i++)
    total += 2 * (rp[i].len + 1);
  m->strings = g_malloc (total);
  m->pieces = g_new0 (SpPiece, n);
  m->n = (int) n;
  char *w = m->strings;
  for (guint i = 0; i < n; i++) {
    SpPiece *p = &m->pieces[i];
    const char *src = (const char *) rp[i].text;
    gsize len = rp[i].len;
    p->type = (guint8) rp[i].type;
    p->piece = w;
    memcpy (w, src, len);
    w[len] = 0;
    w += len + 1;
    p->surface = w;
    for (gsize j = 0; j < len;) {
      if (len - j >= SPACE_SYMBOL_LEN
          && memcmp (src + j, SPACE_SYMBOL, SPACE_SYMBOL_LEN) == 0) {
        *w++ = ' ';
        j += SPACE_SYMBOL_LEN;
      } else {
        *w++ = src[j++];
      }
    }
    p->surface_len = (guint32) (w - p->surface);
    *w++ = 0;
    p->space_prefix = len >= SPACE_SYMBOL_LEN
        && memcmp (src, SPACE_SYMBOL, SPACE_SYMBOL_LEN) == 0;
    if (p->type == SP_PIECE_BYTE)
      p->byte = (guint8) byte_piece_value (rp[i].text, len);
  }
  if (ps->unk_surface) {
    m->unk_surface =
        g_strndup ((const char *) ps->unk_surface, ps->unk_surface_len);
    m->unk_surface_len = ps->unk_surface_len;
  } else {
    m->unk_surface = g_strdup (DEFAULT_UNK_SURFACE);
    m->unk_surface_len = strlen (DEFAULT_UNK_SURFACE);
  }
  m->unk_id = ps->unk_id >= 0 && ps->unk_id < m->n ? ps->unk_id : -1;
  m->bos_id = ps->bos_id >= 0 && ps->bos_id < m->n ? ps->bos_id : -1;
  m->eos_id = ps->eos_id >= 0 && ps->eos_id < m->n ? ps->eos_id : -1;
  m->pad_id = ps->pad_id >= 0 && ps->pad_id < m->n ? ps->pad_id : -1;
  m->add_dummy_prefix = ps->add_dummy_prefix;
  m->remove_extra_whitespaces = ps->remove_extra_whitespaces;
}

SpModel *
sp_model_load_from_data (const guint8 *data, gsize len,
    const char *name_for_errors, GError **error)
{
  const char *name = name_for_errors ? name_for_errors : "<memory>";
  g_return_val_if_fail (data != NULL || len == 0, NULL);
  if (len > SP_MAX_FILE) {
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_FORMAT,
        "%s: %zu bytes, more than the %u-byte limit for a model", name, len,
        SP_MAX_FILE);
    return NULL;
  }
  /* An empty buffer may come as NULL; give the reader a valid pointer. */
  static const guint8 empty[1];
  if (!data)
    data = empty;
  PbReader r = { .base = data,
    .p = data,
    .end = data + len,
    .name = name,
    .error = error };
  Parsed ps = {
    .pieces = g_array_new (FALSE, FALSE, sizeof (RawPiece)),
    .unk_id = 0,
    .bos_id = 1,
    .eos_id = 2,
    .pad_id = -1,
    .add_dummy_prefix = TRUE,
    .remove_extra_whitespaces = TRUE,
  };
  SpModel *m = NULL;
  if (parse_model_proto (&r, &ps) && check_vocab (&r, &ps)) {
    m = g_new0 (SpModel, 1);
    build_model (m, &ps);
  }
  g_array_unref (ps.pieces);
  return m;
}

SpModel *
sp_model_load (const char *path, GError **error)
{
  g_return_val_if_fail (path != NULL, NULL);
  GError *ferr = NULL;
  GMappedFile *map = g_mapped_file_new (path, FALSE, &ferr);
  if (!map) {
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_IO,
        "%s: cannot open: %s", path, ferr->message);
    g_error_free (ferr);
    return NULL;
  }
  SpModel *m =
      sp_model_load_from_data ((const guint8 *) g_mapped_file_get_contents (
                                   map),
          g_mapped_file_get_length (map), path, error);
  g_mapped_file_unref (map);
  return m;
}

void
sp_model_free (SpModel *m)
{
  if (!m)
    return;
  g_free (m->pieces);
  g_free (m->strings);
  g_free (m->unk_surface);
  g_free (m);
}

int
sp_model_vocab_size (const SpModel *m)
{
  return m->n;
}

const char *
sp_model_piece (const SpModel *m, int id)
{
  return id >= 0 && id < m->n ? m->pieces[id].piece : NULL;
}

int
sp_model_piece_type (const SpModel *m, int id)
{
  return id >= 0 && id < m->n ? m->pieces[id].type : 0;
}

int
sp_model_unk_id (const SpModel *m)
{
  return m->unk_id;
}

int
sp_model_bos_id (const SpModel *m)
{
  return m->bos_id;
}

int
sp_model_eos_id (const SpModel *m)
{
  return m->eos_id;
}

int
sp_model_pad_id (const SpModel *m)
{
  return m->pad_id;
}

/* ---- decoding ---------------------------------------------------------- */

void
sp_decode_state_init (SpDecodeState *state)
{
  memset (state, 0, sizeof *state);
  state->at_start = TRUE;
}

/* Emits the pending bytes that can be decided now.  With `final` the byte
 * run is over and an incomplete character is as invalid as a bad one: like
 * SentencePiece, each of its bytes becomes one U+FFFD. */
static void
emit_bytes (GString *out, SpDecodeState *s, gboolean final)
{
  gsize off = 0, n = s->n_pending, len;
  while (off < n) {
    Utf8Status st = utf8_char (s->pending + off, n - off, &len);
    if (st == UTF8_INCOMPLETE && !final)
      break;
    if (st == UTF8_VALID) {
      /* <0x00> is dropped so that the text stays a C string; it still
       * counts as text for the leading-space rule below. */
      if (s->pending[off] != 0)
        g_string_append_len (out, (const char *) s->pending + off,
            (gssize) len);
      off += len;
    } else {
      g_string_append (out, REPLACEMENT_CHAR);
      off++;
    }
  }
  if (off > 0) {
    /* Every emitted byte produced text, so the sequence has started. */
    s->at_start = FALSE;
    memmove (s->pending, s->pending + off, n - off);
    s->n_pending = (guint8) (n - off);
  }
}

/* Where SentencePiece keeps two flags (is_bos_ws, bos_ws_seen) and looks at
 * the text decoded so far, one flag is enough here: at_start is cleared as
 * soon as anything visible is produced, or when a leading U+2581 has been
 * dropped under add_dummy_prefix alone (then only that one is dropped).
 * SentencePiece clears its flag lazily at the next non-byte piece, but
 * nothing reads it in between, so the result is the same. */
gboolean
sp_decode_piece (const SpModel *m, int id, GString *out, SpDecodeState *state)
{
  g_return_val_if_fail (m != NULL && out != NULL && state != NULL, FALSE);
  if (id < 0 || id >= m->n)
    return FALSE;
  const SpPiece *p = &m->pieces[id];
  if (p->type == SP_PIECE_BYTE) {
    /* At most 3 bytes can be pending (a proper prefix of a 4-byte
     * character), so there is always room for one more. */
    state->pending[state->n_pending++] = p->byte;
    emit_bytes (out, state, FALSE);
    return TRUE;
  }
  /* Any other piece ends a run of byte pieces. */
  emit_bytes (out, state, TRUE);

  const char *text;
  gsize len;
  switch (p->type) {
    case SP_PIECE_CONTROL:
      return TRUE; /* invisible: <s>, </s>, <pad> */
    case SP_PIECE_UNKNOWN:
      /* Never subject to the leading-space rule. */
      text = m->unk_surface;
      len = m->unk_surface_len;
      break;
    default:
      text = p->surface;
      len = p->surface_len;
      if (state->at_start && p->space_prefix
          && (m->add_dummy_prefix || m->remove_extra_whitespaces)) {
        text++;
        len--;
        /* With remove_extra_whitespaces SentencePiece keeps dropping the
         * leading U+2581 of every piece until some text appears. */
        if (!m->remove_extra_whitespaces)
          state->at_start = FALSE;
      }
  }
  if (len > 0) {
    g_string_append_len (out, text, (gssize) len);
    state->at_start = FALSE;
  }
  return TRUE;
}

void
sp_decode_flush (const SpModel *m, GString *out, SpDecodeState *state)
{
  g_return_if_fail (m != NULL && out != NULL && state != NULL);
  emit_bytes (out, state, TRUE);
}

char *
sp_decode_ids (const SpModel *m, const int *ids, int n)
{
  g_return_val_if_fail (m != NULL && (ids != NULL || n <= 0), NULL);
  GString *out = g_string_new (NULL);
  SpDecodeState st;
  sp_decode_state_init (&st);
  for (int i = 0; i < n; i++)
    sp_decode_piece (m, ids[i], out, &st);
  sp_decode_flush (m, out, &st);
  return g_string_free (out, FALSE);
}
