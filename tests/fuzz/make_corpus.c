/* Writes the seed corpus of the fuzz targets: make_corpus DIR fills DIR/TARGET/ with a handful
 * of small valid files (written by the library itself where it writes the format) and invalid
 * ones (the usual ways a file is broken). Each seed is laid out as its target reads inputs (the
 * IDX and CIFAR-10 targets take a mode byte first). Built with the fuzz targets (ADVTRAIN_FUZZ);
 * scripts/fuzz.sh --seeds regenerates tests/fuzz/corpus/ with it. */
#define _POSIX_C_SOURCE 200809L /* mkdir */
#include "fuzz_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *out_dir;

static void seed_path(char *buf, size_t cap, const char *target, const char *name) {
    snprintf(buf, cap, "%s/%s", out_dir, target);
    mkdir(buf, 0777);
    if (snprintf(buf, cap, "%s/%s/%s", out_dir, target, name) >= (int)cap) fuzz_fail("path too long", name);
}

/* A seed: the mode byte (if mode >= 0), then n bytes. */
static void put(const char *target, const char *name, int mode, const void *data, size_t n) {
    char path[1024];
    seed_path(path, sizeof path, target, name);
    uint8_t *buf = malloc(n + 1);
    if (!buf) fuzz_fail("out of memory", name);
    size_t k = 0;
    if (mode >= 0) buf[k++] = (uint8_t)mode;
    if (n) memcpy(buf + k, data, n);
    fuzz_write(path, buf, n + k);
    free(buf);
}

/* A seed copied from a file the library wrote. */
static void put_file(const char *target, const char *name, const char *from) {
    FILE *f = fopen(from, "rb");
    if (!f) fuzz_fail("cannot read", from);
    uint8_t buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf, f);
    if (!feof(f)) fuzz_fail("seed too large", from);
    fclose(f);
    put(target, name, -1, buf, n);
}

static void be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

/* ------------------------------------------------------------ IDX */

static void idx_seeds(void) {
    uint8_t img[16 + 3 * 4], lab[8 + 3];
    be32(img, 0x803), be32(img + 4, 3), be32(img + 8, 2), be32(img + 12, 2);
    for (int i = 0; i < 12; i++) img[16 + i] = (uint8_t)(i * 21);
    be32(lab, 0x801), be32(lab + 4, 3);
    lab[8] = 0, lab[9] = 9, lab[10] = 3;
    put("idx", "images-plain", 0, img, sizeof img);
    put("idx", "images-gzip", 2 | 4, img, sizeof img);
    put("idx", "labels-plain", 1, lab, sizeof lab);
    put("idx", "labels-gzip", 1 | 2, lab, sizeof lab);
    put("idx", "images-truncated", 0, img, sizeof img - 5);
    put("idx", "images-header-only", 0, img, 10);
    uint8_t junk[sizeof img + 3] = {0};
    memcpy(junk, img, sizeof img);
    put("idx", "images-trailing-junk", 2, junk, sizeof junk);
    uint8_t bad[sizeof img];
    memcpy(bad, img, sizeof img);
    be32(bad, 0x0d03); /* float data, another element type */
    put("idx", "images-bad-magic", 0, bad, sizeof bad);
    memcpy(bad, img, sizeof img);
    be32(bad + 8, 0);
    put("idx", "images-zero-rows", 0, bad, sizeof bad);
    be32(lab + 4, 2);
    put("idx", "labels-count-mismatch", 1, lab, sizeof lab - 1);
}

/* ------------------------------------------------------------ CIFAR-10 */

static void cifar_seeds(void) {
    enum { RECORD = 3073 };
    static uint8_t two[2 * RECORD];
    for (size_t i = 0; i < sizeof two; i++) two[i] = (uint8_t)(i * 7);
    two[0] = 3, two[RECORD] = 9;
    put("cifar10", "test-two-records", 1, two, sizeof two);
    put("cifar10", "train-one-record", 0, two, RECORD);
    put("cifar10", "test-gzip", 1 | 2, two, RECORD);
    put("cifar10", "train-missing-batch5", 4, two, RECORD);
    put("cifar10", "test-truncated", 1, two, RECORD + 100);
    two[0] = 10;
    put("cifar10", "test-bad-label", 1, two, RECORD);
    put("cifar10", "test-empty", 1, two, 0);
}

