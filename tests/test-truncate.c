/* Model files that shrink while they are mapped (models/mapguard.h), are
 * deleted while in use, and a packed-weights cache that cannot be written
 * (full disk, read-only folder).
 *
 * Works on copies of the tiny conformance models in a temporary folder. */
#include <errno.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lm.h"
#include "mimi.h"
#include "model-error.h"
#include "packcache.h"
#include "safetensors.h"

static gchar *tmpdir;

static gchar *
data_path (const char *model, const char *file)
{
  const char *data = g_getenv ("MOSHI_TEST_DATA");
  return g_build_filename (data ? data : MOSHI_TEST_DATA_DIR, "conformance",
      model, file, NULL);
}

static gchar *
copy_one (const char *model, const char *file)
{
  gchar *src = data_path (model, file), *contents;
  gsize len;
  g_assert_true (g_file_get_contents (src, &contents, &len, NULL));
  gchar *dir = g_build_filename (tmpdir, model, NULL);
  g_assert_cmpint (g_mkdir_with_parents (dir, 0700), ==, 0);
  gchar *dst = g_build_filename (dir, file, NULL);
  g_unlink (dst);
  g_assert_true (g_file_set_contents (dst, contents, len, NULL));
  g_free (dir);
  g_free (contents);
  g_free (src);
  return dst;
}

/* A fresh copy of model/file (and its config.json) in tmpdir/model/;
 * returns its path. */
static gchar *
copy_model (const char *model, const char *file)
{
  g_free (copy_one (model, "config.json"));
  return copy_one (model, file);
}

static goffset
file_size (const char *path)
{
  GStatBuf st;
  g_assert_cmpint (g_stat (path, &st), ==, 0);
  return st.st_size;
}

/* Truncates to 8 KB: the headers of the tiny models fit, no tensor does. */
#define KEEP 8192

static gchar *hook_target; /* truncated by the st_open hook */
static goffset hook_keep;

static void
truncate_hook (const char *path)
{
  if (hook_target && strstr (path, hook_target))
    g_assert_cmpint (truncate (hook_target, hook_keep), ==, 0);
}

static void
assert_truncation_error (const GError *err, const char *path)
{
  g_assert_nonnull (err);
  g_test_message ("error: %s", err->message);
  g_assert_true (
      g_error_matches (err, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_IO));
  g_assert_nonnull (strstr (err->message, path));
  g_assert_nonnull (strstr (err->message, "truncated"));
}

/* st level: reads past the new end give zeros, finish_load fails. */
static void
test_st_truncated_while_loading (void)
{
  gchar *path = copy_model ("lm-tiny", "model.safetensors");
  GError *err = NULL;
  StFile *f = st_open (path, &err);
  g_assert_no_error (err);
  g_assert_cmpint (truncate (path, KEEP), ==, 0);
  gboolean zeros = FALSE;
  for (size_t i = 0; i < st_count (f); i++) {
    const StTensor *t = st_index (f, i);
    if (t->dtype != ST_F32 || t->numel == 0)
      continue;
    float *buf = g_new (float, t->numel);
    g_assert_true (st_read_f32 (f, t, buf, NULL));
    if ((const char *) t->data - (const char *) st_index (f, 0)->data > KEEP)
      zeros |= buf[t->numel - 1] == 0.0f;
    g_free (buf);
  }
  g_assert_true (zeros);
  g_assert_false (st_finish_load (f, &err));
  assert_truncation_error (err, path);
  g_clear_error (&err);
  st_unref (f);
  g_free (path);
}

/* The real loaders, with the file truncated right after its header was
 * validated. */
static void
test_mimi_truncated_while_loading (void)
{
  gchar *path = copy_model ("mimi-tiny", "model.safetensors");
  GError *err = NULL;
  hook_target = path;
  hook_keep = file_size (path) / 2;
  st_set_test_open_hook (truncate_hook);
  MimiModel *m = mimi_model_load (path, &err);
  st_set_test_open_hook (NULL);
  g_assert_null (m);
  assert_truncation_error (err, path);
  g_test_message ("%s", err->message);
  g_clear_error (&err);
  g_free (path);
}

static void
load_lm_config (LmConfig *cfg)
{
  gchar *c = data_path ("lm-tiny", "config.json");
  g_assert_true (lm_config_load_json (cfg, c, NULL));
  g_free (c);
}

