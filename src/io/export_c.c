/* C export: a network as standalone C99 source for microcontrollers and other places without
 * advtrain (docs/export.md).
 *
 * DIR/PREFIX.h declares the constants and the inference functions; DIR/PREFIX.c holds the
 * parameters as `static const float` arrays (printed with %.9g, so every float round-trips
 * exactly) and one block of plain loops per layer. The generated code allocates nothing and uses
 * no library except <math.h>'s tanhf/expf for Tanh and Sigmoid.
 *
 * Activations live in two ping-pong buffers inside a caller-provided scratch array of
 * PREFIX_SCRATCH_FLOATS floats; element-wise layers work in place, Flatten and Dropout are free,
 * and the last layer writes straight into the caller's logits. */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define EXPORT_MAX_PREFIX 64

/* Where a layer reads or writes its activations in the generated forward function. */
enum { LOC_INPUT, LOC_BUF0, LOC_BUF1, LOC_LOGITS };

typedef struct layer_plan {
    int src, dst;
    bool noop; /* Flatten, Dropout, Dropout2d: nothing to compute at inference */
    int in_c, in_h, in_w, out_c, out_h, out_w;
    const at_param_info *weight, *bias;
} layer_plan;

typedef struct exporter {
    const at_net *net;
    const char *prefix;
    char upper[EXPORT_MAX_PREFIX + 1];
    int nlayers;
    layer_plan *plan;
    int buf_size[2];     /* floats of each ping-pong buffer (0: unused) */
    int scratch;         /* PREFIX_SCRATCH_FLOATS (at least 1: C has no empty arrays) */
    bool needs_libm;
    bool copy_at_end;    /* no layer computes anything: logits = input */
    int max_index;       /* the largest array size, which int indexes must reach */
    FILE *fp;
} exporter;

static bool is_noop(at_layer_kind k) {
    return k == AT_LAYER_FLATTEN || k == AT_LAYER_DROPOUT || k == AT_LAYER_DROPOUT2D;
}

static bool is_elementwise(at_layer_kind k) {
    return k == AT_LAYER_RELU || k == AT_LAYER_LEAKYRELU || k == AT_LAYER_TANH ||
           k == AT_LAYER_SIGMOID;
}

static bool valid_prefix(const char *p) {
    if (!p || !*p || strlen(p) > EXPORT_MAX_PREFIX) return false;
    if (!(isalpha((unsigned char)p[0]) || p[0] == '_')) return false;
    for (const char *c = p; *c; c++)
        if (!(isalnum((unsigned char)*c) || *c == '_') || (unsigned char)*c > 127) return false;
    return true;
}

/* A layer or tensor name as it may appear inside a generated comment: anything but letters,
 * digits and "_.-" becomes '?', so that no name can end the comment. */
static const char *comment_safe(const char *name, char *buf, size_t cap) {
    size_t n = 0;
    for (; name[n] && n + 1 < cap; n++) {
        unsigned char c = (unsigned char)name[n];
        buf[n] = (char)(c < 128 && (isalnum(c) || c == '_' || c == '.' || c == '-') ? c : '?');
    }
    buf[n] = '\0';
    return buf;
}

/* A float literal that reads back as exactly v: %.9g plus the f suffix, with a '.' added to
 * whole numbers ("1" -> "1.0f"). v must be finite. */
static void float_literal(float v, char *buf, size_t cap) {
    char num[32];
    snprintf(num, sizeof num, "%.9g", (double)v);
    bool has_point = strpbrk(num, ".e") != NULL;
    snprintf(buf, cap, "%s%sf", num, has_point ? "" : ".0");
}

/* ------------------------------------------------------------ planning */

/* The layers this exporter writes: a chain of dense layers. BatchNorm (to be folded into the
 * layer before it), residual Add, grouped and bias-free convolutions are not written yet. */
