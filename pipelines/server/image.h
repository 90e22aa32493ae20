/* moshi-server: a client's picture (the bytes of an image file, Kyutai's
 * kind 8, or a file of the web root named by image_url) decoded into one
 * RGB sample for the vision branch.  Kept apart from session.c so that the
 * fuzzer (tests/fuzz/fuzz-server-image.c) can drive it alone. */
#pragma once

#include <gio/gio.h>
#include <gst/gst.h>

G_BEGIN_DECLS

/* Sides of the pictures accepted, in pixels (decoded size).  The smallest
 * is SigLIP's patch. */
#define MS_IMAGE_MIN_SIDE 14
#define MS_IMAGE_MAX_SIDE 8192

/* Decodes image file bytes (PNG, JPEG, any format whose parser gives the size)
 * into one RGB sample with sides within the limits above.  A picture
 * outside them is refused before it is decoded (a decoder is plugged only
 * for input whose parsed caps give a size within them: a small file that
 * claims a huge picture costs nothing); so are formats whose size is known
 * only once decoded.  NULL with error set for undecodable bytes, pictures
 * outside the limits, or no picture within 10 s. */
GstSample *ms_image_decode (GBytes *bytes, GError **error);

/* The same off the calling thread (a thread of GLib's pool: a picture can
 * take seconds), for the server's main loop.  callback runs in the
 * thread-default main context of the caller, once, even when cancelled;
 * ms_image_decode_finish then gives the sample, or NULL with error
 * (G_IO_ERROR_CANCELLED once cancelled: the decoding stops waiting at
 * once, and stops its pipeline, which lets a decoder finish the picture it
 * is working on). */
void ms_image_decode_async (GBytes *bytes, GCancellable *cancellable,
    GAsyncReadyCallback callback, gpointer user_data);
GstSample *ms_image_decode_finish (GAsyncResult *result, GError **error);

G_END_DECLS
