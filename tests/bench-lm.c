/* bench-lm: streaming speed and memory of a Moshi-7B-shaped LM.
 *
 *   bench-lm [--quant q4|q8|bf16|f32] [--threads N] [--steps S] [--small]
 *            [--vision TOKENS]
 *
 * Builds Kyutai's moshi_7b_202409.json shapes (or, with --small, a 1/8-width
 * model for quick checks) with random weights in memory, runs S greedy
 * streaming steps (temporal transformer, then the depformer's 8 codebooks)
 * and prints ms per step split temporal / depformer, the effective GB/s of
 * weights read, the machine's read bandwidth measured in the same run, the
 * bandwidth bound (weight bytes / bandwidth) and peak RSS.
 *
 * --vision TOKENS adds MoshiVis's gated cross-attention (shared Wq/Wk/Wv/Wo,
 * per-layer gates) and times the same steps again while attending to an
 * image of TOKENS tokens (1024 for 448x448): the extra cost per step, the
 * bytes it reads (gates and the shared projections once per layer, the
 * image keys and values once per layer) against its own bandwidth bound,
 * and the one-off cost of preparing the image's keys and values. */
#include <glib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "alloc.h"
#include "attention.h"
#include "cpu.h"
#include "bench-read.h"
#include "lm-private.h"

