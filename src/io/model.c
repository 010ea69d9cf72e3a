/* Model files: the network's parameters under PyTorch's state_dict names in a safetensors file,
 * with the architecture in the metadata so that a model file is all `advtrain eval` needs. */
#include "internal.h"
#include "quant/qat.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

at_status at_model_save(const at_net *net, const char *path, const at_st_meta *extra, int nextra) {
    return at_model_save_with(net, path, extra, nextra, NULL, 0);
}

/* A state_dict entry for a parameter or buffer view into `base`. */
static at_st_entry entry_of(const at_param_info *t, const float *base) {
    at_st_entry e = {t->name, t->ndim, {0}, base + t->offset, t->is_integer};
    for (int d = 0; d < t->ndim; d++) e.shape[d] = t->shape[d];
    return e;
}

/* The index of the first value of v[0..n) that is infinite or NaN, n if none. */
static size_t first_non_finite(const float *v, size_t n) {
    size_t j = 0;
    while (j < n && isfinite(v[j])) j++;
    return j;
}

/* AT_ERR_NAN naming the first parameter or buffer that is not finite: a diverged run's weights
 * are never written over a good file. */
static at_status check_finite(const at_net *net, const char *path) {
    for (int i = 0; i < at_net_num_tensors(net) + at_net_num_buffers(net); i++) {
        const bool param = i < at_net_num_tensors(net);
        const at_param_info *t = param ? at_net_tensor(net, i) : at_net_buffer(net, i - at_net_num_tensors(net));
        const float *v = (param ? at_net_params((at_net *)net) : at_net_buffers((at_net *)net)) + t->offset;
        const size_t j = first_non_finite(v, t->size);
        if (j < t->size)
            return at_fail(AT_ERR_NAN, "%s not written: %s holds %g at index %zu, the weights are not "
                                       "finite (training diverged: try a smaller learning rate); a "
                                       "previous %s is kept",
                           path, t->name, (double)v[j], j, path);
    }
    return AT_OK;
}

at_status at_model_save_with(const at_net *net, const char *path, const at_st_meta *extra, int nextra,
                             const at_st_entry *tensors, int ntensors) {
    const int np = at_net_num_tensors(net), nb = at_net_num_buffers(net), nt = np + nb;
    at_status s = check_finite(net, path);
    char *qat = NULL; /* QAT's activation ranges, for at_quantize (and a resumed run) to find */
    if (s == AT_OK) s = qat_ranges_text(net, &qat);
    if (s != AT_OK) return s;
    at_st_entry *entries = at_calloc((size_t)(nt + ntensors), sizeof *entries, "tensor list");
    at_st_meta *meta = at_calloc((size_t)nextra + 5, sizeof *meta, "metadata");
    if (!entries || !meta) {
        free(entries);
        free(meta);
        free(qat);
        return AT_ERR_NOMEM;
    }
    /* Parameters, then buffers (BatchNorm's running statistics), as a PyTorch state_dict holds. */
    for (int i = 0; i < np; i++) entries[i] = entry_of(at_net_tensor(net, i), at_net_params((at_net *)net));
    for (int i = 0; i < nb; i++)
        entries[np + i] = entry_of(at_net_buffer(net, i), at_net_buffers((at_net *)net));
    int c, h, w;
    char input[64];
    at_net_in_shape(net, &c, &h, &w);
    snprintf(input, sizeof input, "%d,%d,%d", c, h, w);
    int nm = 0;
    meta[nm++] = (at_st_meta){"format", "pt"}; /* the safetensors convention for PyTorch */
    meta[nm++] = (at_st_meta){"advtrain.version", AT_VERSION};
    meta[nm++] = (at_st_meta){"advtrain.arch", (char *)at_net_spec(net)};
    meta[nm++] = (at_st_meta){"advtrain.input", input};
    if (qat) meta[nm++] = (at_st_meta){"advtrain.qat", qat};
    for (int i = 0; i < nextra; i++) meta[nm++] = extra[i];
    for (int i = 0; i < ntensors; i++) entries[nt + i] = tensors[i];
    s = at_st_write(path, entries, nt + ntensors, meta, nm);
    free(qat);
    free(entries);
    free(meta);
    return s;
}

static void shape_text(char *buf, size_t cap, const int64_t *shape, int ndim) {
    int used = 0;
    if (ndim == 0) snprintf(buf, cap, "scalar");
    for (int d = 0; d < ndim && used < (int)cap - 24; d++)
        used += snprintf(buf + used, cap - (size_t)used, "%s%lld", d ? "x" : "", (long long)shape[d]);
}

