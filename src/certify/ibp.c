/* Interval bound propagation (IBP; Gowal et al. 2018, "On the effectiveness of interval bound
 * propagation for training verifiably robust models"): from a box of inputs, a box that holds
 * every logit any input of the box can produce, in eval mode.
 *
 * Each layer kind says how a box passes through it (at_layer_ops.bound_rule): an affine layer
 * (Linear, Conv2d, BatchNorm in eval mode, average pooling, Add, Dropout in eval) maps the
 * box's centre with its own forward and its radius with |A| (the same forward on a copy of the
 * parameters with every coefficient made non-negative and no offset: at_layer_ops.abs_map); a
 * monotone one (ReLU, LeakyReLU, Tanh, Sigmoid, max pooling) maps the lower and the upper
 * bound. So the rule for a kind is one line in its table, and its kernels are the forward's.
 *
 * The margins z_y - z_j, what verification needs, fold the last Linear layer into the margin
 * (Gowal et al.'s elision): (W_y - W_j) h + b_y - b_j over the box of h is tighter than the
 * difference of two logit intervals. Bounds are computed in float, like the forward: sound up
 * to its rounding (the tests allow 1e-5 of the largest value, as auto_LiRPA's comparisons do).
 *
 * Chunks of samples go to the threads; each thread has its own bounds of every tensor. */
#include "bounds.h"

#include <math.h>
#include <omp.h>
#include <string.h>

enum { IBP_CHUNK = 16 };

static size_t max_work(const at_net *net, int chunk) {
    size_t w = 0;
    for (int l = 0; l < net->nlayers; l++) {
        const at_layer *L = &net->layers[l];
        if (!L->fused) w = AT_MAX(w, at_layer_ops_for(L->d.kind)->workspace(L, chunk));
    }
    return w;
}

int bounds_unsupported(const at_net *net, int stop) {
    for (int l = 0; l < stop; l++)
        if (!net->layers[l].fused && at_layer_ops_for(net->layers[l].d.kind)->bound_rule == AT_BOUND_NONE) return l;
    return -1;
}

/* |A| of every affine node: weights |w| and biases 0 unless the kind maps its own. */
static at_status make_abs(bound_net *B) {
    B->abs_params = B->abs_buffers = NULL;
    const at_net *net = B->net;
    B->abs_params = at_alloc_floats(AT_MAX(net->nparams, 1), "bound parameters");
    B->abs_buffers = at_alloc_floats(AT_MAX(net->nbuffer_floats, 1), "bound buffers");
    if (!B->abs_params || !B->abs_buffers) return AT_ERR_NOMEM;
    memcpy(B->abs_params, net->params, sizeof(float) * net->nparams);
    if (net->nbuffer_floats) memcpy(B->abs_buffers, net->buffers, sizeof(float) * net->nbuffer_floats);
    for (int l = 0; l < B->stop; l++) {
        const at_layer *L = &net->layers[l];
        const at_layer_ops *ops = at_layer_ops_for(L->d.kind);
        if (L->fused || ops->bound_rule != AT_BOUND_AFFINE) continue;
        if (ops->abs_map) {
            ops->abs_map(L, B->abs_params, B->abs_buffers);
            continue;
        }
        for (size_t i = 0; i < L->w_count; i++) B->abs_params[L->w_off + i] = fabsf(B->abs_params[L->w_off + i]);
        memset(B->abs_params + L->b_off, 0, sizeof(float) * L->b_count);
    }
    return AT_OK;
}

/* One thread's buffers, carved out of one block: every non-fused tensor's bounds (and a fused
 * ReLU's producer's bounds before it), then scratch. */
static size_t thread_floats(const bound_net *B) {
    const at_net *net = B->net;
    const size_t C = (size_t)B->chunk;
    size_t f = 2 * C * net_in_size(net);
    for (int l = 0; l < net->nlayers; l++) {
        const at_layer *L = &net->layers[l];
        if (!L->fused) f += (L->relu_out ? 4 : 2) * C * L->out_size;
    }
    return f + 6 * C * bounds_max_tensor(net) + max_work(net, B->chunk) + B->extra;
}

/* Two arrays of C rows of `size` floats from *block. */
static void take_pair(float **block, size_t rows, int size, float **a, float **b) {
    *a = *block;
    *b = *block + rows * size;
    *block += 2 * rows * size;
}