static void
test_lm_truncated_while_loading (gconstpointer data)
{
  MoshiWeightType w = GPOINTER_TO_INT (data);
  gchar *path = copy_model ("lm-tiny", "model.safetensors");
  LmConfig cfg;
  load_lm_config (&cfg);
  GError *err = NULL;
  hook_target = path;
  hook_keep = KEEP;
  st_set_test_open_hook (truncate_hook);
  LmModel *m = lm_model_load (path, &cfg, w, &err);
  st_set_test_open_hook (NULL);
  g_assert_null (m);
  assert_truncation_error (err, path);
  g_clear_error (&err);
  g_free (path);
}

/* The packed-weights cache truncated after it was validated. */
static gchar *cache_to_cut;

static void
cut_cache_hook (const char *path)
{
  (void) path;
  if (cache_to_cut)
    g_assert_cmpint (truncate (cache_to_cut, KEEP), ==, 0);
}

static void
test_cache_truncated_while_loading (void)
{
  gchar *path = copy_model ("lm-tiny", "model.safetensors");
  gchar *cache = g_strconcat (path, ".q8cache", NULL);
  LmConfig cfg;
  load_lm_config (&cfg);
  GError *err = NULL;
  gchar *warning = NULL;
  g_unlink (cache);
  LmModel *m = lm_model_load_cached (path, NULL, &cfg, MOSHI_WEIGHTS_Q8, cache,
      &warning, &err);
  g_assert_no_error (err);
  g_assert_null (warning);
  g_assert_false (lm_model_from_cache (m));
  lm_model_unref (m);
  g_assert_cmpint (file_size (cache), >, 4 * KEEP);

  cache_to_cut = cache;
  st_set_test_open_hook (cut_cache_hook);
  m = lm_model_load_cached (path, NULL, &cfg, MOSHI_WEIGHTS_Q8, cache, &warning,
      &err);
  st_set_test_open_hook (NULL);
  cache_to_cut = NULL;
  g_assert_null (m);
  assert_truncation_error (err, cache);
  g_clear_error (&err);
  g_free (warning);
  g_unlink (cache);
  g_free (cache);
  g_free (path);
}

/* Runs `steps` greedy steps of lm on constant user codes; out [steps][9]. */
static void
run_lm (LmModel *m, int steps, int *out)
{
  LmGenParams p;
  lm_gen_params_default (&p, lm_model_config (m));
  p.use_sampling = FALSE;
  LmGen *g = lm_gen_new (m, &p, NULL);
  g_assert_nonnull (g);
  int user[32] = { 0 };
  for (int i = 0; i < 32; i++)
    user[i] = (i * 7) % lm_model_config (m)->card;
  for (int s = 0; s < steps; s++) {
    int r = lm_gen_step (g, user, out + s * 9, NULL, NULL);
    if (r != 1)
      memset (out + s * 9, 0xff, 9 * sizeof (int));
  }
  lm_gen_free (g);
}

/* In use: a child loads a model, the file is truncated, the child reads the
 * mapping; it must die of SIGBUS with a message naming the file. */
typedef enum { CHILD_ST, CHILD_LM } ChildKind;

static void
child_in_use (ChildKind kind, const char *path, const char *log)
{
  FILE *e = freopen (log, "w", stderr);
  if (!e)
    _exit (2);
  GError *err = NULL;
  if (kind == CHILD_ST) {
    StFile *f = st_open (path, &err);
    if (!f || !st_finish_load (f, &err))
      _exit (2);
    if (truncate (path, KEEP) != 0)
      _exit (2);
    const StTensor *t = st_index (f, st_count (f) - 1);
    volatile unsigned char sum = 0;
    for (size_t i = 0; i < t->nbytes; i++)
      sum += ((const unsigned char *) t->data)[i];
    (void) sum;
  } else {
    LmConfig cfg;
    load_lm_config (&cfg);
    LmModel *m = lm_model_load (path, &cfg, MOSHI_WEIGHTS_F32, &err);
    if (!m)
      _exit (2);
    if (truncate (path, KEEP) != 0)
      _exit (2);
    int out[20 * 9];
    run_lm (m, 20, out);
  }
  _exit (3); /* survived: the test fails */
}

