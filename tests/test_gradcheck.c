/* Gradient checks: the backward pass of every layer kind against central differences of its
 * forward pass (parameter and input gradients), the backward flags, accumulation and threads,
 * plus whole-network checks of the built-in models along a direction (two extra forward passes
 * each, as kann does).
 *
 * Per-layer objective: L = sum_i r_i * out_i with a fixed random r, so dL/dlogits = r. The
 * comparison uses |a - n| <= atol + rtol * max(|a|, |n|) per element (stable near zero, as ggml's
 * test-grad0) and a normalized error ||a - n|| / (||a|| + ||n||) over the whole vector. Kinks are
 * filtered out: ReLU-family inputs within 2 eps of zero, max-pool windows whose top two values
 * are within 2.5 eps of each other. Dropout in train mode is checked with at_net_seed before
 * every pass, which repeats the dropout key (key = f(seed, forward count)).
 * GC_VERBOSE=1 prints every comparison's error. */
#include "advtrain.h"
#include "testutil.h"

#include <stdint.h>
#include <stdlib.h>

#define EPS 1e-2f
#define ATOL 2e-4
#define RTOL 2e-3
#define NORM_TOL 2e-4
#define SEED_DROPOUT 4242

/* KINK_ANY: ReLUs inside a chain of layers. Their inputs are watched through networks made of
 * the chain up to each ReLU: an element is skipped when moving it by +-EPS flips the sign of any
 * ReLU input. */
enum { KINK_NONE, KINK_RELU, KINK_MAXPOOL, KINK_ANY };

static at_layer_desc mk(at_layer_kind kind, int out, int kernel, int stride, int pad, float alpha) {
    at_layer_desc d;
    memset(&d, 0, sizeof d);
    d.kind = kind;
    d.out = out;
    d.kernel = kernel;
    d.stride = stride;
    d.pad = pad;
    d.alpha = alpha;
    return d;
}

/* Conv2d with groups and bias=False (no_bias). */
static at_layer_desc conv_g(int out, int k, int s, int p, int groups, bool no_bias) {
    at_layer_desc d = mk(AT_LAYER_CONV2D, out, k, s, p, 0);
    d.groups = groups;
    d.no_bias = no_bias;
    return d;
}

/* d reading node `in` ("" = the node before) and, for an Add, `in2` ("input" = the network's). */
static at_layer_desc reading(at_layer_desc d, const char *in, const char *in2) {
    snprintf(d.input, sizeof d.input, "%s", in);
    snprintf(d.input2, sizeof d.input2, "%s", in2);
    return d;
}

typedef struct {
    const char *label;
    at_layer_desc d;
    int c, h, w;
    int kink;
    bool training;
    bool distinct; /* inputs distinct within each plane (max pooling: no near-ties) */
    /* A chain of layers instead of d alone (the head, if any, after its last node); the
     * forward is then not compared with ref_forward. */
    const at_layer_desc *chain;
    int nchain;
    int min_batch; /* smaller batches skipped (BatchNorm1d in training needs 2 samples) */
    int max_batch; /* larger batches skipped, if not 0 */
} gc_case;

static void fill(float *x, size_t n, at_rng *r, float lo, float hi) {
    for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * at_rng_uniform(r);
}

/* Values -2 .. 2 in a random order within each plane: neighbours differ by 4/(area-1). */
static void fill_distinct(float *x, int planes, int area, at_rng *r) {
    int32_t *perm = malloc(sizeof(int32_t) * (size_t)area);
    for (int p = 0; p < planes; p++) {
        for (int i = 0; i < area; i++) perm[i] = i;
        at_rng_shuffle(r, perm, area);
        for (int i = 0; i < area; i++)
            x[(size_t)p * area + i] = -2.0f + 4.0f * (float)perm[i] / (float)(area > 1 ? area - 1 : 1);
    }
    free(perm);
}

static double objective(at_net *net, const float *x, int n, const float *r) {
    at_net_seed(net, SEED_DROPOUT); /* the same dropout key on every pass */
    const float *y = NULL;
    at_status s = at_net_forward(net, x, n, &y);
    if (s != AT_OK || !y) return NAN;
    double L = 0;
    size_t count = (size_t)n * at_net_out_size(net);
    for (size_t i = 0; i < count; i++) L += (double)r[i] * y[i];
    return L;
}

/* Whether moving input element j (of sample-major x) by +-eps can cross a max-pool tie. */
static bool maxpool_near_tie(const at_layer_desc *d, int C, int H, int W, const float *x, size_t j,
                             float eps) {
    const int K = d->kernel, S = d->stride ? d->stride : d->kernel, P = d->pad;
    const int OH = (H + 2 * P - K) / S + 1, OW = (W + 2 * P - K) / S + 1;
    const size_t area = (size_t)H * W;
    const float *plane = x + (j / area) * area;
    const int ih0 = (int)(j % area) / W, iw0 = (int)(j % area) % W;
    (void)C;
    for (int oh = 0; oh < OH; oh++)
        for (int ow = 0; ow < OW; ow++) {
            int h0 = oh * S - P, w0 = ow * S - P;
            if (ih0 < h0 || ih0 >= h0 + K || iw0 < w0 || iw0 >= w0 + K) continue;
            float a = -INFINITY, b = -INFINITY; /* top two */
            for (int ki = 0; ki < K; ki++)
                for (int kj = 0; kj < K; kj++) {
                    int ih = h0 + ki, iw = w0 + kj;
                    if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                    float v = plane[ih * W + iw];
                    if (v > a) {
                        b = a;
                        a = v;
                    } else if (v > b) {
                        b = v;
                    }
                }
            if (a - b < 2.5f * eps) return true;
        }
    return false;
}

/* How close a numeric gradient must be, and how many elements may be skipped as kinks. */
typedef struct {
    double atol, norm_tol, max_skipped;
    double floor; /* the normalized error's denominator is at least floor*sqrt(elements checked) */
} gc_tol;

/* One layer: the tolerances above, at most half the elements skipped. */
static const gc_tol layer_tol = {ATOL, NORM_TOL, 0.5, 0.0};
/* Chains: the numeric gradient of several float32 layers carries rounding noise of a few 1e-4
 * (about 1e-7 relative in each of a thousand outputs, over a step of 1e-2), which is what these
 * bounds allow; a wiring error (a wrong input, a lost gradient, a missed sync point) is an error
 * of order one. The kernels' own precision is checked in double (test_layers_graph.c). The ReLU
 * probe skips exactly the elements whose step flips a ReLU input: in training mode a weight
 * moves every value of its channel, so most of them; what is left is still checked. A gradient
 * vector whose elements are below atol (an input gradient through pooling and a classifier)
 * is held to atol, not to its own size, by the floor. */
static const gc_tol chain_tol = {1e-3, 3e-3, 0.85, 1e-3};

/* Compares analytic and numeric gradients; skip[i] marks kinks. Returns true if all agree. */
static bool compare(const char *label, const char *what, const float *a, const double *num,
                    const unsigned char *skip, size_t n, const gc_tol *tol) {
    double diff2 = 0, a2 = 0, n2 = 0, worst = 0;
    size_t worst_i = 0, skipped = 0;
    for (size_t i = 0; i < n; i++) {
        if (skip && skip[i]) {
            skipped++;
            continue;
        }
        double d = (double)a[i] - num[i];
        diff2 += d * d;
        a2 += (double)a[i] * a[i];
        n2 += num[i] * num[i];
        double v = fabs(d) / (tol->atol + RTOL * fmax(fabs((double)a[i]), fabs(num[i])));
        if (!(v <= worst)) {
            worst = v;
            worst_i = i;
        }
    }
    double norm_err =
        sqrt(diff2) / fmax(sqrt(a2) + sqrt(n2) + 1e-12, tol->floor * sqrt((double)(n - skipped)));
    if (getenv("GC_VERBOSE"))
        fprintf(stderr, "STAT %s %s worst %.3g norm %.3g skipped %zu/%zu\n", label, what, worst,
                norm_err, skipped, n);
    bool ok = worst <= 1.0 && norm_err <= tol->norm_tol && skipped <= tol->max_skipped * n;
    CHECK_MSG(ok,
              "%s %s: worst element %zu analytic %.7g numeric %.7g (%.3g tolerances), normalized "
              "error %.3g, %zu of %zu skipped",
              label, what, worst_i, (double)a[worst_i], num[worst_i], worst, norm_err, skipped, n);
    return ok;
}

/* ------------------------------------------------------------ reference forward passes */

/* BatchNorm in eval mode (weight and bias, then running_mean and running_var, PyTorch's order)
 * and global average pooling, on one sample of C planes. */
static void ref_forward_planes(const at_layer_desc *d, int C, int area, const float *params,
                               const float *buffers, const float *x, double *y, int *out_size) {
    for (int c = 0; c < C; c++) {
        const float *plane = x + (size_t)c * area;
        if (d->kind == AT_LAYER_GLOBALAVGPOOL) {
            double sum = 0;
            for (int p = 0; p < area; p++) sum += plane[p];
            y[c] = sum / area;
            continue;
        }
        for (int p = 0; p < area; p++)
            y[(size_t)c * area + p] = (plane[p] - (double)buffers[c]) /
                                          sqrt((double)buffers[C + c] + 1e-5) * params[c] +
                                      params[C + c];
    }
    *out_size = d->kind == AT_LAYER_GLOBALAVGPOOL ? C : C * area;
}

