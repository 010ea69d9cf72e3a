/* BatchNorm2d and BatchNorm1d with PyTorch's semantics (nn.BatchNorm2d / nn.BatchNorm1d with
 * their defaults: eps 1e-5, momentum 0.1, affine, track_running_stats):
 *  - training: each channel is normalised with the batch's mean and biased variance over every
 *    sample and pixel (N = n*H*W values), then scaled by weight and shifted by bias. The running
 *    statistics move towards the batch's, running = (1 - m)*running + m*batch, the variance's
 *    with the unbiased batch variance var*N/(N-1); num_batches_tracked counts the updates;
 *  - eval: the affine map of the running statistics; it changes nothing.
 * BatchNorm1d is the same on flat features (C x 1 x 1: a Linear's output, one value per channel
 * and sample).
 *
 * Training needs the whole batch, which the executor's sync points give. forward_stats sums x
 * and x^2 per channel (in double) over a chunk; forward_reduce turns the batch's totals into the
 * mean and inverse deviation (kept in the layer's state) and updates the running statistics;
 * then every chunk normalises. Backward likewise: backward_stats sums dy and dy*(x - mean),
 * backward_reduce writes dweight = sum dy*xhat and dbias = sum dy (batch sums, so no chunk adds
 * them) and the two means that the input gradient of every chunk needs (PyTorch's
 * batch_norm_backward):
 *     dx = weight*invstd * (dy - mean(dy) - xhat*mean(dy*xhat)),  xhat = (x - mean)*invstd.
 * A fused ReLU (relu_out) rectifies the output, and its gate zeroes dy before any of this. */
#include "layer.h"

#include "dsum.h"
#include <math.h>
#include <stdio.h>

/* PyTorch's defaults (eps: AT_BN_EPS in layer.h); the spec takes no options. */
#define BN_MOMENTUM 0.1

/* The state: C floats each of the batch mean, the inverse deviation 1/sqrt(var + eps), and the
 * batch means of dy and of dy*xhat (written by backward_reduce). */
enum { ST_MEAN, ST_INVSTD, ST_MEAN_DY, ST_MEAN_DYXHAT, ST_ARRAYS };

static float *state_of(const at_layer *L, const at_ctx *ctx, int which) {
    return ctx->state + L->state_off + (size_t)which * L->in_c;
}

/* Buffers, in the order of PyTorch's state_dict: running_mean, running_var (C each), then
 * num_batches_tracked. */
static float *running_mean(const at_layer *L, const at_ctx *ctx) {
    return ctx->buffers + L->buf_off;
}
static float *running_var(const at_layer *L, const at_ctx *ctx) {
    return ctx->buffers + L->buf_off + L->in_c;
}

static size_t plane_of(const at_layer *L) { return (size_t)L->in_h * L->in_w; }

static at_status bn_setup(at_layer *L) {
    const int C = L->in_c;
    L->out_c = C;
    L->out_h = L->in_h;
    L->out_w = L->in_w;
    L->w_count = L->b_count = (size_t)C;
    L->w_ndim = 1;
    L->w_shape[0] = C;
    L->nbufs = 3;
    L->bufs[0] = (at_buffer_desc){"running_mean", C, false};
    L->bufs[1] = (at_buffer_desc){"running_var", C, false};
    L->bufs[2] = (at_buffer_desc){"num_batches_tracked", 1, true};
    L->state_count = (size_t)ST_ARRAYS * C;
    L->stats_count = 2 * (size_t)C;
    return AT_OK;
}

static at_status bn1d_setup(at_layer *L) {
    if (L->in_h != 1 || L->in_w != 1)
        return at_fail(AT_ERR_SHAPE,
                       "bn1d layer %d: BatchNorm1d normalises flat features (C x 1 x 1, e.g. a "
                       "linear layer's output), got a %dx%dx%d input; flatten it first, or use "
                       "bn (BatchNorm2d) on images",
                       L->index, L->in_c, L->in_h, L->in_w);
    return bn_setup(L);
}

/* Per-channel tables of the forward (shift, scale) and of the input gradient (four). */
static size_t bn_workspace(const at_layer *L, int n) { return 4 * (size_t)L->in_c; }

/* Eval mode's scale weight / sqrt(running_var + eps), in double and rounded once: forward and
 * backward use the same value. */
static float eval_scale(float gamma, float var) {
    return (float)((double)gamma / sqrt((double)var + AT_BN_EPS));
}

