/* Global average pooling, nn.AdaptiveAvgPool2d(1): each channel's mean over its plane, output
 * C x 1 x 1 (ResNet's pooling before the classifier). */
#include "layer.h"

#include "dsum.h"
#include <stdio.h>

static at_status gap_setup(at_layer *L) {
    L->out_c = L->in_c;
    L->out_h = L->out_w = 1;
    return AT_OK;
}

static size_t gap_workspace(const at_layer *L, int n) { return 0; }

/* The plane summed in double and divided once: a float running sum over a large plane would
 * lose the low bits of every value. */
static void gap_forward(const at_layer *L, const at_ctx *ctx, const float *x, float *y, int n) {
    const size_t area = (size_t)L->in_h * L->in_w, planes = (size_t)n * L->in_c;
    for (size_t i = 0; i < planes; i++)
        y[i] = (float)(at_sum_double(x + i * area, area) / (double)area);
}

/* dx = dy / (H*W) over the whole plane (PyTorch divides the gradient by the window size). */
static void gap_backward(const at_layer *L, const at_ctx *ctx, const float *x, const float *y,
                         const float *dy, float *dx, int n, bool param_grads) {
    if (!dx) return;
    const size_t area = (size_t)L->in_h * L->in_w, planes = (size_t)n * L->in_c;
    /* Last plane first: should the executor hand dx over dy's own memory, plane i's writes
     * (from i*area) never reach the dy values of the planes still to go (below i). */
    for (size_t i = planes; i-- > 0;) {
        const float g = dy[i] / (float)area;
        float *d = dx + i * area;
        for (size_t p = 0; p < area; p++) d[p] = g;
    }
}

static void gap_describe(const at_layer *L, char *buf, size_t cap) {
    snprintf(buf, cap, "AdaptiveAvgPool2d(output_size=1)");
}

const at_layer_ops at_globalavgpool_ops = {.name = "gap", .setup = gap_setup,
                                           .workspace = gap_workspace, .forward = gap_forward,
                                           .backward = gap_backward, .describe = gap_describe,
                                           .bound_rule = AT_BOUND_AFFINE};
