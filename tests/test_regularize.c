/* The regularization suite against hand-computed values, central differences and statistical
 * properties: penalties and their selection, proximal L1, max-norm, clipping, decoupled decay,
 * Dropout / Dropout2d, input noise, augmentation, Gamma / Beta sampling, mixup, soft targets,
 * early stopping, and the training loop with everything switched on (determinism, no crash). */
#include "advtrain.h"
#include "testutil.h"

#include <stdint.h>

/* fc1 = Linear(3, 2), fc2 = Linear(2, 2), with the weights below. */
static at_net *hand_net(void) {
    at_layer_desc d[2];
    memset(d, 0, sizeof d);
    d[0].kind = d[1].kind = AT_LAYER_LINEAR;
    strcpy(d[0].name, "fc1");
    strcpy(d[1].name, "fc2");
    d[0].out = 2;
    d[1].out = 2;
    at_net *net = NULL;
    CHECK_OK(at_net_create(&net, d, 2, 3, 1, 1));
    if (!net) return NULL;
    static const float w1[6] = {0.5f, -1.0f, 0.0f, 2.0f, -0.25f, 1.5f}, b1[2] = {0.1f, -0.2f};
    static const float w2[4] = {1.0f, -2.0f, 0.5f, 0.0f}, b2[2] = {3.0f, -4.0f};
    float *p = at_net_params(net);
    memcpy(p + at_net_find_tensor(net, "fc1.weight")->offset, w1, sizeof w1);
    memcpy(p + at_net_find_tensor(net, "fc1.bias")->offset, b1, sizeof b1);
    memcpy(p + at_net_find_tensor(net, "fc2.weight")->offset, w2, sizeof w2);
    memcpy(p + at_net_find_tensor(net, "fc2.bias")->offset, b2, sizeof b2);
    return net;
}

static const float *grad_of(at_net *net, const char *name) {
    return at_net_grads(net) + at_net_find_tensor(net, name)->offset;
}

static void test_penalty_values(void) {
    at_net *net = hand_net();
    if (!net) return;
    float pen = -1;
    /* every weight, no bias: sum|w| = 5.25 + 3.5, sum w^2 = 7.5625 + 5.25 */
    at_net_zero_grad(net);
    CHECK_OK(at_l1_regularization(net, NULL, 0.1f, &pen));
    CHECK_NEAR(pen, 0.875, 1e-6);
    static const float sign1[6] = {1, -1, 0, 1, -1, 1}, sign2[4] = {1, -1, 1, 0};
    for (int i = 0; i < 6; i++) CHECK_NEAR(grad_of(net, "fc1.weight")[i], 0.1 * sign1[i], 1e-7);
    for (int i = 0; i < 4; i++) CHECK_NEAR(grad_of(net, "fc2.weight")[i], 0.1 * sign2[i], 1e-7);
    CHECK(grad_of(net, "fc1.bias")[0] == 0.0f && grad_of(net, "fc2.bias")[1] == 0.0f);

    at_net_zero_grad(net);
    CHECK_OK(at_l2_regularization(net, NULL, 0.1f, &pen));
    CHECK_NEAR(pen, 1.28125, 1e-6);
    CHECK_NEAR(grad_of(net, "fc1.weight")[3], 0.2 * 2.0, 1e-7); /* 2*lambda*w, no 1/2 */
    CHECK_NEAR(grad_of(net, "fc2.weight")[1], 0.2 * -2.0, 1e-7);

    /* the tutorial's selection: fc1 only; gradients accumulate (+=) */
    at_reg_select fc1 = {"fc1", false};
    at_net_zero_grad(net);
    for (size_t i = 0; i < at_net_num_params(net); i++) at_net_grads(net)[i] = 1.0f;
    CHECK_OK(at_l1_regularization(net, &fc1, 0.1f, &pen));
    CHECK_NEAR(pen, 0.525, 1e-6);
    CHECK_NEAR(grad_of(net, "fc1.weight")[1], 0.9, 1e-7);
    CHECK_NEAR(grad_of(net, "fc1.weight")[2], 1.0, 1e-7); /* sign(0) = 0 */
    for (int i = 0; i < 4; i++) CHECK(grad_of(net, "fc2.weight")[i] == 1.0f);
    CHECK(grad_of(net, "fc1.bias")[0] == 1.0f);

    /* biases only when asked: + |0.1| + |-0.2| */
    at_reg_select fc1b = {"fc1", true};
    at_net_zero_grad(net);
    CHECK_OK(at_l1_regularization(net, &fc1b, 0.1f, &pen));
    CHECK_NEAR(pen, 0.555, 1e-6);
    CHECK_NEAR(grad_of(net, "fc1.bias")[1], -0.1, 1e-7);
    CHECK(grad_of(net, "fc2.bias")[0] == 0.0f);

    /* elastic net = L1 + L2, in value and gradient */
    at_net_zero_grad(net);
    CHECK_OK(at_elastic_net_regularization(net, &fc1, 0.1f, 0.01f, &pen));
    CHECK_NEAR(pen, 0.525 + 0.075625, 1e-6);
    CHECK_NEAR(grad_of(net, "fc1.weight")[5], 0.1 + 0.02 * 1.5, 1e-7);

    /* kind selection and lists */
    at_reg_select kinds = {"linear", false}, list = {"fc2,fc1", false}, all = {"all", false};
    CHECK_OK(at_l2_regularization(net, &kinds, 0.1f, &pen));
    CHECK_NEAR(pen, 1.28125, 1e-6);
    CHECK_OK(at_l2_regularization(net, &list, 0.1f, &pen));
    CHECK_NEAR(pen, 1.28125, 1e-6);
    CHECK_OK(at_l2_regularization(net, &all, 0.1f, &pen));
    CHECK_NEAR(pen, 1.28125, 1e-6);
    CHECK(at_l1_regularization(net, NULL, -1.0f, &pen) == AT_ERR_ARG);
    CHECK(at_l2_regularization(net, NULL, NAN, &pen) == AT_ERR_ARG);

    /* weight statistics */
    at_tensor_stats ts;
    at_tensor_stats_of(net, 0, &ts);
    CHECK(ts.count == 6 && ts.zeros == 1);
    CHECK_NEAR(ts.l1, 5.25, 1e-9);
    CHECK_NEAR(ts.l2, sqrt(7.5625), 1e-7);
    CHECK(ts.max_abs == 2.0f);
    at_net_free(net);
}

