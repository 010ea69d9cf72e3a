/* safetensors: reading (validated, F32 only) and atomic writing.
 *
 * Layout: 8-byte little-endian u64 header length N, N bytes of JSON, then the data section.
 * The JSON maps tensor names to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative
 * to the data section) plus an optional "__metadata__" string-to-string map. */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Tensor data are copied straight between the file and float arrays: that needs a little-endian
 * host with 4-byte IEEE floats. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host"
#endif
_Static_assert(sizeof(float) == 4, "safetensors F32 needs 4-byte floats");

#define ST_MAX_HEADER 100000000ull /* the reference implementation's limit (100 MB) */
#define ST_MAX_NDIM 8
#define ST_MAX_INT 9007199254740992.0 /* 2^53: larger integers do not survive a JSON double */
#define ST_META_KEY "__metadata__"

/* ================================================================ reading */

typedef struct st_reader {
    const char *path;
    FILE *fp;
    uint64_t data_len;  /* bytes after the header */
    at_st_file *f;
    uint64_t *begin;    /* data_offsets per tensor, parallel to f->tensors */
    uint64_t *end;
} st_reader;

void at_st_free(at_st_file *f) {
    if (!f) return;
    for (int i = 0; i < f->ntensors; i++) {
        free(f->tensors[i].name);
        free(f->tensors[i].data);
        free(f->tensors[i].ints);
    }
    for (int i = 0; i < f->nmeta; i++) {
        free(f->meta[i].key);
        free(f->meta[i].value);
    }
    free(f->tensors);
    free(f->meta);
    free(f);
}

