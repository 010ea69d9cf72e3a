/* The thread count, and how a range of rows is split among threads. Kept apart from status.c:
 * choosing the count also chooses the GEMM kernel (gemm.c), which reports errors through
 * status.c. */
#include "internal.h"

#include "gemm.h"

#include <cblas.h>
#include <omp.h>

/* Threads: OpenMP splits each batch across threads; every BLAS call inside runs single-threaded,
 * so the two never fight over cores. */
static int thread_count = 0; /* 0: not chosen yet */

void at_set_threads(int n) {
    if (n < 1) n = 1;
    thread_count = n;
    openblas_set_num_threads(1);
    (void)at_gemm_backend(); /* choose the GEMM kernel now, before any parallel region */
}

int at_get_threads(void) {
    if (thread_count == 0) at_set_threads(omp_get_num_procs());
    return thread_count;
}

void at_split_range(size_t n, int t, int T, size_t *lo, size_t *hi) {
    *lo = t == 0 ? 0 : (n * (size_t)t / (size_t)T) & ~(size_t)15;
    *hi = t == T - 1 ? n : (n * (size_t)(t + 1) / (size_t)T) & ~(size_t)15;
}

int at_rows_threads(int rows, size_t floats) {
    /* Below ~32k floats, waking a second thread costs more than it saves. */
    if (floats < 32768 || rows < 2) return 1;
    return AT_MIN(at_get_threads(), rows);
}
