/* A cache of packed (quantized) weights beside a model, so that the next
 * start maps them instead of converting and quantizing gigabytes again.
 *
 * The file holds a key (model file, size and mtime, LoRA file, the
 * configuration, the storage type, this format's version) and one record
 * per packed matrix in load order.  Reading maps the file and lends its
 * arrays to the model (zero copy, 64-byte aligned); a file whose key,
 * structure or records do not match is never used.  Writing goes to a
 * temporary file renamed into place only when complete, so a crash or a
 * full disk leaves no half cache behind. */
#pragma once
#include <glib.h>

#include "gemm.h"

G_BEGIN_DECLS

typedef struct MoshiPackCache MoshiPackCache;

/* Opens `path` for reading when it exists and carries `key`; otherwise
 * prepares to write it (returns NULL only when neither is possible, e.g.
 * an unwritable folder, with the reason in error). */
MoshiPackCache *moshi_pack_cache_open (const char *path, const char *key,
    GError **error);
gboolean moshi_pack_cache_is_reading (const MoshiPackCache *c);
/* Reading: lends the next record to p if it is `name` with this shape and
 * type; FALSE otherwise (the caller packs the weights itself, and the
 * cache stops lending). */
gboolean moshi_pack_cache_take (MoshiPackCache *c, const char *name, int K,
    int N, MoshiWeightType type, MoshiPackedB *p);
/* Writing: appends p as `name`.  Errors are kept for finish(). */
void moshi_pack_cache_put (MoshiPackCache *c, const char *name,
    const MoshiPackedB *p);
/* Writing: completes and renames the file; FALSE with error when anything
 * failed (the model itself is fine).  Reading: TRUE. */
gboolean moshi_pack_cache_finish (MoshiPackCache *c, GError **error);
/* Reading: ends the loading phase of the mapping (mapguard.h); FALSE with
 * error when the cache file was truncated while the model was loaded from
 * it (its lent weights are then zeros: the load must fail).  Writing:
 * TRUE. */
gboolean moshi_pack_cache_finish_load (MoshiPackCache *c, GError **error);
MoshiPackCache *moshi_pack_cache_ref (MoshiPackCache *c);
void moshi_pack_cache_unref (MoshiPackCache *c);
/* Records lent so far (tests). */
int moshi_pack_cache_lent (const MoshiPackCache *c);

G_END_DECLS
