/* Square attack, L-inf (Andriushchenko, Croce, Flammarion, Hein, "Square Attack: a query-efficient
 * black-box adversarial attack via random search", ECCV 2020, Algorithm 1 with the L-inf
 * sampling distribution). Only the network's outputs are used, never a gradient: if it beats
 * the gradient attacks, the gradients are masked.
 *
 *   start   vertical stripes: x_best = clip(x + eps * s), s in {-1,+1} per channel and column;
 *   loss    the margin z_y - max_{j!=y} z_j (the sample is fooled once it is <= 0);
 *   step i  p_i from the schedule: p_init, halved after 10, 50, 200, 500, 1000, 2000, 4000, 6000
 *           and 8000 iterations (a schedule written for 10000 queries and stretched to the
 *           budget when square_rescale is set, as the paper does; AutoAttack "standard" keeps
 *           it fixed); side s = round(sqrt(p_i * h * w)) clipped to [1, min(h,w) - 1]; a window
 *           at a uniformly random position, and in it delta = eps * (one random sign per
 *           channel), redrawn while it would not change any pixel of x_best; the candidate is
 *           clip(x + delta) and replaces x_best if its margin is smaller.
 * The budget counts queries per sample, the starting point included. Each sample draws its own
 * window and signs (Algorithm 1; AutoAttack's port shares one window across the batch). */
#include "attack.h"

#include <math.h>
#include <string.h>

static float p_selection(float p_init, int it, int queries, bool rescale) {
    if (rescale) it = (int)((double)it / queries * 10000.0);
    static const int bounds[] = {10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000};
    float p = p_init;
    for (int k = 0; k < 9; k++)
        if (it > bounds[k]) p = p_init / (float)(2 << k);
    return p;
}

static float sign_of(at_rng *r) { return (at_rng_next(r) >> 63) ? 1.0f : -1.0f; }

at_status atk_square(atk_batch *b, const at_attack_config *cfg) {
    const int D = b->D, K = b->K;
    const size_t rowb = sizeof(float) * (size_t)D;
    int c, h, w;
    at_net_in_shape(b->net, &c, &h, &w);
    if (h < 2 || w < 2)
        return at_fail(AT_ERR_UNSUPPORTED, "the Square attack needs image inputs, got %dx%dx%d", c, h, w);
    const int queries = cfg->kind == AT_ATTACK_AUTO ? (cfg->square_queries > 0 ? cfg->square_queries : 5000)
                                                    : cfg->steps;
    const bool rescale = cfg->kind == AT_ATTACK_AUTO ? false : cfg->square_rescale;
    const float eps = cfg->eps;
    float *margin_min = b->fs[0];
    float *cand = b->grad; /* candidates, one row per live sample */
    atk_rows rows[] = {{b->ids, sizeof(int32_t)}, {b->xs, rowb}, {b->xa, rowb}, {margin_min, sizeof(float)}};
    const int nrows = (int)(sizeof rows / sizeof *rows);

    int m = atk_gather_active(b);
    if (m == 0) return AT_OK;
    /* x_best (in xa) starts at vertical stripes. */
    for (int j = 0; j < m; j++) {
        at_rng *r = &b->rng[b->ids[j]];
        const float *x = b->xs + (size_t)j * D;
        float *v = b->xa + (size_t)j * D;
        for (int ch = 0; ch < c; ch++)
            for (int col = 0; col < w; col++) {
                float d = eps * sign_of(r);
                for (int row = 0; row < h; row++) {
                    size_t q = ((size_t)ch * h + row) * w + col;
                    float t = x[q] + d;
                    v[q] = t < 0.0f ? 0.0f : (t > 1.0f ? 1.0f : t);
                }
            }
    }
    for (int it = 0; m > 0; it++) {
        /* Evaluate: the stripes at it == 0, the candidates afterwards. */
        const float *src = it == 0 ? b->xa : cand;
        const float *z;
        at_status s = atk_forward(b, src, m, &z);
        if (s != AT_OK) return s;
        for (int j = 0; j < m; j++) {
            int i = b->ids[j];
            float mg = atk_margin(z + (size_t)j * K, K, b->y[i]);
            if (!(mg == mg)) {
                b->bad[i] = 1;
                mg = INFINITY;
            }
            if (it == 0) {
                margin_min[j] = mg;
            } else if (mg < margin_min[j]) {
                margin_min[j] = mg;
                memcpy(b->xa + (size_t)j * D, cand + (size_t)j * D, rowb);
            }
            b->keep[j] = margin_min[j] > 0.0f;
            if (!b->keep[j]) {
                memcpy(b->adv + (size_t)i * D, b->xa + (size_t)j * D, rowb);
                b->todo[i] = 0;
            }
        }
        m = atk_compact(m, b->keep, rows, nrows);
        if (it + 1 >= queries || m == 0) break;

        /* New candidates around x_best. */
        float p = p_selection(cfg->p_init, it, queries, rescale);
        int side = (int)lround(sqrt((double)p * (double)h * (double)w));
        int smax = (h < w ? h : w) - 1;
        side = side < 1 ? 1 : (side > smax ? smax : side);
        for (int j = 0; j < m; j++) {
            at_rng *r = &b->rng[b->ids[j]];
            const float *x = b->xs + (size_t)j * D, *best = b->xa + (size_t)j * D;
            float *v = cand + (size_t)j * D;
            memcpy(v, best, rowb);
            int r0 = (int)at_rng_below(r, (uint32_t)(h - side + 1));
            int c0 = (int)at_rng_below(r, (uint32_t)(w - side + 1));
            const int max_tries = eps > 0.0f ? 100 : 1; /* eps = 0: nothing can change */
            for (int tries = 0; tries < max_tries; tries++) {
                bool changed = false;
                for (int ch = 0; ch < c; ch++) {
                    float d = eps * sign_of(r);
                    for (int row = r0; row < r0 + side; row++)
                        for (int col = c0; col < c0 + side; col++) {
                            size_t q = ((size_t)ch * h + row) * w + col;
                            float t = x[q] + d;
                            t = t < 0.0f ? 0.0f : (t > 1.0f ? 1.0f : t);
                            changed = changed || fabsf(t - best[q]) >= 1e-7f;
                            v[q] = t;
                        }
                }
                if (changed) break;
            }
        }
    }
    /* Never fooled: the smallest-margin point. */
    for (int j = 0; j < m; j++) memcpy(b->adv + (size_t)b->ids[j] * D, b->xa + (size_t)j * D, rowb);
    return AT_OK;
}
