/* Direct convolution for small stride-1 layers: no column matrix, no permutes.
 *
 * With a sample's input zero-padded into planes of pitch Wp, tap (c, ki, kj) of output pixel
 * (oh, ow) reads flat[c*plane + ki*Wp + kj + q] with q = oh*Wp + ow. Every row of the im2col
 * matrix is therefore the padded input itself, shifted by the tap's offset: the convolution is a
 * GEMM whose B operand is read in place ("shifted views"). Outputs are computed along the flat
 * index q, which includes the Wp - OW columns past each row's end; those are discarded. That waste
 * is the price of long contiguous vectors, and costs less than building and packing columns when
 * the layer has few channels.
 *
 * The input gradient is the forward's adjoint: each tap's product with the output gradient is
 * added back at the tap's offset into a padded gradient ("scatter"). Layers with one to three
 * input channels, whose taps would make too short a tile, take the transposed convolution
 * instead: the same shifted-view product on the output gradient padded by K-1-P, with the
 * weights flipped and transposed (a stride-1 transposed convolution is a convolution). The
 * weight gradient is the dot product of each output-gradient plane (zero in the discarded
 * columns) with each shifted view, the bias gradient its plain sum; per-lane partial sums stay in
 * vectors for the whole chunk and are reduced once at its end, in a fixed order. */
#include "conv2d_direct.h"
#include "conv2d_grouped.h"
#include "vec.h"

#include <string.h>

/* Register tiles as in gemm.c: rows of output channels times vectors of output pixels. ACC is
 * the number of accumulator registers a tile may use, leaving room for operands.
 * MR is a macro: the row-count dispatch below tests it in #if. */
#if defined(__AVX512F__)
#define MR 8
enum { ACC = 24 };
#elif defined(__AVX__)
#define MR 6
enum { ACC = 12 };
#else
#define MR 4
enum { ACC = 12 };
#endif
enum { MAX_NV = 4 }; /* pixel vectors per tile */

static size_t round_up(size_t x, size_t to) { return (x + to - 1) / to * to; }

/* Taps (c, ki, kj) read base[c*plane + ki*pitch + kj + q]: the shifted views of padded planes. */
typedef struct {
    const float *base;
    int channels, K;
    int plane, pitch;
} shifted_views;

/* Padded planes of `channels` x in_h x in_w with `pad` zeros on every side, and the flat output
 * range a K x K window covers: out_rows rows of out_cols valid columns at the padded pitch. */
typedef struct {
    int channels, in_h, in_w, pad, K;
    int pitch, plane;   /* padded row and plane, floats */
    int out_rows, out_cols;
    size_t flat;        /* outputs on the flat index, rounded up to whole vectors */
    size_t size;        /* floats of the padded buffer, including what the last vector reads */
} padded_layout;

static padded_layout layout(int channels, int in_h, int in_w, int pad, int K) {
    padded_layout p;
    p.channels = channels;
    p.in_h = in_h;
    p.in_w = in_w;
    p.pad = pad;
    p.K = K;
    p.pitch = in_w + 2 * pad;
    p.plane = (in_h + 2 * pad) * p.pitch;
    p.out_rows = in_h + 2 * pad - K + 1;
    p.out_cols = p.pitch - K + 1;
    p.flat = round_up((size_t)(p.out_rows - 1) * p.pitch + p.out_cols, VL);
    size_t last_read =
        (size_t)(channels - 1) * p.plane + (size_t)(K - 1) * p.pitch + (K - 1) + p.flat;
    /* Whole cache lines, so that every buffer carved out of the workspace after this one starts
     * on a 64-byte boundary: vector loads across two lines cost twice. */
    p.size = round_up(AT_MAX((size_t)channels * p.plane, last_read), 16);
    return p;
}

/* dst = src, or with a mask (a fused ReLU's output): src where mask > 0, else 0. */
static void copy_masked(float *dst, const float *src, const float *mask, int count) {
    if (!mask) {
        memcpy(dst, src, sizeof(float) * count);
        return;
    }
    at_relu_grad(dst, src, mask, count);
}

