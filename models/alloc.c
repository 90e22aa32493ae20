#include "alloc.h"

#include <glib.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* Every block starts with a 64-byte header (keeps the user pointer 64-byte
 * aligned) recording how it was obtained.  Large blocks come straight from
 * mmap: their zero pages cost no memory until written, so a 3000-step KV
 * cache only occupies what a conversation has used so far. */
#define HEADER 64
#define MMAP_THRESHOLD (1u << 20)
#define MAGIC_HEAP 0x6d6f736869686570ull /* "moshihep" */
#define MAGIC_MMAP 0x6d6f7368696d6d70ull /* "moshimmp" */
#define MAGIC_HUGE 0x6d6f736869687567ull /* "moshihug" */
#define HUGE_PAGE ((size_t) 2 << 20)
#define SMALL_PAGE ((size_t) 4096)

typedef struct {
  uint64_t magic;
  size_t total;
  void *start; /* MAGIC_HUGE: where the mapping begins */
} Header;

static long fail_countdown;

void
moshi_alloc_fail_after (long n)
{
  fail_countdown = n;
}

void *
moshi_alloc (size_t bytes)
{
  if (fail_countdown > 0 && --fail_countdown == 0)
    return NULL;
  if (bytes > SIZE_MAX - 2 * HEADER)
    return NULL;
  size_t total = HEADER + ((bytes + 63) & ~(size_t) 63);
  uint8_t *base;
  uint64_t magic;
  if (total >= MMAP_THRESHOLD) {
    base = mmap (NULL, total, PROT_READ | PROT_WRITE,
        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED)
      return NULL;
    magic = MAGIC_MMAP;
  } else {
    base = aligned_alloc (64, total);
    if (!base)
      return NULL;
    memset (base, 0, total);
    magic = MAGIC_HEAP;
  }
  Header h = { magic, total, base };
  memcpy (base, &h, sizeof h);
  return base + HEADER;
}

void *
moshi_alloc_huge (size_t bytes)
{
  if (fail_countdown > 0 && --fail_countdown == 0)
    return NULL;
  if (bytes > SIZE_MAX - 2 * HUGE_PAGE)
    return NULL;
  const size_t len = (MAX (bytes, 1) + SMALL_PAGE - 1) & ~(SMALL_PAGE - 1);
  /* Room to put the data on a 2 MB boundary with one small page (the
   * header) before it; the slack on both sides is unmapped again, so that
   * no huge page can spill past the data even where THP is "always". */
  const size_t map = len + HUGE_PAGE + SMALL_PAGE;
  uint8_t *base = mmap (NULL, map, PROT_READ | PROT_WRITE,
      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED)
    return NULL;
  uint8_t *data = (uint8_t *) (((uintptr_t) base + SMALL_PAGE + HUGE_PAGE - 1)
      & ~(uintptr_t) (HUGE_PAGE - 1));
  uint8_t *start = data - SMALL_PAGE;
  if (start > base)
    munmap (base, (size_t) (start - base));
  if (data + len < base + map)
    munmap (data + len, (size_t) (base + map - (data + len)));
  /* Whole 2 MB pages only; a failure just leaves small pages. */
  const size_t whole = len & ~(HUGE_PAGE - 1);
  if (whole > 0)
    madvise (data, whole, MADV_HUGEPAGE);
  Header h = { MAGIC_HUGE, SMALL_PAGE + len, start };
  memcpy (data - HEADER, &h, sizeof h);
  return data;
}

void
moshi_free (void *p)
{
  if (!p)
    return;
  uint8_t *base = (uint8_t *) p - HEADER;
  Header h;
  memcpy (&h, base, sizeof h);
  if (h.magic == MAGIC_MMAP)
    munmap (base, h.total);
  else if (h.magic == MAGIC_HUGE)
    munmap (h.start, h.total);
  else
    free (base);
}

void
moshi_release_pages (const void *addr, size_t len)
{
  const uintptr_t a = ((uintptr_t) addr + SMALL_PAGE - 1) & ~(SMALL_PAGE - 1);
  const uintptr_t b = ((uintptr_t) addr + len) & ~(SMALL_PAGE - 1);
  if (b > a)
    madvise ((void *) a, b - a, MADV_DONTNEED);
}
