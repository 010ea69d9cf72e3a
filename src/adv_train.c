/* Adversarial training inside the training loop: each method's batch gradient, the eps warm-up,
 * the per-epoch robust validation with best-epoch selection, and the FGSM-RS guard against
 * catastrophic overfitting (Wong et al. 2020; Rice et al. 2020 for robust overfitting). */
#include "adv_train.h"
#include "quant/qat.h"

#include <float.h>
#include <limits.h>
#include <math.h>
#include <string.h>

static const char *const method_names[] = {"none", "fgsm", "fgsm-rs", "pgd", "trades", "free"};

const char *at_adv_method_name(at_adv_method m) {
    return (unsigned)m < sizeof method_names / sizeof *method_names ? method_names[m] : "?";
}

at_status at_adv_method_from_name(const char *name, at_adv_method *m) {
    for (size_t i = 0; i < sizeof method_names / sizeof *method_names; i++)
        if (strcmp(name, method_names[i]) == 0) {
            *m = (at_adv_method)i;
            return AT_OK;
        }
    return at_fail(AT_ERR_ARG,
                   "unknown adversarial training method '%s' (fgsm, fgsm-rs, pgd, trades, free)", name);
}

at_adv_train_config at_adv_train_defaults(at_adv_method method, float eps) {
    at_adv_train_config c;
    memset(&c, 0, sizeof c);
    c.method = method;
    c.norm = AT_NORM_LINF;
    c.eps = eps;
    c.steps = method == AT_ADV_TRADES ? 10 : 7;
    c.clean_weight = 0.5f;
    c.beta = 6.0f;
    c.replays = 8;
    c.robust_val_steps = 10;
    c.robust_val_samples = 1000;
    c.keep_best = true;
    c.guard = true;
    c.guard_samples = 512;
    return c;
}

/* The step each method uses when alpha is left at 0. */
static float default_alpha(const at_adv_train_config *c) {
    switch (c->method) {
    case AT_ADV_FGSM: return c->eps;
    case AT_ADV_FGSM_RS: return 1.25f * c->eps;
    case AT_ADV_PGD: return 2.5f * c->eps / (float)c->steps;
    case AT_ADV_TRADES: return 0.25f * c->eps;
    default: return c->eps;
    }
}

struct adv_trainer {
    at_net *net;
    at_optim *opt;
    const at_train_config *cfg;
    const at_dataset *val;
    at_adv_workspace *ws;
    at_adv_method method; /* fgsm-rs may fall back to pgd after repeated collapses */
    float alpha;
    int steps;
    int64_t warmup_steps;
    float *soft;          /* label-smoothed targets when no mixup provides soft ones */
    /* robust validation and best-epoch selection */
    float best_robust;
    int best_epoch;
    float *best_params;
    /* FGSM-RS guard */
    float *guard_x;
    int32_t *guard_y;
    int guard_n;
    int32_t *val_pred;    /* per-sample predictions of the robust validation, when it serves the guard */
    float best_guard;
    float *good_params, *good_state;
    int collapses;
};

void adv_trainer_free(adv_trainer *t) {
    if (!t) return;
    at_adv_workspace_free(t->ws);
    free(t->soft);
    free(t->best_params);
    free(t->guard_x);
    free(t->guard_y);
    free(t->val_pred);
    free(t->good_params);
    free(t->good_state);
    free(t);
}

