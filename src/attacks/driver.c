/* The attack driver: the one table of attacks, and what the public API does with it (names,
 * defaults, checks, budgets), and the batch loop behind at_attack_run and at_attack_dataset
 * (clean pass, per-sample generators and targets, the attack, the final pass and the sanity
 * measurements). A new attack is one file with its at_attack_method and one line in the table
 * (docs/robustness.md, "Adding an attack"). */
#include "attack.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* The table: one line per attack kind, whose entry its own file defines. */
extern const at_attack_method at_fgsm_method, at_pgd_method, at_apgd_method, at_square_method, at_auto_method;
static const at_attack_method *const methods[] = {
    [AT_ATTACK_FGSM] = &at_fgsm_method,
    [AT_ATTACK_PGD] = &at_pgd_method,
    [AT_ATTACK_APGD] = &at_apgd_method,
    [AT_ATTACK_SQUARE] = &at_square_method,
    [AT_ATTACK_AUTO] = &at_auto_method,
};
_Static_assert(sizeof methods / sizeof *methods == AT_ATTACK_KIND_COUNT, "one line per at_attack_kind");

static const at_attack_method *method_of(at_attack_kind kind) {
    return (unsigned)kind < AT_ATTACK_KIND_COUNT ? methods[kind] : NULL;
}

/* ------------------------------------------------------------ configuration */

at_attack_config at_attack_defaults(at_attack_kind kind) {
    /* Every kind starts from the same values, so that a configuration keeps sensible APGD and
     * Square settings when its kind changes; the kind then sets its own. */
    at_attack_config c = {
        .kind = kind, .norm = AT_NORM_LINF, .loss = AT_ATTACK_LOSS_CE, .target = AT_TARGET_NONE,
        .restarts = 1, .random_start = true, .target_classes = 9, .momentum = 0.75f, .rho = 0.75f,
        .p_init = 0.8f, .square_rescale = true, .seed = 0, .batch = 1000,
    };
    const at_attack_method *m = method_of(kind);
    if (m) m->defaults(&c);
    return c;
}

void at_attack_names(char *buf, size_t cap) {
    size_t used = 0;
    buf[0] = '\0';
    for (int k = 0; k < AT_ATTACK_KIND_COUNT; k++)
        for (int i = 0; i < ATK_MAX_PRESETS && methods[k]->presets[i].name && used < cap; i++) {
            int w = snprintf(buf + used, cap - used, "%s%s", used ? ", " : "", methods[k]->presets[i].name);
            if (w > 0) used += (size_t)w;
        }
}

at_status at_attack_from_name(const char *name, at_attack_config *cfg) {
    for (int k = 0; k < AT_ATTACK_KIND_COUNT && name; k++)
        for (int i = 0; i < ATK_MAX_PRESETS && methods[k]->presets[i].name; i++) {
            const atk_preset *p = &methods[k]->presets[i];
            if (strcmp(name, p->name) != 0) continue;
            *cfg = at_attack_defaults((at_attack_kind)k);
            cfg->norm = p->norm;
            cfg->loss = p->loss;
            cfg->target = p->target;
            return AT_OK;
        }
    char list[512];
    at_attack_names(list, sizeof list);
    return at_fail(AT_ERR_ARG, "unknown attack '%s' (known: %s)", name ? name : "(null)", list);
}

const char *at_attack_name(const at_attack_config *cfg) {
    const at_attack_method *m = method_of(cfg->kind);
    if (!m) return "attack";
    for (int i = 0; i < ATK_MAX_PRESETS && m->presets[i].name; i++) {
        const atk_preset *p = &m->presets[i];
        if (p->norm == cfg->norm && (!m->names || m->names(p, cfg))) return p->name;
    }
    return m->unnamed ? m->unnamed : "attack";
}