/* src (NCHW planes, masked as copy_masked does when mask is not NULL) into padded planes. */
static void pad_planes(const padded_layout *p, const float *src, const float *mask, float *dst) {
    memset(dst, 0, sizeof(float) * p->size);
    if (p->pad == 0 && p->pitch == p->in_w) { /* 1x1: the planes are contiguous rows */
        for (int c = 0; c < p->channels; c++) {
            const size_t from = (size_t)c * p->in_h * p->in_w;
            copy_masked(dst + (size_t)c * p->plane, src + from, mask ? mask + from : NULL,
                        p->in_h * p->in_w);
        }
        return;
    }
    for (int c = 0; c < p->channels; c++)
        for (int h = 0; h < p->in_h; h++) {
            size_t from = ((size_t)c * p->in_h + h) * p->in_w;
            copy_masked(dst + (size_t)c * p->plane + (size_t)(h + p->pad) * p->pitch + p->pad,
                        src + from, mask ? mask + from : NULL, p->in_w);
        }
}

/* One sample's input in the forward layout: padded planes, or for a strided 1x1 layer the
 * subsampled ones (the buffer's tail past the planes zeroed, as pad_planes leaves it). */
static void input_planes(const at_layer *L, const padded_layout *p, const float *src, float *dst) {
    const int S = L->d.stride;
    if (S == 1) {
        pad_planes(p, src, NULL, dst);
        return;
    }
    const size_t planes = (size_t)p->channels * p->plane;
    memset(dst + planes, 0, sizeof(float) * (p->size - planes));
    for (int c = 0; c < p->channels; c++)
        for (int h = 0; h < p->in_h; h++) {
            const float *from = src + ((size_t)c * L->in_h + (size_t)h * S) * L->in_w;
            float *to = dst + (size_t)c * p->plane + (size_t)h * p->pitch;
            for (int w = 0; w < p->in_w; w++) to[w] = from[(size_t)w * S];
        }
}

static shifted_views views_of(const padded_layout *p, const float *padded) {
    return (shifted_views){padded, p->channels, p->K, p->plane, p->pitch};
}

/* Vectors per tile for a row count: as many (up to MAX_NV) as the accumulators allow. */
static inline int vectors_for(int rows) { return AT_MIN(MAX_NV, ACC / rows); }

/* out[r][q .. q + nv*VL) = init[r] + sum over taps t of a[t*MR + r] * view_t[q ..]. Called with
 * constant rows and nv, so the accumulators live in registers. */
static inline __attribute__((always_inline)) void
conv_tile(int rows, int nv, const float *a, const float *init, shifted_views v, int q, float *out,
          size_t ldo) {
    vec acc[MR][MAX_NV];
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < nv; j++) acc[r][j] = splat(init ? init[r] : 0.0f);
    for (int c = 0; c < v.channels; c++)
        for (int ki = 0; ki < v.K; ki++) {
            const float *row = v.base + (size_t)c * v.plane + (size_t)ki * v.pitch + q;
            for (int kj = 0; kj < v.K; kj++, a += MR) {
                vec b[MAX_NV];
                for (int j = 0; j < nv; j++) b[j] = load_vec(row + kj + j * VL);
                for (int r = 0; r < rows; r++)
                    for (int j = 0; j < nv; j++) acc[r][j] += a[r] * b[j];
            }
        }
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < nv; j++) store_vec(out + r * ldo + q + j * VL, acc[r][j]);
}

static inline __attribute__((always_inline)) void
conv_rows(int rows, const float *a, const float *init, shifted_views v, size_t flat, float *out,
          size_t ldo) {
    const int nv = vectors_for(rows);
    int q = 0;
    for (; q + nv * VL <= (int)flat; q += nv * VL)
        conv_tile(rows, nv, a, init, v, q, out, ldo);
    for (; q < (int)flat; q += VL) conv_tile(rows, 1, a, init, v, q, out, ldo);
}