const at_st_tensor *at_st_find(const at_st_file *f, const char *name) {
    if (!f || !name) return NULL;
    for (int i = 0; i < f->ntensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

const char *at_st_meta_get(const at_st_file *f, const char *key) {
    if (!f || !key) return NULL;
    for (int i = 0; i < f->nmeta; i++)
        if (strcmp(f->meta[i].key, key) == 0) return f->meta[i].value;
    return NULL;
}

/* Reads exactly n bytes; the size was checked up front, so a short read means an I/O error or a
 * file that changed under us. */
static at_status read_exact(st_reader *r, void *buf, size_t n, const char *what) {
    if (n == 0 || fread(buf, 1, n, r->fp) == n) return AT_OK;
    if (ferror(r->fp))
        return at_fail(AT_ERR_IO, "%s: cannot read %s: %s", r->path, what, strerror(errno));
    return at_fail(AT_ERR_FORMAT, "%s: file ended early while reading %s", r->path, what);
}

/* A JSON number that is a non-negative integer exactly representable as a double. */
static bool json_uint(const cJSON *item, uint64_t *out) {
    if (!cJSON_IsNumber(item)) return false;
    double v = item->valuedouble;
    if (!(v >= 0 && v <= ST_MAX_INT) || v != (double)(uint64_t)v) return false;
    *out = (uint64_t)v;
    return true;
}

static bool is_json_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* Other safetensors dtypes are well-formed but this library only computes in F32. */
static bool known_dtype(const char *s) {
    static const char *const names[] = {"BOOL", "U8",  "I8",  "F8_E5M2", "F8_E4M3", "I16", "U16",
                                        "F16",  "BF16", "I32", "U32",     "F64",     "I64", "U64"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(s, names[i]) == 0) return true;
    return false;
}

/* F32; I64 (the counters PyTorch keeps as buffers: BatchNorm's num_batches_tracked); I8 and I32
 * (int8 models: weights, biases, multipliers). */
static at_status parse_dtype(st_reader *r, at_st_tensor *t, const cJSON *dtype) {
    const char *name = t->name;
    if (!cJSON_IsString(dtype))
        return at_fail(AT_ERR_FORMAT, "%s: tensor '%s': \"dtype\" missing or not a string", r->path,
                       name);
    const char *s = dtype->valuestring;
    static const char *const names[] = {"F32", "I64", "I32", "I8"};
    for (int k = 0; k < 4; k++)
        if (strcmp(s, names[k]) == 0) {
            t->dtype = (at_st_dtype)k;
            t->integer = t->dtype == AT_ST_I64;
            return AT_OK;
        }
    if (known_dtype(s))
        return at_fail(AT_ERR_UNSUPPORTED, "%s: tensor '%s': dtype %s is unsupported (only F32, I64, I32 and I8)",
                       r->path, name, s);
    return at_fail(AT_ERR_FORMAT, "%s: tensor '%s': unknown dtype \"%s\"", r->path, name, s);
}

/* Fills ndim, shape and count; the element count must not overflow (it is later checked against
 * the byte range, which is bounded by the file size). */
static at_status parse_shape(st_reader *r, at_st_tensor *t, const cJSON *shape) {
    if (!cJSON_IsArray(shape))
        return at_fail(AT_ERR_FORMAT, "%s: tensor '%s': \"shape\" missing or not a list", r->path,
                       t->name);
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > ST_MAX_NDIM)
        return at_fail(AT_ERR_FORMAT, "%s: tensor '%s': %d dimensions (at most %d supported)",
                       r->path, t->name, ndim, ST_MAX_NDIM);
    uint64_t count = 1;
    bool overflow = false;
    int d = 0;
    const cJSON *dim;
    cJSON_ArrayForEach(dim, shape) {
        uint64_t v;
        if (!json_uint(dim, &v))
            return at_fail(AT_ERR_FORMAT,
                           "%s: tensor '%s': shape entry %d is not a non-negative integer", r->path,
                           t->name, d);
        if (v != 0 && count > UINT64_MAX / v) overflow = true;
        else count *= v;
        t->shape[d++] = (int64_t)v;
    }
    /* A zero dimension makes the product 0 even if the other dimensions overflowed. */
    for (int i = 0; i < d; i++)
        if (t->shape[i] == 0) overflow = false, count = 0;
    if (overflow || count > SIZE_MAX / sizeof(float) || count > (uint64_t)ST_MAX_INT)
        return at_fail(AT_ERR_FORMAT, "%s: tensor '%s': shape has too many elements", r->path,
                       t->name);
    t->ndim = ndim;
    t->count = (size_t)count;
    return AT_OK;
}

static const char *const DTYPE_NAMES[] = {"F32", "I64", "I32", "I8"};
static const size_t DTYPE_BYTES[] = {4, 8, 4, 1};

/* What an entry to write holds. */
static at_st_dtype entry_dtype(const at_st_entry *e) {
    return e->ints ? (e->int8 ? AT_ST_I8 : AT_ST_I32) : e->integer ? AT_ST_I64 : AT_ST_F32;
}


static at_status parse_offsets(st_reader *r, int i, const cJSON *offs) {
    const char *name = r->f->tensors[i].name;
    uint64_t b, e;
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 ||
        !json_uint(cJSON_GetArrayItem(offs, 0), &b) || !json_uint(cJSON_GetArrayItem(offs, 1), &e))
        return at_fail(AT_ERR_FORMAT,
                       "%s: tensor '%s': \"data_offsets\" missing or not two non-negative integers",
                       r->path, name);
    if (b > e)
        return at_fail(AT_ERR_FORMAT, "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64
                       "] has begin > end", r->path, name, b, e);
    const at_st_tensor *t = &r->f->tensors[i];
    uint64_t want = (uint64_t)t->count * DTYPE_BYTES[t->dtype];
    if (e - b != want)
        return at_fail(AT_ERR_FORMAT, "%s: tensor '%s': data_offsets span %" PRIu64
                       " bytes but the shape needs %" PRIu64 " (%s)", r->path, name, e - b, want,
                       DTYPE_NAMES[t->dtype]);
    r->begin[i] = b;
    r->end[i] = e;
    return AT_OK;
}

static at_status parse_entry(st_reader *r, int i, const cJSON *item) {
    at_st_tensor *t = &r->f->tensors[i];
    if (!(t->name = at_strdup(item->string))) return AT_ERR_NOMEM;
    if (!cJSON_IsObject(item))
        return at_fail(AT_ERR_FORMAT, "%s: tensor '%s': entry is not an object", r->path, t->name);
    at_status s = parse_dtype(r, t, cJSON_GetObjectItemCaseSensitive(item, "dtype"));
    if (s == AT_OK) s = parse_shape(r, t, cJSON_GetObjectItemCaseSensitive(item, "shape"));
    if (s == AT_OK) s = parse_offsets(r, i, cJSON_GetObjectItemCaseSensitive(item, "data_offsets"));
    return s;
}

