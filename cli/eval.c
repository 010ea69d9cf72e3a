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

/* What the sanity checks look at: the runs made, and what they need for a few cheap extra runs. */
typedef struct eval_ctx {
    at_net *net;
    const at_dataset *ds;
    int n, clean_correct;
    eval_run *runs;
    int nruns;
    bool extra_runs;
    sanity *S;
} eval_ctx;

/* A check over many comparisons: how many were made, how many failed, the first failure. */
typedef struct tally {
    int compared, bad;
    char first[240];
} tally;

static void tally_fail(tally *t, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static void tally_fail(tally *t, const char *fmt, ...) {
    if (t->bad++) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->first, sizeof t->first, fmt, ap);
    va_end(ap);
}

/* The check, if anything was compared: its first failure, or ok_fmt with the count. */
static void tally_report(sanity *S, const char *name, const tally *t, const char *ok_fmt) {
    if (!t->compared) return;
    if (t->bad)
        check(S, name, false, "%s", t->first);
    else
        check(S, name, true, ok_fmt, t->compared);
}

/* 0. BatchNorm statistics that were never trained (eval mode then normalises with mean 0,
 *    variance 1): the numbers below would describe an untrained normalisation. */
static void check_batchnorm(const eval_ctx *e) {
    const char *first;
    int untrained = at_net_untrained_statistics(e->net, &first);
    if (at_net_num_buffers(e->net) == 0) return;
    if (untrained)
        check(e->S, "batchnorm_statistics_trained", false,
              "the running statistics of %d BatchNorm layer%s were never updated (%s is 0)", untrained,
              untrained > 1 ? "s" : "", first);
    else
        check(e->S, "batchnorm_statistics_trained", true, "every BatchNorm layer's running statistics were trained");
}

static void eps0_compare(const eval_ctx *e, tally *t, const eval_run *r) {
    t->compared++;
    if (r->res.robust != e->clean_correct)
        tally_fail(t, "%s at eps 0: %d robust, %d correct on clean inputs", r->name, r->res.robust, e->clean_correct);
}

/* Whether runs[i] is the first requested run of its attack. */
static bool first_of_its_attack(const eval_run *runs, int i) {
    for (int j = 0; j < i; j++)
        if (!runs[j].extra && strcmp(runs[j].name, runs[i].name) == 0) return false;
    return true;
}

/* 1. eps = 0 leaves clean accuracy: the runs at eps 0, and each attack at eps 0 with a small
 *    budget (at most 5 iterations, 50 queries). */
static bool check_eps0(const eval_ctx *e) {
    tally t = {0};
    for (int i = 0; i < e->nruns; i++)
        if (e->runs[i].cfg.eps == 0.0f) eps0_compare(e, &t, &e->runs[i]);
    for (int i = 0; e->extra_runs && i < e->nruns; i++) {
        if (e->runs[i].extra || !first_of_its_attack(e->runs, i)) continue;
        eval_run z = e->runs[i];
        z.cfg.eps = 0.0f;
        z.cfg.alpha = 0.0f;
        at_attack_set_budget(&z.cfg, z.cfg.steps < 5 ? z.cfg.steps : 5, 50);
        z.cfg.restarts = 1;
        z.cfg.target_classes = 2;
        if (!run_one(e->net, e->ds, e->n, &z, true)) return false;
        eps0_compare(e, &t, &z);
    }
    tally_report(e->S, "eps0_equals_clean", &t, "%d attack runs at eps 0 give the clean accuracy");
    return true;
}

/* 2. every example inside the ball and [0,1]. */
static void check_ball(const eval_ctx *e) {
    tally t = {0};
    float worst = 0.0f;
    for (int i = 0; i < e->nruns; i++) {
        const eval_run *r = &e->runs[i];
        float rel = r->cfg.eps > 0 ? r->res.max_perturbation / r->cfg.eps : 0.0f;
        worst = rel > worst ? rel : worst;
        if (r->res.outside_ball || r->res.outside_box)
            tally_fail(&t, "%s eps %g: %d examples outside the ball, %lld pixels outside [0,1]", r->name,
                       (double)r->cfg.eps, r->res.outside_ball, (long long)r->res.outside_box);
    }
    if (t.bad)
        check(e->S, "inside_ball_and_box", false, "%s", t.first);
    else
        check(e->S, "inside_ball_and_box", true,
              "every example within eps (largest perturbation %.4f x eps) and inside [0,1]", (double)worst);
}

