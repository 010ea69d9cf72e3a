/* int8 C export (`advtrain export --c DIR` on an int8 model file; docs/export.md): a quantized
 * network as standalone C99 with integer arithmetic only, for microcontrollers.
 *
 * PREFIX.c holds the kernels (src/quant/qkernels.h, copied verbatim: the same code as the
 * library's int8 inference, so the same bits), the constants as const arrays (flash), one
 * qk_layer per kernel call, and the forward function: one kernel call per line, every
 * activation at a fixed offset of one caller-provided scratch array. The offsets come from a
 * plan made here: a tensor lives from the node that writes it to its last reader, and takes the
 * lowest offset where it overlaps no tensor alive at the same time. No allocation, no libm.
 *
 * PREFIX_golden.c (when golden samples are given): those samples as int8 inputs, the library's
 * int8 logits for them, and a check that runs the exported network on them and counts the
 * samples whose logits differ in any bit; with -DPREFIX_GOLDEN_MAIN it is a program (the
 * Cortex-M test in tests/m4 runs it under QEMU). */
#include "qkernels_source.h"
#include "quant/quant.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A qk_layer on a 32-bit target: 21 int32 and 4 pointers. */
enum { QK_LAYER_BYTES_32 = 21 * 4 + 4 * 4 };

typedef struct qexporter {
    at_qnet *q;
    const char *prefix;
    char upper[AT_EXPORT_MAX_PREFIX + 1];
    int T;              /* tensors: the input (0) and every layer's output (l + 1) */
    long *offset;       /* per tensor: its scratch offset (-1: none; the input is the caller's) */
    int *first, *last;  /* per tensor: the node that writes it, its last reader */
    int out;            /* the output tensor */
    size_t scratch;     /* bytes */
    const float *golden;
    int ngolden;
    at_int8_export_info info;
} qexporter;

static int tensor_bytes(const qexporter *e, int t) {
    return t == 0 ? net_in_size(e->q->net) : e->q->net->layers[t - 1].out_size;
}

/* The tensors node k reads (-1: none), through the aliases (a Flatten or Dropout reads through). */
static void node_inputs(const qexporter *e, int k, int in[2]) {
    const qnode *n = &e->q->nodes[k];
    in[0] = e->q->alias[n->src[0] + 1];
    in[1] = n->kind == AT_LAYER_ADD ? e->q->alias[n->src[1] + 1] : -1;
}

/* The lowest 4-aligned offset for `need` bytes that overlaps no tensor alive at node k (written
 * before or at k, read at k or later). */
static long lowest_free(const qexporter *e, int k, long need) {
    long at = 0;
    for (bool moved = true; moved;) {
        moved = false;
        for (int t = 1; t < e->T; t++) {
            if (e->offset[t] < 0 || e->first[t] > k || e->last[t] < k) continue;
            const long end = e->offset[t] + ((tensor_bytes(e, t) + 3) & ~3L);
            if (at < end && e->offset[t] < at + need) at = end, moved = true;
        }
    }
    return at;
}

static at_status plan_buffers(qexporter *e) {
    const at_qnet *q = e->q;
    e->offset = malloc(sizeof(long) * (size_t)e->T);
    e->first = malloc(sizeof(int) * (size_t)e->T);
    e->last = malloc(sizeof(int) * (size_t)e->T);
    if (!e->offset || !e->first || !e->last) return at_fail(AT_ERR_NOMEM, "out of memory planning the int8 export");
    for (int t = 0; t < e->T; t++) e->offset[t] = -1, e->first[t] = -1, e->last[t] = -1;
    for (int k = 0; k < q->nnodes; k++) {
        int in[2];
        node_inputs(e, k, in);
        for (int j = 0; j < 2; j++)
            if (in[j] >= 0) e->last[in[j]] = k;
        e->first[q->nodes[k].layer + 1] = k;
    }
    e->out = q->alias[q->net->plan.out_tensor + 1];
    e->last[e->out] = q->nnodes; /* read by the copy into the caller's logits */
    for (int k = 0; k < q->nnodes; k++) {
        const int t = q->nodes[k].layer + 1;
        e->offset[t] = lowest_free(e, k, tensor_bytes(e, t));
        const size_t end = (size_t)e->offset[t] + (size_t)tensor_bytes(e, t);
        if (end > e->scratch) e->scratch = end;
    }
    e->scratch = (e->scratch + 3) & ~(size_t)3;
    return AT_OK;
}

