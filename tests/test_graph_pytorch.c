/* Compares advtrain's graph engine with PyTorch on tests/fixtures/graph_bn_res_dw.safetensors,
 * written by tools/make_graph_fixtures.py (its docstring says what the file holds): a network
 * with BatchNorm2d/1d (random affine parameters and running statistics), residual Adds (one with
 * a strided 1x1 projection), depthwise and grouped bias-free convolutions and global average
 * pooling. Checked, with 1 and with 2 threads:
 *  - the state_dict names and order (parameters and buffers) equal PyTorch's, and the file's
 *    num_batches_tracked (I64, 0-dim) loads as the whole number it holds;
 *  - training mode and eval mode, each from the initial state: logits, loss, every parameter
 *    gradient, the input gradient; an input-only backward changes no parameter gradient; the
 *    training forward moves the running statistics once, the eval one leaves them alone;
 *  - 5 SGD(lr 0.05, momentum 0.9) steps in training mode: the losses, the weights (and their
 *    update), the running statistics (and their change) and num_batches_tracked (exact, +5);
 *  - PGD L-inf in eval mode (forward + input-only backward) equals pgd_x, and leaves every
 *    parameter and buffer bit unchanged; so does at_attack_run's PGD called in training mode,
 *    which must attack in eval mode and restore training mode.
 * Tolerances follow tests/test_pytorch.c. Exits 77 (skipped) if the fixture file is missing. */
#include "advtrain.h"
#include "testutil.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <unistd.h>

#define FIXTURE "tests/fixtures/graph_bn_res_dw.safetensors"
#define MODEL "graph_bn_res_dw"
#define NSTEPS 5

typedef struct ctx {
    const char *path;
    at_st_file *file;
    at_net *net;
    int threads;
    int n, in_size, out_size;
    const float *x;
    int32_t *labels;
    float *dlogits, *dx;
} ctx;

/* ------------------------------------------------------------ worst violations, for the log */

enum { Q_LOGITS, Q_LOSS, Q_GRAD, Q_ZERO_GRAD, Q_INPUT_GRAD, Q_NQ };
static const char *const QNAMES[Q_NQ] = {"logits", "loss", "param grads", "zero grads (abs)",
                                         "input grad"};
static double worst_mode[2][Q_NQ]; /* [training][quantity] */
enum { S_LOSSES, S_WEIGHTS, S_UPDATES, S_ZERO_UPDATES, S_RSTATS, S_RSTATS_DELTA, S_NQ };
static const char *const SNAMES[S_NQ] = {"sgd losses", "sgd weights", "sgd weight updates",
                                        "sgd zero-grad updates (abs)", "running stats",
                                        "running stats change"};
static double worst_sgd[S_NQ];
static size_t pgd_bad, pgd_total, api_bad;
static double pgd_worst;

static void note(double *slot, double v) {
    if (v > *slot || v != v) *slot = v;
}

static const at_st_tensor *need(const ctx *c, const char *name) {
    const at_st_tensor *t = at_st_find(c->file, name);
    CHECK_MSG(t != NULL, "tensor \"%s\" missing from %s", name, c->path);
    return t;
}

static double max_abs(const float *v, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs((double)v[i]) > m) m = fabs((double)v[i]);
    return m;
}

/* |got-want| <= atol + rtol*|want| for all n values; returns the worst violation (<= 1: ok). */
static double compare(const ctx *c, const char *what, const float *got, const float *want, size_t n,
                      double atol, double rtol) {
    size_t worst = 0;
    double v = tu_max_violation(got, want, n, atol, rtol, &worst);
    CHECK_MSG(v <= 1.0,
              "[%d thread(s)] %s differs from PyTorch: worst index %zu of %zu: got %.9g, want %.9g "
              "(|diff| %.3g, atol %.3g, rtol %.3g, violation %.3g)",
              c->threads, what, worst, n, n ? got[worst] : 0.0, n ? want[worst] : 0.0,
              n ? fabs((double)got[worst] - want[worst]) : 0.0, atol, rtol, v);
    return v;
}

