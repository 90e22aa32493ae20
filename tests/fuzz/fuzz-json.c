/* libFuzzer target for models/json.c.  libFuzzer hands us an exact-size
 * buffer, so ASan catches any read past len; the DOM is then walked with
 * every accessor. */
#include "json.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

static void
walk (const MJsonValue *v, int depth)
{
  /* The parser caps nesting at 64 levels; a deeper DOM is a bug. */
  if (depth > 64)
    __builtin_trap ();
  int64_t i;
  switch (mjson_type (v)) {
    case MJSON_STRING:
      if (strlen (mjson_string (v)) > mjson_string_len (v))
        __builtin_trap ();
      break;
    case MJSON_NUMBER:
      /* Integers up to 2^53 are exact doubles, so both views must agree. */
      if (mjson_is_integer (v, &i) && i <= (1LL << 53) && i >= -(1LL << 53)
          && (double) i != mjson_number (v))
        __builtin_trap ();
      break;
    case MJSON_OBJECT:
      for (size_t k = 0; k < mjson_len (v); k++) {
        const char *key = mjson_key_at (v, k);
        if (strlen (key) == mjson_key_len_at (v, k)) {
          const MJsonValue *first = mjson_get (v, key);
          if (!first)
            __builtin_trap ();
        }
        walk (mjson_at (v, k), depth + 1);
      }
      break;
    case MJSON_ARRAY:
      for (size_t k = 0; k < mjson_len (v); k++)
        walk (mjson_at (v, k), depth + 1);
      break;
    default:
      (void) mjson_bool (v);
      break;
  }
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  GError *error = NULL;
  MJsonValue *v = mjson_parse ((const char *) data, size, &error);
  if (v) {
    walk (v, 0);
    mjson_free (v);
  } else {
    if (!error || !strstr (error->message, "at byte "))
      __builtin_trap ();
    g_error_free (error);
  }
  return 0;
}
