/* Compares advtrain with PyTorch on the fixtures written by tools/make_fixtures.py
 * (tests/fixtures/README.md says what each file holds): forward logits, loss, every parameter
 * gradient, the input gradient, 5 steps of SGD / Adam / SGD-nesterov with weight decay, and for
 * smallcnn FGSM and PGD examples rebuilt from the public forward/backward API. */
#include "advtrain.h"
#include "testutil.h"

#include <math.h>
#include <stdint.h>

#define NSTEPS 5

typedef struct fixture {
    const char *file;  /* tests/fixtures/<file>.safetensors */
    const char *spec;  /* advtrain spec; NULL: the file's "spec" metadata */
    int c, h, w;
    bool regression;   /* MSE against "target" instead of cross-entropy against "y" */
} fixture;

static const fixture FIXTURES[] = {
    {"seed_cnn", "seed-cnn", 1, 28, 28, false},
    {"seed_cnn_cifar", "seed-cnn", 3, 32, 32, false},
    {"mlp", "mlp", 1, 28, 28, false},
    {"smallcnn", "smallcnn", 1, 28, 28, false},
    {"seed_mlp", "seed-mlp", 10, 1, 1, true},
    {"custom", NULL, 1, 28, 28, false},
};

/* Everything one fixture's checks need. */
typedef struct ctx {
    const fixture *fx;
    const char *path;
    at_st_file *file;
    at_net *net;
    int n;                 /* batch size */
    int in_size, out_size; /* per sample */
    const float *x;
    int32_t *labels;       /* classification */
    const float *target;   /* regression */
    float *dlogits;
    float *dx;
} ctx;

static const at_st_tensor *need(const ctx *c, const char *name) {
    const at_st_tensor *t = at_st_find(c->file, name);
    CHECK_MSG(t != NULL, "%s: tensor \"%s\" missing from %s", c->fx->file, name, c->path);
    return t;
}

static double max_abs(const float *v, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs((double)v[i]) > m) m = fabs((double)v[i]);
    return m;
}

/* Compares n values with |got-want| <= atol + rtol*|want|; reports the worst element. */
static void compare(const ctx *c, const char *what, const float *got, const float *want, size_t n,
                    double atol, double rtol) {
    size_t worst = 0;
    double v = tu_max_violation(got, want, n, atol, rtol, &worst);
    CHECK_MSG(v <= 1.0,
              "%s: %s differs from PyTorch: worst index %zu of %zu: got %.9g, want %.9g "
              "(|diff| %.3g, atol %.3g, rtol %.3g, violation %.3g)",
              c->fx->file, what, worst, n, n ? got[worst] : 0.0, n ? want[worst] : 0.0,
              n ? fabs((double)got[worst] - want[worst]) : 0.0, atol, rtol, v);
}

/* Tolerance for gradient-like tensors: relative to the tensor's own scale, never above 1e-4
 * (input gradients are ~1e-4 in size, so a fixed 1e-4 would hide a wrong one). */
static double scaled_atol(const float *ref, size_t n, double frac) {
    double a = frac * max_abs(ref, n);
    if (a > 1e-4) a = 1e-4;
    if (a < 1e-7) a = 1e-7;
    return a;
}

/* Forward on the fixture's batch and the loss with its gradient in c->dlogits. */
static at_status forward_loss(ctx *c, const float *x, float *loss) {
    const float *logits = NULL;
    at_status s = at_net_forward(c->net, x, c->n, &logits);
    if (s != AT_OK) return s;
    if (c->fx->regression) return at_mse(logits, c->target, c->n, c->out_size, loss, c->dlogits);
    return at_cross_entropy(logits, c->labels, c->n, c->out_size, 0.0f, loss, c->dlogits, NULL);
}

static void reload_initial_weights(ctx *c) { CHECK_OK(at_net_load_weights(c->net, c->file, c->path)); }

