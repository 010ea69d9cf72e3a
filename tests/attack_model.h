/* A small standard-trained classifier for the attack tests, trained in a few seconds with the
 * library itself: flatten, linear 64, relu, linear 10 on the first 5000 Fashion-MNIST training
 * images (3 epochs of SGD with momentum). Without the dataset, a synthetic 10-class image set
 * stands in (class prototypes of smooth blobs plus pixel noise), so the tests still run. */
#ifndef ADVTRAIN_TEST_ATTACK_MODEL_H
#define ADVTRAIN_TEST_ATTACK_MODEL_H
#include "advtrain.h"
#include "testutil.h"

#include <math.h>
#include <stdint.h>

/* Synthetic images: sample = 0.5 * prototype of its class (3 Gaussian blobs) + 0.5 * uniform noise. */
static inline void am_synthetic(at_dataset *ds, int n, uint64_t seed, const float *protos) {
    memset(ds, 0, sizeof *ds);
    ds->n = n;
    ds->c = 1;
    ds->h = ds->w = 28;
    ds->num_classes = 10;
    ds->images = malloc((size_t)n * 784);
    ds->labels = malloc(sizeof(int32_t) * (size_t)n);
    at_rng r;
    at_rng_seed(&r, seed);
    for (int i = 0; i < n; i++) {
        int y = (int)at_rng_below(&r, 10);
        ds->labels[i] = y;
        for (int p = 0; p < 784; p++) {
            float v = 0.5f * protos[y * 784 + p] + 0.5f * at_rng_uniform(&r);
            ds->images[(size_t)i * 784 + p] = (uint8_t)(v > 1.0f ? 255 : v * 255.0f);
        }
    }
}

static inline void am_synthetic_data(at_data *d) {
    static float protos[10 * 784];
    at_rng r;
    at_rng_seed(&r, 99);
    for (int k = 0; k < 10; k++)
        for (int b = 0; b < 3; b++) {
            float cy = 4 + 20 * at_rng_uniform(&r), cx = 4 + 20 * at_rng_uniform(&r), s = 2 + 3 * at_rng_uniform(&r);
            for (int y = 0; y < 28; y++)
                for (int x = 0; x < 28; x++) {
                    float v = expf(-((y - cy) * (y - cy) + (x - cx) * (x - cx)) / (2 * s * s));
                    float *p = &protos[k * 784 + y * 28 + x];
                    *p = fminf(1.0f, *p + v);
                }
        }
    memset(d, 0, sizeof *d);
    snprintf(d->name, sizeof d->name, "synthetic images");
    am_synthetic(&d->train, 5000, 1, protos);
    am_synthetic(&d->test, 1000, 2, protos);
}

/* Loads the data (first 5000 train, first n_test test samples) and trains the model. */
static inline at_net *am_trained_model(at_data *d, int n_test) {
    /* ADVTRAIN_TEST_SYNTHETIC=1 takes the fallback on purpose (to test it). */
    if (getenv("ADVTRAIN_TEST_SYNTHETIC") || at_data_load(d, "fashion-mnist") != AT_OK) {
        printf("Fashion-MNIST not used (%s): synthetic images instead\n",
               getenv("ADVTRAIN_TEST_SYNTHETIC") ? "ADVTRAIN_TEST_SYNTHETIC is set" : at_error_message());
        am_synthetic_data(d);
    } else {
        at_dataset_truncate(&d->train, 5000);
    }
    if (n_test < d->test.n) at_dataset_truncate(&d->test, n_test);
    at_net *net = NULL;
    CHECK_OK(at_net_from_spec(&net, "flatten,linear:64,relu,linear:10", 1, 28, 28));
    if (!net) return NULL;
    at_net_init(net, 3);
    at_train_config cfg = at_train_defaults();
    cfg.epochs = 3;
    cfg.batch = 64;
    cfg.optim.lr = 0.05f;
    cfg.optim.momentum = 0.9f;
    CHECK_OK(at_train(net, &d->train, NULL, NULL, &cfg, NULL));
    at_eval_result r;
    CHECK_OK(at_evaluate(net, &d->test, 256, &r));
    printf("model trained on %s: clean test accuracy %.2f%% on %d samples\n", d->name, 100.0 * r.accuracy, d->test.n);
    CHECK_MSG(r.accuracy > 0.7f, "the test model did not train: %.3f", (double)r.accuracy);
    return net;
}

/* Runs a named attack on the model's test set with a few settings; returns the result. */
static inline at_attack_result am_attack(at_net *net, const at_dataset *ds, const char *name, float eps, int steps,
                                  float *x_adv, int32_t *pred) {
    at_attack_config c;
    at_attack_result r;
    memset(&r, 0, sizeof r);
    CHECK_OK(at_attack_from_name(name, &c));
    c.eps = eps;
    if (steps > 0) c.steps = steps;
    CHECK_OK(at_attack_dataset(net, &c, ds, 0, x_adv, pred, &r));
    return r;
}

static inline double am_acc(const at_attack_result *r) { return r->samples ? (double)r->robust / r->samples : 0.0; }
#endif