static at_status check_config(const at_adv_train_config *c, const at_dataset *train) {
    if (c->method <= AT_ADV_NONE || c->method > AT_ADV_FREE)
        return at_fail(AT_ERR_ARG, "unknown adversarial training method %d", (int)c->method);
    if (!train->images || train->num_classes <= 0)
        return at_fail(AT_ERR_ARG, "adversarial training needs an image classification dataset "
                                   "(pixels in [0,1]), not regression data");
    if (!(c->eps > 0.0f && c->eps <= 1.0f))
        return at_fail(AT_ERR_ARG, "adversarial eps must be in (0, 1] on the 0-1 pixel scale, got %g",
                       (double)c->eps);
    if (!(c->alpha >= 0.0f) || !isfinite(c->alpha))
        return at_fail(AT_ERR_ARG, "adversarial step alpha must be >= 0, got %g", (double)c->alpha);
    if ((c->method == AT_ADV_PGD || c->method == AT_ADV_TRADES) && (c->steps < 1 || c->steps > 10000))
        return at_fail(AT_ERR_ARG, "%s needs 1 to 10000 steps, got %d", at_adv_method_name(c->method),
                       c->steps);
    if (c->method == AT_ADV_FGSM && !(c->clean_weight >= 0.0f && c->clean_weight <= 1.0f))
        return at_fail(AT_ERR_ARG, "fgsm clean-loss weight must be in [0, 1], got %g",
                       (double)c->clean_weight);
    if (c->method == AT_ADV_TRADES && !(c->beta >= 0.0f && isfinite(c->beta)))
        return at_fail(AT_ERR_ARG, "trades beta must be >= 0, got %g", (double)c->beta);
    if (c->method == AT_ADV_FREE && (c->replays < 1 || c->replays > 100))
        return at_fail(AT_ERR_ARG, "free needs 1 to 100 replays, got %d", c->replays);
    if (c->norm == AT_NORM_L2 && c->method != AT_ADV_PGD)
        return at_fail(AT_ERR_ARG, "the L2 norm is available with pgd only");
    if (c->warmup_epochs < 0 || c->robust_val_steps < 0 || c->robust_val_samples < 0 ||
        c->guard_samples < 0)
        return at_fail(AT_ERR_ARG, "adversarial warm-up, validation and guard sizes must be >= 0");
    return AT_OK;
}

at_status adv_trainer_create(adv_trainer **out, at_net *net, at_optim *opt,
                             const at_train_config *cfg, const at_dataset *train,
                             const at_dataset *val, int nbatches) {
    *out = NULL;
    const at_adv_train_config *c = &cfg->adv;
    at_status s = check_config(c, train);
    if (s != AT_OK) return s;
    adv_trainer *t = at_calloc(1, sizeof *t, "adversarial trainer");
    if (!t) return AT_ERR_NOMEM;
    t->net = net;
    t->opt = opt;
    t->cfg = cfg;
    t->val = val;
    t->method = c->method;
    t->alpha = c->alpha > 0.0f ? c->alpha : default_alpha(c);
    t->steps = c->steps;
    t->warmup_steps = (int64_t)c->warmup_epochs * nbatches;
    t->best_robust = -1.0f;
    const int k = at_net_out_size(net), d = at_net_in_size(net);
    const size_t np = at_net_num_params(net);
    bool ok = (s = at_adv_workspace_create(&t->ws, net, cfg->batch)) == AT_OK;
    if (ok && cfg->label_smoothing > 0.0f)
        ok = (t->soft = at_alloc_floats((size_t)cfg->batch * k, "smoothed targets")) != NULL;
    if (ok && val && c->keep_best && c->robust_val_steps > 0 && c->robust_val_samples > 0)
        ok = (t->best_params = at_alloc_floats(np, "best robust weights")) != NULL;
    if (ok && c->method == AT_ADV_FGSM_RS && c->guard && c->guard_samples > 0) {
        /* The guard's held-out batch: validation samples when there are some. */
        const at_dataset *src = val ? val : train;
        t->guard_n = AT_MIN(c->guard_samples, src->n);
        size_t state_count;
        at_optim_state(opt, &state_count);
        ok = (t->guard_x = at_alloc_floats((size_t)t->guard_n * d, "guard batch")) &&
             (t->guard_y = at_calloc((size_t)t->guard_n, sizeof(int32_t), "guard labels")) &&
             (t->good_params = at_alloc_floats(np, "last good weights")) &&
             (t->good_state = at_alloc_floats(state_count, "last good optimizer state"));
        if (ok) at_dataset_range(src, 0, t->guard_n, t->guard_x, t->guard_y, NULL);
        if (ok) adv_trainer_snapshot_good(t);
        /* the robust validation serves the guard too (adv_trainer_end_epoch) */
        const int val_samples = AT_MIN(c->robust_val_samples, val ? val->n : 0);
        if (ok && val && c->robust_val_steps == 10 && val_samples >= t->guard_n)
            ok = (t->val_pred = at_calloc((size_t)val_samples, sizeof(int32_t),
                                          "robust validation predictions")) != NULL;
    }
    if (!ok) {
        adv_trainer_free(t);
        return s != AT_OK ? s : AT_ERR_NOMEM;
    }
    *out = t;
    return AT_OK;
}

