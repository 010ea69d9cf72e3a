/* Losses and optimizers against hand-computed values (PyTorch semantics). */
#include "advtrain.h"
#include "testutil.h"

#include <stdint.h>

/* ------------------------------------------------------------ cross-entropy */

/* Two samples, three classes; expected values computed by hand (log-sum-exp in double):
 *   sample 0: z = (1, 2, 3), y = 2;  sample 1: z = (0.5, -1, 0.25), y = 1. */
static const float CE_Z[6] = {1.0f, 2.0f, 3.0f, 0.5f, -1.0f, 0.25f};
static const int32_t CE_Y[2] = {2, 1};

static void test_cross_entropy_values(void) {
    float loss = 0, d[6];
    int correct = -1;
    CHECK_OK(at_cross_entropy(CE_Z, CE_Y, 2, 3, 0.0f, &loss, d, &correct));
    CHECK_NEAR(loss, 1.3008590754231475, 1e-6);
    static const double want_d[6] = {0.04501528658519022,  0.12236423552739879,
                                     -0.16737952211258916, 0.24975886490660745,
                                     -0.4442712644748986,  0.1945123995682911};
    for (int i = 0; i < 6; i++) CHECK_NEAR(d[i], want_d[i], 1e-6);
    CHECK(correct == 1); /* sample 0 is a hit (argmax 2), sample 1 is not (argmax 0) */

    /* Each row of the gradient sums to zero. */
    CHECK_NEAR(d[0] + d[1] + d[2], 0.0, 1e-7);
    CHECK_NEAR(d[3] + d[4] + d[5], 0.0, 1e-7);

    /* dlogits and correct may be NULL. */
    float loss2 = 0;
    CHECK_OK(at_cross_entropy(CE_Z, CE_Y, 2, 3, 0.0f, &loss2, NULL, NULL));
    CHECK(loss2 == loss);

    /* A single sample: loss = lse(z) - z_y. */
    float z1[3] = {0.0f, 0.0f, 0.0f};
    int32_t y1 = 0;
    CHECK_OK(at_cross_entropy(z1, &y1, 1, 3, 0.0f, &loss, NULL, NULL));
    CHECK_NEAR(loss, log(3.0), 1e-6);
}

static void test_label_smoothing(void) {
    float loss = 0, d[6];
    CHECK_OK(at_cross_entropy(CE_Z, CE_Y, 2, 3, 0.1f, &loss, d, NULL));
    /* -sum_j q_j log p_j with q = 0.9 onehot + 0.1/3, mean over the 2 samples. */
    CHECK_NEAR(loss, 1.3050257420898144, 1e-6);
    static const double want_d[6] = {0.02834861991852355,  0.10569756886073213,
                                     -0.13404618877925584, 0.2330921982399408,
                                     -0.4109379311415653,  0.17784573290162445};
    for (int i = 0; i < 6; i++) CHECK_NEAR(d[i], want_d[i], 1e-6);

    /* Same value recomputed here in double from the definition. */
    double total = 0;
    for (int s = 0; s < 2; s++) {
        const float *z = CE_Z + 3 * s;
        double m = fmax(z[0], fmax(z[1], z[2])), sum = 0;
        for (int j = 0; j < 3; j++) sum += exp(z[j] - m);
        double lse = m + log(sum);
        for (int j = 0; j < 3; j++) {
            double q = 0.1 / 3 + (j == CE_Y[s] ? 0.9 : 0.0);
            total -= q * (z[j] - lse);
        }
    }
    CHECK_NEAR(loss, total / 2, 1e-6);

    /* Its gradient against central differences, over random logits and several smoothings. */
    at_rng rng;
    at_rng_seed(&rng, 11);
    const int n = 4, k = 7;
    float z[28], g[28];
    int32_t y[4];
    for (int i = 0; i < n * k; i++) z[i] = 4.0f * at_rng_uniform(&rng) - 2.0f;
    for (int i = 0; i < n; i++) y[i] = (int32_t)at_rng_below(&rng, (uint32_t)k);
    const float smooth[3] = {0.0f, 0.1f, 0.5f};
    for (int si = 0; si < 3; si++) {
        CHECK_OK(at_cross_entropy(z, y, n, k, smooth[si], &loss, g, NULL));
        const float eps = 1e-2f;
        double worst = 0;
        for (int i = 0; i < n * k; i++) {
            float keep = z[i], lp, lm;
            z[i] = keep + eps;
            CHECK_OK(at_cross_entropy(z, y, n, k, smooth[si], &lp, NULL, NULL));
            z[i] = keep - eps;
            CHECK_OK(at_cross_entropy(z, y, n, k, smooth[si], &lm, NULL, NULL));
            z[i] = keep;
            double num = ((double)lp - lm) / (2.0 * ((double)(keep + eps) - keep));
            double err = fabs(num - g[i]) / (1e-3 + 1e-2 * fabs(num));
            if (err > worst) worst = err;
        }
        CHECK_MSG(worst <= 1.0, "label smoothing %g: gradient off by %.3g tolerances",
                  (double)smooth[si], worst);
    }

    /* Out-of-range smoothing. */
    CHECK(at_cross_entropy(CE_Z, CE_Y, 2, 3, 1.0f, &loss, NULL, NULL) == AT_ERR_ARG);
    CHECK(at_cross_entropy(CE_Z, CE_Y, 2, 3, -0.1f, &loss, NULL, NULL) == AT_ERR_ARG);
    CHECK(at_cross_entropy(CE_Z, CE_Y, 2, 3, NAN, &loss, NULL, NULL) == AT_ERR_ARG);
}

