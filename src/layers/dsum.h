/* Sums of float planes in double precision, for the layers that reduce whole planes to one value
 * (BatchNorm's batch statistics, global average pooling). A plane of 32x32 values summed in
 * float loses about 10 bits to the running sum; in double it is exact to the float result.
 * Four double lanes (vcvtps2pd), reduced in a fixed order: deterministic for a given plane. */
#ifndef ADVTRAIN_DSUM_H
#define ADVTRAIN_DSUM_H
#include <stddef.h>
#include <string.h>

typedef double at_d4 __attribute__((vector_size(4 * sizeof(double))));
typedef float at_f4 __attribute__((vector_size(4 * sizeof(float))));
typedef int at_i4 __attribute__((vector_size(4 * sizeof(int))));

static inline at_d4 at_load_d4(const float *p) {
    at_f4 v;
    memcpy(&v, p, sizeof v);
    return __builtin_convertvector(v, at_d4);
}

static inline double at_lanes_d4(at_d4 v) { return (v[0] + v[2]) + (v[1] + v[3]); }

/* The sum of p[0..n) in double. */
static inline double at_sum_double(const float *p, size_t n) {
    at_d4 s = {0};
    size_t i = 0;
    for (; i + 4 <= n; i += 4) s += at_load_d4(p + i);
    double sum = at_lanes_d4(s);
    for (; i < n; i++) sum += p[i];
    return sum;
}

/* Adds the sum of p[0..n) and the sum of its squares, in double, to *sum and *sumsq. */
static inline void at_sums_double(const float *p, size_t n, double *sum, double *sumsq) {
    at_d4 s = {0}, q = {0};
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const at_d4 v = at_load_d4(p + i);
        s += v;
        q += v * v;
    }
    double a = at_lanes_d4(s), b = at_lanes_d4(q);
    for (; i < n; i++) {
        const double v = p[i];
        a += v;
        b += v * v;
    }
    *sum += a;
    *sumsq += b;
}
#endif