static void
test_truncated_in_use (gconstpointer data)
{
  ChildKind kind = GPOINTER_TO_INT (data);
  gchar *path = copy_model ("lm-tiny", "model.safetensors");
  gchar *log = g_build_filename (tmpdir, "child-stderr.log", NULL);
  fflush (NULL);
  pid_t pid = fork ();
  g_assert_cmpint (pid, >=, 0);
  if (pid == 0)
    child_in_use (kind, path, log);
  int status;
  g_assert_cmpint (waitpid (pid, &status, 0), ==, pid);
  gchar *msg = NULL;
  g_assert_true (g_file_get_contents (log, &msg, NULL, NULL));
  g_test_message ("child status %d, stderr: %s", status, msg);
  g_assert_true (WIFSIGNALED (status));
  g_assert_cmpint (WTERMSIG (status), ==, SIGBUS);
  gchar *want =
      g_strdup_printf ("model file %s was truncated while in use", path);
  g_assert_nonnull (strstr (msg, want));
  g_free (want);
  g_free (msg);
  g_free (log);
  g_free (path);
}

/* A model file deleted (or renamed over) while in use keeps working: the
 * mapping holds the old inode. */
static void
test_deleted_in_use (void)
{
  gchar *path = copy_model ("lm-tiny", "model.safetensors");
  LmConfig cfg;
  load_lm_config (&cfg);
  const int steps = 12;
  int a[12 * 9], b[12 * 9];
  LmModel *m = lm_model_load (path, &cfg, MOSHI_WEIGHTS_F32, NULL);
  g_assert_nonnull (m);
  run_lm (m, steps, a);
  lm_model_unref (m);

  GError *err = NULL;
  m = lm_model_load (path, &cfg, MOSHI_WEIGHTS_F32, &err);
  g_assert_no_error (err);
  g_assert_cmpint (g_unlink (path), ==, 0);
  run_lm (m, steps, b);
  lm_model_unref (m);
  g_assert_cmpmem (a, sizeof a, b, sizeof b);

  /* Deleted while loading: still a good load. */
  g_free (copy_model ("lm-tiny", "model.safetensors"));
  StFile *f = st_open (path, &err);
  g_assert_no_error (err);
  g_assert_cmpint (g_unlink (path), ==, 0);
  g_assert_true (st_finish_load (f, &err));
  g_assert_no_error (err);
  st_unref (f);
  g_free (path);
}

/* ------------------------------------------------------------------ */
/* Packed-weights cache that cannot be written */

/* Names in dir other than the model copy and its config. */
static gchar *
stray_files (const char *dir)
{
  GString *s = g_string_new (NULL);
  GDir *d = g_dir_open (dir, 0, NULL);
  g_assert_nonnull (d);
  const gchar *n;
  while ((n = g_dir_read_name (d)))
    if (strcmp (n, "model.safetensors") && strcmp (n, "config.json"))
      g_string_append_printf (s, "%s ", n);
  g_dir_close (d);
  return g_string_free (s, FALSE);
}

/* Loads lm-tiny q8 with `cache`; checks the outputs against an uncached
 * load and returns the warning (NULL when the cache was written or used). */
static gchar *
load_with_cache (const char *path, const char *cache, gboolean *from_cache)
{
  LmConfig cfg;
  load_lm_config (&cfg);
  GError *err = NULL;
  gchar *warning = NULL;
  LmModel *m = lm_model_load_cached (path, NULL, &cfg, MOSHI_WEIGHTS_Q8, cache,
      &warning, &err);
  g_assert_no_error (err);
  g_assert_nonnull (m);
  LmModel *ref = lm_model_load (path, &cfg, MOSHI_WEIGHTS_Q8, &err);
  g_assert_no_error (err);
  int a[10 * 9], b[10 * 9];
  run_lm (m, 10, a);
  run_lm (ref, 10, b);
  g_assert_cmpmem (a, sizeof a, b, sizeof b);
  *from_cache = lm_model_from_cache (m);
  lm_model_unref (ref);
  lm_model_unref (m);
  return warning;
}

/* Next start with room to write: a good cache, then used. */
static void
assert_cache_recovers (const char *path, const char *cache)
{
  gboolean from_cache;
  gchar *w = load_with_cache (path, cache, &from_cache);
  g_assert_null (w);
  g_assert_false (from_cache);
  g_assert_true (g_file_test (cache, G_FILE_TEST_IS_REGULAR));
  w = load_with_cache (path, cache, &from_cache);
  g_assert_null (w);
  g_assert_true (from_cache);
  g_unlink (cache);
}

/* A full disk: writes fail with EFBIG past RLIMIT_FSIZE (SIGXFSZ ignored),
 * in a child so that the limit does not outlive the check. */
