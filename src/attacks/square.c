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
#include <stdio.h>
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

/* What a run keeps beside the batch's rows: x_best in xa, the candidates in grad (Square takes
 * no gradient). */
typedef struct square_ws {
    float *margin_min; /* cap: the margin at x_best */
} square_ws;

static size_t square_workspace(const at_attack_config *cfg, int cap, int D) {
    return sizeof(float) * (size_t)cap;
}

/* The image shape of one sample. */
typedef struct square_shape {
    int c, h, w;
} square_shape;

/* x_best (in xa) of the compact rows 0..m-1 starts at vertical stripes. */
static void stripes(atk_batch *b, square_shape sh, float eps, int m) {
    const int D = b->D;
    for (int j = 0; j < m; j++) {
        at_rng *r = &b->rng[b->ids[j]];
        const float *x = b->xs + (size_t)j * D;
        float *v = b->xa + (size_t)j * D;
        for (int ch = 0; ch < sh.c; ch++)
            for (int col = 0; col < sh.w; col++) {
                float d = eps * sign_of(r);
                for (int row = 0; row < sh.h; row++) {
                    size_t q = ((size_t)ch * sh.h + row) * sh.w + col;
                    float t = x[q] + d;
                    v[q] = t < 0.0f ? 0.0f : (t > 1.0f ? 1.0f : t);
                }
            }
    }
}

/* Evaluates the stripes (it == 0) or the candidates, keeps each candidate that lowers its row's
 * margin, and drops the rows whose margin reached 0 (their x_best is their example). */
static at_status judge(atk_batch *b, const square_ws *w, int it, int *m_io) {
    const int D = b->D, K = b->K;
    const size_t rowb = sizeof(float) * (size_t)D;
    float *cand = b->grad;
    int m = *m_io;
    const float *z;
    at_status s = atk_forward(b, it == 0 ? b->xa : cand, m, &z);
    if (s != AT_OK) return s;
    for (int j = 0; j < m; j++) {
        int i = b->ids[j];
        float mg = atk_margin(z + (size_t)j * K, K, b->y[i]);
        if (!(mg == mg)) {
            b->bad[i] = 1;
            mg = INFINITY;
        }
        if (it == 0) {
            w->margin_min[j] = mg;
        } else if (mg < w->margin_min[j]) {
            w->margin_min[j] = mg;
            memcpy(b->xa + (size_t)j * D, cand + (size_t)j * D, rowb);
        }
        b->keep[j] = w->margin_min[j] > 0.0f;
        if (!b->keep[j]) {
            memcpy(b->adv + (size_t)i * D, b->xa + (size_t)j * D, rowb);
            b->todo[i] = 0;
        }
    }
    const atk_rows rows[] = {{b->ids, sizeof(int32_t)}, {b->xs, rowb}, {b->xa, rowb}, {w->margin_min, sizeof(float)}};
    *m_io = atk_compact(m, b->keep, rows, (int)(sizeof rows / sizeof *rows));
    return AT_OK;
}

/* Row j's candidate: x_best with a side x side window at a random place set to x + eps * (one
 * random sign per channel), redrawn while it would not change any pixel of x_best. */
static void propose(atk_batch *b, square_shape sh, float eps, int side, int j) {
    const int D = b->D;
    at_rng *r = &b->rng[b->ids[j]];
    const float *x = b->xs + (size_t)j * D, *best = b->xa + (size_t)j * D;
    float *v = b->grad + (size_t)j * D;
    memcpy(v, best, sizeof(float) * (size_t)D);
    int r0 = (int)at_rng_below(r, (uint32_t)(sh.h - side + 1));
    int c0 = (int)at_rng_below(r, (uint32_t)(sh.w - side + 1));
    const int max_tries = eps > 0.0f ? 100 : 1; /* eps = 0: nothing can change */
    for (int tries = 0; tries < max_tries; tries++) {
        bool changed = false;
        for (int ch = 0; ch < sh.c; ch++) {
            float d = eps * sign_of(r);
            for (int row = r0; row < r0 + side; row++)
                for (int col = c0; col < c0 + side; col++) {
                    size_t q = ((size_t)ch * sh.h + row) * sh.w + col;
                    float t = x[q] + d;
                    t = t < 0.0f ? 0.0f : (t > 1.0f ? 1.0f : t);
                    changed = changed || fabsf(t - best[q]) >= 1e-7f;
                    v[q] = t;
                }
        }
        if (changed) break;
    }
}

static at_status square_attack(atk_batch *b, const at_attack_config *cfg, void *ws) {
    square_ws w = {ws};
    square_shape sh;
    at_net_in_shape(b->net, &sh.c, &sh.h, &sh.w);
    if (sh.h < 2 || sh.w < 2)
        return at_fail(AT_ERR_UNSUPPORTED, "the Square attack needs image inputs, got %dx%dx%d", sh.c, sh.h, sh.w);
    const int queries = cfg->steps;
    int m = atk_gather_active(b);
    if (m == 0) return AT_OK;
    stripes(b, sh, cfg->eps, m);
    for (int it = 0; m > 0; it++) {
        at_status s = judge(b, &w, it, &m);
        if (s != AT_OK) return s;
        if (it + 1 >= queries || m == 0) break;
        float p = p_selection(cfg->p_init, it, queries, cfg->square_rescale);
        int side = (int)lround(sqrt((double)p * (double)sh.h * (double)sh.w));
        int smax = (sh.h < sh.w ? sh.h : sh.w) - 1;
        side = side < 1 ? 1 : (side > smax ? smax : side);
        for (int j = 0; j < m; j++) propose(b, sh, cfg->eps, side, j);
    }
    /* Never fooled: the smallest-margin point. */
    for (int j = 0; j < m; j++)
        memcpy(b->adv + (size_t)b->ids[j] * b->D, b->xa + (size_t)j * b->D, sizeof(float) * (size_t)b->D);
    return AT_OK;
}

static void square_defaults(at_attack_config *cfg) { cfg->steps = 5000; }

static at_status square_check(at_attack_config *cfg, int K) {
    cfg->alpha = 0.0f; /* no step: the window's values are +-eps */
    if (cfg->norm != AT_NORM_LINF) return at_fail(AT_ERR_UNSUPPORTED, "the Square attack is L-inf only");
    if (cfg->target != AT_TARGET_NONE) return at_fail(AT_ERR_UNSUPPORTED, "the Square attack is untargeted only");
    return AT_OK;
}

/* Its budget is queries, in `steps`. */
static void square_set_budget(at_attack_config *cfg, int iterations, int queries) {
    if (queries > 0) cfg->steps = queries;
}

static void square_budget_text(const at_attack_config *cfg, char *buf, size_t cap) {
    snprintf(buf, cap, "%dq", cfg->steps);
}

const at_attack_method at_square_method = {
    .presets = {{"square", .loss = AT_ATTACK_LOSS_CW}},
    .unnamed = "square-l2", /* the name of an L2 configuration, which the check refuses */
    .gradients = false,     /* it reads the outputs only */
    .defaults = square_defaults, .check = square_check, .workspace = square_workspace,
    .set_budget = square_set_budget, .budget_text = square_budget_text, .run = square_attack,
};