/* 3. non-increasing in eps, per attack. */
static void check_monotone(const eval_ctx *e) {
    tally t = {0};
    const eval_run *runs = e->runs;
    for (int i = 0; i < e->nruns; i++)
        for (int j = 0; j < e->nruns; j++) {
            if (runs[i].extra || runs[j].extra || strcmp(runs[i].name, runs[j].name) != 0) continue;
            if (!(runs[i].cfg.eps < runs[j].cfg.eps)) continue;
            t.compared++;
            if (runs[j].res.robust > runs[i].res.robust)
                tally_fail(&t, "%s: robust accuracy rises from %.2f%% at eps %g to %.2f%% at eps %g (a weak attack?)",
                           runs[i].name, 100 * acc_of(&runs[i].res), (double)runs[i].cfg.eps,
                           100 * acc_of(&runs[j].res), (double)runs[j].cfg.eps);
        }
    tally_report(e->S, "monotone_in_eps", &t, "robust accuracy never rises with eps (%d pairs)");
}

/* The FGSM run at c's eps and norm, if one was asked for. */
static const eval_run *fgsm_run_like(const eval_ctx *e, const at_attack_config *c) {
    for (int j = 0; j < e->nruns; j++) {
        const at_attack_config *f = &e->runs[j].cfg;
        if (f->kind == AT_ATTACK_FGSM && f->norm == c->norm && f->eps == c->eps && f->target == AT_TARGET_NONE &&
            f->loss == AT_ATTACK_LOSS_CE)
            return &e->runs[j];
    }
    return NULL;
}

/* 4. PGD <= FGSM at each eps (FGSM is run for the check if it was not asked for). */
static bool check_pgd_fgsm(const eval_ctx *e) {
    tally t = {0};
    for (int i = 0; i < e->nruns; i++) {
        const at_attack_config *c = &e->runs[i].cfg;
        if (c->kind != AT_ATTACK_PGD || c->loss != AT_ATTACK_LOSS_CE || c->target != AT_TARGET_NONE) continue;
        const eval_run *f = fgsm_run_like(e, c);
        eval_run tmp;
        if (!f && e->extra_runs) {
            memset(&tmp, 0, sizeof tmp);
            at_attack_from_name("fgsm", &tmp.cfg);
            tmp.cfg.norm = c->norm;
            tmp.name = at_attack_name(&tmp.cfg);
            tmp.cfg.eps = c->eps;
            tmp.cfg.batch = c->batch;
            tmp.cfg.attack_all = c->attack_all;
            if (!run_one(e->net, e->ds, e->n, &tmp, true)) return false;
            f = &tmp;
        }
        if (!f) continue;
        t.compared++;
        if (e->runs[i].res.robust > f->res.robust)
            tally_fail(&t, "%s at eps %g leaves %.2f%%, FGSM %.2f%%", e->runs[i].name, (double)c->eps,
                       100 * acc_of(&e->runs[i].res), 100 * acc_of(&f->res));
    }
    tally_report(e->S, "pgd_below_fgsm", &t, "PGD is at least as strong as FGSM at every eps (%d)");
    return true;
}

/* 5. An ensemble (a run with members) <= each member and every other attack at the same eps
 *    and norm. */
