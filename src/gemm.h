/* Single-threaded SGEMM used by every layer: C = alpha * op(A) op(B) + beta * C, row-major.
 *
 * advtrain's own packed, register-blocked kernel (written with GCC vector extensions, so the
 * compiler emits AVX-512 or AVX2 for -march=native) runs where it is built for AVX-512, where it
 * beats OpenBLAS on these layers' shapes, and where OpenBLAS does not recognise the CPU and falls
 * back to SSE3 ("Prescott") kernels, 5-10x slower than the processor allows. Elsewhere at_gemm
 * calls OpenBLAS. */
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
/* Which one at_gemm uses: "OpenBLAS (<core>)" or "advtrain kernel (OpenBLAS chose <core>)". */
const char *at_gemm_backend(void);

/* at_sgemm and at_fma_burn (advtrain.h) give benchmarks these two and the arithmetic peak. */
#endif
