/* Elementwise activations. Backward uses the input (ReLU family) or the output (Tanh, Sigmoid). */
#include "layer.h"

#include <math.h>
#include <stdio.h>

static at_status same_shape_setup(at_layer *L) {
    L->out_c = L->in_c;
    L->out_h = L->in_h;
    L->out_w = L->in_w;
    return AT_OK;
}

static size_t no_workspace(const at_layer *L, int n) { return 0; }

static void relu_forward(const at_layer *L, const at_ctx *ctx, const float *x, float *y, int n) {
    size_t count = (size_t)n * L->in_size;
    for (size_t i = 0; i < count; i++) y[i] = at_relu(x[i]);
}

static void relu_backward(const at_layer *L, const at_ctx *ctx, const float *x, const float *y,
                          const float *dy, float *dx, int n, bool param_grads) {
    if (!dx) return;
    size_t count = (size_t)n * L->in_size;
    at_relu_grad(dx, dy, x, count);
}

static at_status leakyrelu_setup(at_layer *L) {
    if (!(L->d.alpha >= 0.0f) || !isfinite(L->d.alpha))
        return at_fail(AT_ERR_ARG, "leakyrelu layer %d: negative slope must be a finite number >= 0",
                       L->index);
    return same_shape_setup(L);
}

static void leakyrelu_forward(const at_layer *L, const at_ctx *ctx, const float *x, float *y,
                              int n) {
    size_t count = (size_t)n * L->in_size;
    const float slope = L->d.alpha;
    for (size_t i = 0; i < count; i++) y[i] = x[i] > 0.0f ? x[i] : x[i] * slope;
}

static void leakyrelu_backward(const at_layer *L, const at_ctx *ctx, const float *x,
                               const float *y, const float *dy, float *dx, int n,
                               bool param_grads) {
    if (!dx) return;
    size_t count = (size_t)n * L->in_size;
    const float slope = L->d.alpha;
    for (size_t i = 0; i < count; i++) dx[i] = x[i] > 0.0f ? dy[i] : dy[i] * slope;
}

static void tanh_forward(const at_layer *L, const at_ctx *ctx, const float *x, float *y, int n) {
    size_t count = (size_t)n * L->in_size;
    for (size_t i = 0; i < count; i++) y[i] = tanhf(x[i]);
}

static void tanh_backward(const at_layer *L, const at_ctx *ctx, const float *x, const float *y,
                          const float *dy, float *dx, int n, bool param_grads) {
    if (!dx) return;
    size_t count = (size_t)n * L->in_size;
    for (size_t i = 0; i < count; i++) dx[i] = dy[i] * (1.0f - y[i] * y[i]);
}

static void sigmoid_forward(const at_layer *L, const at_ctx *ctx, const float *x, float *y, int n) {
    size_t count = (size_t)n * L->in_size;
    for (size_t i = 0; i < count; i++) y[i] = 1.0f / (1.0f + expf(-x[i]));
}

static void sigmoid_backward(const at_layer *L, const at_ctx *ctx, const float *x, const float *y,
                             const float *dy, float *dx, int n, bool param_grads) {
    if (!dx) return;
    size_t count = (size_t)n * L->in_size;
    for (size_t i = 0; i < count; i++) dx[i] = dy[i] * y[i] * (1.0f - y[i]);
}

/* leakyrelu[:SLOPE], 0.01 by default as PyTorch's. */
static at_status leakyrelu_parse(at_layer_desc *d, const double *args, int count,
                                 const char *const *keys, const double *vals, int nkeys,
                                 const char *token) {
    d->alpha = count ? (float)args[0] : 0.01f;
    return at_spec_no_keys(nkeys, keys, token);
}

static void leakyrelu_word(const at_layer_desc *d, char *buf, size_t cap) {
    snprintf(buf, cap, "leakyrelu:%.9g", (double)d->alpha);
}

static void relu_describe(const at_layer *L, char *buf, size_t cap) { snprintf(buf, cap, "ReLU()"); }
static void leakyrelu_describe(const at_layer *L, char *buf, size_t cap) {
    snprintf(buf, cap, "LeakyReLU(negative_slope=%g)", (double)L->d.alpha);
}
static void tanh_describe(const at_layer *L, char *buf, size_t cap) { snprintf(buf, cap, "Tanh()"); }
static void sigmoid_describe(const at_layer *L, char *buf, size_t cap) {
    snprintf(buf, cap, "Sigmoid()");
}

const at_layer_ops at_relu_ops = {.name = "relu", .setup = same_shape_setup,
                                  .workspace = no_workspace, .forward = relu_forward,
                                  .backward = relu_backward, .describe = relu_describe,
                                  .bound_rule = AT_BOUND_MONOTONE};
const at_layer_ops at_leakyrelu_ops = {.name = "leakyrelu", .setup = leakyrelu_setup,
                                       .workspace = no_workspace, .forward = leakyrelu_forward,
                                       .backward = leakyrelu_backward, .max_args = 1,
                                       .parse = leakyrelu_parse, .spec_word = leakyrelu_word,
                                       .describe = leakyrelu_describe,
                                       .bound_rule = AT_BOUND_MONOTONE};
const at_layer_ops at_tanh_ops = {.name = "tanh", .setup = same_shape_setup,
                                  .workspace = no_workspace, .forward = tanh_forward,
                                  .backward = tanh_backward, .describe = tanh_describe,
                                  .bound_rule = AT_BOUND_MONOTONE};
const at_layer_ops at_sigmoid_ops = {.name = "sigmoid", .setup = same_shape_setup,
                                     .workspace = no_workspace, .forward = sigmoid_forward,
                                     .backward = sigmoid_backward, .describe = sigmoid_describe,
                                     .bound_rule = AT_BOUND_MONOTONE};
