/* Building ONNX models with protobuf-c (io/onnx_build.c): what the float and int8 exporters
 * share. Every message and string lives in the builder's pool, freed at once. */
#ifndef ADVTRAIN_ONNX_BUILD_H
#define ADVTRAIN_ONNX_BUILD_H
#include "graph/net_internal.h"
#include "internal.h"
#include "onnx.pb-c.h"

enum { ONNX_IR_VERSION = 7, ONNX_OPSET = 13 };

/* Everything the messages point to, freed together. */
typedef struct onnx_pool {
    void **ptrs;
    size_t n, cap;
    bool failed;
} onnx_pool;

/* The graph being built: nodes and initializers appended as the layers are visited. */
typedef struct onnx_builder {
    onnx_pool pool;
    const at_net *net;
    Onnx__NodeProto **nodes;
    size_t nnodes, node_cap;
    Onnx__TensorProto **inits;
    size_t ninits, init_cap;
} onnx_builder;

void *onnx_alloc(onnx_pool *p, size_t size);
char *onnx_str(onnx_pool *p, const char *s);
void onnx_pool_free(onnx_pool *p);
Onnx__AttributeProto *onnx_attr_int(onnx_builder *b, const char *name, int64_t v);
Onnx__AttributeProto *onnx_attr_float(onnx_builder *b, const char *name, float v);
Onnx__AttributeProto *onnx_attr_ints(onnx_builder *b, const char *name, const int64_t *v, size_t n);
/* A node op(inputs) -> output with nattrs attributes (NULLs skipped); NULL when out of memory. */
Onnx__NodeProto *onnx_node(onnx_builder *b, const char *op, const char *name, const char *const *in, size_t nin,
                           const char *out, Onnx__AttributeProto *const *attrs, size_t nattrs);
/* A float initializer (raw little-endian data). */
void onnx_floats(onnx_builder *b, const char *name, const float *v, const int64_t *dims, size_t ndims);
/* An integer initializer: count values of v as int8 (dtype ONNX__TENSOR_PROTO__DATA_TYPE__INT8)
 * or int32 (__INT32), raw little-endian. */
void onnx_ints(onnx_builder *b, const char *name, int dtype, const int32_t *v, const int64_t *dims, size_t ndims);
/* The builder's arrays for up to nodes nodes and inits initializers (false: out of memory). */
bool onnx_builder_open(onnx_builder *b, const at_net *net, size_t nodes, size_t inits);
/* A tensor's type: float, dims (a negative one: the symbolic batch). */
Onnx__ValueInfoProto *onnx_value_info(onnx_builder *b, const char *name, const int64_t *dims, size_t n);
/* The model around the builder's graph (graph name, one input and output), packed and written
 * atomically to path. */
at_status onnx_write_model(onnx_builder *b, const char *path, Onnx__ValueInfoProto *in, Onnx__ValueInfoProto *out);
#endif
