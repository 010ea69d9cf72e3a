/* advtrain fit: train a model on a dataset and save it. */
#include "cli.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct fit_args {
    const char *model, *data, *optim, *out, *init;
    int epochs, batch, threads, train_subset;
    float lr, momentum, val_split;
    bool nesterov, quiet;
    uint64_t seed;
} fit_args;

typedef struct fit_state {
    const fit_args *args;
    bool regression;
    double start, epoch_start;
    at_epoch_stats last;
} fit_state;

static void format_metric(char *buf, size_t cap, bool regression, float v) {
    if (isnan(v))
        snprintf(buf, cap, "-");
    else if (regression)
        snprintf(buf, cap, "mse %.4f", (double)v);
    else
        snprintf(buf, cap, "%.2f%%", 100.0 * v);
}

static void on_batch(void *user, int epoch, int batch, int nbatches, float loss) {
    fit_state *st = user;
    if (st->args->quiet || !cli_is_tty()) return;
    if (batch == 1) st->epoch_start = cli_now();
    if (batch % 8 != 0 && batch != nbatches) return;
    char label[32], extra[48];
    snprintf(label, sizeof label, "epoch %d/%d", epoch, st->args->epochs);
    snprintf(extra, sizeof extra, "loss %.4f", (double)loss);
    cli_progress(label, batch, nbatches, cli_now() - st->epoch_start, extra);
}

static bool on_epoch(void *user, const at_epoch_stats *s) {
    fit_state *st = user;
    st->last = *s;
    if (st->args->quiet) return true;
    cli_progress_done();
    char train[32], val[32], test[32];
    format_metric(train, sizeof train, st->regression, s->train_metric);
    format_metric(val, sizeof val, st->regression, s->val_metric);
    format_metric(test, sizeof test, st->regression, s->test_metric);
    printf("epoch %3d/%d  loss %.4f  train %s", s->epoch, s->epochs, (double)s->train_loss, train);
    if (!isnan(s->val_metric)) printf("  val %s", val);
    printf("  test %s  lr %g  %.1fs\n", test, (double)s->lr, s->seconds);
    fflush(stdout);
    return true;
}

/* The settings of the run, as JSON for the model file's metadata. */
static char *settings_json(const fit_args *a, const at_train_config *cfg) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "model", a->model);
    cJSON_AddStringToObject(o, "data", a->data);
    cJSON_AddNumberToObject(o, "epochs", a->epochs);
    cJSON_AddNumberToObject(o, "batch", a->batch);
    cJSON_AddStringToObject(o, "optim", a->optim);
    cJSON_AddNumberToObject(o, "lr", a->lr);
    cJSON_AddNumberToObject(o, "momentum", a->momentum);
    cJSON_AddBoolToObject(o, "nesterov", a->nesterov);
    cJSON_AddStringToObject(o, "init", a->init);
    cJSON_AddNumberToObject(o, "seed", (double)a->seed);
    cJSON_AddNumberToObject(o, "threads", a->threads);
    cJSON_AddNumberToObject(o, "val_split", a->val_split);
    cJSON_AddNumberToObject(o, "train_subset", a->train_subset);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    (void)cfg;
    return s;
}

static char *results_json(const at_epoch_stats *s, bool regression) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "epochs_run", s->epoch);
    cJSON_AddNumberToObject(o, "train_loss", s->train_loss);
    const char *metric = regression ? "mse" : "accuracy";
    char key[32];
    snprintf(key, sizeof key, "train_%s", metric);
    cJSON_AddNumberToObject(o, key, s->train_metric);
    if (!isnan(s->val_metric)) {
        snprintf(key, sizeof key, "val_%s", metric);
        cJSON_AddNumberToObject(o, key, s->val_metric);
    }
    snprintf(key, sizeof key, "test_%s", metric);
    cJSON_AddNumberToObject(o, key, s->test_metric);
    char *str = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return str;
}

