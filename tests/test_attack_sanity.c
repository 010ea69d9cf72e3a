/* The sanity properties experts check on any attack implementation (FIELD.md), on a small
 * standard-trained model (tests/attack_model.h):
 *  - eps = 0 gives the clean accuracy and returns the inputs;
 *  - every example is inside the eps-ball (L-inf and L2) and [0,1], measured here again;
 *  - robust accuracy never rises with eps; PGD <= FGSM; more steps / restarts <= fewer;
 *  - PGD stopping a sample at its first fooling iterate is at least as strong as judging last
 *    iterates, and changes nothing for the samples never fooled;
 *  - a large eps drives accuracy below 10%, an unbounded one to 0;
 *  - targeted attacks reach their target on most samples (eps 0.3: random, least-likely and
 *    given targets, >= 75% for the iterative attacks);
 *  - gradient masking is visible: a model whose logits are scaled by 1e4 (same predictions, CE
 *    gradients underflow to exactly 0) gets flagged with zero gradients, CE-PGD fails on it,
 *    and Square and the scale-free DLR loss still break it;
 *  - dropping the finished samples' rows (atk_compact) keeps exactly the others, each row whole
 *    in every array;
 *  - the library's sanity checks (at_robustness_sanity) pass on honest runs without touching the
 *    model, fire on the masked model, and each fires on a result broken the way it looks for. */
#include "attack_model.h"
#include "attacks/attack.h"

/* Rows of two arrays of different widths, tagged with the row's first index; after compaction
 * the first `kept` rows must be the kept ones, each once, with both arrays' rows intact. */
static void check_compact(void) {
    enum { M = 37, W = 5 };
    at_rng rng;
    at_rng_seed(&rng, 7);
    for (int trial = 0; trial < 200; trial++) {
        const int m = trial % (M + 1);
        int32_t ids[M];
        float rows[M][W];
        uint8_t keep[M];
        int want = 0;
        for (int j = 0; j < m; j++) {
            ids[j] = j;
            for (int k = 0; k < W; k++) rows[j][k] = (float)(j * W + k);
            /* all kept, none kept, then random patterns */
            keep[j] = trial < M + 1 ? 1 : trial < 2 * (M + 1) ? 0 : at_rng_uniform(&rng) < 0.5;
            want += keep[j];
        }
        uint8_t kept_before[M];
        memcpy(kept_before, keep, sizeof keep);
        const atk_rows list[] = {{ids, sizeof(int32_t)}, {rows, sizeof(float) * W}};
        const int got = atk_compact(m, keep, list, 2);
        CHECK_MSG(got == want, "atk_compact: %d rows kept of %d, want %d", got, m, want);
        int seen[M] = {0};
        bool whole = true, only_kept = true, once = true;
        for (int j = 0; j < got && j < M; j++) {
            const int i = ids[j];
            only_kept = only_kept && i >= 0 && i < m && kept_before[i];
            if (i < 0 || i >= m) continue;
            once = once && seen[i]++ == 0;
            for (int k = 0; k < W; k++) whole = whole && rows[j][k] == (float)(i * W + k);
        }
        CHECK_MSG(only_kept && once && whole,
                  "atk_compact (m %d, trial %d): only kept rows %d, each once %d, rows whole %d", m, trial,
                  only_kept, once, whole);
    }
}

