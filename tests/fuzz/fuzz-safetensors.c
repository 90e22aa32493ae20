/* libFuzzer target for models/safetensors.c.
 *
 * st_open() takes a path, so each input is written to a memfd and opened
 * through /proc/self/fd; every tensor that st_open() accepts must then be
 * readable without touching memory outside the mapping. */
#include "safetensors.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define MAX_READ (1 << 16)

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  static float fbuf[MAX_READ];
  static int64_t ibuf[MAX_READ];

  int fd = memfd_create ("fuzz-safetensors", MFD_CLOEXEC);
  if (fd < 0)
    return 0;
  size_t done = 0;
  while (done < size) {
    ssize_t n = write (fd, data + done, size - done);
    if (n <= 0)
      break;
    done += (size_t) n;
  }
  char path[64];
  snprintf (path, sizeof path, "/proc/self/fd/%d", fd);

  GError *error = NULL;
  StFile *f = st_open (path, &error);
  if (!f) {
    /* Every failure must come with a message naming the file. */
    if (!error || !strstr (error->message, path))
      __builtin_trap ();
    g_error_free (error);
    close (fd);
    return 0;
  }
  for (size_t i = 0; i < st_count (f); i++) {
    const StTensor *t = st_index (f, i);
    if (st_find (f, t->name) != t)
      __builtin_trap ();
    if (st_require (f, t->name, t->ndim, t->shape, NULL) != t)
      __builtin_trap ();
    if (t->numel > MAX_READ)
      continue;
    /* Exactly one of the two readers accepts each dtype. */
    gboolean fl = st_read_f32 (f, t, fbuf, NULL);
    gboolean in = st_read_i64 (f, t, ibuf, NULL);
    if (fl == in && t->dtype != ST_U64)
      __builtin_trap ();
  }
  (void) st_metadata (f, "format");
  st_unref (f);
  close (fd);
  return 0;
}
