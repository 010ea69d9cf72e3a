/* The library's int8 Linear for one sample: qk_linear's results (out[o] = requant(bias[o] +
 * sum_i w[o][i] * (x[i] - zp_in))), the sums as int16 dot products (the input, less its zero point, into the scratch). */
#include "quant/quant.h"

void q_linear(const qnode *q, const int8_t *x, int8_t *y, void *work) {
    const at_layer *L = q->op;
    const int in = L->in_size, zp = q->in[0].zp;
    int16_t *x16 = work;
    for (int i = 0; i < in; i++) x16[i] = (int16_t)(x[i] - zp);
    for (int o = 0; o < L->out_size; o++) {
        const int32_t acc = q->bias[o] + q_dot16(q->w16 + (size_t)o * in, x16, in);
        y[o] = qk_store(qk_requant(acc, q->mult[o], q->shift[o]), q->k.out_zp, q->k.lo, q->k.hi);
    }
}
