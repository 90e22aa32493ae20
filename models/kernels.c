#include "kernels.h"

#include "cpu.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <string.h>

/* ---------------------------------------------------------------- pool --- */

struct MoshiPool {
  int n_threads;
  pthread_t *workers;
  pthread_mutex_t lock;
  pthread_cond_t wake;
  pthread_cond_t done;
  unsigned generation;
  int pending;
  gboolean quit;
  MoshiPoolFn fn;
  void *ctx;
};

typedef struct {
  MoshiPool *pool;
  int index;
} WorkerArg;

static void *
pool_worker (void *data)
{
  WorkerArg *arg = data;
  MoshiPool *pool = arg->pool;
  int index = arg->index;
  g_free (arg);
  unsigned seen = 0;

  pthread_mutex_lock (&pool->lock);
  for (;;) {
    while (!pool->quit && pool->generation == seen)
      pthread_cond_wait (&pool->wake, &pool->lock);
    if (pool->quit)
      break;
    seen = pool->generation;
    MoshiPoolFn fn = pool->fn;
    void *ctx = pool->ctx;
    pthread_mutex_unlock (&pool->lock);
    fn (ctx, index, pool->n_threads);
    pthread_mutex_lock (&pool->lock);
    if (--pool->pending == 0)
      pthread_cond_signal (&pool->done);
  }
  pthread_mutex_unlock (&pool->lock);
  return NULL;
}

MoshiPool *
moshi_pool_new (int n_threads)
{
  MoshiPool *pool = g_new0 (MoshiPool, 1);
  if (n_threads < 1)
    n_threads = 1;
  moshi_cpu_level ();           /* makes sure OpenBLAS runs single-threaded */
  pool->n_threads = n_threads;
  pthread_mutex_init (&pool->lock, NULL);
  pthread_cond_init (&pool->wake, NULL);
  pthread_cond_init (&pool->done, NULL);
  if (n_threads > 1) {
    pool->workers = g_new0 (pthread_t, n_threads - 1);
    for (int i = 1; i < n_threads; i++) {
      WorkerArg *arg = g_new (WorkerArg, 1);
      arg->pool = pool;
      arg->index = i;
      if (pthread_create (&pool->workers[i - 1], NULL, pool_worker, arg) != 0) {
        /* Could not start all threads: run with the ones we have. */
        g_free (arg);
        pool->n_threads = i;
        break;
      }
    }
  }
  return pool;
}

void
moshi_pool_free (MoshiPool *pool)
{
  if (!pool)
    return;
  pthread_mutex_lock (&pool->lock);
  pool->quit = TRUE;
  pthread_cond_broadcast (&pool->wake);
  pthread_mutex_unlock (&pool->lock);
  for (int i = 1; i < pool->n_threads; i++)
    pthread_join (pool->workers[i - 1], NULL);
  g_free (pool->workers);
  pthread_mutex_destroy (&pool->lock);
  pthread_cond_destroy (&pool->wake);
  pthread_cond_destroy (&pool->done);
  g_free (pool);
}

int
moshi_pool_threads (const MoshiPool *pool)
{
  return pool ? pool->n_threads : 1;
}

void
moshi_pool_run (MoshiPool *pool, MoshiPoolFn fn, void *ctx)
{
  if (!pool || pool->n_threads == 1) {
    fn (ctx, 0, 1);
    return;
  }
  pthread_mutex_lock (&pool->lock);
  pool->fn = fn;
  pool->ctx = ctx;
  pool->pending = pool->n_threads - 1;
  pool->generation++;
  pthread_cond_broadcast (&pool->wake);
  pthread_mutex_unlock (&pool->lock);

  fn (ctx, 0, pool->n_threads);

  pthread_mutex_lock (&pool->lock);
  while (pool->pending > 0)
    pthread_cond_wait (&pool->done, &pool->lock);
  pthread_mutex_unlock (&pool->lock);
}

/* ---------------------------------------------------------------- gemm --- */

typedef struct {
  gboolean trans_b;
  int M, N, K;
  const float *A;
  int lda;
  const float *B;
  int ldb;
  float beta;
  float *C;
  int ldc;
} GemmJob;

static void
gemm_part (void *data, int index, int count)
{
  const GemmJob *j = data;
  /* Split the output columns in multiples of 16 (one AVX-512 vector). */
  int chunk = ((j->N + count - 1) / count + 15) & ~15;
  int n0 = index * chunk;
  int n1 = MIN (j->N, n0 + chunk);
  if (n0 >= n1)
    return;
  const float *B = j->trans_b ? j->B + (size_t) n0 * j->ldb : j->B + n0;
  cblas_sgemm (CblasRowMajor, CblasNoTrans,
      j->trans_b ? CblasTrans : CblasNoTrans, j->M, n1 - n0, j->K, 1.0f,
      j->A, j->lda, B, j->ldb, j->beta, j->C + n0, j->ldc);
}