static void check_eps_sweep(at_net *net, const at_dataset *ds) {
    const float eps[] = {0.0f, 0.01f, 0.03f, 0.1f};
    const char *names[] = {"fgsm", "pgd", "cw", "fgsm-l2", "pgd-l2"};
    const int n = ds->n, D = at_dataset_sample_size(ds);
    float *adv = malloc(sizeof(float) * (size_t)n * D), *x = malloc(sizeof(float) * (size_t)n * D);
    int32_t *idx = malloc(sizeof(int32_t) * n), *y = malloc(sizeof(int32_t) * n);
    for (int i = 0; i < n; i++) idx[i] = i;
    at_dataset_batch(ds, idx, n, x, y, NULL);
    at_eval_result clean;
    CHECK_OK(at_evaluate(net, ds, 256, &clean));
    int robust[5][4];
    for (int a = 0; a < 5; a++) {
        bool l2 = strstr(names[a], "l2") != NULL;
        for (int e = 0; e < 4; e++) {
            float ee = l2 ? eps[e] * 20.0f : eps[e]; /* L2 radii comparable to the L-inf ones */
            at_attack_result r = am_attack(net, ds, names[a], ee, 0, adv, NULL);
            robust[a][e] = r.robust;
            CHECK_MSG(r.outside_ball == 0 && r.outside_box == 0, "%s eps %g: %d outside the ball, %lld outside [0,1]",
                      names[a], (double)ee, r.outside_ball, (long long)r.outside_box);
            double worst = 0;
            long outside = 0;
            for (int i = 0; i < n; i++) {
                double p = 0;
                for (int q = 0; q < D; q++) {
                    size_t at = (size_t)i * D + q;
                    double d = fabs((double)adv[at] - x[at]);
                    p = l2 ? p + d * d : fmax(p, d);
                    outside += !(adv[at] >= 0.0f && adv[at] <= 1.0f);
                }
                worst = fmax(worst, l2 ? sqrt(p) : p);
            }
            CHECK_MSG(worst <= ee + 1e-5 && outside == 0, "%s eps %g: largest perturbation %.7g, %ld pixels outside [0,1]",
                      names[a], (double)ee, worst, outside);
            if (e == 0) {
                CHECK_MSG(r.robust == (int)lround(clean.accuracy * n), "%s at eps 0: %d robust vs %d clean", names[a],
                          r.robust, (int)lround(clean.accuracy * n));
                CHECK_MSG(memcmp(adv, x, sizeof(float) * (size_t)n * D) == 0, "%s at eps 0 changed an input", names[a]);
            } else {
                CHECK_MSG(robust[a][e] <= robust[a][e - 1], "%s: robust %d at eps %g > %d at eps %g", names[a],
                          robust[a][e], (double)ee, robust[a][e - 1], (double)eps[e - 1]);
            }
            CHECK(r.zero_grad == 0 && r.nonfinite == 0);
        }
        printf("  %-8s robust %d %d %d %d of %d\n", names[a], robust[a][0], robust[a][1], robust[a][2], robust[a][3], n);
    }
    for (int e = 0; e < 4; e++) {
        CHECK_MSG(robust[1][e] <= robust[0][e], "PGD %d > FGSM %d at eps %g", robust[1][e], robust[0][e], (double)eps[e]);
        /* L2 PGD starts at a random point of the ball: on a nearly linear model one sample may
         * end up on the other side of FGSM's single full-length step */
        CHECK_MSG(robust[4][e] <= robust[3][e] + 1, "PGD-L2 %d > FGSM-L2 %d at eps %g", robust[4][e], robust[3][e],
                  (double)eps[e] * 20);
    }
    /* More steps and restarts are at least as strong (up to one sample of noise). */
    at_attack_result p10 = am_attack(net, ds, "pgd", 0.03f, 10, NULL, NULL);
    at_attack_result p40 = am_attack(net, ds, "pgd", 0.03f, 40, NULL, NULL);
    at_attack_config c;
    at_attack_from_name("pgd", &c);
    c.eps = 0.03f;
    c.steps = 10;
    c.restarts = 3;
    at_attack_result r3;
    CHECK_OK(at_attack_dataset(net, &c, ds, 0, NULL, NULL, &r3));
    printf("  pgd eps 0.03: 10 steps %d, 40 steps %d, 10 steps x 3 restarts %d\n", p10.robust, p40.robust, r3.robust);
    CHECK(p40.robust <= p10.robust + 1);
    CHECK(r3.robust <= p10.robust);
    free(adv);
    free(x);
    free(idx);
    free(y);
}

