/* Data loading: IDX (gzipped and plain), CIFAR-10 binary, the synthetic regression task,
 * splitting / truncating / batching, and malformed input of every kind we can think of. */
#define _POSIX_C_SOURCE 200809L
#include "advtrain.h"
#include "testutil.h"

#include <stdint.h>
#include <time.h>
#include <zlib.h>

/* ---------------------------------------------------------------- temp files */

static char tmp_root[64];
static char created[128][512]; /* files and dirs to remove at the end, in creation order */
static int ncreated;

static const char *tpath(const char *rel) {
    static char buf[8][512];
    static int slot;
    char *out = buf[slot++ & 7];
    snprintf(out, 512, "%s/%s", tmp_root, rel);
    return out;
}

static void remember(const char *path) {
    if (ncreated < 128) snprintf(created[ncreated++], 512, "%s", path);
}

static void make_dir(const char *rel) {
    const char *p = tpath(rel);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", p);
    CHECK(system(cmd) == 0);
    remember(p);
}

static void write_raw(const char *rel, const void *data, size_t len, int gz) {
    const char *p = tpath(rel);
    if (gz) {
        gzFile f = gzopen(p, "wb");
        CHECK(f != NULL);
        if (!f) return;
        if (len) CHECK(gzwrite(f, data, (unsigned)len) == (int)len);
        CHECK(gzclose(f) == Z_OK);
    } else {
        FILE *f = fopen(p, "wb");
        CHECK(f != NULL);
        if (!f) return;
        if (len) CHECK(fwrite(data, 1, len, f) == len);
        CHECK(fclose(f) == 0);
    }
    remember(p);
}

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Writes an IDX file: magic, ndim sizes, then `len` payload bytes (which may disagree with the
 * sizes on purpose). */
static void write_idx(const char *rel, int gz, uint32_t magic, const uint32_t *dims, int ndim,
                      const uint8_t *payload, size_t len) {
    size_t hdr = 4 + 4 * (size_t)ndim;
    uint8_t *buf = malloc(hdr + len + 1);
    put_be32(buf, magic);
    for (int i = 0; i < ndim; i++) put_be32(buf + 4 + 4 * i, dims[i]);
    if (len) memcpy(buf + hdr, payload, len);
    write_raw(rel, buf, hdr + len, gz);
    free(buf);
}

static void write_images(const char *rel, int gz, uint32_t n, uint32_t rows, uint32_t cols,
                         const uint8_t *px, size_t len) {
    uint32_t dims[3] = {n, rows, cols};
    write_idx(rel, gz, 0x803, dims, 3, px, len);
}

static void write_labels(const char *rel, int gz, uint32_t n, const uint8_t *lab, size_t len) {
    write_idx(rel, gz, 0x801, &n, 1, lab, len);
}

static void cleanup(void) {
    for (int i = ncreated - 1; i >= 0; i--) remove(created[i]);
    remove(tmp_root);
}

/* Expects `s` to be `want` with a message containing `needle` (and the dataset left empty). */
#define CHECK_FAIL(call, want, needle)                                                          \
    do {                                                                                        \
        at_status tf_s = (call);                                                                \
        CHECK_MSG(tf_s == (want), "%s gave %s, expected %s: %s", #call, at_status_name(tf_s),  \
                  at_status_name(want), at_error_message());                                    \
        CHECK_MSG(strstr(at_error_message(), (needle)) != NULL, "message '%s' lacks '%s'",      \
                  at_error_message(), (needle));                                                \
    } while (0)

static int dataset_is_empty(const at_dataset *ds) {
    return ds->n == 0 && !ds->images && !ds->labels && !ds->features && !ds->targets;
}

/* ---------------------------------------------------------------- a small IDX set */

enum { SN = 5, SR = 3, SC = 4 };
static uint8_t small_px[SN * SR * SC];
static const uint8_t small_lab[SN] = {0, 3, 1, 2, 3};
static const uint8_t test_lab[2] = {1, 4};

