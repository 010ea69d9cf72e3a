/* The attack library against PyTorch on fixed weights, plus its contracts on small inputs:
 *  - FGSM and zero-start PGD reproduce tests/fixtures/smallcnn.safetensors (tools/make_fixtures.py);
 *  - FGSM-L2, PGD-L2, PGD on the CW margin, targeted PGD, and the CE / DLR / targeted-DLR losses
 *    with their input gradients reproduce tests/fixtures/attack_*.safetensors
 *    (tools/make_attack_fixtures.py), up to sign ties;
 *  - names round-trip, bad configurations fail with a message, eps = 0 changes nothing, every
 *    example is inside the ball and [0,1], results do not depend on the batch size, and the
 *    network's train/eval mode is restored. */
#include "advtrain.h"
#include "attacks/attack.h"
#include "testutil.h"

#include <math.h>
#include <stdint.h>

typedef struct fx {
    const char *name;
    at_st_file *file;
    at_net *net;
    int n, D, K;
    const float *x;
    int32_t y[64], t[64];
} fx;

static const at_st_tensor *need(const fx *f, const char *name) {
    const at_st_tensor *t = at_st_find(f->file, name);
    CHECK_MSG(t != NULL, "%s: tensor %s missing", f->name, name);
    return t;
}

static bool load(fx *f, const char *file, const char *spec) {
    memset(f, 0, sizeof *f);
    f->name = file;
    char rel[256];
    snprintf(rel, sizeof rel, "tests/fixtures/%s.safetensors", file);
    const char *path = tu_source_path(rel);
    at_status s = at_st_read(path, &f->file);
    CHECK_OK(s);
    if (s != AT_OK) return false;
    CHECK_OK(s = at_net_from_spec(&f->net, spec, 1, 28, 28));
    if (s != AT_OK) return false;
    CHECK_OK(s = at_net_load_weights(f->net, f->file, path));
    if (s != AT_OK) return false;
    const at_st_tensor *x = need(f, "x"), *y = need(f, "y");
    if (!x || !y) return false;
    f->n = (int)y->count;
    f->D = at_net_in_size(f->net);
    f->K = at_net_out_size(f->net);
    f->x = x->data;
    for (int i = 0; i < f->n; i++) f->y[i] = (int32_t)y->data[i];
    const at_st_tensor *t = at_st_find(f->file, "t");
    for (int i = 0; t && i < f->n; i++) f->t[i] = (int32_t)t->data[i];
    return true;
}

static void unload(fx *f) {
    at_net_free(f->net);
    at_st_free(f->file);
}

/* Elements differing by more than tol must be fewer than 0.1% (sign ties may flip). */
static void compare_examples(const fx *f, const char *what, const float *got, const at_st_tensor *ref, double tol) {
    if (!ref) return;
    size_t n = ref->count, bad = 0, first = 0;
    for (size_t i = 0; i < n; i++)
        if (!(fabs((double)got[i] - ref->data[i]) <= tol)) {
            if (!bad) first = i;
            bad++;
        }
    CHECK_MSG(bad * 1000 < n, "%s: %s: %zu of %zu elements differ by more than %g (first %zu: %.7g vs %.7g)", f->name,
              what, bad, n, tol, first, got[first], ref->data[first]);
    printf("  %-10s %-10s %zu of %zu elements differ (allowed: sign ties)\n", f->name, what, bad, n);
}

static at_attack_result run(fx *f, const char *name, float eps, void (*tweak)(at_attack_config *), float *adv) {
    at_attack_config c;
    at_attack_result r;
    memset(&r, 0, sizeof r);
    CHECK_OK(at_attack_from_name(name, &c));
    c.eps = eps;
    c.attack_all = true;   /* the references attack every sample */
    c.last_iterate = true; /* and return every sample's last iterate */
    if (tweak) tweak(&c);
    CHECK_OK(at_attack_run(f->net, &c, f->x, f->y, f->n, adv, NULL, &r));
    return r;
}

static int32_t *g_targets;
static void zero_start_10(at_attack_config *c) {
    c->random_start = false;
    c->steps = 10;
    c->alpha = 0.02f;
}
static void pgd_l2_ref(at_attack_config *c) {
    c->random_start = false;
    c->steps = 10;
    c->alpha = 0.3f;
}
static void targeted_ref(at_attack_config *c) {
    zero_start_10(c);
    c->target = AT_TARGET_GIVEN;
    c->targets = g_targets;
}

