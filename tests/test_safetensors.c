/* safetensors: round trips, files laid out like PyTorch's writer, every malformed-file check, and
 * the atomic write (failures leave the old file and no temp files behind). */
#define _POSIX_C_SOURCE 200809L
#include "advtrain.h"
#include "testutil.h"

#include <dirent.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[] = "/tmp/advtrain_st_XXXXXX";

/* Path of a file in the test directory (a small ring of buffers, so a few can be live). */
static const char *tpath(const char *name) {
    static char buf[8][512];
    static int slot;
    char *out = buf[slot++ & 7];
    snprintf(out, sizeof buf[0], "%s/%s", tmpdir, name);
    return out;
}

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *fp = fopen(path, "wb");
    CHECK(fp != NULL);
    if (!fp) return;
    CHECK(fwrite(p, 1, n, fp) == n);
    fclose(fp);
}

/* Whole file into a malloc'd buffer. */
static unsigned char *read_bytes(const char *path, size_t *n) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    long len = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *p = malloc(len > 0 ? (size_t)len : 1);
    *n = fread(p, 1, (size_t)len, fp);
    fclose(fp);
    return p;
}

/* A safetensors file from a header length, header text (+ pad spaces) and raw data bytes. */
static void make_st_len(const char *path, uint64_t hlen, const char *json, size_t pad,
                        const void *data, size_t ndata) {
    size_t jl = strlen(json), total = 8 + jl + pad + ndata;
    unsigned char *buf = malloc(total);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(hlen >> (8 * i));
    memcpy(buf + 8, json, jl);
    memset(buf + 8 + jl, ' ', pad);
    if (ndata) memcpy(buf + 8 + jl + pad, data, ndata);
    write_bytes(path, buf, total);
    free(buf);
}

static void make_st(const char *path, const char *json, size_t pad, const void *data,
                    size_t ndata) {
    make_st_len(path, strlen(json) + pad, json, pad, data, ndata);
}

static int count_tmp_files(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) n++;
    closedir(d);
    return n;
}

/* Reading `path` must fail with `want`, leave *out NULL, and name the file and `detail`. */
#define EXPECT_FAIL(path, want, detail) expect_fail("line " TU_STR(__LINE__), path, want, detail)
#define TU_STR(x) TU_STR2(x)
#define TU_STR2(x) #x
static void expect_fail(const char *label, const char *path, at_status want, const char *detail) {
    at_st_file *f = (at_st_file *)1;
    at_status s = at_st_read(path, &f);
    const char *msg = at_error_message();
    CHECK_MSG(s == want, "%s: got %s, want %s (%s)", label, at_status_name(s),
              at_status_name(want), msg);
    CHECK_MSG(f == NULL, "%s: out not cleared", label);
    CHECK_MSG(strstr(msg, path) != NULL, "%s: message does not name the file: %s", label, msg);
    CHECK_MSG(!detail || strstr(msg, detail) != NULL, "%s: message lacks \"%s\": %s", label,
              detail, msg);
    if (s == AT_OK) at_st_free(f);
}

/* ---------------------------------------------------------------- round trip */

static float vals[1000];

