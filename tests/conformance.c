/* Conformance runner: checks our models against reference vectors produced
 * with Kyutai's own PyTorch implementation.
 *
 *   conformance CASE_DIR [CASE_DIR...]
 *
 * Each CASE_DIR holds config.json, model.safetensors (optionally
 * model.bf16.safetensors) and vectors.safetensors.  Every check the vectors
 * allow is run and printed on one line with its measured error; the last
 * line is "N passed, N failed" and the exit status is non-zero on failure. */
#include <glib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "lm-private.h"
#include "lm.h"
#include "mimi.h"
#include "model-error.h"
#include "moshivis-image.h"
#include "safetensors.h"
#include "sentencepiece.h"

/* Tolerances (see each case's README): intermediate activations are allowed
 * ~50x the float32-vs-float64 gap Kyutai's code itself shows; decoded audio
 * is compared with the same factor applied to the gap measured in the
 * vectors (decoded vs decoded_f64ref), with a floor for very quiet cases. */
#define TOL_ACTIVATION 2e-5
#define TOL_DECODED_DEFAULT 5e-6
#define TOL_DECODED_FACTOR 50.0
#define TOL_DECODED_FLOOR 2e-6

static int n_passed, n_failed;

static void report (gboolean ok, const char *case_name, const char *check,
    const char *fmt, ...) G_GNUC_PRINTF (4, 5);

static void
report (gboolean ok, const char *case_name, const char *check, const char *fmt,
    ...)
{
  va_list ap;
  printf ("%s %s %s: ", ok ? "PASS" : "FAIL", case_name, check);
  va_start (ap, fmt);
  vprintf (fmt, ap);
  va_end (ap);
  printf ("\n");
  fflush (stdout);
  if (ok)
    n_passed++;
  else
    n_failed++;
}

typedef struct {
  const char *name;
  StFile *vec;
  MimiModel *model;
  int frames, frame_size, dim, steps, n_q, context;
} Case;

/* A reference tensor as float32 or int64: NULL when absent; when present
 * with the wrong number of values (want > 0) or unreadable, NULL and the
 * problem reported as a failed check of case `who`. */
static void *
ref_read (const char *who, StFile *f, const char *name, size_t want,
    gboolean as_float, const StTensor **tensor)
{
  const StTensor *t = st_find (f, name);
  if (!t)
    return NULL;
  if (want && (size_t) t->numel != want) {
    report (FALSE, who, name, "has %" G_GINT64_FORMAT " values, expected %zu",
        t->numel, want);
    return NULL;
  }
  GError *err = NULL;
  void *buf = as_float ? (void *) g_new (float, MAX (t->numel, 1))
                       : (void *) g_new (int64_t, MAX (t->numel, 1));
  gboolean ok =
      as_float ? st_read_f32 (f, t, buf, &err) : st_read_i64 (f, t, buf, &err);
  if (!ok) {
    report (FALSE, who, name, "%s", err->message);
    g_error_free (err);
    g_free (buf);
    return NULL;
  }
  if (tensor)
    *tensor = t;
  return buf;
}

/* A reference tensor as floats; NULL if absent. numel returned. */
static float *
ref_f32 (Case *c, const char *name, size_t *numel)
{
  const StTensor *t = NULL;
  float *buf = ref_read (c->name, c->vec, name, 0, TRUE, &t);
  if (buf && numel)
    *numel = t->numel;
  return buf;
}

/* Reference codes [1, n_q, frames] as uint16 [frames][n_q]. */
static uint16_t *
ref_codes (Case *c, const char *name, int *n_q_out)
{
  const StTensor *t = st_find (c->vec, name);
  if (!t)
    return NULL;
  if (t->ndim != 3 || t->shape[2] != c->frames || t->shape[1] < 1
      || t->shape[1] > MIMI_MAX_CODEBOOKS) {
    report (FALSE, c->name, name, "unexpected shape");
    return NULL;
  }
  int n_q = (int) t->shape[1];
  int64_t *raw = g_new (int64_t, t->numel);
  GError *err = NULL;
  if (!st_read_i64 (c->vec, t, raw, &err)) {
    report (FALSE, c->name, name, "%s", err->message);
    g_error_free (err);
    g_free (raw);
    return NULL;
  }
  uint16_t *codes = g_new (uint16_t, (size_t) n_q * c->frames);
  for (int q = 0; q < n_q; q++)
    for (int f = 0; f < c->frames; f++)
      codes[(size_t) f * n_q + q] =
          (uint16_t) CLAMP (raw[(size_t) q * c->frames + f], 0, 65535);
  g_free (raw);
  *n_q_out = n_q;
  return codes;
}

/* Compares ours (time-major [T][C]) with a reference [1][C][T], over the
 * first t_max steps. */
static void
compare_tc (Case *c, const char *check, const float *ours, const float *ref,
    int C, int T, int t_max, double tol)
{
  double max_err = 0.0, peak = 0.0;
  for (int t = 0; t < t_max; t++)
    for (int ch = 0; ch < C; ch++) {
      double r = ref[(size_t) ch * T + t];
      double e = fabs (ours[(size_t) t * C + ch] - r);
      max_err = MAX (max_err, e);
      peak = MAX (peak, fabs (r));
    }
  report (max_err <= tol && isfinite (max_err), c->name, check,
      "max_abs_err=%.3e tol=%.1e (ref peak %.3e, %d of %d steps)", max_err, tol,
      peak, t_max, T);
}

static double
max_abs_diff (const float *a, const float *b, size_t n, double *peak)
{
  double m = 0.0, p = 0.0;
  for (size_t i = 0; i < n; i++) {
    m = MAX (m, fabs ((double) a[i] - b[i]));
    p = MAX (p, fabs ((double) b[i]));
  }
  if (peak)
    *peak = p;
  return m;
}

/* Streaming decode of codes [frames][n_q_ref] using the first n_q. */
static float *
decode_all (Case *c, MimiModel *model, const uint16_t *codes, int n_q_ref,
    int n_q, float *quantized, float *upsampled, float *tr_out)
{
  GError *err = NULL;
  MimiDecoder *d = mimi_decoder_new (model, n_q, &err);
  if (!d) {
    report (FALSE, c->name, "decoder", "%s", err->message);
    g_error_free (err);
    return NULL;
  }
  float *pcm = g_new (float, (size_t) c->frames * c->frame_size);
  for (int f = 0; f < c->frames; f++) {
    MimiDecodeTrace tr = {
      quantized ? quantized + (size_t) f * c->dim : NULL,
      upsampled ? upsampled + (size_t) f * c->steps * c->dim : NULL,
      tr_out ? tr_out + (size_t) f * c->steps * c->dim : NULL,
    };
    if (!mimi_decode_frame_traced (d, codes + (size_t) f * n_q_ref,
            pcm + (size_t) f * c->frame_size, &tr, &err)) {
      report (FALSE, c->name, "decode", "frame %d: %s", f, err->message);
      g_error_free (err);
      g_free (pcm);
      mimi_decoder_free (d);
      return NULL;
    }
  }
  mimi_decoder_free (d);
  return pcm;
}

