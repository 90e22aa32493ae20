#include <glib.h>

#include "cpu.h"

#include <stdlib.h>
#include <string.h>

static MoshiCpuLevel detected = MOSHI_CPU_GENERIC;
static MoshiCpuLevel active = MOSHI_CPU_GENERIC;
static gboolean has_vnni;

static void
cpu_init_once (void)
{
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init ();
  if (__builtin_cpu_supports ("avx2") && __builtin_cpu_supports ("fma"))
    detected = MOSHI_CPU_AVX2;
  if (__builtin_cpu_supports ("avx512f") && __builtin_cpu_supports ("avx512bw")
      && __builtin_cpu_supports ("avx512dq")
      && __builtin_cpu_supports ("avx512vl"))
    detected = MOSHI_CPU_AVX512;
  has_vnni = __builtin_cpu_supports ("avx512vnni");
#endif
  active = detected;
  const char *env = g_getenv ("MOSHI_CPU");
  if (env) {
    if (strcmp (env, "generic") == 0)
      active = MOSHI_CPU_GENERIC;
    else if (strcmp (env, "avx2") == 0)
      active = MIN (detected, MOSHI_CPU_AVX2);
    else if (strcmp (env, "avx512") == 0)
      active = MIN (detected, MOSHI_CPU_AVX512);
  }
}

static void
cpu_init (void)
{
  static gsize once = 0;
  if (g_once_init_enter (&once)) {
    cpu_init_once ();
    g_once_init_leave (&once, 1);
  }
}

MoshiCpuLevel
moshi_cpu_level (void)
{
  cpu_init ();
  return active;
}

void
moshi_cpu_set_level (MoshiCpuLevel level)
{
  cpu_init ();
  active = MIN (level, detected);
}

gboolean
moshi_cpu_has_avx512_vnni (void)
{
  cpu_init ();
  return has_vnni && active >= MOSHI_CPU_AVX512;
}

const char *
moshi_cpu_level_name (MoshiCpuLevel level)
{
  switch (level) {
    case MOSHI_CPU_AVX512:
      return "avx512";
    case MOSHI_CPU_AVX2:
      return "avx2";
    default:
      return "generic";
  }
}
