/* C export: the generated source compiles as strict C99 (-Wall -Wextra -Werror -pedantic) with the
 * system compiler, links with a small driver, and its logits match at_net_forward's in eval mode
 * for every built-in model and for specs that use every layer kind; the weights in the source
 * read back bit for bit; bad prefixes and unwritable directories fail cleanly. */
#define _POSIX_C_SOURCE 200809L /* mkdtemp */
#include "advtrain.h"
#include "testutil.h"

#include <dirent.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char root[] = "/tmp/advtrain_export_c_XXXXXX";
static const char *cc = "cc";

static const char *strict_flags = "-std=c99 -Wall -Wextra -Werror -pedantic -O2";
/* What careful embedded builds add; the generated code must stay clean under them too. */
static const char *extra_flags = "-Wshadow -Wconversion -Wdouble-promotion -Wstrict-prototypes "
                                 "-Wmissing-prototypes -Wcast-qual -Wundef -Wvla";

/* Runs a shell command built like printf; returns its exit status (-1 if it did not exit). */
static int sh(const char *fmt, ...) {
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int r = system(cmd);
    if (r == -1 || !WIFEXITED(r)) return -1;
    int code = WEXITSTATUS(r);
    if (code != 0) fprintf(stderr, "command failed (%d): %s\n", code, cmd);
    return code;
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    if (buf) buf[n] = '\0';
    fclose(f);
    return buf;
}

static bool exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* Number of entries in dir whose name contains ".tmp." (leftover temporary files). */
static int leftover_temps(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) n++;
    closedir(d);
    return n;
}

/* The float literals of every `static const float` array in the source, in order. */
static float *source_weights(const char *src, size_t *count) {
    size_t cap = 1024, n = 0;
    float *v = malloc(cap * sizeof *v);
    const char *p = src;
    while (v && (p = strstr(p, "static const float "))) {
        p = strchr(p, '{');
        if (!p) break;
        p++;
        for (;;) {
            while (*p == ' ' || *p == '\n' || *p == ',') p++;
            if (*p == '}') break;
            char *end;
            float x = strtof(p, &end);
            if (end == p) break;
            if (*end == 'f') end++;
            if (n == cap) v = realloc(v, (cap *= 2) * sizeof *v);
            if (!v) break;
            v[n++] = x;
            p = end;
        }
    }
    *count = n;
    return v;
}

static void write_driver(const char *path, const char *P, const char *U) {
    FILE *f = fopen(path, "w");
    if (!f) return;
    fprintf(f,
            "#include <stdio.h>\n"
            "#include \"%s.h\"\n"
            "static float x[%s_INPUT_SIZE], a[%s_OUTPUTS], b[%s_OUTPUTS];\n"
            "static float scratch[%s_SCRATCH_FLOATS];\n"
            "int main(int argc, char **argv)\n{\n"
            "    FILE *in, *out;\n"
            "    int n, i;\n"
            "    if (argc != 3 || !(in = fopen(argv[1], \"rb\")) || !(out = fopen(argv[2], \"wb\"))) return 2;\n"
            "    if (fread(&n, sizeof n, 1, in) != 1) return 3;\n"
            "    for (i = 0; i < n; i++) {\n"
            "        int k[3];\n"
            "        if (fread(x, sizeof x, 1, in) != 1) return 4;\n"
            "        k[0] = %s_predict(x, a);\n"
            "        k[1] = %s_forward(x, b, scratch);\n"
            "        k[2] = %s_predict(x, NULL);\n"
            "        fwrite(a, sizeof a, 1, out);\n"
            "        fwrite(b, sizeof b, 1, out);\n"
            "        fwrite(k, sizeof k, 1, out);\n"
            "    }\n"
            "    return fclose(out) != 0;\n"
            "}\n",
            P, U, U, U, U, P, P, P);
    fclose(f);
}

