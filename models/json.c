/* Strict RFC 8259 JSON reader into a small DOM.
 *
 * Recursion is bounded by MAX_DEPTH, so hostile nesting cannot exhaust the
 * stack.  Every byte access is checked against len (input is not
 * NUL-terminated).  Allocation is proportional to input size: each value
 * consumes at least one input byte, decoded strings are never longer than
 * their escaped form, and growable arrays at most double. */
#include "json.h"

#include "model-error.h"

#include <math.h>
#include <string.h>

#define MAX_DEPTH 64

typedef struct {
  char *key;
  size_t key_len;
  MJsonValue *value;
} Member;

struct MJsonValue {
  MJsonType type;
  union {
    gboolean b;
    struct {
      double d;
      gboolean is_int;
      int64_t i;
    } num;
    struct {
      char *s;
      size_t len;
    } str;
    struct {
      size_t n, cap;
      union {
        MJsonValue **items; /* MJSON_ARRAY */
        Member *members; /* MJSON_OBJECT */
      };
    } c;
  } u;
};

typedef struct {
  const unsigned char *p;
  size_t len, pos;
  GError **error;
} Parser;

static void fail (Parser *ps, size_t at, const char *fmt, ...)
    G_GNUC_PRINTF (3, 4);

static void
fail (Parser *ps, size_t at, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  char *msg = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  /* Only the innermost (first) failure is reported. */
  if (ps->error && !*ps->error)
    g_set_error (ps->error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_FORMAT,
        "JSON: %s at byte %zu", msg, at);
  g_free (msg);
}

static void
fail_unexpected (Parser *ps)
{
  if (ps->pos >= ps->len)
    fail (ps, ps->pos, "unexpected end of input");
  else if (ps->p[ps->pos] >= 0x20 && ps->p[ps->pos] < 0x7f)
    fail (ps, ps->pos, "unexpected character '%c'", ps->p[ps->pos]);
  else
    fail (ps, ps->pos, "unexpected byte 0x%02x", ps->p[ps->pos]);
}

static void
skip_ws (Parser *ps)
{
  while (ps->pos < ps->len) {
    unsigned char c = ps->p[ps->pos];
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
      break;
    ps->pos++;
  }
}

static gboolean
match (Parser *ps, const char *word)
{
  size_t n = strlen (word);
  if (ps->len - ps->pos < n || memcmp (ps->p + ps->pos, word, n) != 0)
    return FALSE;
  ps->pos += n;
  return TRUE;
}

static gboolean
is_digit (Parser *ps, size_t at)
{
  return at < ps->len && ps->p[at] >= '0' && ps->p[at] <= '9';
}

static size_t
skip_digits (Parser *ps, size_t at)
{
  while (is_digit (ps, at))
    at++;
  return at;
}

/* k-th digit of the concatenation ip[0..ni) fp[..]. */
static inline unsigned char
digit_at (const unsigned char *ip, size_t ni, const unsigned char *fp, size_t k)
{
  return k < ni ? ip[k] : fp[k - ni];
}

/* Decides from the literal's digits, not from the rounded double, whether it
 * denotes an integer in int64 range ("1.5e1" does, "1.0000000000000000001"
 * does not).  Digits are ip[0..ni) followed by fp[0..nf), scaled by 10^exp10. */
static gboolean
exact_integer (gboolean neg, const unsigned char *ip, size_t ni,
    const unsigned char *fp, size_t nf, int64_t exp10, int64_t *out)
{
  size_t total = ni + nf, first = 0, end = total;
#define DIGIT(k) digit_at (ip, ni, fp, (k))
  while (first < total && DIGIT (first) == '0')
    first++;
  if (first == total) {
    *out = 0;
    return TRUE;
  }
  int64_t scale = exp10 - (int64_t) nf;
  while (DIGIT (end - 1) == '0') {
    end--;
    scale++;
  }
  /* 19 digits is the most any int64 magnitude needs. */
  if (scale < 0 || (int64_t) (end - first) + scale > 19)
    return FALSE;
  uint64_t v = 0, limit = neg ? (uint64_t) INT64_MAX + 1 : (uint64_t) INT64_MAX;
  for (size_t k = first; k < end; k++)
    v = v * 10 + (uint64_t) (DIGIT (k) - '0'); /* <= 19 digits: no wrap */
#undef DIGIT
  for (int64_t s = 0; s < scale; s++) {
    if (v > UINT64_MAX / 10)
      return FALSE;
    v *= 10;
  }
  if (v > limit)
    return FALSE;
  *out = neg ? (int64_t) (0 - v) : (int64_t) v;
  return TRUE;
}

