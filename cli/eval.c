/* advtrain eval: accuracy (or MSE) of a saved model on a test set and, with --attack, its robust
 * accuracy under adversarial attacks for a list of eps, with built-in sanity checks. */
#include "attack_cli.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* One attack at one eps: its configuration and result (the library's sanity checks read them). */
typedef at_sanity_run eval_run;

/* A float as the shortest decimal that reads back as it (0.02f prints 0.02, not 0.0199999995). */
static double jfloat(float v) {
    char buf[32];
    cli_format_float(buf, sizeof buf, v);
    return strtod(buf, NULL);
}

static double acc_of(const at_attack_result *r) { return r->samples ? (double)r->robust / r->samples : 0.0; }

static const char *run_name(const eval_run *r) { return at_attack_name(&r->cfg); }

/* Runs one attack on the first n samples of ds; prints progress on a terminal. */
static bool run_one(at_net *net, const at_dataset *ds, int n, eval_run *r, bool quiet_progress) {
    char label[96];
    char eps_text[48];
    atk_cli_eps_text(r->cfg.eps, eps_text, sizeof eps_text);
    snprintf(label, sizeof label, "%s eps %s", run_name(r), eps_text);
    at_attack_config cfg = r->cfg;
    if (!quiet_progress) {
        cfg.progress = atk_cli_progress;
        cfg.user = label;
    }
    at_status s = at_attack_dataset(net, &cfg, ds, n, NULL, NULL, &r->res);
    if (s != AT_OK) {
        cli_error("eval", run_name(r), s);
        return false;
    }
    return true;
}

/* What `advtrain eval` was asked for. */
typedef struct eval_options {
    const char *data_source, *model_spec, *split, *float_model;
    int batch, threads, samples, offset;
    bool json, strict, no_sanity;
    atk_cli_settings set;
} eval_options;

/* What the report says the numbers are about. */
typedef struct eval_input {
    const char *path, *data_source, *split, *data_name;
    int first, n;
} eval_input;

/* One run per attack and eps, attack by attack; targets (may be NULL) for --target CLASS. */
static eval_run *plan_runs(const at_attack_config *cfgs, int ncfg, const float *eps, int neps, const int32_t *targets) {
    eval_run *runs = calloc((size_t)ncfg * neps, sizeof *runs);
    if (!runs) return NULL;
    for (int a = 0; a < ncfg; a++)
        for (int e = 0; e < neps; e++) {
            eval_run *r = &runs[a * neps + e];
            r->cfg = cfgs[a];
            r->cfg.eps = eps[e];
            r->cfg.targets = targets;
        }
    return runs;
}

static void print_head(const eval_input *in, at_net *net, double accuracy, int clean_correct) {
    if (in->first > 0)
        printf("%s (%s) on %s %s, samples %d to %d\n", in->path, at_net_spec(net), in->data_name, in->split,
               in->first, in->first + in->n - 1);
    else
        printf("%s (%s) on %s %s, first %d sample%s\n", in->path, at_net_spec(net), in->data_name, in->split, in->n,
               cli_s(in->n));
    printf("clean accuracy %.2f%% (%d/%d)\n", 100.0 * accuracy, clean_correct, in->n);
    printf("eps on the 0-1 pixel scale (eps x 255 on the 0-255 scale); robust = correct on the clean and the adversarial input\n\n");
    printf("%-10s %-5s %-8s %-7s %-16s %-8s %-11s %9s\n", "attack", "norm", "eps", "x255", "steps", "restarts",
           "robust acc", "time");
}

