/* Builds the tiny MoshiVis *dialog* model used by the element, pipeline and
 * server tests: the conformance case moshivis-tiny has a vision side and a
 * cross-attention but no depformer (it cannot speak), and lm-tiny speaks but
 * cannot see.  Both have a 64-wide, 4-head, 2-layer temporal transformer,
 * so lm-tiny's weights plus moshivis-tiny's image tower, adapter,
 * norm_cross and gated cross-attention make a complete model.
 *
 *   make-moshivis-dialog-tiny LM_TINY_DIR MOSHIVIS_TINY_DIR CONFIG OUT_DIR
 *
 * writes OUT_DIR/{model.safetensors, config.json (copied from CONFIG),
 * tokenizer.model (lm-tiny's)}.  Random-weight gates barely open
 * (sigmoid(s - 4) ~ 0.02), so the second gate layer is scaled up
 * (GATE_GAIN) for the image to visibly steer this tiny model's words: the
 * tests check that it does.  Nothing else is changed. */
#include <glib.h>
#include <stdio.h>
#include <string.h>

#include "safetensors.h"

#define GATE_GAIN 40.0f

typedef struct {
  gchar *name;
  const StTensor *t;
  StFile *from;
  gboolean scale;
} Entry;

static void
add_file (GPtrArray *out, StFile *f, gboolean vision)
{
  for (size_t i = 0; i < st_count (f); i++) {
    const StTensor *t = st_index (f, i);
    const char *n = t->name;
    gchar *name = NULL;
    if (!vision) {
      name = g_strdup (n);
    } else if (g_str_has_prefix (n, "image_prefix.")) {
      name = g_strdup (n);
    } else if (g_str_has_prefix (n, "llm.transformer.")
        && (strstr (n, ".cross_attention.") || strstr (n, ".norm_cross."))) {
      /* lm-tiny uses moshi's names: no "llm." prefix. */
      name = g_strdup (n + strlen ("llm."));
    }
    if (!name)
      continue;
    Entry *e = g_new0 (Entry, 1);
    e->name = name;
    e->t = t;
    e->from = f;
    e->scale = vision && g_str_has_suffix (n, ".gate.alpha.2.weight");
    g_ptr_array_add (out, e);
  }
}

static gboolean
write_model (GPtrArray *entries, const char *path, GError **error)
{
  GString *hdr = g_string_new ("{");
  size_t off = 0;
  for (guint i = 0; i < entries->len; i++) {
    Entry *e = entries->pdata[i];
    if (e->t->dtype != ST_F32) {
      g_set_error (error, G_FILE_ERROR, G_FILE_ERROR_INVAL, "%s is not F32",
          e->name);
      g_string_free (hdr, TRUE);
      return FALSE;
    }
    g_string_append_printf (hdr, "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[",
        i ? "," : "", e->name);
    for (int d = 0; d < e->t->ndim; d++)
      g_string_append_printf (hdr, "%s%" G_GINT64_FORMAT, d ? "," : "",
          e->t->shape[d]);
    g_string_append_printf (hdr, "],\"data_offsets\":[%zu,%zu]}", off,
        off + e->t->nbytes);
    off += e->t->nbytes;
  }
  g_string_append (hdr, "}");
  while (hdr->len % 8)
    g_string_append_c (hdr, ' ');
  GByteArray *buf = g_byte_array_new ();
  guint64 n = GUINT64_TO_LE (hdr->len);
  g_byte_array_append (buf, (const guint8 *) &n, 8);
  g_byte_array_append (buf, (const guint8 *) hdr->str, hdr->len);
  for (guint i = 0; i < entries->len; i++) {
    Entry *e = entries->pdata[i];
    const float *src = e->t->data;
    for (int64_t j = 0; j < e->t->numel; j++) {
      float v;
      memcpy (&v, src + j, sizeof v);
      if (e->scale)
        v *= GATE_GAIN;
      g_byte_array_append (buf, (const guint8 *) &v, sizeof v);
    }
  }
  gboolean ok =
      g_file_set_contents (path, (const gchar *) buf->data, buf->len, error);
  g_byte_array_unref (buf);
  g_string_free (hdr, TRUE);
  return ok;
}

static gboolean
copy_file (const char *from, const char *to, GError **error)
{
  gchar *text;
  gsize len;
  if (!g_file_get_contents (from, &text, &len, error))
    return FALSE;
  gboolean ok = g_file_set_contents (to, text, len, error);
  g_free (text);
  return ok;
}

static void
entry_free (gpointer p)
{
  Entry *e = p;
  g_free (e->name);
  g_free (e);
}

int
main (int argc, char **argv)
{
  if (argc != 5) {
    fprintf (stderr, "usage: %s LM_TINY_DIR MOSHIVIS_TINY_DIR CONFIG OUT_DIR\n",
        argv[0]);
    return 2;
  }
  GError *err = NULL;
  gchar *lm_path = g_build_filename (argv[1], "model.safetensors", NULL);
  gchar *vis_path = g_build_filename (argv[2], "model.safetensors", NULL);
  gchar *tok_in = g_build_filename (argv[1], "tokenizer.model", NULL);
  gchar *model_out = g_build_filename (argv[4], "model.safetensors", NULL);
  gchar *cfg_out = g_build_filename (argv[4], "config.json", NULL);
  gchar *tok_out = g_build_filename (argv[4], "tokenizer.model", NULL);
  GPtrArray *entries = g_ptr_array_new_with_free_func (entry_free);
  StFile *lm = NULL, *vis = NULL;
  int rc = 1;
  g_mkdir_with_parents (argv[4], 0755);
  if (!(lm = st_open (lm_path, &err)) || !(vis = st_open (vis_path, &err)))
    goto out;
  add_file (entries, lm, FALSE);
  add_file (entries, vis, TRUE);
  if (write_model (entries, model_out, &err)
      && copy_file (argv[3], cfg_out, &err)
      && copy_file (tok_in, tok_out, &err))
    rc = 0;
out:
  if (err)
    fprintf (stderr, "%s: %s\n", argv[0], err->message);
  g_clear_error (&err);
  g_ptr_array_unref (entries);
  if (lm)
    st_unref (lm);
  if (vis)
    st_unref (vis);
  g_free (lm_path);
  g_free (vis_path);
  g_free (tok_in);
  g_free (model_out);
  g_free (cfg_out);
  g_free (tok_out);
  return rc;
}
