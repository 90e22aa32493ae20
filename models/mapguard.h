/* What happens when a memory-mapped model file shrinks under us.
 *
 * Model files (safetensors) and the packed-weights cache are mapped, and
 * the model reads them in place.  If another program truncates (or rewrites
 * in place) such a file while it is mapped, reading a page past the new end
 * of file raises SIGBUS.  A process-wide SIGBUS handler, installed the
 * first time a mapping is registered, turns that into something a user can
 * act on:
 *
 *  - while the mapping is being loaded (registered with loading = TRUE and
 *    not yet passed to moshi_mapguard_finish_load()), the pages from the
 *    fault to the end of the mapping are replaced by zero pages, the
 *    mapping is marked truncated, and the access carries on.  The loader
 *    then calls moshi_mapguard_finish_load(), which fails with a GError
 *    naming the file.  This works in any thread (e.g. the packing pool);
 *  - afterwards (the model is in use), the handler writes "model file X was
 *    truncated while in use" to stderr and the process dies of SIGBUS as it
 *    would have, since the model's weights are gone.
 *
 * A fault outside every registered mapping goes to the handler that was
 * installed before ours (or the default action).  Deleting or replacing a
 * model file (rename over it) is harmless: the mapping keeps the old inode.
 *
 * Up to MOSHI_MAPGUARD_SLOTS mappings are tracked at once; more still work,
 * without the message. */
#pragma once
#include <glib.h>
#include <stddef.h>

G_BEGIN_DECLS

#define MOSHI_MAPGUARD_SLOTS 256

typedef struct MoshiMapGuard MoshiMapGuard;

/* Registers [addr, addr + len) as a mapping of the file open as fd (which
 * the guard keeps open, for fstat, and closes in remove). `what` is e.g.
 * "model file". Never fails (returns a guard that tracks nothing when all
 * slots are taken). */
MoshiMapGuard *moshi_mapguard_add (const void *addr, size_t len, int fd,
    const char *path, const char *what, gboolean loading);
/* Ends the loading phase: FALSE with a MOSHI_MODEL_ERROR_IO error naming
 * the file when it was truncated since it was mapped (a fault was caught,
 * or the file is now shorter than the mapping).  Later faults are fatal. */
gboolean moshi_mapguard_finish_load (MoshiMapGuard *g, GError **error);
/* TRUE when a fault was caught in this mapping (tests). */
gboolean moshi_mapguard_faulted (const MoshiMapGuard *g);
/* Unregisters (before the caller unmaps) and closes fd. NULL is a no-op. */
void moshi_mapguard_remove (MoshiMapGuard *g);

G_END_DECLS
