/* Memory-mapped safetensors reader; see safetensors.h for the contract.
 *
 * All validation happens in st_open() so that the accessors can trust every
 * StTensor: after a successful open, [data, data + nbytes) lies inside the
 * mapping and nbytes == numel * dtype size. */
#include "safetensors.h"

#include "alloc.h"
#include "json.h"
#include "mapguard.h"
#include "model-error.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Tensor data is little-endian and copied as-is. */
#if G_BYTE_ORDER != G_LITTLE_ENDIAN
#error "safetensors.c assumes a little-endian host"
#endif

/* Real headers are a few hundred KB at most; a cap keeps a corrupt length
 * from making us parse (and allocate for) gigabytes of garbage. */
#define ST_MAX_HEADER (100u * 1024 * 1024)

struct StFile {
  gint refcount;
  char *path;
  void *map; /* NULL for an empty file */
  size_t map_len;
  MoshiMapGuard *guard; /* owns the fd */
  StTensor *tensors; /* sorted by name; names owned */
  size_t n;
  GHashTable *metadata; /* char* -> char*, may be NULL */
};

static const struct {
  const char *name;
  size_t size;
} dtypes[] = {
  [ST_BOOL] = { "BOOL", 1 },
  [ST_U8] = { "U8", 1 },
  [ST_I8] = { "I8", 1 },
  [ST_I16] = { "I16", 2 },
  [ST_U16] = { "U16", 2 },
  [ST_I32] = { "I32", 4 },
  [ST_U32] = { "U32", 4 },
  [ST_I64] = { "I64", 8 },
  [ST_U64] = { "U64", 8 },
  [ST_F16] = { "F16", 2 },
  [ST_BF16] = { "BF16", 2 },
  [ST_F32] = { "F32", 4 },
  [ST_F64] = { "F64", 8 },
};

size_t
st_dtype_size (StDtype d)
{
  return (unsigned) d < G_N_ELEMENTS (dtypes) ? dtypes[d].size : 0;
}

const char *
st_dtype_name (StDtype d)
{
  return (unsigned) d < G_N_ELEMENTS (dtypes) ? dtypes[d].name : "invalid";
}

static void
free_tensors (StTensor *t, size_t n)
{
  for (size_t i = 0; i < n; i++)
    g_free ((char *) t[i].name);
  g_free (t);
}

static int
cmp_name (const void *a, const void *b)
{
  return strcmp (((const StTensor *) a)->name, ((const StTensor *) b)->name);
}

static int
cmp_data (const void *a, const void *b)
{
  const StTensor *x = a, *y = b;
  if (x->data != y->data)
    return (const char *) x->data < (const char *) y->data ? -1 : 1;
  return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

static gboolean format_error (GError **error, const char *path,
    const char *tensor, const char *fmt, ...) G_GNUC_PRINTF (4, 5);

static gboolean
format_error (GError **error, const char *path, const char *tensor,
    const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  char *msg = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  if (tensor)
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_FORMAT,
        "%s: tensor '%s': %s", path, tensor, msg);
  else
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_FORMAT, "%s: %s",
        path, msg);
  g_free (msg);
  return FALSE;
}

static gboolean
parse_dtype (const MJsonValue *v, StDtype *out)
{
  const char *s = mjson_string (v);
  if (!s)
    return FALSE;
  for (size_t i = 0; i < G_N_ELEMENTS (dtypes); i++)
    if (strcmp (s, dtypes[i].name) == 0 && strlen (s) == mjson_string_len (v)) {
      *out = (StDtype) i;
      return TRUE;
    }
  return FALSE;
}

/* Fills t from one header entry; data/nbytes are checked against the data
 * area of data_len bytes at data_base. */