static void check_original_fixture(void) {
    fx f;
    if (!load(&f, "smallcnn", "smallcnn")) return;
    float *adv = malloc(sizeof(float) * (size_t)f.n * f.D);
    run(&f, "fgsm", 0.1f, NULL, adv);
    compare_examples(&f, "fgsm_x", adv, need(&f, "fgsm_x"), 1e-5);
    run(&f, "pgd", 0.1f, zero_start_10, adv);
    compare_examples(&f, "pgd_x", adv, need(&f, "pgd_x"), 1e-5);
    free(adv);
    unload(&f);
}

/* Loss values and input gradients of the attack losses (the internal per-sample loss). */
static void check_loss(fx *f, const char *tag, at_attack_loss loss, bool targeted) {
    char name[32];
    const at_st_tensor *ref = need(f, tag);
    snprintf(name, sizeof name, "%s_grad", tag);
    const at_st_tensor *rg = need(f, name);
    if (!ref || !rg) return;
    const float *z;
    CHECK_OK(at_net_forward(f->net, f->x, f->n, &z));
    float *dz = malloc(sizeof(float) * (size_t)f->n * f->K), *dx = malloc(sizeof(float) * (size_t)f->n * f->D);
    float vals[64];
    for (int i = 0; i < f->n; i++)
        vals[i] = atk_sample_loss(loss, targeted, z + (size_t)i * f->K, f->K, f->y[i], f->t[i], dz + (size_t)i * f->K);
    size_t worst = 0;
    double v = tu_max_violation(vals, ref->data, (size_t)f->n, 1e-5, 1e-4, &worst);
    CHECK_MSG(v <= 1.0, "%s: %s loss of sample %zu: %.7g, PyTorch %.7g", f->name, tag, worst, vals[worst], ref->data[worst]);
    CHECK_OK(at_net_backward(f->net, dz, AT_GRAD_INPUT, dx));
    double scale = 0;
    for (size_t i = 0; i < rg->count; i++) scale = fmax(scale, fabs(rg->data[i]));
    v = tu_max_violation(dx, rg->data, rg->count, 1e-4 * scale + 1e-9, 1e-3, &worst);
    CHECK_MSG(v <= 1.0, "%s: %s input gradient [%zu]: %.7g, PyTorch %.7g", f->name, name, worst, dx[worst], rg->data[worst]);
    free(dz);
    free(dx);
}

static void check_attack_fixture(const char *file, const char *spec) {
    fx f;
    if (!load(&f, file, spec)) return;
    float *adv = malloc(sizeof(float) * (size_t)f.n * f.D);
    at_attack_result r = run(&f, "fgsm-l2", 1.0f, NULL, adv);
    compare_examples(&f, "fgsm_l2_x", adv, need(&f, "fgsm_l2_x"), 1e-5);
    CHECK(r.outside_ball == 0 && r.outside_box == 0);
    r = run(&f, "pgd-l2", 1.5f, pgd_l2_ref, adv);
    compare_examples(&f, "pgd_l2_x", adv, need(&f, "pgd_l2_x"), 1e-4);
    CHECK(r.outside_ball == 0 && r.outside_box == 0 && r.max_perturbation <= 1.5f * 1.00001f);
    r = run(&f, "cw", 0.1f, zero_start_10, adv);
    compare_examples(&f, "cw_x", adv, need(&f, "cw_x"), 1e-5);
    g_targets = f.t;
    r = run(&f, "pgd", 0.1f, targeted_ref, adv);
    compare_examples(&f, "pgd_t_x", adv, need(&f, "pgd_t_x"), 1e-5);
    CHECK(r.targeted == f.n);
    check_loss(&f, "ce", AT_ATTACK_LOSS_CE, false);
    check_loss(&f, "dlr", AT_ATTACK_LOSS_DLR, false);
    check_loss(&f, "dlr_t", AT_ATTACK_LOSS_DLR, true);
    free(adv);
    unload(&f);
}

/* ------------------------------------------------------------ contracts */