static void test_selection_errors(void) {
    at_net *net = NULL;
    CHECK_OK(at_net_from_spec(&net, "conv:2:3,relu,flatten,linear:3", 1, 5, 5));
    if (!net) return;
    at_reg_select bad = {"fc9", false};
    CHECK(at_reg_check(net, &bad) == AT_ERR_ARG);
    CHECK_MSG(strstr(at_error_message(), "fc9") && strstr(at_error_message(), "0, 3"),
              "message should name the item and the layers: %s", at_error_message());
    at_reg_select relu = {"1", false};
    CHECK(at_reg_check(net, &relu) == AT_ERR_ARG);
    CHECK(strstr(at_error_message(), "no parameters") != NULL);
    at_reg_select comma = {"0,", false}, empty = {"0,,3", false};
    CHECK(at_reg_check(net, &comma) == AT_ERR_ARG);
    CHECK(at_reg_check(net, &empty) == AT_ERR_ARG);
    at_reg_select conv = {"conv", false}, lin = {"linear", false}, named = {"3", false};
    CHECK_OK(at_reg_check(net, &conv));
    CHECK(at_reg_selected(net, &conv, 0) && !at_reg_selected(net, &conv, 1) &&
          !at_reg_selected(net, &conv, 2));
    CHECK(!at_reg_selected(net, &lin, 0) && at_reg_selected(net, &lin, 2));
    CHECK(at_reg_selected(net, &named, 2) && !at_reg_selected(net, &named, 3)); /* 3.bias */
    at_net_free(net);
    /* a kind the model lacks selects nothing: an error, not a silent no-op */
    CHECK_OK(at_net_from_spec(&net, "linear:3", 4, 1, 1));
    if (!net) return;
    CHECK(at_reg_check(net, &conv) == AT_ERR_ARG);
    CHECK(strstr(at_error_message(), "selects no parameters") != NULL);
    at_net_free(net);
}

/* Central differences of the penalty against its gradient, away from the |w| kink. */
static void test_penalty_gradcheck(void) {
    at_net *net = NULL;
    CHECK_OK(at_net_from_spec(&net, "conv:3:3:1:1,relu,flatten,linear:4", 2, 4, 4));
    if (!net) return;
    at_net_init(net, 5);
    at_reg_select sel = {"0,3", true};
    const float l1 = 0.3f, l2 = 0.7f;
    size_t n = at_net_num_params(net);
    float *g = malloc(n * sizeof *g);
    float pen;
    at_net_zero_grad(net);
    CHECK_OK(at_elastic_net_regularization(net, &sel, l1, l2, &pen));
    memcpy(g, at_net_grads(net), n * sizeof *g);
    float *w = at_net_params(net);
    const float h = 1e-3f;
    int checked = 0;
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        if (fabsf(w[i]) < 2 * h) continue;
        float keep = w[i], up, down;
        w[i] = keep + h;
        CHECK_OK(at_elastic_net_regularization(net, &sel, l1, l2, &up));
        w[i] = keep - h;
        CHECK_OK(at_elastic_net_regularization(net, &sel, l1, l2, &down));
        w[i] = keep;
        double fd = ((double)up - down) / (2.0 * h);
        double err = fabs(fd - g[i]) / (1e-3 + fabs(fd));
        if (err > worst) worst = err;
        checked++;
    }
    CHECK(checked > (int)n / 2);
    CHECK_MSG(worst < 2e-2, "penalty gradient vs central differences: worst relative error %g", worst);
    /* and L1/L2 separately add up to the elastic net */
    float a, b;
    CHECK_OK(at_l1_regularization(net, &sel, l1, &a));
    CHECK_OK(at_l2_regularization(net, &sel, l2, &b));
    CHECK_NEAR(a + b, pen, 1e-5 * pen);
    free(g);
    at_net_free(net);
}

static void test_prox_and_max_norm(void) {
    at_net *net = hand_net();
    if (!net) return;
    float *w1 = at_net_params(net) + at_net_find_tensor(net, "fc1.weight")->offset;
    float *b1 = at_net_params(net) + at_net_find_tensor(net, "fc1.bias")->offset;
    static const float start[6] = {0.5f, -0.003f, 0.002f, -1.0f, 0.0f, 0.01f};
    memcpy(w1, start, sizeof start);
    at_reg_select fc1 = {"fc1", false};
    CHECK_OK(at_prox_l1(net, &fc1, 0.01f));
    CHECK_NEAR(w1[0], 0.49, 1e-7);
    CHECK(w1[1] == 0.0f && w1[2] == 0.0f && w1[4] == 0.0f && w1[5] == 0.0f); /* exact zeros */
    CHECK_NEAR(w1[3], -0.99, 1e-7);
    CHECK(b1[0] == 0.1f); /* biases untouched */
    CHECK(at_prox_l1(net, &fc1, -0.1f) == AT_ERR_ARG);
    at_net_free(net);

    /* max-norm: every row of a Linear weight and every conv filter ends with norm <= c; rows
     * already inside are untouched; directions are kept */
    CHECK_OK(at_net_from_spec(&net, "conv:6:3,relu,flatten,linear:5", 2, 6, 6));
    if (!net) return;
    at_net_init(net, 3);
    float *p = at_net_params(net);
    size_t n = at_net_num_params(net);
    for (size_t i = 0; i < n; i++) p[i] *= 8.0f;
    const at_param_info *lw = at_net_find_tensor(net, "3.weight");
    float *row0 = p + lw->offset;
    for (int i = 0; i < lw->shape[1]; i++) row0[i] = 1e-3f; /* a short row */
    float *copy = malloc(n * sizeof *copy);
    memcpy(copy, p, n * sizeof *copy);
    const float c = 1.5f;
    CHECK_OK(at_max_norm(net, NULL, c));
    int clipped = 0;
    for (int t = 0; t < at_net_num_tensors(net); t++) {
        const at_param_info *pi = at_net_tensor(net, t);
        size_t units = (size_t)pi->shape[0], fan = pi->size / units;
        for (size_t u = 0; u < units; u++) {
            const float *r = p + pi->offset + u * fan, *o = copy + pi->offset + u * fan;
            double sq = 0, osq = 0;
            for (size_t i = 0; i < fan; i++) {
                sq += (double)r[i] * r[i];
                osq += (double)o[i] * o[i];
            }
            if (pi->is_bias) {
                CHECK(memcmp(r, o, fan * sizeof *r) == 0);
                continue;
            }
            CHECK_MSG(sqrt(sq) <= c * (1 + 1e-6), "%s unit %zu has norm %g > %g", pi->name, u, sqrt(sq), c);
            if (sqrt(osq) <= c) {
                CHECK(memcmp(r, o, fan * sizeof *r) == 0);
            } else {
                clipped++;
                CHECK_NEAR(sqrt(sq), c, 1e-5);
                for (size_t i = 0; i < fan; i++) CHECK_NEAR(r[i] * sqrt(osq) / sqrt(sq), o[i], 1e-4);
            }
        }
    }
    CHECK(clipped >= 6);
    CHECK(at_max_norm(net, NULL, 0.0f) == AT_ERR_ARG);
    free(copy);
    at_net_free(net);
}

