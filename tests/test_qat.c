#define _DEFAULT_SOURCE /* mkdtemp */
/* Quantization-aware training (src/quant/qat.c): the rounded network computes what the int8
 * model at_quantize makes of it (every int8 tensor the same values, up to a step where
 * requantization's fixed point and the float sum round a tie apart); straight-through
 * gradients against central differences of the function they are the gradient of (the
 * rounding residual held fixed, the clamp kept); the float weights back after a scope; the
 * ranges through a model file; bad ranges metadata, unsupported layers and a momentum out of
 * range refused; at_train with QAT and every adversarial method (data-parallel QAT:
 * test_distributed.c; resume: test_checkpoint.c). */
#include "advtrain.h"
#include "quant/qat.h"
#include "quant/quant.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uint64_t lcg = 4242;
static double uniform(void) {
    lcg = lcg * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(lcg >> 32) / 4294967296.0;
}

/* Pixels on the 1/255 grid, which the int8 input holds exactly. */
static float *pixels(int n, int d) {
    float *x = malloc(sizeof(float) * (size_t)n * d);
    for (int i = 0; i < n * d; i++) x[i] = (float)floor(uniform() * 256.0) / 255.0f;
    return x;
}

static at_net *make_net(const char *spec, int c, int h, int w) {
    at_net *net = NULL;
    CHECK_OK(at_net_from_spec(&net, spec, c, h, w));
    if (net) at_net_init(net, 7);
    return net;
}

/* One training forward inside a QAT scope: the first records every range. */
static void record_ranges(at_net *net, const float *x, int n) {
    at_net_set_training(net, true);
    qat_begin(net);
    CHECK_OK(at_net_forward(net, x, n, NULL));
    qat_end(net);
    at_net_set_training(net, false);
}

/* Tensor t (index + 1) of the last forward against the int8 model's values of it: how many
 * values are a step or more apart, and the most steps apart. */
static void tensor_gap(const at_net *net, const at_qnet *q, int t, int n, long *off, double *most) {
    const float *sim = at_tensor_data(net, t - 1);
    const int size = at_tensor_size(net, t - 1), stride = at_tensor_stride(net, t - 1);
    const int8_t *v = q->act[q->alias[t]];
    const qparams p = q->tq[t];
    for (int i = 0; i < n; i++)
        for (int j = 0; j < size; j++) {
            const double d = fabs(sim[(size_t)i * stride + j] - (v[(size_t)i * size + j] - p.zp) * (double)p.scale);
            *off += d > 0.5 * p.scale;
            *most = fmax(*most, d / p.scale);
        }
}

/* The rounded network against the int8 model: per int8 tensor, nearly every value the same;
 * without the rounding (a plain float forward) far more differ, so the test can tell. */
static void test_matches_int8(const char *spec, int c, int side) {
    enum { N = 200 };
    at_net *net = make_net(spec, c, side, side);
    if (!net) return;
    float *b = at_net_buffers(net);
    for (size_t i = 0; i < at_net_num_buffer_floats(net); i++) b[i] = (float)(0.2 + uniform());
    const int D = c * side * side;
    float *x = pixels(N, D);
    CHECK_OK(qat_attach(net, 0.01f));
    record_ranges(net, x, N);
    CHECK(at_net_qat_ranges(net) > 0);
    at_qnet *q = NULL;
    CHECK_OK(at_quantize(&q, net, x, N, NULL));
    const int8_t *z8;
    CHECK_OK(at_qnet_forward(q, x, N, &z8));
    long off[2] = {0, 0}, values = 0;
    double most[2] = {0, 0};
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 0) qat_begin(net);
        CHECK_OK(at_net_forward(net, x, N, NULL));
        for (int t = 1; t < net->qat->T; t++)
            if (net->qat->t[t].apply) {
                tensor_gap(net, q, t, N, &off[pass], &most[pass]);
                if (pass == 0) values += (long)N * at_tensor_size(net, t - 1);
            }
        if (pass == 0) qat_end(net);
    }
    printf("  %s: %ld of %ld int8 values a step or more apart (at most %.1f steps); without QAT's rounding %ld\n",
           spec, off[0], values, most[0], off[1]);
    CHECK_MSG(values > 0 && off[0] <= values / 200, "%ld of %ld values differ", off[0], values);
    CHECK_MSG(most[0] <= 3.0, "a value %.1f steps from the int8 model's", most[0]);
    CHECK_MSG(off[1] > 5 * off[0] + 10, "the float forward differs in %ld values, the rounded one in %ld", off[1],
              off[0]);
    at_qnet_free(q);
    free(x);
    at_net_free(net);
}