/* Exports net, compiles and runs the generated code on n inputs, compares with the library. */
static void check_export(at_net *net, const char *prefix, bool needs_libm) {
    at_net_set_training(net, false);
    char dir[512], path[600], upper[80];
    snprintf(dir, sizeof dir, "%s/%s", root, prefix);
    size_t i = 0;
    for (; prefix[i] && i + 1 < sizeof upper; i++)
        upper[i] = (char)((prefix[i] >= 'a' && prefix[i] <= 'z') ? prefix[i] - 32 : prefix[i]);
    upper[i] = '\0';
    at_status s = at_export_c(net, dir, prefix); /* creates dir */
    CHECK_MSG(s == AT_OK, "%s: %s", prefix, at_error_message());
    if (s != AT_OK) return;
    /* Exporting again replaces the files atomically and leaves no temporary file behind. */
    CHECK_OK(at_export_c(net, dir, prefix));
    CHECK_MSG(leftover_temps(dir) == 0, "%s: temporary files left in %s", prefix, dir);

    snprintf(path, sizeof path, "%s/%s.h", dir, prefix);
    char *hdr = slurp(path);
    snprintf(path, sizeof path, "%s/%s.c", dir, prefix);
    char *src = slurp(path);
    CHECK(hdr && src);
    if (!hdr || !src) {
        free(hdr);
        free(src);
        return;
    }
    char guard[160];
    snprintf(guard, sizeof guard, "#ifndef ADVTRAIN_EXPORT_%s_H", upper);
    CHECK_MSG(strstr(hdr, guard) != NULL, "%s: no include guard", prefix);
    CHECK_MSG(strstr(hdr, "extern \"C\"") != NULL, "%s: no extern \"C\"", prefix);
    CHECK(!strstr(src, "malloc") && !strstr(src, "free("));
    CHECK_MSG((strstr(src, "<math.h>") != NULL) == needs_libm, "%s: <math.h> included: %d", prefix,
              strstr(src, "<math.h>") != NULL);
    /* One comment per layer, with the layer's PyTorch description. */
    for (int l = 0; l < at_net_num_layers(net); l++) {
        char want[64];
        snprintf(want, sizeof want, "/* (%s): ", at_net_layer(net, l)->name);
        if (!strchr(at_net_layer(net, l)->name, '*')) CHECK_MSG(strstr(src, want) != NULL, "%s: no comment '%s'", prefix, want);
    }
    /* Every weight reads back bit for bit, in the parameter buffer's order. */
    size_t nw = 0;
    float *w = source_weights(src, &nw);
    CHECK_MSG(nw == at_net_num_params(net), "%s: %zu literals, %zu parameters", prefix, nw,
              at_net_num_params(net));
    if (w && nw == at_net_num_params(net))
        CHECK_MSG(memcmp(w, at_net_params(net), nw * sizeof(float)) == 0,
                  "%s: weights do not round-trip", prefix);
    free(w);
    free(hdr);
    free(src);

    /* Compile: strict C99, then with the extra warnings and without the static buffers. */
    CHECK(sh("%s %s -c '%s/%s.c' -o '%s/%s.o'", cc, strict_flags, dir, prefix, dir, prefix) == 0);
    CHECK(sh("%s %s %s -D%s_NO_STATIC_SCRATCH -c '%s/%s.c' -o '%s/strict.o'", cc, strict_flags,
             extra_flags, upper, dir, prefix, dir) == 0);
    snprintf(path, sizeof path, "%s/driver.c", dir);
    write_driver(path, prefix, upper);
    /* Models without Tanh/Sigmoid link without libm. */
    if (sh("%s %s -I'%s' '%s/driver.c' '%s/%s.o' -o '%s/driver'%s", cc, strict_flags, dir, dir, dir,
           prefix, dir, needs_libm ? " -lm" : "") != 0) {
        CHECK_MSG(0, "%s: the driver does not build", prefix);
        return;
    }

    /* Inputs: pixels in [0,1], and one sample in [-1, 2] to reach negative pre-activations. */
    const int n = 7, in = at_net_in_size(net), out = at_net_out_size(net);
    float *x = malloc(sizeof(float) * (size_t)n * in);
    at_rng rng;
    at_rng_seed(&rng, 1234);
    for (int j = 0; j < n * in; j++) {
        float u = at_rng_uniform(&rng);
        x[j] = j >= (n - 1) * in ? 3.0f * u - 1.0f : u;
    }
    snprintf(path, sizeof path, "%s/inputs.bin", dir);
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (f) {
        fwrite(&n, sizeof n, 1, f);
        fwrite(x, sizeof(float), (size_t)n * in, f);
        fclose(f);
    }
    const float *ref;
    CHECK_OK(at_net_forward(net, x, n, &ref));
    if (sh("'%s/driver' '%s/inputs.bin' '%s/outputs.bin'", dir, dir, dir) != 0) {
        CHECK_MSG(0, "%s: the driver failed", prefix);
        free(x);
        return;
    }
    snprintf(path, sizeof path, "%s/outputs.bin", dir);
    f = fopen(path, "rb");
    CHECK(f != NULL);
    float *a = malloc(sizeof(float) * out), *b = malloc(sizeof(float) * out);
    double worst = 0;
    for (int j = 0; f && j < n; j++) {
        int k[3];
        bool got = fread(a, sizeof(float), out, f) == (size_t)out &&
                   fread(b, sizeof(float), out, f) == (size_t)out && fread(k, sizeof k, 1, f) == 1;
        CHECK_MSG(got, "%s: short output", prefix);
        if (!got) break;
        const float *z = ref + (size_t)j * out;
        size_t at = 0;
        double v = tu_max_violation(a, z, out, 1e-5, 1e-5, &at);
        worst = v > worst ? v : worst;
        CHECK_MSG(v <= 1.0, "%s sample %d logit %zu: exported %.9g, library %.9g", prefix, j, at,
                  (double)a[at], (double)z[at]);
        CHECK_MSG(memcmp(a, b, sizeof(float) * out) == 0, "%s: predict and forward differ", prefix);
        CHECK_MSG(k[0] == at_argmax(a, out) && k[1] == k[0] && k[2] == k[0],
                  "%s sample %d: classes %d %d %d, argmax %d", prefix, j, k[0], k[1], k[2],
                  at_argmax(a, out));
        /* The library's class, unless two logits are too close to call. */
        int lib = at_argmax(z, out);
        if (k[0] != lib) CHECK_NEAR(z[k[0]], z[lib], 1e-5);
    }
    if (f) fclose(f);
    printf("  %-18s %8zu parameters: logits within %.2f of the tolerance\n", prefix,
           at_net_num_params(net), worst);
    free(a);
    free(b);
    free(x);
}

