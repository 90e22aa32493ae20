/* Memory-mapped safetensors reader.
 *
 * The whole file is mapped read-only; tensors point into the mapping (zero
 * copy).  Opening validates everything a hostile file could get wrong: header
 * length, JSON syntax, dtypes, shapes, data offsets inside the data area, byte
 * size = product(shape) * dtype size, and no two tensors overlapping.  After
 * st_open() succeeds, every StTensor's [data, data + nbytes) is inside the map.
 */
#pragma once
#include <glib.h>
#include <stddef.h>
#include <stdint.h>

G_BEGIN_DECLS

#define ST_MAX_DIMS 8

typedef enum {
  ST_BOOL,
  ST_U8,
  ST_I8,
  ST_I16,
  ST_U16,
  ST_I32,
  ST_U32,
  ST_I64,
  ST_U64,
  ST_F16,
  ST_BF16,
  ST_F32,
  ST_F64,
} StDtype;

typedef struct {
  const char *name;
  StDtype dtype;
  int ndim;
  int64_t shape[ST_MAX_DIMS];
  int64_t numel;
  const void *data; /* inside the mapping; may be unaligned */
  size_t nbytes;
} StTensor;

typedef struct StFile StFile;

StFile *st_open (const char *path, GError **error);
/* Ends the loading phase (see mapguard.h): FALSE with an error naming the
 * file when it was truncated or rewritten since st_open().  Until then, a
 * read past a new end of file gives zeros instead of SIGBUS; afterwards it
 * prints "model file X was truncated while in use" and the process dies of
 * SIGBUS.  Loaders call it once every tensor has been read or packed. */
gboolean st_finish_load (StFile *f, GError **error);
StFile *st_ref (StFile *f);
/* Tests only: when set, st_open() calls hook(path) once the header is
 * validated (e.g. to truncate the file before the tensors are read).  NULL
 * removes it.  A function, not a global: the library is linked into both
 * the tests and the plugin. */
void st_set_test_open_hook (void (*hook) (const char *path));
void st_unref (StFile *f);

const char *st_path (const StFile *f);
size_t st_count (const StFile *f);
const StTensor *st_index (const StFile *f, size_t i); /* sorted by name */
const StTensor *st_find (const StFile *f,
    const char *name); /* NULL if absent */
const char *st_metadata (const StFile *f,
    const char *key); /* __metadata__ entry */

size_t st_dtype_size (StDtype d);
const char *st_dtype_name (StDtype d);

/* Finds `name` and checks its shape: ndim must equal `ndim` and each dim must
 * equal shape[i] unless shape[i] < 0 (wildcard).  Errors name the file, the
 * tensor, and expected vs found. */
const StTensor *st_require (const StFile *f, const char *name, int ndim,
    const int64_t *shape, GError **error);

/* Converts a floating tensor (F32, F16, BF16, F64) to float32 into dst
 * (numel floats).  Other dtypes are MOSHI_MODEL_ERROR_DTYPE. */
gboolean st_read_f32 (const StFile *f, const StTensor *t, float *dst,
    GError **error);
/* Same, into a newly g_malloc'ed buffer (64-byte aligned, free with moshi_free). */
float *st_dup_f32 (const StFile *f, const StTensor *t, GError **error);
/* Integer tensors (I64, I32, I16, U8, I8, ...) to int64. */
gboolean st_read_i64 (const StFile *f, const StTensor *t, int64_t *dst,
    GError **error);

/* Helpers for converting half formats. */
float st_bf16_to_f32 (uint16_t h);
float st_f16_to_f32 (uint16_t h);

G_END_DECLS