static void test_cross_entropy_edges(void) {
    float loss = -1, d[6];
    /* Huge logits: log-sum-exp must not overflow. */
    float big[6] = {1e4f, 0.0f, -1e4f, 1e4f, 1e4f, 0.0f};
    int32_t yb[2] = {1, 0};
    CHECK_OK(at_cross_entropy(big, yb, 2, 3, 0.0f, &loss, d, NULL));
    CHECK(isfinite(loss));
    /* sample 0: 1e4 - 0 = 1e4; sample 1: log 2 */
    CHECK_NEAR(loss, (1e4 + log(2.0)) / 2, 1e-2);
    for (int i = 0; i < 6; i++) CHECK_MSG(isfinite(d[i]), "dlogits[%d] = %g", i, (double)d[i]);
    CHECK_NEAR(d[0], 0.5, 1e-6);
    CHECK_NEAR(d[1], -0.5, 1e-6);
    CHECK_NEAR(d[3], (0.5 - 1.0) / 2, 1e-6);
    CHECK_NEAR(d[4], 0.5 / 2, 1e-6);
    CHECK_OK(at_cross_entropy(big, yb, 2, 3, 0.1f, &loss, d, NULL));
    CHECK(isfinite(loss));
    for (int i = 0; i < 6; i++) CHECK(isfinite(d[i]));
    float neg[3] = {-1e4f, -1e4f, -1e4f};
    int32_t y0 = 2;
    CHECK_OK(at_cross_entropy(neg, &y0, 1, 3, 0.0f, &loss, d, NULL));
    CHECK_NEAR(loss, log(3.0), 1e-5);

    /* Labels out of range. */
    int32_t bad1[2] = {0, 3}, bad2[2] = {-1, 0};
    CHECK(at_cross_entropy(CE_Z, bad1, 2, 3, 0.0f, &loss, d, NULL) == AT_ERR_ARG);
    CHECK(strstr(at_error_message(), "label") != NULL);
    CHECK(at_cross_entropy(CE_Z, bad2, 2, 3, 0.0f, &loss, d, NULL) == AT_ERR_ARG);
    /* Bad sizes. */
    CHECK(at_cross_entropy(CE_Z, CE_Y, 0, 3, 0.0f, &loss, d, NULL) == AT_ERR_ARG);
    CHECK(at_cross_entropy(CE_Z, CE_Y, 2, 0, 0.0f, &loss, d, NULL) == AT_ERR_ARG);

    /* NaN / infinite logits, wherever they are. */
    for (int pos = 0; pos < 3; pos++) {
        float z[3] = {0.1f, 0.2f, 0.3f};
        int32_t y = 1;
        z[pos] = NAN;
        CHECK_MSG(at_cross_entropy(z, &y, 1, 3, 0.0f, &loss, d, NULL) == AT_ERR_NAN,
                  "NaN at position %d", pos);
        z[pos] = INFINITY;
        CHECK_MSG(at_cross_entropy(z, &y, 1, 3, 0.0f, &loss, d, NULL) == AT_ERR_NAN,
                  "+inf at position %d", pos);
    }

    /* argmax: first on ties. */
    float t[4] = {1.0f, 3.0f, 3.0f, -2.0f};
    CHECK(at_argmax(t, 4) == 1);
    CHECK(at_argmax(t, 1) == 0);
}