static void test_clip_hand(void) {
    at_net *net = NULL;
    CHECK_OK(at_net_from_spec(&net, "linear:1", 1, 1, 1)); /* one weight, one bias */
    if (!net) return;
    float *g = at_net_grads(net), norm = 0;
    g[0] = 3.0f;
    g[1] = 4.0f;
    CHECK_OK(at_clip_grad_norm(net, 10.0f, &norm));
    CHECK(norm == 5.0f && g[0] == 3.0f && g[1] == 4.0f); /* coefficient >= 1: untouched */
    CHECK_OK(at_clip_grad_norm(net, 1.0f, &norm));
    CHECK(norm == 5.0f);
    CHECK_NEAR(g[0], 3.0 / (5.0 + 1e-6), 1e-7);
    CHECK_NEAR(g[1], 4.0 / (5.0 + 1e-6), 1e-7);
    g[1] = NAN;
    CHECK(at_clip_grad_norm(net, 1.0f, &norm) == AT_ERR_NAN);
    CHECK(at_clip_grad_norm(net, -1.0f, &norm) == AT_ERR_ARG);
    at_net_free(net);
}

/* Coupled and decoupled decay, by hand, on Linear(1,1): w = 1, b = 1, gradients 0.5. */
static void test_decoupled_by_hand(void) {
    at_net *net = NULL;
    CHECK_OK(at_net_from_spec(&net, "linear:1", 1, 1, 1));
    if (!net) return;
    float *p = at_net_params(net), *g = at_net_grads(net);
    for (int decoupled = 0; decoupled < 2; decoupled++) {
        p[0] = p[1] = 1.0f;
        at_optim_config c = at_optim_defaults(AT_OPTIM_SGD);
        c.lr = 0.1f;
        c.momentum = 0.9f;
        c.weight_decay = 0.2f;
        c.decoupled = decoupled;
        at_optim *o = NULL;
        CHECK_OK(at_optim_create(&o, net, &c));
        if (!o) continue;
        at_reg_select weights = {NULL, false};
        CHECK_OK(at_optim_set_decay_select(o, &weights));
        for (int s = 0; s < 2; s++) {
            g[0] = g[1] = 0.5f;
            CHECK_OK(at_optim_step(o));
        }
        /* decoupled: w1 = 0.98 - 0.05, buf = 0.95, w2 = 0.93*0.98 - 0.095
         * coupled:   g = 0.7, w1 = 0.93; g = 0.686, buf = 1.316, w2 = 0.93 - 0.1316 */
        CHECK_NEAR(p[0], decoupled ? 0.8164 : 0.7984, 1e-6);
        CHECK_NEAR(p[1], 1.0 - 0.05 - 0.095, 1e-6); /* the bias is not decayed */
        at_optim_free(o);
    }
    at_net_free(net);
}

/* ------------------------------------------------------------ dropout */

static void test_dropout(void) {
    enum { D = 1000, N = 20 };
    at_net *net = NULL;
    CHECK_OK(at_net_from_spec(&net, "dropout:0.3", D, 1, 1));
    if (!net) return;
    float *x = malloc(sizeof(float) * N * D), *dx = malloc(sizeof(float) * N * D);
    float *dy = malloc(sizeof(float) * N * D);
    at_rng r;
    at_rng_seed(&r, 1);
    for (int i = 0; i < N * D; i++) x[i] = 0.5f + at_rng_uniform(&r);
    const float *y;
    CHECK_OK(at_net_forward(net, x, N, &y)); /* eval mode: the identity */
    CHECK(memcmp(y, x, sizeof(float) * N * D) == 0);
    at_net_set_training(net, true);
    double zeros = 0, ratio_sum = 0;
    const int passes = 50;
    int bad = 0;
    for (int pass = 0; pass < passes; pass++) {
        CHECK_OK(at_net_forward(net, x, N, &y));
        for (int i = 0; i < N * D; i++) {
            if (y[i] == 0.0f) zeros++;
            else if (fabsf(y[i] - x[i] / 0.7f) > 1e-6f) bad++;
            ratio_sum += y[i] / x[i];
        }
    }
    CHECK_MSG(bad == 0, "%d survivors not scaled by 1/(1-p)", bad);
    double total = (double)passes * N * D;
    CHECK_NEAR(zeros / total, 0.3, 0.005);    /* drop rate p (4 sigma: 0.0037) */
    CHECK_NEAR(ratio_sum / total, 1.0, 0.01); /* unbiased: E[y] = x (4 sigma: 0.0079) */
    /* backward applies the forward's mask */
    for (int i = 0; i < N * D; i++) dy[i] = 1.0f;
    float *ycopy = malloc(sizeof(float) * N * D);
    memcpy(ycopy, y, sizeof(float) * N * D);
    CHECK_OK(at_net_backward(net, dy, AT_GRAD_INPUT, dx));
    bad = 0;
    for (int i = 0; i < N * D; i++) bad += fabsf(dx[i] * x[i] - ycopy[i]) > 1e-5f;
    CHECK_MSG(bad == 0, "%d input-gradient elements disagree with the forward mask", bad);
    /* a fresh pass draws a fresh mask */
    CHECK_OK(at_net_forward(net, x, N, &y));
    CHECK(memcmp(y, ycopy, sizeof(float) * N * D) != 0);
    free(ycopy);
    free(x);
    free(dx);
    free(dy);
    at_net_free(net);
}