static void carve(const bound_net *B, float *block, float **ptrs, thread_bufs *T) {
    const at_net *net = B->net;
    const size_t C = (size_t)B->chunk, big = C * bounds_max_tensor(net), nt = (size_t)net->nlayers + 1;
    T->lo = ptrs;
    T->hi = ptrs + nt;
    T->pre_lo = ptrs + 2 * nt;
    T->pre_hi = ptrs + 3 * nt;
    take_pair(&block, C, net_in_size(net), &T->lo[0], &T->hi[0]);
    for (int l = 0; l < net->nlayers; l++) {
        const at_layer *L = &net->layers[l];
        T->pre_lo[l] = T->pre_hi[l] = NULL;
        if (L->fused) { /* its tensor is its source's */
            T->lo[l + 1] = T->lo[L->src[0] + 1];
            T->hi[l + 1] = T->hi[L->src[0] + 1];
            continue;
        }
        take_pair(&block, C, L->out_size, &T->lo[l + 1], &T->hi[l + 1]);
        if (L->relu_out) take_pair(&block, C, L->out_size, &T->pre_lo[l], &T->pre_hi[l]);
    }
    float **s[] = {&T->mid, &T->rad, &T->mid2, &T->rad2, &T->ymid, &T->yrad};
    for (int i = 0; i < 6; i++, block += big) *s[i] = block;
    T->work = block;
    T->extra = block + max_work(net, B->chunk);
}

/* An affine node: centre through the forward, radius through |A|, then the fused ReLU. */
static void affine_bounds(const bound_net *B, const thread_bufs *T, at_ctx ctx, int l, int n) {
    const at_net *net = B->net;
    at_layer A = net->layers[l];
    const at_layer_ops *ops = at_layer_ops_for(A.d.kind);
    const bool relu = A.relu_out;
    A.relu_out = false;
    const size_t in = (size_t)n * A.in_size, out = (size_t)n * A.out_size;
    bounds_centre_radius(T->lo[A.src[0] + 1], T->hi[A.src[0] + 1], in, T->mid, T->rad);
    if (A.nsrc == 2) bounds_centre_radius(T->lo[A.src[1] + 1], T->hi[A.src[1] + 1], in, T->mid2, T->rad2);
    ctx.x2 = T->mid2;
    ops->forward(&A, &ctx, T->mid, T->ymid, n);
    ctx.params = B->abs_params;
    ctx.buffers = B->abs_buffers;
    ctx.x2 = T->rad2;
    ops->forward(&A, &ctx, T->rad, T->yrad, n);
    float *lo = T->lo[l + 1], *hi = T->hi[l + 1];
    for (size_t i = 0; i < out; i++) {
        lo[i] = T->ymid[i] - T->yrad[i];
        hi[i] = T->ymid[i] + T->yrad[i];
    }
    if (!relu) return;
    memcpy(T->pre_lo[l], lo, sizeof(float) * out); /* CROWN relaxes the ReLU with these */
    memcpy(T->pre_hi[l], hi, sizeof(float) * out);
    for (size_t i = 0; i < out; i++) {
        lo[i] = at_relu(lo[i]);
        hi[i] = at_relu(hi[i]);
    }
}

/* Nodes [0, B->stop) on the chunk's n samples, whose input bounds are in T->lo[0], T->hi[0]. */
static void propagate(const bound_net *B, const thread_bufs *T, int n) {
    const at_net *net = B->net;
    const at_ctx ctx = {.params = net->params, .work = T->work, .buffers = net->buffers};
    for (int l = 0; l < B->stop; l++) {
        const at_layer *L = &net->layers[l];
        if (L->fused) continue;
        const at_layer_ops *ops = at_layer_ops_for(L->d.kind);
        if (ops->bound_rule == AT_BOUND_AFFINE) {
            affine_bounds(B, T, ctx, l, n);
            continue;
        }
        ops->forward(L, &ctx, T->lo[L->src[0] + 1], T->lo[l + 1], n);
        ops->forward(L, &ctx, T->hi[L->src[0] + 1], T->hi[l + 1], n);
    }
}

