/* Tiny test harness: CHECK records a failure and goes on; main returns non-zero if any failed. */
#ifndef ADVTRAIN_TESTUTIL_H
#define ADVTRAIN_TESTUTIL_H
#include <math.h>
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
