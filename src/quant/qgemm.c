/* The library's int8 Conv2d and Linear arithmetic on a PC: an int16 GEMM with exact int32 sums,
 * and the requantization of its results eight at a time. Both give the bits of qkernels.h's
 * plain kernels (tests/test_quant.c compares them): the sums are exact in any order, and the
 * vector requantization computes TFLite's MultiplyByQuantizedMultiplier as qk_requant does.
 *
 * With AVX2 (the library is built with -march=native): vpmaddwd sums pairs of int16 products
 * into int32 lanes; a 4-channel x 2-position block keeps 8 accumulators in registers, reads each
 * weight and patch vector once per 16 values and reduces the 8 at the end with one tree of
 * horizontal adds. Without AVX2, plain loops (the compiler vectorizes what it can). */
#include "quant/quant.h"

#include <string.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

size_t q_kpad(size_t k) { return (k + 15) & ~(size_t)15; }

#ifdef __AVX2__
/* The 8 sums of a[0..8) as one vector: [a0 .. a7] totals. */
static __m256i reduce8(const __m256i a[8]) {
    const __m256i h01 = _mm256_hadd_epi32(a[0], a[1]), h23 = _mm256_hadd_epi32(a[2], a[3]);
    const __m256i h45 = _mm256_hadd_epi32(a[4], a[5]), h67 = _mm256_hadd_epi32(a[6], a[7]);
    const __m256i lo = _mm256_hadd_epi32(h01, h23), hi = _mm256_hadd_epi32(h45, h67);
    return _mm256_add_epi32(_mm256_permute2x128_si256(lo, hi, 0x20), _mm256_permute2x128_si256(lo, hi, 0x31));
}

/* Channels o..o+3 at two positions. */
static void block4x2(const int16_t *w, const int16_t *p0, const int16_t *p1, int kp, int32_t out[8]) {
    __m256i a[8];
    for (int j = 0; j < 8; j++) a[j] = _mm256_setzero_si256();
    for (int k = 0; k < kp; k += 16) {
        const __m256i x0 = _mm256_loadu_si256((const __m256i *)(p0 + k));
        const __m256i x1 = _mm256_loadu_si256((const __m256i *)(p1 + k));
        for (int j = 0; j < 4; j++) {
            const __m256i wj = _mm256_loadu_si256((const __m256i *)(w + (size_t)j * kp + k));
            a[j] = _mm256_add_epi32(a[j], _mm256_madd_epi16(wj, x0));
            a[4 + j] = _mm256_add_epi32(a[4 + j], _mm256_madd_epi16(wj, x1));
        }
    }
    _mm256_storeu_si256((__m256i *)out, reduce8(a));
}

/* Channels o..o+3 at one position (a Linear layer's one sample, a convolution's last odd one). */
static void block4x1(const int16_t *w, const int16_t *p0, int kp, int32_t out[4]) {
    __m256i a[4];
    for (int j = 0; j < 4; j++) a[j] = _mm256_setzero_si256();
    for (int k = 0; k < kp; k += 16) {
        const __m256i x0 = _mm256_loadu_si256((const __m256i *)(p0 + k));
        for (int j = 0; j < 4; j++)
            a[j] = _mm256_add_epi32(a[j], _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(w + (size_t)j * kp + k)), x0));
    }
    const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(a[0], a[1]), _mm256_hadd_epi32(a[2], a[3]));
    _mm_storeu_si128((__m128i *)out, _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1)));
}
#endif

static int32_t dot(const int16_t *w, const int16_t *x, int kp) {
    int32_t s = 0;
    for (int k = 0; k < kp; k++) s += (int32_t)w[k] * x[k];
    return s;
}

void q_gemm16(const int16_t *w, const int16_t *p, int nout, int npos, int kp, const int32_t *bias, int32_t *acc) {
    int o = 0;
#ifdef __AVX2__
    for (; o + 4 <= nout; o += 4) {
        int i = 0;
        int32_t s[8];
        for (; i + 2 <= npos; i += 2) {
            block4x2(w + (size_t)o * kp, p + (size_t)i * kp, p + (size_t)(i + 1) * kp, kp, s);
            for (int j = 0; j < 4; j++) {
                acc[(size_t)(o + j) * npos + i] = bias[o + j] + s[j];
                acc[(size_t)(o + j) * npos + i + 1] = bias[o + j] + s[4 + j];
            }
        }
        if (i < npos) {
            block4x1(w + (size_t)o * kp, p + (size_t)i * kp, kp, s);
            for (int j = 0; j < 4; j++) acc[(size_t)(o + j) * npos + i] = bias[o + j] + s[j];
        }
    }
#endif
    for (; o < nout; o++)
        for (int i = 0; i < npos; i++) acc[(size_t)o * npos + i] = bias[o] + dot(w + (size_t)o * kp, p + (size_t)i * kp, kp);
}

