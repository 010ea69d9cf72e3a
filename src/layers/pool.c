/* MaxPool2d and AvgPool2d (floor mode; average counts padding, as PyTorch's default). */
#include "layer.h"

#include <math.h>
#include <stdio.h>
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

/* The common 2x2 window, stride 2, no padding: a whole output row at a time, in loops the
 * compiler vectorizes. Same answer as window_argmax (the first maximum in scan order); a row
 * with a NaN in it takes window_argmax instead. */
static bool is_2x2(const at_layer *L) { return L->d.kernel == 2 && L->d.stride == 2 && L->d.pad == 0; }

/* out[i] = max of window i under input rows r0, r1, for `count` windows; nonzero if a window
 * holds a NaN. Inlined with a constant count, it becomes a few vector instructions. */
static inline __attribute__((always_inline)) int
max_windows(const float *r0, const float *r1, int count, float *out) {
    int nan_seen = 0;
    /* Unrolled completely, the loop would be left to the basic-block vectorizer, which fails. */
#pragma GCC unroll 1
    for (int i = 0; i < count; i++) {
        const float a = r0[2 * i], b = r0[2 * i + 1], c = r1[2 * i], d = r1[2 * i + 1];
        const float sum = a + b + c + d;
        nan_seen |= sum != sum;
        float v = b > a ? b : a;
        v = c > v ? c : v;
        out[i] = d > v ? d : v;
    }
    return nan_seen;
}

/* Window i's gradient g[i] goes to its maximum in d0/d1 (under input rows r0/r1), zeros to the
 * other three; nonzero if a window holds a NaN. */
static inline __attribute__((always_inline)) int
grad_windows(const float *r0, const float *r1, const float *g, int count, float *d0, float *d1) {
    int nan_seen = 0;
    for (int i = 0; i < count; i++) {
        const float a = r0[2 * i], b = r0[2 * i + 1], c = r1[2 * i], d = r1[2 * i + 1];
        const float sum = a + b + c + d;
        nan_seen |= sum != sum;
        /* Nested selects, no && or ||: branch-free, so the loop vectorizes. */
        const float grad = g[i], ab = b > a ? b : a, abc = c > ab ? c : ab;
        const float to_c = c > ab ? grad : 0.0f, to_b = b > a ? grad : 0.0f;
        d1[2 * i + 1] = d > abc ? grad : 0.0f;
        d1[2 * i] = d > abc ? 0.0f : to_c;
        d0[2 * i + 1] = d > abc ? 0.0f : c > ab ? 0.0f : to_b;
        d0[2 * i] = d > abc ? 0.0f : c > ab ? 0.0f : b > a ? 0.0f : grad;
    }
    return nan_seen;
}

/* Rows are short (14 and 5 windows in LeNet): a loop over a row would spend most of its time in
 * its scalar remainder, with unpredictable branches. Rows go instead as blocks of a constant
 * width, the last block shifted back to end at the row's end (it recomputes a few windows, with
 * the same results); rows narrower than a block go through a zero-padded copy. */
enum { BLOCK = 8 };

/* out[ow] = max of window ow under input rows r0, r1; false if a window holds a NaN. */
static bool max_row_2x2(const float *r0, const float *r1, int OW, float *out) {
    int nan_seen = 0;
    if (OW < BLOCK) {
        float a0[2 * BLOCK] = {0}, a1[2 * BLOCK] = {0}, o[BLOCK];
        memcpy(a0, r0, sizeof(float) * 2 * OW);
        memcpy(a1, r1, sizeof(float) * 2 * OW);
        nan_seen = max_windows(a0, a1, BLOCK, o);
        memcpy(out, o, sizeof(float) * OW);
        return !nan_seen;
    }
    for (int ow = 0; ow < OW; ow += BLOCK) {
        const int first = AT_MIN(ow, OW - BLOCK);
        nan_seen |= max_windows(r0 + 2 * first, r1 + 2 * first, BLOCK, out + first);
    }
    return !nan_seen;
}

/* Window gradients into dx rows d0, d1; false if a window holds a NaN. */
static bool grad_row_2x2(const float *r0, const float *r1, const float *g, int OW, float *d0,
                         float *d1) {
    int nan_seen = 0;
    if (OW < BLOCK) {
        float a0[2 * BLOCK] = {0}, a1[2 * BLOCK] = {0}, gb[BLOCK] = {0}, o0[2 * BLOCK],
              o1[2 * BLOCK];
        memcpy(a0, r0, sizeof(float) * 2 * OW);
        memcpy(a1, r1, sizeof(float) * 2 * OW);
        memcpy(gb, g, sizeof(float) * OW);
        nan_seen = grad_windows(a0, a1, gb, BLOCK, o0, o1);
        memcpy(d0, o0, sizeof(float) * 2 * OW);
        memcpy(d1, o1, sizeof(float) * 2 * OW);
        return !nan_seen;
    }
    for (int ow = 0; ow < OW; ow += BLOCK) {
        const int first = AT_MIN(ow, OW - BLOCK);
        nan_seen |= grad_windows(r0 + 2 * first, r1 + 2 * first, g + first, BLOCK, d0 + 2 * first,
                                 d1 + 2 * first);
    }
    return !nan_seen;
}

