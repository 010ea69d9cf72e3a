/* A BatchNorm that is not folded (it reads no Conv2d or Linear of its own, e.g. after an Add) is
 * a per-channel affine map in eval mode: each channel's scale quantized symmetrically on its own
 * (so to +-127), its shift as an int32 bias, requantized per channel like a depthwise 1x1 conv. */
#include "quant/quant.h"

void q_affine(const qnode *q, const int8_t *x, int8_t *y) {
    const at_layer *L = q->op;
    const int area = L->in_h * L->in_w, zp = q->in[0].zp;
    for (int c = 0; c < L->in_c; c++) {
        const int8_t *xc = x + (size_t)c * area;
        int8_t *yc = y + (size_t)c * area;
        for (int i = 0; i < area; i++) {
            const int32_t acc = q->bias[c] + (int32_t)q->w[c] * (xc[i] - zp);
            yc[i] = q_store(q_requant(acc, q->mult[c], q->shift[c]), q->out.zp, q->lo, q->hi);
        }
    }
}