/* ------------------------------------------------------------ the header */

static void write_header(qexporter *e, FILE *fp) {
    const char *P = e->prefix, *U = e->upper;
    const at_net *net = e->q->net;
    int c, h, w;
    at_net_in_shape(net, &c, &h, &w);
    float oscale;
    int32_t ozp;
    at_qnet_output_params(e->q, &oscale, &ozp);
    fprintf(fp,
            "/* %s.h: an int8 network exported by advtrain %s (advtrain export --c, int8 model).\n"
            " *\n"
            " * Standalone C99, integer arithmetic only (the TFLite Micro / CMSIS-NN int8 scheme),\n"
            " * no allocation, no library. The same bits as advtrain's int8 inference.\n"
            " * %d kernel calls, %" PRIu64 " multiply-accumulates per inference; %zu bytes of constants\n"
            " * (on a 32-bit target); %s_SCRATCH_BYTES of working memory.\n"
            " *\n"
            " * Input: %s_INPUT_SIZE int8 values, channel by channel (NCHW), real = (q - %s_INPUT_ZERO_POINT)\n"
            " * * %s_INPUT_SCALE; %s_quantize_input makes them from floats (pixels scaled to [0,1]).\n"
            " * Output: %s_OUTPUTS int8 logits, real = (q - %s_OUTPUT_ZERO_POINT) * %s_OUTPUT_SCALE.\n"
            " */\n",
            P, AT_VERSION, e->info.layers, e->info.macs, e->info.const_bytes, U, U, U, U, P, U, U, U);
    fprintf(fp, "#ifndef ADVTRAIN_EXPORT_%s_H\n#define ADVTRAIN_EXPORT_%s_H\n#include <stdint.h>\n\n", U, U);
    fprintf(fp, "#define %s_INPUT_C %d\n#define %s_INPUT_H %d\n#define %s_INPUT_W %d\n", U, c, U, h, U, w);
    fprintf(fp, "#define %s_INPUT_SIZE %d /* C*H*W */\n#define %s_OUTPUTS %d\n", U, c * h * w, U, at_net_out_size(net));
    fprintf(fp, "#define %s_INPUT_SCALE %.9gf\n#define %s_INPUT_ZERO_POINT %d\n", U, (double)e->q->tq[0].scale, U,
            (int)e->q->tq[0].zp);
    fprintf(fp, "#define %s_OUTPUT_SCALE %.9gf\n#define %s_OUTPUT_ZERO_POINT %d\n", U, (double)oscale, U, (int)ozp);
    fprintf(fp, "/* Bytes of working memory one inference needs (%s_forward's scratch). */\n", P);
    fprintf(fp, "#define %s_SCRATCH_BYTES %zu\n\n", U, e->scratch ? e->scratch : 4);
    fprintf(fp, "#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n");
    fprintf(fp,
            "/* One inference: input (%s_INPUT_SIZE int8) -> logits (%s_OUTPUTS int8; may be NULL).\n"
            " * scratch: %s_SCRATCH_BYTES bytes owned by the caller, 4-byte aligned (its contents do\n"
            " * not matter). Reentrant. Returns the index of the largest logit (the first on ties). */\n"
            "int %s_forward(const int8_t *input, int8_t *logits, int8_t *scratch);\n\n",
            U, U, U, P);
    fprintf(fp,
            "/* Floats (NCHW, the preprocessing of training) to the int8 input: zero point plus the value\n"
            " * over the scale rounded half away from zero, clamped to [-128, 127]; NaN to the zero point. */\n"
            "void %s_quantize_input(const float *x, int8_t *input);\n\n",
            P);
    fprintf(fp,
            "#ifndef %s_NO_STATIC_SCRATCH\n"
            "/* %s_quantize_input then %s_forward with static buffers inside %s.c (%s_INPUT_SIZE +\n"
            " * %s_SCRATCH_BYTES bytes): simpler, NOT reentrant. Compile with -D%s_NO_STATIC_SCRATCH to\n"
            " * leave it and its buffers out. */\n"
            "int %s_predict(const float *x, int8_t *logits);\n"
            "#endif\n\n",
            U, P, P, P, U, U, U, P);
    fprintf(fp, "#ifdef __cplusplus\n}\n#endif\n#endif /* ADVTRAIN_EXPORT_%s_H */\n", U);
}

