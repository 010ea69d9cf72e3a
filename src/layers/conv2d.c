/* Conv2d as one GEMM per block of samples over the column matrix, stored as rows.
 *
 * im2row writes one row of C*K*K taps per output pixel (n*OH*OW rows for a block of n samples).
 * The forward product is W (OC x taps) times the rows transposed: gemm.c's short-A path reads the
 * rows in place and transposes only the small weight. The weight gradient is dY (OC x pixels)
 * times the rows, read in place as a plain B. The result of the forward is channel-major
 * (OC x pixels) and is permuted back to NCHW with the bias (and a fused ReLU). A training-mode
 * forward builds the rows in the layer's kept buffer (ctx->kept), where the weight gradient
 * reads them back; other passes (attacks, evaluation) build them in scratch, and a backward
 * without kept rows rebuilds them. Blocks are sized so the rows stay in cache (block_samples).
 * Small stride-1 layers, where building rows costs more than the multiply, take the direct path
 * of conv2d_direct.c instead.
 *
 * The input gradient goes the other way: W^T dY gives one gradient row per tap (taps x pixels),
 * and col2im adds each back to the input pixel it came from. Rows are short (7 and 14 in
 * smallcnn): add_rows works out the valid rows and columns once per tap and adds eight values
 * per instruction (stride 2: one shuffle). */
#include "layer.h"

#include "conv2d_direct.h"
#include "conv2d_grouped.h"
#include "gemm.h"
#include "vec.h"
#include <stddef.h>
#include <stdio.h>
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
    const int G = at_conv2d_groups(L);
    if (d->groups < 0 || L->in_c % G != 0 || d->out % G != 0)
        return at_fail(AT_ERR_SHAPE,
                       "conv layer %d: groups=%d must be positive and divide both in_channels (%d) "
                       "and out_channels (%d)",
                       L->index, d->groups, L->in_c, d->out);
    /* Before anything multiplies them (taps = in * K * K below and in the kernels): the weight
     * and the zero-padded input of one sample must each fit AT_MAX_COUNT floats. */
    if (at_count(d->out, L->in_c / G, d->kernel, d->kernel) < 0)
        return at_fail(AT_ERR_SHAPE, "conv layer %d: a weight of %d x %d x %d x %d is too large (at most "
                                     "%d values)",
                       L->index, d->out, L->in_c / G, d->kernel, d->kernel, AT_MAX_COUNT);
    if (at_count(L->in_c, L->in_h + 2 * d->pad, L->in_w + 2 * d->pad, 1) < 0)
        return at_fail(AT_ERR_SHAPE, "conv layer %d: its zero-padded input, %d x %d x %d, is too large "
                                     "(at most %d values)",
                       L->index, L->in_c, L->in_h + 2 * d->pad, L->in_w + 2 * d->pad, AT_MAX_COUNT);
    L->out_c = d->out;
    L->out_h = at_window_out(L->in_h, d->kernel, d->stride, d->pad);
    L->out_w = at_window_out(L->in_w, d->kernel, d->stride, d->pad);
    /* PyTorch's weight: (out, in/groups, K, K); bias=False leaves no bias tensor at all. */
    L->w_count = (size_t)d->out * (L->in_c / G) * d->kernel * d->kernel;
    L->w_ndim = 4;
    L->w_shape[0] = d->out;
    L->w_shape[1] = L->in_c / G;
    L->w_shape[2] = L->w_shape[3] = d->kernel;
    L->b_count = d->no_bias ? 0 : (size_t)d->out;
    /* Grouped layers rebuild their columns per group in backward (conv2d_grouped.c). */
    L->kept_per_sample = G > 1 || at_conv2d_direct_applies(L)
                             ? 0
                             : (size_t)L->in_c * d->kernel * d->kernel * L->out_h * L->out_w;
    return AT_OK;
}

/* Samples per block. Building the rows for a whole chunk at once writes a matrix C*K*K times
 * larger than the input and reads it back from memory; blocks of a few samples keep it in cache,
 * with enough output pixels per block for an efficient GEMM. The block size also fixes the order
 * in which the weight gradient is summed (one product per block): changing it changes results
 * in the last bits. */