static uint16_t *
encode_all (Case *c, MimiModel *model, const float *pcm, float *seanet_out,
    float *tr_out, float *latent)
{
  GError *err = NULL;
  MimiEncoder *e = mimi_encoder_new (model, c->n_q, &err);
  if (!e) {
    report (FALSE, c->name, "encoder", "%s", err->message);
    g_error_free (err);
    return NULL;
  }
  uint16_t *codes = g_new (uint16_t, (size_t) c->frames * c->n_q);
  for (int f = 0; f < c->frames; f++) {
    MimiEncodeTrace tr = {
      seanet_out ? seanet_out + (size_t) f * c->steps * c->dim : NULL,
      tr_out ? tr_out + (size_t) f * c->steps * c->dim : NULL,
      latent ? latent + (size_t) f * c->dim : NULL,
    };
    mimi_encode_frame_traced (e, pcm + (size_t) f * c->frame_size,
        codes + (size_t) f * c->n_q, &tr);
  }
  mimi_encoder_free (e);
  return codes;
}

static void
compare_codes (Case *c, const char *check, const uint16_t *ours,
    const uint16_t *ref, int n_q_ref)
{
  int mismatch = 0;
  int first = -1;
  for (int f = 0; f < c->frames; f++)
    for (int q = 0; q < c->n_q; q++)
      if (ours[(size_t) f * c->n_q + q] != ref[(size_t) f * n_q_ref + q]) {
        if (first < 0)
          first = f;
        mismatch++;
      }
  if (mismatch)
    report (FALSE, c->name, check, "%d of %d codes differ (first in frame %d)",
        mismatch, c->frames * c->n_q, first);
  else
    report (TRUE, c->name, check, "%d of %d codes differ", mismatch,
        c->frames * c->n_q);
}

static void
check_decoded (Case *c, const char *check, const float *ours,
    const char *ref_name, double tol)
{
  size_t n = 0;
  float *ref = ref_f32 (c, ref_name, &n);
  if (!ref)
    return;
  if (n != (size_t) c->frames * c->frame_size) {
    report (FALSE, c->name, check, "reference %s has %zu samples, expected %d",
        ref_name, n, c->frames * c->frame_size);
    g_free (ref);
    return;
  }
  double peak;
  double err = max_abs_diff (ours, ref, n, &peak);
  report (err <= tol && isfinite (err), c->name, check,
      "max_abs_err=%.3e tol=%.1e (ref peak %.3e)", err, tol, peak);
  g_free (ref);
}

static void
run_mimi_case (const char *dir, const char *name)
{
  GError *err = NULL;
  gchar *model_path = g_build_filename (dir, "model.safetensors", NULL);
  gchar *bf16_path = g_build_filename (dir, "model.bf16.safetensors", NULL);
  gchar *vec_path = g_build_filename (dir, "vectors.safetensors", NULL);
  Case c = { .name = name };
  float *pcm = NULL, *seanet = NULL, *etr = NULL, *lat = NULL;
  uint16_t *ref = NULL, *codes = NULL, *ref_ns = NULL;

  c.model = mimi_model_load (model_path, &err);
  report (c.model != NULL, name, "load", "%s",
      c.model ? model_path : err->message);
  if (!c.model)
    goto out;
  c.vec = st_open (vec_path, &err);
  if (!c.vec) {
    report (FALSE, name, "vectors", "%s", err->message);
    goto out;
  }
  const MimiConfig *cfg = mimi_model_config (c.model);
  c.frame_size = cfg->frame_size;
  c.dim = cfg->dimension;
  c.context = cfg->context;
  int hop = 1;
  for (int i = 0; i < cfg->n_ratios; i++)
    hop *= cfg->ratios[i];
  c.steps = c.frame_size / hop;

  size_t n_pcm = 0;
  pcm = ref_f32 (&c, "pcm", &n_pcm);
  if (!pcm || n_pcm % c.frame_size) {
    report (FALSE, name, "pcm", "missing or not a whole number of frames");
    goto out;
  }
  c.frames = (int) (n_pcm / c.frame_size);
  int n_q_ref = 0;
  ref = ref_codes (&c, "codes", &n_q_ref);
  if (!ref) {
    report (FALSE, name, "codes", "reference codes missing");
    goto out;
  }
  c.n_q = n_q_ref;
  const int T = c.frames * c.steps;

  /* Encoder: codes and intermediates. */
  seanet = g_new0 (float, (size_t) T *c.dim);
  etr = g_new0 (float, (size_t) T *c.dim);
  lat = g_new0 (float, (size_t) c.frames *c.dim);
  codes = encode_all (&c, c.model, pcm, seanet, etr, lat);
  if (codes)
    compare_codes (&c, "encode codes", codes, ref, n_q_ref);
  float *r;
  if ((r = ref_f32 (&c, "seanet_out", NULL))) {
    compare_tc (&c, "encode seanet_out", seanet, r, c.dim, T, T,
        TOL_ACTIVATION);
    g_free (r);
  }
  /* The reference transformer output is non-streaming: it matches the
   * streaming one only while the window is not yet full. */
  if ((r = ref_f32 (&c, "enc_transformer_out", NULL))) {
    compare_tc (&c, "encode transformer_out", etr, r, c.dim, T,
        MIN (T, c.context - 1), TOL_ACTIVATION);
    g_free (r);
  }
  if ((r = ref_f32 (&c, "latent_streaming", NULL))) {
    compare_tc (&c, "encode latent_streaming", lat, r, c.dim, c.frames,
        c.frames, TOL_ACTIVATION);
    g_free (r);
  }

  /* Decoder from the reference codes. */
  double tol = TOL_DECODED_DEFAULT;
  {
    size_t n1 = 0, n2 = 0;
    float *a = ref_f32 (&c, "decoded", &n1);
    float *b = ref_f32 (&c, "decoded_f64ref", &n2);
    if (a && b && n1 == n2)
      tol = MAX (TOL_DECODED_FACTOR * max_abs_diff (a, b, n1, NULL),
          TOL_DECODED_FLOOR);
    g_free (a);
    g_free (b);
  }
  float *dec = decode_all (&c, c.model, ref, n_q_ref, c.n_q, NULL, NULL, NULL);
  if (dec) {
    check_decoded (&c, "decode decoded", dec, "decoded", tol);
    g_free (dec);
  }
  /* Every decoded_qN the case provides: decode with the first N codebooks. */
  for (size_t i = 0; i < st_count (c.vec); i++) {
    const char *tname = st_index (c.vec, i)->name;
    int nq = 0;
    char check[64];
    if (sscanf (tname, "decoded_q%d", &nq) != 1 || nq < 1 || nq > n_q_ref)
      continue;
    g_snprintf (check, sizeof check, "decode %s", tname);
    dec = decode_all (&c, c.model, ref, n_q_ref, nq, NULL, NULL, NULL);
    if (dec) {
      check_decoded (&c, check, dec, tname, tol);
      g_free (dec);
    }
  }

  /* Decoder intermediates, from the non-streaming codes. */
  int n_q_ns = 0;
  ref_ns = ref_codes (&c, "codes_nonstreaming", &n_q_ns);
  if (ref_ns && n_q_ns == n_q_ref) {
    float *qz = g_new0 (float, (size_t) c.frames *c.dim);
    float *up = g_new0 (float, (size_t) T *c.dim);
    float *dtr = g_new0 (float, (size_t) T *c.dim);
    dec = decode_all (&c, c.model, ref_ns, n_q_ns, c.n_q, qz, up, dtr);
    g_free (dec);
    if ((r = ref_f32 (&c, "quantized", NULL))) {
      compare_tc (&c, "decode quantized", qz, r, c.dim, c.frames, c.frames,
          TOL_ACTIVATION);
      g_free (r);
    }
    if ((r = ref_f32 (&c, "upsampled", NULL))) {
      compare_tc (&c, "decode upsampled", up, r, c.dim, T, T, TOL_ACTIVATION);
      g_free (r);
    }
    if ((r = ref_f32 (&c, "dec_transformer_out", NULL))) {
      compare_tc (&c, "decode transformer_out", dtr, r, c.dim, T,
          MIN (T, c.context - 1), TOL_ACTIVATION);
      g_free (r);
    }
    g_free (qz);
    g_free (up);
    g_free (dtr);
  }
  if ((r = ref_f32 (&c, "quantized_q1", NULL))) {
    float *qz = g_new0 (float, (size_t) c.frames *c.dim);
    dec = decode_all (&c, c.model, ref, n_q_ref, 1, qz, NULL, NULL);
    g_free (dec);
    compare_tc (&c, "decode quantized_q1", qz, r, c.dim, c.frames, c.frames,
        TOL_ACTIVATION);
    g_free (qz);
    g_free (r);
  }

  /* bf16 weights, upcast to float32. */
  if (g_file_test (bf16_path, G_FILE_TEST_EXISTS)) {
    MimiModel *bf = mimi_model_load (bf16_path, &err);
    report (bf != NULL, name, "load bf16", "%s", bf ? bf16_path : err->message);
    if (bf) {
      int n_q_bf = 0;
      uint16_t *ref_bf = ref_codes (&c, "codes_bf16w", &n_q_bf);
      if (ref_bf && n_q_bf == n_q_ref) {
        uint16_t *cb = encode_all (&c, bf, pcm, NULL, NULL, NULL);
        if (cb)
          compare_codes (&c, "bf16 encode codes", cb, ref_bf, n_q_bf);
        g_free (cb);
        if (st_find (c.vec, "decoded_bf16w")) {
          dec = decode_all (&c, bf, ref_bf, n_q_bf, c.n_q, NULL, NULL, NULL);
          if (dec)
            check_decoded (&c, "bf16 decode decoded", dec, "decoded_bf16w",
                tol);
          g_free (dec);
        }
      }
      g_free (ref_bf);
      mimi_model_unref (bf);
    }
  }

out:
  g_clear_error (&err);
  g_free (pcm);
  g_free (seanet);
  g_free (etr);
  g_free (lat);
  g_free (ref);
  g_free (ref_ns);
  g_free (codes);
  if (c.vec)
    st_unref (c.vec);
  if (c.model)
    mimi_model_unref (c.model);
  g_free (model_path);
  g_free (bf16_path);
  g_free (vec_path);
}

