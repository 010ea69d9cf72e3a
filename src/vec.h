/* The float vector the hand-tiled kernels (gemm.c, layers/conv2d_direct.c) compute with: as wide
 * as the target's registers (16 floats with AVX-512, 8 with AVX, 4 otherwise). A vector wider than
 * the registers would be emulated piecewise, many times slower. Loads and stores go through
 * memcpy: unaligned, no aliasing assumptions, and compiled to plain vector moves. */
#ifndef ADVTRAIN_VEC_H
#define ADVTRAIN_VEC_H
#include <string.h>

#if defined(__AVX512F__)
enum { VL = 16 };
#elif defined(__AVX__)
enum { VL = 8 };
#else
enum { VL = 4 };
#endif

typedef float vec __attribute__((vector_size(VL * sizeof(float))));
typedef int ivec __attribute__((vector_size(VL * sizeof(int)))); /* a comparison's lanes */

static inline vec load_vec(const float *p) {
    vec v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void store_vec(float *p, vec v) { memcpy(p, &v, sizeof v); }
static inline vec splat(float x) {
    vec v;
    for (int i = 0; i < VL; i++) v[i] = x;
    return v;
}

/* Lanes summed pairwise, halving the width: a fixed order. */
static inline float sum_lanes(vec v) {
    float lanes[VL];
    memcpy(lanes, &v, sizeof lanes);
    for (int width = VL / 2; width >= 1; width /= 2)
        for (int k = 0; k < width; k++) lanes[k] += lanes[k + width];
    return lanes[0];
}

/* The sum of n floats as VL interleaved partial sums, reduced in a fixed order: deterministic,
 * and not one long chain of dependent additions (which is what a plain loop compiles to). */
static inline float sum_floats(const float *p, size_t n) {
    vec acc = splat(0.0f);
    size_t i = 0;
    for (; i + VL <= n; i += VL) acc += load_vec(p + i);
    float sum = sum_lanes(acc);
    for (; i < n; i++) sum += p[i];
    return sum;
}
/* Eight floats whatever the target's width (one ymm register with AVX): the unit of the 8 x 8
 * transposes that pack GEMM panels (gemm.c) and of the short-row adds of col2im
 * (layers/conv2d.c), which shuffle with SHUFFLE8 and mask with i8. */
typedef float f8 __attribute__((vector_size(8 * sizeof(float))));
typedef int i8 __attribute__((vector_size(8 * sizeof(int))));
/* Lanes of a and b side by side (b's are 8..15) picked by 8 constant indices: SHUFFLE8(a, b,
 * 0, 8, 1, 9, ...). GCC's __builtin_shuffle takes the indices as a vector; clang has only
 * __builtin_shufflevector (the fuzz build, tests/fuzz, uses clang). */
#if defined(__clang__)
#define SHUFFLE8(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define SHUFFLE8(a, b, ...) __builtin_shuffle(a, b, (i8){__VA_ARGS__})
#endif

static inline f8 load8(const float *p) {
    f8 v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void store8(float *p, f8 v) { memcpy(p, &v, sizeof v); }
#endif
