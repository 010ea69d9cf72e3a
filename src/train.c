/* The training loop and evaluation: data -> batch -> forward -> loss -> backward -> optimizer. */
#include "internal.h"

#include <math.h>
#include <string.h>
#include <time.h>

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static bool is_regression(const at_dataset *ds) { return ds->targets != NULL; }

float at_eval_metric(const at_dataset *ds, const at_eval_result *r) {
    return is_regression(ds) ? r->mse : r->accuracy;
}

/* Buffers for one batch: inputs, labels or targets, and the loss gradient. */
typedef struct batch_buffers {
    float *x, *t, *dlogits;
    int32_t *y, *idx;
} batch_buffers;

static void free_batch(batch_buffers *b) {
    free(b->x);
    free(b->t);
    free(b->dlogits);
    free(b->y);
    free(b->idx);
}

static at_status alloc_batch(batch_buffers *b, const at_dataset *ds, int batch, int outputs) {
    memset(b, 0, sizeof *b);
    b->x = at_alloc_floats((size_t)batch * at_dataset_sample_size(ds), "a batch");
    b->t = at_alloc_floats((size_t)batch * (ds->target_dim ? ds->target_dim : 1), "targets");
    b->dlogits = at_alloc_floats((size_t)batch * outputs, "loss gradient");
    b->y = at_calloc((size_t)batch, sizeof(int32_t), "labels");
    b->idx = at_calloc((size_t)(ds->n > batch ? ds->n : batch), sizeof(int32_t), "sample order");
    if (!b->x || !b->t || !b->dlogits || !b->y || !b->idx) {
        free_batch(b);
        return AT_ERR_NOMEM;
    }
    return AT_OK;
}

static at_status check_compatible(at_net *net, const at_dataset *ds, const char *what) {
    int c, h, w;
    at_net_in_shape(net, &c, &h, &w);
    if (ds->c * ds->h * ds->w != c * h * w)
        return at_fail(AT_ERR_SHAPE, "the %s data has samples of %dx%dx%d, the model takes %dx%dx%d",
                       what, ds->c, ds->h, ds->w, c, h, w);
    int outputs = at_net_out_size(net);
    if (is_regression(ds) && ds->target_dim != outputs)
        return at_fail(AT_ERR_SHAPE, "the %s data has %d targets, the model has %d outputs", what,
                       ds->target_dim, outputs);
    if (!is_regression(ds) && ds->num_classes > outputs)
        return at_fail(AT_ERR_SHAPE, "the %s data has %d classes, the model has only %d outputs",
                       what, ds->num_classes, outputs);
    if (ds->n <= 0) return at_fail(AT_ERR_ARG, "the %s data is empty", what);
    return AT_OK;
}

/* Loss, its gradient and the hit count for one batch. */
static at_status batch_loss(const at_dataset *ds, const float *out, const batch_buffers *b, int n,
                            int k, float *loss, int *correct) {
    *correct = 0;
    if (is_regression(ds)) return at_mse(out, b->t, n, k, loss, b->dlogits);
    return at_cross_entropy(out, b->y, n, k, 0.0f, loss, b->dlogits, correct);
}

at_status at_evaluate(at_net *net, const at_dataset *ds, int batch, at_eval_result *r) {
    memset(r, 0, sizeof *r);
    if (batch <= 0) batch = 256;
    at_status s = check_compatible(net, ds, "evaluation");
    if (s != AT_OK) return s;
    batch_buffers b;
    const int k = at_net_out_size(net);
    if ((s = alloc_batch(&b, ds, batch, k)) != AT_OK) return s;
    bool was_training = at_net_is_training(net);
    at_net_set_training(net, false);
    double loss_sum = 0.0;
    long hits = 0;
    for (int first = 0; first < ds->n && s == AT_OK; first += batch) {
        int n = AT_MIN(batch, ds->n - first);
        for (int i = 0; i < n; i++) b.idx[i] = first + i;
        at_dataset_batch(ds, b.idx, n, b.x, b.y, b.t);
        const float *out;
        if ((s = at_net_forward(net, b.x, n, &out)) != AT_OK) break;
        float loss;
        int correct;
        s = batch_loss(ds, out, &b, n, k, &loss, &correct);
        loss_sum += (double)loss * n;
        hits += correct;
    }
    at_net_set_training(net, was_training);
    free_batch(&b);
    r->samples = ds->n;
    r->loss = (float)(loss_sum / ds->n);
    if (is_regression(ds))
        r->mse = r->loss;
    else
        r->accuracy = (float)((double)hits / ds->n);
    return s;
}

