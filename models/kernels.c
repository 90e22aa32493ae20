#include "kernels.h"

#include "cpu.h"

#include <math.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <pthread.h>
#include <string.h>

/* ---------------------------------------------------------------- pool --- */

/* A streaming step hands the pool hundreds of small jobs (the LM's
 * depformer: ~200 products of a few hundred microseconds each), so waking
 * sleeping threads through a condition variable for each one costs more
 * than the jobs' split saves.  Workers and the caller therefore spin for a
 * short while (POOL_SPIN_US) on the job counter before sleeping: back-to-
 * back jobs start without a wake-up, and an idle pool still sleeps. */
#define POOL_SPIN_US 100

struct MoshiPool {
  int n_threads;
  pthread_t *workers;
  pthread_mutex_t lock;
  pthread_cond_t wake;
  pthread_cond_t done;
  guint generation; /* atomic; changed under lock */
  gint pending; /* atomic; changed under lock */
  gboolean quit;
  MoshiPoolFn fn;
  void *ctx;
};

typedef struct {
  MoshiPool *pool;
  int index;
} WorkerArg;

static inline void
cpu_relax (void)
{
#if defined(__x86_64__)
  _mm_pause ();
#endif
}

/* Spins until *value != old (TRUE) or POOL_SPIN_US pass (FALSE). */
static gboolean
spin_until_changed (const guint *value, guint old)
{
  const gint64 end = g_get_monotonic_time () + POOL_SPIN_US;
  for (int i = 0;; i++) {
    if ((guint) g_atomic_int_get (value) != old)
      return TRUE;
    cpu_relax ();
    if ((i & 63) == 63 && g_get_monotonic_time () > end)
      return FALSE;
  }
}

static void *
pool_worker (void *data)
{
  WorkerArg *arg = data;
  MoshiPool *pool = arg->pool;
  int index = arg->index;
  g_free (arg);
  guint seen = 0;

  for (;;) {
    spin_until_changed (&pool->generation, seen);
    pthread_mutex_lock (&pool->lock);
    while (!pool->quit && (guint) g_atomic_int_get (&pool->generation) == seen)
      pthread_cond_wait (&pool->wake, &pool->lock);
    if (pool->quit) {
      pthread_mutex_unlock (&pool->lock);
      break;
    }
    seen = g_atomic_int_get (&pool->generation);
    MoshiPoolFn fn = pool->fn;
    void *ctx = pool->ctx;
    pthread_mutex_unlock (&pool->lock);
    fn (ctx, index, pool->n_threads);
    pthread_mutex_lock (&pool->lock);
    if (g_atomic_int_dec_and_test (&pool->pending))
      pthread_cond_signal (&pool->done);
    pthread_mutex_unlock (&pool->lock);
  }
  return NULL;
}

MoshiPool *
moshi_pool_new (int n_threads)
{
  MoshiPool *pool = g_new0 (MoshiPool, 1);
  if (n_threads < 1)
    n_threads = 1;
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
  /* Spinning workers see a new generation and then the quit flag. */
  g_atomic_int_inc (&pool->generation);
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
  g_atomic_int_set (&pool->pending, pool->n_threads - 1);
  g_atomic_int_inc (&pool->generation);
  pthread_cond_broadcast (&pool->wake);
  pthread_mutex_unlock (&pool->lock);

  fn (ctx, 0, pool->n_threads);

  const gint64 end = g_get_monotonic_time () + POOL_SPIN_US;
  for (int i = 0; g_atomic_int_get (&pool->pending) > 0; i++) {
    cpu_relax ();
    if ((i & 63) == 63 && g_get_monotonic_time () > end)
      break;
  }
  pthread_mutex_lock (&pool->lock);
  while (g_atomic_int_get (&pool->pending) > 0)
    pthread_cond_wait (&pool->done, &pool->lock);
  pthread_mutex_unlock (&pool->lock);
}

/* ------------------------------------------------------- elementwise --- */

#if defined(__x86_64__)
/* exp(x) - 1 for x <= 0 in AVX-512: Cody-Waite range reduction and a
 * degree-6 polynomial for exp on [-ln2/2, ln2/2]; ~2 ulp of exp, i.e. an
 * absolute error below 1e-7 for the ELU's negative branch.  For |x| tiny the
 * direct series keeps relative accuracy. */