/* Soft targets: one-hot and smoothed one-hot rows give at_cross_entropy's values. */
static void test_soft_targets(void) {
    const float smooth[2] = {0.0f, 0.1f};
    for (int si = 0; si < 2; si++) {
        float q[6], loss_h = 0, loss_s = 0, dh[6], ds[6];
        int ch = -1, cs = -1;
        for (int s = 0; s < 2; s++)
            for (int j = 0; j < 3; j++)
                q[3 * s + j] = smooth[si] / 3 + (j == CE_Y[s] ? 1.0f - smooth[si] : 0.0f);
        CHECK_OK(at_cross_entropy(CE_Z, CE_Y, 2, 3, smooth[si], &loss_h, dh, &ch));
        CHECK_OK(at_cross_entropy_soft(CE_Z, q, 2, 3, &loss_s, ds, &cs));
        CHECK_NEAR(loss_s, loss_h, 1e-6);
        for (int i = 0; i < 6; i++) CHECK_NEAR(ds[i], dh[i], 1e-6);
        CHECK(cs == ch);
    }
}

/* ------------------------------------------------------------ MSE */

static void test_mse(void) {
    const float p[6] = {1.0f, 2.0f, -1.0f, 0.5f, 0.0f, 3.0f};
    const float t[6] = {0.5f, 2.0f, 1.0f, -0.5f, 0.25f, 2.0f};
    float loss = 0, d[6];
    CHECK_OK(at_mse(p, t, 2, 3, &loss, d));
    /* (0.25 + 0 + 4 + 1 + 0.0625 + 1) / 6 */
    CHECK_NEAR(loss, 1.0520833333333333, 1e-6);
    for (int i = 0; i < 6; i++) CHECK_NEAR(d[i], 2.0 * ((double)p[i] - t[i]) / 6.0, 1e-7);
    CHECK_OK(at_mse(p, t, 2, 3, &loss, NULL));

    /* Gradient against central differences. */
    at_rng rng;
    at_rng_seed(&rng, 5);
    float x[15], y[15], g[15];
    for (int i = 0; i < 15; i++) {
        x[i] = 2.0f * at_rng_uniform(&rng) - 1.0f;
        y[i] = 2.0f * at_rng_uniform(&rng) - 1.0f;
    }
    CHECK_OK(at_mse(x, y, 3, 5, &loss, g));
    double worst = 0;
    for (int i = 0; i < 15; i++) {
        const float eps = 1e-2f;
        float keep = x[i], lp, lm;
        x[i] = keep + eps;
        CHECK_OK(at_mse(x, y, 3, 5, &lp, NULL));
        x[i] = keep - eps;
        CHECK_OK(at_mse(x, y, 3, 5, &lm, NULL));
        x[i] = keep;
        double num = ((double)lp - lm) / (2.0 * eps);
        double err = fabs(num - g[i]) / (1e-4 + 1e-2 * fabs(num));
        if (err > worst) worst = err;
    }
    CHECK_MSG(worst <= 1.0, "MSE gradient off by %.3g tolerances", worst);

    CHECK(at_mse(p, t, 0, 3, &loss, d) == AT_ERR_ARG);
    float pn[2] = {NAN, 0.0f}, tn[2] = {0.0f, 0.0f};
    CHECK(at_mse(pn, tn, 1, 2, &loss, NULL) == AT_ERR_NAN);
    float pi[2] = {INFINITY, 0.0f};
    CHECK(at_mse(pi, tn, 1, 2, &loss, NULL) == AT_ERR_NAN);
}

