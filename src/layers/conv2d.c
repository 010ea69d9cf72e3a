/* Conv2d as im2col over the whole chunk plus one GEMM.
 *
 * The column matrix is (C*K*K) x (n*OH*OW): one row per kernel tap, one column per output pixel
 * of every sample of a block, so one GEMM with the (OC x C*K*K) weight covers the block. Its
 * result is channel-major (OC x n*OH*OW) and is permuted back to NCHW. Blocks are sized so the
 * columns stay in cache (block_samples). A training-mode forward builds them in the layer's kept
 * buffer (ctx->kept), where the weight gradient reads them back; other passes (attacks,
 * evaluation) build them in scratch, and a backward without kept columns rebuilds them.
 * Small stride-1 layers, where building and permuting columns costs more than the multiply,
 * take the direct path of conv2d_direct.c instead.
 *
 * A column row copies, for each output row, OW input values at the layer's stride. Rows are
 * short (7 and 14 in smallcnn): copied a float or a memcpy at a time, with the bounds worked out
 * per row, they took as long as the GEMMs. copy_rows and add_rows work out the valid rows and
 * columns once per tap and move eight values per instruction (stride 2: one shuffle). */
#include "layer.h"

#include "conv2d_direct.h"
#include "gemm.h"
#include "vec.h"
#include <stddef.h>
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
    L->kept_per_sample = at_conv2d_direct_applies(L)
                             ? 0
                             : (size_t)L->in_c * d->kernel * d->kernel * L->out_h * L->out_w;
    return AT_OK;
}

/* Samples per im2col block. Building the columns for a whole chunk at once writes a matrix
 * C*K*K times larger than the input and reads it back from memory; blocks of a few samples keep
 * it in cache, with enough output pixels per block for an efficient GEMM. */
static int block_samples(const at_layer *L, int n) {
    const size_t area = (size_t)L->out_h * L->out_w;
    const size_t taps = (size_t)L->in_c * L->d.kernel * L->d.kernel;
    size_t for_gemm = (1024 + area - 1) / area;              /* >= 1024 GEMM columns */
    size_t for_cache = (256 * 1024 / sizeof(float)) / (taps * area); /* columns <= 256 KiB */
    size_t b = for_gemm < for_cache ? for_gemm : for_cache;
    if (b < 1) b = 1;
    return (int)(b < (size_t)n ? b : (size_t)n);
}

/* Floats a stride-2 row copy may write past its end; the column buffer keeps this many spare. */
enum { ROW_SPILL = 8 };

/* Scratch for one block: the columns, then the channel-major GEMM output (forward) or output
 * gradient (backward). */
