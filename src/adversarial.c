/* Adversarial training: the inner maximization (crafting) and the per-batch losses of each
 * method. The training loop (train.c) calls these and then runs its usual pipeline (penalties,
 * clipping, optimizer step) on the gradients they leave in the network's gradient buffer.
 *
 * Crafting for training differs from evaluation attacks (src/attacks): every sample runs every
 * step (no early stop once fooled) and the buffers live in a workspace made once per training
 * run, so a training step allocates nothing. The projection and ascent steps are shared. */
#include "attacks/attack.h"
#include "internal.h"

#include <math.h>
#include <string.h>

struct at_adv_workspace {
    int cap, D, K;
    float *x_adv, *dx, *dlogits, *z_nat, *z_adv, *delta, *soft;
    float *sample_loss, *kl_grad;
};

float *at_adv_workspace_delta(at_adv_workspace *ws, size_t *count) {
    *count = (size_t)ws->cap * ws->D;
    return ws->delta;
}

void at_adv_workspace_free(at_adv_workspace *ws) {
    if (!ws) return;
    free(ws->x_adv);
    free(ws->dx);
    free(ws->dlogits);
    free(ws->z_nat);
    free(ws->z_adv);
    free(ws->delta);
    free(ws->soft);
    free(ws->sample_loss);
    free(ws->kl_grad);
    free(ws);
}

at_status at_adv_workspace_create(at_adv_workspace **out, at_net *net, int max_batch) {
    *out = NULL;
    if (max_batch <= 0) return at_fail(AT_ERR_ARG, "adversarial workspace: batch must be positive");
    at_adv_workspace *ws = at_calloc(1, sizeof *ws, "adversarial workspace");
    if (!ws) return AT_ERR_NOMEM;
    ws->cap = max_batch;
    ws->D = at_net_in_size(net);
    ws->K = at_net_out_size(net);
    size_t xd = (size_t)max_batch * ws->D, xk = (size_t)max_batch * ws->K;
    ws->x_adv = at_alloc_floats(xd, "adversarial examples");
    ws->dx = at_alloc_floats(xd, "input gradients");
    ws->delta = at_alloc_floats(xd, "free-AT perturbation");
    ws->dlogits = at_alloc_floats(xk, "logit gradients");
    ws->z_nat = at_alloc_floats(xk, "clean logits");
    ws->z_adv = at_alloc_floats(xk, "adversarial logits");
    ws->soft = at_alloc_floats(xk, "soft targets");
    ws->sample_loss = at_alloc_floats((size_t)max_batch, "losses");
    ws->kl_grad = at_alloc_floats((size_t)ws->K, "KL gradient");
    if (!ws->x_adv || !ws->dx || !ws->delta || !ws->dlogits || !ws->z_nat || !ws->z_adv ||
        !ws->soft || !ws->sample_loss || !ws->kl_grad) {
        at_adv_workspace_free(ws);
        return AT_ERR_NOMEM;
    }
    *out = ws;
    return AT_OK;
}

static at_status check_batch(const at_adv_workspace *ws, int n) {
    if (n <= 0 || n > ws->cap)
        return at_fail(AT_ERR_ARG, "adversarial batch of %d samples (workspace holds %d)", n, ws->cap);
    return AT_OK;
}

/* Cross-entropy against hard labels or soft targets (mixup, label smoothing), mean over n. */
static at_status batch_ce(const float *z, const int32_t *y, const float *soft, int n, int K,
                          float *loss, float *dz, int *correct) {
    if (soft) {
        if (correct) {
            *correct = 0;
            for (int i = 0; i < n; i++) *correct += at_argmax(z + (size_t)i * K, K) == y[i];
        }
        return at_cross_entropy_soft(z, soft, n, K, loss, dz, NULL);
    }
    return at_cross_entropy(z, y, n, K, 0.0f, loss, dz, correct);
}

/* Rows [begin, end) of the crafting loss, between each chunk's forward and input gradient
 * (at_net_input_gradient): the batch-mean cross-entropy row by row, the same bits as batch_ce,
 * or a per-sample attack loss. */
typedef struct {
    const at_attack_config *a;
    const int32_t *y;
    int n, K;
    float *sample_loss;
} craft_rows;

