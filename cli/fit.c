/* advtrain fit: train a model (with any regularization) on a dataset, report and save it.
 *
 * Output: a header, one line per epoch, then a report: per layer the weight L1 and L2 norms and
 * the fraction of exact zeros, and train / validation / test accuracy (or MSE) with the
 * generalization gap. With --json, stdout holds exactly one JSON object with all of that and
 * every human-readable line goes to stderr instead (--quiet silences them). */
#include "cli.h"
#include "fit_watch.h"
#include "interrupt.h"
#include "metrics_log.h"
#include "outpaths.h"
#include "rundir.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

typedef struct fit_args {
    const char *model, *data, *optim, *out, *init, *weights;
    int epochs, batch, threads, train_subset, width;
    float lr, momentum, val_split;
    bool nesterov, quiet, json;
    uint64_t seed;
    /* regularization */
    float l1, l2, weight_decay, max_norm, dropout, label_smoothing, clip_grad, noise, mixup;
    const char *reg_layers, *augment, *schedule, *monitor, *on_nonfinite;
    bool reg_bias, decoupled, prox_l1;
    int step_size, plateau_patience, early_stop;
    float gamma, min_lr, pct_start, plateau_factor, min_delta;
    /* adversarial training */
    const char *adv, *adv_norm;
    const char *eps_text; /* "0.1" or "8/255": cli_parse_eps */
    float eps, alpha, clean_weight, beta;
    int adv_steps, replays, eps_warmup, robust_val_steps, robust_val_samples;
    bool no_guard, keep_last, force;
    /* quantization-aware training */
    bool qat;
    float qat_momentum;
    /* certified training */
    const char *certify;
    int certify_warmup, certify_ramp;
    float kappa, beta_start, beta_end;
    /* runs: checkpoints, resume, log, config file */
    const char *checkpoint_dir, *resume, *log, *config;
} fit_args;

typedef struct fit_state {
    const fit_args *args;
    FILE *log; /* stdout, or stderr with --json */
    bool regression;
    double start, epoch_start, run_start;
    int first_epoch;  /* the first epoch this process trains (0: none yet) */
    bool has_val;
    at_epoch_stats last;
    int epochs_run;
    int collapses;
    metrics_log *metrics;   /* --log (may hold no file) */
    at_net *train_net;      /* for the penalty columns */
    const at_train_config *cfg;
    bool log_failed;
    fit_watch watch;        /* explosion and no-learning checks */
    bool exploded, stalled;
    float best_robust_val;  /* robust validation accuracy of the best epoch seen */
} fit_state;

/* The L1 and L2 penalty terms of the current weights (empty cells when the term is off). */
static void penalty_terms(const fit_state *st, double *l1, double *l2) {
    const at_train_config *c = st->cfg;
    double sum_abs = 0.0, sum_sq = 0.0;
    const float *p = at_net_params(st->train_net);
    for (int t = 0; t < at_net_num_tensors(st->train_net); t++) {
        if (!at_reg_selected(st->train_net, &c->reg_select, t)) continue;
        const at_param_info *info = at_net_tensor(st->train_net, t);
        for (size_t i = 0; i < info->size; i++) {
            double w = p[info->offset + i];
            sum_abs += fabs(w);
            sum_sq += w * w;
        }
    }
    *l1 = c->l1 > 0.0f ? c->l1 * sum_abs : NAN;
    *l2 = c->l2 > 0.0f ? c->l2 * sum_sq : NAN;
}

static void format_metric(char *buf, size_t cap, bool regression, float v) {
    if (isnan(v))
        snprintf(buf, cap, "-");
    else if (regression)
        snprintf(buf, cap, "mse %.4f", (double)v);
    else
        snprintf(buf, cap, "%.2f%%", 100.0 * v);
}

/* After an epoch's last batch the library evaluates before on_epoch: say what it is doing. */
static void show_evaluating(const fit_state *st, int epoch, const char *run_eta) {
    char text[512];
    const at_adv_train_config *adv = &st->cfg->adv;
    int n = snprintf(text, sizeof text, "epoch %d/%d: evaluating", epoch, st->args->epochs);
    if (adv->method != AT_ADV_NONE && st->has_val && adv->robust_val_steps > 0)
        n += snprintf(text + n, sizeof text - (size_t)n, " robust validation (PGD-%d),", adv->robust_val_steps);
    if (n > 0 && (size_t)n < sizeof text)
        snprintf(text + n, sizeof text - (size_t)n, "%s test  (ETA run %s)", st->has_val ? " validation," : "",
                 run_eta);
    cli_progress_text(text);
}

/* Test hooks, so that a fault lands at a known step whatever the machine's speed: after this
 * process's N-th batch, ADVTRAIN_TEST_SIGNAL_AFTER=N sends it SIGTERM (ADVTRAIN_TEST_SIGNAL=INT:
 * SIGINT; ADVTRAIN_TEST_SIGNAL_TWICE=1: a second one right after; ADVTRAIN_TEST_SIGNAL_RANK=R:
 * under mpirun, rank R alone; tests/cli_signals.sh, tests/cli_mpi.sh), and
 * ADVTRAIN_TEST_NAN_AFTER=N turns the first weight into NaN, ADVTRAIN_TEST_EXPLODE_AFTER=N
 * multiplies every parameter by 1e30 (finite, as after a huge step: the next loss is not;
 * tests/cli_nan.sh). */
static long env_count(const char *name) {
    const char *v = getenv(name);
    return v ? atol(v) : 0;
}

static void test_hooks(at_net *net) {
    static long batches, signal_after = -1, nan_after, explode_after;
    if (signal_after < 0) {
        signal_after = env_count("ADVTRAIN_TEST_SIGNAL_AFTER");
        nan_after = env_count("ADVTRAIN_TEST_NAN_AFTER");
        explode_after = env_count("ADVTRAIN_TEST_EXPLODE_AFTER");
    }
    batches++;
    if (batches == nan_after) at_net_params(net)[0] = NAN;
    for (size_t i = 0; batches == explode_after && i < at_net_num_params(net); i++) at_net_params(net)[i] *= 1e30f;
    if (batches != signal_after) return;
    const char *rank = getenv("ADVTRAIN_TEST_SIGNAL_RANK"); /* under mpirun: that rank only */
    if (rank && atoi(rank) != (cli_comm() ? cli_comm()->rank : 0)) return;
    const char *name = getenv("ADVTRAIN_TEST_SIGNAL"), *twice = getenv("ADVTRAIN_TEST_SIGNAL_TWICE");
    const int sig = name && strcmp(name, "INT") == 0 ? SIGINT : SIGTERM;
    raise(sig);
    if (twice && strcmp(twice, "1") == 0) raise(sig);
}

static void on_batch(void *user, int epoch, int batch, int nbatches, float loss, float metric) {
    fit_state *st = user;
    test_hooks(st->train_net);
    if (st->args->quiet || st->args->json || !cli_is_tty()) return;
    double now = cli_now();
    if (st->first_epoch == 0) { /* this process's share of the run: a resumed run starts later */
        st->first_epoch = epoch;
        st->run_start = now;
    }
    if (batch == 1) st->epoch_start = now;
    if (batch % 8 != 0 && batch != nbatches) return;
    /* The whole run's ETA from the pace so far, evaluations of finished epochs included. */
    double done = (double)(epoch - st->first_epoch) * nbatches + batch;
    double left = (double)(st->args->epochs - epoch) * nbatches + (nbatches - batch);
    char epoch_eta[32], run_eta[32], eta[80], label[32], extra[64];
    cli_format_duration(epoch_eta, sizeof epoch_eta, (now - st->epoch_start) * (nbatches - batch) / batch);
    cli_format_duration(run_eta, sizeof run_eta, (now - st->run_start) * left / done);
    if (batch == nbatches) {
        show_evaluating(st, epoch, run_eta);
        return;
    }
    snprintf(eta, sizeof eta, "%s (run %s)", epoch_eta, run_eta);
    snprintf(label, sizeof label, "epoch %d/%d", epoch, st->args->epochs);
    if (st->regression)
        snprintf(extra, sizeof extra, "loss %.4f", (double)loss);
    else
        snprintf(extra, sizeof extra, "loss %.4f  train %.2f%%", (double)loss, 100.0 * metric);
    cli_progress_eta(label, batch, nbatches, eta, extra);
}

static void print_epoch(const fit_state *st, const at_epoch_stats *s);

/* What Ctrl-C prints from now on: done epochs are finished (0: none yet), over when training is
 * over and only the final evaluation and save remain. */
static void interrupt_hint(const fit_args *a, int done, bool over) {
    char t[1024];
    const char *d = a->checkpoint_dir;
    if (d && over)
        snprintf(t, sizeof t, "advtrain fit: interrupted after training, before %s was saved. Save it with: "
                              "advtrain fit --resume %s\n", a->out, d);
    else if (d && done > 0)
        snprintf(t, sizeof t, "advtrain fit: interrupted; epoch %d of %d was the last one finished "
                              "(checkpoint %s/last.safetensors). Resume with: advtrain fit --resume %s\n",
                 done, a->epochs, d, d);
    else if (d)
        snprintf(t, sizeof t, "advtrain fit: interrupted before epoch 1 ended: no checkpoint yet. Start it "
                              "again with: advtrain fit --resume %s\n", d);
    else
        snprintf(t, sizeof t, "advtrain fit: interrupted%s; %d finished epoch%s lost: without --checkpoint-dir "
                              "nothing is kept to resume from.\n  Next time add --checkpoint-dir DIR (the training "
                              "state is saved every epoch), then resume with: advtrain fit --resume DIR\n",
                 over ? " before the model was saved" : "", done, cli_s(done));
    cli_interrupt_message(t);
}

