/* The graph layers' kernels called straight through their tables (BatchNorm2d/1d, Add, global
 * average pooling, grouped and bias-free convolutions), with a hand-made at_layer and at_ctx,
 * against double-precision references:
 *  - BatchNorm in training mode the way the executor runs it: forward_stats on every chunk into
 *    its own sums, added in chunk order, forward_reduce once, forward on every chunk (and the
 *    same for backward); outputs against PyTorch's formulas, the running statistics against
 *    PyTorch's update, gradients against central differences of the double-precision forward;
 *  - eval mode: the affine map of the running statistics, buffers untouched to the bit;
 *  - convolutions against direct loops (forward and the adjoint), with the layer's tensors
 *    placed between canaries: a kernel that reads a bias it does not have, or writes past its
 *    gradients, fails.
 * Workspaces are allocated at exactly the size the layer asks for (ASan builds catch overruns). */
#include "layers/layer.h"
#include "testutil.h"

#include <stdint.h>
#include <stdlib.h>

static void fill(float *x, size_t n, at_rng *r, float lo, float hi) {
    for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * at_rng_uniform(r);
}

/* |a - r| <= atol + rtol*|r| everywhere; reports the worst element. */
static bool near_all(const char *what, const float *a, const double *r, size_t n, double atol,
                     double rtol) {
    double worst = 0;
    size_t wi = 0;
    for (size_t i = 0; i < n; i++) {
        double v = fabs((double)a[i] - r[i]) / (atol + rtol * fabs(r[i]));
        if (!(v <= worst)) {
            worst = v;
            wi = i;
        }
    }
    CHECK_MSG(worst <= 1.0, "%s: element %zu is %.9g, reference %.9g (%.3g tolerances)", what, wi,
              n ? (double)a[wi] : 0.0, n ? r[wi] : 0.0, worst);
    return worst <= 1.0;
}

/* ------------------------------------------------------------ a layer on its own */

enum { GUARD = 7 }; /* canary floats around every tensor the layer owns */
#define CANARY 1234.5f

/* One layer with its tensors at nonzero offsets, canaries around them. */
typedef struct {
    const at_layer_ops *ops;
    at_layer L;
    float *params, *grads, *buffers, *state, *work;
    size_t nparams, nbuffers, nstate, nwork;
    int max_n;
} fixture;

static void guard_fill(float *p, size_t total) {
    for (size_t i = 0; i < total; i++) p[i] = CANARY;
}

/* Canaries still in place outside [lo, lo + count). */
static bool guards_intact(const float *p, size_t lo, size_t count, size_t total) {
    for (size_t i = 0; i < total; i++)
        if ((i < lo || i >= lo + count) && p[i] != CANARY) return false;
    return true;
}

static at_status fixture_make(fixture *F, const at_layer_ops *ops, at_layer_desc d, int c, int h,
                              int w, int max_n, bool relu_out) {
    memset(F, 0, sizeof *F);
    F->ops = ops;
    F->max_n = max_n;
    at_layer *L = &F->L;
    L->d = d;
    L->in_c = c, L->in_h = h, L->in_w = w;
    L->in_size = c * h * w;
    L->index = 3;
    at_status s = ops->setup(L);
    if (s != AT_OK) return s;
    L->out_size = L->out_c * L->out_h * L->out_w;
    L->relu_out = relu_out;
    L->w_off = GUARD;
    L->b_off = L->w_off + L->w_count;
    F->nparams = L->b_off + L->b_count + GUARD;
    size_t nb = 0;
    for (int b = 0; b < L->nbufs; b++) nb += (size_t)L->bufs[b].count;
    L->buf_off = GUARD;
    F->nbuffers = nb + 2 * GUARD;
    L->state_off = GUARD;
    F->nstate = L->state_count + 2 * GUARD;
    F->nwork = ops->workspace(L, max_n);
    F->params = malloc(sizeof(float) * F->nparams);
    F->grads = malloc(sizeof(float) * F->nparams);
    F->buffers = malloc(sizeof(float) * F->nbuffers);
    F->state = malloc(sizeof(float) * F->nstate);
    F->work = malloc(sizeof(float) * (F->nwork ? F->nwork : 1));
    guard_fill(F->params, F->nparams);
    guard_fill(F->grads, F->nparams);
    guard_fill(F->buffers, F->nbuffers);
    guard_fill(F->state, F->nstate);
    return AT_OK;
}

static void fixture_free(fixture *F) {
    free(F->params);
    free(F->grads);
    free(F->buffers);
    free(F->state);
    free(F->work);
}

static at_ctx ctx_of(const fixture *F, bool training) {
    at_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.params = F->params;
    ctx.grads = F->grads;
    ctx.work = F->work;
    ctx.training = training;
    ctx.buffers = F->buffers;
    ctx.state = F->state;
    return ctx;
}

/* The executor's training pass over n samples in chunks [0, split) and [split, n). */
static void sync_forward(const fixture *F, const float *x, float *y, int n, int split) {
    const at_layer *L = &F->L;
    at_ctx ctx = ctx_of(F, true);
    const size_t S = L->stats_count;
    double *acc = calloc(2 * S, sizeof(double));
    const int lo[2] = {0, split}, hi[2] = {split, n};
    for (int k = 0; k < 2; k++)
        if (hi[k] > lo[k])
            F->ops->forward_stats(L, &ctx, x + (size_t)lo[k] * L->in_size, hi[k] - lo[k],
                                  acc + k * S);
    for (size_t i = 0; i < S; i++) acc[i] += acc[S + i];
    F->ops->forward_reduce(L, &ctx, acc, n);
    for (int k = 0; k < 2; k++)
        if (hi[k] > lo[k])
            F->ops->forward(L, &ctx, x + (size_t)lo[k] * L->in_size,
                            y + (size_t)lo[k] * L->out_size, hi[k] - lo[k]);
    free(acc);
}