/* ---- straight-through gradients: x (4) -> Linear(4, 5) -> rounded h -> Linear(5, 3) -> z */

enum { NI = 4, NH = 5, NO = 3 };

/* The weights' int8 values times their scale, per output row (what QAT runs). */
static void rounded_rows(const float *w, int rows, int cols, double *out) {
    for (int r = 0; r < rows; r++) {
        double amax = 0;
        for (int c = 0; c < cols; c++) amax = fmax(amax, fabs(w[r * cols + c]));
        const double s = amax / 127.0;
        for (int c = 0; c < cols; c++) out[r * cols + c] = round(w[r * cols + c] / s) * s;
    }
}

/* g . z as a function of x and W1 (the rounded weights), the rounding of h replaced by its
 * straight-through form: h clamped to the grid's reach, plus the rounding residual rho fixed at
 * the point of the gradient. */
typedef struct ste_fn {
    double w1[NH * NI], b1[NH], w2[NO * NH], b2[NO], g[NO], rho[NH];
    double lo, hi; /* the grid's reach, half a step beyond its ends */
} ste_fn;

static double ste_value(const ste_fn *f, const double *x, const double *w1) {
    double out = 0;
    double h[NH];
    for (int j = 0; j < NH; j++) {
        double v = f->b1[j];
        for (int i = 0; i < NI; i++) v += w1[j * NI + i] * x[i];
        h[j] = fmin(fmax(v, f->lo), f->hi) + f->rho[j];
    }
    for (int k = 0; k < NO; k++) {
        double v = f->b2[k];
        for (int j = 0; j < NH; j++) v += f->w2[k * NH + j] * h[j];
        out += f->g[k] * v;
    }
    return out;
}

static void test_ste_gradients(void) {
    at_net *net = make_net("linear:5,linear:3", NI, 1, 1);
    if (!net) return;
    float x[NI] = {0.9f, -0.4f, 0.7f, 0.2f};
    float g[NO] = {0.7f, -1.1f, 0.4f};
    CHECK_OK(qat_attach(net, 0.01f));
    record_ranges(net, x, 1);
    at_qat *q = net->qat;
    q->t[1].lo = -0.3f, q->t[1].hi = 0.25f; /* narrow: some of h is clamped */
    const qparams p = q_params_for_range(q->t[1].lo, q->t[1].hi);
    ste_fn f;
    const float *params = at_net_params(net);
    const at_param_info *w1 = at_net_tensor(net, 0), *b1 = at_net_tensor(net, 1), *w2 = at_net_tensor(net, 2),
                        *b2 = at_net_tensor(net, 3);
    rounded_rows(params + w1->offset, NH, NI, f.w1);
    rounded_rows(params + w2->offset, NO, NH, f.w2);
    for (int j = 0; j < NH; j++) f.b1[j] = params[b1->offset + j];
    for (int k = 0; k < NO; k++) f.b2[k] = params[b2->offset + k], f.g[k] = g[k];
    f.lo = (-128.5 - p.zp) * (double)p.scale, f.hi = (127.5 - p.zp) * (double)p.scale;
    double xd[NI];
    for (int i = 0; i < NI; i++) xd[i] = x[i];
    /* the residual at the point: the rounded h (the network's) minus the clamped one */
    qat_begin(net);
    const float *z;
    CHECK_OK(at_net_forward(net, x, 1, &z));
    const float *h = at_tensor_data(net, 0);
    int clamped = 0;
    for (int j = 0; j < NH; j++) {
        double v = f.b1[j];
        for (int i = 0; i < NI; i++) v += f.w1[j * NI + i] * xd[i];
        f.rho[j] = h[j] - fmin(fmax(v, f.lo), f.hi);
        clamped += v < f.lo || v > f.hi;
    }
    float dx[NI];
    at_net_zero_grad(net);
    CHECK_OK(at_net_backward(net, g, AT_GRAD_PARAMS | AT_GRAD_INPUT, dx));
    qat_end(net);
    CHECK_MSG(clamped > 0 && clamped < NH, "%d of %d hidden values clamped: the test needs some of each", clamped, NH);
    const float *grads = at_net_grads(net);
    const double e = 1e-4;
    double worst = 0;
    for (int i = 0; i < NI; i++) {
        double a[NI], b[NI];
        memcpy(a, xd, sizeof a), memcpy(b, xd, sizeof b);
        a[i] += e, b[i] -= e;
        const double num = (ste_value(&f, a, f.w1) - ste_value(&f, b, f.w1)) / (2 * e);
        worst = fmax(worst, fabs(num - dx[i]));
    }
    for (int k = 0; k < NH * NI; k++) {
        double a[NH * NI], b[NH * NI];
        memcpy(a, f.w1, sizeof a), memcpy(b, f.w1, sizeof b);
        a[k] += e, b[k] -= e;
        const double num = (ste_value(&f, xd, a) - ste_value(&f, xd, b)) / (2 * e);
        worst = fmax(worst, fabs(num - grads[w1->offset + k]));
    }
    /* W2's gradient: g times the rounded h */
    for (int k = 0; k < NO; k++)
        for (int j = 0; j < NH; j++) worst = fmax(worst, fabs(g[k] * h[j] - grads[w2->offset + k * NH + j]));
    CHECK_MSG(worst < 1e-4, "straight-through gradients off by %g", worst);
    at_net_free(net);
}

