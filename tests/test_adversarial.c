/* Adversarial training building blocks: at_adversarial_loss and TRADES gradients against central
 * differences (zero-start attacks, so the crafted examples are locally constant in the weights),
 * crafting stays in the eps-ball and [0,1], eval mode while crafting, and Free-AT's perturbation. */
#include "advtrain.h"
#include "testutil.h"

enum { N = 6, C = 1, H = 8, W = 8, K = 5 };

static at_net *small_net(uint64_t seed) {
    at_net *net = NULL;
    at_status s = at_net_from_spec(&net, "conv:4:3:1:1,tanh,maxpool:2,flatten,linear:12,tanh,linear:5", C, H, W);
    if (s != AT_OK) {
        fprintf(stderr, "cannot build the test net: %s\n", at_error_message());
        exit(1);
    }
    at_net_init(net, seed);
    return net;
}

static void batch(float *x, int32_t *y, uint64_t seed) {
    at_rng r;
    at_rng_seed(&r, seed);
    for (int i = 0; i < N * C * H * W; i++) x[i] = 0.1f + 0.8f * at_rng_uniform(&r);
    for (int i = 0; i < N; i++) y[i] = (int32_t)at_rng_below(&r, K);
}

typedef float (*objective)(at_net *, at_adv_workspace *, const float *, const int32_t *);

static at_attack_config fgsm_zero_start(float eps) {
    at_attack_config a = at_attack_defaults(AT_ATTACK_FGSM);
    a.eps = eps;
    a.random_start = false;
    return a;
}

/* The crafted examples of the last objective call: where a weight change flips the sign of an
 * input gradient, the example jumps and the loss is not differentiable there; such parameters
 * are left out of the comparison (kinks, as with ReLU). */
static float last_adv[N * C * H * W];

static float adv_objective(at_net *net, at_adv_workspace *ws, const float *x, const int32_t *y) {
    at_attack_config a = fgsm_zero_start(0.05f);
    float loss = 0.0f;
    const float *xa;
    CHECK_OK(at_adv_craft(net, ws, &a, x, y, NULL, N, &xa));
    memcpy(last_adv, xa, sizeof last_adv);
    at_net_zero_grad(net);
    CHECK_OK(at_adversarial_loss(net, ws, &a, x, y, NULL, N, 0.7f, &loss, NULL));
    return 0.7f * loss;
}

static float trades_objective(at_net *net, at_adv_workspace *ws, const float *x, const int32_t *y) {
    float loss = 0.0f;
    memset(last_adv, 0, sizeof last_adv);
    at_net_zero_grad(net);
    /* zero steps: x_adv = x + 0.001 N(0,1), the same noise each call (per-sample generators) */
    at_attack_config inner = at_attack_defaults(AT_ATTACK_PGD);
    inner.eps = 0.05f;
    inner.alpha = 0.01f;
    inner.steps = 0;
    inner.seed = 2;
    CHECK_OK(at_trades_loss(net, ws, &inner, 3.0f, x, y, NULL, N, 1.0f, &loss, NULL));
    return loss;
}

/* Compares the gradient buffer left by f with central differences of f's value. */
static void check_gradient(const char *name, objective f) {
    at_net *net = small_net(3);
    float x[N * C * H * W];
    int32_t y[N];
    batch(x, y, 11);
    at_adv_workspace *ws;
    CHECK_OK(at_adv_workspace_create(&ws, net, N));
    at_net_set_training(net, true);
    f(net, ws, x, y);
    size_t np = at_net_num_params(net);
    float *analytic = malloc(sizeof(float) * np);
    memcpy(analytic, at_net_grads(net), sizeof(float) * np);
    float *p = at_net_params(net);
    double err2 = 0.0, ref2 = 0.0;
    int bad = 0, kinks = 0;
    const float h = 1e-3f;
    /* Every third parameter: each tensor is covered, at a third of the cost. */
    size_t checked = 0;
    for (size_t i = 0; i < np; i += 3) {
        checked++;
        float keep = p[i];
        at_adv_workspace_free(ws);
        CHECK_OK(at_adv_workspace_create(&ws, net, N));
        p[i] = keep + h;
        double up = f(net, ws, x, y);
        float adv_up[N * C * H * W];
        memcpy(adv_up, last_adv, sizeof adv_up);
        at_adv_workspace_free(ws);
        CHECK_OK(at_adv_workspace_create(&ws, net, N));
        p[i] = keep - h;
        double down = f(net, ws, x, y);
        p[i] = keep;
        if (memcmp(adv_up, last_adv, sizeof adv_up) != 0) {
            kinks++;
            continue;
        }
        double numeric = (up - down) / (2.0 * h);
        double d = numeric - analytic[i];
        err2 += d * d;
        ref2 += numeric * numeric + (double)analytic[i] * analytic[i];
        if (fabs(d) > 2e-3 + 2e-2 * fabs(numeric)) bad++;
    }
    double rel = sqrt(err2 / (ref2 + 1e-30));
    CHECK_MSG(rel < 1e-2, "%s: relative gradient error %g", name, rel);
    CHECK_MSG(bad <= (int)(checked / 100), "%s: %d of %zu parameters off", name, bad, checked);
    CHECK_MSG(kinks <= (int)(checked / 10), "%s: %d of %zu parameters at kinks", name, kinks, checked);
    free(analytic);
    at_adv_workspace_free(ws);
    at_net_free(net);
}

