/* What every attack shares: configuration defaults and names, the losses and their logit
 * gradients, projections, row compaction, and the batch driver behind at_attack_run and
 * at_attack_dataset (clean pass, per-sample generators and targets, the attack, the final pass
 * and the sanity measurements). */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include "attack.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

double atk_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ------------------------------------------------------------ configuration */

enum { DEFAULT_BATCH = 1000 };

at_attack_config at_attack_defaults(at_attack_kind kind) {
    at_attack_config c;
    memset(&c, 0, sizeof c);
    c.kind = kind;
    c.norm = AT_NORM_LINF;
    c.loss = AT_ATTACK_LOSS_CE;
    c.target = AT_TARGET_NONE;
    c.restarts = 1;
    c.random_start = true;
    c.target_classes = 9;
    c.momentum = 0.75f;
    c.rho = 0.75f;
    c.p_init = 0.8f;
    c.square_rescale = true;
    c.seed = 0;
    c.batch = DEFAULT_BATCH;
    switch (kind) {
    case AT_ATTACK_FGSM: c.steps = 1; break;
    case AT_ATTACK_PGD: c.steps = 20; break;
    case AT_ATTACK_APGD: c.steps = 100; break;
    case AT_ATTACK_SQUARE: c.steps = 5000; break;
    case AT_ATTACK_AUTO:
        c.steps = 100; /* APGD iterations; Square keeps its 5000 queries */
        c.square_rescale = false; /* AutoAttack "standard" runs Square with the fixed schedule */
        break;
    }
    return c;
}

typedef struct named_attack {
    const char *name;
    at_attack_kind kind;
    at_attack_norm norm;
    at_attack_loss loss;
    at_attack_target target;
} named_attack;

static const named_attack NAMED[] = {
    {"fgsm", AT_ATTACK_FGSM, AT_NORM_LINF, AT_ATTACK_LOSS_CE, AT_TARGET_NONE},
    {"fgsm-l2", AT_ATTACK_FGSM, AT_NORM_L2, AT_ATTACK_LOSS_CE, AT_TARGET_NONE},
    {"pgd", AT_ATTACK_PGD, AT_NORM_LINF, AT_ATTACK_LOSS_CE, AT_TARGET_NONE},
    {"pgd-l2", AT_ATTACK_PGD, AT_NORM_L2, AT_ATTACK_LOSS_CE, AT_TARGET_NONE},
    {"cw", AT_ATTACK_PGD, AT_NORM_LINF, AT_ATTACK_LOSS_CW, AT_TARGET_NONE},
    {"cw-l2", AT_ATTACK_PGD, AT_NORM_L2, AT_ATTACK_LOSS_CW, AT_TARGET_NONE},
    {"apgd-ce", AT_ATTACK_APGD, AT_NORM_LINF, AT_ATTACK_LOSS_CE, AT_TARGET_NONE},
    {"apgd-ce-l2", AT_ATTACK_APGD, AT_NORM_L2, AT_ATTACK_LOSS_CE, AT_TARGET_NONE},
    {"apgd-dlr", AT_ATTACK_APGD, AT_NORM_LINF, AT_ATTACK_LOSS_DLR, AT_TARGET_NONE},
    {"apgd-dlr-l2", AT_ATTACK_APGD, AT_NORM_L2, AT_ATTACK_LOSS_DLR, AT_TARGET_NONE},
    {"apgd-t", AT_ATTACK_APGD, AT_NORM_LINF, AT_ATTACK_LOSS_DLR, AT_TARGET_TOP},
    {"apgd-t-l2", AT_ATTACK_APGD, AT_NORM_L2, AT_ATTACK_LOSS_DLR, AT_TARGET_TOP},
    {"square", AT_ATTACK_SQUARE, AT_NORM_LINF, AT_ATTACK_LOSS_CW, AT_TARGET_NONE},
    {"auto", AT_ATTACK_AUTO, AT_NORM_LINF, AT_ATTACK_LOSS_CE, AT_TARGET_NONE},
    {"auto-l2", AT_ATTACK_AUTO, AT_NORM_L2, AT_ATTACK_LOSS_CE, AT_TARGET_NONE},
};
#define NNAMED ((int)(sizeof NAMED / sizeof *NAMED))