at_train_config at_train_defaults(void) {
    at_train_config c;
    memset(&c, 0, sizeof c);
    c.epochs = 10;
    c.batch = 128;
    c.seed = 1;
    c.optim = at_optim_defaults(AT_OPTIM_SGD);
    return c;
}

static float metric_or_nan(at_net *net, const at_dataset *ds, int batch, at_status *s) {
    if (!ds || *s != AT_OK) return NAN;
    at_eval_result r;
    *s = at_evaluate(net, ds, batch > 256 ? batch : 256, &r);
    return at_eval_metric(ds, &r);
}

at_status at_train(at_net *net, const at_dataset *train, const at_dataset *val,
                   const at_dataset *test, const at_train_config *cfg,
                   const at_train_callbacks *cb) {
    if (cfg->epochs <= 0 || cfg->batch <= 0)
        return at_fail(AT_ERR_ARG, "epochs and batch size must be positive (got %d and %d)",
                       cfg->epochs, cfg->batch);
    at_status s = check_compatible(net, train, "training");
    if (s == AT_OK && val) s = check_compatible(net, val, "validation");
    if (s == AT_OK && test) s = check_compatible(net, test, "test");
    if (s != AT_OK) return s;
    at_optim *opt;
    if ((s = at_optim_create(&opt, net, &cfg->optim)) != AT_OK) return s;
    batch_buffers b;
    const int k = at_net_out_size(net);
    if ((s = alloc_batch(&b, train, cfg->batch, k)) != AT_OK) {
        at_optim_free(opt);
        return s;
    }
    if ((s = at_net_reserve(net, cfg->batch)) != AT_OK) goto done;
    at_rng rng;
    at_rng_seed(&rng, cfg->seed);
    at_net_seed(net, cfg->seed ^ 0x5DEECE66Dull);
    for (int i = 0; i < train->n; i++) b.idx[i] = i;
    const int nbatches = (train->n + cfg->batch - 1) / cfg->batch;
    for (int epoch = 1; epoch <= cfg->epochs && s == AT_OK; epoch++) {
        double start = now_seconds(), loss_sum = 0.0;
        long hits = 0;
        at_rng_shuffle(&rng, b.idx, train->n);
        at_net_set_training(net, true);
        for (int bi = 0; bi < nbatches; bi++) {
            int first = bi * cfg->batch, n = AT_MIN(cfg->batch, train->n - first);
            at_dataset_batch(train, b.idx + first, n, b.x, b.y, b.t);
            const float *out;
            float loss;
            int correct;
            if ((s = at_net_forward(net, b.x, n, &out)) != AT_OK) break;
            s = batch_loss(train, out, &b, n, k, &loss, &correct);
            if (s == AT_ERR_NAN) {
                s = at_fail(AT_ERR_NAN,
                            "the training loss became %g at epoch %d, batch %d: training "
                            "diverged (try a smaller learning rate)",
                            (double)loss, epoch, bi + 1);
                break;
            }
            if (s != AT_OK) break;
            at_net_zero_grad(net);
            if ((s = at_net_backward(net, b.dlogits, AT_GRAD_PARAMS, NULL)) != AT_OK) break;
            if ((s = at_optim_step(opt)) != AT_OK) break;
            loss_sum += (double)loss * n;
            hits += correct;
            if (cb && cb->on_batch) cb->on_batch(cb->user, epoch, bi + 1, nbatches, (float)(loss_sum / (first + n)));
        }
        at_net_set_training(net, false);
        if (s != AT_OK) break;
        at_epoch_stats st;
        st.epoch = epoch;
        st.epochs = cfg->epochs;
        st.lr = at_optim_lr(opt);
        st.seconds = now_seconds() - start;
        st.train_loss = (float)(loss_sum / train->n);
        st.train_metric = is_regression(train) ? st.train_loss : (float)((double)hits / train->n);
        st.val_metric = metric_or_nan(net, val, cfg->batch, &s);
        st.test_metric = metric_or_nan(net, test, cfg->batch, &s);
        if (s != AT_OK) break;
        if (cb && cb->on_epoch && !cb->on_epoch(cb->user, &st)) break;
    }
done:
    free_batch(&b);
    at_optim_free(opt);
    return s;
}