int adv_trainer_replays(const adv_trainer *t) {
    return t->method == AT_ADV_FREE ? t->cfg->adv.replays : 1;
}

float adv_trainer_eps(const adv_trainer *t, int64_t step) {
    float eps = t->cfg->adv.eps;
    if (t->warmup_steps > 0 && step < t->warmup_steps)
        eps *= (float)(step + 1) / (float)t->warmup_steps;
    return eps;
}

at_status adv_trainer_gradients(adv_trainer *t, const float *x, const int32_t *y, const float *soft,
                                int n, int epoch, int64_t index, float eps, float scale, float *loss,
                                int *correct, int *adv_correct) {
    const at_adv_train_config *c = &t->cfg->adv;
    const int k = at_net_out_size(t->net);
    if (!soft && t->soft) {
        at_soft_targets(y, n, k, t->cfg->label_smoothing, t->soft);
        soft = t->soft;
    }
    /* The step scales with a warming-up eps. */
    const float alpha = t->alpha * (eps / c->eps);
    at_attack_config a = at_attack_defaults(t->method == AT_ADV_PGD ? AT_ATTACK_PGD : AT_ATTACK_FGSM);
    a.eps = eps;
    a.alpha = alpha;
    a.steps = t->steps;
    a.norm = c->norm;
    a.seed = at_draw_key(t->cfg->seed, AT_DRAW_CRAFT, epoch);
    a.index_base = index;
    at_status s;
    float clean_loss, adv_loss;
    switch (t->method) {
    case AT_ADV_FGSM:
        a.random_start = false;
        s = at_clean_loss(t->net, t->ws, x, y, soft, n, scale * c->clean_weight, &clean_loss, correct);
        if (s == AT_OK)
            s = at_adversarial_loss(t->net, t->ws, &a, x, y, soft, n, scale * (1.0f - c->clean_weight),
                                    &adv_loss, adv_correct);
        if (s == AT_OK) *loss = c->clean_weight * clean_loss + (1.0f - c->clean_weight) * adv_loss;
        return s;
    case AT_ADV_FGSM_RS:
    case AT_ADV_PGD:
        a.random_start = true;
        s = at_adversarial_loss(t->net, t->ws, &a, x, y, soft, n, scale, loss, adv_correct);
        *correct = *adv_correct;
        return s;
    case AT_ADV_TRADES:
        *adv_correct = -1; /* trades trains on clean and adversarial logits; no hit count of its own */
        return at_trades_loss(t->net, t->ws, &a, c->beta, x, y, soft, n, scale, loss, correct);
    case AT_ADV_FREE:
        s = at_free_replay(t->net, t->ws, eps, x, y, soft, n, loss, adv_correct);
        *correct = *adv_correct;
        return s;
    case AT_ADV_NONE: break;
    }
    return at_fail(AT_ERR_ARG, "no adversarial training method");
}

void adv_trainer_snapshot_good(adv_trainer *t) {
    size_t count;
    const float *state = at_optim_state(t->opt, &count);
    memcpy(t->good_params, at_net_params(t->net), sizeof(float) * at_net_num_params(t->net));
    memcpy(t->good_state, state, sizeof(float) * count);
}

static void restore_good(adv_trainer *t) {
    size_t count;
    float *state = at_optim_state(t->opt, &count);
    memcpy(at_net_params(t->net), t->good_params, sizeof(float) * at_net_num_params(t->net));
    memcpy(state, t->good_state, sizeof(float) * count);
}

/* PGD robust accuracy with the training eps (0-1 scale), the evaluation attack of Madry et al.:
 * random start, steps of 2.5 eps / steps. */
static at_status pgd_accuracy(adv_trainer *t, const float *x, const int32_t *y, int n,
                              const at_dataset *ds, int steps, float *acc) {
    at_attack_config a = at_attack_defaults(AT_ATTACK_PGD);
    a.eps = t->cfg->adv.eps;
    a.norm = t->cfg->adv.norm;
    a.steps = steps;
    a.alpha = 0.0f;
    a.seed = t->cfg->seed ^ 0x6A09E667F3BCC909ull; /* the same attack every epoch */
    at_attack_result r;
    qat_begin(t->net); /* QAT: the robustness of the network as it will run in int8 */
    at_status s = ds ? at_attack_dataset(t->net, &a, ds, n, NULL, t->val_pred, &r)
                     : at_attack_run(t->net, &a, x, y, n, NULL, NULL, &r);
    qat_end(t->net);
    *acc = r.samples > 0 ? (float)r.robust / (float)r.samples : NAN;
    return s;
}

