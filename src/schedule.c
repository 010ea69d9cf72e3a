/* Learning-rate schedules with PyTorch's semantics:
 *   step      StepLR:            lr = base * gamma^floor(t / step_size)
 *   cosine    CosineAnnealingLR: lr = min + (base - min) * (1 + cos(pi * t / T_max)) / 2
 *   onecycle  OneCycleLR(anneal_strategy='linear', three_phase=False, cycle_momentum=False):
 *             linear from base/div_factor up to base over the first pct_start of the steps,
 *             then linear down to base/div_factor/final_div_factor at the last step
 *   plateau   ReduceLROnPlateau(mode, factor, patience, threshold, 'rel', cooldown, min_lr)
 * A schedule is a value: no allocation, copyable. */
#include "internal.h"

#include <math.h>
#include <string.h>

at_schedule_config at_schedule_defaults(at_schedule_kind kind) {
    at_schedule_config c;
    memset(&c, 0, sizeof c);
    c.kind = kind;
    c.step_size = 30; /* torch has no default; at_train uses a third of the epochs when 0 */
    c.gamma = 0.1f;
    c.t_max = 0;
    c.min_lr = 0.0f;
    c.pct_start = 0.3f;
    c.div_factor = 25.0f;
    c.final_div_factor = 1e4f;
    c.factor = 0.1f;
    c.patience = 10;
    c.threshold = 1e-4f;
    c.cooldown = 0;
    return c;
}

static at_status check_schedule(const at_schedule_config *c, float base_lr, int total) {
    if (!(base_lr >= 0.0f) || !isfinite(base_lr))
        return at_fail(AT_ERR_ARG, "schedule: base learning rate must be finite and >= 0");
    if (!(c->min_lr >= 0.0f) || !isfinite(c->min_lr))
        return at_fail(AT_ERR_ARG, "schedule: min_lr must be finite and >= 0, got %g",
                       (double)c->min_lr);
    switch (c->kind) {
    case AT_SCHEDULE_CONSTANT: return AT_OK;
    case AT_SCHEDULE_STEP:
        if (c->step_size <= 0)
            return at_fail(AT_ERR_ARG, "step schedule: step size must be positive, got %d",
                           c->step_size);
        if (!(c->gamma > 0.0f) || !isfinite(c->gamma))
            return at_fail(AT_ERR_ARG, "step schedule: gamma must be finite and > 0, got %g",
                           (double)c->gamma);
        return AT_OK;
    case AT_SCHEDULE_COSINE:
        if (c->t_max <= 0 && total <= 0)
            return at_fail(AT_ERR_ARG, "cosine schedule: needs a period (t_max or the total > 0)");
        return AT_OK;
    case AT_SCHEDULE_ONECYCLE:
        if (total < 2)
            return at_fail(AT_ERR_ARG, "one-cycle schedule: needs at least 2 steps, got %d", total);
        if (!(c->pct_start > 0.0f && c->pct_start < 1.0f))
            return at_fail(AT_ERR_ARG, "one-cycle schedule: pct_start must be in (0, 1), got %g",
                           (double)c->pct_start);
        /* PyTorch needs the rising phase to end after step 0 and before the last step. */
        if (!((double)c->pct_start * total - 1.0 > 0.0 &&
              (double)c->pct_start * total - 1.0 < total - 1.0))
            return at_fail(AT_ERR_ARG,
                           "one-cycle schedule: pct_start %g of %d steps leaves an empty phase",
                           (double)c->pct_start, total);
        if (!(c->div_factor > 0.0f && c->final_div_factor > 0.0f))
            return at_fail(AT_ERR_ARG, "one-cycle schedule: div factors must be > 0");
        return AT_OK;
    case AT_SCHEDULE_PLATEAU:
        if (!(c->factor > 0.0f && c->factor < 1.0f))
            return at_fail(AT_ERR_ARG, "plateau schedule: factor must be in (0, 1), got %g",
                           (double)c->factor);
        if (c->patience < 0 || c->cooldown < 0)
            return at_fail(AT_ERR_ARG, "plateau schedule: patience and cooldown must be >= 0");
        if (!(c->threshold >= 0.0f) || !isfinite(c->threshold))
            return at_fail(AT_ERR_ARG, "plateau schedule: threshold must be finite and >= 0");
        return AT_OK;
    }
    return at_fail(AT_ERR_ARG, "unknown schedule kind %d", (int)c->kind);
}

at_status at_schedule_init(at_schedule *s, const at_schedule_config *cfg, float base_lr, int total,
                           bool maximize) {
    memset(s, 0, sizeof *s);
    at_status st = check_schedule(cfg, base_lr, total);
    if (st != AT_OK) return st;
    s->cfg = *cfg;
    s->base_lr = base_lr;
    s->lr = cfg->kind == AT_SCHEDULE_ONECYCLE ? base_lr / cfg->div_factor : base_lr;
    s->total = total;
    s->maximize = maximize;
    s->best = maximize ? -INFINITY : INFINITY;
    return AT_OK;
}

/* OneCycleLR with two linear phases, exactly as torch computes it (in double). */
static double onecycle(const at_schedule *s, int t) {
    const at_schedule_config *c = &s->cfg;
    const double max_lr = s->base_lr, initial = max_lr / c->div_factor,
                 final = initial / c->final_div_factor;
    const double end_up = (double)c->pct_start * s->total - 1.0, end_down = s->total - 1.0;
    if (t < 0) t = 0;
    if (t > s->total - 1) t = s->total - 1;
    if (t <= end_up) return (max_lr - initial) * (t / end_up) + initial;
    return (final - max_lr) * ((t - end_up) / (end_down - end_up)) + max_lr;
}

float at_schedule_lr(at_schedule *s, int t) {
    const at_schedule_config *c = &s->cfg;
    double lr = s->lr;
    switch (c->kind) {
    case AT_SCHEDULE_CONSTANT: lr = s->base_lr; break;
    case AT_SCHEDULE_STEP: lr = s->base_lr * pow(c->gamma, (double)(t / c->step_size)); break;
    case AT_SCHEDULE_COSINE: {
        int period = c->t_max > 0 ? c->t_max : s->total;
        const double pi = 3.14159265358979323846;
        lr = c->min_lr + ((double)s->base_lr - c->min_lr) * (1.0 + cos(pi * t / period)) / 2.0;
        break;
    }
    case AT_SCHEDULE_ONECYCLE: lr = onecycle(s, t); break;
    case AT_SCHEDULE_PLATEAU: break; /* driven by at_schedule_observe */
    }
    s->lr = (float)lr;
    return s->lr;
}

float at_schedule_observe(at_schedule *s, float metric) {
    const at_schedule_config *c = &s->cfg;
    if (c->kind != AT_SCHEDULE_PLATEAU) return s->lr;
    /* torch's 'rel' threshold: better than best * (1 -/+ threshold). A NaN metric never is. */
    double m = metric;
    bool better = s->maximize ? m > s->best * (1.0 + c->threshold)
                              : m < s->best * (1.0 - c->threshold);
    if (better) {
        s->best = m;
        s->bad_epochs = 0;
    } else {
        s->bad_epochs++;
    }
    if (s->cooldown_left > 0) {
        s->cooldown_left--;
        s->bad_epochs = 0;
    }
    if (s->bad_epochs > c->patience) {
        double old = s->lr, next = old * c->factor;
        if (next < c->min_lr) next = c->min_lr;
        if (old - next > 1e-8) s->lr = (float)next;
        s->cooldown_left = c->cooldown;
        s->bad_epochs = 0;
    }
    return s->lr;
}