static int block_samples(const at_layer *L, int n) {
    const size_t area = (size_t)L->out_h * L->out_w;
    const size_t taps = (size_t)L->in_c * L->d.kernel * L->d.kernel;
    size_t for_gemm = (1024 + area - 1) / area;              /* >= 1024 GEMM columns */
    size_t for_cache = (256 * 1024 / sizeof(float)) / (taps * area); /* columns <= 256 KiB */
    size_t b = for_gemm < for_cache ? for_gemm : for_cache;
    if (b < 1) b = 1;
    return (int)(b < (size_t)n ? b : (size_t)n);
}

/* Floats col2im's blocks of eight may read past the last gradient row; the buffer keeps this
 * many spare. */
enum { ROW_SPILL = 8 };

/* Scratch for one block: the rows (forward) or the tap gradients (backward), then the
 * channel-major GEMM output (forward) or output gradient (backward), then one padded sample. */
static size_t conv_workspace(const at_layer *L, int n) {
    if (at_conv2d_groups(L) > 1) return at_conv2d_grouped_workspace(L, n);
    if (at_conv2d_direct_applies(L)) return at_conv2d_direct_workspace(L);
    size_t pixels = (size_t)block_samples(L, n) * L->out_h * L->out_w;
    size_t taps = (size_t)L->in_c * L->d.kernel * L->d.kernel;
    const size_t padded = (size_t)L->in_c * (L->in_h + 2 * L->d.pad) * (L->in_w + 2 * L->d.pad);
    return taps * pixels + ROW_SPILL + (size_t)L->out_c * pixels + padded;
}

/* One pixel's row: for each channel, K kernel rows of K consecutive values from the window at
 * its top-left tap. Inlined with K a constant (3, 4, 5) the copies are fixed-size moves. */
static inline __attribute__((always_inline)) float *pixel_row(float *dst, const float *window,
                                                              int C, size_t plane, int Wp, int K) {
    for (int c = 0; c < C; c++, window += plane)
        for (int ki = 0; ki < K; ki++, dst += K) memcpy(dst, window + (size_t)ki * Wp, sizeof(float) * K);
    return dst;
}

/* The column matrix as rows: one row of C*K*K taps per output pixel, pixels sample by sample
 * (n*OH*OW rows), the layout in which both the forward product (weights times rows transposed)
 * and the weight gradient (dY times rows) read it in place. Each sample is first copied into
 * `padded` with its zero border, so that a tap row (c, ki) of a pixel is always K consecutive
 * values of one padded row: K copies per pixel and channel, no bounds tests. */
static void im2row(const at_layer *L, const float *x, int n, float *rows, float *padded) {
    const int C = L->in_c, H = L->in_h, W = L->in_w, K = L->d.kernel, S = L->d.stride,
              P = L->d.pad, OH = L->out_h, OW = L->out_w;
    const int Hp = H + 2 * P, Wp = W + 2 * P;
    const size_t plane = (size_t)Hp * Wp, sample_in = (size_t)C * H * W;
    if (P > 0) memset(padded, 0, sizeof(float) * C * plane); /* borders stay zero */
    float *dst = rows;
    for (int s = 0; s < n; s++) {
        const float *src = x + s * sample_in;
        if (P > 0) {
            for (int c = 0; c < C; c++)
                for (int h = 0; h < H; h++) {
                    float *to = padded + c * plane + (size_t)(h + P) * Wp + P;
                    const float *from = src + ((size_t)c * H + h) * W;
                    for (int w = 0; w < W; w++) to[w] = from[w];
                }
            src = padded;
        }
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++) {
                const float *window = src + (size_t)oh * S * Wp + (size_t)ow * S;
                switch (K) {
                case 3: dst = pixel_row(dst, window, C, plane, Wp, 3); break;
                case 4: dst = pixel_row(dst, window, C, plane, Wp, 4); break;
                case 5: dst = pixel_row(dst, window, C, plane, Wp, 5); break;
                default: dst = pixel_row(dst, window, C, plane, Wp, K);
                }
            }
    }
}