at_status at_attack_from_name(const char *name, at_attack_config *cfg) {
    for (int i = 0; i < NNAMED; i++)
        if (name && strcmp(name, NAMED[i].name) == 0) {
            *cfg = at_attack_defaults(NAMED[i].kind);
            cfg->norm = NAMED[i].norm;
            cfg->loss = NAMED[i].loss;
            cfg->target = NAMED[i].target;
            return AT_OK;
        }
    char list[512] = "";
    for (int i = 0; i < NNAMED; i++) {
        strncat(list, NAMED[i].name, sizeof list - strlen(list) - 1);
        if (i + 1 < NNAMED) strncat(list, ", ", sizeof list - strlen(list) - 1);
    }
    return at_fail(AT_ERR_ARG, "unknown attack '%s' (known: %s)", name ? name : "(null)", list);
}

const char *at_attack_name(const at_attack_config *cfg) {
    /* The first table entry that matches kind, norm and (where it matters) loss and targeting. */
    bool top = cfg->target == AT_TARGET_TOP;
    for (int i = 0; i < NNAMED; i++) {
        const named_attack *a = &NAMED[i];
        if (a->kind != cfg->kind || a->norm != cfg->norm) continue;
        if (a->kind == AT_ATTACK_PGD && a->loss != (cfg->loss == AT_ATTACK_LOSS_CW ? AT_ATTACK_LOSS_CW : AT_ATTACK_LOSS_CE))
            continue;
        if (a->kind == AT_ATTACK_APGD) {
            if (top != (a->target == AT_TARGET_TOP)) continue;
            if (!top && a->loss != (cfg->loss == AT_ATTACK_LOSS_DLR ? AT_ATTACK_LOSS_DLR : AT_ATTACK_LOSS_CE))
                continue;
        }
        return a->name;
    }
    return cfg->kind == AT_ATTACK_SQUARE ? "square-l2" : "attack";
}

