/* Memory read bandwidth for the benchmarks' bounds (bench-lm, bench-stream). */
#pragma once
#include <glib.h>

#include "kernels.h"

G_BEGIN_DECLS

/* GB/s reading `bytes` (larger than the caches: this VM reports a 480 MiB
 * L3, and 1, 2 and 4 GiB buffers read alike on it) with the pool's
 * threads, best of 3: the faster of a plain sum and, on AVX-512 CPUs, a
 * sum with 64-byte loads and software prefetch 4 KB ahead (what the
 * quantized kernels do; on one core it reads ~40 % faster than the plain
 * loop).  *plain_gbs, when not NULL, gets the plain sum's figure. */
double bench_read_bandwidth (MoshiPool *pool, size_t bytes, double *plain_gbs);

/* The same read over memory that already holds data (n arrays, 64-byte
 * aligned, of the given sizes; each thread reads its share of each, in
 * order, as the products do): how fast this process can stream a model's
 * own weights, which on a VM need not be as fast as a fresh buffer. */
double bench_read_arrays (MoshiPool *pool, const void *const *arrays,
    const size_t *bytes, int n, double *plain_gbs);

G_END_DECLS