static at_status check_exportable(const at_net *net, int l) {
    const at_layer_desc *d = at_net_layer(net, l);
    const bool chain = !d->input[0] && !d->input2[0];
    const bool plain = d->kind <= AT_LAYER_DROPOUT2D && d->groups <= 1 && !d->no_bias;
    if (chain && plain) return AT_OK;
    char what[160];
    at_net_describe_layer(net, l, what, sizeof what);
    return at_fail(AT_ERR_UNSUPPORTED,
                   "C export: layer %d (%s, %s) is not supported yet: the exporter writes chains of "
                   "Linear, Conv2d (dense, with bias), pooling, activations, Flatten and Dropout",
                   l, d->name, what);
}

static at_status make_plan(exporter *e) {
    const at_net *net = e->net;
    const int n = e->nlayers;
    for (int l = 0; l < n; l++) {
        at_status s = check_exportable(net, l);
        if (s != AT_OK) return s;
    }
    int c, h, w;
    at_net_in_shape(net, &c, &h, &w);
    int last = -1; /* the last layer that computes something writes into the logits */
    for (int l = 0; l < n; l++)
        if (!is_noop(at_net_layer(net, l)->kind)) last = l;
    int cur = LOC_INPUT;
    for (int l = 0; l < n; l++) {
        layer_plan *p = &e->plan[l];
        const at_layer_desc *d = at_net_layer(net, l);
        p->in_c = c;
        p->in_h = h;
        p->in_w = w;
        at_net_layer_out_shape(net, l, &p->out_c, &p->out_h, &p->out_w);
        c = p->out_c;
        h = p->out_h;
        w = p->out_w;
        long long out_size = (long long)p->out_c * p->out_h * p->out_w;
        if (out_size > INT_MAX / 4)
            return at_fail(AT_ERR_UNSUPPORTED, "C export: layer %d's output (%lld floats) is too large",
                           l, out_size);
        e->max_index = AT_MAX(e->max_index, (int)out_size);
        e->max_index = AT_MAX(e->max_index, p->in_c * p->in_h * p->in_w);
        for (int t = 0; t < at_net_num_tensors(net); t++) {
            const at_param_info *info = at_net_tensor(net, t);
            if (info->layer != l) continue;
            if (info->size > (size_t)INT_MAX / 4)
                return at_fail(AT_ERR_UNSUPPORTED, "C export: tensor '%s' (%zu floats) is too large",
                               info->name, info->size);
            e->max_index = AT_MAX(e->max_index, (int)info->size);
            if (info->is_bias)
                p->bias = info;
            else
                p->weight = info;
        }
        p->noop = is_noop(d->kind);
        if (p->noop) {
            p->src = p->dst = cur;
            continue;
        }
        if (d->kind == AT_LAYER_TANH || d->kind == AT_LAYER_SIGMOID) e->needs_libm = true;
        int dst;
        if (l == last)
            dst = LOC_LOGITS;
        else if (is_elementwise(d->kind))
            dst = cur == LOC_INPUT ? LOC_BUF0 : cur; /* in place, except on the const input */
        else
            dst = cur == LOC_BUF0 ? LOC_BUF1 : LOC_BUF0;
        if (dst == LOC_BUF0 || dst == LOC_BUF1)
            e->buf_size[dst - LOC_BUF0] = AT_MAX(e->buf_size[dst - LOC_BUF0], (int)out_size);
        p->src = cur;
        p->dst = dst;
        cur = dst;
    }
    e->copy_at_end = cur != LOC_LOGITS;
    e->scratch = AT_MAX(1, e->buf_size[0] + e->buf_size[1]);
    return AT_OK;
}

static const char *loc_name(int loc) {
    switch (loc) {
    case LOC_INPUT: return "input";
    case LOC_BUF0: return "buf0";
    case LOC_BUF1: return "buf1";
    default: return "logits";
    }
}

/* ------------------------------------------------------------ the header */

static void shape_text(int c, int h, int w, char *buf, size_t cap) {
    snprintf(buf, cap, "%dx%dx%d", c, h, w);
}