static void check_ensemble(const eval_ctx *e) {
    tally t = {0};
    const eval_run *runs = e->runs;
    for (int i = 0; i < e->nruns; i++) {
        const at_attack_result *a = &runs[i].res;
        if (a->nmembers == 0) continue;
        for (int k = 0; k < a->nmembers; k++) {
            t.compared++;
            if (a->robust > a->members[k].robust)
                tally_fail(&t, "auto at eps %g leaves %d robust, its member %s %d", (double)runs[i].cfg.eps,
                           a->robust, a->members[k].name, a->members[k].robust);
        }
        for (int j = 0; j < e->nruns; j++) {
            if (j == i || runs[j].cfg.eps != runs[i].cfg.eps || runs[j].cfg.norm != runs[i].cfg.norm) continue;
            if (runs[j].cfg.target != AT_TARGET_NONE && runs[j].cfg.target != AT_TARGET_TOP) continue;
            t.compared++;
            if (a->robust > runs[j].res.robust)
                tally_fail(&t, "auto at eps %g leaves %.2f%% but %s %.2f%%: the ensemble missed examples %s found",
                           (double)runs[i].cfg.eps, 100 * acc_of(a), runs[j].name, 100 * acc_of(&runs[j].res),
                           runs[j].name);
        }
    }
    tally_report(e->S, "ensemble_not_weaker", &t,
                 "auto is at least as strong as each member and every other attack (%d comparisons)");
}

/* 6a. Gradient masking: zero or NaN input gradients in the attacks that follow them. */
static void check_gradients(const eval_ctx *e) {
    int zero = 0, nonfinite = 0, attacked = 0;
    for (int i = 0; i < e->nruns; i++) {
        const eval_run *r = &e->runs[i];
        if (!at_attack_uses_gradients(r->cfg.kind)) continue;
        zero = r->res.zero_grad > zero ? r->res.zero_grad : zero;
        nonfinite = r->res.nonfinite > nonfinite ? r->res.nonfinite : nonfinite;
        attacked = 1;
    }
    if (attacked)
        check(e->S, "gradients_nonzero_finite", zero == 0 && nonfinite == 0,
              "%d samples with an all-zero input gradient, %d with NaN/inf (largest count over the runs)%s", zero,
              nonfinite, zero || nonfinite ? ": possible gradient masking; trust Square and the DLR/CW losses more" : "");
}

/* The gradient attack (auto included) with the fewest robust samples at r's eps, L-inf. */
static const eval_run *strongest_gradient_run(const eval_ctx *e, const eval_run *r) {
    const eval_run *strongest = NULL;
    for (int j = 0; j < e->nruns; j++) {
        const at_attack_config *g = &e->runs[j].cfg;
        if (!at_attack_uses_gradients(g->kind) || g->eps != r->cfg.eps || g->norm != AT_NORM_LINF ||
            (g->target != AT_TARGET_NONE && g->target != AT_TARGET_TOP))
            continue;
        if (!strongest || e->runs[j].res.robust < strongest->res.robust) strongest = &e->runs[j];
    }
    return strongest;
}

/* 6b. Gradient masking: the gradient-free attack beating the gradient attacks. */
static void check_square(const eval_ctx *e) {
    tally t = {0};
    for (int i = 0; i < e->nruns; i++) {
        const eval_run *r = &e->runs[i];
        const at_attack_result *a = &r->res;
        if (r->cfg.kind == AT_ATTACK_AUTO && a->nmembers == 3) {
            t.compared++;
            int extra = a->members[1].robust - a->members[2].robust;
            if (extra > 0.002 * a->samples)
                tally_fail(&t, "at eps %g Square fooled %d samples (%.2f%%) that APGD-CE and APGD-T could not: possible gradient masking",
                           (double)r->cfg.eps, extra, 100.0 * extra / a->samples);
        }
        if (at_attack_uses_gradients(r->cfg.kind)) continue;
        /* Against the strongest gradient attack at its eps (AutoAttack's check: flag when it is
         * lower by more than 0.2% of the samples). */
        const eval_run *strongest = strongest_gradient_run(e, r);
        if (!strongest) continue;
        t.compared++;
        /* Against AutoAttack's members 0.2% of the samples is already telling; PGD and FGSM
         * alone are weaker, so Square may beat them by noise: allow 1% there. */
        double allowed = strongest->cfg.kind == AT_ATTACK_AUTO || strongest->cfg.kind == AT_ATTACK_APGD
                             ? 0.002 * a->samples : fmax(1.0, 0.01 * a->samples);
        int gap = strongest->res.robust - a->robust;
        if (gap > allowed)
            tally_fail(&t, "at eps %g Square leaves %.2f%%, below the best gradient attack (%s, %.2f%%): possible gradient masking",
                       (double)r->cfg.eps, 100 * acc_of(a), strongest->name, 100 * acc_of(&strongest->res));
    }
    tally_report(e->S, "square_not_stronger", &t,
                 "the black-box Square attack does not beat the gradient attacks (%d comparisons)");
}