/* Straightforward double-precision forward of one layer on one sample. */
static void ref_forward(const at_layer_desc *d, int C, int H, int W, const float *params,
                        const float *buffers, const float *x, double *y, int *out_size) {
    switch (d->kind) {
    case AT_LAYER_LINEAR: {
        int in = C * H * W;
        for (int o = 0; o < d->out; o++) {
            double s = params[(size_t)d->out * in + o];
            for (int i = 0; i < in; i++) s += (double)params[(size_t)o * in + i] * x[i];
            y[o] = s;
        }
        *out_size = d->out;
        return;
    }
    case AT_LAYER_CONV2D:
    case AT_LAYER_MAXPOOL2D:
    case AT_LAYER_AVGPOOL2D: {
        const int K = d->kernel, P = d->pad;
        const int S = d->stride ? d->stride : (d->kind == AT_LAYER_CONV2D ? 1 : K);
        const int OH = (H + 2 * P - K) / S + 1, OW = (W + 2 * P - K) / S + 1;
        const int OC = d->kind == AT_LAYER_CONV2D ? d->out : C;
        /* Conv2d groups: output o reads input channels [g*Cg, (g+1)*Cg) of its group g. */
        const int G = d->kind == AT_LAYER_CONV2D && d->groups > 1 ? d->groups : 1;
        const int Cg = C / G, Og = OC / G;
        for (int o = 0; o < OC; o++)
            for (int oh = 0; oh < OH; oh++)
                for (int ow = 0; ow < OW; ow++) {
                    double acc = d->kind == AT_LAYER_CONV2D
                                     ? (d->no_bias ? 0.0 : params[(size_t)OC * Cg * K * K + o])
                                 : d->kind == AT_LAYER_MAXPOOL2D ? -INFINITY
                                                                 : 0.0;
                    for (int c = 0; c < C; c++) {
                        if (d->kind != AT_LAYER_CONV2D && c != o) continue;
                        if (d->kind == AT_LAYER_CONV2D && c / Cg != o / Og) continue;
                        for (int ki = 0; ki < K; ki++)
                            for (int kj = 0; kj < K; kj++) {
                                int ih = oh * S - P + ki, iw = ow * S - P + kj;
                                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                                double v = x[((size_t)c * H + ih) * W + iw];
                                if (d->kind == AT_LAYER_CONV2D)
                                    acc += params[(((size_t)o * Cg + c % Cg) * K + ki) * K + kj] * v;
                                else if (d->kind == AT_LAYER_MAXPOOL2D)
                                    acc = fmax(acc, v);
                                else
                                    acc += v;
                            }
                    }
                    /* AvgPool2d counts the padding (count_include_pad=True). */
                    if (d->kind == AT_LAYER_AVGPOOL2D) acc /= (double)(K * K);
                    y[((size_t)o * OH + oh) * OW + ow] = acc;
                }
        *out_size = OC * OH * OW;
        return;
    }
    case AT_LAYER_BATCHNORM2D:
    case AT_LAYER_BATCHNORM1D:
    case AT_LAYER_GLOBALAVGPOOL:
        ref_forward_planes(d, C, H * W, params, buffers, x, y, out_size);
        return;
    default: break;
    }
    int n = C * H * W;
    for (int i = 0; i < n; i++) {
        double v = x[i];
        switch (d->kind) {
        case AT_LAYER_RELU: y[i] = v > 0 ? v : 0; break;
        case AT_LAYER_LEAKYRELU: y[i] = v > 0 ? v : v * d->alpha; break;
        case AT_LAYER_TANH: y[i] = tanh(v); break;
        case AT_LAYER_SIGMOID: y[i] = 1.0 / (1.0 + exp(-v)); break;
        case AT_LAYER_ADD: y[i] = v + v; break; /* the cases add the input to itself */
        default: y[i] = v; break; /* flatten, dropout in eval mode */
        }
    }
    *out_size = n;
}

/* ------------------------------------------------------------ one layer */

static bool is_batchnorm(const at_net *net, int layer) {
    const at_layer_kind k = at_net_layer(net, layer)->kind;
    return k == AT_LAYER_BATCHNORM2D || k == AT_LAYER_BATCHNORM1D;
}

/* Builds [layer] or [layer, Linear head] (or the case's chain, then the head) with random
 * parameters. */
static at_net *build(const gc_case *gc, bool head, uint64_t seed) {
    enum { MAX_CHAIN = 16 };
    at_layer_desc L[MAX_CHAIN + 1];
    const int nl = gc->chain ? gc->nchain : 1;
    for (int i = 0; i < nl; i++) L[i] = gc->chain ? gc->chain[i] : gc->d;
    L[nl] = mk(AT_LAYER_LINEAR, 5, 0, 0, 0, 0);
    snprintf(L[nl].name, sizeof L[nl].name, "head");
    at_net *net = NULL;
    at_status s = at_net_create(&net, L, head ? nl + 1 : nl, gc->c, gc->h, gc->w);
    CHECK_MSG(s == AT_OK, "%s: at_net_create: %s", gc->label, at_error_message());
    if (!net) return NULL;
    at_net_init(net, seed);
    /* PyTorch's init makes biases small; push them to a useful range too. BatchNorm starts at
     * weight 1: spread it, so that a gradient that ignores the weight shows. */
    at_rng r;
    at_rng_seed(&r, seed ^ 0xB1A5);
    for (int t = 0; t < at_net_num_tensors(net); t++) {
        const at_param_info *ti = at_net_tensor(net, t);
        if (ti->is_bias) fill(at_net_params(net) + ti->offset, ti->size, &r, -0.5f, 0.5f);
        else if (is_batchnorm(net, ti->layer))
            fill(at_net_params(net) + ti->offset, ti->size, &r, 0.5f, 1.5f);
    }
    /* Running statistics away from 0 and 1, for eval mode to use. */
    for (int b = 0; b < at_net_num_buffers(net); b++) {
        const at_param_info *bi = at_net_buffer(net, b);
        float *v = at_net_buffers(net) + bi->offset;
        if (strstr(bi->name, "running_mean")) fill(v, bi->size, &r, -0.5f, 0.5f);
        if (strstr(bi->name, "running_var")) fill(v, bi->size, &r, 0.5f, 2.0f);
    }
    at_net_set_training(net, gc->training);
    return net;
}

typedef struct {
    at_net *net;
    int n, in, out;
    float *x, *r, *dx;
    size_t np;
} gc_setup;

static bool setup(gc_setup *S, const gc_case *gc, bool head, int n, uint64_t seed) {
    memset(S, 0, sizeof *S);
    S->net = build(gc, head, seed);
    if (!S->net) return false;
    S->n = n;
    S->in = at_net_in_size(S->net);
    S->out = at_net_out_size(S->net);
    S->np = at_net_num_params(S->net);
    S->x = malloc(sizeof(float) * (size_t)n * S->in);
    S->r = malloc(sizeof(float) * (size_t)n * S->out);
    S->dx = malloc(sizeof(float) * (size_t)n * S->in);
    at_rng rng;
    at_rng_seed(&rng, seed * 31 + 7);
    if (gc->distinct)
        fill_distinct(S->x, n * gc->c, gc->h * gc->w, &rng);
    else
        fill(S->x, (size_t)n * S->in, &rng, -1.0f, 1.0f);
    fill(S->r, (size_t)n * S->out, &rng, -1.0f, 1.0f);
    return true;
}

static void teardown(gc_setup *S) {
    at_net_free(S->net);
    free(S->x);
    free(S->r);
    free(S->dx);
}

/* Analytic gradients: grads (np) and dx (n*in), from a zeroed gradient buffer. */
static bool analytic(gc_setup *S, float *grads, float *dx) {
    at_net_seed(S->net, SEED_DROPOUT);
    at_status s = at_net_forward(S->net, S->x, S->n, NULL);
    if (s != AT_OK) return false;
    at_net_zero_grad(S->net);
    s = at_net_backward(S->net, S->r, AT_GRAD_PARAMS | AT_GRAD_INPUT, dx);
    if (s != AT_OK) return false;
    if (grads) memcpy(grads, at_net_grads(S->net), sizeof(float) * S->np);
    return true;
}

static void check_forward(const gc_case *gc, gc_setup *S) {
    if (gc->training) return; /* dropout in train mode: checked separately */
    if (gc->chain) return;    /* ref_forward covers one layer */
    const float *y = NULL;
    at_net_seed(S->net, SEED_DROPOUT);
    CHECK_OK(at_net_forward(S->net, S->x, S->n, &y));
    if (!y) return;
    int c, h, w;
    at_net_layer_out_shape(S->net, 0, &c, &h, &w);
    const int first_out = c * h * w;
    double *ref = malloc(sizeof(double) * ((size_t)first_out + S->out));
    float *params = at_net_params(S->net);
    const int head = at_net_num_layers(S->net) > 1;
    double worst = 0;
    for (int s = 0; s < S->n; s++) {
        int size = 0;
        double *mid = malloc(sizeof(double) * (size_t)first_out);
        ref_forward(&gc->d, gc->c, gc->h, gc->w, params, at_net_buffers(S->net),
                    S->x + (size_t)s * S->in, mid, &size);
        CHECK_MSG(size == first_out, "%s: reference output size %d, layer says %d", gc->label,
                  size, first_out);
        if (head) {
            /* The head's reference on the (float-rounded) layer output. */
            float *midf = malloc(sizeof(float) * (size_t)first_out);
            for (int i = 0; i < first_out; i++) midf[i] = (float)mid[i];
            const at_param_info *hw = at_net_find_tensor(S->net, "head.weight");
            at_layer_desc hd = mk(AT_LAYER_LINEAR, 5, 0, 0, 0, 0);
            ref_forward(&hd, first_out, 1, 1, params + hw->offset, NULL, midf, ref, &size);
            free(midf);
        } else {
            memcpy(ref, mid, sizeof(double) * (size_t)first_out);
        }
        for (int i = 0; i < S->out; i++) {
            double v = fabs(y[(size_t)s * S->out + i] - ref[i]) / (1e-5 + 1e-5 * fabs(ref[i]));
            if (!(v <= worst)) worst = v;
        }
        free(mid);
    }
    CHECK_MSG(worst <= 1.0, "%s (batch %d%s): forward differs from the reference (%.3g tol)",
              gc->label, S->n, head ? ", head" : "", worst);
    free(ref);
}

/* The central difference of the objective in v[i] (a parameter or an input) with step h. */
static double central(gc_setup *S, float *v, size_t i, float h) {
    const float keep = v[i];
    v[i] = keep + h;
    const double lp = objective(S->net, S->x, S->n, S->r);
    v[i] = keep - h;
    const double lm = objective(S->net, S->x, S->n, S->r);
    v[i] = keep;
    return (lp - lm) / ((double)(keep + h) - (double)(keep - h));
}

/* The numeric derivative: a chain's Richardson extrapolation (4 D(EPS/2) - D(EPS)) / 3, whose
 * error is O(EPS^4): BatchNorm over a few samples curves enough for the O(EPS^2) error of D(EPS)
 * to show in the normalized error. */
static double numeric(const gc_case *gc, gc_setup *S, float *v, size_t i) {
    const double d = central(S, v, i, EPS);
    return gc->chain ? (4.0 * central(S, v, i, 0.5f * EPS) - d) / 3.0 : d;
}

/* KINK_ANY: the chain up to each ReLU (at most four), as networks of their own, and the sign of
 * every ReLU input at the unperturbed point. Parameters and buffers are laid out in node order:
 * a prefix's are the first ones of the whole network. */
enum { MAX_PROBES = 4 };
typedef struct {
    int count;
    at_net *net[MAX_PROBES];
    unsigned char *base[MAX_PROBES];
} relu_probe;

/* The signs (> 0) of prefix p's outputs for the whole network's current parameters and x;
 * compared with the base when `base` is false, else stored as the base. Returns whether they
 * are the same. */
static bool probe_signs(relu_probe *P, int p, gc_setup *S, bool base) {
    at_net *net = P->net[p];
    memcpy(at_net_params(net), at_net_params(S->net), sizeof(float) * at_net_num_params(net));
    memcpy(at_net_buffers(net), at_net_buffers(S->net), sizeof(float) * at_net_num_buffer_floats(net));
    const float *y = NULL;
    if (at_net_forward(net, S->x, S->n, &y) != AT_OK || !y) return false;
    const size_t count = (size_t)S->n * at_net_out_size(net);
    bool same = true;
    for (size_t i = 0; i < count; i++) {
        if (base) P->base[p][i] = y[i] > 0.0f;
        same = same && P->base[p][i] == (y[i] > 0.0f);
    }
    return same;
}

