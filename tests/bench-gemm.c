/* bench-gemm: our packed-weight GEMM against OpenBLAS sgemm on the shapes a
 * full-size Mimi frame runs (M rows of activations x K x N weights), one
 * thread.  Prints microseconds per call and the speed-up; the ratio is what
 * decides which library a layer uses.  Also bf16 weights with the AVX-512
 * kernels and, on CPUs that have it, with AMX (from 16 rows). */
#include <cblas.h>
#include <glib.h>
#include <stdio.h>

#include "cpu.h"
#include "gemm.h"

static double
time_us (int reps, void (*fn) (void *), void *ctx)
{
  fn (ctx); /* warm-up */
  double best = 1e30;
  for (int r = 0; r < 3; r++) {
    gint64 t0 = g_get_monotonic_time ();
    for (int i = 0; i < reps; i++)
      fn (ctx);
    best = MIN (best, (double) (g_get_monotonic_time () - t0) / reps);
  }
  return best;
}

typedef struct {
  int M, N, K;
  float *A, *B, *C;
  MoshiPackedB P, P16;
} Shape;

static void
run_blas (void *data)
{
  Shape *s = data;
  cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasNoTrans, s->M, s->N, s->K,
      1.0f, s->A, s->K, s->B, s->N, 0.0f, s->C, s->N);
}

static void
run_packed (void *data)
{
  Shape *s = data;
  moshi_gemm_packed (NULL, s->M, s->A, s->K, &s->P, NULL, FALSE, s->C, s->N);
}

static void
run_packed_bf16 (void *data)
{
  Shape *s = data;
  moshi_gemm_packed (NULL, s->M, s->A, s->K, &s->P16, NULL, FALSE, s->C, s->N);
}

int
main (void)
{
  openblas_set_num_threads (1); /* one thread each, like a stream */
  /* name, M, K, N: SEANet encoder/decoder convs (K = kernel x c_in) and the
   * transformer linears, at the rows one 80 ms frame gives them. */
  const struct {
    const char *name;
    int M, K, N;
  } shapes[] = {
    { "enc res conv 64->32 k3 (1920 rows)", 1920, 192, 32 },
    { "enc down conv 64->128 k8 s4", 480, 512, 128 },
    { "enc res conv 256->128 k3 (96 rows)", 96, 768, 128 },
    { "enc down conv 512->1024 k16 s8", 2, 8192, 1024 },
    { "transformer in_proj 512->1536", 2, 512, 1536 },
    { "transformer linear1 512->2048", 2, 512, 2048 },
    { "transformer linear2 2048->512", 2, 2048, 512 },
    { "dec convtr 1024->512 k16 (2 rows)", 2, 1024, 8192 },
    { "dec convtr 256->128 k10 (96 rows)", 96, 256, 1280 },
    { "dec res conv 64->32 k3 (1920 rows)", 1920, 192, 32 },
  };
  const gboolean amx = moshi_cpu_has_amx ();
  printf ("%-38s %6s %6s %6s %10s %10s %8s %10s %10s\n", "shape", "M", "K", "N",
      "blas us", "ours us", "speedup", "bf16 us", amx ? "amx us" : "");
  for (size_t i = 0; i < G_N_ELEMENTS (shapes); i++) {
    Shape s = { shapes[i].M, shapes[i].N, shapes[i].K };
    s.A = g_new (float, (size_t) s.M *s.K);
    s.B = g_new (float, (size_t) s.K *s.N);
    s.C = g_new (float, (size_t) s.M *s.N);
    for (size_t j = 0; j < (size_t) s.M * s.K; j++)
      s.A[j] = (float) (j % 13) / 13.0f;
    for (size_t j = 0; j < (size_t) s.K * s.N; j++)
      s.B[j] = (float) (j % 7) / 7.0f;
    moshi_packed_init (&s.P, s.B, s.K, s.N, s.N, FALSE);
    moshi_packed_init_typed (&s.P16, s.B, s.K, s.N, s.N, FALSE,
        MOSHI_WEIGHTS_BF16);
    double flops = 2.0 * s.M * s.N * s.K;
    int reps = MAX (3, (int) (2e8 / flops));
    double tb = time_us (reps, run_blas, &s);
    double tp = time_us (reps, run_packed, &s);
    moshi_cpu_set_amx (FALSE);
    double t16 = time_us (reps, run_packed_bf16, &s);
    moshi_cpu_set_amx (TRUE);
    printf ("%-38s %6d %6d %6d %10.1f %10.1f %7.2fx %10.1f", shapes[i].name,
        s.M, s.K, s.N, tb, tp, tb / tp, t16);
    if (amx)
      printf (" %10.1f", time_us (reps, run_packed_bf16, &s));
    printf ("\n");
    moshi_packed_clear (&s.P);
    moshi_packed_clear (&s.P16);
    g_free (s.A);
    g_free (s.B);
    g_free (s.C);
  }
  return 0;
}
