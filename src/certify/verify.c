/* Verified accuracy over a dataset: the share of samples for which no input of the eps-ball
 * (clipped to [0,1]) changes the prediction, proven by the margin bounds of ibp.c. */
#define _POSIX_C_SOURCE 200809L /* clock_gettime (clang does not see it without) */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <time.h>

enum { VERIFY_BATCH = 256 };

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Counts the batch's samples that are classified correctly, and those also verified. */
static at_status verify_batch(at_net *net, const float *x, const int32_t *y, int n, float eps,
                              at_bound_method method, float *margins, at_verify_result *res) {
    const int K = at_net_out_size(net);
    const float *logits = NULL;
    at_status s = at_net_predict(net, x, n, &logits);
    if (s == AT_OK) s = at_net_margin_bounds(net, x, y, n, eps, method, margins);
    if (s != AT_OK) return s;
    for (int i = 0; i < n; i++) {
        const bool correct = at_argmax(logits + (size_t)i * K, K) == y[i];
        bool verified = correct; /* the clean input is in the ball: a verified sample is correct */
        for (int j = 0; j < K && verified; j++) verified = margins[(size_t)i * K + j] > 0.0f;
        res->clean_correct += correct;
        res->verified += verified;
    }
    return AT_OK;
}

at_status at_verify_dataset(at_net *net, const at_dataset *ds, int n, float eps, at_bound_method method,
                            at_verify_result *res) {
    if (!net || !ds || !res) return at_fail(AT_ERR_ARG, "at_verify_dataset: NULL argument");
    *res = (at_verify_result){0};
    if (ds->targets) return at_fail(AT_ERR_ARG, "at_verify_dataset: needs a classification dataset");
    if (at_dataset_sample_size(ds) != at_net_in_size(net))
        return at_fail(AT_ERR_SHAPE, "at_verify_dataset: samples of %d floats, the network takes %d",
                       at_dataset_sample_size(ds), at_net_in_size(net));
    if (n <= 0 || n > ds->n) n = ds->n;
    const int D = at_net_in_size(net), K = at_net_out_size(net), B = AT_MIN(VERIFY_BATCH, AT_MAX(n, 1));
    float *x = malloc(sizeof(float) * (size_t)B * D), *margins = malloc(sizeof(float) * (size_t)B * K);
    int32_t *y = malloc(sizeof(int32_t) * B);
    at_status s = x && margins && y ? AT_OK : at_fail(AT_ERR_NOMEM, "at_verify_dataset: out of memory");
    const double start = now();
    for (int first = 0; s == AT_OK && first < n; first += B) {
        const int m = AT_MIN(B, n - first);
        at_dataset_range(ds, first, m, x, y, NULL);
        s = verify_batch(net, x, y, m, eps, method, margins, res);
    }
    res->samples = s == AT_OK ? n : 0;
    res->seconds = now() - start;
    free(x);
    free(margins);
    free(y);
    return s;
}
