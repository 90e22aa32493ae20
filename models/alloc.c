#include "alloc.h"

#include <stdlib.h>
#include <string.h>

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
  if (bytes == 0)
    bytes = 1;
  size_t rounded = (bytes + 63) & ~(size_t) 63;
  if (rounded < bytes)
    return NULL;
  void *p = aligned_alloc (64, rounded);
  if (p)
    memset (p, 0, rounded);
  return p;
}

void
moshi_free (void *p)
{
  free (p);
}
