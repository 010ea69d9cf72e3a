/* ONNX export (src/io/export_onnx.c). For networks covering every layer kind (BatchNorm with
 * non-trivial running statistics, grouped convolution, residual Add, every pooling, every
 * activation, Dropout, BatchNorm1d):
 *  - always: the file parses back with protobuf-c as an ONNX ModelProto (IR 7, opset 13), with
 *    the expected operators in order and every initializer bit-identical to the network's
 *    parameters and buffers under PyTorch's names;
 *  - where a Python with onnxruntime is found (ADVTRAIN_ONNX_PYTHON, else .venv-peers/bin/python,
 *    else python3): ONNX Runtime's logits on 64 random inputs within 1e-4 of advtrain's
 *    (at_net_predict), and onnx.checker's full check passes. Skipped with a note otherwise.
 * Bad paths and layers give errors, not files. */
#define _POSIX_C_SOURCE 200809L
#include "advtrain.h"
#include "onnx.pb-c.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char tmpdir[] = "/tmp/advtrain_onnx_XXXXXX";

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static double uniform(void) { /* xorshift64*: reproducible inputs */
    rng_state ^= rng_state >> 12, rng_state ^= rng_state << 25, rng_state ^= rng_state >> 27;
    return (double)((rng_state * 2685821657736338717ull) >> 40) / 16777216.0;
}

static uint8_t *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(*len ? *len : 1);
    if (b && fread(b, 1, *len, f) != *len) free(b), b = NULL;
    fclose(f);
    return b;
}

static const Onnx__TensorProto *find_init(const Onnx__GraphProto *g, const char *name) {
    for (size_t i = 0; i < g->n_initializer; i++)
        if (strcmp(g->initializer[i]->name, name) == 0) return g->initializer[i];
    return NULL;
}

/* Every parameter and BatchNorm statistic is an initializer with the same floats. */
static void check_initializers(const Onnx__GraphProto *g, at_net *net) {
    int bad = 0, found = 0;
    for (int i = 0; i < at_net_num_tensors(net); i++) {
        const at_param_info *p = at_net_tensor(net, i);
        const Onnx__TensorProto *t = find_init(g, p->name);
        found += t != NULL;
        bad += !t || t->raw_data.len != p->size * 4 || memcmp(t->raw_data.data, at_net_params(net) + p->offset, p->size * 4);
    }
    for (int i = 0; i < at_net_num_buffers(net); i++) {
        const at_param_info *p = at_net_buffer(net, i);
        if (p->is_integer) continue; /* num_batches_tracked: not part of the eval graph */
        const Onnx__TensorProto *t = find_init(g, p->name);
        bad += !t || t->raw_data.len != p->size * 4 || memcmp(t->raw_data.data, at_net_buffers(net) + p->offset, p->size * 4);
    }
    CHECK_MSG(bad == 0 && found == at_net_num_tensors(net), "%d initializers missing or different", bad);
}

