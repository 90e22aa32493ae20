/* RGB image geometry for the vision tower's input: the aspect-preserving
 * centre crop and a bicubic resize, so any camera frame can become the
 * tower's square input without leaving the library. */
#pragma once
#include <glib.h>
#include <stdint.h>

G_BEGIN_DECLS

/* The largest centred square of a width x height image (Kyutai's Rust
 * server: offsets (w - m) / 2, (h - m) / 2 with m = min(w, h)). */
void image_center_square (int width, int height, int *x, int *y, int *side);

/* Resizes the region (x, y, w, h) of an RGB u8 image (rows `stride` bytes
 * apart) to dst [out_h][out_w][3] with a bicubic filter (Keys a = -0.5, as
 * PIL's BICUBIC and the Rust `image` crate's CatmullRom), widened when
 * shrinking so that every source pixel counts (antialiasing).  FALSE when
 * memory runs out or the sizes are not positive. */
gboolean image_resize_rgb (const uint8_t *src, int stride, int x, int y, int w,
    int h, uint8_t *dst, int out_w, int out_h);

G_END_DECLS