static long
peak_rss_kb (void)
{
  struct rusage ru;
  getrusage (RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

static int
argmax (const float *x, int n)
{
  int b = 0;
  for (int i = 1; i < n; i++)
    if (x[i] > x[b])
      b = i;
  return b;
}

/* Greedy steps (one warm-up not timed); mean ms per step of each half. */
static void
run_steps (LmModel *m, LmState *st, int steps, double *t_main, double *t_dep)
{
  const LmConfig *c = lm_model_config (m);
  float *out = g_new (float, c->dim), *tl = g_new (float, c->text_card);
  float *dl = g_new (float, c->card);
  int *tokens = g_new0 (int, 1 + c->n_q);
  const int warm = 1;
  *t_main = *t_dep = 0;
  for (int s = 0; s < steps + warm; s++) {
    gint64 a = g_get_monotonic_time ();
    lm_forward_main (m, st, tokens, out, tl);
    gint64 b = g_get_monotonic_time ();
    lm_depformer_begin (m, st);
    int prev = argmax (tl, c->text_card);
    tokens[0] = prev;
    for (int k = 0; k < c->dep_q; k++) {
      lm_depformer_step (m, st, k, out, prev, dl);
      prev = argmax (dl, c->card);
      tokens[1 + k] = prev;
    }
    gint64 e = g_get_monotonic_time ();
    if (s >= warm) {
      *t_main += (b - a) / 1e3;
      *t_dep += (e - b) / 1e3;
    }
  }
  *t_main /= steps;
  *t_dep /= steps;
  g_free (out);
  g_free (tl);
  g_free (dl);
  g_free (tokens);
}

/* As if `past` steps had run (at most the context, less the steps to
 * come): their slots hold positions and the key/value memory is written
 * (never-written pages would all read the one zero page, from cache). */
static void
fill_cache (const LmModel *m, LmState *st, int past)
{
  const Transformer *tr = &m->transformer;
  const TransformerConfig *c = &tr->cfg;
  const size_t elem = c->kv_half ? 2 : sizeof (float);
  const size_t per_layer_k = (size_t) moshi_key_slots (c->context) * c->d_model;
  const size_t per_layer_v = (size_t) c->context * c->d_model;
  memset (st->main.k, 0x11, elem * per_layer_k * c->num_layers);
  memset (st->main.v, 0x11, elem * per_layer_v * c->num_layers);
  st->main.offset = past;
  for (int i = 0; i < c->context; i++)
    st->main.slot_pos[i] = i < past ? i : -1;
}

/* Every packed array a step streams (bench_read_arrays' list). */
typedef struct {
  GPtrArray *arrays;
  GArray *bytes;
} StreamedArrays;

static void
add_linear (MoshiLinear *l, void *data)
{
  StreamedArrays *s = data;
  void *ptrs[4];
  size_t bytes[4];
  moshi_packed_layout (&l->w, ptrs, bytes);
  for (int i = 0; i < 4; i++)
    if (bytes[i] > 0) {
      g_ptr_array_add (s->arrays, ptrs[i]);
      g_array_append_val (s->bytes, bytes[i]);
    }
}

/* GB/s reading the model's own weights, in step order. */
static double
read_own_weights (LmModel *m, MoshiPool *pool)
{
  StreamedArrays s = { g_ptr_array_new (),
    g_array_new (FALSE, FALSE, sizeof (size_t)) };
  lm_model_for_each_linear (m, FALSE, add_linear, &s);
  const double gbs =
      bench_read_arrays (pool, (const void *const *) s.arrays->pdata,
          (const size_t *) s.bytes->data, (int) s.arrays->len, NULL);
  g_ptr_array_free (s.arrays, TRUE);
  g_array_free (s.bytes, TRUE);
  return gbs;
}

int
main (int argc, char **argv)
{
  int threads = 1, steps = 8, vision = 0, filled = 0;
  gboolean small = FALSE;
  gchar *quant = NULL;
  GOptionEntry entries[] = { { "quant", 'q', 0, G_OPTION_ARG_STRING, &quant,
                                 "Weights: q4 (default), q8, bf16, f32",
                                 "TYPE" },
    { "threads", 't', 0, G_OPTION_ARG_INT, &threads, "Compute threads", "N" },
    { "steps", 's', 0, G_OPTION_ARG_INT, &steps, "Streaming steps to time",
        "S" },
    { "small", 0, 0, G_OPTION_ARG_NONE, &small, "1/8-width model (quick check)",
        NULL },
    { "filled", 0, 0, G_OPTION_ARG_INT, &filled,
        "Start with N past steps in the KV cache (up to the context): the "
        "step's attention then reads them all",
        "N" },
    { "vision", 0, 0, G_OPTION_ARG_INT, &vision,
        "Add MoshiVis cross-attention and time it on an image of N tokens",
        "N" },
    { NULL } };
  GError *err = NULL;
  GOptionContext *ctx = g_option_context_new ("- Moshi LM streaming benchmark");
  g_option_context_add_main_entries (ctx, entries, NULL);
  if (!g_option_context_parse (ctx, &argc, &argv, &err)) {
    fprintf (stderr, "%s\n", err->message);
    return 2;
  }
  g_option_context_free (ctx);
  MoshiWeightType wt = MOSHI_WEIGHTS_Q4;
  if (quant && !moshi_weight_type_from_string (quant, &wt)) {
    fprintf (stderr, "unknown --quant %s\n", quant);
    return 2;
  }

  LmConfig cfg;
  lm_config_default (&cfg);
  if (small) {
    cfg.dim /= 8;
    cfg.num_heads /= 8;
    cfg.dep_dim /= 8;
    cfg.dep_dim_feedforward /= 8;
    cfg.dep_num_heads /= 8;
    cfg.text_card /= 8;
  }
  cfg.cross_attention = vision > 0;
  if (filled < 0 || filled > cfg.context) {
    fprintf (stderr, "--filled %d: the context is %d steps\n", filled,
        cfg.context);
    return 2;
  }
  gint64 t0 = g_get_monotonic_time ();
  LmModel *m = lm_model_new_random (&cfg, 7, wt);
  double t_build = (g_get_monotonic_time () - t0) / 1e6;
  const LmConfig *c = lm_model_config (m);
  LmState st;
  if (!lm_state_init (&st, m)) {
    fprintf (stderr, "out of memory\n");
    return 1;
  }
  if (threads > 1) {
    moshi_pool_free (st.pool);
    st.pool = moshi_pool_new (threads);
  }
  if (filled > 0)
    fill_cache (m, &st, filled);
  /* Bytes streamed per step: every packed weight once (both halves). */
  const Transformer *tr = &m->transformer;
  size_t xa_bytes = 0; /* read per step by the cross-attention */
  if (vision > 0) {
    for (int l = 0; l < c->num_layers; l++)
      xa_bytes += cross_attention_gate_bytes (&tr->layers[l].xa_gate)
          + moshi_linear_bytes (&tr->xa.q) + moshi_linear_bytes (&tr->xa.out)
          + 2 * sizeof (float) * (size_t) vision * c->dim;
  }
  size_t main_bytes =
      transformer_bytes (tr) + moshi_linear_bytes (&m->text_linear);
  if (vision > 0) /* Wk, Wv and the gates are not read by a plain step */
    main_bytes -= cross_attention_bytes (&tr->xa);
  for (int l = 0; vision > 0 && l < c->num_layers; l++)
    main_bytes -= cross_attention_gate_bytes (&tr->layers[l].xa_gate);
  size_t dep_bytes = transformer_bytes (&m->depformer);
  for (int i = 0; i < m->n_dep_in; i++)
    dep_bytes += moshi_linear_bytes (&m->dep_in[i]);
  for (int i = 0; i < c->dep_q; i++)
    dep_bytes += moshi_linear_bytes (&m->linears[i]);

  /* The read is measured on both sides of the steps and the faster kept:
   * on this shared VM one measurement alone can land in a slow minute and
   * flatter the ratio (2026-11-26: 26.3 GB/s once, 29.9 around it). */
  double plain_before;
  const double bw_before =
      bench_read_bandwidth (st.pool, (size_t) 1 << 30, &plain_before);
  /* The 1 GiB buffer is not the model's: take it out of the peak RSS
   * (Linux >= 4.0 resets the high-water mark to the current RSS). */
  FILE *clear = fopen ("/proc/self/clear_refs", "w");
  if (clear) {
    fputs ("5", clear);
    fclose (clear);
  }
  double t_main = 0, t_dep = 0;
  run_steps (m, &st, steps, &t_main, &t_dep);
  /* After the peak RSS of the model itself has been reached. */
  double rss_gb = peak_rss_kb () / 1048576.0;
  double plain_bw;
  double bw = bench_read_bandwidth (st.pool, (size_t) 1 << 30, &plain_bw);
  bw = MAX (bw, bw_before);
  plain_bw = MAX (plain_bw, plain_before);
  const double own_bw = read_own_weights (m, st.pool);
  double total = t_main + t_dep;
  double gb = (main_bytes + dep_bytes) / 1e9;
  double bound_ms = gb / bw * 1e3;
  printf ("model            Moshi-7B shapes%s, random weights (built in %.1f "
          "s)\n",
      small ? " at 1/8 width" : "", t_build);
  printf ("weights          %s, %.2f GB streamed per step (temporal %.2f, "
          "depformer %.2f)\n",
      moshi_weight_type_name (wt), gb, main_bytes / 1e9, dep_bytes / 1e9);
  printf ("cpu kernels      %s%s, threads %d\n",
      moshi_cpu_level_name (moshi_cpu_level ()),
      moshi_cpu_has_avx512_vnni () ? " + VNNI" : "", threads);
  printf ("step             %.1f ms (temporal %.1f ms, depformer %.1f ms), %d "
          "steps\n",
      total, t_main, t_dep, steps);
  printf ("real time        needs 80 ms per step: %.2fx %s\n", total / 80.0,
      total <= 80.0 ? "(real time)" : "(slower than real time)");
  printf ("weights read     %.1f GB/s effective\n", gb / (total / 1e3));
  printf ("read bandwidth   %.1f GB/s measured (1 GiB read with prefetch, %d "
          "thread%s, the faster of before and after the steps; plain sum "
          "%.1f GB/s)\n",
      bw, threads, threads > 1 ? "s" : "", plain_bw);
  printf ("bandwidth bound  %.1f ms per step; this run is %.2fx the bound\n",
      bound_ms, total / bound_ms);
  /* On this VM the same code's temporal part took 163-208 ms from one
   * process to the next (2026-11-26) while the fresh buffer's read stayed
   * at 27-30 GB/s: the weights' own pages read slower than a fresh
   * buffer, by a different amount in each process.  This line separates
   * the kernels' share of the ratio above from where the weights lie. */
  printf ("own memory       %.1f GB/s reading this model's weights in step "
          "order: %.1f ms, the step is %.2fx that\n",
      own_bw, gb / own_bw * 1e3, total / (gb / own_bw * 1e3));
  if (filled > 0) {
    /* keys and values of every valid slot, every layer, once per step */
    const size_t slots = MIN (c->context, filled + steps);
    const double kv_gb =
        2.0 * (tr->cfg.kv_half ? 2 : 4) * c->dim * slots * c->num_layers / 1e9;
    printf ("kv cache         %d past steps: attention reads about %.2f GB of "
            "keys and values per step (%.1f ms at the read above)\n",
        filled, kv_gb, kv_gb / bw * 1e3);
  }
  printf ("peak RSS         %.2f GB (model + state)\n", rss_gb);
  if (vision > 0) {
    float *img = g_new (float, (size_t) vision * c->dim);
    for (size_t i = 0; i < (size_t) vision * c->dim; i++)
      img[i] = (float) ((i * 2654435761u) % 2001) / 1000.0f - 1.0f;
    gint64 a = g_get_monotonic_time ();
    LmImage *image = lm_image_new (m, img, vision, c->dim, threads, &err);
    double t_kv = (g_get_monotonic_time () - a) / 1e3;
    if (!image
        || !transformer_set_cross_memory (tr, &st.main,
            lm_image_memory (image))) {
      fprintf (stderr, "image: %s\n", err ? err->message : "out of memory");
      return 1;
    }
    st.main.xa_enabled = TRUE;
    double v_main, v_dep;
    run_steps (m, &st, steps, &v_main, &v_dep);
    const double extra = v_main - t_main;
    const double xa_bound = xa_bytes / 1e9 / bw * 1e3;
    printf ("vision           image of %d tokens: keys/values in %.0f ms "
            "(once per image)\n",
        vision, t_kv);
    printf ("  with image     temporal %.1f ms per step (+%.1f ms, %+.0f%%)\n",
        v_main, extra, 100.0 * extra / t_main);
    printf ("  cross-attn     %.2f GB read per step (gates, Wq, Wo and the "
            "image K/V once per layer)\n",
        xa_bytes / 1e9);
    printf ("  its bound      %.1f ms; this run is %.2fx the bound\n", xa_bound,
        extra / xa_bound);
    lm_image_unref (image);
    g_free (img);
  }
  lm_state_clear (&st);
  lm_model_unref (m);
  g_free (quant);
  return 0;
}