static void write_small_set(const char *dir, int gz) {
    char a[256], b[256], c[256], d[256];
    const char *ext = gz ? ".gz" : "";
    snprintf(a, sizeof a, "%s/train-images-idx3-ubyte%s", dir, ext);
    snprintf(b, sizeof b, "%s/train-labels-idx1-ubyte%s", dir, ext);
    snprintf(c, sizeof c, "%s/t10k-images-idx3-ubyte%s", dir, ext);
    snprintf(d, sizeof d, "%s/t10k-labels-idx1-ubyte%s", dir, ext);
    make_dir(dir);
    write_images(a, gz, SN, SR, SC, small_px, sizeof small_px);
    write_labels(b, gz, SN, small_lab, SN);
    write_images(c, gz, 2, SR, SC, small_px, 2 * SR * SC);
    write_labels(d, gz, 2, test_lab, 2);
}

static void check_small(const at_dataset *ds) {
    CHECK(ds->n == SN && ds->c == 1 && ds->h == SR && ds->w == SC);
    CHECK(ds->target_dim == 0);
    CHECK(ds->images && ds->labels && !ds->features && !ds->targets);
    if (ds->images) CHECK(memcmp(ds->images, small_px, sizeof small_px) == 0);
    for (int i = 0; ds->labels && i < SN; i++) CHECK(ds->labels[i] == small_lab[i]);
    CHECK(at_dataset_sample_size(ds) == SR * SC);
}

static void test_idx_roundtrip(void) {
    for (int i = 0; i < SN * SR * SC; i++) small_px[i] = (uint8_t)(i * 37 % 256);
    small_px[0] = 0;
    small_px[1] = 255;
    write_small_set("gz", 1);
    write_small_set("plain", 0);
    for (int gz = 0; gz < 2; gz++) {
        at_dataset ds;
        const char *img = tpath(gz ? "gz/train-images-idx3-ubyte.gz" : "plain/train-images-idx3-ubyte");
        const char *lab = tpath(gz ? "gz/train-labels-idx1-ubyte.gz" : "plain/train-labels-idx1-ubyte");
        CHECK_OK(at_idx_load(&ds, img, lab));
        check_small(&ds);
        CHECK(ds.num_classes == 4); /* max label + 1 */

        /* Batch: bytes / 255 exactly, labels gathered, order follows idx. */
        int32_t idx[2] = {0, 3}, y[2] = {-1, -1};
        float x[2 * SR * SC];
        at_dataset_batch(&ds, idx, 2, x, y, NULL);
        CHECK(x[0] == 0.0f && x[1] == 1.0f);
        for (int e = 0; e < SR * SC; e++) {
            CHECK(x[e] == (float)small_px[e] / 255.0f);
            CHECK(x[SR * SC + e] == (float)small_px[3 * SR * SC + e] / 255.0f);
            CHECK(x[e] >= 0.0f && x[e] <= 1.0f);
        }
        CHECK(y[0] == small_lab[0] && y[1] == small_lab[3]);
        at_dataset_free(&ds);
        CHECK(dataset_is_empty(&ds));
    }
    /* Every directory form, gz and plain. */
    static const char *const forms[] = {"idx:%s", "mnist:%s", "fashion-mnist:%s"};
    for (int gz = 0; gz < 2; gz++)
        for (int f = 0; f < 3; f++) {
            char src[600];
            snprintf(src, sizeof src, forms[f], tpath(gz ? "gz" : "plain"));
            at_data d;
            CHECK_OK(at_data_load(&d, src));
            check_small(&d.train);
            CHECK(d.test.n == 2 && d.test.h == SR && d.test.w == SC);
            CHECK(d.train.num_classes == 5 && d.test.num_classes == 5); /* test has label 4 */
            CHECK(strlen(d.name) > 0);
            at_data_free(&d);
        }
}

/* ---------------------------------------------------------------- split / truncate */