static at_status parse_meta(st_reader *r, const cJSON *obj) {
    if (r->f->meta)
        return at_fail(AT_ERR_FORMAT, "%s: \"%s\" appears twice", r->path, ST_META_KEY);
    if (!cJSON_IsObject(obj))
        return at_fail(AT_ERR_FORMAT, "%s: \"%s\" is not an object", r->path, ST_META_KEY);
    int n = cJSON_GetArraySize(obj);
    if (!(r->f->meta = at_calloc((size_t)n, sizeof *r->f->meta, "safetensors metadata")))
        return AT_ERR_NOMEM;
    const cJSON *kv;
    cJSON_ArrayForEach(kv, obj) {
        if (!cJSON_IsString(kv))
            return at_fail(AT_ERR_FORMAT, "%s: metadata value for '%s' is not a string", r->path,
                           kv->string);
        if (at_st_meta_get(r->f, kv->string))
            return at_fail(AT_ERR_FORMAT, "%s: duplicate metadata key '%s'", r->path, kv->string);
        at_st_meta *m = &r->f->meta[r->f->nmeta];
        if (!(m->key = at_strdup(kv->string))) return AT_ERR_NOMEM;
        r->f->nmeta++; /* counted now so at_st_free releases the key if the value fails */
        if (!(m->value = at_strdup(kv->valuestring))) return AT_ERR_NOMEM;
    }
    return AT_OK;
}

static int cmp_str_ptr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static at_status check_unique_names(st_reader *r) {
    int n = r->f->ntensors;
    const char **names = at_calloc((size_t)n, sizeof *names, "tensor names");
    if (!names) return AT_ERR_NOMEM;
    for (int i = 0; i < n; i++) names[i] = r->f->tensors[i].name;
    qsort(names, (size_t)n, sizeof *names, cmp_str_ptr);
    at_status s = AT_OK;
    for (int i = 1; i < n && s == AT_OK; i++)
        if (strcmp(names[i - 1], names[i]) == 0)
            s = at_fail(AT_ERR_FORMAT, "%s: duplicate tensor name '%s'", r->path, names[i]);
    free(names);
    return s;
}

/* qsort has no context argument: the offsets being sorted by live here for one call. */
static _Thread_local const uint64_t *sort_begin;

static int cmp_by_begin(const void *a, const void *b) {
    uint64_t x = sort_begin[*(const int *)a], y = sort_begin[*(const int *)b];
    return (x > y) - (x < y);
}

/* Tensors must tile the data section exactly: contiguous from 0, no gaps or overlaps, ending at
 * the end of the file. On success *order lists the tensors by file position. */
static at_status check_layout(st_reader *r, int **order) {
    int n = r->f->ntensors;
    int *idx = at_calloc((size_t)n, sizeof *idx, "tensor order");
    if (!idx) return AT_ERR_NOMEM;
    for (int i = 0; i < n; i++) idx[i] = i;
    sort_begin = r->begin;
    qsort(idx, (size_t)n, sizeof *idx, cmp_by_begin);
    uint64_t pos = 0;
    for (int k = 0; k < n; k++) {
        int i = idx[k];
        if (r->begin[i] != pos) {
            const char *what = r->begin[i] > pos ? "gap before" : "overlap at";
            at_fail(AT_ERR_FORMAT, "%s: tensor '%s': data %s offset %" PRIu64 " (expected %" PRIu64
                    ")", r->path, r->f->tensors[i].name, what, r->begin[i], pos);
            free(idx);
            return AT_ERR_FORMAT;
        }
        pos = r->end[i];
    }
    if (pos != r->data_len) {
        at_fail(AT_ERR_FORMAT, "%s: tensors cover %" PRIu64 " data bytes but the file has %" PRIu64
                " (%s)", r->path, pos, r->data_len,
                pos < r->data_len ? "trailing bytes" : "file truncated");
        free(idx);
        return AT_ERR_FORMAT;
    }
    *order = idx;
    return AT_OK;
}

