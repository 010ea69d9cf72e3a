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
#include "graph/net_internal.h"
#include "internal.h"
#include "onnx.pb-c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { ONNX_IR_VERSION = 7, ONNX_OPSET = 13 };

/* Everything the messages point to, freed together. */
typedef struct onnx_pool {
    void **ptrs;
    size_t n, cap;
    bool failed;
} onnx_pool;

static void *pool_alloc(onnx_pool *p, size_t size) {
    if (p->failed) return NULL;
    if (p->n == p->cap) {
        const size_t cap = p->cap ? 2 * p->cap : 256;
        void **grown = realloc(p->ptrs, cap * sizeof *grown);
        if (!grown) return p->failed = true, NULL;
        p->ptrs = grown, p->cap = cap;
    }
    void *v = calloc(1, size ? size : 1);
    if (!v) return p->failed = true, NULL;
    return p->ptrs[p->n++] = v;
}

static char *pool_str(onnx_pool *p, const char *s) {
    char *c = pool_alloc(p, strlen(s) + 1);
    if (c) strcpy(c, s);
    return c;
}

static void pool_free(onnx_pool *p) {
    for (size_t i = 0; i < p->n; i++) free(p->ptrs[i]);
    free(p->ptrs);
}

/* The graph being built: nodes and initializers appended as the layers are visited. */
typedef struct onnx_builder {
    onnx_pool pool;
    const at_net *net;
    Onnx__NodeProto **nodes;
    size_t nnodes;
    Onnx__TensorProto **inits;
    size_t ninits;
} onnx_builder;

static Onnx__AttributeProto *attr_int(onnx_builder *b, const char *name, int64_t v) {
    Onnx__AttributeProto *a = pool_alloc(&b->pool, sizeof *a);
    if (!a) return NULL;
    onnx__attribute_proto__init(a);
    a->name = pool_str(&b->pool, name);
    a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
    a->i = v;
    return a;
}

static Onnx__AttributeProto *attr_float(onnx_builder *b, const char *name, float v) {
    Onnx__AttributeProto *a = pool_alloc(&b->pool, sizeof *a);
    if (!a) return NULL;
    onnx__attribute_proto__init(a);
    a->name = pool_str(&b->pool, name);
    a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT;
    a->f = v;
    return a;
}

static Onnx__AttributeProto *attr_ints(onnx_builder *b, const char *name, const int64_t *v, size_t n) {
    Onnx__AttributeProto *a = pool_alloc(&b->pool, sizeof *a);
    int64_t *copy = pool_alloc(&b->pool, n * sizeof *copy);
    if (!a || !copy) return NULL;
    onnx__attribute_proto__init(a);
    a->name = pool_str(&b->pool, name);
    a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
    memcpy(copy, v, n * sizeof *copy);
    a->ints = copy, a->n_ints = n;
    return a;
}

/* A node op(inputs) -> output with up to 6 attributes (NULLs skipped). */
static Onnx__NodeProto *add_node(onnx_builder *b, const char *op, const char *name, const char *const *in, size_t nin,
                                 const char *out, Onnx__AttributeProto *const *attrs, size_t nattrs) {
    Onnx__NodeProto *n = pool_alloc(&b->pool, sizeof *n);
    char **ins = pool_alloc(&b->pool, nin * sizeof *ins), **outs = pool_alloc(&b->pool, sizeof *outs);
    Onnx__AttributeProto **as = pool_alloc(&b->pool, nattrs * sizeof *as);
    if (!n || !ins || !outs || !as) return NULL;
    onnx__node_proto__init(n);
    n->op_type = pool_str(&b->pool, op);
    n->name = pool_str(&b->pool, name);
    for (size_t i = 0; i < nin; i++) ins[i] = pool_str(&b->pool, in[i]);
    outs[0] = pool_str(&b->pool, out);
    n->input = ins, n->n_input = nin, n->output = outs, n->n_output = 1;
    for (size_t i = 0; i < nattrs; i++)
        if (attrs[i]) as[n->n_attribute++] = attrs[i];
    n->attribute = as;
    b->nodes[b->nnodes++] = n;
    return b->pool.failed ? NULL : n;
}

/* An initializer: count floats of v (shape dims) as raw little-endian data. */
static void add_floats(onnx_builder *b, const char *name, const float *v, const int64_t *dims, size_t ndims) {
    Onnx__TensorProto *t = pool_alloc(&b->pool, sizeof *t);
    int64_t *d = pool_alloc(&b->pool, ndims * sizeof *d);
    size_t count = 1;
    for (size_t i = 0; i < ndims; i++) count *= (size_t)dims[i];
    uint8_t *raw = pool_alloc(&b->pool, count * sizeof(float));
    if (!t || !d || !raw) return;
    onnx__tensor_proto__init(t);
    t->name = pool_str(&b->pool, name);
    t->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    memcpy(d, dims, ndims * sizeof *d);
    t->dims = d, t->n_dims = ndims;
    for (size_t i = 0; i < count; i++) { /* little-endian whatever the host */
        uint32_t u;
        memcpy(&u, v + i, 4);
        for (int k = 0; k < 4; k++) raw[4 * i + k] = (uint8_t)(u >> (8 * k));
    }
    t->raw_data.data = raw, t->raw_data.len = count * sizeof(float);
    b->inits[b->ninits++] = t;
}

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
    add_floats(b, w, p + L->w_off, wd, 4);
    if (L->b_count) add_floats(b, bias, p + L->b_off, bd, 1);
    const int64_t ks[2] = {K, K}, st[2] = {S, S}, pads[4] = {P, P, P, P};
    Onnx__AttributeProto *a[4] = {attr_ints(b, "kernel_shape", ks, 2), attr_ints(b, "strides", st, 2),
                                  attr_ints(b, "pads", pads, 4), attr_int(b, "group", groups)};
    const char *ins[3] = {in, w, bias};
    add_node(b, "Conv", L->d.name, ins, L->b_count ? 3 : 2, out, a, 4);
}

