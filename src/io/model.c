/* Model files: the network's parameters under PyTorch's state_dict names in a safetensors file,
 * with the architecture in the metadata so that a model file is all `advtrain eval` needs. */
#include "internal.h"

#include <stdio.h>
#include <string.h>

at_status at_model_save(const at_net *net, const char *path, const at_st_meta *extra, int nextra) {
    return at_model_save_with(net, path, extra, nextra, NULL, 0);
}

at_status at_model_save_with(const at_net *net, const char *path, const at_st_meta *extra, int nextra,
                             const at_st_entry *tensors, int ntensors) {
    int nt = at_net_num_tensors(net);
    at_st_entry *entries = at_calloc((size_t)(nt + ntensors), sizeof *entries, "tensor list");
    at_st_meta *meta = at_calloc((size_t)nextra + 4, sizeof *meta, "metadata");
    if (!entries || !meta) {
        free(entries);
        free(meta);
        return AT_ERR_NOMEM;
    }
    const float *params = at_net_params((at_net *)net);
    for (int i = 0; i < nt; i++) {
        const at_param_info *t = at_net_tensor(net, i);
        entries[i].name = t->name;
        entries[i].ndim = t->ndim;
        for (int d = 0; d < t->ndim; d++) entries[i].shape[d] = t->shape[d];
        entries[i].data = params + t->offset;
    }
    int c, h, w;
    char input[64];
    at_net_in_shape(net, &c, &h, &w);
    snprintf(input, sizeof input, "%d,%d,%d", c, h, w);
    int nm = 0;
    meta[nm++] = (at_st_meta){"format", "pt"}; /* the safetensors convention for PyTorch */
    meta[nm++] = (at_st_meta){"advtrain.version", AT_VERSION};
    meta[nm++] = (at_st_meta){"advtrain.arch", (char *)at_net_spec(net)};
    meta[nm++] = (at_st_meta){"advtrain.input", input};
    for (int i = 0; i < nextra; i++) meta[nm++] = extra[i];
    for (int i = 0; i < ntensors; i++) entries[nt + i] = tensors[i];
    at_status s = at_st_write(path, entries, nt + ntensors, meta, nm);
    free(entries);
    free(meta);
    return s;
}

at_status at_net_load_weights(at_net *net, const at_st_file *f, const char *path) {
    int nt = at_net_num_tensors(net);
    float *params = at_net_params(net);
    for (int i = 0; i < nt; i++) {
        const at_param_info *t = at_net_tensor(net, i);
        const at_st_tensor *st = at_st_find(f, t->name);
        if (!st)
            return at_fail(AT_ERR_FORMAT, "%s: no tensor '%s' (the model needs %d parameter tensors)",
                           path, t->name, nt);
        bool same = st->ndim == t->ndim;
        for (int d = 0; same && d < t->ndim; d++) same = st->shape[d] == t->shape[d];
        if (!same) {
            char want[64], got[64];
            int wl = 0, gl = 0;
            for (int d = 0; d < t->ndim; d++)
                wl += snprintf(want + wl, sizeof want - wl, "%s%d", d ? "x" : "", t->shape[d]);
            for (int d = 0; d < st->ndim && gl < (int)sizeof got - 24; d++)
                gl += snprintf(got + gl, sizeof got - gl, "%s%lld", d ? "x" : "",
                               (long long)st->shape[d]);
            if (st->ndim == 0) snprintf(got, sizeof got, "scalar");
            if (t->ndim == 0) snprintf(want, sizeof want, "scalar");
            return at_fail(AT_ERR_SHAPE, "%s: tensor '%s' has shape %s, the model needs %s", path,
                           t->name, got, want);
        }
        memcpy(params + t->offset, st->data, sizeof(float) * t->size);
    }
    return AT_OK;
}

/* Parses "C,H,W". */
static bool parse_input_shape(const char *s, int *c, int *h, int *w) {
    char tail;
    return s && sscanf(s, "%d,%d,%d%c", c, h, w, &tail) == 3 && *c > 0 && *h > 0 && *w > 0 &&
           *c <= 4096 && *h <= 65536 && *w <= 65536;
}

at_status at_model_load(at_net **out, const char *path, at_st_file **meta) {
    *out = NULL;
    if (meta) *meta = NULL;
    at_st_file *f;
    at_status s = at_st_read(path, &f);
    if (s != AT_OK) return s;
    const char *arch = at_st_meta_get(f, "advtrain.arch");
    const char *input = at_st_meta_get(f, "advtrain.input");
    int c, h, w;
    if (!arch || !input) {
        s = at_fail(AT_ERR_FORMAT,
                    "%s: no advtrain.arch/advtrain.input metadata, so the architecture is "
                    "unknown (a file written by PyTorch needs --model and --data to say it)",
                    path);
    } else if (!parse_input_shape(input, &c, &h, &w)) {
        s = at_fail(AT_ERR_FORMAT, "%s: advtrain.input metadata '%s' is not 'C,H,W'", path, input);
    } else {
        s = at_net_from_spec(out, arch, c, h, w);
        if (s != AT_OK) {
            char why[512];
            snprintf(why, sizeof why, "%s", at_error_message());
            s = at_fail(s, "%s: architecture '%s' in the metadata: %s", path, arch, why);
        }
    }
    if (s == AT_OK) s = at_net_load_weights(*out, f, path);
    if (s != AT_OK) {
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