static void bn_forward_stats(const at_layer *L, const at_ctx *ctx, const float *x, int n,
                             double *acc) {
    const int C = L->in_c;
    const size_t area = plane_of(L);
    for (int s = 0; s < n; s++)
        for (int c = 0; c < C; c++)
            at_sums_double(x + ((size_t)s * C + c) * area, area, &acc[c], &acc[C + c]);
}

/* The batch's statistics from its totals, and PyTorch's running update
 * (batch_norm_cpu_update_stats_template: m*batch + (1 - m)*running in double, rounded once). */
static void bn_forward_reduce(const at_layer *L, const at_ctx *ctx, const double *sum, int n) {
    const int C = L->in_c;
    const double N = (double)n * (double)plane_of(L);
    float *mean = state_of(L, ctx, ST_MEAN), *invstd = state_of(L, ctx, ST_INVSTD);
    float *rm = running_mean(L, ctx), *rv = running_var(L, ctx);
    for (int c = 0; c < C; c++) {
        const double mu = sum[c] / N;
        /* E[x^2] - mean^2: in double the cancellation costs nothing at float precision unless
         * |mean| exceeds the deviation by about 10^4. Rounding may leave it just below zero
         * (a constant channel); a NaN stays NaN. */
        double var = sum[C + c] / N - mu * mu;
        if (var < 0) var = 0;
        mean[c] = (float)mu;
        invstd[c] = (float)(1.0 / sqrt(var + AT_BN_EPS));
        /* The executor refuses N < 2 in training, as PyTorch does ("Expected more than 1 value
         * per channel"); the guard only keeps a division by zero out. */
        const double unbiased = N > 1 ? var * N / (N - 1) : var;
        rm[c] = (float)(BN_MOMENTUM * mu + (1.0 - BN_MOMENTUM) * rm[c]);
        rv[c] = (float)(BN_MOMENTUM * unbiased + (1.0 - BN_MOMENTUM) * rv[c]);
    }
    rv[C] += 1.0f; /* num_batches_tracked follows running_var */
}

/* y = (x - shift[c]) * scale[c] + beta[c], rectified if the layer applies a fused ReLU. */
static void normalise(const at_layer *L, const float *x, float *y, int n, const float *shift,
                      const float *scale, const float *beta) {
    const int C = L->in_c;
    const size_t area = plane_of(L);
    for (int s = 0; s < n; s++)
        for (int c = 0; c < C; c++) {
            const size_t at = ((size_t)s * C + c) * area;
            const float *xs = x + at;
            float *ys = y + at;
            const float m = shift[c], k = scale[c], b = beta[c];
            if (L->relu_out)
                for (size_t p = 0; p < area; p++) ys[p] = at_relu((xs[p] - m) * k + b);
            else
                for (size_t p = 0; p < area; p++) ys[p] = (xs[p] - m) * k + b;
        }
}

static void bn_forward(const at_layer *L, const at_ctx *ctx, const float *x, float *y, int n) {
    const int C = L->in_c;
    const float *gamma = ctx->params + L->w_off, *beta = ctx->params + L->b_off;
    float *shift = ctx->work, *scale = shift + C;
    if (ctx->training) { /* the batch's statistics, from forward_reduce */
        const float *mean = state_of(L, ctx, ST_MEAN), *invstd = state_of(L, ctx, ST_INVSTD);
        for (int c = 0; c < C; c++) {
            shift[c] = mean[c];
            scale[c] = invstd[c] * gamma[c];
        }
    } else {
        const float *rm = running_mean(L, ctx), *rv = running_var(L, ctx);
        for (int c = 0; c < C; c++) {
            shift[c] = rm[c];
            scale[c] = eval_scale(gamma[c], rv[c]);
        }
    }
    normalise(L, x, y, n, shift, scale, beta);
}

