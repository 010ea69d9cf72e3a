/* int8 kernels with plain arguments: the one source of the int8 arithmetic that the library runs
 * and that `advtrain export --c --int8` ships. The exporter copies this file verbatim into the
 * generated PREFIX.c, so the library's int8 inference and the exported C compute every value
 * with the same code: the same bits on a PC and on a Cortex-M (integer operations only; the one
 * double division, quantizing a float input, is correctly rounded by IEEE 754 on every target).
 *
 * C99, <stddef.h> and <stdint.h> only; no allocation; every function static inline, so a unit
 * that does not call one gets no code for it. The library's own Conv2d and Linear run faster
 * versions of qk_conv and qk_linear (int16 patches and dot products, src/quant/qconv.c) with the
 * same results: their int32 sums are exact (qk_layer's bound below), so any order of the sums
 * gives the same bits; tests/test_quant.c checks them against these.
 *
 * The scheme (TensorFlow Lite Micro, CMSIS-NN): real = (q - zero_point) * scale; weights int8
 * symmetric per output channel, activations int8 per tensor, biases int32; an int32 sum goes back
 * to int8 through a fixed-point multiplier in [2^30, 2^31) and a power of two (Jacob et al. 2018,
 * arXiv 1712.05877, section 2.3; TFLite's MultiplyByQuantizedMultiplier). */
#ifndef ADVTRAIN_QKERNELS_H
#define ADVTRAIN_QKERNELS_H
#include <stddef.h>
#include <stdint.h>

/* One int8 layer: its geometry (Linear: in_c inputs and out_c outputs, every h and w 1) and its
 * constants. Per output channel (Conv2d, Linear, the affine map): weights, int32 bias,
 * multiplier and shift. Every |bias| + 255 * sum |w| of a channel is at most INT32_MAX (the
 * library refuses a file where it is not), so no int32 sum overflows. */
typedef struct qk_layer {
    int32_t in_c, in_h, in_w, out_c, out_h, out_w;
    int32_t kernel, stride, pad, groups;
    int32_t in_zp, in_zp2, out_zp; /* zero points of the input(s) and the output */
    int32_t lo, hi;                /* the output clamp: lo = out_zp after a ReLU */
    const int8_t *w;
    const int32_t *bias, *mult, *shift;
    int32_t add_mult[3], add_shift[3]; /* Add: each input to a common scale, the sum to the output's */
} qk_layer;

/* (a * b * 2) / 2^32 rounded to nearest, ties away from zero; saturates the one overflow. */
static inline int32_t qk_doubling_high_mul(int32_t a, int32_t b) {
    if (a == INT32_MIN && b == INT32_MIN) return INT32_MAX;
    const int64_t ab = (int64_t)a * (int64_t)b;
    const int64_t nudge = ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30));
    return (int32_t)((ab + nudge) / ((int64_t)1 << 31));
}

/* round(x / 2^exponent), half away from zero (exponent 0..31). */
static inline int32_t qk_rounding_shift(int32_t x, int exponent) {
    if (exponent <= 0) return x;
    const int32_t mask = (int32_t)(((int64_t)1 << exponent) - 1);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0);
    return (x >> exponent) + (remainder > threshold);
}

/* round(x * mult * 2^shift / 2^31): x times 2^shift saturated to int32 when shift > 0 (as the
 * reference does through its 64-bit product), the doubling high multiply, the rounding shift. */
static inline int32_t qk_requant(int32_t x, int32_t mult, int32_t shift) {
    const int left = shift > 0 ? (int)shift : 0, right = shift > 0 ? 0 : (int)-shift;
    int64_t wide = (int64_t)x * ((int64_t)1 << left);
    if (wide > INT32_MAX) wide = INT32_MAX;
    if (wide < INT32_MIN) wide = INT32_MIN;
    return qk_rounding_shift(qk_doubling_high_mul((int32_t)wide, mult), right);
}

/* zp + a requantized value, clamped to [lo, hi]: added in 64 bits, since a requantization may
 * saturate at the int32 range. */
static inline int8_t qk_store(int32_t r, int32_t zp, int32_t lo, int32_t hi) {
    const int64_t v = (int64_t)r + zp;
    return (int8_t)(v < lo ? lo : (v > hi ? hi : v));
}

