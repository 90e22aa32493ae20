#include "model-error.h"

G_DEFINE_QUARK (moshi - model - error - quark, moshi_model_error)
