/* FGSM (Goodfellow et al. 2015): x_adv = P(x + eps * sign(dL/dx)) under L-inf, and
 * P(x + eps * g / ||g||_2) under L2, where P projects onto the eps-ball and [0,1]. Targeted: the
 * loss is minus the loss of the target class, so the step moves towards it. The step is
 * cfg->alpha, which defaults to eps. */
#include "attack.h"

#include <string.h>

/* One ascent step of size `step` along the gradient direction of the norm, then projection. */
void atk_ascent_step(at_attack_norm norm, float step, float eps, const float *x, float *v,
                     const float *g, int D) {
    if (norm == AT_NORM_LINF) {
        for (int k = 0; k < D; k++) v[k] += step * (float)((g[k] > 0.0f) - (g[k] < 0.0f));
    } else {
        double nrm = atk_l2(g, D);
        float scale = (float)(step / (nrm + 1e-12));
        if (nrm > 0.0)
            for (int k = 0; k < D; k++) v[k] += scale * g[k];
    }
    atk_project(norm, eps, x, v, D);
}

at_status atk_fgsm(atk_batch *b, const at_attack_config *cfg) {
    const int D = b->D;
    int m = atk_gather_active(b);
    if (m == 0) return AT_OK;
    bool targeted = cfg->target != AT_TARGET_NONE;
    for (int j = 0; j < m; j++) b->row_target[j] = b->target[b->ids[j]];
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