/* Logits, loss, every parameter gradient and the input gradient at the initial weights. */
static void check_gradients(ctx *c) {
    char what[96];
    const float *logits = NULL;
    CHECK_OK(at_net_forward(c->net, c->x, c->n, &logits));
    const at_st_tensor *rl = need(c, "logits");
    if (logits && rl && rl->count == (size_t)c->n * c->out_size)
        compare(c, "logits", logits, rl->data, rl->count, 1e-4, 1e-4);
    else
        CHECK_MSG(0, "%s: logits missing or of the wrong size", c->fx->file);

    float loss = NAN;
    at_net_zero_grad(c->net);
    CHECK_OK(forward_loss(c, c->x, &loss));
    const at_st_tensor *rloss = need(c, "loss");
    if (rloss) CHECK_NEAR(loss, rloss->data[0], 1e-5 + 1e-5 * fabs(rloss->data[0]));

    CHECK_OK(at_net_backward(c->net, c->dlogits, AT_GRAD_PARAMS | AT_GRAD_INPUT, c->dx));
    const float *grads = at_net_grads(c->net);
    int nt = at_net_num_tensors(c->net);
    for (int i = 0; i < nt; i++) {
        const at_param_info *p = at_net_tensor(c->net, i);
        snprintf(what, sizeof what, "grad.%s", p->name);
        const at_st_tensor *ref = need(c, what);
        const at_param_info *found = at_net_find_tensor(c->net, p->name);
        CHECK_MSG(found == p, "%s: at_net_find_tensor(\"%s\") does not find tensor %d", c->fx->file,
                  p->name, i);
        if (!ref) continue;
        CHECK_MSG(ref->count == p->size, "%s: %s has %zu values, PyTorch %zu", c->fx->file, p->name,
                  p->size, ref->count);
        if (ref->count != p->size) continue;
        compare(c, what, grads + p->offset, ref->data, p->size, scaled_atol(ref->data, p->size, 1e-3),
                1e-3);
    }
    /* The fixture holds exactly the network's parameters. */
    int nref = 0;
    for (int i = 0; i < c->file->ntensors; i++)
        if (strncmp(c->file->tensors[i].name, "grad.", 5) == 0) nref++;
    CHECK_MSG(nref == nt, "%s: network has %d parameter tensors, PyTorch %d", c->fx->file, nt, nref);

    const at_st_tensor *rdx = need(c, "input_grad");
    if (rdx && rdx->count == (size_t)c->n * c->in_size)
        compare(c, "input_grad", c->dx, rdx->data, rdx->count, scaled_atol(rdx->data, rdx->count, 1e-3),
                1e-3);

    /* Parameter gradients accumulate: a second backward doubles them. */
    size_t np = at_net_num_params(c->net);
    float *once = malloc(np * sizeof *once);
    float *twice = malloc(np * sizeof *twice);
    if (!once || !twice) {
        CHECK(0);
        free(once);
        free(twice);
        return;
    }
    memcpy(once, grads, np * sizeof *once);
    CHECK_OK(forward_loss(c, c->x, &loss));
    CHECK_OK(at_net_backward(c->net, c->dlogits, AT_GRAD_PARAMS, NULL));
    for (size_t i = 0; i < np; i++) twice[i] = 2.0f * once[i];
    compare(c, "gradients after a second backward (must accumulate)", at_net_grads(c->net), twice, np,
            1e-7 + 1e-6 * max_abs(twice, np), 1e-5);

    /* An input-only backward leaves the parameter gradients alone. */
    at_net_zero_grad(c->net);
    CHECK_OK(forward_loss(c, c->x, &loss));
    CHECK_OK(at_net_backward(c->net, c->dlogits, AT_GRAD_INPUT, c->dx));
    CHECK_MSG(max_abs(at_net_grads(c->net), np) == 0.0,
              "%s: backward without AT_GRAD_PARAMS changed parameter gradients", c->fx->file);
    if (rdx && rdx->count == (size_t)c->n * c->in_size)
        compare(c, "input_grad (AT_GRAD_INPUT only)", c->dx, rdx->data, rdx->count,
                scaled_atol(rdx->data, rdx->count, 1e-3), 1e-3);
    free(once);
    free(twice);
}

/* Reloads the initial weights, runs 5 optimizer steps and compares the losses before each step
 * (and after the last) and the final weights, as their change from the initial weights. */
