/* advtrain eval: accuracy (or MSE) of a saved model on a test set and, with --attack, its robust
 * accuracy under adversarial attacks for a list of eps, with built-in sanity checks. */
#include "attack_cli.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* One attack at one eps. */
typedef struct eval_run {
    at_attack_config cfg;
    at_attack_result res;
    const char *name;
    bool extra; /* run only for a sanity check, not requested */
} eval_run;

typedef struct sanity {
    cJSON *checks;   /* array of {"check", "passed", "detail"} */
    cJSON *warnings; /* array of strings */
    int passed, failed;
} sanity;

static void check(sanity *s, const char *name, bool ok, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

static void check(sanity *s, const char *name, bool ok, const char *fmt, ...) {
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "check", name);
    cJSON_AddBoolToObject(o, "passed", ok);
    cJSON_AddStringToObject(o, "detail", detail);
    cJSON_AddItemToArray(s->checks, o);
    if (ok) {
        s->passed++;
    } else {
        s->failed++;
        char msg[640];
        snprintf(msg, sizeof msg, "%s: %s", name, detail);
        cJSON_AddItemToArray(s->warnings, cJSON_CreateString(msg));
    }
}

/* A float as the shortest decimal that reads back as it (0.02f prints 0.02, not 0.0199999995). */
static double jfloat(float v) {
    char buf[32];
    snprintf(buf, sizeof buf, "%.9g", (double)v);
    for (int digits = 1; digits <= 9; digits++) {
        snprintf(buf, sizeof buf, "%.*g", digits, (double)v);
        if ((float)strtod(buf, NULL) == v) break;
    }
    return strtod(buf, NULL);
}

static double acc_of(const at_attack_result *r) { return r->samples ? (double)r->robust / r->samples : 0.0; }

static bool is_gradient_attack(const at_attack_config *c) {
    return c->kind == AT_ATTACK_FGSM || c->kind == AT_ATTACK_PGD || c->kind == AT_ATTACK_APGD;
}

/* Runs one attack on the first n samples of ds; prints progress on a terminal. */
static bool run_one(at_net *net, const at_dataset *ds, int n, eval_run *r, bool quiet_progress) {
    char label[96];
    char eps_text[48];
    atk_cli_eps_text(r->cfg.eps, eps_text, sizeof eps_text);
    snprintf(label, sizeof label, "%s eps %s", r->name, eps_text);
    at_attack_config cfg = r->cfg;
    if (!quiet_progress) {
        cfg.progress = atk_cli_progress;
        cfg.user = label;
    }
    at_status s = at_attack_dataset(net, &cfg, ds, n, NULL, NULL, &r->res);
    if (s != AT_OK) {
        cli_error("eval", r->name, s);
        return false;
    }
    return true;
}