/* Fills in the defaults of unset (zero) fields and checks the rest. */
static at_status resolve_config(const at_attack_config *in, at_attack_config *c, int K) {
    *c = *in;
    const at_attack_config d = at_attack_defaults(in->kind);
    if ((unsigned)c->kind > AT_ATTACK_AUTO) return at_fail(AT_ERR_ARG, "unknown attack kind %d", (int)c->kind);
    if (c->norm != AT_NORM_LINF && c->norm != AT_NORM_L2)
        return at_fail(AT_ERR_ARG, "unknown attack norm %d", (int)c->norm);
    if ((unsigned)c->loss > AT_ATTACK_LOSS_DLR) return at_fail(AT_ERR_ARG, "unknown attack loss %d", (int)c->loss);
    if ((unsigned)c->target > AT_TARGET_TOP) return at_fail(AT_ERR_ARG, "unknown target mode %d", (int)c->target);
    if (!(c->eps >= 0.0f) || !isfinite(c->eps))
        return at_fail(AT_ERR_ARG, "attack eps must be a finite number >= 0 (0-1 pixel scale), got %g",
                       (double)c->eps);
    if (c->steps <= 0) c->steps = d.steps;
    if (c->kind == AT_ATTACK_FGSM) c->steps = 1;
    if (c->restarts <= 0) c->restarts = 1;
    if (c->batch <= 0) c->batch = DEFAULT_BATCH;
    if (c->rho <= 0.0f) c->rho = d.rho;
    if (c->p_init <= 0.0f) c->p_init = d.p_init;
    if (!(c->alpha >= 0.0f) || !isfinite(c->alpha))
        return at_fail(AT_ERR_ARG, "attack step size alpha must be >= 0, got %g", (double)c->alpha);
    if (c->alpha == 0.0f) c->alpha = c->kind == AT_ATTACK_FGSM ? c->eps : 2.5f * c->eps / (float)c->steps;
    if (!(c->momentum >= 0.0f && c->momentum <= 1.0f))
        return at_fail(AT_ERR_ARG, "APGD momentum must be in [0, 1], got %g", (double)c->momentum);
    if (c->p_init > 1.0f) return at_fail(AT_ERR_ARG, "Square p_init must be in (0, 1], got %g", (double)c->p_init);
    if (K < 2) return at_fail(AT_ERR_ARG, "attacks need a classifier with at least 2 outputs, got %d", K);
    if (c->kind == AT_ATTACK_SQUARE && c->norm != AT_NORM_LINF)
        return at_fail(AT_ERR_UNSUPPORTED, "the Square attack is implemented for the L-inf norm only");
    if (c->kind == AT_ATTACK_SQUARE && c->target != AT_TARGET_NONE)
        return at_fail(AT_ERR_UNSUPPORTED, "the Square attack is untargeted only");
    if (c->kind == AT_ATTACK_AUTO) {
        c->target = AT_TARGET_NONE;
        c->loss = AT_ATTACK_LOSS_CE;
    }
    if (c->kind == AT_ATTACK_FGSM && c->target == AT_TARGET_TOP)
        return at_fail(AT_ERR_ARG, "FGSM takes one target per sample (given, random or least-likely), not the top classes");
    if (c->target == AT_TARGET_GIVEN && !c->targets)
        return at_fail(AT_ERR_ARG, "AT_TARGET_GIVEN needs a targets array");
    bool dlr = c->loss == AT_ATTACK_LOSS_DLR || c->kind == AT_ATTACK_AUTO;
    bool targeted_dlr = (c->loss == AT_ATTACK_LOSS_DLR && c->target != AT_TARGET_NONE) || c->kind == AT_ATTACK_AUTO;
    if (dlr && K < 3) return at_fail(AT_ERR_ARG, "the DLR loss needs at least 3 classes, the model has %d", K);
    if (targeted_dlr && K < 4)
        return at_fail(AT_ERR_ARG, "the targeted DLR loss needs at least 4 classes, the model has %d", K);
    if (c->target == AT_TARGET_TOP || c->kind == AT_ATTACK_AUTO) {
        if (c->target_classes <= 0) c->target_classes = d.target_classes;
        if (c->target_classes > K - 1) c->target_classes = K - 1;
    }
    return AT_OK;
}

/* ------------------------------------------------------------ losses */

float atk_margin(const float *z, int K, int y) {
    float other = -INFINITY;
    for (int j = 0; j < K; j++)
        if (j != y && z[j] > other) other = z[j];
    return z[y] - other;
}

static int argmax_except(const float *z, int K, int skip) {
    int best = -1;
    for (int j = 0; j < K; j++)
        if (j != skip && (best < 0 || z[j] > z[best])) best = j;
    return best;
}

/* Indices of the 4 largest logits, largest first (K >= 4; for K = 3 the fourth is unused). */
static void top4(const float *z, int K, int *top) {
    int n = K < 4 ? K : 4;
    for (int r = 0; r < n; r++) {
        int best = -1;
        for (int j = 0; j < K; j++) {
            bool used = false;
            for (int q = 0; q < r; q++) used = used || top[q] == j;
            if (!used && (best < 0 || z[j] > z[best])) best = j;
        }
        top[r] = best;
    }
    for (int r = n; r < 4; r++) top[r] = top[n - 1];
}