static bool on_epoch(void *user, const at_epoch_stats *s) {
    fit_state *st = user;
    st->last = *s;
    st->epochs_run = s->epoch;
    st->collapses += s->collapsed;
    if (s->best_epoch == s->epoch) st->best_robust_val = s->robust_val;
    interrupt_hint(st->args, s->epoch, false);
    double l1, l2;
    penalty_terms(st, &l1, &l2);
    if (!metrics_log_row(st->metrics, s, l1, l2)) {
        st->log_failed = true;
        return false;
    }
    if (!st->args->json) cli_progress_done();
    if (!st->args->quiet) print_epoch(st, s);
    switch (watch_epoch(&st->watch, s)) {
    case WATCH_EXPLODED:
        watch_explain_explosion(&st->watch, s, st->args->lr, st->args->checkpoint_dir, stderr);
        st->exploded = true;
        return false;
    case WATCH_STALLED:
        watch_explain_stall(&st->watch, s, st->cfg->adv.method != AT_ADV_NONE, stderr);
        st->stalled = true;
        break;
    case WATCH_OK: break;
    }
    return true;
}

/* Which epoch's weights the saved model holds, when it is not simply the last one. */
static void print_kept(const fit_state *st, FILE *f) {
    const at_epoch_stats *s = &st->last;
    if (s->best_epoch <= 0 || st->epochs_run <= 0) return;
    if (st->cfg->adv.method != AT_ADV_NONE && st->cfg->adv.keep_best && !isnan(s->robust_val)) {
        fprintf(f, "kept the weights of epoch %d of %d: the best robust validation accuracy", s->best_epoch,
                st->epochs_run);
        if (!isnan(st->best_robust_val)) fprintf(f, " (%.2f%%)", 100.0 * st->best_robust_val);
        if (s->best_epoch != s->epoch) fprintf(f, "; the last epoch's was %.2f%% (--keep-last keeps it)",
                                               100.0 * s->robust_val);
        fprintf(f, "\n");
    } else if (st->args->early_stop > 0 && !s->stopping) { /* stopping printed its own line */
        fprintf(f, "kept the weights of epoch %d of %d: the best validation %s\n", s->best_epoch,
                st->epochs_run, strcmp(st->args->monitor, "loss") == 0 ? "loss" : "metric");
    }
}

static void print_epoch(const fit_state *st, const at_epoch_stats *s) {
    char train[32], val[32], test[32];
    format_metric(train, sizeof train, st->regression, s->train_metric);
    format_metric(val, sizeof val, st->regression, s->val_metric);
    format_metric(test, sizeof test, st->regression, s->test_metric);
    FILE *f = st->log;
    fprintf(f, "epoch %3d/%d  loss %.4f  train %s", s->epoch, s->epochs, (double)s->train_loss, train);
    if (!isnan(s->val_metric)) fprintf(f, "  val %s (loss %.4f)", val, (double)s->val_loss);
    fprintf(f, "  test %s  lr %g", test, (double)s->lr);
    if (s->penalty > 0.0f) fprintf(f, "  penalty %.4g", (double)s->penalty);
    if (!isnan(s->grad_norm)) fprintf(f, "  |g| %.3g", (double)s->grad_norm);
    fprintf(f, "  %.1fs\n", s->seconds);
    if (!isnan(s->eps)) {
        fprintf(f, "           %s eps %.4g (0-1 scale)", s->method ? s->method : "", (double)s->eps);
        if (!isnan(s->adv_metric)) fprintf(f, ": adversarial-train %.2f%%", 100.0 * s->adv_metric);
        if (!isnan(s->robust_val)) fprintf(f, "  robust val (PGD) %.2f%%", 100.0 * s->robust_val);
        if (!isnan(s->guard_acc)) fprintf(f, "  guard (PGD-10) %.2f%%", 100.0 * s->guard_acc);
        fprintf(f, "\n");
    }
    if (s->skipped > 0)
        fprintf(f, "           %d batch%s skipped: a non-finite loss or gradient (--on-nonfinite skip); "
                   "lr halved each time, now %g\n",
                s->skipped, s->skipped == 1 ? "" : "es", (double)s->lr);
    if (s->collapsed)
        fprintf(f, "catastrophic overfitting at epoch %d: PGD accuracy on the held-out batch fell to "
                   "%.2f%%; restored the last good weights; continuing with %s, step %.4g\n",
                s->epoch, 100.0 * s->guard_acc, s->method, (double)s->alpha);
    if (s->stopping)
        fprintf(f, "early stopping: no improvement for %d epoch%s; restoring the weights of epoch %d\n",
                st->args->early_stop, cli_s(st->args->early_stop), s->best_epoch);
    fflush(f);
}

/* ------------------------------------------------------------ settings */

static bool parse_init(const char *name, at_init_kind *kind) {
    if (strcmp(name, "pytorch") == 0) *kind = AT_INIT_PYTORCH;
    else if (strcmp(name, "kaiming") == 0) *kind = AT_INIT_KAIMING_NORMAL;
    else if (strcmp(name, "xavier") == 0) *kind = AT_INIT_XAVIER_UNIFORM;
    else return false;
    return true;
}

/* "crop", "crop:PAD", "flip", comma-separated, or "none". */
static bool parse_augment(const char *spec, at_augment_config *a) {
    memset(a, 0, sizeof *a);
    if (strcmp(spec, "none") == 0) return true;
    for (const char *p = spec; *p;) {
        size_t len = strcspn(p, ",");
        char item[32];
        if (len == 0 || len >= sizeof item) return false;
        memcpy(item, p, len);
        item[len] = '\0';
        if (strcmp(item, "flip") == 0) {
            a->flip = true;
        } else if (strcmp(item, "crop") == 0) {
            a->crop_pad = 4;
        } else if (strncmp(item, "crop:", 5) == 0) {
            char *end;
            long v = strtol(item + 5, &end, 10);
            if (end == item + 5 || *end || v < 1 || v > 64) return false;
            a->crop_pad = (int)v;
        } else {
            return false;
        }
        p += len;
        if (*p == ',' && *++p == '\0') return false;
    }
    return true;
}

static bool parse_schedule(const char *name, at_schedule_kind *kind) {
    static const struct {
        const char *name;
        at_schedule_kind kind;
    } names[] = {{"constant", AT_SCHEDULE_CONSTANT}, {"step", AT_SCHEDULE_STEP},
                 {"cosine", AT_SCHEDULE_COSINE},     {"onecycle", AT_SCHEDULE_ONECYCLE},
                 {"plateau", AT_SCHEDULE_PLATEAU}};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (strcmp(name, names[i].name) == 0) {
            *kind = names[i].kind;
            return true;
        }
    return false;
}

#if defined(__GNUC__)
__attribute__((format(printf, 1, 2)))
#endif
static int usage_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "advtrain fit: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    return EXIT_USAGE;
}

/* Fills cfg from the flags; returns 0 or EXIT_USAGE after printing why. */
/* --optim and its settings into cfg->optim (0, or the usage exit status). */
static int optimizer_config(const cli_command *cmd, fit_args *a, at_train_config *cfg) {
    if (strcmp(a->optim, "sgd") == 0) {
        cfg->optim = at_optim_defaults(AT_OPTIM_SGD);
        cfg->optim.momentum = a->momentum;
        cfg->optim.nesterov = a->nesterov;
    } else if (strcmp(a->optim, "adam") == 0 || strcmp(a->optim, "adamw") == 0) {
        bool w = strcmp(a->optim, "adamw") == 0;
        cfg->optim = at_optim_defaults(w ? AT_OPTIM_ADAMW : AT_OPTIM_ADAM);
        if (!cli_find(cmd, "lr")->seen) a->lr = 1e-3f;
        if (w && !cli_find(cmd, "weight-decay")->seen) a->weight_decay = cfg->optim.weight_decay;
        if (w) a->decoupled = true;
    } else {
        return usage_error("--optim %s: unknown optimizer (sgd, adam or adamw)", a->optim);
    }
    if (a->nesterov && strcmp(a->optim, "sgd") != 0)
        return usage_error("--nesterov applies to --optim sgd only");
    if (a->decoupled && a->weight_decay <= 0.0f)
        return usage_error("--decoupled needs --weight-decay > 0 (or --optim adamw)");
    cfg->optim.lr = a->lr;
    cfg->optim.weight_decay = a->weight_decay;
    cfg->optim.decoupled = a->decoupled;
    return 0;
}

/* Regularizers, augmentation, the schedule and early stopping. */
static int regularization_config(const fit_args *a, at_train_config *cfg) {
    cfg->l1 = a->l1;
    cfg->l2 = a->l2;
    cfg->prox_l1 = a->prox_l1;
    if (a->prox_l1 && a->l1 <= 0.0f)
        return usage_error("--prox-l1 applies the --l1 penalty as a proximal step: give --l1 > 0");
    cfg->max_norm = a->max_norm;
    cfg->reg_select.layers = a->reg_layers;
    cfg->reg_select.bias = a->reg_bias;
    cfg->label_smoothing = a->label_smoothing;
    cfg->clip_grad = a->clip_grad;
    cfg->input_noise = a->noise;
    cfg->mixup_alpha = a->mixup;
    if (!parse_augment(a->augment, &cfg->augment))
        return usage_error("--augment %s: use a comma list of crop, crop:PAD (1-64) and flip, or none",
                           a->augment);
    at_schedule_kind kind;
    if (!parse_schedule(a->schedule, &kind))
        return usage_error("--schedule %s: use constant, step, cosine, onecycle or plateau", a->schedule);
    cfg->schedule = at_schedule_defaults(kind);
    cfg->schedule.step_size = a->step_size; /* 0: a third of the epochs */
    cfg->schedule.gamma = a->gamma;
    cfg->schedule.min_lr = a->min_lr;
    cfg->schedule.pct_start = a->pct_start;
    cfg->schedule.patience = a->plateau_patience;
    cfg->schedule.factor = a->plateau_factor;
    cfg->early_stop = a->early_stop;
    cfg->min_delta = a->min_delta;
    if (a->early_stop > 0 && a->val_split <= 0.0f)
        return usage_error("--early-stop watches a validation set: add --val-split F (e.g. 0.1)");
    if (strcmp(a->on_nonfinite, "stop") != 0 && strcmp(a->on_nonfinite, "skip") != 0)
        return usage_error("--on-nonfinite %s: use stop or skip", a->on_nonfinite);
    cfg->skip_nonfinite = strcmp(a->on_nonfinite, "skip") == 0;
    if (strcmp(a->monitor, "loss") == 0)
        cfg->monitor = AT_MONITOR_VAL_LOSS;
    else if (strcmp(a->monitor, "metric") == 0)
        cfg->monitor = AT_MONITOR_VAL_METRIC;
    else
        return usage_error("--monitor %s: use loss or metric", a->monitor);
    return 0;
}