static bool parse_init(const char *name, at_init_kind *kind) {
    if (strcmp(name, "pytorch") == 0) *kind = AT_INIT_PYTORCH;
    else if (strcmp(name, "kaiming") == 0) *kind = AT_INIT_KAIMING_NORMAL;
    else if (strcmp(name, "xavier") == 0) *kind = AT_INIT_XAVIER_UNIFORM;
    else return false;
    return true;
}

int cmd_fit(int argc, char **argv) {
    fit_args a = {.model = "seed-cnn", .data = "fashion-mnist", .optim = "sgd",
                  .out = "model.safetensors", .init = "pytorch", .epochs = 10, .batch = 128,
                  .threads = 0, .lr = 0.05f, .momentum = 0.9f, .seed = 1};
    cli_option opts[] = {
        {"model", OPT_STRING, &a.model, "NAME|SPEC", "seed-mlp, seed-cnn, mlp, smallcnn, or a spec like 'flatten,linear:100,relu,linear:10' (default seed-cnn)", 1, 0},
        {"data", OPT_STRING, &a.data, "SOURCE", "fashion-mnist, mnist:DIR, idx:DIR, cifar10:DIR, synthetic (default fashion-mnist)", 1, 0},
        {"epochs", OPT_INT, &a.epochs, "N", "passes over the training set (default 10)", 1, 100000},
        {"batch", OPT_INT, &a.batch, "N", "minibatch size (default 128)", 1, 65536},
        {"optim", OPT_STRING, &a.optim, "sgd|adam", "optimizer (default sgd)", 1, 0},
        {"lr", OPT_FLOAT, &a.lr, "X", "learning rate (default 0.05)", 0, 100},
        {"momentum", OPT_FLOAT, &a.momentum, "X", "SGD momentum (default 0.9)", 0, 0.999999},
        {"nesterov", OPT_FLAG, &a.nesterov, NULL, "Nesterov momentum (SGD)", 1, 0},
        {"init", OPT_STRING, &a.init, "pytorch|kaiming|xavier", "weight initialization (default pytorch)", 1, 0},
        {"seed", OPT_U64, &a.seed, "N", "seed for initialization, shuffling and dropout (default 1)", 1, 0},
        {"threads", OPT_INT, &a.threads, "N", "compute threads (default: all cores)", 1, 1024},
        {"val-split", OPT_FLOAT, &a.val_split, "F", "hold out this fraction of the training set for validation", 0, 0.9},
        {"train-subset", OPT_INT, &a.train_subset, "N", "train on the first N training images only", 1, 100000000},
        {"out", OPT_STRING, &a.out, "FILE", "where to save the model (default model.safetensors)", 1, 0},
        {"quiet", OPT_FLAG, &a.quiet, NULL, "print only errors and the final line", 1, 0},
    };
    cli_command cmd = {"fit", "advtrain fit [--model NAME|SPEC] [--data SOURCE] [options]",
                       "Train a model and save it as safetensors (PyTorch state_dict names).",
                       opts, (int)(sizeof opts / sizeof *opts), NULL, 0, 0};
    bool help;
    if (!cli_parse(&cmd, argc, argv, &help)) return EXIT_USAGE;
    if (help) {
        cli_print_help(&cmd, stdout);
        return 0;
    }
    at_train_config cfg = at_train_defaults();
    if (strcmp(a.optim, "sgd") == 0) {
        cfg.optim = at_optim_defaults(AT_OPTIM_SGD);
        cfg.optim.momentum = a.momentum;
        cfg.optim.nesterov = a.nesterov;
    } else if (strcmp(a.optim, "adam") == 0) {
        cfg.optim = at_optim_defaults(AT_OPTIM_ADAM);
        if (!cli_find(&cmd, "lr")->seen) a.lr = 1e-3f;
    } else {
        fprintf(stderr, "advtrain fit: --optim %s: unknown optimizer (sgd or adam)\n", a.optim);
        return EXIT_USAGE;
    }
    if (a.nesterov && strcmp(a.optim, "sgd") != 0) {
        fprintf(stderr, "advtrain fit: --nesterov applies to --optim sgd only\n");
        return EXIT_USAGE;
    }
    at_init_kind init;
    if (!parse_init(a.init, &init)) {
        fprintf(stderr, "advtrain fit: --init %s: unknown (pytorch, kaiming or xavier)\n", a.init);
        return EXIT_USAGE;
    }
    cfg.optim.lr = a.lr;
    cfg.epochs = a.epochs;
    cfg.batch = a.batch;
    cfg.seed = a.seed;
    at_set_threads(a.threads > 0 ? a.threads : at_get_threads());
    a.threads = at_get_threads();

    at_data data;
    if (!cli_load_data("fit", &data, a.data)) return EXIT_RUN_FAILED;
    int status = EXIT_RUN_FAILED;
    at_net *net = NULL;
    at_dataset val = {0};
    bool has_val = false;
    at_status s = AT_OK;
    if (a.train_subset > 0 && a.train_subset < data.train.n)
        s = at_dataset_truncate(&data.train, a.train_subset);
    if (s == AT_OK && a.val_split > 0) {
        s = at_dataset_split(&data.train, &val, a.val_split, a.seed);
        has_val = s == AT_OK;
    }
    if (s != AT_OK) {
        cli_error("fit", "preparing the data", s);
        goto done;
    }
    s = at_net_from_spec(&net, a.model, data.train.c, data.train.h, data.train.w);
    if (s != AT_OK) {
        fprintf(stderr, "advtrain fit: --model %s: %s\n", a.model, at_error_message());
        status = EXIT_USAGE;
        goto done;
    }
    at_net_init_with(net, init, a.seed);
    fit_state st = {&a, data.train.targets != NULL, cli_now(), 0, {0}};
    if (!a.quiet) {
        printf("advtrain fit: %s on %s: %d train%s, %d test, %dx%dx%d", a.model, data.name,
               data.train.n, has_val ? "" : "", data.test.n, data.train.c, data.train.h,
               data.train.w);
        if (has_val) printf(", %d validation", val.n);
        if (data.train.num_classes) printf(", %d classes", data.train.num_classes);
        printf("\n  %zu parameters; %s lr %g", at_net_num_params(net), a.optim, (double)a.lr);
        if (strcmp(a.optim, "sgd") == 0) printf(" momentum %g%s", (double)a.momentum, a.nesterov ? " (nesterov)" : "");
        printf("; batch %d; %d epochs; seed %llu; %d threads\n", a.batch, a.epochs,
               (unsigned long long)a.seed, a.threads);
        fflush(stdout);
    }
    at_train_callbacks cb = {&st, on_batch, on_epoch};
    s = at_train(net, &data.train, has_val ? &val : NULL, &data.test, &cfg, &cb);
    cli_progress_done();
    if (s != AT_OK) {
        cli_error("fit", "training failed", s);
        goto done;
    }
    char *settings = settings_json(&a, &cfg);
    char *results = results_json(&st.last, st.regression);
    at_st_meta meta[] = {{"advtrain.data", (char *)a.data},
                         {"advtrain.settings", settings ? settings : "{}"},
                         {"advtrain.results", results ? results : "{}"}};
    s = at_model_save(net, a.out, meta, 3);
    free(settings);
    free(results);
    if (s != AT_OK) {
        cli_error("fit", "saving the model", s);
        goto done;
    }
    char test[32];
    format_metric(test, sizeof test, st.regression, st.last.test_metric);
    printf("saved %s (test %s%s, %.1fs)\n", a.out, st.regression ? "" : "accuracy ", test,
           cli_now() - st.start);
    status = 0;
done:
    at_net_free(net);
    at_dataset_free(&val);
    at_data_free(&data);
    return status;
}