static void test_round_trip(void) {
    for (int i = 0; i < 1000; i++) vals[i] = (float)(i * 0.37 - 100.0) / 7.0f;
    /* Bit patterns that a value-converting path would change. */
    uint32_t bits[4] = {0x80000000u, 0x00000001u, 0x7fc00001u, 0x7f800000u};
    memcpy(vals, bits, sizeof bits);
    at_st_entry t[6] = {
        {.name = "scalar", .ndim = 0, .data = vals + 500},
        {.name = "fc1.bias", .ndim = 1, .shape = {5}, .data = vals},
        {.name = "fc1.weight", .ndim = 2, .shape = {3, 4}, .data = vals + 10},
        {.name = "odd \"name\" / ü", .ndim = 3, .shape = {2, 3, 2}, .data = vals + 30},
        {.name = "0.weight", .ndim = 4, .shape = {2, 1, 3, 2}, .data = vals + 50},
        {.name = "empty", .ndim = 2, .shape = {0, 3}, .data = NULL},
    };
    at_st_meta meta[3] = {{"advtrain.arch", "seed-mlp"},
                          {"advtrain.input", "1,28,28"},
                          {"note", "quotes \" backslash \\ newline \n unicode é"}};
    const char *path = tpath("round.safetensors");
    CHECK_OK(at_st_write(path, t, 6, meta, 3));
    CHECK(count_tmp_files(tmpdir) == 0);

    at_st_file *f = NULL;
    CHECK_OK(at_st_read(path, &f));
    if (!f) return;
    CHECK(f->ntensors == 6);
    CHECK(f->nmeta == 3);
    for (int i = 0; i < 6 && i < f->ntensors; i++) {
        const at_st_tensor *r = &f->tensors[i];
        size_t count = 1;
        for (int d = 0; d < t[i].ndim; d++) count *= (size_t)t[i].shape[d];
        CHECK_MSG(strcmp(r->name, t[i].name) == 0, "tensor %d: %s", i, r->name);
        CHECK(r->ndim == t[i].ndim);
        CHECK(memcmp(r->shape, t[i].shape, sizeof(int64_t) * (size_t)t[i].ndim) == 0);
        CHECK(r->count == count);
        CHECK(r->data != NULL && (uintptr_t)r->data % 16 == 0);
        CHECK(count == 0 || memcmp(r->data, t[i].data, count * sizeof(float)) == 0);
        CHECK(at_st_find(f, t[i].name) == r);
    }
    CHECK(at_st_find(f, "missing") == NULL);
    for (int i = 0; i < 3; i++) {
        const char *v = at_st_meta_get(f, meta[i].key);
        CHECK_MSG(v && strcmp(v, meta[i].value) == 0, "meta %s = %s", meta[i].key, v ? v : "NULL");
    }
    CHECK(at_st_meta_get(f, "missing") == NULL);
    at_st_free(f);

    /* On disk: data start 8-byte aligned, "__metadata__" first, padding is spaces. */
    size_t n = 0;
    unsigned char *b = read_bytes(path, &n);
    CHECK(b && n > 8);
    if (b && n > 8) {
        uint64_t hlen = 0;
        for (int i = 7; i >= 0; i--) hlen = hlen << 8 | b[i];
        CHECK(hlen % 8 == 0);
        CHECK(strncmp((const char *)b + 8, "{\"__metadata__\":", 16) == 0);
        CHECK(b[8 + hlen - 1] == ' ' || b[8 + hlen - 1] == '}');
        CHECK(n == 8 + hlen + (1 + 5 + 12 + 12 + 12) * 4);
    }
    free(b);
}

static void test_empty_and_large(void) {
    const char *path = tpath("empty.safetensors");
    CHECK_OK(at_st_write(path, NULL, 0, NULL, 0));
    at_st_file *f = NULL;
    CHECK_OK(at_st_read(path, &f));
    CHECK(f && f->ntensors == 0 && f->nmeta == 0);
    at_st_free(f);

    size_t big = 1 << 20;
    float *x = malloc(big * sizeof(float));
    for (size_t i = 0; i < big; i++) x[i] = (float)i * 0.5f;
    at_st_entry t = {.name = "big", .ndim = 2, .shape = {1024, 1024}, .data = x};
    path = tpath("big.safetensors");
    CHECK_OK(at_st_write(path, &t, 1, NULL, 0));
    f = NULL;
    CHECK_OK(at_st_read(path, &f));
    CHECK(f && f->ntensors == 1 && f->tensors[0].count == big &&
          memcmp(f->tensors[0].data, x, big * sizeof(float)) == 0);
    at_st_free(f);
    free(x);
}

/* ---------------------------------------------------------------- PyTorch-style files */

/* Header text helpers: one entry, and the fields of an F32 entry. */
#define E(name, body) "\"" name "\":{" body "}"
#define F32(shape, offs) "\"dtype\":\"F32\",\"shape\":" shape ",\"data_offsets\":" offs