/* The checks of FIELD.md on the runs made (and a few cheap extra runs). */
static bool sanity_checks(at_net *net, const at_dataset *ds, int n, int clean_correct, eval_run *runs,
                          int nruns, bool extra_runs, sanity *S) {
    /* 0. BatchNorm statistics that were never trained (eval mode then normalises with mean 0,
     *    variance 1): the numbers below would describe an untrained normalisation. */
    {
        const char *first;
        int untrained = at_net_untrained_statistics(net, &first);
        if (at_net_num_buffers(net) > 0)
            untrained ? check(S, "batchnorm_statistics_trained", false,
                              "the running statistics of %d BatchNorm layer%s were never updated (%s is 0)",
                              untrained, untrained > 1 ? "s" : "", first)
                      : check(S, "batchnorm_statistics_trained", true,
                              "every BatchNorm layer's running statistics were trained");
    }
    /* 1. eps = 0 leaves clean accuracy: the runs at eps 0, and each attack kind at eps 0 with a
     *    small budget. */
    {
        int bad = 0, total = 0;
        char first[160] = "";
        for (int i = 0; i < nruns; i++) {
            if (runs[i].cfg.eps != 0.0f) continue;
            total++;
            if (runs[i].res.robust != clean_correct) {
                if (!bad++)
                    snprintf(first, sizeof first, "%s at eps 0: %d robust, %d correct on clean inputs",
                             runs[i].name, runs[i].res.robust, clean_correct);
            }
        }
        if (extra_runs) {
            for (int i = 0; i < nruns; i++) {
                if (runs[i].extra) continue;
                bool seen = false;
                for (int j = 0; j < i; j++) seen = seen || (!runs[j].extra && strcmp(runs[j].name, runs[i].name) == 0);
                if (seen) continue;
                eval_run z = runs[i];
                z.cfg.eps = 0.0f;
                z.cfg.alpha = 0.0f;
                if (z.cfg.steps > 5 && z.cfg.kind != AT_ATTACK_SQUARE) z.cfg.steps = 5;
                if (z.cfg.kind == AT_ATTACK_SQUARE) z.cfg.steps = 50;
                z.cfg.square_queries = 50;
                z.cfg.restarts = 1;
                z.cfg.target_classes = 2;
                if (!run_one(net, ds, n, &z, true)) return false;
                total++;
                if (z.res.robust != clean_correct && !bad++)
                    snprintf(first, sizeof first, "%s at eps 0: %d robust, %d correct on clean inputs",
                             z.name, z.res.robust, clean_correct);
            }
        }
        if (total)
            bad ? check(S, "eps0_equals_clean", false, "%s", first)
                : check(S, "eps0_equals_clean", true, "%d attack runs at eps 0 give the clean accuracy", total);
    }
    /* 2. every example inside the ball and [0,1]. */
    {
        int bad = 0;
        float worst = 0.0f;
        char first[160] = "";
        for (int i = 0; i < nruns; i++) {
            const at_attack_result *r = &runs[i].res;
            float rel = runs[i].cfg.eps > 0 ? r->max_perturbation / runs[i].cfg.eps : 0.0f;
            worst = rel > worst ? rel : worst;
            if (r->outside_ball || r->outside_box) {
                if (!bad++)
                    snprintf(first, sizeof first, "%s eps %g: %d examples outside the ball, %lld pixels outside [0,1]",
                             runs[i].name, (double)runs[i].cfg.eps, r->outside_ball, (long long)r->outside_box);
            }
        }
        bad ? check(S, "inside_ball_and_box", false, "%s", first)
            : check(S, "inside_ball_and_box", true,
                    "every example within eps (largest perturbation %.4f x eps) and inside [0,1]", (double)worst);
    }
    /* 3. non-increasing in eps, per attack. */
    {
        int bad = 0, compared = 0;
        char first[200] = "";
        for (int i = 0; i < nruns; i++)
            for (int j = 0; j < nruns; j++) {
                if (runs[i].extra || runs[j].extra || strcmp(runs[i].name, runs[j].name) != 0) continue;
                if (!(runs[i].cfg.eps < runs[j].cfg.eps)) continue;
                compared++;
                if (runs[j].res.robust > runs[i].res.robust && !bad++)
                    snprintf(first, sizeof first, "%s: robust accuracy rises from %.2f%% at eps %g to %.2f%% at eps %g (a weak attack?)",
                             runs[i].name, 100 * acc_of(&runs[i].res), (double)runs[i].cfg.eps,
                             100 * acc_of(&runs[j].res), (double)runs[j].cfg.eps);
            }
        if (compared)
            bad ? check(S, "monotone_in_eps", false, "%s", first)
                : check(S, "monotone_in_eps", true, "robust accuracy never rises with eps (%d pairs)", compared);
    }
    /* 4. PGD <= FGSM at each eps (FGSM is run for the check if it was not asked for). */
    {
        int bad = 0, compared = 0;
        char first[200] = "";
        for (int i = 0; i < nruns; i++) {
            const at_attack_config *c = &runs[i].cfg;
            if (c->kind != AT_ATTACK_PGD || c->loss != AT_ATTACK_LOSS_CE || c->target != AT_TARGET_NONE) continue;
            eval_run *f = NULL;
            for (int j = 0; j < nruns && !f; j++)
                if (runs[j].cfg.kind == AT_ATTACK_FGSM && runs[j].cfg.norm == c->norm && runs[j].cfg.eps == c->eps &&
                    runs[j].cfg.target == AT_TARGET_NONE && runs[j].cfg.loss == AT_ATTACK_LOSS_CE)
                    f = &runs[j];
            eval_run tmp;
            if (!f && extra_runs) {
                memset(&tmp, 0, sizeof tmp);
                at_attack_from_name(c->norm == AT_NORM_L2 ? "fgsm-l2" : "fgsm", &tmp.cfg);
                tmp.name = at_attack_name(&tmp.cfg);
                tmp.cfg.eps = c->eps;
                tmp.cfg.batch = c->batch;
                tmp.cfg.attack_all = c->attack_all;
                if (!run_one(net, ds, n, &tmp, true)) return false;
                f = &tmp;
            }
            if (!f) continue;
            compared++;
            if (runs[i].res.robust > f->res.robust && !bad++)
                snprintf(first, sizeof first, "%s at eps %g leaves %.2f%%, FGSM %.2f%%", runs[i].name, (double)c->eps,
                         100 * acc_of(&runs[i].res), 100 * acc_of(&f->res));
        }
        if (compared)
            bad ? check(S, "pgd_below_fgsm", false, "%s", first)
                : check(S, "pgd_below_fgsm", true, "PGD is at least as strong as FGSM at every eps (%d)", compared);
    }
    /* 5. The ensemble <= each member and every other attack at the same eps and norm. */
    {
        int bad = 0, compared = 0;
        char first[200] = "";
        for (int i = 0; i < nruns; i++) {
            const at_attack_result *a = &runs[i].res;
            if (runs[i].cfg.kind != AT_ATTACK_AUTO) continue;
            for (int k = 0; k < a->nmembers; k++) {
                compared++;
                if (a->robust > a->members[k].robust && !bad++)
                    snprintf(first, sizeof first, "auto at eps %g leaves %d robust, its member %s %d",
                             (double)runs[i].cfg.eps, a->robust, a->members[k].name, a->members[k].robust);
            }
            for (int j = 0; j < nruns; j++) {
                if (j == i || runs[j].cfg.eps != runs[i].cfg.eps || runs[j].cfg.norm != runs[i].cfg.norm) continue;
                if (runs[j].cfg.target != AT_TARGET_NONE && runs[j].cfg.target != AT_TARGET_TOP) continue;
                compared++;
                if (a->robust > runs[j].res.robust && !bad++)
                    snprintf(first, sizeof first, "auto at eps %g leaves %.2f%% but %s %.2f%%: the ensemble missed examples %s found",
                             (double)runs[i].cfg.eps, 100 * acc_of(a), runs[j].name, 100 * acc_of(&runs[j].res), runs[j].name);
            }
        }
        if (compared)
            bad ? check(S, "ensemble_not_weaker", false, "%s", first)
                : check(S, "ensemble_not_weaker", true,
                        "auto is at least as strong as each member and every other attack (%d comparisons)", compared);
    }
    /* 6. Gradient masking: zero or NaN input gradients; Square beating the gradient attacks. */
    {
        int zero = 0, nonfinite = 0, attacked = 0;
        for (int i = 0; i < nruns; i++)
            if (is_gradient_attack(&runs[i].cfg) || runs[i].cfg.kind == AT_ATTACK_AUTO) {
                zero = runs[i].res.zero_grad > zero ? runs[i].res.zero_grad : zero;
                nonfinite = runs[i].res.nonfinite > nonfinite ? runs[i].res.nonfinite : nonfinite;
                attacked = 1;
            }
        if (attacked)
            check(S, "gradients_nonzero_finite", zero == 0 && nonfinite == 0,
                  "%d samples with an all-zero input gradient, %d with NaN/inf (largest count over the runs)%s", zero,
                  nonfinite, zero || nonfinite ? ": possible gradient masking; trust Square and the DLR/CW losses more" : "");
        int bad = 0, compared = 0;
        char first[240] = "";
        for (int i = 0; i < nruns; i++) {
            const at_attack_result *a = &runs[i].res;
            if (runs[i].cfg.kind == AT_ATTACK_AUTO && a->nmembers == 3) {
                compared++;
                int extra = a->members[1].robust - a->members[2].robust;
                if (extra > 0.002 * a->samples && !bad++)
                    snprintf(first, sizeof first, "at eps %g Square fooled %d samples (%.2f%%) that APGD-CE and APGD-T could not: possible gradient masking",
                             (double)runs[i].cfg.eps, extra, 100.0 * extra / a->samples);
            }
            if (runs[i].cfg.kind != AT_ATTACK_SQUARE) continue;
            /* Square against the strongest gradient attack at its eps (AutoAttack's check:
             * flag when it is lower by more than 0.2% of the samples). */
            const eval_run *strongest = NULL;
            for (int j = 0; j < nruns; j++) {
                const at_attack_config *g = &runs[j].cfg;
                if ((!is_gradient_attack(g) && g->kind != AT_ATTACK_AUTO) || g->eps != runs[i].cfg.eps ||
                    g->norm != AT_NORM_LINF || (g->target != AT_TARGET_NONE && g->target != AT_TARGET_TOP))
                    continue;
                if (!strongest || runs[j].res.robust < strongest->res.robust) strongest = &runs[j];
            }
            if (!strongest) continue;
            compared++;
            /* Against AutoAttack's members 0.2% of the samples is already telling; PGD and FGSM
             * alone are weaker, so Square may beat them by noise: allow 1% there. */
            double allowed = strongest->cfg.kind == AT_ATTACK_AUTO || strongest->cfg.kind == AT_ATTACK_APGD
                                 ? 0.002 * a->samples : fmax(1.0, 0.01 * a->samples);
            int gap = strongest->res.robust - a->robust;
            if (gap > allowed && !bad++)
                snprintf(first, sizeof first, "at eps %g Square leaves %.2f%%, below the best gradient attack (%s, %.2f%%): possible gradient masking",
                         (double)runs[i].cfg.eps, 100 * acc_of(a), strongest->name, 100 * acc_of(&strongest->res));
        }
        if (compared)
            bad ? check(S, "square_not_stronger", false, "%s", first)
                : check(S, "square_not_stronger", true,
                        "the black-box Square attack does not beat the gradient attacks (%d comparisons)", compared);
    }
    /* 7. An unbounded attack (eps = 1 covers [0,1]) drives accuracy to about 0. */
    if (extra_runs) {
        eval_run u;
        memset(&u, 0, sizeof u);
        at_attack_from_name("pgd", &u.cfg);
        u.name = "pgd";
        u.cfg.eps = 1.0f;
        u.cfg.steps = 10;
        u.cfg.batch = runs[0].cfg.batch;
        if (!run_one(net, ds, n, &u, true)) return false;
        check(S, "unbounded_eps_breaks_model", acc_of(&u.res) < 0.10,
              "PGD-10 with eps = 1 (the whole [0,1] box) leaves %.2f%% (expected about 0)", 100 * acc_of(&u.res));
    }
    return true;
}