/* out (rows x flat, leading dimension flat) = init + A * views, A packed by panel_index. */
static void shifted_gemm(int rows, const float *packed, const float *init, shifted_views v,
                         size_t flat, float *out) {
    const size_t taps = (size_t)v.channels * v.K * v.K;
    for (int r0 = 0; r0 < rows; r0 += MR) {
        const float *a = packed + (size_t)r0 * taps;
        const float *i0 = init ? init + r0 : NULL;
        float *o = out + (size_t)r0 * flat;
        switch (AT_MIN(MR, rows - r0)) {
        case 1: conv_rows(1, a, i0, v, flat, o, flat); break;
        case 2: conv_rows(2, a, i0, v, flat, o, flat); break;
        case 3: conv_rows(3, a, i0, v, flat, o, flat); break;
        case 4: conv_rows(4, a, i0, v, flat, o, flat); break;
#if MR > 4
        case 5: conv_rows(5, a, i0, v, flat, o, flat); break;
        case 6: conv_rows(6, a, i0, v, flat, o, flat); break;
#endif
#if MR > 6
        case 7: conv_rows(7, a, i0, v, flat, o, flat); break;
        case 8: conv_rows(8, a, i0, v, flat, o, flat); break;
#endif
        }
    }
}

/* Where A(r, t) of a rows x taps matrix goes in MR-row panels [t][MR]. */
static inline size_t panel_index(int r, int t, int taps) {
    return (size_t)(r / MR) * MR * taps + (size_t)t * MR + r % MR;
}

static size_t panel_size(int rows, int taps) { return round_up(round_up((size_t)rows, MR) * taps, 16); }

/* Panels of W (OC x taps), zero-padded to whole panels. */
static void pack_weights(const float *W, int OC, int taps, float *dst) {
    memset(dst, 0, sizeof(float) * panel_size(OC, taps));
    for (int o = 0; o < OC; o++)
        for (int t = 0; t < taps; t++) dst[panel_index(o, t, taps)] = W[(size_t)o * taps + t];
}

/* Panels of A(c, (o, ki, kj)) = W[o][c][K-1-ki][K-1-kj]: the input gradient's weights. */
static void pack_flipped(const float *W, int C, int OC, int K, float *dst) {
    const int out_taps = OC * K * K;
    memset(dst, 0, sizeof(float) * panel_size(C, out_taps));
    for (int o = 0; o < OC; o++)
        for (int c = 0; c < C; c++)
            for (int ki = 0; ki < K; ki++)
                for (int kj = 0; kj < K; kj++)
                    dst[panel_index(c, (o * K + ki) * K + kj, out_taps)] =
                        W[(((size_t)o * C + c) * K + (K - 1 - ki)) * K + (K - 1 - kj)];
}

/* Copies the valid columns of a flat result into NCHW planes, rectified if relu. */
static void unflatten(const padded_layout *p, int planes, const float *flat, bool relu,
                      float *dst) {
    for (int o = 0; o < planes; o++)
        for (int h = 0; h < p->out_rows; h++) {
            float *d = dst + ((size_t)o * p->out_rows + h) * p->out_cols;
            const float *s = flat + (size_t)o * p->flat + (size_t)h * p->pitch;
            if (relu)
                for (int i = 0; i < p->out_cols; i++) d[i] = at_relu(s[i]);
            else
                memcpy(d, s, sizeof(float) * p->out_cols);
        }
}

/* The inverse: NCHW planes (masked as copy_masked does) into the flat layout, the discarded
 * columns zero. */
static void flatten(const padded_layout *p, int planes, const float *src, const float *mask,
                    float *flat) {
    memset(flat, 0, sizeof(float) * planes * p->flat);
    if (p->out_cols == p->pitch) { /* 1x1: no discarded columns, one copy per plane */
        const int area = p->out_rows * p->out_cols;
        for (int o = 0; o < planes; o++) {
            const size_t from = (size_t)o * area;
            copy_masked(flat + (size_t)o * p->flat, src + from, mask ? mask + from : NULL, area);
        }
        return;
    }
    for (int o = 0; o < planes; o++)
        for (int h = 0; h < p->out_rows; h++) {
            size_t from = ((size_t)o * p->out_rows + h) * p->out_cols;
            copy_masked(flat + (size_t)o * p->flat + (size_t)h * p->pitch, src + from,
                        mask ? mask + from : NULL, p->out_cols);
        }
}

/* The forward input layout and the input-gradient layout (output gradient padded by K-1-P). A
 * strided 1x1 layer reads only every stride-th pixel: its "padded" input is that subsampled
 * input (out_h x out_w per channel), on which it is a stride-1 1x1 convolution. */
