/* Maps a layer kind to its functions. */
#include "layer.h"

/* Declared here rather than in layer.h: defined in dropout.c next to Dropout. */
extern const at_layer_ops at_dropout2d_ops;

const at_layer_ops *at_layer_ops_for(at_layer_kind kind) {
    switch (kind) {
    case AT_LAYER_LINEAR: return &at_linear_ops;
    case AT_LAYER_CONV2D: return &at_conv2d_ops;
    case AT_LAYER_MAXPOOL2D: return &at_maxpool2d_ops;
    case AT_LAYER_AVGPOOL2D: return &at_avgpool2d_ops;
    case AT_LAYER_RELU: return &at_relu_ops;
    case AT_LAYER_LEAKYRELU: return &at_leakyrelu_ops;
    case AT_LAYER_TANH: return &at_tanh_ops;
    case AT_LAYER_SIGMOID: return &at_sigmoid_ops;
    case AT_LAYER_FLATTEN: return &at_flatten_ops;
    case AT_LAYER_DROPOUT: return &at_dropout_ops;
    case AT_LAYER_DROPOUT2D: return &at_dropout2d_ops;
    case AT_LAYER_KIND_COUNT: break;
    }
    return NULL;
}
