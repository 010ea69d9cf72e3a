/* C export: a network as standalone C99 source for microcontrollers and other places without
 * advtrain (docs/export.md).
 *
 * DIR/PREFIX.h declares the constants and the inference functions; DIR/PREFIX.c holds the
 * parameters as `static const float` arrays (printed with %.9g, so every float round-trips
 * exactly) and one block of plain loops per layer. The generated code allocates nothing and uses
 * no library except <math.h>'s tanhf/expf for Tanh and Sigmoid.
 *
 * The network is a graph: each node reads the node before it or a named earlier one (an Add
 * reads two). The plan, built from the public layer descriptions alone:
 *  - BatchNorm is folded into the Conv2d or Linear it reads when it is that layer's only reader
 *    (the rescaled weights and bias computed in double, rounded once); otherwise it stays a
 *    per-channel scale and shift. Flatten and Dropout compute nothing: they pass their input on.
 *  - Activations live in buffers inside a caller-provided scratch array: a value's buffer is
 *    free again after its last reader, element-wise nodes (activations, Add, BatchNorm) overwrite
 *    an input nothing reads later, and the network's output is written straight into the
 *    caller's logits. A chain gets the two ping-pong buffers it always had. */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include <ctype.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>


/* Where a value lives in the generated forward function: the caller's input or logits, or a
 * scratch buffer (k >= 0: bufk). */
enum { LOC_INPUT = -1, LOC_LOGITS = -2, LOC_NONE = -3 };
#define BUF_FREE (-1)

/* A value is what a node computes: -1 the network's input, l the output of node l. Flatten,
 * Dropout and a folded BatchNorm compute nothing: their value is the one they read. */
typedef struct layer_plan {
    int src[2];    /* the nodes read (at_net_layer_inputs; -1: the input) */
    int nsrc;      /* 2 for Add */
    int in[2];     /* the values read */
    int value;     /* l if the node computes something, else in[0] */
    bool noop;     /* Flatten, Dropout, Dropout2d: nothing to compute at inference */
    int fold_into; /* BatchNorm: the Conv2d/Linear it is folded into (-1: applied itself) */
    int folded_bn; /* Conv2d/Linear: the BatchNorm folded into it (-1: none) */
    int readers;   /* computing nodes that read this node's value, plus one for the output */
    int last_use;  /* the last of them (INT_MAX: the network's output; -1: none) */
    int loc;       /* where the value lives */
    int in_c, in_h, in_w, out_c, out_h, out_w;
    const at_param_info *weight, *bias;     /* BatchNorm: gamma, beta */
    const at_param_info *mean, *var;        /* BatchNorm's running statistics */
} layer_plan;