static void craft_loss(void *user, const float *z, int begin, int end, float *dlogits) {
    const craft_rows *r = user;
    const int K = r->K;
    for (int i = begin; i < end; i++) {
        const float *zi = z + (size_t)i * K;
        if (r->a->loss == AT_ATTACK_LOSS_CE)
            at_ce_row(zi, r->y[i], K, 0.0, r->n, dlogits + (size_t)i * K);
        else
            r->sample_loss[i] = atk_sample_loss(r->a->loss, false, zi, K, r->y[i], -1, dlogits + (size_t)i * K);
    }
}

/* Starting points: x itself, a random start in the eps-ball (atk_random_start), or TRADES's
 * x + 0.001 N(0,1); sample i's draws come from (a->seed, a->index_base + i), as an evaluation
 * attack's do. Projected onto the ball and [0,1]. */
typedef enum { START_AT_X, START_RANDOM, START_NOISE } start_kind;

static void start_point(at_adv_workspace *ws, const at_attack_config *a, const float *x, int n, start_kind kind) {
    const int D = ws->D;
#pragma omp parallel for num_threads(at_rows_threads(n, (size_t)n * D)) schedule(static)
    for (int i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * D;
        float *v = ws->x_adv + (size_t)i * D;
        at_rng r;
        at_rng_for_sample(&r, a->seed, a->index_base + i);
        if (kind == START_RANDOM) {
            atk_random_start(a->norm, a->eps, &r, xi, v, D);
            continue;
        }
        for (int j = 0; j < D; j++) v[j] = kind == START_NOISE ? xi[j] + 0.001f * at_rng_normal(&r) : xi[j];
        atk_project(a->norm, a->eps, xi, v, D);
    }
}

at_status at_adv_craft(at_net *net, at_adv_workspace *ws, const at_attack_config *a,
                       const float *x, const int32_t *y, const float *soft, int n,
                       const float **x_adv) {
    at_status s = check_batch(ws, n);
    if (s != AT_OK) return s;
    if (a->kind != AT_ATTACK_FGSM && a->kind != AT_ATTACK_PGD)
        return at_fail(AT_ERR_ARG, "adversarial training crafts with FGSM or PGD, not %s",
                       at_attack_name(a));
    if (!(a->eps >= 0.0f) || !isfinite(a->eps))
        return at_fail(AT_ERR_ARG, "adversarial eps must be a finite number >= 0");
    const int D = ws->D, K = ws->K;
    int steps = a->kind == AT_ATTACK_FGSM ? 1 : a->steps;
    float alpha = a->kind == AT_ATTACK_FGSM && a->alpha <= 0.0f ? a->eps : a->alpha;
    if (a->kind == AT_ATTACK_PGD && alpha <= 0.0f) alpha = 2.5f * a->eps / (float)(steps > 0 ? steps : 1);
    bool was_training = at_net_is_training(net);
    at_net_set_training(net, false); /* craft against the deployed model: dropout off */
    start_point(ws, a, x, n, a->random_start ? START_RANDOM : START_AT_X);
    if (!soft) s = at_check_labels(y, n, K); /* the losses below index the logits by label */
    const craft_rows rows = {a, y, n, K, ws->sample_loss};
    for (int k = 0; k < steps && a->eps > 0.0f && s == AT_OK; k++) {
        if (!soft) {
            /* Hard labels: forward, loss and input gradient chunk by chunk, no wait between. */
            s = at_net_input_gradient(net, ws->x_adv, n, craft_loss, (void *)&rows, ws->dlogits, ws->dx, NULL);
        } else {
            const float *z;
            if ((s = at_net_forward(net, ws->x_adv, n, &z)) != AT_OK) break;
            if (a->loss == AT_ATTACK_LOSS_CE) {
                float loss;
                s = batch_ce(z, y, soft, n, K, &loss, ws->dlogits, NULL);
                if (s == AT_ERR_NAN) s = AT_OK; /* a non-finite row just takes no useful step */
            } else {
                for (int i = 0; i < n; i++)
                    ws->sample_loss[i] = atk_sample_loss(a->loss, false, z + (size_t)i * K, K, y[i], -1,
                                                         ws->dlogits + (size_t)i * K);
            }
            if (s == AT_OK) s = at_net_backward(net, ws->dlogits, AT_GRAD_INPUT, ws->dx);
        }
        if (s != AT_OK) break;
#pragma omp parallel for num_threads(at_rows_threads(n, (size_t)n * D)) schedule(static)
        for (int i = 0; i < n; i++) {
            float *g = ws->dx + (size_t)i * D;
            for (int j = 0; j < D; j++)
                if (!isfinite(g[j])) g[j] = 0.0f;
            atk_ascent_step(a->norm, alpha, a->eps, x + (size_t)i * D, ws->x_adv + (size_t)i * D, g, D);
        }
    }
    at_net_set_training(net, was_training);
    if (x_adv) *x_adv = ws->x_adv;
    return s;
}