float atk_sample_loss(at_attack_loss loss, bool targeted, const float *z, int K, int y, int t,
                      float *dz) {
    for (int j = 0; j < K; j++) dz[j] = 0.0f;
    switch (loss) {
    case AT_ATTACK_LOSS_CE: {
        int c = targeted ? t : y;
        double zmax = z[0];
        for (int j = 1; j < K; j++) zmax = z[j] > zmax ? z[j] : zmax;
        double sum = 0.0;
        for (int j = 0; j < K; j++) sum += exp((double)z[j] - zmax);
        double lse = zmax + log(sum), rest = 0.0;
        /* d CE / dz_j = p_j - [j == c]; p_c - 1 is computed as -sum of the other p_j so that it
         * does not round to 0 before the others do. */
        for (int j = 0; j < K; j++) {
            if (j == c) continue;
            double p = exp((double)z[j] - lse);
            dz[j] = (float)(targeted ? -p : p);
            rest += p;
        }
        dz[c] = (float)(targeted ? rest : -rest);
        double ce = lse - z[c];
        return (float)(targeted ? -ce : ce);
    }
    case AT_ATTACK_LOSS_CW: {
        int c = targeted ? t : y, o = argmax_except(z, K, c);
        double sign = targeted ? 1.0 : -1.0; /* untargeted: z_o - z_y; targeted: z_t - z_o */
        dz[c] = (float)sign;
        dz[o] = (float)-sign;
        return (float)(sign * ((double)z[c] - z[o]));
    }
    case AT_ATTACK_LOSS_DLR:
    default: {
        int top[4];
        top4(z, K, top);
        double num, den;
        if (!targeted) {
            int o = top[0] == y ? top[1] : top[0];
            num = (double)z[y] - z[o];
            den = (double)z[top[0]] - z[top[2]] + 1e-12;
            dz[y] += (float)(-1.0 / den);
            dz[o] += (float)(1.0 / den);
            dz[top[0]] += (float)(num / (den * den));
            dz[top[2]] -= (float)(num / (den * den));
        } else {
            num = (double)z[y] - z[t];
            den = (double)z[top[0]] - 0.5 * ((double)z[top[2]] + z[top[3]]) + 1e-12;
            dz[y] += (float)(-1.0 / den);
            dz[t] += (float)(1.0 / den);
            dz[top[0]] += (float)(num / (den * den));
            dz[top[2]] -= (float)(0.5 * num / (den * den));
            dz[top[3]] -= (float)(0.5 * num / (den * den));
        }
        return (float)(-num / den);
    }
    }
}

/* ------------------------------------------------------------ passes */

at_status atk_forward(atk_batch *b, const float *x, int m, const float **logits) {
    b->res->forwards += m;
    return at_net_forward(b->net, x, m, logits);
}

/* Without an early exit, so that it vectorizes: rows are almost always finite. */
static bool row_finite(const float *v, int n) {
    int bad = 0;
    for (int i = 0; i < n; i++) bad |= !isfinite(v[i]);
    return !bad;
}

static bool row_zero(const float *v, int n) {
    for (int i = 0; i < n; i++)
        if (v[i] != 0.0f) return false;
    return true;
}

/* The attack loss of rows [begin, end), called by at_net_input_gradient between each chunk's
 * forward and backward (on the library's threads: rows only). */
typedef struct {
    atk_batch *b;
    at_attack_loss loss;
    bool targeted;
    const int32_t *targets;
    int32_t *pred;
} loss_rows;

static void rows_loss(void *user, const float *z, int begin, int end, float *dlogits) {
    const loss_rows *r = user;
    atk_batch *b = r->b;
    const int K = b->K;
    for (int j = begin; j < end; j++) {
        const float *zj = z + (size_t)j * K;
        const int i = b->ids[j];
        b->loss[j] = atk_sample_loss(r->loss, r->targeted, zj, K, b->y[i], r->targets ? r->targets[j] : -1,
                                     dlogits + (size_t)j * K);
        if (r->pred) r->pred[j] = at_argmax(zj, K);
    }
}

at_status atk_loss_grad(atk_batch *b, at_attack_loss loss, bool targeted, const int32_t *targets,
                        int m, int32_t *pred) {
    const int D = b->D;
    loss_rows r = {b, loss, targeted, targets, pred};
    at_status s = at_net_input_gradient(b->net, b->xa, m, rows_loss, &r, b->dlogits, b->grad, NULL);
    if (s != AT_OK) return s;
    b->res->forwards += m;
    b->res->backwards += m;
    /* A NaN or infinite gradient must not poison the iterate: such rows take no step. */
    const bool count_zero = !b->counted_grad;
    long zero_rows = 0;
#pragma omp parallel for num_threads(at_rows_threads(m, (size_t)m * D)) schedule(static) reduction(+ : zero_rows)
    for (int j = 0; j < m; j++) {
        float *g = b->grad + (size_t)j * D;
        const bool finite = row_finite(g, D);
        if (!isfinite(b->loss[j]) || !finite) {
            b->bad[b->ids[j]] = 1;
            if (!isfinite(b->loss[j])) b->loss[j] = -INFINITY;
            if (!finite) memset(g, 0, sizeof(float) * (size_t)D);
        } else if (count_zero && row_zero(g, D)) {
            zero_rows++;
        }
    }
    b->res->zero_grad += zero_rows;
    b->counted_grad = true;
    return AT_OK;
}