/* --adv METHOD and its settings into cfg->adv. */
/* --certify ibp|crown-ibp and its settings into cfg->certify (docs/certified.md). */
static int certify_config(fit_args *a, at_train_config *cfg) {
    if (!a->certify) return 0;
    at_bound_method method;
    if (at_bound_method_from_name(a->certify, &method) != AT_OK || method == AT_BOUND_CROWN) /* CROWN: verify only */
        return usage_error("--certify %s: use ibp or crown-ibp", a->certify);
    if (a->adv) return usage_error("--certify and --adv: choose one");
    int neps = 0;
    if (a->eps_text && !cli_parse_eps("fit", a->eps_text, &a->eps, 1, &neps)) return EXIT_USAGE;
    if (a->eps <= 0.0f) return usage_error("--certify %s needs --eps E (0-1 pixel scale, e.g. 0.1)", a->certify);
    cfg->certify = (at_certify_config){a->eps,   a->certify_warmup, a->certify_ramp, a->kappa,
                                       method, a->beta_start,     a->beta_end};
    return 0;
}

static int adversarial_config(const cli_command *cmd, fit_args *a, at_train_config *cfg) {
    if (!a->adv) {
        if (cli_find(cmd, "eps")->seen && !a->certify)
            return usage_error("--eps sets the adversarial training radius: add --adv METHOD "
                               "(fgsm, fgsm-rs, pgd, trades, free) or --certify ibp");
        return 0;
    }
    at_adv_method m;
    if (at_adv_method_from_name(a->adv, &m) != AT_OK) return usage_error("--adv %s: %s", a->adv, at_error_message());
    if (m == AT_ADV_NONE) return 0;
    int neps = 0;
    if (a->eps_text && !cli_parse_eps("fit", a->eps_text, &a->eps, 1, &neps)) return EXIT_USAGE;
    if (a->eps <= 0.0f) return usage_error("--adv %s needs --eps E (0-1 pixel scale, e.g. 0.1)", a->adv);
    cfg->adv = at_adv_train_defaults(m, a->eps);
    if (cli_find(cmd, "alpha")->seen) cfg->adv.alpha = a->alpha;
    if (cli_find(cmd, "steps")->seen) cfg->adv.steps = a->adv_steps;
    if (cli_find(cmd, "clean-weight")->seen) cfg->adv.clean_weight = a->clean_weight;
    if (cli_find(cmd, "beta")->seen) cfg->adv.beta = a->beta;
    if (cli_find(cmd, "replays")->seen) cfg->adv.replays = a->replays;
    if (cli_find(cmd, "robust-val-steps")->seen) cfg->adv.robust_val_steps = a->robust_val_steps;
    if (cli_find(cmd, "robust-val-samples")->seen) cfg->adv.robust_val_samples = a->robust_val_samples;
    cfg->adv.warmup_epochs = a->eps_warmup;
    cfg->adv.guard = !a->no_guard;
    cfg->adv.keep_best = !a->keep_last;
    if (strcmp(a->adv_norm, "linf") == 0)
        cfg->adv.norm = AT_NORM_LINF;
    else if (strcmp(a->adv_norm, "l2") == 0)
        cfg->adv.norm = AT_NORM_L2;
    else
        return usage_error("--adv-norm %s: use linf or l2", a->adv_norm);
    return 0;
}

static int build_config(const cli_command *cmd, fit_args *a, at_train_config *cfg) {
    *cfg = at_train_defaults();
    int bad = optimizer_config(cmd, a, cfg);
    cfg->epochs = a->epochs;
    cfg->batch = a->batch;
    cfg->seed = a->seed;
    if (!bad) bad = regularization_config(a, cfg);
    if (!bad) bad = adversarial_config(cmd, a, cfg);
    if (!bad) bad = certify_config(a, cfg);
    cfg->qat = (at_qat_config){a->qat, a->qat_momentum};
    return bad;
}

/* Settings whose default is worked out from others (0 in fit_args means "the default"): the
 * effective config (and so the report) shows the value the run really uses, so that uncommenting a line
 * of config.ini reproduces the run instead of failing "out of range" (steps = 0) or silently
 * changing it (clean-weight = 0). Without --adv the adversarial settings show PGD's defaults. */
static void effective_defaults(cli_command *cmd, fit_args *a, const at_train_config *cfg, char *note, size_t cap) {
    const bool adv = cfg->adv.method != AT_ADV_NONE;
    const at_adv_train_config d = adv ? cfg->adv : at_adv_train_defaults(AT_ADV_PGD, 0.0f);
    if (!cli_find(cmd, "steps")->seen) a->adv_steps = d.steps;
    if (!cli_find(cmd, "clean-weight")->seen) a->clean_weight = d.clean_weight;
    if (!cli_find(cmd, "beta")->seen) a->beta = d.beta;
    if (!cli_find(cmd, "replays")->seen) a->replays = d.replays;
    if (!cli_find(cmd, "robust-val-steps")->seen) a->robust_val_steps = d.robust_val_steps;
    if (!cli_find(cmd, "robust-val-samples")->seen) a->robust_val_samples = d.robust_val_samples;
    if (!cli_find(cmd, "step-size")->seen) a->step_size = (a->epochs + 2) / 3 > 1 ? (a->epochs + 2) / 3 : 1;
    /* alpha 0 means each method's own step; the note says which. */
    static const char *const steps[] = {"", "fgsm: eps", "fgsm-rs: 1.25 eps", "pgd: 2.5 eps/steps",
                                        "trades: eps/4", "free: eps"};
    int m = (int)cfg->adv.method;
    snprintf(note, cap, "0: the method's own step (%s)",
             adv && m > 0 && m < (int)(sizeof steps / sizeof *steps) ? steps[m]
                 : "fgsm eps, fgsm-rs 1.25 eps, pgd 2.5 eps/steps, trades eps/4");
    ((cli_option *)cli_find(cmd, "alpha"))->note = note;
}

/* The settings of the run, for the model file's metadata and --json. */
/* A float setting as the number the user typed (7 significant digits), not its binary expansion. */
static void add_num(cJSON *o, const char *key, double v) {
    char buf[32];
    snprintf(buf, sizeof buf, "%.7g", v);
    cJSON_AddNumberToObject(o, key, strtod(buf, NULL));
}

static cJSON *settings_json(const fit_args *a, const at_train_config *cfg) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "model", a->model);
    cJSON_AddStringToObject(o, "data", a->data);
    add_num(o, "epochs", a->epochs);
    add_num(o, "batch", a->batch);
    cJSON_AddStringToObject(o, "optim", a->optim);
    add_num(o, "lr", a->lr);
    add_num(o, "momentum", strcmp(a->optim, "sgd") == 0 ? a->momentum : 0.0);
    cJSON_AddBoolToObject(o, "nesterov", a->nesterov);
    cJSON_AddStringToObject(o, "init", a->init);
    if (a->weights) cJSON_AddStringToObject(o, "weights", a->weights);
    add_num(o, "seed", (double)a->seed);
    add_num(o, "threads", a->threads);
    add_num(o, "val_split", a->val_split);
    add_num(o, "train_subset", a->train_subset);
    add_num(o, "l1", a->l1);
    add_num(o, "l2", a->l2);
    cJSON_AddStringToObject(o, "reg_layers", a->reg_layers);
    cJSON_AddBoolToObject(o, "reg_bias", a->reg_bias);
    cJSON_AddBoolToObject(o, "prox_l1", a->prox_l1);
    add_num(o, "weight_decay", a->weight_decay);
    cJSON_AddBoolToObject(o, "decoupled", cfg->optim.decoupled || cfg->optim.kind == AT_OPTIM_ADAMW);
    add_num(o, "max_norm", a->max_norm);
    add_num(o, "dropout", a->dropout);
    add_num(o, "label_smoothing", a->label_smoothing);
    add_num(o, "clip_grad", a->clip_grad);
    cJSON_AddStringToObject(o, "augment", a->augment);
    add_num(o, "noise", a->noise);
    add_num(o, "mixup", a->mixup);
    cJSON_AddStringToObject(o, "schedule", a->schedule);
    const at_schedule_config *sc = &cfg->schedule;
    switch (sc->kind) {
    case AT_SCHEDULE_STEP:
        add_num(o, "step_size", sc->step_size ? sc->step_size : (a->epochs + 2) / 3);
        add_num(o, "gamma", sc->gamma);
        break;
    case AT_SCHEDULE_COSINE: add_num(o, "min_lr", sc->min_lr); break;
    case AT_SCHEDULE_ONECYCLE: add_num(o, "pct_start", sc->pct_start); break;
    case AT_SCHEDULE_PLATEAU:
        add_num(o, "plateau_patience", sc->patience);
        add_num(o, "plateau_factor", sc->factor);
        add_num(o, "min_lr", sc->min_lr);
        break;
    default: break;
    }
    add_num(o, "early_stop", a->early_stop);
    add_num(o, "min_delta", a->min_delta);
    cJSON_AddStringToObject(o, "monitor", a->monitor);
    const at_adv_train_config *adv = &cfg->adv;
    cJSON_AddStringToObject(o, "adv", at_adv_method_name(adv->method));
    if (adv->method != AT_ADV_NONE) {
        add_num(o, "eps", adv->eps);
        cJSON_AddStringToObject(o, "eps_scale", "0-1");
        cJSON_AddStringToObject(o, "adv_norm", adv->norm == AT_NORM_L2 ? "l2" : "linf");
        add_num(o, "alpha", adv->alpha); /* 0: the method's default */
        if (adv->method == AT_ADV_PGD || adv->method == AT_ADV_TRADES) add_num(o, "adv_steps", adv->steps);
        if (adv->method == AT_ADV_FGSM) add_num(o, "clean_weight", adv->clean_weight);
        if (adv->method == AT_ADV_TRADES) add_num(o, "beta", adv->beta);
        if (adv->method == AT_ADV_FREE) add_num(o, "replays", adv->replays);
        add_num(o, "eps_warmup", adv->warmup_epochs);
        add_num(o, "robust_val_steps", adv->robust_val_steps);
        add_num(o, "robust_val_samples", adv->robust_val_samples);
        cJSON_AddBoolToObject(o, "keep_best", adv->keep_best);
        if (adv->method == AT_ADV_FGSM_RS) cJSON_AddBoolToObject(o, "guard", adv->guard);
    }
    cJSON_AddBoolToObject(o, "qat", cfg->qat.enabled);
    if (cfg->qat.enabled) add_num(o, "qat_momentum", cfg->qat.momentum);
    if (cfg->certify.eps > 0.0f) {
        const bool crown = cfg->certify.method == AT_BOUND_CROWN_IBP;
        cJSON_AddStringToObject(o, "certify", at_bound_method_name(cfg->certify.method));
        add_num(o, "certify_eps", cfg->certify.eps);
        add_num(o, "certify_warmup", cfg->certify.warmup_epochs);
        add_num(o, "certify_ramp", cfg->certify.ramp_epochs);
        add_num(o, "kappa", cfg->certify.kappa_end);
        if (crown) add_num(o, "beta_start", cfg->certify.beta_start);
        if (crown) add_num(o, "beta_end", cfg->certify.beta_end);
    }
    return o;
}