static void test_dropout2d(void) {
    enum { C = 8, H = 5, W = 4, N = 64 };
    const int size = C * H * W;
    at_layer_desc d[4];
    int nl = 4;
    CHECK_OK(at_spec_parse("dropout2d,dropout2d:0.25", d, &nl));
    CHECK(nl == 2 && d[0].kind == AT_LAYER_DROPOUT2D && d[0].alpha == 0.5f && d[1].alpha == 0.25f);
    at_net *net = NULL;
    CHECK_OK(at_net_from_spec(&net, "conv:8:3:1:1,dropout2d:0.5", 2, H, W));
    if (!net) return;
    at_net_free(net);
    CHECK_OK(at_net_from_spec(&net, "dropout2d:0.5", C, H, W));
    if (!net) return;
    float *x = malloc(sizeof(float) * N * size), *dx = malloc(sizeof(float) * N * size);
    for (int i = 0; i < N * size; i++) x[i] = 1.0f + (float)(i % 7);
    const float *y;
    CHECK_OK(at_net_forward(net, x, N, &y));
    CHECK(memcmp(y, x, sizeof(float) * N * size) == 0); /* eval: identity */
    at_net_set_training(net, true);
    double dropped = 0, ratio = 0;
    int mixed = 0, passes = 40;
    for (int pass = 0; pass < passes; pass++) {
        CHECK_OK(at_net_forward(net, x, N, &y));
        for (int s = 0; s < N; s++)
            for (int c = 0; c < C; c++) {
                const float *py = y + s * size + c * H * W, *px = x + s * size + c * H * W;
                int z = 0, kept = 0;
                for (int i = 0; i < H * W; i++) {
                    z += py[i] == 0.0f;
                    kept += fabsf(py[i] - 2.0f * px[i]) < 1e-6f;
                    ratio += py[i] / px[i];
                }
                if (z == H * W) dropped++;
                else if (kept != H * W) mixed++;
            }
    }
    CHECK_MSG(mixed == 0, "%d channels were partly dropped: Dropout2d drops whole channels", mixed);
    double decisions = (double)passes * N * C;
    CHECK_NEAR(dropped / decisions, 0.5, 0.03); /* 4 sigma: 0.022 */
    CHECK_NEAR(ratio / (decisions * H * W), 1.0, 0.06);
    /* backward zeroes the same channels */
    float *dy = malloc(sizeof(float) * N * size);
    for (int i = 0; i < N * size; i++) dy[i] = 1.0f;
    CHECK_OK(at_net_forward(net, x, N, &y));
    CHECK_OK(at_net_backward(net, dy, AT_GRAD_INPUT, dx));
    int bad = 0;
    for (int i = 0; i < N * size; i++) bad += (y[i] == 0.0f) != (dx[i] == 0.0f);
    CHECK(bad == 0);
    free(dy);
    free(x);
    free(dx);
    at_net_free(net);
}

/* ------------------------------------------------------------ input-side */

static void test_noise(void) {
    enum { N = 100000 };
    float *x = malloc(sizeof(float) * N);
    for (int i = 0; i < N; i++) x[i] = 0.5f;
    at_gaussian_noise(x, 100, N / 100, 0.1f, false, 11, 0); /* 100 samples' generators */
    double m = 0, v = 0;
    for (int i = 0; i < N; i++) m += x[i];
    m /= N;
    for (int i = 0; i < N; i++) v += (x[i] - m) * (x[i] - m);
    CHECK_NEAR(m, 0.5, 0.0015);
    CHECK_NEAR(sqrt(v / N), 0.1, 0.0015);
    for (int i = 0; i < N; i++) x[i] = 0.5f;
    at_gaussian_noise(x, 1, N, 1.0f, true, 12, 0);
    int lo = 0, hi = 0, out = 0;
    for (int i = 0; i < N; i++) {
        lo += x[i] == 0.0f;
        hi += x[i] == 1.0f;
        out += x[i] < 0.0f || x[i] > 1.0f;
    }
    CHECK(out == 0 && lo > N / 5 && hi > N / 5); /* P(|z| > 0.5) / 2 = 0.31 each */
    free(x);
}

static void test_augment(void) {
    enum { C = 2, H = 5, W = 6, N = 2000 };
    const int size = C * H * W;
    float *img = malloc(sizeof(float) * size), *x = malloc(sizeof(float) * N * size);
    for (int i = 0; i < size; i++) img[i] = 1.0f + (float)i; /* every pixel distinct, non-zero */
    for (int s = 0; s < N; s++) memcpy(x + s * size, img, sizeof(float) * size);
    at_augment_config none = {false, 0};
    at_augment_batch(x, N, C, H, W, &none, 5, 0);
    CHECK(memcmp(x, img, sizeof(float) * size) == 0);

    /* flip only: each image is the original or its mirror, half the time each */
    at_augment_config flip = {true, 0};
    at_augment_batch(x, N, C, H, W, &flip, 5, 0);
    int flipped = 0, other = 0;
    for (int s = 0; s < N; s++) {
        const float *o = x + s * size;
        bool same = memcmp(o, img, sizeof(float) * size) == 0, mirror = true;
        for (int c = 0; c < C; c++)
            for (int i = 0; i < H; i++)
                for (int j = 0; j < W; j++)
                    mirror &= o[(c * H + i) * W + j] == img[(c * H + i) * W + (W - 1 - j)];
        flipped += mirror;
        other += !same && !mirror;
    }
    CHECK(other == 0);
    CHECK_NEAR((double)flipped / N, 0.5, 0.05);

    /* crop with padding 2: each image is the original shifted by (sy, sx) in [-2, 2]^2 with zero
     * fill, both channels alike, and every shift occurs */
    for (int s = 0; s < N; s++) memcpy(x + s * size, img, sizeof(float) * size);
    at_augment_config crop = {false, 2};
    at_augment_batch(x, N, C, H, W, &crop, 6, 0);
    int seen[5][5] = {{0}}, unmatched = 0;
    for (int s = 0; s < N; s++) {
        const float *o = x + s * size;
        bool found = false;
        for (int sy = -2; sy <= 2 && !found; sy++)
            for (int sx = -2; sx <= 2 && !found; sx++) {
                bool ok = true;
                for (int c = 0; c < C && ok; c++)
                    for (int i = 0; i < H && ok; i++)
                        for (int j = 0; j < W && ok; j++) {
                            int si = i + sy, sj = j + sx;
                            float want = si < 0 || si >= H || sj < 0 || sj >= W ? 0.0f : img[(c * H + si) * W + sj];
                            ok = o[(c * H + i) * W + j] == want;
                        }
                if (ok) {
                    found = true;
                    seen[sy + 2][sx + 2]++;
                }
            }
        unmatched += !found;
    }
    CHECK(unmatched == 0);
    for (int a = 0; a < 5; a++)
        for (int b = 0; b < 5; b++) CHECK_MSG(seen[a][b] > 30, "shift (%d,%d) seen %d times", a - 2, b - 2, seen[a][b]);
    free(img);
    free(x);
}