static void write_architecture(exporter *e, FILE *fp) {
    char what[128], shape[48], name[64];
    int c, h, w;
    at_net_in_shape(e->net, &c, &h, &w);
    fprintf(fp, " *   input %dx%dx%d\n", c, h, w);
    for (int l = 0; l < e->nlayers; l++) {
        const at_layer_desc *d = at_net_layer(e->net, l);
        const layer_plan *p = &e->plan[l];
        at_net_describe_layer(e->net, l, what, sizeof what);
        shape_text(p->out_c, p->out_h, p->out_w, shape, sizeof shape);
        fprintf(fp, " *   (%s): %s -> %s\n", comment_safe(d->name, name, sizeof name), what, shape);
    }
}

static void write_header(exporter *e) {
    FILE *fp = e->fp;
    const char *P = e->prefix, *U = e->upper;
    int c, h, w;
    at_net_in_shape(e->net, &c, &h, &w);
    const char *spec = at_net_spec(e->net);
    fprintf(fp,
            "/* %s.h: a neural network exported by advtrain %s (advtrain export --c).\n"
            " *\n"
            " * Architecture",
            P, AT_VERSION);
    if (*spec) {
        /* The spec is user text: keep it from ending the comment. */
        fputs(" '", fp);
        for (const char *c = spec; *c; c++)
            fputc(*c == '*' || *c == '/' || (unsigned char)*c < 32 || (unsigned char)*c > 126 ? '?' : *c, fp);
        fputc('\'', fp);
    }
    fprintf(fp, ", %zu parameters:\n", at_net_num_params((at_net *)e->net));
    write_architecture(e, fp);
    fprintf(fp,
            " *\n"
            " * Standalone C99: no allocation, %s.\n"
            " * Input: %s_INPUT_C x %s_INPUT_H x %s_INPUT_W floats, channel by channel\n"
            " * (NCHW), with the preprocessing used in training (image pixels scaled to [0,1]).\n"
            " * Output: %s_OUTPUTS logits (before softmax).\n"
            " */\n",
            e->needs_libm ? "only <math.h> (tanhf/expf: link with -lm)" : "no library at all", U, U,
            U, U);
    fprintf(fp, "#ifndef ADVTRAIN_EXPORT_%s_H\n#define ADVTRAIN_EXPORT_%s_H\n\n", U, U);
    fprintf(fp, "#define %s_INPUT_C %d\n", U, c);
    fprintf(fp, "#define %s_INPUT_H %d\n", U, h);
    fprintf(fp, "#define %s_INPUT_W %d\n", U, w);
    fprintf(fp, "#define %s_INPUT_SIZE %d /* C*H*W */\n", U, c * h * w);
    fprintf(fp, "#define %s_OUTPUTS %d\n", U, at_net_out_size(e->net));
    fprintf(fp, "/* Floats of working memory one inference needs (%s_forward's scratch). */\n", P);
    fprintf(fp, "#define %s_SCRATCH_FLOATS %d\n\n", U, e->scratch);
    fprintf(fp, "#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n");
    fprintf(fp,
            "/* One inference: input (%s_INPUT_SIZE floats) -> logits (%s_OUTPUTS floats).\n"
            " * scratch: %s_SCRATCH_FLOATS floats of working memory, owned by the caller (it may be\n"
            " * reused between calls; its contents do not matter). Reentrant and thread-safe.\n"
            " * Returns the index of the largest logit (the first one on ties). */\n"
            "int %s_forward(const float *input, float *logits, float *scratch);\n\n",
            U, U, U, P);
    fprintf(fp,
            "#ifndef %s_NO_STATIC_SCRATCH\n"
            "/* The same with a static scratch buffer inside %s.c: simpler, but NOT reentrant (one\n"
            " * call at a time: not from two threads, nor from an interrupt handler while the main\n"
            " * loop is in it). logits may be NULL when only the class is wanted.\n"
            " * Compile %s.c with -D%s_NO_STATIC_SCRATCH to leave it and its buffer out. */\n"
            "int %s_predict(const float *input, float *logits);\n"
            "#endif\n\n",
            U, P, P, U, P);
    fprintf(fp, "#ifdef __cplusplus\n}\n#endif\n#endif /* ADVTRAIN_EXPORT_%s_H */\n", U);
}

