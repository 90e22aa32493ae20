#include "gstmoshienums.h"

GType
gst_moshi_quantize_get_type (void)
{
  static gsize type = 0;
  static const GEnumValue values[] = {
    { MOSHI_WEIGHTS_F32, "float32 weights, exact (reference results)", "none" },
    { MOSHI_WEIGHTS_BF16, "bfloat16 weights (half the memory traffic)",
        "bf16" },
    { MOSHI_WEIGHTS_Q8,
        "int8 weights, one scale per 32 (about a quarter of the memory "
        "traffic; int8 arithmetic with AVX-512 VNNI)",
        "q8" },
    { MOSHI_WEIGHTS_Q4,
        "4-bit weights, one scale per 32 (about an eighth of the memory "
        "traffic; larger error)",
        "q4" },
    { 0, NULL, NULL },
  };
  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstMoshiQuantize", values);
    g_once_init_leave (&type, t);
  }
  return type;
}