static padded_layout input_layout(const at_layer *L) {
    if (L->d.stride > 1) return layout(L->in_c, L->out_h, L->out_w, 0, 1);
    return layout(L->in_c, L->in_h, L->in_w, L->d.pad, L->d.kernel);
}
static padded_layout dy_layout(const at_layer *L) {
    return layout(L->out_c, L->out_h, L->out_w, L->d.kernel - 1 - L->d.pad, L->d.kernel);
}

/* Otherwise stride 1 only (the shifted views need it) and padding below the kernel (the input
 * gradient pads dy by K-1-P). Measured against im2col + GEMM on 28x28 inputs, one thread: the direct path
 * is 1.15-1.4x faster up to 32 output channels (16 -> 16, 32 -> 32 at 3x3, 16 -> 32 at 5x5)
 * and on par at 64 (8, 32 and 64 -> 64 at 3x3), where the GEMM's larger tiles pay for the
 * packing. The tap limit keeps the layers within what was measured. */
enum { DIRECT_MAX_OUT_CHANNELS = 32, DIRECT_MAX_TAPS = 576 };

/* Strided 1x1 layers without padding (ResNet's projection shortcuts): im2row copied one float
 * per channel and pixel, which cost resnet8's two shortcuts 5.5% of a training step for 2% of
 * its multiply-adds; here they subsample the input once and run as stride-1 1x1 layers. */
static bool strided_pointwise(const at_layer *L) {
    return L->d.kernel == 1 && L->d.pad == 0 && L->d.stride > 1 && L->out_c <= 64 &&
           L->in_c <= DIRECT_MAX_TAPS;
}

bool at_conv2d_direct_applies(const at_layer *L) {
    const int taps = L->in_c * L->d.kernel * L->d.kernel;
    /* Dense layers only: grouped ones go to conv2d_grouped.c. */
    if (at_conv2d_groups(L) != 1) return false;
    if (strided_pointwise(L)) return true;
    return L->d.stride == 1 && L->d.pad < L->d.kernel && L->out_c <= DIRECT_MAX_OUT_CHANNELS &&
           taps <= DIRECT_MAX_TAPS;
}

/* The scatter input gradient runs tiles of the input channels at one kernel position (their
 * offsets a plane apart, so one tile's additions into the gradient never overlap when the
 * planes are at least a tile wide). With one to three input channels such a tile is too short;
 * and where padding is at least K-1 the transposed convolution multiplies no more zeros than the
 * scatter (conv1 of seed-cnn, pad 2 of a 5x5 kernel, costs the same either way). */
static bool scatter_input_gradient(const at_layer *L) {
    if (L->d.stride > 1) return false; /* a strided 1x1 layer: the transposed path spreads dx */
    const padded_layout in = input_layout(L), g = dy_layout(L);
    const size_t scatter = in.flat * L->in_c, transposed = g.flat * L->in_c; /* x OC*K*K each */
    return L->in_c >= 4 && scatter < transposed;
}

/* Scratch of the input gradient. Scatter: flat dy, padded dx, packed weights (one MR-channel
 * panel of OC values per kernel position and channel tile). Transposed: padded dy, flat dx,
 * packed flipped weights. */
static size_t scatter_panels(const at_layer *L) {
    return round_up((size_t)L->d.kernel * L->d.kernel * round_up((size_t)L->in_c, MR) * L->out_c, 16);
}
static size_t input_gradient_workspace(const at_layer *L) {
    if (scatter_input_gradient(L)) {
        const padded_layout in = input_layout(L);
        return (size_t)L->out_c * in.flat + in.size + scatter_panels(L);
    }
    const padded_layout g = dy_layout(L);
    const int out_taps = L->out_c * L->d.kernel * L->d.kernel;
    return g.size + (size_t)L->in_c * g.flat + panel_size(L->in_c, out_taps);
}

static size_t weight_gradient_workspace(const at_layer *L);

/* Forward: padded input, flat output, packed weights. Backward: the input gradient's scratch,
 * then the weight gradient's. */
