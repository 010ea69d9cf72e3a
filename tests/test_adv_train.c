/* Adversarial training end to end on a Fashion-MNIST subset: every method raises PGD robust
 * accuracy over standard training; eps warm-up; the best robust epoch's weights are restored;
 * the FGSM-RS guard catches a constructed collapse and restores the last good weights. */
#include "advtrain.h"
#include "testutil.h"

static at_data data;
static at_dataset val;

static const char *SPEC = "conv:8:4:2:1,relu,conv:16:4:2:1,relu,flatten,linear:10";

static at_net *fresh_net(void) {
    at_net *net = NULL;
    CHECK_OK(at_net_from_spec(&net, SPEC, 1, 28, 28));
    at_net_init(net, 7);
    return net;
}

static at_train_config base_config(int epochs) {
    at_train_config c = at_train_defaults();
    c.epochs = epochs;
    c.batch = 64;
    c.optim.lr = 0.05f;
    c.optim.momentum = 0.9f;
    return c;
}

/* PGD-10 robust accuracy at eps on the first 400 test images. */
static float robust(at_net *net, float eps) {
    at_attack_config a = at_attack_defaults(AT_ATTACK_PGD);
    a.eps = eps;
    a.steps = 10;
    a.seed = 3;
    at_attack_result r;
    CHECK_OK(at_attack_dataset(net, &a, &data.test, 400, NULL, NULL, &r));
    return (float)r.robust / (float)r.samples;
}

typedef struct recorder {
    at_net *net;
    int epochs;
    float eps[8], robust_val[8], guard_acc[8];
    int best_epoch[8];
    bool collapsed[8];
    float *params[8];
    int sabotage_epoch; /* > 0: ruin the weights at the end of this epoch's last batch */
    int batches_seen;   /* on_batch calls in the current epoch */
    float running_metric; /* on_batch's value after the last batch */
} recorder;

static void on_batch(void *user, int epoch, int batch, int nbatches, float loss, float metric) {
    recorder *r = user;
    (void)loss;
    CHECK(batch == ++r->batches_seen);
    CHECK(metric >= 0.0f && metric <= 1.0f);
    r->running_metric = metric;
    if (epoch != r->sabotage_epoch || batch != nbatches) return;
    /* A constant classifier: robust accuracy drops to the share of one class. */
    float *p = at_net_params(r->net);
    const at_param_info *w = at_net_find_tensor(r->net, "5.weight"), *b = at_net_find_tensor(r->net, "5.bias");
    memset(p + w->offset, 0, sizeof(float) * w->size);
    memset(p + b->offset, 0, sizeof(float) * b->size);
    p[b->offset] = 5.0f;
}

static bool on_epoch(void *user, const at_epoch_stats *st) {
    recorder *r = user;
    int e = st->epoch;
    r->epochs = e;
    if (r->batches_seen > 0) {
        /* after the last batch the running accuracy is the epoch's training accuracy */
        CHECK_NEAR(r->running_metric, st->train_metric, 1e-6);
        r->batches_seen = 0;
    }
    r->eps[e] = st->eps;
    r->robust_val[e] = st->robust_val;
    r->guard_acc[e] = st->guard_acc;
    r->best_epoch[e] = st->best_epoch;
    r->collapsed[e] = st->collapsed;
    size_t np = at_net_num_params(r->net);
    r->params[e] = malloc(sizeof(float) * np);
    memcpy(r->params[e], at_net_params(r->net), sizeof(float) * np);
    return true;
}

static void free_recorder(recorder *r) {
    for (int i = 0; i < 8; i++) free(r->params[i]);
}

static void test_methods_raise_robustness(void) {
    const float eps = 0.1f;
    at_net *plain = fresh_net();
    at_train_config c = base_config(2);
    CHECK_OK(at_train(plain, &data.train, NULL, NULL, &c, NULL));
    float base = robust(plain, eps);
    at_net_free(plain);
    const at_adv_method methods[] = {AT_ADV_FGSM, AT_ADV_FGSM_RS, AT_ADV_PGD, AT_ADV_TRADES, AT_ADV_FREE};
    for (size_t i = 0; i < sizeof methods / sizeof *methods; i++) {
        at_net *net = fresh_net();
        c = base_config(methods[i] == AT_ADV_FREE ? 1 : 2);
        c.adv = at_adv_train_defaults(methods[i], eps);
        c.adv.steps = methods[i] == AT_ADV_TRADES ? 5 : 5;
        c.adv.replays = 4;
        CHECK_OK(at_train(net, &data.train, NULL, NULL, &c, NULL));
        float rob = robust(net, eps);
        printf("%-8s PGD-10 robust accuracy %.3f (standard training %.3f)\n",
               at_adv_method_name(methods[i]), rob, base);
        CHECK_MSG(rob > base + 0.05f, "%s: robust accuracy %.3f not above standard %.3f + 0.05",
                  at_adv_method_name(methods[i]), rob, base);
        at_net_free(net);
    }
}