static void check_optimizer(ctx *c, const char *tag, const at_optim_config *cfg, double delta_frac) {
    char what[96];
    reload_initial_weights(c);
    at_optim *opt = NULL;
    CHECK_OK(at_optim_create(&opt, c->net, cfg));
    if (!opt) return;
    float losses[NSTEPS + 1];
    for (int s = 0; s < NSTEPS; s++) {
        at_net_zero_grad(c->net);
        CHECK_OK(forward_loss(c, c->x, &losses[s]));
        CHECK_OK(at_net_backward(c->net, c->dlogits, AT_GRAD_PARAMS, NULL));
        CHECK_OK(at_optim_step(opt));
    }
    CHECK_OK(forward_loss(c, c->x, &losses[NSTEPS]));
    CHECK(at_optim_steps(opt) == NSTEPS);
    at_optim_free(opt);

    snprintf(what, sizeof what, "%s_losses", tag);
    const at_st_tensor *rl = need(c, what);
    if (rl && rl->count == NSTEPS + 1) compare(c, what, losses, rl->data, NSTEPS + 1, 2e-5, 1e-5);

    const float *w = at_net_params(c->net);
    int nt = at_net_num_tensors(c->net);
    for (int i = 0; i < nt; i++) {
        const at_param_info *p = at_net_tensor(c->net, i);
        const at_st_tensor *init = need(c, p->name);
        snprintf(what, sizeof what, "%s.%s", tag, p->name);
        const at_st_tensor *ref = need(c, what);
        if (!init || !ref || init->count != p->size || ref->count != p->size) {
            CHECK_MSG(0, "%s: %s missing or of the wrong size", c->fx->file, what);
            continue;
        }
        /* Final weights in absolute terms (loose: weights are ~0.05, updates ~1e-3)... */
        compare(c, what, w + p->offset, ref->data, p->size, 1e-4, 1e-3);
        /* ...and the update itself, relative to its own scale. */
        float *got = malloc(p->size * sizeof *got), *want = malloc(p->size * sizeof *want);
        if (!got || !want) {
            CHECK(0);
            free(got);
            free(want);
            continue;
        }
        for (size_t k = 0; k < p->size; k++) {
            got[k] = w[p->offset + k] - init->data[k];
            want[k] = ref->data[k] - init->data[k];
        }
        char dwhat[256];
        snprintf(dwhat, sizeof dwhat, "update %s - %s", what, p->name);
        compare(c, dwhat, got, want, p->size, 1e-8 + delta_frac * max_abs(want, p->size), 1e-3);
        free(got);
        free(want);
    }
}

static float signf(float v) { return v > 0 ? 1.0f : (v < 0 ? -1.0f : 0.0f); }
static float clampf(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }

/* Elements differing by more than 1e-5 must be fewer than 0.1% (sign ties may flip). */
static void compare_attack(const ctx *c, const char *what, const float *got, const at_st_tensor *ref) {
    size_t n = ref->count, bad = 0, first = 0;
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref->data[i]);
        if (d > 1e-5) {
            if (!bad) first = i;
            bad++;
        }
        if (d > worst || d != d) worst = d != d ? INFINITY : d;
    }
    CHECK_MSG(bad * 1000 < n, "%s: %s: %zu of %zu elements differ by more than 1e-5 (first at %zu: got %.7g, "
              "want %.7g; largest difference %.3g)",
              c->fx->file, what, bad, n, first, bad ? got[first] : 0.0, bad ? ref->data[first] : 0.0, worst);
    if (bad) printf("  %s: %s: %zu of %zu elements differ (allowed: sign ties)\n", c->fx->file, what, bad, n);
}

/* FGSM and PGD (definitions in tools/make_fixtures.py) from forward + input-only backward. */
static void check_attacks(ctx *c) {
    const at_st_tensor *rf = need(c, "fgsm_x"), *rp = need(c, "pgd_x");
    size_t total = (size_t)c->n * c->in_size;
    if (!rf || !rp || rf->count != total || rp->count != total) return;
    reload_initial_weights(c);
    CHECK(!at_net_is_training(c->net)); /* attacks run in eval mode */
    float *adv = malloc(total * sizeof *adv);
    if (!adv) {
        CHECK(0);
        return;
    }
    float loss;
    const float eps = 0.1f, alpha = 0.02f;

    CHECK_OK(forward_loss(c, c->x, &loss));
    CHECK_OK(at_net_backward(c->net, c->dlogits, AT_GRAD_INPUT, c->dx));
    for (size_t i = 0; i < total; i++) adv[i] = clampf(c->x[i] + eps * signf(c->dx[i]), 0.0f, 1.0f);
    compare_attack(c, "fgsm_x", adv, rf);

    memcpy(adv, c->x, total * sizeof *adv); /* zero start */
    for (int step = 0; step < 10; step++) {
        CHECK_OK(forward_loss(c, adv, &loss));
        CHECK_OK(at_net_backward(c->net, c->dlogits, AT_GRAD_INPUT, c->dx));
        for (size_t i = 0; i < total; i++) {
            float v = adv[i] + alpha * signf(c->dx[i]);
            v = fminf(fmaxf(v, c->x[i] - eps), c->x[i] + eps);
            adv[i] = clampf(v, 0.0f, 1.0f);
        }
    }
    compare_attack(c, "pgd_x", adv, rp);
    free(adv);
}

