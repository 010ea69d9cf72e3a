/* Grouped convolutions (nn.Conv2d with groups > 1), one sample at a time; nothing is kept from
 * the forward for the backward (kept_per_sample is 0).
 *
 * Group g reads input channels [g*Cg, (g+1)*Cg) and writes output channels [g*Og, (g+1)*Og),
 * Cg = in/groups, Og = out/groups, with the weights W[o][0..Cg)[K][K]: PyTorch's layout
 * (out, in/groups, K, K).
 *
 * Depthwise layers (Cg = 1: groups = in_channels; each output plane reads one input plane) have
 * too little work per group for a GEMM: direct loops over the K x K taps, each tap one
 * multiply-add along a row of output columns (contiguous at stride 1, so vectorised). The input
 * gradient adds every tap back the same way; the weight gradient is one dot product per tap and
 * output row.
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
    size_t in_plane, out_plane;
} geom;

static geom geometry(const at_layer *L) {
    geom g;
    g.C = L->in_c, g.H = L->in_h, g.W = L->in_w;
    g.K = L->d.kernel, g.S = L->d.stride, g.P = L->d.pad;
    g.OH = L->out_h, g.OW = L->out_w, g.OC = L->out_c;
    g.G = at_conv2d_groups(L);
    g.Cg = g.C / g.G, g.Og = g.OC / g.G, g.taps = g.Cg * g.K * g.K;
    g.in_plane = (size_t)g.H * g.W, g.out_plane = (size_t)g.OH * g.OW;
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

/* Scratch: the column matrix of one group (general groups), then one sample's gated output
 * gradient (a fused ReLU). */
size_t at_conv2d_grouped_workspace(const at_layer *L, int n) {
    const geom g = geometry(L);
    const size_t cols = g.Cg > 1 ? (size_t)g.taps * g.out_plane : 0;
    return cols + (L->relu_out ? (size_t)L->out_size : 0);
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

/* One depthwise output plane: the bias, then the taps in (ki, kj) order for every pixel. */
static void dw_forward_plane(const geom *g, const float *in, const float *w, float bias,
                             float *out) {
    for (size_t p = 0; p < g->out_plane; p++) out[p] = bias;
    for (int ki = 0; ki < g->K; ki++)
        for (int kj = 0; kj < g->K; kj++) {
            tap_span t;
            if (!span_of(g, ki, kj, &t)) continue;
            for (int oh = t.oh_lo; oh < t.oh_hi; oh++)
                madd(out + (size_t)oh * g->OW + t.lo, 1, in + tap_at(g, &t, oh, ki, kj), g->S,
                     w[ki * g->K + kj], t.hi - t.lo);
        }
}

/* A depthwise plane's gradients from its output gradient go: the kernel's dw (+=, if not NULL)
 * and the input plane's din (+=, if not NULL). */
static void dw_backward_plane(const geom *g, const float *in, const float *w, const float *go,
                              float *dw, float *din) {
    for (int ki = 0; ki < g->K; ki++)
        for (int kj = 0; kj < g->K; kj++) {
            tap_span t;
            if (!span_of(g, ki, kj, &t)) continue;
            const float wk = w[ki * g->K + kj];
            vec acc = splat(0.0f);
            float rest = 0.0f;
            for (int oh = t.oh_lo; oh < t.oh_hi; oh++) {
                const float *gr = go + (size_t)oh * g->OW + t.lo;
                const size_t at = tap_at(g, &t, oh, ki, kj);
                if (dw) dot_into(&acc, &rest, gr, in + at, g->S, t.hi - t.lo);
                if (din) madd(din + at, g->S, gr, 1, wk, t.hi - t.lo);
            }
            if (dw) dw[ki * g->K + kj] += sum_lanes(acc) + rest;
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
        if (g.Cg == 1) /* depthwise: output plane o reads input plane o / Og */
            for (int o = 0; o < g.OC; o++)
                dw_forward_plane(&g, xs + (size_t)(o / g.Og) * g.in_plane,
                                 W + (size_t)o * g.K * g.K, b ? b[o] : 0.0f,
                                 ys + (size_t)o * g.out_plane);
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
    float *cols = ctx->work;
    float *gated = ctx->work + (g.Cg > 1 ? (size_t)g.taps * g.out_plane : 0);
    if (!dW && !dx) return;
    for (int s = 0; s < n; s++) {
        const size_t out_at = (size_t)s * L->out_size, in_at = (size_t)s * L->in_size;
        const float *go = dy + out_at;
        if (L->relu_out) { /* no gradient where the fused ReLU's output is not positive */
            at_relu_grad(gated, go, y + out_at, (size_t)L->out_size);
            go = gated;
        }
        float *dxs = dx ? dx + in_at : NULL;
        if (dxs) memset(dxs, 0, sizeof(float) * (size_t)L->in_size);
        if (db)
            for (int o = 0; o < g.OC; o++)
                db[o] += sum_floats(go + (size_t)o * g.out_plane, g.out_plane);
        if (g.Cg > 1) {
            grouped_backward_sample(&g, W, x + in_at, go, dW, dxs, cols);
            continue;
        }
        for (int o = 0; o < g.OC; o++) {
            const size_t c_at = (size_t)(o / g.Og) * g.in_plane;
            dw_backward_plane(&g, x + in_at + c_at, W + (size_t)o * g.K * g.K,
                              go + (size_t)o * g.out_plane, dW ? dW + (size_t)o * g.K * g.K : NULL,
                              dxs ? dxs + c_at : NULL);
        }
    }
}