size_t at_conv2d_direct_workspace(const at_layer *L) {
    const padded_layout in = input_layout(L);
    const int taps = L->in_c * L->d.kernel * L->d.kernel;
    size_t fwd = in.size + (size_t)L->out_c * in.flat + panel_size(L->out_c, taps);
    return AT_MAX(fwd, input_gradient_workspace(L) + weight_gradient_workspace(L));
}

void at_conv2d_direct_forward(const at_layer *L, const at_ctx *ctx, const float *x, float *y,
                              int n) {
    const padded_layout in = input_layout(L);
    const int OC = L->out_c, taps = L->in_c * L->d.kernel * L->d.kernel;
    const float *W = ctx->params + L->w_off;
    /* bias=False (b_count 0): the tiles start from zero; b_off is the next tensor's. */
    const float *b = L->b_count ? ctx->params + L->b_off : NULL;
    float *padded = ctx->work, *flat = padded + in.size, *packed = flat + (size_t)OC * in.flat;
    pack_weights(W, OC, taps, packed);
    for (int s = 0; s < n; s++) {
        input_planes(L, &in, x + (size_t)s * L->in_size, padded);
        shifted_gemm(OC, packed, b, views_of(&in, padded), in.flat, flat);
        unflatten(&in, OC, flat, L->relu_out, y + (size_t)s * L->out_size);
    }
}

/* d[off[r] + q + j*VL ..] += sum over o < OC of a[o*MR + r] * g[o*gflat + q + j*VL ..] for the
 * tile's rows r (input channels at one kernel position) and nv vectors. Constant rows and nv. */
static inline __attribute__((always_inline)) void
scatter_tile(int rows, int nv, const float *a, int OC, const float *g, size_t gflat, int q,
             float *d, const size_t *off) {
    vec acc[MR][MAX_NV];
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < nv; j++) acc[r][j] = splat(0.0f);
    for (int o = 0; o < OC; o++, a += MR) {
        vec b[MAX_NV];
        for (int j = 0; j < nv; j++) b[j] = load_vec(g + (size_t)o * gflat + q + j * VL);
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < nv; j++) acc[r][j] += a[r] * b[j];
    }
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < nv; j++) {
            float *at = d + off[r] + q + j * VL;
            store_vec(at, load_vec(at) + acc[r][j]);
        }
}

static inline __attribute__((always_inline)) void
scatter_rows(int rows, int nv, const float *a, int OC, const float *g, size_t gflat, float *d,
             const size_t *off) {
    int q = 0;
    for (; q + nv * VL <= (int)gflat; q += nv * VL) scatter_tile(rows, nv, a, OC, g, gflat, q, d, off);
    for (; q < (int)gflat; q += VL) scatter_tile(rows, 1, a, OC, g, gflat, q, d, off);
}

/* The forward read padded input [off(t) + q] for tap t = (c, ki, kj) and flat output q, so the
 * input gradient is d(padded)[off(t) + q] += sum_o W[o][t] * g[o][q], g being dy on the flat
 * index with the discarded columns zero. Its multiply-adds are the forward's; the transposed
 * convolution's count C x OC*K*K x (dy padded by K-1-P)'s flat, 1.8x as many for seed-cnn's conv2,
 * whose 4 rings of padding around a 10x10 dy are mostly zeros. */
/* Panels by kernel position, then tile of MR channels: a[o*MR + r] = W[o][c0 + r][ki][kj]. */
static void scatter_pack(const at_layer *L, const float *W, float *packed) {
    const int C = L->in_c, OC = L->out_c, K = L->d.kernel, ctiles = (C + MR - 1) / MR;
    memset(packed, 0, sizeof(float) * scatter_panels(L));
    for (int k = 0; k < K * K; k++)
        for (int o = 0; o < OC; o++)
            for (int c = 0; c < C; c++)
                packed[(((size_t)k * ctiles + c / MR) * OC + o) * MR + c % MR] =
                    W[((size_t)o * C + c) * K * K + k];
}

/* One sample: g its flat output gradient, d scratch of the padded input's size, dx its input
 * gradient. */
