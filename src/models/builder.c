/* The builder the built-in models use to write their layer descriptions. */
#include "models.h"

#include <stdio.h>
#include <string.h>

at_layer_desc *at_b_node(at_builder *b, at_layer_kind kind, const char *name, const char *input) {
    static _Thread_local at_layer_desc scratch;
    at_layer_desc *d = b->n < b->cap ? &b->L[b->n++] : &scratch;
    b->full = b->full || d == &scratch;
    memset(d, 0, sizeof *d);
    d->kind = kind;
    snprintf(d->name, sizeof d->name, "%s", name);
    snprintf(d->input, sizeof d->input, "%s", input);
    return d;
}

void at_b_conv(at_builder *b, const char *name, const char *input, int out, int kernel, int stride,
               int pad, int groups, bool bias) {
    at_layer_desc *d = at_b_node(b, AT_LAYER_CONV2D, name, input);
    d->out = out;
    d->kernel = kernel;
    d->stride = stride;
    d->pad = pad;
    d->groups = groups;
    d->no_bias = !bias;
}

void at_b_linear(at_builder *b, const char *name, int out) {
    at_b_node(b, AT_LAYER_LINEAR, name, "")->out = out;
}

void at_b_bn(at_builder *b, const char *name, const char *input) {
    at_b_node(b, AT_LAYER_BATCHNORM2D, name, input);
}

void at_b_relu(at_builder *b, const char *name) { at_b_node(b, AT_LAYER_RELU, name, ""); }

void at_b_add(at_builder *b, const char *name, const char *a, const char *c) {
    at_layer_desc *d = at_b_node(b, AT_LAYER_ADD, name, a);
    snprintf(d->input2, sizeof d->input2, "%s", c);
}

void at_b_simple(at_builder *b, at_layer_kind kind) { at_b_node(b, kind, "", ""); }