at_status bounds_run(bound_net *B, int total, chunk_input input, chunk_done done, void *user) {
    at_net *net = B->net;
    at_status s = make_abs(B);
    const int T = AT_MAX(1, AT_MIN(at_get_threads(), (total + B->chunk - 1) / B->chunk));
    const size_t floats = thread_floats(B), nptrs = 4 * ((size_t)net->nlayers + 1);
    float *block = s == AT_OK ? at_alloc_floats(floats * (size_t)T, "bound buffers") : NULL;
    float **ptrs = block ? at_calloc(nptrs * (size_t)T, sizeof(float *), "bound tensors") : NULL;
    if (s == AT_OK && !ptrs) s = AT_ERR_NOMEM;
    const bool was_training = net->training;
    net->training = false;
#pragma omp parallel num_threads(T) if (s == AT_OK && T > 1)
    {
        const int t = omp_get_thread_num();
        thread_bufs bufs;
        if (s == AT_OK) {
            carve(B, block + floats * (size_t)t, ptrs + nptrs * (size_t)t, &bufs);
            for (int begin = t * B->chunk; begin < total; begin += T * B->chunk) {
                const int n = AT_MIN(B->chunk, total - begin);
                input(net, user, begin, n, bufs.lo[0], bufs.hi[0]);
                propagate(B, &bufs, n);
                done(B, &bufs, user, begin, n);
            }
        }
    }
    net->training = was_training;
    free(ptrs);
    free(block);
    free(B->abs_params);
    free(B->abs_buffers);
    return s;
}

/* AT_ERR_ARG naming node l, which `method` cannot bound. */
static at_status refuse(const at_net *net, int l, const char *method) {
    return at_fail(AT_ERR_ARG, "%s bounds: node %d (%s) has no rule for them", method, l,
                   at_layer_ops_for(net->layers[l].d.kind)->name);
}

/* ------------------------------------------------------------ logit bounds */

typedef struct box_job {
    const float *lo, *hi;
    float *out_lo, *out_hi;
} box_job;

static void box_input(const at_net *net, void *user, int begin, int n, float *lo, float *hi) {
    const box_job *J = user;
    const size_t D = (size_t)net_in_size(net);
    memcpy(lo, J->lo + begin * D, sizeof(float) * n * D);
    memcpy(hi, J->hi + begin * D, sizeof(float) * n * D);
}

static void box_done(const bound_net *B, const thread_bufs *T, void *user, int begin, int n) {
    const box_job *J = user;
    const at_net *net = B->net;
    const int t = net->plan.out_tensor;
    const size_t K = (size_t)at_net_out_size(net);
    memcpy(J->out_lo + begin * K, T->lo[t + 1], sizeof(float) * n * K);
    memcpy(J->out_hi + begin * K, T->hi[t + 1], sizeof(float) * n * K);
}

/* Whether lo <= hi everywhere, with no NaN. */
static bool valid_box(const float *lo, const float *hi, size_t count) {
    for (size_t i = 0; i < count; i++)
        if (!(lo[i] <= hi[i])) return false;
    return true;
}

at_status at_net_interval_bounds(at_net *net, const float *lo, const float *hi, int n, float *out_lo,
                                 float *out_hi) {
    if (!net || n < 0 || (n > 0 && (!lo || !hi || !out_lo || !out_hi)))
        return at_fail(AT_ERR_ARG, "at_net_interval_bounds: NULL argument or negative count");
    if (!valid_box(lo, hi, (size_t)n * net_in_size(net)))
        return at_fail(AT_ERR_ARG, "at_net_interval_bounds: a lower bound is above its upper bound, or NaN");
    const int l = bounds_unsupported(net, net->nlayers);
    if (l >= 0) return refuse(net, l, "interval");
    bound_net B = {.net = net, .stop = net->nlayers, .chunk = IBP_CHUNK};
    box_job J = {lo, hi, out_lo, out_hi};
    return n ? bounds_run(&B, n, box_input, box_done, &J) : AT_OK;
}

/* ------------------------------------------------------------ margin bounds */

static const char *const bound_method_names[] = {"ibp", "crown-ibp", "crown"}; /* at_bound_method order */

const char *at_bound_method_name(at_bound_method m) {
    return (unsigned)m < sizeof bound_method_names / sizeof *bound_method_names ? bound_method_names[m] : "?";
}

at_status at_bound_method_from_name(const char *name, at_bound_method *m) {
    for (size_t i = 0; i < sizeof bound_method_names / sizeof *bound_method_names; i++)
        if (strcmp(name, bound_method_names[i]) == 0) {
            *m = (at_bound_method)i;
            return AT_OK;
        }
    return at_fail(AT_ERR_ARG, "unknown bound method '%s' (ibp, crown-ibp, crown)", name);
}