static void probe_make(relu_probe *P, const gc_case *gc, gc_setup *S) {
    memset(P, 0, sizeof *P);
    if (gc->kink != KINK_ANY || !gc->chain) return;
    for (int k = 1; k < gc->nchain && P->count < MAX_PROBES; k++) {
        if (gc->chain[k].kind != AT_LAYER_RELU) continue;
        at_net *net = NULL;
        CHECK_OK(at_net_create(&net, gc->chain, k, gc->c, gc->h, gc->w));
        if (!net) continue;
        at_net_set_training(net, gc->training);
        P->net[P->count] = net;
        P->base[P->count] = malloc((size_t)S->n * at_net_out_size(net));
        probe_signs(P, P->count++, S, true);
    }
}

static void probe_free(relu_probe *P) {
    for (int p = 0; p < P->count; p++) {
        at_net_free(P->net[p]);
        free(P->base[p]);
    }
}

/* Whether moving v[i] (a parameter when is_param, else an input) by +-EPS flips a ReLU input. */
static bool probe_crosses(relu_probe *P, gc_setup *S, float *v, size_t i, bool is_param) {
    const float keep = v[i];
    bool crossed = false;
    for (int side = -1; side <= 1 && !crossed; side += 2) {
        v[i] = keep + (float)side * EPS;
        for (int p = 0; p < P->count && !crossed; p++)
            if (!is_param || i < at_net_num_params(P->net[p])) crossed = !probe_signs(P, p, S, false);
    }
    v[i] = keep;
    return crossed;
}

/* Central differences for every parameter and every input element. */
static void check_layer(const gc_case *gc, bool head, int n) {
    if (n < gc->min_batch || (gc->max_batch && n > gc->max_batch)) return;
    gc_setup S;
    if (!setup(&S, gc, head, n, 1000 + (uint64_t)n * 17 + head)) return;
    char label[160];
    snprintf(label, sizeof label, "%s (batch %d%s)", gc->label, n, head ? ", +head" : "");
    at_set_threads(1);
    check_forward(gc, &S);

    float *ga = malloc(sizeof(float) * (S.np ? S.np : 1));
    if (!analytic(&S, ga, S.dx)) {
        CHECK_MSG(0, "%s: forward/backward failed: %s", label, at_error_message());
        free(ga);
        teardown(&S);
        return;
    }
    relu_probe probe;
    probe_make(&probe, gc, &S);
    /* Parameter gradients. */
    if (S.np) {
        double *num = malloc(sizeof(double) * S.np);
        unsigned char *pskip = calloc(S.np, 1);
        float *p = at_net_params(S.net);
        for (size_t i = 0; i < S.np; i++) {
            pskip[i] = probe.count && probe_crosses(&probe, &S, p, i, true);
            num[i] = pskip[i] ? 0.0 : numeric(gc, &S, p, i);
        }
        compare(label, "parameter gradient", ga, num, pskip, S.np, gc->chain ? &chain_tol : &layer_tol);
        free(num);
        free(pskip);
    }
    /* Input gradient. */
    size_t nin = (size_t)n * S.in;
    double *num = malloc(sizeof(double) * nin);
    unsigned char *skip = calloc(nin, 1);
    for (size_t i = 0; i < nin; i++) {
        if (gc->kink == KINK_RELU && fabsf(S.x[i]) < 2.0f * EPS) skip[i] = 1;
        if (gc->kink == KINK_MAXPOOL && maxpool_near_tie(&gc->d, gc->c, gc->h, gc->w, S.x, i, EPS))
            skip[i] = 1;
        if (skip[i]) {
            num[i] = 0;
            continue;
        }
        skip[i] = probe.count && probe_crosses(&probe, &S, S.x, i, false);
        num[i] = skip[i] ? 0.0 : numeric(gc, &S, S.x, i);
    }
    probe_free(&probe);
    compare(label, "input gradient", S.dx, num, skip, nin, gc->chain ? &chain_tol : &layer_tol);
    free(num);
    free(skip);
    free(ga);
    teardown(&S);
}

/* Flags, accumulation and threads, on the analytic gradients only. */
static void check_mechanics(const gc_case *gc, bool head, int n) {
    if (n < gc->min_batch) return;
    gc_setup S;
    if (!setup(&S, gc, head, n, 2000 + (uint64_t)n)) return;
    char label[160];
    snprintf(label, sizeof label, "%s (batch %d%s)", gc->label, n, head ? ", +head" : "");
    const size_t np = S.np ? S.np : 1, nin = (size_t)n * S.in, nout = (size_t)n * S.out;
    float *g1 = malloc(sizeof(float) * np), *g2 = malloc(sizeof(float) * np);
    float *g2b = malloc(sizeof(float) * np);
    float *dx1 = malloc(sizeof(float) * nin), *dx2 = malloc(sizeof(float) * nin);
    float *dx2b = malloc(sizeof(float) * nin), *y1 = malloc(sizeof(float) * nout);
    float *y2 = malloc(sizeof(float) * nout);
    const float *y;

    /* One thread. */
    at_set_threads(1);
    analytic(&S, g1, dx1);
    at_net_seed(S.net, SEED_DROPOUT);
    CHECK_OK(at_net_forward(S.net, S.x, n, &y));
    memcpy(y1, y, sizeof(float) * nout);

    /* Two threads, twice: bit-identical with each other, close to one thread. */
    at_set_threads(2);
    analytic(&S, g2, dx2);
    analytic(&S, g2b, dx2b);
    at_net_seed(S.net, SEED_DROPOUT);
    CHECK_OK(at_net_forward(S.net, S.x, n, &y));
    memcpy(y2, y, sizeof(float) * nout);
    CHECK_MSG(memcmp(g2, g2b, sizeof(float) * S.np) == 0, "%s: param grads differ between runs",
              label);
    CHECK_MSG(memcmp(dx2, dx2b, sizeof(float) * nin) == 0, "%s: input grads differ between runs",
              label);
    size_t worst = 0;
    double v = tu_max_violation(y2, y1, nout, 1e-5, 1e-5, &worst);
    CHECK_MSG(v <= 1.0, "%s: outputs 1 vs 2 threads: [%zu] %g vs %g", label, worst,
              (double)y2[worst], (double)y1[worst]);
    v = tu_max_violation(g2, g1, S.np, 1e-5, 1e-5, &worst);
    CHECK_MSG(v <= 1.0, "%s: param grads 1 vs 2 threads: [%zu] %g vs %g", label, worst,
              (double)g2[worst], (double)g1[worst]);
    v = tu_max_violation(dx2, dx1, nin, 1e-5, 1e-5, &worst);
    CHECK_MSG(v <= 1.0, "%s: input grads 1 vs 2 threads: [%zu] %g vs %g", label, worst,
              (double)dx2[worst], (double)dx1[worst]);

    /* Without AT_GRAD_PARAMS the gradient buffer is left alone; the input gradient is the same. */
    float *grads = at_net_grads(S.net);
    for (size_t i = 0; i < S.np; i++) grads[i] = 0.25f + (float)(i % 13);
    memcpy(g2b, grads, sizeof(float) * S.np);
    at_net_seed(S.net, SEED_DROPOUT);
    CHECK_OK(at_net_forward(S.net, S.x, n, NULL));
    memset(dx2b, 0, sizeof(float) * nin);
    CHECK_OK(at_net_backward(S.net, S.r, AT_GRAD_INPUT, dx2b));
    CHECK_MSG(memcmp(grads, g2b, sizeof(float) * S.np) == 0,
              "%s: AT_GRAD_INPUT alone changed the parameter gradients", label);
    CHECK_MSG(memcmp(dx2b, dx2, sizeof(float) * nin) == 0,
              "%s: input gradient differs without AT_GRAD_PARAMS", label);
    /* Neither flag: nothing changes, dx untouched. */
    for (size_t i = 0; i < nin; i++) dx2b[i] = -7.0f;
    CHECK_OK(at_net_backward(S.net, S.r, 0, dx2b));
    CHECK(memcmp(grads, g2b, sizeof(float) * S.np) == 0);
    bool untouched = true;
    for (size_t i = 0; i < nin; i++) untouched = untouched && dx2b[i] == -7.0f;
    CHECK_MSG(untouched, "%s: dx written without AT_GRAD_INPUT", label);

    /* AT_GRAD_PARAMS adds to what is there: G0 + g, then G0 + 2g, with dx not needed. */
    CHECK_OK(at_net_backward(S.net, S.r, AT_GRAD_PARAMS, NULL));
    bool acc1 = true, acc2 = true;
    for (size_t i = 0; i < S.np; i++)
        acc1 = acc1 && fabs(grads[i] - ((double)g2b[i] + g2[i])) <=
                           1e-5 * (fabs(g2b[i]) + fabs(g2[i])) + 1e-7;
    CHECK_OK(at_net_backward(S.net, S.r, AT_GRAD_PARAMS, NULL));
    for (size_t i = 0; i < S.np; i++)
        acc2 = acc2 && fabs(grads[i] - ((double)g2b[i] + 2.0 * g2[i])) <=
                           1e-5 * (fabs(g2b[i]) + 2 * fabs(g2[i])) + 1e-7;
    CHECK_MSG(acc1 && acc2, "%s: AT_GRAD_PARAMS does not accumulate (%d %d)", label, acc1, acc2);
    /* From zero, two backward calls give twice one. */
    at_net_zero_grad(S.net);
    for (size_t i = 0; i < S.np; i++) CHECK(grads[i] == 0.0f);
    CHECK_OK(at_net_backward(S.net, S.r, AT_GRAD_PARAMS, NULL));
    CHECK_OK(at_net_backward(S.net, S.r, AT_GRAD_PARAMS | AT_GRAD_INPUT, dx2b));
    v = 0;
    for (size_t i = 0; i < S.np; i++)
        v = fmax(v, fabs(grads[i] - 2.0 * g2[i]) / (1e-6 + 1e-5 * fabs(2.0 * g2[i])));
    CHECK_MSG(v <= 1.0, "%s: two backward calls are not twice one (%.3g)", label, v);
    /* AT_GRAD_INPUT without a buffer is an argument error. */
    CHECK(at_net_backward(S.net, S.r, AT_GRAD_INPUT, NULL) == AT_ERR_ARG);

    free(g1);
    free(g2);
    free(g2b);
    free(dx1);
    free(dx2);
    free(dx2b);
    free(y1);
    free(y2);
    teardown(&S);
}

/* The graph layers on their own: grouped and bias-free convolutions, BatchNorm, global pooling,
 * Add. Appends to cases from nc; returns the new count. */