static void test_pytorch_style(void) {
    /* No padding, keys out of order, metadata last, offsets not in key order. */
    const char *json = "{\"fc.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[8,32]},"
                       "\"fc.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                       "\"__metadata__\":{\"format\":\"pt\"}}";
    float data[8] = {0.5f, -1.5f, 1, 2, 3, 4, 5, 6}; /* bias first, then weight */
    const char *path = tpath("torch.safetensors");
    CHECK(strlen(json) % 8 != 0);
    make_st(path, json, 0, data, sizeof data);
    at_st_file *f = NULL;
    CHECK_OK(at_st_read(path, &f));
    if (!f) return;
    CHECK(f->ntensors == 2 && f->nmeta == 1);
    const at_st_tensor *w = at_st_find(f, "fc.weight"), *b = at_st_find(f, "fc.bias");
    CHECK(w && w->ndim == 2 && w->shape[0] == 2 && w->shape[1] == 3 && w->count == 6);
    CHECK(b && b->ndim == 1 && b->shape[0] == 2 && b->count == 2);
    if (w) CHECK(memcmp(w->data, data + 2, 6 * sizeof(float)) == 0);
    if (b) CHECK(b->data[0] == 0.5f && b->data[1] == -1.5f);
    const char *fmt = at_st_meta_get(f, "format");
    CHECK(fmt && strcmp(fmt, "pt") == 0);
    at_st_free(f);

    /* Pretty-printed JSON with newlines and trailing whitespace is still JSON. */
    const char *pretty =
        "{\n  \"x\": {\"dtype\": \"F32\", \"shape\": [], \"data_offsets\": [0, 4]}\n}\n";
    float one = 1.25f;
    make_st(tpath("pretty.safetensors"), pretty, 3, &one, 4);
    f = NULL;
    CHECK_OK(at_st_read(tpath("pretty.safetensors"), &f));
    CHECK(f && f->ntensors == 1 && f->tensors[0].ndim == 0 && f->tensors[0].count == 1 &&
          f->tensors[0].data[0] == 1.25f);
    at_st_free(f);

    /* A zero dimension makes the element count 0, even next to huge dimensions. */
    make_st(tpath("zero.safetensors"),
            "{" E("z", F32("[4294967296,4294967296,0]", "[0,0]")) "}",
            0, NULL, 0);
    f = NULL;
    CHECK_OK(at_st_read(tpath("zero.safetensors"), &f));
    CHECK(f && f->ntensors == 1 && f->tensors[0].count == 0);
    at_st_free(f);
}

/* ---------------------------------------------------------------- malformed files */

static void test_truncated(void) {
    float x[6] = {1, 2, 3, 4, 5, 6};
    at_st_entry t = {.name = "w", .ndim = 2, .shape = {2, 3}, .data = x};
    const char *good = tpath("good.safetensors");
    CHECK_OK(at_st_write(good, &t, 1, NULL, 0));
    size_t n = 0;
    unsigned char *b = read_bytes(good, &n);
    if (!b) return;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | b[i];
    const char *path = tpath("cut.safetensors");
    size_t cuts[] = {0, 4, 7, 8, 8 + (size_t)hlen / 2, 8 + (size_t)hlen, 8 + (size_t)hlen + 10,
                     n - 1};
    const char *why[] = {"too short", "too short", "too short", "past the end",
                         "past the end", "file truncated", "file truncated", "file truncated"};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        write_bytes(path, b, cuts[i]);
        EXPECT_FAIL(path, AT_ERR_FORMAT, why[i]);
    }
    /* Extra bytes after the data are as wrong as missing ones. */
    unsigned char *longer = malloc(n + 4);
    memcpy(longer, b, n);
    memset(longer + n, 0, 4);
    write_bytes(path, longer, n + 4);
    EXPECT_FAIL(path, AT_ERR_FORMAT, "trailing bytes");
    free(longer);
    free(b);
}

static void test_header_length(void) {
    const char *path = tpath("hlen.safetensors");
    make_st_len(path, 0, "{}", 0, NULL, 0);
    EXPECT_FAIL(path, AT_ERR_FORMAT, "length is 0");
    make_st_len(path, 100000001, "{}", 0, NULL, 0);
    EXPECT_FAIL(path, AT_ERR_FORMAT, "100 MB");
    make_st_len(path, UINT64_MAX, "{}", 0, NULL, 0);
    EXPECT_FAIL(path, AT_ERR_FORMAT, "100 MB");
    make_st_len(path, 1000, "{}", 0, NULL, 0);
    EXPECT_FAIL(path, AT_ERR_FORMAT, "past the end");
}

/* One malformed header: the JSON text (with data bytes of zeros), status, message detail. */
typedef struct bad_case {
    const char *json;
    size_t ndata;
    at_status want;
    const char *detail;
} bad_case;


