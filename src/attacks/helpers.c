/* The helpers every attack uses: the losses and their logit gradients, the network passes, the
 * projections and ascent step, row compaction, per-sample generators and the arena. Nothing here
 * calls into an attack: the attack files and the driver call these. */
#define _POSIX_C_SOURCE 200809L /* clock_gettime (GCC's -fopenmp made it visible; clang's does not) */
#include "attack.h"

#include <math.h>
#include <string.h>
#include <time.h>

double atk_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
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
    if (b->cfg->forward) return b->cfg->forward(b->cfg->forward_user, x, m, logits);
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
    if (pred && b->cfg->forward) { /* success is the attacked model's call, not its stand-in's */
        const float *z;
        if ((s = atk_forward(b, b->xa, m, &z)) != AT_OK) return s;
        for (int j = 0; j < m; j++) pred[j] = at_argmax(z + (size_t)j * b->K, b->K);
    }
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

void atk_random_start(at_attack_norm norm, float eps, at_rng *r, const float *x, float *v, int D) {
    if (norm == AT_NORM_LINF) {
        at_rng_fill_uniform(r, v, (size_t)D);
        atk_linf_start(eps, x, v, D);
        return;
    }
    for (int k = 0; k < D; k++) v[k] = at_rng_normal(r);
    double nrm = atk_l2(v, D);
    float scale = (float)(eps * at_rng_uniform(r) / (nrm + 1e-12));
    for (int k = 0; k < D; k++) v[k] = x[k] + scale * v[k];
    atk_project(norm, eps, x, v, D);
}

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

int atk_gather_targets(atk_batch *b, bool top, int pass) {
    const int K = b->K;
    int m = atk_gather_active(b);
    for (int j = 0; j < m; j++) {
        int i = b->ids[j];
        b->row_target[j] = top ? atk_ranked_class(b->clean_logits + (size_t)i * K, K, pass + 1) : b->target[i];
    }
    return m;
}

at_status atk_each_run(atk_batch *b, const at_attack_config *cfg, atk_run_fn run, void *state) {
    const bool top = cfg->target == AT_TARGET_TOP;
    const int passes = top ? cfg->target_classes : 1;
    for (int pass = 0; pass < passes; pass++)
        for (int r = 0; r < cfg->restarts; r++) {
            int m = atk_gather_targets(b, top, pass);
            if (m == 0) return AT_OK;
            at_status s = run(b, cfg, state, m, pass == passes - 1 && r == cfg->restarts - 1);
            if (s != AT_OK) return s;
        }
    return AT_OK;
}

int atk_ranked_class(const float *z, int K, int rank) {
    for (int j = 0; j < K; j++) {
        int r = 0;
        for (int k = 0; k < K; k++) r += z[k] > z[j] || (z[k] == z[j] && k < j);
        if (r == rank) return j;
    }
    return 0;
}

/* ------------------------------------------------------------ generators and memory */

void atk_reseed(atk_batch *b) {
    for (int i = 0; i < b->n; i++) at_rng_for_sample(&b->rng[i], b->cfg->seed, b->cfg->index_base + b->base + i);
}

void *atk_carve(atk_arena *a, size_t bytes) {
    size_t at = (a->used + 63) & ~(size_t)63;
    a->used = at + bytes;
    return a->base ? a->base + at : NULL;
}
