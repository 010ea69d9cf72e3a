/* Optimizers with PyTorch's update rules (torch.optim.SGD, Adam and AdamW), over the network's
 * single parameter buffer; their state is one buffer too.
 *
 * Weight decay comes in two forms:
 *   coupled    g += wd * w before momentum / moments (SGD(weight_decay) and Adam(weight_decay):
 *              an L2 penalty of wd/2 * sum w^2 folded into the gradient)
 *   decoupled  w -= lr * wd * w before the gradient update (AdamW; for SGD, "SGDW"): the decay
 *              is multiplied by the current learning rate, as torch.optim.AdamW does.
 * By default every parameter is decayed (one torch param group); at_optim_set_decay_select
 * restricts decay to chosen tensors (e.g. weights only), like a second group with wd = 0. */
#include "internal.h"

#include <math.h>
#include <omp.h>
#include <string.h>

struct at_optim {
    at_net *net;
    at_optim_config cfg;
    float *state; /* SGD: momentum buffer; Adam: first moments then second moments */
    size_t state_count;
    int64_t steps;
    bool *decay; /* per parameter tensor: is it decayed? */
    int ntensors;
};

at_optim_config at_optim_defaults(at_optim_kind kind) {
    at_optim_config c;
    memset(&c, 0, sizeof c);
    c.kind = kind;
    c.lr = kind == AT_OPTIM_SGD ? 0.01f : 1e-3f;
    c.beta1 = 0.9f;
    c.beta2 = 0.999f;
    c.eps = 1e-8f;
    if (kind == AT_OPTIM_ADAMW) {
        c.weight_decay = 0.01f; /* torch.optim.AdamW's default */
        c.decoupled = true;
    }
    return c;
}

static at_status check_config(const at_optim_config *c) {
    if (c->kind != AT_OPTIM_SGD && c->kind != AT_OPTIM_ADAM && c->kind != AT_OPTIM_ADAMW)
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
    if (c->kind != AT_OPTIM_SGD &&
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
    o->state_count = cfg->kind != AT_OPTIM_SGD ? 2 * n : (cfg->momentum > 0.0f ? n : 0);
    o->state = at_alloc_floats(o->state_count, "optimizer state");
    o->ntensors = at_net_num_tensors(net);
    o->decay = at_calloc((size_t)AT_MAX(o->ntensors, 1), sizeof *o->decay, "decay mask");
    if (!o->state || !o->decay) {
        at_optim_free(o);
        return AT_ERR_NOMEM;
    }
    for (int t = 0; t < o->ntensors; t++) o->decay[t] = true;
    *out = o;
    return AT_OK;
}

void at_optim_free(at_optim *o) {
    if (!o) return;
    free(o->state);
    free(o->decay);
    free(o);
}

at_status at_optim_set_decay_select(at_optim *o, const at_reg_select *sel) {
    if (sel) {
        at_status s = at_reg_check(o->net, sel);
        if (s != AT_OK) return s;
    }
    for (int t = 0; t < o->ntensors; t++) o->decay[t] = !sel || at_reg_selected(o->net, sel, t);
    return AT_OK;
}

/* Decoupled decay (before the update, as torch's AdamW): w *= 1 - lr * wd. */
static bool decoupled(const at_optim_config *c) {
    return c->decoupled || c->kind == AT_OPTIM_ADAMW;
}

/* One stretch of the buffer: w, grad and the momentum buffer are views at the same offset. */
static void sgd_step(const at_optim *o, float *restrict w, const float *restrict grad,
                     float *restrict buf, size_t n, float wd) {
    const at_optim_config *c = &o->cfg;
    const float lr = c->lr, mu = c->momentum, damp = 1.0f - c->dampening;
    const float coupled = decoupled(c) ? 0.0f : wd;
    const float shrink = 1.0f - (decoupled(c) ? lr * wd : 0.0f);
    const bool first = o->steps == 0, nesterov = c->nesterov;
    if (mu != 0.0f && !first && !nesterov && coupled == 0.0f && shrink == 1.0f) {
        /* Plain momentum, the common case: a loop without branches, so that it vectorizes.
         * The same operations as the general loop below, in the same order. */
        for (size_t i = 0; i < n; i++) {
            const float b = mu * buf[i] + damp * grad[i];
            buf[i] = b;
            w[i] -= lr * b;
        }
        return;
    }
    for (size_t i = 0; i < n; i++) {
        float g = grad[i];
        if (coupled != 0.0f) g += coupled * w[i];
        if (mu != 0.0f) {
            /* PyTorch starts the buffer at the first gradient, undampened. */
            buf[i] = first ? g : mu * buf[i] + damp * g;
            g = nesterov ? g + mu * buf[i] : buf[i];
        }
        if (shrink != 1.0f) w[i] *= shrink;
        w[i] -= lr * g;
    }
}

static void adam_step(const at_optim *o, float *restrict w, const float *restrict grad,
                      float *restrict m, float *restrict v, size_t n, float wd) {
    const at_optim_config *c = &o->cfg;
    const double t = (double)(o->steps + 1);
    const double bias1 = 1.0 - pow(c->beta1, t), bias2 = 1.0 - pow(c->beta2, t);
    const float step_size = (float)(c->lr / bias1);
    const float bias2_sqrt = (float)sqrt(bias2);
    const float b1 = c->beta1, b2 = c->beta2, eps = c->eps;
    const float coupled = decoupled(c) ? 0.0f : wd;
    const float shrink = 1.0f - (decoupled(c) ? c->lr * wd : 0.0f);
    for (size_t i = 0; i < n; i++) {
        float g = grad[i];
        if (coupled != 0.0f) g += coupled * w[i];
        if (shrink != 1.0f) w[i] *= shrink;
        m[i] = b1 * m[i] + (1.0f - b1) * g;
        v[i] = b2 * v[i] + (1.0f - b2) * g * g;
        float denom = sqrtf(v[i]) / bias2_sqrt + eps;
        w[i] -= step_size * (m[i] / denom);
    }
}

/* Below this many parameters a second thread costs more to wake than it saves. */
enum { PARALLEL_PARAMS = 32768 };

/* Elementwise updates: the threads split the buffer into contiguous ranges (whole cache lines),
 * each range walked tensor by tensor so that each tensor keeps its own decay. The result does
 * not depend on the thread count. */
at_status at_optim_step(at_optim *o) {
    float *w = at_net_params(o->net);
    const float *g = at_net_grads(o->net);
    const size_t n = at_net_num_params(o->net);
    const int T = n >= PARALLEL_PARAMS ? at_get_threads() : 1;
#pragma omp parallel num_threads(T)
    {
        size_t begin, end;
        at_split_range(n, omp_get_thread_num(), omp_get_num_threads(), &begin, &end);
        for (int k = 0; k < o->ntensors; k++) {
            const at_param_info *p = at_net_tensor(o->net, k);
            const size_t lo = AT_MAX(p->offset, begin), hi = AT_MIN(p->offset + p->size, end);
            if (lo >= hi) continue;
            const float wd = o->decay[k] ? o->cfg.weight_decay : 0.0f;
            if (o->cfg.kind == AT_OPTIM_SGD)
                sgd_step(o, w + lo, g + lo, o->state_count ? o->state + lo : NULL, hi - lo, wd);
            else
                adam_step(o, w + lo, g + lo, o->state + lo, o->state + n + lo, hi - lo, wd);
        }
    }
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
void at_optim_set_steps(at_optim *o, int64_t steps) { o->steps = steps; }