static const bad_case bad_cases[] = {
    {"{not json", 0, AT_ERR_FORMAT, "not valid JSON"},
    {"", 0, AT_ERR_FORMAT, "not valid JSON"},
    {"{\"a\":{\"dtype\":\"F32\",", 0, AT_ERR_FORMAT, "not valid JSON"},
    {"[1,2]", 0, AT_ERR_FORMAT, "not a JSON object"},
    {"\"str\"", 0, AT_ERR_FORMAT, "not a JSON object"},
    {"{} x", 0, AT_ERR_FORMAT, "trailing garbage"},
    {"{\"a\":5}", 0, AT_ERR_FORMAT, "not an object"},
    {"{\"a\":[0,4]}", 4, AT_ERR_FORMAT, "not an object"},
    {"{" E("a", "\"shape\":[1],\"data_offsets\":[0,4]") "}", 4, AT_ERR_FORMAT, "dtype"},
    {"{" E("a", "\"dtype\":\"F32\",\"data_offsets\":[0,4]") "}", 4, AT_ERR_FORMAT, "shape"},
    {"{" E("a", "\"dtype\":\"F32\",\"shape\":[1]") "}", 4, AT_ERR_FORMAT, "data_offsets"},
    {"{" E("a", "\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]") "}", 4, AT_ERR_FORMAT,
     "dtype"},
    {"{" E("a", "\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]") "}", 4,
     AT_ERR_UNSUPPORTED, "F16 is unsupported"},
    {"{" E("a", "\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]") "}", 4,
     AT_ERR_UNSUPPORTED, "BF16"},
    {"{" E("a", "\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]") "}", 8,
     AT_ERR_UNSUPPORTED, "F64"},
    {"{" E("a", "\"dtype\":\"Q4\",\"shape\":[1],\"data_offsets\":[0,4]") "}", 4, AT_ERR_FORMAT,
     "unknown dtype \"Q4\""},
    {"{" E("a", F32("[-1]", "[0,4]")) "}", 4, AT_ERR_FORMAT, "non-negative integer"},
    {"{" E("a", F32("[1.5]", "[0,4]")) "}", 4, AT_ERR_FORMAT, "non-negative integer"},
    {"{" E("a", F32("[\"2\"]", "[0,8]")) "}", 8, AT_ERR_FORMAT, "non-negative integer"},
    {"{" E("a", F32("[1e300]", "[0,4]")) "}", 4, AT_ERR_FORMAT, "non-negative integer"},
    {"{" E("a", F32("2", "[0,8]")) "}", 8, AT_ERR_FORMAT, "not a list"},
    {"{" E("a", F32("[1,1,1,1,1,1,1,1,1]", "[0,4]")) "}", 4, AT_ERR_FORMAT, "9 dimensions"},
    {"{" E("a", F32("[4294967296,4294967296,4294967296]", "[0,4]")) "}", 4, AT_ERR_FORMAT,
     "too many elements"},
    {"{" E("a", F32("[2251799813685248]", "[0,9007199254740992]")) "}", 4, AT_ERR_FORMAT,
     "truncated"},
    {"{" E("a", F32("[1]", "[4,0]")) "}", 4, AT_ERR_FORMAT, "begin > end"},
    {"{" E("a", F32("[1]", "[0,4,8]")) "}", 4, AT_ERR_FORMAT, "data_offsets"},
    {"{" E("a", F32("[1]", "[-4,0]")) "}", 4, AT_ERR_FORMAT, "data_offsets"},
    {"{" E("a", F32("[1]", "0")) "}", 4, AT_ERR_FORMAT, "data_offsets"},
    {"{" E("a", F32("[3]", "[0,8]")) "}", 8, AT_ERR_FORMAT, "shape needs 12"},
    {"{" E("a", F32("[2]", "[0,8]")) "," E("b", F32("[2]", "[4,12]")) "}", 12, AT_ERR_FORMAT,
     "overlap"},
    {"{" E("a", F32("[2]", "[0,8]")) "," E("b", F32("[2]", "[0,8]")) "}", 8, AT_ERR_FORMAT,
     "overlap"},
    {"{" E("a", F32("[2]", "[0,8]")) "," E("b", F32("[2]", "[12,20]")) "}", 20, AT_ERR_FORMAT,
     "gap"},
    {"{" E("a", F32("[2]", "[4,12]")) "}", 12, AT_ERR_FORMAT, "gap"},
    {"{" E("a", F32("[2]", "[0,8]")) "}", 12, AT_ERR_FORMAT, "trailing bytes"},
    {"{" E("a", F32("[2]", "[0,8]")) "}", 4, AT_ERR_FORMAT, "truncated"},
    {"{}", 4, AT_ERR_FORMAT, "trailing bytes"},
    {"{" E("a", F32("[2]", "[0,8]")) "," E("a", F32("[2]", "[8,16]")) "}", 16, AT_ERR_FORMAT,
     "duplicate tensor name 'a'"},
    {"{\"__metadata__\":{\"k\":1}}", 0, AT_ERR_FORMAT, "not a string"},
    {"{\"__metadata__\":{\"k\":\"v\",\"k\":\"w\"}}", 0, AT_ERR_FORMAT, "duplicate metadata key"},
    {"{\"__metadata__\":[\"k\"]}", 0, AT_ERR_FORMAT, "not an object"},
    {"{\"__metadata__\":{},\"__metadata__\":{}}", 0, AT_ERR_FORMAT, "twice"},
};