static void test_crafting(void) {
    at_net *net = small_net(5);
    float x[N * C * H * W];
    int32_t y[N];
    batch(x, y, 12);
    at_adv_workspace *ws;
    CHECK_OK(at_adv_workspace_create(&ws, net, N));
    at_net_set_training(net, true);
    const float eps = 0.1f;
    at_attack_config a = at_attack_defaults(AT_ATTACK_PGD);
    a.eps = eps;
    a.steps = 10;
    const float *xa;
    CHECK_OK(at_adv_craft(net, ws, &a, x, y, NULL, N, &xa));
    CHECK(at_net_is_training(net)); /* mode restored */
    float worst = 0.0f, lo = 1.0f, hi = 0.0f;
    for (int i = 0; i < N * C * H * W; i++) {
        worst = fmaxf(worst, fabsf(xa[i] - x[i]));
        lo = fminf(lo, xa[i]);
        hi = fmaxf(hi, xa[i]);
    }
    CHECK_MSG(worst <= eps * (1 + 1e-6f), "perturbation %g beyond eps %g", worst, eps);
    CHECK(lo >= 0.0f && hi <= 1.0f);
    /* PGD raises the loss over the clean input (eval mode) */
    at_net_set_training(net, false);
    const float *z;
    float clean, adv;
    CHECK_OK(at_net_forward(net, x, N, &z));
    CHECK_OK(at_cross_entropy(z, y, N, K, 0.0f, &clean, NULL, NULL));
    float copy[N * C * H * W];
    memcpy(copy, xa, sizeof copy);
    CHECK_OK(at_net_forward(net, copy, N, &z));
    CHECK_OK(at_cross_entropy(z, y, N, K, 0.0f, &adv, NULL, NULL));
    CHECK_MSG(adv > clean, "PGD loss %g not above clean loss %g", adv, clean);
    /* L2: inside the L2 ball */
    a.norm = AT_NORM_L2;
    a.eps = 0.5f;
    CHECK_OK(at_adv_craft(net, ws, &a, x, y, NULL, N, &xa));
    for (int i = 0; i < N; i++) {
        double n2 = 0.0;
        for (int j = 0; j < C * H * W; j++) {
            double d = xa[i * C * H * W + j] - x[i * C * H * W + j];
            n2 += d * d;
        }
        CHECK_MSG(sqrt(n2) <= 0.5 * (1 + 1e-5), "L2 perturbation %g > 0.5", sqrt(n2));
    }
    /* eps = 0 leaves the input unchanged */
    a = fgsm_zero_start(0.0f);
    CHECK_OK(at_adv_craft(net, ws, &a, x, y, NULL, N, &xa));
    CHECK(memcmp(xa, x, sizeof x) == 0);
    /* a batch larger than the workspace is refused */
    CHECK(at_adv_craft(net, ws, &a, x, y, NULL, N + 1, &xa) == AT_ERR_ARG);
    at_adv_workspace_free(ws);
    at_net_free(net);
}

static void test_free_replay(void) {
    at_net *net = small_net(6);
    float x[N * C * H * W];
    int32_t y[N];
    batch(x, y, 13);
    at_adv_workspace *ws;
    CHECK_OK(at_adv_workspace_create(&ws, net, N));
    at_net_set_training(net, true);
    const float eps = 0.05f;
    float loss;
    /* first replay: delta = 0, so the parameter gradient is the clean one */
    at_net_zero_grad(net);
    CHECK_OK(at_free_replay(net, ws, eps, x, y, NULL, N, &loss, NULL));
    size_t np = at_net_num_params(net);
    float *g_free = malloc(sizeof(float) * np);
    memcpy(g_free, at_net_grads(net), sizeof(float) * np);
    at_net_zero_grad(net);
    float clean;
    CHECK_OK(at_clean_loss(net, ws, x, y, NULL, N, 1.0f, &clean, NULL));
    CHECK_NEAR(loss, clean, 1e-6);
    size_t worst = 0;
    CHECK(tu_max_violation(g_free, at_net_grads(net), np, 1e-7, 1e-5, &worst) <= 1.0);
    /* later replays see a perturbation of exactly eps per pixel (sign steps, clipped), which
     * raises the loss */
    float second;
    at_net_zero_grad(net);
    CHECK_OK(at_free_replay(net, ws, eps, x, y, NULL, N, &second, NULL));
    CHECK_MSG(second > loss, "free replay loss %g not above clean %g", second, loss);
    at_free_reset(ws);
    at_net_zero_grad(net);
    CHECK_OK(at_free_replay(net, ws, eps, x, y, NULL, N, &second, NULL));
    CHECK_NEAR(second, loss, 1e-6);
    free(g_free);
    at_adv_workspace_free(ws);
    at_net_free(net);
}

int main(void) {
    at_set_threads(2);
    check_gradient("adversarial_loss (FGSM, zero start)", adv_objective);
    check_gradient("TRADES", trades_objective);
    test_crafting();
    test_free_replay();
    return tu_finish("test_adversarial");
}