/* ------------------------------------------------------------ optimizers */

/* One Linear(in, out) layer named fc: in*out + out parameters. */
static at_net *linear_net(int in, int out) {
    at_layer_desc d;
    memset(&d, 0, sizeof d);
    d.kind = AT_LAYER_LINEAR;
    d.out = out;
    snprintf(d.name, sizeof d.name, "fc");
    at_net *net = NULL;
    CHECK_OK(at_net_create(&net, &d, 1, in, 1, 1));
    if (net) CHECK(at_net_num_params(net) == (size_t)in * out + out);
    return net;
}

/* A network with 3*2 + 2 = 8 parameters whose values and gradients the tests set by hand. */
static at_net *tiny_net(void) { return linear_net(3, 2); }

static const float W0[8] = {0.5f, -0.25f, 1.0f, 0.125f, -1.5f, 0.75f, 0.2f, -0.3f};
static const float G1[8] = {0.1f, -0.2f, 0.3f, 0.0f, 0.5f, -0.05f, 1.0f, -0.7f};
static const float G2[8] = {-0.3f, 0.1f, 0.2f, 0.4f, -0.5f, 0.25f, 0.0f, 0.6f};

/* Runs two steps with gradients G1 then G2 and compares with a double-precision model of
 * torch.optim.SGD. */
static void check_sgd(float lr, float mu, float damp, bool nesterov, float wd, const char *label) {
    at_net *net = tiny_net();
    if (!net) return;
    memcpy(at_net_params(net), W0, sizeof W0);
    at_optim_config c = at_optim_defaults(AT_OPTIM_SGD);
    c.lr = lr;
    c.momentum = mu;
    c.dampening = damp;
    c.nesterov = nesterov;
    c.weight_decay = wd;
    at_optim *o = NULL;
    CHECK_OK(at_optim_create(&o, net, &c));
    if (!o) {
        at_net_free(net);
        return;
    }
    size_t count = 99;
    at_optim_state(o, &count);
    CHECK(count == (mu > 0.0f ? 8u : 0u));
    double w[8], buf[8];
    for (int i = 0; i < 8; i++) w[i] = W0[i];
    for (int step = 0; step < 2; step++) {
        const float *G = step == 0 ? G1 : G2;
        memcpy(at_net_grads(net), G, sizeof G1);
        CHECK_OK(at_optim_step(o));
        for (int i = 0; i < 8; i++) {
            double g = G[i] + (double)wd * w[i];
            if (mu != 0.0f) {
                buf[i] = step == 0 ? g : (double)mu * buf[i] + (1.0 - damp) * g;
                g = nesterov ? g + (double)mu * buf[i] : buf[i];
            }
            w[i] -= (double)lr * g;
        }
        const float *p = at_net_params(net);
        for (int i = 0; i < 8; i++)
            CHECK_MSG(fabs(p[i] - w[i]) <= 1e-6 + 1e-6 * fabs(w[i]),
                      "%s step %d param %d: got %.9g want %.9g", label, step + 1, i, (double)p[i],
                      w[i]);
        if (mu > 0.0f) {
            const float *state = at_optim_state(o, NULL);
            for (int i = 0; i < 8; i++)
                CHECK_MSG(fabs(state[i] - buf[i]) <= 1e-6 + 1e-6 * fabs(buf[i]),
                          "%s step %d momentum buffer %d: got %.9g want %.9g", label, step + 1, i,
                          (double)state[i], buf[i]);
        }
    }
    CHECK(at_optim_steps(o) == 2);
    at_optim_free(o);
    at_net_free(net);
}