static void scatter_sample(const at_layer *L, const float *packed, const float *g, float *d, float *dx) {
    const padded_layout in = input_layout(L);
    const int C = L->in_c, OC = L->out_c, K = L->d.kernel, P = L->d.pad, ctiles = (C + MR - 1) / MR;
    /* Channels a plane apart: a tile's vectors never overlap when a plane is that wide. */
    const int nv_max = AT_MAX(1, AT_MIN(MAX_NV, in.plane / VL));
    memset(d, 0, sizeof(float) * in.size);
    for (int k = 0; k < K * K; k++) {
        const int ki = k / K, kj = k % K;
        for (int c0 = 0; c0 < C; c0 += MR) {
            const int rows = AT_MIN(MR, C - c0);
            size_t off[MR];
            for (int r = 0; r < rows; r++) off[r] = (size_t)(c0 + r) * in.plane + (size_t)ki * in.pitch + kj;
            const float *a = packed + ((size_t)k * ctiles + c0 / MR) * OC * MR;
            const int nv = AT_MIN(nv_max, vectors_for(rows));
            switch (rows * 8 + nv) { /* constant tiles for the register allocator */
#define SCATTER_CASE(R, V) \
    case R * 8 + V: scatter_rows(R, V, a, OC, g, in.flat, d, off); break;
#define SCATTER_ROWS(R) SCATTER_CASE(R, 1) SCATTER_CASE(R, 2) SCATTER_CASE(R, 3) SCATTER_CASE(R, 4)
                SCATTER_ROWS(1) SCATTER_ROWS(2) SCATTER_ROWS(3) SCATTER_ROWS(4)
#if MR > 4
                SCATTER_ROWS(5) SCATTER_ROWS(6)
#endif
#if MR > 6
                SCATTER_ROWS(7) SCATTER_ROWS(8)
#endif
#undef SCATTER_ROWS
#undef SCATTER_CASE
            }
        }
    }
    /* The interior of the padded gradient is dx; what fell on the padding is dropped. */
    for (int c = 0; c < C; c++)
        for (int h = 0; h < L->in_h; h++)
            memcpy(dx + ((size_t)c * L->in_h + h) * L->in_w,
                   d + (size_t)c * in.plane + (size_t)(h + P) * in.pitch + P, sizeof(float) * L->in_w);
}

static void input_gradient_scatter(const at_layer *L, const float *W, const float *dy,
                                   const float *mask, float *dx, int n, float *work) {
    const padded_layout in = input_layout(L);
    float *g = work, *d = g + (size_t)L->out_c * in.flat, *packed = d + in.size;
    scatter_pack(L, W, packed);
    for (int s = 0; s < n; s++) {
        const size_t at = (size_t)s * L->out_size;
        flatten(&in, L->out_c, dy + at, mask ? mask + at : NULL, g);
        scatter_sample(L, packed, g, d, dx + (size_t)s * L->in_size);
    }
}

/* A strided 1x1 layer's input gradient: the flat result (C planes of out_h x out_w) at every
 * stride-th pixel of dx, zero elsewhere (no output reads those pixels). */
static void spread(const at_layer *L, const padded_layout *g, const float *flat, float *dx) {
    const int S = L->d.stride;
    memset(dx, 0, sizeof(float) * L->in_size);
    for (int c = 0; c < L->in_c; c++)
        for (int h = 0; h < g->out_rows; h++) {
            const float *from = flat + (size_t)c * g->flat + (size_t)h * g->pitch;
            float *to = dx + ((size_t)c * L->in_h + (size_t)h * S) * L->in_w;
            for (int w = 0; w < g->out_cols; w++) to[(size_t)w * S] = from[w];
        }
}

/* dx = dy padded by K-1-P convolved with W flipped in space and with in/out channels swapped.
 * mask: the output of a fused ReLU (dy is zero where it is not positive), or NULL. */
static void input_gradient(const at_layer *L, const float *W, const float *dy, const float *mask,
                           float *dx, int n, float *work) {
    if (scatter_input_gradient(L)) {
        input_gradient_scatter(L, W, dy, mask, dx, n, work);
        return;
    }
    const padded_layout g = dy_layout(L);
    const int C = L->in_c, OC = L->out_c, K = L->d.kernel;
    float *padded = work, *flat = padded + g.size, *packed = flat + (size_t)C * g.flat;
    pack_flipped(W, C, OC, K, packed);
    for (int s = 0; s < n; s++) {
        const size_t at = (size_t)s * L->out_size;
        pad_planes(&g, dy + at, mask ? mask + at : NULL, padded);
        shifted_gemm(C, packed, NULL, views_of(&g, padded), g.flat, flat);
        if (L->d.stride > 1)
            spread(L, &g, flat, dx + (size_t)s * L->in_size);
        else
            unflatten(&g, C, flat, false, dx + (size_t)s * L->in_size);
    }
}

