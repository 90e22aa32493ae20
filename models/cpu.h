/* Run-time CPU feature detection and kernel selection.
 *
 * The library is compiled for baseline x86-64; faster kernels are compiled
 * with target attributes and chosen here once.  MOSHI_CPU=generic|avx2|avx512
 * in the environment caps the level (to test the portable path); "avx512"
 * also turns AMX off. */
#pragma once
#include <glib.h>

typedef enum {
  MOSHI_CPU_GENERIC = 0,
  MOSHI_CPU_AVX2 = 1, /* AVX2 + FMA */
  MOSHI_CPU_AVX512 = 2, /* AVX-512 F/BW/DQ/VL */
} MoshiCpuLevel;

MoshiCpuLevel moshi_cpu_level (void);
const char *moshi_cpu_level_name (MoshiCpuLevel level);
/* Forces a level (clamped to what the CPU supports); for tests/benchmarks. */
void moshi_cpu_set_level (MoshiCpuLevel level);
gboolean moshi_cpu_has_avx512_vnni (void);
/* AMX tiles with bf16 products (and AVX512-BF16), granted by the OS; only
 * at the AVX-512 level. */
gboolean moshi_cpu_has_amx (void);
/* Allows AMX (default) or not; for tests and benchmarks. */
void moshi_cpu_set_amx (gboolean enabled);