/* The robust validation's PGD-10 on the validation samples attacks the guard's batch too (its
 * first samples, with the same seed: random starts are drawn per sample index, so each sample's
 * outcome does not depend on which others run with it). When it covers the whole batch (then
 * val_pred exists), one attack serves both, and the guard's accuracy is read from its
 * per-sample predictions. */
static float guard_from_predictions(const adv_trainer *t) {
    int hits = 0;
    for (int i = 0; i < t->guard_n; i++) hits += t->val_pred[i] == t->guard_y[i];
    return (float)hits / (float)t->guard_n;
}

/* Catastrophic overfitting: PGD accuracy on the held-out batch falls below half of the best
 * seen, from a best that meant something (Wong et al. see it fall to ~0 within an epoch). */
static bool collapsed(float best, float now) { return best >= 0.1f && now < 0.5f * best; }

at_status adv_trainer_end_epoch(adv_trainer *t, int epoch, at_epoch_stats *st) {
    const at_adv_train_config *c = &t->cfg->adv;
    at_status s = AT_OK;
    st->robust_val = st->guard_acc = NAN;
    st->alpha = t->alpha;
    const bool validate = t->val && c->robust_val_steps > 0 && c->robust_val_samples > 0;
    const int val_samples = validate ? AT_MIN(c->robust_val_samples, t->val->n) : 0;
    bool validated = false; /* st->robust_val already holds this epoch's final weights' value */
    if (t->guard_n > 0 && t->method == AT_ADV_FGSM_RS) {
        if (t->val_pred) { /* implies validate: the robust validation covers the batch */
            if ((s = pgd_accuracy(t, NULL, NULL, val_samples, t->val, c->robust_val_steps,
                                  &st->robust_val)) != AT_OK)
                return s;
            st->guard_acc = guard_from_predictions(t);
            validated = true;
        } else if ((s = pgd_accuracy(t, t->guard_x, t->guard_y, t->guard_n, NULL, 10,
                                     &st->guard_acc)) != AT_OK) {
            return s;
        }
        if (collapsed(t->best_guard, st->guard_acc)) {
            validated = false; /* the weights change: validate the restored ones */
            /* Back to the last good weights, with a smaller step; after two collapses train
             * with PGD instead, which does not overfit this way. */
            restore_good(t);
            st->collapsed = true;
            t->collapses++;
            if (t->collapses >= 2) {
                t->method = AT_ADV_PGD;
                t->steps = 3;
                t->alpha = 2.5f * c->eps / 3.0f;
            } else {
                t->alpha *= 0.8f;
            }
            st->alpha = t->alpha;
        } else {
            if (st->guard_acc > t->best_guard) t->best_guard = st->guard_acc;
            adv_trainer_snapshot_good(t);
        }
    }
    st->method = at_adv_method_name(t->method);
    if (validate) {
        if (!validated &&
            (s = pgd_accuracy(t, NULL, NULL, val_samples, t->val, c->robust_val_steps,
                              &st->robust_val)) != AT_OK)
            return s;
        if (t->best_params && st->robust_val > t->best_robust) {
            t->best_robust = st->robust_val;
            t->best_epoch = epoch;
            memcpy(t->best_params, at_net_params(t->net), sizeof(float) * at_net_num_params(t->net));
        }
        if (t->best_params) st->best_epoch = t->best_epoch;
    }
    return AT_OK;
}

int adv_trainer_finish(adv_trainer *t) {
    if (!t->best_params || t->best_epoch <= 0) return 0;
    memcpy(at_net_params(t->net), t->best_params, sizeof(float) * at_net_num_params(t->net));
    return t->best_epoch;
}

