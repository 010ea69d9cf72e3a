/* Conv2d as im2col over the whole chunk plus one GEMM.
 *
 * The column matrix is (C*K*K) x (n*OH*OW): one row per kernel tap, one column per output pixel
 * of every sample of a block, so one GEMM with the (OC x C*K*K) weight covers the block. Its
 * result is channel-major (OC x n*OH*OW) and is permuted back to NCHW. Blocks are sized so the
 * columns stay in cache (block_samples). Backward rebuilds the columns instead of keeping them:
 * rebuilding from the input in cache is cheaper than reading a stored copy back from memory.
 * Small stride-1 layers, where building and permuting columns costs more than the multiply,
 * take the direct path of conv2d_direct.c instead. */
#include "layer.h"

#include "conv2d_direct.h"
#include "gemm.h"
#include "vec.h"
#include <string.h>

static at_status conv_setup(at_layer *L) {
    at_layer_desc *d = &L->d;
    if (d->stride == 0) d->stride = 1; /* documented default */
    if (d->out <= 0 || d->kernel <= 0 || d->stride <= 0 || d->pad < 0)
        return at_fail(AT_ERR_SHAPE,
                       "conv layer %d: out_channels, kernel and stride must be positive and "
                       "padding non-negative (got %d, %d, %d, %d)",
                       L->index, d->out, d->kernel, d->stride, d->pad);
    if (L->in_h + 2 * d->pad < d->kernel || L->in_w + 2 * d->pad < d->kernel)
        return at_fail(AT_ERR_SHAPE, "conv layer %d: kernel %d larger than its padded %dx%d input",
                       L->index, d->kernel, L->in_h + 2 * d->pad, L->in_w + 2 * d->pad);
    L->out_c = d->out;
    L->out_h = at_window_out(L->in_h, d->kernel, d->stride, d->pad);
    L->out_w = at_window_out(L->in_w, d->kernel, d->stride, d->pad);
    L->w_count = (size_t)d->out * L->in_c * d->kernel * d->kernel;
    L->b_count = (size_t)d->out;
    return AT_OK;
}

/* Samples per im2col block. Building the columns for a whole chunk at once writes a matrix
 * C*K*K times larger than the input and reads it back from memory; blocks of a few samples keep
 * it in cache, with enough output pixels per block for an efficient GEMM. */
static int block_samples(const at_layer *L, int n) {
    const size_t area = (size_t)L->out_h * L->out_w;
    const size_t taps = (size_t)L->in_c * L->d.kernel * L->d.kernel;
    size_t for_gemm = (1024 + area - 1) / area;              /* >= 1024 GEMM columns */
    size_t for_cache = (256 * 1024 / sizeof(float)) / (taps * area); /* columns <= 1 MiB */
    size_t b = for_gemm < for_cache ? for_gemm : for_cache;
    if (b < 1) b = 1;
    return (int)(b < (size_t)n ? b : (size_t)n);
}

/* Scratch for one block: the columns, then the channel-major GEMM output (forward) or output
 * gradient (backward). */
static size_t conv_workspace(const at_layer *L, int n) {
    if (at_conv2d_direct_applies(L)) return at_conv2d_direct_workspace(L);
    size_t pixels = (size_t)block_samples(L, n) * L->out_h * L->out_w;
    size_t taps = (size_t)L->in_c * L->d.kernel * L->d.kernel;
    return taps * pixels + (size_t)L->out_c * pixels;
}

/* Output columns [lo, hi) read inside the input row for kernel column kj; outside is padding. */
static void valid_range(int OW, int W, int S, int P, int kj, int *lo, int *hi) {
    /* iw = ow*S - P + kj must lie in [0, W) */
    int first = P - kj > 0 ? (P - kj + S - 1) / S : 0;
    int last = (W - 1 + P - kj) >= 0 ? (W - 1 + P - kj) / S + 1 : 0;
    *lo = AT_MIN(first, OW);
    *hi = AT_MAX(*lo, AT_MIN(last, OW));
}

static void im2col(const at_layer *L, const float *x, int n, float *col) {
    const int C = L->in_c, H = L->in_h, W = L->in_w, K = L->d.kernel, S = L->d.stride,
              P = L->d.pad, OH = L->out_h, OW = L->out_w;
    const size_t pixels = (size_t)n * OH * OW;
    for (int c = 0; c < C; c++)
        for (int ki = 0; ki < K; ki++)
            for (int kj = 0; kj < K; kj++) {
                float *row = col + ((size_t)(c * K + ki) * K + kj) * pixels;
                int lo, hi;
                valid_range(OW, W, S, P, kj, &lo, &hi);
                for (int s = 0; s < n; s++) {
                    const float *plane = x + ((size_t)s * C + c) * H * W;
                    for (int oh = 0; oh < OH; oh++) {
                        int ih = oh * S - P + ki;
                        float *dst = row + ((size_t)s * OH + oh) * OW;
                        if (ih < 0 || ih >= H) {
                            memset(dst, 0, sizeof(float) * OW);
                            continue;
                        }
                        const float *src = plane + (size_t)ih * W - P + kj;
                        for (int ow = 0; ow < lo; ow++) dst[ow] = 0.0f;
                        if (S == 1)
                            memcpy(dst + lo, src + lo, sizeof(float) * (hi - lo));
                        else
                            for (int ow = lo; ow < hi; ow++) dst[ow] = src[ow * S];
                        for (int ow = hi; ow < OW; ow++) dst[ow] = 0.0f;
                    }
                }
            }
}