static void test_bad_headers(void) {
    static const unsigned char zeros[64];
    const char *path = tpath("bad.safetensors");
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const bad_case *c = &bad_cases[i];
        /* The empty text gets one space, since a header length of 0 is its own error. */
        make_st(path, c->json, *c->json ? 0 : 1, zeros, c->ndata);
        expect_fail(c->json, path, c->want, c->detail);
    }
    /* A header padded with spaces stays valid; NULs after the object are not padding. */
    make_st(path, "{}", 6, NULL, 0);
    at_st_file *f = NULL;
    CHECK_OK(at_st_read(path, &f));
    at_st_free(f);
    unsigned char raw[12] = {4, 0, 0, 0, 0, 0, 0, 0, '{', '}', 0, 0};
    write_bytes(path, raw, sizeof raw);
    EXPECT_FAIL(path, AT_ERR_FORMAT, "trailing garbage");
}

static void test_missing_file(void) {
    const char *path = tpath("no-such-file.safetensors");
    EXPECT_FAIL(path, AT_ERR_IO, "No such file");
    EXPECT_FAIL(tmpdir, AT_ERR_IO, NULL);
    at_st_file *f = (at_st_file *)1;
    CHECK(at_st_read(NULL, &f) == AT_ERR_ARG && f == NULL);
    CHECK(at_st_read(path, NULL) == AT_ERR_ARG);
    at_st_free(NULL);
    CHECK(at_st_find(NULL, "x") == NULL && at_st_meta_get(NULL, "x") == NULL);
}

/* ---------------------------------------------------------------- writing */

static bool same_file(const char *path, const unsigned char *want, size_t n) {
    size_t got = 0;
    unsigned char *b = read_bytes(path, &got);
    bool same = b && got == n && memcmp(b, want, n) == 0;
    free(b);
    return same;
}