/* A scope puts the float weights back bit for bit, nested scopes round once, and the rounded
 * weights are int8 values times a per-channel scale with the largest at 127. */
static void test_weights_scope(void) {
    at_net *net = make_net("conv:4:3:1:1,relu,flatten,linear:3", 2, 5, 5);
    if (!net) return;
    const int np = at_net_num_params(net);
    float *before = malloc(sizeof(float) * np);
    memcpy(before, at_net_params(net), sizeof(float) * np);
    CHECK_OK(qat_attach(net, 0.01f));
    qat_begin(net);
    qat_begin(net);
    const at_param_info *w = at_net_tensor(net, 0);
    const float *r = at_net_params(net) + w->offset;
    const int per = (int)(w->size / 4);
    for (int o = 0; o < 4; o++) {
        double amax = 0;
        for (int i = 0; i < per; i++) amax = fmax(amax, fabs(before[w->offset + o * per + i]));
        for (int i = 0; i < per; i++) {
            const double k = r[o * per + i] / (amax / 127.0);
            CHECK_MSG(fabs(k - round(k)) < 1e-3 && fabs(k) <= 127.001, "weight %d of channel %d is %g steps", i, o, k);
        }
    }
    qat_end(net);
    CHECK(memcmp(before, at_net_params(net), sizeof(float) * np) != 0); /* still inside one scope */
    qat_end(net);
    CHECK_MSG(memcmp(before, at_net_params(net), sizeof(float) * np) == 0, "the float weights did not come back");
    free(before);
    at_net_free(net);
}

/* The ranges through a model file, bit for bit; damaged metadata refused naming the file. */
static void test_file_ranges(void) {
    char dir[] = "/tmp/advtrain-qat-XXXXXX";
    if (!mkdtemp(dir)) return;
    char path[256], bad[256];
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    snprintf(bad, sizeof bad, "%s/bad.safetensors", dir);
    at_net *net = make_net("conv:4:3:1:1,relu,maxpool:2,flatten,linear:8,relu,linear:3", 1, 6, 6);
    if (!net) return;
    float *x = pixels(16, 36);
    CHECK_OK(qat_attach(net, 0.01f));
    record_ranges(net, x, 16);
    CHECK(at_net_qat_ranges(net) == 2); /* the conv's and the hidden Linear's; not the logits' */
    CHECK_OK(at_model_save(net, path, NULL, 0));
    at_net *back = NULL;
    CHECK_OK(at_model_load(&back, path, NULL));
    if (back) {
        CHECK(at_net_qat_ranges(back) == 2);
        for (int t = 1; t < net->qat->T; t++) {
            float a, b, c, d;
            const bool has = qat_range(net, t, &a, &b);
            CHECK(has == qat_range(back, t, &c, &d));
            CHECK(!has || (a == c && b == d));
        }
        at_net_free(back);
    }
    const char *damaged[] = {"x", "0 1", "0 2 1", "9 0 1", "1 0 1", "0 0 1;", "0 0 nan", "0 0 1;5 0 1 extra"};
    for (int i = 0; i < (int)(sizeof damaged / sizeof *damaged); i++) {
        at_net *plain = make_net("conv:4:3:1:1,relu,maxpool:2,flatten,linear:8,relu,linear:3", 1, 6, 6);
        at_st_meta m = {"advtrain.qat", (char *)damaged[i]};
        CHECK_OK(at_model_save(plain, bad, &m, 1));
        at_net_free(plain);
        back = NULL;
        CHECK_MSG(at_model_load(&back, bad, NULL) == AT_ERR_FORMAT && strstr(at_error_message(), bad),
                  "advtrain.qat '%s' accepted (%s)", damaged[i], at_error_message());
        at_net_free(back);
    }
    unlink(path);
    unlink(bad);
    rmdir(dir);
    free(x);
    at_net_free(net);
}