/* The fields every kind shares: defaults of the unset (zero) ones, ranges of the rest. */
static at_status resolve_shared(at_attack_config *c, int K) {
    if (c->norm != AT_NORM_LINF && c->norm != AT_NORM_L2)
        return at_fail(AT_ERR_ARG, "unknown attack norm %d", (int)c->norm);
    if ((unsigned)c->loss > AT_ATTACK_LOSS_DLR) return at_fail(AT_ERR_ARG, "unknown attack loss %d", (int)c->loss);
    if ((unsigned)c->target > AT_TARGET_TOP) return at_fail(AT_ERR_ARG, "unknown target mode %d", (int)c->target);
    if (!(c->eps >= 0.0f) || !isfinite(c->eps))
        return at_fail(AT_ERR_ARG, "attack eps must be a finite number >= 0 (0-1 pixel scale), got %g",
                       (double)c->eps);
    if (!(c->alpha >= 0.0f) || !isfinite(c->alpha))
        return at_fail(AT_ERR_ARG, "attack step size alpha must be >= 0, got %g", (double)c->alpha);
    if (!(c->momentum >= 0.0f && c->momentum <= 1.0f))
        return at_fail(AT_ERR_ARG, "APGD momentum must be in [0, 1], got %g", (double)c->momentum);
    if (c->index_base < 0)
        return at_fail(AT_ERR_ARG, "attack index_base must be >= 0, got %lld", (long long)c->index_base);
    if (c->comm && (c->comm->size < 1 || c->comm->rank < 0 || c->comm->rank >= c->comm->size ||
                    (c->comm->size > 1 && !c->comm->allreduce_sum)))
        return at_fail(AT_ERR_ARG, "attack communicator: rank %d of %d, or no allreduce", c->comm->rank, c->comm->size);
    const at_attack_config d = at_attack_defaults(c->kind);
    if (c->steps <= 0) c->steps = d.steps;
    if (c->restarts <= 0) c->restarts = d.restarts;
    if (c->batch <= 0) c->batch = d.batch;
    if (c->rho <= 0.0f) c->rho = d.rho;
    if (c->p_init <= 0.0f) c->p_init = d.p_init;
    if (c->p_init > 1.0f) return at_fail(AT_ERR_ARG, "Square p_init must be in (0, 1], got %g", (double)c->p_init);
    if (K < 2) return at_fail(AT_ERR_ARG, "attacks need a classifier with at least 2 outputs, got %d", K);
    if (c->target_classes <= 0) c->target_classes = d.target_classes;
    if (c->target_classes > K - 1) c->target_classes = K - 1;
    return AT_OK;
}

/* Fills in the defaults of unset (zero) fields and checks the rest: the shared fields, the kind's
 * own (its check), then what the loss needs. */
static at_status resolve_config(const at_attack_config *in, at_attack_config *c, int K) {
    *c = *in;
    const at_attack_method *m = method_of(c->kind);
    if (!m) return at_fail(AT_ERR_ARG, "unknown attack kind %d", (int)c->kind);
    at_status s = resolve_shared(c, K);
    if (s == AT_OK && m->check) s = m->check(c, K);
    if (s != AT_OK) return s;
    if (c->loss == AT_ATTACK_LOSS_DLR && K < 3)
        return at_fail(AT_ERR_ARG, "the DLR loss needs at least 3 classes, the model has %d", K);
    if (c->loss == AT_ATTACK_LOSS_DLR && c->target != AT_TARGET_NONE && K < 4)
        return at_fail(AT_ERR_ARG, "the targeted DLR loss needs at least 4 classes, the model has %d", K);
    return AT_OK;
}

at_status at_attack_check(const at_attack_config *cfg, int num_classes, at_attack_config *resolved) {
    if (!cfg) return at_fail(AT_ERR_ARG, "at_attack_check needs a configuration");
    at_attack_config c;
    at_status s = resolve_config(cfg, &c, num_classes);
    if (s == AT_OK && resolved) *resolved = c;
    return s;
}

void at_attack_set_budget(at_attack_config *cfg, int iterations, int queries) {
    const at_attack_method *m = method_of(cfg->kind);
    if (m && m->set_budget)
        m->set_budget(cfg, iterations, queries);
    else if (m && iterations > 0)
        cfg->steps = iterations;
}

void at_attack_budget_text(const at_attack_config *cfg, char *buf, size_t cap) {
    const at_attack_method *m = method_of(cfg->kind);
    if (m && m->budget_text)
        m->budget_text(cfg, buf, cap);
    else if (cfg->target == AT_TARGET_TOP)
        snprintf(buf, cap, "%dx%d", cfg->target_classes, cfg->steps);
    else
        snprintf(buf, cap, "%d", cfg->steps);
}

bool at_attack_uses_gradients(at_attack_kind kind) {
    const at_attack_method *m = method_of(kind);
    return m && m->gradients;
}

/* ------------------------------------------------------------ workspaces */