/* ------------------------------------------------------------ the source */

static void write_ints(FILE *fp, const char *type, const char *P, const char *what, int k, const int32_t *v, size_t n) {
    fprintf(fp, "static const %s %s_%s%d[%zu] = {", type, P, what, k, n ? n : 1);
    for (size_t i = 0; i < n; i++) fprintf(fp, "%s%" PRId32 "%s", i % 16 ? "" : "\n    ", v[i], i + 1 < n ? "," : "");
    fprintf(fp, "%s};\n", n ? "\n" : "0");
}

static void write_weights(FILE *fp, const char *P, int k, const int8_t *w, size_t n) {
    fprintf(fp, "static const int8_t %s_w%d[%zu] = {", P, k, n);
    for (size_t i = 0; i < n; i++) fprintf(fp, "%s%d%s", i % 24 ? "" : "\n    ", w[i], i + 1 < n ? "," : "");
    fprintf(fp, "\n};\n");
}

static bool has_channels(const qnode *n) { return n->nout > 0; }

/* Node k's constant arrays and its qk_layer. */
static void write_node(qexporter *e, FILE *fp, int k) {
    const qnode *n = &e->q->nodes[k];
    const qk_layer *L = &n->k;
    const char *P = e->prefix;
    fprintf(fp, "\n/* %d: %s (%s) */\n", k, n->op->d.name, at_layer_ops_for(n->kind)->name);
    if (has_channels(n)) {
        write_weights(fp, P, k, n->w, n->nweights);
        write_ints(fp, "int32_t", P, "b", k, n->bias, (size_t)n->nout);
        write_ints(fp, "int32_t", P, "m", k, n->mult, (size_t)n->nout);
        write_ints(fp, "int32_t", P, "s", k, n->shift, (size_t)n->nout);
        e->info.const_bytes += n->nweights + 12 * (size_t)n->nout;
    }
    fprintf(fp, "static const qk_layer %s_l%d = {%d, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d,\n", P, k,
            L->in_c, L->in_h, L->in_w, L->out_c, L->out_h, L->out_w, L->kernel, L->stride, L->pad, L->groups,
            L->in_zp, L->in_zp2, L->out_zp, L->lo, L->hi);
    if (has_channels(n)) fprintf(fp, "    %s_w%d, %s_b%d, %s_m%d, %s_s%d,\n", P, k, P, k, P, k, P, k);
    else fprintf(fp, "    0, 0, 0, 0,\n");
    fprintf(fp, "    {%d, %d, %d}, {%d, %d, %d}};\n", L->add_mult[0], L->add_mult[1], L->add_mult[2], L->add_shift[0],
            L->add_shift[1], L->add_shift[2]);
    e->info.const_bytes += QK_LAYER_BYTES_32;
}

static void loc(const qexporter *e, int t, char *buf, size_t cap) {
    if (t == 0) snprintf(buf, cap, "input");
    else snprintf(buf, cap, "scratch + %ld", e->offset[t]);
}

