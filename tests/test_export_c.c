/* C export: the generated source compiles as strict C99 (-Wall -Wextra -Werror -pedantic) with the
 * system compiler, links with a small driver, and its logits match at_net_forward's in eval mode
 * for every built-in model and for specs that use every layer kind; the weights in the source
 * read back bit for bit; bad prefixes and unwritable directories fail cleanly. Graph models
 * (resnet8, preact-resnet18, dscnn, specs with shortcuts, grouped convs, BatchNorm folded and
 * not) are trained a few steps and given non-trivial BatchNorm statistics, then compared on 100
 * inputs within 1e-4. */
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

/* How check_export compares: n inputs, |exported - library| <= atol + rtol * |library|; for a
 * network with BatchNorm, how many of its BatchNorm layers the header must list as folded and as
 * applied (-1: any number). */
typedef struct check_opts {
    int n;
    double atol, rtol;
    int folded, unfolded;
} check_opts;

static const check_opts chain_opts = {7, 1e-5, 1e-5, -1, -1};

static void check_literals(at_net *net, const char *prefix, const char *hdr, const char *src,
                           const check_opts *o);
static void compare_logits(at_net *net, const char *prefix, const char *dir, const check_opts *o);

/* Exports net, compiles and runs the generated code on n inputs, compares with the library. */
static void check_export_with(at_net *net, const char *prefix, bool needs_libm, const check_opts *o) {
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
    check_literals(net, prefix, hdr, src, o);
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

    compare_logits(net, prefix, dir, o);
}

static void check_export(at_net *net, const char *prefix, bool needs_libm) {
    check_export_with(net, prefix, needs_libm, &chain_opts);
}

static bool is_bn_kind(at_layer_kind k) {
    return k == AT_LAYER_BATCHNORM2D || k == AT_LAYER_BATCHNORM1D;
}

/* The header's architecture line of layer `name` ("(name): ..."), up to its end, or NULL. */
static const char *listing_line(const char *hdr, const char *name, char *line, size_t cap) {
    char want[64];
    snprintf(want, sizeof want, " *   (%s): ", name);
    const char *p = strstr(hdr, want);
    if (!p) return NULL;
    size_t n = strcspn(p, "\n");
    if (n >= cap) n = cap - 1;
    memcpy(line, p, n);
    line[n] = '\0';
    return line;
}

/* The literals in the source: without BatchNorm, every parameter bit for bit in the parameter
 * buffer's order. With BatchNorm, the header says which were folded, and the source holds one
 * array per parameter tensor, less each folded BatchNorm's weight and bias, plus a bias for a
 * bias-free producer that took one in (an unfolded BatchNorm's scale and shift replace its own
 * weight and bias). */
static void check_literals(at_net *net, const char *prefix, const char *hdr, const char *src,
                           const check_opts *o) {
    size_t nw = 0, expected = at_net_num_params(net);
    float *w = source_weights(src, &nw);
    int folded = 0, unfolded = 0, nbn = 0;
    for (int l = 0; l < at_net_num_layers(net); l++) {
        const at_layer_desc *d = at_net_layer(net, l);
        if (!is_bn_kind(d->kind)) continue;
        nbn++;
        char line[512], bias[80];
        const at_param_info *gamma = NULL;
        for (int t = 0; t < at_net_num_tensors(net); t++)
            if (at_net_tensor(net, t)->layer == l && !at_net_tensor(net, t)->is_bias) gamma = at_net_tensor(net, t);
        const int C = gamma ? gamma->shape[0] : 0;
        if (!listing_line(hdr, d->name, line, sizeof line)) {
            CHECK_MSG(0, "%s: no architecture line for (%s)", prefix, d->name);
            continue;
        }
        const char *into = strstr(line, ", folded into (");
        CHECK_MSG(into || strstr(line, ", applied as a per-channel scale and shift"),
                  "%s: the header does not say what became of (%s): %s", prefix, d->name, line);
        if (!into) {
            unfolded++;
            continue;
        }
        folded++;
        expected -= 2 * (size_t)C;
        into += strlen(", folded into (");
        snprintf(bias, sizeof bias, "%.*s.bias", (int)strcspn(into, ")"), into);
        if (!at_net_find_tensor(net, bias)) expected += (size_t)C;
    }
    CHECK_MSG(nw == expected, "%s: %zu literals, %zu expected", prefix, nw, expected);
    if (nbn == 0 && w && nw == at_net_num_params(net))
        CHECK_MSG(memcmp(w, at_net_params(net), nw * sizeof(float)) == 0,
                  "%s: weights do not round-trip", prefix);
    if (o->folded >= 0)
        CHECK_MSG(folded == o->folded, "%s: %d BatchNorm folded, %d expected", prefix, folded, o->folded);
    if (o->unfolded >= 0)
        CHECK_MSG(unfolded == o->unfolded, "%s: %d BatchNorm not folded, %d expected", prefix,
                  unfolded, o->unfolded);
    CHECK_MSG((strstr(hdr, "BatchNorm folded into") != NULL) == (folded > 0),
              "%s: the header's summary of folded BatchNorm", prefix);
    free(w);
}