static void sync_backward(const fixture *F, const float *x, const float *y, const float *dy,
                          float *dx, int n, int split, bool param_grads) {
    const at_layer *L = &F->L;
    at_ctx ctx = ctx_of(F, true);
    const size_t S = L->stats_count;
    double *acc = calloc(2 * S, sizeof(double));
    const int lo[2] = {0, split}, hi[2] = {split, n};
    for (int k = 0; k < 2; k++)
        if (hi[k] > lo[k])
            F->ops->backward_stats(L, &ctx, x + (size_t)lo[k] * L->in_size,
                                   y + (size_t)lo[k] * L->out_size,
                                   dy + (size_t)lo[k] * L->out_size, hi[k] - lo[k], acc + k * S);
    for (size_t i = 0; i < S; i++) acc[i] += acc[S + i];
    F->ops->backward_reduce(L, &ctx, acc, n, param_grads);
    for (int k = 0; k < 2; k++)
        if (hi[k] > lo[k])
            F->ops->backward(L, &ctx, x + (size_t)lo[k] * L->in_size,
                             y + (size_t)lo[k] * L->out_size, dy + (size_t)lo[k] * L->out_size,
                             dx ? dx + (size_t)lo[k] * L->in_size : NULL, hi[k] - lo[k],
                             param_grads);
    free(acc);
}

/* ------------------------------------------------------------ BatchNorm */

#define BN_EPS 1e-5

/* PyTorch's BatchNorm forward in double: batch statistics (training) or the running ones. */
static void bn_ref(int n, int C, int area, const double *x, const double *gamma, const double *beta,
                   bool training, const float *rm, const float *rv, double *y, double *mean_out,
                   double *var_out) {
    for (int c = 0; c < C; c++) {
        double mean = rm[c], var = rv[c];
        if (training) {
            double s = 0, q = 0;
            for (int i = 0; i < n; i++)
                for (int p = 0; p < area; p++) s += x[((size_t)i * C + c) * area + p];
            mean = s / ((double)n * area);
            for (int i = 0; i < n; i++)
                for (int p = 0; p < area; p++) {
                    double d = x[((size_t)i * C + c) * area + p] - mean;
                    q += d * d;
                }
            var = q / ((double)n * area); /* biased, for normalising */
        }
        if (mean_out) mean_out[c] = mean;
        if (var_out) var_out[c] = var;
        for (int i = 0; i < n; i++)
            for (int p = 0; p < area; p++) {
                size_t at = ((size_t)i * C + c) * area + p;
                y[at] = (x[at] - mean) / sqrt(var + BN_EPS) * gamma[c] + beta[c];
            }
    }
}

/* sum r*y of bn_ref with x, gamma, beta in double (training statistics). */
static double bn_objective(int n, int C, int area, const double *x, const double *gamma,
                           const double *beta, bool training, const float *rm, const float *rv,
                           const double *r, double *scratch) {
    bn_ref(n, C, area, x, gamma, beta, training, rm, rv, scratch, NULL, NULL);
    double L = 0;
    for (size_t i = 0; i < (size_t)n * C * area; i++) L += r[i] * scratch[i];
    return L;
}

/* Central differences (double, step 1e-6) of bn_objective in v[0..count). */
static void bn_numeric(int n, int C, int area, double *x, double *gamma, double *beta,
                       bool training, const float *rm, const float *rv, const double *r, double *v,
                       size_t count, double *out) {
    double *scratch = malloc(sizeof(double) * (size_t)n * C * area);
    for (size_t i = 0; i < count; i++) {
        const double keep = v[i], h = 1e-6;
        v[i] = keep + h;
        double lp = bn_objective(n, C, area, x, gamma, beta, training, rm, rv, r, scratch);
        v[i] = keep - h;
        double lm = bn_objective(n, C, area, x, gamma, beta, training, rm, rv, r, scratch);
        v[i] = keep;
        out[i] = (lp - lm) / (2 * h);
    }
    free(scratch);
}

typedef struct {
    const char *label;
    const at_layer_ops *ops;
    int C, H, W, n, split;
    bool relu;
} bn_case;

/* One case's layer and data: x with channels far from zero mean and unit deviation (the
 * normalisation has work to do), dy, random weight, bias and running statistics, and double
 * copies of x, weight and bias for the references. */
typedef struct {
    const bn_case *bc;
    fixture F;
    int C, area, n;
    size_t count;
    float *x, *y, *dy, *dx, *rm0, *rv0;
    double *xd, *gd, *bd;
} bn_run;

static bool bn_run_make(bn_run *R, const bn_case *bc, uint64_t seed) {
    memset(R, 0, sizeof *R);
    at_layer_desc d;
    memset(&d, 0, sizeof d);
    at_status st = fixture_make(&R->F, bc->ops, d, bc->C, bc->H, bc->W, bc->n, bc->relu);
    CHECK_MSG(st == AT_OK, "%s: setup: %s", bc->label, at_error_message());
    if (st != AT_OK) return false;
    const at_layer *L = &R->F.L;
    const int C = bc->C;
    R->bc = bc, R->C = C, R->area = bc->H * bc->W, R->n = bc->n;
    R->count = (size_t)R->n * C * R->area;
    R->x = malloc(sizeof(float) * R->count), R->y = malloc(sizeof(float) * R->count);
    R->dy = malloc(sizeof(float) * R->count), R->dx = malloc(sizeof(float) * R->count);
    R->rm0 = malloc(sizeof(float) * C), R->rv0 = malloc(sizeof(float) * C);
    R->xd = malloc(sizeof(double) * R->count);
    R->gd = malloc(sizeof(double) * C), R->bd = malloc(sizeof(double) * C);
    at_rng r;
    at_rng_seed(&r, seed);
    for (size_t i = 0; i < R->count; i++) {
        const int c = (int)((i / R->area) % C);
        R->x[i] = (float)(c - 1) * 3.0f + (0.5f + c) * (2.0f * at_rng_uniform(&r) - 1.0f);
        R->xd[i] = R->x[i];
    }
    fill(R->dy, R->count, &r, -1.0f, 1.0f);
    float *gamma = R->F.params + L->w_off, *beta = R->F.params + L->b_off;
    float *rm = R->F.buffers + L->buf_off, *rv = rm + C;
    fill(gamma, C, &r, 0.5f, 1.5f);
    fill(beta, C, &r, -0.5f, 0.5f);
    fill(rm, C, &r, -1.0f, 1.0f);
    fill(rv, C, &r, 0.5f, 2.0f);
    rv[C] = 41.0f; /* num_batches_tracked */
    memcpy(R->rm0, rm, sizeof(float) * C);
    memcpy(R->rv0, rv, sizeof(float) * C);
    for (int c = 0; c < C; c++) R->gd[c] = gamma[c], R->bd[c] = beta[c];
    return true;
}