/* Output columns [lo, hi) that kernel column kj reads inside the input row; outside is padding.
 * The same for output rows and kernel row ki (with OH, H). */
static void valid_range(int OW, int W, int S, int P, int kj, int *lo, int *hi) {
    /* iw = ow*S - P + kj must lie in [0, W) */
    int first = P - kj > 0 ? (P - kj + S - 1) / S : 0;
    int last = (W - 1 + P - kj) >= 0 ? (W - 1 + P - kj) / S + 1 : 0;
    *lo = AT_MIN(first, OW);
    *hi = AT_MAX(*lo, AT_MIN(last, OW));
}

/* A lane mask: all ones in lanes [lo, hi), zeros elsewhere ((i8){0} + k puts k in every lane). */
static inline i8 lanes_between(int lo, int hi) {
    const i8 lane = {0, 1, 2, 3, 4, 5, 6, 7};
    return (lane >= (i8){0} + lo) & (lane < (i8){0} + hi);
}
static inline f8 masked(f8 v, i8 mask) { return (f8)((i8)v & mask); }

/* dst[S*i] += v[i] for stride 1 or 2; with stride 2 the odd positions in between get + 0, which
 * changes no value. Updates 8*S floats from dst. */
static inline void add8(float *dst, f8 v, int S) {
    const f8 zero = {0};
    if (S == 2) {
        store8(dst, load8(dst) + SHUFFLE8(v, zero, 0, 8, 1, 9, 2, 10, 3, 11));
        store8(dst + 8, load8(dst + 8) + SHUFFLE8(v, zero, 4, 12, 5, 13, 6, 14, 7, 15));
    } else {
        store8(dst, load8(dst) + v);
    }
}

/* The way back: dst[r*dst_pitch + S*i] += src[r*OW + lo + i] for i < hi - lo. In blocks of eight
 * for strides 1 and 2: the lanes past hi are zeroed, and the positions a block covers but does
 * not own (stride 2: every other one; the last block's tail) get + 0, which changes no value.
 * A block reads up to 7 floats past a row (the ROW_SPILL spare after the last); blocks are used
 * only when the last row's updates stay before dst_end. */
static void add_rows(float *dst, size_t dst_pitch, const float *src, int rows, int lo, int hi,
                     int OW, int S, const float *dst_end) {
    const int count = hi - lo, span = (count + 7) / 8 * 8 * S;
    const bool blocks = (S == 1 || S == 2) && dst + (size_t)(rows - 1) * dst_pitch + span <= dst_end;
    for (int r = 0; r < rows; r++, dst += dst_pitch, src += OW) {
        if (blocks)
            for (int i = 0; i < count; i += 8)
                add8(dst + S * i, masked(load8(src + lo + i), lanes_between(0, count - i)), S);
        else
            for (int i = 0; i < count; i++) dst[(size_t)i * S] += src[lo + i];
    }
}

/* The way back for one tap of n samples whose valid rows have at most eight values (stride 1
 * or 2): add_rows' blocks in one tight loop, the lane mask worked out once. first: where sample
 * 0's first value goes in dx; src: sample 0's first valid row in the column row. */
static void add_tap_short_rows(float *first, size_t sample_in, const float *src, size_t sample_out,
                               int n, int rows, int lo, int count, int OW, int S, int W) {
    const i8 keep = lanes_between(0, count);
    const size_t dst_pitch = (size_t)S * W;
    for (int s = 0; s < n; s++) {
        float *dst = first + s * sample_in;
        const float *from = src + s * sample_out + lo;
        for (int r = 0; r < rows; r++, dst += dst_pitch, from += OW)
            add8(dst, masked(load8(from), keep), S);
    }
}

