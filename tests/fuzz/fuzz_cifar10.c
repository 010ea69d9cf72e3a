/* Fuzz target: CIFAR-10 binary batches (at_cifar10_load on a directory).
 *
 * The first byte chooses the layout: bit 0, the test split (test_batch.bin holds the rest of the
 * input) or the training split (data_batch_1.bin holds it; batches 2 to 5 hold one valid record
 * each, so that appending after the fuzzed batch is reached); bit 1, the fuzzed batch gzipped
 * (the loader reads through zlib); bit 2, data_batch_5.bin missing (a failure after four
 * batches were appended). */
#define _POSIX_C_SOURCE 200809L /* mkdir */
#include "fuzz_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define RECORD 3073

static void batch_path(char *buf, size_t cap, const char *dir, const char *name) {
    if (snprintf(buf, cap, "%s/%s", dir, name) >= (int)cap) fuzz_fail("path too long", name);
}

/* data_batch_2..5.bin: one record each (label i, pixels i), or removed. */
static void write_other_batches(const char *dir, bool drop_last) {
    uint8_t record[RECORD];
    char path[600], name[32];
    for (int i = 2; i <= 5; i++) {
        snprintf(name, sizeof name, "data_batch_%d.bin", i);
        batch_path(path, sizeof path, dir, name);
        if (i == 5 && drop_last) {
            fuzz_remove(path);
            continue;
        }
        memset(record, i, sizeof record);
        record[0] = (uint8_t)i;
        fuzz_write(path, record, sizeof record);
    }
}

static void check_dataset(const at_dataset *ds) {
    if (ds->n <= 0 || ds->c != 3 || ds->h != 32 || ds->w != 32 || ds->num_classes != 10)
        fuzz_fail("implausible dataset after a successful load", NULL);
    float *x = malloc(3072 * sizeof *x);
    if (!x) fuzz_fail("out of memory", "batch");
    for (int32_t i = 0; i < ds->n; i++) {
        int32_t y;
        at_dataset_batch(ds, &i, 1, x, &y, NULL);
        if (y < 0 || y >= 10) fuzz_fail("label out of range", NULL);
    }
    free(x);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const uint8_t mode = data[0];
    data++, size--;
    const bool train = !(mode & 1), gz = mode & 2, drop_last = mode & 4;
    char dir[512], path[600];
    fuzz_path(dir, sizeof dir, "cifar");
    mkdir(dir, 0777);
    batch_path(path, sizeof path, dir, train ? "data_batch_1.bin" : "test_batch.bin");
    if (gz) fuzz_write_gz(path, data, size);
    else fuzz_write(path, data, size);
    if (train) write_other_batches(dir, drop_last);
    at_dataset ds;
    at_status s = at_cifar10_load(&ds, dir, train);
    fuzz_check_message(s, "at_cifar10_load");
    if (s == AT_OK) {
        check_dataset(&ds);
        at_dataset_free(&ds);
    }
    return 0;
}