static void bn_run_free(bn_run *R) {
    free(R->x), free(R->y), free(R->dy), free(R->dx), free(R->rm0), free(R->rv0);
    free(R->xd), free(R->gd), free(R->bd);
    fixture_free(&R->F);
}

/* The layer's output (R->y) against PyTorch's forward, rectified if the case fuses a ReLU. */
static void bn_check_output(const bn_run *R, bool training, double *mean, double *var) {
    double *yr = malloc(sizeof(double) * R->count);
    bn_ref(R->n, R->C, R->area, R->xd, R->gd, R->bd, training, R->rm0, R->rv0, yr, mean, var);
    if (R->bc->relu)
        for (size_t i = 0; i < R->count; i++) yr[i] = yr[i] > 0 ? yr[i] : 0;
    char what[160];
    snprintf(what, sizeof what, "%s: %s output", R->bc->label, training ? "training" : "eval");
    near_all(what, R->y, yr, R->count, 2e-6, 2e-6);
    free(yr);
}

/* R->dx and the weight and bias gradients (the grads less `base`) against central differences
 * of PyTorch's forward. With a fused ReLU the gradient of sum dy*relu(z) is that of sum g*z with
 * g = dy where the layer's output is positive (almost everywhere). */
static void bn_check_gradients(const bn_run *R, bool training, float base) {
    const at_layer *L = &R->F.L;
    const int C = R->C;
    double *rd = malloc(sizeof(double) * R->count), *num = malloc(sizeof(double) * R->count);
    double *gnum = malloc(sizeof(double) * 2 * C);
    float *got = malloc(sizeof(float) * 2 * C);
    for (size_t i = 0; i < R->count; i++) rd[i] = !R->bc->relu || R->y[i] > 0 ? R->dy[i] : 0.0;
    bn_numeric(R->n, C, R->area, R->xd, R->gd, R->bd, training, R->rm0, R->rv0, rd, R->xd, R->count,
               num);
    char what[160];
    snprintf(what, sizeof what, "%s: %s input gradient", R->bc->label,
             training ? "training" : "eval");
    near_all(what, R->dx, num, R->count, 2e-5, 1e-4);
    bn_numeric(R->n, C, R->area, R->xd, R->gd, R->bd, training, R->rm0, R->rv0, rd, R->gd, C, gnum);
    bn_numeric(R->n, C, R->area, R->xd, R->gd, R->bd, training, R->rm0, R->rv0, rd, R->bd, C,
               gnum + C);
    for (int i = 0; i < 2 * C; i++) got[i] = R->F.grads[L->w_off + i] - base;
    snprintf(what, sizeof what, "%s: %s weight and bias gradients", R->bc->label,
             training ? "training" : "eval");
    near_all(what, got, gnum, 2 * (size_t)C, 1e-5, 1e-4);
    CHECK_MSG(guards_intact(R->F.grads, L->w_off, 2 * (size_t)C, R->F.nparams),
              "%s: wrote outside its gradients", R->bc->label);
    free(rd), free(num), free(gnum), free(got);
}

/* The running statistics after one training forward: PyTorch's update in double. */
static void bn_check_running(const bn_run *R, const double *mean, const double *var) {
    const at_layer *L = &R->F.L;
    const int C = R->C;
    const float *rm = R->F.buffers + L->buf_off, *rv = rm + C;
    const double N = (double)R->n * R->area;
    double *want = malloc(sizeof(double) * 2 * C);
    for (int c = 0; c < C; c++) {
        want[c] = 0.1 * mean[c] + 0.9 * R->rm0[c];
        want[C + c] = 0.1 * var[c] * N / (N - 1) + 0.9 * R->rv0[c]; /* unbiased */
    }
    char what[160];
    snprintf(what, sizeof what, "%s: running_mean", R->bc->label);
    near_all(what, rm, want, C, 1e-7, 1e-6);
    snprintf(what, sizeof what, "%s: running_var (unbiased)", R->bc->label);
    near_all(what, rv, want + C, C, 1e-7, 1e-6);
    CHECK_MSG(rv[C] == 42.0f, "%s: num_batches_tracked %g, want 42", R->bc->label, (double)rv[C]);
    CHECK_MSG(guards_intact(R->F.buffers, L->buf_off, 2 * (size_t)C + 1, R->F.nbuffers),
              "%s: wrote outside its buffers", R->bc->label);
    free(want);
}

/* Training mode the way the executor runs it: forward, running statistics, backward with both
 * flags, dx NULL and in place. */