static MJsonValue *
parse_number (Parser *ps)
{
  size_t start = ps->pos, at = start;
  gboolean neg = FALSE;
  if (at < ps->len && ps->p[at] == '-') {
    neg = TRUE;
    at++;
  }
  size_t int_start = at;
  if (!is_digit (ps, at)) {
    fail (ps, at, "invalid number: expected digit");
    return NULL;
  }
  /* A leading zero may not be followed by more digits ("01"). */
  at = ps->p[at] == '0' ? at + 1 : skip_digits (ps, at);
  size_t int_end = at, frac_start = at, frac_end = at;
  if (at < ps->len && ps->p[at] == '.') {
    frac_start = ++at;
    if (!is_digit (ps, at)) {
      fail (ps, at, "invalid number: expected digit after '.'");
      return NULL;
    }
    at = frac_end = skip_digits (ps, at);
  }
  int64_t exp10 = 0;
  if (at < ps->len && (ps->p[at] == 'e' || ps->p[at] == 'E')) {
    at++;
    gboolean eneg = FALSE;
    if (at < ps->len && (ps->p[at] == '+' || ps->p[at] == '-'))
      eneg = ps->p[at++] == '-';
    if (!is_digit (ps, at)) {
      fail (ps, at, "invalid number: expected digit in exponent");
      return NULL;
    }
    /* Saturate: beyond 10^12 the exponent alone decides the outcome. */
    for (; is_digit (ps, at); at++)
      if (exp10 < 1000000000000)
        exp10 = exp10 * 10 + (ps->p[at] - '0');
    if (eneg)
      exp10 = -exp10;
  }
  if (is_digit (ps, at)) {
    fail (ps, at, "invalid number: leading zero");
    return NULL;
  }

  char *copy = g_strndup ((const char *) ps->p + start, at - start);
  double d = g_ascii_strtod (copy, NULL);
  g_free (copy);
  /* Underflow to zero/subnormal is fine; overflow to infinity is not a
   * number any config or header can mean. */
  if (isinf (d)) {
    fail (ps, start, "number out of range");
    return NULL;
  }
  MJsonValue *v = g_new0 (MJsonValue, 1);
  v->type = MJSON_NUMBER;
  v->u.num.d = d;
  v->u.num.is_int = exact_integer (neg, ps->p + int_start, int_end - int_start,
      ps->p + frac_start, frac_end - frac_start, exp10, &v->u.num.i);
  ps->pos = at;
  return v;
}

static void
put_utf8 (GString *s, uint32_t cp)
{
  char buf[4];
  int n = g_unichar_to_utf8 (cp, buf);
  g_string_append_len (s, buf, n);
}

/* Length of the well-formed UTF-8 sequence at p[0..avail) (RFC 3629: no
 * overlongs, no surrogates, <= U+10FFFF), or 0 if it is malformed. */