static void test_gamma_beta(void) {
    enum { N = 200000 };
    at_rng r;
    at_rng_seed(&r, 99);
    static const double shapes[] = {0.2, 0.5, 1.0, 2.5, 9.0};
    for (size_t k = 0; k < sizeof shapes / sizeof *shapes; k++) {
        double a = shapes[k], m = 0, m2 = 0;
        int neg = 0;
        for (int i = 0; i < N; i++) {
            double v = at_rng_gamma(&r, a);
            neg += !(v >= 0);
            m += v;
            m2 += v * v;
        }
        m /= N;
        double var = m2 / N - m * m;
        CHECK(neg == 0);
        /* mean a, variance a; 5 sigma on the mean, 5% on the variance */
        CHECK_MSG(fabs(m - a) < 5 * sqrt(a / N), "Gamma(%g): mean %g", a, m);
        CHECK_MSG(fabs(var - a) < 0.05 * a, "Gamma(%g): variance %g", a, var);
    }
    static const double ab[][2] = {{0.2, 0.2}, {1.0, 1.0}, {2.0, 5.0}};
    for (size_t k = 0; k < 3; k++) {
        double a = ab[k][0], b = ab[k][1], m = 0, m2 = 0;
        int out = 0;
        for (int i = 0; i < N; i++) {
            double v = at_rng_beta(&r, a, b);
            out += !(v >= 0 && v <= 1);
            m += v;
            m2 += v * v;
        }
        m /= N;
        double var = m2 / N - m * m, want_m = a / (a + b),
               want_v = a * b / ((a + b) * (a + b) * (a + b + 1));
        CHECK(out == 0);
        CHECK_MSG(fabs(m - want_m) < 5 * sqrt(want_v / N), "Beta(%g,%g): mean %g, want %g", a, b, m, want_m);
        CHECK_MSG(fabs(var - want_v) < 0.03 * want_v, "Beta(%g,%g): var %g, want %g", a, b, var, want_v);
    }
    CHECK(isnan(at_rng_gamma(&r, 0.0)) && isnan(at_rng_beta(&r, -1.0, 1.0)));
}

static void test_mixup_and_soft_targets(void) {
    const float x[6] = {1, 2, 3, 4, 5, 6}; /* 3 samples of 2 */
    const int32_t y[3] = {0, 2, 1}, perm[3] = {2, 0, 1};
    float t[9], ox[6], ot[9];
    at_soft_targets(y, 3, 3, 0.3f, t);
    CHECK_NEAR(t[0], 0.8, 1e-7);
    CHECK_NEAR(t[1], 0.1, 1e-7);
    CHECK_NEAR(t[5], 0.8, 1e-7);
    at_mixup(x, t, 3, 2, 3, 0.25f, perm, ox, ot);
    CHECK_NEAR(ox[0], 0.25 * 1 + 0.75 * 5, 1e-6);
    CHECK_NEAR(ox[3], 0.25 * 4 + 0.75 * 2, 1e-6);
    CHECK_NEAR(ot[0], 0.25 * 0.8 + 0.75 * 0.1, 1e-6); /* sample 0 (label 0) with sample 2 (label 1) */
    CHECK_NEAR(ot[1], 0.25 * 0.1 + 0.75 * 0.8, 1e-6);
    for (int i = 0; i < 3; i++) CHECK_NEAR(ot[3 * i] + ot[3 * i + 1] + ot[3 * i + 2], 1.0, 1e-6);

    /* soft-target CE: one-hot rows give the hard-label loss; gradient by central differences */
    float z[9] = {0.3f, -1.2f, 2.0f, 0.0f, 0.5f, -0.5f, 1.0f, 1.0f, 3.0f}, d[9], dh[9], loss, hard;
    float onehot[9];
    at_soft_targets(y, 3, 3, 0.0f, onehot);
    int hits = -1, hard_hits = -2;
    CHECK_OK(at_cross_entropy_soft(z, onehot, 3, 3, &loss, d, &hits));
    CHECK_OK(at_cross_entropy(z, y, 3, 3, 0.0f, &hard, dh, &hard_hits));
    CHECK_NEAR(loss, hard, 1e-6);
    for (int i = 0; i < 9; i++) CHECK_NEAR(d[i], dh[i], 1e-7);
    CHECK(hits == hard_hits);
    int32_t y2[3] = {2, 1, 2};
    at_soft_targets(y2, 3, 3, 0.0f, onehot);
    CHECK_OK(at_cross_entropy_soft(z, onehot, 3, 3, &loss, NULL, &hits));
    CHECK(hits == 3);
    CHECK_OK(at_cross_entropy_soft(z, ot, 3, 3, &loss, d, NULL));
    for (int i = 0; i < 9; i++) {
        float keep = z[i], up, down;
        z[i] = keep + 1e-2f;
        CHECK_OK(at_cross_entropy_soft(z, ot, 3, 3, &up, NULL, NULL));
        z[i] = keep - 1e-2f;
        CHECK_OK(at_cross_entropy_soft(z, ot, 3, 3, &down, NULL, NULL));
        z[i] = keep;
        CHECK_NEAR(d[i], (up - down) / 2e-2, 2e-4);
    }
    float negative[9] = {-0.1f, 0.6f, 0.5f};
    CHECK(at_cross_entropy_soft(z, negative, 1, 3, &loss, NULL, NULL) == AT_ERR_ARG);
}

/* ------------------------------------------------------------ training loop */

/* Regression: train targets 2*(x0 - x1), validation targets 1*(x0 - x1). Starting from zero
 * weights, the validation loss first falls and then rises as the model approaches the training
 * relationship, so it has an interior minimum. */