/* ------------------------------------------------------------- LM case --- */

static void run_teacher_checks (const char *name, LmModel *m, StFile *codes_f,
    const char *codes_name, StFile *out_f, const char *logits_name,
    const char *mask_name, const char *text_name, const char *text_mask_name,
    double tol);

typedef struct {
  const char *name;
  StFile *vec;
} LmRef;

static float *
lm_ref_f32 (LmRef *r, const char *name, size_t want)
{
  return ref_read (r->name, r->vec, name, want, TRUE, NULL);
}

static int64_t *
lm_ref_i64 (LmRef *r, const char *name, size_t want)
{
  return ref_read (r->name, r->vec, name, want, FALSE, NULL);
}

/* Largest |a - b| over n values, and the reference peak. */
static double
max_err_f32 (const float *a, const float *b, size_t n, double *peak)
{
  return max_abs_diff (a, b, n, peak);
}

/* Streaming generation with Kyutai's LMGen conventions (greedy, or the
 * recorded sampler noise when the case has it): tokens must match exactly,
 * logits and the transformer output within TOL_LM_LOGITS. */
#define TOL_LM_LOGITS 1e-4

/* Tokenizer: the case README lists examples as  - `'text'` -> `[ids]`; each
 * id list must decode to its text exactly, whole and piece by piece. */
static void
run_tokenizer_checks (const char *dir, const char *name)
{
  gchar *model_path = g_build_filename (dir, "tokenizer.model", NULL);
  gchar *readme_path = g_build_filename (dir, "README.md", NULL);
  gchar *readme = NULL;
  GError *err = NULL;
  SpModel *sp = NULL;
  if (!g_file_test (model_path, G_FILE_TEST_EXISTS))
    goto out;
  sp = sp_model_load (model_path, &err);
  if (!sp) {
    report (FALSE, name, "tokenizer load", "%s", err->message);
    goto out;
  }
  int examples = 0, bad = 0;
  if (g_file_get_contents (readme_path, &readme, NULL, NULL)) {
    GRegex *re = g_regex_new ("^- `?'(.*)'`? -> `?\\[([0-9, ]*)\\]`?\\s*$",
        G_REGEX_MULTILINE, 0, NULL);
    GMatchInfo *mi = NULL;
    g_regex_match (re, readme, 0, &mi);
    while (g_match_info_matches (mi)) {
      gchar *text = g_match_info_fetch (mi, 1);
      gchar *list = g_match_info_fetch (mi, 2);
      gchar **parts = g_strsplit (list, ",", -1);
      int n = 0, ids[512];
      for (int i = 0; parts[i] && n < 512; i++)
        if (*g_strstrip (parts[i]))
          ids[n++] = atoi (parts[i]);
      char *whole = sp_decode_ids (sp, ids, n);
      GString *piecewise = g_string_new ("");
      SpDecodeState st;
      sp_decode_state_init (&st);
      for (int i = 0; i < n; i++)
        sp_decode_piece (sp, ids[i], piecewise, &st);
      sp_decode_flush (sp, piecewise, &st);
      if (strcmp (whole, text) || strcmp (piecewise->str, text)) {
        bad++;
        printf ("  '%s' decoded as '%s' / '%s'\n", text, whole, piecewise->str);
      }
      examples++;
      g_free (whole);
      g_string_free (piecewise, TRUE);
      g_strfreev (parts);
      g_free (text);
      g_free (list);
      g_match_info_next (mi, NULL);
    }
    g_match_info_free (mi);
    g_regex_unref (re);
  }
  if (examples)
    report (bad == 0, name, "tokenizer decode",
        "%d of %d README examples differ", bad, examples);
  else
    report (TRUE, name, "tokenizer load", "%s (%d pieces; no README examples)",
        model_path, sp_model_vocab_size (sp));
out:
  g_clear_error (&err);
  if (sp)
    sp_model_free (sp);
  g_free (readme);
  g_free (model_path);
  g_free (readme_path);
}