static void test_sgd(void) {
    /* Plain SGD: w -= lr * g, checked literally for the first step. */
    at_net *net = tiny_net();
    if (net) {
        memcpy(at_net_params(net), W0, sizeof W0);
        memcpy(at_net_grads(net), G1, sizeof G1);
        at_optim_config c = at_optim_defaults(AT_OPTIM_SGD);
        CHECK_NEAR(c.lr, 0.01, 1e-9);
        CHECK(c.momentum == 0.0f && c.weight_decay == 0.0f && !c.nesterov);
        c.lr = 0.5f;
        at_optim *o = NULL;
        CHECK_OK(at_optim_create(&o, net, &c));
        if (o) {
            CHECK_OK(at_optim_step(o));
            for (int i = 0; i < 8; i++) CHECK_NEAR(at_net_params(net)[i], W0[i] - 0.5 * G1[i], 1e-7);
            /* The gradient buffer is the optimizer's input, not its output. */
            CHECK(memcmp(at_net_grads(net), G1, sizeof G1) == 0);
            at_optim_set_lr(o, 0.25f);
            CHECK(at_optim_lr(o) == 0.25f);
            CHECK(at_optim_get_config(o)->lr == 0.25f);
            at_optim_free(o);
        }
        at_net_free(net);
    }
    /* Momentum 0.9: the first step's buffer is the gradient itself (undampened). */
    check_sgd(0.1f, 0.9f, 0.0f, false, 0.0f, "momentum");
    check_sgd(0.1f, 0.9f, 0.5f, false, 0.0f, "momentum+dampening");
    check_sgd(0.05f, 0.9f, 0.0f, true, 0.0f, "nesterov");
    check_sgd(0.05f, 0.9f, 0.0f, true, 5e-4f, "nesterov+wd");
    check_sgd(0.1f, 0.0f, 0.0f, false, 0.1f, "weight decay");
    check_sgd(0.1f, 0.5f, 0.0f, false, 0.01f, "momentum+wd");

    /* The first momentum step literally: buf = g, w1 = w0 - lr*g. */
    net = tiny_net();
    if (net) {
        memcpy(at_net_params(net), W0, sizeof W0);
        memcpy(at_net_grads(net), G1, sizeof G1);
        at_optim_config c = at_optim_defaults(AT_OPTIM_SGD);
        c.lr = 0.1f;
        c.momentum = 0.9f;
        at_optim *o = NULL;
        CHECK_OK(at_optim_create(&o, net, &c));
        if (o) {
            CHECK_OK(at_optim_step(o));
            CHECK(memcmp(at_optim_state(o, NULL), G1, sizeof G1) == 0);
            for (int i = 0; i < 8; i++) CHECK_NEAR(at_net_params(net)[i], W0[i] - 0.1 * G1[i], 1e-7);
            at_optim_free(o);
        }
        at_net_free(net);
    }
}

static void check_adam(float lr, float b1, float b2, float eps, float wd, const char *label) {
    at_net *net = tiny_net();
    if (!net) return;
    memcpy(at_net_params(net), W0, sizeof W0);
    at_optim_config c = at_optim_defaults(AT_OPTIM_ADAM);
    c.lr = lr;
    c.beta1 = b1;
    c.beta2 = b2;
    c.eps = eps;
    c.weight_decay = wd;
    at_optim *o = NULL;
    CHECK_OK(at_optim_create(&o, net, &c));
    if (!o) {
        at_net_free(net);
        return;
    }
    size_t count = 0;
    at_optim_state(o, &count);
    CHECK(count == 16);
    double w[8], m[8] = {0}, v[8] = {0};
    for (int i = 0; i < 8; i++) w[i] = W0[i];
    for (int step = 1; step <= 2; step++) {
        const float *G = step == 1 ? G1 : G2;
        memcpy(at_net_grads(net), G, sizeof G1);
        CHECK_OK(at_optim_step(o));
        double bc1 = 1.0 - pow(b1, step), bc2 = 1.0 - pow(b2, step);
        for (int i = 0; i < 8; i++) {
            double g = G[i] + (double)wd * w[i];
            m[i] = b1 * m[i] + (1.0 - b1) * g;
            v[i] = b2 * v[i] + (1.0 - b2) * g * g;
            double mhat = m[i] / bc1, vhat = v[i] / bc2;
            w[i] -= lr * mhat / (sqrt(vhat) + eps);
        }
        const float *p = at_net_params(net);
        for (int i = 0; i < 8; i++)
            CHECK_MSG(fabs(p[i] - w[i]) <= 2e-6 + 1e-6 * fabs(w[i]),
                      "%s step %d param %d: got %.9g want %.9g", label, step, i, (double)p[i], w[i]);
        const float *state = at_optim_state(o, NULL);
        for (int i = 0; i < 8; i++) {
            CHECK_MSG(fabs(state[i] - m[i]) <= 1e-7 + 1e-5 * fabs(m[i]), "%s m[%d]", label, i);
            CHECK_MSG(fabs(state[8 + i] - v[i]) <= 1e-9 + 1e-5 * fabs(v[i]), "%s v[%d]", label, i);
        }
    }
    CHECK(at_optim_steps(o) == 2);
    at_optim_free(o);
    at_net_free(net);
}

