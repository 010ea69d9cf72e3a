/* Flatten: NCHW is already contiguous per sample, so only the shape changes. A network runs
 * neither pass of it (net.c marks it fused: its output is its input's buffer); the copies below
 * serve a caller that runs the layer on its own. */
#include "layer.h"

#include <string.h>

static at_status flatten_setup(at_layer *L) {
    L->out_c = L->in_size;
    L->out_h = L->out_w = 1;
    return AT_OK;
}

static size_t flatten_workspace(const at_layer *L, int n) { return 0; }

static void flatten_forward(const at_layer *L, const at_ctx *ctx, const float *x, float *y, int n) {
    memcpy(y, x, sizeof(float) * (size_t)n * L->in_size);
}

static void flatten_backward(const at_layer *L, const at_ctx *ctx, const float *x, const float *y,
                             const float *dy, float *dx, int n, bool param_grads) {
    if (dx) memcpy(dx, dy, sizeof(float) * (size_t)n * L->in_size);
}

const at_layer_ops at_flatten_ops = {"flatten", flatten_setup, flatten_workspace, flatten_forward,
                                     flatten_backward};
