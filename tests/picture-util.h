/* Small picture files for the tests and the fuzzer of moshi-server's
 * picture decoding (tests/test-server-image.c, tests/test-server.c,
 * tests/fuzz/fuzz-server-image.c). */
#pragma once

#include <gst/gst.h>

G_BEGIN_DECLS

/* An image file of width x height pixels of videotestsrc's pattern
 * (NULL: its default) made by GStreamer's encoder (e.g. "pngenc",
 * "jpegenc"), or NULL when that cannot be done. */
GBytes *tp_encode (const gchar *encoder, gint width, gint height,
    const gchar *pattern);

/* The same PNG with its IHDR claiming width x height pixels (CRC fixed). */
GBytes *tp_png_claiming (GBytes *png, guint32 width, guint32 height);

/* A blank (transparent black) 8-bit RGBA PNG of width x height pixels,
 * written directly: a few hundred KB for 8192 x 8192, a large picture to
 * decode (256 MB of pixels). */
GBytes *tp_png_blank (guint32 width, guint32 height);

G_END_DECLS
