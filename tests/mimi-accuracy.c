/* mimi-accuracy CASE_DIR...: how far each weight storage (f32, bf16, q8,
 * q4) takes Mimi from Kyutai's reference, on conformance cases: the SNR of
 * the encoder's latent (before quantization) against the reference latent,
 * the share of streamed-encode codes equal to the reference codes (all
 * codebooks, and the semantic codebook 0 alone: later codebooks quantize
 * residual noise and flip with any perturbation), and the SNR of the
 * streamed decode of the reference codes against the reference audio.
 * On this CPU (AMX, VNNI...), which the numbers depend on; it prints the
 * kernels it ran.  A report for docs/, not a test: float32's exactness is
 * the conformance runner's job. */
#include <glib.h>
#include <math.h>
#include <stdio.h>

#include "cpu.h"
#include "mimi.h"
#include "safetensors.h"

typedef struct {
  float *pcm;
  size_t n_pcm;
  uint16_t *codes; /* [frames][n_q] */
  int n_q, frames;
  float *decoded;
  size_t n_decoded;
  float *latent; /* [dim][frames], or NULL */
  size_t n_latent;
} Ref;

static float *
read_f32 (StFile *f, const char *name, size_t *n)
{
  const StTensor *t = st_find (f, name);
  if (!t)
    return NULL;
  float *buf = g_new (float, t->numel);
  if (!st_read_f32 (f, t, buf, NULL)) {
    g_free (buf);
    return NULL;
  }
  *n = t->numel;
  return buf;
}

static gboolean
ref_load (Ref *r, const char *dir)
{
  gchar *path = g_build_filename (dir, "vectors.safetensors", NULL);
  GError *err = NULL;
  StFile *f = st_open (path, &err);
  g_free (path);
  if (!f) {
    g_printerr ("%s\n", err->message);
    g_error_free (err);
    return FALSE;
  }
  r->pcm = read_f32 (f, "pcm", &r->n_pcm);
  r->decoded = read_f32 (f, "decoded", &r->n_decoded);
  r->latent = read_f32 (f, "latent_streaming", &r->n_latent);
  const StTensor *t = st_find (f, "codes");
  gboolean ok = r->pcm && r->decoded && t && t->ndim == 3;
  if (ok) {
    r->n_q = (int) t->shape[1];
    r->frames = (int) t->shape[2];
    int64_t *raw = g_new (int64_t, t->numel);
    ok = st_read_i64 (f, t, raw, NULL);
    r->codes = g_new (uint16_t, t->numel);
    for (int q = 0; q < r->n_q; q++)
      for (int i = 0; i < r->frames; i++)
        r->codes[(size_t) i * r->n_q + q] =
            (uint16_t) raw[(size_t) q * r->frames + i];
    g_free (raw);
  }
  st_unref (f);
  return ok;
}

static void
measure (const char *dir, const Ref *r, MoshiWeightType type)
{
  gchar *path = g_build_filename (dir, "model.safetensors", NULL);
  GError *err = NULL;
  MimiModel *m = mimi_model_load_typed (path, type, &err);
  g_free (path);
  if (!m) {
    g_printerr ("%s\n", err->message);
    g_error_free (err);
    return;
  }
  const int frame = mimi_model_config (m)->frame_size;
  const int frames = MIN (r->frames, (int) (r->n_pcm / frame));
  MimiEncoder *enc = mimi_encoder_new (m, r->n_q, NULL);
  MimiDecoder *dec = mimi_decoder_new (m, r->n_q, NULL);
  uint16_t codes[MIMI_MAX_CODEBOOKS];
  float *out = g_new (float, frame);
  const int dim = mimi_model_config (m)->dimension;
  float *latent = g_new (float, dim);
  MimiEncodeTrace trace = { NULL, NULL, latent };
  long equal = 0, total = 0, equal0 = 0;
  double sig = 0.0, noise = 0.0, lsig = 0.0, lnoise = 0.0;
  const gboolean has_latent = r->latent && r->n_latent == (size_t) dim * frames;
  for (int i = 0; i < frames; i++) {
    mimi_encode_frame_traced (enc, r->pcm + (size_t) i * frame, codes, &trace);
    for (int q = 0; q < r->n_q; q++, total++)
      equal += codes[q] == r->codes[(size_t) i * r->n_q + q];
    equal0 += codes[0] == r->codes[(size_t) i * r->n_q];
    for (int d = 0; has_latent && d < dim; d++) {
      const double want = r->latent[(size_t) d * frames + i];
      lsig += want * want;
      lnoise += (latent[d] - want) * (latent[d] - want);
    }
    if (!mimi_decode_frame (dec, r->codes + (size_t) i * r->n_q, out, NULL))
      break;
    for (int j = 0; j < frame && (size_t) i * frame + j < r->n_decoded; j++) {
      const double want = r->decoded[(size_t) i * frame + j];
      sig += want * want;
      noise += (out[j] - want) * (out[j] - want);
    }
  }
  gchar *base = g_path_get_basename (dir);
  printf ("%-12s %-5s latent SNR %6.1f dB  codes equal %5.1f %% (codebook 0: "
          "%5.1f %%)  decoded SNR %6.1f dB\n",
      base, moshi_weight_type_name (type),
      has_latent && lnoise > 0 ? 10 * log10 (lsig / lnoise) : INFINITY,
      100.0 * equal / MAX (total, 1), 100.0 * equal0 / MAX (frames, 1),
      noise > 0 ? 10 * log10 (sig / noise) : INFINITY);
  g_free (base);
  g_free (latent);
  g_free (out);
  mimi_encoder_free (enc);
  mimi_decoder_free (dec);
  mimi_model_unref (m);
}

int
main (int argc, char **argv)
{
  if (argc < 2) {
    g_printerr ("usage: %s CASE_DIR...\n", argv[0]);
    return 2;
  }
  printf ("cpu: %s%s%s\n", moshi_cpu_level_name (moshi_cpu_level ()),
      moshi_cpu_has_avx512_vnni () ? " +vnni" : "",
      moshi_cpu_has_amx () ? " +amx" : "");
  const MoshiWeightType types[] = { MOSHI_WEIGHTS_F32, MOSHI_WEIGHTS_BF16,
    MOSHI_WEIGHTS_Q8, MOSHI_WEIGHTS_Q4 };
  for (int a = 1; a < argc; a++) {
    Ref r = { 0 };
    if (!ref_load (&r, argv[a])) {
      g_printerr ("%s: no usable vectors.safetensors\n", argv[a]);
      return 1;
    }
    for (size_t t = 0; t < G_N_ELEMENTS (types); t++)
      measure (argv[a], &r, types[t]);
    g_free (r.pcm);
    g_free (r.codes);
    g_free (r.decoded);
    g_free (r.latent);
  }
  return 0;
}