/* A float to int8 at (scale, zp): zp + round(v / scale) half away from zero, clamped; NaN goes
 * to zp (real 0). Written without libm: the truncation and the exact remainder give round(). */
static inline int8_t qk_quantize(float v, float scale, int32_t zp) {
    double r = (double)v / (double)scale;
    if (!(r == r)) r = 0.0;
    if (r > 1e9) r = 1e9;
    if (r < -1e9) r = -1e9;
    int64_t t = (int64_t)r; /* toward zero; r - t is exact below 2^52 */
    const double rest = r - (double)t;
    t += rest >= 0.5 ? 1 : (rest <= -0.5 ? -1 : 0);
    t += zp;
    return (int8_t)(t < -128 ? -128 : (t > 127 ? 127 : t));
}

/* Output channel o of a Conv2d (grouped and depthwise included): each output the int32 sum of
 * w * (x - in_zp) over its window plus the bias; zero padding is real 0 (x = in_zp), skipped. */
static inline void qk_conv_channel(const qk_layer *L, int32_t o, const int8_t *x, int8_t *y) {
    const int32_t groups = L->groups > 1 ? L->groups : 1, K = L->kernel, H = L->in_h, W = L->in_w;
    const int32_t cin = L->in_c / groups, g = o / (L->out_c / groups);
    const int8_t *w = L->w + (size_t)o * cin * K * K;
    const int8_t *xg = x + (size_t)g * cin * H * W;
    for (int32_t oh = 0; oh < L->out_h; oh++)
        for (int32_t ow = 0; ow < L->out_w; ow++) {
            int32_t acc = L->bias[o];
            for (int32_t c = 0; c < cin; c++)
                for (int32_t ki = 0; ki < K; ki++) {
                    const int32_t ih = oh * L->stride - L->pad + ki;
                    if (ih < 0 || ih >= H) continue;
                    for (int32_t kj = 0; kj < K; kj++) {
                        const int32_t iw = ow * L->stride - L->pad + kj;
                        if (iw >= 0 && iw < W)
                            acc += w[((size_t)c * K + ki) * K + kj] * (xg[((size_t)c * H + ih) * W + iw] - L->in_zp);
                    }
                }
            y[((size_t)o * L->out_h + oh) * L->out_w + ow] =
                qk_store(qk_requant(acc, L->mult[o], L->shift[o]), L->out_zp, L->lo, L->hi);
        }
}

static inline void qk_conv(const qk_layer *L, const int8_t *x, int8_t *y) {
    for (int32_t o = 0; o < L->out_c; o++) qk_conv_channel(L, o, x, y);
}

/* Linear: y[o] = requant(bias[o] + sum_i w[o][i] * (x[i] - in_zp)). */
static inline void qk_linear(const qk_layer *L, const int8_t *x, int8_t *y) {
    for (int32_t o = 0; o < L->out_c; o++) {
        const int8_t *w = L->w + (size_t)o * L->in_c;
        int32_t acc = L->bias[o];
        for (int32_t i = 0; i < L->in_c; i++) acc += w[i] * (x[i] - L->in_zp);
        y[o] = qk_store(qk_requant(acc, L->mult[o], L->shift[o]), L->out_zp, L->lo, L->hi);
    }
}

/* A BatchNorm that is not folded: a per-channel affine map (one int8 weight per channel). */
static inline void qk_affine(const qk_layer *L, const int8_t *x, int8_t *y) {
    const size_t area = (size_t)L->in_h * L->in_w;
    for (int32_t c = 0; c < L->in_c; c++)
        for (size_t i = 0; i < area; i++) {
            const int32_t acc = L->bias[c] + (int32_t)L->w[c] * (x[c * area + i] - L->in_zp);
            y[c * area + i] = qk_store(qk_requant(acc, L->mult[c], L->shift[c]), L->out_zp, L->lo, L->hi);
        }
}

/* [*lo, *hi): the part of the window of output index o (kernel K, stride S, padding P) that lies
 * inside an input side of n, the padding left out. */
static inline void qk_window(int32_t o, int32_t K, int32_t S, int32_t P, int32_t n, int32_t *lo, int32_t *hi) {
    *lo = o * S - P;
    *hi = *lo + K;
    if (*lo < 0) *lo = 0;
    if (*hi > n) *hi = n;
}