typedef struct exporter {
    const at_net *net;
    const char *prefix;
    char upper[AT_EXPORT_MAX_PREFIX + 1];
    int nlayers;
    layer_plan *plan;
    int output;          /* the network's output value (-1: the input itself) */
    int nbufs;           /* scratch buffers buf0..bufN-1, laid end to end */
    int *buf_size;       /* floats of each (at most one buffer per node) */
    int *buf_owner;      /* while planning: the value a buffer holds (BUF_FREE: none) */
    int scratch;         /* PREFIX_SCRATCH_FLOATS (at least 1: C has no empty arrays) */
    int nfolded, nunfolded; /* BatchNorm layers folded / applied as scale and shift */
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

static bool is_bn(at_layer_kind k) {
    return k == AT_LAYER_BATCHNORM2D || k == AT_LAYER_BATCHNORM1D;
}

/* Kinds whose output element i depends on input element i alone: they may overwrite their
 * input when nothing reads it later (an unfolded BatchNorm is a per-channel affine map). */
static bool may_work_in_place(at_layer_kind k) {
    return is_elementwise(k) || is_bn(k) || k == AT_LAYER_ADD;
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

/* The layers this exporter writes; anything else is refused up front with a clear message. */
static at_status check_exportable(const at_net *net, int l) {
    const at_layer_desc *d = at_net_layer(net, l);
    switch (d->kind) {
    case AT_LAYER_LINEAR: case AT_LAYER_CONV2D: case AT_LAYER_MAXPOOL2D: case AT_LAYER_AVGPOOL2D:
    case AT_LAYER_RELU: case AT_LAYER_LEAKYRELU: case AT_LAYER_TANH: case AT_LAYER_SIGMOID:
    case AT_LAYER_FLATTEN: case AT_LAYER_DROPOUT: case AT_LAYER_DROPOUT2D:
    case AT_LAYER_BATCHNORM2D: case AT_LAYER_BATCHNORM1D: case AT_LAYER_ADD:
    case AT_LAYER_GLOBALAVGPOOL:
        return AT_OK;
    default: break;
    }
    char what[160];
    at_net_describe_layer(net, l, what, sizeof what);
    return at_fail(AT_ERR_UNSUPPORTED,
                   "C export: layer %d (%s, %s) is not supported: the exporter writes Linear, "
                   "Conv2d, pooling, activations, BatchNorm, Add, Flatten and Dropout",
                   l, d->name, what);
}

/* A buffer of layer l whose name ends in ".suffix" (BatchNorm's running statistics). */
static const at_param_info *layer_buffer(const at_net *net, int l, const char *suffix) {
    const size_t ns = strlen(suffix);
    for (int i = 0; i < at_net_num_buffers(net); i++) {
        const at_param_info *b = at_net_buffer(net, i);
        const size_t n = strlen(b->name);
        if (b->layer == l && n > ns && b->name[n - ns - 1] == '.' &&
            strcmp(b->name + n - ns, suffix) == 0)
            return b;
    }
    return NULL;
}

/* Node l's inputs, shapes and tensors; the largest index the generated code uses. */
static at_status plan_node(exporter *e, int l) {
    const at_net *net = e->net;
    const at_layer_desc *d = at_net_layer(net, l);
    layer_plan *p = &e->plan[l];
    p->fold_into = p->folded_bn = -1;
    p->noop = is_noop(d->kind);
    p->nsrc = at_net_layer_inputs(net, l, p->src); /* resolved by the library, as it runs them */
    if (p->src[0] < 0)
        at_net_in_shape(net, &p->in_c, &p->in_h, &p->in_w);
    else
        at_net_layer_out_shape(net, p->src[0], &p->in_c, &p->in_h, &p->in_w);
    at_net_layer_out_shape(net, l, &p->out_c, &p->out_h, &p->out_w);
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
    if (!is_bn(d->kind)) return AT_OK;
    p->mean = layer_buffer(net, l, "running_mean");
    p->var = layer_buffer(net, l, "running_var");
    if (!p->weight || !p->bias || !p->mean || !p->var)
        return at_fail(AT_ERR_UNSUPPORTED,
                       "C export: BatchNorm layer %d (%s) lacks its weight, bias or running "
                       "statistics (only affine BatchNorm with running statistics is exported)",
                       l, d->name);
    return AT_OK;
}

/* What each node reads and passes on, given the folds decided so far. */
static void link_values(exporter *e) {
    for (int l = 0; l < e->nlayers; l++) {
        layer_plan *p = &e->plan[l];
        for (int k = 0; k < p->nsrc; k++) p->in[k] = p->src[k] < 0 ? -1 : e->plan[p->src[k]].value;
        p->value = p->noop || p->fold_into >= 0 ? p->in[0] : l;
    }
    e->output = e->nlayers > 0 ? e->plan[e->nlayers - 1].value : -1;
}

/* Who reads each value: the computing nodes, and the caller (the network's output). */
static void count_readers(exporter *e) {
    for (int l = 0; l < e->nlayers; l++) {
        e->plan[l].readers = 0;
        e->plan[l].last_use = -1;
    }
    for (int l = 0; l < e->nlayers; l++) {
        const layer_plan *p = &e->plan[l];
        if (p->value != l) continue;
        for (int k = 0; k < p->nsrc; k++) {
            const int v = p->in[k];
            if (v < 0 || (k == 1 && v == p->in[0])) continue; /* x + x reads x once */
            e->plan[v].readers++;
            e->plan[v].last_use = l;
        }
    }
    if (e->output >= 0) {
        e->plan[e->output].readers++;
        e->plan[e->output].last_use = INT_MAX;
    }
}

/* A BatchNorm is folded into the Conv2d or Linear whose value it reads (directly or through
 * Flatten/Dropout) when it is that value's only reader: nothing else ever sees the unnormalised
 * output, so the layer may compute the normalised one. One BatchNorm per producer; the channel
 * counts must match (a BatchNorm1d after flattening a conv's HxW > 1 output does not). */
static void choose_folds(exporter *e) {
    for (int l = 0; l < e->nlayers; l++) {
        layer_plan *p = &e->plan[l];
        if (!is_bn(at_net_layer(e->net, l)->kind) || p->in[0] < 0) continue;
        layer_plan *q = &e->plan[p->in[0]];
        const at_layer_kind k = at_net_layer(e->net, p->in[0])->kind;
        if ((k == AT_LAYER_CONV2D || k == AT_LAYER_LINEAR) && q->readers == 1 && q->folded_bn < 0 &&
            q->weight && q->weight->shape[0] == p->in_c) {
            p->fold_into = p->in[0];
            q->folded_bn = l;
        }
    }
}

/* A free buffer for `need` floats: the smallest free one that holds it, else the largest free
 * one (growing it costs less than a new one), else a new one. */
static int pick_buffer(exporter *e, int need) {
    int fit = -1, largest = -1;
    for (int b = 0; b < e->nbufs; b++) {
        if (e->buf_owner[b] != BUF_FREE) continue;
        if (e->buf_size[b] >= need && (fit < 0 || e->buf_size[b] < e->buf_size[fit])) fit = b;
        if (largest < 0 || e->buf_size[b] > e->buf_size[largest]) largest = b;
    }
    if (fit >= 0) return fit;
    if (largest >= 0) return largest;
    e->buf_size[e->nbufs] = 0;
    return e->nbufs++;
}

static int loc_of(const exporter *e, int value) {
    return value < 0 ? LOC_INPUT : e->plan[value].loc;
}

/* Buffers by liveness, in node order: a value's buffer is free again after its last reader;
 * element-wise nodes overwrite an input that no later node reads; the output value goes
 * straight into the caller's logits. For a chain this is the two ping-pong buffers. */
static void assign_locations(exporter *e) {
    for (int l = 0; l < e->nlayers; l++) {
        layer_plan *p = &e->plan[l];
        if (p->value != l) continue;
        const int size = p->out_c * p->out_h * p->out_w;
        int loc = LOC_NONE;
        if (l == e->output)
            loc = LOC_LOGITS;
        for (int k = 0; k < p->nsrc && loc == LOC_NONE; k++)
            if (may_work_in_place(at_net_layer(e->net, l)->kind) && p->in[k] >= 0 &&
                e->plan[p->in[k]].last_use == l && loc_of(e, p->in[k]) >= 0)
                loc = loc_of(e, p->in[k]);
        if (loc == LOC_NONE) loc = pick_buffer(e, size);
        p->loc = loc;
        if (loc >= 0) {
            e->buf_size[loc] = AT_MAX(e->buf_size[loc], size);
            e->buf_owner[loc] = l;
        }
        /* Inputs read for the last time, and a value nothing reads, free their buffers. */
        for (int k = 0; k < p->nsrc; k++) {
            const int v = p->in[k];
            if (v >= 0 && e->plan[v].last_use == l && loc_of(e, v) >= 0 &&
                e->buf_owner[loc_of(e, v)] == v)
                e->buf_owner[loc_of(e, v)] = BUF_FREE;
        }
        if (p->last_use < l && loc >= 0) e->buf_owner[loc] = BUF_FREE;
    }
}

static at_status make_plan(exporter *e) {
    const int n = e->nlayers;
    for (int l = 0; l < n; l++) {
        at_status s = check_exportable(e->net, l);
        if (s == AT_OK) s = plan_node(e, l);
        if (s != AT_OK) return s;
        const at_layer_kind k = at_net_layer(e->net, l)->kind;
        if (k == AT_LAYER_TANH || k == AT_LAYER_SIGMOID) e->needs_libm = true;
    }
    /* Folding needs each value's readers without folds; the buffers need them with. */
    link_values(e);
    count_readers(e);
    choose_folds(e);
    link_values(e);
    count_readers(e);
    for (int l = 0; l < n; l++)
        if (is_bn(at_net_layer(e->net, l)->kind)) {
            if (e->plan[l].fold_into >= 0)
                e->nfolded++;
            else
                e->nunfolded++;
        }
    for (int b = 0; b < n; b++) e->buf_owner[b] = BUF_FREE;
    assign_locations(e);
    e->copy_at_end = e->output < 0;
    long long total = 0;
    for (int b = 0; b < e->nbufs; b++) total += e->buf_size[b];
    if (total > INT_MAX / 4)
        return at_fail(AT_ERR_UNSUPPORTED, "C export: the scratch (%lld floats) is too large", total);
    e->scratch = AT_MAX(1, (int)total);
    return AT_OK;
}

static void loc_name(int loc, char *buf, size_t cap) {
    if (loc == LOC_INPUT)
        snprintf(buf, cap, "input");
    else if (loc == LOC_LOGITS)
        snprintf(buf, cap, "logits");
    else
        snprintf(buf, cap, "buf%d", loc);
}

/* ------------------------------------------------------------ the header */

static void shape_text(int c, int h, int w, char *buf, size_t cap) {
    snprintf(buf, cap, "%dx%dx%d", c, h, w);
}

/* The name of node `src` for comments: "input" for the network's input. */
static const char *node_name(const exporter *e, int src, char *buf, size_t cap) {
    return src < 0 ? "input" : comment_safe(at_net_layer(e->net, src)->name, buf, cap);
}

/* What a listing line adds to a layer's description where the graph is not a plain chain: the
 * inputs of an Add or of a node that reads a named one, and what became of a BatchNorm. Empty
 * for a chain layer, so that chains list as they always have. */
static void graph_note(const exporter *e, int l, char *buf, size_t cap) {
    const at_layer_desc *d = at_net_layer(e->net, l);
    const layer_plan *p = &e->plan[l];
    char a[64], b[64];
    buf[0] = '\0';
    if (p->nsrc == 2)
        snprintf(buf, cap, ", (%s) + (%s)", node_name(e, p->src[0], a, sizeof a),
                 node_name(e, p->src[1], b, sizeof b));
    else if (d->input[0])
        snprintf(buf, cap, ", reads (%s)", node_name(e, p->src[0], a, sizeof a));
    if (!is_bn(d->kind)) return;
    const size_t used = strlen(buf);
    if (p->fold_into >= 0)
        snprintf(buf + used, cap - used, ", folded into (%s)",
                 node_name(e, p->fold_into, a, sizeof a));
    else
        snprintf(buf + used, cap - used, ", applied as a per-channel scale and shift");
}

static void write_architecture(exporter *e, FILE *fp) {
    char what[128], shape[48], name[64], note[192];
    int c, h, w;
    at_net_in_shape(e->net, &c, &h, &w);
    fprintf(fp, " *   input %dx%dx%d\n", c, h, w);
    for (int l = 0; l < e->nlayers; l++) {
        const at_layer_desc *d = at_net_layer(e->net, l);
        const layer_plan *p = &e->plan[l];
        at_net_describe_layer(e->net, l, what, sizeof what);
        shape_text(p->out_c, p->out_h, p->out_w, shape, sizeof shape);
        graph_note(e, l, note, sizeof note);
        fprintf(fp, " *   (%s): %s -> %s%s\n", comment_safe(d->name, name, sizeof name), what, shape,
                note);
    }
}

/* The BatchNorm layers, folded or not, as comment lines wrapped before 100 columns. */
static void write_bn_summary(exporter *e, FILE *fp, bool folded) {
    if (folded ? !e->nfolded : !e->nunfolded) return;
    fprintf(fp, " *\n%s",
            folded ? " * BatchNorm folded into the Conv2d/Linear before it (weights and bias rescaled\n"
                     " * per output channel, computed in double):"
                   : " * BatchNorm applied as a per-channel scale and shift (its input has other\n"
                     " * readers, or is not a Conv2d/Linear):");
    int col = 100; /* the first item starts a new line */
    char a[64], b[64], item[140];
    bool first = true;
    for (int l = 0; l < e->nlayers; l++) {
        const layer_plan *p = &e->plan[l];
        if (!is_bn(at_net_layer(e->net, l)->kind) || (p->fold_into >= 0) != folded) continue;
        if (folded)
            snprintf(item, sizeof item, "(%s) into (%s)", node_name(e, l, a, sizeof a),
                     node_name(e, p->fold_into, b, sizeof b));
        else
            snprintf(item, sizeof item, "(%s)", node_name(e, l, a, sizeof a));
        if (!first) col += fprintf(fp, ",");
        first = false;
        if (col + 1 + (int)strlen(item) > 96)
        {
            fprintf(fp, "\n *  ");
            col = 4;
        }
        col += fprintf(fp, " %s", item);
    }
    fprintf(fp, ".\n");
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
    write_bn_summary(e, fp, true);
    write_bn_summary(e, fp, false);
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

/* One `static const float` array PREFIX_KINDl under a comment (already comment-safe text);
 * every value printed so that it reads back as exactly the same float. */
static void write_floats(exporter *e, const float *v, size_t n, const char *comment,
                         const char *kind, int l) {
    FILE *fp = e->fp;
    fprintf(fp, "/* %s */\nstatic const float %s_%s%d[%zu] = {", comment, e->prefix, kind, l, n);
    char lit[40];
    for (size_t i = 0; i < n; i++) {
        float_literal(v[i], lit, sizeof lit);
        fprintf(fp, "%s%s", i % 8 == 0 ? "\n    " : " ", lit);
        if (i + 1 < n) fputc(',', fp);
    }
    fprintf(fp, "\n};\n\n");
}

static void tensor_shape(const at_param_info *t, char *shape, size_t cap) {
    size_t used = 0;
    shape[0] = '\0';
    for (int d = 0; d < t->ndim && used < cap; d++)
        used += (size_t)snprintf(shape + used, cap - used, "%s%d", d ? "x" : "", t->shape[d]);
}

static const float *param_values(const exporter *e, const at_param_info *t) {
    return at_net_params((at_net *)e->net) + t->offset;
}

static const float *buffer_values(const exporter *e, const at_param_info *t) {
    return at_net_buffers((at_net *)e->net) + t->offset;
}

static at_status check_finite(const float *v, const at_param_info *t, const char *what) {
    for (size_t i = 0; i < t->size; i++)
        if (!isfinite(v[i]))
            return at_fail(AT_ERR_NAN, "C export: %s '%s' holds a non-finite value (%g at %zu)",
                           what, t->name, (double)v[i], i);
    return AT_OK;
}

/* A parameter tensor as it is, bit for bit. */
static at_status write_array(exporter *e, const at_param_info *t, const char *kind, int l) {
    const float *v = param_values(e, t);
    at_status s = check_finite(v, t, "parameter");
    if (s != AT_OK) return s;
    char shape[64], name[64], comment[160];
    tensor_shape(t, shape, sizeof shape);
    snprintf(comment, sizeof comment, "%s: %s", comment_safe(t->name, name, sizeof name), shape);
    write_floats(e, v, t->size, comment, kind, l);
    return AT_OK;
}

/* BatchNorm b's eval-mode map, y = (x - mean) * s + beta with s = gamma / sqrt(var + eps), as
 * per-channel values in double: s[c], and mean, beta (to fold) or the shift beta - mean * s. */
typedef struct bn_map {
    const float *gamma, *beta, *mean, *var;
    int channels;
} bn_map;

static at_status bn_map_of(const exporter *e, int b, bn_map *m) {
    const layer_plan *p = &e->plan[b];
    m->gamma = param_values(e, p->weight);
    m->beta = param_values(e, p->bias);
    m->mean = buffer_values(e, p->mean);
    m->var = buffer_values(e, p->var);
    m->channels = p->in_c;
    at_status s = check_finite(m->gamma, p->weight, "parameter");
    if (s == AT_OK) s = check_finite(m->beta, p->bias, "parameter");
    if (s == AT_OK) s = check_finite(m->mean, p->mean, "buffer");
    if (s == AT_OK) s = check_finite(m->var, p->var, "buffer");
    return s;
}

static double bn_scale(const bn_map *m, int c) {
    return (double)m->gamma[c] / sqrt((double)m->var[c] + AT_BN_EPS);
}

/* Values derived from finite parameters can still overflow (a variance at -eps). */
static at_status check_derived(const exporter *e, int b, const float *v, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i]))
            return at_fail(AT_ERR_NAN,
                           "C export: BatchNorm layer '%s' gives a non-finite scale or shift (its "
                           "running_var may be -eps or below)",
                           at_net_layer(e->net, b)->name);
    return AT_OK;
}

