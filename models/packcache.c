#include "packcache.h"

#include "mapguard.h"
#include "model-error.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib/gstdio.h>

/* 2: Q8 without column sums; 3: Q4 scales inside the weights' stream */
#define MAGIC "MOSHIPK3"
#define END_MAGIC "MOSHIEND"
#define RECORD_MAGIC 0x44434552u /* "RECD" */
#define ALIGN 64

typedef struct {
  uint32_t magic, name_len;
  int32_t K, N, type, pad;
  uint64_t bytes[4];
} RecordHeader; /* 56 bytes, stored in a 64-byte slot */

struct MoshiPackCache {
  gint refcount;
  gchar *path;
  /* reading */
  void *map;
  MoshiMapGuard *guard; /* owns the fd */
  const guint8 *base;
  size_t size, cursor, end;
  gboolean stopped;
  int lent;
  /* writing */
  gchar *tmp_path;
  FILE *out;
  size_t written;
  gboolean write_failed;
  int write_errno;
  uint64_t records;
};

static size_t
align_up (size_t n)
{
  return (n + ALIGN - 1) & ~(size_t) (ALIGN - 1);
}

/* Checks the whole file's structure once, so that reading never goes past
 * the mapping and a truncated file is never used. */
static gboolean
validate (MoshiPackCache *c, const char *key)
{
  const size_t klen = strlen (key);
  if (c->size < 16 + ALIGN || memcmp (c->base, MAGIC, 8))
    return FALSE;
  uint64_t hlen;
  memcpy (&hlen, c->base + 8, 8);
  if (hlen != klen || 16 + hlen > c->size || memcmp (c->base + 16, key, klen))
    return FALSE;
  if (memcmp (c->base + c->size - 16, END_MAGIC, 8))
    return FALSE;
  uint64_t count;
  memcpy (&count, c->base + c->size - 8, 8);
  size_t pos = align_up (16 + hlen), end = c->size - 16;
  for (uint64_t i = 0; i < count; i++) {
    RecordHeader h;
    if (pos + ALIGN > end)
      return FALSE;
    memcpy (&h, c->base + pos, sizeof h);
    if (h.magic != RECORD_MAGIC || h.name_len > 4096)
      return FALSE;
    pos += ALIGN + align_up (h.name_len);
    for (int j = 0; j < 4; j++) {
      if (h.bytes[j] > end || pos + h.bytes[j] > end)
        return FALSE;
      pos += align_up (h.bytes[j]);
    }
    if (pos > end)
      return FALSE;
  }
  c->cursor = align_up (16 + hlen);
  c->end = end;
  return pos == end;
}

static gboolean
write_bytes (MoshiPackCache *c, const void *p, size_t n)
{
  static const guint8 zeros[ALIGN];
  if (c->write_failed)
    return FALSE;
  if (n && fwrite (p, 1, n, c->out) != n) {
    c->write_failed = TRUE;
    c->write_errno = errno;
    return FALSE;
  }
  c->written += n;
  size_t pad = align_up (c->written) - c->written;
  if (pad && fwrite (zeros, 1, pad, c->out) != pad) {
    c->write_failed = TRUE;
    c->write_errno = errno;
    return FALSE;
  }
  c->written += pad;
  return TRUE;
}

