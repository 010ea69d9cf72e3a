/* The training loop and evaluation: data -> batch (augmentation, noise, mixup) -> forward ->
 * loss + penalty -> backward -> penalty gradients -> clipping -> optimizer -> proximal L1 and
 * max-norm; per epoch: evaluation, learning-rate schedule, early stopping. With adversarial
 * training (adv_train.c) the method supplies the batch gradient. Nothing is allocated per step:
 * every buffer is sized before the first batch. */
#include "adv_train.h"
#include "checkpoint.h"

#include <math.h>
#include <stdio.h>
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

/* Loss, its gradient and the hit count for one batch against labels y (with label smoothing)
 * or regression targets t. */
static at_status batch_loss(const at_dataset *ds, const float *out, const batch_buffers *b, int n,
                            int k, float smoothing, float *loss, int *correct) {
    *correct = 0;
    if (is_regression(ds)) return at_mse(out, b->t, n, k, loss, b->dlogits);
    return at_cross_entropy(out, b->y, n, k, smoothing, loss, b->dlogits, correct);
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
        if ((s = at_net_predict(net, b.x, n, &out)) != AT_OK) break;
        float loss;
        int correct;
        s = batch_loss(ds, out, &b, n, k, 0.0f, &loss, &correct);
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
    c.schedule = at_schedule_defaults(AT_SCHEDULE_CONSTANT);
    c.monitor = AT_MONITOR_VAL_LOSS;
    return c;
}

static at_status check_nonneg(float v, const char *what) {
    if (!(v >= 0.0f) || !isfinite(v))
        return at_fail(AT_ERR_ARG, "%s must be a finite number >= 0, got %g", what, (double)v);
    return AT_OK;
}

/* Everything that can be wrong with a training configuration, before anything is allocated. */
static at_status check_train_config(at_net *net, const at_dataset *train, const at_dataset *val,
                                    const at_train_config *cfg) {
    if (cfg->epochs <= 0 || cfg->batch <= 0)
        return at_fail(AT_ERR_ARG, "epochs and batch size must be positive (got %d and %d)",
                       cfg->epochs, cfg->batch);
    at_status s = check_nonneg(cfg->l1, "the L1 coefficient");
    if (s == AT_OK) s = check_nonneg(cfg->l2, "the L2 coefficient");
    if (s == AT_OK) s = check_nonneg(cfg->max_norm, "the max-norm bound");
    if (s == AT_OK) s = check_nonneg(cfg->clip_grad, "the gradient-clipping bound");
    if (s == AT_OK) s = check_nonneg(cfg->input_noise, "the input noise std");
    if (s == AT_OK) s = check_nonneg(cfg->mixup_alpha, "the mixup alpha");
    if (s == AT_OK) s = check_nonneg(cfg->min_delta, "the early-stopping min_delta");
    if (s != AT_OK) return s;
    if (cfg->prox_l1 && cfg->l1 <= 0.0f)
        return at_fail(AT_ERR_ARG, "proximal L1 needs an L1 coefficient > 0");
    if (!(cfg->label_smoothing >= 0.0f && cfg->label_smoothing < 1.0f))
        return at_fail(AT_ERR_ARG, "label smoothing must be in [0, 1), got %g",
                       (double)cfg->label_smoothing);
    if (cfg->label_smoothing > 0.0f && is_regression(train))
        return at_fail(AT_ERR_ARG, "label smoothing applies to classification, not regression");
    if (cfg->augment.crop_pad < 0)
        return at_fail(AT_ERR_ARG, "crop padding must be >= 0, got %d", cfg->augment.crop_pad);
    if ((cfg->augment.flip || cfg->augment.crop_pad > 0) &&
        (!train->images || train->h < 2 || train->w < 2))
        return at_fail(AT_ERR_ARG, "crop and flip augmentation need image data; this training "
                                   "set holds %dx%dx%d feature vectors",
                       train->c, train->h, train->w);
    if (cfg->early_stop < 0)
        return at_fail(AT_ERR_ARG, "early-stopping patience must be >= 0, got %d", cfg->early_stop);
    if (cfg->early_stop > 0 && !val)
        return at_fail(AT_ERR_ARG, "early stopping needs a validation set (a validation split)");
    if (cfg->monitor != AT_MONITOR_VAL_LOSS && cfg->monitor != AT_MONITOR_VAL_METRIC)
        return at_fail(AT_ERR_ARG, "unknown monitor %d", (int)cfg->monitor);
    bool selects = cfg->l1 > 0.0f || cfg->l2 > 0.0f || cfg->max_norm > 0.0f ||
                   cfg->optim.weight_decay > 0.0f;
    if (selects && (s = at_reg_check(net, &cfg->reg_select)) != AT_OK) return s;
    return AT_OK;
}