/* ------------------------------------------------------------ projections and rows */

double atk_l2(const float *v, int D) {
    double s = 0.0;
    for (int i = 0; i < D; i++) s += (double)v[i] * v[i];
    return sqrt(s);
}

static float clamp01(float v) { return v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v); }

void atk_project(at_attack_norm norm, float eps, const float *x, float *v, int D) {
    if (norm == AT_NORM_LINF) {
        for (int i = 0; i < D; i++) {
            float lo = x[i] - eps, hi = x[i] + eps, t = v[i];
            t = t < lo ? lo : t;
            t = t > hi ? hi : t;
            v[i] = clamp01(t);
        }
        return;
    }
    double nrm = 0.0;
    for (int i = 0; i < D; i++) {
        double d = (double)v[i] - x[i];
        nrm += d * d;
    }
    nrm = sqrt(nrm);
    if (nrm > eps) {
        double scale = eps / nrm;
        for (int i = 0; i < D; i++) v[i] = (float)(x[i] + ((double)v[i] - x[i]) * scale);
    }
    /* Clipping to [0,1] moves each coordinate towards x (x is in [0,1]): the ball still holds. */
    for (int i = 0; i < D; i++) v[i] = clamp01(v[i]);
}

void atk_linf_start(float eps, const float *x, float *v, int D) {
    for (int i = 0; i < D; i++) v[i] = x[i] + eps * (2.0f * v[i] - 1.0f);
    atk_project(AT_NORM_LINF, eps, x, v, D);
}

int atk_compact(int m, const uint8_t *keep, const atk_rows *rows, int nrows) {
    /* Each dropped row takes the last kept row's place: the moves are one row per sample that
     * left, not every row after it. No row's result depends on its place (each sample has its
     * own generator, and network passes give every row the same bits wherever it sits). */
    int lo = 0, hi = m - 1;
    for (;;) {
        while (lo <= hi && keep[lo]) lo++;
        while (hi > lo && !keep[hi]) hi--;
        if (lo >= hi) break;
        for (int k = 0; k < nrows; k++) {
            char *p = rows[k].p;
            memcpy(p + (size_t)lo * rows[k].row_bytes, p + (size_t)hi * rows[k].row_bytes, rows[k].row_bytes);
        }
        lo++;
        hi--;
    }
    return lo;
}

int atk_gather_active(atk_batch *b) {
    int m = 0;
    for (int i = 0; i < b->n; i++) {
        if (!b->todo[i]) continue;
        b->ids[m] = i;
        memcpy(b->xs + (size_t)m * b->D, b->x + (size_t)i * b->D, sizeof(float) * (size_t)b->D);
        m++;
    }
    return m;
}

/* ------------------------------------------------------------ workspaces */

void atk_workspace_needs(const at_attack_config *cfg, int *wrows, int *frows, int *hist_len) {
    *wrows = *frows = *hist_len = 0;
    switch (cfg->kind) {
    case AT_ATTACK_APGD:
    case AT_ATTACK_AUTO:
        *wrows = 3; /* previous iterate, best iterate, gradient at the best iterate */
        *frows = 3; /* step size, best loss, best loss at the last checkpoint */
        *hist_len = cfg->steps + 1;
        break;
    case AT_ATTACK_SQUARE: *frows = 1; break; /* smallest margin */
    default: break;
    }
}

/* One allocation for every buffer of a call; carve() hands out aligned pieces of it. */
typedef struct arena {
    char *base;
    size_t used, size;
} arena;