static void check_split_images(uint64_t seed, int32_t *val_ids_out) {
    enum { N = 100 };
    uint8_t px[N * 4], lab[N];
    for (int i = 0; i < N; i++) {
        for (int e = 0; e < 4; e++) px[i * 4 + e] = (uint8_t)i; /* the sample's id */
        lab[i] = (uint8_t)(i % 7);
    }
    write_images("split-img", 0, N, 2, 2, px, sizeof px);
    write_labels("split-lab", 0, N, lab, N);
    at_dataset tr, va;
    CHECK_OK(at_idx_load(&tr, tpath("split-img"), tpath("split-lab")));
    CHECK_OK(at_dataset_split(&tr, &va, 0.2f, seed));
    CHECK(tr.n == 80 && va.n == 20);
    CHECK(va.c == 1 && va.h == 2 && va.w == 2 && va.num_classes == 7);
    int seen[N] = {0};
    for (int i = 0; i < tr.n; i++) {
        int id = tr.images[i * 4];
        seen[id]++;
        CHECK(tr.labels[i] == id % 7 && tr.images[i * 4 + 3] == id);
        if (i) CHECK(tr.images[i * 4] > tr.images[(i - 1) * 4]); /* original relative order */
    }
    for (int i = 0; i < va.n; i++) {
        int id = va.images[i * 4];
        seen[id]++;
        CHECK(va.labels[i] == id % 7);
        val_ids_out[i] = id;
    }
    for (int i = 0; i < N; i++) CHECK(seen[i] == 1); /* train + val is a permutation */

    CHECK_OK(at_dataset_truncate(&tr, 3));
    CHECK(tr.n == 3);
    CHECK_FAIL(at_dataset_truncate(&tr, 4), AT_ERR_ARG, "4");
    CHECK_FAIL(at_dataset_truncate(&tr, -1), AT_ERR_ARG, "-1");
    /* A shard: samples [first, first + n) move to the front, labels with their images. */
    int ids[20];
    for (int i = 0; i < 20; i++) ids[i] = va.images[i * 4];
    CHECK_OK(at_dataset_keep_range(&va, 5, 10));
    CHECK(va.n == 10);
    for (int i = 0; i < 10; i++)
        CHECK(va.images[i * 4] == ids[5 + i] && va.images[i * 4 + 3] == ids[5 + i] &&
              va.labels[i] == ids[5 + i] % 7);
    CHECK_FAIL(at_dataset_keep_range(&va, 4, 7), AT_ERR_ARG, "10");
    CHECK_FAIL(at_dataset_keep_range(&va, -1, 2), AT_ERR_ARG, "-1");
    CHECK_OK(at_dataset_keep_range(&va, 10, 0));
    CHECK(va.n == 0);
    at_dataset_free(&tr);
    at_dataset_free(&va);
}

static void test_split(void) {
    int32_t a[20], b[20], c[20];
    check_split_images(7, a);
    check_split_images(7, b);
    check_split_images(8, c);
    CHECK(memcmp(a, b, sizeof a) == 0); /* same seed, same split */
    CHECK(memcmp(a, c, sizeof a) != 0); /* another seed, another split */

    at_dataset tr, va;
    CHECK_OK(at_idx_load(&tr, tpath("split-img"), tpath("split-lab")));
    CHECK_FAIL(at_dataset_split(&tr, &va, 0.0f, 1), AT_ERR_ARG, "fraction");
    CHECK_FAIL(at_dataset_split(&tr, &va, 1.0f, 1), AT_ERR_ARG, "fraction");
    CHECK_FAIL(at_dataset_split(&tr, &va, NAN, 1), AT_ERR_ARG, "fraction");
    CHECK_FAIL(at_dataset_split(&tr, &va, 0.001f, 1), AT_ERR_ARG, "100 samples");
    CHECK_FAIL(at_dataset_split(&tr, &tr, 0.5f, 1), AT_ERR_ARG, "distinct");
    CHECK(tr.n == 100);
    at_dataset_free(&tr);
}

/* ---------------------------------------------------------------- synthetic */

/* Least squares y ~ W x + b on ds (normal equations, doubles); stores the fit in wb (10 rows
 * of 11: weights then bias). */