static void run_fixture(const fixture *fx) {
    ctx c = {0};
    c.fx = fx;
    char rel[256];
    snprintf(rel, sizeof rel, "tests/fixtures/%s.safetensors", fx->file);
    c.path = tu_source_path(rel);
    at_status s = at_st_read(c.path, &c.file);
    CHECK_OK(s);
    if (s != AT_OK) return;
    printf("%s (torch %s)\n", fx->file, at_st_meta_get(c.file, "torch_version") ?
           at_st_meta_get(c.file, "torch_version") : "?");
    const char *model = at_st_meta_get(c.file, "model");
    CHECK_MSG(model && strcmp(model, fx->file) == 0, "%s: metadata model = %s", fx->file, model ? model : "(none)");
    const char *spec = fx->spec ? fx->spec : at_st_meta_get(c.file, "spec");
    CHECK_MSG(spec != NULL, "%s: no spec", fx->file);
    if (!spec) goto done;

    s = at_net_from_spec(&c.net, spec, fx->c, fx->h, fx->w);
    CHECK_OK(s);
    if (s != AT_OK) goto done;
    c.in_size = at_net_in_size(c.net);
    c.out_size = at_net_out_size(c.net);
    CHECK(c.in_size == fx->c * fx->h * fx->w);
    CHECK(c.out_size == 10);

    const at_st_tensor *x = need(&c, "x");
    const at_st_tensor *lab = need(&c, fx->regression ? "target" : "y");
    if (!x || !lab || c.in_size <= 0 || x->count % (size_t)c.in_size) goto done;
    c.n = (int)(x->count / (size_t)c.in_size);
    c.x = x->data;
    CHECK(c.n > 0 && lab->count == (size_t)c.n * (fx->regression ? (size_t)c.out_size : 1));
    if (fx->regression) {
        c.target = lab->data;
    } else {
        c.labels = malloc((size_t)c.n * sizeof *c.labels);
        if (!c.labels) goto done;
        for (int i = 0; i < c.n; i++) c.labels[i] = (int32_t)lrintf(lab->data[i]);
    }
    c.dlogits = malloc((size_t)c.n * c.out_size * sizeof *c.dlogits);
    c.dx = malloc((size_t)c.n * c.in_size * sizeof *c.dx);
    if (!c.dlogits || !c.dx) goto done;

    s = at_net_load_weights(c.net, c.file, c.path);
    CHECK_OK(s);
    if (s != AT_OK) goto done;
    int before = tu_failures;
    check_gradients(&c);
    printf("  forward/backward: %s\n", tu_failures == before ? "ok" : "FAILED");

    at_optim_config sgd = at_optim_defaults(AT_OPTIM_SGD);
    sgd.lr = 0.05f;
    sgd.momentum = 0.9f;
    before = tu_failures;
    check_optimizer(&c, "sgd", &sgd, 1e-3);
    printf("  sgd: %s\n", tu_failures == before ? "ok" : "FAILED");

    at_optim_config adam = at_optim_defaults(AT_OPTIM_ADAM);
    adam.lr = 1e-3f;
    before = tu_failures;
    /* Adam normalizes each update, so elements whose gradient is ~1e-8 (near eps) are sensitive to
     * rounding: compare updates at 1% of their scale (float32 PyTorch itself reaches 0.5%). */
    check_optimizer(&c, "adam", &adam, 1e-2);
    printf("  adam: %s\n", tu_failures == before ? "ok" : "FAILED");

    at_optim_config sgdn = at_optim_defaults(AT_OPTIM_SGD);
    sgdn.lr = 0.05f;
    sgdn.momentum = 0.9f;
    sgdn.nesterov = true;
    sgdn.weight_decay = 5e-4f;
    before = tu_failures;
    check_optimizer(&c, "sgdn", &sgdn, 1e-3);
    printf("  sgd nesterov + weight decay: %s\n", tu_failures == before ? "ok" : "FAILED");

    if (strcmp(fx->file, "smallcnn") == 0) {
        before = tu_failures;
        check_attacks(&c);
        printf("  fgsm/pgd: %s\n", tu_failures == before ? "ok" : "FAILED");
    }
done:
    free(c.labels);
    free(c.dlogits);
    free(c.dx);
    at_net_free(c.net);
    at_st_free(c.file);
}

int main(void) {
    for (size_t i = 0; i < sizeof FIXTURES / sizeof FIXTURES[0]; i++) run_fixture(&FIXTURES[i]);
    return tu_finish("test_pytorch");
}