/* Copies one tensor of the file into the view t of `base`, checking it is there with t's shape. */
static at_status load_view(const at_st_file *f, const char *path, const at_param_info *t,
                           float *base, int count) {
    const at_st_tensor *st = at_st_find(f, t->name);
    if (!st)
        return at_fail(AT_ERR_FORMAT, "%s: no tensor '%s' (the model needs %d tensors%s)", path,
                       t->name, count, t->is_integer ? ", BatchNorm's buffers included" : "");
    bool same = st->ndim == t->ndim;
    for (int d = 0; same && d < t->ndim; d++) same = st->shape[d] == t->shape[d];
    /* PyTorch writes num_batches_tracked as a 0-dimensional tensor; accept a [1] one too. */
    if (t->ndim == 0 && st->count == 1 && st->ndim <= 1) same = true;
    if (!same) {
        char want[64], got[64];
        int64_t ws[4];
        for (int d = 0; d < t->ndim; d++) ws[d] = t->shape[d];
        shape_text(want, sizeof want, ws, t->ndim);
        shape_text(got, sizeof got, st->shape, st->ndim);
        return at_fail(AT_ERR_SHAPE, "%s: tensor '%s' has shape %s, the model needs %s", path,
                       t->name, got, want);
    }
    if (!st->data) /* I8 or I32: an int8 model's weights */
        return at_fail(AT_ERR_FORMAT, "%s: tensor '%s' is %s, not a float tensor (an int8 model: give it to the "
                                      "commands that read int8 files)",
                       path, t->name, st->dtype == AT_ST_I8 ? "I8" : "I32");
    memcpy(base + t->offset, st->data, sizeof(float) * t->size);
    /* A diverged run's weights would only give NaN logits: refuse them here, where the tensor
     * can be named, rather than report a meaningless accuracy. */
    const size_t j = first_non_finite(base + t->offset, t->size);
    if (j < t->size)
        return at_fail(AT_ERR_NAN, "%s: tensor '%s' holds %g at index %zu: the model's weights are "
                                   "not finite (a diverged training run?)",
                       path, t->name, (double)base[t->offset + j], j);
    return AT_OK;
}

at_status at_net_load_weights(at_net *net, const at_st_file *f, const char *path) {
    const int np = at_net_num_tensors(net), nb = at_net_num_buffers(net);
    at_status s = AT_OK;
    for (int i = 0; s == AT_OK && i < np; i++)
        s = load_view(f, path, at_net_tensor(net, i), at_net_params(net), np + nb);
    for (int i = 0; s == AT_OK && i < nb; i++)
        s = load_view(f, path, at_net_buffer(net, i), at_net_buffers(net), np + nb);
    const char *qat = at_st_meta_get(f, "advtrain.qat");
    if (s == AT_OK && qat) s = qat_ranges_parse(net, qat, path);
    return s;
}

/* One positive decimal of "C,H,W" up to max, followed by `sep`; NULL if not. strtol, not
 * sscanf's %d, whose result is undefined for a number beyond int. */
static const char *parse_dim(const char *s, long max, char sep, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || errno || v <= 0 || v > max || *end != sep) return NULL;
    *out = (int)v;
    return end + (sep != '\0');
}

/* Parses "C,H,W". */
static bool parse_input_shape(const char *s, int *c, int *h, int *w) {
    return s && (s = parse_dim(s, 4096, ',', c)) && (s = parse_dim(s, 65536, ',', h)) &&
           parse_dim(s, 65536, '\0', w);
}

/* The float network (parameters zero) that f's advtrain.arch and advtrain.input describe, bounded
 * by the file's values. */
static at_status net_of(const at_st_file *f, const char *path, at_net **out) {
    *out = NULL;
    const char *arch = at_st_meta_get(f, "advtrain.arch");
    const char *input = at_st_meta_get(f, "advtrain.input");
    int c, h, w;
    if (!arch || !input)
        return at_fail(AT_ERR_FORMAT,
                       "%s: no advtrain.arch/advtrain.input metadata, so the architecture is "
                       "unknown (a file written by PyTorch needs --model and --data to say it)",
                       path);
    if (!parse_input_shape(input, &c, &h, &w))
        return at_fail(AT_ERR_FORMAT, "%s: advtrain.input metadata '%s' is not 'C,H,W'", path, input);
    /* Every parameter and buffer must be in the file: a network far larger than the file's
     * values fails here, before its parameters are allocated (a 100-byte file could ask for
     * gigabytes). The slack of 2^24 values leaves a network that is merely not this file's
     * to the tensor-by-tensor check, which names the first tensor that differs. */
    size_t values = 0;
    for (int i = 0; i < f->ntensors; i++) values += f->tensors[i].count;
    at_status s = at_net_from_spec_bounded(out, arch, c, h, w, values + ((size_t)1 << 24));
    if (s != AT_OK) {
        char why[512], held[64] = "";
        snprintf(why, sizeof why, "%s", at_error_message());
        if (s == AT_ERR_FORMAT) /* the bound */
            snprintf(held, sizeof held, " (the file holds %zu values)", values);
        s = at_fail(s, "%s: architecture '%s' in the metadata: %s%s", path, arch, why, held);
    }
    return s;
}

at_status at_model_open(const char *path, bool int8, at_st_file **f, at_net **net) {
    *net = NULL;
    at_status s = at_st_read(path, f);
    if (s != AT_OK) return s;
    const char *format = at_st_meta_get(*f, "advtrain.format");
    const bool is_int8 = format && strcmp(format, "int8") == 0;
    if (is_int8 && !int8)
        s = at_fail(AT_ERR_FORMAT, "%s: an int8 model (written by advtrain quantize), not a float one: "
                                   "use it where int8 models are taken (eval)", path);
    else if (!is_int8 && int8)
        s = at_fail(AT_ERR_FORMAT, "%s: not an int8 model (no advtrain.format = int8: advtrain quantize writes one)",
                    path);
    if (s == AT_OK) s = net_of(*f, path, net);
    if (s != AT_OK) {
        at_st_free(*f);
        *f = NULL;
    }
    return s;
}

at_status at_model_load(at_net **out, const char *path, at_st_file **meta) {
    if (meta) *meta = NULL;
    at_st_file *f;
    at_status s = at_model_open(path, false, &f, out);
    if (s != AT_OK) return s;
    if ((s = at_net_load_weights(*out, f, path)) != AT_OK) {
        at_net_free(*out);
        *out = NULL;
        at_st_free(f);
        return s;
    }
    if (meta)
        *meta = f;
    else
        at_st_free(f);
    return AT_OK;
}