static void test_write_args(void) {
    float x[4] = {1, 2, 3, 4};
    at_st_entry ok = {.name = "x", .ndim = 1, .shape = {4}, .data = x};
    const char *path = tpath("args.safetensors");
    CHECK_OK(at_st_write(path, &ok, 1, NULL, 0));
    size_t n = 0;
    unsigned char *before = read_bytes(path, &n);

    at_st_entry noname = {.name = NULL, .ndim = 1, .shape = {4}, .data = x};
    at_st_entry neg = {.name = "n", .ndim = 2, .shape = {2, -2}, .data = x};
    at_st_entry deep = {.name = "d", .ndim = 9, .data = x};
    at_st_entry nodata = {.name = "nd", .ndim = 1, .shape = {4}, .data = NULL};
    at_st_entry reserved = {.name = "__metadata__", .ndim = 1, .shape = {4}, .data = x};
    at_st_entry huge = {.name = "h", .ndim = 3, .shape = {INT64_MAX, INT64_MAX, 2}, .data = x};
    at_st_entry dup[2] = {ok, ok};
    at_st_meta dupmeta[2] = {{"k", "a"}, {"k", "b"}};
    at_st_meta nullval = {"k", NULL};
    struct {
        const at_st_entry *t;
        int nt;
        const at_st_meta *m;
        int nm;
        const char *detail;
    } cases[] = {
        {&noname, 1, NULL, 0, "no name"},       {&neg, 1, NULL, 0, "negative"},
        {&deep, 1, NULL, 0, "ndim 9"},          {&nodata, 1, NULL, 0, "data is NULL"},
        {&reserved, 1, NULL, 0, "reserved"},    {&huge, 1, NULL, 0, "too many"},
        {dup, 2, NULL, 0, "duplicate tensor"},  {&ok, 1, dupmeta, 2, "duplicate metadata"},
        {&ok, 1, &nullval, 1, "NULL key or value"}, {NULL, 1, NULL, 0, "tensor list"},
        {&ok, -1, NULL, 0, "tensor list"},      {&ok, 1, NULL, 1, "metadata list"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        at_status s = at_st_write(path, cases[i].t, cases[i].nt, cases[i].m, cases[i].nm);
        const char *msg = at_error_message();
        CHECK_MSG(s == AT_ERR_ARG, "case %zu: %s", i, at_status_name(s));
        CHECK_MSG(strstr(msg, path) && strstr(msg, cases[i].detail), "case %zu: %s", i, msg);
        CHECK_MSG(before && same_file(path, before, n), "case %zu changed the file", i);
    }
    CHECK(at_st_write(NULL, &ok, 1, NULL, 0) == AT_ERR_ARG);
    CHECK(count_tmp_files(tmpdir) == 0);
    free(before);
}

static void test_write_io(void) {
    float x[2] = {1, 2};
    at_st_entry t = {.name = "x", .ndim = 1, .shape = {2}, .data = x};

    /* Missing directory: nothing created anywhere. */
    const char *path = tpath("no-such-dir/model.safetensors");
    CHECK(at_st_write(path, &t, 1, NULL, 0) == AT_ERR_IO);
    CHECK_MSG(strstr(at_error_message(), path) != NULL, "%s", at_error_message());
    CHECK(count_tmp_files(tmpdir) == 0);
    CHECK(access(tpath("no-such-dir"), F_OK) != 0);

    /* The target is a non-empty directory: rename fails, the temp file is removed. */
    const char *dir = tpath("adir");
    CHECK(mkdir(dir, 0755) == 0);
    write_bytes(tpath("adir/keep"), "k", 1);
    CHECK(at_st_write(dir, &t, 1, NULL, 0) == AT_ERR_IO);
    CHECK_MSG(strstr(at_error_message(), dir) != NULL, "%s", at_error_message());
    CHECK(count_tmp_files(tmpdir) == 0);
    struct stat st;
    CHECK(stat(dir, &st) == 0 && S_ISDIR(st.st_mode));
    unlink(tpath("adir/keep"));
    rmdir(dir);

    /* Replacing an existing file: new content, same permissions, no temp files left. */
    path = tpath("replace.safetensors");
    write_bytes(path, "old contents", 12);
    CHECK(chmod(path, 0640) == 0);
    at_st_meta m = {"v", "2"};
    CHECK_OK(at_st_write(path, &t, 1, &m, 1));
    CHECK(count_tmp_files(tmpdir) == 0);
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0640);
    at_st_file *f = NULL;
    CHECK_OK(at_st_read(path, &f));
    const at_st_tensor *r = f ? at_st_find(f, "x") : NULL;
    CHECK(r && r->count == 2 && r->data[0] == 1 && r->data[1] == 2);
    const char *v = f ? at_st_meta_get(f, "v") : NULL;
    CHECK(v && strcmp(v, "2") == 0);
    at_st_free(f);

    /* A new file gets the usual mode (0666 minus the umask), not mkstemp's 0600. */
    mode_t mask = umask(022);
    path = tpath("fresh.safetensors");
    CHECK_OK(at_st_write(path, &t, 1, NULL, 0));
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0644);
    umask(mask);
}

/* ---------------------------------------------------------------- PyTorch, if installed */