static void *carve(arena *a, size_t bytes) {
    size_t at = (a->used + 63) & ~(size_t)63;
    a->used = at + bytes;
    return a->base ? a->base + at : NULL;
}

typedef struct call_buffers {
    float *x, *adv, *clean_logits, *xs, *xa, *grad, *dlogits, *loss, *ws[4], *fs[4], *hist;
    int32_t *y, *ids, *row_target, *pred, *target, *idx;
    uint8_t *todo, *bad, *keep, *flags;
    at_rng *rng;
} call_buffers;

/* Lays out (base == NULL: only measures) every buffer for batches of `cap`. */
static void layout(arena *a, call_buffers *cb, int cap, int D, int K, int wrows, int frows, int hist,
                   bool own_x, bool own_adv) {
    size_t rows = (size_t)cap * D;
    memset(cb, 0, sizeof *cb);
    if (own_x) {
        cb->x = carve(a, sizeof(float) * rows);
        cb->y = carve(a, sizeof(int32_t) * cap);
        cb->idx = carve(a, sizeof(int32_t) * cap);
    }
    if (own_adv) cb->adv = carve(a, sizeof(float) * rows);
    cb->clean_logits = carve(a, sizeof(float) * (size_t)cap * K);
    cb->xs = carve(a, sizeof(float) * rows);
    cb->xa = carve(a, sizeof(float) * rows);
    cb->grad = carve(a, sizeof(float) * rows);
    cb->dlogits = carve(a, sizeof(float) * (size_t)cap * K);
    cb->loss = carve(a, sizeof(float) * cap);
    for (int k = 0; k < wrows; k++) cb->ws[k] = carve(a, sizeof(float) * rows);
    for (int k = 0; k < frows; k++) cb->fs[k] = carve(a, sizeof(float) * cap);
    if (hist) cb->hist = carve(a, sizeof(float) * (size_t)cap * hist);
    cb->ids = carve(a, sizeof(int32_t) * cap);
    cb->row_target = carve(a, sizeof(int32_t) * cap);
    cb->pred = carve(a, sizeof(int32_t) * cap);
    cb->target = carve(a, sizeof(int32_t) * cap);
    cb->todo = carve(a, cap);
    cb->bad = carve(a, cap);
    cb->keep = carve(a, cap);
    cb->flags = carve(a, cap);
    cb->rng = carve(a, sizeof(at_rng) * cap);
}

/* ------------------------------------------------------------ the driver */

static void seed_sample(at_rng *r, uint64_t seed, int64_t index) {
    uint64_t k = seed * 0x9E3779B97F4A7C15ull ^ ((uint64_t)index + 1) * 0xBF58476D1CE4E5B9ull;
    at_rng_seed(r, k);
}

void atk_reseed(atk_batch *b) {
    for (int i = 0; i < b->n; i++) seed_sample(&b->rng[i], b->cfg->seed, b->base + i);
}

static at_status dispatch(atk_batch *b, const at_attack_config *cfg) {
    switch (cfg->kind) {
    case AT_ATTACK_FGSM: return atk_fgsm(b, cfg);
    case AT_ATTACK_PGD: return atk_pgd(b, cfg);
    case AT_ATTACK_APGD: return atk_apgd(b, cfg);
    case AT_ATTACK_SQUARE: return atk_square(b, cfg);
    case AT_ATTACK_AUTO: return atk_auto(b, cfg);
    }
    return at_fail(AT_ERR_ARG, "unknown attack kind");
}

