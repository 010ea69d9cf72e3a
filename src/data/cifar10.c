/* CIFAR-10, binary version (cifar-10-binary.tar.gz): each batch file is a run of 3073-byte
 * records, one label byte (0..9) then a 3x32x32 image stored channel-major (CHW), which is
 * already the NCHW layout the library uses. The official batches hold 10000 records each;
 * smaller files of whole records are accepted so tests and subsets work. */
#include "data_internal.h"

#include <limits.h>
#include <string.h>

#define CIFAR_PIXELS 3072
#define CIFAR_RECORD (1 + CIFAR_PIXELS)
#define CIFAR_CLASSES 10
/* No batch file is anywhere near this; it bounds what a wrong path can make us read. */
#define CIFAR_MAX_FILE ((size_t)1 << 31)

/* Appends the records of one batch file to ds (images and labels grown by realloc). */
static at_status append_batch(at_dataset *ds, const char *path) {
    gzFile f;
    at_status s = at_gz_open(path, &f);
    if (s != AT_OK) return s;
    uint8_t *buf;
    size_t len;
    s = at_gz_read_upto(f, path, CIFAR_MAX_FILE, &buf, &len);
    gzclose(f);
    if (s != AT_OK) return s;
    if (len == 0 || len % CIFAR_RECORD != 0 || len == CIFAR_MAX_FILE) {
        free(buf);
        if (len == 0) return at_fail(AT_ERR_FORMAT, "%s: empty file (expected CIFAR-10 records)", path);
        return at_fail(AT_ERR_FORMAT,
                       "%s: %zu bytes is not a whole number of %d-byte CIFAR-10 records "
                       "(1 label + 3072 pixels): truncated or not the binary version",
                       path, len, CIFAR_RECORD);
    }
    size_t records = len / CIFAR_RECORD;
    if (records > (size_t)(INT_MAX - ds->n)) {
        free(buf);
        return at_fail(AT_ERR_FORMAT, "%s: too many records", path);
    }
    for (size_t r = 0; r < records; r++) {
        if (buf[r * CIFAR_RECORD] >= CIFAR_CLASSES) {
            at_status e = at_fail(AT_ERR_FORMAT, "%s: record %zu has label %d (CIFAR-10 labels are 0..9)",
                                  path, r, buf[r * CIFAR_RECORD]);
            free(buf);
            return e;
        }
    }
    size_t n = (size_t)ds->n + records;
    uint8_t *images = realloc(ds->images, n * CIFAR_PIXELS);
    if (images) ds->images = images;
    int32_t *labels = images ? realloc(ds->labels, n * sizeof *labels) : NULL;
    if (!labels) {
        free(buf);
        return at_fail(AT_ERR_NOMEM, "out of memory loading %s", path);
    }
    ds->labels = labels;
    for (size_t r = 0; r < records; r++) {
        const uint8_t *rec = buf + r * CIFAR_RECORD;
        labels[ds->n + r] = rec[0];
        memcpy(images + ((size_t)ds->n + r) * CIFAR_PIXELS, rec + 1, CIFAR_PIXELS);
    }
    ds->n = (int)n;
    free(buf);
    return AT_OK;
}

at_status at_cifar10_load(at_dataset *ds, const char *dir, bool train) {
    if (!ds || !dir) return at_fail(AT_ERR_ARG, "at_cifar10_load: dataset and directory are required");
    memset(ds, 0, sizeof *ds);
    static const char *const train_files[] = {"data_batch_1.bin", "data_batch_2.bin",
                                              "data_batch_3.bin", "data_batch_4.bin",
                                              "data_batch_5.bin"};
    static const char *const test_files[] = {"test_batch.bin"};
    const char *const *files = train ? train_files : test_files;
    int nfiles = train ? 5 : 1;
    char path[4096];
    at_status s = AT_OK;
    for (int i = 0; i < nfiles && s == AT_OK; i++) {
        s = at_path_join(path, sizeof path, dir, files[i]);
        if (s == AT_OK) s = append_batch(ds, path);
    }
    if (s != AT_OK) {
        at_dataset_free(ds);
        return s;
    }
    ds->c = 3;
    ds->h = 32;
    ds->w = 32;
    ds->num_classes = CIFAR_CLASSES;
    return AT_OK;
}
