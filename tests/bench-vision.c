/* bench-vision: speed of the MoshiVis SigLIP tower (So400m/14 shapes, 448 by
 * default) with random weights, against this machine's float32 GEMM peak
 * measured in the same run.
 *
 *   bench-vision [--size S] [--runs R] [--max-threads T] [--bf16 | --q8]
 *
 * For 1..T threads: seconds per image (median of R runs), achieved GFLOP/s
 * (FLOPs counted from the shapes: siglip_flops), the cblas_sgemm rate of a
 * 1024 x 4304 x 1152 product (fc1's shape; median of 3, measured right
 * before each image so both see the same machine load) and the median of
 * the per-run ratios.  The same by CPU time (all threads of the process):
 * on a shared machine the wall clock grows while other processes hold the
 * cores, CPU time much less so. */
#include <cblas.h>
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "alloc.h"
#include "blas.h"
#include "cpu.h"
#include "siglip.h"
#include "weights.h"

static int
cmp_double (const void *a, const void *b)
{
  double x = *(const double *) a, y = *(const double *) b;
  return (x > y) - (x < y);
}

static double
median (double *v, int n)
{
  qsort (v, n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static double
cpu_seconds (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A wall-clock and a CPU-time measurement. */
typedef struct {
  double wall, cpu;
} Times;

/* GFLOP/s of C = A B^T with A [M][K], B [N][K] (how the tower calls it),
 * median of `runs`, by wall clock and per CPU-second. */
static Times
gemm_rate (int M, int N, int K, int runs)
{
  uint64_t seed = 11;
  float *A = weights_random (&seed, (size_t) M * K, 1.0f);
  float *B = weights_random (&seed, (size_t) N * K, 1.0f);
  float *C = moshi_alloc ((size_t) M * N * sizeof (float));
  double *t = g_new (double, runs), *c = g_new (double, runs);
  /* One untimed call: OpenBLAS starts its threads and warms its buffers. */
  cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A, K, B,
      K, 0.0f, C, N);
  for (int r = 0; r < runs; r++) {
    gint64 t0 = g_get_monotonic_time ();
    double c0 = cpu_seconds ();
    cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A, K,
        B, K, 0.0f, C, N);
    t[r] = (g_get_monotonic_time () - t0) / 1e6;
    c[r] = cpu_seconds () - c0;
  }
  const double flop = 2.0 * M * N * K;
  Times rate = { flop / median (t, runs) / 1e9, flop / median (c, runs) / 1e9 };
  g_free (t);
  g_free (c);
  moshi_free (A);
  moshi_free (B);
  moshi_free (C);
  return rate;
}

int
main (int argc, char **argv)
{
  int size = 448, runs = 3, max_threads = 2;
  gboolean bf16 = FALSE, q8 = FALSE, bf16_products = FALSE;
  GOptionEntry entries[] = {
    { "size", 's', 0, G_OPTION_ARG_INT, &size, "Image side (448)", "S" },
    { "runs", 'r', 0, G_OPTION_ARG_INT, &runs, "Timed runs per setting (3)",
        "R" },
    { "max-threads", 't', 0, G_OPTION_ARG_INT, &max_threads, "Threads 1..T (2)",
        "T" },
    { "bf16", 0, 0, G_OPTION_ARG_NONE, &bf16,
        "Layer matrices stored as bf16, widened per layer", NULL },
    { "q8", 0, 0, G_OPTION_ARG_NONE, &q8,
        "Layer matrices as q8, products in int8 (VNNI where present)", NULL },
    { "bf16-products", 0, 0, G_OPTION_ARG_NONE, &bf16_products,
        "Layer matrices packed as bf16, products in bf16 on AMX where present",
        NULL },
    { NULL },
  };
  GError *err = NULL;
  GOptionContext *ctx = g_option_context_new ("- SigLIP tower benchmark");
  g_option_context_add_main_entries (ctx, entries, NULL);
  if (!g_option_context_parse (ctx, &argc, &argv, &err)) {
    fprintf (stderr, "%s\n", err->message);
    return 2;
  }
  g_option_context_free (ctx);
  runs = CLAMP (runs, 1, 100);
  max_threads = CLAMP (max_threads, 1, 64);
  size = CLAMP (size, 14, 1024);

  SiglipConfig cfg;
  siglip_config_default (&cfg);
  gint64 t0 = g_get_monotonic_time ();
  SiglipModel *m = siglip_model_new_random (&cfg, 42, &err);
  if (!m || (bf16 && !siglip_model_to_bf16 (m, &err))
      || (q8 && !siglip_model_to_q8 (m, &err))
      || (bf16_products && !siglip_model_to_bf16_products (m, &err))) {
    fprintf (stderr, "%s\n", err->message);
    return 1;
  }
  const int n = siglip_tokens_for_size (&cfg, size, size);
  const double flops = siglip_flops (&cfg, size, size);
  printf ("SigLIP So400m/14: %d layers, width %d, %d heads, MLP %d; %dx%d "
          "image = %d tokens, %.1f GFLOP per image (random weights built in "
          "%.1f s)\n",
      cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.intermediate_size,
      size, size, n, flops / 1e9, (g_get_monotonic_time () - t0) / 1e6);

  uint8_t *img = g_malloc ((size_t) 3 * size * size);
  for (size_t i = 0; i < (size_t) 3 * size * size; i++)
    img[i] = (uint8_t) ((i * 2654435761u) >> 24);
  float *out = g_new (float, (size_t) n *cfg.hidden_size);
  double *wall = g_new (double, runs), *cpu = g_new (double, runs);
  double *peak = g_new (double, runs), *cpeak = g_new (double, runs);
  double *ratio = g_new (double, runs), *cratio = g_new (double, runs);

  printf ("\nmedians of %d runs; sgemm = %d x %d x %d\n\n"
          "| threads | s / image | GFLOP/s | sgemm GFLOP/s | peak / achieved "
          "| CPU s / image | GFLOP per CPU-s | sgemm per CPU-s | "
          "peak / achieved (CPU time) |\n"
          "|---|---|---|---|---|---|---|---|---|\n",
      runs, n, cfg.intermediate_size, cfg.hidden_size);
  for (int th = 1; th <= max_threads; th++) {
    siglip_set_threads (th);
    /* One untimed image first (page faults of the fresh scratch). */
    if (!siglip_forward (m, img, size, size, 3 * size, out, NULL, &err)) {
      fprintf (stderr, "%s\n", err->message);
      return 1;
    }
    for (int r = 0; r < runs; r++) {
      moshi_blas_lock ();
      moshi_blas_set_threads (th);
      Times p = gemm_rate (n, cfg.intermediate_size, cfg.hidden_size, 3);
      moshi_blas_unlock ();
      gint64 a = g_get_monotonic_time ();
      double c0 = cpu_seconds ();
      siglip_forward (m, img, size, size, 3 * size, out, NULL, NULL);
      wall[r] = (g_get_monotonic_time () - a) / 1e6;
      cpu[r] = cpu_seconds () - c0;
      peak[r] = p.wall;
      cpeak[r] = p.cpu;
      ratio[r] = p.wall / (flops / wall[r] / 1e9);
      cratio[r] = p.cpu / (flops / cpu[r] / 1e9);
    }
    const double s = median (wall, runs), cs = median (cpu, runs);
    printf ("| %d | %.2f | %.0f | %.0f | %.2f | %.2f | %.0f | %.0f | %.2f |\n",
        th, s, flops / s / 1e9, median (peak, runs), median (ratio, runs), cs,
        flops / cs / 1e9, median (cpeak, runs), median (cratio, runs));
    fflush (stdout);
  }
  struct rusage ru;
  getrusage (RUSAGE_SELF, &ru);
  printf ("\npeak RSS %.0f MiB (weights %.0f MiB, %s)\n", ru.ru_maxrss / 1024.0,
      siglip_model_weight_bytes (m) / 1048576.0,
      q8 ? "layer matrices in q8"
          : bf16_products
          ? (moshi_cpu_has_amx () ? "layer matrices in bf16, AMX products"
                                  : "layer matrices in bf16, packed")
          : bf16 ? "layer matrices in bf16"
                 : "float32");
  g_free (wall);
  g_free (cpu);
  g_free (peak);
  g_free (cpeak);
  g_free (ratio);
  g_free (cratio);
  g_free (out);
  g_free (img);
  siglip_model_free (m);
  return 0;
}