/* Conv2d/Linear l with its BatchNorm folded in, computed in double and rounded once:
 * W' = W * s per output channel, b' = (b - mean) * s + beta (b = 0 without a bias). */
static at_status write_folded(exporter *e, int l) {
    const layer_plan *p = &e->plan[l];
    const int b = p->folded_bn;
    bn_map m;
    at_status s = check_finite(param_values(e, p->weight), p->weight, "parameter");
    if (s == AT_OK && p->bias) s = check_finite(param_values(e, p->bias), p->bias, "parameter");
    if (s == AT_OK) s = bn_map_of(e, b, &m);
    if (s != AT_OK) return s;
    const int C = m.channels;
    const size_t n = p->weight->size, per = n / (size_t)C;
    float *w = at_alloc(sizeof(float) * (n + (size_t)C), "folded weights");
    if (!w) return AT_ERR_NOMEM;
    const float *W = param_values(e, p->weight), *B = p->bias ? param_values(e, p->bias) : NULL;
    float *bias = w + n;
    for (int o = 0; o < C; o++) {
        const double k = bn_scale(&m, o);
        for (size_t j = 0; j < per; j++) w[o * per + j] = (float)((double)W[o * per + j] * k);
        bias[o] = (float)(((B ? (double)B[o] : 0.0) - (double)m.mean[o]) * k + (double)m.beta[o]);
    }
    s = check_derived(e, b, w, n + (size_t)C);
    if (s == AT_OK) {
        char shape[64], name[64], bn[64], comment[200];
        tensor_shape(p->weight, shape, sizeof shape);
        comment_safe(at_net_layer(e->net, b)->name, bn, sizeof bn);
        snprintf(comment, sizeof comment, "%s with BatchNorm (%s) folded in: %s",
                 comment_safe(p->weight->name, name, sizeof name), bn, shape);
        write_floats(e, w, n, comment, "w", l);
        if (p->bias)
            snprintf(comment, sizeof comment, "%s with BatchNorm (%s) folded in: %d",
                     comment_safe(p->bias->name, name, sizeof name), bn, C);
        else
            snprintf(comment, sizeof comment, "bias from BatchNorm (%s) (the layer has none): %d",
                     bn, C);
        write_floats(e, bias, (size_t)C, comment, "b", l);
    }
    free(w);
    return s;
}

