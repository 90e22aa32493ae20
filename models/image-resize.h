/* Fitting any camera picture to the vision tower's square input.
 *
 * Kyutai's servers resize the whole picture to S x S without keeping the
 * aspect ratio; Rust can first crop the largest centred square.  The
 * resize here is PIL's BICUBIC (a = -0.5, the filter widened by the scale
 * when downscaling, i.e. antialiased), which is what MLX uses and close to
 * Rust's CatmullRom (docs/moshivis-spec.md section 1.2).  It follows PIL's
 * two passes (horizontal, then vertical, through an 8-bit intermediate) in
 * float arithmetic, so results can differ from PIL's fixed point by one
 * level. */
#pragma once
#include <glib.h>
#include <stdint.h>

G_BEGIN_DECLS

/* The largest centred square of a width x height picture: offsets
 * ((width - side) / 2, (height - side) / 2) with integer division, as
 * Kyutai's Rust server computes them. */
void moshi_image_center_square (int width, int height, int *x, int *y,
    int *side);

/* Resizes RGB u8 src (w x h, rows `stride` bytes apart) to dst (dw x dh,
 * rows dst_stride bytes apart).  Sizes must be in [1, 16384]; strides at
 * least 3 * width.  ARGUMENT errors otherwise, IO on allocation failure. */
gboolean moshi_image_resize_rgb (const uint8_t *src, int w, int h, int stride,
    uint8_t *dst, int dw, int dh, int dst_stride, GError **error);

/* Convenience for the element: optional centre crop, then resize to
 * side x side (dst rows packed, 3 * side bytes). */
gboolean moshi_image_fit_square (const uint8_t *src, int w, int h, int stride,
    gboolean center_crop, uint8_t *dst, int side, GError **error);

G_END_DECLS
