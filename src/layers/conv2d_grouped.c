/* Grouped convolutions (nn.Conv2d with groups > 1), one sample at a time; nothing is kept from
 * the forward for the backward (kept_per_sample is 0).
 *
 * Group g reads input channels [g*Cg, (g+1)*Cg) and writes output channels [g*Og, (g+1)*Og),
 * Cg = in/groups, Og = out/groups, with the weights W[o][0..Cg)[K][K]: PyTorch's layout
 * (out, in/groups, K, K).
 *
 * Depthwise layers (Cg = 1: groups = in_channels; each output plane reads one input plane) have
 * too little work per group for a GEMM: direct loops over the K x K taps, reading the input plane
 * copied with its zero border, so that no row is cut short at the padding. At stride 1 a tile of
 * four output rows by one vector stays in registers while every tap is added, and the input
 * gradient is the same kind of stride-1 correlation, of the output gradient padded by K-1-P with
 * the flipped kernel (measured on one core, 32 planes of 32x32 and 64 of 16x16, k3, batch 32,
 * against one multiply-add pass per tap and row, which is what other strides do: forward 1.3x
 * and 1.5x, input gradient 1.2x and 1.3x faster; with the weight gradient, the same). Other
 * strides add every tap back into a padded gradient plane whose interior is then dx. The weight
 * gradient is a dot product per tap over the rows, kept in vector partial sums until the plane is
 * done.
 *
 * Other groups: per group the column matrix (taps x pixels, im2col), one GEMM each for the
 * output, the weight gradient and the column gradient, which col2im adds back. */
#include "conv2d_grouped.h"

#include "gemm.h"
#include "vec.h"
#include <string.h>

typedef struct {
    int C, H, W, K, S, P, OH, OW, OC;
    int G, Cg, Og, taps; /* taps per group: Cg*K*K */
    int Wp;              /* the padded plane's pitch, W + 2P */
    size_t in_plane, out_plane, padded_plane;
} geom;

static geom geometry(const at_layer *L) {
    geom g;
    g.C = L->in_c, g.H = L->in_h, g.W = L->in_w;
    g.K = L->d.kernel, g.S = L->d.stride, g.P = L->d.pad;
    g.OH = L->out_h, g.OW = L->out_w, g.OC = L->out_c;
    g.G = at_conv2d_groups(L);
    g.Cg = g.C / g.G, g.Og = g.OC / g.G, g.taps = g.Cg * g.K * g.K;
    g.in_plane = (size_t)g.H * g.W, g.out_plane = (size_t)g.OH * g.OW;
    g.Wp = g.W + 2 * g.P;
    g.padded_plane = (size_t)(g.H + 2 * g.P) * g.Wp;
    return g;
}

/* Output columns [lo, hi) whose tap in kernel column kj reads inside the input row (iw = ow*S -
 * P + kj in [0, W)); the others read padding. The same serves rows. */
static void valid_range(int OW, int W, int S, int P, int kj, int *lo, int *hi) {
    const int first = P - kj > 0 ? (P - kj + S - 1) / S : 0;
    const int last = W - 1 + P - kj >= 0 ? (W - 1 + P - kj) / S + 1 : 0;
    *lo = AT_MIN(first, OW);
    *hi = AT_MAX(*lo, AT_MIN(last, OW));
}

/* Stride 1 with padding below the kernel: the depthwise input gradient is a stride-1
 * correlation of the output gradient padded by K-1-P with the flipped kernel, computed as the
 * forward is; otherwise each tap is added back into a padded gradient plane. */
static bool dw_transposed(const geom *g) { return g->S == 1 && g->P <= g->K - 1; }

/* The output gradient plane padded by K-1-P (dw_transposed). */
static size_t dy_padded_plane(const geom *g) {
    const int Q = g->K - 1 - g->P;
    return (size_t)(g->OH + 2 * Q) * (g->OW + 2 * Q);
}

/* Scratch: the column matrix of one group (general groups), or for depthwise layers two padded
 * planes (input, and the input gradient's or the output gradient's), each with VL spare floats
 * for the last vector of a row tile, and the flipped kernel; then one sample's gated output
 * gradient (a fused ReLU). */
