/* PGD (Madry et al. 2018) under L-inf or L2, on the cross-entropy or the CW margin, untargeted
 * or targeted:
 *   start: x + U(-eps, eps)^D (L-inf), or x + eps * u * d/||d|| with d ~ N(0, I), u ~ U(0,1)
 *          (L2), clipped to [0,1]; or x itself without random start;
 *   steps: x_adv = P(x_adv + alpha * sign(g)) (L-inf) or P(x_adv + alpha * g/||g||) (L2),
 *          P the projection onto the eps-ball and [0,1]; alpha defaults to 2.5 * eps / steps.
 * A sample leaves the run at the first iterate that fools the model (the random start
 * included): that iterate is its example, as in APGD. Every step already evaluates the model at
 * the current iterate, so the check is free, and the iterates of the samples still running do
 * not depend on the others. A sample never fooled returns its last iterate. So a sample counts
 * as robust only if no iterate fooled it: at least as strong as judging the last iterate alone
 * (Madry et al., torchattacks), which `last_iterate` restores. Restarts run again from new
 * random starts on the samples no earlier run has fooled; a sample is robust only if every run
 * fails. With AT_TARGET_TOP every one of the top `target_classes` wrong classes is tried in turn
 * (restarts each), and success is any misclassification. */
#include "attack.h"

#include <math.h>
#include <string.h>

static void random_start(atk_batch *b, const at_attack_config *cfg, int j) {
    const size_t at = (size_t)j * b->D;
    atk_random_start(cfg->norm, cfg->eps, &b->rng[b->ids[j]], b->xs + at, b->xa + at, b->D);
}

/* One run (restart) on the compact rows: the samples it fools at an iterate leave with that
 * iterate as their example (unless cfg->last_iterate); on return rows 0..*m-1 of b->xa hold
 * the last iterates of the others. */
static at_status pgd_run(atk_batch *b, const at_attack_config *cfg, int *m_io, bool targeted, bool top) {
    const int D = b->D;
    int m = *m_io;
    const int T = at_rows_threads(m, (size_t)m * D);
    const size_t rowb = sizeof(float) * (size_t)D;
    const atk_rows rows[] = {{b->ids, sizeof(int32_t)}, {b->row_target, sizeof(int32_t)},
                             {b->xs, rowb}, {b->xa, rowb}, {b->grad, rowb}};
    /* Each row draws from its sample's own generator: rows can go to any thread. */
#pragma omp parallel for num_threads(T) schedule(static)
    for (int j = 0; j < m; j++) {
        if (cfg->random_start)
            random_start(b, cfg, j);
        else
            memcpy(b->xa + (size_t)j * D, b->xs + (size_t)j * D, rowb);
    }
    for (int step = 0; step < cfg->steps && m > 0; step++) {
        int32_t *pred = cfg->last_iterate ? NULL : b->pred;
        at_status s = atk_loss_grad(b, cfg->loss, targeted, targeted ? b->row_target : NULL, m, pred);
        if (s != AT_OK) return s;
        if (pred) {
            int fooled = 0;
            for (int j = 0; j < m; j++) {
                int i = b->ids[j];
                b->keep[j] = !atk_success(b, top, i, pred[j]);
                if (!b->keep[j]) {
                    memcpy(b->adv + (size_t)i * D, b->xa + (size_t)j * D, rowb);
                    b->todo[i] = 0;
                    fooled++;
                }
            }
            if (fooled) m = atk_compact(m, b->keep, rows, (int)(sizeof rows / sizeof *rows));
        }
#pragma omp parallel for num_threads(T) schedule(static)
        for (int j = 0; j < m; j++)
            atk_ascent_step(cfg->norm, cfg->alpha, cfg->eps, b->xs + (size_t)j * D, b->xa + (size_t)j * D,
                            b->grad + (size_t)j * D, D);
    }
    *m_io = m;
    return AT_OK;
}

/* One run: its examples into b->adv; samples they fool are done (not after the last run, whose
 * examples the caller's final pass judges). */
static at_status pgd_once(atk_batch *b, const at_attack_config *cfg, void *state, int m, bool last) {
    (void)state;
    const int D = b->D, K = b->K;
    const bool top = cfg->target == AT_TARGET_TOP, targeted = cfg->target != AT_TARGET_NONE;
    at_status s = pgd_run(b, cfg, &m, targeted, top);
    if (s != AT_OK) return s;
    for (int j = 0; j < m; j++)
        memcpy(b->adv + (size_t)b->ids[j] * D, b->xa + (size_t)j * D, sizeof(float) * (size_t)D);
    if (m == 0 || last) return AT_OK;
    const float *z;
    if ((s = atk_forward(b, b->xa, m, &z)) != AT_OK) return s;
    for (int j = 0; j < m; j++)
        if (atk_success(b, top, b->ids[j], at_argmax(z + (size_t)j * K, K))) b->todo[b->ids[j]] = 0;
    return AT_OK;
}

static at_status pgd_attack(atk_batch *b, const at_attack_config *cfg, void *ws) {
    (void)ws;
    return atk_each_run(b, cfg, pgd_once, NULL);
}

static void pgd_defaults(at_attack_config *cfg) { cfg->steps = 20; }

static at_status pgd_check(at_attack_config *cfg, int K) {
    if (cfg->alpha == 0.0f) cfg->alpha = 2.5f * cfg->eps / (float)cfg->steps; /* Madry et al. */
    return AT_OK;
}

/* The CE name stands for any loss but the CW margin. */
static bool pgd_names(const atk_preset *p, const at_attack_config *cfg) {
    return p->loss == (cfg->loss == AT_ATTACK_LOSS_CW ? AT_ATTACK_LOSS_CW : AT_ATTACK_LOSS_CE);
}

const at_attack_method at_pgd_method = {
    .presets = {{"pgd"}, {"pgd-l2", .norm = AT_NORM_L2}, {"cw", .loss = AT_ATTACK_LOSS_CW},
                {"cw-l2", .norm = AT_NORM_L2, .loss = AT_ATTACK_LOSS_CW}},
    .names = pgd_names,
    .gradients = true,
    .defaults = pgd_defaults, .check = pgd_check, .run = pgd_attack,
};