/* Where each tap's shifted view starts in the padded planes: computed once per call, because
 * the divisions it takes cost more than a short tile's arithmetic. */
static void tap_offsets(shifted_views v, size_t *offset) {
    for (int c = 0, t = 0; c < v.channels; c++)
        for (int ki = 0; ki < v.K; ki++)
            for (int kj = 0; kj < v.K; kj++, t++)
                offset[t] = (size_t)c * v.plane + (size_t)ki * v.pitch + kj;
}

/* The weight gradient works on chunks of samples, so that a tile's partial sums stay in registers
 * across samples: with seed-cnn's conv2 one sample is only 9 vectors long, too short to pay for
 * loading and storing a tile's accumulators. */
enum { GRAD_CHUNK = 16 };

typedef struct {
    const float *g;       /* flat output gradients: sample s, channel r at g + s*g_stride + r*flat */
    const float *base;    /* padded inputs: sample s at base + s*in_stride */
    size_t flat, g_stride, in_stride;
    int samples, taps;
    const size_t *offset; /* where each tap's view starts in a sample's padded planes */
} grad_chunk;

/* acc[r][j] += sum over the chunk's samples and q < flat of g[r0+r][q] * view_{t0+j}[q], per
 * lane. Constant rows and nt. */
static inline __attribute__((always_inline)) void
grad_tile(int rows, int nt, const grad_chunk *c, int r0, int t0, float *partial) {
    vec acc[MR][MAX_NV];
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < nt; j++)
            acc[r][j] = load_vec(partial + ((size_t)(r0 + r) * c->taps + t0 + j) * VL);
    for (int s = 0; s < c->samples; s++) {
        const float *src[MAX_NV];
        for (int j = 0; j < nt; j++) src[j] = c->base + s * c->in_stride + c->offset[t0 + j];
        const float *g = c->g + s * c->g_stride + (size_t)r0 * c->flat;
        for (size_t q = 0; q < c->flat; q += VL) {
            vec b[MAX_NV];
            for (int j = 0; j < nt; j++) b[j] = load_vec(src[j] + q);
            for (int r = 0; r < rows; r++) {
                vec gr = load_vec(g + r * c->flat + q);
                for (int j = 0; j < nt; j++) acc[r][j] += gr * b[j];
            }
        }
    }
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < nt; j++)
            store_vec(partial + ((size_t)(r0 + r) * c->taps + t0 + j) * VL, acc[r][j]);
}

static inline __attribute__((always_inline)) void
grad_rows(int rows, const grad_chunk *c, int r0, float *partial) {
    const int nt = vectors_for(rows);
    int t = 0;
    for (; t + nt <= c->taps; t += nt) grad_tile(rows, nt, c, r0, t, partial);
    for (; t < c->taps; t++) grad_tile(rows, 1, c, r0, t, partial);
}

/* partial[r][t][lane] += per-lane sums of g[r] * view_t over the chunk, for every channel r. */
static void weight_gradient_partials(int rows, const grad_chunk *c, float *partial) {
    for (int r0 = 0; r0 < rows; r0 += MR) {
        switch (AT_MIN(MR, rows - r0)) {
        case 1: grad_rows(1, c, r0, partial); break;
        case 2: grad_rows(2, c, r0, partial); break;
        case 3: grad_rows(3, c, r0, partial); break;
        case 4: grad_rows(4, c, r0, partial); break;
#if MR > 4
        case 5: grad_rows(5, c, r0, partial); break;
        case 6: grad_rows(6, c, r0, partial); break;
#endif
#if MR > 6
        case 7: grad_rows(7, c, r0, partial); break;
        case 8: grad_rows(8, c, r0, partial); break;
#endif
        }
    }
}

/* Scratch of the weight gradient: a chunk's padded inputs and flat output gradients, then the
 * per-lane partial sums of dW and of the bias. */
