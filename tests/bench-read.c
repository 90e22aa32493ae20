/* Memory read bandwidth for the benchmarks.  See bench-read.h. */
#include "bench-read.h"

#include "alloc.h"
#include "cpu.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

/* A list of arrays; each thread reads its share of every array, in order,
 * the way the products split their weights. */
typedef struct {
  const void *const *arrays;
  const size_t *bytes;
  int n;
  float sums[64];
} ReadJob;

/* [a, b): thread index's share of array i, in whole 256-byte steps */
static void
share (const ReadJob *j, int i, int index, int count, size_t *a, size_t *b)
{
  *a = j->bytes[i] / 256 * index / count * 256;
  *b = j->bytes[i] / 256 * (index + 1) / count * 256;
}

static void
read_plain (void *data, int index, int count)
{
  ReadJob *j = data;
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  for (int i = 0; i < j->n; i++) {
    size_t a, b;
    share (j, i, index, count, &a, &b);
    const float *buf = j->arrays[i];
    for (size_t k = a / 4; k < b / 4; k += 4) {
      s0 += buf[k];
      s1 += buf[k + 1];
      s2 += buf[k + 2];
      s3 += buf[k + 3];
    }
  }
  j->sums[index % 64] = s0 + s1 + s2 + s3;
}

#if defined(__x86_64__)
__attribute__ ((target ("avx512f"))) static void
read_prefetched (void *data, int index, int count)
{
  ReadJob *j = data;
  __m512 s0 = _mm512_setzero_ps (), s1 = s0, s2 = s0, s3 = s0;
  for (int i = 0; i < j->n; i++) {
    size_t a, b;
    share (j, i, index, count, &a, &b);
    const char *buf = j->arrays[i];
    for (size_t k = a; k < b; k += 256) {
      const char *p = buf + k;
      for (int l = 0; l < 256; l += 64)
        _mm_prefetch (p + 4096 + l, _MM_HINT_T1);
      s0 = _mm512_add_ps (s0, _mm512_load_ps ((const float *) p));
      s1 = _mm512_add_ps (s1, _mm512_load_ps ((const float *) (p + 64)));
      s2 = _mm512_add_ps (s2, _mm512_load_ps ((const float *) (p + 128)));
      s3 = _mm512_add_ps (s3, _mm512_load_ps ((const float *) (p + 192)));
    }
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

static double
read_best (MoshiPool *pool, ReadJob *j, double *plain_gbs)
{
  size_t total = 0;
  for (int i = 0; i < j->n; i++)
    total += j->bytes[i] / 256 * 256;
  const double plain = best_of_3 (pool, read_plain, j, total);
  double best = plain;
#if defined(__x86_64__)
  if (moshi_cpu_level () >= MOSHI_CPU_AVX512)
    best = MAX (best, best_of_3 (pool, read_prefetched, j, total));
#endif
  if (plain_gbs)
    *plain_gbs = plain;
  return best;
}

double
bench_read_bandwidth (MoshiPool *pool, size_t bytes, double *plain_gbs)
{
  float *buf = moshi_alloc (bytes);
  if (!buf)
    g_error ("out of memory for the bandwidth test");
  for (size_t i = 0; i < bytes / sizeof (float); i++)
    buf[i] = (float) (i & 7);
  const void *arrays[1] = { buf };
  ReadJob j = { arrays, &bytes, 1, { 0 } };
  const double best = read_best (pool, &j, plain_gbs);
  moshi_free (buf);
  return best;
}

double
bench_read_arrays (MoshiPool *pool, const void *const *arrays,
    const size_t *bytes, int n, double *plain_gbs)
{
  ReadJob j = { arrays, bytes, n, { 0 } };
  return read_best (pool, &j, plain_gbs);
}