/* A BatchNorm that stays a layer: y = x * scale + shift per channel, scale = s and
 * shift = beta - mean * s, computed in double. */
static at_status write_affine(exporter *e, int l) {
    bn_map m;
    at_status s = bn_map_of(e, l, &m);
    if (s != AT_OK) return s;
    const int C = m.channels;
    float *v = at_alloc(sizeof(float) * 2 * (size_t)C, "BatchNorm scale and shift");
    if (!v) return AT_ERR_NOMEM;
    for (int c = 0; c < C; c++) {
        const double k = bn_scale(&m, c);
        v[c] = (float)k;
        v[C + c] = (float)((double)m.beta[c] - (double)m.mean[c] * k);
    }
    s = check_derived(e, l, v, 2 * (size_t)C);
    if (s == AT_OK) {
        char name[64], comment[160];
        comment_safe(at_net_layer(e->net, l)->name, name, sizeof name);
        snprintf(comment, sizeof comment, "BatchNorm (%s): weight / sqrt(running_var + eps): %d",
                 name, C);
        write_floats(e, v, (size_t)C, comment, "scale", l);
        snprintf(comment, sizeof comment, "BatchNorm (%s): bias - running_mean * scale: %d", name, C);
        write_floats(e, v + C, (size_t)C, comment, "shift", l);
    }
    free(v);
    return s;
}