static void check_spec(const char *spec, int c, int h, int w, const char *prefix, bool libm) {
    at_net *net = NULL;
    at_status s = at_net_from_spec(&net, spec, c, h, w);
    CHECK_MSG(s == AT_OK, "%s: %s", spec, at_error_message());
    if (s != AT_OK) return;
    at_net_init(net, 7);
    check_export(net, prefix, libm);
    at_net_free(net);
}

static void test_models(void) {
    check_spec("seed-cnn", 1, 28, 28, "seed_cnn", false);
    check_spec("seed-cnn", 3, 32, 32, "seed_cnn_cifar", false);
    check_spec("mlp", 1, 28, 28, "mlp", false);
    check_spec("smallcnn", 1, 28, 28, "smallcnn", false);
    check_spec("seed-mlp", 10, 1, 1, "seed_mlp", false);
    /* Every layer kind; padded average and max pooling; a strided convolution. */
    check_spec("conv:4:3:1:1,tanh,avgpool:2:2:1,conv:8:3:2:0,leakyrelu:0.1,maxpool:2:1:1,"
               "dropout:0.3,flatten,linear:16,sigmoid,linear:10",
               3, 16, 16, "every_layer", true);
    /* An activation straight on the (const) input, Dropout2d, ending in an activation. */
    check_spec("relu,maxpool:3:2:1,dropout2d:0.2,conv:5:2,leakyrelu:0.2,flatten,linear:7,tanh", 2,
               9, 9, "Edge_Cases", true);
    /* Nothing to compute at all: the logits are the input. */
    check_spec("flatten,dropout:0.5", 5, 1, 1, "identity", false);
    /* Linear straight on an image, no Flatten. */
    check_spec("avgpool:2,linear:3", 2, 4, 6, "linear_on_image", false);
}