static void print_row(const eval_run *r, int n) {
    char budget[48];
    atk_cli_budget_text(&r->cfg, &r->res, budget, sizeof budget);
    const double eps = r->cfg.eps;
    printf("%-10s %-5s %-8.4g %-7.3g %-16s %-8d %10.2f%% %8.1fs\n", run_name(r), r->cfg.norm == AT_NORM_L2 ? "l2" : "linf",
           eps, eps * 255.0, budget, r->res.restarts, 100 * acc_of(&r->res), r->res.seconds);
    for (int k = 0; k < r->res.nmembers; k++)
        printf("  after %-8s %39s %10.2f%% %8.1fs\n", r->res.members[k].name, "", 100.0 * r->res.members[k].robust / n,
               r->res.members[k].seconds);
    if (r->res.targeted)
        printf("  target reached on %d of %d attacked samples (%.1f%%)\n", r->res.target_hits, r->res.targeted,
               100.0 * r->res.target_hits / r->res.targeted);
    fflush(stdout);
}

static cJSON *json_run(const eval_run *r, int n) {
    cJSON *a = cJSON_CreateObject();
    cJSON_AddStringToObject(a, "attack", run_name(r));
    cJSON_AddStringToObject(a, "norm", r->cfg.norm == AT_NORM_L2 ? "l2" : "linf");
    cJSON_AddNumberToObject(a, "eps", jfloat(r->cfg.eps));
    cJSON_AddNumberToObject(a, "steps", r->res.steps);
    cJSON_AddNumberToObject(a, "restarts", r->res.restarts);
    if (r->res.alpha > 0) cJSON_AddNumberToObject(a, "alpha", jfloat(r->res.alpha));
    at_attack_config ran;
    if (at_attack_check(&r->cfg, 1 << 30, &ran) == AT_OK && ran.square_queries > 0)
        cJSON_AddNumberToObject(a, "square_queries", ran.square_queries); /* auto's Square member */
    cJSON_AddNumberToObject(a, "robust_accuracy", acc_of(&r->res));
    cJSON_AddNumberToObject(a, "seconds", r->res.seconds);
    cJSON_AddNumberToObject(a, "max_perturbation", jfloat(r->res.max_perturbation));
    if (r->res.targeted) cJSON_AddNumberToObject(a, "target_success", (double)r->res.target_hits / r->res.targeted);
    if (r->res.nmembers) {
        cJSON *ms = cJSON_AddArrayToObject(a, "members");
        for (int k = 0; k < r->res.nmembers; k++) {
            cJSON *m = cJSON_CreateObject();
            cJSON_AddStringToObject(m, "attack", r->res.members[k].name);
            cJSON_AddNumberToObject(m, "robust_accuracy_after", (double)r->res.members[k].robust / n);
            cJSON_AddNumberToObject(m, "seconds", r->res.members[k].seconds);
            cJSON_AddItemToArray(ms, m);
        }
    }
    return a;
}

/* The checks as JSON: {"passed", "checks": [{"check", "passed", "detail"}], "warnings": ["name: detail"]}. */
static cJSON *json_sanity(const at_sanity_report *S) {
    cJSON *san = cJSON_CreateObject();
    cJSON_AddBoolToObject(san, "passed", S->failed == 0);
    cJSON *checks = cJSON_AddArrayToObject(san, "checks"), *warnings = cJSON_AddArrayToObject(san, "warnings");
    for (int i = 0; i < S->nchecks; i++) {
        const at_sanity_check *c = &S->checks[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "check", c->name);
        cJSON_AddBoolToObject(o, "passed", c->passed);
        cJSON_AddStringToObject(o, "detail", c->detail);
        cJSON_AddItemToArray(checks, o);
        if (c->passed) continue;
        char msg[640];
        snprintf(msg, sizeof msg, "%s: %s", c->name, c->detail);
        cJSON_AddItemToArray(warnings, cJSON_CreateString(msg));
    }
    return san;
}