/* What a call holds beside the batch's rows: the dataset's samples of the batch (x, y), the
 * examples when the caller keeps none, and the attack's own workspace. */
typedef struct call_buffers {
    float *x, *adv;
    int32_t *y;
    void *ws;
} call_buffers;

/* Lays out (base == NULL: only measures) every buffer for batches of b->cap: the batch's rows
 * straight into b. */
static void layout(atk_arena *a, atk_batch *b, call_buffers *cb, size_t ws_bytes, bool own_x, bool own_adv) {
    const int cap = b->cap;
    const size_t images = (size_t)cap * b->D, logits = (size_t)cap * b->K;
    memset(cb, 0, sizeof *cb);
    float **image_rows[] = {own_x ? &cb->x : NULL, own_adv ? &cb->adv : NULL, &b->xs, &b->xa, &b->grad};
    int32_t **int_rows[] = {own_x ? &cb->y : NULL, &b->ids, &b->row_target, &b->pred, &b->target};
    uint8_t **byte_rows[] = {&b->todo, &b->bad, &b->keep};
    for (size_t k = 0; k < sizeof image_rows / sizeof *image_rows; k++)
        if (image_rows[k]) *image_rows[k] = atk_carve(a, sizeof(float) * images);
    for (size_t k = 0; k < sizeof int_rows / sizeof *int_rows; k++)
        if (int_rows[k]) *int_rows[k] = atk_carve(a, sizeof(int32_t) * cap);
    for (size_t k = 0; k < sizeof byte_rows / sizeof *byte_rows; k++) *byte_rows[k] = atk_carve(a, cap);
    b->clean_logits = atk_carve(a, sizeof(float) * logits);
    b->dlogits = atk_carve(a, sizeof(float) * logits);
    b->loss = atk_carve(a, sizeof(float) * cap);
    b->rng = atk_carve(a, sizeof(at_rng) * cap);
    cb->ws = ws_bytes ? atk_carve(a, ws_bytes) : NULL;
}

/* One allocation for every buffer of a call (*mem, for free()). */
static at_status allocate(atk_batch *b, call_buffers *cb, char **mem, bool own_x, bool own_adv) {
    const at_attack_method *m = method_of(b->cfg->kind);
    const size_t ws_bytes = m->workspace ? m->workspace(b->cfg, b->cap, b->D) : 0;
    atk_arena a = {NULL, 0};
    layout(&a, b, cb, ws_bytes, own_x, own_adv);
    *mem = at_alloc(a.used + 64, "attack workspaces");
    if (!*mem) return AT_ERR_NOMEM;
    a = (atk_arena){*mem, 0};
    layout(&a, b, cb, ws_bytes, own_x, own_adv);
    return AT_OK;
}

/* ------------------------------------------------------------ one batch */

/* The target class of batch sample i (-1: untargeted), its generator seeded; zi its clean logits. */
static int32_t sample_target(const atk_batch *b, const at_attack_config *cfg, int i, const float *zi) {
    const int K = b->K;
    switch (cfg->target) {
    case AT_TARGET_GIVEN: return cfg->targets[b->base + i];
    case AT_TARGET_RANDOM: {
        int32_t t = (int32_t)at_rng_below(&b->rng[i], (uint32_t)(K - 1));
        return t >= b->y[i] ? t + 1 : t;
    }
    case AT_TARGET_LEAST_LIKELY: {
        int32_t t = 0;
        for (int j = 1; j < K; j++)
            if (zi[j] < zi[t]) t = j;
        return t;
    }
    default: return -1;
    }
}

/* The clean logits, which samples to attack, their generators and targets. */
static at_status clean_pass(atk_batch *b, const at_attack_config *cfg) {
    const int K = b->K, n = b->n;
    memcpy(b->adv, b->x, sizeof(float) * (size_t)n * b->D);
    const float *z;
    at_status s = atk_forward(b, b->x, n, &z);
    if (s != AT_OK) return s;
    memcpy(b->clean_logits, z, sizeof(float) * (size_t)n * K);
    atk_reseed(b);
    for (int i = 0; i < n; i++) {
        const float *zi = b->clean_logits + (size_t)i * K;
        bool correct = at_argmax(zi, K) == b->y[i];
        b->res->clean_correct += correct;
        b->todo[i] = correct || cfg->attack_all;
        b->bad[i] = 0;
        int32_t t = sample_target(b, cfg, i, zi);
        if (t >= K) return at_fail(AT_ERR_ARG, "target class %d of sample %lld is outside [0, %d)", t,
                                   (long long)(b->base + i), K);
        b->target[i] = t;
    }
    b->counted_grad = false;
    return AT_OK;
}