/* 7. An unbounded attack (eps = 1 covers [0,1]) drives accuracy to about 0. */
static bool check_unbounded(const eval_ctx *e) {
    eval_run u;
    memset(&u, 0, sizeof u);
    at_attack_from_name("pgd", &u.cfg);
    u.name = "pgd";
    u.cfg.eps = 1.0f;
    u.cfg.steps = 10;
    u.cfg.batch = e->runs[0].cfg.batch;
    if (!run_one(e->net, e->ds, e->n, &u, true)) return false;
    check(e->S, "unbounded_eps_breaks_model", acc_of(&u.res) < 0.10,
          "PGD-10 with eps = 1 (the whole [0,1] box) leaves %.2f%% (expected about 0)", 100 * acc_of(&u.res));
    return true;
}

/* The checks of FIELD.md on the runs made (and a few cheap extra runs). */
static bool sanity_checks(const eval_ctx *e) {
    check_batchnorm(e);
    if (!check_eps0(e)) return false;
    check_ball(e);
    check_monotone(e);
    if (!check_pgd_fgsm(e)) return false;
    check_ensemble(e);
    check_gradients(e);
    check_square(e);
    return !e->extra_runs || check_unbounded(e);
}

/* What `advtrain eval` was asked for. */
typedef struct eval_options {
    const char *data_source, *model_spec, *split;
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
            r->name = at_attack_name(&r->cfg);
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
    printf("%-10s %-5s %-8.4g %-7.3g %-16s %-8d %10.2f%% %8.1fs\n", r->name, r->cfg.norm == AT_NORM_L2 ? "l2" : "linf",
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
    cJSON_AddStringToObject(a, "attack", r->name);
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

/* Prints the JSON object of an attack evaluation; takes over S's arrays. */
static void json_report(const eval_input *in, at_net *net, int clean_correct, const eval_run *runs, int nruns,
                        sanity *S) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "model", in->path);
    cJSON_AddStringToObject(o, "arch", at_net_spec(net));
    cJSON_AddStringToObject(o, "data", in->data_source);
    cJSON_AddStringToObject(o, "split", in->split);
    cJSON_AddNumberToObject(o, "first_sample", in->first);
    cJSON_AddNumberToObject(o, "samples", in->n);
    cJSON_AddStringToObject(o, "eps_scale", "0-1 pixels");
    cJSON_AddNumberToObject(o, "clean_accuracy", (double)clean_correct / in->n);
    cJSON *arr = cJSON_AddArrayToObject(o, "attacks");
    for (int i = 0; i < nruns; i++) cJSON_AddItemToArray(arr, json_run(&runs[i], in->n));
    cJSON *san = cJSON_AddObjectToObject(o, "sanity");
    cJSON_AddBoolToObject(san, "passed", S->failed == 0);
    cJSON_AddItemToObject(san, "checks", S->checks);
    cJSON_AddItemToObject(san, "warnings", S->warnings);
    cli_print_json(o);
}

/* Prints the checks as text; frees S's arrays. */
static void print_sanity(sanity *S) {
    printf("\nsanity checks: %d passed, %d failed\n", S->passed, S->failed);
    int nchecks = cJSON_GetArraySize(S->checks);
    for (int i = 0; i < nchecks; i++) {
        cJSON *c = cJSON_GetArrayItem(S->checks, i);
        printf("  %-4s %-27s %s\n", cJSON_IsTrue(cJSON_GetObjectItem(c, "passed")) ? "ok" : "FAIL",
               cJSON_GetObjectItem(c, "check")->valuestring, cJSON_GetObjectItem(c, "detail")->valuestring);
    }
    cJSON_Delete(S->checks);
    cJSON_Delete(S->warnings);
}

