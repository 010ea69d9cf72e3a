/* int8 Conv2d (grouped and depthwise included) for one sample: each output channel's int32 sum of
 * w * (x - zp_in) over its window plus the int32 bias, requantized by the channel's multiplier.
 * Zero padding is real 0, i.e. x = zp_in, which adds nothing: the sample is first copied into
 * zero-padded int16 planes of x - zp_in (the scratch), then each group's windows are laid out as
 * columns, so that every weight multiplies a contiguous row of inputs (the int32 sums are exact
 * in any order: the same bits as a window-by-window loop). */
#include "quant/quant.h"

#include <stdint.h>
#include <string.h>

/* Per sample: the padded int16 planes, one group's columns (cin*K*K rows of out_h*out_w int16)
 * and one output channel's int32 sums. */
size_t q_work_bytes(const qnode *q) {
    const at_layer *L = q->op;
    if (q->kind != AT_LAYER_CONV2D) return 0;
    const size_t ph = (size_t)L->in_h + 2 * (size_t)L->d.pad, pw = (size_t)L->in_w + 2 * (size_t)L->d.pad;
    const int groups = L->d.groups > 1 ? L->d.groups : 1, K = L->d.kernel;
    const size_t area = (size_t)L->out_h * L->out_w, rows = (size_t)(L->in_c / groups) * K * K;
    return sizeof(int16_t) * ((size_t)L->in_c * ph * pw + rows * area) + sizeof(int32_t) * area + 64;
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

/* Group g's columns: row (c, ki, kj) holds, for every output position, the input it meets. */
static void columns(const at_layer *L, const int16_t *padded, int g, int cin, int16_t *col) {
    const int K = L->d.kernel, S = L->d.stride, PH = L->in_h + 2 * L->d.pad, PW = L->in_w + 2 * L->d.pad;
    const size_t area = (size_t)L->out_h * L->out_w;
    for (int c = 0; c < cin; c++)
        for (int ki = 0; ki < K; ki++)
            for (int kj = 0; kj < K; kj++) {
                const int16_t *plane = padded + (size_t)(g * cin + c) * PH * PW;
                int16_t *row = col + (((size_t)c * K + ki) * K + kj) * area;
                for (int oh = 0; oh < L->out_h; oh++) {
                    const int16_t *src = plane + (size_t)(oh * S + ki) * PW + kj;
                    for (int ow = 0; ow < L->out_w; ow++) row[oh * L->out_w + ow] = src[ow * S];
                }
            }
}

void q_conv(const qnode *q, const int8_t *x, int8_t *y, void *work) {
    const at_layer *L = q->op;
    const int K = L->d.kernel;
    const int PH = L->in_h + 2 * L->d.pad, PW = L->in_w + 2 * L->d.pad;
    const int groups = L->d.groups > 1 ? L->d.groups : 1;
    const int cin = L->in_c / groups, cout = L->out_c / groups, rows = cin * K * K;
    const size_t area = (size_t)L->out_h * L->out_w;
    int16_t *padded = work, *col = padded + (size_t)L->in_c * PH * PW;
    int32_t *acc = (int32_t *)(((uintptr_t)(col + (size_t)rows * area) + 15) & ~(uintptr_t)15);
    pad_input(q, x, padded);
    for (int g = 0; g < groups; g++) {
        columns(L, padded, g, cin, col);
        for (int o = g * cout; o < (g + 1) * cout; o++) {
            const int8_t *w = q->w + (size_t)o * rows;
            for (size_t p = 0; p < area; p++) acc[p] = q->bias[o];
            /* the sums along the rows: int16 products widened into int32, vectorized by the compiler */
            for (int k = 0; k < rows; k++) {
                const int32_t wk = w[k];
                const int16_t *r = col + (size_t)k * area;
                if (wk)
                    for (size_t p = 0; p < area; p++) acc[p] += wk * r[p];
            }
            int8_t *out = y + (size_t)o * area;
            for (size_t p = 0; p < area; p++)
                out[p] = q_store(q_requant(acc[p], q->mult[o], q->shift[o]), q->out.zp, q->lo, q->hi);
        }
    }
}