/* Node k's kernel call in the forward function. */
static void write_call(qexporter *e, FILE *fp, int k) {
    const qnode *n = &e->q->nodes[k];
    const qk_layer *L = &n->k;
    int in[2];
    node_inputs(e, k, in);
    char x[48], x2[48], y[48];
    loc(e, in[0], x, sizeof x);
    loc(e, in[1] >= 0 ? in[1] : 0, x2, sizeof x2);
    loc(e, n->layer + 1, y, sizeof y);
    const char *P = e->prefix;
    const int count = tensor_bytes(e, n->layer + 1);
    switch (n->kind) {
    case AT_LAYER_CONV2D:
        fprintf(fp, "    qk_conv(&%s_l%d, %s, %s);\n", P, k, x, y);
        e->info.macs += (uint64_t)L->out_c * L->out_h * L->out_w * (L->in_c / L->groups) * L->kernel * L->kernel;
        break;
    case AT_LAYER_LINEAR:
        fprintf(fp, "    qk_linear(&%s_l%d, %s, %s);\n", P, k, x, y);
        e->info.macs += (uint64_t)L->in_c * L->out_c;
        break;
    case AT_LAYER_BATCHNORM2D: case AT_LAYER_BATCHNORM1D:
        fprintf(fp, "    qk_affine(&%s_l%d, %s, %s);\n", P, k, x, y);
        e->info.macs += (uint64_t)count;
        break;
    case AT_LAYER_MAXPOOL2D: fprintf(fp, "    qk_maxpool(&%s_l%d, %s, %s);\n", P, k, x, y); break;
    case AT_LAYER_AVGPOOL2D: fprintf(fp, "    qk_avgpool(&%s_l%d, %s, %s);\n", P, k, x, y); break;
    case AT_LAYER_GLOBALAVGPOOL: fprintf(fp, "    qk_globalavgpool(&%s_l%d, %s, %s);\n", P, k, x, y); break;
    case AT_LAYER_RELU: fprintf(fp, "    qk_relu(&%s_l%d, %s, %s, %d);\n", P, k, x, y, count); break;
    case AT_LAYER_ADD: fprintf(fp, "    qk_add(&%s_l%d, %s, %s, %s, %d);\n", P, k, x, x2, y, count); break;
    default: break;
    }
}

static void write_functions(qexporter *e, FILE *fp) {
    const char *P = e->prefix, *U = e->upper;
    fprintf(fp, "\nint %s_forward(const int8_t *input, int8_t *logits, int8_t *scratch) {\n", P);
    fprintf(fp, "    int8_t own[%s_OUTPUTS];\n    if (!logits) logits = own;\n%s", U, e->q->nnodes ? "" : "    (void)scratch;\n");
    for (int k = 0; k < e->q->nnodes; k++) write_call(e, fp, k);
    char y[48];
    loc(e, e->out, y, sizeof y);
    fprintf(fp, "    const int8_t *out = %s;\n", y);
    fprintf(fp, "    for (int i = 0; i < %s_OUTPUTS; i++) logits[i] = out[i];\n", U);
    fprintf(fp, "    return qk_argmax(logits, %s_OUTPUTS);\n}\n\n", U);
    fprintf(fp,
            "void %s_quantize_input(const float *x, int8_t *input) {\n"
            "    for (int i = 0; i < %s_INPUT_SIZE; i++) input[i] = qk_quantize(x[i], %s_INPUT_SCALE, %s_INPUT_ZERO_POINT);\n"
            "}\n\n",
            P, U, U, U);
    fprintf(fp,
            "#ifndef %s_NO_STATIC_SCRATCH\n"
            "static int8_t %s_input_buffer[%s_INPUT_SIZE];\n"
            "static int32_t %s_scratch_words[(%s_SCRATCH_BYTES + 3) / 4]; /* int32: 4-byte aligned */\n"
            "int %s_predict(const float *x, int8_t *logits) {\n"
            "    %s_quantize_input(x, %s_input_buffer);\n"
            "    return %s_forward(%s_input_buffer, logits, (int8_t *)%s_scratch_words);\n"
            "}\n"
            "#endif\n",
            U, P, U, P, U, P, P, P, P, P, P);
}