/* A parameter whose training-mode gradient is mathematically zero: the bias of a layer feeding a
 * BatchNorm, which removes every per-channel shift (PyTorch's float64 reference holds ~1e-16).
 * Float32 arithmetic leaves the rounding residue of the sum of N*H*W cancelling terms, and the
 * tensor's own scale is no scale for it: PyTorch itself in float32 is 1.2e-7 off on 20.bias and
 * 4.6e-7 on 6.bias (2 threads), where the same layers' other gradients are ~0.05..0.7. So such a
 * gradient must be below ZERO_GRAD_ATOL in absolute value; a BatchNorm backward that forgot the
 * mean(dy) term would give ~0.1. */
#define ZERO_GRAD_REF 1e-12
#define ZERO_GRAD_ATOL 1e-6
/* The SGD update such a parameter may get: the gradient bound through 5 momentum-0.9 steps of lr
 * 0.05 (0.05 * (1 + 1.9 + 2.71 + 3.439 + 4.0951) < 0.66), plus one float32 rounding of the weight
 * (the reference's update is exactly 0). */
#define ZERO_GRAD_UPDATE(wmax) (0.66 * ZERO_GRAD_ATOL + FLT_EPSILON * (wmax))

/* As tests/test_pytorch.c: gradient tolerance relative to the tensor's own scale, in [1e-7, 1e-4]. */
static double scaled_atol(const float *ref, size_t n, double frac) {
    double a = frac * max_abs(ref, n);
    if (a > 1e-4) a = 1e-4;
    if (a < 1e-7) a = 1e-7;
    return a;
}

static at_status forward_loss(ctx *c, const float *x, float *loss, const float **logits_out) {
    const float *logits = NULL;
    at_status s = at_net_forward(c->net, x, c->n, &logits);
    if (s != AT_OK) return s;
    if (logits_out) *logits_out = logits;
    return at_cross_entropy(logits, c->labels, c->n, c->out_size, 0.0f, loss, c->dlogits, NULL);
}

static void reload_initial_state(ctx *c) { CHECK_OK(at_net_load_weights(c->net, c->file, c->path)); }

/* The file's value of buffer b (the initial state) and the network's. */
static const float *buffer_now(ctx *c, const at_param_info *b) { return at_net_buffers(c->net) + b->offset; }

/* ------------------------------------------------------------ names and the initial state */

/* A comma-separated list of the metadata against the network's names, in order. */
static void check_names(ctx *c, const char *key, bool buffers) {
    const char *list = at_st_meta_get(c->file, key);
    CHECK_MSG(list != NULL, "metadata \"%s\" missing", key);
    if (!list) return;
    char want[4096];
    size_t used = 0;
    want[0] = '\0';
    int count = buffers ? at_net_num_buffers(c->net) : at_net_num_tensors(c->net);
    for (int i = 0; i < count; i++) {
        const at_param_info *p = buffers ? at_net_buffer(c->net, i) : at_net_tensor(c->net, i);
        used += (size_t)snprintf(want + used, sizeof want - used, "%s%s", i ? "," : "", p->name);
        if (used >= sizeof want) break;
    }
    CHECK_MSG(strcmp(list, want) == 0, "%s: PyTorch's state_dict order is\n  %s\nadvtrain's is\n  %s",
              key, list, want);
}

static bool is_state_name(const char *name) { return name[0] >= '0' && name[0] <= '9'; }

