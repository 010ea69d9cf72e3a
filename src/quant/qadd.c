/* int8 Add (a residual sum), as TFLite's reference: each input, less its zero point, is scaled
 * up by 2^20 and multiplied to a common scale (twice the larger input scale, so both multipliers
 * are below 1), the two are added, and the sum goes to the output's scale. */
#include "quant/quant.h"

enum { ADD_LEFT_SHIFT = 20 };

void q_add(const qnode *q, const int8_t *a, const int8_t *b, int8_t *y, int count) {
    for (int i = 0; i < count; i++) {
        const int32_t sa = q_requant((a[i] - q->in[0].zp) * (1 << ADD_LEFT_SHIFT), q->add_mult[0], q->add_shift[0]);
        const int32_t sb = q_requant((b[i] - q->in[1].zp) * (1 << ADD_LEFT_SHIFT), q->add_mult[1], q->add_shift[1]);
        y[i] = q_store(q_requant(sa + sb, q->add_mult[2], q->add_shift[2]), q->out.zp, q->lo, q->hi);
    }
}
