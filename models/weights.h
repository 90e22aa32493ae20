/* Loading named weights out of a safetensors file into float32 buffers,
 * with shape checks that produce readable errors. */
#pragma once
#include <glib.h>
#include <stdint.h>

#include "safetensors.h"

G_BEGIN_DECLS

/* A tensor name built from a printf-style prefix, e.g.
 * weights_name (buf, "%s.conv.conv.weight", prefix). */
const char *weights_name (char buf[256], const char *fmt, ...)
    G_GNUC_PRINTF (2, 3);

/* Loads `name` (any float dtype) as a new float32 buffer after checking its
 * shape (dims < 0 are wildcards).  An I8 `name` is taken as bitsandbytes
 * int8 with a per-row scale `name`_scb (Kyutai's "-q8" checkpoints) and
 * dequantized to q * scb / 127.  Returns NULL with error when missing (or
 * missing its scale), of the wrong shape or dtype, or on allocation
 * failure.  Free with moshi_free. */
float *weights_load (const StFile *f, const char *name, int ndim,
    const int64_t *shape, GError **error);

/* Deterministic pseudo-random weights (xorshift), uniform in [-scale, scale];
 * used to build full-size models for benchmarks without a checkpoint. */
float *weights_random (uint64_t *seed, size_t n, float scale);

G_END_DECLS