static void check_initial_state(ctx *c) {
    check_names(c, "params", false);
    check_names(c, "buffers", true);
    /* The file's state_dict entries are exactly the network's parameters and buffers. */
    int nstate = 0;
    for (int i = 0; i < c->file->ntensors; i++) {
        const char *name = c->file->tensors[i].name;
        if (!is_state_name(name)) continue;
        nstate++;
        CHECK_MSG(at_net_find_tensor(c->net, name) || at_net_find_buffer(c->net, name),
                  "state_dict entry %s is no parameter or buffer of the network", name);
    }
    CHECK_MSG(nstate == at_net_num_tensors(c->net) + at_net_num_buffers(c->net),
              "the file holds %d state_dict entries, the network %d + %d", nstate,
              at_net_num_tensors(c->net), at_net_num_buffers(c->net));
    /* num_batches_tracked: PyTorch's int64 0-dim counter, read as I64 and loaded exactly. */
    for (int i = 0; i < at_net_num_buffers(c->net); i++) {
        const at_param_info *b = at_net_buffer(c->net, i);
        const at_st_tensor *t = need(c, b->name);
        if (!t) continue;
        const bool counter = strstr(b->name, "num_batches_tracked") != NULL;
        CHECK_MSG(b->is_integer == counter, "buffer %s: is_integer %d", b->name, b->is_integer);
        CHECK_MSG(t->integer == counter, "%s: stored as %s", b->name, t->integer ? "I64" : "F32");
        if (counter) {
            CHECK_MSG(t->ndim == 0 && t->count == 1 && b->size == 1, "%s: ndim %d count %zu", b->name,
                      t->ndim, t->count);
            CHECK_MSG(t->data[0] >= 3 && t->data[0] < 50 && t->data[0] == floorf(t->data[0]),
                      "%s = %g: not the fixture's counter", b->name, (double)t->data[0]);
        }
        if (t->count == b->size)
            CHECK_MSG(memcmp(buffer_now(c, b), t->data, b->size * sizeof(float)) == 0,
                      "buffer %s not loaded as written", b->name);
    }
}

/* ------------------------------------------------------------ one mode's forward / backward */