static size_t planes_scratch(const geom *g) {
    if (g->Cg > 1) return (size_t)g->taps * g->out_plane;
    const size_t second = dw_transposed(g) ? dy_padded_plane(g) : g->padded_plane;
    return g->padded_plane + VL + second + VL + (size_t)g->K * g->K;
}

size_t at_conv2d_grouped_workspace(const at_layer *L, int n) {
    const geom g = geometry(L);
    return planes_scratch(&g) + (L->relu_out ? (size_t)L->out_size : 0);
}

/* dst[i*ds] += w * src[i*ss] for i < count; the unit-stride case as its own loop, which the
 * compiler vectorises. */
static inline void madd(float *restrict dst, int ds, const float *restrict src, int ss, float w,
                        int count) {
    if (ds == 1 && ss == 1)
        for (int i = 0; i < count; i++) dst[i] += w * src[i];
    else
        for (int i = 0; i < count; i++) dst[(size_t)i * ds] += w * src[(size_t)i * ss];
}

/* Adds a[i] * b[i*step] for i < count to VL partial sums (unit stride, whole vectors) and a
 * scalar one (the rest): the caller reduces them once per tap, not once per row. */
static void dot_into(vec *acc, float *rest, const float *a, const float *b, int step, int count) {
    int i = 0;
    if (step == 1)
        for (; i + VL <= count; i += VL) *acc += load_vec(a + i) * load_vec(b + i);
    for (; i < count; i++) *rest += a[i] * b[(size_t)i * step];
}

/* The outputs that tap (ki, kj) computes from inside the input: rows [oh_lo, oh_hi), columns
 * [lo, hi); the others read padding only. */
typedef struct {
    int oh_lo, oh_hi, lo, hi;
} tap_span;

static bool span_of(const geom *g, int ki, int kj, tap_span *t) {
    valid_range(g->OH, g->H, g->S, g->P, ki, &t->oh_lo, &t->oh_hi);
    valid_range(g->OW, g->W, g->S, g->P, kj, &t->lo, &t->hi);
    return t->oh_lo < t->oh_hi && t->lo < t->hi;
}

/* Where output (oh, lo)'s tap (ki, kj) reads in the input plane. */
static size_t tap_at(const geom *g, const tap_span *t, int oh, int ki, int kj) {
    return (size_t)(oh * g->S - g->P + ki) * g->W + (size_t)(t->lo * g->S - g->P + kj);
}

/* An input plane into the middle of a zeroed padded plane (and its VL spare floats). */
static void pad_plane(const geom *g, const float *in, float *padded) {
    memset(padded, 0, sizeof(float) * (g->padded_plane + VL));
    for (int h = 0; h < g->H; h++)
        memcpy(padded + (size_t)(h + g->P) * g->Wp + g->P, in + (size_t)h * g->W,
               sizeof(float) * g->W);
}

/* The interior of a padded gradient plane: what fell on the padding is dropped. */
static void unpad_plane(const geom *g, const float *padded, float *out) {
    for (int h = 0; h < g->H; h++)
        memcpy(out + (size_t)h * g->W, padded + (size_t)(h + g->P) * g->Wp + g->P,
               sizeof(float) * g->W);
}

/* Where output row oh's tap (ki, kj) starts reading in the padded plane. */
static size_t padded_at(const geom *g, int oh, int ki, int kj) {
    return (size_t)(oh * g->S + ki) * g->Wp + kj;
}

/* Partial vectors: the first `width` lanes (the rest zero on load, untouched on store). */
static inline vec load_lanes(const float *p, int width) {
    if (width == VL) return load_vec(p);
    float lanes[VL] = {0};
    memcpy(lanes, p, sizeof(float) * width);
    return load_vec(lanes);
}
static inline void store_lanes(float *p, vec v, int width) {
    if (width == VL) {
        store_vec(p, v);
        return;
    }
    float lanes[VL];
    store_vec(lanes, v);
    memcpy(p, lanes, sizeof(float) * width);
}

/* A stride-1 depthwise plane: the plane's source padded to pitch `pitch`, taps w (K x K). */
typedef struct {
    const float *src;
    int pitch, K;
    const float *w;
} dw_source;

/* Rows [0, rows) of out (pitch OW) at columns [ow, ow + width), in registers: the bias (or,
 * accumulating, what out holds) plus the taps in (ki, kj) order, the same operations per pixel
 * as dw_forward_plane's. A tap reads a whole vector: up to VL - 1 floats past a short tile's
 * row, which the padded plane's spare covers; only `width` lanes are stored. */
