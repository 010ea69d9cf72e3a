/* Auto-PGD (Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of
 * diverse parameter-free attacks", ICML 2020), L-inf and L2, as in the authors' AutoAttack:
 *
 *   start   x0 = clip(x + eps * t / ||t||), t ~ U(-1,1)^D (L-inf) or N(0, I) (L2);
 *   step    z = P(x_k + eta_k * s(grad)), s = sign (L-inf) or g/||g|| (L2);
 *           x_{k+1} = P(x_k + a (z - x_k) + (1 - a)(x_k - x_{k-1})), a = 0.75 (1 at the first
 *           step), P the projection onto the eps-ball and [0,1];
 *   eta     starts at 2 eps. Checkpoints: the first after k = int(0.22 N) iterations, then
 *           every k iterations with k shrinking by int(0.03 N) at each checkpoint down to
 *           int(0.06 N) (each at least 1) - the paper's p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03,
 *           0.06) in AutoAttack's integer form. At a checkpoint the step size of a sample halves,
 *           and it restarts from its best point with the gradient there, when
 *             (1) at most rho * k of the last k steps raised the loss (rho = 0.75), or
 *             (2) its step was not halved at the previous checkpoint and its best loss has not
 *                 improved since.
 *   result  the first iterate that is misclassified (or hits the target); samples never fooled
 *           return their highest-loss iterate.
 * Losses: cross-entropy (APGD-CE), DLR (APGD-DLR), targeted DLR (APGD-T, one run per target
 * class among the `target_classes` highest-scoring wrong classes of the clean input).
 * Condition (1) of the first checkpoint compares the first step's loss with the loss at x0, as
 * the paper defines it (AutoAttack's code compares with a zero-initialized slot there).
 * Samples are dropped from the batch as soon as they are fooled; everything else about a
 * sample is independent of the others, so this changes no result and saves the passes. */
#include "attack.h"

#include <math.h>
#include <string.h>

/* The state of the samples an APGD run works on, one row each, beside the batch's rows (the
 * iterate in xa, the gradient in grad). */
typedef struct apgd_ws {
    float *prev;      /* cap x D: the previous iterate (the momentum term) */
    float *best;      /* cap x D: the highest-loss iterate */
    float *gbest;     /* cap x D: the gradient at it */
    float *eta;       /* cap: step size */
    float *lbest;     /* cap: highest loss */
    float *lcheck;    /* cap: highest loss at the last checkpoint */
    uint8_t *reduced; /* cap: the step size was halved at the last checkpoint */
    float *hist;      /* cap x hist_len: the loss of every iterate */
    int hist_len;     /* steps + 1 */
} apgd_ws;

static void apgd_layout(atk_arena *a, apgd_ws *w, int cap, int D, int steps) {
    const size_t rows = (size_t)cap * D;
    w->prev = atk_carve(a, sizeof(float) * rows);
    w->best = atk_carve(a, sizeof(float) * rows);
    w->gbest = atk_carve(a, sizeof(float) * rows);
    w->eta = atk_carve(a, sizeof(float) * cap);
    w->lbest = atk_carve(a, sizeof(float) * cap);
    w->lcheck = atk_carve(a, sizeof(float) * cap);
    w->reduced = atk_carve(a, cap);
    w->hist_len = steps + 1;
    w->hist = atk_carve(a, sizeof(float) * (size_t)cap * w->hist_len);
}

static size_t apgd_workspace(const at_attack_config *cfg, int cap, int D) {
    atk_arena a = {NULL, 0};
    apgd_ws w;
    apgd_layout(&a, &w, cap, D, cfg->steps);
    return a.used;
}

/* Every per-row array of a run, for atk_compact; returns how many. */
static int apgd_rows(atk_batch *b, const apgd_ws *w, atk_rows *rows) {
    const size_t rowb = sizeof(float) * (size_t)b->D;
    const atk_rows list[] = {
        {b->ids, sizeof(int32_t)}, {b->row_target, sizeof(int32_t)},
        {b->xs, rowb},             {b->xa, rowb},
        {b->grad, rowb},           {w->prev, rowb},
        {w->best, rowb},           {w->gbest, rowb},
        {w->eta, sizeof(float)},   {w->lbest, sizeof(float)},
        {w->lcheck, sizeof(float)}, {w->reduced, 1},
        {w->hist, sizeof(float) * (size_t)w->hist_len},
    };
    const int n = (int)(sizeof list / sizeof *list);
    memcpy(rows, list, sizeof list);
    return n;
}

