/* SIGBUS guard for mapped model files; see mapguard.h for the contract. */
#include "mapguard.h"

#include "model-error.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

struct MoshiMapGuard {
  uintptr_t start, len;
  int fd;
  int slot; /* -1: not tracked */
  gint loading, faulted;
  gint64 size, mtime_ns; /* at registration */
  char *path, *what;
  /* Preformatted, so that the handler only calls write(). */
  char *msg_loading, *msg_fatal;
};

static MoshiMapGuard *slots[MOSHI_MAPGUARD_SLOTS];
static struct sigaction previous;
static uintptr_t page_size;

static void
say (const char *msg)
{
  size_t n = strlen (msg);
  while (n > 0) {
    ssize_t w = write (STDERR_FILENO, msg, n);
    if (w <= 0 && errno != EINTR)
      return;
    if (w > 0) {
      msg += w;
      n -= (size_t) w;
    }
  }
}

static void
restore_default (void)
{
  struct sigaction sa;
  memset (&sa, 0, sizeof sa);
  sa.sa_handler = SIG_DFL;
  sigemptyset (&sa.sa_mask);
  sigaction (SIGBUS, &sa, NULL);
}

static void
on_sigbus (int sig, siginfo_t *si, void *uc)
{
  int saved_errno = errno;
  /* Only faults carry an address; a SIGBUS sent by kill() is not ours. */
  if (si && si->si_code == BUS_ADRERR) {
    uintptr_t a = (uintptr_t) si->si_addr;
    for (int i = 0; i < MOSHI_MAPGUARD_SLOTS; i++) {
      MoshiMapGuard *g = g_atomic_pointer_get (&slots[i]);
      if (!g || a - g->start >= g->len)
        continue;
      gboolean first = g_atomic_int_compare_and_exchange (&g->faulted, 0, 1);
      if (g_atomic_int_get (&g->loading)) {
        /* Zero pages from the fault to the end: the load carries on and
         * moshi_mapguard_finish_load() reports the truncation. */
        uintptr_t from = a & ~(page_size - 1);
        uintptr_t to = (g->start + g->len + page_size - 1) & ~(page_size - 1);
        if (mmap ((void *) from, to - from, PROT_READ,
                MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0)
            != MAP_FAILED) {
          if (first)
            say (g->msg_loading);
          errno = saved_errno;
          return;
        }
      }
      say (g->msg_fatal);
      /* Returning re-runs the access, which now gets the default action. */
      restore_default ();
      errno = saved_errno;
      return;
    }
  }
  /* Not ours: whoever handled SIGBUS before us. */
  if (previous.sa_flags & SA_SIGINFO) {
    if (previous.sa_sigaction)
      previous.sa_sigaction (sig, si, uc);
  } else if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN) {
    previous.sa_handler (sig);
  } else {
    restore_default ();
    if (!si || si->si_code <= 0)
      raise (sig); /* sent, not a fault: delivered when we return */
  }
  errno = saved_errno;
}

static void
install_once (void)
{
  static gsize done = 0;
  if (!g_once_init_enter (&done))
    return;
  page_size = (uintptr_t) sysconf (_SC_PAGESIZE);
  struct sigaction sa;
  memset (&sa, 0, sizeof sa);
  sa.sa_sigaction = on_sigbus;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset (&sa.sa_mask);
  sigaction (SIGBUS, &sa, &previous);
  g_once_init_leave (&done, 1);
}

static gint64
mtime_ns (const struct stat *st)
{
  return (gint64) st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

MoshiMapGuard *
moshi_mapguard_add (const void *addr, size_t len, int fd, const char *path,
    const char *what, gboolean loading)
{
  install_once ();
  MoshiMapGuard *g = g_new0 (MoshiMapGuard, 1);
  g->start = (uintptr_t) addr;
  g->len = len;
  g->fd = fd;
  g->slot = -1;
  g->loading = loading;
  g->path = g_strdup (path);
  g->what = g_strdup (what);
  struct stat st;
  if (fd >= 0 && fstat (fd, &st) == 0) {
    g->size = st.st_size;
    g->mtime_ns = mtime_ns (&st);
  }
  g->msg_loading = g_strdup_printf ("gst-moshi: %s %s was truncated while "
                                    "being loaded (SIGBUS); the load fails\n",
      what, path);
  g->msg_fatal = g_strdup_printf ("gst-moshi: %s %s was truncated while in use "
                                  "(SIGBUS reading its mapping); the weights "
                                  "are gone, terminating\n",
      what, path);
  for (int i = 0; i < MOSHI_MAPGUARD_SLOTS && len > 0; i++)
    if (g_atomic_pointer_compare_and_exchange (&slots[i], NULL, g)) {
      g->slot = i;
      break;
    }
  return g;
}

gboolean
moshi_mapguard_finish_load (MoshiMapGuard *g, GError **error)
{
  struct stat st;
  gboolean ok = TRUE;
  if (g_atomic_int_get (&g->faulted)) {
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_IO,
        "%s: the file was truncated while it was being loaded (was "
        "%" G_GINT64_FORMAT " bytes); was it rewritten in place?",
        g->path, g->size);
    ok = FALSE;
  } else if (g->fd >= 0 && fstat (g->fd, &st) == 0
      && (st.st_size != g->size || mtime_ns (&st) != g->mtime_ns)) {
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_IO,
        "%s: the file was %s while it was being loaded (%" G_GINT64_FORMAT
        " bytes, was %" G_GINT64_FORMAT "); replace model files by renaming "
        "a new file over them, never by rewriting them in place",
        g->path, st.st_size < g->size ? "truncated" : "modified",
        (gint64) st.st_size, g->size);
    ok = FALSE;
  }
  g_atomic_int_set (&g->loading, 0);
  return ok;
}

gboolean
moshi_mapguard_faulted (const MoshiMapGuard *g)
{
  return g_atomic_int_get (&g->faulted);
}

void
moshi_mapguard_remove (MoshiMapGuard *g)
{
  if (!g)
    return;
  if (g->slot >= 0)
    g_atomic_pointer_set (&slots[g->slot], NULL);
  if (g->fd >= 0)
    close (g->fd);
  g_free (g->path);
  g_free (g->what);
  g_free (g->msg_loading);
  g_free (g->msg_fatal);
  g_free (g);
}
