/* The library's int8 Linear for m samples (at most Q_LINEAR_GROUP): qk_linear's results for each
 * (out[o] = requant(bias[o] + sum_i w[o][i] * (x[i] - zp_in))), the sums as one int16 GEMM whose
 * positions are the samples. Taking samples together reads each block of weight rows once for
 * all of them: one at a time, a large Linear streams its weights from memory for every sample
 * (smallcnn's first Linear: 313 KB as int16). The sums are exact, so grouping changes no bit. */
#include "quant/quant.h"

void q_linear(const qnode *q, const int8_t *x, int8_t *y, int m, void *work) {
    const at_layer *L = q->op;
    const int in = L->in_size, out = L->out_size, kp = (int)q_kpad((size_t)in), zp = q->k.in_zp;
    int16_t *x16 = work;
    int32_t *acc = (int32_t *)(((uintptr_t)(x16 + (size_t)m * kp) + 15) & ~(uintptr_t)15);
    int32_t *rows = acc + (size_t)out * m;
    for (int s = 0; s < m; s++) {
        const int8_t *xs = x + (size_t)s * in;
        int16_t *dst = x16 + (size_t)s * kp;
        for (int i = 0; i < in; i++) dst[i] = (int16_t)(xs[i] - zp);
        for (int i = in; i < kp; i++) dst[i] = 0;
    }
    q_gemm16(q->w16, x16, out, m, kp, q->bias, acc); /* acc[o * m + s] */
    for (int s = 0; s < m; s++)
        for (int o = 0; o < out; o++) rows[(size_t)s * out + o] = acc[(size_t)o * m + s];
    for (int s = 0; s < m; s++) q_requant_rows(q, rows + (size_t)s * out, 1, y + (size_t)s * out);
}