/* The clean pass, every run, the sanity checks and the report. */
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
    sanity S = {cJSON_CreateArray(), cJSON_CreateArray(), 0, 0};
    const eval_ctx e = {m->net, m->ds, in->n, clean_correct, runs, nruns, !o->no_sanity, &S};
    if (!sanity_checks(&e)) {
        cJSON_Delete(S.checks);
        cJSON_Delete(S.warnings);
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
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "model", path);
        cJSON_AddStringToObject(j, "arch", at_net_spec(m->net));
        cJSON_AddStringToObject(j, "data", m->data_source);
        cJSON_AddStringToObject(j, "split", o->split);
        cJSON_AddNumberToObject(j, "first_sample", o->offset);
        cJSON_AddNumberToObject(j, "samples", r.samples);
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
    const char *data_source = NULL, *model_spec = NULL, *split = "test";
    int batch = 256, threads = 0, samples = 0, offset = 0;
    bool json = false, strict = false, no_sanity = false;
    atk_cli_settings set;
    memset(&set, 0, sizeof set);
    atk_cli_help help;
    atk_cli_help_texts(&help, "robust accuracy under attacks, comma-separated: ");
    cli_option opts[] = {
        {"data", OPT_STRING, &data_source, "SOURCE", "dataset (default: the one the model was trained on)", 1, 0},
        {"model", OPT_STRING, &model_spec, "NAME|SPEC", "architecture, for weight files without advtrain metadata (e.g. written by PyTorch)", 1, 0},
        {"split", OPT_STRING, &split, "test|train", "which split to evaluate (default test)", 1, 0},
        {"samples", OPT_INT, &samples, "N", "evaluate the first N samples only", 1, 100000000},
        {"offset", OPT_INT, &offset, "N", "skip the first N samples (with --samples: one shard of a split evaluation)", 0, 100000000},
        {"batch", OPT_INT, &batch, "N", "evaluation batch size (default 256; attacks: 1000)", 1, 65536},
        {"threads", OPT_INT, &threads, "N", "compute threads (default: all cores)", 1, 1024},
        {"json", OPT_FLAG, &json, NULL, "print one JSON object on stdout", 1, 0},
        {"attack", OPT_STRING, &set.attacks, "LIST", help.attack, 1, 0},
        {"eps", OPT_STRING, &set.eps, "LIST", "attack radii on the 0-1 pixel scale, comma-separated (8/255 accepted)", 1, 0},
        {"norm", OPT_STRING, &set.norm, "linf|l2", "threat model (default linf; l2 turns pgd into pgd-l2, ...)", 1, 0},
        {"steps", OPT_INT, &set.steps, "K", help.steps, 1, 1000000},
        {"restarts", OPT_INT, &set.restarts, "R", "random restarts (default 1)", 1, 10000},
        {"alpha", OPT_FLOAT, &set.alpha, "A", "PGD step size (default 2.5*eps/steps)", 1e-9, 10},
        {"queries", OPT_INT, &set.queries, "Q", "queries of square and of auto's Square (defaults: the q under --steps)", 1, 10000000},
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
    if (set.attacks && cli_find(&cmd, "batch")->seen) set.batch = batch;
    const eval_options o = {data_source, model_spec, split, batch, threads, samples,
                            offset, json, strict, no_sanity, set};
    if (!usage_ok(&cmd, &o)) return EXIT_USAGE;
    if (threads > 0) at_set_threads(threads);
    atk_cli_model m;
    int status = EXIT_RUN_FAILED;
    if (atk_cli_open("eval", &m, positional[0], data_source, model_spec, split))
        status = eval_model(&m, positional[0], &o);
    atk_cli_close(&m);
    return status;
}
