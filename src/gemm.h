/* Single-threaded SGEMM used by every layer: C = alpha * op(A) op(B) + beta * C, row-major.
 *
 * OpenBLAS picks its kernels from the CPU model name; on machines it does not recognise it falls
 * back to SSE3 ("Prescott") kernels, 5-10x slower than the processor allows. at_gemm then uses
 * advtrain's own packed, register-blocked kernel (written with GCC vector extensions, so the
 * compiler emits AVX-512 or AVX2 for -march=native). Elsewhere it calls OpenBLAS. */
#ifndef ADVTRAIN_GEMM_H
#define ADVTRAIN_GEMM_H
#include <stdbool.h>

void at_gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a, int lda,
             const float *b, int ldb, float beta, float *c, int ldc);

/* The two implementations, for tests and benchmarks. */
void at_gemm_blas(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a,
                  int lda, const float *b, int ldb, float beta, float *c, int ldc);
void at_gemm_own(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a,
                 int lda, const float *b, int ldb, float beta, float *c, int ldc);
/* Which one at_gemm uses: "openblas (<core>)" or "advtrain (<core> fallback)". */
const char *at_gemm_backend(void);
#endif