/* Clean pass, targets, attack, final pass and measurements for one batch. */
static at_status run_batch(atk_batch *b, const at_attack_config *cfg, int32_t *adv_pred) {
    const int D = b->D, K = b->K, n = b->n;
    at_attack_result *res = b->res;
    memcpy(b->adv, b->x, sizeof(float) * (size_t)n * D);
    const float *z;
    at_status s = atk_forward(b, b->x, n, &z);
    if (s != AT_OK) return s;
    memcpy(b->clean_logits, z, sizeof(float) * (size_t)n * K);
    for (int i = 0; i < n; i++) {
        const float *zi = b->clean_logits + (size_t)i * K;
        bool correct = at_argmax(zi, K) == b->y[i];
        res->clean_correct += correct;
        b->todo[i] = correct || cfg->attack_all;
        b->bad[i] = 0;
        seed_sample(&b->rng[i], cfg->seed, b->base + i);
        int32_t t = -1;
        switch (cfg->target) {
        case AT_TARGET_GIVEN: t = cfg->targets[b->base + i]; break;
        case AT_TARGET_RANDOM: {
            t = (int32_t)at_rng_below(&b->rng[i], (uint32_t)(K - 1));
            if (t >= b->y[i]) t++;
            break;
        }
        case AT_TARGET_LEAST_LIKELY: {
            t = 0;
            for (int j = 1; j < K; j++)
                if (zi[j] < zi[t]) t = j;
            break;
        }
        default: break;
        }
        if (t >= K) return at_fail(AT_ERR_ARG, "target class %d of sample %lld is outside [0, %d)", t,
                                   (long long)(b->base + i), K);
        b->target[i] = t;
    }
    b->counted_grad = false;
    if ((s = dispatch(b, cfg)) != AT_OK) return s;

    if ((s = atk_forward(b, b->adv, n, &z)) != AT_OK) return s;
    const float tol_abs = 1e-6f;
    for (int i = 0; i < n; i++) {
        int p = at_argmax(z + (size_t)i * K, K);
        bool clean_ok = at_argmax(b->clean_logits + (size_t)i * K, K) == b->y[i];
        if (adv_pred) adv_pred[i] = p;
        res->robust += clean_ok && p == b->y[i];
        bool attacked = clean_ok || cfg->attack_all;
        if (b->target[i] >= 0 && attacked) {
            res->targeted++;
            res->target_hits += p == b->target[i];
        }
        res->nonfinite += b->bad[i];
        const float *xi = b->x + (size_t)i * D, *ai = b->adv + (size_t)i * D;
        double pert = 0.0;
        for (int k = 0; k < D; k++) {
            double d = fabs((double)ai[k] - xi[k]);
            if (cfg->norm == AT_NORM_LINF)
                pert = d > pert ? d : pert;
            else
                pert += d * d;
            res->outside_box += !(ai[k] >= 0.0f && ai[k] <= 1.0f);
        }
        if (cfg->norm == AT_NORM_L2) pert = sqrt(pert);
        if ((float)pert > res->max_perturbation) res->max_perturbation = (float)pert;
        double limit = cfg->norm == AT_NORM_LINF ? cfg->eps + tol_abs : cfg->eps * (1.0 + 1e-5) + tol_abs;
        res->outside_ball += !(pert <= limit);
    }
    return AT_OK;
}

static at_status check_inputs(at_net *net, int n, const char *what) {
    if (!net) return at_fail(AT_ERR_ARG, "attack without a network");
    if (n <= 0) return at_fail(AT_ERR_ARG, "%s: nothing to attack (%d samples)", what, n);
    return AT_OK;
}

