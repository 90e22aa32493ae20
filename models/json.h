/* A small, strict JSON reader (RFC 8259) for safetensors headers and
 * Kyutai config.json files.  Kept in models/ so the inference library needs
 * nothing beyond GLib; hardened for hostile input (depth limit, no recursion
 * on unbounded nesting, exact number parsing, every error located). */
#pragma once
#include <glib.h>
#include <stddef.h>
#include <stdint.h>

G_BEGIN_DECLS

typedef enum {
  MJSON_NULL,
  MJSON_BOOL,
  MJSON_NUMBER,
  MJSON_STRING,
  MJSON_ARRAY,
  MJSON_OBJECT,
} MJsonType;

typedef struct MJsonValue MJsonValue;

/* Parses exactly one JSON value (surrounding whitespace allowed) from
 * text[0..len).  Returns NULL and sets error (MOSHI_MODEL_ERROR_FORMAT, with
 * the byte offset of the problem) on any syntax error, invalid UTF-8 in a
 * string, nesting deeper than 64, or trailing garbage. */
MJsonValue *mjson_parse (const char *text, size_t len, GError **error);
void mjson_free (MJsonValue *v);
/* Reads and parses a configuration file whose root must be an object.
 * Errors name the file: FORMAT for I/O and syntax, CONFIG for a root that
 * is not an object. */
MJsonValue *mjson_parse_object_file (const char *path, GError **error);

MJsonType mjson_type (const MJsonValue *v);
const char *mjson_type_name (MJsonType t);

/* Objects: lookup by key (first match), iteration in document order. */
const MJsonValue *mjson_get (const MJsonValue *obj, const char *key);
size_t mjson_len (const MJsonValue *v); /* array or object size, else 0 */
const MJsonValue *mjson_at (const MJsonValue *v,
    size_t i); /* element / member value */
const char *mjson_key_at (const MJsonValue *obj, size_t i); /* member key */
/* Key length in bytes; differs from strlen() when the key contains \u0000. */
size_t mjson_key_len_at (const MJsonValue *obj, size_t i);

double mjson_number (const MJsonValue *v); /* 0 when not a number */
gboolean mjson_is_integer (const MJsonValue *v,
    int64_t *out); /* exact integer in int64 range */
const char *mjson_string (
    const MJsonValue *v); /* NUL-terminated UTF-8, NULL when not a string */
size_t mjson_string_len (const MJsonValue *v);
gboolean mjson_bool (const MJsonValue *v);

G_END_DECLS
