/* The sanity checks of a robustness evaluation (docs/robustness.md, "Sanity checks"): what FIELD.md
 * and AutoAttack's own flags ask of a credible robust accuracy, checked on the attack runs an
 * evaluation made and completed by a few cheap extra runs. One function per check; each says what
 * it catches. The checks read the runs and attack copies of the model's inputs only: the model is
 * left as it was (the attacks run in eval mode and restore the mode). */
#include "attack.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* What every check sees. */
typedef struct sanity_ctx {
    at_net *net;
    const at_dataset *ds;
    int n, clean_correct;
    const at_sanity_run *runs;
    int nruns;
    bool extra_runs;
    at_sanity_report *report;
} sanity_ctx;

static void add_check(at_sanity_report *r, const char *name, bool passed, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

static void add_check(at_sanity_report *r, const char *name, bool passed, const char *fmt, ...) {
    if (r->nchecks == AT_SANITY_MAX_CHECKS) return; /* more checks than slots: a bug caught in tests */
    at_sanity_check *c = &r->checks[r->nchecks++];
    c->name = name;
    c->passed = passed;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->detail, sizeof c->detail, fmt, ap);
    va_end(ap);
    if (passed)
        r->passed++;
    else
        r->failed++;
}

static double acc_of(const at_attack_result *r) { return r->samples ? (double)r->robust / r->samples : 0.0; }

static const char *name_of(const at_sanity_run *r) { return at_attack_name(&r->cfg); }

/* An extra run for a check, on the same samples, without progress reports. */
static at_status run_extra(const sanity_ctx *e, at_sanity_run *r) {
    r->cfg.progress = NULL;
    r->cfg.user = NULL;
    return at_attack_dataset(e->net, &r->cfg, e->ds, e->n, NULL, NULL, &r->res);
}

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
static void tally_report(at_sanity_report *r, const char *name, const tally *t, const char *ok_fmt) {
    if (!t->compared) return;
    if (t->bad)
        add_check(r, name, false, "%s", t->first);
    else
        add_check(r, name, true, ok_fmt, t->compared);
}

/* BatchNorm statistics that were never trained: eval mode then normalises with mean 0 and
 * variance 1, and every number would describe an untrained normalisation (a model saved before
 * its first training step, or buffers lost in a conversion). */
static void check_batchnorm(const sanity_ctx *e) {
    if (at_net_num_buffers(e->net) == 0) return;
    const char *first;
    int untrained = at_net_untrained_statistics(e->net, &first);
    if (untrained)
        add_check(e->report, "batchnorm_statistics_trained", false,
                  "the running statistics of %d BatchNorm layer%s were never updated (%s is 0)", untrained,
                  untrained > 1 ? "s" : "", first);
    else
        add_check(e->report, "batchnorm_statistics_trained", true,
                  "every BatchNorm layer's running statistics were trained");
}

static void eps0_compare(const sanity_ctx *e, tally *t, const at_sanity_run *r) {
    t->compared++;
    if (r->res.robust != e->clean_correct)
        tally_fail(t, "%s at eps 0: %d robust, %d correct on clean inputs", name_of(r), r->res.robust,
                   e->clean_correct);
}

/* Whether runs[i] is the first run of its attack. */
static bool first_of_its_attack(const at_sanity_run *runs, int i) {
    for (int j = 0; j < i; j++)
        if (strcmp(name_of(&runs[j]), name_of(&runs[i])) == 0) return false;
    return true;
}

/* eps = 0 leaves the clean accuracy: the runs at eps 0, and each attack at eps 0 with a small
 * budget (at most 5 iterations, 50 queries). Catches an attack that moves inputs it may not
 * move, a clean pass that disagrees with the attack's (a model in training mode, BatchNorm
 * updating), and a robust count that is not "correct on clean and adversarial". */