typedef struct es_data {
    float xt[64 * 4], tt[64], xv[32 * 4], tv[32];
    at_dataset train, val;
} es_data;

static void make_es_data(es_data *d) {
    at_rng r;
    at_rng_seed(&r, 3);
    for (int i = 0; i < 64 * 4; i++) d->xt[i] = at_rng_normal(&r);
    for (int i = 0; i < 32 * 4; i++) d->xv[i] = at_rng_normal(&r);
    for (int i = 0; i < 64; i++) d->tt[i] = 2.0f * (d->xt[4 * i] - d->xt[4 * i + 1]);
    for (int i = 0; i < 32; i++) d->tv[i] = d->xv[4 * i] - d->xv[4 * i + 1];
    at_dataset base;
    memset(&base, 0, sizeof base);
    base.c = 4;
    base.h = base.w = 1;
    base.target_dim = 1;
    d->train = d->val = base;
    d->train.n = 64;
    d->train.features = d->xt;
    d->train.targets = d->tt;
    d->val.n = 32;
    d->val.features = d->xv;
    d->val.targets = d->tv;
}

typedef struct es_log {
    int epochs, nparams;
    float val_loss[200];
    float params[200][8];
    int best_epoch[200];
    bool stopping[200];
} es_log;

static bool es_record(void *user, const at_epoch_stats *s) {
    es_log *l = ((void **)user)[0];
    at_net *net = ((void **)user)[1];
    int e = s->epoch - 1;
    l->epochs = s->epoch;
    l->val_loss[e] = s->val_loss;
    memcpy(l->params[e], at_net_params(net), sizeof(float) * l->nparams);
    l->best_epoch[e] = s->best_epoch;
    l->stopping[e] = s->stopping;
    return true;
}

/* Keras's rule, independently: improvement if current + min_delta < best. */
static int expected_best(const es_log *l, int upto, float min_delta) {
    double best = INFINITY;
    int b = 0;
    for (int e = 0; e < upto; e++)
        if (l->val_loss[e] + min_delta < best) {
            best = l->val_loss[e];
            b = e + 1;
        }
    return b;
}

static void run_es(es_data *d, int patience, float min_delta, int epochs, es_log *log, at_net **out) {
    at_net *net = NULL;
    CHECK_OK(at_net_from_spec(&net, "linear:1", 4, 1, 1)); /* zero weights */
    *out = net;
    if (!net) return;
    memset(log, 0, sizeof *log);
    log->nparams = (int)at_net_num_params(net);
    void *user[2] = {log, net};
    at_train_callbacks cb = {user, NULL, es_record};
    at_train_config cfg = at_train_defaults();
    cfg.epochs = epochs;
    cfg.batch = 16;
    cfg.optim.lr = 0.005f;
    cfg.optim.momentum = 0.0f;
    cfg.early_stop = patience;
    cfg.min_delta = min_delta;
    CHECK_OK(at_train(net, &d->train, &d->val, NULL, &cfg, &cb));
}

static void test_early_stopping(void) {
    es_data d;
    make_es_data(&d);
    es_log *log = malloc(sizeof *log);
    at_net *net;

    /* patience 3: stops 3 epochs after the best and restores the best epoch's weights */
    run_es(&d, 3, 0.0f, 200, log, &net);
    if (net) {
        int best = expected_best(log, log->epochs, 0.0f);
        CHECK_MSG(best > 2 && log->epochs == best + 3 && log->epochs < 200,
                  "best epoch %d, stopped after %d (must be an interior minimum + patience)", best, log->epochs);
        CHECK(log->stopping[log->epochs - 1] && !log->stopping[log->epochs - 2]);
        CHECK(log->best_epoch[log->epochs - 1] == best);
        /* the last epoch's weights differ from the best's, and the restored ones are the best's */
        CHECK(memcmp(log->params[log->epochs - 1], log->params[best - 1], sizeof(float) * log->nparams) != 0);
        CHECK_MSG(memcmp(at_net_params(net), log->params[best - 1], sizeof(float) * log->nparams) == 0,
                  "early stopping did not restore epoch %d's weights", best);
        at_net_free(net);
    }

    /* a patience longer than the run: no early stop, but the best weights are still restored */
    run_es(&d, 500, 0.0f, 60, log, &net);
    if (net) {
        int best = expected_best(log, 60, 0.0f);
        CHECK(log->epochs == 60 && best < 60);
        CHECK(memcmp(at_net_params(net), log->params[best - 1], sizeof(float) * log->nparams) == 0);
        at_net_free(net);
    }

    /* min_delta larger than any change: only the first epoch counts */
    run_es(&d, 4, 1e6f, 200, log, &net);
    if (net) {
        CHECK(log->epochs == 5 && log->best_epoch[4] == 1);
        CHECK(memcmp(at_net_params(net), log->params[0], sizeof(float) * log->nparams) == 0);
        at_net_free(net);
    }
    free(log);

    /* early stopping needs a validation set */
    at_net *n2 = NULL;
    CHECK_OK(at_net_from_spec(&n2, "linear:1", 4, 1, 1));
    at_train_config cfg = at_train_defaults();
    cfg.early_stop = 2;
    CHECK(at_train(n2, &d.train, NULL, NULL, &cfg, NULL) == AT_ERR_ARG);
    CHECK(strstr(at_error_message(), "validation") != NULL);
    cfg = at_train_defaults();
    cfg.label_smoothing = 0.1f;
    CHECK(at_train(n2, &d.train, NULL, NULL, &cfg, NULL) == AT_ERR_ARG);
    cfg = at_train_defaults();
    cfg.prox_l1 = true;
    CHECK(at_train(n2, &d.train, NULL, NULL, &cfg, NULL) == AT_ERR_ARG);
    cfg = at_train_defaults();
    cfg.augment.flip = true;
    CHECK(at_train(n2, &d.train, NULL, NULL, &cfg, NULL) == AT_ERR_ARG);
    CHECK(strstr(at_error_message(), "image") != NULL);
    cfg = at_train_defaults();
    cfg.l1 = 0.1f;
    cfg.reg_select.layers = "fc1";
    CHECK(at_train(n2, &d.train, NULL, NULL, &cfg, NULL) == AT_ERR_ARG);
    at_net_free(n2);
}