static size_t weight_gradient_workspace(const at_layer *L) {
    const padded_layout in = input_layout(L);
    const int taps = L->in_c * L->d.kernel * L->d.kernel;
    return (size_t)GRAD_CHUNK * (in.size + (size_t)L->out_c * in.flat) +
           (size_t)L->out_c * (taps + 1) * VL;
}

/* With a scatter job, the weight gradient also computes the input gradient from the flat output
 * gradients it builds anyway (both need dy masked and flattened the same way). */
typedef struct {
    const float *packed; /* scatter_pack's panels */
    float *d;            /* scratch of the padded input's size */
    float *dx;
} scatter_job;

static void weight_gradient(const at_layer *L, const float *x, const float *dy,
                            const float *mask, float *dW, float *db, int n, float *work,
                            const scatter_job *job) {
    const padded_layout in = input_layout(L);
    const int OC = L->out_c, taps = L->in_c * L->d.kernel * L->d.kernel;
    const size_t g_stride = (size_t)OC * in.flat;
    float *padded = work, *g = padded + GRAD_CHUNK * in.size, *partial = g + GRAD_CHUNK * g_stride;
    float *bias_partial = partial + (size_t)OC * taps * VL;
    memset(partial, 0, sizeof(float) * OC * (taps + 1) * VL);
    size_t offset[DIRECT_MAX_TAPS];
    tap_offsets(views_of(&in, padded), offset);
    for (int s0 = 0; s0 < n; s0 += GRAD_CHUNK) {
        const int m = AT_MIN(GRAD_CHUNK, n - s0);
        for (int s = 0; s < m; s++) {
            const size_t at = (size_t)(s0 + s) * L->out_size;
            input_planes(L, &in, x + (size_t)(s0 + s) * L->in_size, padded + s * in.size);
            flatten(&in, OC, dy + at, mask ? mask + at : NULL, g + s * g_stride);
        }
        const grad_chunk c = {g, padded, in.flat, g_stride, in.size, m, taps, offset};
        weight_gradient_partials(OC, &c, partial);
        for (int s = 0; job && s < m; s++)
            scatter_sample(L, job->packed, g + s * g_stride, job->d, job->dx + (size_t)(s0 + s) * L->in_size);
        /* The bias gradient sums g per lane too: a scalar running sum would be one long chain of
         * dependent additions, slower than the whole weight gradient. None for bias=False. */
        for (int o = 0; db && o < OC; o++) {
            vec acc = load_vec(bias_partial + (size_t)o * VL);
            for (int s = 0; s < m; s++)
                for (size_t q = 0; q < in.flat; q += VL)
                    acc += load_vec(g + s * g_stride + (size_t)o * in.flat + q);
            store_vec(bias_partial + (size_t)o * VL, acc);
        }
    }
    for (size_t i = 0; i < (size_t)OC * taps; i++) dW[i] += sum_lanes(load_vec(partial + i * VL));
    for (int o = 0; db && o < OC; o++) db[o] += sum_lanes(load_vec(bias_partial + (size_t)o * VL));
}

void at_conv2d_direct_backward(const at_layer *L, const at_ctx *ctx, const float *x,
                               const float *y, const float *dy, float *dx, int n,
                               bool param_grads) {
    const float *mask = L->relu_out ? y : NULL;
    const float *W = ctx->params + L->w_off;
    float *db = L->b_count ? ctx->grads + L->b_off : NULL; /* bias=False: none */
    float *grad_work = ctx->work + input_gradient_workspace(L);
    if (param_grads && dx && scatter_input_gradient(L)) {
        /* One pass over dy: the scatter takes the input gradient's scratch less its flat dy. */
        const padded_layout in = input_layout(L);
        float *d = ctx->work + (size_t)L->out_c * in.flat, *packed = d + in.size;
        scatter_pack(L, W, packed);
        const scatter_job job = {packed, d, dx};
        weight_gradient(L, x, dy, mask, ctx->grads + L->w_off, db, n, grad_work, &job);
        return;
    }
    if (param_grads)
        weight_gradient(L, x, dy, mask, ctx->grads + L->w_off, db, n, grad_work, NULL);
    if (dx) input_gradient(L, W, dy, mask, dx, n, ctx->work);
}