static void check_mode(ctx *c, bool training) {
    const char *tag = training ? "train" : "eval";
    char what[128];
    reload_initial_state(c);
    at_net_set_training(c->net, training);
    const size_t nbuf = at_net_num_buffer_floats(c->net), np = at_net_num_params(c->net);
    float *buf0 = malloc(nbuf * sizeof *buf0);
    if (!buf0) {
        CHECK(0);
        return;
    }
    memcpy(buf0, at_net_buffers(c->net), nbuf * sizeof *buf0);

    at_net_zero_grad(c->net);
    float loss = NAN;
    const float *logits = NULL;
    CHECK_OK(forward_loss(c, c->x, &loss, &logits));
    snprintf(what, sizeof what, "logits_%s", tag);
    const at_st_tensor *rl = need(c, what);
    if (logits && rl && rl->count == (size_t)c->n * c->out_size)
        note(&worst_mode[training][Q_LOGITS], compare(c, what, logits, rl->data, rl->count, 1e-4, 1e-4));
    else
        CHECK_MSG(0, "%s missing or of the wrong size", what);
    snprintf(what, sizeof what, "loss_%s", tag);
    const at_st_tensor *rloss = need(c, what);
    if (rloss) note(&worst_mode[training][Q_LOSS], compare(c, what, &loss, rloss->data, 1, 1e-5, 1e-5));

    /* The forward moved the running statistics once in training mode, not at all in eval mode. */
    for (int i = 0; i < at_net_num_buffers(c->net); i++) {
        const at_param_info *b = at_net_buffer(c->net, i);
        const float *now = buffer_now(c, b), *was = buf0 + b->offset;
        if (b->is_integer)
            CHECK_MSG(now[0] == was[0] + (training ? 1.0f : 0.0f), "%s forward: %s %g -> %g", tag,
                      b->name, (double)was[0], (double)now[0]);
        else if (!training)
            CHECK_MSG(memcmp(now, was, b->size * sizeof *now) == 0, "eval forward changed %s", b->name);
        else
            CHECK_MSG(memcmp(now, was, b->size * sizeof *now) != 0, "train forward left %s alone", b->name);
    }

    CHECK_OK(at_net_backward(c->net, c->dlogits, AT_GRAD_PARAMS | AT_GRAD_INPUT, c->dx));
    const float *grads = at_net_grads(c->net);
    int nt = at_net_num_tensors(c->net);
    for (int i = 0; i < nt; i++) {
        const at_param_info *p = at_net_tensor(c->net, i);
        snprintf(what, sizeof what, "grad_%s.%s", tag, p->name);
        const at_st_tensor *ref = need(c, what);
        if (!ref) continue;
        CHECK_MSG(ref->count == p->size, "%s has %zu values, PyTorch %zu", p->name, p->size, ref->count);
        if (ref->count != p->size) continue;
        const bool zero = max_abs(ref->data, p->size) < ZERO_GRAD_REF;
        CHECK_MSG(!zero || training, "%s: eval-mode reference gradient is zero", what);
        note(&worst_mode[training][zero ? Q_ZERO_GRAD : Q_GRAD],
             compare(c, what, grads + p->offset, ref->data, p->size,
                     zero ? ZERO_GRAD_ATOL : scaled_atol(ref->data, p->size, 1e-3), 1e-3));
    }
    int nref = 0;
    char prefix[16];
    snprintf(prefix, sizeof prefix, "grad_%s.", tag);
    for (int i = 0; i < c->file->ntensors; i++)
        if (strncmp(c->file->tensors[i].name, prefix, strlen(prefix)) == 0) nref++;
    CHECK_MSG(nref == nt, "%s: network has %d parameter tensors, PyTorch %d", tag, nt, nref);

    snprintf(what, sizeof what, "input_grad_%s", tag);
    const at_st_tensor *rdx = need(c, what);
    const bool have_dx = rdx && rdx->count == (size_t)c->n * c->in_size;
    if (have_dx)
        note(&worst_mode[training][Q_INPUT_GRAD],
             compare(c, what, c->dx, rdx->data, rdx->count, scaled_atol(rdx->data, rdx->count, 1e-3), 1e-3));

    /* An input-only backward (what attacks do) computes no parameter gradient. */
    reload_initial_state(c);
    at_net_zero_grad(c->net);
    memset(c->dx, 0, (size_t)c->n * c->in_size * sizeof *c->dx);
    CHECK_OK(forward_loss(c, c->x, &loss, NULL));
    CHECK_OK(at_net_backward(c->net, c->dlogits, AT_GRAD_INPUT, c->dx));
    CHECK_MSG(max_abs(at_net_grads(c->net), np) == 0.0,
              "%s: backward without AT_GRAD_PARAMS changed parameter gradients", tag);
    snprintf(what, sizeof what, "input_grad_%s (AT_GRAD_INPUT only)", tag);
    if (have_dx)
        note(&worst_mode[training][Q_INPUT_GRAD],
             compare(c, what, c->dx, rdx->data, rdx->count, scaled_atol(rdx->data, rdx->count, 1e-3), 1e-3));
    free(buf0);
}

/* ------------------------------------------------------------ SGD with momentum, training mode */

/* got - init against want - init: atol frac * the change's own scale, rtol rtol. */
static double compare_change(const ctx *c, const char *what, const float *got, const float *want,
                             const float *init, size_t n, double frac, double rtol) {
    float *dg = malloc(n * sizeof *dg), *dw = malloc(n * sizeof *dw);
    double v = INFINITY;
    if (dg && dw) {
        for (size_t k = 0; k < n; k++) {
            dg[k] = got[k] - init[k];
            dw[k] = want[k] - init[k];
        }
        v = compare(c, what, dg, dw, n, 1e-8 + frac * max_abs(dw, n), rtol);
    } else {
        CHECK(0);
    }
    free(dg);
    free(dw);
    return v;
}

