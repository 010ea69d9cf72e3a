/* Datasets: ownership, splitting and batching. The sources that fill them: sources.c. */
#include "data_internal.h"

#include <math.h>
#include <string.h>

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

/* Sample j of ds into row i of x, y and t (each may be NULL). */
static void gather_sample(const at_dataset *ds, size_t j, int i, float *x, int32_t *y, float *t) {
    const size_t d = (size_t)at_dataset_sample_size(ds), k = (size_t)ds->target_dim;
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

void at_dataset_batch(const at_dataset *ds, const int32_t *idx, int n, float *x, int32_t *y,
                      float *t) {
    for (int i = 0; i < n; i++) gather_sample(ds, (size_t)idx[i], i, x, y, t);
}

void at_dataset_range(const at_dataset *ds, int first, int n, float *x, int32_t *y, float *t) {
    for (int i = 0; i < n; i++) gather_sample(ds, (size_t)first + (size_t)i, i, x, y, t);
}