/* Pooling and ReLU keep their input's scale and zero point (a maximum, a mean and max(x, 0)
 * commute with q -> (q - zp) * scale): no multiplier. Max pooling skips the padding (as -inf). */
static inline void qk_maxpool(const qk_layer *L, const int8_t *x, int8_t *y) {
    for (int32_t c = 0; c < L->in_c; c++) {
        const int8_t *plane = x + (size_t)c * L->in_h * L->in_w;
        for (int32_t oh = 0; oh < L->out_h; oh++)
            for (int32_t ow = 0; ow < L->out_w; ow++) {
                int32_t i0, i1, j0, j1, m = -128;
                qk_window(oh, L->kernel, L->stride, L->pad, L->in_h, &i0, &i1);
                qk_window(ow, L->kernel, L->stride, L->pad, L->in_w, &j0, &j1);
                for (int32_t i = i0; i < i1; i++)
                    for (int32_t j = j0; j < j1; j++)
                        if (plane[(size_t)i * L->in_w + j] > m) m = plane[(size_t)i * L->in_w + j];
                y[((size_t)c * L->out_h + oh) * L->out_w + ow] = (int8_t)m;
            }
    }
}

/* zp + round(sum / count), half away from zero, clamped (64-bit: a window of any size). */
static inline int8_t qk_mean(int64_t sum, int64_t count, int32_t zp) {
    int64_t r = sum >= 0 ? (sum + count / 2) / count : -((-sum + count / 2) / count);
    r += zp;
    return (int8_t)(r < -128 ? -128 : (r > 127 ? 127 : r));
}

/* Average pooling counts the padding as 0 (PyTorch's count_include_pad): the sum over the part
 * inside, divided by K * K. */
static inline void qk_avgpool(const qk_layer *L, const int8_t *x, int8_t *y) {
    for (int32_t c = 0; c < L->in_c; c++) {
        const int8_t *plane = x + (size_t)c * L->in_h * L->in_w;
        for (int32_t oh = 0; oh < L->out_h; oh++)
            for (int32_t ow = 0; ow < L->out_w; ow++) {
                int32_t i0, i1, j0, j1;
                int64_t sum = 0;
                qk_window(oh, L->kernel, L->stride, L->pad, L->in_h, &i0, &i1);
                qk_window(ow, L->kernel, L->stride, L->pad, L->in_w, &j0, &j1);
                for (int32_t i = i0; i < i1; i++)
                    for (int32_t j = j0; j < j1; j++) sum += plane[(size_t)i * L->in_w + j] - L->in_zp;
                y[((size_t)c * L->out_h + oh) * L->out_w + ow] = qk_mean(sum, (int64_t)L->kernel * L->kernel, L->in_zp);
            }
    }
}

static inline void qk_globalavgpool(const qk_layer *L, const int8_t *x, int8_t *y) {
    const size_t area = (size_t)L->in_h * L->in_w;
    for (int32_t c = 0; c < L->in_c; c++) {
        int64_t sum = 0;
        for (size_t i = 0; i < area; i++) sum += x[c * area + i] - L->in_zp;
        y[c] = qk_mean(sum, (int64_t)area, L->in_zp);
    }
}

/* count values: max(x, zp), i.e. max(real, 0). */
static inline void qk_relu(const qk_layer *L, const int8_t *x, int8_t *y, size_t count) {
    for (size_t i = 0; i < count; i++) y[i] = (int8_t)(x[i] > L->in_zp ? x[i] : L->in_zp);
}

/* A residual sum of count values, as TFLite's reference Add: each input less its zero point
 * times 2^20, each to a common scale (twice the larger input scale, so both multipliers are
 * below 1), the two added, the sum to the output's scale. */
static inline void qk_add(const qk_layer *L, const int8_t *a, const int8_t *b, int8_t *y, size_t count) {
    for (size_t i = 0; i < count; i++) {
        const int32_t sa = qk_requant((a[i] - L->in_zp) * (1 << 20), L->add_mult[0], L->add_shift[0]);
        const int32_t sb = qk_requant((b[i] - L->in_zp2) * (1 << 20), L->add_mult[1], L->add_shift[1]);
        y[i] = qk_store(qk_requant(sa + sb, L->add_mult[2], L->add_shift[2]), L->out_zp, L->lo, L->hi);
    }
}

/* The index of the largest value (the first on ties). */
static inline int qk_argmax(const int8_t *v, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}
#endif