void bounds_ball_input(const at_net *net, void *user, int begin, int n, float *lo, float *hi) {
    const margin_job *J = user;
    const size_t D = (size_t)net_in_size(net);
    const float *x = J->x + begin * D;
    for (size_t i = 0; i < n * D; i++) {
        lo[i] = fmaxf(x[i] - J->eps, 0.0f);
        hi[i] = fminf(x[i] + J->eps, 1.0f);
    }
}

/* Lower bound of (W_y - W_j) h + b_y - b_j over the box of h (centre mid, radius rad). */
static float folded_margin(const float *W, const float *b, int D, int y, int j, const float *mid,
                           const float *rad) {
    const float *wy = W + (size_t)y * D, *wj = W + (size_t)j * D;
    double centre = (double)b[y] - b[j], spread = 0.0;
    for (int i = 0; i < D; i++) {
        const double c = (double)wy[i] - wj[i];
        centre += c * mid[i];
        spread += fabs(c) * rad[i];
    }
    return (float)(centre - spread);
}

static void margin_done(const bound_net *B, const thread_bufs *T, void *user, int begin, int n) {
    const margin_job *J = user;
    const at_net *net = B->net;
    const int K = at_net_out_size(net);
    for (int r = 0; r < n; r++) {
        const int y = J->y[begin + r];
        float *m = J->margins + (size_t)(begin + r) * K;
        if (J->elide >= 0) {
            const at_layer *L = &net->layers[J->elide];
            const int D = L->in_size, src = L->src[0] + 1;
            bounds_centre_radius(T->lo[src] + (size_t)r * D, T->hi[src] + (size_t)r * D, (size_t)D, T->mid, T->rad);
            for (int j = 0; j < K; j++)
                m[j] = j == y ? INFINITY
                              : folded_margin(net->params + L->w_off, net->params + L->b_off, D, y, j, T->mid, T->rad);
        } else {
            const int t = net->plan.out_tensor + 1;
            const float *lo = T->lo[t] + (size_t)r * K, *hi = T->hi[t] + (size_t)r * K;
            for (int j = 0; j < K; j++) m[j] = j == y ? INFINITY : lo[y] - hi[j];
        }
    }
}

/* The node folded into the margins: the network's last node when it is a Linear without a
 * fused ReLU; -1 otherwise. */
static int elided_node(const at_net *net) {
    const int t = net->plan.out_tensor;
    const at_layer *L = &net->layers[t];
    return L->d.kind == AT_LAYER_LINEAR && !L->relu_out ? t : -1;
}

at_status at_net_margin_bounds(at_net *net, const float *x, const int32_t *y, int n, float eps,
                               at_bound_method method, float *margins) {
    if (!net || n < 0 || (n > 0 && (!x || !y || !margins)))
        return at_fail(AT_ERR_ARG, "at_net_margin_bounds: NULL argument or negative count");
    if (!(eps >= 0.0f) || !isfinite(eps))
        return at_fail(AT_ERR_ARG, "at_net_margin_bounds: eps %g must be finite and >= 0", (double)eps);
    if (method != AT_BOUND_IBP && method != AT_BOUND_CROWN_IBP && method != AT_BOUND_CROWN)
        return at_fail(AT_ERR_ARG, "at_net_margin_bounds: unknown bound method %d", (int)method);
    const int K = at_net_out_size(net);
    for (int i = 0; i < n; i++)
        if (y[i] < 0 || y[i] >= K)
            return at_fail(AT_ERR_ARG, "at_net_margin_bounds: label %d of sample %d outside 0..%d", y[i], i, K - 1);
    const bool crown = method != AT_BOUND_IBP, full = method == AT_BOUND_CROWN;
    margin_job J = {x, y, eps, margins, crown ? -1 : elided_node(net)};
    int l = crown ? crown_unsupported(net) : -1;
    if (l < 0) l = bounds_unsupported(net, net->nlayers);
    if (l >= 0) return refuse(net, l, full ? "CROWN" : crown ? "CROWN-IBP" : "interval");
    /* Full CROWN: one sample per chunk, its intermediate bounds CROWN_ROWS rows at a time. */
    const int chunk = full ? 1 : crown ? 2 : IBP_CHUNK;
    bound_net B = {.net = net, .stop = J.elide >= 0 ? J.elide : net->nlayers, .chunk = chunk,
                   .extra = full ? crown_scratch_rows(net, AT_MAX(K, CROWN_ROWS)) : crown ? crown_scratch(net, chunk) : 0};
    chunk_done done = full ? crown_full_margins : crown ? crown_margins : margin_done;
    return n ? bounds_run(&B, n, bounds_ball_input, done, &J) : AT_OK;
}
