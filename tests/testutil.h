/* Tiny test harness: CHECK records a failure and goes on; main returns non-zero if any failed. */
#ifndef ADVTRAIN_TESTUTIL_H
#define ADVTRAIN_TESTUTIL_H
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int tu_checks, tu_failures;

#define CHECK(cond)                                                                        \
    do {                                                                                   \
        tu_checks++;                                                                       \
        if (!(cond)) {                                                                     \
            tu_failures++;                                                                 \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);      \
        }                                                                                  \
    } while (0)

#define CHECK_MSG(cond, ...)                                                               \
    do {                                                                                   \
        tu_checks++;                                                                       \
        if (!(cond)) {                                                                     \
            tu_failures++;                                                                 \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);       \
            fprintf(stderr, __VA_ARGS__);                                                  \
            fprintf(stderr, "\n");                                                         \
        }                                                                                  \
    } while (0)

/* A status-returning call that must succeed. */
#define CHECK_OK(call)                                                                     \
    do {                                                                                   \
        at_status tu_s = (call);                                                           \
        tu_checks++;                                                                       \
        if (tu_s != AT_OK) {                                                               \
            tu_failures++;                                                                 \
            fprintf(stderr, "%s:%d: %s returned %s: %s\n", __FILE__, __LINE__, #call,      \
                    at_status_name(tu_s), at_error_message());                             \
        }                                                                                  \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                              \
    do {                                                                                   \
        double tu_a = (a), tu_b = (b);                                                     \
        tu_checks++;                                                                       \
        if (!(fabs(tu_a - tu_b) <= (tol))) {                                               \
            tu_failures++;                                                                 \
            fprintf(stderr, "%s:%d: %s = %.9g, %s = %.9g (tol %.3g)\n", __FILE__, __LINE__, \
                    #a, tu_a, #b, tu_b, (double)(tol));                                    \
        }                                                                                  \
    } while (0)

/* Largest |a-b| / (atol + rtol*|b|) over n values: <= 1 means all within tolerance. */
static inline double tu_max_violation(const float *a, const float *b, size_t n, double atol,
                                      double rtol, size_t *worst) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double v = fabs((double)a[i] - (double)b[i]) / (atol + rtol * fabs((double)b[i]));
        if (v != v) v = INFINITY;
        if (v > m) {
            m = v;
            if (worst) *worst = i;
        }
    }
    return m;
}

/* Results that the engine computes sample by sample in chunks (evaluation, attack steps, kept or
 * rebuilt conv rows) must not depend on the chunking. With advtrain's own SGEMM kernel (built for
 * AVX-512, or where OpenBLAS misdetects the CPU) a row of a product never depends on the rows
 * around it, so they agree bit for bit; with OpenBLAS (its Haswell kernels on AVX2 CPUs) a row's
 * last bits can depend on the product's height, so they agree within rounding: every element
 * within 1e-5 of the largest |a|, and no NaN. */
static inline bool tu_same_chunked(const char *gemm_backend, const float *a, const float *b, size_t n) {
    if (strncmp(gemm_backend, "advtrain", 8) == 0) return memcmp(a, b, sizeof(float) * n) == 0;
    double scale = 0;
    for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs((double)a[i]));
    return tu_max_violation(a, b, n, 1e-5 * fmax(scale, 1e-30), 0, NULL) <= 1;
}

/* Path of a file in the source tree (tests run from the build directory). */
static inline const char *tu_source_path(const char *rel) {
    static char buf[4][4096];
    static int slot;
    const char *root = getenv("ADVTRAIN_SOURCE_DIR");
    char *out = buf[slot++ & 3];
    snprintf(out, 4096, "%s/%s", root ? root : "..", rel);
    return out;
}

static inline int tu_finish(const char *name) {
    printf("%s: %d passed, %d failed\n", name, tu_checks - tu_failures, tu_failures);
    return tu_failures ? 1 : 0;
}
#endif
