/* Helpers shared by the GStreamer element tests (GstCheck based). */
#pragma once

#include <gst/check/gstcheck.h>

#include "safetensors.h"

G_BEGIN_DECLS

/* tests/data: $MOSHI_TEST_DATA, else the path compiled in. */
const gchar *test_data_dir (void);
/* A float tensor of a reference file (fails the test when unreadable);
 * NULL when absent.  numel may be NULL. */
gfloat *read_f32 (StFile *f, const gchar *name, gint64 *numel);
/* A function exported by the moshi plugin module (its model cache and
 * resolver), for white-box checks; fails the test when missing. */
gpointer plugin_symbol (const gchar *name);

G_END_DECLS