static void check_bn_training(const bn_case *bc) {
    bn_run R;
    if (!bn_run_make(&R, bc, 77 + (uint64_t)bc->C * 5 + bc->n)) return;
    const at_layer *L = &R.F.L;
    const size_t np = R.F.nparams, bytes = sizeof(float) * R.count;
    double *mean = malloc(sizeof(double) * R.C), *var = malloc(sizeof(double) * R.C);
    sync_forward(&R.F, R.x, R.y, R.n, bc->split);
    bn_check_output(&R, true, mean, var);
    bn_check_running(&R, mean, var);
    /* Gradients start at 0.25 and must end at 0.25 + the batch sums (added once, by the reduce). */
    for (size_t i = L->w_off; i < L->b_off + L->b_count; i++) R.F.grads[i] = 0.25f;
    sync_backward(&R.F, R.x, R.y, R.dy, R.dx, R.n, bc->split, true);
    bn_check_gradients(&R, true, 0.25f);
    /* Without parameter gradients: the same dx to the bit, gradients untouched. */
    float *g0 = malloc(sizeof(float) * np), *dx2 = malloc(bytes),
          *once = malloc(sizeof(float) * 2 * R.C);
    memcpy(g0, R.F.grads, sizeof(float) * np);
    sync_backward(&R.F, R.x, R.y, R.dy, dx2, R.n, bc->split, false);
    CHECK_MSG(memcmp(R.dx, dx2, bytes) == 0, "%s: dx depends on param_grads", bc->label);
    CHECK_MSG(memcmp(g0, R.F.grads, sizeof(float) * np) == 0,
              "%s: gradients written without param_grads", bc->label);
    /* dx NULL: the parameter gradients alone, the same increments again. */
    for (int i = 0; i < 2 * R.C; i++) once[i] = R.F.grads[L->w_off + i] - 0.25f;
    sync_backward(&R.F, R.x, R.y, R.dy, NULL, R.n, bc->split, true);
    bool twice = true;
    for (int i = 0; i < 2 * R.C; i++)
        twice = twice && fabsf(R.F.grads[L->w_off + i] - 0.25f - 2 * once[i]) <=
                             1e-5f * (1 + fabsf(once[i]));
    CHECK_MSG(twice, "%s: a second backward (dx NULL) does not add the same gradients", bc->label);
    /* In place (dx = dy), as an executor may run an elementwise layer. */
    memcpy(dx2, R.dy, bytes);
    sync_backward(&R.F, R.x, R.y, dx2, dx2, R.n, bc->split, false);
    CHECK_MSG(memcmp(R.dx, dx2, bytes) == 0, "%s: dx = dy in place differs", bc->label);
    free(mean), free(var), free(g0), free(dx2), free(once);
    bn_run_free(&R);
}

/* Eval mode, in two chunks as two threads would run them: the running statistics' affine map;
 * nothing written but y, dx and the gradients. */
static void check_bn_eval(const bn_case *bc) {
    bn_run R;
    if (!bn_run_make(&R, bc, 99 + (uint64_t)bc->C)) return;
    const at_layer *L = &R.F.L;
    const at_layer_ops *ops = bc->ops;
    const int split = bc->split;
    const size_t in0 = (size_t)split * L->in_size, out0 = (size_t)split * L->out_size;
    float *buf0 = malloc(sizeof(float) * R.F.nbuffers), *st0 = malloc(sizeof(float) * R.F.nstate);
    memcpy(buf0, R.F.buffers, sizeof(float) * R.F.nbuffers);
    memcpy(st0, R.F.state, sizeof(float) * R.F.nstate);
    at_ctx ctx = ctx_of(&R.F, false);
    ops->forward(L, &ctx, R.x, R.y, split);
    ops->forward(L, &ctx, R.x + in0, R.y + out0, R.n - split);
    bn_check_output(&R, false, NULL, NULL);
    for (size_t i = L->w_off; i < L->b_off + L->b_count; i++) R.F.grads[i] = -0.5f;
    ops->backward(L, &ctx, R.x, R.y, R.dy, R.dx, split, true);
    ops->backward(L, &ctx, R.x + in0, R.y + out0, R.dy + out0, R.dx + in0, R.n - split, true);
    bn_check_gradients(&R, false, -0.5f);
    CHECK_MSG(memcmp(buf0, R.F.buffers, sizeof(float) * R.F.nbuffers) == 0,
              "%s: eval mode changed a buffer", bc->label);
    CHECK_MSG(memcmp(st0, R.F.state, sizeof(float) * R.F.nstate) == 0,
              "%s: eval mode changed the state", bc->label);
    /* Without param_grads the gradients stay; dx NULL with param_grads writes only them. */
    float *g0 = malloc(sizeof(float) * R.F.nparams);
    memcpy(g0, R.F.grads, sizeof(float) * R.F.nparams);
    ops->backward(L, &ctx, R.x, R.y, R.dy, R.dx, R.n, false);
    CHECK_MSG(memcmp(g0, R.F.grads, sizeof(float) * R.F.nparams) == 0,
              "%s: eval gradients written without param_grads", bc->label);
    ops->backward(L, &ctx, R.x, R.y, R.dy, NULL, R.n, true);
    CHECK_MSG(guards_intact(R.F.grads, L->w_off, 2 * (size_t)R.C, R.F.nparams),
              "%s: wrote outside its gradients", bc->label);
    free(buf0), free(st0), free(g0);
    bn_run_free(&R);
}