static void check_structure(const char *path, at_net *net, const char *ops) {
    size_t len;
    uint8_t *b = read_all(path, &len);
    CHECK_MSG(b != NULL, "%s not written", path);
    if (!b) return;
    Onnx__ModelProto *m = onnx__model_proto__unpack(NULL, len, b);
    CHECK_MSG(m && m->graph, "%s does not parse as an ONNX model", path);
    if (m && m->graph) {
        CHECK(m->ir_version == 7 && m->n_opset_import == 1 && m->opset_import[0]->version == 13);
        CHECK(m->graph->n_input == 1 && strcmp(m->graph->input[0]->name, "input") == 0);
        CHECK(m->graph->n_output == 1 && strcmp(m->graph->output[0]->name, "logits") == 0);
        char got[1024] = "";
        for (size_t i = 0; i < m->graph->n_node; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%s", i ? "," : "", m->graph->node[i]->op_type);
        CHECK_MSG(strcmp(got, ops) == 0, "operators %s, expected %s", got, ops);
        check_initializers(m->graph, net);
    }
    onnx__model_proto__free_unpacked(m, NULL);
    free(b);
}

static const char *onnx_python(void) {
    static char cmd[512];
    const char *env = getenv("ADVTRAIN_ONNX_PYTHON"), *src = getenv("ADVTRAIN_SOURCE_DIR");
    char peers[400];
    snprintf(peers, sizeof peers, "%s/.venv-peers/bin/python", src ? src : ".");
    const char *cands[3] = {env, peers, "python3"};
    for (int i = 0; i < 3; i++) {
        if (!cands[i] || !*cands[i]) continue;
        snprintf(cmd, sizeof cmd, "%s -c 'import onnxruntime, onnx, numpy' 2>/dev/null", cands[i]);
        if (system(cmd) == 0) return cands[i];
    }
    return NULL;
}

/* The inputs and advtrain's logits beside the model, as raw floats: PATH.x and PATH.z. */
static void write_pair(const char *path, const float *x, size_t nx, const float *z, size_t nz, char xp[300],
                       char zp[300]) {
    snprintf(xp, 300, "%s.x", path);
    snprintf(zp, 300, "%s.z", path);
    FILE *f = fopen(xp, "wb");
    CHECK(f && fwrite(x, sizeof(float), nx, f) == nx);
    if (f) fclose(f);
    f = fopen(zp, "wb");
    CHECK(f && fwrite(z, sizeof(float), nz, f) == nz);
    if (f) fclose(f);
}

/* ONNX Runtime on the inputs written beside the model, against advtrain's logits. */
static void check_runtime(const char *py, const char *path, at_net *net, int n) {
    int c, h, w;
    at_net_in_shape(net, &c, &h, &w);
    const size_t D = (size_t)c * h * w, K = (size_t)at_net_out_size(net);
    float *x = malloc(sizeof(float) * n * D);
    for (size_t i = 0; i < n * D; i++) x[i] = (float)uniform();
    const float *z;
    CHECK_OK(at_net_predict(net, x, n, &z));
    char xp[300], zp[300], cmd[4096];
    write_pair(path, x, n * D, z, n * K, xp, zp);
    snprintf(cmd, sizeof cmd,
             "%s -c 'import sys, numpy as np, onnx, onnxruntime as ort\n"
             "m = onnx.load(sys.argv[1]); onnx.checker.check_model(m, full_check=True)\n"
             "x = np.fromfile(sys.argv[2], np.float32).reshape(%d, %d, %d, %d)\n"
             "z = np.fromfile(sys.argv[3], np.float32).reshape(%d, -1)\n"
             "s = ort.InferenceSession(sys.argv[1], providers=[\"CPUExecutionProvider\"])\n"
             "o = s.run(None, {\"input\": x})[0].reshape(%d, -1)\n"
             "d = float(np.abs(o - z).max()); print(\"  onnxruntime: max |logit difference| %%.3g\" %% d)\n"
             "sys.exit(0 if d <= 1e-4 else 1)' %s %s %s",
             py, n, c, h, w, n, n, path, xp, zp);
    CHECK_MSG(system(cmd) == 0, "%s: onnxruntime's logits differ from advtrain's (or the checker failed)", path);
    free(x);
}

/* The int8 network of net (calibrated on random inputs) in QDQ form: it parses with the
 * expected counts of QuantizeLinear and DequantizeLinear, and where ONNX Runtime is found, the
 * graph as ONNX defines it (the runtime's optimizations off) gives 99% of advtrain's int8 logits
 * on 256 random inputs within one quantization step and none more than 4 (the runtime rounds
 * half to even through float scales, advtrain half away from zero through fixed-point
 * multipliers: values on a rounding boundary can differ by a step, and the step can carry on
 * through later layers). The optimized runtime's agreement is printed. */
static void check_int8(const char *py, at_net *net, const char *path) {
    enum { N = 256 };
    int c, h, w;
    at_net_in_shape(net, &c, &h, &w);
    const size_t D = (size_t)c * h * w, K = (size_t)at_net_out_size(net);
    float *x = malloc(sizeof(float) * N * D);
    for (size_t i = 0; i < N * D; i++) x[i] = (float)uniform();
    at_qnet *q = NULL;
    CHECK_OK(at_quantize(&q, net, x, N, NULL));
    if (!q) return free(x);
    CHECK_OK(at_qnet_export_onnx(q, path));
    size_t len;
    uint8_t *b = read_all(path, &len);
    Onnx__ModelProto *m = b ? onnx__model_proto__unpack(NULL, len, b) : NULL;
    CHECK_MSG(m && m->graph, "%s does not parse", path);
    int nq = 0, ndq = 0;
    for (size_t i = 0; m && m->graph && i < m->graph->n_node; i++) {
        nq += strcmp(m->graph->node[i]->op_type, "QuantizeLinear") == 0;
        ndq += strcmp(m->graph->node[i]->op_type, "DequantizeLinear") == 0;
    }
    CHECK_MSG(nq >= 2 && ndq > nq, "%s: %d QuantizeLinear, %d DequantizeLinear", path, nq, ndq);
    onnx__model_proto__free_unpacked(m, NULL);
    free(b);
    const float *z;
    CHECK_OK(at_qnet_predict(q, x, N, &z));
    char xp[300], zp[300], cmd[4096];
    write_pair(path, x, N * D, z, N * K, xp, zp);
    snprintf(cmd, sizeof cmd,
             "%s -c 'import sys, numpy as np, onnx, onnxruntime as ort\n"
             "m = onnx.load(sys.argv[1]); onnx.checker.check_model(m, full_check=True)\n"
             "x = np.fromfile(sys.argv[2], np.float32).reshape(%d, %d, %d, %d)\n"
             "z = np.fromfile(sys.argv[3], np.float32).reshape(%d, -1)\n"
             "init = {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}\n"
             "dq = [n for n in m.graph.node if n.output[0] == \"logits\"][0]; s = float(init[dq.input[1]])\n"
             "so = ort.SessionOptions(); so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL\n"
             "r = {}\n"
             "for k, opt in ((\"reference\", so), (\"optimized\", ort.SessionOptions())):\n"
             "    o = ort.InferenceSession(sys.argv[1], opt, providers=[\"CPUExecutionProvider\"]).run(None, {\"input\": x})[0]\n"
             "    steps = np.rint(np.abs(o - z) / s)\n"
             "    r[k] = (float((steps <= 1).mean()), float(steps.max()), float((o.argmax(1) == z.argmax(1)).mean()))\n"
             "    print(\"  onnxruntime int8 (%%s): %%.2f%%%% of logits within one step, max %%d steps, predictions agree on %%.1f%%%%\" %% (k, 100 * r[k][0], r[k][1], 100 * r[k][2]))\n"
             "sys.exit(0 if r[\"reference\"][0] >= 0.99 and r[\"reference\"][1] <= 4 else 1)' %s %s %s",
             py, N, c, h, w, N, path, xp, zp);
    if (py) CHECK_MSG(system(cmd) == 0, "%s: onnxruntime's int8 predictions disagree with advtrain's", path);
    at_qnet_free(q);
    free(x);
}

/* A network of spec, its BatchNorm statistics random (not the initial 0 and 1). */
static at_net *random_net(const char *spec, int c, int h, int w) {
    at_net *net = NULL;
    CHECK_OK(at_net_from_spec(&net, spec, c, h, w));
    if (!net) return NULL;
    at_net_init(net, 7);
    for (int i = 0; i < at_net_num_buffers(net); i++) {
        const at_param_info *p = at_net_buffer(net, i);
        const bool var = strstr(p->name, "running_var") != NULL;
        for (size_t k = 0; !p->is_integer && k < p->size; k++)
            at_net_buffers(net)[p->offset + k] = var ? 0.5f + (float)uniform() : (float)uniform() - 0.5f;
    }
    for (int i = 0; i < at_net_num_tensors(net); i++) { /* BatchNorm weight and bias away from 1 and 0 */
        const at_param_info *p = at_net_tensor(net, i);
        if (strstr(p->name, "bn") || p->ndim == 1)
            for (size_t k = 0; k < p->size; k++) at_net_params(net)[p->offset + k] += 0.3f * ((float)uniform() - 0.5f);
    }
    return net;
}

int main(void) {
    if (!mkdtemp(tmpdir)) return 1;
    const char *py = onnx_python();
    if (!py) printf("test_export_onnx: no Python with onnxruntime and onnx (ADVTRAIN_ONNX_PYTHON): runtime check skipped\n");
    struct {
        const char *spec, *ops;
        int c, side;
    } cases[] = {
        {"smallcnn", "Conv,Relu,Conv,Relu,Flatten,Flatten,Gemm,Relu,Flatten,Gemm", 1, 28},
        {"conv:8:3:1:1:bias=0,bn,a=relu,conv:8:3:1:1:groups=8:bias=0,bn,relu,conv:8:1,bn,add:a,bn,leakyrelu:0.1,"
         "maxpool:3:2:1,avgpool:3:1:1,dropout2d:0.1,gap,flatten,linear:16,bn1d,tanh,dropout:0.2,linear:10,sigmoid",
         "Conv,BatchNormalization,Relu,Conv,BatchNormalization,Relu,Conv,BatchNormalization,Add,BatchNormalization,"
         "LeakyRelu,MaxPool,AveragePool,Identity,GlobalAveragePool,Flatten,Flatten,Gemm,BatchNormalization,Tanh,"
         "Identity,Flatten,Gemm,Sigmoid",
         3, 12},
        {"resnet8", NULL, 3, 32},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        at_net *net = random_net(cases[k].spec, cases[k].c, cases[k].side, cases[k].side);
        if (!net) continue;
        char path[256];
        snprintf(path, sizeof path, "%s/m%zu.onnx", tmpdir, k);
        CHECK_OK(at_export_onnx(net, path));
        if (cases[k].ops) check_structure(path, net, cases[k].ops);
        if (py) check_runtime(py, path, net, 64);
        at_net_free(net);
    }
    /* int8: the networks every int8 kernel runs */
    const char *int8_specs[3] = {"smallcnn", "conv:8:3:1:1:bias=0,bn,a=relu,conv:8:3:1:1:groups=8:bias=0,bn,relu,conv:8:1,bn,"
                                 "add:a,bn,relu,maxpool:3:2:1,avgpool:2,gap,flatten,linear:10", "resnet8"};
    const int int8_c[3] = {1, 3, 3}, int8_side[3] = {28, 12, 32};
    for (int k = 0; k < 3; k++) {
        at_net *net = random_net(int8_specs[k], int8_c[k], int8_side[k], int8_side[k]);
        if (!net) continue;
        char path[256];
        snprintf(path, sizeof path, "%s/q%d.onnx", tmpdir, k);
        check_int8(py, net, path);
        at_net_free(net);
    }
    /* errors: a directory that does not exist, no path */
    at_net *net = random_net("smallcnn", 1, 28, 28);
    CHECK(at_export_onnx(net, "/nonexistent-dir/m.onnx") == AT_ERR_IO);
    CHECK(at_export_onnx(net, "") == AT_ERR_ARG && at_export_onnx(NULL, "x.onnx") == AT_ERR_ARG);
    at_net_free(net);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) return 1;
    return tu_finish("test_export_onnx");
}