static void test_torch_interop(void) {
    if (system("/usr/bin/python3 -c 'import torch, safetensors.torch' >/dev/null 2>&1") != 0) {
        printf("test_safetensors: torch/safetensors not installed, interop check skipped\n");
        return;
    }
    float x[6] = {1, 2, 3, 4, 5, 6};
    at_st_entry t = {.name = "w", .ndim = 2, .shape = {2, 3}, .data = x};
    at_st_meta m = {"k", "v"};
    CHECK_OK(at_st_write(tpath("ours.safetensors"), &t, 1, &m, 1));
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c '"
             "import torch, sys\n"
             "from safetensors.torch import save_file, load_file\n"
             "from safetensors import safe_open\n"
             "d = load_file(sys.argv[1])\n"
             "assert torch.equal(d[\"w\"], torch.arange(1., 7.).reshape(2, 3))\n"
             "with safe_open(sys.argv[1], \"pt\") as f: assert f.metadata() == {\"k\": \"v\"}\n"
             "save_file({\"b\": torch.tensor([0.5, -1.5]), \"a\": torch.tensor(2.25)}, sys.argv[2],"
             " metadata={\"format\": \"pt\"})\n"
             "' %s %s",
             tpath("ours.safetensors"), tpath("theirs.safetensors"));
    CHECK(system(cmd) == 0);
    at_st_file *f = NULL;
    CHECK_OK(at_st_read(tpath("theirs.safetensors"), &f));
    const at_st_tensor *a = f ? at_st_find(f, "a") : NULL, *b = f ? at_st_find(f, "b") : NULL;
    CHECK(a && a->ndim == 0 && a->count == 1 && a->data[0] == 2.25f);
    CHECK(b && b->ndim == 1 && b->count == 2 && b->data[0] == 0.5f && b->data[1] == -1.5f);
    at_st_free(f);
}

static void remove_tmpdir(void) {
    DIR *d = opendir(tmpdir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) unlink(tpath(e->d_name));
    closedir(d);
    rmdir(tmpdir);
}

/* I8 and I32 tensors (int8 models) beside F32: exact both ways, I32 beyond float's 2^24 too; the
 * file takes 1 and 4 bytes per value; an I8 value out of range is refused naming the tensor; the
 * float model loader refuses them rather than read their bytes as floats. */
static void test_int_dtypes(void) {
    int32_t i8[6] = {-128, -1, 0, 1, 100, 127}, i32[3] = {INT32_MIN, 16777217, INT32_MAX};
    float f[2] = {1.5f, -2.0f};
    at_st_entry t[3] = {
        {.name = "w", .ndim = 2, .shape = {2, 3}, .ints = i8, .int8 = true},
        {.name = "mult", .ndim = 1, .shape = {3}, .ints = i32},
        {.name = "scale", .ndim = 1, .shape = {2}, .data = f},
    };
    const char *path = tpath("ints.safetensors");
    CHECK_OK(at_st_write(path, t, 3, NULL, 0));
    at_st_file *r = NULL;
    CHECK_OK(at_st_read(path, &r));
    if (r) {
        const at_st_tensor *w = at_st_find(r, "w"), *m = at_st_find(r, "mult"), *s = at_st_find(r, "scale");
        CHECK(w && w->dtype == AT_ST_I8 && w->ints && !w->data && memcmp(w->ints, i8, sizeof i8) == 0);
        CHECK(m && m->dtype == AT_ST_I32 && m->ints && memcmp(m->ints, i32, sizeof i32) == 0);
        CHECK(s && s->dtype == AT_ST_F32 && s->data && s->data[0] == 1.5f);
        at_st_free(r);
    }
    size_t n = 0;
    unsigned char *b = read_bytes(path, &n);
    uint64_t hlen = 0;
    for (int i = 7; b && i >= 0; i--) hlen = hlen << 8 | b[i];
    CHECK(b && n == 8 + hlen + 6 * 1 + 3 * 4 + 2 * 4);
    free(b);
    i8[2] = 128;
    CHECK(at_st_write(tpath("bad.safetensors"), t, 1, NULL, 0) == AT_ERR_ARG && strstr(at_error_message(), "'w'"));
    /* a float model reading an int8 tensor */
    int32_t wq[40] = {0};
    at_st_entry lin[2] = {{.name = "1.weight", .ndim = 2, .shape = {10, 4}, .ints = wq, .int8 = true},
                          {.name = "1.bias", .ndim = 1, .shape = {10}, .data = vals}};
    at_st_meta meta[2] = {{"advtrain.arch", "flatten,linear:10"}, {"advtrain.input", "1,2,2"}};
    CHECK_OK(at_st_write(path, lin, 2, meta, 2));
    at_net *net = NULL;
    CHECK(at_model_load(&net, path, NULL) == AT_ERR_FORMAT && strstr(at_error_message(), "int8"));
    at_net_free(net);
}

int main(void) {
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_round_trip();
    test_int_dtypes();
    test_empty_and_large();
    test_pytorch_style();
    test_truncated();
    test_header_length();
    test_bad_headers();
    test_missing_file();
    test_write_args();
    test_write_io();
    test_torch_interop();
    remove_tmpdir();
    return tu_finish("test_safetensors");
}