/* Setup's description of the tensors, init, describe, and BatchNorm1d's shape rule. */
static void check_bn_tables(void) {
    at_layer_desc d;
    memset(&d, 0, sizeof d);
    fixture F;
    CHECK_OK(fixture_make(&F, &at_batchnorm2d_ops, d, 16, 3, 2, 4, false));
    const at_layer *L = &F.L;
    CHECK(L->out_c == 16 && L->out_h == 3 && L->out_w == 2);
    CHECK(L->w_count == 16 && L->b_count == 16 && L->w_ndim == 1 && L->w_shape[0] == 16);
    CHECK(L->nbufs == 3);
    CHECK(strcmp(L->bufs[0].suffix, "running_mean") == 0 && L->bufs[0].count == 16 &&
          !L->bufs[0].integer);
    CHECK(strcmp(L->bufs[1].suffix, "running_var") == 0 && L->bufs[1].count == 16 &&
          !L->bufs[1].integer);
    CHECK(strcmp(L->bufs[2].suffix, "num_batches_tracked") == 0 && L->bufs[2].count == 1 &&
          L->bufs[2].integer);
    CHECK(L->state_count == 64 && L->stats_count == 32);
    CHECK(at_batchnorm2d_ops.fuses_relu && at_batchnorm2d_ops.fuses_relu(L));
    at_batchnorm2d_ops.init(L, F.params, F.buffers);
    bool ok = guards_intact(F.params, L->w_off, 32, F.nparams) &&
              guards_intact(F.buffers, L->buf_off, 33, F.nbuffers);
    for (int c = 0; c < 16; c++)
        ok = ok && F.params[L->w_off + c] == 1.0f && F.params[L->b_off + c] == 0.0f &&
             F.buffers[L->buf_off + c] == 0.0f && F.buffers[L->buf_off + 16 + c] == 1.0f;
    ok = ok && F.buffers[L->buf_off + 32] == 0.0f;
    CHECK_MSG(ok, "bn init: weight 1, bias 0, running_mean 0, running_var 1, count 0 expected");
    char buf[160];
    at_batchnorm2d_ops.describe(L, buf, sizeof buf);
    CHECK_MSG(strcmp(buf, "BatchNorm2d(16, eps=1e-05, momentum=0.1, affine=True, "
                          "track_running_stats=True)") == 0,
              "describe: %s", buf);
    CHECK(strcmp(at_batchnorm2d_ops.name, "bn") == 0 &&
          strcmp(at_batchnorm1d_ops.name, "bn1d") == 0);
    fixture_free(&F);

    CHECK_OK(fixture_make(&F, &at_batchnorm1d_ops, d, 12, 1, 1, 4, false));
    at_batchnorm1d_ops.describe(&F.L, buf, sizeof buf);
    CHECK_MSG(strcmp(buf, "BatchNorm1d(12, eps=1e-05, momentum=0.1, affine=True, "
                          "track_running_stats=True)") == 0,
              "describe: %s", buf);
    fixture_free(&F);
    at_layer L1;
    memset(&L1, 0, sizeof L1);
    L1.in_c = 4, L1.in_h = 3, L1.in_w = 3, L1.in_size = 36;
    CHECK(at_batchnorm1d_ops.setup(&L1) == AT_ERR_SHAPE);
    CHECK_MSG(strstr(at_error_message(), "bn1d") != NULL, "message: %s", at_error_message());
}