void adv_trainer_save_state(adv_trainer *t, ckpt_state *c) {
    const size_t np = at_net_num_params(t->net);
    size_t state_count;
    at_optim_state(t->opt, &state_count);
    ckpt_put_str(c, "adv_method", at_adv_method_name(t->method));
    ckpt_put_num(c, "adv_alpha", t->alpha);
    ckpt_put_int(c, "adv_steps", t->steps);
    ckpt_put_num(c, "adv_best_robust", t->best_robust);
    ckpt_put_int(c, "adv_best_epoch", t->best_epoch);
    ckpt_put_num(c, "adv_best_guard", t->best_guard);
    ckpt_put_int(c, "adv_collapses", t->collapses);
    if (t->best_params) ckpt_put_floats(c, "adv_best_params", t->best_params, np);
    if (t->method == AT_ADV_FREE) { /* the perturbation goes on across batches and epochs */
        size_t count;
        const float *delta = at_adv_workspace_delta(t->ws, &count);
        ckpt_put_floats(c, "adv_free_delta", delta, count);
    }
    if (t->good_params) {
        ckpt_put_floats(c, "adv_good_params", t->good_params, np);
        ckpt_put_floats(c, "adv_good_state", t->good_state, state_count);
    }
}

at_status adv_trainer_load_state(adv_trainer *t, const ckpt_state *c) {
    const size_t np = at_net_num_params(t->net);
    size_t state_count;
    at_optim_state(t->opt, &state_count);
    const char *method = ckpt_get_str(c, "adv_method");
    at_adv_method m;
    if (!method || at_adv_method_from_name(method, &m) != AT_OK || m == AT_ADV_NONE)
        return at_fail(AT_ERR_FORMAT, "%s: training state 'adv_method' is missing or unknown", c->path);
    /* fgsm-rs may have switched to pgd after collapses; any other change is a different run */
    if (m != t->method && !(t->method == AT_ADV_FGSM_RS && m == AT_ADV_PGD))
        return at_fail(AT_ERR_ARG, "%s was written by adversarial training with %s, this run uses %s",
                       c->path, method, at_adv_method_name(t->method));
    double alpha, best_robust, best_guard;
    int64_t steps, best_epoch, collapses;
    at_status s;
    /* The ranges a run produces (accuracies from -1, the initial value; pgd and trades take 1 to
     * 10000 steps, as at_train checks): a corrupted step count would otherwise wrap into an int,
     * a negative one silently skip the attack. */
    const int64_t min_steps = m == AT_ADV_PGD || m == AT_ADV_TRADES ? 1 : 0;
    if ((s = ckpt_get_num_in(c, "adv_alpha", 0, FLT_MAX, &alpha)) != AT_OK ||
        (s = ckpt_get_int_in(c, "adv_steps", min_steps, 10000, &steps)) != AT_OK ||
        (s = ckpt_get_num_in(c, "adv_best_robust", -1, 1, &best_robust)) != AT_OK ||
        (s = ckpt_get_int_in(c, "adv_best_epoch", 0, CKPT_MAX_EPOCH, &best_epoch)) != AT_OK ||
        (s = ckpt_get_num_in(c, "adv_best_guard", -1, 1, &best_guard)) != AT_OK ||
        (s = ckpt_get_int_in(c, "adv_collapses", 0, INT_MAX, &collapses)) != AT_OK)
        return s;
    /* Checkpoints before 2026-12-07 also hold "adv_rng", the generator random starts then came
     * from in sequence; they are now drawn per sample (adv_trainer_gradients) and it is unused. */
    if (t->best_params && best_epoch > 0 &&
        (s = ckpt_get_floats(c, "adv_best_params", t->best_params, np)) != AT_OK)
        return s;
    size_t count;
    float *delta = at_adv_workspace_delta(t->ws, &count);
    /* Checkpoints before 2026-12 did not keep it (their resumed runs started from zero). */
    if (t->method == AT_ADV_FREE && ckpt_has_floats(c, "adv_free_delta") &&
        (s = ckpt_get_floats(c, "adv_free_delta", delta, count)) != AT_OK)
        return s;
    if (t->good_params && ((s = ckpt_get_floats(c, "adv_good_params", t->good_params, np)) != AT_OK ||
                           (s = ckpt_get_floats(c, "adv_good_state", t->good_state, state_count)) != AT_OK))
        return s;
    t->method = m;
    t->alpha = (float)alpha;
    t->steps = (int)steps;
    t->best_robust = (float)best_robust;
    t->best_epoch = (int)best_epoch;
    t->best_guard = (float)best_guard;
    t->collapses = (int)collapses;
    return AT_OK;
}
