/* moshi-server: default model lookup, as pipelines/env.sh does it. */
#include "models.h"

#include <gio/gio.h>

#ifndef MOSHI_SOURCE_ROOT
#define MOSHI_SOURCE_ROOT "."
#endif
#ifndef MOSHI_BUILD_ROOT
#define MOSHI_BUILD_ROOT "build"
#endif

static gchar *
hub_dir (void)
{
  const gchar *hub = g_getenv ("HF_HUB_CACHE"), *home = g_getenv ("HF_HOME");

  if (hub && *hub)
    return g_strdup (hub);
  if (home && *home)
    return g_build_filename (home, "hub", NULL);
  return g_build_filename (g_get_home_dir (), ".cache", "huggingface", "hub",
      NULL);
}

/* First snapshot of repo (under the hub cache) holding one of files. */
static gchar *
find_in_snapshots (const gchar *hub, const gchar *repo,
    const gchar *const *files, gboolean want_folder)
{
  gchar *snaps = g_strdup_printf ("%s/models--kyutai--%s/snapshots", hub, repo);
  GDir *dir = g_dir_open (snaps, 0, NULL);
  const gchar *name;
  gchar *found = NULL;

  while (dir && !found && (name = g_dir_read_name (dir))) {
    for (guint i = 0; files[i] && !found; i++) {
      gchar *f = g_build_filename (snaps, name, files[i], NULL);

      if (g_file_test (f, G_FILE_TEST_EXISTS))
        found =
            want_folder ? g_build_filename (snaps, name, NULL) : g_strdup (f);
      g_free (f);
    }
  }
  if (dir)
    g_dir_close (dir);
  g_free (snaps);
  return found;
}

gboolean
ms_models_find (gboolean vision, gchar **lm, gchar **mimi, gboolean *tiny,
    GError **error)
{
  static const gchar *vis_repos[] = { "moshika-vis-pytorch-bf16", NULL };
  static const gchar *vis_files[] = { "model.safetensors", NULL };
  static const gchar *lm_repos[] = { "moshiko-pytorch-bf16",
    "moshika-pytorch-bf16", "moshiko-pytorch-q8", "moshika-pytorch-q8", NULL };
  static const gchar *lm_files[] = { "model.safetensors", "config.json", NULL };
  static const gchar *mimi_repos[] = { "moshiko-pytorch-bf16",
    "moshika-pytorch-bf16", "mimi", NULL };
  static const gchar *mimi_files[] = {
    "tokenizer-e351c8d8-checkpoint125.safetensors",
    "mimi-pytorch-e351c8d8@125.safetensors", "model.safetensors", NULL
  };
  gchar *hub = hub_dir ();

  *tiny = FALSE;
  if (!*lm && g_getenv ("MOSHI_MODEL") && *g_getenv ("MOSHI_MODEL"))
    *lm = g_strdup (g_getenv ("MOSHI_MODEL"));
  if (!*mimi && g_getenv ("MIMI_MODEL") && *g_getenv ("MIMI_MODEL"))
    *mimi = g_strdup (g_getenv ("MIMI_MODEL"));
  for (guint i = 0; vision && !*lm && vis_repos[i]; i++)
    *lm = find_in_snapshots (hub, vis_repos[i], vis_files, TRUE);
  if (vision && !*lm) {
    *lm = g_build_filename (MOSHI_BUILD_ROOT, "tests", "moshivis-dialog-tiny",
        NULL);
    *tiny = TRUE;
    g_printerr (">> Kyutai's MoshiVis weights were not found in %s.\n"
                ">> Using the tiny RANDOM-WEIGHT MoshiVis (%s): it looks at "
                "the pictures\n>> (its gates open) but what it says is NOT "
                "meaningful.  For the real model:\n"
                ">>     huggingface-cli download "
                "kyutai/moshika-vis-pytorch-bf16\n",
        hub, *lm);
    if (!*mimi) {
      *mimi = g_build_filename (MOSHI_SOURCE_ROOT, "tests", "data",
          "conformance", "mimi-tiny", NULL);
      g_printerr (">> Pairing it with the tiny random-weight Mimi: %s\n",
          *mimi);
    }
  }
  for (guint i = 0; !*lm && lm_repos[i]; i++)
    *lm = find_in_snapshots (hub, lm_repos[i], lm_files, TRUE);
  if (!*lm) {
    *lm = g_build_filename (MOSHI_SOURCE_ROOT, "tests", "data", "conformance",
        "lm-tiny", NULL);
    *tiny = TRUE;
    g_printerr (
        ">> "
        "******************************************************************\n"
        ">> Kyutai's Moshi weights were not found in %s.\n"
        ">> Using the tiny RANDOM-WEIGHT test model (%s):\n"
        ">> the server runs exactly as it would with Moshi, but the replies\n"
        ">> (voice and text) are NOT meaningful.  To talk to Moshi:\n"
        ">>     huggingface-cli download kyutai/moshiko-pytorch-bf16\n"
        ">> (or pass --model / set MOSHI_MODEL)\n"
        ">> "
        "******************************************************************\n",
        hub, *lm);
    if (!*mimi) {
      /* The tiny LM's codebooks have 64 entries, as the tiny Mimi's. */
      *mimi = g_build_filename (MOSHI_SOURCE_ROOT, "tests", "data",
          "conformance", "mimi-tiny", NULL);
      g_printerr (">> Pairing it with the tiny random-weight Mimi: %s\n",
          *mimi);
    }
  }
  for (guint i = 0; !*mimi && mimi_repos[i]; i++)
    *mimi = find_in_snapshots (hub, mimi_repos[i], mimi_files, FALSE);
  g_free (hub);
  if (!*mimi) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
        "no Mimi model: pass --mimi-model or set MIMI_MODEL");
    return FALSE;
  }
  if (*tiny && !g_file_test (*lm, G_FILE_TEST_IS_DIR)) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
        "no %s model (and no test model at %s%s): pass --model",
        vision ? "MoshiVis" : "Moshi", *lm,
        vision ? "; build the tests first" : "");
    return FALSE;
  }
  return TRUE;
}