static void check_large_eps_and_targets(at_net *net, const at_dataset *ds) {
    at_attack_result big = am_attack(net, ds, "pgd", 0.3f, 0, NULL, NULL);
    at_attack_result all = am_attack(net, ds, "pgd", 1.0f, 10, NULL, NULL);
    printf("  pgd eps 0.3: %.2f%%, eps 1: %.2f%%\n", 100 * am_acc(&big), 100 * am_acc(&all));
    CHECK_MSG(am_acc(&big) < 0.10, "eps 0.3 leaves %.3f", am_acc(&big));
    CHECK_MSG(all.robust == 0, "an unbounded attack leaves %d robust", all.robust);

    const char *names[] = {"pgd", "cw", "apgd-ce", "apgd-dlr", "fgsm"};
    const at_attack_target modes[] = {AT_TARGET_RANDOM, AT_TARGET_LEAST_LIKELY, AT_TARGET_GIVEN};
    int32_t *given = malloc(sizeof(int32_t) * ds->n);
    for (int i = 0; i < ds->n; i++) given[i] = (ds->labels[i] + 3) % 10;
    for (int a = 0; a < 5; a++)
        for (int m = 0; m < 3; m++) {
            at_attack_config c;
            at_attack_result r;
            CHECK_OK(at_attack_from_name(names[a], &c));
            c.eps = 0.3f;
            c.target = modes[m];
            c.targets = given;
            if (c.kind == AT_ATTACK_PGD) c.steps = 100;
            if (c.kind == AT_ATTACK_APGD) c.steps = 100;
            CHECK_OK(at_attack_dataset(net, &c, ds, 0, NULL, NULL, &r));
            double hit = r.targeted ? (double)r.target_hits / r.targeted : 0;
            printf("  targeted %-8s mode %d: target reached on %d of %d (%.1f%%)\n", names[a], (int)modes[m], r.target_hits,
                   r.targeted, 100 * hit);
            CHECK(r.targeted == r.clean_correct);
            /* one signed step rarely lands on a given class: FGSM only needs to move towards it */
            CHECK_MSG(hit >= (c.kind == AT_ATTACK_FGSM ? 0.25 : 0.75), "%s mode %d reaches the target on %.1f%% only",
                      names[a], (int)modes[m], 100 * hit);
        }
    free(given);
}

/* The check of that name in the report, or NULL. */
static const at_sanity_check *find_check(const at_sanity_report *r, const char *name) {
    for (int i = 0; i < r->nchecks; i++)
        if (strcmp(r->checks[i].name, name) == 0) return &r->checks[i];
    return NULL;
}

/* Whether the named check is in the report with that outcome (printing it otherwise). */
static bool check_is(const at_sanity_report *r, const char *name, bool passed) {
    const at_sanity_check *c = find_check(r, name);
    if (c && c->passed == passed) return true;
    printf("  %s: %s\n", name, c ? c->detail : "not in the report");
    return false;
}

static at_sanity_run sanity_run(at_net *net, const at_dataset *ds, const char *name, float eps) {
    at_sanity_run r;
    memset(&r, 0, sizeof r);
    CHECK_OK(at_attack_from_name(name, &r.cfg));
    r.cfg.eps = eps;
    if (r.cfg.kind == AT_ATTACK_PGD) r.cfg.steps = 10;
    CHECK_OK(at_attack_dataset(net, &r.cfg, ds, 0, NULL, NULL, &r.res));
    return r;
}

/* Honest runs pass every check, with the extra runs, and leave parameters and buffers as they
 * were; then each check fires on a copy of the runs broken the way it looks for. */