static void check_sgd(ctx *c) {
    char what[160];
    reload_initial_state(c);
    at_net_set_training(c->net, true);
    at_optim_config cfg = at_optim_defaults(AT_OPTIM_SGD);
    cfg.lr = 0.05f;
    cfg.momentum = 0.9f;
    at_optim *opt = NULL;
    CHECK_OK(at_optim_create(&opt, c->net, &cfg));
    if (!opt) return;
    float losses[NSTEPS + 1];
    for (int s = 0; s < NSTEPS; s++) {
        at_net_zero_grad(c->net);
        CHECK_OK(forward_loss(c, c->x, &losses[s], NULL));
        CHECK_OK(at_net_backward(c->net, c->dlogits, AT_GRAD_PARAMS, NULL));
        CHECK_OK(at_optim_step(opt));
    }
    CHECK(at_optim_steps(opt) == NSTEPS);
    at_optim_free(opt);
    /* The buffers after exactly NSTEPS training forwards (the fixture's sgd.<buffer>)... */
    const size_t nbuf = at_net_num_buffer_floats(c->net);
    float *bufs = malloc(nbuf * sizeof *bufs);
    if (!bufs) {
        CHECK(0);
        return;
    }
    memcpy(bufs, at_net_buffers(c->net), nbuf * sizeof *bufs);
    /* ...then the loss after the last step, from one more training-mode forward. */
    CHECK_OK(forward_loss(c, c->x, &losses[NSTEPS], NULL));
    CHECK(at_net_is_training(c->net));

    const at_st_tensor *rl = need(c, "sgd_losses");
    if (rl && rl->count == NSTEPS + 1)
        note(&worst_sgd[S_LOSSES], compare(c, "sgd_losses", losses, rl->data, NSTEPS + 1, 2e-5, 1e-5));

    const float *w = at_net_params(c->net);
    for (int i = 0; i < at_net_num_tensors(c->net); i++) {
        const at_param_info *p = at_net_tensor(c->net, i);
        const at_st_tensor *init = need(c, p->name);
        snprintf(what, sizeof what, "sgd.%s", p->name);
        const at_st_tensor *ref = need(c, what);
        if (!init || !ref || init->count != p->size || ref->count != p->size) {
            CHECK_MSG(0, "%s missing or of the wrong size", what);
            continue;
        }
        note(&worst_sgd[S_WEIGHTS], compare(c, what, w + p->offset, ref->data, p->size, 1e-4, 1e-3));
        snprintf(what, sizeof what, "update sgd.%s - %s", p->name, p->name);
        char gname[96];
        snprintf(gname, sizeof gname, "grad_train.%s", p->name);
        const at_st_tensor *g = need(c, gname);
        if (g && g->count == p->size && max_abs(g->data, p->size) < ZERO_GRAD_REF) {
            /* No update in PyTorch (see ZERO_GRAD_ATOL): only rounding residue here. */
            float *upd = malloc(p->size * sizeof *upd), *none = calloc(p->size, sizeof *none);
            if (upd && none) {
                for (size_t k = 0; k < p->size; k++) upd[k] = w[p->offset + k] - init->data[k];
                CHECK_MSG(max_abs(ref->data, p->size) == max_abs(init->data, p->size) &&
                              memcmp(ref->data, init->data, p->size * sizeof(float)) == 0,
                          "%s: PyTorch updated a parameter whose gradient is zero", what);
                note(&worst_sgd[S_ZERO_UPDATES],
                     compare(c, what, upd, none, p->size, ZERO_GRAD_UPDATE(max_abs(init->data, p->size)), 0));
            } else {
                CHECK(0);
            }
            free(upd);
            free(none);
            continue;
        }
        note(&worst_sgd[S_UPDATES],
             compare_change(c, what, w + p->offset, ref->data, init->data, p->size, 1e-3, 1e-3));
    }
    for (int i = 0; i < at_net_num_buffers(c->net); i++) {
        const at_param_info *b = at_net_buffer(c->net, i);
        const at_st_tensor *init = need(c, b->name);
        snprintf(what, sizeof what, "sgd.%s", b->name);
        const at_st_tensor *ref = need(c, what);
        if (!init || !ref || init->count != b->size || ref->count != b->size) {
            CHECK_MSG(0, "%s missing or of the wrong size", what);
            continue;
        }
        const float *got = bufs + b->offset;
        if (b->is_integer) {
            CHECK_MSG(ref->integer, "%s is not stored as I64", what);
            CHECK_MSG(got[0] == ref->data[0] && ref->data[0] == init->data[0] + NSTEPS,
                      "%s: advtrain %g, PyTorch %g, initially %g (+%d expected)", what, (double)got[0],
                      (double)ref->data[0], (double)init->data[0], NSTEPS);
            continue;
        }
        /* Running statistics are O(0.1..2), their change over 5 updates O(0.01..1): the values
         * to 1e-4 relative, and the change to 1e-4 of itself plus 1e-5 of the tensor's largest
         * change (the stricter of the two on the elements that moved little). */
        note(&worst_sgd[S_RSTATS], compare(c, what, got, ref->data, b->size, 1e-5, 1e-4));
        snprintf(what, sizeof what, "change of sgd.%s - %s", b->name, b->name);
        note(&worst_sgd[S_RSTATS_DELTA],
             compare_change(c, what, got, ref->data, init->data, b->size, 1e-5, 1e-4));
    }
    free(bufs);
}