static gboolean
parse_entry (const char *path, const char *name, const MJsonValue *e,
    const char *data_base, size_t data_len, StTensor *t, GError **error)
{
  if (mjson_type (e) != MJSON_OBJECT)
    return format_error (error, path, name,
        "entry: expected an object, found %s",
        mjson_type_name (mjson_type (e)));

  const MJsonValue *dt = mjson_get (e, "dtype");
  if (!dt)
    return format_error (error, path, name, "missing \"dtype\"");
  if (mjson_type (dt) != MJSON_STRING)
    return format_error (error, path, name,
        "\"dtype\": expected a string, found %s",
        mjson_type_name (mjson_type (dt)));
  if (!parse_dtype (dt, &t->dtype)) {
    /* Quote at most 32 bytes of a hostile string; mark what was cut. */
    gboolean cut = mjson_string_len (dt) > 32
        || strlen (mjson_string (dt)) != mjson_string_len (dt);
    return format_error (error, path, name, "unknown dtype \"%.32s%s\"",
        mjson_string (dt), cut ? "..." : "");
  }

  const MJsonValue *sh = mjson_get (e, "shape");
  if (!sh)
    return format_error (error, path, name, "missing \"shape\"");
  if (mjson_type (sh) != MJSON_ARRAY)
    return format_error (error, path, name,
        "\"shape\": expected an array, found %s",
        mjson_type_name (mjson_type (sh)));
  if (mjson_len (sh) > ST_MAX_DIMS)
    return format_error (error, path, name,
        "%zu dimensions, at most %d supported", mjson_len (sh), ST_MAX_DIMS);
  t->ndim = (int) mjson_len (sh);
  gboolean has_zero = FALSE, overflow = FALSE;
  int64_t numel = 1;
  for (int i = 0; i < t->ndim; i++) {
    int64_t d;
    if (!mjson_is_integer (mjson_at (sh, i), &d) || d < 0)
      return format_error (error, path, name,
          "shape[%d] is not a non-negative integer", i);
    t->shape[i] = d;
    has_zero |= d == 0;
    if (d != 0 && numel > INT64_MAX / d)
      overflow = TRUE;
    else
      numel *= d;
  }
  /* A zero dimension makes the product 0 however large the others are. */
  t->numel = has_zero ? 0 : numel;
  size_t esize = dtypes[t->dtype].size;
  if (!has_zero && (overflow || (uint64_t) numel > SIZE_MAX / esize))
    return format_error (error, path, name, "element count overflows");

  const MJsonValue *off = mjson_get (e, "data_offsets");
  int64_t begin, end;
  if (!off)
    return format_error (error, path, name, "missing \"data_offsets\"");
  if (mjson_type (off) != MJSON_ARRAY || mjson_len (off) != 2
      || !mjson_is_integer (mjson_at (off, 0), &begin)
      || !mjson_is_integer (mjson_at (off, 1), &end) || begin < 0 || end < 0)
    return format_error (error, path, name,
        "\"data_offsets\" must be an array of 2 non-negative integers");
  if (end < begin)
    return format_error (error, path, name,
        "data_offsets end %" G_GINT64_FORMAT " < begin %" G_GINT64_FORMAT, end,
        begin);
  if ((uint64_t) end > data_len)
    return format_error (error, path, name,
        "data_offsets [%" G_GINT64_FORMAT ", %" G_GINT64_FORMAT
        "] outside the data area (%zu bytes)",
        begin, end, data_len);
  t->nbytes = (size_t) (end - begin);
  if (t->nbytes != (size_t) t->numel * esize)
    return format_error (error, path, name,
        "data is %zu bytes, expected %" G_GINT64_FORMAT " elements x %zu bytes"
        " (%s) = %zu",
        t->nbytes, t->numel, esize, dtypes[t->dtype].name,
        (size_t) t->numel * esize);
  t->data = data_base + begin;
  return TRUE;
}

static gboolean
parse_metadata (const char *path, const MJsonValue *md, GHashTable **out,
    GError **error)
{
  if (mjson_type (md) != MJSON_OBJECT)
    return format_error (error, path, NULL,
        "\"__metadata__\": expected an object, found %s",
        mjson_type_name (mjson_type (md)));
  *out = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  for (size_t i = 0; i < mjson_len (md); i++) {
    const char *key = mjson_key_at (md, i);
    const char *val = mjson_string (mjson_at (md, i));
    if (!val)
      return format_error (error, path, NULL,
          "__metadata__ entry '%s': expected a string, found %s", key,
          mjson_type_name (mjson_type (mjson_at (md, i))));
    /* First occurrence wins, like mjson_get(). */
    if (!g_hash_table_contains (*out, key))
      g_hash_table_insert (*out, g_strdup (key), g_strdup (val));
  }
  return TRUE;
}