static void check_library_sanity(at_net *net, const at_dataset *ds) {
    at_sanity_run runs[3] = {sanity_run(net, ds, "fgsm", 0.05f), sanity_run(net, ds, "pgd", 0.05f),
                             sanity_run(net, ds, "pgd", 0.1f)};
    const int clean = runs[0].res.clean_correct;
    const size_t np = at_net_num_params(net);
    float *before = malloc(sizeof(float) * np);
    memcpy(before, at_net_params(net), sizeof(float) * np);
    at_sanity_report rep;
    CHECK_OK(at_robustness_sanity(net, ds, 0, clean, runs, 3, true, &rep));
    CHECK_MSG(rep.failed == 0 && rep.nchecks == 6, "honest runs: %d checks, %d failed", rep.nchecks, rep.failed);
    const char *all[] = {"eps0_equals_clean", "inside_ball_and_box", "monotone_in_eps", "pgd_below_fgsm",
                         "gradients_nonzero_finite", "unbounded_eps_breaks_model"};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) CHECK_MSG(check_is(&rep, all[i], true), "%s", all[i]);
    CHECK_MSG(memcmp(before, at_net_params(net), sizeof(float) * np) == 0, "the checks changed the model");
    free(before);

    /* Broken copies, without extra runs. */
    at_sanity_run bad[3];
    memcpy(bad, runs, sizeof bad);
    bad[2].res.robust = bad[1].res.robust + 1; /* more robust at the larger eps */
    CHECK_OK(at_robustness_sanity(net, ds, 0, clean, bad, 3, false, &rep));
    CHECK(check_is(&rep, "monotone_in_eps", false) && check_is(&rep, "pgd_below_fgsm", true));
    memcpy(bad, runs, sizeof bad);
    bad[1].res.robust = bad[0].res.robust + 1; /* PGD weaker than FGSM */
    bad[0].res.outside_ball = 1;
    bad[2].res.zero_grad = 3;
    CHECK_OK(at_robustness_sanity(net, ds, 0, clean, bad, 3, false, &rep));
    CHECK(check_is(&rep, "pgd_below_fgsm", false) && check_is(&rep, "inside_ball_and_box", false) &&
          check_is(&rep, "gradients_nonzero_finite", false) && !find_check(&rep, "eps0_equals_clean"));
    memcpy(bad, runs, sizeof bad);
    bad[0].cfg.eps = 0.0f; /* an FGSM at eps 0 that lost a sample */
    bad[0].res.robust = clean - 1;
    CHECK_OK(at_robustness_sanity(net, ds, 0, clean, bad, 1, false, &rep));
    CHECK(check_is(&rep, "eps0_equals_clean", false));

    /* An ensemble that is weaker than a member, and whose Square member fooled many more. */
    at_sanity_run ens[2] = {runs[1], runs[1]};
    CHECK_OK(at_attack_from_name("auto", &ens[1].cfg));
    ens[1].cfg.eps = 0.05f;
    ens[1].res.nmembers = 3;
    const int n = ens[1].res.samples, hold = runs[1].res.robust;
    const int members[3] = {hold, hold, hold - n / 100 - 1};
    for (int k = 0; k < 3; k++) ens[1].res.members[k].robust = members[k];
    ens[1].res.robust = hold - n / 100 - 1;
    CHECK_OK(at_robustness_sanity(net, ds, 0, clean, ens, 2, false, &rep));
    CHECK(check_is(&rep, "ensemble_not_weaker", true) && check_is(&rep, "square_not_stronger", false));
    ens[1].res.robust = hold + 1;
    CHECK_OK(at_robustness_sanity(net, ds, 0, clean, ens, 2, false, &rep));
    CHECK(check_is(&rep, "ensemble_not_weaker", false));

    CHECK(at_robustness_sanity(net, ds, 0, clean, runs, 3, false, NULL) == AT_ERR_ARG);
    CHECK(at_robustness_sanity(net, ds, 0, ds->n + 1, runs, 3, false, &rep) == AT_ERR_ARG);
    CHECK(at_robustness_sanity(net, ds, 0, clean, NULL, 3, false, &rep) == AT_ERR_ARG);
}