/* ------------------------------------------------------------ PGD in eval mode */

static float signf(float v) { return v > 0 ? 1.0f : (v < 0 ? -1.0f : 0.0f); }
static float clampf(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }

static void check_pgd(ctx *c) {
    const at_st_tensor *rp = need(c, "pgd_x");
    const size_t total = (size_t)c->n * c->in_size;
    if (!rp || rp->count != total) return;
    reload_initial_state(c);
    at_net_set_training(c->net, false);
    at_net_zero_grad(c->net);
    const size_t np = at_net_num_params(c->net), nbuf = at_net_num_buffer_floats(c->net);
    float *adv = malloc(total * sizeof *adv), *p0 = malloc(np * sizeof *p0), *b0 = malloc(nbuf * sizeof *b0);
    if (!adv || !p0 || !b0) {
        CHECK(0);
        goto done;
    }
    memcpy(p0, at_net_params(c->net), np * sizeof *p0);
    memcpy(b0, at_net_buffers(c->net), nbuf * sizeof *b0);

    const float eps = 0.1f, alpha = 0.02f;
    float loss;
    memcpy(adv, c->x, total * sizeof *adv); /* zero start */
    for (int step = 0; step < 10; step++) {
        CHECK_OK(forward_loss(c, adv, &loss, NULL));
        CHECK_OK(at_net_backward(c->net, c->dlogits, AT_GRAD_INPUT, c->dx));
        for (size_t i = 0; i < total; i++) {
            float v = adv[i] + alpha * signf(c->dx[i]);
            v = fminf(fmaxf(v, c->x[i] - eps), c->x[i] + eps);
            adv[i] = clampf(v, 0.0f, 1.0f);
        }
    }
    /* Elements differing by more than 1e-5 must be fewer than 0.1% (sign ties may flip). */
    size_t bad = 0, first = 0;
    double worst = 0;
    for (size_t i = 0; i < total; i++) {
        double d = fabs((double)adv[i] - rp->data[i]);
        if (d != d) d = INFINITY;
        if (d > 1e-5 && !bad++) first = i;
        if (d > worst) worst = d;
    }
    CHECK_MSG(bad * 1000 < total,
              "[%d thread(s)] pgd_x: %zu of %zu elements differ by more than 1e-5 (first at %zu: got "
              "%.7g, want %.7g; largest difference %.3g)",
              c->threads, bad, total, first, bad ? adv[first] : 0.0, bad ? rp->data[first] : 0.0, worst);
    if (bad > pgd_bad) pgd_bad = bad;
    pgd_total = total;
    note(&pgd_worst, worst);

    CHECK_MSG(memcmp(p0, at_net_params(c->net), np * sizeof *p0) == 0, "PGD changed a parameter");
    CHECK_MSG(memcmp(b0, at_net_buffers(c->net), nbuf * sizeof *b0) == 0,
              "PGD changed a buffer (running statistics or num_batches_tracked)");
    CHECK_MSG(max_abs(at_net_grads(c->net), np) == 0.0, "PGD (AT_GRAD_INPUT only) wrote parameter gradients");
    CHECK(!at_net_is_training(c->net));
done:
    free(adv);
    free(p0);
    free(b0);
}

