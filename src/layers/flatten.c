/* Flatten: NCHW is already contiguous per sample, so only the shape changes. net.c marks every
 * Flatten fused and runs neither pass (its output is its input's buffer): the copies below are
 * what the layer means, kept so that every kind's ops are complete, but no pass calls them. */
#include "layer.h"

#include <stdio.h>
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

static void flatten_describe(const at_layer *L, char *buf, size_t cap) {
    snprintf(buf, cap, "Flatten()");
}

const at_layer_ops at_flatten_ops = {.name = "flatten", .setup = flatten_setup,
                                     .workspace = flatten_workspace, .forward = flatten_forward,
                                     .backward = flatten_backward, .describe = flatten_describe,
                                     .bound_rule = AT_BOUND_MONOTONE};