/* Forward on inputs in the network's current mode, loss, and weight * dLoss/dparams added to
 * the gradient buffer. */
static at_status weighted_loss(at_net *net, at_adv_workspace *ws, const float *in, const int32_t *y,
                               const float *soft, int n, float weight, float *loss, int *correct) {
    const float *z;
    at_status s = at_net_forward(net, in, n, &z);
    if (s != AT_OK) return s;
    if ((s = batch_ce(z, y, soft, n, ws->K, loss, ws->dlogits, correct)) != AT_OK) return s;
    if (weight != 1.0f)
        for (size_t i = 0; i < (size_t)n * ws->K; i++) ws->dlogits[i] *= weight;
    return at_net_backward(net, ws->dlogits, AT_GRAD_PARAMS, NULL);
}

at_status at_adversarial_loss(at_net *net, at_adv_workspace *ws, const at_attack_config *attack,
                              const float *x, const int32_t *y, const float *soft, int n,
                              float weight, float *loss, int *correct) {
    const float *x_adv;
    at_status s = at_adv_craft(net, ws, attack, x, y, soft, n, &x_adv);
    if (s != AT_OK) return s;
    return weighted_loss(net, ws, x_adv, y, soft, n, weight, loss, correct);
}

at_status at_clean_loss(at_net *net, at_adv_workspace *ws, const float *x, const int32_t *y,
                        const float *soft, int n, float weight, float *loss, int *correct) {
    at_status s = check_batch(ws, n);
    if (s != AT_OK) return s;
    return weighted_loss(net, ws, x, y, soft, n, weight, loss, correct);
}

/* ------------------------------------------------------------ TRADES (Zhang et al. 2019) */

/* KL(p || q) for one sample with p = softmax(zp), q = softmax(zq), and its gradients with
 * respect to both logit vectors (either may be NULL). */
static double kl_softmax(const float *zp, const float *zq, int K, float *dzp, float *dzq,
                         float scale) {
    double mp = zp[0], mq = zq[0];
    for (int j = 1; j < K; j++) {
        if (zp[j] > mp) mp = zp[j];
        if (zq[j] > mq) mq = zq[j];
    }
    double sp = 0.0, sq = 0.0;
    for (int j = 0; j < K; j++) {
        sp += exp((double)zp[j] - mp);
        sq += exp((double)zq[j] - mq);
    }
    double lsp = mp + log(sp), lsq = mq + log(sq), kl = 0.0;
    for (int j = 0; j < K; j++) {
        double lp = zp[j] - lsp, lq = zq[j] - lsq;
        kl += exp(lp) * (lp - lq);
    }
    for (int j = 0; j < K; j++) {
        double lp = zp[j] - lsp, lq = zq[j] - lsq, p = exp(lp), q = exp(lq);
        if (dzp) dzp[j] = (float)(scale * p * ((lp - lq) - kl));
        if (dzq) dzq[j] = (float)(scale * (q - p));
    }
    return kl;
}

