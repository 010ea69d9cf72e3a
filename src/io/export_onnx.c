/* ONNX export (`advtrain export --onnx FILE`; docs/export.md): a float network as an ONNX model
 * (IR version 7, opset 13), written with protobuf-c from the ONNX schema's messages
 * (src/io/onnx/onnx.proto), so that ONNX Runtime, Netron and the converters to TFLite and
 * vendor toolchains open it.
 *
 * One ONNX node per layer of the spec's graph, as its description reads (a ReLU the engine fuses
 * into its producer is still a Relu node): Conv (groups, pads, strides, bias when present),
 * Gemm (transB, the weight stays PyTorch's (out, in)) after a Flatten, MaxPool and AveragePool
 * (count_include_pad, as PyTorch), GlobalAveragePool, BatchNormalization (eval: the running
 * statistics, epsilon 1e-5), Add, Relu, LeakyRelu, Tanh, Sigmoid, Flatten, and Identity for
 * Dropout. Initializers carry PyTorch's names (conv1.weight, bn1.running_mean); the input is
 * "input" (batch x C x H x W, the batch symbolic), the output "logits". */
#include "io/onnx_build.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The name of the value a layer reads: "input", or layer l's output ("logits" for the last). */
static void value_name(const at_net *net, int l, char *buf, size_t cap) {
    if (l < 0) snprintf(buf, cap, "input");
    else if (l == net->nlayers - 1) snprintf(buf, cap, "logits");
    else snprintf(buf, cap, "%s%s%d", net->layers[l].d.name, *net->layers[l].d.name ? "/out" : "t", l);
}

static void param_name(const at_layer *L, const char *what, char *buf, size_t cap) {
    snprintf(buf, cap, "%s.%s", L->d.name, what);
}

/* The rank of layer l's output (-1: the input, 4): 2 after Linear, Flatten and BatchNorm1d,
 * else its input's (element-wise layers, Add) or 4 (convolution, pooling). */
static int value_rank(const at_net *net, int l) {
    if (l < 0) return 4;
    switch (net->layers[l].d.kind) {
    case AT_LAYER_LINEAR: case AT_LAYER_FLATTEN: case AT_LAYER_BATCHNORM1D: return 2;
    case AT_LAYER_CONV2D: case AT_LAYER_MAXPOOL2D: case AT_LAYER_AVGPOOL2D: case AT_LAYER_GLOBALAVGPOOL:
    case AT_LAYER_BATCHNORM2D: return 4;
    default: return value_rank(net, net->layers[l].described[0]);
    }
}

static int stride_of(const at_layer *L, int dflt) { return L->d.stride > 0 ? L->d.stride : dflt; }

static void conv_node(onnx_builder *b, const at_layer *L, const char *in, const char *out) {
    const float *p = b->net->params;
    char w[64], bias[64];
    param_name(L, "weight", w, sizeof w);
    param_name(L, "bias", bias, sizeof bias);
    const int groups = L->d.groups > 1 ? L->d.groups : 1, K = L->d.kernel, P = L->d.pad, S = stride_of(L, 1);
    const int64_t wd[4] = {L->out_c, L->in_c / groups, K, K}, bd[1] = {L->out_c};
    onnx_floats(b, w, p + L->w_off, wd, 4);
    if (L->b_count) onnx_floats(b, bias, p + L->b_off, bd, 1);
    const int64_t ks[2] = {K, K}, st[2] = {S, S}, pads[4] = {P, P, P, P};
    Onnx__AttributeProto *a[4] = {onnx_attr_ints(b, "kernel_shape", ks, 2), onnx_attr_ints(b, "strides", st, 2),
                                  onnx_attr_ints(b, "pads", pads, 4), onnx_attr_int(b, "group", groups)};
    const char *ins[3] = {in, w, bias};
    onnx_node(b, "Conv", L->d.name, ins, L->b_count ? 3 : 2, out, a, 4);
}

/* Gemm on the flattened input (a Flatten of a flat tensor changes nothing). */
static void linear_node(onnx_builder *b, const at_layer *L, const char *in, const char *out) {
    const float *p = b->net->params;
    char w[64], bias[64], flat[80];
    param_name(L, "weight", w, sizeof w);
    param_name(L, "bias", bias, sizeof bias);
    snprintf(flat, sizeof flat, "%s/flat", L->d.name);
    const int64_t wd[2] = {L->out_size, L->in_size}, bd[1] = {L->out_size};
    onnx_floats(b, w, p + L->w_off, wd, 2);
    onnx_floats(b, bias, p + L->b_off, bd, 1);
    Onnx__AttributeProto *axis = onnx_attr_int(b, "axis", 1), *tb = onnx_attr_int(b, "transB", 1);
    onnx_node(b, "Flatten", flat, &in, 1, flat, &axis, 1);
    const char *ins[3] = {flat, w, bias};
    onnx_node(b, "Gemm", L->d.name, ins, 3, out, &tb, 1);
}

static void batchnorm_node(onnx_builder *b, const at_layer *L, const char *in, const char *out) {
    char names[4][64];
    param_name(L, "weight", names[0], 64);
    param_name(L, "bias", names[1], 64);
    param_name(L, "running_mean", names[2], 64);
    param_name(L, "running_var", names[3], 64);
    const int64_t d[1] = {L->in_c};
    onnx_floats(b, names[0], b->net->params + L->w_off, d, 1);
    onnx_floats(b, names[1], b->net->params + L->b_off, d, 1);
    onnx_floats(b, names[2], b->net->buffers + L->buf_off, d, 1);
    onnx_floats(b, names[3], b->net->buffers + L->buf_off + L->in_c, d, 1);
    Onnx__AttributeProto *eps = onnx_attr_float(b, "epsilon", AT_BN_EPS);
    const char *ins[5] = {in, names[0], names[1], names[2], names[3]};
    onnx_node(b, "BatchNormalization", L->d.name, ins, 5, out, &eps, 1);
}

