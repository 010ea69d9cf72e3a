/* Fuzz target: safetensors header and tensors (at_st_read).
 *
 * A file that reads must be what the reader promises: every tensor's count the product of its
 * shape, every float readable, names and metadata findable. Then it is written back
 * (at_st_write) and read again: the writer must accept whatever the reader accepted, and the
 * second read must give the same tensors and metadata, bit for bit. */
#include "fuzz_common.h"

#include <stdlib.h>
#include <string.h>

static void check_tensor(const at_st_file *f, const at_st_tensor *t) {
    if (t->ndim < 0 || t->ndim > 8) fuzz_fail("ndim out of range", t->name);
    size_t count = 1;
    for (int d = 0; d < t->ndim; d++) {
        if (t->shape[d] < 0) fuzz_fail("negative dimension", t->name);
        count *= (size_t)t->shape[d];
    }
    if (count != t->count) fuzz_fail("count is not the product of the shape", t->name);
    const bool ints = t->dtype == AT_ST_I8 || t->dtype == AT_ST_I32;
    if (t->count && (ints ? !t->ints || t->data : !t->data || t->ints)) fuzz_fail("no data, or both kinds", t->name);
    if (t->integer != (t->dtype == AT_ST_I64)) fuzz_fail("integer and dtype disagree", t->name);
    volatile float sum = 0;
    for (size_t i = 0; i < t->count; i++) {
        if (ints && t->dtype == AT_ST_I8 && (t->ints[i] < -128 || t->ints[i] > 127)) fuzz_fail("an I8 value out of range", t->name);
        sum += ints ? (float)t->ints[i] : t->data[i];
    }
    (void)sum;
    if (at_st_find(f, t->name) != t) fuzz_fail("at_st_find misses", t->name);
}

static void check_file(const at_st_file *f) {
    for (int i = 0; i < f->ntensors; i++) check_tensor(f, &f->tensors[i]);
    for (int i = 0; i < f->nmeta; i++)
        if (at_st_meta_get(f, f->meta[i].key) != f->meta[i].value)
            fuzz_fail("at_st_meta_get misses", f->meta[i].key);
}

static void same_file(const at_st_file *a, const at_st_file *b) {
    if (a->ntensors != b->ntensors || a->nmeta != b->nmeta) fuzz_fail("round trip changed the counts", NULL);
    for (int i = 0; i < a->ntensors; i++) {
        const at_st_tensor *x = &a->tensors[i], *y = at_st_find(b, x->name);
        if (!y || x->ndim != y->ndim || x->count != y->count || x->dtype != y->dtype ||
            memcmp(x->shape, y->shape, sizeof x->shape[0] * (size_t)x->ndim) != 0 ||
            (x->count && x->data && memcmp(x->data, y->data, sizeof(float) * x->count) != 0) ||
            (x->count && x->ints && memcmp(x->ints, y->ints, sizeof(int32_t) * x->count) != 0))
            fuzz_fail("round trip changed tensor", x->name);
    }
    for (int i = 0; i < a->nmeta; i++) {
        const char *v = at_st_meta_get(b, a->meta[i].key);
        if (!v || strcmp(v, a->meta[i].value) != 0) fuzz_fail("round trip changed metadata", a->meta[i].key);
    }
}

/* Writes f to path2 and reads it back. */
static void round_trip(const at_st_file *f, const char *path2) {
    at_st_entry *e = calloc((size_t)f->ntensors + 1, sizeof *e);
    if (!e) fuzz_fail("out of memory", "entries");
    for (int i = 0; i < f->ntensors; i++) {
        const at_st_tensor *t = &f->tensors[i];
        e[i].name = t->name;
        e[i].ndim = t->ndim;
        memcpy(e[i].shape, t->shape, sizeof t->shape);
        e[i].data = t->data;
        e[i].integer = t->integer;
        e[i].ints = t->ints;
        e[i].int8 = t->dtype == AT_ST_I8;
    }
    at_status s = at_st_write(path2, e, f->ntensors, f->meta, f->nmeta);
    free(e);
    if (s != AT_OK) fuzz_fail("at_st_write refused what at_st_read accepted", at_error_message());
    at_st_file *g;
    if ((s = at_st_read(path2, &g)) != AT_OK) fuzz_fail("cannot read back", at_error_message());
    same_file(f, g);
    at_st_free(g);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[512], path2[512];
    fuzz_path(path, sizeof path, "in.safetensors");
    fuzz_path(path2, sizeof path2, "again.safetensors");
    fuzz_write(path, data, size);
    at_st_file *f = NULL;
    at_status s = at_st_read(path, &f);
    fuzz_check_message(s, "at_st_read");
    if (s != AT_OK) {
        if (f) fuzz_fail("at_st_read failed but returned a file", NULL);
        return 0;
    }
    check_file(f);
    round_trip(f, path2);
    at_st_free(f);
    return 0;
}