static void test_batchnorm(void) {
    check_bn_tables();
    const bn_case cases[] = {
        {"bn 3x4x5 n=5", &at_batchnorm2d_ops, 3, 4, 5, 5, 2, false},
        {"bn 3x4x5 n=5 +relu", &at_batchnorm2d_ops, 3, 4, 5, 5, 3, true},
        {"bn 4x7x9 n=3 (odd planes)", &at_batchnorm2d_ops, 4, 7, 9, 3, 1, false},
        {"bn 2x1x3 n=1 (one sample, N=3)", &at_batchnorm2d_ops, 2, 1, 3, 1, 1, false},
        {"bn 5x1x1 n=4", &at_batchnorm2d_ops, 5, 1, 1, 4, 2, false},
        {"bn1d 6 n=4", &at_batchnorm1d_ops, 6, 1, 1, 4, 1, false},
        {"bn1d 9 n=7 +relu", &at_batchnorm1d_ops, 9, 1, 1, 7, 4, true},
        {"bn1d 3 n=2 (N=2)", &at_batchnorm1d_ops, 3, 1, 1, 2, 1, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        check_bn_training(&cases[i]);
        check_bn_eval(&cases[i]);
    }
}

/* ------------------------------------------------------------ Add and global pooling */

static void test_add(void) {
    at_layer_desc d;
    memset(&d, 0, sizeof d);
    for (int relu = 0; relu < 2; relu++) {
        fixture F;
        CHECK_OK(fixture_make(&F, &at_add_ops, d, 3, 2, 5, 4, relu));
        const at_layer *L = &F.L;
        CHECK(at_add_ops.inputs == 2 && L->out_size == 30 && L->w_count == 0 && L->b_count == 0);
        const size_t count = 4 * 30;
        float x[120], x2[120], y[120], dy[120], dx[120], dx2[120], in_place[120];
        at_rng r;
        at_rng_seed(&r, 5 + relu);
        fill(x, count, &r, -1, 1);
        fill(x2, count, &r, -1, 1);
        fill(dy, count, &r, -1, 1);
        at_ctx ctx = ctx_of(&F, false);
        ctx.x2 = x2;
        at_add_ops.forward(L, &ctx, x, y, 4);
        int bad = 0;
        for (size_t i = 0; i < count; i++)
            bad += y[i] != (relu ? at_relu(x[i] + x2[i]) : x[i] + x2[i]);
        CHECK_MSG(bad == 0, "add%s: %d outputs wrong", relu ? " +relu" : "", bad);
        ctx.dx2 = dx2;
        at_add_ops.backward(L, &ctx, x, y, dy, dx, 4, true);
        bad = 0;
        for (size_t i = 0; i < count; i++) {
            const float want = relu && !(y[i] > 0) ? 0.0f : dy[i];
            bad += dx[i] != want || dx2[i] != want;
        }
        CHECK_MSG(bad == 0, "add%s: %d gradients wrong", relu ? " +relu" : "", bad);
        /* Either gradient alone, and in place. */
        memset(dx2, 0, sizeof dx2);
        ctx.dx2 = NULL;
        at_add_ops.backward(L, &ctx, x, y, dy, dx2, 4, true);
        CHECK(memcmp(dx2, dx, sizeof dx) == 0);
        memset(dx2, 0, sizeof dx2);
        ctx.dx2 = dx2;
        at_add_ops.backward(L, &ctx, x, y, dy, NULL, 4, true);
        CHECK(memcmp(dx2, dx, sizeof dx) == 0);
        memcpy(in_place, dy, sizeof dy);
        at_add_ops.backward(L, &ctx, x, y, in_place, in_place, 4, true);
        CHECK(memcmp(in_place, dx, sizeof dx) == 0 && memcmp(dx2, dx, sizeof dx) == 0);
        CHECK(at_add_ops.fuses_relu && at_add_ops.fuses_relu(L));
        char buf[64];
        at_add_ops.describe(L, buf, sizeof buf);
        CHECK(strcmp(buf, "Add()") == 0);
        snprintf(d.input2, sizeof d.input2, "block1");
        at_add_ops.spec_word(&d, buf, sizeof buf);
        CHECK_MSG(strcmp(buf, "add:block1") == 0, "spec word %s", buf);
        d.input2[0] = '\0';
        fixture_free(&F);
    }
}

static void test_globalpool(void) {
    at_layer_desc d;
    memset(&d, 0, sizeof d);
    fixture F;
    const int C = 3, H = 5, W = 7, n = 2, area = H * W;
    CHECK_OK(fixture_make(&F, &at_globalavgpool_ops, d, C, H, W, n, false));
    const at_layer *L = &F.L;
    CHECK(L->out_c == C && L->out_h == 1 && L->out_w == 1 && L->w_count == 0);
    float x[2 * 3 * 35], y[6], dy[6], dx[2 * 3 * 35];
    at_rng r;
    at_rng_seed(&r, 11);
    fill(x, sizeof x / sizeof x[0], &r, -1, 1);
    fill(dy, 6, &r, -1, 1);
    at_ctx ctx = ctx_of(&F, false);
    at_globalavgpool_ops.forward(L, &ctx, x, y, n);
    double ref[6];
    for (int i = 0; i < n * C; i++) {
        double s = 0;
        for (int p = 0; p < area; p++) s += x[i * area + p];
        ref[i] = s / area;
    }
    near_all("gap forward", y, ref, 6, 1e-7, 1e-6);
    at_globalavgpool_ops.backward(L, &ctx, x, y, dy, dx, n, true);
    int bad = 0;
    for (int i = 0; i < n * C * area; i++) bad += dx[i] != dy[i / area] / (float)area;
    CHECK_MSG(bad == 0, "gap backward: %d values not dy/(H*W)", bad);
    char buf[64];
    at_globalavgpool_ops.describe(L, buf, sizeof buf);
    CHECK(strcmp(buf, "AdaptiveAvgPool2d(output_size=1)") == 0);
    fixture_free(&F);

    /* A 64x64 plane of 1 + 2^-20 steps: a float running sum drifts, the mean must be right to
     * float rounding. */
    CHECK_OK(fixture_make(&F, &at_globalavgpool_ops, d, 1, 64, 64, 1, false));
    float *big = malloc(sizeof(float) * 4096), out;
    double s = 0;
    for (int i = 0; i < 4096; i++) s += big[i] = 1.0f + (float)(i % 17) * 0x1p-20f;
    ctx = ctx_of(&F, false);
    at_globalavgpool_ops.forward(&F.L, &ctx, big, &out, 1);
    CHECK_MSG(out == (float)(s / 4096), "gap of a large plane: %.9g, want %.9g", (double)out,
              s / 4096);
    free(big);
    fixture_free(&F);
}

/* ------------------------------------------------------------ convolutions */

/* nn.Conv2d in double, with groups and an optional bias. */
static void conv_ref(const at_layer *L, const float *W, const float *b, const float *x, int n,
                     double *y) {
    const int C = L->in_c, H = L->in_h, Wd = L->in_w, K = L->d.kernel, S = L->d.stride,
              P = L->d.pad;
    const int OC = L->out_c, OH = L->out_h, OW = L->out_w;
    const int G = L->d.groups > 1 ? L->d.groups : 1, Cg = C / G, Og = OC / G;
    for (int s = 0; s < n; s++)
        for (int o = 0; o < OC; o++)
            for (int oh = 0; oh < OH; oh++)
                for (int ow = 0; ow < OW; ow++) {
                    double acc = b ? b[o] : 0.0;
                    for (int cg = 0; cg < Cg; cg++)
                        for (int ki = 0; ki < K; ki++)
                            for (int kj = 0; kj < K; kj++) {
                                const int c = (o / Og) * Cg + cg, ih = oh * S - P + ki,
                                          iw = ow * S - P + kj;
                                if (ih < 0 || ih >= H || iw < 0 || iw >= Wd) continue;
                                acc += (double)W[(((size_t)o * Cg + cg) * K + ki) * K + kj] *
                                       x[(((size_t)s * C + c) * H + ih) * Wd + iw];
                            }
                    y[(((size_t)s * OC + o) * OH + oh) * OW + ow] = acc;
                }
}

/* The adjoint of conv_ref for output gradient g: dx (=), dW and db (+=, db may be NULL). */
static void conv_ref_backward(const at_layer *L, const float *W, const float *x, const double *g,
                              int n, double *dx, double *dW, double *db) {
    const int C = L->in_c, H = L->in_h, Wd = L->in_w, K = L->d.kernel, S = L->d.stride,
              P = L->d.pad;
    const int OC = L->out_c, OH = L->out_h, OW = L->out_w;
    const int G = L->d.groups > 1 ? L->d.groups : 1, Cg = C / G, Og = OC / G;
    memset(dx, 0, sizeof(double) * (size_t)n * L->in_size);
    for (int s = 0; s < n; s++)
        for (int o = 0; o < OC; o++)
            for (int oh = 0; oh < OH; oh++)
                for (int ow = 0; ow < OW; ow++) {
                    const double go = g[(((size_t)s * OC + o) * OH + oh) * OW + ow];
                    if (db) db[o] += go;
                    for (int cg = 0; cg < Cg; cg++)
                        for (int ki = 0; ki < K; ki++)
                            for (int kj = 0; kj < K; kj++) {
                                const int c = (o / Og) * Cg + cg, ih = oh * S - P + ki,
                                          iw = ow * S - P + kj;
                                if (ih < 0 || ih >= H || iw < 0 || iw >= Wd) continue;
                                const size_t wi = (((size_t)o * Cg + cg) * K + ki) * K + kj;
                                const size_t xi = (((size_t)s * C + c) * H + ih) * Wd + iw;
                                dx[xi] += W[wi] * go;
                                dW[wi] += x[xi] * go;
                            }
                }
}

static at_layer_desc conv_desc(int out, int k, int s, int p, int groups, bool no_bias) {
    at_layer_desc d;
    memset(&d, 0, sizeof d);
    d.kind = AT_LAYER_CONV2D;
    d.out = out, d.kernel = k, d.stride = s, d.pad = p, d.groups = groups, d.no_bias = no_bias;
    return d;
}

typedef struct {
    const char *label;
    at_layer_desc d;
    int C, H, W, n;
    bool relu;
} conv_case;

static void check_conv(const conv_case *cc) {
    fixture F;
    at_status st = fixture_make(&F, &at_conv2d_ops, cc->d, cc->C, cc->H, cc->W, cc->n, cc->relu);
    CHECK_MSG(st == AT_OK, "%s: setup: %s", cc->label, at_error_message());
    if (st != AT_OK) return;
    const at_layer *L = &F.L;
    const int G = cc->d.groups > 1 ? cc->d.groups : 1, n = cc->n;
    CHECK_MSG(L->w_shape[0] == cc->d.out && L->w_shape[1] == cc->C / G &&
                  L->w_shape[2] == cc->d.kernel && L->w_shape[3] == cc->d.kernel &&
                  L->w_count == (size_t)cc->d.out * (cc->C / G) * cc->d.kernel * cc->d.kernel,
              "%s: weight shape", cc->label);
    CHECK_MSG(L->b_count == (cc->d.no_bias ? 0u : (size_t)cc->d.out), "%s: bias count", cc->label);
    const size_t nin = (size_t)n * L->in_size, nout = (size_t)n * L->out_size;
    at_rng r;
    at_rng_seed(&r, 1000 + (uint64_t)cc->C * 7 + cc->d.out);
    float *x = malloc(sizeof(float) * nin), *y = malloc(sizeof(float) * nout);
    float *dy = malloc(sizeof(float) * nout), *dx = malloc(sizeof(float) * nin);
    fill(x, nin, &r, -1, 1);
    fill(dy, nout, &r, -1, 1);
    float *W = F.params + L->w_off, *b = L->b_count ? F.params + L->b_off : NULL;
    fill(W, L->w_count, &r, -0.5f, 0.5f);
    if (b) fill(b, L->b_count, &r, -0.5f, 0.5f);
    at_ctx ctx = ctx_of(&F, false);
    at_conv2d_ops.forward(L, &ctx, x, y, n);
    double *yr = malloc(sizeof(double) * nout);
    conv_ref(L, W, b, x, n, yr);
    if (cc->relu)
        for (size_t i = 0; i < nout; i++) yr[i] = yr[i] > 0 ? yr[i] : 0;
    char what[200];
    snprintf(what, sizeof what, "%s: forward", cc->label);
    near_all(what, y, yr, nout, 1e-5, 1e-5);

    for (size_t i = L->w_off; i < L->b_off + L->b_count; i++) F.grads[i] = 0.0f;
    at_conv2d_ops.backward(L, &ctx, x, y, dy, dx, n, true);
    double *g = malloc(sizeof(double) * nout), *dxr = malloc(sizeof(double) * nin);
    double *dWr = calloc(L->w_count + L->b_count + 1, sizeof(double));
    for (size_t i = 0; i < nout; i++) g[i] = !cc->relu || y[i] > 0 ? dy[i] : 0.0;
    conv_ref_backward(L, W, x, g, n, dxr, dWr, L->b_count ? dWr + L->w_count : NULL);
    snprintf(what, sizeof what, "%s: input gradient", cc->label);
    near_all(what, dx, dxr, nin, 1e-5, 1e-5);
    snprintf(what, sizeof what, "%s: weight (and bias) gradient", cc->label);
    near_all(what, F.grads + L->w_off, dWr, L->w_count + L->b_count, 1e-5, 1e-5);
    CHECK_MSG(guards_intact(F.grads, L->w_off, L->w_count + L->b_count, F.nparams),
              "%s: wrote outside its gradients (a bias it does not have?)", cc->label);
    /* Flags: no param_grads leaves the gradients; dx NULL adds them again. */
    float *g0 = malloc(sizeof(float) * F.nparams), *dx2 = malloc(sizeof(float) * nin);
    memcpy(g0, F.grads, sizeof(float) * F.nparams);
    at_conv2d_ops.backward(L, &ctx, x, y, dy, dx2, n, false);
    CHECK_MSG(memcmp(g0, F.grads, sizeof(float) * F.nparams) == 0,
              "%s: gradients written without param_grads", cc->label);
    CHECK_MSG(memcmp(dx, dx2, sizeof(float) * nin) == 0, "%s: dx depends on param_grads",
              cc->label);
    at_conv2d_ops.backward(L, &ctx, x, y, dy, NULL, n, true);
    for (size_t i = 0; i < L->w_count + L->b_count; i++) dWr[i] *= 2;
    snprintf(what, sizeof what, "%s: gradients added twice (dx NULL)", cc->label);
    near_all(what, F.grads + L->w_off, dWr, L->w_count + L->b_count, 2e-5, 1e-5);
    free(x), free(y), free(dy), free(dx), free(yr), free(g), free(dxr), free(dWr), free(g0),
        free(dx2);
    fixture_free(&F);
}

static void test_conv(void) {
    const conv_case cases[] = {
        /* Grouped (general): two and four groups, strides and padding. */
        {"conv g2 k3 s1 p1 4x6x7 -> 6", conv_desc(6, 3, 1, 1, 2, false), 4, 6, 7, 3, false},
        {"conv g2 k3 s2 p0 4x9x8 -> 4", conv_desc(4, 3, 2, 0, 2, false), 4, 9, 8, 2, false},
        {"conv g4 k3 s2 p1 8x7x7 -> 8 bias=0 +relu", conv_desc(8, 3, 2, 1, 4, true), 8, 7, 7, 3,
         true},
        {"conv g2 k1 s1 p0 6x4x5 -> 4 (pointwise)", conv_desc(4, 1, 1, 0, 2, false), 6, 4, 5, 2,
         false},
        /* Depthwise (groups = in_channels), multiplier 1 and 2. */
        {"conv dw k3 s1 p1 5x8x19", conv_desc(5, 3, 1, 1, 5, false), 5, 8, 19, 3, false},
        {"conv dw k3 s2 p1 4x9x10 bias=0", conv_desc(4, 3, 2, 1, 4, true), 4, 9, 10, 2, false},
        {"conv dw k5 s1 p2 3x6x40 +relu", conv_desc(3, 5, 1, 2, 3, false), 3, 6, 40, 2, true},
        {"conv dw x2 k3 s1 p0 3x7x6 -> 6", conv_desc(6, 3, 1, 0, 3, false), 3, 7, 6, 3, false},
        {"conv dw k3 s3 p2 2x8x8 bias=0 +relu", conv_desc(2, 3, 3, 2, 2, true), 2, 8, 8, 2, true},
        /* Stride 1 takes row tiles of four rows by one vector (tails of 3 and 8 lanes here);
         * padding of K or more adds the input gradient back tap by tap instead. */
        {"conv dw x2 k3 s1 p1 3x9x37 -> 6", conv_desc(6, 3, 1, 1, 3, false), 3, 9, 37, 2, false},
        {"conv dw k3 s1 p3 2x5x6 (padding = kernel)", conv_desc(2, 3, 1, 3, 2, false), 2, 5, 6, 2,
         false},
        {"conv dw k1 s1 p0 4x3x20 bias=0 +relu", conv_desc(4, 1, 1, 0, 4, true), 4, 3, 20, 3, true},
        /* Dense without bias: the direct path (small, stride 1) and im2row (stride 2, many
         * outputs), with and without a fused ReLU; a dense layer with bias for comparison. */
        {"conv dense direct k3 s1 p1 3x8x9 bias=0", conv_desc(5, 3, 1, 1, 0, true), 3, 8, 9, 3,
         false},
        {"conv dense direct k3 s1 p0 6x7x9 bias=0 +relu (scatter)", conv_desc(7, 3, 1, 0, 1, true),
         6, 7, 9, 3, true},
        {"conv dense im2row k3 s2 p1 3x9x8 bias=0", conv_desc(6, 3, 2, 1, 0, true), 3, 9, 8, 3,
         false},
        {"conv dense im2row k2 s1 p0 2x5x6 -> 40 bias=0 +relu", conv_desc(40, 2, 1, 0, 1, true), 2,
         5, 6, 4, true},
        {"conv dense im2row k3 s2 p1 3x9x8 bias", conv_desc(6, 3, 2, 1, 0, false), 3, 9, 8, 3,
         false},
        {"conv dense direct k3 s1 p1 3x8x9 bias", conv_desc(5, 3, 1, 1, 1, false), 3, 8, 9, 1,
         true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_conv(&cases[i]);

    /* Groups that do not divide the channels, and negative groups. */
    at_layer L;
    memset(&L, 0, sizeof L);
    L.in_c = 6, L.in_h = L.in_w = 5, L.in_size = 150;
    L.d = conv_desc(4, 3, 1, 1, 4, false);
    CHECK(at_conv2d_ops.setup(&L) == AT_ERR_SHAPE);
    CHECK_MSG(strstr(at_error_message(), "groups") != NULL, "message: %s", at_error_message());
    L.d = conv_desc(5, 3, 1, 1, 3, false);
    CHECK(at_conv2d_ops.setup(&L) == AT_ERR_SHAPE);
    L.d = conv_desc(6, 3, 1, 1, -2, false);
    CHECK(at_conv2d_ops.setup(&L) == AT_ERR_SHAPE);
    L.d = conv_desc(6, 3, 1, 1, 3, true);
    CHECK_OK(at_conv2d_ops.setup(&L));
    CHECK(L.kept_per_sample == 0 && L.b_count == 0 && L.w_count == 6 * 2 * 9);
    char buf[160];
    at_conv2d_ops.describe(&L, buf, sizeof buf);
    CHECK_MSG(
        strcmp(buf, "Conv2d(6, 6, kernel_size=3, stride=1, padding=1, groups=3, bias=False)") == 0,
        "describe: %s", buf);
}

int main(void) {
    test_batchnorm();
    test_add();
    test_globalpool();
    test_conv();
    return tu_finish("test_layers_graph");
}
