/* int8 model files: safetensors with metadata advtrain.format = "int8" beside the float model's
 * advtrain.arch and advtrain.input, and the bits the kernels run:
 *   quant.input.scale (F32 [1]), quant.input.zero_point (I32 [1]), and the same for every tensor
 *     with parameters of its own, as quant.L.scale / quant.L.zero_point (L: the layer's index);
 *     pooling, ReLU, Dropout and Flatten outputs keep their input's and are not stored;
 *   per Conv2d, Linear (a folded BatchNorm included) and applied BatchNorm, under the module's
 *     name: NAME.weight (I8, the float weight's shape; [C] for a BatchNorm), NAME.bias,
 *     NAME.multiplier and NAME.shift (I32, one per output channel).
 * Reading checks every value against what the kernels assume and names the tensor otherwise. */
#include "quant/quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_ENTRIES_PER_NODE = 4 };

typedef struct writer {
    at_st_entry *e;
    int n;
    char (*names)[96];
    int32_t *zps;
    float *scales;
} writer;

static void put_params(writer *w, const char *what, qparams p) {
    const int k = w->n / 2; /* scales and zero points come in pairs, first */
    w->scales[k] = p.scale;
    w->zps[k] = p.zp;
    snprintf(w->names[w->n], sizeof w->names[0], "quant.%s.scale", what);
    w->e[w->n] = (at_st_entry){.name = w->names[w->n], .ndim = 1, .shape = {1}, .data = &w->scales[k]};
    w->n++;
    snprintf(w->names[w->n], sizeof w->names[0], "quant.%s.zero_point", what);
    w->e[w->n] = (at_st_entry){.name = w->names[w->n], .ndim = 1, .shape = {1}, .ints = &w->zps[k]};
    w->n++;
}

static void put_ints(writer *w, const char *module, const char *suffix, const int32_t *v, int ndim,
                     const int64_t *shape, bool int8) {
    snprintf(w->names[w->n], sizeof w->names[0], "%s.%s", module, suffix);
    at_st_entry *e = &w->e[w->n++];
    *e = (at_st_entry){.name = w->names[w->n - 1], .ndim = ndim, .ints = v, .int8 = int8};
    memcpy(e->shape, shape, sizeof(int64_t) * (size_t)ndim);
}

/* The module whose parameters a weighted node holds: the BatchNorm's when applied on its own. */
static const at_layer *module_of(const at_qnet *q, const qnode *n) {
    return q_is_bn(n->kind) ? &q->net->layers[n->layer] : n->op;
}

static bool weighted(const qnode *n) { return n->nout > 0; }

/* A weighted node's four tensors; w32 holds its int8 weights widened (the writer takes int32). */
static void put_node(writer *w, const at_qnet *q, const qnode *n, int32_t *w32) {
    const at_layer *M = module_of(q, n);
    for (size_t i = 0; i < n->nweights; i++) w32[i] = n->w[i];
    int64_t shape[4] = {n->nout};
    int ndim = 1;
    if (M == n->op) {
        ndim = n->op->w_ndim;
        for (int d = 0; d < ndim; d++) shape[d] = n->op->w_shape[d];
    }
    put_ints(w, M->d.name, "weight", w32, ndim, shape, true);
    const int64_t per[1] = {n->nout};
    put_ints(w, M->d.name, "bias", n->bias, 1, per, false);
    put_ints(w, M->d.name, "multiplier", n->mult, 1, per, false);
    put_ints(w, M->d.name, "shift", n->shift, 1, per, false);
}

at_status at_qnet_save(const at_qnet *q, const char *path, const at_st_meta *meta, int nmeta) {
    const at_net *net = q->net;
    const int T = net->nlayers + 1, cap = 2 * T + MAX_ENTRIES_PER_NODE * q->nnodes;
    size_t wcount = 0;
    for (int k = 0; k < q->nnodes; k++) wcount += q->nodes[k].nweights;
    writer w = {calloc((size_t)cap, sizeof(at_st_entry)), 0, calloc((size_t)cap, sizeof *w.names),
                calloc((size_t)T, sizeof(int32_t)), calloc((size_t)T, sizeof(float))};
    int32_t *w32 = malloc(sizeof(int32_t) * (wcount + 1)), *at = w32;
    at_st_meta *all = calloc((size_t)nmeta + 3, sizeof *all);
    char input[64];
    at_status s = w.e && w.names && w.zps && w.scales && w32 && all ? AT_OK : at_fail(AT_ERR_NOMEM, "out of memory writing %s", path);
    if (s == AT_OK) {
        put_params(&w, "input", q->tq[0]);
        for (int l = 0; l < net->nlayers; l++) {
            if (q_keeps_input_params(net, l) || q_folded_away(net, l)) continue;
            char what[16];
            snprintf(what, sizeof what, "%d", l);
            put_params(&w, what, q->tq[l + 1]);
        }
        for (int k = 0; k < q->nnodes; k++)
            if (weighted(&q->nodes[k])) {
                put_node(&w, q, &q->nodes[k], at);
                at += q->nodes[k].nweights;
            }
        snprintf(input, sizeof input, "%d,%d,%d", net->in_c, net->in_h, net->in_w);
        all[0] = (at_st_meta){"advtrain.format", "int8"};
        all[1] = (at_st_meta){"advtrain.arch", (char *)at_net_spec(net)};
        all[2] = (at_st_meta){"advtrain.input", input};
        for (int i = 0; i < nmeta; i++) all[3 + i] = meta[i];
        s = at_st_write(path, w.e, w.n, all, nmeta + 3);
    }
    free(w.e);
    free(w.names);
    free(w.zps);
    free(w.scales);
    free(w32);
    free(all);
    return s;
}