/* The same PGD through the attack library (at_attack_run: per-sample losses, chunked input
 * gradients), called with the network in TRAINING mode: the attack must switch to eval mode
 * (running statistics; PyTorch's pgd_x is eval mode), restore training mode, and leave every
 * parameter and buffer bit as it was (a training-mode pass would move the running statistics). */
static void check_attack_api(ctx *c) {
    const at_st_tensor *rp = need(c, "pgd_x");
    const size_t total = (size_t)c->n * c->in_size;
    if (!rp || rp->count != total) return;
    reload_initial_state(c);
    at_net_set_training(c->net, true);
    const size_t np = at_net_num_params(c->net), nbuf = at_net_num_buffer_floats(c->net);
    float *adv = malloc(total * sizeof *adv), *p0 = malloc(np * sizeof *p0), *b0 = malloc(nbuf * sizeof *b0);
    if (!adv || !p0 || !b0) {
        CHECK(0);
        goto done;
    }
    memcpy(p0, at_net_params(c->net), np * sizeof *p0);
    memcpy(b0, at_net_buffers(c->net), nbuf * sizeof *b0);
    at_attack_config cfg;
    CHECK_OK(at_attack_from_name("pgd", &cfg));
    cfg.eps = 0.1f;
    cfg.alpha = 0.02f;
    cfg.steps = 10;
    cfg.random_start = false;
    cfg.attack_all = true;   /* the reference attacks every sample */
    cfg.last_iterate = true; /* and returns its last iterate */
    at_attack_result res;
    memset(&res, 0, sizeof res);
    CHECK_OK(at_attack_run(c->net, &cfg, c->x, c->labels, c->n, adv, NULL, &res));
    size_t bad = 0;
    for (size_t i = 0; i < total; i++)
        if (!(fabs((double)adv[i] - rp->data[i]) <= 1e-5)) bad++;
    CHECK_MSG(bad * 1000 < total, "[%d thread(s)] at_attack_run pgd: %zu of %zu elements differ from pgd_x",
              c->threads, bad, total);
    if (bad > api_bad) api_bad = bad;
    CHECK_MSG(at_net_is_training(c->net), "at_attack_run did not restore training mode");
    CHECK_MSG(memcmp(p0, at_net_params(c->net), np * sizeof *p0) == 0, "at_attack_run changed a parameter");
    CHECK_MSG(memcmp(b0, at_net_buffers(c->net), nbuf * sizeof *b0) == 0,
              "at_attack_run changed a buffer (running statistics or num_batches_tracked)");
done:
    free(adv);
    free(p0);
    free(b0);
}

/* ------------------------------------------------------------ driver */

