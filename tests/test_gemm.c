/* The own SGEMM kernel and the dispatching at_gemm against a double-precision reference, over
 * shapes that hit every edge of the blocking (partial MR/NR tiles, several KC and MC blocks);
 * the public at_sgemm (both kernels, argument checks) and at_fma_burn. */
#include "advtrain.h"
#include "gemm.h"
#include "testutil.h"

static void reference(bool ta, bool tb, int m, int n, int k, float alpha, const float *a, int lda,
                      const float *b, int ldb, float beta, const float *c0, float *c, int ldc) {
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double sum = 0.0;
            for (int p = 0; p < k; p++) {
                double av = ta ? a[(size_t)p * lda + i] : a[(size_t)i * lda + p];
                double bv = tb ? b[(size_t)j * ldb + p] : b[(size_t)p * ldb + j];
                sum += av * bv;
            }
            c[(size_t)i * ldc + j] = (float)(alpha * sum + (beta != 0.0f ? beta * c0[(size_t)i * ldc + j] : 0.0));
        }
}

typedef void (*gemm_fn)(bool, bool, int, int, int, float, const float *, int, const float *, int,
                        float, float *, int);

static void check_shape(gemm_fn fn, const char *name, int m, int n, int k, at_rng *rng) {
    const int ldc = n + 3; /* leading dimensions larger than the matrix */
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            int lda = (ta ? m : k) + 1, ldb = (tb ? k : n) + 2;
            size_t asz = (size_t)(ta ? k : m) * lda, bsz = (size_t)(tb ? n : k) * ldb;
            float *a = malloc(sizeof(float) * asz), *b = malloc(sizeof(float) * bsz);
            float *c0 = malloc(sizeof(float) * (size_t)m * ldc), *c = malloc(sizeof(float) * (size_t)m * ldc);
            float *want = malloc(sizeof(float) * (size_t)m * ldc);
            for (size_t i = 0; i < asz; i++) a[i] = at_rng_uniform(rng) - 0.5f;
            for (size_t i = 0; i < bsz; i++) b[i] = at_rng_uniform(rng) - 0.5f;
            for (size_t i = 0; i < (size_t)m * ldc; i++) c0[i] = at_rng_uniform(rng) - 0.5f;
            const float alphas[] = {1.0f, -0.5f}, betas[] = {0.0f, 1.0f, 0.25f};
            for (int ai = 0; ai < 2; ai++)
                for (int bi = 0; bi < 3; bi++) {
                    memcpy(c, c0, sizeof(float) * (size_t)m * ldc);
                    memcpy(want, c0, sizeof(float) * (size_t)m * ldc);
                    /* beta = 0 must ignore whatever C held, NaN included */
                    if (betas[bi] == 0.0f) c[0] = NAN;
                    fn(ta, tb, m, n, k, alphas[ai], a, lda, b, ldb, betas[bi], c, ldc);
                    reference(ta, tb, m, n, k, alphas[ai], a, lda, b, ldb, betas[bi], c0, want, ldc);
                    double worst = 0.0;
                    for (int i = 0; i < m; i++)
                        for (int j = 0; j < n; j++) {
                            double d = fabs((double)c[(size_t)i * ldc + j] - want[(size_t)i * ldc + j]);
                            if (!(d <= worst)) worst = d;
                        }
                    /* float accumulation of k terms of size <= 0.25 */
                    double tol = 1e-6 * (k + 1) + 1e-6;
                    CHECK_MSG(worst <= tol, "%s %dx%dx%d ta=%d tb=%d alpha=%g beta=%g: max error %g",
                              name, m, n, k, ta, tb, (double)alphas[ai], (double)betas[bi], worst);
                    /* padding columns between n and ldc are never written */
                    bool untouched = true;
                    for (int i = 0; i < m; i++)
                        for (int j = n; j < ldc; j++)
                            untouched &= c[(size_t)i * ldc + j] == c0[(size_t)i * ldc + j];
                    CHECK_MSG(untouched, "%s wrote outside C", name);
                }
            free(a);
            free(b);
            free(c0);
            free(c);
            free(want);
        }
}

/* Two paths of the own kernel read A in place instead of packing it: the short-A path
 * (C = A B^T, A short: C^T = B A^T, a convolution's forward and the linear layers') and the
 * unpacked path (C = A B, few rows, one or two vectors of columns, long k: a small convolution's
 * weight gradient). With alpha 1 and beta 0 or 1 both must give the same bits as the packed
 * path, reached here by passing A already transposed. */
static void check_path_bits(bool tb, int m, int n, int k, at_rng *rng) {
    const int lda = k + 3, ldb = tb ? k + 5 : n + 5, ldc = n + 2;
    const size_t bsz = tb ? (size_t)n * ldb : (size_t)k * ldb;
    float *a = malloc(sizeof(float) * (size_t)m * lda), *at = malloc(sizeof(float) * (size_t)k * m);
    float *b = malloc(sizeof(float) * bsz);
    float *c1 = malloc(sizeof(float) * (size_t)m * ldc), *c2 = malloc(sizeof(float) * (size_t)m * ldc);
    for (size_t i = 0; i < (size_t)m * lda; i++) a[i] = at_rng_uniform(rng) - 0.5f;
    for (int i = 0; i < m; i++)
        for (int p = 0; p < k; p++) at[(size_t)p * m + i] = a[(size_t)i * lda + p];
    for (size_t i = 0; i < bsz; i++) b[i] = at_rng_uniform(rng) - 0.5f;
    for (int beta = 0; beta <= 1; beta++) {
        for (size_t i = 0; i < (size_t)m * ldc; i++) c1[i] = c2[i] = at_rng_uniform(rng) - 0.5f;
        at_gemm_own(false, tb, m, n, k, 1.0f, a, lda, b, ldb, (float)beta, c1, ldc);
        at_gemm_own(true, tb, m, n, k, 1.0f, at, m, b, ldb, (float)beta, c2, ldc);
        CHECK_MSG(memcmp(c1, c2, sizeof(float) * (size_t)m * ldc) == 0,
                  "%s %dx%dx%d beta=%d: bits differ from the packed path", tb ? "NT" : "NN", m, n, k,
                  beta);
    }
    free(a);
    free(at);
    free(b);
    free(c1);
    free(c2);
}