/* ------------------------------------------------------------ the source */

static at_status write_array(exporter *e, const at_param_info *t, const char *kind, int l) {
    FILE *fp = e->fp;
    const float *v = at_net_params((at_net *)e->net) + t->offset;
    char shape[64] = "";
    size_t used = 0;
    for (int d = 0; d < t->ndim && used < sizeof shape; d++)
        used += (size_t)snprintf(shape + used, sizeof shape - used, "%s%d", d ? "x" : "", t->shape[d]);
    for (size_t i = 0; i < t->size; i++)
        if (!isfinite(v[i]))
            return at_fail(AT_ERR_NAN, "C export: parameter '%s' holds a non-finite value (%g at %zu)",
                           t->name, (double)v[i], i);
    char name[64];
    fprintf(fp, "/* %s: %s */\nstatic const float %s_%s%d[%zu] = {",
            comment_safe(t->name, name, sizeof name), shape, e->prefix, kind, l, t->size);
    char lit[40];
    for (size_t i = 0; i < t->size; i++) {
        float_literal(v[i], lit, sizeof lit);
        fprintf(fp, "%s%s", i % 8 == 0 ? "\n    " : " ", lit);
        if (i + 1 < t->size) fputc(',', fp);
    }
    fprintf(fp, "\n};\n\n");
    return AT_OK;
}

/* "oh * S - P + ki" without the "* 1" and "- 0". */
static const char *window_index(const char *o, int S, int P, const char *k, char *buf, size_t cap) {
    char scaled[32], pad[24];
    if (S == 1)
        snprintf(scaled, sizeof scaled, "%s", o);
    else
        snprintf(scaled, sizeof scaled, "%s * %d", o, S);
    if (P > 0)
        snprintf(pad, sizeof pad, " - %d", P);
    else
        pad[0] = '\0';
    snprintf(buf, cap, "%s%s + %s", scaled, pad, k);
    return buf;
}

static void emit_conv(exporter *e, const at_layer_desc *d, const layer_plan *p, int l) {
    FILE *fp = e->fp;
    const char *P = e->prefix;
    const int K = d->kernel, S = d->stride, Pd = d->pad;
    fprintf(fp,
            "        for (int o = 0; o < %d; o++)\n"
            "            for (int oh = 0; oh < %d; oh++)\n"
            "                for (int ow = 0; ow < %d; ow++) {\n"
            "                    float acc = 0.0f;\n"
            "                    for (int i = 0; i < %d; i++)\n"
            "                        for (int ki = 0; ki < %d; ki++) {\n",
            p->out_c, p->out_h, p->out_w, p->in_c, K);
    char ih[64], iw[64];
    window_index("oh", S, Pd, "ki", ih, sizeof ih);
    window_index("ow", S, Pd, "kj", iw, sizeof iw);
    if (Pd > 0) {
        fprintf(fp,
                "                            const int ih = %s;\n"
                "                            if (ih < 0 || ih >= %d) continue; /* zero padding */\n"
                "                            for (int kj = 0; kj < %d; kj++) {\n"
                "                                const int iw = %s;\n"
                "                                if (iw < 0 || iw >= %d) continue;\n",
                ih, p->in_h, K, iw, p->in_w);
    } else {
        fprintf(fp,
                "                            const int ih = %s;\n"
                "                            for (int kj = 0; kj < %d; kj++) {\n"
                "                                const int iw = %s;\n",
                ih, K, iw);
    }
    fprintf(fp,
            "                                acc += %s_w%d[((o * %d + i) * %d + ki) * %d + kj] *\n"
            "                                       x[(i * %d + ih) * %d + iw];\n"
            "                            }\n"
            "                        }\n"
            "                    y[(o * %d + oh) * %d + ow] = acc + %s_b%d[o];\n"
            "                }\n",
            P, l, p->in_c, K, K, p->in_h, p->in_w, p->out_h, p->out_w, P, l);
}

