/* ONNX export of an int8 network (`advtrain export --onnx` on an int8 model file;
 * docs/export.md), in the QuantizeLinear/DequantizeLinear ("QDQ") form that ONNX Runtime and
 * the TFLite and vendor converters read as a quantized model:
 *
 *   input -> QuantizeLinear(input scale, zero point) -> DequantizeLinear -> t0
 *   per kernel call: the float operator on the dequantized inputs, with weights stored as int8
 *   (per output channel scales, axis 0) and biases as int32 (scale input scale x weight scale),
 *   each through a DequantizeLinear; a Relu where the int8 kernel clamps at the zero point; then
 *   QuantizeLinear/DequantizeLinear with the output tensor's scale and zero point.
 *
 * The weight scales are the int8 file's own: multiplier x 2^(shift - 31) x output scale / input
 * scale (the file keeps the fixed-point multiplier, not the float scale). A runtime computes the
 * float operators and rounds QuantizeLinear half to even, where advtrain's kernels use
 * fixed-point multipliers and round half away from zero: the int8 values can differ by one step
 * where a value falls on a rounding boundary (tests/test_export_onnx.c measures how often the
 * predictions agree). */
#include "io/onnx_build.h"
#include "quant/quant.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct qonnx {
    onnx_builder b;
    const at_qnet *q;
} qonnx;

static void tname(int t, char *buf, size_t cap) { snprintf(buf, cap, "t%d", t); }

/* Scalar scale and zero point initializers for tensor t: "s<t>", "z<t>". */
static void tensor_params(qonnx *o, int t) {
    char s[32], z[32];
    snprintf(s, sizeof s, "s%d", t);
    snprintf(z, sizeof z, "z%d", t);
    const int32_t zp = o->q->tq[t].zp;
    onnx_floats(&o->b, s, &o->q->tq[t].scale, NULL, 0);
    onnx_ints(&o->b, z, ONNX__TENSOR_PROTO__DATA_TYPE__INT8, &zp, NULL, 0);
}

/* raw -> QuantizeLinear -> DequantizeLinear -> out, with tensor t's parameters. */
static void qdq(qonnx *o, const char *raw, int t, const char *out) {
    char s[32], z[32], qn[48];
    snprintf(s, sizeof s, "s%d", t);
    snprintf(z, sizeof z, "z%d", t);
    snprintf(qn, sizeof qn, "q%d", t);
    tensor_params(o, t);
    const char *qi[3] = {raw, s, z}, *di[3] = {qn, s, z};
    onnx_node(&o->b, "QuantizeLinear", qn, qi, 3, qn, NULL, 0);
    onnx_node(&o->b, "DequantizeLinear", out, di, 3, out, NULL, 0);
}

/* The dequantized weights and bias of node n as "<name>.weight" and "<name>.bias": int8 and
 * int32 initializers with per-channel scales, through DequantizeLinear (axis 0). wdims, bdims:
 * their shapes. */
static void weights(qonnx *o, const qnode *n, const char *name, const int64_t *wdims, size_t nd, const int64_t *bdims,
                    size_t nbd) {
    onnx_builder *b = &o->b;
    const int C = n->nout;
    float *ws = onnx_alloc(&b->pool, sizeof(float) * (size_t)C), *bs = onnx_alloc(&b->pool, sizeof(float) * (size_t)C);
    int32_t *w = onnx_alloc(&b->pool, sizeof(int32_t) * n->nweights), *zero = onnx_alloc(&b->pool, sizeof(int32_t) * (size_t)C);
    if (!ws || !bs || !w || !zero) return;
    for (int c = 0; c < C; c++) {
        const double real = ldexp((double)n->mult[c], n->shift[c] - 31); /* s_in * s_w / s_out */
        ws[c] = (float)(real * n->out.scale / n->in[0].scale);
        bs[c] = (float)(real * n->out.scale);
    }
    for (size_t i = 0; i < n->nweights; i++) w[i] = n->w[i];
    char names[6][80], out[80];
    const char *suffix[6] = {"weight_quantized", "weight_scale", "weight_zero_point", "bias_quantized", "bias_scale",
                             "bias_zero_point"};
    for (int i = 0; i < 6; i++) snprintf(names[i], sizeof names[i], "%s.%s", name, suffix[i]);
    const int64_t cd[1] = {C};
    onnx_ints(b, names[0], ONNX__TENSOR_PROTO__DATA_TYPE__INT8, w, wdims, nd);
    onnx_floats(b, names[1], ws, cd, 1);
    onnx_ints(b, names[2], ONNX__TENSOR_PROTO__DATA_TYPE__INT8, zero, cd, 1);
    onnx_ints(b, names[3], ONNX__TENSOR_PROTO__DATA_TYPE__INT32, n->bias, bdims, nbd);
    onnx_floats(b, names[4], bs, cd, 1);
    onnx_ints(b, names[5], ONNX__TENSOR_PROTO__DATA_TYPE__INT32, zero, cd, 1);
    Onnx__AttributeProto *axis = onnx_attr_int(b, "axis", 0);
    const char *wi[3] = {names[0], names[1], names[2]}, *bi[3] = {names[3], names[4], names[5]};
    snprintf(out, sizeof out, "%s.weight", name);
    onnx_node(b, "DequantizeLinear", out, wi, 3, out, &axis, 1);
    snprintf(out, sizeof out, "%s.bias", name);
    onnx_node(b, "DequantizeLinear", out, bi, 3, out, &axis, 1);
}