static at_status check_eps0(const sanity_ctx *e) {
    tally t = {0};
    for (int i = 0; i < e->nruns; i++)
        if (e->runs[i].cfg.eps == 0.0f) eps0_compare(e, &t, &e->runs[i]);
    for (int i = 0; e->extra_runs && i < e->nruns; i++) {
        if (!first_of_its_attack(e->runs, i)) continue;
        at_sanity_run z = e->runs[i];
        z.cfg.eps = 0.0f;
        z.cfg.alpha = 0.0f;
        at_attack_set_budget(&z.cfg, z.cfg.steps < 5 ? z.cfg.steps : 5, 50);
        z.cfg.restarts = 1;
        z.cfg.target_classes = 2;
        at_status s = run_extra(e, &z);
        if (s != AT_OK) return s;
        eps0_compare(e, &t, &z);
    }
    tally_report(e->report, "eps0_equals_clean", &t, "%d attack runs at eps 0 give the clean accuracy");
    return AT_OK;
}

/* Every example inside the eps-ball and [0,1]: catches a projection or clipping bug, which would
 * report a robust accuracy for a larger threat model than the one named. */
static void check_ball(const sanity_ctx *e) {
    tally t = {0};
    float worst = 0.0f;
    for (int i = 0; i < e->nruns; i++) {
        const at_sanity_run *r = &e->runs[i];
        float rel = r->cfg.eps > 0 ? r->res.max_perturbation / r->cfg.eps : 0.0f;
        worst = rel > worst ? rel : worst;
        if (r->res.outside_ball || r->res.outside_box)
            tally_fail(&t, "%s eps %g: %d examples outside the ball, %lld pixels outside [0,1]", name_of(r),
                       (double)r->cfg.eps, r->res.outside_ball, (long long)r->res.outside_box);
    }
    if (t.bad)
        add_check(e->report, "inside_ball_and_box", false, "%s", t.first);
    else if (e->nruns)
        add_check(e->report, "inside_ball_and_box", true,
                  "every example within eps (largest perturbation %.4f x eps) and inside [0,1]", (double)worst);
}

/* Robust accuracy never rises with eps, per attack: a rise means the attack fails to find at a
 * larger radius what it found at a smaller one (too few steps, a step size that does not scale). */
static void check_monotone(const sanity_ctx *e) {
    tally t = {0};
    const at_sanity_run *runs = e->runs;
    for (int i = 0; i < e->nruns; i++)
        for (int j = 0; j < e->nruns; j++) {
            if (strcmp(name_of(&runs[i]), name_of(&runs[j])) != 0 || !(runs[i].cfg.eps < runs[j].cfg.eps)) continue;
            t.compared++;
            if (runs[j].res.robust > runs[i].res.robust)
                tally_fail(&t, "%s: robust accuracy rises from %.2f%% at eps %g to %.2f%% at eps %g (a weak attack?)",
                           name_of(&runs[i]), 100 * acc_of(&runs[i].res), (double)runs[i].cfg.eps,
                           100 * acc_of(&runs[j].res), (double)runs[j].cfg.eps);
        }
    tally_report(e->report, "monotone_in_eps", &t, "robust accuracy never rises with eps (%d pairs)");
}

/* The untargeted CE FGSM run at c's eps and norm, if one was made. */
static const at_sanity_run *fgsm_run_like(const sanity_ctx *e, const at_attack_config *c) {
    for (int j = 0; j < e->nruns; j++) {
        const at_attack_config *f = &e->runs[j].cfg;
        if (f->kind == AT_ATTACK_FGSM && f->norm == c->norm && f->eps == c->eps && f->target == AT_TARGET_NONE &&
            f->loss == AT_ATTACK_LOSS_CE)
            return &e->runs[j];
    }
    return NULL;
}

/* FGSM at PGD's eps and norm, made for the check when none was. */
static at_status fgsm_extra(const sanity_ctx *e, const at_attack_config *c, at_sanity_run *f) {
    memset(f, 0, sizeof *f);
    at_attack_from_name("fgsm", &f->cfg);
    f->cfg.norm = c->norm;
    f->cfg.eps = c->eps;
    f->cfg.batch = c->batch;
    f->cfg.attack_all = c->attack_all;
    f->cfg.index_base = c->index_base;
    f->cfg.comm = c->comm;
    return run_extra(e, f);
}