static size_t conv_workspace(const at_layer *L, int n) {
    if (at_conv2d_direct_applies(L)) return at_conv2d_direct_workspace(L);
    size_t pixels = (size_t)block_samples(L, n) * L->out_h * L->out_w;
    size_t taps = (size_t)L->in_c * L->d.kernel * L->d.kernel;
    return taps * pixels + ROW_SPILL + (size_t)L->out_c * pixels;
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

/* Eight values src[S*i] for stride 1 or 2 (stride 2: two loads and one shuffle); reads
 * 8*S floats from src. */
static inline f8 gather8(const float *src, int S) {
    const i8 evens = {0, 2, 4, 6, 8, 10, 12, 14};
    return S == 2 ? __builtin_shuffle(load8(src), load8(src + 8), evens) : load8(src);
}

/* dst[S*i] += v[i] for stride 1 or 2; with stride 2 the odd positions in between get + 0, which
 * changes no value. Updates 8*S floats from dst. */
static inline void add8(float *dst, f8 v, int S) {
    const i8 low = {0, 8, 1, 9, 2, 10, 3, 11}, high = {4, 12, 5, 13, 6, 14, 7, 15};
    const f8 zero = {0};
    if (S == 2) {
        store8(dst, load8(dst) + __builtin_shuffle(v, zero, low));
        store8(dst + 8, load8(dst + 8) + __builtin_shuffle(v, zero, high));
    } else {
        store8(dst, load8(dst) + v);
    }
}

/* count zeros, eight at a time: like the row copies, it may write up to 7 floats past the end.
 * (A memset call per padding run costs more than the run: most are 0 to 14 floats.) */
static void zero_floats(float *p, size_t count) {
    for (size_t i = 0; i < count; i += 8) store8(p + i, (f8){0});
}

/* Rows of one tap of the column matrix: `rows` rows of pitch OW, each zeros at [0, lo), then
 * src[r*src_pitch + S*i] at lo + i for i < hi - lo, then zeros at [hi, OW).
 *
 * Strides 1 and 2 copy in blocks of eight values (stride 2: two loads and one shuffle). The last
 * block of a row writes up to 7 floats past hi: rows go in increasing address order and each
 * row's trailing zeros come after its values, so whatever spilled is overwritten later, by this
 * call or by the caller's later writes; the last row of the matrix spills into its ROW_SPILL
 * spare floats. Blocks are used only when the last row's reads stay before src_end. */
static void copy_rows(float *dst, const float *src, size_t src_pitch, int rows, int lo, int hi,
                      int OW, int S, const float *src_end) {
    const int count = hi - lo, span = (count + 7) / 8 * 8 * S;
    const bool blocks = (S == 1 || S == 2) && src + (size_t)(rows - 1) * src_pitch + span <= src_end;
    for (int r = 0; r < rows; r++, dst += OW, src += src_pitch) {
        for (int i = 0; i < lo; i++) dst[i] = 0.0f;
        if (blocks)
            for (int i = 0; i < count; i += 8) store8(dst + lo + i, gather8(src + S * i, S));
        else
            for (int i = 0; i < count; i++) dst[lo + i] = src[(size_t)i * S];
        for (int i = hi; i < OW; i++) dst[i] = 0.0f;
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

/* One tap's column row for n samples when output rows have at most eight columns (OW <= 8) and
 * the stride is 1 or 2: each output row is one block, read from lo*S floats before the row's
 * first value, with the lanes outside [lo, hi) (the padding columns) zeroed: one load (two with
 * stride 2), a mask and one store per row, in one tight loop over the tap's samples and rows (its
 * bookkeeping costs more than its 49 values otherwise). Padding rows go before and after each
 * sample's rows, eight at a time; every spill lands on a later row. first: sample 0's first
 * valid row, at column 0 (which may be padding: the caller checks that every read is inside x). */
static void copy_tap_short_rows(float *row, const float *first, size_t sample_in, int n, int OH,
                                int OW, int oh_lo, int oh_hi, int lo, int hi, int S, int W) {
    const i8 keep = lanes_between(lo, hi);
    const size_t sample_out = (size_t)OH * OW, src_pitch = (size_t)S * W;
    const int rows = oh_hi - oh_lo;
    for (int s = 0; s < n; s++) {
        float *dst = row + s * sample_out;
        const float *src = first + s * sample_in;
        zero_floats(dst, (size_t)oh_lo * OW);
        dst += (size_t)oh_lo * OW;
        for (int r = 0; r < rows; r++, dst += OW, src += src_pitch)
            store8(dst, masked(gather8(src, S), keep));
        zero_floats(dst, (size_t)(OH - oh_hi) * OW);
    }
}

static void im2col(const at_layer *L, const float *x, int n, float *col) {
    const int C = L->in_c, H = L->in_h, W = L->in_w, K = L->d.kernel, S = L->d.stride,
              P = L->d.pad, OH = L->out_h, OW = L->out_w;
    const size_t pixels = (size_t)n * OH * OW, sample_in = (size_t)C * H * W;
    const float *x_end = x + (size_t)n * sample_in;
    for (int c = 0; c < C; c++)
        for (int ki = 0; ki < K; ki++)
            for (int kj = 0; kj < K; kj++) {
                float *row = col + ((size_t)(c * K + ki) * K + kj) * pixels;
                int lo, hi, oh_lo, oh_hi;
                valid_range(OW, W, S, P, kj, &lo, &hi);
                valid_range(OH, H, S, P, ki, &oh_lo, &oh_hi);
                if (lo == hi) oh_lo = oh_hi = 0; /* the tap reads only padding: all zeros */
                /* Sample 0's first valid row: where it starts in x, its first value read, and
                 * where output column 0 reads (before the row when that column is padding;
                 * offsets, not pointers, since it may lie before x). */
                const ptrdiff_t row0 = (ptrdiff_t)c * H * W + (ptrdiff_t)(oh_lo * S - P + ki) * W;
                const float *first = oh_lo < oh_hi ? x + row0 + lo * S - P + kj : x;
                const ptrdiff_t column0 = row0 - P + kj, last_read = column0 +
                    (ptrdiff_t)((n - 1) * sample_in + (size_t)(oh_hi - oh_lo - 1) * S * W + 8 * S);
                if (oh_lo < oh_hi && OW <= 8 && (S == 1 || S == 2) && column0 >= 0 &&
                    last_read <= x_end - x) {
                    copy_tap_short_rows(row, x + column0, sample_in, n, OH, OW, oh_lo, oh_hi, lo,
                                        hi, S, W);
                    continue;
                }
                for (int s = 0; s < n; s++) {
                    float *dst = row + (size_t)s * OH * OW;
                    /* Padding rows: those above before the copied rows, those below after
                     * them, each written over what spilled onto it. */
                    zero_floats(dst, (size_t)oh_lo * OW);
                    if (oh_lo < oh_hi)
                        copy_rows(dst + (size_t)oh_lo * OW, first + s * sample_in, (size_t)S * W,
                                  oh_hi - oh_lo, lo, hi, OW, S, x_end);
                    zero_floats(dst + (size_t)oh_hi * OW, (size_t)(OH - oh_hi) * OW);
                }
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
    if (at_conv2d_direct_applies(L)) {
        at_conv2d_direct_forward(L, ctx, x, y, n);
        return;
    }
    const int OC = L->out_c, area = L->out_h * L->out_w;
    const int taps = L->in_c * L->d.kernel * L->d.kernel;
    const int block = block_samples(L, n);
    const float *Wt = ctx->params + L->w_off, *b = ctx->params + L->b_off;
    float *out = ctx->work + (size_t)taps * block * area + ROW_SPILL;
    for (int s0 = 0; s0 < n; s0 += block) {
        const int m = AT_MIN(block, n - s0);
        const size_t pixels = (size_t)m * area;
        /* A training forward builds the columns where backward will find them. */
        float *col = ctx->kept ? ctx->kept + (size_t)s0 * taps * area : ctx->work;
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
    float *col = ctx->work, *dyc_buf = ctx->work + (size_t)taps * block * area + ROW_SPILL;
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
            const float *cols = col;
            if (ctx->kept)
                cols = ctx->kept + (size_t)s0 * taps * area;
            else
                im2col(L, x + (size_t)s0 * L->in_size, m, col);
            at_gemm(false, true, OC, taps, (int)pixels, 1.0f, dyc, (int)pixels, cols, (int)pixels,
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