static void run(const char *path, int threads) {
    ctx c = {0};
    c.path = path;
    c.threads = threads;
    at_set_threads(threads);
    printf("%d thread(s)\n", threads);
    at_status s = at_st_read(path, &c.file);
    CHECK_OK(s);
    if (s != AT_OK) return;
    const char *model = at_st_meta_get(c.file, "model"), *spec = at_st_meta_get(c.file, "spec");
    const char *input = at_st_meta_get(c.file, "input");
    CHECK_MSG(model && strcmp(model, MODEL) == 0, "metadata model = %s", model ? model : "(none)");
    CHECK_MSG(spec && input, "no spec/input metadata");
    int ic = 0, ih = 0, iw = 0;
    if (!spec || !input || sscanf(input, "%d,%d,%d", &ic, &ih, &iw) != 3) goto done;
    s = at_net_from_spec(&c.net, spec, ic, ih, iw);
    CHECK_OK(s);
    if (s != AT_OK) goto done;
    c.in_size = at_net_in_size(c.net);
    c.out_size = at_net_out_size(c.net);
    CHECK(c.out_size == 10);

    const at_st_tensor *x = need(&c, "x"), *lab = need(&c, "y");
    if (!x || !lab || c.in_size <= 0 || x->count % (size_t)c.in_size) goto done;
    c.n = (int)(x->count / (size_t)c.in_size);
    c.x = x->data;
    CHECK(c.n == 8 && lab->count == (size_t)c.n);
    if (lab->count != (size_t)c.n) goto done;
    c.labels = malloc((size_t)c.n * sizeof *c.labels);
    c.dlogits = malloc((size_t)c.n * c.out_size * sizeof *c.dlogits);
    c.dx = malloc((size_t)c.n * c.in_size * sizeof *c.dx);
    if (!c.labels || !c.dlogits || !c.dx) goto done;
    for (int i = 0; i < c.n; i++) c.labels[i] = (int32_t)lrintf(lab->data[i]);

    s = at_net_load_weights(c.net, c.file, c.path);
    CHECK_OK(s);
    if (s != AT_OK) goto done;

    int before = tu_failures;
    check_initial_state(&c);
    printf("  names, initial state: %s\n", tu_failures == before ? "ok" : "FAILED");
    before = tu_failures;
    check_mode(&c, true);
    printf("  train mode forward/backward: %s\n", tu_failures == before ? "ok" : "FAILED");
    before = tu_failures;
    check_mode(&c, false);
    printf("  eval mode forward/backward: %s\n", tu_failures == before ? "ok" : "FAILED");
    before = tu_failures;
    check_sgd(&c);
    printf("  sgd momentum, train mode (weights, running stats): %s\n", tu_failures == before ? "ok" : "FAILED");
    before = tu_failures;
    check_pgd(&c);
    printf("  pgd, eval mode (state untouched): %s\n", tu_failures == before ? "ok" : "FAILED");
    before = tu_failures;
    check_attack_api(&c);
    printf("  at_attack_run pgd from training mode (eval inside, state untouched): %s\n",
           tu_failures == before ? "ok" : "FAILED");
done:
    free(c.labels);
    free(c.dlogits);
    free(c.dx);
    at_net_free(c.net);
    at_st_free(c.file);
}

int main(void) {
    const char *path = tu_source_path(FIXTURE);
    if (access(path, R_OK) != 0) {
        printf("test_graph_pytorch: %s missing, skipped (tools/make_graph_fixtures.py writes it)\n", path);
        return 77;
    }
    for (int threads = 1; threads <= 2; threads++) run(path, threads);
    printf("worst violations over 1 and 2 threads (<= 1 passes):\n");
    for (int m = 1; m >= 0; m--)
        for (int q = 0; q < Q_NQ; q++)
            printf("  %-5s %-18s %.3g\n", m ? "train" : "eval", QNAMES[q], worst_mode[m][q]);
    for (int q = 0; q < S_NQ; q++) printf("  %-28s %.3g\n", SNAMES[q], worst_sgd[q]);
    printf("  pgd_x: at most %zu of %zu elements differ by > 1e-5, largest difference %.3g\n", pgd_bad,
           pgd_total, pgd_worst);
    printf("  at_attack_run pgd: at most %zu of %zu elements differ by > 1e-5\n", api_bad, pgd_total);
    return tu_finish("test_graph_pytorch");
}