static at_status parse_header(st_reader *r, const char *json, size_t len) {
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, false);
    if (!root) {
        size_t at = end && end >= json ? (size_t)(end - json) : 0;
        return at_fail(AT_ERR_FORMAT, "%s: header is not valid JSON (near byte %zu of %zu)",
                       r->path, at, len);
    }
    at_status s = AT_OK;
    /* Trailing spaces pad the header for alignment; anything else after the value is garbage. */
    for (const char *p = end; p < json + len && s == AT_OK; p++)
        if (!is_json_space(*p))
            s = at_fail(AT_ERR_FORMAT, "%s: header has trailing garbage after the JSON object",
                        r->path);
    if (s == AT_OK && !cJSON_IsObject(root))
        s = at_fail(AT_ERR_FORMAT, "%s: header is not a JSON object", r->path);
    int n = 0;
    const cJSON *item;
    if (s == AT_OK) {
        cJSON_ArrayForEach(item, root) n += strcmp(item->string, ST_META_KEY) != 0;
        r->f->tensors = at_calloc((size_t)n, sizeof *r->f->tensors, "safetensors tensors");
        r->begin = at_calloc((size_t)n, sizeof *r->begin, "tensor offsets");
        r->end = at_calloc((size_t)n, sizeof *r->end, "tensor offsets");
        if (!r->f->tensors || !r->begin || !r->end) s = AT_ERR_NOMEM;
    }
    if (s == AT_OK) {
        cJSON_ArrayForEach(item, root) {
            if (strcmp(item->string, ST_META_KEY) == 0) s = parse_meta(r, item);
            else s = parse_entry(r, r->f->ntensors++, item);
            if (s != AT_OK) break;
        }
    }
    cJSON_Delete(root);
    return s;
}

/* An I64 tensor, read value by value into its float array. */
static at_status read_integers(st_reader *r, at_st_tensor *t) {
    for (size_t i = 0; i < t->count; i++) {
        int64_t v;
        at_status s = read_exact(r, &v, sizeof v, "tensor data");
        if (s != AT_OK) return s;
        t->data[i] = (float)v;
    }
    return AT_OK;
}

/* An I8 or I32 tensor into its int32 array. */
static at_status read_ints(st_reader *r, at_st_tensor *t) {
    if (!(t->ints = at_calloc(t->count ? t->count : 1, sizeof(int32_t), "tensor data")))
        return at_fail(AT_ERR_NOMEM, "%s: out of memory for tensor '%s' (%zu values)", r->path, t->name, t->count);
    for (size_t i = 0; i < t->count; i++) {
        int8_t b;
        int32_t v;
        at_status s = t->dtype == AT_ST_I8 ? read_exact(r, &b, 1, "tensor data") : read_exact(r, &v, 4, "tensor data");
        if (s != AT_OK) return s;
        t->ints[i] = t->dtype == AT_ST_I8 ? b : v;
    }
    return AT_OK;
}

/* Copies the data section into one aligned array per tensor, in file order. */
static at_status read_data(st_reader *r, const int *order) {
    for (int k = 0; k < r->f->ntensors; k++) {
        at_st_tensor *t = &r->f->tensors[order[k]];
        if (t->dtype == AT_ST_I8 || t->dtype == AT_ST_I32) {
            at_status s = read_ints(r, t);
            if (s != AT_OK) return s;
            continue;
        }
        if (!(t->data = at_alloc_floats(t->count, "tensor data")))
            return at_fail(AT_ERR_NOMEM, "%s: out of memory for tensor '%s' (%zu floats)", r->path,
                           t->name, t->count);
        at_status s = t->integer ? read_integers(r, t)
                                 : read_exact(r, t->data, t->count * sizeof(float), "tensor data");
        if (s != AT_OK) return s;
    }
    return AT_OK;
}

/* Reads the length prefix and the header JSON; sets r->data_len. *json is NUL-terminated. */
static at_status read_header(st_reader *r, char **json, size_t *len) {
    struct stat st;
    if (fstat(fileno(r->fp), &st) != 0)
        return at_fail(AT_ERR_IO, "%s: cannot stat: %s", r->path, strerror(errno));
    if (!S_ISREG(st.st_mode)) return at_fail(AT_ERR_IO, "%s: not a regular file", r->path);
    uint64_t size = (uint64_t)st.st_size;
    if (size < 8)
        return at_fail(AT_ERR_FORMAT, "%s: file is %" PRIu64 " bytes, too short for a safetensors"
                       " header length (8 bytes)", r->path, size);
    unsigned char b[8];
    at_status s = read_exact(r, b, 8, "the header length");
    if (s != AT_OK) return s;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | b[i];
    if (n == 0) return at_fail(AT_ERR_FORMAT, "%s: header length is 0", r->path);
    /* Any other file (text, an IDX file, a PNG) lands here with a nonsense length: say first
     * that it is not a safetensors file, the length second. */
    if (n > ST_MAX_HEADER)
        return at_fail(AT_ERR_FORMAT, "%s: not a safetensors file (its first 8 bytes give a header "
                       "length of %" PRIu64 ", beyond the 100 MB limit)", r->path, n);
    if (n > size - 8)
        return at_fail(AT_ERR_FORMAT, "%s: not a safetensors file, or a truncated one (header length "
                       "%" PRIu64 " runs past the end of the file, %" PRIu64 " bytes)", r->path, n, size);
    if (!(*json = at_alloc((size_t)n + 1, "safetensors header"))) return AT_ERR_NOMEM;
    (*json)[n] = '\0';
    *len = (size_t)n;
    r->data_len = size - 8 - n;
    return read_exact(r, *json, (size_t)n, "the header");
}

