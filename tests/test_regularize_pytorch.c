/* The regularization suite against PyTorch: tests/fixtures/reg_optim.safetensors, written by
 * tools/make_reg_fixtures.py (its docstring says what every tensor is). Covers SGD weight decay
 * (all parameters and weights only), Adam's coupled decay, AdamW (explicit and default), label-
 * smoothed and soft-target cross-entropy, gradient clipping by global norm, and three whole
 * at_train runs that pin the order of operations: penalty + clipping + momentum SGD, proximal L1
 * + max-norm, AdamW on weights only with label smoothing and a step schedule. */
#include "advtrain.h"
#include "testutil.h"

#include <stdint.h>

#define STEPS 5

static at_st_file *F;
static const char *PATH;

static const at_st_tensor *need(const char *name) {
    const at_st_tensor *t = at_st_find(F, name);
    CHECK_MSG(t != NULL, "tensor %s missing from %s", name, PATH);
    return t;
}

/* |got - want| <= atol + rtol |want| everywhere; reports the worst element. */
static void compare(const char *what, const float *got, const at_st_tensor *want, size_t n,
                    double atol, double rtol) {
    if (!want) return;
    CHECK_MSG(want->count == n, "%s: %zu values, reference has %zu", what, n, want->count);
    if (want->count != n) return;
    size_t worst = 0;
    double v = tu_max_violation(got, want->data, n, atol, rtol, &worst);
    CHECK_MSG(v <= 1.0, "%s differs from PyTorch at %zu: got %.9g want %.9g (violation %.3g)", what,
              worst, got[worst], want->data[worst], v);
}

/* Loads "<prefix>.<param>" tensors into the network. */
static void load_prefixed(at_net *net, const char *prefix) {
    for (int i = 0; i < at_net_num_tensors(net); i++) {
        const at_param_info *p = at_net_tensor(net, i);
        char name[96];
        snprintf(name, sizeof name, "%s.%s", prefix, p->name);
        const at_st_tensor *t = need(name);
        if (t && t->count == p->size) memcpy(at_net_params(net) + p->offset, t->data, p->size * sizeof(float));
    }
}

static void compare_weights(at_net *net, const char *prefix, double atol, double rtol) {
    for (int i = 0; i < at_net_num_tensors(net); i++) {
        const at_param_info *p = at_net_tensor(net, i);
        char name[96];
        snprintf(name, sizeof name, "%s.%s", prefix, p->name);
        compare(name, at_net_params(net) + p->offset, need(name), p->size, atol, rtol);
    }
}

typedef struct batch {
    int n;
    const float *x;
    int32_t y[64];
    float dlogits[64 * 4];
} batch;

static float ce_step(at_net *net, batch *b) {
    const float *logits;
    float loss = NAN;
    at_net_zero_grad(net);
    CHECK_OK(at_net_forward(net, b->x, b->n, &logits));
    CHECK_OK(at_cross_entropy(logits, b->y, b->n, 4, 0.0f, &loss, b->dlogits, NULL));
    CHECK_OK(at_net_backward(net, b->dlogits, AT_GRAD_PARAMS, NULL));
    return loss;
}

/* 5 optimizer steps from the initial weights; compares the losses and final weights. */
static void check_optimizer(at_net *net, batch *b, const char *tag, const at_optim_config *cfg,
                            const at_reg_select *decay) {
    load_prefixed(net, "net");
    at_optim *opt = NULL;
    CHECK_OK(at_optim_create(&opt, net, cfg));
    if (!opt) return;
    if (decay) CHECK_OK(at_optim_set_decay_select(opt, decay));
    float losses[STEPS + 1];
    for (int s = 0; s < STEPS; s++) {
        losses[s] = ce_step(net, b);
        CHECK_OK(at_optim_step(opt));
    }
    losses[STEPS] = ce_step(net, b);
    at_optim_free(opt);
    char name[64];
    snprintf(name, sizeof name, "%s_losses", tag);
    compare(name, losses, need(name), STEPS + 1, 1e-5, 1e-5);
    compare_weights(net, tag, 2e-6, 1e-4);
}