static size_t
utf8_seq_len (const unsigned char *p, size_t avail)
{
  unsigned char c = p[0];
  size_t n;
  uint32_t cp, min;
  if (c < 0x80)
    return 1;
  else if ((c & 0xe0) == 0xc0)
    n = 2, cp = c & 0x1f, min = 0x80;
  else if ((c & 0xf0) == 0xe0)
    n = 3, cp = c & 0x0f, min = 0x800;
  else if ((c & 0xf8) == 0xf0)
    n = 4, cp = c & 0x07, min = 0x10000;
  else
    return 0;
  if (avail < n)
    return 0;
  for (size_t i = 1; i < n; i++) {
    if ((p[i] & 0xc0) != 0x80)
      return 0;
    cp = (cp << 6) | (p[i] & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
    return 0;
  return n;
}

static gboolean
parse_hex4 (Parser *ps, size_t at, uint32_t *out)
{
  uint32_t v = 0;
  for (size_t i = 0; i < 4; i++) {
    if (at + i >= ps->len) {
      fail (ps, ps->len, "unexpected end of input in \\u escape");
      return FALSE;
    }
    int h = g_ascii_xdigit_value (ps->p[at + i]);
    if (h < 0) {
      fail (ps, at + i, "invalid hex digit in \\u escape");
      return FALSE;
    }
    v = (v << 4) | (uint32_t) h;
  }
  *out = v;
  return TRUE;
}

/* Parses a string starting at the opening quote; returns the decoded bytes
 * (NUL-terminated, may contain embedded NULs from \u0000). */
static char *
parse_string (Parser *ps, size_t *out_len)
{
  GString *s = g_string_new (NULL);
  size_t at = ps->pos + 1; /* caller checked the quote */
  for (;;) {
    if (at >= ps->len) {
      fail (ps, at, "unterminated string");
      goto error;
    }
    unsigned char c = ps->p[at];
    if (c == '"') {
      at++;
      break;
    } else if (c < 0x20) {
      fail (ps, at, "unescaped control character 0x%02x in string", c);
      goto error;
    } else if (c != '\\') {
      size_t n = utf8_seq_len (ps->p + at, ps->len - at);
      if (n == 0) {
        fail (ps, at, "invalid UTF-8 in string");
        goto error;
      }
      g_string_append_len (s, (const char *) ps->p + at, n);
      at += n;
      continue;
    }
    if (++at >= ps->len) {
      fail (ps, at, "unterminated escape");
      goto error;
    }
    size_t esc = at - 1;
    switch (ps->p[at++]) {
      case '"':
        g_string_append_c (s, '"');
        break;
      case '\\':
        g_string_append_c (s, '\\');
        break;
      case '/':
        g_string_append_c (s, '/');
        break;
      case 'b':
        g_string_append_c (s, '\b');
        break;
      case 'f':
        g_string_append_c (s, '\f');
        break;
      case 'n':
        g_string_append_c (s, '\n');
        break;
      case 'r':
        g_string_append_c (s, '\r');
        break;
      case 't':
        g_string_append_c (s, '\t');
        break;
      case 'u': {
        uint32_t cp, lo;
        if (!parse_hex4 (ps, at, &cp))
          goto error;
        at += 4;
        if (cp >= 0xdc00 && cp <= 0xdfff) {
          fail (ps, esc, "unpaired low surrogate \\u%04X", cp);
          goto error;
        }
        if (cp >= 0xd800 && cp <= 0xdbff) {
          if (ps->len - at < 2 || ps->p[at] != '\\' || ps->p[at + 1] != 'u') {
            fail (ps, esc, "unpaired high surrogate \\u%04X", cp);
            goto error;
          }
          if (!parse_hex4 (ps, at + 2, &lo))
            goto error;
          if (lo < 0xdc00 || lo > 0xdfff) {
            fail (ps, esc, "unpaired high surrogate \\u%04X", cp);
            goto error;
          }
          at += 6;
          cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        }
        put_utf8 (s, cp);
        break;
      }
      default:
        fail (ps, esc, "invalid escape sequence");
        goto error;
    }
  }
  ps->pos = at;
  *out_len = s->len;
  return g_string_free (s, FALSE);

error:
  g_string_free (s, TRUE);
  return NULL;
}

static MJsonValue *parse_value (Parser *ps, int depth);

/* Arrays and objects share one loop; `obj` selects "key: value" members. */
static MJsonValue *
parse_container (Parser *ps, int depth, gboolean obj)
{
  if (depth > MAX_DEPTH) {
    fail (ps, ps->pos, "nesting deeper than %d", MAX_DEPTH);
    return NULL;
  }
  MJsonValue *v = g_new0 (MJsonValue, 1);
  v->type = obj ? MJSON_OBJECT : MJSON_ARRAY;
  char close = obj ? '}' : ']';
  ps->pos++;
  skip_ws (ps);
  if (ps->pos < ps->len && ps->p[ps->pos] == close) {
    ps->pos++;
    return v;
  }
  for (;;) {
    char *key = NULL;
    size_t key_len = 0;
    if (obj) {
      skip_ws (ps);
      if (ps->pos >= ps->len || ps->p[ps->pos] != '"') {
        fail_unexpected (ps);
        goto error;
      }
      if (!(key = parse_string (ps, &key_len)))
        goto error;
      skip_ws (ps);
      if (ps->pos >= ps->len || ps->p[ps->pos] != ':') {
        fail_unexpected (ps);
        g_free (key);
        goto error;
      }
      ps->pos++;
    }
    MJsonValue *item = parse_value (ps, depth);
    if (!item) {
      g_free (key);
      goto error;
    }
    if (v->u.c.n == v->u.c.cap) {
      v->u.c.cap = v->u.c.cap ? v->u.c.cap * 2 : 4;
      if (obj)
        v->u.c.members = g_renew (Member, v->u.c.members, v->u.c.cap);
      else
        v->u.c.items = g_renew (MJsonValue *, v->u.c.items, v->u.c.cap);
    }
    if (obj)
      v->u.c.members[v->u.c.n++] = (Member){ key, key_len, item };
    else
      v->u.c.items[v->u.c.n++] = item;

    skip_ws (ps);
    if (ps->pos < ps->len && ps->p[ps->pos] == ',') {
      ps->pos++;
      continue;
    }
    if (ps->pos < ps->len && ps->p[ps->pos] == close) {
      ps->pos++;
      return v;
    }
    fail_unexpected (ps);
    goto error;
  }

error:
  mjson_free (v);
  return NULL;
}

static MJsonValue *
parse_value (Parser *ps, int depth)
{
  skip_ws (ps);
  if (ps->pos >= ps->len) {
    fail_unexpected (ps);
    return NULL;
  }
  unsigned char c = ps->p[ps->pos];
  MJsonValue *v;
  switch (c) {
    case '{':
    case '[':
      return parse_container (ps, depth + 1, c == '{');
    case '"': {
      size_t n;
      char *s = parse_string (ps, &n);
      if (!s)
        return NULL;
      v = g_new0 (MJsonValue, 1);
      v->type = MJSON_STRING;
      v->u.str.s = s;
      v->u.str.len = n;
      return v;
    }
    case 't':
    case 'f':
    case 'n':
      if (match (ps, "true") || match (ps, "false")) {
        v = g_new0 (MJsonValue, 1);
        v->type = MJSON_BOOL;
        v->u.b = c == 't';
        return v;
      }
      if (match (ps, "null"))
        return g_new0 (MJsonValue, 1); /* MJSON_NULL == 0 */
      fail (ps, ps->pos, "invalid literal");
      return NULL;
    default:
      if (c == '-' || (c >= '0' && c <= '9'))
        return parse_number (ps);
      fail_unexpected (ps);
      return NULL;
  }
}

MJsonValue *
mjson_parse (const char *text, size_t len, GError **error)
{
  g_return_val_if_fail (text != NULL || len == 0, NULL);
  Parser ps = { (const unsigned char *) text, len, 0, error };
  MJsonValue *v = parse_value (&ps, 0);
  if (!v)
    return NULL;
  skip_ws (&ps);
  if (ps.pos != len) {
    fail (&ps, ps.pos, "trailing data after value");
    mjson_free (v);
    return NULL;
  }
  return v;
}

MJsonValue *
mjson_parse_object_file (const char *path, GError **error)
{
  gchar *text = NULL;
  gsize len = 0;
  if (!g_file_get_contents (path, &text, &len, error))
    return NULL;
  MJsonValue *root = mjson_parse (text, len, error);
  g_free (text); /* the tree holds copies of every string */
  if (!root) {
    g_prefix_error (error, "%s: ", path);
    return NULL;
  }
  if (mjson_type (root) != MJSON_OBJECT) {
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_CONFIG,
        "%s: not a JSON object", path);
    mjson_free (root);
    return NULL;
  }
  return root;
}

void
mjson_free (MJsonValue *v)
{
  if (!v)
    return;
  if (v->type == MJSON_STRING) {
    g_free (v->u.str.s);
  } else if (v->type == MJSON_ARRAY) {
    for (size_t i = 0; i < v->u.c.n; i++)
      mjson_free (v->u.c.items[i]);
    g_free (v->u.c.items);
  } else if (v->type == MJSON_OBJECT) {
    for (size_t i = 0; i < v->u.c.n; i++) {
      g_free (v->u.c.members[i].key);
      mjson_free (v->u.c.members[i].value);
    }
    g_free (v->u.c.members);
  }
  g_free (v);
}

MJsonType
mjson_type (const MJsonValue *v)
{
  return v ? v->type : MJSON_NULL;
}

const char *
mjson_type_name (MJsonType t)
{
  switch (t) {
    case MJSON_NULL:
      return "null";
    case MJSON_BOOL:
      return "boolean";
    case MJSON_NUMBER:
      return "number";
    case MJSON_STRING:
      return "string";
    case MJSON_ARRAY:
      return "array";
    case MJSON_OBJECT:
      return "object";
  }
  return "invalid";
}

const MJsonValue *
mjson_get (const MJsonValue *obj, const char *key)
{
  if (!obj || obj->type != MJSON_OBJECT || !key)
    return NULL;
  size_t n = strlen (key);
  /* Compare lengths too, so a key with an embedded NUL never matches. */
  for (size_t i = 0; i < obj->u.c.n; i++) {
    const Member *m = &obj->u.c.members[i];
    if (m->key_len == n && memcmp (m->key, key, n) == 0)
      return m->value;
  }
  return NULL;
}

size_t
mjson_len (const MJsonValue *v)
{
  if (!v || (v->type != MJSON_ARRAY && v->type != MJSON_OBJECT))
    return 0;
  return v->u.c.n;
}

const MJsonValue *
mjson_at (const MJsonValue *v, size_t i)
{
  if (i >= mjson_len (v))
    return NULL;
  return v->type == MJSON_ARRAY ? v->u.c.items[i] : v->u.c.members[i].value;
}

const char *
mjson_key_at (const MJsonValue *obj, size_t i)
{
  if (!obj || obj->type != MJSON_OBJECT || i >= obj->u.c.n)
    return NULL;
  return obj->u.c.members[i].key;
}

size_t
mjson_key_len_at (const MJsonValue *obj, size_t i)
{
  if (!obj || obj->type != MJSON_OBJECT || i >= obj->u.c.n)
    return 0;
  return obj->u.c.members[i].key_len;
}

double
mjson_number (const MJsonValue *v)
{
  return v && v->type == MJSON_NUMBER ? v->u.num.d : 0.0;
}

gboolean
mjson_is_integer (const MJsonValue *v, int64_t *out)
{
  if (!v || v->type != MJSON_NUMBER || !v->u.num.is_int)
    return FALSE;
  if (out)
    *out = v->u.num.i;
  return TRUE;
}

const char *
mjson_string (const MJsonValue *v)
{
  return v && v->type == MJSON_STRING ? v->u.str.s : NULL;
}

size_t
mjson_string_len (const MJsonValue *v)
{
  return v && v->type == MJSON_STRING ? v->u.str.len : 0;
}

gboolean
mjson_bool (const MJsonValue *v)
{
  return v && v->type == MJSON_BOOL && v->u.b;
}