/* Gemm on the flattened input (a Flatten of a flat tensor changes nothing). */
static void linear_node(onnx_builder *b, const at_layer *L, const char *in, const char *out) {
    const float *p = b->net->params;
    char w[64], bias[64], flat[80];
    param_name(L, "weight", w, sizeof w);
    param_name(L, "bias", bias, sizeof bias);
    snprintf(flat, sizeof flat, "%s/flat", L->d.name);
    const int64_t wd[2] = {L->out_size, L->in_size}, bd[1] = {L->out_size};
    add_floats(b, w, p + L->w_off, wd, 2);
    add_floats(b, bias, p + L->b_off, bd, 1);
    Onnx__AttributeProto *axis = attr_int(b, "axis", 1), *tb = attr_int(b, "transB", 1);
    add_node(b, "Flatten", flat, &in, 1, flat, &axis, 1);
    const char *ins[3] = {flat, w, bias};
    add_node(b, "Gemm", L->d.name, ins, 3, out, &tb, 1);
}

static void batchnorm_node(onnx_builder *b, const at_layer *L, const char *in, const char *out) {
    char names[4][64];
    param_name(L, "weight", names[0], 64);
    param_name(L, "bias", names[1], 64);
    param_name(L, "running_mean", names[2], 64);
    param_name(L, "running_var", names[3], 64);
    const int64_t d[1] = {L->in_c};
    add_floats(b, names[0], b->net->params + L->w_off, d, 1);
    add_floats(b, names[1], b->net->params + L->b_off, d, 1);
    add_floats(b, names[2], b->net->buffers + L->buf_off, d, 1);
    add_floats(b, names[3], b->net->buffers + L->buf_off + L->in_c, d, 1);
    Onnx__AttributeProto *eps = attr_float(b, "epsilon", AT_BN_EPS);
    const char *ins[5] = {in, names[0], names[1], names[2], names[3]};
    add_node(b, "BatchNormalization", L->d.name, ins, 5, out, &eps, 1);
}

static void pool_node(onnx_builder *b, const at_layer *L, const char *op, const char *name, const char *in,
                      const char *out) {
    const int K = L->d.kernel, S = stride_of(L, K), P = L->d.pad;
    const int64_t ks[2] = {K, K}, st[2] = {S, S}, pads[4] = {P, P, P, P};
    Onnx__AttributeProto *a[4] = {attr_ints(b, "kernel_shape", ks, 2), attr_ints(b, "strides", st, 2),
                                  attr_ints(b, "pads", pads, 4),
                                  L->d.kind == AT_LAYER_AVGPOOL2D ? attr_int(b, "count_include_pad", 1) : NULL};
    add_node(b, op, name, &in, 1, out, a, 4);
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
    case AT_LAYER_GLOBALAVGPOOL: add_node(b, "GlobalAveragePool", name, one, 1, out, NULL, 0); break;
    case AT_LAYER_RELU: add_node(b, "Relu", name, one, 1, out, NULL, 0); break;
    case AT_LAYER_TANH: add_node(b, "Tanh", name, one, 1, out, NULL, 0); break;
    case AT_LAYER_SIGMOID: add_node(b, "Sigmoid", name, one, 1, out, NULL, 0); break;
    case AT_LAYER_LEAKYRELU:
        attr = attr_float(b, "alpha", L->d.alpha);
        add_node(b, "LeakyRelu", name, one, 1, out, &attr, 1);
        break;
    case AT_LAYER_FLATTEN:
        attr = attr_int(b, "axis", 1);
        add_node(b, "Flatten", name, one, 1, out, &attr, 1);
        break;
    case AT_LAYER_DROPOUT: case AT_LAYER_DROPOUT2D: add_node(b, "Identity", name, one, 1, out, NULL, 0); break;
    case AT_LAYER_ADD: add_node(b, "Add", name, two, 2, out, NULL, 0); break;
    default: return at_fail(AT_ERR_ARG, "ONNX export: layer %d (%s) has no ONNX form", l, at_layer_ops_for(L->d.kind)->name);
    }
    return b->pool.failed ? at_fail(AT_ERR_NOMEM, "out of memory building the ONNX model") : AT_OK;
}

