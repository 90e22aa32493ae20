/* 64-byte aligned allocation for weights and activations (AVX-512 loads). */
#pragma once
#include <stddef.h>

/* Returns NULL on failure (never aborts), so loaders can report OOM as a
 * GError.  Memory is zero-filled. */
void *moshi_alloc (size_t bytes);
void moshi_free (void *p);

/* For weights that every step streams: 2 MB-aligned, with transparent
 * huge pages requested for the whole 2 MB pages (madvise; where THP is off
 * or no huge page is free, small pages as usual).  Zero-filled; freed with
 * moshi_free.  See moshi_packed_settle (gemm.h) for why. */
void *moshi_alloc_huge (size_t bytes);

/* Drops this process's pages of [addr, addr + len), whole pages only, from
 * a read-only file mapping that nothing will read again: they leave the RSS
 * and stay in the page cache (a later read would fault them back in). */
void moshi_release_pages (const void *addr, size_t len);

/* Fault injection for tests: the n-th call from now (1 = next) fails.
 * 0 disables.  Not thread-safe; for tests only. */
void moshi_alloc_fail_after (long n);
