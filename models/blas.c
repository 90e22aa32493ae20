#include "blas.h"

#include <cblas.h>
#include <glib.h>

static GRecMutex blas_lock;

void
moshi_blas_lock (void)
{
  g_rec_mutex_lock (&blas_lock);
}

void
moshi_blas_unlock (void)
{
  g_rec_mutex_unlock (&blas_lock);
}

void
moshi_blas_set_threads (int n_threads)
{
  openblas_set_num_threads (CLAMP (n_threads, 1, 256));
}