#ifdef __AVX2__
/* qk_requant on 8 lanes, each with its own multiplier (>= 0) and shift. */
static __m256i requant_core8(__m256i x, __m256i mult, __m256i shift) {
    const __m256i zero = _mm256_setzero_si256();
    /* x * 2^left, saturated where it overflows */
    const __m256i left = _mm256_max_epi32(shift, zero), right = _mm256_max_epi32(_mm256_sub_epi32(zero, shift), zero);
    const __m256i up = _mm256_sllv_epi32(x, left);
    const __m256i ovf = _mm256_xor_si256(_mm256_cmpeq_epi32(_mm256_srav_epi32(up, left), x), _mm256_set1_epi32(-1));
    const __m256i sat = _mm256_blendv_epi8(_mm256_set1_epi32(INT32_MAX), _mm256_set1_epi32(INT32_MIN),
                                           _mm256_cmpgt_epi32(zero, x));
    x = _mm256_blendv_epi8(up, sat, ovf);
    /* the doubling high multiply: (x * mult + 2^30) >> 31, whose low 32 bits are the result
     * (qk_doubling_high_mul's nudge and truncation amount to this; mult >= 0, so the one
     * saturating case, both INT32_MIN, cannot occur) */
    const __m256i round = _mm256_set1_epi64x((int64_t)1 << 30);
    const __m256i even = _mm256_add_epi64(_mm256_mul_epi32(x, mult), round);
    const __m256i odd = _mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(x, 32), _mm256_srli_epi64(mult, 32)), round);
    const __m256i r = _mm256_blend_epi32(_mm256_srli_epi64(even, 31), _mm256_slli_epi64(_mm256_srli_epi64(odd, 31), 32), 0xAA);
    /* the rounding shift: half away from zero */
    const __m256i mask = _mm256_sub_epi32(_mm256_sllv_epi32(_mm256_set1_epi32(1), right), _mm256_set1_epi32(1));
    const __m256i threshold = _mm256_sub_epi32(_mm256_srai_epi32(mask, 1), _mm256_cmpgt_epi32(zero, r));
    const __m256i v = _mm256_srav_epi32(r, right);
    return _mm256_sub_epi32(v, _mm256_cmpgt_epi32(_mm256_and_si256(r, mask), threshold));
}

/* qk_requant then qk_store on 8 lanes, as 8 int8 in the low half. */
static __m128i requant8(__m256i x, __m256i mult, __m256i shift, __m256i zp, __m256i lo, __m256i hi) {
    __m256i v = requant_core8(x, mult, shift);
    /* zp + v clamped: v first to +-2^16, so that adding zp cannot wrap (qk_store adds in 64 bits) */
    v = _mm256_min_epi32(_mm256_max_epi32(v, _mm256_set1_epi32(-65536)), _mm256_set1_epi32(65536));
    v = _mm256_min_epi32(_mm256_max_epi32(_mm256_add_epi32(v, zp), lo), hi);
    const __m256i w16 = _mm256_packs_epi32(v, v), b8 = _mm256_packs_epi16(w16, w16);
    return _mm_unpacklo_epi32(_mm256_castsi256_si128(b8), _mm256_extracti128_si256(b8, 1));
}

static void put8(int8_t *y, __m128i b) {
    const int64_t v = _mm_cvtsi128_si64(b);
    memcpy(y, &v, 8);
}
#endif

void q_requant_rows(const qnode *q, const int32_t *acc, int area, int8_t *y) {
    const qk_layer *k = &q->k;
    const int n = q->nout;
    int o = 0, i = 0;
#ifdef __AVX2__
    const __m256i zp = _mm256_set1_epi32(k->out_zp), lo = _mm256_set1_epi32(k->lo), hi = _mm256_set1_epi32(k->hi);
    if (area == 1) /* Linear: one output per channel, each lane its channel's constants */
        for (; o + 8 <= n; o += 8)
            put8(y + o, requant8(_mm256_loadu_si256((const __m256i *)(acc + o)),
                                   _mm256_loadu_si256((const __m256i *)(q->mult + o)),
                                   _mm256_loadu_si256((const __m256i *)(q->shift + o)), zp, lo, hi));
    else
        for (; o < n; o++) {
            const __m256i m = _mm256_set1_epi32(q->mult[o]), s = _mm256_set1_epi32(q->shift[o]);
            for (i = 0; i + 8 <= area; i += 8)
                put8(y + (size_t)o * area + i,
                       requant8(_mm256_loadu_si256((const __m256i *)(acc + (size_t)o * area + i)), m, s, zp, lo, hi));
            for (; i < area; i++)
                y[(size_t)o * area + i] = qk_store(qk_requant(acc[(size_t)o * area + i], q->mult[o], q->shift[o]),
                                                   k->out_zp, k->lo, k->hi);
        }
#endif
    for (; o < n; o++)
        for (i = 0; i < area; i++)
            y[(size_t)o * area + i] =
                qk_store(qk_requant(acc[(size_t)o * area + i], q->mult[o], q->shift[o]), k->out_zp, k->lo, k->hi);
}