/* Parses and validates the header; fills f->tensors, f->n and f->metadata. */
static gboolean
load_header (StFile *f, const char *contents, size_t size, GError **error)
{
  const char *path = f->path;
  if (size < 8)
    return format_error (error, path, NULL,
        "file is %zu bytes, too short for the 8-byte header length", size);
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--)
    hlen = (hlen << 8) | (unsigned char) contents[i];
  if (hlen > ST_MAX_HEADER)
    return format_error (error, path, NULL,
        "header length %" G_GUINT64_FORMAT " exceeds the %u-byte limit", hlen,
        ST_MAX_HEADER);
  if (hlen > size - 8)
    return format_error (error, path, NULL,
        "header length %" G_GUINT64_FORMAT " exceeds the %zu bytes after it",
        hlen, size - 8);

  GError *jerr = NULL;
  MJsonValue *root = mjson_parse (contents + 8, (size_t) hlen, &jerr);
  if (!root) {
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_FORMAT,
        "%s: invalid header: %s", path, jerr->message);
    g_error_free (jerr);
    return FALSE;
  }
  gboolean ok = FALSE;
  const char *data_base = contents + 8 + hlen;
  size_t data_len = size - 8 - (size_t) hlen;
  size_t n_members = mjson_len (root);
  StTensor *by_data = NULL;
  if (mjson_type (root) != MJSON_OBJECT) {
    format_error (error, path, NULL, "header: expected an object, found %s",
        mjson_type_name (mjson_type (root)));
    goto out;
  }

  f->tensors = g_new0 (StTensor, n_members ? n_members : 1);
  gboolean seen_metadata = FALSE;
  for (size_t i = 0; i < n_members; i++) {
    const char *key = mjson_key_at (root, i);
    /* An embedded NUL would make two different names equal as C strings. */
    if (strlen (key) != mjson_key_len_at (root, i)) {
      format_error (error, path, key, "name contains a NUL character");
      goto out;
    }
    if (strcmp (key, "__metadata__") == 0) {
      if (seen_metadata) {
        format_error (error, path, NULL, "duplicate \"__metadata__\"");
        goto out;
      }
      seen_metadata = TRUE;
      if (!parse_metadata (path, mjson_at (root, i), &f->metadata, error))
        goto out;
      continue;
    }
    StTensor *t = &f->tensors[f->n];
    if (!parse_entry (path, key, mjson_at (root, i), data_base, data_len, t,
            error))
      goto out;
    t->name = g_strdup (key);
    f->n++;
  }

  qsort (f->tensors, f->n, sizeof (StTensor), cmp_name);
  for (size_t i = 1; i < f->n; i++)
    if (strcmp (f->tensors[i - 1].name, f->tensors[i].name) == 0) {
      format_error (error, path, f->tensors[i].name, "duplicate tensor name");
      goto out;
    }

  /* Overlap check on a copy sorted by position; empty tensors occupy no
   * bytes and cannot overlap anything. */
  by_data = g_memdup2 (f->tensors, (f->n ? f->n : 1) * sizeof (StTensor));
  qsort (by_data, f->n, sizeof (StTensor), cmp_data);
  const StTensor *last = NULL;
  for (size_t i = 0; i < f->n; i++) {
    const StTensor *t = &by_data[i];
    if (t->nbytes == 0)
      continue;
    if (last
        && (const char *) t->data < (const char *) last->data + last->nbytes) {
      format_error (error, path, t->name,
          "data [%td, %td) overlaps tensor '%s' [%td, %td)",
          (const char *) t->data - data_base,
          (const char *) t->data + t->nbytes - data_base, last->name,
          (const char *) last->data - data_base,
          (const char *) last->data + last->nbytes - data_base);
      goto out;
    }
    if (!last
        || (const char *) t->data + t->nbytes
            > (const char *) last->data + last->nbytes)
      last = t;
  }
  ok = TRUE;

out:
  g_free (by_data);
  mjson_free (root);
  return ok;
}

static void (*test_open_hook) (const char *path);

void
st_set_test_open_hook (void (*hook) (const char *path))
{
  test_open_hook = hook;
}