/* The arrays of node l, if it computes with any. */
static at_status write_node_arrays(exporter *e, int l) {
    const layer_plan *p = &e->plan[l];
    if (p->value != l) return AT_OK; /* folded BatchNorm, Flatten, Dropout */
    if (is_bn(at_net_layer(e->net, l)->kind)) return write_affine(e, l);
    if (p->folded_bn >= 0) return write_folded(e, l);
    at_status s = AT_OK;
    if (p->weight) s = write_array(e, p->weight, "w", l);
    if (s == AT_OK && p->bias) s = write_array(e, p->bias, "b", l);
    return s;
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

/* Conv2d as plain loops. A grouped conv reads the in/groups input channels of its output
 * channel's group; with one input channel per output channel (depthwise) there is no channel
 * loop. A conv without a bias (and no BatchNorm folded into it) adds nothing to its sums. */
static void emit_conv(exporter *e, const at_layer_desc *d, const layer_plan *p, int l) {
    FILE *fp = e->fp;
    const char *P = e->prefix;
    const int K = d->kernel, S = d->stride, Pd = d->pad;
    const int G = AT_MAX(1, d->groups), CPG = p->in_c / G, OPG = p->out_c / G;
    char chan[64], widx[96], xidx[128], bias[64] = "";
    if (G == 1)
        snprintf(chan, sizeof chan, "i");
    else if (CPG == 1)
        snprintf(chan, sizeof chan, OPG == 1 ? "o" : "(o / %d)", OPG);
    else if (OPG == 1)
        snprintf(chan, sizeof chan, "(o * %d + i)", CPG);
    else
        snprintf(chan, sizeof chan, "(o / %d * %d + i)", OPG, CPG);
    if (G > 1 && CPG == 1)
        snprintf(widx, sizeof widx, "(o * %d + ki) * %d + kj", K, K);
    else
        snprintf(widx, sizeof widx, "((o * %d + i) * %d + ki) * %d + kj", CPG, K, K);
    snprintf(xidx, sizeof xidx, "(%s * %d + ih) * %d + iw", chan, p->in_h, p->in_w);
    if (p->bias || p->folded_bn >= 0) snprintf(bias, sizeof bias, " + %s_b%d[o]", P, l);
    fprintf(fp,
            "        for (int o = 0; o < %d; o++)\n"
            "            for (int oh = 0; oh < %d; oh++)\n"
            "                for (int ow = 0; ow < %d; ow++) {\n"
            "                    float acc = 0.0f;\n",
            p->out_c, p->out_h, p->out_w);
    if (G == 1 || CPG > 1) fprintf(fp, "                    for (int i = 0; i < %d; i++)\n", CPG);
    fprintf(fp, "                        for (int ki = 0; ki < %d; ki++) {\n", K);
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
            "                                acc += %s_w%d[%s] *\n"
            "                                       x[%s];\n"
            "                            }\n"
            "                        }\n"
            "                    y[(o * %d + oh) * %d + ow] = acc%s;\n"
            "                }\n",
            P, l, widx, xidx, p->out_h, p->out_w, bias);
}

