/* Training-state checkpoints (see checkpoint.h). The state object lives in the safetensors
 * metadata as JSON; numbers that JSON cannot hold exactly (64-bit counters, RNG words,
 * infinities) are written as strings. */
#include "checkpoint.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define STATE_KEY "advtrain.train_state"
#define TENSOR_PREFIX "__train__."

at_status ckpt_path(char *buf, size_t cap, const char *dir, const char *name) {
    int n = snprintf(buf, cap, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= cap)
        return at_fail(AT_ERR_ARG, "checkpoint directory path too long: %s", dir);
    return AT_OK;
}

at_status ckpt_begin(ckpt_state *c) {
    memset(c, 0, sizeof *c);
    c->json = cJSON_CreateObject();
    if (!c->json) return at_fail(AT_ERR_NOMEM, "out of memory for the checkpoint state");
    return AT_OK;
}

void ckpt_end(ckpt_state *c) {
    cJSON_Delete(c->json);
    for (int i = 0; i < c->ntensors; i++) free(c->names[i]);
    at_st_free(c->file);
    memset(c, 0, sizeof *c);
}

static void put(ckpt_state *c, const char *key, cJSON *item) {
    if (!item || !cJSON_AddItemToObject(c->json, key, item)) {
        cJSON_Delete(item);
        c->failed = true;
    }
}

void ckpt_put_int(ckpt_state *c, const char *key, int64_t v) { put(c, key, cJSON_CreateNumber((double)v)); }

void ckpt_put_num(ckpt_state *c, const char *key, double v) {
    if (isfinite(v)) {
        put(c, key, cJSON_CreateNumber(v)); /* cJSON prints 17 digits when 15 do not round-trip */
        return;
    }
    put(c, key, cJSON_CreateString(isnan(v) ? "nan" : v > 0 ? "inf" : "-inf"));
}

void ckpt_put_u64(ckpt_state *c, const char *key, uint64_t v) {
    char buf[24];
    snprintf(buf, sizeof buf, "%016" PRIx64, v);
    put(c, key, cJSON_CreateString(buf));
}

void ckpt_put_rng(ckpt_state *c, const char *key, const at_rng *r) {
    char buf[4 * 17];
    int len = 0;
    for (int i = 0; i < 4; i++) len += snprintf(buf + len, sizeof buf - len, "%s%016" PRIx64, i ? "," : "", r->s[i]);
    put(c, key, cJSON_CreateString(buf));
}

void ckpt_put_str(ckpt_state *c, const char *key, const char *v) { put(c, key, cJSON_CreateString(v)); }

void ckpt_put_floats(ckpt_state *c, const char *name, const float *data, size_t count) {
    if (count == 0) return;
    if (c->ntensors >= CKPT_MAX_TENSORS) {
        c->failed = true;
        return;
    }
    size_t len = strlen(TENSOR_PREFIX) + strlen(name) + 1;
    char *full = malloc(len);
    if (!full) {
        c->failed = true;
        return;
    }
    snprintf(full, len, "%s%s", TENSOR_PREFIX, name);
    at_st_entry *e = &c->tensors[c->ntensors];
    memset(e, 0, sizeof *e);
    e->name = full;
    e->ndim = 1;
    e->shape[0] = (int64_t)count;
    e->data = data;
    c->names[c->ntensors++] = full;
}

at_status ckpt_write(ckpt_state *c, const at_net *net, const char *path, const at_st_meta *meta,
                     int nmeta) {
    if (c->failed) return at_fail(AT_ERR_NOMEM, "out of memory building the checkpoint %s", path);
    char *json = cJSON_PrintUnformatted(c->json);
    at_st_meta *all = calloc((size_t)nmeta + 1, sizeof *all);
    if (!json || !all) {
        free(json);
        free(all);
        return at_fail(AT_ERR_NOMEM, "out of memory writing the checkpoint %s", path);
    }
    for (int i = 0; i < nmeta; i++) all[i] = meta[i];
    all[nmeta] = (at_st_meta){STATE_KEY, json};
    at_status s = at_model_save_with(net, path, all, nmeta + 1, c->tensors, c->ntensors);
    free(json);
    free(all);
    return s;
}