static int eval_attacks(at_net *net, at_dataset *ds, const char *path, const char *data_source,
                        const char *split, int first, int n, const atk_cli_settings *set,
                        bool json, bool sanity_runs, bool strict, const char *data_name) {
    float eps[ATK_CLI_MAX];
    int neps;
    if (!cli_parse_eps("eval", set->eps, eps, ATK_CLI_MAX, &neps)) return EXIT_USAGE;
    at_attack_config cfgs[ATK_CLI_MAX];
    int ncfg;
    int32_t target_class;
    if (!atk_cli_configs("eval", set, at_net_out_size(net), cfgs, ATK_CLI_MAX, &ncfg, &target_class))
        return EXIT_USAGE;
    int32_t *targets = NULL;
    if (target_class >= 0) {
        targets = malloc(sizeof(int32_t) * (size_t)n);
        if (!targets) return EXIT_RUN_FAILED;
        for (int i = 0; i < n; i++) targets[i] = target_class;
    }
    int nruns = ncfg * neps;
    eval_run *runs = calloc((size_t)nruns, sizeof *runs);
    if (!runs) {
        free(targets);
        return EXIT_RUN_FAILED;
    }
    int status = EXIT_RUN_FAILED;
    at_eval_result clean;
    if (at_evaluate(net, ds, set->batch > 0 ? set->batch : 256, &clean) != AT_OK) {
        cli_error("eval", "evaluation failed", AT_ERR_ARG);
        goto done;
    }
    int clean_correct = (int)lround((double)clean.accuracy * n);
    if (!json) {
        if (first > 0)
            printf("%s (%s) on %s %s, samples %d to %d\n", path, at_net_spec(net), data_name, split,
                   first, first + n - 1);
        else
            printf("%s (%s) on %s %s, first %d sample%s\n", path, at_net_spec(net), data_name, split, n, cli_s(n));
        printf("clean accuracy %.2f%% (%d/%d)\n", 100.0 * clean.accuracy, clean_correct, n);
        printf("eps on the 0-1 pixel scale (eps x 255 on the 0-255 scale); robust = correct on the clean and the adversarial input\n\n");
        printf("%-10s %-5s %-8s %-7s %-16s %-8s %-11s %9s\n", "attack", "norm", "eps", "x255", "steps", "restarts",
               "robust acc", "time");
    }
    for (int a = 0; a < ncfg; a++)
        for (int e = 0; e < neps; e++) {
            eval_run *r = &runs[a * neps + e];
            r->cfg = cfgs[a];
            r->cfg.eps = eps[e];
            r->cfg.targets = targets;
            r->name = at_attack_name(&r->cfg);
            if (!run_one(net, ds, n, r, json)) goto done;
            if (!json) {
                char budget[48];
                atk_cli_budget_text(&r->cfg, &r->res, budget, sizeof budget);
                printf("%-10s %-5s %-8.4g %-7.3g %-16s %-8d %10.2f%% %8.1fs\n", r->name,
                       r->cfg.norm == AT_NORM_L2 ? "l2" : "linf", (double)eps[e], (double)eps[e] * 255.0, budget,
                       r->res.restarts, 100 * acc_of(&r->res), r->res.seconds);
                for (int k = 0; k < r->res.nmembers; k++)
                    printf("  after %-8s %39s %10.2f%% %8.1fs\n", r->res.members[k].name, "",
                           100.0 * r->res.members[k].robust / n, r->res.members[k].seconds);
                if (r->res.targeted)
                    printf("  target reached on %d of %d attacked samples (%.1f%%)\n", r->res.target_hits,
                           r->res.targeted, 100.0 * r->res.target_hits / r->res.targeted);
                fflush(stdout);
            }
        }
    sanity S = {cJSON_CreateArray(), cJSON_CreateArray(), 0, 0};
    if (!sanity_checks(net, ds, n, clean_correct, runs, nruns, sanity_runs, &S)) {
        cJSON_Delete(S.checks);
        cJSON_Delete(S.warnings);
        goto done;
    }
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "model", path);
        cJSON_AddStringToObject(o, "arch", at_net_spec(net));
        cJSON_AddStringToObject(o, "data", data_source);
        cJSON_AddStringToObject(o, "split", split);
        cJSON_AddNumberToObject(o, "first_sample", first);
        cJSON_AddNumberToObject(o, "samples", n);
        cJSON_AddStringToObject(o, "eps_scale", "0-1 pixels");
        cJSON_AddNumberToObject(o, "clean_accuracy", (double)clean_correct / n);
        cJSON *arr = cJSON_AddArrayToObject(o, "attacks");
        for (int i = 0; i < nruns; i++) {
            const eval_run *r = &runs[i];
            cJSON *a = cJSON_CreateObject();
            cJSON_AddStringToObject(a, "attack", r->name);
            cJSON_AddStringToObject(a, "norm", r->cfg.norm == AT_NORM_L2 ? "l2" : "linf");
            cJSON_AddNumberToObject(a, "eps", jfloat(r->cfg.eps));
            cJSON_AddNumberToObject(a, "steps", r->res.steps);
            cJSON_AddNumberToObject(a, "restarts", r->res.restarts);
            if (r->res.alpha > 0) cJSON_AddNumberToObject(a, "alpha", jfloat(r->res.alpha));
            if (r->cfg.kind == AT_ATTACK_AUTO)
                cJSON_AddNumberToObject(a, "square_queries", r->cfg.square_queries > 0 ? r->cfg.square_queries : 5000);
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
            cJSON_AddItemToArray(arr, a);
        }
        cJSON *san = cJSON_AddObjectToObject(o, "sanity");
        cJSON_AddBoolToObject(san, "passed", S.failed == 0);
        cJSON_AddItemToObject(san, "checks", S.checks);
        cJSON_AddItemToObject(san, "warnings", S.warnings);
        cli_print_json(o);
    } else {
        printf("\nsanity checks: %d passed, %d failed\n", S.passed, S.failed);
        int nchecks = cJSON_GetArraySize(S.checks);
        for (int i = 0; i < nchecks; i++) {
            cJSON *c = cJSON_GetArrayItem(S.checks, i);
            printf("  %-4s %-27s %s\n", cJSON_IsTrue(cJSON_GetObjectItem(c, "passed")) ? "ok" : "FAIL",
                   cJSON_GetObjectItem(c, "check")->valuestring, cJSON_GetObjectItem(c, "detail")->valuestring);
        }
        cJSON_Delete(S.checks);
        cJSON_Delete(S.warnings);
    }
    /* Warnings also go to stderr, so that they are seen even with --json. */
    fflush(stdout);
    if (S.failed) fprintf(stderr, "advtrain eval: warning: %d sanity check%s failed (see above)\n", S.failed, S.failed > 1 ? "s" : "");
    status = strict && S.failed ? EXIT_RUN_FAILED : 0;