static at_status write_source(qexporter *e, FILE *fp) {
    const char *P = e->prefix;
    const char *spec = at_net_spec(e->q->net);
    fprintf(fp, "/* %s.c: an int8 network exported by advtrain %s (advtrain export --c, int8 model)", P, AT_VERSION);
    if (*spec) {
        fputs(",\n * architecture '", fp);
        for (const char *c = spec; *c; c++) /* user text: keep it from ending the comment */
            fputc(*c == '*' || *c == '/' || (unsigned char)*c < 32 || (unsigned char)*c > 126 ? '?' : *c, fp);
        fputc('\'', fp);
    }
    fprintf(fp, ". See %s.h. */\n#include \"%s.h\"\n\n", P, P);
    fputs("/* ---- the int8 kernels: advtrain's src/quant/qkernels.h, verbatim ---- */\n", fp);
    fputs(q_kernels_source, fp);
    fputs("/* ---- the network ---- */\n", fp);
    e->info.const_bytes = 0;
    e->info.macs = 0;
    for (int k = 0; k < e->q->nnodes; k++) write_node(e, fp, k);
    write_functions(e, fp);
    return AT_OK;
}

/* ------------------------------------------------------------ golden vectors */

static at_status write_golden(qexporter *e, FILE *fp) {
    const char *P = e->prefix, *U = e->upper;
    const int n = e->ngolden, D = net_in_size(e->q->net), K = at_net_out_size(e->q->net);
    const int8_t *z;
    at_status s = at_qnet_forward(e->q, e->golden, n, &z);
    if (s != AT_OK) return s;
    fprintf(fp,
            "/* %s_golden.c: %d samples, their int8 inputs and the int8 logits advtrain's own int8\n"
            " * inference gives them (advtrain export --golden). %s_golden_check() runs %s_forward on\n"
            " * each and counts the samples whose logits differ in any bit (0: the build on this\n"
            " * target computes what advtrain computes). Compile with -D%s_GOLDEN_MAIN for a program\n"
            " * that prints the result and exits with 0 only when every sample matches. */\n"
            "#include \"%s.h\"\n\n#define %s_GOLDEN_SAMPLES %d\n",
            P, n, P, P, U, P, U, n);
    fprintf(fp, "static const int8_t %s_golden_input[%d][%d] = {\n", P, n, D);
    for (int i = 0; i < n; i++) {
        fputs("    {", fp);
        for (int j = 0; j < D; j++)
            fprintf(fp, "%s%d%s", j % 28 || !j ? "" : "\n     ", q_quantize(e->golden[(size_t)i * D + j], e->q->tq[0]),
                    j + 1 < D ? "," : "");
        fprintf(fp, "}%s\n", i + 1 < n ? "," : "");
    }
    fprintf(fp, "};\nstatic const int8_t %s_golden_logits[%d][%d] = {\n", P, n, K);
    for (int i = 0; i < n; i++) {
        fputs("    {", fp);
        for (int j = 0; j < K; j++) fprintf(fp, "%d%s", z[(size_t)i * K + j], j + 1 < K ? "," : "");
        fprintf(fp, "}%s\n", i + 1 < n ? "," : "");
    }
    fprintf(fp, "};\n\n");
    return AT_OK;
}

