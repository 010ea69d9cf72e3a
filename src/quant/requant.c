/* The constants of int8 inference, computed once on the host in double: a real multiplier M
 * becomes an int32 m0 in [2^30, 2^31) and a power of two (TFLite's QuantizeMultiplier), which
 * qk_requant (qkernels.h) applies with integer operations only; a tensor's range becomes its
 * scale and zero point. */
#include "quant/quant.h"

#include <math.h>

void q_multiplier(double real, int32_t *mult, int32_t *shift) {
    *mult = 0;
    *shift = 0;
    if (!(real > 0.0) || !isfinite(real)) return;
    int e;
    const double frac = frexp(real, &e); /* real = frac * 2^e, frac in [0.5, 1) */
    int64_t m = (int64_t)llround(frac * 2147483648.0);
    if (m == (int64_t)1 << 31) { /* frac rounded up to 1 */
        m /= 2;
        e++;
    }
    if (e < -31) return; /* below 2^-31 times any int32: nothing survives the multiply */
    if (e > 30) e = 30, m = INT32_MAX; /* saturate (no real network asks for this) */
    *mult = (int32_t)m;
    *shift = e;
}

qparams q_params_for_range(float lo, float hi) {
    double a = lo < 0.0f ? lo : 0.0, b = hi > 0.0f ? hi : 0.0;
    if (!isfinite(a) || !isfinite(b) || b - a <= 0.0) return (qparams){1.0f, 0};
    const double scale = (b - a) / 255.0;
    double zp = -128.0 - a / scale;
    zp = zp < -128.0 ? -128.0 : (zp > 127.0 ? 127.0 : zp);
    return (qparams){(float)scale, (int32_t)lround(zp)};
}