MoshiPackCache *
moshi_pack_cache_open (const char *path, const char *key, GError **error)
{
  MoshiPackCache *c = g_new0 (MoshiPackCache, 1);
  c->refcount = 1;
  c->path = g_strdup (path);
  int fd = open (path, O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (fd >= 0 && fstat (fd, &st) == 0 && S_ISREG (st.st_mode) && st.st_size > 0
      && (uint64_t) st.st_size <= SIZE_MAX) {
    c->size = (size_t) st.st_size;
    c->map = mmap (NULL, c->size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (c->map == MAP_FAILED)
      c->map = NULL;
  }
  if (c->map) {
    c->base = c->map;
    c->guard = moshi_mapguard_add (c->map, c->size, fd, path,
        "quantized-weights cache", TRUE);
    fd = -1;
    if (validate (c, key))
      return c;
    moshi_mapguard_remove (c->guard);
    c->guard = NULL;
    munmap (c->map, c->size);
    c->map = NULL;
    c->base = NULL;
    c->size = 0;
  }
  if (fd >= 0)
    close (fd);
  /* Write a new one. */
  c->tmp_path = g_strdup_printf ("%s.tmp-%d", path, (int) getpid ());
  c->out = fopen (c->tmp_path, "wb");
  if (!c->out) {
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_IO,
        "cannot write the quantized-weights cache %s: %s", c->tmp_path,
        g_strerror (errno));
    moshi_pack_cache_unref (c);
    return NULL;
  }
  uint64_t hlen = strlen (key);
  if (fwrite (MAGIC, 1, 8, c->out) != 8 || fwrite (&hlen, 8, 1, c->out) != 1) {
    c->write_failed = TRUE;
    c->write_errno = errno;
  }
  c->written = 16;
  write_bytes (c, key, hlen);
  return c;
}

gboolean
moshi_pack_cache_is_reading (const MoshiPackCache *c)
{
  return c->map != NULL;
}

gboolean
moshi_pack_cache_take (MoshiPackCache *c, const char *name, int K, int N,
    MoshiWeightType type, MoshiPackedB *p)
{
  if (!c->map || c->stopped || c->cursor + ALIGN > c->end)
    return FALSE;
  RecordHeader h;
  memcpy (&h, c->base + c->cursor, sizeof h);
  size_t pos = c->cursor + ALIGN;
  const size_t nlen = strlen (name);
  MoshiPackedB shape;
  void *ptrs[4] = { NULL, NULL, NULL, NULL };
  size_t want[4];
  moshi_packed_borrow (&shape, K, N, type, ptrs);
  moshi_packed_layout (&shape, ptrs, want);
  gboolean ok = h.name_len == nlen && !memcmp (c->base + pos, name, nlen)
      && h.K == K && h.N == N && h.type == (int32_t) type;
  for (int j = 0; ok && j < 4; j++)
    ok = h.bytes[j] == want[j];
  if (!ok) {
    c->stopped = TRUE; /* out of step with this model: lend nothing more */
    return FALSE;
  }
  pos += align_up (nlen);
  for (int j = 0; j < 4; j++) {
    ptrs[j] = want[j] ? (void *) (c->base + pos) : NULL;
    pos += align_up (want[j]);
  }
  moshi_packed_borrow (p, K, N, type, ptrs);
  c->cursor = pos;
  c->lent++;
  return TRUE;
}

void
moshi_pack_cache_put (MoshiPackCache *c, const char *name,
    const MoshiPackedB *p)
{
  if (!c->out || c->write_failed)
    return;
  void *ptrs[4];
  size_t bytes[4];
  moshi_packed_layout (p, ptrs, bytes);
  RecordHeader h = { RECORD_MAGIC, (uint32_t) strlen (name), p->K, p->N,
    (int32_t) p->type, 0, { bytes[0], bytes[1], bytes[2], bytes[3] } };
  guint8 slot[ALIGN] = { 0 };
  memcpy (slot, &h, sizeof h);
  if (!write_bytes (c, slot, ALIGN) || !write_bytes (c, name, h.name_len))
    return;
  for (int j = 0; j < 4; j++)
    if (!write_bytes (c, ptrs[j], bytes[j]))
      return;
  c->records++;
}

gboolean
moshi_pack_cache_finish (MoshiPackCache *c, GError **error)
{
  if (!c->out)
    return TRUE;
  gboolean ok = !c->write_failed && fwrite (END_MAGIC, 1, 8, c->out) == 8
      && fwrite (&c->records, 8, 1, c->out) == 1 && fflush (c->out) == 0
      && fsync (fileno (c->out)) == 0;
  int err = c->write_failed ? c->write_errno : errno;
  if (fclose (c->out) != 0 && ok) {
    ok = FALSE;
    err = errno;
  }
  c->out = NULL;
  if (ok && rename (c->tmp_path, c->path) != 0) {
    ok = FALSE;
    err = errno;
  }
  if (!ok) {
    g_unlink (c->tmp_path);
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_IO,
        "could not write the quantized-weights cache %s (%s); the model is "
        "loaded, the next start will quantize again",
        c->path, g_strerror (err));
  }
  return ok;
}

gboolean
moshi_pack_cache_finish_load (MoshiPackCache *c, GError **error)
{
  return !c->guard || moshi_mapguard_finish_load (c->guard, error);
}

MoshiPackCache *
moshi_pack_cache_ref (MoshiPackCache *c)
{
  g_atomic_int_inc (&c->refcount);
  return c;
}

void
moshi_pack_cache_unref (MoshiPackCache *c)
{
  if (!c || !g_atomic_int_dec_and_test (&c->refcount))
    return;
  if (c->out) {
    fclose (c->out);
    g_unlink (c->tmp_path);
  }
  moshi_mapguard_remove (c->guard); /* before the pages go */
  if (c->map)
    munmap (c->map, c->size);
  g_free (c->tmp_path);
  g_free (c->path);
  g_free (c);
}

int
moshi_pack_cache_lent (const MoshiPackCache *c)
{
  return c->lent;
}