static void fit_linear(const at_dataset *ds, double wb[10][11]) {
    enum { P = 11 };
    double a[P][P] = {{0}}, rhs[10][P] = {{0}};
    for (int i = 0; i < ds->n; i++) {
        double z[P];
        for (int j = 0; j < 10; j++) z[j] = ds->features[i * 10 + j];
        z[10] = 1;
        for (int p = 0; p < P; p++) {
            for (int q = 0; q < P; q++) a[p][q] += z[p] * z[q];
            for (int o = 0; o < 10; o++) rhs[o][p] += z[p] * ds->targets[i * 10 + o];
        }
    }
    /* Gauss-Jordan on [a | rhs^T]. */
    for (int col = 0; col < P; col++) {
        int piv = col;
        for (int r = col + 1; r < P; r++)
            if (fabs(a[r][col]) > fabs(a[piv][col])) piv = r;
        for (int q = 0; q < P; q++) {
            double t = a[col][q]; a[col][q] = a[piv][q]; a[piv][q] = t;
        }
        for (int o = 0; o < 10; o++) {
            double t = rhs[o][col]; rhs[o][col] = rhs[o][piv]; rhs[o][piv] = t;
        }
        for (int r = 0; r < P; r++) {
            if (r == col) continue;
            double f = a[r][col] / a[col][col];
            for (int q = 0; q < P; q++) a[r][q] -= f * a[col][q];
            for (int o = 0; o < 10; o++) rhs[o][r] -= f * rhs[o][col];
        }
    }
    for (int o = 0; o < 10; o++)
        for (int p = 0; p < P; p++) wb[o][p] = rhs[o][p] / a[p][p];
}

static double residual_rms(const at_dataset *ds, double wb[10][11]) {
    double ss = 0;
    for (int i = 0; i < ds->n; i++)
        for (int o = 0; o < 10; o++) {
            double pred = wb[o][10];
            for (int j = 0; j < 10; j++) pred += wb[o][j] * ds->features[i * 10 + j];
            double r = ds->targets[i * 10 + o] - pred;
            ss += r * r;
        }
    return sqrt(ss / (ds->n * 10.0));
}

static int same_dataset(const at_dataset *a, const at_dataset *b) {
    return a->n == b->n && memcmp(a->features, b->features, sizeof(float) * a->n * 10) == 0 &&
           memcmp(a->targets, b->targets, sizeof(float) * a->n * 10) == 0;
}

static void test_synthetic(void) {
    at_data a, b, c, d;
    CHECK_OK(at_synthetic_load(&a, 1));
    CHECK_OK(at_synthetic_load(&b, 1));
    CHECK_OK(at_synthetic_load(&c, 2));
    CHECK_OK(at_data_load(&d, "synthetic:1"));
    CHECK(strcmp(a.name, "synthetic") == 0);
    CHECK(a.train.n == 40 && a.test.n == 2000);
    CHECK(a.train.c == 10 && a.train.h == 1 && a.train.w == 1 && a.test.c == 10);
    CHECK(a.train.num_classes == 0 && a.train.target_dim == 10 && a.test.target_dim == 10);
    CHECK(!a.train.images && !a.train.labels && a.train.features && a.train.targets);
    CHECK(at_dataset_sample_size(&a.train) == 10);
    CHECK(same_dataset(&a.train, &b.train) && same_dataset(&a.test, &b.test));
    CHECK(same_dataset(&a.train, &d.train) && same_dataset(&a.test, &d.test));
    CHECK(!same_dataset(&a.test, &c.test));

    /* Inputs are standard normal. */
    double sum = 0, sq = 0;
    for (int i = 0; i < 2000 * 10; i++) {
        sum += a.test.features[i];
        sq += a.test.features[i] * (double)a.test.features[i];
    }
    CHECK_NEAR(sum / 20000, 0.0, 0.05);
    CHECK_NEAR(sq / 20000, 1.0, 0.05);

    /* A linear teacher with noise std 0.5: least squares on the test set leaves ~0.5, the same
     * fit explains the training set equally well (one teacher for both), and the fitted map is
     * sparse (about 30 of 100 weights clearly non-zero). The teacher of another seed differs. */
    double wa[10][11], wc[10][11];
    fit_linear(&a.test, wa);
    fit_linear(&c.test, wc);
    CHECK_NEAR(residual_rms(&a.test, wa), 0.5, 0.03);
    CHECK_NEAR(residual_rms(&a.train, wa), 0.5, 0.12);
    CHECK(residual_rms(&a.train, wc) > 0.8);
    int nonzero = 0;
    for (int o = 0; o < 10; o++)
        for (int j = 0; j < 10; j++) nonzero += fabs(wa[o][j]) > 0.1;
    CHECK_MSG(nonzero >= 20 && nonzero <= 40, "%d clearly non-zero teacher weights", nonzero);

    /* Split and batch work on float features / targets too. */
    at_dataset va;
    CHECK_OK(at_dataset_split(&b.train, &va, 0.25f, 3));
    CHECK(b.train.n == 30 && va.n == 10 && va.target_dim == 10 && va.c == 10);
    int found = 0;
    for (int i = 0; i < va.n; i++)
        for (int k = 0; k < a.train.n; k++)
            if (memcmp(va.features + i * 10, a.train.features + k * 10, 40) == 0 &&
                memcmp(va.targets + i * 10, a.train.targets + k * 10, 40) == 0) {
                found++;
                break;
            }
    CHECK(found == 10);
    int32_t idx[2] = {5, 1};
    float x[20], t[20];
    at_dataset_batch(&a.test, idx, 2, x, NULL, t);
    CHECK(memcmp(x, a.test.features + 50, 40) == 0 && memcmp(x + 10, a.test.features + 10, 40) == 0);
    CHECK(memcmp(t, a.test.targets + 50, 40) == 0 && memcmp(t + 10, a.test.targets + 10, 40) == 0);

    at_dataset_free(&va);
    at_data_free(&a);
    at_data_free(&b);
    at_data_free(&c);
    at_data_free(&d);
    CHECK(dataset_is_empty(&a.train) && dataset_is_empty(&a.test));

    at_data e;
    CHECK_OK(at_data_load(&e, "synthetic"));
    CHECK(e.train.n == 40);
    at_data_free(&e);
    CHECK_FAIL(at_data_load(&e, "synthetic:abc"), AT_ERR_ARG, "SEED");
    CHECK_FAIL(at_data_load(&e, "synthetic:"), AT_ERR_ARG, "SEED");
    CHECK_FAIL(at_data_load(&e, "synthetic:-1"), AT_ERR_ARG, "SEED");
}