at_status at_st_read(const char *path, at_st_file **out) {
    if (!out) return at_fail(AT_ERR_ARG, "at_st_read: out is NULL");
    *out = NULL;
    if (!path) return at_fail(AT_ERR_ARG, "at_st_read: path is NULL");
    st_reader r = {.path = path};
    if (!(r.fp = fopen(path, "rb")))
        return at_fail(AT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    char *json = NULL;
    size_t len = 0;
    int *order = NULL;
    at_status s = read_header(&r, &json, &len);
    if (s == AT_OK && !(r.f = at_calloc(1, sizeof *r.f, "safetensors file"))) s = AT_ERR_NOMEM;
    if (s == AT_OK) s = parse_header(&r, json, len);
    if (s == AT_OK) s = check_unique_names(&r);
    if (s == AT_OK) s = check_layout(&r, &order);
    if (s == AT_OK) s = read_data(&r, order);
    fclose(r.fp);
    free(json);
    free(order);
    free(r.begin);
    free(r.end);
    if (s != AT_OK) {
        at_st_free(r.f);
        return s;
    }
    *out = r.f;
    return AT_OK;
}

/* ================================================================ writing */

static at_status check_unique(const char *path, const char **names, int n, const char *what) {
    qsort(names, (size_t)n, sizeof *names, cmp_str_ptr);
    for (int i = 1; i < n; i++)
        if (strcmp(names[i - 1], names[i]) == 0)
            return at_fail(AT_ERR_ARG, "%s: duplicate %s '%s'", path, what, names[i]);
    return AT_OK;
}

/* Element count of an entry, rejecting negative dimensions and sizes the format cannot hold. */
static at_status entry_count(const char *path, const at_st_entry *e, uint64_t *count) {
    if (e->ndim < 0 || e->ndim > ST_MAX_NDIM)
        return at_fail(AT_ERR_ARG, "%s: tensor '%s': ndim %d out of range 0..%d", path, e->name,
                       e->ndim, ST_MAX_NDIM);
    uint64_t c = 1;
    bool zero = false, overflow = false;
    for (int d = 0; d < e->ndim; d++) {
        int64_t v = e->shape[d];
        if (v < 0)
            return at_fail(AT_ERR_ARG, "%s: tensor '%s': dimension %d is negative (%" PRId64 ")",
                           path, e->name, d, v);
        if (v == 0) zero = true;
        else if (c > UINT64_MAX / (uint64_t)v) overflow = true;
        else c *= (uint64_t)v;
    }
    if (zero) c = 0, overflow = false;
    if (overflow || c > (uint64_t)(ST_MAX_INT / sizeof(float)) || c > SIZE_MAX / sizeof(float))
        return at_fail(AT_ERR_ARG, "%s: tensor '%s': too many elements", path, e->name);
    if (c > 0 && !e->data && !e->ints)
        return at_fail(AT_ERR_ARG, "%s: tensor '%s': data is NULL", path, e->name);
    *count = c;
    return AT_OK;
}

static at_status check_write_args(const char *path, const at_st_entry *t, int nt,
                                  const at_st_meta *meta, int nmeta) {
    if (!path) return at_fail(AT_ERR_ARG, "at_st_write: path is NULL");
    if (nt < 0 || (nt > 0 && !t))
        return at_fail(AT_ERR_ARG, "%s: bad tensor list (%d tensors)", path, nt);
    if (nmeta < 0 || (nmeta > 0 && !meta))
        return at_fail(AT_ERR_ARG, "%s: bad metadata list (%d entries)", path, nmeta);
    uint64_t total = 0;
    for (int i = 0; i < nt; i++) {
        if (!t[i].name) return at_fail(AT_ERR_ARG, "%s: tensor %d has no name", path, i);
        if (strcmp(t[i].name, ST_META_KEY) == 0)
            return at_fail(AT_ERR_ARG, "%s: '%s' is reserved, not a tensor name", path,
                           ST_META_KEY);
        uint64_t c = 0;
        at_status s = entry_count(path, &t[i], &c);
        if (s != AT_OK) return s;
        total += c * DTYPE_BYTES[entry_dtype(&t[i])];
        if (total > (uint64_t)ST_MAX_INT)
            return at_fail(AT_ERR_ARG, "%s: tensors too large for one file", path);
    }
    for (int i = 0; i < nmeta; i++)
        if (!meta[i].key || !meta[i].value)
            return at_fail(AT_ERR_ARG, "%s: metadata entry %d has a NULL key or value", path, i);
    int n = AT_MAX(nt, nmeta);
    const char **names = at_calloc((size_t)n, sizeof *names, "names");
    if (!names) return AT_ERR_NOMEM;
    for (int i = 0; i < nt; i++) names[i] = t[i].name;
    at_status s = check_unique(path, names, nt, "tensor name");
    for (int i = 0; i < nmeta && s == AT_OK; i++) names[i] = meta[i].key;
    if (s == AT_OK) s = check_unique(path, names, nmeta, "metadata key");
    free(names);
    return s;
}

/* Integers go in as raw JSON text: cJSON prints large doubles with exponents ("1e+15"), which
 * strict readers reject as offsets. */
static cJSON *json_uint_raw(uint64_t v) {
    char buf[24];
    snprintf(buf, sizeof buf, "%" PRIu64, v);
    return cJSON_CreateRaw(buf);
}

static cJSON *json_uint_array(const uint64_t *v, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < n; i++) {
        cJSON *x = json_uint_raw(v[i]);
        if (!x || !cJSON_AddItemToArray(a, x)) {
            cJSON_Delete(x);
            cJSON_Delete(a);
            return NULL;
        }
    }
    return a;
}