done:
    free(runs);
    free(targets);
    return status;
}

int cmd_eval(int argc, char **argv) {
    const char *data_source = NULL, *model_spec = NULL, *split = "test";
    int batch = 256, threads = 0, samples = 0, offset = 0;
    bool json = false, strict = false, no_sanity = false;
    atk_cli_settings set;
    memset(&set, 0, sizeof set);
    cli_option opts[] = {
        {"data", OPT_STRING, &data_source, "SOURCE", "dataset (default: the one the model was trained on)", 1, 0},
        {"model", OPT_STRING, &model_spec, "NAME|SPEC", "architecture, for weight files without advtrain metadata (e.g. written by PyTorch)", 1, 0},
        {"split", OPT_STRING, &split, "test|train", "which split to evaluate (default test)", 1, 0},
        {"samples", OPT_INT, &samples, "N", "evaluate the first N samples only", 1, 100000000},
        {"offset", OPT_INT, &offset, "N", "skip the first N samples (with --samples: one shard of a split evaluation)", 0, 100000000},
        {"batch", OPT_INT, &batch, "N", "evaluation batch size (default 256; attacks: 1000)", 1, 65536},
        {"threads", OPT_INT, &threads, "N", "compute threads (default: all cores)", 1, 1024},
        {"json", OPT_FLAG, &json, NULL, "print one JSON object on stdout", 1, 0},
        {"attack", OPT_STRING, &set.attacks, "LIST", "robust accuracy under attacks: fgsm, pgd, pgd-l2, cw, apgd-ce, apgd-dlr, apgd-t, square, auto (comma-separated)", 1, 0},
        {"eps", OPT_STRING, &set.eps, "LIST", "attack radii on the 0-1 pixel scale, comma-separated (8/255 accepted)", 1, 0},
        {"norm", OPT_STRING, &set.norm, "linf|l2", "threat model (default linf; l2 turns pgd into pgd-l2, ...)", 1, 0},
        {"steps", OPT_INT, &set.steps, "K", "iterations of pgd/cw (default 20) and apgd/auto (default 100)", 1, 1000000},
        {"restarts", OPT_INT, &set.restarts, "R", "random restarts (default 1)", 1, 10000},
        {"alpha", OPT_FLOAT, &set.alpha, "A", "PGD step size (default 2.5*eps/steps)", 1e-9, 10},
        {"queries", OPT_INT, &set.queries, "Q", "queries of square and of auto's Square (default 5000)", 1, 10000000},
        {"target", OPT_STRING, &set.target, "T", "targeted attack: random, least-likely or a class number", 1, 0},
        {"seed", OPT_U64, &set.seed, "S", "random starts and Square's search (default 0)", 1, 0},
        {"all", OPT_FLAG, &set.all, NULL, "attack misclassified samples too (they never count as robust)", 1, 0},
        {"last-iterate", OPT_FLAG, &set.last_iterate, NULL, "pgd, cw: judge each sample's last iterate (as torchattacks) instead of stopping at the first iterate that fools the model", 1, 0},
        {"no-sanity", OPT_FLAG, &no_sanity, NULL, "skip the extra runs of the sanity checks (eps=0, FGSM, unbounded eps)", 1, 0},
        {"strict", OPT_FLAG, &strict, NULL, "exit with status 1 when a sanity check fails", 1, 0},
    };
    const char *positional[1] = {NULL};
    cli_command cmd = {"eval", "advtrain eval MODEL.safetensors [--data SOURCE] [--attack LIST --eps LIST] [--json]",
                       "Evaluate a saved model: accuracy (classification) or MSE (regression); with --attack,\n"
                       "robust accuracy under adversarial attacks (eps on the 0-1 pixel scale) with sanity checks.",
                       opts, (int)(sizeof opts / sizeof *opts), positional, 1, 0};
    int early = cli_start(&cmd, argc, argv);
    if (early >= 0) return early;
    if (strcmp(split, "test") != 0 && strcmp(split, "train") != 0) {
        fprintf(stderr, "advtrain eval: --split %s: use test or train\n", split);
        return EXIT_USAGE;
    }
    const char *attack_only[] = {"eps", "norm", "steps", "restarts", "alpha", "queries", "target", "seed", "all", "last-iterate", "no-sanity", "strict"};
    if (!set.attacks)
        for (size_t i = 0; i < sizeof attack_only / sizeof *attack_only; i++)
            if (cli_find(&cmd, attack_only[i])->seen) {
                fprintf(stderr, "advtrain eval: --%s needs --attack\n", attack_only[i]);
                return EXIT_USAGE;
            }
    if (set.attacks && !set.eps) {
        fprintf(stderr, "advtrain eval: --attack needs --eps (0-1 pixel scale, e.g. --eps 0.05,0.1 or 8/255)\n");
        return EXIT_USAGE;
    }
    if (set.attacks) {
        /* Usage errors before loading anything. */
        float eps[ATK_CLI_MAX];
        int neps, ncfg;
        at_attack_config cfgs[ATK_CLI_MAX];
        int32_t tc;
        if (!cli_parse_eps("eval", set.eps, eps, ATK_CLI_MAX, &neps)) return EXIT_USAGE;
        if (!atk_cli_configs("eval", &set, 1 << 30, cfgs, ATK_CLI_MAX, &ncfg, &tc)) return EXIT_USAGE;
        if (cli_find(&cmd, "batch")->seen) set.batch = batch;
    }
    const char *path = positional[0];
    if (threads > 0) at_set_threads(threads);

    at_net *net = NULL;
    at_st_file *file = NULL;
    at_data data;
    memset(&data, 0, sizeof data);
    int status = EXIT_RUN_FAILED;
    at_status s = at_st_read(path, &file);
    if (s != AT_OK) {
        cli_error("eval", "cannot read the model", s);
        return EXIT_RUN_FAILED;
    }
    if (!data_source) data_source = at_st_meta_get(file, "advtrain.data");
    if (!data_source) data_source = "fashion-mnist";
    if (!cli_load_data("eval", &data, data_source)) goto done;
    at_dataset *ds = strcmp(split, "train") == 0 ? &data.train : &data.test;
    if (offset >= ds->n) {
        fprintf(stderr, "advtrain eval: --offset %d: the %s split has only %d samples\n", offset, split, ds->n);
        status = EXIT_USAGE;
        goto done;
    }
    if (offset > 0 || (samples > 0 && samples < ds->n)) {
        int keep = ds->n - offset;
        if (samples > 0 && samples < keep) keep = samples;
        if ((s = at_dataset_keep_range(ds, offset, keep)) != AT_OK) {
            cli_error("eval", "selecting samples", s);
            goto done;
        }
    }
    if (model_spec) {
        s = at_net_from_spec(&net, model_spec, ds->c, ds->h, ds->w);
        if (s == AT_OK) s = at_net_load_weights(net, file, path);
    } else {
        s = at_model_load(&net, path, NULL);
    }
    if (s != AT_OK) {
        cli_error("eval", "cannot load the model", s);
        goto done;
    }
    bool regression = ds->targets != NULL;
    if (set.attacks) {
        if (regression) {
            fprintf(stderr, "advtrain eval: --attack needs a classification model and dataset; %s is regression\n", data_source);
            status = EXIT_USAGE;
            goto done;
        }
        status = eval_attacks(net, ds, path, data_source, split, offset, ds->n, &set, json, !no_sanity, strict,
                              data.name);
        goto done;
    }
    const char *untrained;
    if (at_net_untrained_statistics(net, &untrained))
        fprintf(stderr, "advtrain eval: warning: %s: BatchNorm running statistics were never trained (%s is 0): "
                        "eval mode normalises with mean 0 and variance 1\n", path, untrained);
    at_eval_result r;
    double start = cli_now();
    if ((s = at_evaluate(net, ds, batch, &r)) != AT_OK) {
        cli_error("eval", "evaluation failed", s);
        goto done;
    }
    double seconds = cli_now() - start;
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "model", path);
        cJSON_AddStringToObject(o, "arch", at_net_spec(net));
        cJSON_AddStringToObject(o, "data", data_source);
        cJSON_AddStringToObject(o, "split", split);
        cJSON_AddNumberToObject(o, "first_sample", offset);
        cJSON_AddNumberToObject(o, "samples", r.samples);
        if (regression)
            cJSON_AddNumberToObject(o, "mse", r.mse);
        else
            cJSON_AddNumberToObject(o, "clean_accuracy", r.accuracy);
        cJSON_AddNumberToObject(o, "loss", r.loss);
        cJSON_AddNumberToObject(o, "seconds", seconds);
        cli_print_json(o);
    } else if (regression) {
        printf("%s on %s %s (%d sample%s): mse %.5f\n", path, data.name, split, r.samples,
               cli_s(r.samples), (double)r.mse);
    } else {
        printf("%s on %s %s (%d sample%s): accuracy %.2f%%  loss %.4f\n", path, data.name, split,
               r.samples, cli_s(r.samples), 100.0 * r.accuracy, (double)r.loss);
    }
    status = 0;
done:
    at_net_free(net);
    at_st_free(file);
    at_data_free(&data);
    return status;
}