/* PGD at least as strong as FGSM (its first step) at each eps: a PGD that is weaker has a broken
 * step, projection or random start, or meets gradients that mislead iterative attacks. */
static at_status check_pgd_fgsm(const sanity_ctx *e) {
    tally t = {0};
    for (int i = 0; i < e->nruns; i++) {
        const at_attack_config *c = &e->runs[i].cfg;
        if (c->kind != AT_ATTACK_PGD || c->loss != AT_ATTACK_LOSS_CE || c->target != AT_TARGET_NONE) continue;
        const at_sanity_run *f = fgsm_run_like(e, c);
        at_sanity_run made;
        if (!f && e->extra_runs) {
            at_status s = fgsm_extra(e, c, &made);
            if (s != AT_OK) return s;
            f = &made;
        }
        if (!f) continue;
        t.compared++;
        if (e->runs[i].res.robust > f->res.robust)
            tally_fail(&t, "%s at eps %g leaves %.2f%%, FGSM %.2f%%", name_of(&e->runs[i]), (double)c->eps,
                       100 * acc_of(&e->runs[i].res), 100 * acc_of(&f->res));
    }
    tally_report(e->report, "pgd_below_fgsm", &t, "PGD is at least as strong as FGSM at every eps (%d)");
    return AT_OK;
}

/* An ensemble (a run with members) no weaker than each member and than every other untargeted
 * or top-class attack at its eps and norm: catches a worst case that is not per sample. */
static void check_ensemble(const sanity_ctx *e) {
    tally t = {0};
    const at_sanity_run *runs = e->runs;
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
                           (double)runs[i].cfg.eps, 100 * acc_of(a), name_of(&runs[j]), 100 * acc_of(&runs[j].res),
                           name_of(&runs[j]));
        }
    }
    tally_report(e->report, "ensemble_not_weaker", &t,
                 "auto is at least as strong as each member and every other attack (%d comparisons)");
}

/* Zero or NaN input gradients in the attacks that follow them: a saturated softmax, shattered or
 * masked gradients, which make gradient attacks report robustness that is not there. */
static void check_gradients(const sanity_ctx *e) {
    int zero = 0, nonfinite = 0, attacked = 0;
    for (int i = 0; i < e->nruns; i++) {
        const at_sanity_run *r = &e->runs[i];
        if (!at_attack_uses_gradients(r->cfg.kind)) continue;
        zero = r->res.zero_grad > zero ? r->res.zero_grad : zero;
        nonfinite = r->res.nonfinite > nonfinite ? r->res.nonfinite : nonfinite;
        attacked = 1;
    }
    if (attacked)
        add_check(e->report, "gradients_nonzero_finite", zero == 0 && nonfinite == 0,
                  "%d samples with an all-zero input gradient, %d with NaN/inf (largest count over the runs)%s",
                  zero, nonfinite,
                  zero || nonfinite ? ": possible gradient masking; trust Square and the DLR/CW losses more" : "");
}

/* The gradient attack (auto included) with the fewest robust samples at r's eps, L-inf. */
static const at_sanity_run *strongest_gradient_run(const sanity_ctx *e, const at_sanity_run *r) {
    const at_sanity_run *strongest = NULL;
    for (int j = 0; j < e->nruns; j++) {
        const at_attack_config *g = &e->runs[j].cfg;
        if (!at_attack_uses_gradients(g->kind) || g->eps != r->cfg.eps || g->norm != AT_NORM_LINF ||
            (g->target != AT_TARGET_NONE && g->target != AT_TARGET_TOP))
            continue;
        if (!strongest || e->runs[j].res.robust < strongest->res.robust) strongest = &e->runs[j];
    }
    return strongest;
}

/* Inside auto: Square fooling more than 0.2% of the samples after APGD-CE and APGD-T
 * (AutoAttack's flag). */
static void square_in_auto(const at_sanity_run *r, tally *t) {
    const at_attack_result *a = &r->res;
    t->compared++;
    int extra = a->members[1].robust - a->members[2].robust;
    if (extra > 0.002 * a->samples)
        tally_fail(t, "at eps %g Square fooled %d samples (%.2f%%) that APGD-CE and APGD-T could not: possible gradient masking",
                   (double)r->cfg.eps, extra, 100.0 * extra / a->samples);
}