at_status ckpt_open(ckpt_state *c, const char *path) {
    memset(c, 0, sizeof *c);
    c->path = path;
    at_status s = at_st_read(path, &c->file);
    if (s != AT_OK) return s;
    const char *text = at_st_meta_get(c->file, STATE_KEY);
    if (!text)
        return at_fail(AT_ERR_FORMAT, "%s: a model file without training state (%s metadata): not "
                                      "a checkpoint written by --checkpoint-dir",
                       path, STATE_KEY);
    c->json = cJSON_Parse(text);
    if (!cJSON_IsObject(c->json))
        return at_fail(AT_ERR_FORMAT, "%s: the %s metadata is not a JSON object", path, STATE_KEY);
    return AT_OK;
}

bool ckpt_has(const ckpt_state *c, const char *key) {
    return cJSON_GetObjectItemCaseSensitive(c->json, key) != NULL;
}

bool ckpt_has_floats(const ckpt_state *c, const char *name) {
    char full[128];
    snprintf(full, sizeof full, "%s%s", TENSOR_PREFIX, name);
    return at_st_find(c->file, full) != NULL;
}

static at_status missing(const ckpt_state *c, const char *key, const char *what) {
    return at_fail(AT_ERR_FORMAT, "%s: training state '%s' is missing or not %s", c->path, key, what);
}

at_status ckpt_get_num(const ckpt_state *c, const char *key, double *v) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(c->json, key);
    if (cJSON_IsNumber(item)) {
        *v = item->valuedouble;
        return AT_OK;
    }
    const char *s = cJSON_GetStringValue(item);
    if (s && strcmp(s, "inf") == 0) *v = INFINITY;
    else if (s && strcmp(s, "-inf") == 0) *v = -INFINITY;
    else if (s && strcmp(s, "nan") == 0) *v = NAN;
    else return missing(c, key, "a number");
    return AT_OK;
}

at_status ckpt_get_int(const ckpt_state *c, const char *key, int64_t *v) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(c->json, key);
    if (!cJSON_IsNumber(item) || item->valuedouble != floor(item->valuedouble) ||
        fabs(item->valuedouble) > 9007199254740992.0)
        return missing(c, key, "a whole number");
    *v = (int64_t)item->valuedouble;
    return AT_OK;
}

at_status ckpt_get_int_in(const ckpt_state *c, const char *key, int64_t lo, int64_t hi, int64_t *v) {
    at_status s = ckpt_get_int(c, key, v);
    if (s == AT_OK && (*v < lo || *v > hi))
        s = at_fail(AT_ERR_FORMAT, "%s: training state '%s' is %lld, outside %lld..%lld", c->path, key,
                    (long long)*v, (long long)lo, (long long)hi);
    return s;
}

at_status ckpt_get_num_in(const ckpt_state *c, const char *key, double lo, double hi, double *v) {
    at_status s = ckpt_get_num(c, key, v);
    if (s == AT_OK && !(*v >= lo && *v <= hi))
        s = at_fail(AT_ERR_FORMAT, "%s: training state '%s' is %g, outside %g..%g", c->path, key, *v,
                    lo, hi);
    return s;
}

static bool parse_hex(const char *s, size_t len, uint64_t *v) {
    if (len == 0 || len > 16) return false;
    uint64_t x = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
        if (d < 0) return false;
        x = x << 4 | (uint64_t)d;
    }
    *v = x;
    return true;
}

at_status ckpt_get_u64(const ckpt_state *c, const char *key, uint64_t *v) {
    const char *s = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(c->json, key));
    if (!s || !parse_hex(s, strlen(s), v)) return missing(c, key, "a hex number");
    return AT_OK;
}

at_status ckpt_get_rng(const ckpt_state *c, const char *key, at_rng *r) {
    const char *s = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(c->json, key));
    if (!s || strlen(s) != 4 * 17 - 1) return missing(c, key, "an RNG state");
    for (int i = 0; i < 4; i++)
        if (!parse_hex(s + 17 * i, 16, &r->s[i]) || (i < 3 && s[17 * i + 16] != ','))
            return missing(c, key, "an RNG state");
    return AT_OK;
}

const char *ckpt_get_str(const ckpt_state *c, const char *key) {
    return cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(c->json, key));
}

at_status ckpt_get_floats(const ckpt_state *c, const char *name, float *data, size_t count) {
    if (count == 0) return AT_OK;
    char full[128];
    snprintf(full, sizeof full, "%s%s", TENSOR_PREFIX, name);
    const at_st_tensor *t = at_st_find(c->file, full);
    if (!t || t->count != count || !t->data)
        return at_fail(AT_ERR_FORMAT, "%s: training state tensor '%s' is missing or does not hold %zu "
                                      "values",
                       c->path, full, count);
    memcpy(data, t->data, sizeof(float) * count);
    return AT_OK;
}