/* at_train_defaults() still trains exactly like the plain loop: shuffle, forward, loss, backward,
 * SGD step. */
static void test_defaults_unchanged(void) {
    es_data d;
    make_es_data(&d);
    at_net *a = NULL, *b = NULL;
    CHECK_OK(at_net_from_spec(&a, "linear:3,tanh,linear:1", 4, 1, 1));
    CHECK_OK(at_net_from_spec(&b, "linear:3,tanh,linear:1", 4, 1, 1));
    if (!a || !b) return;
    at_net_init(a, 8);
    at_net_init(b, 8);
    at_train_config cfg = at_train_defaults();
    cfg.epochs = 3;
    cfg.batch = 10;
    cfg.optim.momentum = 0.9f;
    CHECK_OK(at_train(a, &d.train, NULL, NULL, &cfg, NULL));

    at_optim *o = NULL;
    CHECK_OK(at_optim_create(&o, b, &cfg.optim));
    at_rng r;
    at_rng_seed(&r, cfg.seed);
    int32_t idx[64];
    for (int i = 0; i < 64; i++) idx[i] = i;
    float x[10 * 4], t[10], dl[10];
    for (int e = 0; e < cfg.epochs && o; e++) {
        at_rng_shuffle(&r, idx, 64);
        at_net_set_training(b, true);
        for (int first = 0; first < 64; first += 10) {
            int n = first + 10 <= 64 ? 10 : 64 - first;
            at_dataset_batch(&d.train, idx + first, n, x, NULL, t);
            const float *out;
            float loss;
            CHECK_OK(at_net_forward(b, x, n, &out));
            CHECK_OK(at_mse(out, t, n, 1, &loss, dl));
            at_net_zero_grad(b);
            CHECK_OK(at_net_backward(b, dl, AT_GRAD_PARAMS, NULL));
            CHECK_OK(at_optim_step(o));
        }
    }
    at_optim_free(o);
    CHECK_MSG(memcmp(at_net_params(a), at_net_params(b), sizeof(float) * at_net_num_params(a)) == 0,
              "at_train with the defaults no longer matches the plain training loop");
    at_net_free(a);
    at_net_free(b);
}

/* A small image set in memory: 96 images 1x8x8 of 3 classes (a bright row, column or diagonal). */
static void make_images(at_dataset *ds, int n, uint64_t seed) {
    memset(ds, 0, sizeof *ds);
    ds->n = n;
    ds->c = 1;
    ds->h = ds->w = 8;
    ds->num_classes = 3;
    ds->images = malloc((size_t)n * 64);
    ds->labels = malloc((size_t)n * sizeof(int32_t));
    at_rng r;
    at_rng_seed(&r, seed);
    for (int s = 0; s < n; s++) {
        int cls = s % 3, pos = 1 + (int)at_rng_below(&r, 6);
        ds->labels[s] = cls;
        for (int i = 0; i < 8; i++)
            for (int j = 0; j < 8; j++) {
                bool on = cls == 0 ? i == pos : cls == 1 ? j == pos : i == j;
                int v = (on ? 200 : 20) + (int)at_rng_below(&r, 40);
                ds->images[s * 64 + i * 8 + j] = (uint8_t)v;
            }
    }
}

static bool count_epochs(void *user, const at_epoch_stats *s) {
    ++*(int *)user;
    return isfinite(s->train_loss) && isfinite(s->val_loss);
}

static void test_everything_on(void) {
    at_set_threads(2); /* the determinism check covers a batch split across threads */
    at_dataset train, val;
    make_images(&train, 96, 1);
    make_images(&val, 30, 2);
    at_net *a = NULL, *b = NULL;
    const char *spec = "conv:4:3:1:1,relu,dropout2d:0.2,maxpool:2,flatten,linear:16,relu,dropout:0.3,linear:3";
    CHECK_OK(at_net_from_spec(&a, spec, 1, 8, 8));
    CHECK_OK(at_net_from_spec(&b, spec, 1, 8, 8));
    if (!a || !b) return;
    at_train_config cfg = at_train_defaults();
    cfg.epochs = 6;
    cfg.batch = 16;
    cfg.optim = at_optim_defaults(AT_OPTIM_ADAMW);
    cfg.optim.lr = 0.01f;
    cfg.l1 = 1e-4f;
    cfg.l2 = 1e-4f;
    cfg.max_norm = 3.0f;
    cfg.reg_select.layers = "conv,linear";
    cfg.label_smoothing = 0.1f;
    cfg.clip_grad = 1.0f;
    cfg.input_noise = 0.05f;
    cfg.augment.flip = true;
    cfg.augment.crop_pad = 1;
    cfg.mixup_alpha = 0.4f;
    cfg.schedule = at_schedule_defaults(AT_SCHEDULE_ONECYCLE);
    cfg.early_stop = 10;
    cfg.monitor = AT_MONITOR_VAL_METRIC;
    int ea = 0, eb = 0;
    at_train_callbacks ca = {&ea, NULL, count_epochs}, cb = {&eb, NULL, count_epochs};
    at_net_init(a, 4);
    at_net_init(b, 4);
    CHECK_OK(at_train(a, &train, &val, &val, &cfg, &ca));
    CHECK_OK(at_train(b, &train, &val, &val, &cfg, &cb));
    CHECK(ea == 6 && eb == 6);
    CHECK_MSG(memcmp(at_net_params(a), at_net_params(b), sizeof(float) * at_net_num_params(a)) == 0,
              "same seed and settings must give the same weights");
    /* each input-side option changes the run (it is wired in) */
    const char *what[] = {"input noise", "flip", "crop", "mixup"};
    for (int k = 0; k < 4; k++) {
        at_train_config c2 = cfg;
        if (k == 0) c2.input_noise = 0.0f;
        if (k == 1) c2.augment.flip = false;
        if (k == 2) c2.augment.crop_pad = 0;
        if (k == 3) c2.mixup_alpha = 0.0f;
        at_net_init(b, 4);
        CHECK_OK(at_train(b, &train, &val, &val, &c2, NULL));
        CHECK_MSG(memcmp(at_net_params(a), at_net_params(b), sizeof(float) * at_net_num_params(a)) != 0,
                  "turning off %s changed nothing", what[k]);
    }
    /* max-norm held through training */
    for (int t = 0; t < at_net_num_tensors(a); t++) {
        const at_param_info *p = at_net_tensor(a, t);
        if (p->is_bias) continue;
        size_t units = (size_t)p->shape[0], fan = p->size / units;
        for (size_t u = 0; u < units; u++) {
            double sq = 0;
            for (size_t i = 0; i < fan; i++) sq += pow(at_net_params(a)[p->offset + u * fan + i], 2);
            CHECK(sqrt(sq) <= 3.0 * (1 + 1e-6));
        }
    }
    at_dataset_free(&train);
    at_dataset_free(&val);
    at_net_free(a);
    at_net_free(b);
    at_set_threads(1);
}