static void
run_lm_case (const char *dir, const char *name)
{
  GError *err = NULL;
  gchar *cfg_path = g_build_filename (dir, "config.json", NULL);
  gchar *model_path = g_build_filename (dir, "model.safetensors", NULL);
  gchar *vec_path = g_build_filename (dir, "vectors.safetensors", NULL);
  LmConfig cfg;
  LmModel *m = NULL;
  LmGen *gen = NULL;
  LmRef r = { name, NULL };

  if (!lm_config_load_json (&cfg, cfg_path, &err)
      || !(m = lm_model_load (model_path, &cfg, MOSHI_WEIGHTS_F32, &err))) {
    report (FALSE, name, "load", "%s", err->message);
    goto out;
  }
  run_tokenizer_checks (dir, name);
  report (TRUE, name, "load", "%s (%.0f k parameters' worth of weights)",
      model_path, lm_model_weight_bytes (m) / 4e3);
  r.vec = st_open (vec_path, &err);
  if (!r.vec) {
    report (FALSE, name, "vectors", "%s", err->message);
    goto out;
  }
  const StTensor *tu = st_find (r.vec, "lmgen_in_user_codes");
  if (!tu || tu->ndim != 2) {
    report (FALSE, name, "vectors", "no lmgen_in_user_codes [steps, n_user]");
    goto out;
  }
  const int steps = (int) tu->shape[0], n_user = (int) tu->shape[1];
  const int K = 1 + cfg.n_q, dq = cfg.dep_q;
  if (n_user != cfg.n_q - cfg.dep_q) {
    report (FALSE, name, "vectors", "%d user codebooks, model expects %d",
        n_user, cfg.n_q - cfg.dep_q);
    goto out;
  }
  gboolean sampled = st_find (r.vec, "lmgen_text_exp_noise") != NULL;
  LmGenParams params;
  lm_gen_params_default (&params, &cfg);
  params.use_sampling = sampled;
  gen = lm_gen_new (m, &params, &err);
  if (!gen) {
    report (FALSE, name, "lmgen", "%s", err->message);
    goto out;
  }
  const int kt = MIN (params.top_k_text > 0 ? params.top_k_text : cfg.text_card,
      cfg.text_card);
  const int ka = MIN (params.top_k > 0 ? params.top_k : cfg.card, cfg.card);
  int64_t *user =
      lm_ref_i64 (&r, "lmgen_in_user_codes", (size_t) steps * n_user);
  int64_t *ref_in = lm_ref_i64 (&r, "lmgen_main_input", (size_t) steps * K);
  int64_t *ref_out =
      lm_ref_i64 (&r, "lmgen_out_tokens", (size_t) steps * (1 + dq));
  int64_t *ref_text = lm_ref_i64 (&r, "lmgen_text_tokens", (size_t) steps);
  int64_t *ref_audio =
      lm_ref_i64 (&r, "lmgen_audio_tokens", (size_t) steps * dq);
  float *ref_tl =
      lm_ref_f32 (&r, "lmgen_text_logits", (size_t) steps * cfg.text_card);
  float *ref_dl =
      lm_ref_f32 (&r, "lmgen_depformer_logits", (size_t) steps * dq * cfg.card);
  float *ref_to =
      lm_ref_f32 (&r, "lmgen_transformer_out", (size_t) steps * cfg.dim);
  float *tnoise = lm_ref_f32 (&r, "lmgen_text_exp_noise", (size_t) steps * kt);
  float *anoise =
      lm_ref_f32 (&r, "lmgen_audio_exp_noise", (size_t) steps * dq * ka);
  if (sampled && (!tnoise || !anoise)) {
    report (FALSE, name, "noise",
        "sampler noise tensors have unexpected sizes");
    goto free_refs;
  }

  int *in = g_new (int, K), *outk = g_new (int, 1 + dq),
      *audio = g_new (int, dq);
  int *uc = g_new (int, MAX (n_user, 1));
  float *to = g_new (float, cfg.dim), *tl = g_new (float, cfg.text_card);
  float *dl = g_new (float, (size_t) dq *cfg.card);
  int bad_in = 0, bad_out = 0, bad_text = 0, bad_audio = 0, first_bad = -1;
  double e_tl = 0, e_dl = 0, e_to = 0, p_tl = 0, p_dl = 0, p_to = 0;
  for (int st = 0; st < steps; st++) {
    int text = -1;
    LmGenTrace tr = { in, to, tl, dl, &text, audio,
      tnoise ? tnoise + (size_t) st * kt : NULL,
      anoise ? anoise + (size_t) st * dq * ka : NULL };
    for (int i = 0; i < n_user; i++)
      uc[i] = (int) user[(size_t) st * n_user + i];
    int got = lm_gen_step (gen, uc, outk, &tr, &err);
    if (got < 0) {
      report (FALSE, name, "lmgen step", "step %d: %s", st, err->message);
      break;
    }
    gboolean diverged = FALSE;
    for (int k = 0; ref_in && k < K; k++)
      if (in[k] != ref_in[(size_t) st * K + k])
        bad_in++, diverged = TRUE;
    if (ref_text && text != ref_text[st])
      bad_text++, diverged = TRUE;
    for (int k = 0; ref_audio && k < dq; k++)
      if (audio[k] != ref_audio[(size_t) st * dq + k])
        bad_audio++, diverged = TRUE;
    for (int k = 0; ref_out && k <= dq; k++) {
      int64_t want = ref_out[(size_t) st * (1 + dq) + k];
      int64_t have = got ? outk[k] : -1;
      if (want != have)
        bad_out++, diverged = TRUE;
    }
    if (diverged && first_bad < 0)
      first_bad = st;
    double pk;
    if (ref_tl) {
      e_tl = MAX (e_tl,
          max_err_f32 (tl, ref_tl + (size_t) st * cfg.text_card, cfg.text_card,
              &pk));
      p_tl = MAX (p_tl, pk);
    }
    if (ref_dl) {
      e_dl = MAX (e_dl,
          max_err_f32 (dl, ref_dl + (size_t) st * dq * cfg.card,
              (size_t) dq * cfg.card, &pk));
      p_dl = MAX (p_dl, pk);
    }
    if (ref_to) {
      if (g_getenv ("MOSHI_CONFORMANCE_VERBOSE"))
        printf ("  step %d transformer_out err %.3e\n", st,
            max_err_f32 (to, ref_to + (size_t) st * cfg.dim, cfg.dim, &pk));
      e_to = MAX (e_to,
          max_err_f32 (to, ref_to + (size_t) st * cfg.dim, cfg.dim, &pk));
      p_to = MAX (p_to, pk);
    }
  }
  const char *mode = sampled ? "sampled, recorded noise" : "greedy";
  if (ref_in)
    report (bad_in == 0, name, "lmgen main_input",
        "%d of %d tokens differ (%s)", bad_in, steps * K, mode);
  if (ref_text)
    report (bad_text == 0, name, "lmgen text_tokens", "%d of %d differ",
        bad_text, steps);
  if (ref_audio)
    report (bad_audio == 0, name, "lmgen audio_tokens", "%d of %d differ",
        bad_audio, steps * dq);
  if (ref_out)
    report (bad_out == 0, name, "lmgen out_tokens", "%d of %d differ%s",
        bad_out, steps * (1 + dq),
        first_bad >= 0 ? " (tokens diverge: logits below are after that)" : "");
  if (ref_tl)
    report (e_tl <= TOL_LM_LOGITS, name, "lmgen text_logits",
        "max_abs_err=%.3e tol=%.1e (ref peak %.3e)", e_tl, TOL_LM_LOGITS, p_tl);
  if (ref_dl)
    report (e_dl <= TOL_LM_LOGITS, name, "lmgen depformer_logits",
        "max_abs_err=%.3e tol=%.1e (ref peak %.3e)", e_dl, TOL_LM_LOGITS, p_dl);
  if (ref_to)
    report (e_to <= TOL_LM_LOGITS, name, "lmgen transformer_out",
        "max_abs_err=%.3e tol=%.1e (ref peak %.3e)", e_to, TOL_LM_LOGITS, p_to);
  run_teacher_checks (name, m, r.vec, "tf_codes", r.vec, "tf_logits", "tf_mask",
      "tf_text_logits", "tf_text_mask", TOL_LM_LOGITS);
  g_free (in);
  g_free (outk);
  g_free (audio);
  g_free (uc);
  g_free (to);
  g_free (tl);
  g_free (dl);
free_refs:
  g_free (user);
  g_free (ref_in);
  g_free (ref_out);
  g_free (ref_text);
  g_free (ref_audio);
  g_free (ref_tl);
  g_free (ref_dl);
  g_free (ref_to);
  g_free (tnoise);
  g_free (anoise);
out:
  g_clear_error (&err);
  lm_gen_free (gen);
  if (m)
    lm_model_unref (m);
  if (r.vec)
    st_unref (r.vec);
  g_free (cfg_path);
  g_free (model_path);
  g_free (vec_path);
}

