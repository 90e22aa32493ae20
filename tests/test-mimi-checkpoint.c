/* Kyutai's published Mimi checkpoint layout loads with the default
 * architecture, no config.json: a file with exactly the checkpoint's tensor
 * names, dtypes and shapes (tests/data/mimi-checkpoint-layout.txt, dumped
 * from Kyutai's own code) is written with random values and loaded; then one
 * tensor missing, and one with a wrong shape, must each be named in the
 * error.  No real weights are needed: the layout is what must match. */
#include <glib.h>
#include <glib/gstdio.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "mimi.h"
#include "model-error.h"

typedef struct {
  gchar *name;
  int ndim;
  gint64 shape[8];
  gint64 numel;
} Entry;

static GPtrArray *
read_layout (void)
{
  const char *data = g_getenv ("MOSHI_TEST_DATA");
  gchar *path = g_build_filename (data ? data : MOSHI_TEST_DATA_DIR,
      "mimi-checkpoint-layout.txt", NULL);
  gchar *text = NULL;
  g_assert_true (g_file_get_contents (path, &text, NULL, NULL));
  GPtrArray *entries = g_ptr_array_new ();
  gchar **lines = g_strsplit (text, "\n", -1);
  for (gchar **l = lines; *l; l++) {
    if (**l == '#' || **l == '\0')
      continue;
    gchar **f = g_strsplit (*l, " ", -1);
    Entry *e = g_new0 (Entry, 1);
    e->name = g_strdup (f[0]);
    g_assert_cmpstr (f[1], ==, "float32");
    e->numel = 1;
    for (int i = 2; f[i]; i++) {
      e->shape[e->ndim++] = g_ascii_strtoll (f[i], NULL, 10);
      e->numel *= e->shape[e->ndim - 1];
    }
    g_ptr_array_add (entries, e);
    g_strfreev (f);
  }
  g_strfreev (lines);
  g_free (text);
  g_free (path);
  return entries;
}

/* Writes a float32 safetensors file of the layout; `skip` is left out and
 * `reshape` gets its first dimension + 1. */
static void
write_checkpoint (const char *path, GPtrArray *entries, const char *skip,
    const char *reshape)
{
  GString *hdr = g_string_new ("{");
  gint64 off = 0;
  for (guint i = 0; i < entries->len; i++) {
    Entry *e = entries->pdata[i];
    if (skip && !strcmp (e->name, skip))
      continue;
    gint64 numel = e->numel;
    GString *shape = g_string_new ("");
    for (int d = 0; d < e->ndim; d++) {
      gint64 v =
          e->shape[d] + (d == 0 && reshape && !strcmp (e->name, reshape));
      g_string_append_printf (shape, "%s%" G_GINT64_FORMAT, d ? "," : "", v);
      if (d == 0 && v != e->shape[0])
        numel = numel / e->shape[0] * v;
    }
    g_string_append_printf (hdr,
        "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[%s],"
        "\"data_offsets\":[%" G_GINT64_FORMAT ",%" G_GINT64_FORMAT "]}",
        hdr->len > 1 ? "," : "", e->name, shape->str, off, off + 4 * numel);
    off += 4 * numel;
    g_string_free (shape, TRUE);
  }
  g_string_append (hdr, "}");
  while (hdr->len % 8)
    g_string_append_c (hdr, ' ');
  FILE *fp = fopen (path, "wb");
  g_assert_nonnull (fp);
  guint64 n = hdr->len;
  fwrite (&n, 8, 1, fp);
  fwrite (hdr->str, 1, hdr->len, fp);
  /* Small random values; usage counts of 1 keep codebooks finite. */
  guint32 s = 12345;
  float buf[4096];
  for (guint i = 0; i < entries->len; i++) {
    Entry *e = entries->pdata[i];
    if (skip && !strcmp (e->name, skip))
      continue;
    gint64 numel = e->numel;
    if (reshape && !strcmp (e->name, reshape))
      numel = numel / e->shape[0] * (e->shape[0] + 1);
    gboolean ones = g_str_has_suffix (e->name, "cluster_usage")
        || g_str_has_suffix (e->name, "_initialized");
    for (gint64 done = 0; done < numel;) {
      int k = (int) MIN (numel - done, 4096);
      for (int j = 0; j < k; j++) {
        s = s * 1664525u + 1013904223u;
        buf[j] = ones ? 1.0f : ((s >> 9) / 8388608.0f - 0.5f) * 0.05f;
      }
      fwrite (buf, 4, k, fp);
      done += k;
    }
  }
  fclose (fp);
  g_string_free (hdr, TRUE);
}

static void
entry_free (gpointer p)
{
  Entry *e = p;
  g_free (e->name);
  g_free (e);
}

static void
test_checkpoint_layout (void)
{
  GPtrArray *entries = read_layout ();
  g_ptr_array_set_free_func (entries, entry_free);
  g_assert_cmpuint (entries->len, ==, 318);
  gchar *dir = g_dir_make_tmp ("mimi-ckpt-XXXXXX", NULL);
  gchar *path = g_build_filename (dir,
      "tokenizer-e351c8d8-checkpoint125.safetensors", NULL);
  GError *err = NULL;

  write_checkpoint (path, entries, NULL, NULL);
  MimiModel *m = mimi_model_load (path, &err);
  g_assert_no_error (err);
  const MimiConfig *cfg = mimi_model_config (m);
  g_assert_cmpint (cfg->q_n_q, ==, 32);
  g_assert_cmpint (cfg->q_bins, ==, 2048);
  g_assert_cmpint (cfg->dimension, ==, 512);
  /* It streams: codes in range, finite audio. */
  MimiEncoder *e = mimi_encoder_new (m, 32, &err);
  MimiDecoder *d = mimi_decoder_new (m, 8, &err);
  g_assert_no_error (err);
  float pcm[MIMI_FRAME_SIZE], out[MIMI_FRAME_SIZE];
  uint16_t codes[32];
  for (int f = 0; f < 3; f++) {
    for (int i = 0; i < MIMI_FRAME_SIZE; i++)
      pcm[i] = 0.3f * sinf (0.05f * (f * MIMI_FRAME_SIZE + i));
    mimi_encode_frame (e, pcm, codes);
    for (int q = 0; q < 32; q++)
      g_assert_cmpuint (codes[q], <, 2048);
    g_assert_true (mimi_decode_frame (d, codes, out, &err));
    for (int i = 0; i < MIMI_FRAME_SIZE; i++)
      g_assert_true (isfinite (out[i]));
  }
  mimi_encoder_free (e);
  mimi_decoder_free (d);
  mimi_model_unref (m);

  /* One tensor missing; one with a wrong shape: each named. */
  const char *victim =
      "decoder_transformer.transformer.layers.7.linear2.weight";
  write_checkpoint (path, entries, victim, NULL);
  g_assert_null (mimi_model_load (path, &err));
  g_assert_error (err, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_MISSING);
  g_assert_nonnull (strstr (err->message, victim));
  g_clear_error (&err);
  victim = "quantizer.rvq_rest.vq.layers.30._codebook.embedding_sum";
  write_checkpoint (path, entries, NULL, victim);
  g_assert_null (mimi_model_load (path, &err));
  g_assert_error (err, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_SHAPE);
  g_assert_nonnull (strstr (err->message, victim));
  g_assert_nonnull (strstr (err->message, "2049"));
  g_clear_error (&err);

  g_unlink (path);
  g_rmdir (dir);
  g_free (path);
  g_free (dir);
  g_ptr_array_unref (entries);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/mimi/checkpoint-layout", test_checkpoint_layout);
  return g_test_run ();
}
