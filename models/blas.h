/* OpenBLAS for the vision code.  Its thread count is one process-wide
 * setting, and changing it while another thread is inside a BLAS call is
 * not safe, so the code that sets it and the calls that rely on it run
 * under one recursive lock.  Image encodes are compute bound on the same
 * cores anyway: serializing them costs nothing in throughput. */
#pragma once

void moshi_blas_lock (void);
void moshi_blas_unlock (void);
/* Sets OpenBLAS's thread count; call with the lock held. */
void moshi_blas_set_threads (int n_threads);
