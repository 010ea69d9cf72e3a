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

/* One APGD run on the compact rows 0..m-1 (targets in row_target when targeted). */
static at_status apgd_run(atk_batch *b, const at_attack_config *cfg, int m, bool targeted, bool top) {
    const int D = b->D, N = cfg->steps, H = b->hist_len;
    const size_t rowb = sizeof(float) * (size_t)D;
    float *prev = b->ws[0], *best = b->ws[1], *gbest = b->ws[2];
    float *eta = b->fs[0], *lbest = b->fs[1], *lcheck = b->fs[2];
    uint8_t *reduced = b->flags;
    const int n_iter_2 = AT_MAX((int)(0.22 * N), 1), n_iter_min = AT_MAX((int)(0.06 * N), 1),
              size_decr = AT_MAX((int)(0.03 * N), 1);
    atk_rows rows[] = {
        {b->ids, sizeof(int32_t)}, {b->row_target, sizeof(int32_t)},
        {b->xs, rowb},             {b->xa, rowb},
        {b->grad, rowb},           {prev, rowb},
        {best, rowb},              {gbest, rowb},
        {eta, sizeof(float)},      {lbest, sizeof(float)},
        {lcheck, sizeof(float)},   {reduced, 1},
        {b->hist, sizeof(float) * (size_t)H},
    };
    const int nrows = (int)(sizeof rows / sizeof *rows);

    for (int j = 0; j < m; j++) sample_start(b, cfg, j);
    at_status s = atk_loss_grad(b, cfg->loss, targeted, targeted ? b->row_target : NULL, m, b->pred);
    if (s != AT_OK) return s;
    for (int j = 0; j < m; j++) {
        memcpy(best + (size_t)j * D, b->xa + (size_t)j * D, rowb);
        memcpy(gbest + (size_t)j * D, b->grad + (size_t)j * D, rowb);
        memcpy(prev + (size_t)j * D, b->xa + (size_t)j * D, rowb);
        lbest[j] = lcheck[j] = b->loss[j];
        b->hist[(size_t)j * H] = b->loss[j];
        eta[j] = 2.0f * cfg->eps;
        reduced[j] = 1;
    }
    int k = n_iter_2, counter = 0;
    for (int it = 0; m > 0; it++) {
        /* Samples fooled at the iterate just evaluated are done: it is their example. */
        for (int j = 0; j < m; j++) {
            int i = b->ids[j];
            b->keep[j] = !atk_success(b, top, i, b->pred[j]);
            if (!b->keep[j]) {
                memcpy(b->adv + (size_t)i * D, b->xa + (size_t)j * D, rowb);
                b->todo[i] = 0;
            }
        }
        m = atk_compact(m, b->keep, rows, nrows);
        if (it == N || m == 0) break;
        if (it > 0 && ++counter == k) {
            for (int j = 0; j < m; j++) {
                const float *h = b->hist + (size_t)j * H;
                int raised = 0;
                for (int c = 0; c < k; c++) raised += h[it - c] > h[it - c - 1];
                bool halve = (float)raised <= (float)k * cfg->rho;
                halve = halve || (!reduced[j] && lcheck[j] >= lbest[j]);
                reduced[j] = halve;
                lcheck[j] = lbest[j];
                if (halve) {
                    eta[j] *= 0.5f;
                    memcpy(b->xa + (size_t)j * D, best + (size_t)j * D, rowb);
                    memcpy(b->grad + (size_t)j * D, gbest + (size_t)j * D, rowb);
                }
            }
            k = AT_MAX(k - size_decr, n_iter_min);
            counter = 0;
        }
        /* The step. The gradient row is consumed by it, so z is built in its place. Rows are
         * independent: any thread may take any. */
        const float a = it > 0 ? cfg->momentum : 1.0f;
        const int T = at_rows_threads(m, (size_t)m * D);
#pragma omp parallel for num_threads(T) schedule(static)
        for (int j = 0; j < m; j++) {
            float *cur = b->xa + (size_t)j * D, *pv = prev + (size_t)j * D, *z = b->grad + (size_t)j * D;
            const float *x = b->xs + (size_t)j * D;
            if (cfg->norm == AT_NORM_LINF) {
                for (int q = 0; q < D; q++) z[q] = cur[q] + eta[j] * (float)((z[q] > 0.0f) - (z[q] < 0.0f));
            } else {
                double nrm = atk_l2(z, D);
                float scale = nrm > 0.0 ? (float)(eta[j] / (nrm + 1e-12)) : 0.0f;
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
        s = atk_loss_grad(b, cfg->loss, targeted, targeted ? b->row_target : NULL, m, b->pred);
        if (s != AT_OK) return s;
#pragma omp parallel for num_threads(T) schedule(static)
        for (int j = 0; j < m; j++) {
            b->hist[(size_t)j * H + it + 1] = b->loss[j];
            if (b->loss[j] > lbest[j]) {
                memcpy(best + (size_t)j * D, b->xa + (size_t)j * D, rowb);
                memcpy(gbest + (size_t)j * D, b->grad + (size_t)j * D, rowb);
                lbest[j] = b->loss[j];
            }
        }
    }
    /* Never fooled: return the highest-loss point. */
    for (int j = 0; j < m; j++) memcpy(b->adv + (size_t)b->ids[j] * D, best + (size_t)j * D, rowb);
    return AT_OK;
}

at_status atk_apgd(atk_batch *b, const at_attack_config *cfg) {
    const int K = b->K;
    const bool top = cfg->target == AT_TARGET_TOP, targeted = cfg->target != AT_TARGET_NONE;
    const int passes = top ? cfg->target_classes : 1;
    for (int pass = 0; pass < passes; pass++) {
        for (int r = 0; r < cfg->restarts; r++) {
            int m = atk_gather_active(b);
            if (m == 0) return AT_OK;
            for (int j = 0; j < m; j++) {
                int i = b->ids[j];
                b->row_target[j] = top ? atk_ranked_class(b->clean_logits + (size_t)i * K, K, pass + 1)
                                       : b->target[i];
            }
            at_status s = apgd_run(b, cfg, m, targeted, top);
            if (s != AT_OK) return s;
        }
    }
    return AT_OK;
}
