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
 * outside the limits, or no picture within 10 s.  In this process: a
 * system decoder stuck in a loop (GStreamer 1.22's jpegdec on some broken
 * JPEGs) keeps it from ever returning; the server uses the following. */
GstSample *ms_image_decode (GBytes *bytes, GError **error);

/* The server's way: the same decoding in a process of its own, the
 * program moshi-picture-decoder (found as $MOSHI_PICTURE_DECODER, beside
 * the running program, or where it is installed), one per picture.  A
 * decoder's bug then stays in that process: GStreamer 1.22's pngdec leaks
 * its buffer pool and two file descriptors on every PNG that libpng
 * rejects mid-picture, which exhausted a long-running server's descriptors
 * (found by fuzz-server-image); a crash or a hang would take every session
 * with it.  callback runs in the thread-default main context of the
 * caller, once, after the process has ended (it answers after 12 s at
 * most, even with a decoder stuck in a loop, and is killed after 30 s);
 * ms_image_decode_finish then gives the sample, or NULL with error
 * (G_IO_ERROR_CANCELLED once cancelled: the process is killed at once). */
void ms_image_decode_async (GBytes *bytes, GCancellable *cancellable,
    GAsyncReadyCallback callback, gpointer user_data);
GstSample *ms_image_decode_finish (GAsyncResult *result, GError **error);

#define MS_PICTURE_DECODER_NAME "moshi-picture-decoder"

/* The decoder process's work: the image file's bytes from in_fd (to their
 * end), the picture or the error to out_fd, as ms_image_decode_async
 * reads them.  Returns the process's exit status: 0 once the answer is
 * written (a picture or an error), 1 when it could not be. */
int ms_image_serve (int in_fd, int out_fd);

G_END_DECLS