/* ||a - x|| in the norm, counting the pixels of a outside [0,1] into *outside_box. */
static double perturbation(at_attack_norm norm, const float *x, const float *a, int D, int64_t *outside_box) {
    double pert = 0.0;
    for (int k = 0; k < D; k++) {
        double d = fabs((double)a[k] - x[k]);
        if (norm == AT_NORM_LINF)
            pert = d > pert ? d : pert;
        else
            pert += d * d;
        *outside_box += !(a[k] >= 0.0f && a[k] <= 1.0f);
    }
    return norm == AT_NORM_L2 ? sqrt(pert) : pert;
}

/* Judges the returned examples and takes the sanity measurements. */
static at_status final_pass(atk_batch *b, const at_attack_config *cfg, int32_t *adv_pred) {
    const int D = b->D, K = b->K;
    at_attack_result *res = b->res;
    const float *z;
    at_status s = atk_forward(b, b->adv, b->n, &z);
    if (s != AT_OK) return s;
    const float tol_abs = 1e-6f;
    const double limit = cfg->norm == AT_NORM_LINF ? cfg->eps + tol_abs : cfg->eps * (1.0 + 1e-5) + tol_abs;
    for (int i = 0; i < b->n; i++) {
        int p = at_argmax(z + (size_t)i * K, K);
        bool clean_ok = at_argmax(b->clean_logits + (size_t)i * K, K) == b->y[i];
        if (adv_pred) adv_pred[i] = p;
        res->robust += clean_ok && p == b->y[i];
        if (b->target[i] >= 0 && (clean_ok || cfg->attack_all)) {
            res->targeted++;
            res->target_hits += p == b->target[i];
        }
        res->nonfinite += b->bad[i];
        double pert = perturbation(cfg->norm, b->x + (size_t)i * D, b->adv + (size_t)i * D, D, &res->outside_box);
        if ((float)pert > res->max_perturbation) res->max_perturbation = (float)pert;
        res->outside_ball += !(pert <= limit);
    }
    return AT_OK;
}

static at_status run_batch(atk_batch *b, const at_attack_config *cfg, void *ws, int32_t *adv_pred) {
    at_status s = clean_pass(b, cfg);
    if (s == AT_OK) s = method_of(cfg->kind)->run(b, cfg, ws);
    if (s == AT_OK) s = final_pass(b, cfg, adv_pred);
    return s;
}

/* ------------------------------------------------------------ a call */

/* Where a call's samples come from: arrays (x, y) or a dataset. */
typedef struct call_source {
    const float *x;
    const int32_t *y;
    const at_dataset *ds;
} call_source;

static at_status check_call(const at_attack_config *cfg, const call_source *src, int n, int K) {
    if (src->y) {
        at_status s = at_check_labels(src->y, n, K);
        if (s != AT_OK) return s;
    }
    if (cfg->target != AT_TARGET_GIVEN) return AT_OK;
    if (!cfg->targets) return at_fail(AT_ERR_ARG, "AT_TARGET_GIVEN needs a targets array");
    for (int i = 0; i < n; i++)
        if (cfg->targets[i] < 0 || cfg->targets[i] >= K)
            return at_fail(AT_ERR_ARG, "target %d of sample %d is outside [0, %d)", cfg->targets[i], i, K);
    return AT_OK;
}

/* The batches of a call, one after the other. */
static at_status run_batches(atk_batch *b, const call_buffers *cb, const call_source *src, int lo, int hi,
                             float *x_adv, int32_t *adv_pred) {
    const at_attack_config *cfg = b->cfg;
    const int D = b->D, cap = b->cap;
    at_status s = AT_OK;
    for (int first = lo; first < hi && s == AT_OK; first += cap) {
        b->n = hi - first < cap ? hi - first : cap;
        b->base = first;
        if (src->ds) {
            at_dataset_range(src->ds, first, b->n, cb->x, cb->y, NULL);
            b->x = cb->x;
            b->y = cb->y;
        } else {
            b->x = src->x + (size_t)first * D;
            b->y = src->y + first;
        }
        b->adv = x_adv ? x_adv + (size_t)first * D : cb->adv;
        s = run_batch(b, cfg, cb->ws, adv_pred ? adv_pred + first : NULL);
        if (s == AT_OK && cfg->progress) cfg->progress(cfg->user, first + b->n - lo, hi - lo);
    }
    return s;
}

