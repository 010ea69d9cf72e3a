/* int8 Conv2d (grouped and depthwise included) for one sample: each output channel's int32 sum of
 * w * (x - zp_in) over its window plus the int32 bias, requantized by the channel's multiplier.
 * Zero padding is real 0, i.e. x = zp_in, which adds nothing: the sample is first copied into a
 * zero-padded int16 plane of x - zp_in (the scratch), so the inner loops do no bounds checks. */
#include "quant/quant.h"

#include <string.h>

size_t q_work_bytes(const qnode *q) {
    const at_layer *L = q->op;
    if (q->kind != AT_LAYER_CONV2D) return 0;
    const size_t ph = (size_t)L->in_h + 2 * (size_t)L->d.pad, pw = (size_t)L->in_w + 2 * (size_t)L->d.pad;
    return sizeof(int16_t) * (size_t)L->in_c * ph * pw;
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

void q_conv(const qnode *q, const int8_t *x, int8_t *y, void *work) {
    const at_layer *L = q->op;
    const int K = L->d.kernel, S = L->d.stride, P = L->d.pad;
    const int PH = L->in_h + 2 * P, PW = L->in_w + 2 * P;
    const int groups = L->d.groups > 1 ? L->d.groups : 1;
    const int cin = L->in_c / groups, cout = L->out_c / groups;
    int16_t *padded = work;
    pad_input(q, x, padded);
    for (int o = 0; o < L->out_c; o++) {
        const int g = o / cout;
        const int8_t *w = q->w + (size_t)o * cin * K * K;
        const int16_t *in = padded + (size_t)g * cin * PH * PW;
        int8_t *out = y + (size_t)o * L->out_h * L->out_w;
        for (int oh = 0; oh < L->out_h; oh++)
            for (int ow = 0; ow < L->out_w; ow++) {
                int32_t acc = q->bias[o];
                for (int c = 0; c < cin; c++) {
                    const int16_t *base = in + ((size_t)c * PH + oh * S) * PW + ow * S;
                    const int8_t *wc = w + (size_t)c * K * K;
                    for (int ki = 0; ki < K; ki++)
                        for (int kj = 0; kj < K; kj++) acc += (int32_t)wc[ki * K + kj] * base[ki * PW + kj];
                }
                const int32_t v = q->out.zp + q_requant(acc, q->mult[o], q->shift[o]);
                out[oh * L->out_w + ow] = q_clamp(v, q->lo, q->hi);
            }
    }
}