StFile *
st_open (const char *path, GError **error)
{
  g_return_val_if_fail (path != NULL, NULL);
  int fd = open (path, O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat (fd, &st) != 0) {
    int err = errno;
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_IO,
        "%s: cannot open: %s", path, g_strerror (err));
    if (fd >= 0)
      close (fd);
    return NULL;
  }
  if (!S_ISREG (st.st_mode) || (uint64_t) st.st_size > SIZE_MAX) {
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_IO,
        "%s: cannot open: not a regular file", path);
    close (fd);
    return NULL;
  }
  size_t len = (size_t) st.st_size;
  void *map = NULL;
  if (len > 0) {
    /* Private and read-only: nothing we do can reach the file. */
    map = mmap (NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
      int err = errno;
      g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_IO,
          "%s: cannot open: mmap failed: %s", path, g_strerror (err));
      close (fd);
      return NULL;
    }
  }
  StFile *f = g_new0 (StFile, 1);
  f->refcount = 1;
  f->path = g_strdup (path);
  f->map = map;
  f->map_len = len;
  f->guard = moshi_mapguard_add (map, len, fd, path, "model file", TRUE);
  /* load_header rejects size < 8 first (map is NULL for an empty file). */
  if (!load_header (f, map, len, error)) {
    st_unref (f);
    return NULL;
  }
  if (test_open_hook)
    test_open_hook (path);
  return f;
}

gboolean
st_finish_load (StFile *f, GError **error)
{
  return moshi_mapguard_finish_load (f->guard, error);
}

StFile *
st_ref (StFile *f)
{
  g_return_val_if_fail (f != NULL, NULL);
  g_atomic_int_inc (&f->refcount);
  return f;
}

void
st_unref (StFile *f)
{
  if (!f || !g_atomic_int_dec_and_test (&f->refcount))
    return;
  free_tensors (f->tensors, f->n);
  if (f->metadata)
    g_hash_table_unref (f->metadata);
  moshi_mapguard_remove (f->guard); /* before the pages go */
  if (f->map)
    munmap (f->map, f->map_len);
  g_free (f->path);
  g_free (f);
}

const char *
st_path (const StFile *f)
{
  return f->path;
}

size_t
st_count (const StFile *f)
{
  return f->n;
}

const StTensor *
st_index (const StFile *f, size_t i)
{
  return i < f->n ? &f->tensors[i] : NULL;
}

const StTensor *
st_find (const StFile *f, const char *name)
{
  StTensor key = { .name = name };
  return bsearch (&key, f->tensors, f->n, sizeof (StTensor), cmp_name);
}

const char *
st_metadata (const StFile *f, const char *key)
{
  return f->metadata ? g_hash_table_lookup (f->metadata, key) : NULL;
}

static char *
shape_str (int ndim, const int64_t *shape)
{
  GString *s = g_string_new ("[");
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0)
      g_string_append_printf (s, "%s*", i ? ", " : "");
    else
      g_string_append_printf (s, "%s%" G_GINT64_FORMAT, i ? ", " : "",
          shape[i]);
  }
  g_string_append_c (s, ']');
  return g_string_free (s, FALSE);
}

const StTensor *
st_require (const StFile *f, const char *name, int ndim, const int64_t *shape,
    GError **error)
{
  const StTensor *t = st_find (f, name);
  if (!t) {
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_MISSING,
        "%s: tensor '%s' not found", f->path, name);
    return NULL;
  }
  gboolean ok = t->ndim == ndim;
  for (int i = 0; ok && i < ndim; i++)
    ok = shape[i] < 0 || shape[i] == t->shape[i];
  if (!ok) {
    char *found = shape_str (t->ndim, t->shape);
    char *expected = shape_str (ndim, shape);
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_SHAPE,
        "%s: tensor '%s' has shape %s, expected %s", f->path, name, found,
        expected);
    g_free (found);
    g_free (expected);
    return NULL;
  }
  return t;
}

float
st_bf16_to_f32 (uint16_t h)
{
  uint32_t bits = (uint32_t) h << 16;
  float x;
  memcpy (&x, &bits, sizeof x);
  return x;
}

