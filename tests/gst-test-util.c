#include "gst-test-util.h"

#include <gmodule.h>

const gchar *
test_data_dir (void)
{
  const gchar *d = g_getenv ("MOSHI_TEST_DATA");

  if (d && *d)
    return d;
#ifdef MOSHI_TEST_DATA_DIR
  return MOSHI_TEST_DATA_DIR;
#else
  return "tests/data";
#endif
}

gfloat *
read_f32 (StFile *f, const gchar *name, gint64 *numel)
{
  const StTensor *t = st_find (f, name);
  GError *err = NULL;
  gfloat *v;

  if (!t)
    return NULL;
  v = g_new (gfloat, t->numel);
  fail_unless (st_read_f32 (f, t, v, &err), "%s: %s", name,
      err ? err->message : "?");
  if (numel)
    *numel = t->numel;
  return v;
}

gpointer
plugin_symbol (const gchar *name)
{
  static GModule *module;
  gpointer sym = NULL;

  if (!module) {
    GstPlugin *plugin, *loaded;

    plugin = gst_registry_find_plugin (gst_registry_get (), "moshi");
    fail_unless (plugin != NULL,
        "plugin 'moshi' not found: set GST_PLUGIN_PATH to the build dir");
    loaded = gst_plugin_load (plugin);
    fail_unless (loaded != NULL);
    /* Already loaded by GStreamer: this returns the same handle. */
    module =
        g_module_open (gst_plugin_get_filename (loaded), G_MODULE_BIND_LOCAL);
    fail_unless (module != NULL, "%s", g_module_error ());
    gst_object_unref (loaded);
    gst_object_unref (plugin);
  }
  fail_unless (g_module_symbol (module, name, &sym) && sym,
      "symbol %s not exported by the plugin", name);
  return sym;
}