/* Teacher-forced LMModel.forward on B sequences: masks must be equal;
 * logits at valid positions within `tol`; and, as Kyutai's own test does,
 * the mean cross entropy per codebook over valid positions within 1e-6
 * relative of the reference's. */
static void
check_teacher (const char *name, LmModel *m, const int64_t *codes, int B, int T,
    const float *ref_logits, const guint8 *ref_mask, const float *ref_text,
    const guint8 *ref_text_mask, double tol)
{
  const LmConfig *c = lm_model_config (m);
  const int K = 1 + c->n_q, dq = c->dep_q;
  int *cb = g_new (int, (size_t) K *T);
  float *lg = g_new (float, (size_t) dq *T * c->card);
  float *tl = g_new (float, (size_t) T * c->text_card);
  guint8 *mk = g_new (guint8, (size_t) dq * T), *tm = g_new (guint8, T);
  double err = 0, peak = 0, worst_ce = 0;
  int mask_diff = 0;
  GError *e = NULL;
  /* per stream (text + dq audio): CE sums and counts, ours and reference */
  double *ce = g_new0 (double, 2 * (dq + 1));
  int *cnt = g_new0 (int, dq + 1);
  for (int b = 0; b < B; b++) {
    for (int i = 0; i < K * T; i++)
      cb[i] = (int) codes[(size_t) b * K * T + i];
    if (!lm_forward_teacher (m, cb, T, lg, mk, tl, tm, &e)) {
      report (FALSE, name, "teacher-forced", "%s", e->message);
      g_error_free (e);
      goto out;
    }
    for (int k = 0; k <= dq; k++) {
      const int n = k == 0 ? c->text_card : c->card;
      for (int t = 0; t < T; t++) {
        guint8 ours = k == 0 ? tm[t] : mk[(size_t) (k - 1) * T + t];
        guint8 ref = k == 0 ? ref_text_mask[(size_t) b * T + t]
                            : ref_mask[((size_t) b * dq + k - 1) * T + t];
        if (!!ours != !!ref)
          mask_diff++;
        if (!ref || !ours)
          continue;
        const float *a =
            k == 0 ? tl + (size_t) t * n : lg + ((size_t) (k - 1) * T + t) * n;
        const float *r = k == 0
            ? ref_text + ((size_t) b * T + t) * n
            : ref_logits + (((size_t) b * dq + k - 1) * T + t) * n;
        double pk;
        err = MAX (err, max_abs_diff (a, r, n, &pk));
        peak = MAX (peak, pk);
        /* cross entropy of the target under both sets of logits */
        int target = cb[k * T + t];
        for (int w = 0; w < 2; w++) {
          const float *x = w ? r : a;
          double mx = x[0], sum = 0;
          for (int j = 1; j < n; j++)
            mx = MAX (mx, x[j]);
          for (int j = 0; j < n; j++)
            sum += exp (x[j] - mx);
          ce[2 * k + w] += log (sum) + mx - x[target];
        }
        cnt[k]++;
      }
    }
  }
  for (int k = 0; k <= dq; k++)
    if (cnt[k])
      worst_ce = MAX (worst_ce,
          fabs (ce[2 * k] - ce[2 * k + 1]) / fabs (ce[2 * k + 1]));
  report (mask_diff == 0, name, "teacher-forced masks", "%d differ", mask_diff);
  report (err <= tol && isfinite (err), name, "teacher-forced logits",
      "max_abs_err=%.3e tol=%.1e (ref peak %.3e)", err, tol, peak);
  report (worst_ce <= 1e-6, name, "teacher-forced cross entropy",
      "worst relative delta per codebook %.3e (Kyutai's test: <= 1e-6)",
      worst_ce);
out:
  g_free (ce);
  g_free (cnt);
  g_free (cb);
  g_free (lg);
  g_free (tl);
  g_free (mk);
  g_free (tm);
}