/* ------------------------------------------------------------ reading */

/* Tensor name of f: dtype and count as expected, every value in [lo, hi]. */
static at_status get_ints(const at_st_file *f, const char *path, const char *name, at_st_dtype dtype,
                          size_t count, int64_t lo, int64_t hi, const int32_t **out) {
    const at_st_tensor *t = at_st_find(f, name);
    if (!t) return at_fail(AT_ERR_FORMAT, "%s: no tensor '%s' (an int8 model needs it)", path, name);
    if (t->dtype != dtype || t->count != count)
        return at_fail(AT_ERR_FORMAT, "%s: tensor '%s' should hold %zu %s values, it holds %zu of another kind or count",
                       path, name, count, dtype == AT_ST_I8 ? "I8" : "I32", t->count);
    for (size_t i = 0; i < count; i++)
        if (t->ints[i] < lo || t->ints[i] > hi)
            return at_fail(AT_ERR_FORMAT, "%s: tensor '%s' holds %d at index %zu, outside [%lld, %lld]", path, name,
                           (int)t->ints[i], i, (long long)lo, (long long)hi);
    *out = t->ints;
    return AT_OK;
}

static at_status get_params(const at_st_file *f, const char *path, const char *what, qparams *p) {
    char name[96];
    snprintf(name, sizeof name, "quant.%s.scale", what);
    const at_st_tensor *t = at_st_find(f, name);
    if (!t || t->dtype != AT_ST_F32 || t->count != 1 || !(t->data[0] > 0.0f) || !isfinite(t->data[0]))
        return at_fail(AT_ERR_FORMAT, "%s: tensor '%s' is missing or not one positive finite F32 scale", path, name);
    p->scale = t->data[0];
    const int32_t *zp = NULL;
    snprintf(name, sizeof name, "quant.%s.zero_point", what);
    at_status s = get_ints(f, path, name, AT_ST_I32, 1, -128, 127, &zp);
    if (s == AT_OK) p->zp = zp[0];
    return s;
}

static at_status get_node(const at_st_file *f, const char *path, const at_qnet *q, qnode *n) {
    const at_layer *M = module_of(q, n);
    const size_t count = n->nweights, nout = (size_t)n->nout;
    const int32_t *w = NULL, *b = NULL, *m = NULL, *sh = NULL;
    char name[96];
    snprintf(name, sizeof name, "%s.weight", M->d.name);
    at_status s = get_ints(f, path, name, AT_ST_I8, count, -128, 127, &w);
    snprintf(name, sizeof name, "%s.bias", M->d.name);
    if (s == AT_OK) s = get_ints(f, path, name, AT_ST_I32, nout, INT32_MIN, INT32_MAX, &b);
    snprintf(name, sizeof name, "%s.multiplier", M->d.name);
    if (s == AT_OK) s = get_ints(f, path, name, AT_ST_I32, nout, 0, INT32_MAX, &m);
    snprintf(name, sizeof name, "%s.shift", M->d.name);
    if (s == AT_OK) s = get_ints(f, path, name, AT_ST_I32, nout, -31, 30, &sh);
    if (s != AT_OK) return s;
    for (size_t i = 0; i < count; i++) n->w[i] = (int8_t)w[i];
    memcpy(n->bias, b, sizeof(int32_t) * nout);
    memcpy(n->mult, m, sizeof(int32_t) * nout);
    for (size_t i = 0; i < nout; i++) n->shift[i] = sh[i];
    int c;
    if (!q_widen(n)) return AT_ERR_NOMEM;
    if (!q_sums_fit(n, &c))
        return at_fail(AT_ERR_FORMAT, "%s: tensors '%s.weight' and '%s.bias': output channel %d's int32 sums could "
                                      "overflow (|bias| + 255 * sum |w| > 2^31 - 1)",
                       path, M->d.name, M->d.name, c);
    return AT_OK;
}

/* Every tensor's parameters, then every node from them and its stored values. */
static at_status read_qnet(const at_st_file *f, const char *path, at_qnet *q) {
    const at_net *net = q->net;
    at_status s = get_params(f, path, "input", &q->tq[0]);
    for (int l = 0; s == AT_OK && l < net->nlayers; l++) {
        if (q_keeps_input_params(net, l) || q_folded_away(net, l)) continue;
        char what[16];
        snprintf(what, sizeof what, "%d", l);
        s = get_params(f, path, what, &q->tq[l + 1]);
    }
    if (s != AT_OK) return s;
    q_inherit_params(q);
    if ((s = q_shape_nodes(q)) != AT_OK) return s;
    for (int k = 0; s == AT_OK && k < q->nnodes; k++)
        if (weighted(&q->nodes[k])) s = get_node(f, path, q, &q->nodes[k]);
    return s;
}

at_status at_qnet_load(at_qnet **out, const char *path, at_st_file **meta) {
    *out = NULL;
    if (meta) *meta = NULL;
    at_st_file *f;
    at_net *net;
    at_qnet *q = NULL;
    at_status s = at_model_open(path, true, &f, &net);
    if (s != AT_OK) return s;
    if ((s = q_alloc(&q, net)) != AT_OK) at_net_free(net);
    if (s == AT_OK) {
        q->owns_net = true;
        s = read_qnet(f, path, q);
    }
    if (s != AT_OK) {
        at_qnet_free(q);
        at_st_free(f);
        return s;
    }
    *out = q;
    if (meta) *meta = f;
    else at_st_free(f);
    return AT_OK;
}

const at_net *at_qnet_net(const at_qnet *q) { return q->net; }