static void pool_node(onnx_builder *b, const at_layer *L, const char *op, const char *name, const char *in,
                      const char *out) {
    const int K = L->d.kernel, S = stride_of(L, K), P = L->d.pad;
    const int64_t ks[2] = {K, K}, st[2] = {S, S}, pads[4] = {P, P, P, P};
    Onnx__AttributeProto *a[4] = {onnx_attr_ints(b, "kernel_shape", ks, 2), onnx_attr_ints(b, "strides", st, 2),
                                  onnx_attr_ints(b, "pads", pads, 4),
                                  L->d.kind == AT_LAYER_AVGPOOL2D ? onnx_attr_int(b, "count_include_pad", 1) : NULL};
    onnx_node(b, op, name, &in, 1, out, a, 4);
}

/* Layer l's node(s). */
static at_status layer_nodes(onnx_builder *b, int l) {
    const at_layer *L = &b->net->layers[l];
    char in[64], in2[64], out[64], name[48];
    value_name(b->net, L->described[0], in, sizeof in);
    value_name(b->net, L->nsrc == 2 ? L->described[1] : -1, in2, sizeof in2);
    value_name(b->net, l, out, sizeof out);
    snprintf(name, sizeof name, "%s", *L->d.name ? L->d.name : "");
    if (!*name) snprintf(name, sizeof name, "%s_%d", at_layer_ops_for(L->d.kind)->name, l);
    const char *one[1] = {in}, *two[2] = {in, in2};
    Onnx__AttributeProto *attr = NULL;
    switch (L->d.kind) {
    case AT_LAYER_CONV2D: conv_node(b, L, in, out); break;
    case AT_LAYER_LINEAR: linear_node(b, L, in, out); break;
    case AT_LAYER_BATCHNORM2D: case AT_LAYER_BATCHNORM1D: batchnorm_node(b, L, in, out); break;
    case AT_LAYER_MAXPOOL2D: pool_node(b, L, "MaxPool", name, in, out); break;
    case AT_LAYER_AVGPOOL2D: pool_node(b, L, "AveragePool", name, in, out); break;
    case AT_LAYER_GLOBALAVGPOOL: onnx_node(b, "GlobalAveragePool", name, one, 1, out, NULL, 0); break;
    case AT_LAYER_RELU: onnx_node(b, "Relu", name, one, 1, out, NULL, 0); break;
    case AT_LAYER_TANH: onnx_node(b, "Tanh", name, one, 1, out, NULL, 0); break;
    case AT_LAYER_SIGMOID: onnx_node(b, "Sigmoid", name, one, 1, out, NULL, 0); break;
    case AT_LAYER_LEAKYRELU:
        attr = onnx_attr_float(b, "alpha", L->d.alpha);
        onnx_node(b, "LeakyRelu", name, one, 1, out, &attr, 1);
        break;
    case AT_LAYER_FLATTEN:
        attr = onnx_attr_int(b, "axis", 1);
        onnx_node(b, "Flatten", name, one, 1, out, &attr, 1);
        break;
    case AT_LAYER_DROPOUT: case AT_LAYER_DROPOUT2D: onnx_node(b, "Identity", name, one, 1, out, NULL, 0); break;
    case AT_LAYER_ADD: onnx_node(b, "Add", name, two, 2, out, NULL, 0); break;
    default: return at_fail(AT_ERR_ARG, "ONNX export: layer %d (%s) has no ONNX form", l, at_layer_ops_for(L->d.kind)->name);
    }
    return b->pool.failed ? at_fail(AT_ERR_NOMEM, "out of memory building the ONNX model") : AT_OK;
}

at_status at_export_onnx(const at_net *net, const char *path) {
    if (!net || !path || !*path) return at_fail(AT_ERR_ARG, "ONNX export: no network or no path");
    const size_t cap = 2 * (size_t)net->nlayers + 1;
    onnx_builder b;
    at_status s = onnx_builder_open(&b, net, cap, 4 * cap) ? AT_OK : at_fail(AT_ERR_NOMEM, "out of memory building the ONNX model");
    for (int l = 0; s == AT_OK && l < net->nlayers; l++) s = layer_nodes(&b, l);
    int c, h, w;
    at_net_in_shape(net, &c, &h, &w);
    const at_layer *last = &net->layers[net->nlayers - 1];
    const int64_t in_dims[4] = {-1, c, h, w};
    const int64_t out_dims[4] = {-1, last->out_c, last->out_h, last->out_w};
    const int64_t flat_dims[2] = {-1, last->out_size};
    Onnx__ValueInfoProto *vin = onnx_value_info(&b, "input", in_dims, 4);
    Onnx__ValueInfoProto *vout = value_rank(net, net->nlayers - 1) == 2 ? onnx_value_info(&b, "logits", flat_dims, 2)
                                                                        : onnx_value_info(&b, "logits", out_dims, 4);
    if (s == AT_OK && (!vin || !vout)) s = at_fail(AT_ERR_NOMEM, "out of memory building the ONNX model");
    if (s == AT_OK) s = onnx_write_model(&b, path, vin, vout);
    onnx_pool_free(&b.pool);
    return s;
}