static void check_names(void) {
    const char *names[] = {"fgsm", "fgsm-l2", "pgd", "pgd-l2", "cw", "cw-l2", "apgd-ce", "apgd-ce-l2",
                           "apgd-dlr", "apgd-dlr-l2", "apgd-t", "apgd-t-l2", "square", "auto", "auto-l2"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        at_attack_config c;
        CHECK_OK(at_attack_from_name(names[i], &c));
        CHECK_MSG(strcmp(at_attack_name(&c), names[i]) == 0, "%s round-trips as %s", names[i], at_attack_name(&c));
    }
    at_attack_config c;
    CHECK(at_attack_from_name("deepfool", &c) == AT_ERR_ARG);
    CHECK(strstr(at_error_message(), "apgd-ce") != NULL); /* lists the known ones */
    c = at_attack_defaults(AT_ATTACK_PGD);
    CHECK(c.steps == 20 && c.restarts == 1 && c.random_start && c.alpha == 0.0f);
    c = at_attack_defaults(AT_ATTACK_APGD);
    CHECK(c.steps == 100 && c.momentum == 0.75f && c.rho == 0.75f);
    c = at_attack_defaults(AT_ATTACK_SQUARE);
    CHECK(c.steps == 5000 && c.p_init == 0.8f);
}

/* The table of attacks as the front ends see it: every kind checks out with its defaults, and
 * budgets, checks and the gradient flag say what each kind takes. */
static void check_table(void) {
    char names[512], budget[48];
    at_attack_names(names, sizeof names);
    CHECK(strstr(names, "fgsm, fgsm-l2, pgd") == names && strstr(names, "square, auto, auto-l2") != NULL);
    for (int k = 0; k < AT_ATTACK_KIND_COUNT; k++) {
        at_attack_config c = at_attack_defaults((at_attack_kind)k), r;
        CHECK_MSG(at_attack_check(&c, 10, &r) == AT_OK, "kind %d: %s", k, at_error_message());
        CHECK(at_attack_uses_gradients((at_attack_kind)k) == (k != AT_ATTACK_SQUARE));
    }
    CHECK(!at_attack_uses_gradients(AT_ATTACK_KIND_COUNT));
    const struct {
        const char *name;
        int iterations, queries;
        const char *budget;
    } cases[] = {{"fgsm", 7, 300, "1"}, {"pgd", 7, 300, "7"}, {"apgd-t", 7, 300, "9x7"}, {"square", 7, 300, "300q"},
                 {"auto", 7, 300, "7+9x7+300q"}, {"auto-l2", 0, 0, "100+9x100"}, {"apgd-t", 0, 0, "9x100"}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        at_attack_config c, r;
        CHECK_OK(at_attack_from_name(cases[i].name, &c));
        at_attack_set_budget(&c, cases[i].iterations, cases[i].queries);
        CHECK_OK(at_attack_check(&c, 10, &r));
        at_attack_budget_text(&r, budget, sizeof budget);
        CHECK_MSG(strcmp(budget, cases[i].budget) == 0, "%s: budget %s, want %s", cases[i].name, budget, cases[i].budget);
    }
    at_attack_config c, r;
    at_attack_from_name("pgd", &c);
    c.eps = 0.1f;
    CHECK_OK(at_attack_check(&c, 10, &r));
    CHECK(r.steps == 20 && r.alpha == 2.5f * 0.1f / 20.0f && c.alpha == 0.0f);
    at_attack_from_name("fgsm", &c);
    c.eps = 0.1f;
    CHECK_OK(at_attack_check(&c, 10, &r));
    CHECK(r.steps == 1 && r.alpha == 0.1f);
    at_attack_from_name("square", &c);
    c.norm = AT_NORM_L2;
    CHECK(at_attack_check(&c, 10, NULL) == AT_ERR_UNSUPPORTED && strstr(at_error_message(), "L-inf only"));
    CHECK(strcmp(at_attack_name(&c), "square-l2") == 0);
    at_attack_from_name("auto", &c);
    c.target = AT_TARGET_RANDOM;
    CHECK(at_attack_check(&c, 10, NULL) == AT_ERR_ARG && strstr(at_error_message(), "no target"));
    at_attack_from_name("apgd-t", &c);
    CHECK(at_attack_check(&c, 3, NULL) == AT_ERR_ARG && strstr(at_error_message(), "4 classes"));
    c.target = AT_TARGET_GIVEN; /* the targets array is checked against the samples, when they run */
    CHECK_OK(at_attack_check(&c, 10, NULL));
}