static void emit_linear(exporter *e, const layer_plan *p, int l) {
    const int in = p->in_c * p->in_h * p->in_w;
    fprintf(e->fp,
            "        for (int o = 0; o < %d; o++) {\n"
            "            const float *w = %s_w%d + o * %d; /* row o of the (%d, %d) weight */\n"
            "            float acc = 0.0f;\n"
            "            for (int i = 0; i < %d; i++) acc += w[i] * x[i];\n"
            "            y[o] = acc + %s_b%d[o];\n"
            "        }\n",
            p->out_c, e->prefix, l, in, p->out_c, in, in, e->prefix, l);
}

static void emit_pool(exporter *e, const at_layer_desc *d, const layer_plan *p) {
    FILE *fp = e->fp;
    const int K = d->kernel, S = d->stride, Pd = d->pad;
    const bool max = d->kind == AT_LAYER_MAXPOOL2D;
    fprintf(fp,
            "        for (int c = 0; c < %d; c++)\n"
            "            for (int oh = 0; oh < %d; oh++)\n"
            "                for (int ow = 0; ow < %d; ow++) {\n",
            p->out_c, p->out_h, p->out_w);
    if (max)
        fprintf(fp, "                    float m = 0.0f;\n"
                    "                    int seen = 0;\n");
    else
        fprintf(fp, "                    float sum = 0.0f;\n");
    fprintf(fp, "                    for (int ki = 0; ki < %d; ki++) {\n", K);
    char ih[64], iw[64];
    window_index("oh", S, Pd, "ki", ih, sizeof ih);
    window_index("ow", S, Pd, "kj", iw, sizeof iw);
    if (Pd > 0)
        fprintf(fp,
                "                        const int ih = %s;\n"
                "                        if (ih < 0 || ih >= %d) continue; /* padding */\n"
                "                        for (int kj = 0; kj < %d; kj++) {\n"
                "                            const int iw = %s;\n"
                "                            if (iw < 0 || iw >= %d) continue;\n",
                ih, p->in_h, K, iw, p->in_w);
    else
        fprintf(fp,
                "                        const int ih = %s;\n"
                "                        for (int kj = 0; kj < %d; kj++) {\n"
                "                            const int iw = %s;\n",
                ih, K, iw);
    fprintf(fp, "                            const float v = x[(c * %d + ih) * %d + iw];\n", p->in_h,
            p->in_w);
    if (max)
        fprintf(fp,
                "                            /* the first maximum in scan order; NaN wins */\n"
                "                            if (!seen || v > m || v != v) m = v;\n"
                "                            seen = 1;\n");
    else
        fprintf(fp, "                            sum += v;\n");
    fprintf(fp, "                        }\n"
                "                    }\n");
    char scale[40];
    float_literal(1.0f / (float)(K * K), scale, sizeof scale);
    if (max)
        fprintf(fp, "                    y[(c * %d + oh) * %d + ow] = m;\n", p->out_h, p->out_w);
    else
        fprintf(fp,
                "                    y[(c * %d + oh) * %d + ow] = sum * %s; /* 1/%d: padding counts */\n",
                p->out_h, p->out_w, scale, K * K);
    fprintf(fp, "                }\n");
}

static void emit_elementwise(exporter *e, const at_layer_desc *d, const layer_plan *p) {
    const int size = p->out_c * p->out_h * p->out_w;
    char expr[96], slope[40];
    switch (d->kind) {
    case AT_LAYER_RELU: snprintf(expr, sizeof expr, "x[i] > 0.0f ? x[i] : 0.0f"); break;
    case AT_LAYER_LEAKYRELU:
        float_literal(d->alpha, slope, sizeof slope);
        snprintf(expr, sizeof expr, "x[i] > 0.0f ? x[i] : x[i] * %s", slope);
        break;
    case AT_LAYER_TANH: snprintf(expr, sizeof expr, "tanhf(x[i])"); break;
    default: snprintf(expr, sizeof expr, "1.0f / (1.0f + expf(-x[i]))"); break;
    }
    fprintf(e->fp, "        for (int i = 0; i < %d; i++) y[i] = %s;%s\n", size, expr,
            p->src == p->dst ? " /* in place */" : "");
}