static void test_adam(void) {
    at_optim_config c = at_optim_defaults(AT_OPTIM_ADAM);
    CHECK_NEAR(c.lr, 1e-3, 1e-10);
    CHECK_NEAR(c.beta1, 0.9, 1e-7);
    CHECK_NEAR(c.beta2, 0.999, 1e-7);
    CHECK_NEAR(c.eps, 1e-8, 1e-15);
    check_adam(1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, "adam");
    check_adam(0.1f, 0.9f, 0.999f, 1e-8f, 0.0f, "adam lr 0.1");
    check_adam(0.01f, 0.5f, 0.9f, 1e-3f, 0.01f, "adam custom+wd");

    /* The first Adam step moves every weight with a non-zero gradient by about lr. */
    at_net *net = tiny_net();
    if (net) {
        memcpy(at_net_params(net), W0, sizeof W0);
        memcpy(at_net_grads(net), G1, sizeof G1);
        at_optim *o = NULL;
        c.lr = 0.01f;
        CHECK_OK(at_optim_create(&o, net, &c));
        if (o) {
            CHECK_OK(at_optim_step(o));
            for (int i = 0; i < 8; i++) {
                double want = G1[i] == 0.0f ? W0[i] : W0[i] - 0.01 * (G1[i] > 0 ? 1 : -1);
                CHECK_NEAR(at_net_params(net)[i], want, 1e-6);
            }
            at_optim_free(o);
        }
        at_net_free(net);
    }
}

static void test_invalid_configs(void) {
    at_net *net = tiny_net();
    if (!net) return;
    struct {
        const char *what;
        at_optim_config c;
    } bad[16];
    int nb = 0;
#define BAD(label, kind, stmt)                                                                     \
    do {                                                                                           \
        at_optim_config cfg = at_optim_defaults(kind);                                             \
        stmt;                                                                                      \
        bad[nb].what = label;                                                                      \
        bad[nb++].c = cfg;                                                                         \
    } while (0)
    BAD("negative lr", AT_OPTIM_SGD, cfg.lr = -0.1f);
    BAD("NaN lr", AT_OPTIM_SGD, cfg.lr = NAN);
    BAD("infinite lr", AT_OPTIM_ADAM, cfg.lr = INFINITY);
    BAD("momentum 1", AT_OPTIM_SGD, cfg.momentum = 1.0f);
    BAD("momentum 1.5", AT_OPTIM_SGD, cfg.momentum = 1.5f);
    BAD("negative momentum", AT_OPTIM_SGD, cfg.momentum = -0.1f);
    BAD("nesterov without momentum", AT_OPTIM_SGD, cfg.nesterov = true);
    BAD("nesterov with dampening", AT_OPTIM_SGD,
        (cfg.nesterov = true, cfg.momentum = 0.9f, cfg.dampening = 0.1f));
    BAD("negative weight decay", AT_OPTIM_SGD, cfg.weight_decay = -1e-4f);
    BAD("adam beta1 1", AT_OPTIM_ADAM, cfg.beta1 = 1.0f);
    BAD("adam beta2 1", AT_OPTIM_ADAM, cfg.beta2 = 1.0f);
    BAD("adam eps 0", AT_OPTIM_ADAM, cfg.eps = 0.0f);
    BAD("adam negative lr", AT_OPTIM_ADAM, cfg.lr = -1e-3f);
    BAD("unknown kind", AT_OPTIM_SGD, cfg.kind = (at_optim_kind)7);
#undef BAD
    for (int i = 0; i < nb; i++) {
        at_optim *o = (at_optim *)1;
        at_status s = at_optim_create(&o, net, &bad[i].c);
        CHECK_MSG(s == AT_ERR_ARG, "%s: got %s", bad[i].what, at_status_name(s));
        CHECK_MSG(o == NULL, "%s: *out not cleared", bad[i].what);
        CHECK_MSG(at_error_message()[0] != '\0', "%s: no message", bad[i].what);
        if (s == AT_OK) at_optim_free(o);
    }
    /* The edges that are valid: lr 0, momentum 0, nesterov with momentum. */
    at_optim_config ok = at_optim_defaults(AT_OPTIM_SGD);
    ok.lr = 0.0f;
    ok.momentum = 0.99f;
    ok.nesterov = true;
    at_optim *o = NULL;
    CHECK_OK(at_optim_create(&o, net, &ok));
    at_optim_free(o);
    at_net_free(net);
}