/* Buffers beyond one batch: mixup and early stopping. Allocated once, before the loop. */
typedef struct train_extra {
    float *soft;   /* batch x k soft labels (classification with mixup) */
    float *mix_x;  /* batch x sample mixed inputs */
    float *mix_t;  /* batch x k (or target_dim) mixed targets */
    int32_t *perm; /* batch: mixup partners */
    float *best;   /* early stopping: the best epoch's parameters */
} train_extra;

static void free_extra(train_extra *e) {
    free(e->soft);
    free(e->mix_x);
    free(e->mix_t);
    free(e->perm);
    free(e->best);
}

static at_status alloc_extra(train_extra *e, at_net *net, const at_dataset *train,
                             const at_train_config *cfg, int k) {
    memset(e, 0, sizeof *e);
    bool ok = true;
    const size_t batch = (size_t)cfg->batch;
    if (cfg->mixup_alpha > 0.0f) {
        ok = (e->soft = at_alloc_floats(batch * k, "soft labels")) &&
             (e->mix_x = at_alloc_floats(batch * at_dataset_sample_size(train), "mixup inputs")) &&
             (e->mix_t = at_alloc_floats(batch * k, "mixup targets")) &&
             (e->perm = at_calloc(batch, sizeof(int32_t), "mixup partners"));
    }
    if (ok && cfg->early_stop > 0)
        ok = (e->best = at_alloc_floats(at_net_num_params(net), "best weights")) != NULL;
    if (!ok) {
        free_extra(e);
        return AT_ERR_NOMEM;
    }
    return AT_OK;
}

/* Early stopping state (Keras EarlyStopping with restore_best_weights). */
typedef struct early_stopping {
    double best;
    int best_epoch, wait;
} early_stopping;

static bool improves(double current, double best, double min_delta, bool maximize) {
    return maximize ? current - min_delta > best : current + min_delta < best;
}

/* Learning rate for this epoch's start (epoch-wise schedules) or this step (one-cycle). */
static void apply_schedule(at_optim *opt, at_schedule *sched, int t) {
    if (sched->cfg.kind != AT_SCHEDULE_CONSTANT && sched->cfg.kind != AT_SCHEDULE_PLATEAU)
        at_optim_set_lr(opt, at_schedule_lr(sched, t));
}

/* The regularization steps around the optimizer: penalty gradients, clipping, the step itself,
 * proximal L1 and max-norm. *penalty and *norm receive the penalty and the gradient norm. */
static at_status regularized_step(at_net *net, at_optim *opt, const at_train_config *cfg,
                                  float *penalty, float *norm) {
    at_status s = AT_OK;
    const float l1_grad = cfg->prox_l1 ? 0.0f : cfg->l1;
    *penalty = 0.0f;
    if (l1_grad > 0.0f || cfg->l2 > 0.0f)
        s = at_elastic_net_regularization(net, &cfg->reg_select, l1_grad, cfg->l2, penalty);
    if (s == AT_OK && cfg->clip_grad > 0.0f) s = at_clip_grad_norm(net, cfg->clip_grad, norm);
    if (s == AT_OK) s = at_optim_step(opt);
    if (s == AT_OK && cfg->prox_l1)
        s = at_prox_l1(net, &cfg->reg_select, at_optim_lr(opt) * cfg->l1);
    if (s == AT_OK && cfg->max_norm > 0.0f) s = at_max_norm(net, &cfg->reg_select, cfg->max_norm);
    return s;
}