/* Names from layer descriptions cannot break out of the generated comments. */
static void test_hostile_names(void) {
    at_layer_desc d[2];
    memset(d, 0, sizeof d);
    d[0].kind = AT_LAYER_LINEAR;
    d[0].out = 4;
    snprintf(d[0].name, sizeof d[0].name, "a*/ b /*c");
    d[1].kind = AT_LAYER_RELU;
    at_net *net = NULL;
    CHECK_OK(at_net_create(&net, d, 2, 3, 1, 1));
    if (!net) return;
    at_net_init(net, 3);
    check_export(net, "hostile", false);
    at_net_free(net);
}

static void test_errors(void) {
    at_net *net = NULL;
    CHECK_OK(at_net_from_spec(&net, "seed-mlp", 10, 1, 1));
    if (!net) return;
    at_net_init(net, 1);
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/errors", root);
    const char *bad[] = {"", "1abc", "a-b", "a b", "a.b", "caf\xc3\xa9", "x/y",
                         "a123456789012345678901234567890123456789012345678901234567890123456789"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        at_status s = at_export_c(net, dir, bad[i]);
        CHECK_MSG(s == AT_ERR_ARG, "prefix '%s': %s", bad[i], at_status_name(s));
        CHECK(strstr(at_error_message(), "prefix") != NULL);
    }
    CHECK(at_export_c(net, dir, NULL) == AT_ERR_ARG);
    CHECK(at_export_c(net, NULL, "ok") == AT_ERR_ARG);
    CHECK(at_export_c(NULL, dir, "ok") == AT_ERR_ARG);
    CHECK_MSG(!exists(dir), "a rejected prefix created %s", dir);

    /* A regular file where the directory should be. */
    snprintf(path, sizeof path, "%s/plain_file", root);
    FILE *f = fopen(path, "w");
    if (f) fclose(f);
    at_status s = at_export_c(net, path, "ok");
    CHECK(s == AT_ERR_IO);
    CHECK_MSG(strstr(at_error_message(), path) != NULL, "message does not name %s: %s", path,
              at_error_message());
    /* A directory whose parent does not exist. */
    snprintf(path, sizeof path, "%s/missing/deeper", root);
    s = at_export_c(net, path, "ok");
    CHECK(s == AT_ERR_IO);
    CHECK_MSG(strstr(at_error_message(), path) != NULL, "message does not name %s: %s", path,
              at_error_message());
    /* A directory that exists but cannot take the file: the target is a directory itself. */
    snprintf(path, sizeof path, "%s/blocked", root);
    mkdir(path, 0777);
    char inner[700];
    snprintf(inner, sizeof inner, "%s/ok.c", path);
    mkdir(inner, 0777);
    s = at_export_c(net, path, "ok");
    CHECK(s == AT_ERR_IO);
    CHECK_MSG(strstr(at_error_message(), "ok.c") != NULL, "message does not name ok.c: %s",
              at_error_message());
    CHECK_MSG(leftover_temps(path) == 0, "temporary files left in %s", path);
    snprintf(inner, sizeof inner, "%s/ok.h", path);
    CHECK_MSG(!exists(inner), "a failed export left %s", inner);

    /* A non-finite parameter: refused, naming the tensor; nothing is left behind. */
    snprintf(path, sizeof path, "%s/nan", root);
    at_net_params(net)[3] = NAN;
    s = at_export_c(net, path, "nan_model");
    CHECK(s == AT_ERR_NAN);
    CHECK_MSG(strstr(at_error_message(), "fc1.weight") != NULL, "%s", at_error_message());
    CHECK_MSG(leftover_temps(path) == 0, "temporary files left in %s", path);
    snprintf(inner, sizeof inner, "%s/nan_model.h", path);
    CHECK(!exists(inner));
    at_net_free(net);
}

int main(void) {
    const char *env_cc = getenv("CC");
    if (env_cc && *env_cc) cc = env_cc;
    if (sh("%s --version >/dev/null 2>&1", cc) != 0) {
        fprintf(stderr, "test_export_c: no C compiler '%s' (set CC): this test needs one\n", cc);
        return 1;
    }
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 1;
    }
    test_models();
    test_hostile_names();
    test_errors();
    if (tu_failures == 0)
        sh("rm -rf '%s'", root);
    else
        fprintf(stderr, "test_export_c: files kept in %s\n", root);
    return tu_finish("test_export_c");
}