static void
gemm_run (MoshiPool *pool, GemmJob *job)
{
  if (job->M <= 0 || job->N <= 0)
    return;
  if (job->K <= 0) {
    for (int m = 0; m < job->M; m++) {
      float *row = job->C + (size_t) m * job->ldc;
      for (int n = 0; n < job->N; n++)
        row[n] = job->beta == 0.0f ? 0.0f : job->beta * row[n];
    }
    return;
  }
  /* Threads only pay off when each gets a decent amount of work. */
  double flops = 2.0 * job->M * job->N * job->K;
  if (moshi_pool_threads (pool) > 1 && flops > 2e5 && job->N >= 32)
    moshi_pool_run (pool, gemm_part, job);
  else
    gemm_part (job, 0, 1);
}

void
moshi_sgemm_nn (MoshiPool *pool, int M, int N, int K, const float *A, int lda,
    const float *B, int ldb, float beta, float *C, int ldc)
{
  GemmJob job = { FALSE, M, N, K, A, lda, B, ldb, beta, C, ldc };
  gemm_run (pool, &job);
}

void
moshi_sgemm_nt (MoshiPool *pool, int M, int N, int K, const float *A, int lda,
    const float *W, int ldw, float beta, float *C, int ldc)
{
  GemmJob job = { TRUE, M, N, K, A, lda, W, ldw, beta, C, ldc };
  gemm_run (pool, &job);
}

/* ------------------------------------------------------- elementwise --- */

void
moshi_elu (float *dst, const float *src, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    float x = src[i];
    dst[i] = x > 0.0f ? x : expm1f (x);
  }
}

void
moshi_gelu (float *dst, const float *src, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    float x = src[i];
    dst[i] = 0.5f * x * (1.0f + erff (x * (float) M_SQRT1_2));
  }
}

void
moshi_silu (float *dst, const float *src, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    float x = src[i];
    dst[i] = x / (1.0f + expf (-x));
  }
}

void
moshi_add (float *dst, const float *a, const float *b, size_t n)
{
  for (size_t i = 0; i < n; i++)
    dst[i] = a[i] + b[i];
}

void
moshi_add_scaled_rows (float *dst, const float *src, const float *scale,
    int rows, int C)
{
  for (int r = 0; r < rows; r++) {
    float *d = dst + (size_t) r * C;
    const float *s = src + (size_t) r * C;
    if (scale)
      for (int c = 0; c < C; c++)
        d[c] += scale[c] * s[c];
    else
      for (int c = 0; c < C; c++)
        d[c] += s[c];
  }
}

void
moshi_layer_norm (float *dst, const float *src, const float *weight,
    const float *bias, int rows, int C, float eps)
{
  for (int r = 0; r < rows; r++) {
    const float *x = src + (size_t) r * C;
    float *y = dst + (size_t) r * C;
    double mean = 0.0, var = 0.0;
    for (int c = 0; c < C; c++)
      mean += x[c];
    mean /= C;
    for (int c = 0; c < C; c++) {
      double d = x[c] - mean;
      var += d * d;
    }
    var /= C;
    float inv = (float) (1.0 / sqrt (var + eps));
    float fm = (float) mean;
    for (int c = 0; c < C; c++) {
      float v = (x[c] - fm) * inv;
      if (weight)
        v *= weight[c];
      if (bias)
        v += bias[c];
      y[c] = v;
    }
  }
}

void
moshi_rms_norm (float *dst, const float *src, const float *weight, int rows,
    int C, float eps)
{
  for (int r = 0; r < rows; r++) {
    const float *x = src + (size_t) r * C;
    float *y = dst + (size_t) r * C;
    double ss = 0.0;
    for (int c = 0; c < C; c++)
      ss += (double) x[c] * x[c];
    float inv = (float) (1.0 / sqrt (ss / C + eps));
    for (int c = 0; c < C; c++)
      y[c] = x[c] * inv * (weight ? weight[c] : 1.0f);
  }
}

void
moshi_softmax (float *x, int n)
{
  if (n <= 0)
    return;
  float mx = x[0];
  for (int i = 1; i < n; i++)
    mx = MAX (mx, x[i]);
  double sum = 0.0;
  for (int i = 0; i < n; i++) {
    x[i] = expf (x[i] - mx);
    sum += x[i];
  }
  float inv = (float) (1.0 / sum);
  for (int i = 0; i < n; i++)
    x[i] *= inv;
}

float
moshi_dot (const float *a, const float *b, int n)
{
  float s = 0.0f;
  for (int i = 0; i < n; i++)
    s += a[i] * b[i];
  return s;
}

void
moshi_axpy (float *y, float a, const float *x, int n)
{
  for (int i = 0; i < n; i++)
    y[i] += a * x[i];
}
