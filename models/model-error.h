/* Error domain shared by every loader in libmoshi-models. */
#pragma once
#include <glib.h>

G_BEGIN_DECLS

#define MOSHI_MODEL_ERROR (moshi_model_error_quark ())
GQuark moshi_model_error_quark (void);

typedef enum {
  MOSHI_MODEL_ERROR_IO, /* file missing, unreadable, cannot be mapped */
  MOSHI_MODEL_ERROR_FORMAT, /* malformed safetensors / JSON / protobuf */
  MOSHI_MODEL_ERROR_MISSING, /* a required tensor or key is absent */
  MOSHI_MODEL_ERROR_SHAPE, /* tensor shape differs from what the config implies */
  MOSHI_MODEL_ERROR_DTYPE, /* tensor dtype not usable for this weight */
  MOSHI_MODEL_ERROR_CONFIG, /* config.json value out of range / inconsistent */
  MOSHI_MODEL_ERROR_ARGUMENT, /* API misuse caught at run time (bad codebook count ...) */
} MoshiModelError;

G_END_DECLS