static void conv(qonnx *o, const qnode *n, const char *in, const char *raw) {
    const qk_layer *k = &n->k;
    const char *name = n->op->d.name;
    const int64_t wd[4] = {k->out_c, k->in_c / k->groups, k->kernel, k->kernel};
    const int64_t bd[1] = {k->out_c};
    weights(o, n, name, wd, 4, bd, 1);
    const int64_t ks[2] = {k->kernel, k->kernel}, st[2] = {k->stride, k->stride}, pads[4] = {k->pad, k->pad, k->pad, k->pad};
    Onnx__AttributeProto *a[4] = {onnx_attr_ints(&o->b, "kernel_shape", ks, 2), onnx_attr_ints(&o->b, "strides", st, 2),
                                  onnx_attr_ints(&o->b, "pads", pads, 4), onnx_attr_int(&o->b, "group", k->groups)};
    char w[80], bias[80];
    snprintf(w, sizeof w, "%s.weight", name);
    snprintf(bias, sizeof bias, "%s.bias", name);
    const char *ins[3] = {in, w, bias};
    onnx_node(&o->b, "Conv", raw, ins, 3, raw, a, 4);
}

static void linear(qonnx *o, const qnode *n, const char *in, const char *raw) {
    const char *name = n->op->d.name;
    const int64_t wd[2] = {n->k.out_c, n->k.in_c}, bd[1] = {n->k.out_c};
    weights(o, n, name, wd, 2, bd, 1);
    char w[80], bias[80], flat[80];
    snprintf(w, sizeof w, "%s.weight", name);
    snprintf(bias, sizeof bias, "%s.bias", name);
    snprintf(flat, sizeof flat, "%s/flat", raw);
    Onnx__AttributeProto *axis = onnx_attr_int(&o->b, "axis", 1), *tb = onnx_attr_int(&o->b, "transB", 1);
    onnx_node(&o->b, "Flatten", flat, &in, 1, flat, &axis, 1);
    const char *ins[3] = {flat, w, bias};
    onnx_node(&o->b, "Gemm", raw, ins, 3, raw, &tb, 1);
}

/* A BatchNorm applied on its own: x * w + b per channel, w and b shaped [C, 1, 1] (or [C] after
 * a Linear) so that they broadcast over the channel axis. */
static void affine(qonnx *o, const qnode *n, const char *in, const char *raw) {
    const char *name = n->op->d.name;
    const int64_t wd[3] = {n->nout, 1, 1};
    const size_t nd = n->kind == AT_LAYER_BATCHNORM2D ? 3 : 1;
    weights(o, n, name, wd, nd, wd, nd);
    char w[80], bias[80], mul[80];
    snprintf(w, sizeof w, "%s.weight", name);
    snprintf(bias, sizeof bias, "%s.bias", name);
    snprintf(mul, sizeof mul, "%s/mul", raw);
    const char *mi[2] = {in, w}, *ai[2] = {mul, bias};
    onnx_node(&o->b, "Mul", mul, mi, 2, mul, NULL, 0);
    onnx_node(&o->b, "Add", raw, ai, 2, raw, NULL, 0);
}

