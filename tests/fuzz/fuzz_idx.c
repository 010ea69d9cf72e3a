/* Fuzz target: IDX images + labels, plain and gzip (at_idx_load).
 *
 * The first byte chooses the layout: bit 0, which file receives the rest of the input (images
 * or labels); bit 1, whether that file is gzipped; bit 2, whether the companion file is. The
 * companion is a small valid file derived from the input's header (the same count), so that a
 * well-formed fuzzed file reaches the code after both headers: the count check, the label scan
 * and batching. */
#include "fuzz_common.h"

#include <stdlib.h>
#include <string.h>

/* A companion never holds more than this many samples (the fuzzed header may claim 2^31). */
#define COMPANION_MAX 4096u

static uint32_t be32_at(const uint8_t *p, size_t size, size_t off) {
    if (size < off + 4) return 1;
    return (uint32_t)p[off] << 24 | (uint32_t)p[off + 1] << 16 | (uint32_t)p[off + 2] << 8 | p[off + 3];
}

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

static void write_file(const char *path, const uint8_t *data, size_t n, bool gz) {
    if (gz) fuzz_write_gz(path, data, n);
    else fuzz_write(path, data, n);
}

/* Labels file for `count` samples, values cycling through the input's bytes. */
static uint8_t *companion_labels(uint32_t count, const uint8_t *data, size_t size, size_t *len) {
    count = count > COMPANION_MAX ? COMPANION_MAX : count;
    uint8_t *f = malloc(8 + (size_t)count);
    if (!f) fuzz_fail("out of memory", "labels");
    put_be32(f, 0x801);
    put_be32(f + 4, count);
    for (uint32_t i = 0; i < count; i++) f[8 + i] = size ? data[i % size] : 0;
    *len = 8 + (size_t)count;
    return f;
}

/* Images file for `count` samples of 2x3 pixels. */
static uint8_t *companion_images(uint32_t count, size_t *len) {
    count = count > COMPANION_MAX ? COMPANION_MAX : count;
    size_t n = 16 + (size_t)count * 6;
    uint8_t *f = calloc(1, n);
    if (!f) fuzz_fail("out of memory", "images");
    put_be32(f, 0x803);
    put_be32(f + 4, count);
    put_be32(f + 8, 2);
    put_be32(f + 12, 3);
    *len = n;
    return f;
}

/* Everything a loaded dataset promises: every label in [0, num_classes), every pixel readable. */
static void check_dataset(const at_dataset *ds) {
    if (ds->n <= 0 || ds->c != 1 || ds->h <= 0 || ds->w <= 0 || ds->num_classes <= 0)
        fuzz_fail("implausible dataset after a successful load", NULL);
    for (int i = 0; i < ds->n; i++)
        if (ds->labels[i] < 0 || ds->labels[i] >= ds->num_classes) fuzz_fail("label out of range", NULL);
    const int d = at_dataset_sample_size(ds);
    float *x = malloc((size_t)d * sizeof *x);
    int32_t y;
    if (!x) fuzz_fail("out of memory", "batch");
    for (int32_t i = 0; i < ds->n; i++) at_dataset_batch(ds, &i, 1, x, &y, NULL);
    free(x);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const uint8_t mode = data[0];
    data++, size--;
    const bool fuzz_labels = mode & 1, gz = mode & 2, companion_gz = mode & 4;
    char images[512], labels[512];
    fuzz_path(images, sizeof images, "images.idx");
    fuzz_path(labels, sizeof labels, "labels.idx");
    uint32_t count = be32_at(data, size, 4);
    size_t len;
    uint8_t *companion = fuzz_labels ? companion_images(count, &len)
                                     : companion_labels(count, data, size, &len);
    write_file(fuzz_labels ? labels : images, data, size, gz);
    write_file(fuzz_labels ? images : labels, companion, len, companion_gz);
    free(companion);
    at_dataset ds;
    at_status s = at_idx_load(&ds, images, labels);
    fuzz_check_message(s, "at_idx_load");
    if (s == AT_OK) {
        check_dataset(&ds);
        at_dataset_free(&ds);
    }
    return 0;
}