static void check_errors(fx *f) {
    at_attack_config c = at_attack_defaults(AT_ATTACK_PGD);
    at_attack_result r;
    c.eps = -0.1f;
    CHECK(at_attack_run(f->net, &c, f->x, f->y, f->n, NULL, NULL, &r) == AT_ERR_ARG);
    CHECK(strstr(at_error_message(), "eps") != NULL);
    c.eps = NAN;
    CHECK(at_attack_run(f->net, &c, f->x, f->y, f->n, NULL, NULL, &r) == AT_ERR_ARG);
    c = at_attack_defaults(AT_ATTACK_SQUARE);
    c.eps = 0.1f;
    c.norm = AT_NORM_L2;
    CHECK(at_attack_run(f->net, &c, f->x, f->y, f->n, NULL, NULL, &r) == AT_ERR_UNSUPPORTED);
    c = at_attack_defaults(AT_ATTACK_PGD);
    c.eps = 0.1f;
    c.target = AT_TARGET_GIVEN; /* without targets */
    CHECK(at_attack_run(f->net, &c, f->x, f->y, f->n, NULL, NULL, &r) == AT_ERR_ARG);
    int32_t bad[64];
    for (int i = 0; i < f->n; i++) bad[i] = 10;
    c.targets = bad;
    CHECK(at_attack_run(f->net, &c, f->x, f->y, f->n, NULL, NULL, &r) == AT_ERR_ARG);
    c = at_attack_defaults(AT_ATTACK_PGD);
    c.eps = 0.1f;
    CHECK(at_attack_run(f->net, &c, f->x, f->y, 0, NULL, NULL, &r) == AT_ERR_ARG);
    int32_t ybad[64];
    memcpy(ybad, f->y, sizeof ybad);
    ybad[0] = -1;
    CHECK(at_attack_run(f->net, &c, f->x, ybad, f->n, NULL, NULL, &r) == AT_ERR_ARG);
    /* DLR needs at least 3 classes; the targeted one 4. */
    at_net *two;
    CHECK_OK(at_net_from_spec(&two, "flatten,linear:3", 1, 28, 28));
    at_net_init(two, 1);
    c = at_attack_defaults(AT_ATTACK_APGD);
    c.eps = 0.1f;
    c.loss = AT_ATTACK_LOSS_DLR;
    c.target = AT_TARGET_TOP;
    int32_t y3[64] = {0};
    CHECK(at_attack_run(two, &c, f->x, y3, f->n, NULL, NULL, &r) == AT_ERR_ARG);
    CHECK(strstr(at_error_message(), "4 classes") != NULL);
    at_net_free(two);
}

/* Every attack: eps 0 returns the inputs; examples inside the ball and the box; the same
 * result for every batch size; train mode restored. */