/* Mixup inside at_train mixes each sample with a different one. One full-batch SGD step from
 * zero weights on one-hot inputs e_i with targets t_i gives w_j = c * sum_i xm_ij * tm_i: without
 * mixing (or mixing a sample with itself) that is c * t_j; with real partners it differs, while
 * sum_j w_j = c * sum_i tm_i = c * sum_i t_i is the same either way. */
static void test_mixup_in_training(void) {
    enum { N = 8 };
    float x[N * N], t[N];
    memset(x, 0, sizeof x);
    for (int i = 0; i < N; i++) {
        x[i * N + i] = 1.0f;
        t[i] = (float)(i * i) - 10.0f;
    }
    at_dataset d;
    memset(&d, 0, sizeof d);
    d.n = N;
    d.c = N;
    d.h = d.w = 1;
    d.features = x;
    d.targets = t;
    d.target_dim = 1;
    float w[2][N];
    for (int mix = 0; mix < 2; mix++) {
        at_net *net = NULL;
        CHECK_OK(at_net_from_spec(&net, "linear:1", N, 1, 1)); /* zero weights */
        if (!net) return;
        at_train_config cfg = at_train_defaults();
        cfg.epochs = 1;
        cfg.batch = N;
        cfg.optim.lr = 0.1f;
        cfg.mixup_alpha = mix ? 1.0f : 0.0f;
        CHECK_OK(at_train(net, &d, NULL, NULL, &cfg, NULL));
        memcpy(w[mix], at_net_params(net) + at_net_find_tensor(net, "0.weight")->offset, sizeof w[mix]);
        at_net_free(net);
    }
    double s0 = 0, s1 = 0, diff = 0;
    for (int j = 0; j < N; j++) {
        s0 += w[0][j];
        s1 += w[1][j];
        diff += fabs(w[0][j] - w[1][j]);
        CHECK_NEAR(w[0][j], 0.1 * 2.0 / N * t[j], 1e-5); /* c * t_j without mixup */
    }
    CHECK_NEAR(s1, s0, 1e-4 * (1 + fabs(s0)));
    CHECK_MSG(diff > 0.05, "mixup did not mix samples with other samples (weight change %g)", diff);
}

/* Proximal L1 gives exact zeros where plain (subgradient) L1 of the same strength gives none. */
static void test_prox_training(void) {
    at_data data;
    CHECK_OK(at_data_load(&data, "synthetic"));
    int zeros[2] = {0, 0};
    for (int prox = 0; prox < 2; prox++) {
        at_net *net = NULL;
        CHECK_OK(at_net_from_spec(&net, "seed-mlp", 10, 1, 1));
        if (!net) break;
        at_net_init(net, 1);
        at_train_config cfg = at_train_defaults();
        cfg.epochs = 100;
        cfg.batch = 8;
        cfg.optim.lr = 0.01f;
        cfg.l1 = 0.05f;
        cfg.prox_l1 = prox;
        cfg.reg_select.layers = "fc1";
        CHECK_OK(at_train(net, &data.train, NULL, NULL, &cfg, NULL));
        at_tensor_stats s;
        at_tensor_stats_of(net, 0, &s);
        zeros[prox] = (int)s.zeros;
        at_tensor_stats_of(net, 2, &s); /* fc2.weight: not selected */
        CHECK(s.zeros == 0);
        at_net_free(net);
    }
    CHECK_MSG(zeros[0] == 0, "plain L1 gave %d exact zeros", zeros[0]);
    CHECK_MSG(zeros[1] >= 250, "proximal L1 gave only %d exact zeros of 500 in fc1", zeros[1]);
    at_data_free(&data);
}

/* A sample's crop, flip and noise follow its index alone: the same whether it is augmented in one
 * batch or in two halves (as two ranks would), with 1 or 2 threads; another key draws others. */
static void test_draws_per_sample(void) {
    enum { C = 3, H = 8, W = 8, N = 64, D = C * H * W };
    static float whole[N * D], halves[N * D], other[N * D];
    at_augment_config aug = {true, 3};
    for (int i = 0; i < N * D; i++) whole[i] = 0.25f + 0.5f * (float)((i * 7919) % 1000) / 1000.0f;
    memcpy(halves, whole, sizeof whole);
    memcpy(other, whole, sizeof whole);
    const int threads = at_get_threads();
    at_set_threads(2);
    at_augment_batch(whole, N, C, H, W, &aug, 77, 1000);
    at_gaussian_noise(whole, N, D, 0.05f, true, 78, 1000);
    at_set_threads(1);
    for (int h = 0; h < 2; h++) {
        float *part = halves + (size_t)h * (N / 2) * D;
        at_augment_batch(part, N / 2, C, H, W, &aug, 77, 1000 + h * (N / 2));
        at_gaussian_noise(part, N / 2, D, 0.05f, true, 78, 1000 + h * (N / 2));
    }
    CHECK(memcmp(whole, halves, sizeof whole) == 0);
    at_augment_batch(other, N, C, H, W, &aug, 79, 1000);
    CHECK(memcmp(whole, other, sizeof whole) != 0);
    at_set_threads(threads);
}

int main(void) {
    /* Tiny models: threads would only add synchronisation (and stall on a loaded machine). */
    at_set_threads(1);
    test_penalty_values();
    test_selection_errors();
    test_penalty_gradcheck();
    test_prox_and_max_norm();
    test_clip_hand();
    test_decoupled_by_hand();
    test_dropout();
    test_dropout2d();
    test_noise();
    test_augment();
    test_draws_per_sample();
    test_gamma_beta();
    test_mixup_and_soft_targets();
    test_mixup_in_training();
    test_early_stopping();
    test_defaults_unchanged();
    test_everything_on();
    test_prox_training();
    return tu_finish("test_regularize");
}