/* Adds every column entry back to the input pixel it was copied from. dx must be zeroed. */
static void col2im(const at_layer *L, const float *col, int n, float *dx) {
    const int C = L->in_c, H = L->in_h, W = L->in_w, K = L->d.kernel, S = L->d.stride,
              P = L->d.pad, OH = L->out_h, OW = L->out_w;
    const size_t pixels = (size_t)n * OH * OW;
    for (int c = 0; c < C; c++)
        for (int ki = 0; ki < K; ki++)
            for (int kj = 0; kj < K; kj++) {
                const float *row = col + ((size_t)(c * K + ki) * K + kj) * pixels;
                int lo, hi;
                valid_range(OW, W, S, P, kj, &lo, &hi);
                for (int s = 0; s < n; s++) {
                    float *plane = dx + ((size_t)s * C + c) * H * W;
                    for (int oh = 0; oh < OH; oh++) {
                        int ih = oh * S - P + ki;
                        if (ih < 0 || ih >= H) continue;
                        const float *src = row + ((size_t)s * OH + oh) * OW;
                        float *dst = plane + (size_t)ih * W - P + kj;
                        for (int ow = lo; ow < hi; ow++) dst[ow * S] += src[ow];
                    }
                }
            }
}

static void conv_forward(const at_layer *L, const at_ctx *ctx, const float *x, float *y, int n) {
    if (at_conv2d_direct_applies(L)) {
        at_conv2d_direct_forward(L, ctx, x, y, n);
        return;
    }
    const int OC = L->out_c, area = L->out_h * L->out_w;
    const int taps = L->in_c * L->d.kernel * L->d.kernel;
    const int block = block_samples(L, n);
    const float *Wt = ctx->params + L->w_off, *b = ctx->params + L->b_off;
    float *col = ctx->work, *out = ctx->work + (size_t)taps * block * area;
    for (int s0 = 0; s0 < n; s0 += block) {
        const int m = AT_MIN(block, n - s0);
        const size_t pixels = (size_t)m * area;
        im2col(L, x + (size_t)s0 * L->in_size, m, col);
        /* One sample's GEMM output is already NCHW: write it in place. */
        float *dst0 = y + (size_t)s0 * OC * area;
        float *res = m == 1 ? dst0 : out;
        at_gemm(false, false, OC, (int)pixels, taps, 1.0f, Wt, taps, col, (int)pixels, 0.0f, res,
                (int)pixels);
        for (int s = 0; s < m; s++)
            for (int o = 0; o < OC; o++) {
                const float *src = res + (size_t)o * pixels + (size_t)s * area;
                float *dst = dst0 + ((size_t)s * OC + o) * area;
                if (L->relu_out)
                    for (int p = 0; p < area; p++) dst[p] = at_relu(src[p] + b[o]);
                else
                    for (int p = 0; p < area; p++) dst[p] = src[p] + b[o];
            }
    }
}

static void conv_backward(const at_layer *L, const at_ctx *ctx, const float *x, const float *y,
                          const float *dy, float *dx, int n, bool param_grads) {
    if (at_conv2d_direct_applies(L)) {
        at_conv2d_direct_backward(L, ctx, x, y, dy, dx, n, param_grads);
        return;
    }
    const int OC = L->out_c, area = L->out_h * L->out_w;
    const int taps = L->in_c * L->d.kernel * L->d.kernel;
    const int block = block_samples(L, n);
    const float *Wt = ctx->params + L->w_off;
    float *dW = ctx->grads + L->w_off, *db = ctx->grads + L->b_off;
    float *col = ctx->work, *dyc_buf = ctx->work + (size_t)taps * block * area;
    for (int s0 = 0; s0 < n; s0 += block) {
        const int m = AT_MIN(block, n - s0);
        const size_t pixels = (size_t)m * area;
        const float *dy0 = dy + (size_t)s0 * OC * area;
        /* dy to channel-major, the GEMM layout (one sample's is already), zero where a fused
         * ReLU's output y is not positive. */
        const float *dyc = dy0, *y0 = y + (size_t)s0 * OC * area;
        if (m > 1 || L->relu_out) {
            for (int s = 0; s < m; s++)
                for (int o = 0; o < OC; o++) {
                    float *dst = dyc_buf + (size_t)o * pixels + (size_t)s * area;
                    const size_t from = ((size_t)s * OC + o) * area;
                    if (L->relu_out)
                        at_relu_grad(dst, dy0 + from, y0 + from, area);
                    else
                        memcpy(dst, dy0 + from, sizeof(float) * area);
                }
            dyc = dyc_buf;
        }
        if (param_grads) {
            im2col(L, x + (size_t)s0 * L->in_size, m, col);
            at_gemm(false, true, OC, taps, (int)pixels, 1.0f, dyc, (int)pixels, col, (int)pixels,
                    1.0f, dW, taps);
            for (int o = 0; o < OC; o++) db[o] += sum_floats(dyc + (size_t)o * pixels, pixels);
        }
        if (dx) {
            /* The column buffer is free again: it takes the column gradient. */
            float *dxb = dx + (size_t)s0 * L->in_size;
            at_gemm(true, false, taps, (int)pixels, OC, 1.0f, Wt, taps, dyc, (int)pixels, 0.0f, col,
                    (int)pixels);
            memset(dxb, 0, sizeof(float) * (size_t)m * L->in_size);
            col2im(L, col, m, dxb);
        }
    }
}

/* Both paths apply a following ReLU while writing their output and mask dy while copying it. */
static bool conv_fuses_relu(const at_layer *L) { return true; }

const at_layer_ops at_conv2d_ops = {"conv", conv_setup, conv_workspace, conv_forward,
                                    conv_backward, conv_fuses_relu};
