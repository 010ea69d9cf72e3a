/* The fixed-point arithmetic of int8 inference (Jacob et al. 2018, section 2.3; the semantics of
 * TFLite's QuantizeMultiplier and MultiplyByQuantizedMultiplier, which CMSIS-NN matches bit for
 * bit): a real multiplier M becomes an int32 m0 in [2^30, 2^31) and a power of two, and x * M is
 * computed as a rounding doubling high multiply by m0 followed by a rounding shift. Only integer
 * operations run per value, so the exported C gives the same bits on any target. */
#include "quant/quant.h"

#include <math.h>

void q_multiplier(double real, int32_t *mult, int *shift) {
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

/* (a * b * 2) / 2^32 rounded to nearest, ties away from zero; saturates the one overflow. */
static int32_t rounding_doubling_high_mul(int32_t a, int32_t b) {
    if (a == INT32_MIN && b == INT32_MIN) return INT32_MAX;
    const int64_t ab = (int64_t)a * (int64_t)b;
    const int64_t nudge = ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30));
    return (int32_t)((ab + nudge) / ((int64_t)1 << 31));
}

int32_t q_rounding_shift(int32_t x, int exponent) {
    if (exponent <= 0) return x;
    const int32_t mask = (int32_t)(((int64_t)1 << exponent) - 1);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0);
    return (x >> exponent) + (remainder > threshold);
}

int32_t q_requant(int32_t x, int32_t mult, int shift) {
    const int left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
    /* x * 2^left saturated to int32, as the reference does through its 64-bit product */
    int64_t wide = (int64_t)x * ((int64_t)1 << left);
    if (wide > INT32_MAX) wide = INT32_MAX;
    if (wide < INT32_MIN) wide = INT32_MIN;
    return q_rounding_shift(rounding_doubling_high_mul((int32_t)wide, mult), right);
}

qparams q_params_for_range(float lo, float hi) {
    double a = lo < 0.0f ? lo : 0.0, b = hi > 0.0f ? hi : 0.0;
    if (!isfinite(a) || !isfinite(b) || b - a <= 0.0) return (qparams){1.0f, 0};
    const double scale = (b - a) / 255.0;
    double zp = -128.0 - a / scale;
    zp = zp < -128.0 ? -128.0 : (zp > 127.0 ? 127.0 : zp);
    return (qparams){(float)scale, (int32_t)lround(zp)};
}

int8_t q_quantize(float v, qparams p) {
    const double q = (double)p.zp + round((double)v / p.scale);
    return (int8_t)(q < -128.0 ? -128 : (q > 127.0 ? 127 : (int32_t)q));
}