/* ------------------------------------------------------------ --dropout */

/* The model with Dropout(p) in front of every Linear layer but the first, i.e. on the hidden
 * features each later Linear layer reads. Parameter layers keep their names, so the parameter
 * buffer's layout and names are the base model's: the trained weights copy straight back into
 * the base model, which is what gets saved (dropout is the identity at inference). */
static at_status with_dropout(at_net **out, const at_net *base, float p, int *inserted) {
    int n = at_net_num_layers(base), m = 0, linears = 0;
    at_layer_desc *d = calloc((size_t)2 * n, sizeof *d);
    *out = NULL;
    *inserted = 0;
    if (!d) return at_fail(AT_ERR_NOMEM, "out of memory building the dropout model");
    for (int i = 0; i < n; i++) {
        const at_layer_desc *L = at_net_layer(base, i);
        if (L->kind == AT_LAYER_LINEAR && linears++ > 0) {
            memset(&d[m], 0, sizeof d[m]);
            d[m].kind = AT_LAYER_DROPOUT;
            d[m].alpha = p;
            snprintf(d[m].name, sizeof d[m].name, "dropout%d", *inserted);
            m++;
            (*inserted)++;
        }
        d[m++] = *L;
    }
    int c, h, w;
    at_net_in_shape(base, &c, &h, &w);
    at_status s = at_net_create(out, d, m, c, h, w);
    /* Checkpoints record the base architecture: dropout has no parameters and is off in eval
     * mode, and the settings record --dropout. */
    if (s == AT_OK) s = at_net_set_spec(*out, at_net_spec(base));
    free(d);
    return s;
}

/* ------------------------------------------------------------ report */

static const char *kind_name(at_layer_kind k) {
    return k == AT_LAYER_LINEAR ? "linear" : k == AT_LAYER_CONV2D ? "conv" : "other";
}

typedef struct final_metrics {
    at_eval_result train, val, test;
    bool has_val;
    double gap; /* train - test accuracy, or test - train MSE: positive means overfitting */
} final_metrics;

static void add_metric(cJSON *o, const char *split, bool regression, const at_eval_result *r) {
    char key[48];
    snprintf(key, sizeof key, "%s_%s", split, regression ? "mse" : "accuracy");
    cJSON_AddNumberToObject(o, key, regression ? r->mse : r->accuracy);
    snprintf(key, sizeof key, "%s_loss", split);
    cJSON_AddNumberToObject(o, key, r->loss);
}

/* The results: metrics, gap, per-layer weight norms and sparsity. */
/* Calls fn for every weight tensor (biases left out) with its layer kind and statistics, and
 * sums their counts and zeros. */
typedef void (*weight_fn)(void *user, const at_param_info *p, const char *kind, const at_tensor_stats *ts);
static void each_weight(const at_net *net, weight_fn fn, void *user, size_t *total, size_t *zeros) {
    for (int t = 0; t < at_net_num_tensors(net); t++) {
        const at_param_info *p = at_net_tensor(net, t);
        if (p->is_bias) continue;
        at_tensor_stats ts;
        at_tensor_stats_of(net, t, &ts);
        *total += ts.count;
        *zeros += ts.zeros;
        fn(user, p, kind_name(at_net_layer(net, p->layer)->kind), &ts);
    }
}

static void weight_json(void *layers, const at_param_info *p, const char *kind, const at_tensor_stats *ts) {
    cJSON *l = cJSON_CreateObject();
    cJSON_AddStringToObject(l, "name", p->name);
    cJSON_AddStringToObject(l, "kind", kind);
    cJSON_AddNumberToObject(l, "count", (double)ts->count);
    cJSON_AddNumberToObject(l, "l1", ts->l1);
    cJSON_AddNumberToObject(l, "l2", ts->l2);
    cJSON_AddNumberToObject(l, "zeros", (double)ts->zeros);
    cJSON_AddNumberToObject(l, "zero_fraction", ts->count ? (double)ts->zeros / ts->count : 0.0);
    cJSON_AddItemToArray(layers, l);
}

static void weight_line(void *file, const at_param_info *p, const char *kind, const at_tensor_stats *ts) {
    fprintf(file, "%-14s %-7s %9zu %12.4g %10.4g %7.2f%%\n", p->name, kind, ts->count, ts->l1, ts->l2,
            ts->count ? 100.0 * ts->zeros / ts->count : 0.0);
}

static cJSON *results_json(const fit_state *st, const at_net *net, const final_metrics *m) {
    cJSON *o = cJSON_CreateObject();
    const bool reg = st->regression;
    cJSON_AddStringToObject(o, "metric", reg ? "mse" : "accuracy");
    cJSON_AddNumberToObject(o, "epochs_run", st->epochs_run);
    if (st->stalled) cJSON_AddBoolToObject(o, "no_learning_warning", true);
    if (st->args->early_stop > 0 || (st->args->adv && st->last.best_epoch > 0)) {
        cJSON_AddNumberToObject(o, "best_epoch", st->last.best_epoch);
        if (st->last.best_epoch > 0) cJSON_AddNumberToObject(o, "kept_epoch", st->last.best_epoch);
        cJSON_AddBoolToObject(o, "stopped_early", st->last.stopping);
    }
    if (!isnan(st->last.eps)) {
        cJSON_AddStringToObject(o, "adv_method", st->last.method);
        if (!isnan(st->last.adv_metric))
            cJSON_AddNumberToObject(o, "adv_train_accuracy", st->last.adv_metric);
        if (!isnan(st->last.robust_val)) cJSON_AddNumberToObject(o, "last_robust_val", st->last.robust_val);
        cJSON_AddNumberToObject(o, "collapses", st->collapses);
    }
    add_metric(o, "train", reg, &m->train);
    if (m->has_val) add_metric(o, "val", reg, &m->val);
    add_metric(o, "test", reg, &m->test);
    cJSON_AddNumberToObject(o, "generalization_gap", m->gap);
    size_t total = 0, zeros = 0;
    each_weight(net, weight_json, cJSON_AddArrayToObject(o, "layers"), &total, &zeros);
    cJSON_AddNumberToObject(o, "weights_zero_fraction", total ? (double)zeros / total : 0.0);
    return o;
}

static void print_report(FILE *f, const fit_state *st, const at_net *net, const final_metrics *m) {
    fprintf(f, "\n%-14s %-7s %9s %12s %10s %8s\n", "weights", "kind", "count", "L1 (sum|w|)",
            "L2 (norm)", "zeros");
    size_t total = 0, zeros = 0;
    each_weight(net, weight_line, f, &total, &zeros);
    fprintf(f, "%-14s %-7s %9zu %12s %10s %7.2f%%\n", "all weights", "", total, "", "",
            total ? 100.0 * zeros / total : 0.0);
    char tr[32], va[32], te[32];
    if (st->regression) {
        snprintf(tr, sizeof tr, "%.4f", (double)m->train.mse);
        snprintf(va, sizeof va, "%.4f", (double)m->val.mse);
        snprintf(te, sizeof te, "%.4f", (double)m->test.mse);
        fprintf(f, "MSE: train %s", tr);
        if (m->has_val) fprintf(f, "  val %s", va);
        fprintf(f, "  test %s  generalization gap (test - train) %.4f\n", te, m->gap);
    } else {
        snprintf(tr, sizeof tr, "%.2f%%", 100.0 * m->train.accuracy);
        snprintf(va, sizeof va, "%.2f%%", 100.0 * m->val.accuracy);
        snprintf(te, sizeof te, "%.2f%%", 100.0 * m->test.accuracy);
        fprintf(f, "accuracy: train %s", tr);
        if (m->has_val) fprintf(f, "  val %s", va);
        fprintf(f, "  test %s  generalization gap (train - test) %.2f points\n", te, 100.0 * m->gap);
    }
}

/* ------------------------------------------------------------ the command */

