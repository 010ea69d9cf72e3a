/* FGSM (Goodfellow et al. 2015): x_adv = P(x + eps * sign(dL/dx)) under L-inf, and
 * P(x + eps * g / ||g||_2) under L2, where P projects onto the eps-ball and [0,1]. Targeted: the
 * loss is minus the loss of the target class, so the step moves towards it. The step is
 * cfg->alpha, which defaults to eps. */
#include "attack.h"

#include <string.h>

static at_status fgsm_attack(atk_batch *b, const at_attack_config *cfg, void *ws) {
    const int D = b->D;
    int m = atk_gather_targets(b, false, 0);
    if (m == 0) return AT_OK;
    bool targeted = cfg->target != AT_TARGET_NONE;
    memcpy(b->xa, b->xs, sizeof(float) * (size_t)m * D);
    at_status s = atk_loss_grad(b, cfg->loss, targeted, targeted ? b->row_target : NULL, m, NULL);
    if (s != AT_OK) return s;
    for (int j = 0; j < m; j++) {
        float *v = b->xa + (size_t)j * D;
        atk_ascent_step(cfg->norm, cfg->alpha, cfg->eps, b->xs + (size_t)j * D, v,
                        b->grad + (size_t)j * D, D);
        memcpy(b->adv + (size_t)b->ids[j] * D, v, sizeof(float) * (size_t)D);
    }
    return AT_OK;
}

static void fgsm_defaults(at_attack_config *cfg) { cfg->steps = 1; }

static at_status fgsm_check(at_attack_config *cfg, int K) {
    cfg->steps = 1; /* one step whatever was asked: alpha sets how far it goes */
    if (cfg->alpha == 0.0f) cfg->alpha = cfg->eps;
    if (cfg->target == AT_TARGET_TOP)
        return at_fail(AT_ERR_ARG, "FGSM takes one target per sample (given, random or least-likely), not the top classes");
    return AT_OK;
}

/* Its single step takes no budget. */
static void fgsm_set_budget(at_attack_config *cfg, int iterations, int queries) {}

const at_attack_method at_fgsm_method = {
    .presets = {{"fgsm"}, {"fgsm-l2", .norm = AT_NORM_L2}},
    .gradients = true,
    .defaults = fgsm_defaults, .check = fgsm_check, .set_budget = fgsm_set_budget, .run = fgsm_attack,
};