static int graph_layer_cases(gc_case *cases, int nc) {
#define CASE(lbl, desc, C, H, W, kink_, train_, distinct_)                                        \
    cases[nc++] = (gc_case) { lbl, desc, C, H, W, kink_, train_, distinct_ }
    /* Grouped convolutions (general groups and depthwise, groups = in_channels) and bias=False,
     * also on both dense paths (direct: stride 1; im2row: stride 2). */
    CASE("conv g2 k3 s1 p1 4x5x6 -> 6", conv_g(6, 3, 1, 1, 2, false), 4, 5, 6, KINK_NONE, false,
         false);
    CASE("conv g2 k3 s2 p0 4x7x6 -> 4 bias=0", conv_g(4, 3, 2, 0, 2, true), 4, 7, 6, KINK_NONE,
         false, false);
    CASE("conv g3 k1 s1 p0 6x3x4 -> 3 (pointwise)", conv_g(3, 1, 1, 0, 3, false), 6, 3, 4,
         KINK_NONE, false, false);
    CASE("conv depthwise k3 s1 p1 3x5x6", conv_g(3, 3, 1, 1, 3, false), 3, 5, 6, KINK_NONE, false,
         false);
    CASE("conv depthwise k3 s2 p1 4x7x6 bias=0", conv_g(4, 3, 2, 1, 4, true), 4, 7, 6, KINK_NONE,
         false, false);
    CASE("conv depthwise x2 k3 s1 p0 2x5x5 -> 4", conv_g(4, 3, 1, 0, 2, false), 2, 5, 5,
         KINK_NONE, false, false);
    CASE("conv k3 s1 p1 2x5x5 bias=0 (direct)", conv_g(3, 3, 1, 1, 0, true), 2, 5, 5, KINK_NONE,
         false, false);
    CASE("conv k3 s2 p1 2x7x6 bias=0 (im2row)", conv_g(4, 3, 2, 1, 1, true), 2, 7, 6, KINK_NONE,
         false, false);
    /* BatchNorm: in training mode the objective goes through the batch statistics (batches of 3
     * and 7, and one sample's 16 pixels); in eval mode it is the running statistics' affine map.
     * BatchNorm1d in training needs two samples. */
    CASE("bn 3x4x4 train", mk(AT_LAYER_BATCHNORM2D, 0, 0, 0, 0, 0), 3, 4, 4, KINK_NONE, true, false);
    CASE("bn 3x4x4 eval", mk(AT_LAYER_BATCHNORM2D, 0, 0, 0, 0, 0), 3, 4, 4, KINK_NONE, false, false);
    CASE("bn1d 6 train", mk(AT_LAYER_BATCHNORM1D, 0, 0, 0, 0, 0), 6, 1, 1, KINK_NONE, true, false);
    cases[nc - 1].min_batch = 2;
    CASE("bn1d 6 eval", mk(AT_LAYER_BATCHNORM1D, 0, 0, 0, 0, 0), 6, 1, 1, KINK_NONE, false, false);
    CASE("gap 3x4x5", mk(AT_LAYER_GLOBALAVGPOOL, 0, 0, 0, 0, 0), 3, 4, 5, KINK_NONE, false, false);
    CASE("add input+input", reading(mk(AT_LAYER_ADD, 0, 0, 0, 0, 0), "input", "input"), 2, 3, 4,
         KINK_NONE, false, false);
#undef CASE
    return nc;
}

/* Chains of the graph layers (nodes named by position, "0", "1", ...): BatchNorm after Linear
 * and Conv2d, fused ReLUs, skips and branches into an Add, a depthwise-separable block and a
 * residual network. Appends to cases from nc; returns the new count. */
static int graph_chain_cases(gc_case *cases, int nc) {
#define CASE(lbl, desc, C, H, W, kink_, train_, distinct_)                                        \
    cases[nc++] = (gc_case) { lbl, desc, C, H, W, kink_, train_, distinct_ }
    static at_layer_desc bn1d_chain[2], bn_relu[3], conv_bn[2], skip[2], branches[4], dscnn[5];
    static at_layer_desc resnet[13];
    const at_layer_desc relu = mk(AT_LAYER_RELU, 0, 0, 0, 0, 0);
    bn1d_chain[0] = mk(AT_LAYER_LINEAR, 6, 0, 0, 0, 0);
    bn1d_chain[1] = mk(AT_LAYER_BATCHNORM1D, 0, 0, 0, 0, 0);
    bn_relu[0] = conv_g(4, 3, 1, 1, 0, false);
    bn_relu[1] = mk(AT_LAYER_BATCHNORM2D, 0, 0, 0, 0, 0);
    bn_relu[2] = relu; /* fused into the BatchNorm */
    conv_bn[0] = conv_g(4, 3, 2, 1, 0, true); /* ResNet's conv: no bias before a BatchNorm */
    conv_bn[1] = mk(AT_LAYER_BATCHNORM2D, 0, 0, 0, 0, 0);
    skip[0] = conv_g(3, 3, 1, 1, 0, false);
    skip[1] = reading(mk(AT_LAYER_ADD, 0, 0, 0, 0, 0), "", "input");
    branches[0] = conv_g(4, 3, 1, 1, 0, false);
    branches[1] = reading(conv_g(4, 1, 1, 0, 0, false), "input", ""); /* a 1x1 shortcut */
    branches[2] = reading(mk(AT_LAYER_ADD, 0, 0, 0, 0, 0), "", "0");
    branches[3] = relu; /* fused into the Add */
    dscnn[0] = conv_g(4, 3, 1, 1, 4, true); /* depthwise-separable, as DS-CNN */
    dscnn[1] = mk(AT_LAYER_BATCHNORM2D, 0, 0, 0, 0, 0);
    dscnn[2] = relu;
    dscnn[3] = conv_g(6, 1, 1, 0, 0, true);
    dscnn[4] = mk(AT_LAYER_BATCHNORM2D, 0, 0, 0, 0, 0);
    /* A residual network: stem, one BasicBlock (conv, bn, relu, conv, bn, + its input, relu),
     * global pooling and a classifier. */
    resnet[0] = conv_g(4, 3, 1, 1, 0, true);
    resnet[1] = mk(AT_LAYER_BATCHNORM2D, 0, 0, 0, 0, 0);
    resnet[2] = relu;
    resnet[3] = conv_g(4, 3, 1, 1, 0, true);
    resnet[4] = mk(AT_LAYER_BATCHNORM2D, 0, 0, 0, 0, 0);
    resnet[5] = relu;
    resnet[6] = conv_g(4, 3, 1, 1, 0, true);
    resnet[7] = mk(AT_LAYER_BATCHNORM2D, 0, 0, 0, 0, 0);
    resnet[8] = reading(mk(AT_LAYER_ADD, 0, 0, 0, 0, 0), "", "2");
    resnet[9] = relu;
    resnet[10] = mk(AT_LAYER_GLOBALAVGPOOL, 0, 0, 0, 0, 0);
    resnet[11] = mk(AT_LAYER_FLATTEN, 0, 0, 0, 0, 0);
    resnet[12] = mk(AT_LAYER_LINEAR, 5, 0, 0, 0, 0);
#define CHAIN(lbl, arr, C, H, W, kink_, train_)                                                   \
    do {                                                                                          \
        CASE(lbl, arr[0], C, H, W, kink_, train_, false);                                         \
        cases[nc - 1].chain = arr;                                                                \
        cases[nc - 1].nchain = (int)(sizeof arr / sizeof arr[0]);                                 \
    } while (0)
    CHAIN("linear 5->6, bn1d train", bn1d_chain, 5, 1, 1, KINK_NONE, true);
    cases[nc - 1].min_batch = 2;
    CHAIN("linear 5->6, bn1d eval", bn1d_chain, 5, 1, 1, KINK_NONE, false);
    CHAIN("conv, bn, relu (fused) train", bn_relu, 2, 5, 5, KINK_ANY, true);
    CHAIN("conv, bn, relu (fused) eval", bn_relu, 2, 5, 5, KINK_ANY, false);
    CHAIN("conv bias=0 s2, bn train", conv_bn, 3, 6, 6, KINK_NONE, true);
    CHAIN("conv, add input (skip)", skip, 3, 5, 5, KINK_NONE, false);
    CHAIN("conv | 1x1 conv of input, add, relu", branches, 2, 5, 5, KINK_ANY, false);
    CHAIN("depthwise bias=0, bn, relu, pointwise, bn train", dscnn, 4, 5, 5, KINK_ANY, true);
    CHAIN("residual network train", resnet, 3, 4, 4, KINK_ANY, true);
    cases[nc - 1].max_batch = 3; /* at 7 the probe skips 85% of the parameters */
    CHAIN("residual network eval", resnet, 3, 4, 4, KINK_ANY, false);
#undef CHAIN
#undef CASE
    return nc;
}