static void test_optimizers(at_net *net, batch *b) {
    at_optim_config c = at_optim_defaults(AT_OPTIM_SGD);
    c.lr = 0.1f;
    c.momentum = 0.9f;
    c.weight_decay = 0.05f;
    check_optimizer(net, b, "sgd_wd", &c, NULL);
    at_reg_select weights = {NULL, false};
    check_optimizer(net, b, "sgd_wd_w", &c, &weights);
    /* and a selection that keeps biases reproduces the all-parameter run */
    at_reg_select all = {"all", true};
    check_optimizer(net, b, "sgd_wd", &c, &all);

    at_optim_config a = at_optim_defaults(AT_OPTIM_ADAM);
    a.lr = 0.01f;
    a.weight_decay = 0.1f;
    check_optimizer(net, b, "adam_wd", &a, NULL);
    /* Adam + decoupled is AdamW */
    a.decoupled = true;
    check_optimizer(net, b, "adamw", &a, NULL);
    at_optim_config w = at_optim_defaults(AT_OPTIM_ADAMW);
    CHECK(w.weight_decay == 0.01f && w.lr == 1e-3f && w.decoupled);
    check_optimizer(net, b, "adamw_default", &w, NULL);
    w.lr = 0.01f;
    w.weight_decay = 0.1f;
    check_optimizer(net, b, "adamw", &w, NULL);
}

static void test_losses(void) {
    const at_st_tensor *z = need("ls_logits"), *y = need("y"), *soft = need("soft_targets");
    if (!z || !y || !soft || z->count != 40 || y->count != 10) return;
    int32_t labels[10];
    for (int i = 0; i < 10; i++) labels[i] = (int32_t)lrintf(y->data[i]);
    float loss, d[40];
    CHECK_OK(at_cross_entropy(z->data, labels, 10, 4, 0.1f, &loss, d, NULL));
    compare("label-smoothed loss", &loss, need("ls_loss"), 1, 1e-6, 1e-6);
    compare("label-smoothed dlogits", d, need("ls_grad"), 40, 1e-7, 1e-5);
    /* the same through soft targets built with at_soft_targets */
    float t[40];
    at_soft_targets(labels, 10, 4, 0.1f, t);
    CHECK_OK(at_cross_entropy_soft(z->data, t, 10, 4, &loss, d, NULL));
    compare("soft-target (smoothed one-hot) loss", &loss, need("ls_loss"), 1, 1e-6, 1e-6);
    compare("soft-target (smoothed one-hot) dlogits", d, need("ls_grad"), 40, 1e-7, 1e-5);
    CHECK_OK(at_cross_entropy_soft(z->data, soft->data, 10, 4, &loss, d, NULL));
    compare("probability-target loss", &loss, need("soft_loss"), 1, 1e-6, 1e-6);
    compare("probability-target dlogits", d, need("soft_grad"), 40, 1e-7, 1e-5);
}

static void test_clipping(at_net *net, batch *b) {
    load_prefixed(net, "net");
    ce_step(net, b);
    float norm = 0;
    CHECK_OK(at_clip_grad_norm(net, 100.0f, &norm));
    compare("gradient norm", &norm, need("noclip_norm"), 1, 1e-7, 1e-5);
    const at_st_tensor *max = need("clip_max");
    if (!max) return;
    CHECK_OK(at_clip_grad_norm(net, max->data[0], &norm));
    compare("gradient norm before clipping", &norm, need("clip_norm"), 1, 1e-7, 1e-5);
    for (int i = 0; i < at_net_num_tensors(net); i++) {
        const at_param_info *p = at_net_tensor(net, i);
        char name[96];
        snprintf(name, sizeof name, "clip.%s", p->name);
        compare(name, at_net_grads(net) + p->offset, need(name), p->size, 1e-8, 1e-5);
    }
    /* after clipping, the norm is the bound (up to the 1e-6 in the coefficient) */
    CHECK_OK(at_clip_grad_norm(net, 1000.0f, &norm));
    CHECK_NEAR(norm, max->data[0], 1e-5 * max->data[0]);
}

/* A dataset that owns nothing: views of fixture tensors. */
static at_dataset view(const at_st_tensor *x, int c, const at_st_tensor *t, int k, int32_t *labels) {
    at_dataset d;
    memset(&d, 0, sizeof d);
    d.n = (int)(x->count / (size_t)c);
    d.c = c;
    d.h = d.w = 1;
    d.features = x->data;
    if (labels) {
        d.labels = labels;
        d.num_classes = k;
    } else {
        d.targets = t->data;
        d.target_dim = k;
    }
    return d;
}