/* A small image dataset: the class decides which quarter of the image is bright. */
static at_dataset quarters(int n) {
    at_dataset d = {n, 1, 8, 8, 4, 0, malloc((size_t)n * 64), NULL, malloc(sizeof(int32_t) * n), NULL};
    for (int i = 0; i < n; i++) {
        const int k = i % 4;
        d.labels[i] = k;
        for (int p = 0; p < 64; p++) {
            const int quarter = (p / 8 >= 4) * 2 + (p % 8 >= 4);
            d.images[(size_t)i * 64 + p] = (uint8_t)(uniform() * 90 + (quarter == k ? 140 : 0));
        }
    }
    return d;
}

/* at_train with QAT: alone and with each adversarial method; the int8 model of the result agrees
 * with the rounded network's accuracy; refused with a layer that has no int8 kernel. */
static void test_train(void) {
    at_dataset train = quarters(256), test = quarters(128);
    const at_adv_method methods[] = {AT_ADV_NONE, AT_ADV_FGSM, AT_ADV_FGSM_RS, AT_ADV_PGD, AT_ADV_TRADES, AT_ADV_FREE};
    for (int m = 0; m < (int)(sizeof methods / sizeof *methods); m++) {
        at_net *net = make_net("conv:4:3:1:1,bn,relu,maxpool:2,flatten,linear:4", 1, 8, 8);
        if (!net) break;
        at_train_config cfg = at_train_defaults();
        cfg.epochs = 3;
        cfg.batch = 32;
        cfg.optim.lr = 0.05f;
        cfg.qat.enabled = true;
        cfg.l2 = 1e-4f;
        if (methods[m] != AT_ADV_NONE) cfg.adv = at_adv_train_defaults(methods[m], 0.05f);
        CHECK_OK(at_train(net, &train, NULL, &test, &cfg, NULL));
        CHECK_MSG(at_net_qat_ranges(net) == 1, "%s: %d trained ranges (the BatchNorm's expected)",
                  at_adv_method_name(methods[m]), at_net_qat_ranges(net));
        at_eval_result r;
        float *x = malloc(sizeof(float) * 128 * 64);
        at_dataset_range(&test, 0, 128, x, NULL, NULL);
        at_qnet *q = NULL;
        CHECK_OK(at_quantize(&q, net, x, 128, NULL));
        if (q) {
            CHECK_OK(at_qnet_evaluate(q, &test, 64, &r));
            CHECK_MSG(r.accuracy > 0.9f, "%s: int8 accuracy %.3f after QAT", at_adv_method_name(methods[m]),
                      (double)r.accuracy);
            at_qnet_free(q);
        }
        free(x);
        at_net_free(net);
    }
    at_net *tanh_net = make_net("linear:4,tanh,linear:4", 64, 1, 1);
    at_dataset flat = train;
    flat.c = 64, flat.h = flat.w = 1;
    at_train_config cfg = at_train_defaults();
    cfg.epochs = 1;
    cfg.qat.enabled = true;
    CHECK(at_train(tanh_net, &flat, NULL, NULL, &cfg, NULL) == AT_ERR_ARG && strstr(at_error_message(), "int8"));
    cfg.qat.momentum = 0.0f; /* out of (0, 1] */
    at_net_free(tanh_net);
    tanh_net = make_net("linear:4,relu,linear:4", 64, 1, 1);
    CHECK(at_train(tanh_net, &flat, NULL, NULL, &cfg, NULL) == AT_ERR_ARG && strstr(at_error_message(), "momentum"));
    at_net_free(tanh_net);
    free(train.images), free(train.labels), free(test.images), free(test.labels);
}

int main(void) {
    test_matches_int8("conv:8:3:1:1,relu,maxpool:2,conv:16:3:1:1,relu,maxpool:2,flatten,linear:10", 1, 12);
    test_matches_int8("conv:8:3:1:1:bias=0,bn,a=relu,conv:8:3:1:1:groups=8:bias=0,bn,relu,conv:8:1,bn,add:a,bn,"
                      "relu,avgpool:2,gap,flatten,linear:10",
                      3, 10);
    test_ste_gradients();
    test_weights_scope();
    test_file_ranges();
    test_train();
    return tu_finish("test_qat");
}