static at_status write_source(exporter *e) {
    FILE *fp = e->fp;
    const char *P = e->prefix, *U = e->upper;
    fprintf(fp,
            "/* %s.c: a neural network exported by advtrain %s (advtrain export --c).\n"
            " * See %s.h for the architecture and the interface. Standalone C99: no allocation%s.\n"
            " * Parameters are `static const float` arrays (flash on a microcontroller). */\n",
            P, AT_VERSION, P,
            e->needs_libm ? "; tanhf/expf from <math.h> (link with -lm)" : ", no library");
    fprintf(fp, "#include \"%s.h\"\n\n", P);
    if (e->needs_libm) fprintf(fp, "#include <math.h>\n\n");
    if (e->max_index > 32767)
        fprintf(fp,
                "#include <limits.h>\n"
                "#if INT_MAX < %d\n"
                "#error \"%s.c indexes up to %d with int: it needs an int of at least 32 bits\"\n"
                "#endif\n\n",
                e->max_index, P, e->max_index);
    for (int l = 0; l < e->nlayers; l++) {
        const layer_plan *p = &e->plan[l];
        at_status s = AT_OK;
        if (p->weight) s = write_array(e, p->weight, "w", l);
        if (s == AT_OK && p->bias) s = write_array(e, p->bias, "b", l);
        if (s != AT_OK) return s;
    }
    fprintf(fp, "int %s_forward(const float *input, float *logits, float *scratch)\n{\n", P);
    if (e->buf_size[0])
        fprintf(fp, "    float *const buf0 = scratch; /* %d floats */\n", e->buf_size[0]);
    if (e->buf_size[1])
        fprintf(fp, "    float *const buf1 = scratch + %d; /* %d floats */\n", e->buf_size[0],
                e->buf_size[1]);
    if (!e->buf_size[0] && !e->buf_size[1]) fprintf(fp, "    (void)scratch; /* not needed */\n");
    char what[128], shape[48], name[64];
    for (int l = 0; l < e->nlayers; l++) {
        const at_layer_desc *d = at_net_layer(e->net, l);
        const layer_plan *p = &e->plan[l];
        at_net_describe_layer(e->net, l, what, sizeof what);
        shape_text(p->out_c, p->out_h, p->out_w, shape, sizeof shape);
        comment_safe(d->name, name, sizeof name);
        if (p->noop) {
            fprintf(fp, "\n    /* (%s): %s -> %s: %s */\n", name, what, shape,
                    d->kind == AT_LAYER_FLATTEN ? "the data are already in this order"
                                                : "the identity at inference");
            continue;
        }
        fprintf(fp, "\n    /* (%s): %s -> %s */\n    {\n", name, what, shape);
        fprintf(fp, "        const float *x = %s;\n        float *y = %s;\n", loc_name(p->src),
                loc_name(p->dst));
        switch (d->kind) {
        case AT_LAYER_CONV2D: emit_conv(e, d, p, l); break;
        case AT_LAYER_LINEAR: emit_linear(e, p, l); break;
        case AT_LAYER_MAXPOOL2D:
        case AT_LAYER_AVGPOOL2D: emit_pool(e, d, p); break;
        default: emit_elementwise(e, d, p); break;
        }
        fprintf(fp, "    }\n");
    }
    if (e->copy_at_end)
        fprintf(fp, "\n    for (int i = 0; i < %s_OUTPUTS; i++) logits[i] = input[i];\n", U);
    fprintf(fp,
            "\n    {\n"
            "        int best = 0;\n"
            "        for (int k = 1; k < %s_OUTPUTS; k++)\n"
            "            if (logits[k] > logits[best]) best = k;\n"
            "        return best;\n"
            "    }\n"
            "}\n\n",
            U);
    fprintf(fp,
            "#ifndef %s_NO_STATIC_SCRATCH\n"
            "static float %s_scratch[%s_SCRATCH_FLOATS];\n"
            "static float %s_logits[%s_OUTPUTS];\n\n"
            "int %s_predict(const float *input, float *logits)\n{\n"
            "    return %s_forward(input, logits ? logits : %s_logits, %s_scratch);\n"
            "}\n"
            "#endif\n",
            U, P, U, P, U, P, P, P, P);
    return AT_OK;
}