/* Runs the compiled driver on o->n inputs and compares its logits with at_net_forward's. */
static void compare_logits(at_net *net, const char *prefix, const char *dir, const check_opts *o) {
    char path[600];
    /* Inputs: pixels in [0,1], and one sample in [-1, 2] to reach negative pre-activations. */
    const int n = o->n, in = at_net_in_size(net), out = at_net_out_size(net);
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
    double worst = 0, max_abs = 0;
    for (int j = 0; f && j < n; j++) {
        int k[3];
        bool got = fread(a, sizeof(float), out, f) == (size_t)out &&
                   fread(b, sizeof(float), out, f) == (size_t)out && fread(k, sizeof k, 1, f) == 1;
        CHECK_MSG(got, "%s: short output", prefix);
        if (!got) break;
        const float *z = ref + (size_t)j * out;
        size_t at = 0;
        double v = tu_max_violation(a, z, out, o->atol, o->rtol, &at);
        worst = v > worst ? v : worst;
        for (int i = 0; i < out; i++) {
            const double diff = fabs((double)a[i] - (double)z[i]);
            max_abs = diff > max_abs || diff != diff ? diff : max_abs;
        }
        CHECK_MSG(v <= 1.0, "%s sample %d logit %zu: exported %.9g, library %.9g", prefix, j, at,
                  (double)a[at], (double)z[at]);
        CHECK_MSG(memcmp(a, b, sizeof(float) * out) == 0, "%s: predict and forward differ", prefix);
        CHECK_MSG(k[0] == at_argmax(a, out) && k[1] == k[0] && k[2] == k[0],
                  "%s sample %d: classes %d %d %d, argmax %d", prefix, j, k[0], k[1], k[2],
                  at_argmax(a, out));
        /* The library's class, unless two logits are too close to call. */
        int lib = at_argmax(z, out);
        if (k[0] != lib) CHECK_NEAR(z[k[0]], z[lib], o->atol + o->rtol * fabs((double)z[lib]));
    }
    if (f) fclose(f);
    printf("  %-22s %8zu parameters, %3d inputs: logits within %.2f of the tolerance "
           "(max |diff| %.2g)\n",
           prefix, at_net_num_params(net), n, worst, max_abs);
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

/* A few SGD steps in training mode (BatchNorm normalises with batch statistics and moves its
 * running statistics), then BatchNorm weights, biases and running statistics pushed further from
 * their initial values through at_net_params and at_net_buffers, so that folding them is tested
 * with values that matter. */
static void train_and_perturb(at_net *net, uint64_t seed) {
    const int n = 16, in = at_net_in_size(net), out = at_net_out_size(net);
    float *x = malloc(sizeof(float) * (size_t)n * in), *dz = malloc(sizeof(float) * (size_t)n * out);
    int32_t labels[16];
    at_rng rng;
    at_rng_seed(&rng, seed);
    at_optim_config oc = at_optim_defaults(AT_OPTIM_SGD);
    oc.lr = 0.05f;
    oc.momentum = 0.9f;
    at_optim *opt = NULL;
    CHECK_OK(at_optim_create(&opt, net, &oc));
    at_net_set_training(net, true);
    for (int step = 0; opt && x && dz && step < 5; step++) {
        for (int j = 0; j < n * in; j++) x[j] = at_rng_uniform(&rng);
        for (int j = 0; j < n; j++) labels[j] = (int32_t)at_rng_below(&rng, (uint32_t)out);
        const float *z;
        float loss;
        at_net_zero_grad(net);
        CHECK_OK(at_net_forward(net, x, n, &z));
        CHECK_OK(at_cross_entropy(z, labels, n, out, 0.0f, &loss, dz, NULL));
        CHECK_OK(at_net_backward(net, dz, AT_GRAD_PARAMS, NULL));
        CHECK_OK(at_optim_step(opt));
    }
    at_net_set_training(net, false);
    at_optim_free(opt);
    free(x);
    free(dz);
    float *params = at_net_params(net), *bufs = at_net_buffers(net);
    for (int t = 0; t < at_net_num_tensors(net); t++) {
        const at_param_info *info = at_net_tensor(net, t);
        if (!is_bn_kind(at_net_layer(net, info->layer)->kind)) continue;
        for (size_t i = 0; i < info->size; i++)
            params[info->offset + i] = info->is_bias ? 0.6f * at_rng_uniform(&rng) - 0.3f
                                                     : 0.5f + at_rng_uniform(&rng);
    }
    for (int b = 0; b < at_net_num_buffers(net); b++) {
        const at_param_info *info = at_net_buffer(net, b);
        const bool var = strstr(info->name, "running_var") != NULL;
        if (info->is_integer) continue;
        for (size_t i = 0; i < info->size; i++) {
            float *v = &bufs[info->offset + i];
            *v = var ? *v * (0.7f + 0.7f * at_rng_uniform(&rng)) : *v + 0.6f * at_rng_uniform(&rng) - 0.3f;
        }
    }
}

static void check_graph(const char *spec, int c, int h, int w, const char *prefix, bool libm,
                        int folded, int unfolded) {
    at_net *net = NULL;
    at_status s = at_net_from_spec(&net, spec, c, h, w);
    CHECK_MSG(s == AT_OK, "%s: %s", spec, at_error_message());
    if (s != AT_OK) return;
    at_net_init(net, 11);
    train_and_perturb(net, 5);
    const check_opts o = {100, 1e-4, 0.0, folded, unfolded};
    check_export_with(net, prefix, libm, &o);
    at_net_free(net);
}

/* Graph models: named inputs, residual Adds, BatchNorm folded into the conv or linear layer
 * before it where that layer has no other reader and applied as scale and shift where it has
 * (preact-resnet18's pre-activation BatchNorm reads an Add), grouped, depthwise and bias-free
 * convs, global average pooling. */
static void test_graph_models(void) {
    check_graph("resnet8", 1, 28, 28, "resnet8", false, 7, 0);
    check_graph("resnet8", 3, 32, 32, "resnet8_cifar", false, 7, 0);
    check_graph("preact-resnet18:4", 3, 32, 32, "preact_resnet18_4", false, 8, 9);
    check_graph("dscnn", 1, 28, 28, "dscnn", false, 9, 0);
    /* A projection shortcut (a strided 1x1 conv with its own BatchNorm) and an identity one. */
    check_graph("conv:8:3:1:1,bn,a=relu,conv:16:3:2:1:bias=0,bn,relu,conv:16:3:1:1:bias=0,b=bn,"
                "conv:16:1:2:0:bias=0@a,bn,add:b,c=relu,conv:16:3:1:1,bn,relu,add:c,gap,flatten,"
                "linear:10",
                3, 12, 12, "projection", false, 5, 0);
    /* BatchNorm that cannot be folded: on the network's input, after a conv an Add also reads,
     * after a linear layer an Add also reads. A Tanh that must not work in place (an Add reads
     * its input later). Grouped convs with several input and output channels per group, a
     * depthwise conv with a channel multiplier, a bias-free conv without BatchNorm, BatchNorm1d
     * folded through Flatten and into a linear layer, LeakyReLU. */
    check_graph("bn,a=conv:6:3:1:1,bn,relu,conv:6:3:1:1:groups=3,bn,add:a,r=relu,tanh,add:r,"
                "conv:12:3:1:1:groups=3,bn,relu,conv:24:3:2:1:groups=12,leakyrelu:0.1,"
                "conv:8:1:1:0:bias=0,maxpool:2,conv:8:3,flatten,bn1d,relu,linear:12,bn1d,tanh,"
                "c=linear:8,bn1d,relu,add:c,linear:5",
                2, 12, 12, "unfoldable", true, 4, 3);
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

/* BatchNorm statistics that give no finite map are refused, naming the layer or buffer, and
 * leave nothing behind. */
static void test_bn_errors(void) {
    at_net *net = NULL;
    CHECK_OK(at_net_from_spec(&net, "conv:4:3,bn,relu,flatten,linear:3", 2, 5, 5));
    if (!net) return;
    at_net_init(net, 1);
    char dir[512], inner[600];
    snprintf(dir, sizeof dir, "%s/bn_errors", root);
    const at_param_info *var = at_net_find_buffer(net, "1.running_var");
    const at_param_info *mean = at_net_find_buffer(net, "1.running_mean");
    CHECK(var && mean);
    if (!var || !mean) {
        at_net_free(net);
        return;
    }
    float *bufs = at_net_buffers(net);
    bufs[var->offset + 2] = -1.0f; /* sqrt of a negative variance */
    at_status s = at_export_c(net, dir, "bad_var");
    CHECK(s == AT_ERR_NAN);
    CHECK_MSG(strstr(at_error_message(), "BatchNorm layer '1'") != NULL, "%s", at_error_message());
    bufs[var->offset + 2] = 1.0f;
    bufs[mean->offset + 1] = INFINITY;
    s = at_export_c(net, dir, "bad_mean");
    CHECK(s == AT_ERR_NAN);
    CHECK_MSG(strstr(at_error_message(), "1.running_mean") != NULL, "%s", at_error_message());
    CHECK_MSG(leftover_temps(dir) == 0, "temporary files left in %s", dir);
    snprintf(inner, sizeof inner, "%s/bad_mean.c", dir);
    CHECK(!exists(inner));
    bufs[mean->offset + 1] = 0.0f;
    CHECK_OK(at_export_c(net, dir, "good"));
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
    test_graph_models();
    test_hostile_names();
    test_errors();
    test_bn_errors();
    if (tu_failures == 0)
        sh("rm -rf '%s'", root);
    else
        fprintf(stderr, "test_export_c: files kept in %s\n", root);
    return tu_finish("test_export_c");
}