static void test_warmup_and_best_epoch(void) {
    at_net *net = fresh_net();
    recorder r = {net};
    at_train_config c = base_config(4);
    c.adv = at_adv_train_defaults(AT_ADV_PGD, 0.1f);
    c.adv.steps = 3;
    c.adv.warmup_epochs = 2;
    c.adv.robust_val_samples = 200;
    at_train_callbacks cb = {&r, NULL, on_epoch};
    CHECK_OK(at_train(net, &data.train, &val, NULL, &c, &cb));
    CHECK(r.epochs == 4);
    CHECK_NEAR(r.eps[1], 0.05, 1e-6); /* halfway through the warm-up */
    CHECK_NEAR(r.eps[2], 0.10, 1e-6);
    CHECK_NEAR(r.eps[4], 0.10, 1e-6);
    int best = 0;
    for (int e = 1; e <= 4; e++) {
        CHECK(r.robust_val[e] >= 0.0f && r.robust_val[e] <= 1.0f);
        if (best == 0 || r.robust_val[e] > r.robust_val[best]) best = e;
    }
    CHECK_MSG(r.best_epoch[4] == best, "best epoch %d, expected %d", r.best_epoch[4], best);
    /* the final weights are the best epoch's */
    CHECK(memcmp(at_net_params(net), r.params[best], sizeof(float) * at_net_num_params(net)) == 0);
    free_recorder(&r);
    at_net_free(net);
}

static void test_guard_catches_collapse(void) {
    at_net *net = fresh_net();
    recorder r = {net};
    r.sabotage_epoch = 2;
    at_train_config c = base_config(3);
    c.adv = at_adv_train_defaults(AT_ADV_FGSM_RS, 0.05f);
    c.adv.keep_best = false;
    at_train_callbacks cb = {&r, on_batch, on_epoch};
    CHECK_OK(at_train(net, &data.train, &val, NULL, &c, &cb));
    CHECK(!r.collapsed[1]);
    CHECK_MSG(r.collapsed[2], "the guard missed the collapse at epoch 2");
    /* epoch 2 ends with epoch 1's weights restored */
    CHECK(memcmp(r.params[2], r.params[1], sizeof(float) * at_net_num_params(net)) == 0);
    CHECK(!r.collapsed[3]);
    free_recorder(&r);
    /* without sabotage, no false alarm */
    at_net *calm = fresh_net();
    recorder q = {calm};
    cb.user = &q;
    CHECK_OK(at_train(calm, &data.train, &val, NULL, &c, &cb));
    for (int e = 1; e <= 3; e++) CHECK_MSG(!q.collapsed[e], "false collapse alarm at epoch %d", e);
    /* The guard's accuracy (read from the robust validation's attack, which covers its batch)
     * is PGD-10 on the first validation samples, as a separate attack on them gives. */
    at_attack_config a = at_attack_defaults(AT_ATTACK_PGD);
    a.eps = c.adv.eps;
    a.steps = 10;
    a.seed = c.seed ^ 0x6A09E667F3BCC909ull;
    at_attack_result res;
    CHECK(memcmp(at_net_params(calm), q.params[3], sizeof(float) * at_net_num_params(calm)) == 0);
    const int guard_n = c.adv.guard_samples < val.n ? c.adv.guard_samples : val.n;
    CHECK_OK(at_attack_dataset(calm, &a, &val, guard_n, NULL, NULL, &res));
    CHECK_MSG((float)res.robust / (float)res.samples == q.guard_acc[3],
              "guard accuracy %g, PGD-10 on its batch %g", (double)q.guard_acc[3],
              (double)res.robust / res.samples);
    free_recorder(&q);
    at_net_free(calm);
    at_net_free(net);
}

static void test_bad_configs(void) {
    at_net *net = fresh_net();
    at_train_config c = base_config(1);
    c.adv = at_adv_train_defaults(AT_ADV_PGD, 0.0f);
    CHECK(at_train(net, &data.train, NULL, NULL, &c, NULL) == AT_ERR_ARG);
    c.adv = at_adv_train_defaults(AT_ADV_TRADES, 0.1f);
    c.adv.norm = AT_NORM_L2;
    CHECK(at_train(net, &data.train, NULL, NULL, &c, NULL) == AT_ERR_ARG);
    at_adv_method m;
    CHECK(at_adv_method_from_name("madry", &m) == AT_ERR_ARG);
    CHECK(strstr(at_error_message(), "fgsm-rs") != NULL);
    CHECK_OK(at_adv_method_from_name("trades", &m));
    CHECK(m == AT_ADV_TRADES);
    at_net_free(net);
}

int main(void) {
    at_set_threads(2);
    at_status s = at_data_load(&data, "fashion-mnist");
    if (s != AT_OK) {
        fprintf(stderr, "test_adv_train needs Fashion-MNIST: %s\n", at_error_message());
        return 1;
    }
    CHECK_OK(at_dataset_truncate(&data.train, 1500));
    CHECK_OK(at_dataset_truncate(&data.test, 400));
    CHECK_OK(at_dataset_split(&data.train, &val, 0.2f, 5));
    test_bad_configs();
    test_methods_raise_robustness();
    test_warmup_and_best_epoch();
    test_guard_catches_collapse();
    at_dataset_free(&val);
    at_data_free(&data);
    return tu_finish("test_adv_train");
}
