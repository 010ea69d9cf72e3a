/* MaxPool2d and AvgPool2d (floor mode; average counts padding, as PyTorch's default). */
#include "layer.h"

#include <math.h>
#include <string.h>

static at_status pool_setup(at_layer *L) {
    at_layer_desc *d = &L->d;
    if (d->stride == 0) d->stride = d->kernel; /* PyTorch: stride defaults to kernel_size */
    if (d->kernel <= 0 || d->stride <= 0 || d->pad < 0 || d->pad > d->kernel / 2)
        return at_fail(AT_ERR_SHAPE,
                       "pool layer %d: kernel and stride must be positive and padding at most "
                       "half the kernel (got kernel %d, stride %d, padding %d)",
                       L->index, d->kernel, d->stride, d->pad);
    if (L->in_h + 2 * d->pad < d->kernel || L->in_w + 2 * d->pad < d->kernel)
        return at_fail(AT_ERR_SHAPE, "pool layer %d: kernel %d larger than its %dx%d input",
                       L->index, d->kernel, L->in_h, L->in_w);
    L->out_c = L->in_c;
    L->out_h = at_window_out(L->in_h, d->kernel, d->stride, d->pad);
    L->out_w = at_window_out(L->in_w, d->kernel, d->stride, d->pad);
    return AT_OK;
}

static size_t pool_workspace(const at_layer *L, int n) { return 0; }

/* Index (within the plane) of the window's maximum: the first one in scan order, as PyTorch. */
static int window_argmax(const at_layer *L, const float *plane, int oh, int ow) {
    const int K = L->d.kernel, S = L->d.stride, P = L->d.pad, H = L->in_h, W = L->in_w;
    int best = -1;
    float best_v = -INFINITY;
    for (int ki = 0; ki < K; ki++) {
        int ih = oh * S - P + ki;
        if (ih < 0 || ih >= H) continue;
        for (int kj = 0; kj < K; kj++) {
            int iw = ow * S - P + kj;
            if (iw < 0 || iw >= W) continue;
            float v = plane[ih * W + iw];
            if (best < 0 || v > best_v || isnan(v)) {
                best = ih * W + iw;
                best_v = v;
                if (isnan(v)) return best;
            }
        }
    }
    return best;
}

/* The common 2x2 window, stride 2, no padding: four comparisons instead of the general scan.
 * Same answer as window_argmax (first maximum in scan order; NaN windows take the slow path). */
static bool is_2x2(const at_layer *L) { return L->d.kernel == 2 && L->d.stride == 2 && L->d.pad == 0; }

static inline int argmax_2x2(const at_layer *L, const float *plane, int oh, int ow) {
    const int W = L->in_w, i0 = 2 * oh * W + 2 * ow;
    const float a = plane[i0], b = plane[i0 + 1], c = plane[i0 + W], d = plane[i0 + W + 1];
    if (isnan(a + b + c + d)) return window_argmax(L, plane, oh, ow);
    int best = i0;
    float v = a;
    if (b > v) { v = b; best = i0 + 1; }
    if (c > v) { v = c; best = i0 + W; }
    if (d > v) best = i0 + W + 1;
    return best;
}

static inline int pool_argmax(const at_layer *L, bool fast, const float *plane, int oh, int ow) {
    return fast ? argmax_2x2(L, plane, oh, ow) : window_argmax(L, plane, oh, ow);
}

static void maxpool_forward(const at_layer *L, const at_ctx *ctx, const float *x, float *y, int n) {
    const int planes = n * L->in_c, in_area = L->in_h * L->in_w;
    const bool fast = is_2x2(L);
    for (int p = 0; p < planes; p++) {
        const float *plane = x + (size_t)p * in_area;
        float *out = y + (size_t)p * L->out_h * L->out_w;
        for (int oh = 0; oh < L->out_h; oh++)
            for (int ow = 0; ow < L->out_w; ow++)
                out[oh * L->out_w + ow] = plane[pool_argmax(L, fast, plane, oh, ow)];
    }
}

static void maxpool_backward(const at_layer *L, const at_ctx *ctx, const float *x, const float *y,
                             const float *dy, float *dx, int n, bool param_grads) {
    if (!dx) return;
    const int planes = n * L->in_c, in_area = L->in_h * L->in_w, out_area = L->out_h * L->out_w;
    const bool fast = is_2x2(L);
    memset(dx, 0, sizeof(float) * (size_t)planes * in_area);
    for (int p = 0; p < planes; p++) {
        const float *plane = x + (size_t)p * in_area;
        const float *g = dy + (size_t)p * out_area;
        float *d = dx + (size_t)p * in_area;
        for (int oh = 0; oh < L->out_h; oh++)
            for (int ow = 0; ow < L->out_w; ow++)
                d[pool_argmax(L, fast, plane, oh, ow)] += g[oh * L->out_w + ow];
    }
}

static void avgpool_forward(const at_layer *L, const at_ctx *ctx, const float *x, float *y, int n) {
    const int K = L->d.kernel, S = L->d.stride, P = L->d.pad, H = L->in_h, W = L->in_w;
    const int planes = n * L->in_c;
    const float scale = 1.0f / (float)(K * K);
    for (int p = 0; p < planes; p++) {
        const float *plane = x + (size_t)p * H * W;
        float *out = y + (size_t)p * L->out_h * L->out_w;
        for (int oh = 0; oh < L->out_h; oh++)
            for (int ow = 0; ow < L->out_w; ow++) {
                float sum = 0.0f;
                for (int ki = 0; ki < K; ki++) {
                    int ih = oh * S - P + ki;
                    if (ih < 0 || ih >= H) continue;
                    for (int kj = 0; kj < K; kj++) {
                        int iw = ow * S - P + kj;
                        if (iw >= 0 && iw < W) sum += plane[ih * W + iw];
                    }
                }
                out[oh * L->out_w + ow] = sum * scale;
            }
    }
}

static void avgpool_backward(const at_layer *L, const at_ctx *ctx, const float *x, const float *y,
                             const float *dy, float *dx, int n, bool param_grads) {
    if (!dx) return;
    const int K = L->d.kernel, S = L->d.stride, P = L->d.pad, H = L->in_h, W = L->in_w;
    const int planes = n * L->in_c;
    const float scale = 1.0f / (float)(K * K);
    memset(dx, 0, sizeof(float) * (size_t)planes * H * W);
    for (int p = 0; p < planes; p++) {
        float *d = dx + (size_t)p * H * W;
        const float *g = dy + (size_t)p * L->out_h * L->out_w;
        for (int oh = 0; oh < L->out_h; oh++)
            for (int ow = 0; ow < L->out_w; ow++) {
                float v = g[oh * L->out_w + ow] * scale;
                for (int ki = 0; ki < K; ki++) {
                    int ih = oh * S - P + ki;
                    if (ih < 0 || ih >= H) continue;
                    for (int kj = 0; kj < K; kj++) {
                        int iw = ow * S - P + kj;
                        if (iw >= 0 && iw < W) d[ih * W + iw] += v;
                    }
                }
            }
    }
}

const at_layer_ops at_maxpool2d_ops = {"maxpool", pool_setup, pool_workspace, maxpool_forward,
                                       maxpool_backward};
const at_layer_ops at_avgpool2d_ops = {"avgpool", pool_setup, pool_workspace, avgpool_forward,
                                       avgpool_backward};