/* ------------------------------------------------------------ safetensors */

static void st_seeds(const char *tmp) {
    const float w[6] = {1, -2, 3.5f, 0, 1e-3f, -7};
    const float counter[1] = {42};
    at_st_entry e[4] = {
        {"fc.weight", 2, {2, 3}, w, false},
        {"fc.bias", 1, {2}, w, false},
        {"bn.num_batches_tracked", 0, {0}, counter, true},
        {"empty", 2, {0, 5}, NULL, false},
    };
    at_st_meta meta[2] = {{"format", "pt"}, {"note", "seed"}};
    char path[600];
    snprintf(path, sizeof path, "%s/seed.safetensors", tmp);
    if (at_st_write(path, e, 4, meta, 2) != AT_OK) fuzz_fail("at_st_write", at_error_message());
    put_file("safetensors", "valid-mixed", path);
    if (at_st_write(path, e, 1, NULL, 0) != AT_OK) fuzz_fail("at_st_write", at_error_message());
    put_file("safetensors", "valid-one", path);
    /* Hand-made broken headers: length prefix then JSON (then data). */
    static const char *const broken[][2] = {
        {"bad-json", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],"},
        {"gap", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}"},
        {"bad-dtype", "{\"a\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}"},
        {"huge-shape", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]}}"},
        {"meta-not-string", "{\"__metadata__\":{\"k\":1}}"},
        {"duplicate", "{\"a\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[0,8]},"
                      "\"a\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[8,16]}}"},
    };
    for (size_t i = 0; i < sizeof broken / sizeof broken[0]; i++) {
        uint8_t buf[512] = {0};
        size_t n = strlen(broken[i][1]);
        buf[0] = (uint8_t)n;
        memcpy(buf + 8, broken[i][1], n);
        put("safetensors", broken[i][0], -1, buf, 8 + n + 8);
    }
    const uint8_t too_long[12] = {0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, '{', '}', ' ', ' '};
    put("safetensors", "header-too-long", -1, too_long, sizeof too_long);
}

/* ------------------------------------------------------------ model files */

/* Writes a freshly initialized network of `spec` as a model file at path. */
static void save_model(const char *path, const char *spec, int c, int h, int w) {
    at_net *net;
    if (at_net_from_spec(&net, spec, c, h, w) != AT_OK) fuzz_fail(spec, at_error_message());
    at_net_init(net, 3);
    if (at_model_save(net, path, NULL, 0) != AT_OK) fuzz_fail("at_model_save", at_error_message());
    at_net_free(net);
}

static void model_seed(const char *tmp, const char *name, const char *spec, int c, int h, int w) {
    char path[600];
    snprintf(path, sizeof path, "%s/model.safetensors", tmp);
    save_model(path, spec, c, h, w);
    put_file("model", name, path);
}