static void test_layers(void) {
    static gc_case cases[128];
    int nc = 0;
#define CASE(lbl, desc, C, H, W, kink_, train_, distinct_)                                        \
    cases[nc++] = (gc_case) { lbl, desc, C, H, W, kink_, train_, distinct_ }
    /* Linear */
    CASE("linear 6->4", mk(AT_LAYER_LINEAR, 4, 0, 0, 0, 0), 6, 1, 1, KINK_NONE, false, false);
    CASE("linear 2x3x3->3", mk(AT_LAYER_LINEAR, 3, 0, 0, 0, 0), 2, 3, 3, KINK_NONE, false, false);
    /* Conv2d: stride / padding combinations, non-square inputs */
    CASE("conv k3 s1 p0 2x6x7", mk(AT_LAYER_CONV2D, 3, 3, 1, 0, 0), 2, 6, 7, KINK_NONE, false, false);
    CASE("conv k3 s1 p1 2x5x5", mk(AT_LAYER_CONV2D, 3, 3, 1, 1, 0), 2, 5, 5, KINK_NONE, false, false);
    CASE("conv k3 s2 p1 2x7x6", mk(AT_LAYER_CONV2D, 4, 3, 2, 1, 0), 2, 7, 6, KINK_NONE, false, false);
    CASE("conv k4 s2 p1 1x8x8", mk(AT_LAYER_CONV2D, 3, 4, 2, 1, 0), 1, 8, 8, KINK_NONE, false, false);
    CASE("conv k2 s3 p0 2x7x8", mk(AT_LAYER_CONV2D, 2, 2, 3, 0, 0), 2, 7, 8, KINK_NONE, false, false);
    CASE("conv k1 s1 p0 3x4x5", mk(AT_LAYER_CONV2D, 2, 1, 1, 0, 0), 3, 4, 5, KINK_NONE, false, false);
    CASE("conv k5 s1 p2 1x5x6", mk(AT_LAYER_CONV2D, 2, 5, 1, 2, 0), 1, 5, 6, KINK_NONE, false, false);
    CASE("conv k2 s1 p2 2x3x4", mk(AT_LAYER_CONV2D, 2, 2, 1, 2, 0), 2, 3, 4, KINK_NONE, false, false);
    CASE("conv k7 s1 p1 1x5x5 (1x1 out)", mk(AT_LAYER_CONV2D, 3, 7, 1, 1, 0), 1, 5, 5, KINK_NONE,
         false, false);
    CASE("conv k3 s2 p0 3x9x4", mk(AT_LAYER_CONV2D, 2, 3, 2, 0, 0), 3, 9, 4, KINK_NONE, false, false);
    /* Stride-1 layers with padding < K, at most 32 output channels and at most 576 taps
     * (in_channels * K * K) take the direct path, the others im2col + GEMM: shapes on both sides
     * of each limit. Output-channel counts below, at and above the direct kernel's row tile (8
     * with AVX-512, 6 with AVX), and rows wide enough for its multi-vector tiles. */
    CASE("conv k5 s1 p2 1x9x21 (direct, LeNet conv1)", mk(AT_LAYER_CONV2D, 6, 5, 1, 2, 0), 1, 9, 21,
         KINK_NONE, false, false);
    CASE("conv k5 s1 p0 6x6x7 (direct, LeNet conv2)", mk(AT_LAYER_CONV2D, 16, 5, 1, 0, 0), 6, 6, 7,
         KINK_NONE, false, false);
    CASE("conv k5 s1 p0 3x12x12 (direct)", mk(AT_LAYER_CONV2D, 6, 5, 1, 0, 0), 3, 12, 12, KINK_NONE,
         false, false);
    /* The scatter input gradient (4+ input channels, padding below K-1): two channel tiles with a
     * remainder, several vectors per tile; and planes narrower than a vector, where one tile's
     * additions overlap. */
    CASE("conv k3 s1 p0 11x9x20 (direct, scatter, 2 channel tiles)", mk(AT_LAYER_CONV2D, 7, 3, 1, 0, 0), 11,
         9, 20, KINK_NONE, false, false);
    CASE("conv k3 s1 p0 4x3x5 (direct, scatter, overlapping tile)", mk(AT_LAYER_CONV2D, 5, 3, 1, 0, 0), 4, 3,
         5, KINK_NONE, false, false);
    CASE("conv k3 s1 p1 5x6x20 (direct, 11 out)", mk(AT_LAYER_CONV2D, 11, 3, 1, 1, 0), 5, 6, 20,
         KINK_NONE, false, false);
    CASE("conv k2 s1 p0 1x5x6 (direct, 32 out)", mk(AT_LAYER_CONV2D, 32, 2, 1, 0, 0), 1, 5, 6,
         KINK_NONE, false, false);
    CASE("conv k2 s1 p0 1x5x6 (im2col, 33 out)", mk(AT_LAYER_CONV2D, 33, 2, 1, 0, 0), 1, 5, 6,
         KINK_NONE, false, false);
    CASE("conv k3 s1 p1 64x2x2 (direct, 576 taps)", mk(AT_LAYER_CONV2D, 2, 3, 1, 1, 0), 64, 2, 2,
         KINK_NONE, false, false);
    CASE("conv k3 s1 p1 65x2x2 (im2col, 585 taps)", mk(AT_LAYER_CONV2D, 2, 3, 1, 1, 0), 65, 2, 2,
         KINK_NONE, false, false);
    CASE("conv k3 s1 p3 2x4x5 (im2col, padding = kernel)", mk(AT_LAYER_CONV2D, 3, 3, 1, 3, 0), 2, 4,
         5, KINK_NONE, false, false);
    CASE("conv k5 s2 p2 1x12x11 (im2col, stride 2)", mk(AT_LAYER_CONV2D, 6, 5, 2, 2, 0), 1, 12, 11,
         KINK_NONE, false, false);
    /* Strided im2col: padding beyond the stride, stride 3, and stride-2 rows long enough for
     * the eight-wide copies (with a tail, and rows near the buffer's end copied one by one). */
    CASE("conv k3 s2 p3 2x5x4 (padding > stride)", mk(AT_LAYER_CONV2D, 3, 3, 2, 3, 0), 2,
         5, 4, KINK_NONE, false, false);
    CASE("conv k4 s3 p2 2x10x9 (stride 3)", mk(AT_LAYER_CONV2D, 5, 4, 3, 2, 0), 2, 10, 9,
         KINK_NONE, false, false);
    CASE("conv k4 s2 p1 2x9x37 (stride-2 rows of 18: vector blocks and tails)",
         mk(AT_LAYER_CONV2D, 3, 4, 2, 1, 0), 2, 9, 37, KINK_NONE, false, false);
    /* MaxPool2d: padding, stride != kernel, floor-mode leftovers */
    CASE("maxpool k2 2x6x6", mk(AT_LAYER_MAXPOOL2D, 0, 2, 0, 0, 0), 2, 6, 6, KINK_MAXPOOL, false, true);
    CASE("maxpool k2 s2 2x7x5", mk(AT_LAYER_MAXPOOL2D, 0, 2, 2, 0, 0), 2, 7, 5, KINK_MAXPOOL, false,
         true);
    CASE("maxpool k3 s2 p1 2x7x6", mk(AT_LAYER_MAXPOOL2D, 0, 3, 2, 1, 0), 2, 7, 6, KINK_MAXPOOL,
         false, true);
    CASE("maxpool k3 s1 p0 1x6x6", mk(AT_LAYER_MAXPOOL2D, 0, 3, 1, 0, 0), 1, 6, 6, KINK_MAXPOOL,
         false, true);
    CASE("maxpool k2 s1 p1 2x5x4", mk(AT_LAYER_MAXPOOL2D, 0, 2, 1, 1, 0), 2, 5, 4, KINK_MAXPOOL,
         false, true);
    CASE("maxpool k3 s3 p1 1x7x7", mk(AT_LAYER_MAXPOOL2D, 0, 3, 3, 1, 0), 1, 7, 7, KINK_MAXPOOL,
         false, true);
    /* 2x2 rows of 8 windows or more go as 8-window blocks, the last one overlapping. */
    CASE("maxpool k2 1x4x22", mk(AT_LAYER_MAXPOOL2D, 0, 2, 0, 0, 0), 1, 4, 22, KINK_MAXPOOL, false,
         true);
    CASE("maxpool k2 2x5x35", mk(AT_LAYER_MAXPOOL2D, 0, 2, 0, 0, 0), 2, 5, 35, KINK_MAXPOOL, false,
         true);
    /* Random inputs too: ties are filtered, not avoided. */
    CASE("maxpool k3 s2 p1 random", mk(AT_LAYER_MAXPOOL2D, 0, 3, 2, 1, 0), 2, 6, 6, KINK_MAXPOOL,
         false, false);
    /* AvgPool2d (padding counts in the divisor, as PyTorch's default) */
    CASE("avgpool k2 2x6x6", mk(AT_LAYER_AVGPOOL2D, 0, 2, 0, 0, 0), 2, 6, 6, KINK_NONE, false, false);
    CASE("avgpool k3 s2 p1 2x7x6", mk(AT_LAYER_AVGPOOL2D, 0, 3, 2, 1, 0), 2, 7, 6, KINK_NONE, false,
         false);
    CASE("avgpool k3 s1 p1 1x5x5", mk(AT_LAYER_AVGPOOL2D, 0, 3, 1, 1, 0), 1, 5, 5, KINK_NONE, false,
         false);
    CASE("avgpool k2 s1 p0 2x5x4", mk(AT_LAYER_AVGPOOL2D, 0, 2, 1, 0, 0), 2, 5, 4, KINK_NONE, false,
         false);
    CASE("avgpool k2 s3 p1 1x8x7", mk(AT_LAYER_AVGPOOL2D, 0, 2, 3, 1, 0), 1, 8, 7, KINK_NONE, false,
         false);
    /* Elementwise */
    CASE("relu", mk(AT_LAYER_RELU, 0, 0, 0, 0, 0), 2, 3, 4, KINK_RELU, false, false);
    CASE("leakyrelu 0.1", mk(AT_LAYER_LEAKYRELU, 0, 0, 0, 0, 0.1f), 2, 3, 4, KINK_RELU, false, false);
    CASE("leakyrelu 0.01", mk(AT_LAYER_LEAKYRELU, 0, 0, 0, 0, 0.01f), 3, 2, 2, KINK_RELU, false,
         false);
    CASE("tanh", mk(AT_LAYER_TANH, 0, 0, 0, 0, 0), 2, 3, 4, KINK_NONE, false, false);
    CASE("sigmoid", mk(AT_LAYER_SIGMOID, 0, 0, 0, 0, 0), 2, 3, 4, KINK_NONE, false, false);
    CASE("flatten", mk(AT_LAYER_FLATTEN, 0, 0, 0, 0, 0), 2, 3, 3, KINK_NONE, false, false);
    /* Dropout: train mode with the key repeated by at_net_seed; eval mode is the identity. */
    CASE("dropout 0.3 train", mk(AT_LAYER_DROPOUT, 0, 0, 0, 0, 0.3f), 2, 3, 4, KINK_NONE, true, false);
    CASE("dropout 0.5 train", mk(AT_LAYER_DROPOUT, 0, 0, 0, 0, 0.5f), 12, 1, 1, KINK_NONE, true,
         false);
    CASE("dropout 0.5 eval", mk(AT_LAYER_DROPOUT, 0, 0, 0, 0, 0.5f), 2, 3, 4, KINK_NONE, false, false);
    /* Dropout2d, where this build has it (looked up by its spec keyword). */
    at_layer_desc d2[1];
    int n2 = 1;
    if (at_spec_parse("dropout2d:0.4", d2, &n2) == AT_OK && n2 == 1) {
        d2[0].name[0] = '\0';
        CASE("dropout2d 0.4 train", d2[0], 3, 2, 3, KINK_NONE, true, false);
        CASE("dropout2d 0.4 eval", d2[0], 3, 2, 3, KINK_NONE, false, false);
    }
    nc = graph_layer_cases(cases, nc);
    nc = graph_chain_cases(cases, nc);
#undef CASE
    const int batches[3] = {1, 3, 7};
    for (int i = 0; i < nc; i++) {
        for (int b = 0; b < 3; b++) {
            check_layer(&cases[i], false, batches[b]);
            /* A chain's input gradient through a head of 5 outputs is ~1e-4: a step of 1e-2
             * moves the loss by a few float ulps, below what differences can measure. */
            if (!cases[i].chain) check_layer(&cases[i], true, batches[b]);
        }
        check_mechanics(&cases[i], false, 7);
        check_mechanics(&cases[i], true, 3);
        check_mechanics(&cases[i], true, 7);
    }
}

/* ------------------------------------------------------------ dropout specifics */