/* Adds every column entry back to the input pixel it was copied from. dx must be zeroed. */
static void col2im(const at_layer *L, const float *col, int n, float *dx) {
    const int C = L->in_c, H = L->in_h, W = L->in_w, K = L->d.kernel, S = L->d.stride,
              P = L->d.pad, OH = L->out_h, OW = L->out_w;
    const size_t pixels = (size_t)n * OH * OW;
    const float *dx_end = dx + (size_t)n * C * H * W;
    for (int c = 0; c < C; c++)
        for (int ki = 0; ki < K; ki++)
            for (int kj = 0; kj < K; kj++) {
                const float *row = col + ((size_t)(c * K + ki) * K + kj) * pixels;
                int lo, hi, oh_lo, oh_hi;
                valid_range(OW, W, S, P, kj, &lo, &hi);
                valid_range(OH, H, S, P, ki, &oh_lo, &oh_hi);
                if (lo == hi || oh_lo == oh_hi) continue;
                const size_t sample_in = (size_t)C * H * W;
                float *first = dx + (size_t)c * H * W + (size_t)(oh_lo * S - P + ki) * W +
                               lo * S - P + kj;
                if (hi - lo <= 8 && (S == 1 || S == 2) &&
                    dx_end - first >= (ptrdiff_t)((n - 1) * sample_in +
                                                  (size_t)(oh_hi - oh_lo - 1) * S * W + 8 * S)) {
                    add_tap_short_rows(first, sample_in, row + (size_t)oh_lo * OW,
                                       (size_t)OH * OW, n, oh_hi - oh_lo, lo, hi - lo, OW, S, W);
                    continue;
                }
                for (int s = 0; s < n; s++)
                    add_rows(first + s * sample_in, (size_t)S * W,
                             row + ((size_t)s * OH + oh_lo) * OW, oh_hi - oh_lo, lo, hi, OW, S,
                             dx_end);
            }
}

static void conv_forward(const at_layer *L, const at_ctx *ctx, const float *x, float *y, int n) {
    if (at_conv2d_groups(L) > 1) {
        at_conv2d_grouped_forward(L, ctx, x, y, n);
        return;
    }
    if (at_conv2d_direct_applies(L)) {
        at_conv2d_direct_forward(L, ctx, x, y, n);
        return;
    }
    const int OC = L->out_c, area = L->out_h * L->out_w;
    const int taps = L->in_c * L->d.kernel * L->d.kernel;
    const int block = block_samples(L, n);
    const float *Wt = ctx->params + L->w_off;
    /* Without a bias (bias=False, b_count 0) b_off is where the next tensor starts: never read. */
    const float *b = L->b_count ? ctx->params + L->b_off : NULL;
    float *out = ctx->work + (size_t)taps * block * area + ROW_SPILL;
    float *padded = out + (size_t)OC * block * area;
    for (int s0 = 0; s0 < n; s0 += block) {
        const int m = AT_MIN(block, n - s0);
        const size_t pixels = (size_t)m * area;
        /* A training forward builds the rows where backward will find them. */
        float *rows = ctx->kept ? ctx->kept + (size_t)s0 * taps * area : ctx->work;
        im2row(L, x + (size_t)s0 * L->in_size, m, rows, padded);
        /* One sample's GEMM output is already NCHW: write it in place. */
        float *dst0 = y + (size_t)s0 * OC * area;
        float *res = m == 1 ? dst0 : out;
        at_gemm(false, true, OC, (int)pixels, taps, 1.0f, Wt, taps, rows, taps, 0.0f, res,
                (int)pixels);
        for (int s = 0; s < m; s++)
            for (int o = 0; o < OC; o++) {
                const float *src = res + (size_t)o * pixels + (size_t)s * area;
                float *dst = dst0 + ((size_t)s * OC + o) * area;
                const float bo = b ? b[o] : 0.0f;
                if (L->relu_out)
                    for (int p = 0; p < area; p++) dst[p] = at_relu(src[p] + bo);
                else
                    for (int p = 0; p < area; p++) dst[p] = src[p] + bo;
            }
    }
}