static void model_seeds(const char *tmp) {
    model_seed(tmp, "linear", "flatten,linear:3", 1, 2, 2);
    model_seed(tmp, "seed-mlp", "seed-mlp", 10, 1, 1);
    model_seed(tmp, "conv-pool", "conv:2:3:1:1,relu,maxpool:2,conv:2:2:1:0:groups=2,avgpool:1:1:0,flatten,dropout:0.2,linear:3",
               1, 4, 4);
    model_seed(tmp, "residual-bn", "conv:2:3:1:1:bias=0,bn,a=relu,conv:2:3:1:1,m=bn,conv:2:1:1:0@a,add:m,"
               "leakyrelu:0.1,gap,flatten,bn1d,tanh,linear:2,sigmoid",
               1, 3, 3);
    model_seed(tmp, "dropout2d", "conv:2:1,dropout2d:0.3,flatten,linear:2", 2, 2, 2);
    /* Activation ranges of quantization-aware training (advtrain.qat metadata: layer lo hi). */
    {
        at_net *net;
        const char *spec = "conv:2:3:1:1,relu,maxpool:2,flatten,linear:4,relu,linear:3";
        if (at_net_from_spec(&net, spec, 1, 4, 4) != AT_OK) fuzz_fail(spec, at_error_message());
        at_net_init(net, 3);
        at_st_meta qat = {"advtrain.qat", "0 0 1.5;4 -0.25 2.25"};
        char path[600];
        snprintf(path, sizeof path, "%s/model.safetensors", tmp);
        if (at_model_save(net, path, &qat, 1) != AT_OK) fuzz_fail("at_model_save", at_error_message());
        at_net_free(net);
        put_file("model", "qat-ranges", path);
    }
    /* A PyTorch-style file without the architecture, and one whose weights miss a tensor. */
    const float w[3] = {1, 2, 3};
    at_st_entry e[1] = {{"0.weight", 2, {1, 3}, w, false}};
    at_st_meta arch[2] = {{"advtrain.arch", "linear:1"}, {"advtrain.input", "3,1,1"}};
    char path[600];
    snprintf(path, sizeof path, "%s/model.safetensors", tmp);
    if (at_st_write(path, e, 1, NULL, 0) != AT_OK) fuzz_fail("at_st_write", at_error_message());
    put_file("model", "no-architecture", path);
    if (at_st_write(path, e, 1, arch, 2) != AT_OK) fuzz_fail("at_st_write", at_error_message());
    put_file("model", "missing-bias", path);
}

/* ------------------------------------------------------------ int8 model files */

/* A small network quantized after calibration on a few deterministic samples, as a seed. */
static void qmodel_seed(const char *tmp, const char *name, const char *spec, int c, int h, int w) {
    at_net *net;
    if (at_net_from_spec(&net, spec, c, h, w) != AT_OK) fuzz_fail(spec, at_error_message());
    at_net_init(net, 5);
    const int n = 4, d = c * h * w;
    float *x = malloc(sizeof(float) * (size_t)n * d);
    if (!x) fuzz_fail("out of memory", "calibration");
    for (int i = 0; i < n * d; i++) x[i] = (float)((i * 37) % 101) / 100.0f;
    at_qnet *q;
    if (at_quantize(&q, net, x, n, NULL) != AT_OK) fuzz_fail("at_quantize", at_error_message());
    char path[600];
    snprintf(path, sizeof path, "%s/model.int8.safetensors", tmp);
    if (at_qnet_save(q, path, NULL, 0) != AT_OK) fuzz_fail("at_qnet_save", at_error_message());
    put_file("qmodel", name, path);
    at_qnet_free(q);
    at_net_free(net);
    free(x);
}

static void qmodel_seeds(const char *tmp) {
    qmodel_seed(tmp, "linear", "flatten,linear:3", 1, 2, 2);
    qmodel_seed(tmp, "conv-bn-pool", "conv:2:3:1:1:bias=0,bn,relu,maxpool:2,conv:2:2:1:0:groups=2,avgpool:1:1:0,"
                "flatten,dropout:0.2,linear:3", 1, 4, 4);
    qmodel_seed(tmp, "residual", "conv:2:3:1:1:bias=0,bn,a=relu,conv:2:3:1:1,m=bn,add:a,bn,relu,gap,flatten,"
                "linear:8,bn1d,relu,linear:2", 1, 3, 3);
}

/* ------------------------------------------------------------ specs */

