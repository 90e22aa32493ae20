/* Memory read bandwidth for the benchmarks.  See bench-read.h. */
#include "bench-read.h"

#include "alloc.h"
#include "cpu.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

typedef struct {
  const float *buf;
  size_t n;
  float sums[64];
} ReadJob;

static void
read_plain (void *data, int index, int count)
{
  ReadJob *j = data;
  size_t a = j->n * index / count, b = j->n * (index + 1) / count;
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  for (size_t i = a; i + 3 < b; i += 4) {
    s0 += j->buf[i];
    s1 += j->buf[i + 1];
    s2 += j->buf[i + 2];
    s3 += j->buf[i + 3];
  }
  j->sums[index % 64] = s0 + s1 + s2 + s3;
}

#if defined(__x86_64__)
__attribute__ ((target ("avx512f"))) static void
read_prefetched (void *data, int index, int count)
{
  ReadJob *j = data;
  /* whole 256-byte steps of this thread's share */
  const size_t a = j->n * index / count / 64 * 64;
  const size_t b = j->n * (index + 1) / count / 64 * 64;
  __m512 s0 = _mm512_setzero_ps (), s1 = s0, s2 = s0, s3 = s0;
  for (size_t i = a; i < b; i += 64) {
    const char *p = (const char *) (j->buf + i);
    for (int l = 0; l < 256; l += 64)
      _mm_prefetch (p + 4096 + l, _MM_HINT_T1);
    s0 = _mm512_add_ps (s0, _mm512_load_ps (j->buf + i));
    s1 = _mm512_add_ps (s1, _mm512_load_ps (j->buf + i + 16));
    s2 = _mm512_add_ps (s2, _mm512_load_ps (j->buf + i + 32));
    s3 = _mm512_add_ps (s3, _mm512_load_ps (j->buf + i + 48));
  }
  j->sums[index % 64] = _mm512_reduce_add_ps (
      _mm512_add_ps (_mm512_add_ps (s0, s1), _mm512_add_ps (s2, s3)));
}
#endif

static double
best_of_3 (MoshiPool *pool, MoshiPoolFn fn, ReadJob *j, size_t bytes)
{
  double best = 0;
  for (int r = 0; r < 3; r++) {
    gint64 t0 = g_get_monotonic_time ();
    moshi_pool_run (pool, fn, j);
    best = MAX (best, bytes / ((g_get_monotonic_time () - t0) / 1e6) / 1e9);
  }
  return best;
}

double
bench_read_bandwidth (MoshiPool *pool, size_t bytes, double *plain_gbs)
{
  float *buf = moshi_alloc (bytes);
  if (!buf)
    g_error ("out of memory for the bandwidth test");
  ReadJob j = { buf, bytes / sizeof (float), { 0 } };
  for (size_t i = 0; i < j.n; i++)
    buf[i] = (float) (i & 7);
  const double plain = best_of_3 (pool, read_plain, &j, bytes);
  double best = plain;
#if defined(__x86_64__)
  if (moshi_cpu_level () >= MOSHI_CPU_AVX512)
    best = MAX (best, best_of_3 (pool, read_prefetched, &j, bytes));
#endif
  moshi_free (buf);
  if (plain_gbs)
    *plain_gbs = plain;
  return best;
}