static void write_golden_check(qexporter *e, FILE *fp) {
    const char *P = e->prefix, *U = e->upper;
    fprintf(fp,
            "/* The samples whose logits differ from advtrain's; *first: the first of them (-1: none).\n"
            " * Also checks %s_quantize_input: each input, dequantized, quantizes back to itself. */\n"
            "int %s_golden_check(int *first);\n"
            "int %s_golden_check(int *first) {\n"
            "    static int32_t scratch[(%s_SCRATCH_BYTES + 3) / 4];\n"
            "    static float x[%s_INPUT_SIZE];\n"
            "    int8_t q[%s_INPUT_SIZE], logits[%s_OUTPUTS];\n"
            "    int bad = 0;\n"
            "    if (first) *first = -1;\n"
            "    for (int i = 0; i < %s_GOLDEN_SAMPLES; i++) {\n"
            "        int differs = 0;\n"
            "        for (int j = 0; j < %s_INPUT_SIZE; j++)\n"
            "            x[j] = (float)(%s_golden_input[i][j] - %s_INPUT_ZERO_POINT) * %s_INPUT_SCALE;\n"
            "        %s_quantize_input(x, q);\n"
            "        for (int j = 0; j < %s_INPUT_SIZE; j++) differs |= q[j] != %s_golden_input[i][j];\n"
            "        %s_forward(%s_golden_input[i], logits, (int8_t *)scratch);\n"
            "        for (int j = 0; j < %s_OUTPUTS; j++) differs |= logits[j] != %s_golden_logits[i][j];\n"
            "        if (differs && first && *first < 0) *first = i;\n"
            "        bad += differs;\n"
            "    }\n"
            "    return bad;\n"
            "}\n\n",
            P, P, P, U, U, U, U, U, U, P, U, U, P, U, P, P, P, U, P);
    fprintf(fp,
            "#ifdef %s_GOLDEN_MAIN\n#include <stdio.h>\n"
            "int main(void) {\n"
            "    int first;\n"
            "    const int bad = %s_golden_check(&first);\n"
            "    printf(\"%s: %%d of %%d golden samples differ from advtrain's int8 logits\", bad, %s_GOLDEN_SAMPLES);\n"
            "    if (bad) printf(\" (first: sample %%d)\", first);\n"
            "    printf(\"\\n\");\n"
            "    return bad != 0;\n"
            "}\n#endif\n",
            U, P, P, U);
}

/* ------------------------------------------------------------ the files */

static at_status write_file(FILE *fp, int file, void *user) {
    qexporter *e = user;
    if (file == 0) return write_source(e, fp); /* first: it sums the figures the header prints */
    if (file == 1) {
        write_header(e, fp);
        return AT_OK;
    }
    at_status s = write_golden(e, fp);
    if (s == AT_OK) write_golden_check(e, fp);
    return s;
}

at_status at_qnet_export_c(at_qnet *q, const char *dir, const char *prefix, const float *golden, int ngolden,
                           at_int8_export_info *info) {
    if (!q) return at_fail(AT_ERR_ARG, "int8 C export: no network");
    if (ngolden < 0 || (ngolden > 0 && !golden)) return at_fail(AT_ERR_ARG, "int8 C export: %d golden samples", ngolden);
    at_status bad = at_export_check(dir, prefix);
    if (bad != AT_OK) return bad;
    qexporter e = {.q = q, .prefix = prefix, .T = q->net->nlayers + 1, .golden = golden, .ngolden = ngolden};
    for (size_t i = 0; prefix[i]; i++) e.upper[i] = (char)toupper((unsigned char)prefix[i]);
    e.info.layers = q->nnodes;
    at_status s = plan_buffers(&e);
    e.info.scratch_bytes = e.scratch;
    const char *const suffixes[3] = {".c", ".h", "_golden.c"};
    if (s == AT_OK) s = at_export_files(dir, prefix, suffixes, ngolden > 0 ? 3 : 2, write_file, &e);
    if (s == AT_OK && info) *info = e.info;
    free(e.offset);
    free(e.first);
    free(e.last);
    return s;
}