/* Shared by at_attack_run (x, y given) and at_attack_dataset (ds given). */
static at_status attack_call(at_net *net, const at_attack_config *user_cfg, const float *x_all,
                             const int32_t *y_all, const at_dataset *ds, int n, float *x_adv,
                             int32_t *adv_pred, at_attack_result *res) {
    const int D = at_net_in_size(net), K = at_net_out_size(net);
    at_attack_config cfg;
    memset(res, 0, sizeof *res);
    at_status s = resolve_config(user_cfg, &cfg, K);
    if (s != AT_OK) return s;
    res->samples = n;
    res->steps = cfg.steps;
    res->restarts = cfg.restarts;
    res->alpha = cfg.kind == AT_ATTACK_PGD || cfg.kind == AT_ATTACK_FGSM ? cfg.alpha : 0.0f;
    if (y_all && (s = at_check_labels(y_all, n, K)) != AT_OK) return s;
    if (cfg.target == AT_TARGET_GIVEN)
        for (int i = 0; i < n; i++)
            if (cfg.targets[i] < 0 || cfg.targets[i] >= K)
                return at_fail(AT_ERR_ARG, "target %d of sample %d is outside [0, %d)", cfg.targets[i], i, K);

    const int cap = n < cfg.batch ? n : cfg.batch;
    int wrows, frows, hist;
    atk_workspace_needs(&cfg, &wrows, &frows, &hist);
    arena a = {NULL, 0, 0};
    call_buffers cb;
    layout(&a, &cb, cap, D, K, wrows, frows, hist, ds != NULL, x_adv == NULL);
    a.size = a.used;
    a.used = 0;
    a.base = at_alloc(a.size + 64, "attack workspaces");
    if (!a.base) return AT_ERR_NOMEM;
    layout(&a, &cb, cap, D, K, wrows, frows, hist, ds != NULL, x_adv == NULL);
    if ((s = at_net_reserve(net, cap)) != AT_OK) {
        free(a.base);
        return s;
    }

    bool was_training = at_net_is_training(net);
    at_net_set_training(net, false);
    double start = atk_now();
    atk_batch b;
    memset(&b, 0, sizeof b);
    b.net = net;
    b.cfg = &cfg;
    b.D = D;
    b.K = K;
    b.cap = cap;
    b.clean_logits = cb.clean_logits;
    b.target = cb.target;
    b.todo = cb.todo;
    b.bad = cb.bad;
    b.rng = cb.rng;
    b.ids = cb.ids;
    b.row_target = cb.row_target;
    b.pred = cb.pred;
    b.keep = cb.keep;
    b.xs = cb.xs;
    b.xa = cb.xa;
    b.grad = cb.grad;
    b.dlogits = cb.dlogits;
    b.loss = cb.loss;
    for (int k = 0; k < 4; k++) {
        b.ws[k] = cb.ws[k];
        b.fs[k] = cb.fs[k];
    }
    b.hist = cb.hist;
    b.hist_len = hist;
    b.flags = cb.flags;
    b.res = res;
    if (cfg.kind == AT_ATTACK_AUTO) {
        const char *names[3] = {"apgd-ce", "apgd-t", "square"};
        res->nmembers = cfg.norm == AT_NORM_LINF ? 3 : 2;
        for (int k = 0; k < res->nmembers; k++) snprintf(res->members[k].name, sizeof res->members[k].name, "%s", names[k]);
    }
    for (int first = 0; first < n && s == AT_OK; first += cap) {
        b.n = n - first < cap ? n - first : cap;
        b.base = first;
        if (ds) {
            for (int i = 0; i < b.n; i++) cb.idx[i] = first + i;
            at_dataset_batch(ds, cb.idx, b.n, cb.x, cb.y, NULL);
            b.x = cb.x;
            b.y = cb.y;
        } else {
            b.x = x_all + (size_t)first * D;
            b.y = y_all + first;
        }
        b.adv = x_adv ? x_adv + (size_t)first * D : cb.adv;
        s = run_batch(&b, &cfg, adv_pred ? adv_pred + first : NULL);
        if (s == AT_OK && cfg.progress) cfg.progress(cfg.user, first + b.n, n);
    }
    res->seconds = atk_now() - start;
    at_net_set_training(net, was_training);
    free(a.base);
    return s;
}

at_status at_attack_run(at_net *net, const at_attack_config *cfg, const float *x, const int32_t *y,
                        int n, float *x_adv, int32_t *adv_pred, at_attack_result *res) {
    at_status s = check_inputs(net, n, "at_attack_run");
    if (s != AT_OK) return s;
    if (!x || !y || !cfg || !res) return at_fail(AT_ERR_ARG, "at_attack_run needs x, y, a config and a result");
    return attack_call(net, cfg, x, y, NULL, n, x_adv, adv_pred, res);
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
    return attack_call(net, cfg, NULL, NULL, ds, n, x_adv, adv_pred, res);
}

int atk_ranked_class(const float *z, int K, int rank) {
    for (int j = 0; j < K; j++) {
        int r = 0;
        for (int k = 0; k < K; k++) r += z[k] > z[j] || (z[k] == z[j] && k < j);
        if (r == rank) return j;
    }
    return 0;
}
