/* gst-moshi: plugin registration.
 *
 * One plugin, "moshi", holding every element of the suite so that they share
 * one process-wide model cache (gstmodelcache.c). */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <gst/gst.h>

#include "gstmimienc.h"
#include "gstmimidec.h"
#include "gstmoshilm.h"
#include "gstmoshivis.h"

static gboolean
plugin_init (GstPlugin *plugin)
{
  gboolean ok = TRUE;

  /* Rank NONE: these are not general-purpose codecs that decodebin or
   * encodebin should pick on their own; users place them explicitly. */
  ok &= gst_element_register (plugin, "mimienc", GST_RANK_NONE,
      GST_TYPE_MIMI_ENC);
  ok &= gst_element_register (plugin, "mimidec", GST_RANK_NONE,
      GST_TYPE_MIMI_DEC);
  ok &= gst_element_register (plugin, "moshilm", GST_RANK_NONE,
      GST_TYPE_MOSHI_LM);
  ok &= gst_element_register (plugin, "moshivis", GST_RANK_NONE,
      GST_TYPE_MOSHI_VIS);

  return ok;
}

/* elements/meson.build passes VERSION and PACKAGE. */
#ifndef VERSION
#define VERSION "0.1.0"
#endif
/* GST_PLUGIN_DEFINE records PACKAGE as the plugin's source module. */
#ifndef PACKAGE
#define PACKAGE "gst-moshi"
#endif

/* The project is MIT-licensed; "MIT/X11" is how GStreamer spells MIT in its
 * list of known licenses (plain "MIT" makes the loader warn on every scan). */
GST_PLUGIN_DEFINE (GST_VERSION_MAJOR, GST_VERSION_MINOR, moshi,
    "Kyutai's Mimi neural audio codec and Moshi speech models on the CPU",
    plugin_init, VERSION, "MIT/X11", "gst-moshi",
    "https://github.com/gst-moshi/gst-moshi")
