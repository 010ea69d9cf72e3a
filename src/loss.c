/* Losses with PyTorch's semantics: softmax cross-entropy (mean over the batch, optional label
 * smoothing) and mean squared error (mean over all elements). */
#include "internal.h"

#include <math.h>

int at_argmax(const float *v, int k) {
    int best = 0;
    for (int i = 1; i < k; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

at_status at_check_labels(const int32_t *labels, int n, int k) {
    for (int i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= k)
            return at_fail(AT_ERR_ARG, "label %d of sample %d is outside [0, %d)", labels[i], i, k);
    return AT_OK;
}

double at_ce_row(const float *z, int label, int k, double eps, int n, float *d) {
    const double off = eps / k;
    const int top = at_argmax(z, k);
    /* log-sum-exp around the maximum: no overflow for large logits. */
    double zmax = z[top], sum = 0.0, zsum = 0.0;
    for (int j = 0; j < k; j++) {
        sum += exp((double)z[j] - zmax);
        zsum += z[j];
    }
    double lse = zmax + log(sum);
    if (d)
        for (int j = 0; j < k; j++) {
            double p = exp((double)z[j] - lse);
            double q = off + (j == label ? 1.0 - eps : 0.0);
            d[j] = (float)((p - q) / n);
        }
    /* -sum_j q_j log p_j with q = (1-eps) onehot + eps/K */
    return (1.0 - eps) * (lse - z[label]) + off * (k * lse - zsum);
}

at_status at_cross_entropy(const float *logits, const int32_t *labels, int n, int k,
                           float label_smoothing, float *loss, float *dlogits, int *correct) {
    if (n <= 0 || k <= 0) return at_fail(AT_ERR_ARG, "cross-entropy needs n > 0 and k > 0");
    if (!(label_smoothing >= 0.0f && label_smoothing < 1.0f))
        return at_fail(AT_ERR_ARG, "label smoothing must be in [0, 1), got %g",
                       (double)label_smoothing);
    at_status s = at_check_labels(labels, n, k);
    if (s != AT_OK) return s;
    double total = 0.0;
    int hits = 0;
    for (int i = 0; i < n; i++) {
        const float *z = logits + (size_t)i * k;
        hits += at_argmax(z, k) == labels[i];
        total += at_ce_row(z, labels[i], k, label_smoothing, n, dlogits ? dlogits + (size_t)i * k : NULL);
    }
    *loss = (float)(total / n);
    if (correct) *correct = hits;
    if (!isfinite(*loss)) return at_fail(AT_ERR_NAN, "cross-entropy loss is %g", (double)*loss);
    return AT_OK;
}

at_status at_mse(const float *pred, const float *target, int n, int k, float *loss, float *dpred) {
    if (n <= 0 || k <= 0) return at_fail(AT_ERR_ARG, "MSE needs n > 0 and k > 0");
    const size_t count = (size_t)n * k;
    double total = 0.0;
    for (size_t i = 0; i < count; i++) {
        double diff = (double)pred[i] - target[i];
        total += diff * diff;
        if (dpred) dpred[i] = (float)(2.0 * diff / (double)count);
    }
    *loss = (float)(total / (double)count);
    if (!isfinite(*loss)) return at_fail(AT_ERR_NAN, "MSE loss is %g", (double)*loss);
    return AT_OK;
}

at_status at_cross_entropy_soft(const float *logits, const float *targets, int n, int k,
                                float *loss, float *dlogits, int *correct) {
    if (n <= 0 || k <= 0) return at_fail(AT_ERR_ARG, "cross-entropy needs n > 0 and k > 0");
    double total = 0.0;
    int hits = 0;
    for (int i = 0; i < n; i++) {
        const float *z = logits + (size_t)i * k, *q = targets + (size_t)i * k;
        int top = at_argmax(z, k);
        hits += top == at_argmax(q, k);
        double zmax = z[top], sum = 0.0, qsum = 0.0, qz = 0.0;
        for (int j = 0; j < k; j++) {
            if (!(q[j] >= 0.0f))
                return at_fail(AT_ERR_ARG, "soft target %d of sample %d is %g (must be >= 0)", j,
                               i, (double)q[j]);
            sum += exp((double)z[j] - zmax);
            qsum += q[j];
            qz += (double)q[j] * z[j];
        }
        double lse = zmax + log(sum);
        /* -sum_j q_j (z_j - lse) */
        total += qsum * lse - qz;
        if (dlogits) {
            float *d = dlogits + (size_t)i * k;
            for (int j = 0; j < k; j++)
                d[j] = (float)((qsum * exp((double)z[j] - lse) - q[j]) / n);
        }
    }
    *loss = (float)(total / n);
    if (correct) *correct = hits;
    if (!isfinite(*loss)) return at_fail(AT_ERR_NAN, "cross-entropy loss is %g", (double)*loss);
    return AT_OK;
}