/* ------------------------------------------------------------ output files */

static char *join_path(const char *dir, const char *name, const char *ext) {
    size_t n = strlen(dir) + strlen(name) + strlen(ext) + 2;
    char *p = at_alloc(n, "file name");
    if (p) {
        bool slash = *dir && dir[strlen(dir) - 1] == '/';
        snprintf(p, n, "%s%s%s%s", dir, slash ? "" : "/", name, ext);
    }
    return p;
}

at_status at_export_c(const at_net *net, const char *dir, const char *prefix) {
    if (!net) return at_fail(AT_ERR_ARG, "C export: no network");
    if (!dir || !*dir) return at_fail(AT_ERR_ARG, "C export: no output directory");
    if (!valid_prefix(prefix))
        return at_fail(AT_ERR_ARG,
                       "C export: prefix '%s' is not a C identifier (letters, digits and '_', not "
                       "starting with a digit, at most %d characters)",
                       prefix ? prefix : "(null)", EXPORT_MAX_PREFIX);
    struct stat st;
    if (stat(dir, &st) != 0) {
        if (errno != ENOENT || mkdir(dir, 0777) != 0)
            return at_fail(AT_ERR_IO, "%s: cannot create the directory: %s", dir, strerror(errno));
    } else if (!S_ISDIR(st.st_mode)) {
        return at_fail(AT_ERR_IO, "%s: not a directory", dir);
    }

    exporter e;
    memset(&e, 0, sizeof e);
    e.net = net;
    e.prefix = prefix;
    e.nlayers = at_net_num_layers(net);
    for (size_t i = 0; prefix[i]; i++) e.upper[i] = (char)toupper((unsigned char)prefix[i]);
    e.plan = at_calloc((size_t)e.nlayers, sizeof *e.plan, "export plan");
    if (!e.plan) return AT_ERR_NOMEM;
    at_status s = make_plan(&e);

    char *paths[2] = {NULL, NULL}, *tmps[2] = {NULL, NULL};
    if (s == AT_OK) {
        paths[0] = join_path(dir, prefix, ".h");
        paths[1] = join_path(dir, prefix, ".c");
        if (!paths[0] || !paths[1]) s = AT_ERR_NOMEM;
    }
    /* A target that exists but is not a plain file would fail its rename: refuse before writing
     * anything, so that the pair is never left half replaced for that reason. */
    for (int f = 0; f < 2 && s == AT_OK; f++)
        if (stat(paths[f], &st) == 0 && !S_ISREG(st.st_mode))
            s = at_fail(AT_ERR_IO, "%s: exists and is not a regular file", paths[f]);
    /* Both files are written to temporary names first and renamed only when both are complete. */
    for (int f = 0; f < 2 && s == AT_OK; f++) {
        s = at_temp_open(paths[f], &tmps[f], &e.fp);
        if (s != AT_OK) break;
        if (f == 0)
            write_header(&e);
        else
            s = write_source(&e);
        at_status fs = at_temp_close(paths[f], tmps[f], e.fp);
        if (s == AT_OK) s = fs;
    }
    for (int f = 0; f < 2 && s == AT_OK; f++)
        if (rename(tmps[f], paths[f]) != 0)
            s = at_fail(AT_ERR_IO, "%s: cannot replace it with %s: %s", paths[f], tmps[f],
                        strerror(errno));
        else {
            free(tmps[f]);
            tmps[f] = NULL;
        }
    if (s == AT_OK) at_sync_parent_dir(paths[0]); /* make the renames durable */
    for (int f = 0; f < 2; f++) {
        if (tmps[f]) unlink(tmps[f]);
        free(tmps[f]);
        free(paths[f]);
    }
    free(e.plan);
    return s;
}