/* A tensor's type: float, dims (a negative one: the symbolic batch). */
static Onnx__ValueInfoProto *value_info(onnx_builder *b, const char *name, const int64_t *dims, size_t n) {
    Onnx__ValueInfoProto *v = pool_alloc(&b->pool, sizeof *v);
    Onnx__TypeProto *t = pool_alloc(&b->pool, sizeof *t);
    Onnx__TypeProto__Tensor *tt = pool_alloc(&b->pool, sizeof *tt);
    Onnx__TensorShapeProto *s = pool_alloc(&b->pool, sizeof *s);
    Onnx__TensorShapeProto__Dimension **ds = pool_alloc(&b->pool, n * sizeof *ds);
    if (!v || !t || !tt || !s || !ds) return NULL;
    onnx__value_info_proto__init(v), onnx__type_proto__init(t), onnx__type_proto__tensor__init(tt);
    onnx__tensor_shape_proto__init(s);
    for (size_t i = 0; i < n; i++) {
        Onnx__TensorShapeProto__Dimension *d = pool_alloc(&b->pool, sizeof *d);
        if (!d) return NULL;
        onnx__tensor_shape_proto__dimension__init(d);
        if (dims[i] < 0) d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM, d->dim_param = pool_str(&b->pool, "batch");
        else d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE, d->dim_value = dims[i];
        ds[i] = d;
    }
    s->dim = ds, s->n_dim = n;
    tt->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, tt->shape = s;
    t->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE, t->tensor_type = tt;
    v->name = pool_str(&b->pool, name), v->type = t;
    return v;
}

typedef struct packed {
    uint8_t *data;
    size_t len;
} packed;

static at_status write_packed(FILE *fp, const char *path, const char *tmp, void *user) {
    const packed *p = user;
    if (fwrite(p->data, 1, p->len, fp) != p->len) return at_fail(AT_ERR_IO, "%s: cannot write %s", path, tmp);
    return AT_OK;
}

/* The model around the graph, packed and written atomically. */
static at_status write_model(onnx_builder *b, const char *path, Onnx__ValueInfoProto *in, Onnx__ValueInfoProto *out) {
    Onnx__GraphProto g = ONNX__GRAPH_PROTO__INIT;
    Onnx__ModelProto m = ONNX__MODEL_PROTO__INIT;
    Onnx__OperatorSetIdProto opset = ONNX__OPERATOR_SET_ID_PROTO__INIT, *opsets[1] = {&opset};
    g.name = (char *)(*at_net_spec(b->net) ? at_net_spec(b->net) : "advtrain");
    g.node = b->nodes, g.n_node = b->nnodes;
    g.initializer = b->inits, g.n_initializer = b->ninits;
    g.input = &in, g.n_input = 1, g.output = &out, g.n_output = 1;
    opset.domain = (char *)"", opset.version = ONNX_OPSET;
    m.ir_version = ONNX_IR_VERSION, m.producer_name = (char *)"advtrain", m.producer_version = (char *)AT_VERSION;
    m.graph = &g, m.opset_import = opsets, m.n_opset_import = 1;
    packed p = {NULL, onnx__model_proto__get_packed_size(&m)};
    if (!(p.data = malloc(p.len ? p.len : 1))) return at_fail(AT_ERR_NOMEM, "out of memory packing the ONNX model");
    onnx__model_proto__pack(&m, p.data);
    const at_status s = at_write_atomic_with(path, write_packed, &p);
    free(p.data);
    return s;
}

at_status at_export_onnx(const at_net *net, const char *path) {
    if (!net || !path || !*path) return at_fail(AT_ERR_ARG, "ONNX export: no network or no path");
    const size_t cap = 2 * (size_t)net->nlayers + 1;
    onnx_builder b = {.net = net};
    b.nodes = pool_alloc(&b.pool, cap * sizeof *b.nodes);
    b.inits = pool_alloc(&b.pool, 4 * cap * sizeof *b.inits);
    at_status s = b.pool.failed ? at_fail(AT_ERR_NOMEM, "out of memory building the ONNX model") : AT_OK;
    for (int l = 0; s == AT_OK && l < net->nlayers; l++) s = layer_nodes(&b, l);
    int c, h, w;
    at_net_in_shape(net, &c, &h, &w);
    const at_layer *last = &net->layers[net->nlayers - 1];
    const int64_t in_dims[4] = {-1, c, h, w};
    const int64_t out_dims[4] = {-1, last->out_c, last->out_h, last->out_w};
    const int64_t flat_dims[2] = {-1, last->out_size};
    Onnx__ValueInfoProto *vin = value_info(&b, "input", in_dims, 4);
    Onnx__ValueInfoProto *vout = value_rank(net, net->nlayers - 1) == 2 ? value_info(&b, "logits", flat_dims, 2)
                                                                        : value_info(&b, "logits", out_dims, 4);
    if (s == AT_OK && (!vin || !vout)) s = at_fail(AT_ERR_NOMEM, "out of memory building the ONNX model");
    if (s == AT_OK) s = write_model(&b, path, vin, vout);
    pool_free(&b.pool);
    return s;
}
