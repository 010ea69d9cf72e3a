/* Dataset sources, ownership, splitting and batching. */
#include "data_internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"
#define FASHION_MNIST_HINT "install it with: sudo apt-get install dataset-fashion-mnist"
#define IDX_HINT                                                                            \
    "expected train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and " \
    "t10k-labels-idx1-ubyte (each optionally .gz)"
#define CIFAR_HINT                                                                   \
    "expected data_batch_1.bin .. data_batch_5.bin and test_batch.bin from "         \
    "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
#define VALID_SOURCES                                                                  \
    "fashion-mnist, fashion-mnist:DIR, mnist:DIR, idx:DIR, cifar10:DIR, synthetic, " \
    "synthetic:SEED"
/* "synthetic" without a seed uses this one. */
#define SYNTHETIC_DEFAULT_SEED 0

/* ---------------------------------------------------------------- ownership */

void at_dataset_free(at_dataset *ds) {
    if (!ds) return;
    free(ds->images);
    free(ds->features);
    free(ds->labels);
    free(ds->targets);
    memset(ds, 0, sizeof *ds);
}

void at_data_free(at_data *data) {
    if (!data) return;
    at_dataset_free(&data->train);
    at_dataset_free(&data->test);
    memset(data, 0, sizeof *data);
}

int at_dataset_sample_size(const at_dataset *ds) { return ds ? ds->c * ds->h * ds->w : 0; }

/* ---------------------------------------------------------------- sources */

/* Appends a hint to the current error message, keeping the status. */
static at_status with_hint(at_status s, const char *hint) {
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", at_error_message());
    return at_fail(s, "%s; %s", msg, hint);
}

/* DIR/base.gz if it can be opened, else DIR/base; AT_ERR_IO naming both when neither can. */
static at_status find_idx_file(char *out, size_t cap, const char *dir, const char *base) {
    char gz[4096];
    int w = snprintf(gz, sizeof gz, "%s.gz", base);
    at_status s = (w < 0 || (size_t)w >= sizeof gz) ? at_fail(AT_ERR_ARG, "name too long: %s", base)
                                                   : at_path_join(out, cap, dir, gz);
    if (s != AT_OK) return s;
    FILE *f = fopen(out, "rb");
    if (f) {
        fclose(f);
        return AT_OK;
    }
    int gz_err = errno;
    if ((s = at_path_join(out, cap, dir, base)) != AT_OK) return s;
    if ((f = fopen(out, "rb"))) {
        fclose(f);
        return AT_OK;
    }
    /* Report the plain name's error unless it is merely absent while the .gz exists. */
    int err = errno == ENOENT ? gz_err : errno;
    return at_fail(AT_ERR_IO, "cannot open %s(.gz): %s", out, strerror(err));
}

static at_status load_idx_split(at_dataset *ds, const char *dir, const char *images,
                                const char *labels) {
    char ipath[4096], lpath[4096];
    at_status s = find_idx_file(ipath, sizeof ipath, dir, images);
    if (s == AT_OK) s = find_idx_file(lpath, sizeof lpath, dir, labels);
    if (s == AT_OK) s = at_idx_load(ds, ipath, lpath);
    return s;
}

/* Train and test must describe the same kind of sample; the class count covers both. */
static at_status check_pair(at_data *data, const char *where) {
    at_dataset *a = &data->train, *b = &data->test;
    if (a->c != b->c || a->h != b->h || a->w != b->w || a->target_dim != b->target_dim)
        return at_fail(AT_ERR_SHAPE, "%s: training samples are %dx%dx%d but test samples are %dx%dx%d",
                       where, a->c, a->h, a->w, b->c, b->h, b->w);
    int k = AT_MAX(a->num_classes, b->num_classes);
    a->num_classes = b->num_classes = k;
    return AT_OK;
}