static void sample_start(atk_batch *b, const at_attack_config *cfg, int j) {
    const int D = b->D;
    at_rng *r = &b->rng[b->ids[j]];
    const float *x = b->xs + (size_t)j * D;
    float *v = b->xa + (size_t)j * D;
    double nrm = 0.0;
    for (int k = 0; k < D; k++) {
        v[k] = cfg->norm == AT_NORM_LINF ? 2.0f * at_rng_uniform(r) - 1.0f : at_rng_normal(r);
        double a = fabs((double)v[k]);
        if (cfg->norm == AT_NORM_LINF)
            nrm = a > nrm ? a : nrm;
        else
            nrm += a * a;
    }
    if (cfg->norm == AT_NORM_L2) nrm = sqrt(nrm);
    float scale = (float)(cfg->eps / (nrm + 1e-12));
    for (int k = 0; k < D; k++) {
        float t = x[k] + scale * v[k];
        v[k] = t < 0.0f ? 0.0f : (t > 1.0f ? 1.0f : t);
    }
}

/* The start of a run on the compact rows 0..m-1: x0, its loss and gradient, and the rows'
 * state. */
static at_status apgd_start(atk_batch *b, const apgd_ws *w, const at_attack_config *cfg, int m, bool targeted) {
    const int D = b->D, H = w->hist_len;
    const size_t rowb = sizeof(float) * (size_t)D;
    for (int j = 0; j < m; j++) sample_start(b, cfg, j);
    at_status s = atk_loss_grad(b, cfg->loss, targeted, targeted ? b->row_target : NULL, m, b->pred);
    if (s != AT_OK) return s;
    for (int j = 0; j < m; j++) {
        memcpy(w->best + (size_t)j * D, b->xa + (size_t)j * D, rowb);
        memcpy(w->gbest + (size_t)j * D, b->grad + (size_t)j * D, rowb);
        memcpy(w->prev + (size_t)j * D, b->xa + (size_t)j * D, rowb);
        w->lbest[j] = w->lcheck[j] = b->loss[j];
        w->hist[(size_t)j * H] = b->loss[j];
        w->eta[j] = 2.0f * cfg->eps;
        w->reduced[j] = 1;
    }
    return AT_OK;
}

/* Samples fooled at the iterate just evaluated are done: it is their example. Returns the rows
 * left. */
static int drop_fooled(atk_batch *b, const apgd_ws *w, int m, bool top) {
    const int D = b->D;
    for (int j = 0; j < m; j++) {
        int i = b->ids[j];
        b->keep[j] = !atk_success(b, top, i, b->pred[j]);
        if (!b->keep[j]) {
            memcpy(b->adv + (size_t)i * D, b->xa + (size_t)j * D, sizeof(float) * (size_t)D);
            b->todo[i] = 0;
        }
    }
    atk_rows rows[16];
    const int nrows = apgd_rows(b, w, rows);
    return atk_compact(m, b->keep, rows, nrows);
}

/* The checkpoint at iterate `it`, k steps after the previous one: conditions (1) and (2). */
static void checkpoint(atk_batch *b, const apgd_ws *w, int m, int it, int k, float rho) {
    const int D = b->D, H = w->hist_len;
    const size_t rowb = sizeof(float) * (size_t)D;
    for (int j = 0; j < m; j++) {
        const float *h = w->hist + (size_t)j * H;
        int raised = 0;
        for (int c = 0; c < k; c++) raised += h[it - c] > h[it - c - 1];
        bool halve = (float)raised <= (float)k * rho;
        halve = halve || (!w->reduced[j] && w->lcheck[j] >= w->lbest[j]);
        w->reduced[j] = halve;
        w->lcheck[j] = w->lbest[j];
        if (halve) {
            w->eta[j] *= 0.5f;
            memcpy(b->xa + (size_t)j * D, w->best + (size_t)j * D, rowb);
            memcpy(b->grad + (size_t)j * D, w->gbest + (size_t)j * D, rowb);
        }
    }
}

/* The step with momentum a. The gradient row is consumed by it, so z is built in its place.
 * Rows are independent: any thread may take any. */
static void momentum_step(atk_batch *b, const apgd_ws *w, const at_attack_config *cfg, int m, float a) {
    const int D = b->D;
    const int T = at_rows_threads(m, (size_t)m * D);
#pragma omp parallel for num_threads(T) schedule(static)
    for (int j = 0; j < m; j++) {
        float *cur = b->xa + (size_t)j * D, *pv = w->prev + (size_t)j * D, *z = b->grad + (size_t)j * D;
        const float *x = b->xs + (size_t)j * D;
        if (cfg->norm == AT_NORM_LINF) {
            for (int q = 0; q < D; q++) z[q] = cur[q] + w->eta[j] * (float)((z[q] > 0.0f) - (z[q] < 0.0f));
        } else {
            double nrm = atk_l2(z, D);
            float scale = nrm > 0.0 ? (float)(w->eta[j] / (nrm + 1e-12)) : 0.0f;
            for (int q = 0; q < D; q++) z[q] = cur[q] + scale * z[q];
        }
        atk_project(cfg->norm, cfg->eps, x, z, D);
        for (int q = 0; q < D; q++) {
            float xk = cur[q];
            cur[q] = xk + a * (z[q] - xk) + (1.0f - a) * (xk - pv[q]);
            pv[q] = xk;
        }
        atk_project(cfg->norm, cfg->eps, x, cur, D);
    }
}