static void emit_linear(exporter *e, const layer_plan *p, int l) {
    const int in = p->in_c * p->in_h * p->in_w;
    char bias[64] = "";
    if (p->bias || p->folded_bn >= 0) snprintf(bias, sizeof bias, " + %s_b%d[o]", e->prefix, l);
    fprintf(e->fp,
            "        for (int o = 0; o < %d; o++) {\n"
            "            const float *w = %s_w%d + o * %d; /* row o of the (%d, %d) weight */\n"
            "            float acc = 0.0f;\n"
            "            for (int i = 0; i < %d; i++) acc += w[i] * x[i];\n"
            "            y[o] = acc%s;\n"
            "        }\n",
            p->out_c, e->prefix, l, in, p->out_c, in, in, bias);
}

/* nn.AdaptiveAvgPool2d(1): each channel's mean (the library sums in double; a float sum over
 * a feature map of a few thousand values agrees to about 1e-6 relative). */
static void emit_global_pool(exporter *e, const layer_plan *p) {
    const int area = p->in_h * p->in_w;
    char div[40];
    float_literal((float)area, div, sizeof div);
    fprintf(e->fp,
            "        for (int c = 0; c < %d; c++) {\n"
            "            float sum = 0.0f;\n"
            "            for (int i = 0; i < %d; i++) sum += x[c * %d + i];\n"
            "            y[c] = sum / %s;\n"
            "        }\n",
            p->out_c, area, area, div);
}