static void check_masking(at_net *net, const at_dataset *ds) {
    /* Scale the last layer by 1e4: predictions and robustness are unchanged, but the softmax
     * saturates and cross-entropy gradients underflow to zero. */
    const at_param_info *w = at_net_find_tensor(net, "3.weight"), *b = at_net_find_tensor(net, "3.bias");
    CHECK(w && b);
    if (!w || !b) return;
    float *p = at_net_params(net);
    for (size_t i = 0; i < w->size; i++) p[w->offset + i] *= 1e4f;
    for (size_t i = 0; i < b->size; i++) p[b->offset + i] *= 1e4f;
    at_attack_result pgd = am_attack(net, ds, "pgd", 0.05f, 0, NULL, NULL);
    at_attack_result dlr = am_attack(net, ds, "apgd-dlr", 0.05f, 50, NULL, NULL);
    at_attack_config c;
    at_attack_from_name("square", &c);
    c.eps = 0.05f;
    c.steps = 1000;
    at_attack_result sq;
    CHECK_OK(at_attack_dataset(net, &c, ds, 0, NULL, NULL, &sq));
    printf("  logits x1e4: pgd-ce %d robust (%d zero gradients), apgd-dlr %d, square %d of %d\n", pgd.robust,
           pgd.zero_grad, dlr.robust, sq.robust, pgd.samples);
    CHECK_MSG(pgd.zero_grad > pgd.clean_correct / 2, "only %d of %d zero gradients flagged", pgd.zero_grad, pgd.clean_correct);
    CHECK_MSG(sq.robust < pgd.robust, "Square (%d) does not beat the masked CE-PGD (%d)", sq.robust, pgd.robust);
    CHECK_MSG(dlr.robust < pgd.robust, "the scale-free DLR loss (%d) does not beat the masked CE-PGD (%d)", dlr.robust,
              pgd.robust);
    /* The library's checks flag it: zero gradients, and Square ahead of the gradient attack. */
    at_sanity_run runs[2] = {{.res = pgd}, {.cfg = c, .res = sq}};
    CHECK_OK(at_attack_from_name("pgd", &runs[0].cfg));
    runs[0].cfg.eps = 0.05f;
    at_sanity_report rep;
    CHECK_OK(at_robustness_sanity(net, ds, 0, pgd.clean_correct, runs, 2, false, &rep));
    CHECK(check_is(&rep, "gradients_nonzero_finite", false) && check_is(&rep, "square_not_stronger", false));
    for (size_t i = 0; i < w->size; i++) p[w->offset + i] /= 1e4f;
    for (size_t i = 0; i < b->size; i++) p[b->offset + i] /= 1e4f;
}

/* PGD by default stops a sample at the first iterate that fools the model. Against the same
 * run judged on last iterates: every sample not fooled has the same example bit for bit (its
 * iterates do not depend on the others), every fooled one is misclassified at its example, at
 * least as many are fooled, and the fooled ones cost fewer passes. */
static void check_first_success(at_net *net, const at_dataset *ds) {
    const int n = ds->n, D = at_dataset_sample_size(ds);
    size_t total = (size_t)n * D;
    float *first = malloc(sizeof(float) * total), *last = malloc(sizeof(float) * total);
    int32_t *pf = malloc(sizeof(int32_t) * n), *pl = malloc(sizeof(int32_t) * n);
    const char *names[] = {"pgd", "cw", "pgd-l2"};
    for (size_t k = 0; k < sizeof names / sizeof *names; k++) {
        at_attack_config c;
        at_attack_result rf, rl;
        CHECK_OK(at_attack_from_name(names[k], &c));
        c.eps = c.norm == AT_NORM_L2 ? 0.5f : 0.03f; /* small enough that some samples hold */
        c.steps = 10;
        c.restarts = 2;
        c.attack_all = true;
        c.seed = 3;
        CHECK_OK(at_attack_dataset(net, &c, ds, n, first, pf, &rf));
        c.last_iterate = true;
        CHECK_OK(at_attack_dataset(net, &c, ds, n, last, pl, &rl));
        int fooled_f = 0, fooled_l = 0, same = 0;
        for (int i = 0; i < n; i++) {
            const size_t row = (size_t)i * D;
            fooled_f += pf[i] != ds->labels[i];
            fooled_l += pl[i] != ds->labels[i];
            if (pf[i] == ds->labels[i]) {
                same++;
                CHECK_MSG(memcmp(first + row, last + row, sizeof(float) * (size_t)D) == 0,
                          "%s: sample %d, never fooled, differs from its last iterate", names[k], i);
            }
        }
        printf("  %-10s first success: %d of %d fooled, %lld forwards; last iterate: %d fooled, %lld forwards\n",
               names[k], fooled_f, n, (long long)rf.forwards, fooled_l, (long long)rl.forwards);
        CHECK_MSG(fooled_f >= fooled_l && rf.robust <= rl.robust, "%s: first success fools %d, last iterate %d",
                  names[k], fooled_f, fooled_l);
        CHECK_MSG(fooled_f > 0 && same > 0, "%s: the check needs fooled (%d) and robust (%d) samples", names[k],
                  fooled_f, same);
        CHECK_MSG(rf.forwards < rl.forwards && rf.backwards < rl.backwards,
                  "%s: stopping fooled samples saved no passes (%lld vs %lld forwards)", names[k],
                  (long long)rf.forwards, (long long)rl.forwards);
    }
    free(first);
    free(last);
    free(pf);
    free(pl);
}

