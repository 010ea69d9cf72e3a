/* int8 pooling and ReLU for one sample. They keep their input's scale and zero point (a maximum,
 * a mean and max(x, 0) commute with the affine map q -> (q - zp) * scale), so no multiplier:
 * max pooling skips the padding (as -inf), average pooling counts it as 0 (PyTorch's
 * count_include_pad) and rounds the mean half away from zero. */
#include "quant/quant.h"

void q_maxpool(const qnode *q, const int8_t *x, int8_t *y) {
    const at_layer *L = q->op;
    const int K = L->d.kernel, S = L->d.stride, P = L->d.pad, H = L->in_h, W = L->in_w;
    for (int c = 0; c < L->in_c; c++) {
        const int8_t *plane = x + (size_t)c * H * W;
        int8_t *out = y + (size_t)c * L->out_h * L->out_w;
        for (int oh = 0; oh < L->out_h; oh++)
            for (int ow = 0; ow < L->out_w; ow++) {
                int32_t m = -128;
                for (int ki = 0; ki < K; ki++) {
                    const int ih = oh * S - P + ki;
                    for (int kj = 0; ih >= 0 && ih < H && kj < K; kj++) {
                        const int iw = ow * S - P + kj;
                        if (iw >= 0 && iw < W && plane[ih * W + iw] > m) m = plane[ih * W + iw];
                    }
                }
                out[oh * L->out_w + ow] = (int8_t)m;
            }
    }
}

/* zp + round(sum / count), half away from zero, clamped (64-bit: a window of any size). */
static int8_t mean_of(int64_t sum, int64_t count, int32_t zp) {
    int64_t r = sum >= 0 ? (sum + count / 2) / count : -((-sum + count / 2) / count);
    r += zp;
    return (int8_t)(r < -128 ? -128 : (r > 127 ? 127 : r));
}

void q_avgpool(const qnode *q, const int8_t *x, int8_t *y) {
    const at_layer *L = q->op;
    const int K = L->d.kernel, S = L->d.stride, P = L->d.pad, H = L->in_h, W = L->in_w;
    const int32_t zp = q->in[0].zp;
    for (int c = 0; c < L->in_c; c++) {
        const int8_t *plane = x + (size_t)c * H * W;
        int8_t *out = y + (size_t)c * L->out_h * L->out_w;
        for (int oh = 0; oh < L->out_h; oh++)
            for (int ow = 0; ow < L->out_w; ow++) {
                int64_t sum = 0;
                for (int ki = 0; ki < K; ki++) {
                    const int ih = oh * S - P + ki;
                    for (int kj = 0; ih >= 0 && ih < H && kj < K; kj++) {
                        const int iw = ow * S - P + kj;
                        if (iw >= 0 && iw < W) sum += plane[(size_t)ih * W + iw] - zp;
                    }
                }
                out[oh * L->out_w + ow] = mean_of(sum, (int64_t)K * K, zp);
            }
    }
}

void q_globalavgpool(const qnode *q, const int8_t *x, int8_t *y) {
    const at_layer *L = q->op;
    const int area = L->in_h * L->in_w;
    const int32_t zp = q->in[0].zp;
    for (int c = 0; c < L->in_c; c++) {
        int64_t sum = 0;
        for (int i = 0; i < area; i++) sum += x[(size_t)c * area + i] - zp;
        y[c] = mean_of(sum, area, zp);
    }
}

void q_relu(const qnode *q, const int8_t *x, int8_t *y, int count) {
    const int32_t zp = q->in[0].zp;
    for (int i = 0; i < count; i++) y[i] = (int8_t)(x[i] > zp ? x[i] : zp);
}