void q_quantize_values(const float *x, size_t n, qparams p, int8_t *out) {
    size_t i = 0;
#ifdef __AVX2__
    /* qk_quantize on 4 lanes in double: the same division, truncation and half-away rounding
     * (inputs are finite here: at_qnet_forward checks them first) */
    const __m256d scale = _mm256_set1_pd((double)p.scale), half = _mm256_set1_pd(0.5), mhalf = _mm256_set1_pd(-0.5);
    const __m256d big = _mm256_set1_pd(1e9), mbig = _mm256_set1_pd(-1e9), one = _mm256_set1_pd(1.0);
    const __m128i zp = _mm_set1_epi32(p.zp), lo = _mm_set1_epi32(-128), hi = _mm_set1_epi32(127);
    for (; i + 4 <= n; i += 4) {
        __m256d r = _mm256_div_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + i)), scale);
        r = _mm256_min_pd(_mm256_max_pd(r, mbig), big);
        const __m256d t = _mm256_round_pd(r, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC), rest = _mm256_sub_pd(r, t);
        const __m256d adj = _mm256_sub_pd(_mm256_and_pd(_mm256_cmp_pd(rest, half, _CMP_GE_OQ), one),
                                          _mm256_and_pd(_mm256_cmp_pd(rest, mhalf, _CMP_LE_OQ), one));
        __m128i q = _mm256_cvttpd_epi32(_mm256_add_pd(t, adj)); /* exact: integers below 2^31 */
        q = _mm_min_epi32(_mm_max_epi32(_mm_add_epi32(q, zp), lo), hi);
        const __m128i w = _mm_packs_epi32(q, q), b = _mm_packs_epi16(w, w);
        const int32_t v = _mm_cvtsi128_si32(b);
        memcpy(out + i, &v, 4);
    }
#endif
    for (; i < n; i++) out[i] = qk_quantize(x[i], p.scale, p.zp);
}

void q_add_values(const qk_layer *k, const int8_t *a, const int8_t *b, int8_t *y, size_t count) {
    size_t i = 0;
#ifdef __AVX2__
    /* qk_add on 8 lanes: each input less its zero point times 2^20 to the common scale, the sum
     * to the output's */
    const __m256i m0 = _mm256_set1_epi32(k->add_mult[0]), s0 = _mm256_set1_epi32(k->add_shift[0]);
    const __m256i m1 = _mm256_set1_epi32(k->add_mult[1]), s1 = _mm256_set1_epi32(k->add_shift[1]);
    const __m256i m2 = _mm256_set1_epi32(k->add_mult[2]), s2 = _mm256_set1_epi32(k->add_shift[2]);
    const __m256i za = _mm256_set1_epi32(k->in_zp), zb = _mm256_set1_epi32(k->in_zp2);
    const __m256i zp = _mm256_set1_epi32(k->out_zp), lo = _mm256_set1_epi32(k->lo), hi = _mm256_set1_epi32(k->hi);
    for (; i + 8 <= count; i += 8) {
        int64_t va, vb;
        memcpy(&va, a + i, 8);
        memcpy(&vb, b + i, 8);
        const __m256i xa = _mm256_slli_epi32(_mm256_sub_epi32(_mm256_cvtepi8_epi32(_mm_cvtsi64_si128(va)), za), 20);
        const __m256i xb = _mm256_slli_epi32(_mm256_sub_epi32(_mm256_cvtepi8_epi32(_mm_cvtsi64_si128(vb)), zb), 20);
        const __m256i sum = _mm256_add_epi32(requant_core8(xa, m0, s0), requant_core8(xb, m1, s1));
        put8(y + i, requant8(sum, m2, s2, zp, lo, hi));
    }
#endif
    qk_add(k, a + i, b + i, y + i, count - i);
}
