/* Certified training's schedule and checks (at_certify_config): clean epochs first, then eps
 * and the clean loss's weight kappa move linearly over the ramp (Gowal et al. 2018: kappa 1 to
 * 0.5 while eps rises), and CROWN-IBP's share beta with them (Zhang et al. 2020: 1 to 0), then
 * stay. train.c mixes the two losses with them. */
#include "internal.h"

#include <math.h>

void certify_schedule(const at_certify_config *c, int64_t step, int nbatches, certify_point *p) {
    const double warm = (double)c->warmup_epochs * nbatches, ramp = (double)c->ramp_epochs * nbatches;
    double t = ramp > 0 ? ((double)step + 1 - warm) / ramp : (step >= warm ? 1.0 : 0.0);
    t = t < 0 ? 0 : (t > 1 ? 1 : t);
    p->eps = (float)(t * c->eps);
    p->kappa = (float)(1.0 - t * (1.0 - c->kappa_end));
    p->beta = c->method == AT_BOUND_CROWN_IBP ? (float)(c->beta_start + t * ((double)c->beta_end - c->beta_start)) : 0.0f;
}

at_status certify_check(const at_train_config *cfg, const at_dataset *train, const at_net *net) {
    const at_certify_config *c = &cfg->certify;
    if (c->eps == 0.0f) return AT_OK;
    if (!(c->eps > 0.0f && c->eps <= 1.0f))
        return at_fail(AT_ERR_ARG, "certified training eps must be in (0, 1] (0-1 pixel scale), got %g", (double)c->eps);
    if (c->warmup_epochs < 0 || c->ramp_epochs < 0)
        return at_fail(AT_ERR_ARG, "certified training warm-up and ramp must be >= 0 epochs");
    if (!(c->kappa_end >= 0.0f && c->kappa_end <= 1.0f))
        return at_fail(AT_ERR_ARG, "certified training kappa must be in [0, 1], got %g", (double)c->kappa_end);
    if (c->method != AT_BOUND_IBP && c->method != AT_BOUND_CROWN_IBP)
        return at_fail(AT_ERR_ARG, "certified training takes IBP or CROWN-IBP bounds (method %d: full CROWN is for "
                                   "verification, one backward pass per neuron)", (int)c->method);
    if (c->method == AT_BOUND_CROWN_IBP && !(c->beta_start >= 0.0f && c->beta_start <= 1.0f && c->beta_end >= 0.0f &&
                                            c->beta_end <= 1.0f))
        return at_fail(AT_ERR_ARG, "certified training beta must be in [0, 1], got %g to %g", (double)c->beta_start,
                       (double)c->beta_end);
    if (cfg->adv.method != AT_ADV_NONE)
        return at_fail(AT_ERR_ARG, "certified training and adversarial training are not combined: choose one");
    if (train->targets || cfg->mixup_alpha > 0.0f || cfg->label_smoothing > 0.0f)
        return at_fail(AT_ERR_ARG, "certified training needs hard class labels (no regression, mixup or label smoothing)");
    return certified_check_network(net, c->method == AT_BOUND_CROWN_IBP);
}