/* --config FILE, or --resume DIR's config.ini: settings the command line did not give. */
static bool read_config_files(cli_command *cmd, fit_args *a, cli_strings *strings) {
    if (a->resume && a->config) {
        usage_error("--resume DIR reads DIR/config.ini: give no --config (flags still override)");
        return false;
    }
    if (a->resume) {
        const char *explicit_dir = a->checkpoint_dir;
        char path[4096];
        snprintf(path, sizeof path, "%s/config.ini", a->resume);
        if (!cli_read_config(cmd, path, strings)) return false;
        if (explicit_dir && strcmp(explicit_dir, a->resume) != 0) {
            usage_error("--resume %s continues in that directory; --checkpoint-dir %s names another",
                        a->resume, explicit_dir);
            return false;
        }
        a->checkpoint_dir = a->resume;
        return true;
    }
    return !a->config || cli_read_config(cmd, a->config, strings);
}

/* --out or --log replacing one of another run's own files (its model.safetensors, its
 * metrics.csv) would mix this run with that one, as a fresh --checkpoint-dir would: refused the
 * same way, unless --force. Other names next to a run (a fine-tuned model) are fine. */
static int check_foreign_run(const fit_args *a, const char *flag, const char *path) {
    char dir[4096];
    rundir_parent(path, dir, sizeof dir);
    if (a->force || !rundir_run_file(path) || !rundir_is_run(dir) ||
        (a->checkpoint_dir && rundir_same(dir, a->checkpoint_dir)))
        return 0;
    usage_error("%s %s: %s holds another run, and this would replace one of its files: choose another "
                "path, or add --force", flag, path, dir);
    return EXIT_USAGE;
}

/* Before any work starts: every output path (fit --out, --checkpoint-dir, --log), and a fresh
 * run never writes into a directory that holds another run unless --force says so. */
static int check_outputs(const fit_args *a) {
    int bad;
    if (a->checkpoint_dir && !a->resume) {
        char found[256];
        if (rundir_holds_run(a->checkpoint_dir, found, sizeof found) && !a->force) {
            char fresh[4200];
            rundir_fresh_name(a->checkpoint_dir, fresh, sizeof fresh);
            usage_error("--checkpoint-dir %s already holds a run (%s): continue it with --resume %s, "
                        "start this one in a fresh directory such as --checkpoint-dir %s, or add "
                        "--force to replace the old run's files",
                        a->checkpoint_dir, found, a->checkpoint_dir, fresh);
            return EXIT_USAGE;
        }
    }
    if (a->checkpoint_dir && (bad = out_check_dir("fit", "--checkpoint-dir", a->checkpoint_dir))) return bad;
    if ((bad = out_check_file("fit", "--out", a->out))) return bad;
    if (a->log && (bad = out_check_file("fit", "--log", a->log))) return bad;
    if ((bad = check_foreign_run(a, "--out", a->out))) return bad;
    if (a->log && (bad = check_foreign_run(a, "--log", a->log))) return bad;
    return 0;
}

static void resume_message(const fit_args *a, FILE *log, int epoch) {
    int done = 0, batches = 0;
    at_checkpoint_progress(a->checkpoint_dir, &done, &batches);
    if (batches > 0)
        fprintf(log, "resuming %s in epoch %d after batch %d\n", a->checkpoint_dir, epoch + 1, batches);
    else
        fprintf(log, "resuming %s after epoch %d\n", a->checkpoint_dir, epoch);
}

/* --resume: the epoch the checkpoint holds (0: none yet) and whether the run is complete. Writes
 * nothing: a refused resume must leave the run directory as it was. */
static bool resume_point(const fit_args *a, FILE *log, int *resume_epoch, bool *complete) {
    *resume_epoch = 0;
    *complete = false;
    at_status s = at_checkpoint_epoch(a->checkpoint_dir, resume_epoch);
    char path[4096];
    snprintf(path, sizeof path, "%s/last.safetensors", a->checkpoint_dir);
    FILE *probe = fopen(path, "rb");
    bool absent = !probe && errno == ENOENT; /* an unreadable checkpoint is an error, not a fresh start */
    if (probe) fclose(probe);
    if (s == AT_ERR_IO && absent) { /* killed before the first epoch ended */
        fprintf(log, "no checkpoint in %s yet: starting from epoch 1\n", a->checkpoint_dir);
        return true;
    }
    if (s != AT_OK) {
        fprintf(stderr, "advtrain fit: --resume %s: %s\n", a->resume, at_error_message());
        return false;
    }
    *complete = *resume_epoch >= a->epochs || rundir_early_stopped(a->checkpoint_dir);
    return true;
}

/* The library's own checks of the checkpoint against this run (architecture, batch, seed,
 * optimizer, ...), without training: at_train loads it and has no epoch left to run. Only
 * once it passes do config.ini and the log change. */
static at_status check_resumable(at_net *net, const at_dataset *train, const at_dataset *val,
                                 const at_dataset *test, const at_train_config *cfg, int resume_epoch) {
    at_train_config dry = *cfg;
    dry.epochs = resume_epoch;
    dry.checkpoint.resume = true;
    return at_train(net, train, val, test, &dry, NULL);
}

/* The run directory's own files, once the run is sure to start: --force clears the old run's,
 * then config.ini records this one. */
static bool start_run_dir(const cli_command *cmd, const fit_args *a) {
    if (!a->checkpoint_dir || !cli_is_root()) return true; /* rank 0 writes for an mpirun job */
    if (!a->resume && a->force && !rundir_clear("fit", a->checkpoint_dir)) return false;
    char path[4096];
    snprintf(path, sizeof path, "%s/config.ini", a->checkpoint_dir);
    return cli_write_config(cmd, path);
}

static int fit_main(int argc, char **argv, cli_strings *strings);

static bool file_exists(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    return f != NULL;
}

static void weights_mismatch(const fit_args *a, bool model_given);

/* The data for this run: --train-subset, --val-split, and the checks that need the data.
 * Returns -1 to go on, else the exit status. */
static int prepare_data(const fit_args *a, const at_train_config *cfg, at_data *data, at_dataset *val,
                        bool *has_val) {
    at_status s = AT_OK;
    if (a->train_subset > 0 && a->train_subset < data->train.n) s = at_dataset_truncate(&data->train, a->train_subset);
    if (s == AT_OK && a->val_split > 0) {
        s = at_dataset_split(&data->train, val, a->val_split, a->seed);
        *has_val = s == AT_OK;
    }
    if (s != AT_OK) {
        cli_error("fit", "preparing the data", s);
        return EXIT_RUN_FAILED;
    }
    if (data->train.targets && a->label_smoothing > 0.0f)
        return usage_error("--label-smoothing applies to classification; %s is a regression task", a->data);
    if ((cfg->augment.flip || cfg->augment.crop_pad > 0) &&
        (!data->train.images || data->train.h < 2 || data->train.w < 2))
        return usage_error("--augment needs images; %s holds feature vectors", a->data);
    return -1;
}

/* The model (*net, saved at the end) and the one trained (*train_net: *net, or *net with
 * dropout), initialized or loaded from --weights. Returns -1 to go on, else the exit status. */
static int build_nets(const cli_command *cmd, const fit_args *a, const at_train_config *cfg, at_init_kind init,
                      const at_data *data, at_net **net, at_net **train_net) {
    at_status s = at_net_from_spec(net, a->model, data->train.c, data->train.h, data->train.w);
    if (s != AT_OK) {
        fprintf(stderr, "advtrain fit: --model %s: %s\n", a->model, at_error_message());
        return EXIT_USAGE;
    }
    bool selection_used = a->l1 > 0 || a->l2 > 0 || a->max_norm > 0 || a->weight_decay > 0;
    if ((selection_used || cli_find(cmd, "reg-layers")->seen) && at_reg_check(*net, &cfg->reg_select) != AT_OK) {
        fprintf(stderr, "advtrain fit: --reg-layers %s: %s\n", a->reg_layers, at_error_message());
        return EXIT_USAGE;
    }
    *train_net = *net;
    if (a->dropout > 0.0f) {
        int inserted;
        if ((s = with_dropout(train_net, *net, a->dropout, &inserted)) != AT_OK) {
            *train_net = *net;
            cli_error("fit", "adding dropout", s);
            return EXIT_RUN_FAILED;
        }
        if (inserted == 0)
            return usage_error("--dropout: %s has no hidden Linear layer to apply dropout to "
                               "(place dropout or dropout2d layers in a spec instead)", a->model);
    }
    at_net_init_with(*train_net, init, a->seed);
    if (!a->weights) return -1;
    at_st_file *wf = NULL;
    s = at_st_read(a->weights, &wf);
    if (s == AT_OK) s = at_net_load_weights(*net, wf, a->weights);
    at_st_free(wf);
    if (s != AT_OK) {
        weights_mismatch(a, cli_find(cmd, "model")->seen);
        return EXIT_RUN_FAILED;
    }
    if (*train_net != *net) /* same parameter layout: see with_dropout */
        memcpy(at_net_params(*train_net), at_net_params(*net), sizeof(float) * at_net_num_params(*net));
    return -1;
}

/* After a signal stopped training between two steps: where the checkpoint stands, how to go on;
 * the exit status is 128 + the signal, as if it had ended the process. Under mpirun a rank that
 * got no signal stops with the one that did (at the same step) and exits as after SIGTERM. */