at_status at_trades_loss(at_net *net, at_adv_workspace *ws, const at_attack_config *inner, float beta,
                         const float *x, const int32_t *y, const float *soft, int n, float weight,
                         float *loss, int *correct) {
    at_status s = check_batch(ws, n);
    if (s != AT_OK) return s;
    if (inner->norm != AT_NORM_LINF || !(inner->eps >= 0.0f) || !isfinite(inner->eps) || inner->steps < 0)
        return at_fail(AT_ERR_ARG, "TRADES crafts in the L-inf ball with eps >= 0 and steps >= 0");
    const float eps = inner->eps, alpha = inner->alpha;
    const int steps = inner->steps;
    const int D = ws->D, K = ws->K;
    const size_t nk = (size_t)n * K;
    bool was_training = at_net_is_training(net);
    const float *z;
    /* Inner maximization of KL(f(x) || f(x')) in eval mode, from x + 0.001 N(0,1). */
    at_net_set_training(net, false);
    if ((s = at_net_forward(net, x, n, &z)) != AT_OK) goto out;
    memcpy(ws->z_nat, z, sizeof(float) * nk);
    start_point(ws, inner, x, n, START_NOISE);
    for (int k = 0; k < steps && eps > 0.0f; k++) {
        if ((s = at_net_forward(net, ws->x_adv, n, &z)) != AT_OK) goto out;
        for (int i = 0; i < n; i++)
            kl_softmax(ws->z_nat + (size_t)i * K, z + (size_t)i * K, K, NULL,
                       ws->dlogits + (size_t)i * K, 1.0f);
        if ((s = at_net_backward(net, ws->dlogits, AT_GRAD_INPUT, ws->dx)) != AT_OK) goto out;
        for (int i = 0; i < n; i++)
            atk_ascent_step(AT_NORM_LINF, alpha, eps, x + (size_t)i * D, ws->x_adv + (size_t)i * D,
                            ws->dx + (size_t)i * D, D);
    }
    /* Outer loss in the training mode: CE(f(x), y) + beta * KL(f(x) || f(x_adv)), mean over the
     * batch, with gradients through both passes. The network keeps one pass's activations, so:
     * forward x (logits for the KL), forward x_adv + backward of its KL part, then forward x
     * again + backward of the CE and the KL's clean part. */
    at_net_set_training(net, was_training);
    if ((s = at_net_forward(net, x, n, &z)) != AT_OK) goto out;
    memcpy(ws->z_nat, z, sizeof(float) * nk);
    if ((s = at_net_forward(net, ws->x_adv, n, &z)) != AT_OK) goto out;
    memcpy(ws->z_adv, z, sizeof(float) * nk);
    double kl_sum = 0.0;
    for (int i = 0; i < n; i++)
        kl_sum += kl_softmax(ws->z_nat + (size_t)i * K, ws->z_adv + (size_t)i * K, K, NULL,
                             ws->dlogits + (size_t)i * K, weight * beta / (float)n);
    if ((s = at_net_backward(net, ws->dlogits, AT_GRAD_PARAMS, NULL)) != AT_OK) goto out;
    if ((s = at_net_forward(net, x, n, &z)) != AT_OK) goto out;
    float ce;
    if ((s = batch_ce(z, y, soft, n, K, &ce, ws->dlogits, correct)) != AT_OK) goto out;
    for (int i = 0; i < n; i++) {
        float *d = ws->dlogits + (size_t)i * K;
        float *g = ws->kl_grad;
        kl_softmax(z + (size_t)i * K, ws->z_adv + (size_t)i * K, K, g, NULL, beta / (float)n);
        for (int j = 0; j < K; j++) d[j] += g[j];
        if (weight != 1.0f)
            for (int j = 0; j < K; j++) d[j] *= weight;
    }
    s = at_net_backward(net, ws->dlogits, AT_GRAD_PARAMS, NULL);
    *loss = (float)(ce + beta * kl_sum / n);
    if (s == AT_OK && !isfinite(*loss)) s = at_fail(AT_ERR_NAN, "TRADES loss is %g", (double)*loss);
out:
    at_net_set_training(net, was_training);
    return s;
}

/* ------------------------------------------------------------ Free AT (Shafahi et al. 2019) */

at_status at_free_replay(at_net *net, at_adv_workspace *ws, float eps, const float *x,
                         const int32_t *y, const float *soft, int n, float *loss, int *correct) {
    at_status s = check_batch(ws, n);
    if (s != AT_OK) return s;
    const size_t count = (size_t)n * ws->D;
    /* The perturbation persists across replays and minibatches, as in the paper. */
    for (size_t i = 0; i < count; i++) {
        float v = x[i] + ws->delta[i];
        ws->x_adv[i] = v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
    }
    const float *z;
    if ((s = at_net_forward(net, ws->x_adv, n, &z)) != AT_OK) return s;
    if ((s = batch_ce(z, y, soft, n, ws->K, loss, ws->dlogits, correct)) != AT_OK) return s;
    /* One backward gives both gradients: that is the "free" in Free-AT. */
    if ((s = at_net_backward(net, ws->dlogits, AT_GRAD_PARAMS | AT_GRAD_INPUT, ws->dx)) != AT_OK)
        return s;
    for (size_t i = 0; i < count; i++) {
        float g = ws->dx[i], d = ws->delta[i] + (g > 0.0f ? eps : (g < 0.0f ? -eps : 0.0f));
        ws->delta[i] = d < -eps ? -eps : (d > eps ? eps : d);
    }
    return AT_OK;
}

void at_free_reset(at_adv_workspace *ws) {
    memset(ws->delta, 0, sizeof(float) * (size_t)ws->cap * ws->D);
}