static void test_dropout(void) {
    const float p = 0.3f;
    at_layer_desc d = mk(AT_LAYER_DROPOUT, 0, 0, 0, 0, p);
    at_net *net = NULL;
    const int n = 7, size = 300;
    CHECK_OK(at_net_create(&net, &d, 1, size, 1, 1));
    if (!net) return;
    float *x = malloc(sizeof(float) * n * size), *r = malloc(sizeof(float) * n * size);
    float *y1 = malloc(sizeof(float) * n * size), *dx = malloc(sizeof(float) * n * size);
    at_rng rng;
    at_rng_seed(&rng, 99);
    fill(x, (size_t)n * size, &rng, 0.1f, 1.0f); /* never zero */
    fill(r, (size_t)n * size, &rng, -1.0f, 1.0f);
    const float scale = 1.0f / (1.0f - p);
    const float *y;

    /* Eval mode (the default): exactly the identity, forward and backward. */
    CHECK(!at_net_is_training(net));
    CHECK_OK(at_net_forward(net, x, n, &y));
    CHECK(memcmp(y, x, sizeof(float) * n * size) == 0);
    CHECK_OK(at_net_backward(net, r, AT_GRAD_INPUT, dx));
    CHECK(memcmp(dx, r, sizeof(float) * n * size) == 0);

    /* Train mode: y is 0 or x*scale; dx is dy*scale exactly where y != 0 and 0 elsewhere. */
    at_net_set_training(net, true);
    CHECK(at_net_is_training(net));
    at_set_threads(1);
    at_net_seed(net, 5);
    CHECK_OK(at_net_forward(net, x, n, &y));
    memcpy(y1, y, sizeof(float) * n * size);
    CHECK_OK(at_net_backward(net, r, AT_GRAD_INPUT, dx));
    int dropped = 0, bad_y = 0, bad_dx = 0;
    for (int i = 0; i < n * size; i++) {
        if (y1[i] == 0.0f) {
            dropped++;
            bad_dx += dx[i] != 0.0f;
        } else {
            bad_y += y1[i] != x[i] * scale;
            bad_dx += dx[i] != r[i] * scale;
        }
    }
    CHECK_MSG(bad_y == 0, "%d kept outputs are not x/(1-p)", bad_y);
    CHECK_MSG(bad_dx == 0, "%d input gradients do not follow the mask", bad_dx);
    double frac = (double)dropped / (n * size);
    CHECK_MSG(fabs(frac - p) < 0.04, "dropped fraction %.3f, p = %.2f", frac, (double)p);

    /* The mask depends on the pass: the next forward draws a new one; reseeding repeats it;
     * another seed changes it. */
    CHECK_OK(at_net_forward(net, x, n, &y));
    CHECK_MSG(memcmp(y, y1, sizeof(float) * n * size) != 0, "two passes share a dropout mask");
    at_net_seed(net, 5);
    CHECK_OK(at_net_forward(net, x, n, &y));
    CHECK_MSG(memcmp(y, y1, sizeof(float) * n * size) == 0, "reseeding does not repeat the mask");
    at_net_seed(net, 6);
    CHECK_OK(at_net_forward(net, x, n, &y));
    CHECK(memcmp(y, y1, sizeof(float) * n * size) != 0);
    /* The mask does not depend on how the batch is split across threads. */
    at_set_threads(2);
    at_net_seed(net, 5);
    CHECK_OK(at_net_forward(net, x, n, &y));
    CHECK_MSG(memcmp(y, y1, sizeof(float) * n * size) == 0, "mask depends on the thread count");
    /* Nor does sample i's mask depend on the other samples (different masks per sample). */
    int same_rows = 0;
    for (int s = 1; s < n; s++) {
        bool same = true;
        for (int i = 0; i < size; i++) same = same && ((y1[i] == 0) == (y1[s * size + i] == 0));
        same_rows += same;
    }
    CHECK_MSG(same_rows == 0, "%d samples share sample 0's mask", same_rows);
    /* Back to eval: the identity again. */
    at_net_set_training(net, false);
    CHECK_OK(at_net_forward(net, x, n, &y));
    CHECK(memcmp(y, x, sizeof(float) * n * size) == 0);
    free(x);
    free(r);
    free(y1);
    free(dx);
    at_net_free(net);
}

/* Dropout2d (nn.Dropout2d) drops whole channels: every element of a (sample, channel) plane is
 * kept or dropped together, and the input gradient follows the same mask. */
static void test_dropout2d(void) {
    at_layer_desc d[1];
    int nd = 1;
    if (at_spec_parse("dropout2d:0.5", d, &nd) != AT_OK) {
        printf("dropout2d: not in this build, skipped\n");
        return;
    }
    const int n = 5, C = 40, H = 3, W = 4, plane = H * W, size = C * plane;
    at_net *net = NULL;
    CHECK_OK(at_net_create(&net, d, 1, C, H, W));
    if (!net) return;
    float *x = malloc(sizeof(float) * n * size), *r = malloc(sizeof(float) * n * size);
    float *dx = malloc(sizeof(float) * n * size);
    at_rng rng;
    at_rng_seed(&rng, 3);
    fill(x, (size_t)n * size, &rng, 0.1f, 1.0f);
    fill(r, (size_t)n * size, &rng, -1.0f, 1.0f);
    at_net_set_training(net, true);
    at_net_seed(net, 8);
    const float *y;
    CHECK_OK(at_net_forward(net, x, n, &y));
    CHECK_OK(at_net_backward(net, r, AT_GRAD_INPUT, dx));
    int mixed = 0, bad = 0, dropped = 0;
    for (int s = 0; s < n; s++)
        for (int c = 0; c < C; c++) {
            const size_t o = (size_t)s * size + (size_t)c * plane;
            int zeros = 0;
            for (int i = 0; i < plane; i++) {
                bool kept = y[o + i] != 0.0f;
                zeros += !kept;
                float wy = kept ? x[o + i] * 2.0f : 0.0f, wdx = kept ? r[o + i] * 2.0f : 0.0f;
                bad += y[o + i] != wy || dx[o + i] != wdx;
            }
            mixed += zeros != 0 && zeros != plane;
            dropped += zeros == plane;
        }
    CHECK_MSG(mixed == 0, "dropout2d: %d planes partly dropped", mixed);
    CHECK_MSG(bad == 0, "dropout2d: %d values not 0 or x/(1-p) (or gradients off the mask)", bad);
    CHECK_MSG(dropped > n * C / 4 && dropped < 3 * n * C / 4, "dropout2d: %d of %d planes dropped",
              dropped, n * C);
    free(x);
    free(r);
    free(dx);
    at_net_free(net);
}

/* ------------------------------------------------------------ max-pool ties */

/* Ties go to the first maximum in scan order (PyTorch); padding never wins (-inf). */
static void test_maxpool_ties(void) {
    at_layer_desc d = mk(AT_LAYER_MAXPOOL2D, 0, 2, 2, 0, 0);
    at_net *net = NULL;
    CHECK_OK(at_net_create(&net, &d, 1, 1, 4, 4));
    if (net) {
        float x[16], dy[4] = {1, 2, 3, 4}, dx[16];
        for (int i = 0; i < 16; i++) x[i] = 0.5f;
        const float *y;
        CHECK_OK(at_net_forward(net, x, 1, &y));
        for (int i = 0; i < 4; i++) CHECK(y[i] == 0.5f);
        CHECK_OK(at_net_backward(net, dy, AT_GRAD_INPUT, dx));
        static const float want[16] = {1, 0, 2, 0, 0, 0, 0, 0, 3, 0, 4, 0, 0, 0, 0, 0};
        CHECK_MSG(memcmp(dx, want, sizeof want) == 0, "tie gradient not at the first maximum");
        at_net_free(net);
    }
    /* A row of 11 windows (vectorized blocks) with ties everywhere and a NaN in window 2 of the
     * first row: NaN out there, its gradient to the NaN; ties send theirs to the first element. */
    CHECK_OK(at_net_create(&net, &d, 1, 1, 4, 22));
    if (net) {
        float x[88], dy[22], dx[88];
        for (int i = 0; i < 88; i++) x[i] = 0.5f;
        for (int i = 0; i < 22; i++) dy[i] = (float)(i + 1);
        x[22 + 5] = NAN; /* row 1, column 5: window (0, 2), bottom right */
        const float *y;
        CHECK_OK(at_net_forward(net, x, 1, &y));
        for (int i = 0; i < 22; i++)
            CHECK_MSG(i == 2 ? isnan(y[i]) : y[i] == 0.5f, "2x2 max %d is %g", i, (double)y[i]);
        CHECK_OK(at_net_backward(net, dy, AT_GRAD_INPUT, dx));
        float want[88] = {0};
        for (int oh = 0; oh < 2; oh++)
            for (int ow = 0; ow < 11; ow++) want[2 * oh * 22 + 2 * ow] = dy[oh * 11 + ow];
        want[0 * 22 + 4] = 0.0f;
        want[22 + 5] = dy[2];
        CHECK_MSG(memcmp(dx, want, sizeof want) == 0, "2x2 row: tie or NaN gradient misplaced");
        at_net_free(net);
    }
    d = mk(AT_LAYER_MAXPOOL2D, 0, 3, 2, 1, 0);
    CHECK_OK(at_net_create(&net, &d, 1, 1, 3, 3));
    if (net) {
        float x[9], dy[4] = {1, 1, 1, 1}, dx[9];
        for (int i = 0; i < 9; i++) x[i] = -5.0f;
        const float *y;
        CHECK_OK(at_net_forward(net, x, 1, &y));
        for (int i = 0; i < 4; i++) CHECK_MSG(y[i] == -5.0f, "padded max %d is %g", i, (double)y[i]);
        CHECK_OK(at_net_backward(net, dy, AT_GRAD_INPUT, dx));
        double total = 0;
        for (int i = 0; i < 9; i++) total += dx[i];
        CHECK_NEAR(total, 4.0, 0.0); /* every window sends its gradient to a real input */
        CHECK(dx[0] == 1.0f); /* window (0,0) covers x[0..1][0..1]: first is x[0] */
        at_net_free(net);
    }
    /* AvgPool2d counts padding in the divisor: a corner of k3 p1 averages 4 values over 9. */
    d = mk(AT_LAYER_AVGPOOL2D, 0, 3, 2, 1, 0);
    CHECK_OK(at_net_create(&net, &d, 1, 1, 3, 3));
    if (net) {
        float x[9];
        for (int i = 0; i < 9; i++) x[i] = 1.0f;
        const float *y;
        CHECK_OK(at_net_forward(net, x, 1, &y));
        for (int i = 0; i < 4; i++) CHECK_NEAR(y[i], 4.0 / 9.0, 1e-7);
        at_net_free(net);
    }
}

/* ------------------------------------------------------------ whole networks */

typedef struct {
    at_net *net;
    int n;
    const float *x;
    const int32_t *labels;
    const float *targets;
} loss_ctx;

static double net_loss(loss_ctx *L, float *dlogits) {
    const float *logits = NULL;
    at_net_seed(L->net, SEED_DROPOUT);
    if (at_net_forward(L->net, L->x, L->n, &logits) != AT_OK) return NAN;
    float loss = NAN;
    int k = at_net_out_size(L->net);
    at_status s = L->labels ? at_cross_entropy(logits, L->labels, L->n, k, 0.0f, &loss, dlogits, NULL)
                            : at_mse(logits, L->targets, L->n, k, &loss, dlogits);
    if (s != AT_OK) return NAN;
    /* The same loss in double: the library rounds its loss to float, which would dominate
     * the difference of two nearby losses. */
    double total = 0;
    for (int i = 0; i < L->n; i++) {
        const float *z = logits + (size_t)i * k;
        if (L->labels) {
            double m = z[0], sum = 0;
            for (int j = 1; j < k; j++) m = fmax(m, z[j]);
            for (int j = 0; j < k; j++) sum += exp((double)z[j] - m);
            total += m + log(sum) - z[L->labels[i]];
        } else {
            for (int j = 0; j < k; j++) {
                double d = (double)z[j] - L->targets[(size_t)i * k + j];
                total += d * d / k;
            }
        }
    }
    total /= L->n;
    CHECK_MSG(fabs(total - loss) <= 1e-6 * fmax(1.0, fabs(total)), "library loss %.9g, test %.9g",
              (double)loss, total);
    return total;
}

/* (L(v + eps d) - L(v - eps d)) / 2 eps, with v (count floats, the parameters or the input)
 * restored afterwards. */