static int stopped_on_request(const fit_args *a, int sig) {
    int epoch = 0, batches = 0;
    if (!sig) {
        fprintf(stderr, "advtrain fit: rank %d stopped with the others: a signal reached another rank\n",
                cli_comm() ? cli_comm()->rank : 0);
        sig = SIGTERM;
    }
    if (!cli_comm_barrier()) return 128 + sig; /* rank 0 has written the checkpoint read below */
    at_checkpoint_progress(a->checkpoint_dir, &epoch, &batches);
    if (batches > 0)
        fprintf(stderr, "advtrain fit: stopped by %s during epoch %d after batch %d; the checkpoint "
                        "%s/last.safetensors holds it. Resume with: advtrain fit --resume %s\n",
                sig == SIGTERM ? "SIGTERM" : "Ctrl-C", epoch + 1, batches, a->checkpoint_dir, a->checkpoint_dir);
    else
        fprintf(stderr, "advtrain fit: stopped by %s after epoch %d; the checkpoint %s/last.safetensors "
                        "holds it. Resume with: advtrain fit --resume %s\n",
                sig == SIGTERM ? "SIGTERM" : "Ctrl-C", epoch, a->checkpoint_dir, a->checkpoint_dir);
    return 128 + (sig ? sig : SIGINT);
}

/* Trains st->train_net (Ctrl-C explained, explosion and stalls watched). Returns -1 when the
 * run ended well, else the exit status. */
static int train(fit_state *st, const at_data *data, const at_dataset *val, int resume_epoch) {
    const fit_args *a = st->args;
    st->best_robust_val = NAN;
    watch_init(&st->watch, st->regression ? 0 : data->train.num_classes, a->epochs);
    at_train_callbacks cb = {st, on_batch, on_epoch, NULL};
    interrupt_hint(a, resume_epoch, false);
    cli_interrupt_install();
    /* With checkpoints a signal stops training between two steps and keeps that step. */
    if (a->checkpoint_dir) cb.stop = cli_interrupt_graceful(true);
    at_status s = at_train(st->train_net, &data->train, val, &data->test, st->cfg, &cb);
    cli_interrupt_graceful(false);
    interrupt_hint(a, st->epochs_run, true);
    if (!a->json) cli_progress_done();
    if (s == AT_ERR_INTERRUPTED) return stopped_on_request(a, *cb.stop);
    if (st->log_failed || st->exploded) return EXIT_RUN_FAILED;
    if (s != AT_OK) {
        cli_error("fit", "training failed", s);
        return s == AT_ERR_ARG ? EXIT_USAGE : EXIT_RUN_FAILED;
    }
    return -1;
}

/* The run's opening lines: data, model, optimizer, adversarial training. */
static void print_header(FILE *log, const fit_args *a, const at_train_config *cfg, const at_data *data,
                         const at_dataset *val, const at_net *net) {
    fprintf(log, "advtrain fit: %s on %s: %d train, %d test, %dx%dx%d", a->model, data->name,
            data->train.n, data->test.n, data->train.c, data->train.h, data->train.w);
    if (val) fprintf(log, ", %d validation", val->n);
    if (data->train.num_classes) fprintf(log, ", %d classes", data->train.num_classes);
    fprintf(log, "\n  %zu parameters; %s lr %g", at_net_num_params(net), a->optim, (double)a->lr);
    if (strcmp(a->optim, "sgd") == 0) fprintf(log, " momentum %g%s", (double)a->momentum, a->nesterov ? " (nesterov)" : "");
    fprintf(log, "; batch %d; %d epoch%s; seed %llu; %d thread%s\n", a->batch, a->epochs, cli_s(a->epochs),
            (unsigned long long)a->seed, a->threads, cli_s(a->threads));
    if (cfg->adv.method != AT_ADV_NONE)
        fprintf(log, "  adversarial training: %s, eps %g (0-1 pixel scale, %s)%s\n",
                at_adv_method_name(cfg->adv.method), (double)cfg->adv.eps,
                cfg->adv.norm == AT_NORM_L2 ? "L2" : "L-inf",
                !val                ? ""
                : cfg->adv.keep_best ? "; robust validation each epoch, best epoch kept"
                                     : "; robust validation each epoch, last epoch kept");
    if (cfg->qat.enabled)
        fprintf(log, "  quantization-aware training: each step computes as the int8 model would, and so do the "
                     "epochs' metrics; advtrain quantize %s then uses the trained ranges\n", a->out);
    fflush(log);
}

/* --resume: where the run stands. Returns -1 to train (cfg resumes from *resume_epoch), else the
 * exit status: 0 when the run is complete and its model saved (no file is touched), or the
 * failure when the checkpoint does not fit this run (no file is touched either). */
static int prepare_resume(const fit_args *a, at_train_config *cfg, at_net *train_net, const at_data *data,
                          const at_dataset *val, FILE *log, int *resume_epoch) {
    bool complete;
    if (!resume_point(a, log, resume_epoch, &complete)) return EXIT_RUN_FAILED;
    if (complete && file_exists(a->out)) {
        fprintf(log, "advtrain fit: --resume %s: the run is complete (%d epoch%s%s) and %s is saved; "
                     "nothing to do, no file changed. To train longer: advtrain fit --resume %s --epochs %d\n",
                a->resume, *resume_epoch, cli_s(*resume_epoch),
                rundir_early_stopped(a->checkpoint_dir) ? ", stopped early" : "", a->out, a->resume,
                *resume_epoch + 10);
        return 0;
    }
    if (*resume_epoch == 0) return -1; /* no checkpoint yet: from epoch 1 */
    cfg->checkpoint.resume = true;
    at_status s = check_resumable(train_net, &data->train, val, &data->test, cfg, *resume_epoch);
    if (s != AT_OK) {
        fprintf(stderr, "advtrain fit: --resume %s: %s (nothing was changed)\n", a->resume, at_error_message());
        return s == AT_ERR_ARG ? EXIT_USAGE : EXIT_RUN_FAILED;
    }
    if (complete)
        fprintf(log, "resuming %s: all %d epoch%s done; saving the final model\n", a->checkpoint_dir,
                *resume_epoch, cli_s(*resume_epoch));
    else
        resume_message(a, log, *resume_epoch);
    return -1;
}

/* After training: final metrics, the model file with its metadata, the report and the last
 * line (or the JSON, which takes *settings). Returns the exit status. */
static int save_results(const fit_state *st, at_net *net, const at_data *data, const at_dataset *val,
                        const char *settings_text, cJSON **settings) {
    const fit_args *a = st->args;
    const bool regression = st->regression;
    final_metrics m;
    memset(&m, 0, sizeof m);
    m.has_val = val != NULL;
    at_status s = at_evaluate(net, &data->train, 256, &m.train);
    if (s == AT_OK && val) s = at_evaluate(net, val, 256, &m.val);
    if (s == AT_OK) s = at_evaluate(net, &data->test, 256, &m.test);
    if (s != AT_OK) {
        cli_error("fit", "final evaluation", s);
        return EXIT_RUN_FAILED;
    }
    m.gap = regression ? (double)m.test.mse - m.train.mse : (double)m.train.accuracy - m.test.accuracy;
    cJSON *results = results_json(st, net, &m);
    char *results_str = cli_json_text(results);
    at_st_meta meta[] = {{"advtrain.data", (char *)a->data},
                         {"advtrain.settings", settings_text ? (char *)settings_text : "{}"},
                         {"advtrain.results", results_str ? results_str : "{}"}};
    if (cli_is_root()) s = at_model_save(net, a->out, meta, 3); /* rank 0 writes for an mpirun job */
    free(results_str);
    if (s != AT_OK) {
        cJSON_Delete(results);
        cli_error("fit", "saving the model", s);
        return EXIT_RUN_FAILED;
    }
    if (!a->quiet) print_report(st->log, st, net, &m);
    char test[32];
    format_metric(test, sizeof test, regression, regression ? m.test.mse : m.test.accuracy);
    FILE *last = a->json ? stderr : stdout;
    if (a->json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "model", a->model);
        cJSON_AddStringToObject(o, "data", a->data);
        cJSON_AddStringToObject(o, "out", a->out);
        cJSON_AddNumberToObject(o, "seconds", cli_now() - st->start);
        if (cli_comm()) cJSON_AddNumberToObject(o, "allreduce_seconds", cli_comm_seconds());
        cJSON_AddItemToObject(o, "settings", *settings);
        *settings = NULL;
        cJSON_AddItemToObject(o, "results", results);
        cli_print_json(o);
    } else {
        cJSON_Delete(results);
    }
    if (!a->json || !a->quiet)
        fprintf(last, "saved %s (test %s%s, %.1fs)\n", a->out, regression ? "" : "accuracy ", test,
                cli_now() - st->start);
    return 0;
}


/* The architecture a --weights file records (advtrain.arch), copied into buf; false if none. */
static bool weights_arch(const char *path, char *buf, size_t cap) {
    at_st_file *f = NULL;
    if (at_st_read(path, &f) != AT_OK) return false; /* the load below reports why */
    const char *arch = at_st_meta_get(f, "advtrain.arch");
    bool found = arch && *arch; /* arch lives in f */
    if (found) snprintf(buf, cap, "%s", arch);
    at_st_free(f);
    return found;
}

/* --weights without --model: the file says what it holds, so train that rather than assume the
 * default seed-cnn and fail on its first tensor name. */
static bool model_from_weights(cli_command *cmd, fit_args *a, cli_strings *strings, FILE *log) {
    cli_option *model = (cli_option *)cli_find(cmd, "model");
    char arch[1024];
    if (!a->weights || model->seen || !weights_arch(a->weights, arch, sizeof arch)) return true;
    if (!(a->model = cli_strings_add(strings, arch))) return false;
    model->seen = true; /* the effective config records it */
    if (!a->quiet)
        fprintf(log, "advtrain fit: --weights %s holds the architecture '%s' (advtrain.arch): "
                     "training that (give --model to choose another)\n", a->weights, arch);
    return true;
}

/* A --weights file that does not fit the model: say which architecture each side has. */
static void weights_mismatch(const fit_args *a, bool model_given) {
    char detail[2048];
    snprintf(detail, sizeof detail, "%s", at_error_message());
    char arch[1024];
    bool known = weights_arch(a->weights, arch, sizeof arch);
    fprintf(stderr, "advtrain fit: --weights %s: %s\n  this run trains '%s' (%s); the file holds %s%s%s\n",
            a->weights, detail, a->model, model_given ? "--model" : "the default --model",
            known ? "'" : "no advtrain.arch metadata (e.g. written by PyTorch): give --model",
            known ? arch : "", known ? "' (its advtrain.arch metadata)" : "");
}