static void test_training_runs(at_net *small, const int32_t *labels) {
    const at_st_tensor *xr = need("x_reg"), *tr = need("t_reg"), *x = need("x");
    if (!xr || !tr || !x) return;
    at_net *mlp = NULL;
    CHECK_OK(at_net_from_spec(&mlp, "seed-mlp", 10, 1, 1));
    if (!mlp) return;
    at_dataset reg = view(xr, 10, tr, 10, NULL);

    /* penalty on fc1 + clipping + momentum SGD */
    load_prefixed(mlp, "mlp");
    at_train_config cfg = at_train_defaults();
    cfg.epochs = STEPS;
    cfg.batch = reg.n;
    cfg.optim.lr = 0.05f;
    cfg.optim.momentum = 0.9f;
    cfg.l1 = 1e-3f;
    cfg.l2 = 1e-3f;
    cfg.reg_select.layers = "fc1";
    cfg.clip_grad = 0.5f;
    CHECK_OK(at_train(mlp, &reg, NULL, NULL, &cfg, NULL));
    compare_weights(mlp, "run_pen", 2e-6, 1e-4);

    /* proximal L1 then max-norm on fc1, plain SGD */
    load_prefixed(mlp, "mlp");
    cfg = at_train_defaults();
    cfg.epochs = STEPS;
    cfg.batch = reg.n;
    cfg.optim.lr = 0.1f;
    cfg.l1 = 0.05f;
    cfg.prox_l1 = true;
    cfg.max_norm = 0.3f;
    cfg.reg_select.layers = "fc1";
    CHECK_OK(at_train(mlp, &reg, NULL, NULL, &cfg, NULL));
    compare_weights(mlp, "run_prox", 2e-6, 1e-4);
    const at_param_info *w1 = at_net_find_tensor(mlp, "fc1.weight");
    size_t zeros = 0, want = 0;
    for (size_t i = 0; w1 && i < w1->size; i++) zeros += at_net_params(mlp)[w1->offset + i] == 0.0f;
    const at_st_tensor *ref = need("run_prox.fc1.weight");
    for (size_t i = 0; ref && i < ref->count; i++) want += ref->data[i] == 0.0f;
    CHECK_MSG(zeros == want && zeros > 0, "proximal L1: %zu exact zeros, PyTorch %zu", zeros, want);

    /* AdamW on weights only, label smoothing, StepLR(2, 0.5) */
    at_dataset cls = view(x, 6, NULL, 4, (int32_t *)labels);
    load_prefixed(small, "net");
    cfg = at_train_defaults();
    cfg.epochs = STEPS;
    cfg.batch = cls.n;
    cfg.optim = at_optim_defaults(AT_OPTIM_ADAMW);
    cfg.optim.lr = 0.05f;
    cfg.optim.weight_decay = 0.2f;
    cfg.label_smoothing = 0.1f;
    cfg.schedule = at_schedule_defaults(AT_SCHEDULE_STEP);
    cfg.schedule.step_size = 2;
    cfg.schedule.gamma = 0.5f;
    CHECK_OK(at_train(small, &cls, NULL, NULL, &cfg, NULL));
    compare_weights(small, "run_adamw", 2e-6, 1e-4);
    at_net_free(mlp);
}

int main(void) {
    at_set_threads(1); /* tiny models: threads only add synchronisation */
    PATH = tu_source_path("tests/fixtures/reg_optim.safetensors");
    at_status s = at_st_read(PATH, &F);
    CHECK_OK(s);
    if (s != AT_OK) return tu_finish("test_regularize_pytorch");
    printf("reg_optim (torch %s)\n", at_st_meta_get(F, "torch_version") ? at_st_meta_get(F, "torch_version") : "?");
    at_net *net = NULL;
    CHECK_OK(at_net_from_spec(&net, "linear:8,tanh,linear:4", 6, 1, 1));
    const at_st_tensor *x = need("x"), *y = need("y");
    batch b;
    if (net && x && y && y->count == 10 && x->count == 60) {
        b.n = 10;
        b.x = x->data;
        for (int i = 0; i < 10; i++) b.y[i] = (int32_t)lrintf(y->data[i]);
        int before = tu_failures;
        test_optimizers(net, &b);
        printf("  optimizers (SGD/Adam weight decay, AdamW, decay selection): %s\n", tu_failures == before ? "ok" : "FAILED");
        before = tu_failures;
        test_losses();
        printf("  label-smoothed and soft-target cross-entropy: %s\n", tu_failures == before ? "ok" : "FAILED");
        before = tu_failures;
        test_clipping(net, &b);
        printf("  gradient clipping: %s\n", tu_failures == before ? "ok" : "FAILED");
        before = tu_failures;
        test_training_runs(net, b.y);
        printf("  at_train runs (penalty+clip, prox+max-norm, AdamW+smoothing+step): %s\n", tu_failures == before ? "ok" : "FAILED");
    }
    at_net_free(net);
    at_st_free(F);
    return tu_finish("test_regularize_pytorch");
}