static double numeric_direction(loss_ctx *L, float *v, const float *v0, const float *d,
                                size_t count, double eps) {
    for (size_t i = 0; i < count; i++) v[i] = (float)(v0[i] + eps * d[i]);
    double lp = net_loss(L, NULL);
    for (size_t i = 0; i < count; i++) v[i] = (float)(v0[i] - eps * d[i]);
    double lm = net_loss(L, NULL);
    memcpy(v, v0, sizeof(float) * count);
    return (lp - lm) / (2 * eps);
}

/* Directional derivatives of the loss (two extra forward passes each, as kann's gradient check),
 * in the parameters and in the input, against the backward pass:
 *  - along the sign of the analytic gradient (scaled like the parameters): the derivative is
 *    large, so a relative error (< 1e-2) works, and any error in magnitude or sign shows;
 *  - along a random +-1 direction: the derivative is a sum with cancellations, so its error is
 *    measured against its typical size ||g .* scale|| (< 0.1: float32 rounding of the forward
 *    pass is a few percent of such a small difference).
 * The step is small (1e-4 relative) so that few ReLU / max-pool kinks are crossed. */
/* warm: training forwards on random batches first, which give BatchNorm running statistics as a
 * trained network's (eval mode then normalises as it would after training). */
static void warm_up(at_net *net, int warm, int n) {
    const size_t count = (size_t)n * at_net_in_size(net);
    float *x = malloc(sizeof(float) * count);
    at_rng r;
    at_rng_seed(&r, 808);
    at_net_set_training(net, true);
    for (int i = 0; i < warm; i++) {
        fill(x, count, &r, 0.0f, 1.0f);
        CHECK_OK(at_net_forward(net, x, n, NULL));
    }
    free(x);
}

static void check_network_on(at_net *net, const char *spec, int c, int h, int w, int n, bool mse,
                             bool training, int warm) {
    at_set_threads(2);
    at_net_init(net, 31);
    if (warm) warm_up(net, warm, n);
    at_net_set_training(net, training);
    const int in = at_net_in_size(net), k = at_net_out_size(net);
    const size_t np = at_net_num_params(net), nin = (size_t)n * in;
    float *x = malloc(sizeof(float) * nin), *dx = malloc(sizeof(float) * nin);
    float *dl = malloc(sizeof(float) * (size_t)n * k), *t = malloc(sizeof(float) * (size_t)n * k);
    float *scale = malloc(sizeof(float) * np), *dir = malloc(sizeof(float) * (np > nin ? np : nin));
    float *g = malloc(sizeof(float) * np), *p0 = malloc(sizeof(float) * np);
    float *x0 = malloc(sizeof(float) * nin);
    int32_t *y = malloc(sizeof(int32_t) * (size_t)n);
    at_rng r;
    at_rng_seed(&r, 555);
    fill(x, nin, &r, 0.0f, 1.0f);
    fill(t, (size_t)n * k, &r, -1.0f, 1.0f);
    for (int i = 0; i < n; i++) y[i] = (int32_t)at_rng_below(&r, (uint32_t)k);
    /* Parameter directions scaled like the parameters: 1/sqrt(fan_in) per tensor. */
    for (int ti = 0; ti < at_net_num_tensors(net); ti++) {
        const at_param_info *tp = at_net_tensor(net, ti);
        const at_param_info *wt = tp->is_bias ? at_net_tensor(net, ti - 1) : tp;
        float sc = (float)(1.0 / sqrt((double)wt->size / wt->shape[0]));
        for (size_t i = 0; i < tp->size; i++) scale[tp->offset + i] = sc;
    }
    loss_ctx L = {net, n, x, mse ? NULL : y, mse ? t : NULL};

    double loss0 = net_loss(&L, dl);
    CHECK_MSG(isfinite(loss0), "%s: loss %g", spec, loss0);
    at_net_zero_grad(net);
    CHECK_OK(at_net_backward(net, dl, AT_GRAD_PARAMS | AT_GRAD_INPUT, dx));
    memcpy(g, at_net_grads(net), sizeof(float) * np);
    float *p = at_net_params(net);
    memcpy(p0, p, sizeof(float) * np);
    memcpy(x0, x, sizeof(float) * nin);
    const double eps = 1e-4;

    for (int which = 0; which < 2; which++) { /* 0: parameters, 1: input */
        const size_t count = which ? nin : np;
        const float *ga = which ? dx : g;
        float *v = which ? x : p;
        const float *v0 = which ? x0 : p0;
        const char *what = which ? "input" : "parameters";
        /* Aligned with the analytic gradient. */
        double a = 0, typical = 0;
        for (size_t i = 0; i < count; i++) {
            float sc = which ? 1.0f : scale[i];
            dir[i] = ga[i] > 0 ? sc : ga[i] < 0 ? -sc : 0.0f;
            a += (double)ga[i] * dir[i];
            typical += ((double)ga[i] * sc) * ((double)ga[i] * sc);
        }
        typical = sqrt(typical);
        double num = numeric_direction(&L, v, v0, dir, count, eps);
        double rel = fabs(a - num) / fmax(fmax(fabs(a), fabs(num)), 1e-12);
        CHECK_MSG(rel < 1e-2, "%s %dx%dx%d n=%d, %s, gradient direction: analytic %.7g numeric %.7g "
                  "(rel %.3g)", spec, c, h, w, n, what, a, num, rel);
        if (getenv("GC_VERBOSE"))
            fprintf(stderr, "%s %dx%dx%d n=%d %s aligned: %.7g vs %.7g (%.2g)\n", spec, c, h, w, n,
                    what, a, num, rel);
        /* A random direction. */
        a = 0;
        for (size_t i = 0; i < count; i++) {
            float sc = which ? 1.0f : scale[i];
            dir[i] = at_rng_uniform(&r) < 0.5f ? -sc : sc;
            a += (double)ga[i] * dir[i];
        }
        num = numeric_direction(&L, v, v0, dir, count, eps);
        rel = fabs(a - num) / fmax(typical, 1e-12);
        CHECK_MSG(rel < 0.1, "%s %dx%dx%d n=%d, %s, random direction: analytic %.7g numeric %.7g "
                  "(error %.3g of the typical size %.3g)", spec, c, h, w, n, what, a, num, rel,
                  typical);
        if (getenv("GC_VERBOSE"))
            fprintf(stderr, "%s %dx%dx%d n=%d %s random: %.7g vs %.7g (%.2g of %.3g)\n", spec, c, h,
                    w, n, what, a, num, rel, typical);
    }
    /* The loss is back where it was (parameters and input restored exactly). */
    CHECK(net_loss(&L, NULL) == loss0);
    free(x);
    free(dx);
    free(dl);
    free(t);
    free(scale);
    free(dir);
    free(g);
    free(p0);
    free(x0);
    free(y);
    at_net_free(net);
}

/* spec: a built-in name or a spec; the network is freed. */
static void check_network(const char *spec, int c, int h, int w, int n, bool mse, bool training) {
    at_net *net = NULL;
    at_status st = at_net_from_spec(&net, spec, c, h, w);
    CHECK_MSG(st == AT_OK, "%s: %s", spec, at_error_message());
    if (net) check_network_on(net, spec, c, h, w, n, mse, training, 0);
}

static void test_networks(void) {
    check_network("seed-cnn", 1, 28, 28, 3, false, false);
    check_network("seed-cnn", 3, 32, 32, 3, false, false);
    check_network("smallcnn", 1, 28, 28, 5, false, false);
    check_network("mlp", 1, 28, 28, 7, false, false);
    check_network("seed-mlp", 10, 1, 1, 7, true, false);
    check_network("seed-mlp", 10, 1, 1, 1, false, false);
    check_network("mlp", 784, 1, 1, 3, true, false);
    check_network("conv:4:3:1:1,tanh,avgpool:2,conv:8:3:2:0,leakyrelu:0.1,maxpool:2,flatten,"
                  "linear:16,sigmoid,dropout:0.3,linear:10",
                  3, 16, 16, 5, false, true);
}

/* A ReLU after a convolution or a Linear layer is fused into it (net.c). "leakyrelu:0" computes
 * the same function but is never fused: logits, every parameter gradient and the input gradient
 * must be identical, on both convolution paths (direct: stride 1; im2col: stride 2) and Linear,
 * with the first layer's input gradient and a ReLU that ends the network. */
static void check_fusion(const char *fused, const char *unfused, int c, int h, int w, int n) {
    at_net *a = NULL, *b = NULL;
    CHECK_OK(at_net_from_spec(&a, fused, c, h, w));
    CHECK_OK(at_net_from_spec(&b, unfused, c, h, w));
    if (!a || !b) return;
    at_net_init(a, 11);
    at_net_init(b, 11);
    at_rng r;
    at_rng_seed(&r, 5);
    const size_t in = (size_t)n * c * h * w, out = (size_t)n * at_net_out_size(a);
    float *x = malloc(sizeof(float) * in), *dl = malloc(sizeof(float) * out);
    float *dxa = malloc(sizeof(float) * in), *dxb = malloc(sizeof(float) * in);
    fill(x, in, &r, 0.0f, 1.0f);
    fill(dl, out, &r, -1.0f, 1.0f);
    const float *la, *lb;
    CHECK_OK(at_net_forward(a, x, n, &la));
    CHECK_OK(at_net_forward(b, x, n, &lb));
    int zeros = 0;
    for (size_t i = 0; i < out; i++) {
        CHECK_MSG(la[i] == lb[i], "%s: logit %zu: %g vs %g", fused, i, la[i], lb[i]);
        zeros += la[i] == 0.0f;
    }
    at_net_zero_grad(a);
    at_net_zero_grad(b);
    CHECK_OK(at_net_backward(a, dl, AT_GRAD_PARAMS | AT_GRAD_INPUT, dxa));
    CHECK_OK(at_net_backward(b, dl, AT_GRAD_PARAMS | AT_GRAD_INPUT, dxb));
    const float *ga = at_net_grads(a), *gb = at_net_grads(b);
    for (size_t i = 0; i < at_net_num_params(a); i++)
        CHECK_MSG(ga[i] == gb[i], "%s: parameter gradient %zu: %g vs %g", fused, i, ga[i], gb[i]);
    for (size_t i = 0; i < in; i++)
        CHECK_MSG(dxa[i] == dxb[i], "%s: input gradient %zu: %g vs %g", fused, i, dxa[i], dxb[i]);
    free(x);
    free(dl);
    free(dxa);
    free(dxb);
    at_net_free(a);
    at_net_free(b);
}

static void test_relu_fusion(void) {
    check_fusion("conv:5:3:1:1,relu,relu,conv:6:3:2:1,relu,flatten,linear:10",
                 "conv:5:3:1:1,leakyrelu:0,relu,conv:6:3:2:1,leakyrelu:0,flatten,linear:10", 2, 9, 9, 4);
    check_fusion("conv:10:7:1:0,relu", "conv:10:7:1:0,leakyrelu:0", 1, 7, 7, 6);
    check_fusion("mlp", "flatten,linear:256,leakyrelu:0,linear:128,leakyrelu:0,linear:10", 1, 28, 28, 5);
    check_fusion("flatten,linear:12,relu", "flatten,linear:12,leakyrelu:0", 2, 3, 3, 4);
    check_fusion("seed-cnn", "conv:6:5:1:2,leakyrelu:0,maxpool:2,conv:16:5,leakyrelu:0,maxpool:2,"
                 "flatten,linear:120,leakyrelu:0,linear:84,leakyrelu:0,linear:10", 1, 28, 28, 3);
}

