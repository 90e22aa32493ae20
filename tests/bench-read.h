/* Memory read bandwidth for the benchmarks' bounds (bench-lm, bench-stream). */
#pragma once
#include <glib.h>

#include "kernels.h"

G_BEGIN_DECLS

/* GB/s reading `bytes` (far larger than the caches) with the pool's
 * threads, best of 3: the faster of a plain sum and, on AVX-512 CPUs, a
 * sum with 64-byte loads and software prefetch 4 KB ahead (what the
 * quantized kernels do; on one core it reads ~40 % faster than the plain
 * loop).  *plain_gbs, when not NULL, gets the plain sum's figure. */
double bench_read_bandwidth (MoshiPool *pool, size_t bytes, double *plain_gbs);

G_END_DECLS