static void maxpool_forward(const at_layer *L, const at_ctx *ctx, const float *x, float *y, int n) {
    const int planes = n * L->in_c, in_area = L->in_h * L->in_w, W = L->in_w;
    const bool fast = is_2x2(L);
    for (int p = 0; p < planes; p++) {
        const float *plane = x + (size_t)p * in_area;
        float *out = y + (size_t)p * L->out_h * L->out_w;
        for (int oh = 0; oh < L->out_h; oh++) {
            float *row = out + oh * L->out_w;
            const float *r0 = plane + 2 * oh * W;
            if (fast && max_row_2x2(r0, r0 + W, L->out_w, row)) continue;
            for (int ow = 0; ow < L->out_w; ow++) row[ow] = plane[window_argmax(L, plane, oh, ow)];
        }
    }
}

/* The 2x2 path writes every dx element once: windows do not overlap, and the row and column a
 * floor-mode pool leaves out get zeros. */
static void maxpool_backward_2x2(const at_layer *L, const float *x, const float *dy, float *dx,
                                 int n) {
    const int planes = n * L->in_c, H = L->in_h, W = L->in_w, OH = L->out_h, OW = L->out_w;
    for (int p = 0; p < planes; p++) {
        const float *plane = x + (size_t)p * H * W;
        const float *g = dy + (size_t)p * OH * OW;
        float *d = dx + (size_t)p * H * W;
        for (int oh = 0; oh < OH; oh++) {
            const float *r0 = plane + 2 * oh * W, *gr = g + oh * OW;
            float *d0 = d + 2 * oh * W, *d1 = d0 + W;
            if (!grad_row_2x2(r0, r0 + W, gr, OW, d0, d1)) {
                memset(d0, 0, sizeof(float) * 2 * W);
                for (int ow = 0; ow < OW; ow++) d[window_argmax(L, plane, oh, ow)] += gr[ow];
            }
            for (int w = 2 * OW; w < W; w++) d0[w] = d1[w] = 0.0f;
        }
        if (2 * OH < H) memset(d + 2 * OH * W, 0, sizeof(float) * (H - 2 * OH) * W);
    }
}

static void maxpool_backward(const at_layer *L, const at_ctx *ctx, const float *x, const float *y,
                             const float *dy, float *dx, int n, bool param_grads) {
    if (!dx) return;
    if (is_2x2(L)) {
        maxpool_backward_2x2(L, x, dy, dx, n);
        return;
    }
    const int planes = n * L->in_c, in_area = L->in_h * L->in_w, out_area = L->out_h * L->out_w;
    memset(dx, 0, sizeof(float) * (size_t)planes * in_area);
    for (int p = 0; p < planes; p++) {
        const float *plane = x + (size_t)p * in_area;
        const float *g = dy + (size_t)p * out_area;
        float *d = dx + (size_t)p * in_area;
        for (int oh = 0; oh < L->out_h; oh++)
            for (int ow = 0; ow < L->out_w; ow++)
                d[window_argmax(L, plane, oh, ow)] += g[oh * L->out_w + ow];
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

/* maxpool:K[:STRIDE[:PAD]] and avgpool:K[:STRIDE[:PAD]]; the stride defaults to K. */
static at_status pool_parse(at_layer_desc *d, const double *args, int count, const char *const *keys,
                            const double *vals, int nkeys, const char *token) {
    at_status s = at_spec_whole(args, count, token);
    if (s != AT_OK) return s;
    d->kernel = (int)args[0];
    d->stride = count > 1 ? (int)args[1] : (int)args[0];
    d->pad = count > 2 ? (int)args[2] : 0;
    return at_spec_no_keys(nkeys, keys, token);
}

static void pool_word(const at_layer_desc *d, char *buf, size_t cap) {
    snprintf(buf, cap, "%s:%d:%d:%d", d->kind == AT_LAYER_MAXPOOL2D ? "maxpool" : "avgpool",
             d->kernel, d->stride, d->pad);
}

static void pool_describe(const at_layer *L, char *buf, size_t cap) {
    snprintf(buf, cap, "%s(kernel_size=%d, stride=%d, padding=%d)",
             L->d.kind == AT_LAYER_MAXPOOL2D ? "MaxPool2d" : "AvgPool2d", L->d.kernel, L->d.stride,
             L->d.pad);
}

const at_layer_ops at_maxpool2d_ops = {.name = "maxpool", .setup = pool_setup,
                                       .workspace = pool_workspace, .forward = maxpool_forward,
                                       .backward = maxpool_backward, .min_args = 1, .max_args = 3,
                                       .parse = pool_parse, .spec_word = pool_word,
                                       .describe = pool_describe,
                                       .bound_rule = AT_BOUND_MONOTONE};
const at_layer_ops at_avgpool2d_ops = {.name = "avgpool", .setup = pool_setup,
                                       .workspace = pool_workspace, .forward = avgpool_forward,
                                       .backward = avgpool_backward, .min_args = 1, .max_args = 3,
                                       .parse = pool_parse, .spec_word = pool_word,
                                       .describe = pool_describe,
                                       .bound_rule = AT_BOUND_AFFINE};