static void emit_add(exporter *e, const layer_plan *p, bool in_place) {
    fprintf(e->fp, "        for (int i = 0; i < %d; i++) y[i] = x[i] + x2[i];%s\n",
            p->out_c * p->out_h * p->out_w, in_place ? " /* in place */" : "");
}

/* A BatchNorm that could not be folded: its precomputed per-channel scale and shift. */
static void emit_affine(exporter *e, const layer_plan *p, int l, bool in_place) {
    const int area = p->out_h * p->out_w;
    fprintf(e->fp,
            "        for (int c = 0; c < %d; c++)\n"
            "            for (int i = 0; i < %d; i++)\n"
            "                y[c * %d + i] = x[c * %d + i] * %s_scale%d[c] + %s_shift%d[c];%s\n",
            p->out_c, area, area, area, e->prefix, l, e->prefix, l,
            in_place ? " /* in place */" : "");
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

static void emit_elementwise(exporter *e, const at_layer_desc *d, const layer_plan *p,
                             bool in_place) {
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
            in_place ? " /* in place */" : "");
}

/* Node l's block in the forward function: a comment with its PyTorch description, and for a
 * node that computes, its loops between the buffers the plan gave its inputs and output. */
static void emit_node(exporter *e, int l) {
    FILE *fp = e->fp;
    const at_layer_desc *d = at_net_layer(e->net, l);
    const layer_plan *p = &e->plan[l];
    char what[128], shape[48], name[64], note[192], x[24], x2[24], y[24];
    at_net_describe_layer(e->net, l, what, sizeof what);
    shape_text(p->out_c, p->out_h, p->out_w, shape, sizeof shape);
    comment_safe(d->name, name, sizeof name);
    graph_note(e, l, note, sizeof note);
    if (p->noop) {
        fprintf(fp, "\n    /* (%s): %s -> %s%s: %s */\n", name, what, shape, note,
                d->kind == AT_LAYER_FLATTEN ? "the data are already in this order"
                                            : "the identity at inference");
        return;
    }
    fprintf(fp, "\n    /* (%s): %s -> %s%s */\n", name, what, shape, note);
    if (p->value != l) return; /* a folded BatchNorm: its layer computes it */
    loc_name(loc_of(e, p->in[0]), x, sizeof x);
    loc_name(p->loc, y, sizeof y);
    fprintf(fp, "    {\n        const float *x = %s;\n", x);
    if (p->nsrc == 2) {
        loc_name(loc_of(e, p->in[1]), x2, sizeof x2);
        fprintf(fp, "        const float *x2 = %s;\n", x2);
    }
    fprintf(fp, "        float *y = %s;\n", y);
    bool in_place = false;
    for (int k = 0; k < p->nsrc; k++) in_place |= loc_of(e, p->in[k]) == p->loc;
    switch (d->kind) {
    case AT_LAYER_CONV2D: emit_conv(e, d, p, l); break;
    case AT_LAYER_LINEAR: emit_linear(e, p, l); break;
    case AT_LAYER_MAXPOOL2D:
    case AT_LAYER_AVGPOOL2D: emit_pool(e, d, p); break;
    case AT_LAYER_GLOBALAVGPOOL: emit_global_pool(e, p); break;
    case AT_LAYER_ADD: emit_add(e, p, in_place); break;
    case AT_LAYER_BATCHNORM2D:
    case AT_LAYER_BATCHNORM1D: emit_affine(e, p, l, in_place); break;
    default: emit_elementwise(e, d, p, in_place); break;
    }
    fprintf(fp, "    }\n");
}

