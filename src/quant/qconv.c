/* The library's int8 Conv2d (grouped and depthwise included) for one sample: qk_conv's results
 * (qkernels.h: each output channel's int32 sum of w * (x - zp_in) over its window plus the int32
 * bias, requantized by the channel's multiplier), faster on a PC (qgemm.c). Zero padding is real 0, i.e. x = zp_in, which adds nothing: the sample is first copied into
 * zero-padded int16 planes of x - zp_in (the scratch), then each group's windows are laid out as
 * contiguous patches, so that every output is one int16 dot product with its channel's weights
 * (the int32 sums are exact in any order: the same bits as a window-by-window loop). */
#include "quant/quant.h"

#include <stdint.h>
#include <string.h>

/* Per call: Conv2d (one sample), the padded int16 planes, one group's patches (out_h*out_w rows
 * of cin*K*K int16, padded to q_kpad) and the int32 sums of every output; Linear (up to
 * Q_LINEAR_GROUP samples), the inputs as int16 (padded) and the sums twice (as the GEMM writes
 * them, then per sample). */
size_t q_work_bytes(const qnode *q) {
    const at_layer *L = q->op;
    if (q->kind == AT_LAYER_LINEAR)
        return Q_LINEAR_GROUP * (sizeof(int16_t) * q_kpad((size_t)L->in_size) + 2 * sizeof(int32_t) * (size_t)L->out_size) + 64;
    if (q->kind != AT_LAYER_CONV2D) return 0;
    const size_t ph = (size_t)L->in_h + 2 * (size_t)L->d.pad, pw = (size_t)L->in_w + 2 * (size_t)L->d.pad;
    const int groups = L->d.groups > 1 ? L->d.groups : 1, K = L->d.kernel;
    const size_t area = (size_t)L->out_h * L->out_w, rows = q_kpad((size_t)(L->in_c / groups) * K * K);
    return sizeof(int16_t) * ((size_t)L->in_c * ph * pw + rows * area) + sizeof(int32_t) * (size_t)L->out_c * area + 64;
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
            for (int j = 0; j < W; j++) dst[j] = (int16_t)(row[j] - q->k.in_zp);
        }
}

/* Group g's patches: for every output position p, the cin*K*K inputs its window meets, in the
 * weights' order (c, ki, kj), contiguous: patch[p * rows + k], zeros up to rows (q_kpad). */
static void patches(const at_layer *L, const int16_t *padded, int g, int cin, int rows, int16_t *patch) {
    const int K = L->d.kernel, S = L->d.stride, PH = L->in_h + 2 * L->d.pad, PW = L->in_w + 2 * L->d.pad;
    for (int oh = 0; oh < L->out_h; oh++)
        for (int ow = 0; ow < L->out_w; ow++) {
            int16_t *dst = patch + ((size_t)oh * L->out_w + ow) * rows, *end = dst + rows;
            for (int c = 0; c < cin; c++) {
                const int16_t *src = padded + ((size_t)(g * cin + c) * PH + oh * S) * PW + ow * S;
                if (K == 3) /* 4 values moved for 3 (one 8-byte move): the 4th is overwritten next, or
                               * lands in the zero tail or the next patch, both written after; the
                               * scratch has room past its end for the last one */
                    for (int ki = 0; ki < 3; ki++, dst += 3) memcpy(dst, src + (size_t)ki * PW, 4 * sizeof(int16_t));
                else if (K == 4)
                    for (int ki = 0; ki < 4; ki++, dst += 4) memcpy(dst, src + (size_t)ki * PW, 4 * sizeof(int16_t));
                else
                    for (int ki = 0; ki < K; ki++, dst += K)
                        for (int kj = 0; kj < K; kj++) dst[kj] = src[(size_t)ki * PW + kj];
            }
            while (dst < end) *dst++ = 0;
        }
}

void q_conv(const qnode *q, const int8_t *x, int8_t *y, void *work) {
    const at_layer *L = q->op;
    const int K = L->d.kernel;
    const int PH = L->in_h + 2 * L->d.pad, PW = L->in_w + 2 * L->d.pad;
    const int groups = L->d.groups > 1 ? L->d.groups : 1;
    const int cin = L->in_c / groups, cout = L->out_c / groups, rows = (int)q_kpad((size_t)cin * K * K);
    const int area = L->out_h * L->out_w;
    int16_t *padded = work, *patch = padded + (size_t)L->in_c * PH * PW;
    int32_t *acc = (int32_t *)(((uintptr_t)(patch + (size_t)rows * area) + 15) & ~(uintptr_t)15);
    pad_input(q, x, padded);
    for (int g = 0; g < groups; g++) {
        patches(L, padded, g, cin, rows, patch);
        q_gemm16(q->w16 + (size_t)g * cout * rows, patch, cout, area, rows, q->bias + (size_t)g * cout,
                 acc + (size_t)g * cout * area);
    }
    q_requant_rows(q, acc, area, y);
}