/* --width W names the model preact-resnet18:W, the form model files record. */
static int apply_width(fit_args *a, cli_strings *strings) {
    if (a->width <= 0) return 0;
    if (strncmp(a->model, "preact-resnet18", 15) != 0 || (a->model[15] && a->model[15] != ':'))
        return usage_error("--width %d: only preact-resnet18 takes a width (--model is %s)", a->width,
                           a->model);
    char name[64];
    snprintf(name, sizeof name, "preact-resnet18:%d", a->width);
    a->model = cli_strings_add(strings, name);
    return a->model ? 0 : EXIT_RUN_FAILED;
}

int cmd_fit(int argc, char **argv) {
    cli_strings strings = {0};
    int status = fit_main(argc, argv, &strings);
    cli_strings_free(&strings);
    return status;
}

/* What fit does without flags. */
static fit_args fit_defaults(void) {
    return (fit_args){.model = "seed-cnn", .data = "fashion-mnist", .optim = "sgd",
                  .out = "model.safetensors", .init = "pytorch", .epochs = 10, .batch = 128,
                  .threads = 0, .lr = 0.05f, .momentum = 0.9f, .seed = 1,
                  .reg_layers = "all", .augment = "none", .schedule = "constant",
                  .monitor = "loss", .step_size = 0, .gamma = 0.1f, .pct_start = 0.3f,
                  .plateau_patience = 10, .plateau_factor = 0.1f, .adv_norm = "linf",
                  .on_nonfinite = "stop", .certify_warmup = 1, .certify_ramp = 5, .kappa = 0.5f, .beta_start = 1.0f,
                  .qat_momentum = 0.01f};
}

enum { FIT_MAX_OPTIONS = 80 };

/* fit's flags, pointing into a; returns how many. */
static int fit_options(fit_args *a, cli_option *out) {
    const cli_option opts[] = {
        {"model", OPT_STRING, &a->model, "NAME|SPEC", "seed-mlp, seed-cnn, mlp, smallcnn, resnet8, preact-resnet18[:W], dscnn, or a spec like 'flatten,linear:100,relu,linear:10' (default seed-cnn)", 1, 0},
        {"width", OPT_INT, &a->width, "W", "preact-resnet18: the first stage's channels (W, 2W, 4W, 8W after; default 0: the paper's 64)", 0, 1024},
        {"data", OPT_STRING, &a->data, "SOURCE", "fashion-mnist, mnist:DIR, fashion-mnist:DIR, idx:DIR, cifar10:DIR, synthetic (default fashion-mnist)", 1, 0},
        {"epochs", OPT_INT, &a->epochs, "N", "passes over the training set (default 10)", 1, 100000},
        {"batch", OPT_INT, &a->batch, "N", "minibatch size (default 128)", 1, 65536},
        {"optim", OPT_STRING, &a->optim, "sgd|adam|adamw", "optimizer (default sgd; adamw: decoupled weight decay, default 0.01)", 1, 0},
        {"lr", OPT_FLOAT, &a->lr, "X", "learning rate (default 0.05 for sgd, 1e-3 for adam/adamw; the peak for onecycle)", 0, 100},
        {"momentum", OPT_FLOAT, &a->momentum, "X", "SGD momentum (default 0.9)", 0, 0.999999},
        {"nesterov", OPT_FLAG, &a->nesterov, NULL, "Nesterov momentum (SGD)", 1, 0},
        {"init", OPT_STRING, &a->init, "pytorch|kaiming|xavier", "weight initialization (default pytorch)", 1, 0},
        {"weights", OPT_STRING, &a->weights, "FILE", "start from these weights (safetensors from advtrain or PyTorch, state_dict names) instead of a random init: fine-tuning", 1, 0},
        {"seed", OPT_U64, &a->seed, "N", "seed for initialization, shuffling, dropout and augmentation (default 1)", 1, 0},
        CLI_OPT_THREADS(&a->threads),
        {"val-split", OPT_FLOAT, &a->val_split, "F", "hold out this fraction of the training set for validation", 0, 0.9},
        {"train-subset", OPT_INT, &a->train_subset, "N", "train on the first N training images only (default 0: all)", 0, 100000000},
        {"l1", OPT_FLOAT, &a->l1, "X", "L1 penalty X*sum|w| over --reg-layers (default 0)", 0, 100},
        {"l2", OPT_FLOAT, &a->l2, "X", "L2 penalty X*sum w^2 over --reg-layers, no 1/2 (default 0)", 0, 100},
        {"reg-layers", OPT_STRING, &a->reg_layers, "LIST", "what the penalties, decay, prox and max-norm cover: layer names (fc1,3), kinds (linear,conv) or all (default all)", 1, 0},
        {"reg-bias", OPT_FLAG, &a->reg_bias, NULL, "cover biases too (default: weights only)", 1, 0},
        {"weight-decay", OPT_FLOAT, &a->weight_decay, "X", "weight decay on --reg-layers: coupled g += X*w (PyTorch SGD/Adam) unless --decoupled", 0, 100},
        {"decoupled", OPT_FLAG, &a->decoupled, NULL, "decoupled decay w -= lr*X*w before the update (AdamW; SGDW with sgd)", 1, 0},
        {"prox-l1", OPT_FLAG, &a->prox_l1, NULL, "apply --l1 as a proximal step after each update (exact zeros)", 1, 0},
        {"max-norm", OPT_FLOAT, &a->max_norm, "C", "rescale each unit's incoming weights to L2 norm <= C after each update", 0, 1e6},
        {"dropout", OPT_FLOAT, &a->dropout, "P", "dropout P on the input of every Linear layer but the first, in training", 0, 0.95},
        {"label-smoothing", OPT_FLOAT, &a->label_smoothing, "E", "cross-entropy targets (1-E)*onehot + E/K (default 0)", 0, 0.99},
        {"on-nonfinite", OPT_STRING, &a->on_nonfinite, "stop|skip", "a loss or gradient that is not finite: stop (default), or skip the batch and halve the learning rate (10 in a row stop)", 1, 0},
        {"clip-grad", OPT_FLOAT, &a->clip_grad, "N", "clip the global gradient norm to N (default off)", 0, 1e6},
        {"augment", OPT_STRING, &a->augment, "LIST", "image augmentation: crop[:PAD] (zero padding, default 4), flip; comma list (default none)", 1, 0},
        {"noise", OPT_FLOAT, &a->noise, "SIGMA", "Gaussian input noise std for training (images clamped to [0,1])", 0, 10},
        {"mixup", OPT_FLOAT, &a->mixup, "ALPHA", "mixup with lambda ~ Beta(ALPHA, ALPHA) (default off)", 0, 100},
        {"schedule", OPT_STRING, &a->schedule, "KIND", "learning rate: constant, step, cosine, onecycle, plateau (default constant)", 1, 0},
        {"step-size", OPT_INT, &a->step_size, "N", "step schedule: epochs between decays (default a third of --epochs)", 1, 100000},
        {"gamma", OPT_FLOAT, &a->gamma, "X", "step schedule: decay factor (default 0.1)", 1e-6, 1},
        {"min-lr", OPT_FLOAT, &a->min_lr, "X", "cosine: final learning rate; plateau: lower bound (default 0)", 0, 100},
        {"pct-start", OPT_FLOAT, &a->pct_start, "F", "onecycle: fraction of the steps spent rising (default 0.3)", 0.01, 0.99},
        {"plateau-patience", OPT_INT, &a->plateau_patience, "N", "plateau: epochs without improvement before lr *= factor (default 10)", 0, 100000},
        {"plateau-factor", OPT_FLOAT, &a->plateau_factor, "X", "plateau: factor (default 0.1)", 1e-6, 0.999999},
        {"early-stop", OPT_INT, &a->early_stop, "PATIENCE", "stop after PATIENCE epochs without validation improvement; restore the best weights (needs --val-split; default 0: off)", 0, 100000},
        {"min-delta", OPT_FLOAT, &a->min_delta, "X", "early stopping: smallest change that counts as an improvement (default 0)", 0, 1e6},
        {"monitor", OPT_STRING, &a->monitor, "loss|metric", "what early stopping and plateau watch: validation loss or accuracy/MSE (default loss)", 1, 0},
        {"adv", OPT_STRING, &a->adv, "METHOD", "adversarial training: fgsm (the tutorial's clean+adversarial loss), fgsm-rs, pgd, trades, free (docs/adversarial-training.md)", 1, 0},
        {"eps", OPT_STRING, &a->eps_text, "E", "adversarial radius on the 0-1 pixel scale (8/255 accepted, = 0.0314)", 1, 0},
        {"alpha", OPT_FLOAT, &a->alpha, "A", "adversarial step (default: fgsm eps, fgsm-rs 1.25 eps, pgd 2.5 eps/steps, trades eps/4)", 0, 1},
        {"steps", OPT_INT, &a->adv_steps, "K", "pgd / trades inner steps (default 7 / 10)", 1, 10000},
        {"adv-norm", OPT_STRING, &a->adv_norm, "linf|l2", "pgd threat model (default linf)", 1, 0},
        {"clean-weight", OPT_FLOAT, &a->clean_weight, "W", "fgsm: loss = W*clean + (1-W)*adversarial (default 0.5)", 0, 1},
        {"beta", OPT_FLOAT, &a->beta, "B", "trades: weight of the KL term (default 6)", 0, 1000},
        {"replays", OPT_INT, &a->replays, "M", "free: replays of each batch (default 8; an epoch costs M plain epochs)", 1, 100},
        {"qat", OPT_FLAG, &a->qat, NULL, "quantization-aware training: every step computes as the int8 model (rounded weights and activations, straight-through gradients); advtrain quantize then uses the trained ranges (docs/quantization.md)", 1, 0},
        {"qat-momentum", OPT_FLOAT, &a->qat_momentum, "M", "--qat: weight of each batch's extremes in the moving activation ranges (default 0.01)", 1e-6, 1},
        {"certify", OPT_STRING, &a->certify, "METHOD", "certified training (docs/certified.md), ibp or crown-ibp: kappa*CE(clean) + (1-kappa)*worst-case CE of the margin bounds at --eps", 1, 0},
        {"certify-warmup", OPT_INT, &a->certify_warmup, "N", "--certify: clean epochs first (default 1)", 0, 100000},
        {"certify-ramp", OPT_INT, &a->certify_ramp, "N", "--certify: epochs over which eps rises and kappa falls (default 5)", 0, 100000},
        {"kappa", OPT_FLOAT, &a->kappa, "K", "--certify: the clean loss's weight after the ramp (default 0.5)", 0, 1},
        {"beta-start", OPT_FLOAT, &a->beta_start, "B", "--certify crown-ibp: CROWN-IBP's share of the bounds (the rest IBP's) at the ramp's start (default 1)", 0, 1},
        {"beta-end", OPT_FLOAT, &a->beta_end, "B", "--certify crown-ibp: and after the ramp (default 0)", 0, 1},
        {"eps-warmup", OPT_INT, &a->eps_warmup, "N", "ramp eps linearly from 0 over the first N epochs (default 0)", 0, 100000},
        {"robust-val-steps", OPT_INT, &a->robust_val_steps, "K", "PGD steps of the per-epoch robust validation (default 10; needs --val-split)", 0, 10000},
        {"robust-val-samples", OPT_INT, &a->robust_val_samples, "N", "validation samples it attacks (default 1000)", 0, 100000000},
        {"keep-last", OPT_FLAG, &a->keep_last, NULL, "keep the last epoch's weights instead of the best robust validation epoch's", 1, 0},
        {"no-guard", OPT_FLAG, &a->no_guard, NULL, "fgsm-rs: do not check for catastrophic overfitting", 1, 0},
        {"out", OPT_STRING, &a->out, "FILE", "where to save the model (default model.safetensors; DIR/model.safetensors with --checkpoint-dir)", 1, 0},
        {"checkpoint-dir", OPT_STRING, &a->checkpoint_dir, "DIR", "keep DIR/last.safetensors (full training state, every epoch) and DIR/best.safetensors, DIR/config.ini and DIR/metrics.csv", 1, 0},
        {"force", OPT_FLAG, &a->force, NULL, "a new run into a --checkpoint-dir that holds another run: remove that run's files first", 1, 0},
        {"resume", OPT_STRING, &a->resume, "DIR", "continue the run in checkpoint DIR (its config.ini; flags given here override): bit-identical to an uninterrupted run", 1, 0},
        {"log", OPT_STRING, &a->log, "FILE", "per-epoch metrics as CSV (default DIR/metrics.csv with --checkpoint-dir); appended on resume", 1, 0},
        {"config", OPT_STRING, &a->config, "FILE", "read settings from an INI file ([fit] section, flag names as keys); flags given here override", 1, 0},
        {"json", OPT_FLAG, &a->json, NULL, "print one JSON object (settings, results, per-layer norms) on stdout; progress goes to stderr", 1, 0},
        {"quiet", OPT_FLAG, &a->quiet, NULL, "print only errors and the final line (or the JSON)", 1, 0},
    };
    _Static_assert(sizeof opts / sizeof *opts <= FIT_MAX_OPTIONS, "FIT_MAX_OPTIONS too small");
    memcpy(out, opts, sizeof opts);
    return (int)(sizeof opts / sizeof *opts);
}

