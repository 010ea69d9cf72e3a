/* Optimizers with PyTorch's update rules (torch.optim.SGD and Adam), over the network's single
 * parameter buffer; their state is one buffer too. */
#include "internal.h"

#include <math.h>
#include <string.h>

struct at_optim {
    at_net *net;
    at_optim_config cfg;
    float *state; /* SGD: momentum buffer; Adam: first moments then second moments */
    size_t state_count;
    int64_t steps;
};

at_optim_config at_optim_defaults(at_optim_kind kind) {
    at_optim_config c;
    memset(&c, 0, sizeof c);
    c.kind = kind;
    c.lr = kind == AT_OPTIM_ADAM ? 1e-3f : 0.01f;
    c.beta1 = 0.9f;
    c.beta2 = 0.999f;
    c.eps = 1e-8f;
    return c;
}

static at_status check_config(const at_optim_config *c) {
    if (c->kind != AT_OPTIM_SGD && c->kind != AT_OPTIM_ADAM)
        return at_fail(AT_ERR_ARG, "unknown optimizer kind %d", (int)c->kind);
    if (!(c->lr >= 0.0f) || !isfinite(c->lr))
        return at_fail(AT_ERR_ARG, "learning rate must be a finite number >= 0, got %g", (double)c->lr);
    if (!(c->momentum >= 0.0f && c->momentum < 1.0f))
        return at_fail(AT_ERR_ARG, "momentum must be in [0, 1), got %g", (double)c->momentum);
    if (c->nesterov && (c->momentum <= 0.0f || c->dampening != 0.0f))
        return at_fail(AT_ERR_ARG, "Nesterov momentum requires momentum > 0 and zero dampening");
    if (!(c->weight_decay >= 0.0f) || !isfinite(c->weight_decay))
        return at_fail(AT_ERR_ARG, "weight decay must be a finite number >= 0, got %g",
                       (double)c->weight_decay);
    if (c->kind == AT_OPTIM_ADAM &&
        !(c->beta1 >= 0.0f && c->beta1 < 1.0f && c->beta2 >= 0.0f && c->beta2 < 1.0f && c->eps > 0.0f))
        return at_fail(AT_ERR_ARG, "Adam needs betas in [0, 1) and eps > 0");
    return AT_OK;
}

at_status at_optim_create(at_optim **out, at_net *net, const at_optim_config *cfg) {
    *out = NULL;
    at_status s = check_config(cfg);
    if (s != AT_OK) return s;
    at_optim *o = at_calloc(1, sizeof *o, "an optimizer");
    if (!o) return AT_ERR_NOMEM;
    o->net = net;
    o->cfg = *cfg;
    size_t n = at_net_num_params(net);
    o->state_count = cfg->kind == AT_OPTIM_ADAM ? 2 * n : (cfg->momentum > 0.0f ? n : 0);
    o->state = at_alloc_floats(o->state_count, "optimizer state");
    if (!o->state) {
        free(o);
        return AT_ERR_NOMEM;
    }
    *out = o;
    return AT_OK;
}

void at_optim_free(at_optim *o) {
    if (!o) return;
    free(o->state);
    free(o);
}

static void sgd_step(at_optim *o, float *w, const float *grad, size_t n) {
    const at_optim_config *c = &o->cfg;
    const float lr = c->lr, mu = c->momentum, wd = c->weight_decay, damp = 1.0f - c->dampening;
    float *buf = o->state;
    for (size_t i = 0; i < n; i++) {
        float g = grad[i];
        if (wd != 0.0f) g += wd * w[i];
        if (mu != 0.0f) {
            /* PyTorch starts the buffer at the first gradient, undampened. */
            buf[i] = o->steps == 0 ? g : mu * buf[i] + damp * g;
            g = c->nesterov ? g + mu * buf[i] : buf[i];
        }
        w[i] -= lr * g;
    }
}

static void adam_step(at_optim *o, float *w, const float *grad, size_t n) {
    const at_optim_config *c = &o->cfg;
    const double t = (double)(o->steps + 1);
    const double bias1 = 1.0 - pow(c->beta1, t), bias2 = 1.0 - pow(c->beta2, t);
    const float step_size = (float)(c->lr / bias1);
    const float bias2_sqrt = (float)sqrt(bias2);
    const float b1 = c->beta1, b2 = c->beta2, wd = c->weight_decay, eps = c->eps;
    float *m = o->state, *v = o->state + n;
    for (size_t i = 0; i < n; i++) {
        float g = grad[i];
        if (wd != 0.0f) g += wd * w[i];
        m[i] = b1 * m[i] + (1.0f - b1) * g;
        v[i] = b2 * v[i] + (1.0f - b2) * g * g;
        float denom = sqrtf(v[i]) / bias2_sqrt + eps;
        w[i] -= step_size * (m[i] / denom);
    }
}

at_status at_optim_step(at_optim *o) {
    float *w = at_net_params(o->net);
    const float *g = at_net_grads(o->net);
    size_t n = at_net_num_params(o->net);
    if (o->cfg.kind == AT_OPTIM_ADAM)
        adam_step(o, w, g, n);
    else
        sgd_step(o, w, g, n);
    o->steps++;
    return AT_OK;
}

void at_optim_set_lr(at_optim *o, float lr) { o->cfg.lr = lr; }
float at_optim_lr(const at_optim *o) { return o->cfg.lr; }
const at_optim_config *at_optim_get_config(const at_optim *o) { return &o->cfg; }
float *at_optim_state(at_optim *o, size_t *count) {
    if (count) *count = o->state_count;
    return o->state;
}
int64_t at_optim_steps(const at_optim *o) { return o->steps; }
