/* IDX files (LeCun's MNIST format, also Fashion-MNIST): a big-endian magic 0x000008NN (0x08 =
 * uint8 data, NN = number of dimensions), NN big-endian uint32 sizes, then the data row-major.
 * Every size is checked against what the file really holds before it is trusted. */
#include "data_internal.h"

#include <limits.h>
#include <string.h>

#define IDX_IMAGES_MAGIC 0x00000803u /* uint8, 3 dimensions: count, rows, cols */
#define IDX_LABELS_MAGIC 0x00000801u /* uint8, 1 dimension: count */
/* A side longer than this is a corrupt header, not a picture. */
#define IDX_MAX_SIDE 16384u

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static const char *magic_hint(uint32_t m) {
    if (m == IDX_IMAGES_MAGIC) return " (that is an IDX images file)";
    if (m == IDX_LABELS_MAGIC) return " (that is an IDX labels file)";
    if ((m & 0xFFFFFF00u) == 0x00000800u) return " (an IDX uint8 file of another rank)";
    if ((m & 0xFFFF0000u) == 0) return " (an IDX file of another element type; only uint8 is supported)";
    return " (not an IDX file)";
}

/* Reads and checks the magic and the `ndim` sizes (all non-zero) of an IDX header. */
static at_status read_header(gzFile f, const char *path, uint32_t magic, uint32_t *dims, int ndim) {
    uint8_t hdr[16];
    size_t want = 4 + 4 * (size_t)ndim, got;
    at_status s = at_gz_read(f, path, hdr, want, &got);
    if (s != AT_OK) return s;
    if (got == 0) return at_fail(AT_ERR_FORMAT, "%s: empty file (expected an IDX header)", path);
    if (got < 4)
        return at_fail(AT_ERR_FORMAT, "%s: truncated: expected %zu header bytes, got %zu", path,
                       want, got);
    uint32_t m = be32(hdr);
    if (m != magic)
        return at_fail(AT_ERR_FORMAT, "%s: bad magic number 0x%08x, expected 0x%08x%s", path,
                       (unsigned)m, (unsigned)magic, magic_hint(m));
    if (got < want)
        return at_fail(AT_ERR_FORMAT, "%s: truncated: expected %zu header bytes, got %zu", path,
                       want, got);
    for (int i = 0; i < ndim; i++) {
        dims[i] = be32(hdr + 4 + 4 * i);
        if (dims[i] == 0)
            return at_fail(AT_ERR_FORMAT, "%s: dimension %d of the header is 0", path, i);
    }
    if (dims[0] > (uint32_t)INT_MAX)
        return at_fail(AT_ERR_FORMAT, "%s: implausible sample count %u", path, (unsigned)dims[0]);
    return AT_OK;
}

/* Reads exactly `expected` payload bytes: fewer means truncated, more means trailing junk. */
static at_status read_payload(gzFile f, const char *path, size_t expected, const char *what,
                              uint8_t **out) {
    uint8_t *buf;
    size_t len;
    at_status s = at_gz_read_upto(f, path, expected + 1, &buf, &len);
    if (s != AT_OK) return s;
    if (len != expected) {
        free(buf);
        if (len < expected)
            return at_fail(AT_ERR_FORMAT, "%s: truncated: expected %zu bytes of %s, got %zu", path,
                           expected, what, len);
        return at_fail(AT_ERR_FORMAT, "%s: unexpected data after the %zu bytes of %s the header announces",
                       path, expected, what);
    }
    *out = buf;
    return AT_OK;
}

static at_status load_images(const char *path, uint32_t dims[3], uint8_t **pixels) {
    gzFile f;
    at_status s = at_gz_open(path, &f);
    if (s != AT_OK) return s;
    s = read_header(f, path, IDX_IMAGES_MAGIC, dims, 3);
    if (s == AT_OK && (dims[1] > IDX_MAX_SIDE || dims[2] > IDX_MAX_SIDE))
        s = at_fail(AT_ERR_FORMAT, "%s: implausible image size %ux%u", path, (unsigned)dims[1],
                    (unsigned)dims[2]);
    if (s == AT_OK) {
        uint64_t total = (uint64_t)dims[0] * dims[1] * dims[2];
        if (total >= SIZE_MAX)
            s = at_fail(AT_ERR_FORMAT, "%s: %llu pixels cannot be addressed", path,
                        (unsigned long long)total);
        else
            s = read_payload(f, path, (size_t)total, "pixels", pixels);
    }
    gzclose(f);
    return s;
}

static at_status load_labels(const char *path, uint32_t *count, uint8_t **labels) {
    gzFile f;
    at_status s = at_gz_open(path, &f);
    if (s != AT_OK) return s;
    s = read_header(f, path, IDX_LABELS_MAGIC, count, 1);
    if (s == AT_OK) s = read_payload(f, path, *count, "labels", labels);
    gzclose(f);
    return s;
}

at_status at_idx_load(at_dataset *ds, const char *images_path, const char *labels_path) {
    if (!ds || !images_path || !labels_path)
        return at_fail(AT_ERR_ARG, "at_idx_load: dataset and both paths are required");
    memset(ds, 0, sizeof *ds);
    uint32_t dims[3] = {0, 0, 0}, nlabels = 0;
    uint8_t *pixels = NULL, *raw = NULL;
    at_status s = load_images(images_path, dims, &pixels);
    if (s == AT_OK) s = load_labels(labels_path, &nlabels, &raw);
    if (s == AT_OK && nlabels != dims[0])
        s = at_fail(AT_ERR_FORMAT, "%s has %u images but %s has %u labels", images_path,
                    (unsigned)dims[0], labels_path, (unsigned)nlabels);
    int32_t *labels = NULL;
    if (s == AT_OK && !(labels = at_alloc((size_t)nlabels * sizeof *labels, labels_path)))
        s = AT_ERR_NOMEM;
    if (s != AT_OK) {
        free(pixels);
        free(raw);
        return s;
    }
    int max_label = 0;
    for (uint32_t i = 0; i < nlabels; i++) {
        labels[i] = raw[i];
        max_label = AT_MAX(max_label, (int)raw[i]);
    }
    free(raw);
    ds->n = (int)dims[0];
    ds->c = 1;
    ds->h = (int)dims[1];
    ds->w = (int)dims[2];
    ds->num_classes = max_label + 1;
    ds->images = pixels;
    ds->labels = labels;
    return AT_OK;
}