float
st_f16_to_f32 (uint16_t h)
{
  uint32_t sign = (uint32_t) (h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
  if (exp == 0) {
    /* Zero or subnormal: mant * 2^-24 is exact in float. */
    float x = ldexpf ((float) mant, -24);
    return sign ? -x : x;
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13); /* inf, NaN keeps payload */
  } else {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  }
  float x;
  memcpy (&x, &bits, sizeof x);
  return x;
}

static gboolean
dtype_error (const StFile *f, const StTensor *t, const char *wanted,
    GError **error)
{
  g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_DTYPE,
      "%s: tensor '%s' has dtype %s, expected %s", f->path, t->name,
      dtypes[t->dtype].name, wanted);
  return FALSE;
}

gboolean
st_read_f32 (const StFile *f, const StTensor *t, float *dst, GError **error)
{
  const unsigned char *src = t->data;
  size_t n = (size_t) t->numel;
  /* Data may be unaligned inside the mapping, hence memcpy per element. */
  switch (t->dtype) {
    case ST_F32:
      if (n)
        memcpy (dst, src, n * sizeof (float));
      return TRUE;
    case ST_F64:
      for (size_t i = 0; i < n; i++) {
        double d;
        memcpy (&d, src + 8 * i, 8);
        dst[i] = (float) d;
      }
      return TRUE;
    case ST_F16:
    case ST_BF16:
      for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy (&h, src + 2 * i, 2);
        dst[i] = t->dtype == ST_F16 ? st_f16_to_f32 (h) : st_bf16_to_f32 (h);
      }
      return TRUE;
    default:
      return dtype_error (f, t, "a floating-point type (F32, F16, BF16, F64)",
          error);
  }
}

float *
st_dup_f32 (const StFile *f, const StTensor *t, GError **error)
{
  if (t->dtype != ST_F32 && t->dtype != ST_F64 && t->dtype != ST_F16
      && t->dtype != ST_BF16) {
    dtype_error (f, t, "a floating-point type (F32, F16, BF16, F64)", error);
    return NULL;
  }
  /* numel * 4 cannot overflow: numel <= nbytes <= file size. */
  float *dst = moshi_alloc ((size_t) t->numel * sizeof (float));
  if (!dst) {
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_IO,
        "%s: tensor '%s': out of memory allocating %zu bytes", f->path, t->name,
        (size_t) t->numel * sizeof (float));
    return NULL;
  }
  st_read_f32 (f, t, dst, NULL);
  return dst;
}

gboolean
st_read_i64 (const StFile *f, const StTensor *t, int64_t *dst, GError **error)
{
  const unsigned char *src = t->data;
  size_t n = (size_t) t->numel, es = dtypes[t->dtype].size;
  if (t->dtype == ST_F16 || t->dtype == ST_BF16 || t->dtype == ST_F32
      || t->dtype == ST_F64)
    return dtype_error (f, t, "an integer or BOOL type", error);
  for (size_t i = 0; i < n; i++) {
    union {
      uint8_t u8;
      int8_t i8;
      uint16_t u16;
      int16_t i16;
      uint32_t u32;
      int32_t i32;
      uint64_t u64;
      int64_t i64;
    } v;
    memcpy (&v, src + es * i, es); /* unaligned-safe */
    switch (t->dtype) {
      case ST_BOOL:
        dst[i] = v.u8 != 0;
        break;
      case ST_U8:
        dst[i] = v.u8;
        break;
      case ST_I8:
        dst[i] = v.i8;
        break;
      case ST_U16:
        dst[i] = v.u16;
        break;
      case ST_I16:
        dst[i] = v.i16;
        break;
      case ST_U32:
        dst[i] = v.u32;
        break;
      case ST_I32:
        dst[i] = v.i32;
        break;
      case ST_I64:
        dst[i] = v.i64;
        break;
      default: /* ST_U64 */
        if (v.u64 > INT64_MAX) {
          g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_DTYPE,
              "%s: tensor '%s': U64 value %" G_GUINT64_FORMAT " at index %zu "
              "does not fit in int64",
              f->path, t->name, v.u64, i);
          return FALSE;
        }
        dst[i] = (int64_t) v.u64;
        break;
    }
  }
  return TRUE;
}