/* Prints the JSON object of an attack evaluation. */
static void json_report(const eval_input *in, at_net *net, int clean_correct, const eval_run *runs, int nruns,
                        const at_sanity_report *S) {
    cJSON *o = atk_cli_json_head(in->path, net, in->data_source, in->split, in->first, in->n);
    cJSON_AddNumberToObject(o, "ranks", cli_comm() ? cli_comm()->size : 1); /* processes that shared the attacks */
    cJSON_AddStringToObject(o, "eps_scale", "0-1 pixels");
    cJSON_AddNumberToObject(o, "clean_accuracy", (double)clean_correct / in->n);
    cJSON *arr = cJSON_AddArrayToObject(o, "attacks");
    for (int i = 0; i < nruns; i++) cJSON_AddItemToArray(arr, json_run(&runs[i], in->n));
    cJSON_AddItemToObject(o, "sanity", json_sanity(S));
    cli_print_json(o);
}

static void print_sanity(const at_sanity_report *S) {
    printf("\nsanity checks: %d passed, %d failed\n", S->passed, S->failed);
    for (int i = 0; i < S->nchecks; i++)
        printf("  %-4s %-27s %s\n", S->checks[i].passed ? "ok" : "FAIL", S->checks[i].name, S->checks[i].detail);
}

/* The clean pass, every run, the library's sanity checks and the report. */
static int run_and_report(const atk_cli_model *m, const eval_input *in, eval_run *runs, int nruns,
                          const eval_options *o) {
    at_eval_result clean;
    if (at_evaluate(m->net, m->ds, o->set.batch > 0 ? o->set.batch : 256, &clean) != AT_OK) {
        cli_error("eval", "evaluation failed", AT_ERR_ARG);
        return EXIT_RUN_FAILED;
    }
    int clean_correct = (int)lround((double)clean.accuracy * in->n);
    if (!o->json) print_head(in, m->net, clean.accuracy, clean_correct);
    for (int i = 0; i < nruns; i++) {
        if (!run_one(m->net, m->ds, in->n, &runs[i], o->json)) return EXIT_RUN_FAILED;
        if (!o->json) print_row(&runs[i], in->n);
    }
    at_sanity_report S;
    at_status s = at_robustness_sanity(m->net, m->ds, in->n, clean_correct, runs, nruns, !o->no_sanity, &S);
    if (s != AT_OK) {
        cli_error("eval", "sanity checks", s);
        return EXIT_RUN_FAILED;
    }
    if (o->json)
        json_report(in, m->net, clean_correct, runs, nruns, &S);
    else
        print_sanity(&S);
    /* Warnings also go to stderr, so that they are seen even with --json. */
    fflush(stdout);
    if (S.failed) fprintf(stderr, "advtrain eval: warning: %d sanity check%s failed (see above)\n", S.failed, S.failed > 1 ? "s" : "");
    return o->strict && S.failed ? EXIT_RUN_FAILED : 0;
}

static int eval_attacks(const atk_cli_model *m, const eval_input *in, const eval_options *o) {
    float eps[ATK_CLI_MAX];
    int neps, ncfg;
    if (!cli_parse_eps("eval", o->set.eps, eps, ATK_CLI_MAX, &neps)) return EXIT_USAGE;
    at_attack_config cfgs[ATK_CLI_MAX];
    int32_t target_class;
    if (!atk_cli_configs("eval", &o->set, at_net_out_size(m->net), cfgs, ATK_CLI_MAX, &ncfg, &target_class))
        return EXIT_USAGE;
    int32_t *targets = NULL;
    if (target_class >= 0) {
        targets = malloc(sizeof(int32_t) * (size_t)in->n);
        if (!targets) return EXIT_RUN_FAILED;
        for (int i = 0; i < in->n; i++) targets[i] = target_class;
    }
    for (int a = 0; a < ncfg; a++) {
        cfgs[a].index_base = in->first; /* a shard draws what the whole run draws */
        cfgs[a].comm = cli_comm();      /* under mpirun: the ranks share the samples */
    }
    eval_run *runs = plan_runs(cfgs, ncfg, eps, neps, targets);
    int status = runs ? run_and_report(m, in, runs, ncfg * neps, o) : EXIT_RUN_FAILED;
    free(runs);
    free(targets);
    return status;
}