/* Flags, config files and every check that needs no data: -1 to go on, else the exit status. */
static int fit_setup(cli_command *cmd, int argc, char **argv, fit_args *a, cli_strings *strings,
                     at_train_config *cfg, at_init_kind *init) {
    int early = cli_start(cmd, argc, argv);
    if (early >= 0) return early;
    if (!read_config_files(cmd, a, strings)) return EXIT_USAGE;
    if (a->checkpoint_dir && !cli_find(cmd, "out")->seen) { /* the run's model stays with the run */
        char out[4096];
        snprintf(out, sizeof out, "%s/model.safetensors", a->checkpoint_dir);
        if (!(a->out = cli_strings_add(strings, out))) return EXIT_RUN_FAILED;
    }
    int bad = build_config(cmd, a, cfg);
    if (bad) return bad;
    if (!parse_init(a->init, init)) return usage_error("--init %s: unknown (pytorch, kaiming or xavier)", a->init);
    static char alpha_note[160]; /* the alpha option's note points here until the run ends */
    effective_defaults(cmd, a, cfg, alpha_note, sizeof alpha_note);
    if ((bad = apply_width(a, strings))) return bad;
    if ((bad = check_outputs(a))) return bad;
    if (!model_from_weights(cmd, a, strings, a->json ? stderr : stdout)) return EXIT_RUN_FAILED;
    at_set_threads(a->threads > 0 ? a->threads : at_get_threads());
    a->threads = at_get_threads();
    /* The thread count shapes the result bit for bit: the effective config records it. */
    ((cli_option *)cli_find(cmd, "threads"))->seen = true;
    return -1;
}

/* What a run holds from loading the data to saving the model (fit_run_free releases it). */
typedef struct fit_run {
    at_data data;
    at_net *net, *train_net;
    at_dataset val;
    bool has_val;
    cJSON *settings;
    char *settings_text;
    metrics_log metrics;
} fit_run;

static void fit_run_free(fit_run *R) {
    metrics_log_close(&R->metrics);
    free(R->settings_text);
    cJSON_Delete(R->settings);
    if (R->train_net != R->net) at_net_free(R->train_net);
    at_net_free(R->net);
    at_dataset_free(&R->val);
    at_data_free(&R->data);
}

/* The metrics log: --log, or DIR/metrics.csv with --checkpoint-dir, or none. */
static bool open_metrics(const fit_args *a, fit_run *R, int resume_epoch) {
    const char *log_path = a->log;
    char default_log[4096];
    if (!log_path && a->checkpoint_dir) {
        snprintf(default_log, sizeof default_log, "%s/metrics.csv", a->checkpoint_dir);
        log_path = default_log;
    }
    return !log_path || !cli_is_root() || metrics_log_open(&R->metrics, log_path, R->data.train.targets != NULL, resume_epoch);
}

/* Data, networks, resume, training and saving: the exit status. */
static int fit_run_all(const cli_command *cmd, fit_args *a, at_train_config *cfg, at_init_kind init,
                       fit_run *R) {
    FILE *log = a->json ? stderr : stdout;
    int r = prepare_data(a, cfg, &R->data, &R->val, &R->has_val);
    if (r >= 0) return r;
    const at_dataset *val = R->has_val ? &R->val : NULL;
    if ((r = build_nets(cmd, a, cfg, init, &R->data, &R->net, &R->train_net)) >= 0) return r;
    fit_state st = {.args = a, .log = log, .regression = R->data.train.targets != NULL, .start = cli_now()};
    if (!a->quiet) print_header(log, a, cfg, &R->data, val, R->net);
    R->settings = settings_json(a, cfg);
    R->settings_text = cli_json_text(R->settings);
    at_st_meta checkpoint_meta[] = {{"advtrain.data", (char *)a->data},
                                    {"advtrain.settings", R->settings_text ? R->settings_text : "{}"}};
    cfg->comm = cli_comm(); /* under mpirun: data-parallel over the ranks (docs/distributed.md) */
    if (a->checkpoint_dir) {
        cfg->checkpoint.dir = a->checkpoint_dir;
        cfg->checkpoint.meta = checkpoint_meta;
        cfg->checkpoint.nmeta = 2;
    }
    int resume_epoch = 0;
    if (a->resume && (r = prepare_resume(a, cfg, R->train_net, &R->data, val, log, &resume_epoch)) >= 0) return r;
    if (!start_run_dir(cmd, a) || !open_metrics(a, R, resume_epoch)) return EXIT_RUN_FAILED;
    st.metrics = &R->metrics;
    st.train_net = R->train_net;
    st.cfg = cfg;
    st.has_val = R->has_val;
    if ((r = train(&st, &R->data, val, resume_epoch)) >= 0) return r;
    if (R->train_net != R->net) /* same parameter layout: see with_dropout */
        memcpy(at_net_params(R->net), at_net_params(R->train_net), sizeof(float) * at_net_num_params(R->net));
    if (!a->quiet) print_kept(&st, log);
    return save_results(&st, R->net, &R->data, val, R->settings_text, &R->settings);
}

static int fit_main(int argc, char **argv, cli_strings *strings) {
    static const char *const not_in_config[] = {"config", "resume", "force", NULL};
    static const char *const not_recorded[] = {"quiet", "json", NULL};
    fit_args a = fit_defaults();
    cli_option opts[FIT_MAX_OPTIONS];
    cli_command cmd = {"fit", "advtrain fit [--model NAME|SPEC] [--data SOURCE] [options]",
                       "Train a model and save it as safetensors (PyTorch state_dict names).\n"
                       "Regularization: docs/regularization.md.",
                       opts, fit_options(&a, opts), NULL, 0, 0, not_in_config, not_recorded};
    at_train_config cfg;
    at_init_kind init = AT_INIT_PYTORCH;
    int status = fit_setup(&cmd, argc, argv, &a, strings, &cfg, &init);
    if (status >= 0) return status;
    /* Every rank has checked the outputs before rank 0 starts writing them. */
    if (!cli_comm_barrier()) return EXIT_RUN_FAILED;
    fit_run R = {0};
    if (!cli_load_data("fit", &R.data, a.data)) return EXIT_RUN_FAILED;
    status = fit_run_all(&cmd, &a, &cfg, init, &R);
    fit_run_free(&R);
    return status;
}