/* ---------------------------------------------------------------- CIFAR-10 */

static void write_cifar(const char *rel, int records, int first_label, size_t extra) {
    size_t len = (size_t)records * 3073 + extra;
    uint8_t *buf = calloc(len + 1, 1);
    for (int r = 0; r < records; r++) {
        buf[r * 3073] = (uint8_t)(first_label + r);
        for (int e = 0; e < 3072; e++) buf[r * 3073 + 1 + e] = (uint8_t)(e + r);
    }
    write_raw(rel, buf, len, 0);
    free(buf);
}

static void test_cifar(void) {
    make_dir("cifar");
    char name[64];
    for (int b = 1; b <= 5; b++) {
        snprintf(name, sizeof name, "cifar/data_batch_%d.bin", b);
        write_cifar(name, 2, 2 * (b - 1), 0);
    }
    write_cifar("cifar/test_batch.bin", 3, 7, 0);

    at_dataset ds;
    CHECK_OK(at_cifar10_load(&ds, tpath("cifar"), true));
    CHECK(ds.n == 10 && ds.c == 3 && ds.h == 32 && ds.w == 32 && ds.num_classes == 10);
    for (int i = 0; i < ds.n; i++) {
        CHECK(ds.labels[i] == i % 10);
        /* record r of its file has pixel e = (e + r) & 255; r = i % 2 */
        CHECK(ds.images[(size_t)i * 3072 + 100] == (uint8_t)(100 + i % 2));
        CHECK(ds.images[(size_t)i * 3072 + 3071] == (uint8_t)(3071 + i % 2));
    }
    at_dataset_free(&ds);
    CHECK_OK(at_cifar10_load(&ds, tpath("cifar"), false));
    CHECK(ds.n == 3 && ds.labels[0] == 7 && ds.labels[2] == 9);
    at_dataset_free(&ds);

    char src[600];
    snprintf(src, sizeof src, "cifar10:%s", tpath("cifar"));
    at_data d;
    CHECK_OK(at_data_load(&d, src));
    CHECK(d.train.n == 10 && d.test.n == 3 && d.train.num_classes == 10);
    CHECK(strcmp(d.name, "cifar10") == 0);
    int32_t idx[1] = {4};
    float x[3072];
    int32_t y;
    at_dataset_batch(&d.train, idx, 1, x, &y, NULL);
    CHECK(y == 4 && x[0] == 0.0f && x[255] == 1.0f);
    at_data_free(&d);

    /* Wrong length, bad label, empty, missing. */
    write_cifar("cifar/test_batch.bin", 3, 7, 100);
    CHECK_FAIL(at_cifar10_load(&ds, tpath("cifar"), false), AT_ERR_FORMAT, "test_batch.bin");
    CHECK(strstr(at_error_message(), "9319 bytes") != NULL);
    CHECK(dataset_is_empty(&ds));
    write_cifar("cifar/test_batch.bin", 3, 8, 0); /* labels 8, 9, 10 */
    CHECK_FAIL(at_cifar10_load(&ds, tpath("cifar"), false), AT_ERR_FORMAT, "label 10");
    write_raw("cifar/test_batch.bin", "", 0, 0);
    CHECK_FAIL(at_cifar10_load(&ds, tpath("cifar"), false), AT_ERR_FORMAT, "empty");
    write_cifar("cifar/data_batch_4.bin", 2, 0, 3072); /* a record one byte short */
    CHECK_FAIL(at_cifar10_load(&ds, tpath("cifar"), true), AT_ERR_FORMAT, "data_batch_4.bin");
    CHECK(dataset_is_empty(&ds));
    remove(tpath("cifar/data_batch_5.bin"));
    CHECK_FAIL(at_data_load(&d, src), AT_ERR_FORMAT, "data_batch_4.bin");
    write_cifar("cifar/data_batch_4.bin", 2, 0, 0);
    CHECK_FAIL(at_data_load(&d, src), AT_ERR_IO, "data_batch_5.bin");
    CHECK(strstr(at_error_message(), "cifar-10-binary") != NULL); /* says how to get it */
    CHECK(dataset_is_empty(&d.train) && dataset_is_empty(&d.test));
}

