/* Building ONNX models with protobuf-c (onnx_build.h): the allocations behind the messages,
 * attributes, nodes, float initializers, typed values, and the packed model written atomically.
 * Shared by the float export (export_onnx.c) and the int8 one (quant/qexport_onnx.c). */
#include "io/onnx_build.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>


void *onnx_alloc(onnx_pool *p, size_t size) {
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

char *onnx_str(onnx_pool *p, const char *s) {
    char *c = onnx_alloc(p, strlen(s) + 1);
    if (c) strcpy(c, s);
    return c;
}

void onnx_pool_free(onnx_pool *p) {
    for (size_t i = 0; i < p->n; i++) free(p->ptrs[i]);
    free(p->ptrs);
}

/* An attribute of the given type and name, its value still to set (NULL: out of memory). */
static Onnx__AttributeProto *new_attr(onnx_builder *b, const char *name, Onnx__AttributeProto__AttributeType type) {
    Onnx__AttributeProto *a = onnx_alloc(&b->pool, sizeof *a);
    if (!a) return NULL;
    onnx__attribute_proto__init(a);
    a->name = onnx_str(&b->pool, name);
    a->type = type;
    return a;
}

Onnx__AttributeProto *onnx_attr_int(onnx_builder *b, const char *name, int64_t v) {
    Onnx__AttributeProto *a = new_attr(b, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
    if (a) a->i = v;
    return a;
}

Onnx__AttributeProto *onnx_attr_float(onnx_builder *b, const char *name, float v) {
    Onnx__AttributeProto *a = new_attr(b, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
    if (a) a->f = v;
    return a;
}

Onnx__AttributeProto *onnx_attr_ints(onnx_builder *b, const char *name, const int64_t *v, size_t n) {
    Onnx__AttributeProto *a = new_attr(b, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
    int64_t *copy = onnx_alloc(&b->pool, n * sizeof *copy);
    if (!a || !copy) return NULL;
    memcpy(copy, v, n * sizeof *copy);
    a->ints = copy, a->n_ints = n;
    return a;
}

/* A node op(inputs) -> output with up to 6 attributes (NULLs skipped). */
Onnx__NodeProto *onnx_node(onnx_builder *b, const char *op, const char *name, const char *const *in, size_t nin,
                                 const char *out, Onnx__AttributeProto *const *attrs, size_t nattrs) {
    if (b->nnodes == b->node_cap) return b->pool.failed = true, NULL;
    Onnx__NodeProto *n = onnx_alloc(&b->pool, sizeof *n);
    char **ins = onnx_alloc(&b->pool, nin * sizeof *ins), **outs = onnx_alloc(&b->pool, sizeof *outs);
    Onnx__AttributeProto **as = onnx_alloc(&b->pool, nattrs * sizeof *as);
    if (!n || !ins || !outs || !as) return NULL;
    onnx__node_proto__init(n);
    n->op_type = onnx_str(&b->pool, op);
    n->name = onnx_str(&b->pool, name);
    for (size_t i = 0; i < nin; i++) ins[i] = onnx_str(&b->pool, in[i]);
    outs[0] = onnx_str(&b->pool, out);
    n->input = ins, n->n_input = nin, n->output = outs, n->n_output = 1;
    for (size_t i = 0; i < nattrs; i++)
        if (attrs[i]) as[n->n_attribute++] = attrs[i];
    n->attribute = as;
    b->nodes[b->nnodes++] = n;
    return b->pool.failed ? NULL : n;
}

/* An initializer of the given type, shape and element width appended to the graph, its raw
 * data allocated (*count elements, little-endian) for the caller to fill; NULL when out of room
 * or memory (the pool is marked failed). */
static uint8_t *new_tensor(onnx_builder *b, const char *name, int dtype, const int64_t *dims, size_t ndims,
                           size_t width, size_t *count) {
    if (b->ninits == b->init_cap) return b->pool.failed = true, NULL;
    Onnx__TensorProto *t = onnx_alloc(&b->pool, sizeof *t);
    int64_t *d = onnx_alloc(&b->pool, ndims * sizeof *d);
    *count = 1;
    for (size_t i = 0; i < ndims; i++) *count *= (size_t)dims[i];
    uint8_t *raw = onnx_alloc(&b->pool, *count * width);
    if (!t || !d || !raw) return NULL;
    onnx__tensor_proto__init(t);
    t->name = onnx_str(&b->pool, name);
    t->data_type = dtype;
    if (ndims) memcpy(d, dims, ndims * sizeof *d);
    t->dims = d, t->n_dims = ndims;
    t->raw_data.data = raw, t->raw_data.len = *count * width;
    b->inits[b->ninits++] = t;
    return raw;
}

void onnx_floats(onnx_builder *b, const char *name, const float *v, const int64_t *dims, size_t ndims) {
    size_t count;
    uint8_t *raw = new_tensor(b, name, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, dims, ndims, 4, &count);
    for (size_t i = 0; raw && i < count; i++) { /* little-endian whatever the host */
        uint32_t u;
        memcpy(&u, v + i, 4);
        for (int k = 0; k < 4; k++) raw[4 * i + k] = (uint8_t)(u >> (8 * k));
    }
}

void onnx_ints(onnx_builder *b, const char *name, int dtype, const int32_t *v, const int64_t *dims, size_t ndims) {
    const size_t width = dtype == ONNX__TENSOR_PROTO__DATA_TYPE__INT8 ? 1 : 4;
    size_t count;
    uint8_t *raw = new_tensor(b, name, dtype, dims, ndims, width, &count);
    for (size_t i = 0; raw && i < count; i++)
        for (size_t k = 0; k < width; k++) raw[width * i + k] = (uint8_t)((uint32_t)v[i] >> (8 * k));
}

bool onnx_builder_open(onnx_builder *b, const at_net *net, size_t nodes, size_t inits) {
    memset(b, 0, sizeof *b);
    b->net = net;
    b->nodes = onnx_alloc(&b->pool, nodes * sizeof *b->nodes);
    b->inits = onnx_alloc(&b->pool, inits * sizeof *b->inits);
    b->node_cap = nodes, b->init_cap = inits;
    return !b->pool.failed;
}

/* A tensor's type: float, dims (a negative one: the symbolic batch). */
Onnx__ValueInfoProto *onnx_value_info(onnx_builder *b, const char *name, const int64_t *dims, size_t n) {
    Onnx__ValueInfoProto *v = onnx_alloc(&b->pool, sizeof *v);
    Onnx__TypeProto *t = onnx_alloc(&b->pool, sizeof *t);
    Onnx__TypeProto__Tensor *tt = onnx_alloc(&b->pool, sizeof *tt);
    Onnx__TensorShapeProto *s = onnx_alloc(&b->pool, sizeof *s);
    Onnx__TensorShapeProto__Dimension **ds = onnx_alloc(&b->pool, n * sizeof *ds);
    if (!v || !t || !tt || !s || !ds) return NULL;
    onnx__value_info_proto__init(v), onnx__type_proto__init(t), onnx__type_proto__tensor__init(tt);
    onnx__tensor_shape_proto__init(s);
    for (size_t i = 0; i < n; i++) {
        Onnx__TensorShapeProto__Dimension *d = onnx_alloc(&b->pool, sizeof *d);
        if (!d) return NULL;
        onnx__tensor_shape_proto__dimension__init(d);
        if (dims[i] < 0) d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM, d->dim_param = onnx_str(&b->pool, "batch");
        else d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE, d->dim_value = dims[i];
        ds[i] = d;
    }
    s->dim = ds, s->n_dim = n;
    tt->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, tt->shape = s;
    t->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE, t->tensor_type = tt;
    v->name = onnx_str(&b->pool, name), v->type = t;
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
at_status onnx_write_model(onnx_builder *b, const char *path, Onnx__ValueInfoProto *in, Onnx__ValueInfoProto *out) {
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

