#include <glib.h>

#include "cpu.h"

#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

static MoshiCpuLevel detected = MOSHI_CPU_GENERIC;
static MoshiCpuLevel active = MOSHI_CPU_GENERIC;
static gboolean has_vnni;
static gboolean has_amx; /* AMX-BF16 usable by this process */
static gboolean amx_enabled = TRUE;

#if defined(__x86_64__)
/* AMX-TILE + AMX-BF16 (+ AVX512-BF16 for the conversions), enabled by the
 * OS in XCR0 and granted to this process: Linux hands out the 8 KB tile
 * state only on request (arch_prctl ARCH_REQ_XCOMP_PERM, kernel >= 5.16). */
static gboolean
detect_amx (void)
{
  unsigned a, b, c, d;
  if (!__get_cpuid_count (7, 0, &a, &b, &c, &d))
    return FALSE;
  const gboolean tile = (d >> 24) & 1, bf16 = (d >> 22) & 1;
  const gboolean osxsave = __get_cpuid (1, &a, &b, &c, &d) && ((c >> 27) & 1);
  if (!tile || !bf16 || !osxsave)
    return FALSE;
  if (!__get_cpuid_count (7, 1, &a, &b, &c, &d) || !((a >> 5) & 1))
    return FALSE;
  unsigned lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  if (((lo >> 17) & 3) != 3)
    return FALSE;
  const long ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18;
  return syscall (SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
}
#endif

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
  if (detected == MOSHI_CPU_AVX512)
    has_amx = detect_amx ();
#endif
  active = detected;
  const char *env = g_getenv ("MOSHI_CPU");
  if (env) {
    if (strcmp (env, "generic") == 0)
      active = MOSHI_CPU_GENERIC;
    else if (strcmp (env, "avx2") == 0)
      active = MIN (detected, MOSHI_CPU_AVX2);
    else if (strcmp (env, "avx512") == 0) {
      active = MIN (detected, MOSHI_CPU_AVX512);
      amx_enabled = FALSE;
    }
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

gboolean
moshi_cpu_has_amx (void)
{
  cpu_init ();
  return has_amx && amx_enabled && active >= MOSHI_CPU_AVX512;
}

void
moshi_cpu_set_amx (gboolean enabled)
{
  cpu_init ();
  amx_enabled = enabled;
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
