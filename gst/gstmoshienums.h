/* gst-moshi: enum types shared by the elements' properties. */
#pragma once

#include <gst/gst.h>

#include "weight-type.h"

G_BEGIN_DECLS

/* How an element stores the model's weights in memory (MoshiWeightType):
 * "none" keeps float32 (exact), "bf16" halves and "q8" quarters the memory
 * traffic that bounds streaming speed. */
#define GST_TYPE_MOSHI_QUANTIZE (gst_moshi_quantize_get_type ())
GType gst_moshi_quantize_get_type (void);

G_END_DECLS