/* Plain accuracy (or MSE) of the model on the selected samples. */
static int plain_eval(const atk_cli_model *m, const char *path, const eval_options *o) {
    const at_dataset *ds = m->ds;
    bool regression = ds->targets != NULL;
    at_eval_result r;
    double start = cli_now();
    at_status s = at_evaluate(m->net, ds, o->batch, &r);
    if (s != AT_OK) {
        cli_error("eval", "evaluation failed", s);
        return EXIT_RUN_FAILED;
    }
    double seconds = cli_now() - start;
    if (o->json) {
        cJSON *j = atk_cli_json_head(path, m->net, m->data_source, o->split, o->offset, r.samples);
        if (regression)
            cJSON_AddNumberToObject(j, "mse", r.mse);
        else
            cJSON_AddNumberToObject(j, "clean_accuracy", r.accuracy);
        cJSON_AddNumberToObject(j, "loss", r.loss);
        cJSON_AddNumberToObject(j, "seconds", seconds);
        cli_print_json(j);
    } else if (regression) {
        printf("%s on %s %s (%d sample%s): mse %.5f\n", path, m->data.name, o->split, r.samples, cli_s(r.samples),
               (double)r.mse);
    } else {
        printf("%s on %s %s (%d sample%s): accuracy %.2f%%  loss %.4f\n", path, m->data.name, o->split, r.samples,
               cli_s(r.samples), 100.0 * r.accuracy, (double)r.loss);
    }
    return 0;
}

/* The selected samples (--offset, --samples), then the attacks or the plain evaluation. */
static int eval_model(atk_cli_model *m, const char *path, const eval_options *o) {
    at_dataset *ds = m->ds;
    if (o->offset >= ds->n) {
        fprintf(stderr, "advtrain eval: --offset %d: the %s split has only %d samples\n", o->offset, o->split, ds->n);
        return EXIT_USAGE;
    }
    if (o->offset > 0 || (o->samples > 0 && o->samples < ds->n)) {
        int keep = ds->n - o->offset;
        if (o->samples > 0 && o->samples < keep) keep = o->samples;
        at_status s = at_dataset_keep_range(ds, o->offset, keep);
        if (s != AT_OK) {
            cli_error("eval", "selecting samples", s);
            return EXIT_RUN_FAILED;
        }
    }
    if (m->qnet) {
        const int8_eval_args a = {path, o->split, o->float_model, o->offset, o->batch, o->json, &o->set};
        return atk_cli_eval_int8(m, &a);
    }
    if (o->float_model) {
        fprintf(stderr, "advtrain eval: --float-model goes with an int8 model file; %s is a float model\n", path);
        return EXIT_USAGE;
    }
    if (o->set.attacks) {
        if (ds->targets) {
            fprintf(stderr, "advtrain eval: --attack needs a classification model and dataset; %s is regression\n",
                    m->data_source);
            return EXIT_USAGE;
        }
        const eval_input in = {path, m->data_source, o->split, m->data.name, o->offset, ds->n};
        return eval_attacks(m, &in, o);
    }
    const char *untrained;
    if (at_net_untrained_statistics(m->net, &untrained))
        fprintf(stderr, "advtrain eval: warning: %s: BatchNorm running statistics were never trained (%s is 0): "
                        "eval mode normalises with mean 0 and variance 1\n", path, untrained);
    return plain_eval(m, path, o);
}