/* A shard of a split evaluation (index_base = its first sample's index) draws each sample's
 * random start as the whole run does: the shard's examples are the whole run's rows (up to the
 * float rounding of other batch shapes) with the same outcomes; without index_base they are not. */
static void check_index_base(at_net *net, const at_dataset *ds) {
    const int n = ds->n, half = n / 2, D = at_dataset_sample_size(ds);
    float *x = malloc(sizeof(float) * (size_t)n * D), *whole = malloc(sizeof(float) * (size_t)n * D);
    float *shard = malloc(sizeof(float) * (size_t)half * D);
    int32_t *y = malloc(sizeof(int32_t) * n), *idx = malloc(sizeof(int32_t) * n), *pw = malloc(sizeof(int32_t) * n);
    int32_t *ps = malloc(sizeof(int32_t) * half);
    for (int i = 0; i < n; i++) idx[i] = i;
    at_dataset_batch(ds, idx, n, x, y, NULL);
    at_attack_config c;
    CHECK_OK(at_attack_from_name("pgd", &c));
    c.eps = 0.05f;
    c.steps = 5;
    c.seed = 11;
    c.attack_all = true;
    at_attack_result r;
    CHECK_OK(at_attack_run(net, &c, x, y, n, whole, pw, &r));
    const size_t off = (size_t)(n - half) * D, count = (size_t)half * D;
    for (int with_base = 1; with_base >= 0; with_base--) {
        c.index_base = with_base ? n - half : 0;
        CHECK_OK(at_attack_run(net, &c, x + off, y + n - half, half, shard, ps, &r));
        size_t differ = 0;
        int outcome = 0;
        for (size_t q = 0; q < count; q++) differ += fabsf(shard[q] - whole[off + q]) > 1e-4f;
        for (int i = 0; i < half; i++) outcome += ps[i] != pw[n - half + i];
        if (with_base)
            CHECK_MSG(differ * 100 < count && outcome == 0, "shard with index_base: %zu of %zu values differ, %d predictions",
                      differ, count, outcome);
        else
            CHECK_MSG(differ * 10 > count, "shard without index_base: only %zu of %zu values differ (the check is blind)",
                      differ, count);
    }
    c.index_base = -1;
    CHECK(at_attack_check(&c, 10, NULL) == AT_ERR_ARG);
    free(x), free(whole), free(shard), free(y), free(idx), free(pw), free(ps);
}

int main(void) {
    at_set_threads(1);
    check_compact();
    at_data data;
    at_net *net = am_trained_model(&data, 200);
    if (net) {
        check_eps_sweep(net, &data.test);
        check_large_eps_and_targets(net, &data.test);
        check_library_sanity(net, &data.test);
        check_index_base(net, &data.test);
        check_masking(net, &data.test);
        check_first_success(net, &data.test);
    }
    at_net_free(net);
    at_data_free(&data);
    return tu_finish("test_attack_sanity");
}
