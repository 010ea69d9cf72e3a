/* Which tensors the int8 model of a float network holds, and with whose parameters: the plan
 * at_quantize builds the int8 network from (qnet.c) and quantization-aware training rounds the
 * float network by (qat.c), in one place so that the two cannot disagree. */
#include "quant/quant.h"

at_status q_check_supported(const at_net *net) {
    for (int l = 0; l < net->nlayers; l++) {
        const at_layer *L = &net->layers[l];
        switch (L->d.kind) {
        case AT_LAYER_LINEAR: case AT_LAYER_CONV2D: case AT_LAYER_MAXPOOL2D: case AT_LAYER_AVGPOOL2D:
        case AT_LAYER_RELU: case AT_LAYER_FLATTEN: case AT_LAYER_DROPOUT: case AT_LAYER_DROPOUT2D:
        case AT_LAYER_BATCHNORM2D: case AT_LAYER_BATCHNORM1D: case AT_LAYER_ADD: case AT_LAYER_GLOBALAVGPOOL:
            break;
        default:
            return at_fail(AT_ERR_ARG, "int8 quantization: layer %d (%s) has no int8 kernel (supported: linear, conv, "
                                       "batchnorm, relu, maxpool, avgpool, gap, add, flatten, dropout)",
                           l, at_layer_ops_for(L->d.kind)->name);
        }
    }
    return AT_OK;
}

/* A BatchNorm reading a Conv2d or Linear that nothing else reads (and that applies no ReLU of
 * its own) is folded into it. */
bool q_folds_into(const at_net *net, int l) {
    const at_layer *L = &net->layers[l];
    if (!q_is_bn(L->d.kind) || L->fused || L->src[0] < 0) return false;
    const at_layer *P = &net->layers[L->src[0]];
    return (P->d.kind == AT_LAYER_CONV2D || P->d.kind == AT_LAYER_LINEAR) && !P->relu_out &&
           net->plan.readers[L->src[0] + 1] == 1;
}

bool q_folded_away(const at_net *net, int l) {
    for (int b = l + 1; b < net->nlayers; b++)
        if (net->layers[b].src[0] == l && q_folds_into(net, b)) return true;
    return false;
}

/* Layer L's output is its input's int8 values: a Dropout (eval), a Flatten or a fused ReLU. */
bool q_copies_input(const at_layer *L) {
    const at_layer_kind k = L->d.kind;
    return L->fused || k == AT_LAYER_DROPOUT || k == AT_LAYER_DROPOUT2D || k == AT_LAYER_FLATTEN;
}

/* Layer l's output keeps its input's parameters: a copy of it, or pooling and a ReLU, which
 * commute with the affine map q -> (q - zp) * scale. */
bool q_keeps_input_params(const at_net *net, int l) {
    const at_layer_kind k = net->layers[l].d.kind;
    return q_copies_input(&net->layers[l]) || k == AT_LAYER_MAXPOOL2D || k == AT_LAYER_AVGPOOL2D ||
           k == AT_LAYER_GLOBALAVGPOOL || k == AT_LAYER_RELU;
}