static void conv_backward(const at_layer *L, const at_ctx *ctx, const float *x, const float *y,
                          const float *dy, float *dx, int n, bool param_grads) {
    if (at_conv2d_groups(L) > 1) {
        at_conv2d_grouped_backward(L, ctx, x, y, dy, dx, n, param_grads);
        return;
    }
    if (at_conv2d_direct_applies(L)) {
        at_conv2d_direct_backward(L, ctx, x, y, dy, dx, n, param_grads);
        return;
    }
    const int OC = L->out_c, area = L->out_h * L->out_w;
    const int taps = L->in_c * L->d.kernel * L->d.kernel;
    const int block = block_samples(L, n);
    const float *Wt = ctx->params + L->w_off;
    float *dW = ctx->grads + L->w_off, *db = L->b_count ? ctx->grads + L->b_off : NULL;
    float *col = ctx->work, *dyc_buf = ctx->work + (size_t)taps * block * area + ROW_SPILL;
    float *padded = dyc_buf + (size_t)OC * block * area;
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
            const float *rows = col;
            if (ctx->kept)
                rows = ctx->kept + (size_t)s0 * taps * area;
            else
                im2row(L, x + (size_t)s0 * L->in_size, m, col, padded);
            at_gemm(false, false, OC, taps, (int)pixels, 1.0f, dyc, (int)pixels, rows, taps, 1.0f,
                    dW, taps);
            for (int o = 0; db && o < OC; o++)
                db[o] += sum_floats(dyc + (size_t)o * pixels, pixels);
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

/* conv:OUT:K[:STRIDE[:PAD]] with options groups=G and bias=0 (PyTorch's bias=False). */
static at_status conv_parse(at_layer_desc *d, const double *args, int count, const char *const *keys,
                            const double *vals, int nkeys, const char *token) {
    at_status s = at_spec_whole(args, count, token);
    if (s != AT_OK) return s;
    d->out = (int)args[0];
    d->kernel = (int)args[1];
    d->stride = count > 2 ? (int)args[2] : 1;
    d->pad = count > 3 ? (int)args[3] : 0;
    for (int k = 0; k < nkeys; k++) {
        /* The range before the conversion to int, which is undefined outside it. */
        const bool whole = vals[k] >= 0 && vals[k] < 1e6 && vals[k] == (double)(int)vals[k];
        if (strcmp(keys[k], "groups") == 0 && whole && vals[k] >= 1)
            d->groups = (int)vals[k];
        else if (strcmp(keys[k], "bias") == 0 && (vals[k] == 0 || vals[k] == 1))
            d->no_bias = vals[k] == 0;
        else
            return at_fail(AT_ERR_ARG,
                           "spec layer '%s': option '%s' (conv takes groups=N, N >= 1, and "
                           "bias=0 or bias=1)",
                           token, keys[k]);
    }
    return AT_OK;
}

static void conv_word(const at_layer_desc *d, char *buf, size_t cap) {
    int w = snprintf(buf, cap, "conv:%d:%d:%d:%d", d->out, d->kernel, d->stride, d->pad);
    if (d->groups > 1 && w > 0 && (size_t)w < cap)
        w += snprintf(buf + w, cap - (size_t)w, ":groups=%d", d->groups);
    if (d->no_bias && w > 0 && (size_t)w < cap) snprintf(buf + w, cap - (size_t)w, ":bias=0");
}

static void conv_describe(const at_layer *L, char *buf, size_t cap) {
    const at_layer_desc *d = &L->d;
    int w = snprintf(buf, cap, "Conv2d(%d, %d, kernel_size=%d, stride=%d, padding=%d", L->in_c,
                     d->out, d->kernel, d->stride, d->pad);
    if (d->groups > 1 && w > 0 && (size_t)w < cap)
        w += snprintf(buf + w, cap - (size_t)w, ", groups=%d", d->groups);
    if (d->no_bias && w > 0 && (size_t)w < cap)
        w += snprintf(buf + w, cap - (size_t)w, ", bias=False");
    if (w > 0 && (size_t)w < cap) snprintf(buf + w, cap - (size_t)w, ")");
}

const at_layer_ops at_conv2d_ops = {.name = "conv", .setup = conv_setup,
                                    .workspace = conv_workspace, .forward = conv_forward,
                                    .backward = conv_backward, .fuses_relu = conv_fuses_relu,
                                    .output_dead_in_backward = true,
                                    .min_args = 2, .max_args = 4, .parse = conv_parse,
                                    .spec_word = conv_word, .describe = conv_describe,
                                    .bound_rule = AT_BOUND_AFFINE};