static at_status load_idx_dir(at_data *data, const char *dir, const char *name, const char *hint) {
    at_status s = load_idx_split(&data->train, dir, "train-images-idx3-ubyte", "train-labels-idx1-ubyte");
    if (s == AT_OK) s = load_idx_split(&data->test, dir, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte");
    if (s == AT_ERR_IO) s = with_hint(s, hint);
    if (s == AT_OK) s = check_pair(data, dir);
    if (s == AT_OK) snprintf(data->name, sizeof data->name, "%s", name);
    return s;
}

static at_status load_cifar_dir(at_data *data, const char *dir) {
    at_status s = at_cifar10_load(&data->train, dir, true);
    if (s == AT_OK) s = at_cifar10_load(&data->test, dir, false);
    if (s == AT_ERR_IO) s = with_hint(s, CIFAR_HINT);
    if (s == AT_OK) s = check_pair(data, dir);
    if (s == AT_OK) snprintf(data->name, sizeof data->name, "cifar10");
    return s;
}

/* "synthetic" or "synthetic:SEED" (SEED a decimal or 0x-hex unsigned integer). */
static at_status load_synthetic(at_data *data, const char *source, const char *arg) {
    uint64_t seed = SYNTHETIC_DEFAULT_SEED;
    if (arg) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(arg, &end, 0);
        if (!*arg || *end || errno || *arg == '-' || *arg == '+' || *arg == ' ')
            return at_fail(AT_ERR_ARG, "data source '%s': SEED must be an unsigned integer", source);
        seed = v;
    }
    return at_synthetic_load(data, seed);
}

/* If source is "prefix:ARG", returns ARG; else NULL. */
static const char *after_prefix(const char *source, const char *prefix) {
    size_t n = strlen(prefix);
    return strncmp(source, prefix, n) == 0 && source[n] == ':' ? source + n + 1 : NULL;
}

static at_status load_source(at_data *data, const char *source) {
    const char *arg;
    if (strcmp(source, "fashion-mnist") == 0)
        return load_idx_dir(data, FASHION_MNIST_DIR, "fashion-mnist", FASHION_MNIST_HINT);
    if (strcmp(source, "synthetic") == 0) return load_synthetic(data, source, NULL);
    if ((arg = after_prefix(source, "synthetic"))) return load_synthetic(data, source, arg);

    static const char *const idx_kinds[] = {"fashion-mnist", "mnist", "idx"};
    for (size_t i = 0; i < sizeof idx_kinds / sizeof *idx_kinds; i++) {
        if (!(arg = after_prefix(source, idx_kinds[i]))) continue;
        if (!*arg) return at_fail(AT_ERR_ARG, "data source '%s' needs a directory after ':'", source);
        return load_idx_dir(data, arg, idx_kinds[i], IDX_HINT);
    }
    if ((arg = after_prefix(source, "cifar10"))) {
        if (!*arg) return at_fail(AT_ERR_ARG, "data source '%s' needs a directory after ':'", source);
        return load_cifar_dir(data, arg);
    }
    return at_fail(AT_ERR_ARG, "unknown data source '%s'; valid forms: " VALID_SOURCES, source);
}

at_status at_data_load(at_data *data, const char *source) {
    if (!data) return at_fail(AT_ERR_ARG, "at_data_load: data is NULL");
    memset(data, 0, sizeof *data);
    if (!source) return at_fail(AT_ERR_ARG, "no data source; valid forms: " VALID_SOURCES);
    at_status s = load_source(data, source);
    if (s != AT_OK) at_data_free(data);
    return s;
}

/* ---------------------------------------------------------------- reshaping */

/* Copies sample si of src over sample di of dst (same layout). */
static void copy_sample(at_dataset *dst, int di, const at_dataset *src, int si) {
    size_t d = (size_t)at_dataset_sample_size(src), k = (size_t)src->target_dim;
    if (src->images) memmove(dst->images + di * d, src->images + si * d, d);
    if (src->features) memmove(dst->features + di * d, src->features + si * d, d * sizeof(float));
    if (src->labels) dst->labels[di] = src->labels[si];
    if (src->targets) memmove(dst->targets + di * k, src->targets + si * k, k * sizeof(float));
}

/* An empty dataset with src's layout and room for n samples. */
static at_status alloc_like(at_dataset *dst, const at_dataset *src, int n) {
    *dst = *src;
    dst->n = n;
    dst->images = NULL;
    dst->features = NULL;
    dst->labels = NULL;
    dst->targets = NULL;
    size_t d = (size_t)at_dataset_sample_size(src), k = (size_t)src->target_dim, m = (size_t)n;
    bool ok = true;
    if (src->images) ok = ok && (dst->images = at_alloc(m * d, "validation images"));
    if (src->features) ok = ok && (dst->features = at_alloc_floats(m * d, "validation features"));
    if (src->labels) ok = ok && (dst->labels = at_alloc(m * sizeof(int32_t), "validation labels"));
    if (src->targets) ok = ok && (dst->targets = at_alloc_floats(m * k, "validation targets"));
    if (!ok) {
        at_dataset_free(dst);
        return AT_ERR_NOMEM;
    }
    return AT_OK;
}