/* Augmentation, input noise and mixup on the gathered batch. Returns the inputs to train on
 * (b->x or the mixed copy); *soft receives the soft targets when mixup is on (classification). */
static const float *prepare_inputs(const at_dataset *train, const at_train_config *cfg,
                                   batch_buffers *b, train_extra *e, int n, int k, at_rng *rng,
                                   const float **soft) {
    const int d = at_dataset_sample_size(train);
    *soft = NULL;
    at_augment_batch(b->x, n, train->c, train->h, train->w, &cfg->augment, rng);
    if (cfg->input_noise > 0.0f)
        at_gaussian_noise(b->x, (size_t)n * d, cfg->input_noise, train->images != NULL, rng);
    if (cfg->mixup_alpha <= 0.0f) return b->x;
    float lam = (float)at_rng_beta(rng, cfg->mixup_alpha, cfg->mixup_alpha);
    for (int i = 0; i < n; i++) e->perm[i] = i;
    at_rng_shuffle(rng, e->perm, n);
    if (is_regression(train)) {
        at_mixup(b->x, b->t, n, d, train->target_dim, lam, e->perm, e->mix_x, e->mix_t);
        /* the mixed targets replace the batch's own */
        memcpy(b->t, e->mix_t, sizeof(float) * (size_t)n * train->target_dim);
    } else {
        at_soft_targets(b->y, n, k, cfg->label_smoothing, e->soft);
        at_mixup(b->x, e->soft, n, d, k, lam, e->perm, e->mix_x, e->mix_t);
        *soft = e->mix_t;
    }
    return e->mix_x;
}

/* ------------------------------------------------------------ checkpoints */

/* The best epoch for DIR/best.safetensors: robust validation accuracy when measured, else what
 * early stopping monitors on the validation set. */
typedef struct best_tracker {
    double best;
    int epoch;
} best_tracker;

/* Everything the loop carries from one epoch to the next, for checkpoints. */
typedef struct loop_state {
    at_net *net;
    at_optim *opt;
    at_schedule *sched;
    adv_trainer *adv;
    at_rng *aug;
    early_stopping *es;
    train_extra *extra;
    best_tracker *best;
    int64_t *step;
} loop_state;

static const char *optim_name(at_optim_kind kind) {
    return kind == AT_OPTIM_SGD ? "sgd" : kind == AT_OPTIM_ADAM ? "adam" : "adamw";
}

