/* bench-mimi: streaming speed and memory of Mimi, frame by frame.
 *
 *   bench-mimi [--threads N] [--seconds S] [--model FILE] [--codebooks N]
 *              [--weights T] [--decoder-weights T] [--pipelined]
 *
 * Without --model, a full-size Mimi (Kyutai's architecture) with random
 * weights is built in memory: the compute does not depend on the values.
 * Prints encode and decode real-time factors (compute seconds / audio
 * seconds), per-frame latency percentiles, peak RSS and per-stream state. */
#include <glib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "cpu.h"
#include "mimi.h"

static int
cmp_double (const void *a, const void *b)
{
  double x = *(const double *) a, y = *(const double *) b;
  return x < y ? -1 : x > y;
}

static double
percentile (double *v, int n, double p)
{
  qsort (v, n, sizeof *v, cmp_double);
  int i = (int) ceil (p * n) - 1;
  return v[CLAMP (i, 0, n - 1)];
}

typedef struct {
  MimiEncoder *enc;
  MimiDecoder *dec;
  int fs, frames;
  GAsyncQueue *queue;
  GError *err;
} PipeCtx;

static gpointer
pipe_decode (gpointer data)
{
  PipeCtx *pc = data;
  float *out = g_new (float, pc->fs);
  for (int f = 0; f < pc->frames; f++) {
    uint16_t *c = g_async_queue_pop (pc->queue);
    if (!mimi_decode_frame (pc->dec, c, out, &pc->err))
      g_error ("%s", pc->err->message);
    g_free (c);
  }
  g_free (out);
  return NULL;
}

