/* The training loop and evaluation: data -> batch (augmentation, noise, mixup) -> forward ->
 * loss + penalty -> backward -> penalty gradients -> clipping -> optimizer -> proximal L1 and
 * max-norm; per epoch: evaluation, learning-rate schedule, early stopping. With adversarial
 * training (adv_train.c) the method supplies the batch gradient. Nothing is allocated per step:
 * every buffer is sized before the first batch. */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include "adv_train.h"
#include "checkpoint.h"
#include "data_parallel.h"
#include "quant/qat.h"

#include <float.h>
#include <limits.h>
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

/* at_evaluate with buffers b for batches of `batch` samples, allocated by the caller (the
 * training loop allocates them once: memory stays flat from epoch to epoch). */
/* With a communicator of several ranks (data-parallel training's evaluations), each rank
 * evaluates its share of ds and the sums are added over the ranks: every rank gets the result. */
static at_status evaluate_with(at_net *net, const at_dataset *ds, int batch, batch_buffers *b, const at_comm *comm,
                               at_eval_result *r) {
    memset(r, 0, sizeof *r);
    at_status s = check_compatible(net, ds, "evaluation");
    if (s != AT_OK) return s;
    const int k = at_net_out_size(net);
    bool was_training = at_net_is_training(net);
    at_net_set_training(net, false);
    double loss_sum = 0.0;
    long hits = 0;
    int lo, hi;
    at_comm_share(comm, ds->n, &lo, &hi);
    const uint64_t passes = at_net_forward_count(net); /* every pass moves the dropout key on */
    for (int first = lo; first < hi && s == AT_OK; first += batch) {
        int n = AT_MIN(batch, hi - first);
        at_dataset_range(ds, first, n, b->x, b->y, b->t);
        const float *out;
        if ((s = at_net_predict(net, b->x, n, &out)) != AT_OK) break;
        float loss;
        int correct;
        s = batch_loss(ds, out, b, n, k, 0.0f, &loss, &correct);
        if (s == AT_ERR_NAN) s = AT_OK; /* a result, not a failure: the loss reads NaN or inf */
        loss_sum += (double)loss * n;
        hits += correct;
    }
    if (comm && comm->size > 1) { /* every rank takes part, a failed one included */
        /* the dropout key where one process's evaluation leaves it (one pass a batch), so that
         * every rank, and one process, trains on with the same masks */
        at_net_set_forward_count(net, passes + (uint64_t)((ds->n + batch - 1) / batch));
        double sums[3] = {loss_sum, (double)hits, s != AT_OK};
        at_status c = comm->allreduce_sum(comm->user, sums, 3);
        if (s == AT_OK && c != AT_OK) s = c;
        if (s == AT_OK && sums[2] > 0) s = at_fail(AT_ERR_IO, "evaluation failed on another rank");
        loss_sum = sums[0];
        hits = (long)sums[1];
    }
    at_net_set_training(net, was_training);
    r->samples = ds->n;
    r->loss = (float)(loss_sum / ds->n);
    if (is_regression(ds))
        r->mse = r->loss;
    else
        r->accuracy = (float)((double)hits / ds->n);
    return s;
}

at_status at_evaluate(at_net *net, const at_dataset *ds, int batch, at_eval_result *r) {
    memset(r, 0, sizeof *r);
    if (batch <= 0) batch = 256;
    at_status s = check_compatible(net, ds, "evaluation");
    batch_buffers b;
    if (s == AT_OK) s = alloc_batch(&b, ds, batch, at_net_out_size(net));
    if (s != AT_OK) return s;
    s = evaluate_with(net, ds, batch, &b, NULL, r);
    free_batch(&b);
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
    c.certify = (at_certify_config){0.0f, 1, 5, 0.5f};
    c.qat = (at_qat_config){false, 0.01f};
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

/* AT_ERR_NAN naming the first tensor whose gradient is not finite: the step is not taken. The
 * scan compares exponent bits (all ones: infinite or NaN), which vectorizes, unlike a float sum. */
static at_status check_gradients(at_net *net) {
    const float *g = at_net_grads(net);
    const size_t n = at_net_num_params(net);
    uint32_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t b;
        memcpy(&b, g + i, sizeof b);
        bad |= (b & 0x7f800000u) == 0x7f800000u;
    }
    if (!bad) return AT_OK;
    for (int i = 0; i < at_net_num_tensors(net); i++) {
        const at_param_info *t = at_net_tensor(net, i);
        for (size_t j = 0; j < t->size; j++)
            if (!isfinite(g[t->offset + j]))
                return at_fail(AT_ERR_NAN, "the gradient of %s became %g", t->name, (double)g[t->offset + j]);
    }
    return at_fail(AT_ERR_NAN, "a gradient became non-finite");
}

/* The regularization steps around the optimizer: penalty gradients, clipping, the step itself,
 * proximal L1 and max-norm. *penalty and *norm receive the penalty and the gradient norm. */