static inline __attribute__((always_inline)) void
dw_tile(int rows, dw_source s, float bias, bool accumulate, float *out, int OW, int ow, int width) {
    vec acc[4];
    for (int r = 0; r < rows; r++)
        acc[r] = accumulate ? load_lanes(out + (size_t)r * OW + ow, width) : splat(bias);
    for (int ki = 0; ki < s.K; ki++)
        for (int kj = 0; kj < s.K; kj++) {
            const vec wk = splat(s.w[ki * s.K + kj]);
            for (int r = 0; r < rows; r++)
                acc[r] += wk * load_vec(s.src + (size_t)(r + ki) * s.pitch + kj + ow);
        }
    for (int r = 0; r < rows; r++) store_lanes(out + (size_t)r * OW + ow, acc[r], width);
}

/* out (OH x OW) = bias (or out itself, accumulating) + the stride-1 correlation of the source
 * with the taps, in tiles of four rows (independent chains of additions) by one vector. */
static void dw_plane_s1(dw_source s, float bias, bool accumulate, float *out, int OH, int OW) {
    for (int oh = 0; oh < OH; oh += 4, s.src += (size_t)4 * s.pitch) {
        float *o = out + (size_t)oh * OW;
        for (int ow = 0; ow < OW; ow += VL) {
            const int width = AT_MIN(VL, OW - ow);
            switch (AT_MIN(4, OH - oh)) {
            case 4: dw_tile(4, s, bias, accumulate, o, OW, ow, width); break;
            case 3: dw_tile(3, s, bias, accumulate, o, OW, ow, width); break;
            case 2: dw_tile(2, s, bias, accumulate, o, OW, ow, width); break;
            default: dw_tile(1, s, bias, accumulate, o, OW, ow, width);
            }
        }
    }
}

/* One depthwise output plane from its padded input plane: the bias, then the taps in (ki, kj)
 * order for every pixel (any stride). */
static void dw_forward_plane(const geom *g, const float *padded, const float *w, float bias,
                             float *out) {
    for (size_t p = 0; p < g->out_plane; p++) out[p] = bias;
    for (int ki = 0; ki < g->K; ki++)
        for (int kj = 0; kj < g->K; kj++)
            for (int oh = 0; oh < g->OH; oh++)
                madd(out + (size_t)oh * g->OW, 1, padded + padded_at(g, oh, ki, kj), g->S,
                     w[ki * g->K + kj], g->OW);
}

/* A depthwise plane's gradients from its output gradient go: the kernel's dw (+=, if not NULL,
 * read from the padded input plane) and the padded input gradient dpad (+=, if not NULL; not
 * used where dw_transposed). */
static void dw_backward_plane(const geom *g, const float *padded, const float *w, const float *go,
                              float *dw, float *dpad) {
    for (int ki = 0; ki < g->K; ki++)
        for (int kj = 0; kj < g->K; kj++) {
            vec acc = splat(0.0f);
            float rest = 0.0f;
            for (int oh = 0; oh < g->OH; oh++) {
                const float *gr = go + (size_t)oh * g->OW;
                const size_t at = padded_at(g, oh, ki, kj);
                if (dw) dot_into(&acc, &rest, gr, padded + at, g->S, g->OW);
                if (dpad) madd(dpad + at, g->S, gr, 1, w[ki * g->K + kj], g->OW);
            }
            if (dw) dw[ki * g->K + kj] += sum_lanes(acc) + rest;
        }
}

/* One sample's depthwise forward: output plane o reads input plane o / Og, padded once for its
 * Og outputs. */
static void dw_forward_sample(const geom *g, const float *W, const float *b, const float *x,
                              float *y, float *padded) {
    for (int o = 0; o < g->OC; o++) {
        if (o % g->Og == 0) pad_plane(g, x + (size_t)(o / g->Og) * g->in_plane, padded);
        const float *w = W + (size_t)o * g->K * g->K;
        float *out = y + (size_t)o * g->out_plane;
        if (g->S == 1)
            dw_plane_s1((dw_source){padded, g->Wp, g->K, w}, b ? b[o] : 0.0f, false, out, g->OH,
                        g->OW);
        else
            dw_forward_plane(g, padded, w, b ? b[o] : 0.0f, out);
    }
}

