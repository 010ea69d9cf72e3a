/* The library's int8 Linear for one sample: qk_linear's results (out[o] = requant(bias[o] +
 * sum_i w[o][i] * (x[i] - zp_in))), the sums as int16 dot products (the input, less its zero point, into the scratch). */
#include "quant/quant.h"

void q_linear(const qnode *q, const int8_t *x, int8_t *y, void *work) {
    const at_layer *L = q->op;
    const int in = L->in_size, kp = (int)q_kpad((size_t)in), zp = q->k.in_zp;
    int16_t *x16 = work;
    int32_t *acc = (int32_t *)(((uintptr_t)(x16 + kp) + 15) & ~(uintptr_t)15);
    for (int i = 0; i < in; i++) x16[i] = (int16_t)(x[i] - zp);
    for (int i = in; i < kp; i++) x16[i] = 0;
    q_gemm16(q->w16, x16, L->out_size, 1, kp, q->bias, acc);
    q_requant_rows(q, acc, 1, y);
}