static at_status regularized_step(at_net *net, at_optim *opt, const at_train_config *cfg,
                                  float *penalty, float *norm) {
    at_status s = check_gradients(net);
    if (s != AT_OK) return s;
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

/* Augmentation, input noise and mixup on the gathered batch bi of the epoch: each sample's crop,
 * flip and noise drawn from its index in the epoch's order, mixup's weight and partners from the
 * batch's. Returns the inputs to train on (b->x or the mixed copy); *soft receives the soft
 * targets when mixup is on (classification). */
static const float *prepare_inputs(const at_dataset *train, const at_train_config *cfg,
                                   batch_buffers *b, train_extra *e, int n, int k, int epoch, int bi,
                                   const float **soft) {
    const int d = at_dataset_sample_size(train);
    const int64_t first = (int64_t)bi * cfg->batch;
    *soft = NULL;
    at_augment_batch(b->x, n, train->c, train->h, train->w, &cfg->augment,
                     at_draw_key(cfg->seed, AT_DRAW_AUGMENT, epoch), first);
    if (cfg->input_noise > 0.0f)
        at_gaussian_noise(b->x, n, (size_t)d, cfg->input_noise, train->images != NULL,
                          at_draw_key(cfg->seed, AT_DRAW_NOISE, epoch), first);
    if (cfg->mixup_alpha <= 0.0f) return b->x;
    at_rng rng;
    at_rng_for_sample(&rng, at_draw_key(cfg->seed, AT_DRAW_MIXUP, epoch), bi);
    float lam = (float)at_rng_beta(&rng, cfg->mixup_alpha, cfg->mixup_alpha);
    for (int i = 0; i < n; i++) e->perm[i] = i;
    at_rng_shuffle(&rng, e->perm, n);
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

/* What an epoch accumulates over its batches. A checkpoint written mid-epoch (a stop request)
 * keeps it, so that the resumed epoch reports what an uninterrupted one would. */
typedef struct epoch_sums {
    int batches; /* batches done */
    double loss, penalty, norm, seconds;
    long hits, adv_hits;
    float eps;
    int skipped;  /* batches skipped for a non-finite loss or gradient */
    long samples; /* in the batches not skipped */
} epoch_sums;

/* Everything the loop carries from one step to the next, for checkpoints. */
typedef struct loop_state {
    at_net *net;
    at_optim *opt;
    at_schedule *sched;
    adv_trainer *adv;
    early_stopping *es;
    train_extra *extra;
    best_tracker *best;
    int64_t *step;
    float *lr_scale;
    int *skipped_in_row;
} loop_state;

static const char *optim_name(at_optim_kind kind) {
    return kind == AT_OPTIM_SGD ? "sgd" : kind == AT_OPTIM_ADAM ? "adam" : "adamw";
}

static void put_partial(ckpt_state *c, const epoch_sums *p) {
    ckpt_put_int(c, "epoch_batches", p->batches);
    ckpt_put_num(c, "epoch_loss", p->loss);
    ckpt_put_num(c, "epoch_penalty", p->penalty);
    ckpt_put_num(c, "epoch_norm", p->norm);
    ckpt_put_num(c, "epoch_seconds", p->seconds);
    ckpt_put_int(c, "epoch_hits", p->hits);
    ckpt_put_int(c, "epoch_adv_hits", p->adv_hits);
    ckpt_put_num(c, "epoch_eps", p->eps);
    ckpt_put_int(c, "epoch_skipped", p->skipped);
    ckpt_put_int(c, "epoch_samples", p->samples);
}

/* An epoch-end checkpoint has no epoch_batches: the next epoch starts from nothing. */
static at_status get_partial(const ckpt_state *c, epoch_sums *p, int nbatches, int batch) {
    memset(p, 0, sizeof *p);
    int64_t batches = 0, hits = 0, adv_hits = 0;
    double eps = 0;
    if (!ckpt_has(c, "epoch_batches")) return AT_OK;
    at_status s = ckpt_get_int(c, "epoch_batches", &batches);
    if (s == AT_OK && (batches < 0 || batches >= nbatches))
        s = at_fail(AT_ERR_FORMAT, "%s: epoch_batches %lld out of range", c->path, (long long)batches);
    if (s == AT_OK) s = ckpt_get_num(c, "epoch_loss", &p->loss);
    if (s == AT_OK) s = ckpt_get_num(c, "epoch_penalty", &p->penalty);
    if (s == AT_OK) s = ckpt_get_num(c, "epoch_norm", &p->norm);
    if (s == AT_OK) s = ckpt_get_num(c, "epoch_seconds", &p->seconds);
    if (s == AT_OK) s = ckpt_get_int_in(c, "epoch_hits", 0, CKPT_MAX_COUNT, &hits);
    if (s == AT_OK) s = ckpt_get_int_in(c, "epoch_adv_hits", 0, CKPT_MAX_COUNT, &adv_hits);
    if (s == AT_OK) s = ckpt_get_num_in(c, "epoch_eps", 0, FLT_MAX, &eps);
    /* A checkpoint from before --on-nonfinite skip has neither count: no batch was skipped, and
     * the batches done, all before the epoch's last, were full. */
    int64_t skipped = 0, samples = batches * (int64_t)batch;
    if (s == AT_OK && ckpt_has(c, "epoch_skipped"))
        s = ckpt_get_int_in(c, "epoch_skipped", 0, INT_MAX, &skipped);
    if (s == AT_OK && ckpt_has(c, "epoch_samples"))
        s = ckpt_get_int_in(c, "epoch_samples", 0, CKPT_MAX_COUNT, &samples);
    p->skipped = (int)skipped;
    p->samples = (long)samples;
    p->batches = (int)batches;
    p->hits = (long)hits;
    p->adv_hits = (long)adv_hits;
    p->eps = (float)eps;
    return s;
}

/* best.safetensors when this epoch is the best so far, with its epoch in the metadata. */
static at_status save_best(const loop_state *L, const at_checkpoint_config *ck, int epoch) {
    char best[4096], epoch_text[16];
    at_status s = ckpt_path(best, sizeof best, ck->dir, "best.safetensors");
    if (s != AT_OK) return s;
    snprintf(epoch_text, sizeof epoch_text, "%d", epoch);
    at_st_meta *meta = at_calloc((size_t)ck->nmeta + 1, sizeof *meta, "metadata");
    if (!meta) return AT_ERR_NOMEM;
    for (int i = 0; i < ck->nmeta; i++) meta[i] = ck->meta[i];
    meta[ck->nmeta] = (at_st_meta){"advtrain.best_epoch", epoch_text};
    s = at_model_save(L->net, best, meta, ck->nmeta + 1);
    free(meta);
    return s;
}

/* last.safetensors after `epoch` completed epochs and, mid-epoch, the next one's part p. */
static at_status save_checkpoint(const loop_state *L, const at_train_config *cfg,
                                 const at_dataset *train, int epoch, const epoch_sums *p,
                                 bool best_now, bool stopped) {
    const at_checkpoint_config *ck = &cfg->checkpoint;
    if (dp_shared(cfg) && cfg->comm->rank != 0) return AT_OK; /* rank 0 writes for the job */
    char path[4096];
    at_status s = ckpt_path(path, sizeof path, ck->dir, "last.safetensors");
    if (s == AT_OK && best_now) s = save_best(L, ck, epoch);
    if (s != AT_OK) return s;
    ckpt_state c;
    if ((s = ckpt_begin(&c)) != AT_OK) return s;
    size_t state_count;
    const float *state = at_optim_state(L->opt, &state_count);
    ckpt_put_int(&c, "version", p ? 2 : 1);
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
    ckpt_put_u64(&c, "forward_count", at_net_forward_count(L->net));
    ckpt_put_num(&c, "schedule_lr", L->sched->lr);
    ckpt_put_num(&c, "lr_scale", *L->lr_scale);
    ckpt_put_int(&c, "skipped_in_row", *L->skipped_in_row);
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
    if (p) put_partial(&c, p);
    s = ckpt_write(&c, L->net, path, ck->meta, ck->nmeta);
    ckpt_end(&c);
    return s;
}

static at_status mismatch(const char *path, const char *what, long long was, long long now) {
    return at_fail(AT_ERR_ARG, "%s was written with %s %lld, this run has %lld: resume with the "
                               "settings of the interrupted run",
                   path, what, was, now);
}

/* Whether checkpoint c (at path) was written by this run's settings: architecture, batch size,
 * seed, training set size, optimizer and adversarial method. */
static at_status check_same_run(const ckpt_state *c, const char *path, const loop_state *L,
                                const at_train_config *cfg, const at_dataset *train) {
    const char *arch = at_st_meta_get(c->file, "advtrain.arch");
    if (!arch || strcmp(arch, at_net_spec(L->net)) != 0)
        return at_fail(AT_ERR_ARG, "%s holds the architecture '%s', this run trains '%s'", path,
                       arch ? arch : "(none)", at_net_spec(L->net));
    int64_t batch = 0, n = 0;
    uint64_t seed = 0;
    at_status s = ckpt_get_int(c, "batch", &batch);
    if (s == AT_OK) s = ckpt_get_u64(c, "seed", &seed);
    if (s == AT_OK) s = ckpt_get_int(c, "train_samples", &n);
    if (s == AT_OK && batch != cfg->batch) s = mismatch(path, "batch size", batch, cfg->batch);
    if (s == AT_OK && seed != cfg->seed) s = mismatch(path, "seed", (long long)seed, (long long)cfg->seed);
    if (s == AT_OK && n != train->n) s = mismatch(path, "a training set of size", n, train->n);
    const char *optimizer = ckpt_get_str(c, "optimizer"), *adversarial = ckpt_get_str(c, "adversarial");
    if (s == AT_OK && (!optimizer || strcmp(optimizer, optim_name(cfg->optim.kind)) != 0))
        s = at_fail(AT_ERR_ARG, "%s was written with the %s optimizer, this run uses %s", path,
                    optimizer ? optimizer : "(unknown)", optim_name(cfg->optim.kind));
    if (s == AT_OK && (!adversarial || strcmp(adversarial, at_adv_method_name(cfg->adv.method)) != 0))
        s = at_fail(AT_ERR_ARG, "%s was written with adversarial training '%s', this run uses '%s'",
                    path, adversarial ? adversarial : "(unknown)", at_adv_method_name(cfg->adv.method));
    return s;
}

/* Restores the loop from DIR/last.safetensors; *epoch receives the epoch it completed. */
static at_status load_checkpoint(const loop_state *L, const at_train_config *cfg,
                                 const at_dataset *train, int *epoch, epoch_sums *part,
                                 bool *stopped) {
    char path[4096];
    at_status s = ckpt_path(path, sizeof path, cfg->checkpoint.dir, "last.safetensors");
    if (s != AT_OK) return s;
    ckpt_state c;
    if ((s = ckpt_open(&c, path)) != AT_OK) {
        ckpt_end(&c);
        return s;
    }
    int64_t stop = 0, ep = 0, step = 0, optim_steps = 0, bad = 0, cool = 0, ebest = 0, wait = 0, best_epoch = 0;
    uint64_t forward = 0;
    double lr = 0, sched_lr = 0, sched_best = 0, early_best = 0, best_value = 0;
    size_t state_count;
    float *state = at_optim_state(L->opt, &state_count);
    s = check_same_run(&c, path, L, cfg, train);
    if (s == AT_OK) s = ckpt_get_int_in(&c, "epoch", 0, CKPT_MAX_EPOCH, &ep);
    if (s == AT_OK) s = at_net_load_weights(L->net, c.file, path);
    if (s == AT_OK) s = ckpt_get_int_in(&c, "step", 0, INT_MAX, &step);
    if (s == AT_OK) s = ckpt_get_int_in(&c, "early_stopped", 0, 1, &stop);
    if (s == AT_OK) s = ckpt_get_num_in(&c, "lr", 0, FLT_MAX, &lr);
    if (s == AT_OK) s = ckpt_get_int_in(&c, "optim_steps", 0, CKPT_MAX_COUNT, &optim_steps);
    if (s == AT_OK) s = ckpt_get_floats(&c, "optim_state", state, state_count);
    /* Checkpoints before 2026-12-07 also hold "rng_augment", the generator augmentation, noise
     * and mixup then drew from in sequence; they are now drawn per sample and batch (unused). */
    if (s == AT_OK) s = ckpt_get_u64(&c, "forward_count", &forward);
    if (s == AT_OK) s = ckpt_get_num_in(&c, "schedule_lr", 0, FLT_MAX, &sched_lr);
    double lr_scale = 1.0;
    int64_t in_row = 0;
    if (s == AT_OK && ckpt_has(&c, "lr_scale")) s = ckpt_get_num_in(&c, "lr_scale", 0, 1, &lr_scale);
    if (s == AT_OK && ckpt_has(&c, "skipped_in_row"))
        s = ckpt_get_int_in(&c, "skipped_in_row", 0, INT_MAX, &in_row);
    if (s == AT_OK) s = ckpt_get_num(&c, "schedule_best", &sched_best);
    if (s == AT_OK) s = ckpt_get_int_in(&c, "schedule_bad_epochs", 0, INT_MAX, &bad);
    if (s == AT_OK) s = ckpt_get_int_in(&c, "schedule_cooldown_left", 0, INT_MAX, &cool);
    if (s == AT_OK) s = ckpt_get_num(&c, "early_best", &early_best);
    if (s == AT_OK) s = ckpt_get_int_in(&c, "early_best_epoch", 0, CKPT_MAX_EPOCH, &ebest);
    if (s == AT_OK) s = ckpt_get_int_in(&c, "early_wait", 0, INT_MAX, &wait);
    if (s == AT_OK && L->extra->best && ebest > 0)
        s = ckpt_get_floats(&c, "early_best_params", L->extra->best, at_net_num_params(L->net));
    if (s == AT_OK) s = ckpt_get_num(&c, "best_value", &best_value);
    if (s == AT_OK) s = ckpt_get_int_in(&c, "best_epoch", 0, CKPT_MAX_EPOCH, &best_epoch);
    if (s == AT_OK && L->adv) s = adv_trainer_load_state(L->adv, &c);
    if (s == AT_OK) s = get_partial(&c, part, (train->n + cfg->batch - 1) / cfg->batch, cfg->batch);
    ckpt_end(&c);
    if (s != AT_OK) return s;
    at_optim_set_lr(L->opt, (float)lr);
    at_optim_set_steps(L->opt, optim_steps);
    at_net_set_forward_count(L->net, forward);
    L->sched->lr = (float)sched_lr;
    *L->lr_scale = (float)lr_scale;
    *L->skipped_in_row = (int)in_row;
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

at_status at_checkpoint_progress(const char *dir, int *epoch, int *batches) {
    *epoch = *batches = 0;
    char path[4096];
    at_status s = ckpt_path(path, sizeof path, dir, "last.safetensors");
    if (s != AT_OK) return s;
    ckpt_state c;
    int64_t ep = 0, b = 0;
    if ((s = ckpt_open(&c, path)) == AT_OK) s = ckpt_get_int_in(&c, "epoch", 0, CKPT_MAX_EPOCH, &ep);
    if (s == AT_OK && ckpt_has(&c, "epoch_batches")) s = ckpt_get_int_in(&c, "epoch_batches", 0, INT_MAX, &b);
    ckpt_end(&c);
    *epoch = (int)ep;
    *batches = (int)b;
    return s;
}

at_status at_checkpoint_epoch(const char *dir, int *epoch) {
    int batches;
    return at_checkpoint_progress(dir, epoch, &batches);
}


/* One training run: what at_train sets up once and its steps share. */
typedef struct trainer {
    at_net *net;
    const at_dataset *train, *val, *test;
    const at_train_config *cfg;
    const at_train_callbacks *cb;
    int k, nbatches, replays;
    bool maximize;
    at_schedule_config sc;
    at_schedule sched;
    at_optim *opt;
    batch_buffers b, eval; /* a training batch; an evaluation batch (eval_batch samples) */
    int eval_batch;
    train_extra e;
    adv_trainer *adv;
    at_rng rng; /* the epochs' shuffles */
    early_stopping es;
    int64_t step;
    best_tracker best;
    float lr_scale;     /* halved by every skipped non-finite step (skip_nonfinite) */
    int skipped_in_row; /* such steps since the last good one */
    loop_state loop;
    float *dp_buf;      /* data-parallel: the gradients and batch numbers summed over the ranks */
    bool stop_agreed;   /* data-parallel: a stop requested on some rank by the last sum */
} trainer;

/* A stop request (a signal handler's flag); under data parallelism any rank's, agreed on at the
 * last gradient sum, so that every rank stops after the same step. */
static bool stop_here(const trainer *T) { return T->cb && T->cb->stop && *T->cb->stop; }
static bool stop_requested(const trainer *T) { return dp_shared(T->cfg) ? T->stop_agreed : stop_here(T); }

/* Learning rate for this epoch's start (epoch-wise schedules) or this step (one-cycle), times
 * what skipped non-finite steps took off. */
static void apply_schedule(trainer *T, int t) {
    const at_schedule_kind kind = T->sched.cfg.kind;
    if (kind != AT_SCHEDULE_CONSTANT && kind != AT_SCHEDULE_PLATEAU)
        at_optim_set_lr(T->opt, T->lr_scale * at_schedule_lr(&T->sched, t));
}

/* What a step trains on: samples [first, first + n) of batch bi of the epoch, the whole batch or
 * under data parallelism this rank's slice, whose share of the batch is n / batch size. */
typedef struct batch_slice {
    int epoch, bi, first, n;
    float share;
} batch_slice;

/* The gradient of a batch slice (Free-AT: of one replay) into the network's gradients, the loss
 * gradient scaled to the slice's share so that every backward quantity, BatchNorm's summed ones
 * included, is the whole batch's. */
static at_status batch_gradients(trainer *T, const float *x, const float *soft, const batch_slice *sl,
                                 float eps, float *loss, int *correct, int *adv_correct) {
    at_net *net = T->net;
    const int first = sl->first, n = sl->n;
    float scale = sl->share;
    at_net_zero_grad(net);
    at_net_share(net, T->cfg->comm, first);
    batch_buffers slice = T->b; /* the labels and targets of the slice; dlogits from its start */
    if (slice.y) slice.y += first;
    if (slice.t) slice.t += (size_t)first * T->train->target_dim;
    if (T->adv)
        return adv_trainer_gradients(T->adv, x, slice.y, soft, n, sl->epoch, (int64_t)sl->bi * T->cfg->batch + first,
                                     eps, scale, loss, correct, adv_correct);
    certify_point cp = {0.0f, 1.0f, 0.0f}; /* certified training: radius, clean loss's weight, beta */
    if (T->cfg->certify.eps > 0.0f) certify_schedule(&T->cfg->certify, T->step, T->nbatches, &cp);
    const float share = sl->share, kappa = cp.kappa; /* share: 1 in one process */
    scale *= kappa;
    const float *out;
    at_status s = at_net_forward(net, x, n, &out);
    if (s == AT_OK && soft)
        s = at_cross_entropy_soft(out, soft, n, T->k, loss, slice.dlogits, correct);
    else if (s == AT_OK)
        s = batch_loss(T->train, out, &slice, n, T->k, T->cfg->label_smoothing, loss, correct);
    for (size_t i = 0; s == AT_OK && scale != 1.0f && i < (size_t)n * T->k; i++) slice.dlogits[i] *= scale;
    if (s == AT_OK) s = at_net_backward(net, slice.dlogits, AT_GRAD_PARAMS, NULL);
    if (s == AT_OK && kappa < 1.0f && cp.eps > 0.0f) { /* the certified part, weighted 1 - kappa */
        float robust;
        s = at_certified_loss(net, x, slice.y, n, cp.eps, cp.beta, share * (1.0f - kappa), &robust, NULL);
        *loss = kappa * *loss + (1.0f - kappa) * robust;
    }
    return s;
}

/* Data parallelism: the slices' gradients and numbers summed into the global batch's on every
 * rank; a non-finite loss on any rank is one on all of them (they then skip or stop together). */
static at_status share_batch(trainer *T, at_status s, int n_slice, int n, float *loss, int *correct,
                             int *adv_correct) {
    if (s != AT_OK && s != AT_ERR_NAN) return s;
    dp_batch b = {*loss, *correct, *adv_correct, s == AT_ERR_NAN, stop_here(T)};
    at_status d = dp_sum_batch(T->net, T->cfg->comm, n_slice, n, &b, T->dp_buf);
    if (d != AT_OK) return d;
    T->stop_agreed = b.stop;
    *loss = b.loss;
    *correct = b.correct;
    *adv_correct = b.adv_correct;
    return b.nonfinite ? AT_ERR_NAN : AT_OK;
}

/* Batch bi of the epoch: gradients and optimizer step(s), added into the epoch's sums. */
/* A step whose loss or gradient is not finite (the error set, AT_ERR_NAN): with skip_nonfinite
 * the batch is dropped and the learning rate halved for the rest of the run, else (or after 10
 * such batches in a row) training stops, naming the epoch and batch. */
static at_status nonfinite_step(trainer *T, int epoch, int bi, epoch_sums *p) {
    char what[512]; /* at_fail must not format its own message into itself */
    snprintf(what, sizeof what, "%s", at_error_message());
    if (T->cfg->skip_nonfinite && T->skipped_in_row < 10) {
        p->skipped++;
        T->skipped_in_row++;
        T->lr_scale *= 0.5f;
        at_optim_set_lr(T->opt, 0.5f * at_optim_lr(T->opt));
        return AT_OK;
    }
    return at_fail(AT_ERR_NAN, "%s at epoch %d, batch %d: training diverged (try a smaller learning "
                               "rate%s)",
                   what, epoch, bi + 1, T->cfg->skip_nonfinite ? "; 10 batches in a row were skipped" : "");
}

/* Batch bi of the epoch: gradients and optimizer step(s), added into the epoch's sums. */
static at_status train_batch(trainer *T, int epoch, int bi, epoch_sums *p) {
    const at_train_config *cfg = T->cfg;
    const int first = bi * cfg->batch, n = AT_MIN(cfg->batch, T->train->n - first);
    at_dataset_batch(T->train, T->b.idx + first, n, T->b.x, T->b.y, T->b.t);
    const float *soft, *x = prepare_inputs(T->train, cfg, &T->b, &T->e, n, T->k, epoch, bi, &soft);
    int lo, hi; /* this rank's slice of the prepared batch (all of it in one process) */
    at_comm_share(cfg->comm, n, &lo, &hi);
    x += (size_t)lo * at_dataset_sample_size(T->train);
    if (soft) soft += (size_t)lo * T->k;
    float loss = NAN, penalty = 0.0f, norm = NAN;
    int correct = 0;
    at_status s = AT_OK;
    if (T->sc.kind == AT_SCHEDULE_ONECYCLE) apply_schedule(T, (int)T->step);
    p->batches = bi + 1;
    /* Free-AT replays each batch; every other method computes one gradient. */
    for (int r = 0; r < T->replays && s == AT_OK; r++) {
        int adv_correct = 0;
        if (T->adv) p->eps = adv_trainer_eps(T->adv, T->step);
        if (cfg->certify.eps > 0.0f) {
            certify_point cp;
            certify_schedule(&cfg->certify, T->step, T->nbatches, &cp);
            p->eps = cp.eps;
        }
        const batch_slice sl = {epoch, bi, lo, hi - lo, (float)(hi - lo) / (float)n};
        qat_begin(T->net); /* QAT: the gradient at the rounded weights, applied to the float ones */
        s = batch_gradients(T, x, soft, &sl, p->eps, &loss, &correct, &adv_correct);
        qat_end(T->net);
        if (dp_shared(cfg)) s = share_batch(T, s, hi - lo, n, &loss, &correct, &adv_correct);
        if (s == AT_ERR_NAN)
            at_fail(AT_ERR_NAN, "the training loss became %g", (double)loss);
        else if (s == AT_OK)
            s = regularized_step(T->net, T->opt, cfg, &penalty, &norm);
        if (s == AT_ERR_NAN) return nonfinite_step(T, epoch, bi, p);
        if (adv_correct < 0) p->adv_hits = -1; /* not measured by this method */
        if (p->adv_hits >= 0) p->adv_hits += adv_correct;
    }
    if (s != AT_OK) return s;
    /* Free-AT reports its last replay of the batch. */
    T->skipped_in_row = 0;
    p->samples += n;
    p->loss += (double)loss * n;
    p->penalty += penalty;
    p->norm += norm;
    p->hits += correct;
    if (T->cb && T->cb->on_batch) {
        const float running = (float)(p->loss / p->samples);
        T->cb->on_batch(T->cb->user, epoch, bi + 1, T->nbatches, running,
                        is_regression(T->train) ? running : (float)((double)p->hits / p->samples));
    }
    return AT_OK;
}

/* A stop request between two batches: the step count and sums so far in last.safetensors. */
static at_status interrupt(trainer *T, int epoch, const epoch_sums *p) {
    at_status s = AT_OK;
    if (T->cfg->checkpoint.dir)
        s = save_checkpoint(&T->loop, T->cfg, T->train, epoch - 1, p, false, false);
    if (s != AT_OK) return s;
    return at_fail(AT_ERR_INTERRUPTED, "stopped on request at epoch %d, batch %d of %d%s", epoch,
                   p->batches, T->nbatches, T->cfg->checkpoint.dir ? " (checkpoint written)" : "");
}

/* The batches of an epoch, from where p left off. */
static at_status train_epoch(trainer *T, int epoch, epoch_sums *p) {
    at_status s = AT_OK;
    const double start = now_seconds();
    at_net_set_training(T->net, true);
    for (int bi = p->batches; bi < T->nbatches && s == AT_OK; bi++, T->step++) {
        if (stop_requested(T)) {
            p->seconds += now_seconds() - start;
            at_net_set_training(T->net, false);
            return interrupt(T, epoch, p);
        }
        s = train_batch(T, epoch, bi, p);
    }
    at_net_set_training(T->net, false);
    at_net_share(T->net, NULL, 0); /* evaluation passes run whole on every rank */
    p->seconds += now_seconds() - start;
    return s;
}

/* Validation or test metrics (NAN without the split) in the buffers allocated once. */
static at_status evaluate_or_nan(trainer *T, const at_dataset *ds, at_eval_result *r) {
    r->loss = r->accuracy = r->mse = NAN;
    if (!ds) return AT_OK;
    return evaluate_with(T->net, ds, T->eval_batch, &T->eval, dp_shared(T->cfg) ? T->cfg->comm : NULL, r);
}

/* The epoch's statistics from its sums, before evaluation. */
static at_epoch_stats epoch_stats(const trainer *T, int epoch, const epoch_sums *p) {
    at_epoch_stats st;
    memset(&st, 0, sizeof st);
    const int n = T->train->n;
    st.epoch = epoch;
    st.epochs = T->cfg->epochs;
    st.lr = at_optim_lr(T->opt);
    st.seconds = p->seconds;
    st.train_loss = (float)(p->loss / p->samples);
    st.train_metric = is_regression(T->train) ? st.train_loss : (float)((double)p->hits / p->samples);
    st.skipped = p->skipped;
    st.penalty = (float)(p->penalty / T->nbatches);
    st.grad_norm = T->cfg->clip_grad > 0.0f ? (float)(p->norm / T->nbatches) : NAN;
    st.eps = T->adv || T->cfg->certify.eps > 0.0f ? p->eps : NAN;
    if (T->cfg->certify.eps > 0.0f) /* the adversarial trainer names its own method */
        st.method = at_bound_method_name(T->cfg->certify.method);
    st.adv_metric = T->adv && p->adv_hits >= 0 ? (float)((double)p->adv_hits / ((double)n * T->replays)) : NAN;
    st.robust_val = st.guard_acc = NAN;
    return st;
}

/* The plateau schedule and early stopping watch `monitored` (st gets the best epoch and whether
 * to stop). */
static void watch_monitored(trainer *T, int epoch, double monitored, at_epoch_stats *st) {
    if (T->sc.kind == AT_SCHEDULE_PLATEAU)
        at_optim_set_lr(T->opt, T->lr_scale * at_schedule_observe(&T->sched, (float)monitored));
    if (T->cfg->early_stop <= 0) return;
    early_stopping *es = &T->es;
    if (improves(monitored, es->best, T->cfg->min_delta, T->maximize)) {
        es->best = monitored;
        es->best_epoch = epoch;
        es->wait = 0;
        memcpy(T->e.best, at_net_params(T->net), sizeof(float) * at_net_num_params(T->net));
    } else {
        es->wait++;
    }
    if (!(T->adv && st->best_epoch > 0)) st->best_epoch = es->best_epoch;
    st->stopping = es->wait >= T->cfg->early_stop;
}

/* The best epoch for best.safetensors (larger is better for both choices below). */
static bool is_best(trainer *T, int epoch, const at_epoch_stats *st, double monitored) {
    if (isnan(st->robust_val) && !T->val) return false;
    double v = !isnan(st->robust_val) ? st->robust_val : T->maximize ? monitored : -monitored;
    if (T->best.epoch != 0 && !(v > T->best.best)) return false;
    T->best.best = v;
    T->best.epoch = epoch;
    return true;
}

/* After an epoch's batches: evaluation, schedule, early stopping, the callback and the
 * checkpoint. *finish: training ends after this epoch. */
static at_status end_epoch(trainer *T, int epoch, const epoch_sums *p, bool *finish) {
    at_epoch_stats st = epoch_stats(T, epoch, p);
    at_status s = T->adv ? adv_trainer_end_epoch(T->adv, epoch, &st) : AT_OK;
    at_eval_result rv, rt;
    qat_begin(T->net); /* QAT: the metrics of the network as it will run in int8 */
    if (s == AT_OK) s = evaluate_or_nan(T, T->val, &rv);
    if (s == AT_OK) s = evaluate_or_nan(T, T->test, &rt);
    qat_end(T->net);
    if (s != AT_OK) return s;
    st.val_loss = rv.loss;
    st.val_metric = T->val ? at_eval_metric(T->val, &rv) : NAN;
    st.test_metric = T->test ? at_eval_metric(T->test, &rt) : NAN;
    const double monitored = T->cfg->monitor == AT_MONITOR_VAL_LOSS
                                 ? (T->val ? st.val_loss : st.train_loss)
                                 : (T->val ? st.val_metric : st.train_metric);
    watch_monitored(T, epoch, monitored, &st);
    const bool best_now = is_best(T, epoch, &st, monitored);
    /* The callback (which may log this epoch) runs before the checkpoint: a run killed in
     * between repeats the epoch and its log line. */
    const bool go_on = !(T->cb && T->cb->on_epoch) || T->cb->on_epoch(T->cb->user, &st);
    if (T->cfg->checkpoint.dir &&
        (s = save_checkpoint(&T->loop, T->cfg, T->train, epoch, NULL, best_now, st.stopping)) != AT_OK)
        return s;
    *finish = !go_on || st.stopping;
    return AT_OK;
}

/* QAT state for the run (a file's trained ranges are kept and go on moving); without QAT any
 * ranges are dropped, since the weights they were trained with change. */
static at_status qat_setup(at_net *net, const at_train_config *cfg) {
    if (!cfg->qat.enabled) {
        qat_free(net);
        return AT_OK;
    }
    return qat_attach(net, cfg->qat.momentum);
}

/* Everything sized once before the first step. */
static at_status setup(trainer *T) {
    const at_train_config *cfg = T->cfg;
    at_status s = at_optim_create(&T->opt, T->net, &cfg->optim);
    if (s == AT_OK && cfg->optim.weight_decay > 0.0f) s = at_optim_set_decay_select(T->opt, &cfg->reg_select);
    if (s == AT_OK) s = alloc_batch(&T->b, T->train, cfg->batch, T->k);
    T->eval_batch = AT_MAX(cfg->batch, 256);
    if (s == AT_OK) s = alloc_batch(&T->eval, T->train, T->eval_batch, T->k);
    if (s == AT_OK) s = alloc_extra(&T->e, T->net, T->train, cfg, T->k);
    if (s == AT_OK) s = at_net_reserve(T->net, cfg->batch);
    if (s == AT_OK && cfg->adv.method != AT_ADV_NONE)
        s = adv_trainer_create(&T->adv, T->net, T->opt, cfg, T->train, T->val, T->nbatches);
    T->replays = T->adv ? adv_trainer_replays(T->adv) : 1;
    at_rng_seed(&T->rng, cfg->seed);
    at_net_seed(T->net, cfg->seed ^ 0x5DEECE66Dull);
    for (int i = 0; s == AT_OK && i < T->train->n; i++) T->b.idx[i] = i;
    T->es = (early_stopping){T->maximize ? -INFINITY : INFINITY, 0, 0};
    T->best = (best_tracker){-INFINITY, 0};
    T->lr_scale = 1.0f;
    T->loop = (loop_state){T->net, T->opt, &T->sched, T->adv, &T->es, &T->e, &T->best, &T->step,
                           &T->lr_scale, &T->skipped_in_row};
    if (s == AT_OK && dp_shared(cfg)) {
        T->dp_buf = malloc(sizeof(float) * dp_buffer_floats(T->net, cfg->comm) + 8);
        s = T->dp_buf ? dp_start(T->net, cfg->comm) : at_fail(AT_ERR_NOMEM, "out of memory for the gradient sum");
    }
    return s;
}

static void teardown(trainer *T) {
    at_net_share(T->net, NULL, 0);
    free(T->dp_buf);
    adv_trainer_free(T->adv);
    free_extra(&T->e);
    free_batch(&T->b);
    free_batch(&T->eval);
    at_optim_free(T->opt);
}

/* The schedule the run follows (the step schedule's default step: a third of the epochs). */
static at_status init_schedule(trainer *T) {
    const at_train_config *cfg = T->cfg;
    T->k = at_net_out_size(T->net);
    T->nbatches = (T->train->n + cfg->batch - 1) / cfg->batch;
    /* The plateau schedule and early stopping watch a loss (lower is better) or the metric. */
    T->maximize = cfg->monitor == AT_MONITOR_VAL_METRIC && !is_regression(T->train);
    T->sc = cfg->schedule;
    if (T->sc.kind == AT_SCHEDULE_STEP && T->sc.step_size == 0)
        T->sc.step_size = AT_MAX(1, (cfg->epochs + 2) / 3);
    int total = T->sc.kind == AT_SCHEDULE_ONECYCLE ? cfg->epochs * T->nbatches : cfg->epochs;
    return at_schedule_init(&T->sched, &T->sc, cfg->optim.lr, total, T->maximize);
}

/* The epochs from the first one not done (resume: after the checkpoint's), p: its part done. */
static at_status run_epochs(trainer *T, int done, epoch_sums *p, bool stopped) {
    at_status s = AT_OK;
    for (int epoch = done + 1; epoch <= T->cfg->epochs && !stopped && s == AT_OK; epoch++) {
        apply_schedule(T, epoch - 1);
        at_rng_shuffle(&T->rng, T->b.idx, T->train->n);
        if (epoch > done + 1) memset(p, 0, sizeof *p);
        if ((s = train_epoch(T, epoch, p)) != AT_OK) break;
        if ((s = end_epoch(T, epoch, p, &stopped)) != AT_OK) break;
        if (!stopped && epoch < T->cfg->epochs && stop_requested(T)) {
            memset(p, 0, sizeof *p);
            return interrupt(T, epoch + 1, p);
        }
    }
    return s;
}

at_status at_train(at_net *net, const at_dataset *train, const at_dataset *val,
                   const at_dataset *test, const at_train_config *cfg,
                   const at_train_callbacks *cb) {
    at_status s = check_compatible(net, train, "training");
    if (s == AT_OK && val) s = check_compatible(net, val, "validation");
    if (s == AT_OK && test) s = check_compatible(net, test, "test");
    if (s == AT_OK) s = check_train_config(net, train, val, cfg);
    if (s == AT_OK) s = dp_check(cfg);
    if (s == AT_OK) s = certify_check(cfg, train, net);
    if (s == AT_OK) s = qat_setup(net, cfg);
    if (s != AT_OK) return s;
    trainer *T = at_calloc(1, sizeof *T, "the training loop");
    if (!T) return AT_ERR_NOMEM;
    *T = (trainer){.net = net, .train = train, .val = val, .test = test, .cfg = cfg, .cb = cb};
    if ((s = init_schedule(T)) == AT_OK) s = setup(T);
    int done = 0;
    epoch_sums part = {0};
    bool stopped = false; /* early stopping had ended the run that wrote the checkpoint */
    if (s == AT_OK && cfg->checkpoint.dir && cfg->checkpoint.resume) {
        s = load_checkpoint(&T->loop, cfg, train, &done, &part, &stopped);
        /* The sample order evolves one shuffle per epoch: replaying them restores it and the
         * shuffling RNG without storing either. */
        for (int epoch = 1; s == AT_OK && epoch <= done; epoch++) at_rng_shuffle(&T->rng, T->b.idx, train->n);
    }
    if (s == AT_OK) s = run_epochs(T, done, &part, stopped);
    /* Keras's restore_best_weights, whether training stopped early or ran out of epochs. */
    if (s == AT_OK && cfg->early_stop > 0 && T->es.best_epoch > 0)
        memcpy(at_net_params(net), T->e.best, sizeof(float) * at_net_num_params(net));
    /* The best robust epoch wins over the last one (robust overfitting, Rice et al. 2020). */
    if (s == AT_OK && T->adv) adv_trainer_finish(T->adv);
    teardown(T);
    free(T);
    return s;
}
