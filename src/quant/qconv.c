/* The library's int8 Conv2d (grouped and depthwise included) for one sample: qk_conv's results
 * (qkernels.h: each output channel's int32 sum of w * (x - zp_in) over its window plus the int32
 * bias, requantized by the channel's multiplier), faster on a PC. Zero padding is real 0, i.e. x = zp_in, which adds nothing: the sample is first copied into
 * zero-padded int16 planes of x - zp_in (the scratch), then each group's windows are laid out as
 * contiguous patches, so that every output is one int16 dot product with its channel's weights
 * (the int32 sums are exact in any order: the same bits as a window-by-window loop). */
#include "quant/quant.h"

#include <stdint.h>
#include <string.h>

/* Per sample: Conv2d, the padded int16 planes and one group's patches (out_h*out_w of cin*K*K
 * int16); Linear, the input as int16. */
size_t q_work_bytes(const qnode *q) {
    const at_layer *L = q->op;
    if (q->kind == AT_LAYER_LINEAR) return sizeof(int16_t) * (size_t)L->in_size + 64;
    if (q->kind != AT_LAYER_CONV2D) return 0;
    const size_t ph = (size_t)L->in_h + 2 * (size_t)L->d.pad, pw = (size_t)L->in_w + 2 * (size_t)L->d.pad;
    const int groups = L->d.groups > 1 ? L->d.groups : 1, K = L->d.kernel;
    const size_t area = (size_t)L->out_h * L->out_w, rows = (size_t)(L->in_c / groups) * K * K;
    return sizeof(int16_t) * ((size_t)L->in_c * ph * pw + rows * area) + 64;
}

/* x - zp_in into the middle of each zero-filled padded plane. */
static void pad_input(const qnode *q, const int8_t *x, int16_t *padded) {
    const at_layer *L = q->op;
    const int P = L->d.pad, H = L->in_h, W = L->in_w, PH = H + 2 * P, PW = W + 2 * P;
    memset(padded, 0, sizeof(int16_t) * (size_t)L->in_c * PH * PW);
    for (int c = 0; c < L->in_c; c++)
        for (int i = 0; i < H; i++) {
            const int8_t *row = x + ((size_t)c * H + i) * W;
            int16_t *dst = padded + ((size_t)c * PH + i + P) * PW + P;
            for (int j = 0; j < W; j++) dst[j] = (int16_t)(row[j] - q->in[0].zp);
        }
}

/* Group g's patches: for every output position p, the cin*K*K inputs its window meets, in the
 * weights' order (c, ki, kj), contiguous: patch[p * rows + k]. */
static void patches(const at_layer *L, const int16_t *padded, int g, int cin, int16_t *patch) {
    const int K = L->d.kernel, S = L->d.stride, PH = L->in_h + 2 * L->d.pad, PW = L->in_w + 2 * L->d.pad;
    const size_t rows = (size_t)cin * K * K;
    for (int oh = 0; oh < L->out_h; oh++)
        for (int ow = 0; ow < L->out_w; ow++) {
            int16_t *dst = patch + ((size_t)oh * L->out_w + ow) * rows;
            for (int c = 0; c < cin; c++) {
                const int16_t *src = padded + ((size_t)(g * cin + c) * PH + oh * S) * PW + ow * S;
                for (int ki = 0; ki < K; ki++, dst += K) memcpy(dst, src + (size_t)ki * PW, sizeof(int16_t) * K);
            }
        }
}


/* Four output channels' dot products with one patch, in one pass over it (the patch is read
 * once for four channels). */
static void dot16x4(const int16_t *restrict w, int rows, const int16_t *restrict p, int32_t *s) {
    const int16_t *w0 = w, *w1 = w + rows, *w2 = w + 2 * (size_t)rows, *w3 = w + 3 * (size_t)rows;
    int32_t a = 0, b = 0, c = 0, d = 0;
    for (int i = 0; i < rows; i++) {
        const int32_t v = p[i];
        a += w0[i] * v;
        b += w1[i] * v;
        c += w2[i] * v;
        d += w3[i] * v;
    }
    s[0] = a, s[1] = b, s[2] = c, s[3] = d;
}

static void store(const qnode *q, int o, int32_t acc, int8_t *out) {
    *out = qk_store(qk_requant(acc, q->mult[o], q->shift[o]), q->k.out_zp, q->k.lo, q->k.hi);
}

void q_conv(const qnode *q, const int8_t *x, int8_t *y, void *work) {
    const at_layer *L = q->op;
    const int K = L->d.kernel;
    const int PH = L->in_h + 2 * L->d.pad, PW = L->in_w + 2 * L->d.pad;
    const int groups = L->d.groups > 1 ? L->d.groups : 1;
    const int cin = L->in_c / groups, cout = L->out_c / groups, rows = cin * K * K;
    const size_t area = (size_t)L->out_h * L->out_w;
    int16_t *padded = work, *patch = padded + (size_t)L->in_c * PH * PW;
    pad_input(q, x, padded);
    for (int g = 0; g < groups; g++) {
        patches(L, padded, g, cin, patch);
        int o = g * cout;
        for (; o + 4 <= (g + 1) * cout; o += 4)
            for (size_t p = 0; p < area; p++) {
                int32_t s[4];
                dot16x4(q->w16 + (size_t)o * rows, rows, patch + p * rows, s);
                for (int j = 0; j < 4; j++) store(q, o + j, q->bias[o + j] + s[j], y + (size_t)(o + j) * area + p);
            }
        for (; o < (g + 1) * cout; o++)
            for (size_t p = 0; p < area; p++)
                store(q, o, q->bias[o] + q_dot16(q->w16 + (size_t)o * rows, patch + p * rows, rows), y + (size_t)o * area + p);
    }
}