static long
peak_rss_kb (void)
{
  struct rusage ru;
  getrusage (RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

static MimiModel *
load_model (const char *path, MoshiWeightType weights, GError **err)
{
  if (path)
    return mimi_model_load_typed (path, weights, err);
  MimiConfig cfg;
  mimi_config_default (&cfg);
  return mimi_model_new_random (&cfg, 42, weights);
}

int
main (int argc, char **argv)
{
  int threads = 1, codebooks = 8;
  gboolean pipelined = FALSE;
  double seconds = 10.0;
  gchar *model_path = NULL, *weights_name = NULL, *dec_weights_name = NULL;
  GOptionEntry entries[] = { { "threads", 't', 0, G_OPTION_ARG_INT, &threads,
                                 "Compute threads per stream", "N" },
    { "seconds", 's', 0, G_OPTION_ARG_DOUBLE, &seconds,
        "Seconds of audio to stream", "S" },
    { "model", 'm', 0, G_OPTION_ARG_FILENAME, &model_path,
        "Mimi .safetensors (default: random full-size)", "FILE" },
    { "codebooks", 'q', 0, G_OPTION_ARG_INT, &codebooks,
        "Codebooks (default 8)", "N" },
    { "pipelined", 'p', 0, G_OPTION_ARG_NONE, &pipelined,
        "Also run encoder and decoder in two threads, as mimienc ! queue ! "
        "mimidec does",
        NULL },
    { "weights", 'w', 0, G_OPTION_ARG_STRING, &weights_name,
        "Weight storage: f32 (default), bf16, q8, q4", "TYPE" },
    { "decoder-weights", 'd', 0, G_OPTION_ARG_STRING, &dec_weights_name,
        "Decoder's weight storage when it differs from --weights (as "
        "mimienc quantize=q8 ! mimidec quantize=q4 has)",
        "TYPE" },
    { NULL } };
  GError *err = NULL;
  GOptionContext *ctx = g_option_context_new ("- Mimi streaming benchmark");
  g_option_context_add_main_entries (ctx, entries, NULL);
  if (!g_option_context_parse (ctx, &argc, &argv, &err)) {
    fprintf (stderr, "%s\n", err->message);
    return 2;
  }
  g_option_context_free (ctx);

  MoshiWeightType weights, dec_weights;
  if (!moshi_weight_type_from_string (weights_name, &weights)
      || !moshi_weight_type_from_string (dec_weights_name ? dec_weights_name
                                                          : weights_name,
          &dec_weights)) {
    fprintf (stderr, "unknown weight type %s (use f32, bf16, q8 or q4)\n",
        dec_weights_name ? dec_weights_name : weights_name);
    return 2;
  }
  long rss0 = peak_rss_kb ();
  double t_load = g_get_monotonic_time ();
  MimiModel *model = load_model (model_path, weights, &err);
  MimiModel *dec_model = !model ? NULL
      : dec_weights == weights  ? mimi_model_ref (model)
                                : load_model (model_path, dec_weights, &err);
  if (!dec_model) {
    fprintf (stderr, "%s\n", err->message);
    return 1;
  }
  t_load = (g_get_monotonic_time () - t_load) / 1e6;
  const MimiConfig *cfg = mimi_model_config (model);
  const int fs = cfg->frame_size;
  const int frames = MAX (1, (int) (seconds * cfg->sample_rate / fs));
  const int warmup = 3;

  MimiEncoder *enc = mimi_encoder_new (model, codebooks, &err);
  MimiDecoder *dec = enc ? mimi_decoder_new (dec_model, codebooks, &err) : NULL;
  if (!enc || !dec) {
    fprintf (stderr, "%s\n", err->message);
    return 1;
  }
  mimi_encoder_set_threads (enc, threads);
  mimi_decoder_set_threads (dec, threads);

  /* A chirp with some noise: data-independent compute, but realistic. */
  float *pcm = g_new (float, fs);
  float *out = g_new (float, fs);
  uint16_t codes[MIMI_MAX_CODEBOOKS];
  double *t_enc = g_new (double, frames), *t_dec = g_new (double, frames);
  double sum_enc = 0, sum_dec = 0;
  for (int f = -warmup; f < frames; f++) {
    for (int i = 0; i < fs; i++) {
      double t = (double) ((f + warmup) * fs + i) / cfg->sample_rate;
      pcm[i] = 0.3f * (float) sin (2 * M_PI * (200 + 50 * t) * t)
          + 0.01f * (float) ((i * 7919 % 1000) / 1000.0 - 0.5);
    }
    gint64 a = g_get_monotonic_time ();
    mimi_encode_frame (enc, pcm, codes);
    gint64 b = g_get_monotonic_time ();
    if (!mimi_decode_frame (dec, codes, out, &err)) {
      fprintf (stderr, "%s\n", err->message);
      return 1;
    }
    gint64 c = g_get_monotonic_time ();
    if (f >= 0) {
      t_enc[f] = (b - a) / 1e3;
      t_dec[f] = (c - b) / 1e3;
      sum_enc += t_enc[f];
      sum_dec += t_dec[f];
    }
  }
  double audio_s = (double) frames * fs / cfg->sample_rate;
  double rtf_enc = sum_enc / 1e3 / audio_s, rtf_dec = sum_dec / 1e3 / audio_s;

  printf ("model            %s (load %.2f s)\n",
      model_path ? model_path : "random full-size Mimi", t_load);
  printf ("cpu kernels      %s, weights %s (decoder %s), threads %d, "
          "codebooks %d\n",
      moshi_cpu_level_name (moshi_cpu_level ()),
      moshi_weight_type_name (weights), moshi_weight_type_name (dec_weights),
      threads, codebooks);
  printf ("audio            %.1f s (%d frames of %d samples)\n", audio_s,
      frames, fs);
  printf ("encode RTF       %.4f\n", rtf_enc);
  printf ("decode RTF       %.4f\n", rtf_dec);
  printf ("enc+dec RTF      %.4f\n", rtf_enc + rtf_dec);
  printf ("encode ms/frame  p50 %.2f  p99 %.2f\n",
      percentile (t_enc, frames, 0.5), percentile (t_enc, frames, 0.99));
  printf ("decode ms/frame  p50 %.2f  p99 %.2f\n",
      percentile (t_dec, frames, 0.5), percentile (t_dec, frames, 0.99));
  printf ("peak RSS         %.1f MB (%.1f MB before load)\n",
      peak_rss_kb () / 1024.0, rss0 / 1024.0);
  printf ("weights          %.1f MB\n", mimi_model_weight_bytes (model) / 1e6);
  printf ("state/stream     encoder %.1f KB, decoder %.1f KB\n",
      mimi_encoder_state_bytes (enc) / 1024.0,
      mimi_decoder_state_bytes (dec) / 1024.0);

  if (pipelined) {
    /* Encoder and decoder on their own threads, frame t decoded while
     * frame t+1 is encoded: the wall-clock cost of a live transcoding
     * pipeline with a queue between the elements. */
    mimi_encoder_reset (enc);
    mimi_decoder_reset (dec);
    PipeCtx pc = { enc, dec, fs, frames, g_async_queue_new (), NULL };
    gint64 t0 = g_get_monotonic_time ();
    GThread *th = g_thread_new ("decode", pipe_decode, &pc);
    for (int f = 0; f < frames; f++) {
      uint16_t *c = g_new (uint16_t, MIMI_MAX_CODEBOOKS);
      mimi_encode_frame (enc, pcm, c);
      g_async_queue_push (pc.queue, c);
    }
    g_thread_join (th);
    double wall = (g_get_monotonic_time () - t0) / 1e6;
    printf ("pipelined RTF    %.4f (wall clock, encoder and decoder threads)\n",
        wall / audio_s);
    g_async_queue_unref (pc.queue);
  }

  mimi_encoder_free (enc);
  mimi_decoder_free (dec);
  mimi_model_unref (model);
  mimi_model_unref (dec_model);
  g_free (pcm);
  g_free (out);
  g_free (t_enc);
  g_free (t_dec);
  g_free (model_path);
  g_free (weights_name);
  return 0;
}
