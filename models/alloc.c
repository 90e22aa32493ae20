#include "alloc.h"

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

typedef struct {
  uint64_t magic;
  size_t total;
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
  Header h = { magic, total };
  memcpy (base, &h, sizeof h);
  return base + HEADER;
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
  else
    free (base);
}