static void pool(qonnx *o, const qnode *n, const char *op, const char *in, const char *raw) {
    const qk_layer *k = &n->k;
    const int64_t ks[2] = {k->kernel, k->kernel}, st[2] = {k->stride, k->stride}, pads[4] = {k->pad, k->pad, k->pad, k->pad};
    Onnx__AttributeProto *a[4] = {onnx_attr_ints(&o->b, "kernel_shape", ks, 2), onnx_attr_ints(&o->b, "strides", st, 2),
                                  onnx_attr_ints(&o->b, "pads", pads, 4),
                                  n->kind == AT_LAYER_AVGPOOL2D ? onnx_attr_int(&o->b, "count_include_pad", 1) : NULL};
    onnx_node(&o->b, op, raw, &in, 1, raw, a, 4);
}

/* Node n: its float operator into "r<t>", the output clamp, and the QDQ pair into "t<t>". */
static void node(qonnx *o, const qnode *n, bool last) {
    const int t = n->layer + 1;
    char in[32], in2[32], raw[32], clamped[40], out[32];
    tname(o->q->alias[n->src[0] + 1], in, sizeof in);
    tname(n->kind == AT_LAYER_ADD ? o->q->alias[n->src[1] + 1] : 0, in2, sizeof in2);
    snprintf(raw, sizeof raw, "r%d", t);
    if (last) snprintf(out, sizeof out, "logits");
    else tname(t, out, sizeof out);
    const char *one[1] = {in}, *two[2] = {in, in2};
    switch (n->kind) {
    case AT_LAYER_CONV2D: conv(o, n, in, raw); break;
    case AT_LAYER_LINEAR: linear(o, n, in, raw); break;
    case AT_LAYER_BATCHNORM2D: case AT_LAYER_BATCHNORM1D: affine(o, n, in, raw); break;
    case AT_LAYER_MAXPOOL2D: pool(o, n, "MaxPool", in, raw); break;
    case AT_LAYER_AVGPOOL2D: pool(o, n, "AveragePool", in, raw); break;
    case AT_LAYER_GLOBALAVGPOOL: onnx_node(&o->b, "GlobalAveragePool", raw, one, 1, raw, NULL, 0); break;
    case AT_LAYER_RELU: onnx_node(&o->b, "Relu", raw, one, 1, raw, NULL, 0); break;
    case AT_LAYER_ADD: onnx_node(&o->b, "Add", raw, two, 2, raw, NULL, 0); break;
    default: break;
    }
    const char *q_in = raw;
    if (n->k.lo > -128 && n->kind != AT_LAYER_RELU) { /* the ReLU the int8 kernel applies as its clamp */
        snprintf(clamped, sizeof clamped, "%s/relu", raw);
        onnx_node(&o->b, "Relu", clamped, &q_in, 1, clamped, NULL, 0);
        q_in = clamped;
    }
    qdq(o, q_in, t, out);
}

at_status at_qnet_export_onnx(const at_qnet *q, const char *path) {
    if (!q || !path || !*path) return at_fail(AT_ERR_ARG, "ONNX export: no network or no path");
    if (q->nnodes == 0) return at_fail(AT_ERR_ARG, "ONNX export: the int8 network computes nothing");
    const size_t per = 12; /* nodes (and initializers) one kernel call can add, at most */
    qonnx o = {.q = q};
    at_status s = onnx_builder_open(&o.b, q->net, per * (size_t)q->nnodes + 2, per * (size_t)q->nnodes + 2)
                      ? AT_OK
                      : at_fail(AT_ERR_NOMEM, "out of memory building the ONNX model");
    if (s == AT_OK) qdq(&o, "input", 0, "t0");
    const int out = q->alias[q->net->plan.out_tensor + 1];
    for (int k = 0; s == AT_OK && k < q->nnodes; k++) node(&o, &q->nodes[k], q->nodes[k].layer + 1 == out);
    int c, h, w;
    at_net_in_shape(q->net, &c, &h, &w);
    const int K = at_net_out_size(q->net);
    const int64_t in_dims[4] = {-1, c, h, w}, out_dims[2] = {-1, K};
    Onnx__ValueInfoProto *vin = onnx_value_info(&o.b, "input", in_dims, 4);
    Onnx__ValueInfoProto *vout = onnx_value_info(&o.b, "logits", out_dims, 2);
    if (s == AT_OK && (o.b.pool.failed || !vin || !vout)) s = at_fail(AT_ERR_NOMEM, "out of memory building the ONNX model");
    if (s == AT_OK) s = onnx_write_model(&o.b, path, vin, vout);
    onnx_pool_free(&o.b.pool);
    return s;
}
