/* Input-side regularization: image augmentation (random crop with zero padding, horizontal flip),
 * Gaussian input noise, mixup with Beta-distributed weights, and soft targets.
 *
 * Everything works in place on a float batch (n x c x h x w) and allocates nothing. A sample's
 * random numbers come from its own generator (at_rng_for_sample: a key and its index), so a seed
 * fixes every augmentation, and a sample is augmented alike whatever batch, thread or process it
 * falls in; mixup's come from the caller's generator. */
#include "internal.h"

#include <math.h>
#include <string.h>

/* ------------------------------------------------------------ Gamma and Beta samplers */

/* Uniform in (0, 1]: never 0, so log() and pow() stay finite. */
static double uniform_open0(at_rng *r) {
    return ((double)(at_rng_next(r) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
}

/* Marsaglia & Tsang (2000), "A simple method for generating gamma variables". For shape < 1 the
 * boost Gamma(a) = Gamma(a + 1) * U^(1/a). */
double at_rng_gamma(at_rng *r, double shape) {
    if (!(shape > 0.0) || !isfinite(shape)) return NAN;
    if (shape < 1.0) return at_rng_gamma(r, shape + 1.0) * pow(uniform_open0(r), 1.0 / shape);
    const double d = shape - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double x, v;
        do {
            x = at_rng_normal(r);
            v = 1.0 + c * x;
        } while (v <= 0.0);
        v = v * v * v;
        double u = uniform_open0(r), x2 = x * x;
        if (u < 1.0 - 0.0331 * x2 * x2) return d * v;
        if (log(u) < 0.5 * x2 + d * (1.0 - v + log(v))) return d * v;
    }
}

double at_rng_beta(at_rng *r, double a, double b) {
    if (!(a > 0.0) || !(b > 0.0)) return NAN;
    for (;;) {
        double x = at_rng_gamma(r, a), y = at_rng_gamma(r, b);
        /* Tiny shapes can underflow both gammas to 0; draw again rather than return 0/0. */
        if (x + y > 0.0) return x / (x + y);
    }
}

/* ------------------------------------------------------------ augmentation */

/* Shifts one h x w plane by (sy, sx) in place: out[i][j] = in[i+sy][j+sx], zero outside. This
 * is a random crop of the original size from the image zero-padded on every side. */
static void shift_plane(float *p, int h, int w, int sy, int sx) {
    /* Rows are visited in the direction that never reads a row already overwritten. */
    for (int step = 0; step < h; step++) {
        int i = sy >= 0 ? step : h - 1 - step, src = i + sy;
        float *row = p + (size_t)i * w;
        if (src < 0 || src >= h || sx <= -w || sx >= w) {
            memset(row, 0, sizeof(float) * (size_t)w);
            continue;
        }
        const float *from = p + (size_t)src * w;
        if (sx >= 0) {
            memmove(row, from + sx, sizeof(float) * (size_t)(w - sx));
            memset(row + (w - sx), 0, sizeof(float) * (size_t)sx);
        } else {
            memmove(row - sx, from, sizeof(float) * (size_t)(w + sx));
            memset(row, 0, sizeof(float) * (size_t)(-sx));
        }
    }
}

static void flip_plane(float *p, int h, int w) {
    for (int i = 0; i < h; i++) {
        float *row = p + (size_t)i * w;
        for (int a = 0, b = w - 1; a < b; a++, b--) {
            float t = row[a];
            row[a] = row[b];
            row[b] = t;
        }
    }
}

void at_augment_batch(float *x, int n, int c, int h, int w, const at_augment_config *cfg,
                      uint64_t key, int64_t index_base) {
    if (!cfg || (!cfg->flip && cfg->crop_pad <= 0)) return;
    const size_t plane = (size_t)h * w, sample = plane * (size_t)c;
#pragma omp parallel for num_threads(at_rows_threads(n, (size_t)n * sample)) schedule(static)
    for (int s = 0; s < n; s++) {
        float *img = x + (size_t)s * sample;
        at_rng rng;
        at_rng_for_sample(&rng, key, index_base + s);
        /* One decision per sample, shared by its channels; drawn in a fixed order. */
        int sy = 0, sx = 0;
        if (cfg->crop_pad > 0) {
            uint32_t span = 2u * (uint32_t)cfg->crop_pad + 1u;
            sy = (int)at_rng_below(&rng, span) - cfg->crop_pad;
            sx = (int)at_rng_below(&rng, span) - cfg->crop_pad;
        }
        bool flip = cfg->flip && (at_rng_next(&rng) >> 63);
        for (int ch = 0; ch < c; ch++) {
            float *p = img + (size_t)ch * plane;
            if (sy || sx) shift_plane(p, h, w, sy, sx);
            if (flip) flip_plane(p, h, w);
        }
    }
}

void at_gaussian_noise(float *x, int n, size_t d, float std, bool clip, uint64_t key, int64_t index_base) {
    if (!(std > 0.0f)) return;
#pragma omp parallel for num_threads(at_rows_threads(n, (size_t)n * d)) schedule(static)
    for (int s = 0; s < n; s++) {
        float *row = x + (size_t)s * d;
        at_rng rng;
        at_rng_for_sample(&rng, key, index_base + s);
        for (size_t i = 0; i < d; i++) {
            float v = row[i] + std * at_rng_normal(&rng);
            if (clip) v = v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
            row[i] = v;
        }
    }
}

/* ------------------------------------------------------------ mixup and soft targets */

void at_mixup(const float *x, const float *t, int n, int d, int k, float lam, const int32_t *perm,
              float *out_x, float *out_t) {
    const float mu = 1.0f - lam;
    for (int i = 0; i < n; i++) {
        const float *a = x + (size_t)i * d, *b = x + (size_t)perm[i] * d;
        float *o = out_x + (size_t)i * d;
        for (int j = 0; j < d; j++) o[j] = lam * a[j] + mu * b[j];
        if (t && out_t) {
            const float *ta = t + (size_t)i * k, *tb = t + (size_t)perm[i] * k;
            float *ot = out_t + (size_t)i * k;
            for (int j = 0; j < k; j++) ot[j] = lam * ta[j] + mu * tb[j];
        }
    }
}

void at_soft_targets(const int32_t *labels, int n, int k, float smoothing, float *t) {
    const float off = smoothing / (float)k, on = 1.0f - smoothing + off;
    for (int i = 0; i < n; i++) {
        float *row = t + (size_t)i * k;
        for (int j = 0; j < k; j++) row[j] = off;
        if (labels[i] >= 0 && labels[i] < k) row[labels[i]] = on;
    }
}
