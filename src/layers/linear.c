/* Linear: y = x W^T + b, W stored (out, in) as PyTorch does. */
#include "layer.h"

#include "gemm.h"
#include <stdio.h>

static at_status linear_setup(at_layer *L) {
    if (L->d.out <= 0)
        return at_fail(AT_ERR_SHAPE, "linear layer %d: out_features must be positive, got %d",
                       L->index, L->d.out);
    L->out_c = L->d.out;
    L->out_h = L->out_w = 1;
    L->w_count = (size_t)L->d.out * L->in_size;
    L->w_ndim = 2;
    L->w_shape[0] = L->d.out;
    L->w_shape[1] = L->in_size;
    L->b_count = (size_t)L->d.out;
    return AT_OK;
}

/* With a fused ReLU, backward needs a masked copy of dy. */
static size_t linear_workspace(const at_layer *L, int n) {
    return L->relu_out ? (size_t)n * L->out_size : 0;
}

static void linear_forward(const at_layer *L, const at_ctx *ctx, const float *x, float *y, int n) {
    const int in = L->in_size, out = L->out_size;
    const float *W = ctx->params + L->w_off, *b = ctx->params + L->b_off;
    for (int s = 0; s < n; s++)
        for (int o = 0; o < out; o++) y[(size_t)s * out + o] = b[o];
    at_gemm(false, true, n, out, in, 1.0f, x, in, W, in, 1.0f, y,
                out);
    if (L->relu_out)
        for (size_t i = 0; i < (size_t)n * out; i++) y[i] = at_relu(y[i]);
}

static void linear_backward(const at_layer *L, const at_ctx *ctx, const float *x, const float *y,
                            const float *dy, float *dx, int n, bool param_grads) {
    const int in = L->in_size, out = L->out_size;
    if (L->relu_out) { /* y is the fused ReLU's output: no gradient where it is not positive */
        float *masked = ctx->work;
        at_relu_grad(masked, dy, y, (size_t)n * out);
        dy = masked;
    }
    if (param_grads) {
        float *dW = ctx->grads + L->w_off, *db = ctx->grads + L->b_off;
        at_gemm(true, false, out, in, n, 1.0f, dy, out, x, in,
                    1.0f, dW, in);
        for (int s = 0; s < n; s++)
            for (int o = 0; o < out; o++) db[o] += dy[(size_t)s * out + o];
    }
    if (dx)
        at_gemm(false, false, n, in, out, 1.0f, dy, out,
                    ctx->params + L->w_off, in, 0.0f, dx, in);
}

static bool linear_fuses_relu(const at_layer *L) { return true; }

/* linear:OUT */
static at_status linear_parse(at_layer_desc *d, const double *args, int count,
                              const char *const *keys, const double *vals, int nkeys,
                              const char *token) {
    at_status s = at_spec_whole(args, count, token);
    if (s != AT_OK) return s;
    d->out = (int)args[0];
    return at_spec_no_keys(nkeys, keys, token);
}

static void linear_word(const at_layer_desc *d, char *buf, size_t cap) {
    snprintf(buf, cap, "linear:%d", d->out);
}

static void linear_describe(const at_layer *L, char *buf, size_t cap) {
    snprintf(buf, cap, "Linear(%d, %d)", L->in_size, L->d.out);
}

const at_layer_ops at_linear_ops = {.name = "linear", .setup = linear_setup,
                                    .workspace = linear_workspace, .forward = linear_forward,
                                    .backward = linear_backward, .fuses_relu = linear_fuses_relu,
                                    .output_dead_in_backward = true,
                                    .min_args = 1, .max_args = 1, .parse = linear_parse,
                                    .spec_word = linear_word, .describe = linear_describe,
                                    .bound_rule = AT_BOUND_AFFINE};