static void check_contracts(fx *f) {
    const char *names[] = {"fgsm", "pgd", "pgd-l2", "cw", "apgd-ce", "apgd-dlr", "apgd-t", "apgd-ce-l2", "square", "auto"};
    size_t total = (size_t)f->n * f->D;
    float *a = malloc(sizeof(float) * total), *b = malloc(sizeof(float) * total);
    int32_t pa[64], pb[64];
    for (size_t k = 0; k < sizeof names / sizeof *names; k++) {
        at_attack_config c;
        at_attack_result r, r2;
        CHECK_OK(at_attack_from_name(names[k], &c));
        c.attack_all = true;
        if (c.kind == AT_ATTACK_SQUARE) c.steps = 300;
        c.square_queries = 300;
        if (c.kind == AT_ATTACK_APGD || c.kind == AT_ATTACK_AUTO) c.steps = 20;
        c.target_classes = 3;
        c.seed = 7;
        /* eps = 0 */
        c.eps = 0.0f;
        CHECK_OK(at_attack_run(f->net, &c, f->x, f->y, f->n, a, NULL, &r));
        CHECK_MSG(memcmp(a, f->x, sizeof(float) * total) == 0, "%s at eps 0 changed the inputs", names[k]);
        CHECK_MSG(r.robust == r.clean_correct, "%s at eps 0: %d robust, %d clean", names[k], r.robust, r.clean_correct);
        /* inside the ball and the box, independent of the batch size, eval mode */
        c.eps = c.norm == AT_NORM_L2 ? 2.0f : 0.15f;
        at_net_set_training(f->net, true);
        c.batch = 3;
        CHECK_OK(at_attack_run(f->net, &c, f->x, f->y, f->n, a, pa, &r));
        CHECK_MSG(at_net_is_training(f->net), "%s did not restore train mode", names[k]);
        at_net_set_training(f->net, false);
        c.batch = 0;
        CHECK_OK(at_attack_run(f->net, &c, f->x, f->y, f->n, b, pb, &r2));
        CHECK_MSG(r.outside_ball == 0 && r.outside_box == 0, "%s: %d outside the ball, %lld pixels outside [0,1]",
                  names[k], r.outside_ball, (long long)r.outside_box);
        double worst = 0;
        size_t outside = 0;
        for (int i = 0; i < f->n; i++) {
            double p = 0;
            for (int q = 0; q < f->D; q++) {
                size_t at = (size_t)i * f->D + q;
                double d = fabs((double)b[at] - f->x[at]);
                p = c.norm == AT_NORM_L2 ? p + d * d : fmax(p, d);
                outside += !(b[at] >= 0.0f && b[at] <= 1.0f);
            }
            if (c.norm == AT_NORM_L2) p = sqrt(p);
            worst = fmax(worst, p);
        }
        CHECK_MSG(worst <= c.eps + 1e-5, "%s: perturbation %.7g > eps %g", names[k], worst, (double)c.eps);
        CHECK_MSG(outside == 0, "%s: %zu pixels outside [0,1]", names[k], outside);
        /* batch 3 vs one batch: the same examples (forward passes may round differently in the
         * last bits across batch shapes, so allow a tiny difference) */
        size_t diff = 0;
        for (size_t q = 0; q < total; q++) diff += fabsf(a[q] - b[q]) > 1e-4f;
        CHECK_MSG(diff * 100 < total, "%s: batch size 3 vs %d changes %zu of %zu values", names[k], f->n, diff, total);
        CHECK_MSG(r.robust == r2.robust, "%s: batch size changes the robust count (%d vs %d)", names[k], r.robust, r2.robust);
        /* same seed, same result */
        CHECK_OK(at_attack_run(f->net, &c, f->x, f->y, f->n, a, NULL, &r));
        CHECK_MSG(memcmp(a, b, sizeof(float) * total) == 0, "%s is not deterministic for a seed", names[k]);
        CHECK(r.forwards > 0);
        CHECK(c.kind == AT_ATTACK_SQUARE ? r.backwards == 0 : r.backwards > 0);
    }
    free(a);
    free(b);
}

/* Two threads split every batch: the same examples as one thread (up to float rounding). */
static void check_threads(fx *f) {
    size_t total = (size_t)f->n * f->D;
    float *a = malloc(sizeof(float) * total), *b = malloc(sizeof(float) * total);
    at_attack_config c;
    at_attack_result r1, r2;
    CHECK_OK(at_attack_from_name("apgd-ce", &c));
    c.eps = 0.1f;
    c.steps = 20;
    c.attack_all = true;
    at_set_threads(2);
    CHECK_OK(at_attack_run(f->net, &c, f->x, f->y, f->n, a, NULL, &r2));
    at_set_threads(1);
    CHECK_OK(at_attack_run(f->net, &c, f->x, f->y, f->n, b, NULL, &r1));
    size_t diff = 0;
    for (size_t q = 0; q < total; q++) diff += fabsf(a[q] - b[q]) > 1e-4f;
    CHECK_MSG(diff * 100 < total && r1.robust == r2.robust, "2 threads vs 1: %zu of %zu values differ, robust %d vs %d",
              diff, total, r2.robust, r1.robust);
    free(a);
    free(b);
}

int main(void) {
    /* One thread: the many small passes of these checks only wait on each other when the
     * machine is shared (check_threads covers two). */
    at_set_threads(1);
    check_original_fixture();
    check_attack_fixture("attack_smallcnn", "smallcnn");
    check_attack_fixture("attack_mlp", "mlp");
    check_names();
    check_table();
    fx f;
    if (load(&f, "attack_smallcnn", "smallcnn")) {
        check_errors(&f);
        check_contracts(&f);
        check_threads(&f);
        unload(&f);
    }
    return tu_finish("test_attack_torch");
}