static inline at_f4 load_f4(const float *p) {
    at_f4 v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Adds, in double, the sums of g and of g*(x - shift) over count values, g being dy where the
 * gate (a fused ReLU's output) is positive and +0 elsewhere, as at_relu_grad; dy itself if the
 * gate is NULL. */
static void grad_sums(const float *dy, const float *gate, const float *x, float shift,
                      size_t count, double *sum_g, double *sum_gx) {
    at_d4 a = {0}, b = {0};
    const double m = shift;
    size_t i = 0;
    for (; i + 4 <= count; i += 4) {
        at_f4 g = load_f4(dy + i);
        if (gate) g = (at_f4)((at_i4)g & (load_f4(gate + i) > (at_f4){0}));
        const at_d4 gd = __builtin_convertvector(g, at_d4);
        a += gd;
        b += gd * (at_load_d4(x + i) - m);
    }
    double s1 = at_lanes_d4(a), s2 = at_lanes_d4(b);
    for (; i < count; i++) {
        const double g = gate && !(gate[i] > 0.0f) ? 0.0 : dy[i];
        s1 += g;
        s2 += g * ((double)x[i] - m);
    }
    *sum_g += s1;
    *sum_gx += s2;
}

/* Per channel: acc[c] += sum dy, acc[C + c] += sum dy*(x - mean); backward_reduce scales the
 * second by invstd (one multiply per channel instead of one per value). */
static void bn_backward_stats(const at_layer *L, const at_ctx *ctx, const float *x, const float *y,
                              const float *dy, int n, double *acc) {
    const int C = L->in_c;
    const size_t area = plane_of(L);
    const float *mean = state_of(L, ctx, ST_MEAN);
    for (int s = 0; s < n; s++)
        for (int c = 0; c < C; c++) {
            const size_t at = ((size_t)s * C + c) * area;
            grad_sums(dy + at, L->relu_out ? y + at : NULL, x + at, mean[c], area, &acc[c],
                      &acc[C + c]);
        }
}

static void bn_backward_reduce(const at_layer *L, const at_ctx *ctx, const double *sum, int n,
                               bool param_grads) {
    const int C = L->in_c;
    const double N = (double)n * (double)plane_of(L);
    const float *invstd = state_of(L, ctx, ST_INVSTD);
    float *mean_dy = state_of(L, ctx, ST_MEAN_DY), *mean_dyxhat = state_of(L, ctx, ST_MEAN_DYXHAT);
    float *dgamma = ctx->grads + L->w_off, *dbeta = ctx->grads + L->b_off;
    for (int c = 0; c < C; c++) {
        const double sum_dy = sum[c], sum_dyxhat = sum[C + c] * invstd[c];
        mean_dy[c] = (float)(sum_dy / N);
        mean_dyxhat[c] = (float)(sum_dyxhat / N);
        if (param_grads) {
            dgamma[c] += (float)sum_dyxhat;
            dbeta[c] += (float)sum_dy;
        }
    }
}

/* Training: dx = k*((g - mean(g)) - (x - mean)*q), k = weight*invstd, q = invstd*mean(g*xhat),
 * g the (gated) dy. Elementwise, so dx may be dy itself. */
static void train_input_gradient(const at_layer *L, const at_ctx *ctx, const float *x,
                                 const float *y, const float *dy, float *dx, int n) {
    const int C = L->in_c;
    const size_t area = plane_of(L);
    const float *gamma = ctx->params + L->w_off, *mean = state_of(L, ctx, ST_MEAN);
    const float *invstd = state_of(L, ctx, ST_INVSTD), *mean_dy = state_of(L, ctx, ST_MEAN_DY);
    const float *mean_dyxhat = state_of(L, ctx, ST_MEAN_DYXHAT);
    float *k = ctx->work, *q = k + C;
    for (int c = 0; c < C; c++) {
        k[c] = gamma[c] * invstd[c];
        q[c] = invstd[c] * mean_dyxhat[c];
    }
    for (int s = 0; s < n; s++)
        for (int c = 0; c < C; c++) {
            const size_t at = ((size_t)s * C + c) * area;
            const float *g = dy + at, *xs = x + at, *gate = y + at;
            float *d = dx + at;
            const float kc = k[c], m = mean[c], gm = mean_dy[c], qc = q[c];
            if (L->relu_out)
                for (size_t p = 0; p < area; p++) {
                    const float gp = gate[p] > 0.0f ? g[p] : 0.0f;
                    d[p] = kc * ((gp - gm) - (xs[p] - m) * qc);
                }
            else
                for (size_t p = 0; p < area; p++) d[p] = kc * ((g[p] - gm) - (xs[p] - m) * qc);
        }
}

/* Eval: the layer is affine, y = (x - rm)*k + beta: dx = g*k; dweight and dbias are this chunk's
 * sums (no sync point in eval mode). Channel by channel, the sums before dx (dx may be dy). */
static void eval_backward(const at_layer *L, const at_ctx *ctx, const float *x, const float *y,
                          const float *dy, float *dx, int n, bool param_grads) {
    const int C = L->in_c;
    const size_t area = plane_of(L);
    const float *gamma = ctx->params + L->w_off;
    const float *rm = running_mean(L, ctx), *rv = running_var(L, ctx);
    const float *gate = L->relu_out ? y : NULL;
    for (int c = 0; c < C; c++) {
        if (param_grads) {
            double sum_g = 0, sum_gx = 0;
            for (int s = 0; s < n; s++) {
                const size_t at = ((size_t)s * C + c) * area;
                grad_sums(dy + at, gate ? gate + at : NULL, x + at, rm[c], area, &sum_g, &sum_gx);
            }
            ctx->grads[L->w_off + c] += (float)(sum_gx / sqrt((double)rv[c] + AT_BN_EPS));
            ctx->grads[L->b_off + c] += (float)sum_g;
        }
        if (!dx) continue;
        const float k = eval_scale(gamma[c], rv[c]);
        for (int s = 0; s < n; s++) {
            const size_t at = ((size_t)s * C + c) * area;
            if (gate)
                for (size_t p = 0; p < area; p++)
                    dx[at + p] = (gate[at + p] > 0.0f ? dy[at + p] : 0.0f) * k;
            else
                for (size_t p = 0; p < area; p++) dx[at + p] = dy[at + p] * k;
        }
    }
}

/* In training the parameter gradients came from backward_reduce: none here. */
static void bn_backward(const at_layer *L, const at_ctx *ctx, const float *x, const float *y,
                        const float *dy, float *dx, int n, bool param_grads) {
    if (!ctx->training)
        eval_backward(L, ctx, x, y, dy, dx, n, param_grads);
    else if (dx)
        train_input_gradient(L, ctx, x, y, dy, dx, n);
}

/* The output is written anyway: rectifying it on the way costs nothing. */
static bool bn_fuses_relu(const at_layer *L) { return true; }

/* nn.BatchNorm's reset_parameters and reset_running_stats. */
static void bn_init(const at_layer *L, float *params, float *buffers) {
    const int C = L->in_c;
    for (int c = 0; c < C; c++) {
        params[L->w_off + c] = 1.0f;
        params[L->b_off + c] = 0.0f;
        buffers[L->buf_off + c] = 0.0f;
        buffers[L->buf_off + C + c] = 1.0f;
    }
    buffers[L->buf_off + 2 * (size_t)C] = 0.0f;
}

/* Eval mode is y = gamma (x - mean) / sqrt(var + eps) + beta per channel: its |A| scales by
 * |gamma| / sqrt(var + eps), which is the same forward with |gamma|, beta 0 and mean 0. */
static void bn_abs_map(const at_layer *L, float *params, float *buffers) {
    for (int c = 0; c < L->in_c; c++) {
        params[L->w_off + c] = fabsf(params[L->w_off + c]);
        params[L->b_off + c] = 0.0f;
        buffers[L->buf_off + c] = 0.0f;
    }
}

/* PyTorch's repr of the module with its defaults. */
#define BN_OPTIONS "eps=1e-05, momentum=0.1, affine=True, track_running_stats=True"

static void bn2d_describe(const at_layer *L, char *buf, size_t cap) {
    snprintf(buf, cap, "BatchNorm2d(%d, " BN_OPTIONS ")", L->in_c);
}

static void bn1d_describe(const at_layer *L, char *buf, size_t cap) {
    snprintf(buf, cap, "BatchNorm1d(%d, " BN_OPTIONS ")", L->in_c);
}

const at_layer_ops at_batchnorm2d_ops = {
    .name = "bn", .setup = bn_setup, .workspace = bn_workspace, .forward = bn_forward,
    .backward = bn_backward, .fuses_relu = bn_fuses_relu,
    .output_dead_in_backward = true, .describe = bn2d_describe,
    .init = bn_init, .forward_stats = bn_forward_stats, .forward_reduce = bn_forward_reduce,
    .backward_stats = bn_backward_stats, .backward_reduce = bn_backward_reduce,
    .bound_rule = AT_BOUND_AFFINE, .abs_map = bn_abs_map};

const at_layer_ops at_batchnorm1d_ops = {
    .name = "bn1d", .setup = bn1d_setup, .workspace = bn_workspace, .forward = bn_forward,
    .backward = bn_backward, .fuses_relu = bn_fuses_relu,
    .output_dead_in_backward = true, .describe = bn1d_describe,
    .init = bn_init, .forward_stats = bn_forward_stats, .forward_reduce = bn_forward_reduce,
    .backward_stats = bn_backward_stats, .backward_reduce = bn_backward_reduce,
    .bound_rule = AT_BOUND_AFFINE, .abs_map = bn_abs_map};