static cJSON *tensor_json(const at_st_entry *e, uint64_t begin, uint64_t end) {
    uint64_t shape[ST_MAX_NDIM], offs[2] = {begin, end};
    for (int d = 0; d < e->ndim; d++) shape[d] = (uint64_t)e->shape[d];
    cJSON *o = cJSON_CreateObject();
    cJSON *s = json_uint_array(shape, e->ndim), *d = json_uint_array(offs, 2);
    bool ok = o && s && d && cJSON_AddStringToObject(o, "dtype", DTYPE_NAMES[entry_dtype(e)]);
    if (ok && cJSON_AddItemToObject(o, "shape", s)) s = NULL;
    else ok = false;
    if (ok && cJSON_AddItemToObject(o, "data_offsets", d)) d = NULL;
    else ok = false;
    cJSON_Delete(s);
    cJSON_Delete(d);
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* Builds the header text: "__metadata__" first, then the tensors in order with contiguous
 * offsets. Returns NULL (error set) on allocation failure; free with cJSON_free. */
static char *build_header(const char *path, const at_st_entry *t, int nt, const at_st_meta *meta,
                          int nmeta) {
    cJSON *root = cJSON_CreateObject();
    bool ok = root != NULL;
    if (ok && nmeta > 0) {
        cJSON *m = cJSON_AddObjectToObject(root, ST_META_KEY);
        ok = m != NULL;
        for (int i = 0; ok && i < nmeta; i++)
            ok = cJSON_AddStringToObject(m, meta[i].key, meta[i].value) != NULL;
    }
    uint64_t pos = 0;
    for (int i = 0; ok && i < nt; i++) {
        uint64_t c = 1;
        for (int d = 0; d < t[i].ndim; d++) c *= (uint64_t)t[i].shape[d];
        const uint64_t bytes = c * DTYPE_BYTES[entry_dtype(&t[i])];
        cJSON *e = tensor_json(&t[i], pos, pos + bytes);
        ok = e && cJSON_AddItemToObject(root, t[i].name, e);
        if (!ok) cJSON_Delete(e);
        pos += bytes;
    }
    char *text = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (!text) at_fail(AT_ERR_NOMEM, "%s: out of memory building the safetensors header", path);
    return text;
}

static at_status write_all(FILE *fp, const void *p, size_t n, const char *path, const char *tmp) {
    if (n == 0 || fwrite(p, 1, n, fp) == n) return AT_OK;
    return at_fail(AT_ERR_IO, "%s: writing %s failed: %s", path, tmp, strerror(errno));
}

/* Floats holding whole numbers, written as I64. Every int64 reads (at_st_read) as a float in
 * [-2^63, 2^63], so all of that range is written: 2^63, which INT64_MAX reads as, goes back as
 * INT64_MAX, and a tensor that was read can always be written again. */
static at_status write_integers(FILE *fp, const float *v, size_t count, const char *path,
                                const char *tmp) {
    at_status s = AT_OK;
    for (size_t i = 0; i < count && s == AT_OK; i++) {
        if (!(v[i] >= -0x1p63f && v[i] <= 0x1p63f)) /* NaN, or beyond int64 */
            return at_fail(AT_ERR_ARG, "%s: an integer tensor holds %g", path, (double)v[i]);
        const int64_t x = v[i] == 0x1p63f ? INT64_MAX : (int64_t)v[i];
        s = write_all(fp, &x, sizeof x, path, tmp);
    }
    return s;
}

/* int32 values written as I32, or as I8 (each must fit). */
static at_status write_ints(FILE *fp, const at_st_entry *e, size_t count, const char *path, const char *tmp) {
    at_status s = AT_OK;
    for (size_t i = 0; i < count && s == AT_OK; i++) {
        if (!e->int8) {
            s = write_all(fp, &e->ints[i], 4, path, tmp);
            continue;
        }
        if (e->ints[i] < -128 || e->ints[i] > 127)
            return at_fail(AT_ERR_ARG, "%s: tensor '%s' holds %d, not an int8", path, e->name, (int)e->ints[i]);
        const int8_t b = (int8_t)e->ints[i];
        s = write_all(fp, &b, 1, path, tmp);
    }
    return s;
}

static at_status write_contents(FILE *fp, const char *path, const char *tmp, const char *header,
                                const at_st_entry *t, int nt) {
    size_t hlen = strlen(header);
    size_t pad = (8 - hlen % 8) % 8; /* data start (8 + hlen + pad) stays 8-byte aligned */
    uint64_t n = (uint64_t)(hlen + pad);
    unsigned char len[8];
    for (int i = 0; i < 8; i++) len[i] = (unsigned char)(n >> (8 * i));
    static const char spaces[] = "        ";
    at_status s = write_all(fp, len, 8, path, tmp);
    if (s == AT_OK) s = write_all(fp, header, hlen, path, tmp);
    if (s == AT_OK) s = write_all(fp, spaces, pad, path, tmp);
    for (int i = 0; i < nt && s == AT_OK; i++) {
        size_t c = 1;
        for (int d = 0; d < t[i].ndim; d++) c *= (size_t)t[i].shape[d];
        s = t[i].ints      ? write_ints(fp, &t[i], c, path, tmp)
            : t[i].integer ? write_integers(fp, t[i].data, c, path, tmp)
                           : write_all(fp, t[i].data, c * sizeof(float), path, tmp);
    }
    return s;
}

typedef struct contents {
    const char *header;
    const at_st_entry *tensors;
    int ntensors;
} contents;

static at_status write_st(FILE *fp, const char *path, const char *tmp, void *user) {
    const contents *c = user;
    return write_contents(fp, path, tmp, c->header, c->tensors, c->ntensors);
}

at_status at_st_write(const char *path, const at_st_entry *tensors, int ntensors,
                      const at_st_meta *meta, int nmeta) {
    at_status s = check_write_args(path, tensors, ntensors, meta, nmeta);
    if (s != AT_OK) return s;
    char *header = build_header(path, tensors, ntensors, meta, nmeta);
    if (!header) return AT_ERR_NOMEM;
    if (((strlen(header) + 7) & ~(size_t)7) > ST_MAX_HEADER)
        s = at_fail(AT_ERR_ARG, "%s: header would exceed the 100 MB limit", path);
    contents c = {header, tensors, ntensors};
    if (s == AT_OK) s = at_write_atomic_with(path, write_st, &c);
    cJSON_free(header);
    return s;
}