__attribute__ ((target ("avx512f"))) static void
elu_avx512 (float *dst, const float *src, size_t n)
{
  const __m512 log2e = _mm512_set1_ps (1.44269504088896341f);
  const __m512 ln2_hi = _mm512_set1_ps (0.693359375f);
  const __m512 ln2_lo = _mm512_set1_ps (-2.12194440e-4f);
  const __m512 one = _mm512_set1_ps (1.0f);
  const __m512 lo = _mm512_set1_ps (-87.0f);
  size_t i = 0;
  for (; i < n; i += 16) {
    __mmask16 m = n - i >= 16 ? 0xFFFF : (__mmask16) ((1u << (n - i)) - 1);
    __m512 x = _mm512_maskz_loadu_ps (m, src + i);
    __m512 xc = _mm512_max_ps (x, lo);
    __m512 k = _mm512_roundscale_ps (_mm512_mul_ps (xc, log2e),
        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps (k, ln2_hi, xc);
    r = _mm512_fnmadd_ps (k, ln2_lo, r);
    /* expm1(r) = r + r^2/2 + ... on |r| <= ln2/2 */
    __m512 p = _mm512_set1_ps (1.0f / 5040.0f);
    p = _mm512_fmadd_ps (p, r, _mm512_set1_ps (1.0f / 720.0f));
    p = _mm512_fmadd_ps (p, r, _mm512_set1_ps (1.0f / 120.0f));
    p = _mm512_fmadd_ps (p, r, _mm512_set1_ps (1.0f / 24.0f));
    p = _mm512_fmadd_ps (p, r, _mm512_set1_ps (1.0f / 6.0f));
    p = _mm512_fmadd_ps (p, r, _mm512_set1_ps (0.5f));
    __m512 em1 = _mm512_fmadd_ps (_mm512_mul_ps (p, r), r, r); /* expm1(r) */
    /* expm1(x) = 2^k (expm1(r) + 1) - 1 */
    __m512 scaled = _mm512_scalef_ps (_mm512_add_ps (em1, one), k);
    __m512 neg = _mm512_sub_ps (scaled, one);
    __mmask16 k0 = _mm512_cmp_ps_mask (k, _mm512_setzero_ps (), _CMP_EQ_OQ);
    neg = _mm512_mask_mov_ps (neg, k0, em1);
    __mmask16 pos = _mm512_cmp_ps_mask (x, _mm512_setzero_ps (), _CMP_GT_OQ);
    __m512 y = _mm512_mask_mov_ps (neg, pos, x);
    _mm512_mask_storeu_ps (dst + i, m, y);
  }
}

__attribute__ ((target ("avx512f"))) static float
dot_avx512 (const float *a, const float *b, int n)
{
  __m512 acc0 = _mm512_setzero_ps (), acc1 = _mm512_setzero_ps ();
  int i = 0;
  for (; i + 32 <= n; i += 32) {
    acc0 = _mm512_fmadd_ps (_mm512_loadu_ps (a + i), _mm512_loadu_ps (b + i),
        acc0);
    acc1 = _mm512_fmadd_ps (_mm512_loadu_ps (a + i + 16),
        _mm512_loadu_ps (b + i + 16), acc1);
  }
  for (; i < n; i += 16) {
    __mmask16 m = n - i >= 16 ? 0xFFFF : (__mmask16) ((1u << (n - i)) - 1);
    acc0 = _mm512_fmadd_ps (_mm512_maskz_loadu_ps (m, a + i),
        _mm512_maskz_loadu_ps (m, b + i), acc0);
  }
  return _mm512_reduce_add_ps (_mm512_add_ps (acc0, acc1));
}

#endif

void
moshi_elu (float *dst, const float *src, size_t n)
{
#if defined(__x86_64__)
  if (moshi_cpu_level () >= MOSHI_CPU_AVX512) {
    elu_avx512 (dst, src, n);
    return;
  }
#endif
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

float
moshi_dot (const float *a, const float *b, int n)
{
#if defined(__x86_64__)
  if (moshi_cpu_level () >= MOSHI_CPU_AVX512)
    return dot_avx512 (a, b, n);
#endif
  float s = 0.0f;
  for (int i = 0; i < n; i++)
    s += a[i] * b[i];
  return s;
}
