/* How packed weights are stored in memory (see gemm.h). */
#pragma once
#include <glib.h>

G_BEGIN_DECLS

/* Streaming at 1-2 rows per call reads every weight once per frame, so
 * memory traffic, not arithmetic, sets the speed: BF16 halves it, Q8
 * quarters it, at the price of ~0.4 % error per weight; Q4 cuts it to about
 * a seventh (0.56 byte per weight) for up to 1/14 of the block's largest
 * weight of error per weight. */
typedef enum {
  MOSHI_WEIGHTS_F32 = 0, /* exact */
  MOSHI_WEIGHTS_BF16, /* bfloat16, round to nearest even */
  MOSHI_WEIGHTS_Q8, /* int8, one scale per 32 inputs x 1 output */
  /* 4-bit, symmetric: q in [-7, 7], one bf16 scale = max|w| / 7 per 32
   * inputs x 1 output */
  MOSHI_WEIGHTS_Q4,
} MoshiWeightType;

const char *moshi_weight_type_name (MoshiWeightType t);
/* "f32"/"none", "bf16", "q8", "q4" -> type; FALSE if unknown. */
gboolean moshi_weight_type_from_string (const char *s, MoshiWeightType *t);

G_END_DECLS
