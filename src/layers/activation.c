/* Elementwise activations. Backward uses the input (ReLU family) or the output (Tanh, Sigmoid). */
#include "layer.h"

#include <math.h>

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

const at_layer_ops at_relu_ops = {"relu", same_shape_setup, no_workspace, relu_forward,
                                  relu_backward};
const at_layer_ops at_leakyrelu_ops = {"leakyrelu", leakyrelu_setup, no_workspace,
                                       leakyrelu_forward, leakyrelu_backward};
const at_layer_ops at_tanh_ops = {"tanh", same_shape_setup, no_workspace, tanh_forward,
                                  tanh_backward};
const at_layer_ops at_sigmoid_ops = {"sigmoid", same_shape_setup, no_workspace, sigmoid_forward,
                                     sigmoid_backward};
