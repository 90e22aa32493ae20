/* The vision input geometry: centre crop and bicubic resize. */
#include <glib.h>
#include <string.h>

#include "image-resize.h"

static void
test_center_square (void)
{
  int x, y, s;
  moshi_image_center_square (640, 480, &x, &y, &s);
  g_assert_cmpint (x, ==, 80);
  g_assert_cmpint (y, ==, 0);
  g_assert_cmpint (s, ==, 480);
  moshi_image_center_square (101, 200, &x, &y, &s);
  g_assert_cmpint (x, ==, 0);
  g_assert_cmpint (y, ==, 49);
  g_assert_cmpint (s, ==, 101);
}

static void
test_identity_and_constant (void)
{
  enum { W = 37, H = 23 };
  uint8_t img[H][W][3], out[H][W][3];
  for (int r = 0; r < H; r++)
    for (int c = 0; c < W; c++)
      for (int k = 0; k < 3; k++)
        img[r][c][k] = (uint8_t) (r * 7 + c * 13 + k * 101);
  /* Same size: the cubic kernel is 1 at 0 and 0 at the other integers. */
  g_assert_true (moshi_image_resize_rgb (&img[0][0][0], W, H, W * 3,
      &out[0][0][0], W, H, (W) *3, NULL));
  g_assert_cmpmem (img, sizeof img, out, sizeof out);
  /* A flat colour stays flat at any scale (weights sum to one). */
  uint8_t flat[H][W][3], small[5][9][3], big[50][70][3];
  memset (flat, 0, sizeof flat);
  for (int r = 0; r < H; r++)
    for (int c = 0; c < W; c++) {
      flat[r][c][0] = 200;
      flat[r][c][1] = 17;
      flat[r][c][2] = 99;
    }
  g_assert_true (moshi_image_resize_rgb (&flat[0][0][0], W, H, W * 3,
      &small[0][0][0], 9, 5, (9) * 3, NULL));
  g_assert_true (moshi_image_resize_rgb (&flat[0][0][0], W, H, W * 3,
      &big[0][0][0], 70, 50, (70) * 3, NULL));
  for (int i = 0; i < 5 * 9; i++) {
    g_assert_cmpint ((&small[0][0][0])[3 * i], ==, 200);
    g_assert_cmpint ((&small[0][0][0])[3 * i + 1], ==, 17);
    g_assert_cmpint ((&small[0][0][0])[3 * i + 2], ==, 99);
  }
  for (int i = 0; i < 50 * 70; i++)
    g_assert_cmpint ((&big[0][0][0])[3 * i + 1], ==, 17);
  /* A region at its own size: exactly the region's pixels. */
  uint8_t region[10][10][3];
  g_assert_true (
      moshi_image_resize_rgb (&img[0][0][0] + (3) * (W * 3) + (5) * 3, 10, 10,
          W * 3, &region[0][0][0], 10, 10, (10) * 3, NULL));
  for (int r = 0; r < 10; r++)
    for (int c = 0; c < 10; c++)
      g_assert_cmpmem (region[r][c], 3, img[3 + r][5 + c], 3);
  g_assert_false (moshi_image_resize_rgb (&img[0][0][0], 0, H, W * 3,
      &out[0][0][0], 4, 4, (4) * 3, NULL));
}

static void
test_downscale_averages (void)
{
  /* A 2-pixel checkerboard shrunk 8x must be grey (antialiasing), not
   * aliased to black or white. */
  enum { S = 64 };
  static uint8_t img[S][S][3];
  uint8_t out[8][8][3];
  for (int r = 0; r < S; r++)
    for (int c = 0; c < S; c++)
      memset (img[r][c], ((r + c) & 1) ? 255 : 0, 3);
  g_assert_true (moshi_image_resize_rgb (&img[0][0][0], S, S, S * 3,
      &out[0][0][0], 8, 8, (8) * 3, NULL));
  for (int i = 0; i < 8 * 8 * 3; i++) {
    g_assert_cmpint ((&out[0][0][0])[i], >=, 120);
    g_assert_cmpint ((&out[0][0][0])[i], <=, 135);
  }
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/image-resize/center-square", test_center_square);
  g_test_add_func ("/image-resize/identity-and-constant",
      test_identity_and_constant);
  g_test_add_func ("/image-resize/downscale-averages", test_downscale_averages);
  return g_test_run ();
}
