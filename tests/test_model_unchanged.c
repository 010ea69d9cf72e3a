/* Attacks and evaluation change nothing in the model, BatchNorm's running statistics included,
 * even when the network was left in training mode: the first source of wrong robustness
 * numbers in the peers' trackers (an attack run with BatchNorm in training mode updates the
 * running statistics and judges examples with batch statistics). Every attack, the crafting of
 * adversarial training and at_evaluate run here on a network with BatchNorm, a residual Add
 * and a depthwise convolution, and afterwards every parameter and buffer must hold the same
 * bits and the network its training mode. Running any of them in training mode makes this test
 * fail (checked by removing the eval-mode switch in src/attacks/common.c). */
#include "advtrain.h"
#include "testutil.h"

#include <string.h>

#define SPEC                                                                                     \
    "conv:8:3:1:1:bias=0,bn,a=relu,conv:8:3:1:1:groups=8:bias=0,bn,relu,conv:8:1,bn,add:a,relu," \
    "gap,flatten,linear:10"

enum { N = 48, SIDE = 10 };

typedef struct snapshot {
    float *params, *buffers;
    size_t np, nb;
} snapshot;

static snapshot take(at_net *net) {
    snapshot s = {NULL, NULL, at_net_num_params(net), at_net_num_buffer_floats(net)};
    s.params = malloc(sizeof(float) * s.np);
    s.buffers = malloc(sizeof(float) * s.nb);
    memcpy(s.params, at_net_params(net), sizeof(float) * s.np);
    memcpy(s.buffers, at_net_buffers(net), sizeof(float) * s.nb);
    return s;
}

static void check_same(at_net *net, const snapshot *s, const char *what) {
    CHECK_MSG(memcmp(s->params, at_net_params(net), sizeof(float) * s->np) == 0,
              "%s changed a parameter", what);
    CHECK_MSG(memcmp(s->buffers, at_net_buffers(net), sizeof(float) * s->nb) == 0,
              "%s changed a buffer (running statistics)", what);
    CHECK_MSG(at_net_is_training(net), "%s did not restore training mode", what);
}

/* A network with trained-looking BatchNorm statistics: a few training steps on the data. */
static at_net *make_net(const float *x, const int32_t *y) {
    at_net *net = NULL;
    CHECK_OK(at_net_from_spec(&net, SPEC, 1, SIDE, SIDE));
    if (!net) return NULL;
    at_net_init(net, 3);
    at_optim_config oc = at_optim_defaults(AT_OPTIM_SGD);
    oc.lr = 0.05f;
    oc.momentum = 0.9f;
    at_optim *opt = NULL;
    CHECK_OK(at_optim_create(&opt, net, &oc));
    float dl[N * 10], loss;
    const float *z;
    at_net_set_training(net, true);
    for (int step = 0; step < 4 && opt; step++) {
        CHECK_OK(at_net_forward(net, x, N, &z));
        CHECK_OK(at_cross_entropy(z, y, N, 10, 0.0f, &loss, dl, NULL));
        at_net_zero_grad(net);
        CHECK_OK(at_net_backward(net, dl, AT_GRAD_PARAMS, NULL));
        CHECK_OK(at_optim_step(opt));
    }
    at_optim_free(opt);
    return net;
}

static void test_attacks(at_net *net, const float *x, const int32_t *y) {
    const char *names[] = {"fgsm", "pgd", "pgd-l2", "cw", "apgd-ce", "apgd-t", "square", "auto"};
    float *x_adv = malloc(sizeof(float) * N * SIDE * SIDE);
    int32_t pred[N];
    for (size_t k = 0; k < sizeof names / sizeof *names; k++) {
        at_attack_config cfg;
        CHECK_OK(at_attack_from_name(names[k], &cfg));
        cfg.eps = strcmp(names[k], "pgd-l2") == 0 ? 0.5f : 0.1f;
        cfg.steps = strcmp(names[k], "square") == 0 ? 50 : 5;
        cfg.square_queries = 50;
        cfg.attack_all = true;
        at_attack_result res;
        snapshot s = take(net);
        at_net_set_training(net, true); /* as a user may have left it after training */
        CHECK_OK(at_attack_run(net, &cfg, x, y, N, x_adv, pred, &res));
        check_same(net, &s, names[k]);
        free(s.params);
        free(s.buffers);
    }
    free(x_adv);
}

static void test_crafting_and_evaluation(at_net *net, const float *x, const int32_t *y) {
    at_adv_workspace *ws = NULL;
    CHECK_OK(at_adv_workspace_create(&ws, net, N));
    at_attack_config cfg = at_attack_defaults(AT_ATTACK_PGD);
    cfg.eps = 0.1f;
    cfg.steps = 3;
    snapshot s = take(net);
    const float *adv = NULL;
    at_net_set_training(net, true);
    if (ws) CHECK_OK(at_adv_craft(net, ws, &cfg, x, y, NULL, N, &adv));
    check_same(net, &s, "crafting for adversarial training");
    at_adv_workspace_free(ws);

    at_dataset ds = {N, 1, SIDE, SIDE, 10, 0, NULL, NULL, NULL, NULL};
    ds.features = (float *)x;
    ds.labels = (int32_t *)y;
    at_eval_result r;
    CHECK_OK(at_evaluate(net, &ds, 16, &r));
    check_same(net, &s, "at_evaluate");
    free(s.params);
    free(s.buffers);
}

/* The check itself can fail: a training-mode forward does change the running statistics. */
static void test_training_forward_changes_buffers(at_net *net, const float *x) {
    snapshot s = take(net);
    const float *z;
    at_net_set_training(net, true);
    CHECK_OK(at_net_forward(net, x, N, &z));
    CHECK(memcmp(s.buffers, at_net_buffers(net), sizeof(float) * s.nb) != 0);
    memcpy(at_net_buffers(net), s.buffers, sizeof(float) * s.nb);
    free(s.params);
    free(s.buffers);
}

int main(void) {
    float *x = malloc(sizeof(float) * N * SIDE * SIDE);
    int32_t y[N];
    at_rng r;
    at_rng_seed(&r, 11);
    for (int i = 0; i < N; i++) {
        y[i] = i % 10;
        for (int p = 0; p < SIDE * SIDE; p++) /* a class-dependent stripe plus noise */
            x[i * SIDE * SIDE + p] = 0.5f * (p % 10 == y[i]) + 0.5f * at_rng_uniform(&r);
    }
    at_net *net = make_net(x, y);
    if (net) {
        test_attacks(net, x, y);
        test_crafting_and_evaluation(net, x, y);
        test_training_forward_changes_buffers(net, x);
        at_net_free(net);
    }
    free(x);
    return tu_finish("test_model_unchanged");
}