at_status at_dataset_split(at_dataset *train, at_dataset *val, float frac, uint64_t seed) {
    if (!train || !val || train == val)
        return at_fail(AT_ERR_ARG, "at_dataset_split: needs two distinct datasets");
    if (!(frac > 0.0f && frac < 1.0f))
        return at_fail(AT_ERR_ARG, "validation fraction %g must be in (0, 1)", (double)frac);
    int n = train->n;
    long nval = lround((double)frac * n);
    if (nval < 1 || nval >= n)
        return at_fail(AT_ERR_ARG,
                       "validation fraction %g of %d samples leaves %ld for validation and %ld for "
                       "training; both need at least one",
                       (double)frac, n, nval, (long)n - nval);
    /* Build val fully before touching train, so a failure leaves train intact. */
    int32_t *order = at_alloc((size_t)n * sizeof *order, "split order");
    uint8_t *to_val = at_calloc((size_t)n, 1, "split mask");
    at_dataset v;
    at_status s = (order && to_val) ? alloc_like(&v, train, (int)nval) : AT_ERR_NOMEM;
    if (s != AT_OK) {
        free(order);
        free(to_val);
        return s;
    }
    at_rng r;
    at_rng_seed(&r, seed);
    for (int i = 0; i < n; i++) order[i] = i;
    at_rng_shuffle(&r, order, n);
    for (long i = 0; i < nval; i++) to_val[order[i]] = 1;
    /* Both halves keep the original relative order; train is compacted in place (the
     * destination never passes the source). Its buffers keep their size: not worth a copy. */
    int nv = 0, nt = 0;
    for (int i = 0; i < n; i++) {
        if (to_val[i]) copy_sample(&v, nv++, train, i);
        else copy_sample(train, nt++, train, i);
    }
    train->n = nt;
    *val = v;
    free(order);
    free(to_val);
    return AT_OK;
}

at_status at_dataset_truncate(at_dataset *ds, int n) {
    if (!ds) return at_fail(AT_ERR_ARG, "at_dataset_truncate: dataset is NULL");
    if (n < 0 || n > ds->n)
        return at_fail(AT_ERR_ARG, "cannot keep %d samples of a dataset of %d", n, ds->n);
    ds->n = n; /* the tail stays allocated until at_dataset_free */
    return AT_OK;
}

at_status at_dataset_keep_range(at_dataset *ds, int first, int n) {
    if (!ds) return at_fail(AT_ERR_ARG, "at_dataset_keep_range: dataset is NULL");
    if (first < 0 || n < 0 || first > ds->n || n > ds->n - first)
        return at_fail(AT_ERR_ARG, "cannot keep samples %d to %d of a dataset of %d", first,
                       first + n - 1, ds->n);
    const size_t d = (size_t)at_dataset_sample_size(ds), k = (size_t)ds->target_dim;
    /* Moved to the front in place; the tail stays allocated until at_dataset_free. */
    if (ds->images) memmove(ds->images, ds->images + (size_t)first * d, (size_t)n * d);
    if (ds->features)
        memmove(ds->features, ds->features + (size_t)first * d, (size_t)n * d * sizeof(float));
    if (ds->labels) memmove(ds->labels, ds->labels + first, (size_t)n * sizeof(int32_t));
    if (ds->targets)
        memmove(ds->targets, ds->targets + (size_t)first * k, (size_t)n * k * sizeof(float));
    ds->n = n;
    return AT_OK;
}

/* ---------------------------------------------------------------- batches */

void at_dataset_batch(const at_dataset *ds, const int32_t *idx, int n, float *x, int32_t *y,
                      float *t) {
    size_t d = (size_t)at_dataset_sample_size(ds), k = (size_t)ds->target_dim;
    for (int i = 0; i < n; i++) {
        size_t j = (size_t)idx[i];
        if (x && ds->images) {
            /* Division, not multiplication by 1/255: 255 must map to exactly 1.0f. */
            const uint8_t *src = ds->images + j * d;
            float *dst = x + (size_t)i * d;
            for (size_t e = 0; e < d; e++) dst[e] = (float)src[e] / 255.0f;
        } else if (x && ds->features) {
            memcpy(x + (size_t)i * d, ds->features + j * d, d * sizeof(float));
        }
        if (y && ds->labels) y[i] = ds->labels[j];
        if (t && ds->targets) memcpy(t + (size_t)i * k, ds->targets + j * k, k * sizeof(float));
    }
}
