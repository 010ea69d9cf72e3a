/* The layer registry: one line per kind. A new layer kind is one file (its at_layer_ops), one
 * enum value in include/advtrain.h and one line here (docs/architectures.md). */
#include "layer.h"

#include <stdio.h>
#include <string.h>

static const at_layer_ops *const kinds[AT_LAYER_KIND_COUNT] = {
    [AT_LAYER_LINEAR] = &at_linear_ops,
    [AT_LAYER_CONV2D] = &at_conv2d_ops,
    [AT_LAYER_MAXPOOL2D] = &at_maxpool2d_ops,
    [AT_LAYER_AVGPOOL2D] = &at_avgpool2d_ops,
    [AT_LAYER_RELU] = &at_relu_ops,
    [AT_LAYER_LEAKYRELU] = &at_leakyrelu_ops,
    [AT_LAYER_TANH] = &at_tanh_ops,
    [AT_LAYER_SIGMOID] = &at_sigmoid_ops,
    [AT_LAYER_FLATTEN] = &at_flatten_ops,
    [AT_LAYER_DROPOUT] = &at_dropout_ops,
    [AT_LAYER_DROPOUT2D] = &at_dropout2d_ops,
    [AT_LAYER_BATCHNORM2D] = &at_batchnorm2d_ops,
    [AT_LAYER_BATCHNORM1D] = &at_batchnorm1d_ops,
    [AT_LAYER_ADD] = &at_add_ops,
    [AT_LAYER_GLOBALAVGPOOL] = &at_globalavgpool_ops,
};

const at_layer_ops *at_layer_ops_for(at_layer_kind kind) {
    return (unsigned)kind < AT_LAYER_KIND_COUNT ? kinds[kind] : NULL;
}

const at_layer_ops *at_layer_ops_named(const char *word, size_t len) {
    for (int k = 0; k < AT_LAYER_KIND_COUNT; k++)
        if (kinds[k] && strlen(kinds[k]->name) == len && strncmp(kinds[k]->name, word, len) == 0)
            return kinds[k];
    return NULL;
}

void at_layer_keywords(char *buf, size_t cap) {
    size_t used = 0;
    buf[0] = '\0';
    for (int k = 0; k < AT_LAYER_KIND_COUNT && used < cap; k++) {
        int w = snprintf(buf + used, cap - used, "%s%s", used ? ", " : "", kinds[k]->name);
        if (w > 0) used += (size_t)w;
    }
}

at_layer_kind at_layer_kind_of(const at_layer_ops *ops) {
    for (int k = 0; k < AT_LAYER_KIND_COUNT; k++)
        if (kinds[k] == ops) return (at_layer_kind)k;
    return AT_LAYER_KIND_COUNT;
}