static void
test_cache_disk_full (void)
{
  gchar *path = copy_model ("lm-tiny", "model.safetensors");
  gchar *dir = g_path_get_dirname (path);
  gchar *cache = g_build_filename (dir, "model.q8cache", NULL);
  g_unlink (cache);
  fflush (NULL);
  pid_t pid = fork ();
  g_assert_cmpint (pid, >=, 0);
  if (pid == 0) {
    struct rlimit rl = { 64 * 1024, 64 * 1024 };
    signal (SIGXFSZ, SIG_IGN);
    if (setrlimit (RLIMIT_FSIZE, &rl) != 0)
      _exit (2);
    gboolean from_cache;
    gchar *w = load_with_cache (path, cache, &from_cache);
    /* The warning names the cache and the reason. */
    if (!w || !strstr (w, cache) || !strstr (w, g_strerror (EFBIG)))
      _exit (4);
    g_printerr ("warning: %s\n", w);
    g_free (w);
    _exit (from_cache ? 5 : 0);
  }
  int status;
  g_assert_cmpint (waitpid (pid, &status, 0), ==, pid);
  g_assert_true (WIFEXITED (status));
  g_assert_cmpint (WEXITSTATUS (status), ==, 0);
  /* No cache, no half-written temporary file. */
  gchar *stray = stray_files (dir);
  g_assert_cmpstr (stray, ==, "");
  g_free (stray);
  assert_cache_recovers (path, cache);
  g_free (cache);
  g_free (dir);
  g_free (path);
}

/* A folder we may not write to.  root writes anywhere, so then a folder
 * under /proc stands in for it. */
static void
test_cache_read_only_dir (void)
{
  gchar *path = copy_model ("lm-tiny", "model.safetensors");
  gchar *dir = g_path_get_dirname (path);
  gchar *cache = g_build_filename (dir, "model.q8cache", NULL);
  g_assert_cmpint (g_chmod (dir, 0500), ==, 0);
  gchar *probe = g_build_filename (dir, "probe", NULL);
  FILE *pf = fopen (probe, "w");
  gchar *ro_cache =
      pf ? g_strdup ("/proc/self/moshi.q8cache") : g_strdup (cache);
  if (pf) {
    fclose (pf);
    g_unlink (probe);
  }
  gboolean from_cache;
  gchar *w = load_with_cache (path, ro_cache, &from_cache);
  g_assert_nonnull (w);
  g_assert_nonnull (strstr (w, ro_cache));
  g_test_message ("warning: %s", w);
  g_assert_false (from_cache);
  g_free (w);
  g_assert_cmpint (g_chmod (dir, 0700), ==, 0);
  gchar *stray = stray_files (dir);
  g_assert_cmpstr (stray, ==, "");
  g_free (stray);
  assert_cache_recovers (path, cache);
  g_free (ro_cache);
  g_free (probe);
  g_free (cache);
  g_free (dir);
  g_free (path);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  tmpdir = g_dir_make_tmp ("moshi-truncate-XXXXXX", NULL);
  g_assert_nonnull (tmpdir);
  g_test_add_func ("/truncate/st-while-loading",
      test_st_truncated_while_loading);
  g_test_add_func ("/truncate/mimi-while-loading",
      test_mimi_truncated_while_loading);
  g_test_add_data_func ("/truncate/lm-f32-while-loading",
      GINT_TO_POINTER (MOSHI_WEIGHTS_F32), test_lm_truncated_while_loading);
  g_test_add_data_func ("/truncate/lm-q8-while-loading",
      GINT_TO_POINTER (MOSHI_WEIGHTS_Q8), test_lm_truncated_while_loading);
  g_test_add_func ("/truncate/cache-while-loading",
      test_cache_truncated_while_loading);
  g_test_add_data_func ("/truncate/st-in-use", GINT_TO_POINTER (CHILD_ST),
      test_truncated_in_use);
  g_test_add_data_func ("/truncate/lm-in-use", GINT_TO_POINTER (CHILD_LM),
      test_truncated_in_use);
  g_test_add_func ("/truncate/deleted-in-use", test_deleted_in_use);
  g_test_add_func ("/cache/disk-full", test_cache_disk_full);
  g_test_add_func ("/cache/read-only-dir", test_cache_read_only_dir);
  int r = g_test_run ();
  gchar *cmd = g_strdup_printf ("rm -rf '%s'", tmpdir);
  if (system (cmd) != 0)
    r = 1;
  g_free (cmd);
  g_free (tmpdir);
  return r;
}
