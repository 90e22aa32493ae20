/* bench-stream: how fast the quantized products stream their weights from
 * memory, against a plain read of memory with the same threads.
 *
 *   bench-stream [--threads N] [--weights q8|q4|bf16] [--rounds R]
 *
 * Two workloads, each a sequence of products over distinct matrices far
 * larger than the caches (so every weight comes from DRAM, as in
 * streaming): Mimi's (2 rows of activations: 8 transformer layers' four
 * products) and the LM's (1 row: 8 layers of the 7B's four products, about
 * 0.9 GB in q4).  Prints GB/s of weights and how many times longer than
 * reading the same bytes they took (bench-read.h: the fastest read we can
 * write): the part of bench-lm's "x the bound" that is the kernels'. */
#include <glib.h>
#include <stdio.h>

#include "bench-read.h"
#include "cpu.h"
#include "gemm.h"
#include "kernels.h"
#include "weight-type.h"

typedef struct {
  const char *name;
  int rows, layers;
  int shapes[4][2]; /* K x N of a layer's four products */
} Workload;

static void
run_workload (const Workload *w, MoshiWeightType type, MoshiPool *pool,
    int rounds, double read_gbs)
{
  const int n = w->layers * 4;
  MoshiPackedB *P = g_new0 (MoshiPackedB, n);
  int max_k = 0, max_n = 0;
  for (int i = 0; i < 4; i++) {
    max_k = MAX (max_k, w->shapes[i][0]);
    max_n = MAX (max_n, w->shapes[i][1]);
  }
  /* One source matrix for all (the values do not matter, only that every
   * packed copy is its own memory). */
  float *src = g_new (float, (size_t) max_k *max_n);
  for (size_t i = 0; i < (size_t) max_k * max_n; i++)
    src[i] = (float) (i * 2654435761u % 2001) / 1000.0f - 1.0f;
  size_t bytes = 0;
  for (int i = 0; i < n; i++) {
    const int K = w->shapes[i % 4][0], N = w->shapes[i % 4][1];
    if (!moshi_packed_init_typed (&P[i], src, K, N, N, FALSE, type))
      g_error ("out of memory");
    bytes += moshi_packed_bytes (&P[i]);
  }
  g_free (src);
  float *A = g_new (float, (size_t) w->rows *max_k);
  float *C = g_new (float, (size_t) w->rows *max_n);
  for (size_t i = 0; i < (size_t) w->rows * max_k; i++)
    A[i] = (float) (i % 17) / 17.0f - 0.5f;
  double best = 1e30;
  for (int r = 0; r < rounds; r++) {
    gint64 t0 = g_get_monotonic_time ();
    for (int i = 0; i < n; i++)
      moshi_gemm_packed (pool, w->rows, A, w->shapes[i % 4][0], &P[i], NULL,
          FALSE, C, w->shapes[i % 4][1]);
    best = MIN (best, (g_get_monotonic_time () - t0) / 1e6);
  }
  const double gbs = bytes / best / 1e9;
  printf ("%-34s %2d rows %7.1f MB %8.2f ms %6.1f GB/s   read %5.1f GB/s  "
          "%.2fx\n",
      w->name, w->rows, bytes / 1e6, best * 1e3, gbs, read_gbs, read_gbs / gbs);
  for (int i = 0; i < n; i++)
    moshi_packed_clear (&P[i]);
  g_free (P);
  g_free (A);
  g_free (C);
}

int
main (int argc, char **argv)
{
  int threads = 1, rounds = 5;
  gchar *weights = NULL;
  GOptionEntry entries[] = { { "threads", 't', 0, G_OPTION_ARG_INT, &threads,
                                 "Compute threads", "N" },
    { "weights", 'w', 0, G_OPTION_ARG_STRING, &weights,
        "Weight storage: q4 (default), q8, bf16", "TYPE" },
    { "rounds", 'r', 0, G_OPTION_ARG_INT, &rounds,
        "Passes over the weights (the best one counts)", "R" },
    { NULL } };
  GError *err = NULL;
  GOptionContext *ctx = g_option_context_new ("- weight streaming benchmark");
  g_option_context_add_main_entries (ctx, entries, NULL);
  if (!g_option_context_parse (ctx, &argc, &argv, &err)) {
    fprintf (stderr, "%s\n", err->message);
    return 2;
  }
  g_option_context_free (ctx);
  MoshiWeightType type = MOSHI_WEIGHTS_Q4;
  if (weights && !moshi_weight_type_from_string (weights, &type)) {
    fprintf (stderr, "unknown --weights %s\n", weights);
    return 2;
  }
  MoshiPool *pool = moshi_pool_new (MAX (1, threads));
  double plain;
  const double read_gbs = bench_read_bandwidth (pool, (size_t) 1 << 30, &plain);
  printf ("cpu %s, weights %s, threads %d; memory read %.1f GB/s (plain sum "
          "%.1f)\n",
      moshi_cpu_level_name (moshi_cpu_level ()), moshi_weight_type_name (type),
      threads, read_gbs, plain);
  /* Mimi: 8 layers x (in_proj, out_proj, linear1, linear2), repeated to
   * 64 layers' worth so that the set is far larger than the L2/L3 share. */
  const Workload mimi = { "Mimi transformer (x8 copies)", 2, 64,
    { { 512, 1536 }, { 512, 512 }, { 512, 2048 }, { 2048, 512 } } };
  /* The 7B: in_proj, out_proj, the gated linear_in (2 x 11264), linear_out. */
  const Workload lm = { "Moshi 7B temporal, 8 layers", 1, 8,
    { { 4096, 12288 }, { 4096, 4096 }, { 4096, 22528 }, { 11264, 4096 } } };
  run_workload (&mimi, type, pool, rounds, read_gbs);
  run_workload (&lm, type, pool, rounds, read_gbs);
  moshi_pool_free (pool);
  g_free (weights);
  return 0;
}