/* Records the loss of iterate it + 1 and keeps the highest-loss point with its gradient. */
static void track_best(atk_batch *b, const apgd_ws *w, int m, int it) {
    const int D = b->D, H = w->hist_len;
    const size_t rowb = sizeof(float) * (size_t)D;
    const int T = at_rows_threads(m, (size_t)m * D);
#pragma omp parallel for num_threads(T) schedule(static)
    for (int j = 0; j < m; j++) {
        w->hist[(size_t)j * H + it + 1] = b->loss[j];
        if (b->loss[j] > w->lbest[j]) {
            memcpy(w->best + (size_t)j * D, b->xa + (size_t)j * D, rowb);
            memcpy(w->gbest + (size_t)j * D, b->grad + (size_t)j * D, rowb);
            w->lbest[j] = b->loss[j];
        }
    }
}

/* One APGD run on the compact rows 0..m-1 (targets in row_target when targeted). */
static at_status apgd_run(atk_batch *b, const apgd_ws *w, const at_attack_config *cfg, int m, bool targeted,
                          bool top) {
    const int D = b->D, N = cfg->steps;
    const int n_iter_2 = AT_MAX((int)(0.22 * N), 1), n_iter_min = AT_MAX((int)(0.06 * N), 1),
              size_decr = AT_MAX((int)(0.03 * N), 1);
    at_status s = apgd_start(b, w, cfg, m, targeted);
    if (s != AT_OK) return s;
    int k = n_iter_2, counter = 0;
    for (int it = 0; m > 0; it++) {
        m = drop_fooled(b, w, m, top);
        if (it == N || m == 0) break;
        if (it > 0 && ++counter == k) {
            checkpoint(b, w, m, it, k, cfg->rho);
            k = AT_MAX(k - size_decr, n_iter_min);
            counter = 0;
        }
        momentum_step(b, w, cfg, m, it > 0 ? cfg->momentum : 1.0f);
        s = atk_loss_grad(b, cfg->loss, targeted, targeted ? b->row_target : NULL, m, b->pred);
        if (s != AT_OK) return s;
        track_best(b, w, m, it);
    }
    /* Never fooled: return the highest-loss point. */
    for (int j = 0; j < m; j++)
        memcpy(b->adv + (size_t)b->ids[j] * D, w->best + (size_t)j * D, sizeof(float) * (size_t)D);
    return AT_OK;
}

static at_status apgd_once(atk_batch *b, const at_attack_config *cfg, void *state, int m, bool last) {
    (void)last; /* every run keeps its best examples; the caller's final pass judges them */
    return apgd_run(b, state, cfg, m, cfg->target != AT_TARGET_NONE, cfg->target == AT_TARGET_TOP);
}

static at_status apgd_attack(atk_batch *b, const at_attack_config *cfg, void *ws) {
    atk_arena a = {ws, 0};
    apgd_ws w;
    apgd_layout(&a, &w, b->cap, b->D, cfg->steps);
    return atk_each_run(b, cfg, apgd_once, &w);
}

static void apgd_defaults(at_attack_config *cfg) { cfg->steps = 100; }

static at_status apgd_check(at_attack_config *cfg, int K) {
    cfg->alpha = 0.0f; /* the step size adapts (eta) */
    return AT_OK;
}

/* apgd-t for any targeting of the top classes; else the DLR name for DLR, the CE name for the
 * other losses. */
static bool apgd_names(const atk_preset *p, const at_attack_config *cfg) {
    const bool top = cfg->target == AT_TARGET_TOP;
    if (top != (p->target == AT_TARGET_TOP)) return false;
    return top || p->loss == (cfg->loss == AT_ATTACK_LOSS_DLR ? AT_ATTACK_LOSS_DLR : AT_ATTACK_LOSS_CE);
}

const at_attack_method at_apgd_method = {
    .presets = {{"apgd-ce"}, {"apgd-ce-l2", .norm = AT_NORM_L2},
                {"apgd-dlr", .loss = AT_ATTACK_LOSS_DLR},
                {"apgd-dlr-l2", .norm = AT_NORM_L2, .loss = AT_ATTACK_LOSS_DLR},
                {"apgd-t", .loss = AT_ATTACK_LOSS_DLR, .target = AT_TARGET_TOP},
                {"apgd-t-l2", .norm = AT_NORM_L2, .loss = AT_ATTACK_LOSS_DLR, .target = AT_TARGET_TOP}},
    .names = apgd_names,
    .gradients = true,
    .defaults = apgd_defaults, .check = apgd_check, .workspace = apgd_workspace, .run = apgd_attack,
};