/* The public entry point (what advtrain bench runs), through each kernel. */
static void sgemm_own(bool ta, bool tb, int m, int n, int k, float alpha, const float *a, int lda, const float *b,
                      int ldb, float beta, float *c, int ldc) {
    CHECK_OK(at_sgemm(AT_GEMM_OWN, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc));
}

static void sgemm_openblas(bool ta, bool tb, int m, int n, int k, float alpha, const float *a, int lda,
                           const float *b, int ldb, float beta, float *c, int ldc) {
    CHECK_OK(at_sgemm(AT_GEMM_OPENBLAS, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc));
}

/* Arguments OpenBLAS would print about (or crash on) are refused with AT_ERR_ARG. */
static void check_sgemm_arguments(void) {
    float a[6] = {0}, b[6] = {0}, c[4] = {0};
    CHECK(at_sgemm(AT_GEMM_OPENBLAS, false, false, -1, 2, 3, 1.0f, a, 3, b, 2, 0.0f, c, 2) == AT_ERR_ARG);
    CHECK(at_sgemm(AT_GEMM_OPENBLAS, false, false, 2, 2, 3, 1.0f, a, 2, b, 2, 0.0f, c, 2) == AT_ERR_ARG); /* lda < k */
    CHECK(at_sgemm(AT_GEMM_OPENBLAS, true, false, 2, 2, 3, 1.0f, a, 1, b, 2, 0.0f, c, 2) == AT_ERR_ARG); /* lda < m */
    CHECK(at_sgemm(AT_GEMM_OWN, false, true, 2, 2, 3, 1.0f, a, 3, b, 2, 0.0f, c, 2) == AT_ERR_ARG);     /* ldb < k */
    CHECK(at_sgemm(AT_GEMM_OWN, false, false, 2, 2, 3, 1.0f, a, 3, b, 2, 0.0f, c, 1) == AT_ERR_ARG);    /* ldc < n */
    CHECK(at_sgemm(AT_GEMM_OWN, false, false, 2, 2, 3, 1.0f, NULL, 3, b, 2, 0.0f, c, 2) == AT_ERR_ARG);
    CHECK(at_sgemm((at_gemm_kernel)7, false, false, 2, 2, 3, 1.0f, a, 3, b, 2, 0.0f, c, 2) == AT_ERR_ARG);
    CHECK(strstr(at_error_message(), "at_sgemm") != NULL);
    CHECK_OK(at_sgemm(AT_GEMM_OPENBLAS, false, false, 2, 2, 3, 1.0f, a, 3, b, 2, 0.0f, c, 2));
    double flops = -1.0;
    CHECK_OK(at_fma_burn(1000, &flops));
    CHECK(flops >= 2.0 * 4 * 12 * 1000); /* at least 4 lanes (SSE) */
    CHECK(at_fma_burn(-1, &flops) == AT_ERR_ARG);
}

int main(void) {
    at_rng rng;
    at_rng_seed(&rng, 7);
    const int shapes[][3] = {{1, 1, 1},   {7, 5, 3},    {8, 32, 1},   {9, 33, 17},  {6, 200, 25},
                             {16, 100, 150}, {130, 40, 300}, {33, 70, 513}, {3, 2100, 4}, {140, 65, 12}};
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        check_shape(at_gemm_own, "own", shapes[i][0], shapes[i][1], shapes[i][2], &rng);
        check_shape(at_gemm, "at_gemm", shapes[i][0], shapes[i][1], shapes[i][2], &rng);
        check_shape(sgemm_own, "at_sgemm own", shapes[i][0], shapes[i][1], shapes[i][2], &rng);
        check_shape(sgemm_openblas, "at_sgemm openblas", shapes[i][0], shapes[i][1], shapes[i][2], &rng);
    }
    check_sgemm_arguments();
    /* smallcnn's products (convolution forwards, fc1 forward, conv1's weight gradient), ragged
     * edges past the block length of k, more rows than one group */
    const int nt[][3] = {{32, 245, 256}, {16, 1176, 16}, {64, 100, 1568}, {5, 13, 300}, {17, 9, 513},
                         {32, 7, 40}, {70, 33, 97}};
    for (size_t i = 0; i < sizeof nt / sizeof *nt; i++) check_path_bits(true, nt[i][0], nt[i][1], nt[i][2], &rng);
    const int nn[][3] = {{16, 16, 1176}, {7, 16, 300}, {32, 32, 513}, {9, 32, 256}};
    for (size_t i = 0; i < sizeof nn / sizeof *nn; i++) check_path_bits(false, nn[i][0], nn[i][1], nn[i][2], &rng);
    /* k = 0: C = beta * C */
    float c[4] = {1, 2, 3, 4}, dummy = 0;
    at_gemm_own(false, false, 2, 2, 0, 1.0f, &dummy, 1, &dummy, 2, 0.5f, c, 2);
    CHECK(c[0] == 0.5f && c[3] == 2.0f);
    printf("gemm backend: %s\n", at_gemm_backend());
    return tu_finish("test_gemm");
}