/* ---------------------------------------------------------------- malformed IDX */

static void expect_idx_fail(const char *img, const char *lab, at_status want, const char *needle) {
    at_dataset ds;
    memset(&ds, 0xAB, sizeof ds); /* the loader must reset it even on failure */
    CHECK_FAIL(at_idx_load(&ds, tpath(img), tpath(lab)), want, needle);
    CHECK(dataset_is_empty(&ds));
}

static void test_bad_idx(void) {
    make_dir("bad");
    const char *good_img = "plain/train-images-idx3-ubyte", *good_lab = "plain/train-labels-idx1-ubyte";

    /* Missing file and missing directory. */
    expect_idx_fail("bad/nothing-here", good_lab, AT_ERR_IO, "bad/nothing-here");
    CHECK(strstr(at_error_message(), "No such file") != NULL);
    expect_idx_fail(good_img, "bad/no-labels", AT_ERR_IO, "bad/no-labels");
    char src[600];
    snprintf(src, sizeof src, "idx:%s", tpath("no-such-dir"));
    at_data d;
    CHECK_FAIL(at_data_load(&d, src), AT_ERR_IO, tpath("no-such-dir"));
    CHECK(strstr(at_error_message(), "train-images-idx3-ubyte") != NULL);
    CHECK(dataset_is_empty(&d.train) && dataset_is_empty(&d.test));
    /* A directory where a file should be. */
    expect_idx_fail("bad", good_lab, AT_ERR_IO, "bad");

    /* Wrong magic: labels passed as images, images as labels, garbage. */
    expect_idx_fail(good_lab, good_lab, AT_ERR_FORMAT, "bad magic");
    CHECK(strstr(at_error_message(), good_lab) != NULL);
    expect_idx_fail(good_img, good_img, AT_ERR_FORMAT, "0x00000803");
    uint32_t dims3[3] = {SN, SR, SC};
    write_idx("bad/magic", 0, 0x12345678, dims3, 3, small_px, sizeof small_px);
    expect_idx_fail("bad/magic", good_lab, AT_ERR_FORMAT, "bad/magic");
    write_idx("bad/float", 1, 0x00000D03, dims3, 3, small_px, sizeof small_px);
    expect_idx_fail("bad/float", good_lab, AT_ERR_FORMAT, "uint8");

    /* Truncated pixels, plain and gzipped (a short stream and a cut-off stream). */
    write_images("bad/short", 0, SN, SR, SC, small_px, 50);
    expect_idx_fail("bad/short", good_lab, AT_ERR_FORMAT, "truncated: expected 60 bytes of pixels, got 50");
    CHECK(strstr(at_error_message(), "bad/short") != NULL);
    write_images("bad/short.gz", 1, SN, SR, SC, small_px, 50);
    expect_idx_fail("bad/short.gz", good_lab, AT_ERR_FORMAT, "truncated: expected 60 bytes of pixels, got 50");
    CHECK(strstr(at_error_message(), "bad/short.gz") != NULL);
    {
        enum { BIG = 20000 };
        uint8_t *px = malloc(BIG);
        uint32_t x = 12345;
        for (int i = 0; i < BIG; i++) px[i] = (uint8_t)((x = x * 1103515245u + 12345u) >> 24);
        write_images("bad/cut.gz", 1, 100, 10, 20, px, BIG);
        FILE *f = fopen(tpath("bad/cut.gz"), "rb");
        uint8_t *gz = malloc(BIG * 2);
        size_t len = fread(gz, 1, BIG * 2, f);
        fclose(f);
        write_raw("bad/cut.gz", gz, len / 2, 0);
        expect_idx_fail("bad/cut.gz", good_lab, AT_ERR_FORMAT, "bad/cut.gz");
        CHECK(strstr(at_error_message(), "truncated") != NULL);
        /* Corrupt the deflate data instead of cutting it. */
        for (size_t i = 20; i < len - 8; i += 7) gz[i] ^= 0x5A;
        write_raw("bad/corrupt.gz", gz, len, 0);
        expect_idx_fail("bad/corrupt.gz", good_lab, AT_ERR_FORMAT, "bad/corrupt.gz");
        free(gz);
        free(px);
    }
    /* Truncated header, empty files, trailing junk. */
    write_raw("bad/hdr", "\0\0\x08\x03\0\0\0\x05\0\0", 10, 0);
    expect_idx_fail("bad/hdr", good_lab, AT_ERR_FORMAT, "truncated: expected 16 header bytes, got 10");
    write_raw("bad/empty", "", 0, 0);
    expect_idx_fail("bad/empty", good_lab, AT_ERR_FORMAT, "bad/empty");
    CHECK(strstr(at_error_message(), "empty") != NULL);
    write_raw("bad/empty.gz", "", 0, 1);
    expect_idx_fail(good_img, "bad/empty.gz", AT_ERR_FORMAT, "bad/empty.gz");
    write_labels("bad/long-labels", 0, SN, (const uint8_t *)"\0\1\2\3\4\5", 6);
    expect_idx_fail(good_img, "bad/long-labels", AT_ERR_FORMAT, "unexpected data");
    write_labels("bad/short-labels", 1, SN, small_lab, 3);
    expect_idx_fail(good_img, "bad/short-labels", AT_ERR_FORMAT, "truncated: expected 5 bytes of labels, got 3");

    /* Zero-size dimensions and absurd sizes. */
    write_images("bad/zero-rows", 0, SN, 0, SC, NULL, 0);
    expect_idx_fail("bad/zero-rows", good_lab, AT_ERR_FORMAT, "dimension 1");
    write_images("bad/zero-n", 0, 0, SR, SC, NULL, 0);
    expect_idx_fail("bad/zero-n", good_lab, AT_ERR_FORMAT, "bad/zero-n");
    write_labels("bad/zero-labels", 0, 0, NULL, 0);
    expect_idx_fail(good_img, "bad/zero-labels", AT_ERR_FORMAT, "is 0");
    /* A header claiming 2^31-1 images of 16384x16384 must fail cleanly, not allocate it all. */
    write_images("bad/huge", 0, 0x7FFFFFFF, 16384, 16384, small_px, sizeof small_px);
    expect_idx_fail("bad/huge", good_lab, AT_ERR_FORMAT, "truncated");
    write_images("bad/wide", 0, 1, 1, 1u << 30, small_px, sizeof small_px);
    expect_idx_fail("bad/wide", good_lab, AT_ERR_FORMAT, "implausible");
    write_images("bad/many", 0, 0x80000000u, 1, 1, small_px, sizeof small_px);
    expect_idx_fail("bad/many", good_lab, AT_ERR_FORMAT, "implausible");

    /* Image / label count mismatch. */
    write_labels("bad/four-labels", 0, 4, small_lab, 4);
    expect_idx_fail(good_img, "bad/four-labels", AT_ERR_FORMAT, "5 images");
    CHECK(strstr(at_error_message(), "bad/four-labels has 4 labels") != NULL);

    /* Train and test of different shapes. */
    make_dir("mixed");
    write_images("mixed/train-images-idx3-ubyte", 0, SN, SR, SC, small_px, sizeof small_px);
    write_labels("mixed/train-labels-idx1-ubyte.gz", 1, SN, small_lab, SN); /* gz + plain mix */
    write_images("mixed/t10k-images-idx3-ubyte", 0, SN, SC, SR, small_px, sizeof small_px);
    write_labels("mixed/t10k-labels-idx1-ubyte", 0, SN, small_lab, SN);
    snprintf(src, sizeof src, "idx:%s", tpath("mixed"));
    CHECK_FAIL(at_data_load(&d, src), AT_ERR_SHAPE, "1x3x4");
    CHECK(dataset_is_empty(&d.train) && dataset_is_empty(&d.test));

    /* Bad sources. */
    CHECK_FAIL(at_data_load(&d, "imagenet"), AT_ERR_ARG, "cifar10:DIR");
    CHECK(strstr(at_error_message(), "imagenet") != NULL);
    /* the list is built from the sources' table (src/data/sources.c) */
    CHECK(strstr(at_error_message(), "valid forms: fashion-mnist, fashion-mnist:DIR, mnist:DIR, idx:DIR, "
                                     "cifar10:DIR, synthetic, synthetic:SEED") != NULL);
    CHECK_FAIL(at_data_load(&d, "mnist:"), AT_ERR_ARG, "directory");
    CHECK_FAIL(at_data_load(&d, "cifar10"), AT_ERR_ARG, "valid forms");
    CHECK_FAIL(at_data_load(&d, NULL), AT_ERR_ARG, "fashion-mnist");
    CHECK_FAIL(at_idx_load(NULL, "a", "b"), AT_ERR_ARG, "at_idx_load");
}