static guint8 *
read_u8 (const char *who, StFile *f, const char *name, size_t want)
{
  int64_t *tmp = ref_read (who, f, name, want, FALSE, NULL);
  if (!tmp)
    return NULL;
  guint8 *out = g_new (guint8, want);
  for (size_t i = 0; i < want; i++)
    out[i] = tmp[i] != 0;
  g_free (tmp);
  return out;
}

/* Teacher-forced vectors stored as tf_codes / tf_logits / ... (our oracle)
 * or as Kyutai's test assets (test_lm_codes / test_lm_out). */
static void
run_teacher_checks (const char *name, LmModel *m, StFile *codes_f,
    const char *codes_name, StFile *out_f, const char *logits_name,
    const char *mask_name, const char *text_name, const char *text_mask_name,
    double tol)
{
  const LmConfig *c = lm_model_config (m);
  const StTensor *ct = NULL;
  int64_t *codes = ref_read (name, codes_f, codes_name, 0, FALSE, &ct);
  if (!codes)
    return;
  if (ct->ndim != 3 || ct->shape[1] != 1 + c->n_q) {
    report (FALSE, name, "teacher-forced", "%s has an unexpected shape",
        codes_name);
    g_free (codes);
    return;
  }
  const int B = (int) ct->shape[0], T = (int) ct->shape[2], dq = c->dep_q;
  float *lg = ref_read (name, out_f, logits_name, (size_t) B * dq * T * c->card,
      TRUE, NULL);
  guint8 *mk = read_u8 (name, out_f, mask_name, (size_t) B * dq * T);
  float *tl = ref_read (name, out_f, text_name, (size_t) B * T * c->text_card,
      TRUE, NULL);
  guint8 *tm = read_u8 (name, out_f, text_mask_name, (size_t) B * T);
  if (!lg || !mk || !tl || !tm)
    report (FALSE, name, "teacher-forced",
        "reference outputs missing or of the wrong size");
  else
    check_teacher (name, m, codes, B, T, lg, mk, tl, tm, tol);
  g_free (codes);
  g_free (lg);
  g_free (mk);
  g_free (tl);
  g_free (tm);
}

/* Kyutai's own LM golden test (moshi/tests/assets). */
static void
run_kyutai_lm_test (const char *dir, const char *name)
{
  GError *err = NULL;
  gchar *cfg_path = g_build_filename (dir, "config.json", NULL);
  gchar *model_path = g_build_filename (dir, "test_lm_model.safetensors", NULL);
  gchar *codes_path = g_build_filename (dir, "test_lm_codes.safetensors", NULL);
  gchar *out_path = g_build_filename (dir, "test_lm_out.safetensors", NULL);
  LmConfig cfg;
  LmModel *m = NULL;
  StFile *cf = NULL, *of = NULL;
  if (!lm_config_load_json (&cfg, cfg_path, &err)
      || !(m = lm_model_load (model_path, &cfg, MOSHI_WEIGHTS_F32, &err))
      || !(cf = st_open (codes_path, &err))
      || !(of = st_open (out_path, &err))) {
    report (FALSE, name, "load", "%s", err->message);
    goto out;
  }
  report (TRUE, name, "load", "%s", model_path);
  run_teacher_checks (name, m, cf, "codes", of, "logits", "mask", "text_logits",
      "text_mask", 1e-5);
out:
  g_clear_error (&err);
  if (cf)
    st_unref (cf);
  if (of)
    st_unref (of);
  if (m)
    lm_model_unref (m);
  g_free (cfg_path);
  g_free (model_path);
  g_free (codes_path);
  g_free (out_path);
}

/* -------------------------------------------------------- MoshiVis --- */

#define TOL_VIS_LOGITS 1e-4
#define TOL_VIS_GATES 1e-5
#define TOL_VIS_UPDATES 1e-4

/* The tiny MoshiVis case describes its LM in its own words ("lm" object of
 * config.json); the numbers map onto Kyutai's LM configuration. */
static gboolean
moshivis_lm_config (const char *path, LmConfig *cfg, GError **error)
{
  MJsonValue *root = mjson_parse_object_file (path, error);
  if (!root)
    return FALSE;
  const MJsonValue *lm = mjson_get (root, "lm");
  const char *keys[] = { "dim", "num_heads", "num_layers", "hidden_scale",
    "context", "max_period", "text_card", "n_q", "audio_card" };
  double v[G_N_ELEMENTS (keys)];
  for (size_t i = 0; i < G_N_ELEMENTS (keys); i++) {
    const MJsonValue *x = lm ? mjson_get (lm, keys[i]) : NULL;
    if (!x || mjson_type (x) != MJSON_NUMBER) {
      g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_CONFIG,
          "%s: lm.%s missing or not a number", path, keys[i]);
      mjson_free (root);
      return FALSE;
    }
    v[i] = mjson_number (x);
  }
  mjson_free (root);
  lm_config_default (cfg);
  cfg->dim = (int) v[0];
  cfg->num_heads = (int) v[1];
  cfg->num_layers = (int) v[2];
  cfg->hidden_scale = v[3];
  cfg->context = (int) v[4];
  cfg->max_period = v[5];
  cfg->text_card = (int) v[6];
  cfg->n_q = (int) v[7];
  cfg->card = (int) v[8];
  cfg->dep_q = 0; /* the case has no depformer */
  memset (cfg->delays, 0, sizeof cfg->delays);
  return TRUE;
}

/* The image keys (stored transposed per head) and values, computed once. */
static void
check_xa_kv (const char *name, StFile *vec, const CrossAttentionMemory *mem,
    int H, int N, int d)
{
  const int hd = d / H;
  float *k = g_new (float, (size_t) N *d);
  for (int h = 0; h < H; h++)
    for (int c = 0; c < hd; c++)
      for (int j = 0; j < N; j++)
        k[(size_t) j * d + h * hd + c] = mem->kT[((size_t) h * hd + c) * N + j];
  const char *names[2] = { "xa_k", "xa_v" };
  const float *ours[2] = { k, mem->v };
  for (int i = 0; i < 2; i++) {
    float *ref = ref_read (name, vec, names[i], (size_t) N * d, TRUE, NULL);
    if (!ref) {
      report (FALSE, name, names[i], "missing from the vectors");
      continue;
    }
    double peak;
    double e = max_err_f32 (ours[i], ref, (size_t) N * d, &peak);
    report (e <= TOL_VIS_UPDATES, name, names[i], "max abs err %.2e (tol %.0e)",
        e, TOL_VIS_UPDATES);
    g_free (ref);
  }
  g_free (k);
}

#define TOL_VIS_TOWER 1e-4
#define TOL_VIS_TOWER_INTERP 2e-4