/* The gradient-free Square beating the gradient attacks: the gradients mislead them (masking),
 * so their robust accuracy is too high. */
static void check_square(const sanity_ctx *e) {
    tally t = {0};
    for (int i = 0; i < e->nruns; i++) {
        const at_sanity_run *r = &e->runs[i];
        const at_attack_result *a = &r->res;
        if (r->cfg.kind == AT_ATTACK_AUTO && a->nmembers == 3) square_in_auto(r, &t);
        if (at_attack_uses_gradients(r->cfg.kind)) continue;
        const at_sanity_run *strongest = strongest_gradient_run(e, r);
        if (!strongest) continue;
        t.compared++;
        /* Against AutoAttack's members 0.2% of the samples is already telling; PGD and FGSM
         * alone are weaker, so Square may beat them by noise: allow 1% there. */
        double allowed = strongest->cfg.kind == AT_ATTACK_AUTO || strongest->cfg.kind == AT_ATTACK_APGD
                             ? 0.002 * a->samples : fmax(1.0, 0.01 * a->samples);
        int gap = strongest->res.robust - a->robust;
        if (gap > allowed)
            tally_fail(&t, "at eps %g Square leaves %.2f%%, below the best gradient attack (%s, %.2f%%): possible gradient masking",
                       (double)r->cfg.eps, 100 * acc_of(a), name_of(strongest), 100 * acc_of(&strongest->res));
    }
    tally_report(e->report, "square_not_stronger", &t,
                 "the black-box Square attack does not beat the gradient attacks (%d comparisons)");
}

/* PGD-10 with eps = 1 (the whole [0,1] box) drives accuracy to about 0: a model that survives it
 * hides its gradients, or the attack is not reaching the inputs at all. */
static at_status check_unbounded(const sanity_ctx *e) {
    at_sanity_run u;
    memset(&u, 0, sizeof u);
    at_attack_from_name("pgd", &u.cfg);
    u.cfg.eps = 1.0f;
    u.cfg.steps = 10;
    if (e->nruns) {
        u.cfg.batch = e->runs[0].cfg.batch;
        u.cfg.index_base = e->runs[0].cfg.index_base;
        u.cfg.comm = e->runs[0].cfg.comm;
    }
    at_status s = run_extra(e, &u);
    if (s != AT_OK) return s;
    add_check(e->report, "unbounded_eps_breaks_model", acc_of(&u.res) < 0.10,
              "PGD-10 with eps = 1 (the whole [0,1] box) leaves %.2f%% (expected about 0)", 100 * acc_of(&u.res));
    return AT_OK;
}

at_status at_robustness_sanity(at_net *net, const at_dataset *ds, int n, int clean_correct,
                               const at_sanity_run *runs, int nruns, bool extra_runs, at_sanity_report *report) {
    if (!report) return at_fail(AT_ERR_ARG, "at_robustness_sanity: report is NULL");
    memset(report, 0, sizeof *report);
    if (!net || !ds || nruns < 0 || (nruns > 0 && !runs))
        return at_fail(AT_ERR_ARG, "at_robustness_sanity: a network, a dataset and the runs are needed");
    if (n <= 0 || n > ds->n) n = ds->n;
    if (clean_correct < 0 || clean_correct > n)
        return at_fail(AT_ERR_ARG, "at_robustness_sanity: clean_correct %d outside 0..%d", clean_correct, n);
    const sanity_ctx e = {net, ds, n, clean_correct, runs, nruns, extra_runs, report};
    check_batchnorm(&e);
    at_status s = check_eps0(&e);
    if (s != AT_OK) return s;
    check_ball(&e);
    check_monotone(&e);
    if ((s = check_pgd_fgsm(&e)) != AT_OK) return s;
    check_ensemble(&e);
    check_gradients(&e);
    check_square(&e);
    return extra_runs ? check_unbounded(&e) : AT_OK;
}
