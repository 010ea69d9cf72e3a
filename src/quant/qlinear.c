/* int8 Linear for one sample: out[o] = requant(bias[o] + sum_i w[o][i] * (x[i] - zp_in)). */
#include "quant/quant.h"

void q_linear(const qnode *q, const int8_t *x, int8_t *y) {
    const at_layer *L = q->op;
    const int in = L->in_size, zp = q->in[0].zp;
    for (int o = 0; o < L->out_size; o++) {
        const int8_t *w = q->w + (size_t)o * in;
        int32_t acc = q->bias[o];
        for (int i = 0; i < in; i++) acc += (int32_t)w[i] * (x[i] - zp);
        y[o] = q_store(q_requant(acc, q->mult[o], q->shift[o]), q->out.zp, q->lo, q->hi);
    }
}