/* Large buffers are updated by several threads in ranges: the result must not depend on how
 * many, for every update rule (the plain-momentum fast path and the general loop). */
static void run_steps(const at_optim_config *c, int threads, float *w_out, size_t n) {
    at_net *net = linear_net(300, 200);
    if (!net) return;
    CHECK(at_net_num_params(net) == n);
    at_set_threads(threads);
    at_rng r;
    at_rng_seed(&r, 42);
    float *w = at_net_params(net), *g = at_net_grads(net);
    for (size_t i = 0; i < n; i++) w[i] = 2.0f * at_rng_uniform(&r) - 1.0f;
    at_optim *o = NULL;
    CHECK_OK(at_optim_create(&o, net, c));
    for (int step = 0; o && step < 3; step++) {
        for (size_t i = 0; i < n; i++) g[i] = 2.0f * at_rng_uniform(&r) - 1.0f;
        CHECK_OK(at_optim_step(o));
    }
    memcpy(w_out, w, sizeof(float) * n);
    at_optim_free(o);
    at_net_free(net);
    at_set_threads(1);
}

static void test_optim_thread_count(void) {
    enum { N = 300 * 200 + 200 };
    static float one[N], two[N];
    const struct { at_optim_kind kind; float mu, wd; bool nesterov, decoupled; const char *label; } cases[] = {
        {AT_OPTIM_SGD, 0.9f, 0.0f, false, false, "sgd momentum"},
        {AT_OPTIM_SGD, 0.9f, 5e-4f, true, false, "sgd nesterov+wd"},
        {AT_OPTIM_SGD, 0.0f, 0.0f, false, false, "sgd"},
        {AT_OPTIM_SGD, 0.9f, 1e-2f, false, true, "sgdw"},
        {AT_OPTIM_ADAM, 0.0f, 1e-3f, false, false, "adam"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        at_optim_config c = at_optim_defaults(cases[k].kind);
        c.lr = 0.05f;
        c.momentum = cases[k].mu;
        c.weight_decay = cases[k].wd;
        c.nesterov = cases[k].nesterov;
        c.decoupled = cases[k].decoupled;
        run_steps(&c, 1, one, N);
        run_steps(&c, 2, two, N);
        CHECK_MSG(memcmp(one, two, sizeof one) == 0, "%s: 1 and 2 threads differ", cases[k].label);
    }
}

/* at_rng_fill_uniform: the same draws as at_rng_uniform one by one, and the same state after. */
static void test_rng_fill_uniform(void) {
    at_rng a, b;
    at_rng_seed(&a, 7);
    at_rng_seed(&b, 7);
    float filled[1000];
    at_rng_fill_uniform(&a, filled, 1000);
    int same = 1;
    for (int i = 0; i < 1000; i++) same &= filled[i] == at_rng_uniform(&b);
    CHECK_MSG(same, "at_rng_fill_uniform differs from at_rng_uniform");
    CHECK(at_rng_next(&a) == at_rng_next(&b));
}

int main(void) {
    at_set_threads(1);
    test_cross_entropy_values();
    test_label_smoothing();
    test_cross_entropy_edges();
    test_soft_targets();
    test_mse();
    test_sgd();
    test_adam();
    test_invalid_configs();
    test_optim_thread_count();
    test_rng_fill_uniform();
    return tu_finish("test_loss_optim");
}
