/* Add: the residual sum of two nodes of the same shape (y = x + x2, as `out += identity` in
 * torchvision's BasicBlock). The second input and its gradient come in the context (ctx->x2,
 * ctx->dx2); the executor resolves the nodes and checks the shapes before setup. */
#include "layer.h"

#include <stdio.h>
#include <string.h>

static at_status add_setup(at_layer *L) {
    L->out_c = L->in_c;
    L->out_h = L->in_h;
    L->out_w = L->in_w;
    return AT_OK;
}

static size_t add_workspace(const at_layer *L, int n) { return 0; }

static void add_forward(const at_layer *L, const at_ctx *ctx, const float *x, float *y, int n) {
    const size_t count = (size_t)n * L->in_size;
    const float *x2 = ctx->x2;
    if (L->relu_out) /* the block's closing ReLU (BasicBlock: relu(out + identity)) */
        for (size_t i = 0; i < count; i++) y[i] = at_relu(x[i] + x2[i]);
    else
        for (size_t i = 0; i < count; i++) y[i] = x[i] + x2[i];
}

/* Both inputs get the output's gradient, gated by a fused ReLU's output. Either may be NULL;
 * dx may be dy itself (elementwise), dx2 never overlaps it. */
static void add_backward(const at_layer *L, const at_ctx *ctx, const float *x, const float *y,
                         const float *dy, float *dx, int n, bool param_grads) {
    const size_t count = (size_t)n * L->in_size;
    float *first = dx ? dx : ctx->dx2, *second = dx ? ctx->dx2 : NULL;
    if (!first) return;
    if (L->relu_out)
        at_relu_grad(first, dy, y, count);
    else if (first != dy)
        memcpy(first, dy, sizeof(float) * count);
    if (second) memcpy(second, first, sizeof(float) * count);
}

static bool add_fuses_relu(const at_layer *L) { return true; }

/* "add:REF" names the second input (spec.c reads REF; the first is the node before, or @REF). */
static void add_word(const at_layer_desc *d, char *buf, size_t cap) {
    snprintf(buf, cap, "add:%s", d->input2);
}

static void add_describe(const at_layer *L, char *buf, size_t cap) { snprintf(buf, cap, "Add()"); }

const at_layer_ops at_add_ops = {.name = "add", .inputs = 2, .setup = add_setup,
                                 .workspace = add_workspace, .forward = add_forward,
                                 .backward = add_backward, .fuses_relu = add_fuses_relu,
                                 .output_dead_in_backward = true, .inputs_dead_in_backward = true,
                                 .spec_word = add_word, .describe = add_describe,
                                 .bound_rule = AT_BOUND_AFFINE};