/* dw_transposed: input plane c's gradient (=, the first of its Og outputs; += the others) from
 * output plane o's gradient go, padded by Q = K-1-P into dyp, and the flipped kernel. */
static void dw_input_gradient_s1(const geom *g, const float *w, const float *go, bool first,
                                 float *dxc, float *dyp, float *flipped) {
    const int Q = g->K - 1 - g->P, pitch = g->OW + 2 * Q, KK = g->K * g->K;
    memset(dyp, 0, sizeof(float) * (dy_padded_plane(g) + VL));
    for (int h = 0; h < g->OH; h++)
        memcpy(dyp + (size_t)(h + Q) * pitch + Q, go + (size_t)h * g->OW, sizeof(float) * g->OW);
    for (int k = 0; k < KK; k++) flipped[k] = w[KK - 1 - k];
    dw_plane_s1((dw_source){dyp, pitch, g->K, flipped}, 0.0f, !first, dxc, g->H, g->W);
}

/* One sample's depthwise gradients: per input plane, its padded copy (for dW) and its padded
 * gradient, whose interior becomes dx once the plane's Og outputs have added theirs. */
static void dw_backward_sample(const geom *g, const float *W, const float *x, const float *go,
                               float *dW, float *dx, float *work) {
    const bool transposed = dw_transposed(g);
    float *padded = work, *second = padded + g->padded_plane + VL;
    float *flipped = second + (transposed ? dy_padded_plane(g) : g->padded_plane) + VL;
    for (int o = 0; o < g->OC; o++) {
        const int c = o / g->Og;
        const float *w = W + (size_t)o * g->K * g->K, *gp = go + (size_t)o * g->out_plane;
        if (o % g->Og == 0) {
            if (dW) pad_plane(g, x + (size_t)c * g->in_plane, padded);
            if (dx && !transposed) memset(second, 0, sizeof(float) * g->padded_plane);
        }
        if (dW || (dx && !transposed))
            dw_backward_plane(g, padded, w, gp, dW ? dW + (size_t)o * g->K * g->K : NULL,
                              dx && !transposed ? second : NULL);
        if (dx && transposed)
            dw_input_gradient_s1(g, w, gp, o % g->Og == 0, dx + (size_t)c * g->in_plane, second,
                                 flipped);
        if (dx && !transposed && o % g->Og == g->Og - 1)
            unpad_plane(g, second, dx + (size_t)c * g->in_plane);
    }
}

/* The column matrix of `channels` input planes: row t = (c, ki, kj), one column per output
 * pixel, zero where the tap reads padding. */
static void im2col(const geom *g, const float *in, int channels, float *cols) {
    float *row = cols;
    for (int c = 0; c < channels; c++)
        for (int ki = 0; ki < g->K; ki++)
            for (int kj = 0; kj < g->K; kj++, row += g->out_plane) {
                memset(row, 0, sizeof(float) * g->out_plane);
                tap_span t;
                if (!span_of(g, ki, kj, &t)) continue;
                const float *plane = in + (size_t)c * g->in_plane;
                for (int oh = t.oh_lo; oh < t.oh_hi; oh++) {
                    float *dst = row + (size_t)oh * g->OW + t.lo;
                    const float *src = plane + tap_at(g, &t, oh, ki, kj);
                    for (int i = 0; i < t.hi - t.lo; i++) dst[i] = src[(size_t)i * g->S];
                }
            }
}

/* The way back: adds every column entry to the input pixel it was copied from. */
static void col2im(const geom *g, const float *cols, int channels, float *din) {
    const float *row = cols;
    for (int c = 0; c < channels; c++)
        for (int ki = 0; ki < g->K; ki++)
            for (int kj = 0; kj < g->K; kj++, row += g->out_plane) {
                tap_span t;
                if (!span_of(g, ki, kj, &t)) continue;
                float *plane = din + (size_t)c * g->in_plane;
                for (int oh = t.oh_lo; oh < t.oh_hi; oh++)
                    madd(plane + tap_at(g, &t, oh, ki, kj), g->S, row + (size_t)oh * g->OW + t.lo,
                         1, 1.0f, t.hi - t.lo);
            }
}