static at_status save_checkpoint(const loop_state *L, const at_train_config *cfg,
                                 const at_dataset *train, int epoch, bool best_now, bool stopped) {
    const at_checkpoint_config *ck = &cfg->checkpoint;
    char path[4096];
    at_status s = ckpt_path(path, sizeof path, ck->dir, "last.safetensors");
    if (s != AT_OK) return s;
    if (best_now) {
        char best[4096], epoch_text[16];
        if ((s = ckpt_path(best, sizeof best, ck->dir, "best.safetensors")) != AT_OK) return s;
        snprintf(epoch_text, sizeof epoch_text, "%d", epoch);
        at_st_meta *meta = at_calloc((size_t)ck->nmeta + 1, sizeof *meta, "metadata");
        if (!meta) return AT_ERR_NOMEM;
        for (int i = 0; i < ck->nmeta; i++) meta[i] = ck->meta[i];
        meta[ck->nmeta] = (at_st_meta){"advtrain.best_epoch", epoch_text};
        s = at_model_save(L->net, best, meta, ck->nmeta + 1);
        free(meta);
        if (s != AT_OK) return s;
    }
    ckpt_state c;
    if ((s = ckpt_begin(&c)) != AT_OK) return s;
    size_t state_count;
    const float *state = at_optim_state(L->opt, &state_count);
    ckpt_put_int(&c, "version", 1);
    ckpt_put_int(&c, "epoch", epoch);
    ckpt_put_int(&c, "epochs", cfg->epochs);
    ckpt_put_int(&c, "early_stopped", stopped);
    ckpt_put_int(&c, "step", *L->step);
    ckpt_put_int(&c, "batch", cfg->batch);
    ckpt_put_u64(&c, "seed", cfg->seed);
    ckpt_put_int(&c, "train_samples", train->n);
    ckpt_put_str(&c, "optimizer", optim_name(cfg->optim.kind));
    ckpt_put_str(&c, "adversarial", at_adv_method_name(cfg->adv.method));
    ckpt_put_num(&c, "lr", at_optim_lr(L->opt));
    ckpt_put_int(&c, "optim_steps", at_optim_steps(L->opt));
    ckpt_put_floats(&c, "optim_state", state, state_count);
    ckpt_put_rng(&c, "rng_augment", L->aug);
    ckpt_put_u64(&c, "forward_count", at_net_forward_count(L->net));
    ckpt_put_num(&c, "schedule_lr", L->sched->lr);
    ckpt_put_num(&c, "schedule_best", L->sched->best);
    ckpt_put_int(&c, "schedule_bad_epochs", L->sched->bad_epochs);
    ckpt_put_int(&c, "schedule_cooldown_left", L->sched->cooldown_left);
    ckpt_put_num(&c, "early_best", L->es->best);
    ckpt_put_int(&c, "early_best_epoch", L->es->best_epoch);
    ckpt_put_int(&c, "early_wait", L->es->wait);
    if (L->extra->best) ckpt_put_floats(&c, "early_best_params", L->extra->best, at_net_num_params(L->net));
    ckpt_put_num(&c, "best_value", L->best->best);
    ckpt_put_int(&c, "best_epoch", L->best->epoch);
    if (L->adv) adv_trainer_save_state(L->adv, &c);
    s = ckpt_write(&c, L->net, path, ck->meta, ck->nmeta);
    ckpt_end(&c);
    return s;
}

static at_status mismatch(const char *path, const char *what, long long was, long long now) {
    return at_fail(AT_ERR_ARG, "%s was written with %s %lld, this run has %lld: resume with the "
                               "settings of the interrupted run",
                   path, what, was, now);
}