/* The scratch buffers, end to end. */
static void emit_buffers(exporter *e) {
    int offset = 0;
    for (int b = 0; b < e->nbufs; b++) {
        if (b == 0)
            fprintf(e->fp, "    float *const buf0 = scratch; /* %d floats */\n", e->buf_size[0]);
        else
            fprintf(e->fp, "    float *const buf%d = scratch + %d; /* %d floats */\n", b, offset,
                    e->buf_size[b]);
        offset += e->buf_size[b];
    }
    if (e->nbufs == 0) fprintf(e->fp, "    (void)scratch; /* not needed */\n");
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
        at_status s = write_node_arrays(e, l);
        if (s != AT_OK) return s;
    }
    fprintf(fp, "int %s_forward(const float *input, float *logits, float *scratch)\n{\n", P);
    emit_buffers(e);
    for (int l = 0; l < e->nlayers; l++) emit_node(e, l);
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

/* The two files: the header (file 0), then the source. */
static at_status write_file(FILE *fp, int file, void *user) {
    exporter *e = user;
    e->fp = fp;
    if (file == 0) {
        write_header(e);
        return AT_OK;
    }
    return write_source(e);
}

at_status at_export_c(const at_net *net, const char *dir, const char *prefix) {
    if (!net) return at_fail(AT_ERR_ARG, "C export: no network");
    at_status bad = at_export_check(dir, prefix);
    if (bad != AT_OK) return bad;
    exporter e;
    memset(&e, 0, sizeof e);
    e.net = net;
    e.prefix = prefix;
    e.nlayers = at_net_num_layers(net);
    for (size_t i = 0; prefix[i]; i++) e.upper[i] = (char)toupper((unsigned char)prefix[i]);
    const size_t slots = (size_t)AT_MAX(1, e.nlayers);
    e.plan = at_calloc(slots, sizeof *e.plan, "export plan");
    e.buf_size = at_calloc(slots, sizeof *e.buf_size, "export plan");
    e.buf_owner = at_calloc(slots, sizeof *e.buf_owner, "export plan");
    at_status s = e.plan && e.buf_size && e.buf_owner ? make_plan(&e) : AT_ERR_NOMEM;
    const char *const suffixes[2] = {".h", ".c"};
    if (s == AT_OK) s = at_export_files(dir, prefix, suffixes, 2, write_file, &e);
    free(e.plan);
    free(e.buf_size);
    free(e.buf_owner);
    return s;
}