/* One sample, general groups: per group, the bias rows plus W_g (Og x taps) times its columns. */
static void grouped_forward_sample(const geom *g, const float *W, const float *b, const float *x,
                                   float *y, float *cols) {
    for (int grp = 0; grp < g->G; grp++) {
        float *yg = y + (size_t)grp * g->Og * g->out_plane;
        for (int r = 0; r < g->Og; r++)
            for (size_t p = 0; p < g->out_plane; p++)
                yg[(size_t)r * g->out_plane + p] = b ? b[grp * g->Og + r] : 0.0f;
        im2col(g, x + (size_t)grp * g->Cg * g->in_plane, g->Cg, cols);
        at_gemm(false, false, g->Og, (int)g->out_plane, g->taps, 1.0f,
                W + (size_t)grp * g->Og * g->taps, g->taps, cols, (int)g->out_plane, 1.0f, yg,
                (int)g->out_plane);
    }
}

void at_conv2d_grouped_forward(const at_layer *L, const at_ctx *ctx, const float *x, float *y,
                               int n) {
    const geom g = geometry(L);
    const float *W = ctx->params + L->w_off;
    const float *b = L->b_count ? ctx->params + L->b_off : NULL; /* bias=False: none */
    for (int s = 0; s < n; s++) {
        const float *xs = x + (size_t)s * L->in_size;
        float *ys = y + (size_t)s * L->out_size;
        if (g.Cg == 1)
            dw_forward_sample(&g, W, b, xs, ys, ctx->work);
        else
            grouped_forward_sample(&g, W, b, xs, ys, ctx->work);
        if (L->relu_out)
            for (int i = 0; i < L->out_size; i++) ys[i] = at_relu(ys[i]);
    }
}

/* One sample, general groups: dW_g += G_g cols^T, then the column gradient W_g^T G_g added back
 * into dx (zeroed by the caller). go: the sample's (gated) output gradient. */
static void grouped_backward_sample(const geom *g, const float *W, const float *x, const float *go,
                                    float *dW, float *dx, float *cols) {
    const int pixels = (int)g->out_plane;
    for (int grp = 0; grp < g->G; grp++) {
        const float *gg = go + (size_t)grp * g->Og * g->out_plane;
        const float *Wg = W + (size_t)grp * g->Og * g->taps;
        const size_t in_at = (size_t)grp * g->Cg * g->in_plane;
        if (dW) {
            im2col(g, x + in_at, g->Cg, cols);
            at_gemm(false, true, g->Og, g->taps, pixels, 1.0f, gg, pixels, cols, pixels, 1.0f,
                    dW + (size_t)grp * g->Og * g->taps, g->taps);
        }
        if (dx) {
            at_gemm(true, false, g->taps, pixels, g->Og, 1.0f, Wg, g->taps, gg, pixels, 0.0f,
                    cols, pixels);
            col2im(g, cols, g->Cg, dx + in_at);
        }
    }
}

void at_conv2d_grouped_backward(const at_layer *L, const at_ctx *ctx, const float *x,
                                const float *y, const float *dy, float *dx, int n,
                                bool param_grads) {
    const geom g = geometry(L);
    const float *W = ctx->params + L->w_off;
    float *dW = param_grads ? ctx->grads + L->w_off : NULL;
    float *db = param_grads && L->b_count ? ctx->grads + L->b_off : NULL;
    float *cols = ctx->work; /* general groups; depthwise: the two padded planes */
    float *gated = ctx->work + planes_scratch(&g);
    if (!dW && !dx) return;
    for (int s = 0; s < n; s++) {
        const size_t out_at = (size_t)s * L->out_size, in_at = (size_t)s * L->in_size;
        const float *go = dy + out_at;
        if (L->relu_out) { /* no gradient where the fused ReLU's output is not positive */
            at_relu_grad(gated, go, y + out_at, (size_t)L->out_size);
            go = gated;
        }
        float *dxs = dx ? dx + in_at : NULL;
        if (db)
            for (int o = 0; o < g.OC; o++)
                db[o] += sum_floats(go + (size_t)o * g.out_plane, g.out_plane);
        if (g.Cg == 1) {
            dw_backward_sample(&g, W, x + in_at, go, dW, dxs, cols);
            continue;
        }
        if (dxs) memset(dxs, 0, sizeof(float) * (size_t)L->in_size); /* col2im adds */
        grouped_backward_sample(&g, W, x + in_at, go, dW, dxs, cols);
    }
}