/* Restores the loop from DIR/last.safetensors; *epoch receives the epoch it completed. */
static at_status load_checkpoint(const loop_state *L, const at_train_config *cfg,
                                 const at_dataset *train, int *epoch, bool *stopped) {
    char path[4096];
    at_status s = ckpt_path(path, sizeof path, cfg->checkpoint.dir, "last.safetensors");
    if (s != AT_OK) return s;
    ckpt_state c;
    if ((s = ckpt_open(&c, path)) != AT_OK) {
        ckpt_end(&c);
        return s;
    }
    const char *arch = at_st_meta_get(c.file, "advtrain.arch");
    int64_t stop = 0, ep = 0, batch = 0, n = 0, step = 0, optim_steps = 0, bad = 0, cool = 0, ebest = 0,
            wait = 0, best_epoch = 0;
    uint64_t seed = 0, forward = 0;
    double lr = 0, sched_lr = 0, sched_best = 0, early_best = 0, best_value = 0;
    size_t state_count;
    float *state = at_optim_state(L->opt, &state_count);
    if (!arch || strcmp(arch, at_net_spec(L->net)) != 0)
        s = at_fail(AT_ERR_ARG, "%s holds the architecture '%s', this run trains '%s'", path,
                    arch ? arch : "(none)", at_net_spec(L->net));
    if (s == AT_OK) s = ckpt_get_int(&c, "epoch", &ep);
    if (s == AT_OK) s = ckpt_get_int(&c, "batch", &batch);
    if (s == AT_OK) s = ckpt_get_u64(&c, "seed", &seed);
    if (s == AT_OK) s = ckpt_get_int(&c, "train_samples", &n);
    if (s == AT_OK && batch != cfg->batch) s = mismatch(path, "batch size", batch, cfg->batch);
    if (s == AT_OK && seed != cfg->seed) s = mismatch(path, "seed", (long long)seed, (long long)cfg->seed);
    if (s == AT_OK && n != train->n) s = mismatch(path, "a training set of size", n, train->n);
    const char *optimizer = ckpt_get_str(&c, "optimizer"), *adversarial = ckpt_get_str(&c, "adversarial");
    if (s == AT_OK && (!optimizer || strcmp(optimizer, optim_name(cfg->optim.kind)) != 0))
        s = at_fail(AT_ERR_ARG, "%s was written with the %s optimizer, this run uses %s", path,
                    optimizer ? optimizer : "(unknown)", optim_name(cfg->optim.kind));
    if (s == AT_OK && (!adversarial || strcmp(adversarial, at_adv_method_name(cfg->adv.method)) != 0))
        s = at_fail(AT_ERR_ARG, "%s was written with adversarial training '%s', this run uses '%s'",
                    path, adversarial ? adversarial : "(unknown)", at_adv_method_name(cfg->adv.method));
    if (s == AT_OK && (ep < 0 || ep > 1000000)) s = at_fail(AT_ERR_FORMAT, "%s: epoch %lld out of range", path, (long long)ep);
    if (s == AT_OK) s = at_net_load_weights(L->net, c.file, path);
    if (s == AT_OK) s = ckpt_get_int(&c, "step", &step);
    if (s == AT_OK) s = ckpt_get_int(&c, "early_stopped", &stop);
    if (s == AT_OK) s = ckpt_get_num(&c, "lr", &lr);
    if (s == AT_OK) s = ckpt_get_int(&c, "optim_steps", &optim_steps);
    if (s == AT_OK) s = ckpt_get_floats(&c, "optim_state", state, state_count);
    if (s == AT_OK) s = ckpt_get_rng(&c, "rng_augment", L->aug);
    if (s == AT_OK) s = ckpt_get_u64(&c, "forward_count", &forward);
    if (s == AT_OK) s = ckpt_get_num(&c, "schedule_lr", &sched_lr);
    if (s == AT_OK) s = ckpt_get_num(&c, "schedule_best", &sched_best);
    if (s == AT_OK) s = ckpt_get_int(&c, "schedule_bad_epochs", &bad);
    if (s == AT_OK) s = ckpt_get_int(&c, "schedule_cooldown_left", &cool);
    if (s == AT_OK) s = ckpt_get_num(&c, "early_best", &early_best);
    if (s == AT_OK) s = ckpt_get_int(&c, "early_best_epoch", &ebest);
    if (s == AT_OK) s = ckpt_get_int(&c, "early_wait", &wait);
    if (s == AT_OK && L->extra->best && ebest > 0)
        s = ckpt_get_floats(&c, "early_best_params", L->extra->best, at_net_num_params(L->net));
    if (s == AT_OK) s = ckpt_get_num(&c, "best_value", &best_value);
    if (s == AT_OK) s = ckpt_get_int(&c, "best_epoch", &best_epoch);
    if (s == AT_OK && L->adv) s = adv_trainer_load_state(L->adv, &c);
    ckpt_end(&c);
    if (s != AT_OK) return s;
    at_optim_set_lr(L->opt, (float)lr);
    at_optim_set_steps(L->opt, optim_steps);
    at_net_set_forward_count(L->net, forward);
    L->sched->lr = (float)sched_lr;
    L->sched->best = sched_best;
    L->sched->bad_epochs = (int)bad;
    L->sched->cooldown_left = (int)cool;
    L->es->best = early_best;
    L->es->best_epoch = (int)ebest;
    L->es->wait = (int)wait;
    L->best->best = best_value;
    L->best->epoch = (int)best_epoch;
    *L->step = step;
    *epoch = (int)ep;
    *stopped = stop != 0;
    return AT_OK;
}