/* ------------------------------------------------------------ BatchNorm's buffers */

/* PyTorch's running update from the batch x (n samples of C x area), in double. */
static void expected_running(const float *x, int n, int C, int area, const float *rm0,
                             const float *rv0, double *rm, double *rv) {
    for (int c = 0; c < C; c++) {
        double s = 0, q = 0;
        for (int i = 0; i < n; i++)
            for (int p = 0; p < area; p++) s += x[((size_t)i * C + c) * area + p];
        const double N = (double)n * area, mean = s / N;
        for (int i = 0; i < n; i++)
            for (int p = 0; p < area; p++) {
                const double d = x[((size_t)i * C + c) * area + p] - mean;
                q += d * d;
            }
        rm[c] = 0.1 * mean + 0.9 * rm0[c];
        rv[c] = 0.1 * (q / (N - 1)) + 0.9 * rv0[c]; /* the unbiased variance */
    }
}

static bool running_close(const float *got, const double *want, int C) {
    for (int c = 0; c < C; c++)
        if (!(fabs(got[c] - want[c]) <= 1e-7 + 1e-6 * fabs(want[c]))) return false;
    return true;
}

/* Through the network: the buffers' names and initial values; eval passes change no bit of
 * them; a training forward moves them as PyTorch does (one and two threads), its backward leaves
 * them; a second training forward moves them again from where they are. */
static void check_bn_buffers(at_layer_kind kind, int C, int H, int W, int n) {
    const char *label = kind == AT_LAYER_BATCHNORM1D ? "bn1d" : "bn";
    at_layer_desc d = mk(kind, 0, 0, 0, 0, 0);
    at_net *net = NULL;
    CHECK_OK(at_net_create(&net, &d, 1, C, H, W));
    if (!net) return;
    at_net_init(net, 3);
    const at_param_info *rmi = at_net_find_buffer(net, "0.running_mean");
    const at_param_info *rvi = at_net_find_buffer(net, "0.running_var");
    const at_param_info *nbi = at_net_find_buffer(net, "0.num_batches_tracked");
    CHECK_MSG(rmi && rvi && nbi && at_net_num_buffers(net) == 3, "%s: buffers missing", label);
    if (!rmi || !rvi || !nbi) {
        at_net_free(net);
        return;
    }
    CHECK(rmi->size == (size_t)C && rvi->size == (size_t)C && nbi->size == 1);
    CHECK(!rmi->is_integer && !rvi->is_integer && nbi->is_integer && nbi->ndim == 0);
    float *buf = at_net_buffers(net), *rm = buf + rmi->offset, *rv = buf + rvi->offset;
    float *nbt = buf + nbi->offset;
    bool init_ok = *nbt == 0.0f;
    for (int c = 0; c < C; c++) init_ok = init_ok && rm[c] == 0.0f && rv[c] == 1.0f;
    CHECK_MSG(init_ok, "%s: running statistics do not start at mean 0, var 1, count 0", label);
    const int area = H * W, in = C * area;
    const size_t nb = at_net_num_buffer_floats(net);
    float *x = malloc(sizeof(float) * (size_t)n * in), *r = malloc(sizeof(float) * (size_t)n * in);
    float *dx = malloc(sizeof(float) * (size_t)n * in), *snap = malloc(sizeof(float) * nb);
    float *after = malloc(sizeof(float) * nb);
    double *want_m = malloc(sizeof(double) * C), *want_v = malloc(sizeof(double) * C);
    at_rng g;
    at_rng_seed(&g, 21);
    for (size_t i = 0; i < (size_t)n * in; i++)
        x[i] = (float)((i / area) % C) - 1.0f + 2.0f * at_rng_uniform(&g);
    fill(r, (size_t)n * in, &g, -1.0f, 1.0f);
    fill(rm, C, &g, -1.0f, 1.0f);
    fill(rv, C, &g, 0.5f, 2.0f);
    *nbt = 5.0f;
    memcpy(snap, buf, sizeof(float) * nb);

    /* Eval mode: nothing changes, forward or backward, with either flag. */
    CHECK_OK(at_net_forward(net, x, n, NULL));
    CHECK_OK(at_net_backward(net, r, AT_GRAD_PARAMS | AT_GRAD_INPUT, dx));
    CHECK_OK(at_net_backward(net, r, AT_GRAD_INPUT, dx));
    CHECK_MSG(memcmp(buf, snap, sizeof(float) * nb) == 0, "%s: an eval pass changed a buffer", label);

    at_net_set_training(net, true);
    for (int threads = 1; threads <= 2; threads++) {
        at_set_threads(threads);
        memcpy(buf, snap, sizeof(float) * nb);
        CHECK_OK(at_net_forward(net, x, n, NULL));
        expected_running(x, n, C, area, snap + rmi->offset, snap + rvi->offset, want_m, want_v);
        CHECK_MSG(running_close(rm, want_m, C), "%s (%d threads): running_mean not PyTorch's", label,
                  threads);
        CHECK_MSG(running_close(rv, want_v, C), "%s (%d threads): running_var not PyTorch's", label,
                  threads);
        CHECK_MSG(*nbt == 6.0f, "%s: num_batches_tracked %g after one update from 5", label,
                  (double)*nbt);
        memcpy(after, buf, sizeof(float) * nb);
        CHECK_OK(at_net_backward(net, r, AT_GRAD_PARAMS | AT_GRAD_INPUT, dx));
        CHECK_MSG(memcmp(buf, after, sizeof(float) * nb) == 0, "%s: backward changed a buffer", label);
    }
    /* A second batch (x reversed) moves them on from the first update. */
    for (size_t i = 0; i < (size_t)n * in / 2; i++) {
        const float t = x[i];
        x[i] = x[(size_t)n * in - 1 - i];
        x[(size_t)n * in - 1 - i] = t;
    }
    CHECK_OK(at_net_forward(net, x, n, NULL));
    expected_running(x, n, C, area, after + rmi->offset, after + rvi->offset, want_m, want_v);
    CHECK_MSG(running_close(rm, want_m, C) && running_close(rv, want_v, C) && *nbt == 7.0f,
              "%s: a second training forward does not update from the first", label);
    /* Back in eval mode: the updated statistics normalise, and stay. */
    at_net_set_training(net, false);
    memcpy(after, buf, sizeof(float) * nb);
    CHECK_OK(at_net_forward(net, x, n, NULL));
    CHECK(memcmp(buf, after, sizeof(float) * nb) == 0);
    free(x), free(r), free(dx), free(snap), free(after), free(want_m), free(want_v);
    at_net_free(net);
}

/* PyTorch refuses to train BatchNorm on one value per channel (N = n*H*W = 1), and so does the
 * network, changing nothing. */
static void check_bn_single_value(at_layer_kind kind, int C) {
    at_layer_desc d = mk(kind, 0, 0, 0, 0, 0);
    at_net *net = NULL;
    CHECK_OK(at_net_create(&net, &d, 1, C, 1, 1));
    if (!net) return;
    at_net_init(net, 3);
    at_net_set_training(net, true);
    const size_t nb = at_net_num_buffer_floats(net);
    float *snap = malloc(sizeof(float) * nb), x[16];
    memcpy(snap, at_net_buffers(net), sizeof(float) * nb);
    for (int i = 0; i < C; i++) x[i] = (float)i;
    CHECK_MSG(at_net_forward(net, x, 1, NULL) != AT_OK, "training on one value per channel accepted");
    CHECK(memcmp(snap, at_net_buffers(net), sizeof(float) * nb) == 0);
    free(snap);
    at_net_free(net);
}

static void test_batchnorm_buffers(void) {
    check_bn_buffers(AT_LAYER_BATCHNORM2D, 3, 4, 5, 5);
    check_bn_buffers(AT_LAYER_BATCHNORM2D, 2, 1, 3, 1);
    check_bn_buffers(AT_LAYER_BATCHNORM1D, 7, 1, 1, 6);
    check_bn_single_value(AT_LAYER_BATCHNORM1D, 4);
    check_bn_single_value(AT_LAYER_BATCHNORM2D, 3);
}

/* The residual network of test_layers along directions, with cross-entropy, in both modes, and
 * a depthwise-separable one (two threads: the sync points' sums over chunks). The running
 * statistics come from 20 training batches first: BatchNorm at its initial statistics is the
 * identity, which leaves the ReLU inputs so close to zero that the step crosses kinks. */
static void test_graph_networks(void) {
    at_layer_desc net_desc[13];
    const int n = 6;
    for (int dw = 0; dw < 2; dw++) {
        int k = 0;
        const char *label = dw ? "depthwise-separable network" : "residual network";
        net_desc[k++] = conv_g(4, 3, 1, 1, 0, true);
        net_desc[k++] = mk(AT_LAYER_BATCHNORM2D, 0, 0, 0, 0, 0);
        net_desc[k++] = mk(AT_LAYER_RELU, 0, 0, 0, 0, 0);
        net_desc[k++] = dw ? conv_g(4, 3, 2, 1, 4, true) : conv_g(4, 3, 1, 1, 0, true);
        net_desc[k++] = mk(AT_LAYER_BATCHNORM2D, 0, 0, 0, 0, 0);
        net_desc[k++] = mk(AT_LAYER_RELU, 0, 0, 0, 0, 0);
        net_desc[k++] = dw ? conv_g(8, 1, 1, 0, 0, true) : conv_g(4, 3, 1, 1, 0, true);
        net_desc[k++] = mk(AT_LAYER_BATCHNORM2D, 0, 0, 0, 0, 0);
        if (!dw) net_desc[k++] = reading(mk(AT_LAYER_ADD, 0, 0, 0, 0, 0), "", "2");
        net_desc[k++] = mk(AT_LAYER_RELU, 0, 0, 0, 0, 0);
        net_desc[k++] = mk(AT_LAYER_GLOBALAVGPOOL, 0, 0, 0, 0, 0);
        net_desc[k++] = mk(AT_LAYER_FLATTEN, 0, 0, 0, 0, 0);
        net_desc[k++] = mk(AT_LAYER_LINEAR, 10, 0, 0, 0, 0);
        for (int training = 0; training < 2; training++) {
            at_net *net = NULL;
            at_status st = at_net_create(&net, net_desc, k, 3, 8, 8);
            CHECK_MSG(st == AT_OK, "%s: %s", label, at_error_message());
            if (net) check_network_on(net, label, 3, 8, 8, n, false, training, 20);
        }
    }
}

int main(void) {
    test_relu_fusion();
    test_layers();
    test_dropout();
    test_dropout2d();
    test_maxpool_ties();
    test_networks();
    test_batchnorm_buffers();
    test_graph_networks();
    return tu_finish("test_gradcheck");
}
