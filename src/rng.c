/* xoshiro256** (Blackman & Vigna) seeded through splitmix64. */
#include "advtrain.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void at_rng_seed(at_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static inline uint64_t next(at_rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

uint64_t at_rng_next(at_rng *r) { return next(r); }

/* The top 24 bits as a float in [0, 1): one definition for both uniform functions. */
static inline float uniform_of(uint64_t bits) { return (float)(bits >> 40) * (1.0f / 16777216.0f); }

float at_rng_uniform(at_rng *r) { return uniform_of(next(r)); }

void at_rng_fill_uniform(at_rng *r, float *out, size_t n) {
    at_rng local = *r; /* the state in registers for the whole loop, not reloaded per draw */
    for (size_t i = 0; i < n; i++) out[i] = uniform_of(next(&local));
    *r = local;
}

float at_rng_normal(at_rng *r) {
    /* Box-Muller on doubles; u1 in (0,1] so log never sees 0. */
    double u1 = ((double)(at_rng_next(r) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double u2 = (double)(at_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

uint32_t at_rng_below(at_rng *r, uint32_t n) {
    /* Lemire's multiply-shift with rejection: unbiased. */
    uint64_t m = (at_rng_next(r) >> 32) * (uint64_t)n;
    uint32_t low = (uint32_t)m;
    if (low < n) {
        uint32_t threshold = (uint32_t)(-n) % n;
        while (low < threshold) {
            m = (at_rng_next(r) >> 32) * (uint64_t)n;
            low = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}

void at_rng_for_sample(at_rng *r, uint64_t key, int64_t index) {
    at_rng_seed(r, key * 0x9E3779B97F4A7C15ull ^ ((uint64_t)index + 1) * 0xBF58476D1CE4E5B9ull);
}

uint64_t at_draw_key(uint64_t seed, at_draw_purpose purpose, int64_t epoch) {
    uint64_t k = seed ^ ((uint64_t)purpose << 56) ^ 0x5851F42D4C957F2Dull;
    k = splitmix64(&k) ^ (uint64_t)epoch;
    return splitmix64(&k);
}

void at_rng_shuffle(at_rng *r, int32_t *a, int n) {
    for (int i = n - 1; i > 0; i--) {
        int j = (int)at_rng_below(r, (uint32_t)i + 1);
        int32_t t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}