/* Shared by at_attack_run (x, y given) and at_attack_dataset (ds given). */
static at_status attack_call(at_net *net, const at_attack_config *user_cfg, const call_source *src, int n,
                             float *x_adv, int32_t *adv_pred, at_attack_result *res) {
    const int D = at_net_in_size(net), K = at_net_out_size(net);
    at_attack_config cfg;
    memset(res, 0, sizeof *res);
    at_status s = resolve_config(user_cfg, &cfg, K);
    if (s == AT_OK) s = check_call(&cfg, src, n, K);
    if (s != AT_OK) return s;
    res->samples = n;
    res->steps = cfg.steps;
    res->restarts = cfg.restarts;
    res->alpha = cfg.alpha; /* 0 where the kind takes no step size */

    int lo, hi; /* this rank's samples */
    at_comm_share(cfg.comm, n, &lo, &hi);
    if (hi - lo < 1) return at_fail(AT_ERR_ARG, "attack: %d samples for %d ranks", n, cfg.comm->size);
    const int cap = hi - lo < cfg.batch ? hi - lo : cfg.batch;
    atk_batch b = {.net = net, .cfg = &cfg, .D = D, .K = K, .cap = cap, .res = res};
    call_buffers cb;
    char *mem;
    if ((s = allocate(&b, &cb, &mem, src->ds != NULL, x_adv == NULL)) != AT_OK) return s;
    if ((s = at_net_reserve(net, cap)) != AT_OK) {
        free(mem);
        return s;
    }
    bool was_training = at_net_is_training(net);
    at_net_set_training(net, false);
    double start = atk_now();
    s = run_batches(&b, &cb, src, lo, hi, x_adv, adv_pred);
    res->seconds = atk_now() - start;
    if (s == AT_OK && atk_shared(&cfg)) s = atk_merge(&cfg, n, lo, hi, D, x_adv, adv_pred, res);
    at_net_set_training(net, was_training);
    free(mem);
    return s;
}

static at_status check_inputs(at_net *net, int n, const char *what) {
    if (!net) return at_fail(AT_ERR_ARG, "attack without a network");
    if (n <= 0) return at_fail(AT_ERR_ARG, "%s: nothing to attack (%d samples)", what, n);
    return AT_OK;
}

at_status at_attack_run(at_net *net, const at_attack_config *cfg, const float *x, const int32_t *y,
                        int n, float *x_adv, int32_t *adv_pred, at_attack_result *res) {
    at_status s = check_inputs(net, n, "at_attack_run");
    if (s != AT_OK) return s;
    if (!x || !y || !cfg || !res) return at_fail(AT_ERR_ARG, "at_attack_run needs x, y, a config and a result");
    const call_source src = {x, y, NULL};
    return attack_call(net, cfg, &src, n, x_adv, adv_pred, res);
}

at_status at_attack_dataset(at_net *net, const at_attack_config *cfg, const at_dataset *ds, int n,
                            float *x_adv, int32_t *adv_pred, at_attack_result *res) {
    if (!ds || !cfg || !res) return at_fail(AT_ERR_ARG, "at_attack_dataset needs a dataset, a config and a result");
    if (n <= 0 || n > ds->n) n = ds->n;
    at_status s = check_inputs(net, n, "at_attack_dataset");
    if (s != AT_OK) return s;
    if (!ds->labels || ds->targets)
        return at_fail(AT_ERR_ARG, "attacks need a classification dataset (labels), not a regression one");
    if (at_dataset_sample_size(ds) != at_net_in_size(net))
        return at_fail(AT_ERR_SHAPE, "the data has samples of %dx%dx%d, the model takes %d values", ds->c,
                       ds->h, ds->w, at_net_in_size(net));
    if (ds->num_classes > at_net_out_size(net))
        return at_fail(AT_ERR_SHAPE, "the data has %d classes, the model only %d outputs", ds->num_classes,
                       at_net_out_size(net));
    const call_source src = {NULL, NULL, ds};
    return attack_call(net, cfg, &src, n, x_adv, adv_pred, res);
}