static void spec_seeds(void) {
    static const char *const specs[][2] = {
        {"mlp", "flatten,linear:100,relu,linear:10"},
        {"smallcnn", "conv:16:4:2:1,relu,conv:32:4:2:1,relu,flatten,linear:100,relu,linear:10"},
        {"residual", "conv:16:3:1:1:bias=0,bn,a=relu,conv:32:3:2:1:bias=0,bn,relu,conv:32:3:1:1:bias=0,"
                     "m=bn,conv:32:1:2:0:bias=0@a,add:m,relu,gap,flatten,linear:10"},
        {"pools", "conv:4:3:1:1:groups=1,maxpool:3:2:1,avgpool:2:1:1,leakyrelu:0.2,dropout2d:0.1,flatten,"
                  "bn1d,dropout,tanh,sigmoid,linear:5"},
        {"depthwise", "conv:4:3,conv:4:3:1:1:groups=4:bias=0,bn,relu,gap,flatten,linear:2"},
        {"builtin", "seed-cnn"},
        {"input-ref", "a=flatten,linear:4,add:a@input"},
        {"bad-keyword", "conv:8:3,pool:2"},
        {"bad-number", "linear:1e400"},
        {"trailing-comma", "flatten,linear:10,"},
        {"unknown-ref", "linear:4@nowhere"},
    };
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++)
        put("spec", specs[i][0], -1, specs[i][1], strlen(specs[i][1]));
}

/* ------------------------------------------------------------ INI config */

static void config_seeds(void) {
    static const char *const files[][2] = {
        {"valid", "; a run\n[fit]\nmodel = smallcnn\nlr = 0.05\nscale = -2.5e3\nseed = 18446744073709551615\n"
                  "nesterov = true\nquiet = on\nout = runs/x.safetensors ; inline comment\n"},
        {"no-section", "unranged = -7\nnesterov = no\n"},
        {"command-line-wins", "[fit]\nepochs = 99\n"},
        {"out-of-range", "[fit]\nlr = 11\n"},
        {"not-a-number", "[fit]\nscale = 1x\n"},
        {"wrong-section", "[eval]\nmodel = mlp\n"},
        {"unknown-key", "[fit]\nbogus = 1\n"},
        {"not-in-config", "[fit]\nconfig = other.ini\n"},
        {"bad-bool", "[fit]\nquiet = maybe\n"},
        {"negative-u64", "[fit]\nseed = -1\n"},
        {"empty-string", "[fit]\nmodel =\n"},
        {"no-equals", "[fit]\njust a line\n"},
    };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        put("config", files[i][0], -1, files[i][1], strlen(files[i][1]));
}

/* ------------------------------------------------------------ checkpoints */

/* A run of the checkpoint target's configuration, stopped after `batches` (0: complete). */
static void checkpoint_seed(const char *tmp, const char *name, int variant, int batches) {
    char dir[600], path[700];
    snprintf(dir, sizeof dir, "%s/run-%s", tmp, name);
    mkdir(dir, 0777);
    at_status s = fuzz_train_run(dir, variant, false, batches);
    if (s != AT_OK && s != AT_ERR_INTERRUPTED) fuzz_fail("training the seed failed", at_error_message());
    snprintf(path, sizeof path, "%s/last.safetensors", dir);
    put_file("checkpoint", name, path);
}

static void checkpoint_seeds(const char *tmp) {
    checkpoint_seed(tmp, "sgd-mid-epoch1", 0, 2);
    checkpoint_seed(tmp, "sgd-epoch1", 0, 3);
    checkpoint_seed(tmp, "sgd-done", 0, 0);
    checkpoint_seed(tmp, "adv-mid-epoch1", 1, 1);
    checkpoint_seed(tmp, "adv-epoch1", 1, 3);
    checkpoint_seed(tmp, "adv-mid-epoch2", 1, 5);
    /* A model file without training state. */
    char path[600];
    snprintf(path, sizeof path, "%s/model.safetensors", tmp);
    save_model(path, "linear:4", 1, 2, 2);
    put_file("checkpoint", "model-not-checkpoint", path);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR: writes the fuzz targets' seeds into DIR/TARGET/\n", argv[0]);
        return 2;
    }
    out_dir = argv[1];
    mkdir(out_dir, 0777);
    const char *tmp = fuzz_dir();
    idx_seeds();
    cifar_seeds();
    st_seeds(tmp);
    model_seeds(tmp);
    qmodel_seeds(tmp);
    spec_seeds();
    config_seeds();
    checkpoint_seeds(tmp);
    printf("seeds written to %s\n", out_dir);
    return 0;
}