static void
compare_vis (const char *name, StFile *vec, const char *ref_name,
    const float *ours, size_t n, double tol)
{
  float *ref = ref_read (name, vec, ref_name, n, TRUE, NULL);
  if (!ref) {
    report (FALSE, name, ref_name, "missing from the vectors or mis-sized");
    return;
  }
  double peak;
  double e = max_err_f32 (ours, ref, n, &peak);
  report (e <= tol, name, ref_name, "max abs err %.2e (tol %.0e, peak %.2f)", e,
      tol, peak);
  g_free (ref);
}

/* The image side from the case's uint8 image: pixel values, the SigLIP
 * tower (before and after post_layernorm; the 84x84 input exercises the
 * position-table interpolation) and the adapter.  Returns our adapter
 * output [tokens][dim] (NULL on failure) for the LM checks. */
static float *
run_moshivis_image (const char *name, const char *cfg_path,
    const char *model_path, StFile *vec, int *tokens_out)
{
  GError *err = NULL;
  MoshiVisImageConfig icfg;
  moshivis_image_config_default (&icfg);
  MoshiVisImageEncoder *enc = NULL;
  float *xa = NULL;
  if (!moshivis_image_config_load_json (&icfg, cfg_path, &err)
      || !(enc = moshivis_image_encoder_load (model_path, &icfg, &err))) {
    report (FALSE, name, "image encoder", "%s", err->message);
    g_clear_error (&err);
    return NULL;
  }
  const SiglipModel *tower = moshivis_image_encoder_tower (enc);
  const int hidden = icfg.vision.hidden_size;
  const int D = moshivis_image_encoder_dim (enc);
  const struct {
    const char *image, *pixels, *out, *pre;
    double tol;
  } sizes[] = {
    { "image_u8", "pixel_values", "vision_out", "vision_pre_postln",
        TOL_VIS_TOWER },
    { "image_u8_84", "pixel_values_84", "vision_out_84", NULL,
        TOL_VIS_TOWER_INTERP },
  };
  for (size_t i = 0; i < G_N_ELEMENTS (sizes); i++) {
    const StTensor *ti = st_find (vec, sizes[i].image);
    if (!ti || ti->dtype != ST_U8 || ti->ndim != 3 || ti->shape[2] != 3) {
      if (i == 0)
        report (FALSE, name, sizes[i].image, "missing or not U8 [H, W, 3]");
      continue;
    }
    const int H = (int) ti->shape[0], W = (int) ti->shape[1];
    const uint8_t *rgb = ti->data;
    const int n = moshivis_image_encoder_tokens (enc, W, H);
    float *pix = g_new (float, (size_t) 3 * H * W);
    float *out = g_new (float, (size_t) n *hidden);
    float *pre = g_new (float, (size_t) n *hidden);
    if (siglip_preprocess (&icfg.vision, rgb, W, H, 3 * W, pix, &err)
        && siglip_forward (tower, rgb, W, H, 3 * W, out, pre, &err)) {
      compare_vis (name, vec, sizes[i].pixels, pix, (size_t) 3 * H * W, 1e-6);
      compare_vis (name, vec, sizes[i].out, out, (size_t) n * hidden,
          sizes[i].tol);
      if (sizes[i].pre)
        compare_vis (name, vec, sizes[i].pre, pre, (size_t) n * hidden,
            sizes[i].tol);
    } else {
      report (FALSE, name, sizes[i].out, "%s", err->message);
      g_clear_error (&err);
    }
    if (i == 0) {
      xa = g_new (float, (size_t) n *D);
      if (moshivis_image_encoder_encode (enc, rgb, W, H, 3 * W, xa, &err)) {
        compare_vis (name, vec, "xa_src", xa, (size_t) n * D, TOL_VIS_TOWER);
        *tokens_out = n;
      } else {
        report (FALSE, name, "xa_src", "%s", err->message);
        g_clear_error (&err);
        g_clear_pointer (&xa, g_free);
      }
    }
    g_free (pix);
    g_free (out);
    g_free (pre);
  }
  moshivis_image_encoder_unref (enc);
  return xa;
}

/* Teacher-fed steps (the case's tokens, no delays) with the image memory
 * from the reference adapter output; compares logits, gates, updates and
 * gate summaries for: no image, image from step 0, image from xa_start. */