/* ---------------------------------------------------------------- the real Fashion-MNIST */

static void test_fashion_mnist(void) {
    FILE *probe = fopen("/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz", "rb");
    if (!probe) probe = fopen("/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte", "rb");
    if (!probe) {
        at_data d;
        CHECK_FAIL(at_data_load(&d, "fashion-mnist"), AT_ERR_IO,
                   "sudo apt-get install dataset-fashion-mnist");
        printf("test_data: /usr/share/datasets/fashion-mnist absent, real-data check skipped\n");
        return;
    }
    fclose(probe);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    at_data d;
    CHECK_OK(at_data_load(&d, "fashion-mnist"));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("test_data: fashion-mnist loaded in %.3f s\n",
           (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
    CHECK(strcmp(d.name, "fashion-mnist") == 0);
    CHECK(d.train.n == 60000 && d.test.n == 10000);
    CHECK(d.train.c == 1 && d.train.h == 28 && d.train.w == 28);
    CHECK(d.test.c == 1 && d.test.h == 28 && d.test.w == 28);
    CHECK(d.train.num_classes == 10 && d.test.num_classes == 10);
    int counts[10] = {0};
    for (int i = 0; i < d.train.n; i++)
        if (d.train.labels[i] >= 0 && d.train.labels[i] < 10) counts[d.train.labels[i]]++;
    for (int k = 0; k < 10; k++) CHECK(counts[k] == 6000); /* Fashion-MNIST is balanced */
    at_data_free(&d);
}

int main(void) {
    snprintf(tmp_root, sizeof tmp_root, "/tmp/advtrain-test-data-XXXXXX");
    if (!mkdtemp(tmp_root)) {
        perror("mkdtemp");
        return 1;
    }
    test_idx_roundtrip();
    test_split();
    test_synthetic();
    test_cifar();
    test_bad_idx();
    test_fashion_mnist();
    cleanup();
    return tu_finish("test_data");
}