/* Usage errors, before anything is loaded. */
static bool usage_ok(const cli_command *cmd, const eval_options *o) {
    if (strcmp(o->split, "test") != 0 && strcmp(o->split, "train") != 0) {
        fprintf(stderr, "advtrain eval: --split %s: use test or train\n", o->split);
        return false;
    }
    const char *attack_only[] = {"eps", "norm", "steps", "restarts", "alpha", "queries", "target", "seed", "all", "last-iterate", "no-sanity", "strict"};
    if (!o->set.attacks)
        for (size_t i = 0; i < sizeof attack_only / sizeof *attack_only; i++)
            if (cli_find(cmd, attack_only[i])->seen) {
                fprintf(stderr, "advtrain eval: --%s needs --attack\n", attack_only[i]);
                return false;
            }
    if (!o->set.attacks) return true;
    if (!o->set.eps) {
        fprintf(stderr, "advtrain eval: --attack needs --eps (0-1 pixel scale, e.g. --eps 0.05,0.1 or 8/255)\n");
        return false;
    }
    float eps[ATK_CLI_MAX];
    int neps, ncfg;
    at_attack_config cfgs[ATK_CLI_MAX];
    int32_t tc;
    return cli_parse_eps("eval", o->set.eps, eps, ATK_CLI_MAX, &neps) &&
           atk_cli_configs("eval", &o->set, 1 << 30, cfgs, ATK_CLI_MAX, &ncfg, &tc);
}

int cmd_eval(int argc, char **argv) {
    const char *data_source = NULL, *model_spec = NULL, *split = "test", *float_model = NULL;
    int batch = 256, threads = 0, samples = 0, offset = 0;
    bool json = false, strict = false, no_sanity = false;
    atk_cli_settings set;
    memset(&set, 0, sizeof set);
    atk_cli_help help;
    atk_cli_help_texts(&help, "robust accuracy under attacks, comma-separated: ");
    cli_option opts[] = {
        CLI_OPTS_MODEL_FILE(&data_source, &model_spec),
        CLI_OPT_SPLIT(&split),
        {"samples", OPT_INT, &samples, "N", "evaluate the first N samples only", 1, 100000000},
        {"offset", OPT_INT, &offset, "N", "skip the first N samples (with --samples: one shard of a split evaluation)", 0, 100000000},
        {"batch", OPT_INT, &batch, "N", "evaluation batch size (default 256; attacks: 1000)", 1, 65536},
        CLI_OPT_THREADS(&threads),
        CLI_OPT_JSON(&json),
        {"attack", OPT_STRING, &set.attacks, "LIST", help.attack, 1, 0},
        {"eps", OPT_STRING, &set.eps, "LIST", "attack radii on the 0-1 pixel scale, comma-separated (8/255 accepted)", 1, 0},
        ATK_CLI_OPTIONS(set, help),
        {"no-sanity", OPT_FLAG, &no_sanity, NULL, "skip the extra runs of the sanity checks (eps=0, FGSM, unbounded eps)", 1, 0},
        {"strict", OPT_FLAG, &strict, NULL, "exit with status 1 when a sanity check fails", 1, 0},
        {"float-model", OPT_STRING, &float_model, "FILE", "int8 models: the float model they came from, whose adversarial examples are transferred (default: the file's advtrain.float_model)", 1, 0},
    };
    const char *positional[1] = {NULL};
    cli_command cmd = {"eval", "advtrain eval MODEL.safetensors [--data SOURCE] [--attack LIST --eps LIST] [--json]",
                       "Evaluate a saved model: accuracy (classification) or MSE (regression); with --attack,\n"
                       "robust accuracy under adversarial attacks (eps on the 0-1 pixel scale) with sanity checks.",
                       opts, (int)(sizeof opts / sizeof *opts), positional, 1, 0};
    int early = cli_start(&cmd, argc, argv);
    if (early >= 0) return early;
    if (set.attacks && cli_find(&cmd, "batch")->seen) set.batch = batch;
    const eval_options o = {data_source, model_spec, split, float_model, batch, threads, samples,
                            offset, json, strict, no_sanity, set};
    if (!usage_ok(&cmd, &o)) return EXIT_USAGE;
    if (threads > 0) at_set_threads(threads);
    atk_cli_model m;
    int status = EXIT_RUN_FAILED;
    if (atk_cli_open("eval", &m, positional[0], data_source, model_spec, split, true))
        status = eval_model(&m, positional[0], &o);
    atk_cli_close(&m);
    return status;
}