static void
run_moshivis_lm (const char *name, LmModel *m, StFile *vec,
    const float *our_img, int our_tokens)
{
  const LmConfig *cfg = lm_model_config (m);
  const int K = 1 + cfg->n_q, d = cfg->dim, L = cfg->num_layers;
  const StTensor *tt = st_find (vec, "tokens");
  const StTensor *ts = st_find (vec, "xa_src");
  if (!tt || tt->ndim != 2 || tt->shape[1] != K || !ts || ts->ndim != 3
      || ts->shape[2] != d) {
    report (FALSE, name, "vectors",
        "tokens [T, %d] or xa_src [1, N, %d] "
        "missing or mis-shaped",
        K, d);
    return;
  }
  const int T = (int) tt->shape[0], N = (int) ts->shape[1];
  int64_t *tokens = ref_read (name, vec, "tokens", (size_t) T * K, FALSE, NULL);
  /* End to end: the image memory is our own encoder's output when it
   * worked (checked against xa_src above), else the reference's. */
  float *img = ref_read (name, vec, "xa_src", (size_t) N * d, TRUE, NULL);
  if (img && our_img && our_tokens == N)
    memcpy (img, our_img, sizeof (float) * N * d);
  float *logits = g_new (float, (size_t) T * cfg->text_card);
  float *gates = g_new (float, (size_t) T *L *d);
  float *updates = g_new (float, (size_t) T *L *d);
  float *summary = g_new (float, T);
  float *out = g_new (float, d);
  int *in = g_new (int, K);
  LmState s;
  if (!tokens || !img || !lm_state_init (&s, m)) {
    report (FALSE, name, "setup", "cannot read the vectors or make a state");
    goto out;
  }
  const struct {
    const char *label, *logits, *summary, *gates, *updates;
    gboolean image;
    int xa_start;
  } runs[] = {
    { "no image", "logits_noimg", "gate_summary_noimg", NULL, NULL, FALSE, 0 },
    { "image", "logits_img", "gate_summary_img", "gates_img", "xa_update_img",
        TRUE, 0 },
    { "image, xa_start 3", "logits_img_xastart3", "gate_summary_img_xastart3",
        NULL, NULL, TRUE, 3 },
  };
  for (size_t r = 0; r < G_N_ELEMENTS (runs); r++) {
    lm_state_reset (&s, m);
    LmImage *image =
        runs[r].image ? lm_image_new (m, img, N, d, 1, NULL) : NULL;
    if ((runs[r].image && !image)
        || !transformer_set_cross_memory (&m->transformer, &s.main,
            image ? lm_image_memory (image) : NULL)) {
      report (FALSE, name, runs[r].label, "cannot set the image memory");
      lm_image_unref (image);
      continue;
    }
    lm_image_unref (image);
    if (runs[r].image && runs[r].xa_start == 0)
      check_xa_kv (name, vec, s.main.xa_mem, cfg->num_heads, N, d);
    int argmax_bad = -1;
    for (int t = 0; t < T; t++) {
      for (int k = 0; k < K; k++)
        in[k] = (int) tokens[t * K + k];
      s.main.xa_enabled = t >= runs[r].xa_start;
      s.main.xa_trace_gates = gates + (size_t) t * L * d;
      s.main.xa_trace_updates = updates + (size_t) t * L * d;
      memset (s.main.xa_trace_gates, 0, sizeof (float) * L * d);
      memset (s.main.xa_trace_updates, 0, sizeof (float) * L * d);
      lm_forward_main (m, &s, in, out, logits + (size_t) t * cfg->text_card);
      summary[t] = s.main.xa_gate_summary;
    }
    s.main.xa_trace_gates = s.main.xa_trace_updates = NULL;
    float *ref = ref_read (name, vec, runs[r].logits,
        (size_t) T * cfg->text_card, TRUE, NULL);
    if (ref) {
      double peak;
      double e = max_err_f32 (logits, ref, (size_t) T * cfg->text_card, &peak);
      for (int t = 0; t < T && argmax_bad < 0; t++) {
        const float *a = logits + (size_t) t * cfg->text_card;
        const float *b = ref + (size_t) t * cfg->text_card;
        int ia = 0, ib = 0;
        for (int j = 1; j < cfg->text_card; j++) {
          if (a[j] > a[ia])
            ia = j;
          if (b[j] > b[ib])
            ib = j;
        }
        if (ia != ib)
          argmax_bad = t;
      }
      gchar *check = g_strdup_printf ("logits (%s)", runs[r].label);
      report (e <= TOL_VIS_LOGITS && argmax_bad < 0, name, check,
          "max abs err %.2e (tol %.0e, peak %.2f), argmax %s", e,
          TOL_VIS_LOGITS, peak, argmax_bad < 0 ? "equal" : "differs");
      g_free (check);
      g_free (ref);
    } else {
      report (FALSE, name, runs[r].logits, "missing from the vectors");
    }
    ref = ref_read (name, vec, runs[r].summary, T, TRUE, NULL);
    if (ref) {
      double peak;
      double e = max_err_f32 (summary, ref, T, &peak);
      gchar *check = g_strdup_printf ("gate summary (%s)", runs[r].label);
      report (e <= TOL_VIS_GATES, name, check, "max abs err %.2e (tol %.0e)", e,
          TOL_VIS_GATES);
      g_free (check);
      g_free (ref);
    }
    const char *tn[2] = { runs[r].gates, runs[r].updates };
    const float *ours[2] = { gates, updates };
    const double tol[2] = { TOL_VIS_GATES, TOL_VIS_UPDATES };
    for (int i = 0; i < 2; i++) {
      if (!tn[i])
        continue;
      ref = ref_read (name, vec, tn[i], (size_t) T * L * d, TRUE, NULL);
      if (!ref) {
        report (FALSE, name, tn[i], "missing from the vectors");
        continue;
      }
      double peak;
      double e = max_err_f32 (ours[i], ref, (size_t) T * L * d, &peak);
      report (e <= tol[i], name, tn[i], "max abs err %.2e (tol %.0e)", e,
          tol[i]);
      g_free (ref);
    }
  }
  lm_state_clear (&s);
out:
  g_free (tokens);
  g_free (img);
  g_free (logits);
  g_free (gates);
  g_free (updates);
  g_free (summary);
  g_free (out);
  g_free (in);
}

static void
run_moshivis_case (const char *dir, const char *name)
{
  GError *err = NULL;
  gchar *cfg_path = g_build_filename (dir, "config.json", NULL);
  gchar *model_path = g_build_filename (dir, "model.safetensors", NULL);
  gchar *vec_path = g_build_filename (dir, "vectors.safetensors", NULL);
  LmConfig cfg;
  LmModel *m = NULL;
  StFile *vec = NULL;
  if (!moshivis_lm_config (cfg_path, &cfg, &err)
      || !(m = lm_model_load (model_path, &cfg, MOSHI_WEIGHTS_F32, &err))
      || !(vec = st_open (vec_path, &err))) {
    report (FALSE, name, "load", "%s", err->message);
    g_clear_error (&err);
    goto out;
  }
  report (lm_model_has_cross_attention (m), name, "cross-attention",
      "%s the shared gated cross-attention",
      lm_model_has_cross_attention (m) ? "loaded" : "did not find");
  int tokens = 0;
  float *our_img =
      run_moshivis_image (name, cfg_path, model_path, vec, &tokens);
  if (lm_model_has_cross_attention (m))
    run_moshivis_lm (name, m, vec, our_img, tokens);
  g_free (our_img);
out:
  if (vec)
    st_unref (vec);
  if (m)
    lm_model_unref (m);
  g_free (cfg_path);
  g_free (model_path);
  g_free (vec_path);
}

static void
run_case (const char *dir)
{
  gchar *base = g_path_get_basename (dir);
  gchar *cfg_path = g_build_filename (dir, "config.json", NULL);
  gchar *text = NULL;
  if (!g_file_get_contents (cfg_path, &text, NULL, NULL)) {
    report (FALSE, base, "config", "cannot read %s", cfg_path);
  } else if (strstr (text, "\"vision\"") && strstr (text, "\"adapter\"")) {
    run_moshivis_case (dir, base);
  } else if (strstr (text, "\"seanet\"")) {
    run_mimi_case (dir, base);
  } else if (strstr (text, "\"dep_q\"")
      && g_file_test (dir, G_FILE_TEST_IS_DIR)) {
    gchar *vec = g_build_filename (dir, "vectors.safetensors", NULL);
    gchar *kt = g_build_filename (dir, "test_lm_out.safetensors", NULL);
    if (g_file_test (vec, G_FILE_TEST_EXISTS))
      run_lm_case (dir, base);
    else if (g_file_test (kt, G_FILE_TEST_EXISTS))
      run_kyutai_lm_test (dir, base);
    else
      report (FALSE, base, "kind", "%s: an LM case without vectors", dir);
    g_free (vec);
    g_free (kt);
  } else {
    report (FALSE, base, "kind",
        "%s describes a model this runner cannot check yet (neither Mimi nor "
        "LM)",
        cfg_path);
  }
  g_free (text);
  g_free (cfg_path);
  g_free (base);
}

int
main (int argc, char **argv)
{
  if (argc < 2) {
    fprintf (stderr, "usage: %s CASE_DIR [CASE_DIR...]\n", argv[0]);
    return 2;
  }
  for (int i = 1; i < argc; i++)
    run_case (argv[i]);
  printf ("%d passed, %d failed\n", n_passed, n_failed);
  return n_failed ? 1 : 0;
}