at_status at_checkpoint_epoch(const char *dir, int *epoch) {
    *epoch = 0;
    char path[4096];
    at_status s = ckpt_path(path, sizeof path, dir, "last.safetensors");
    if (s != AT_OK) return s;
    ckpt_state c;
    int64_t ep = 0;
    if ((s = ckpt_open(&c, path)) == AT_OK) s = ckpt_get_int(&c, "epoch", &ep);
    ckpt_end(&c);
    *epoch = (int)ep;
    return s;
}

static at_status evaluate_or_nan(at_net *net, const at_dataset *ds, int batch, at_eval_result *r) {
    r->loss = r->accuracy = r->mse = NAN;
    if (!ds) return AT_OK;
    return at_evaluate(net, ds, batch > 256 ? batch : 256, r);
}

at_status at_train(at_net *net, const at_dataset *train, const at_dataset *val,
                   const at_dataset *test, const at_train_config *cfg,
                   const at_train_callbacks *cb) {
    at_status s = check_compatible(net, train, "training");
    if (s == AT_OK && val) s = check_compatible(net, val, "validation");
    if (s == AT_OK && test) s = check_compatible(net, test, "test");
    if (s == AT_OK) s = check_train_config(net, train, val, cfg);
    if (s != AT_OK) return s;
    const int k = at_net_out_size(net);
    const int nbatches = (train->n + cfg->batch - 1) / cfg->batch;
    /* The plateau schedule and early stopping watch a loss (lower is better) or the metric. */
    const bool maximize = cfg->monitor == AT_MONITOR_VAL_METRIC && !is_regression(train);
    at_schedule_config sc = cfg->schedule;
    if (sc.kind == AT_SCHEDULE_STEP && sc.step_size == 0)
        sc.step_size = AT_MAX(1, (cfg->epochs + 2) / 3);
    at_schedule sched;
    int sched_total = sc.kind == AT_SCHEDULE_ONECYCLE ? cfg->epochs * nbatches : cfg->epochs;
    if ((s = at_schedule_init(&sched, &sc, cfg->optim.lr, sched_total, maximize)) != AT_OK)
        return s;

    at_optim *opt;
    if ((s = at_optim_create(&opt, net, &cfg->optim)) != AT_OK) return s;
    if (cfg->optim.weight_decay > 0.0f &&
        (s = at_optim_set_decay_select(opt, &cfg->reg_select)) != AT_OK) {
        at_optim_free(opt);
        return s;
    }
    batch_buffers b;
    train_extra e;
    if ((s = alloc_batch(&b, train, cfg->batch, k)) != AT_OK) {
        at_optim_free(opt);
        return s;
    }
    adv_trainer *adv = NULL;
    if ((s = alloc_extra(&e, net, train, cfg, k)) != AT_OK) goto done_batch;
    if ((s = at_net_reserve(net, cfg->batch)) != AT_OK) goto done;
    if (cfg->adv.method != AT_ADV_NONE &&
        (s = adv_trainer_create(&adv, net, opt, cfg, train, val, nbatches)) != AT_OK)
        goto done;
    const int replays = adv ? adv_trainer_replays(adv) : 1;
    at_rng rng, aug;
    at_rng_seed(&rng, cfg->seed);
    at_rng_seed(&aug, cfg->seed ^ 0x61756700A5A5A5A5ull); /* its own stream: shuffles stay put */
    at_net_seed(net, cfg->seed ^ 0x5DEECE66Dull);
    for (int i = 0; i < train->n; i++) b.idx[i] = i;
    early_stopping es = {maximize ? -INFINITY : INFINITY, 0, 0};
    int64_t step = 0;
    best_tracker best = {-INFINITY, 0};
    loop_state loop = {net, opt, &sched, adv, &aug, &es, &e, &best, &step};
    int done_epochs = 0;
    bool stopped = false; /* early stopping had ended the run that wrote the checkpoint */
    if (cfg->checkpoint.dir && cfg->checkpoint.resume) {
        if ((s = load_checkpoint(&loop, cfg, train, &done_epochs, &stopped)) != AT_OK) goto done;
        /* The sample order evolves one shuffle per epoch: replaying them restores it and the
         * shuffling RNG without storing either. */
        for (int epoch = 1; epoch <= done_epochs; epoch++) at_rng_shuffle(&rng, b.idx, train->n);
    }
    for (int epoch = done_epochs + 1; epoch <= cfg->epochs && !stopped && s == AT_OK; epoch++) {
        double start = now_seconds(), loss_sum = 0.0, penalty_sum = 0.0, norm_sum = 0.0;
        long hits = 0, adv_hits = 0;
        float eps = 0.0f;
        apply_schedule(opt, &sched, epoch - 1);
        at_rng_shuffle(&rng, b.idx, train->n);
        at_net_set_training(net, true);
        for (int bi = 0; bi < nbatches; bi++, step++) {
            int first = bi * cfg->batch, n = AT_MIN(cfg->batch, train->n - first);
            at_dataset_batch(train, b.idx + first, n, b.x, b.y, b.t);
            const float *soft, *x = prepare_inputs(train, cfg, &b, &e, n, k, &aug, &soft);
            const float *out;
            float loss, penalty = 0.0f, norm = NAN;
            int correct;
            if (sc.kind == AT_SCHEDULE_ONECYCLE) apply_schedule(opt, &sched, (int)step);
            /* Free-AT replays each batch; every other method computes one gradient. */
            for (int r = 0; r < replays && s == AT_OK; r++) {
                int adv_correct = 0;
                at_net_zero_grad(net);
                if (adv) {
                    eps = adv_trainer_eps(adv, step);
                    s = adv_trainer_gradients(adv, x, b.y, soft, n, eps, &loss, &correct, &adv_correct);
                } else {
                    if ((s = at_net_forward(net, x, n, &out)) != AT_OK) break;
                    if (soft)
                        s = at_cross_entropy_soft(out, soft, n, k, &loss, b.dlogits, &correct);
                    else
                        s = batch_loss(train, out, &b, n, k, cfg->label_smoothing, &loss, &correct);
                    if (s == AT_OK) s = at_net_backward(net, b.dlogits, AT_GRAD_PARAMS, NULL);
                }
                if (s == AT_ERR_NAN) {
                    s = at_fail(AT_ERR_NAN,
                                "the training loss became %g at epoch %d, batch %d: training "
                                "diverged (try a smaller learning rate)",
                                (double)loss, epoch, bi + 1);
                    break;
                }
                if (s != AT_OK) break;
                if ((s = regularized_step(net, opt, cfg, &penalty, &norm)) != AT_OK) {
                    if (s == AT_ERR_NAN)
                        s = at_fail(AT_ERR_NAN, "%s at epoch %d, batch %d: training diverged (try a "
                                                "smaller learning rate)",
                                    at_error_message(), epoch, bi + 1);
                    break;
                }
                if (adv_correct < 0) adv_hits = -1; /* not measured by this method */
                if (adv_hits >= 0) adv_hits += adv_correct;
            }
            if (s != AT_OK) break;
            /* Free-AT reports its last replay of the batch. */
            loss_sum += (double)loss * n;
            penalty_sum += penalty;
            norm_sum += norm;
            hits += correct;
            if (cb && cb->on_batch) {
                const float running_loss = (float)(loss_sum / (first + n));
                cb->on_batch(cb->user, epoch, bi + 1, nbatches, running_loss,
                             is_regression(train) ? running_loss : (float)((double)hits / (first + n)));
            }
        }
        at_net_set_training(net, false);
        if (s != AT_OK) break;
        at_epoch_stats st;
        memset(&st, 0, sizeof st);
        st.epoch = epoch;
        st.epochs = cfg->epochs;
        st.lr = at_optim_lr(opt);
        st.seconds = now_seconds() - start;
        st.train_loss = (float)(loss_sum / train->n);
        st.train_metric = is_regression(train) ? st.train_loss : (float)((double)hits / train->n);
        st.penalty = (float)(penalty_sum / nbatches);
        st.grad_norm = cfg->clip_grad > 0.0f ? (float)(norm_sum / nbatches) : NAN;
        st.eps = adv ? eps : NAN;
        st.adv_metric = adv && adv_hits >= 0 ? (float)((double)adv_hits / ((double)train->n * replays)) : NAN;
        st.robust_val = st.guard_acc = NAN;
        if (adv && (s = adv_trainer_end_epoch(adv, epoch, &st)) != AT_OK) break;
        at_eval_result rv, rt;
        if ((s = evaluate_or_nan(net, val, cfg->batch, &rv)) != AT_OK) break;
        if ((s = evaluate_or_nan(net, test, cfg->batch, &rt)) != AT_OK) break;
        st.val_loss = rv.loss;
        st.val_metric = val ? at_eval_metric(val, &rv) : NAN;
        st.test_metric = test ? at_eval_metric(test, &rt) : NAN;
        /* What the plateau schedule and early stopping watch. */
        double monitored = cfg->monitor == AT_MONITOR_VAL_LOSS
                               ? (val ? st.val_loss : st.train_loss)
                               : (val ? st.val_metric : st.train_metric);
        if (sc.kind == AT_SCHEDULE_PLATEAU)
            at_optim_set_lr(opt, at_schedule_observe(&sched, (float)monitored));
        if (cfg->early_stop > 0) {
            if (improves(monitored, es.best, cfg->min_delta, maximize)) {
                es.best = monitored;
                es.best_epoch = epoch;
                es.wait = 0;
                memcpy(e.best, at_net_params(net), sizeof(float) * at_net_num_params(net));
            } else {
                es.wait++;
            }
            if (!(adv && st.best_epoch > 0)) st.best_epoch = es.best_epoch;
            st.stopping = es.wait >= cfg->early_stop;
        }
        /* The best epoch for best.safetensors (larger is better for both choices below). */
        bool best_now = false;
        if (!isnan(st.robust_val) || val) {
            double v = !isnan(st.robust_val) ? st.robust_val : maximize ? monitored : -monitored;
            if (best.epoch == 0 || v > best.best) {
                best.best = v;
                best.epoch = epoch;
                best_now = true;
            }
        }
        /* The callback (which may log this epoch) runs before the checkpoint: a run killed in
         * between repeats the epoch and its log line. */
        bool go_on = !(cb && cb->on_epoch) || cb->on_epoch(cb->user, &st);
        if (cfg->checkpoint.dir && (s = save_checkpoint(&loop, cfg, train, epoch, best_now, st.stopping)) != AT_OK)
            break;
        if (!go_on || st.stopping) break;
    }
    /* Keras's restore_best_weights, whether training stopped early or ran out of epochs. */
    if (s == AT_OK && cfg->early_stop > 0 && es.best_epoch > 0)
        memcpy(at_net_params(net), e.best, sizeof(float) * at_net_num_params(net));
    /* The best robust epoch wins over the last one (robust overfitting, Rice et al. 2020). */
    if (s == AT_OK && adv) adv_trainer_finish(adv);
done:
    adv_trainer_free(adv);
    free_extra(&e);
done_batch:
    free_batch(&b);
    at_optim_free(opt);
    return s;
}
