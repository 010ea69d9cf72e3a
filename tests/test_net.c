/* Networks: built-in architectures (PyTorch names and shapes), initialization, the spec syntax,
 * shape errors, model files and training determinism. */
#define _POSIX_C_SOURCE 200809L /* mkdtemp */
#include "advtrain.h"
#include "testutil.h"

#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

/* ------------------------------------------------------------ built-in architectures */

typedef struct {
    const char *name;
    int ndim;
    int shape[4];
} want_tensor;

static void check_tensors(const char *spec, int c, int h, int w, const want_tensor *want, int nwant,
                          size_t want_params) {
    at_net *net = NULL;
    at_status s = at_net_from_spec(&net, spec, c, h, w);
    CHECK_MSG(s == AT_OK, "%s on %dx%dx%d: %s", spec, c, h, w, at_error_message());
    if (!net) return;
    CHECK_MSG(at_net_num_tensors(net) == nwant, "%s: %d tensors, want %d", spec,
              at_net_num_tensors(net), nwant);
    CHECK_MSG(at_net_num_params(net) == want_params, "%s: %zu parameters, want %zu", spec,
              at_net_num_params(net), want_params);
    CHECK(strcmp(at_net_spec(net), spec) == 0);
    CHECK(at_net_in_size(net) == c * h * w);
    CHECK(at_net_out_size(net) == 10);
    for (int i = 0; i < nwant && i < at_net_num_tensors(net); i++) {
        const at_param_info *t = at_net_tensor(net, i);
        CHECK_MSG(strcmp(t->name, want[i].name) == 0, "%s tensor %d is '%s', want '%s'", spec, i,
                  t->name, want[i].name);
        CHECK_MSG(t->ndim == want[i].ndim, "%s %s: ndim %d, want %d", spec, want[i].name, t->ndim,
                  want[i].ndim);
        size_t count = 1;
        for (int d = 0; d < want[i].ndim; d++) {
            CHECK_MSG(t->shape[d] == want[i].shape[d], "%s %s: dim %d is %d, want %d", spec,
                      want[i].name, d, t->shape[d], want[i].shape[d]);
            count *= (size_t)want[i].shape[d];
        }
        CHECK_MSG(t->size == count, "%s %s: size %zu, want %zu", spec, want[i].name, t->size, count);
        CHECK(t->is_bias == (strstr(t->name, ".bias") != NULL));
        CHECK(at_net_find_tensor(net, want[i].name) == t);
        const at_layer_desc *d = at_net_layer(net, t->layer);
        CHECK(d && (d->kind == AT_LAYER_LINEAR || d->kind == AT_LAYER_CONV2D));
    }
    /* The views tile the parameter buffer without gaps or overlaps, in order. */
    size_t next = 0;
    for (int i = 0; i < at_net_num_tensors(net); i++) {
        const at_param_info *t = at_net_tensor(net, i);
        CHECK_MSG(t->offset == next, "%s %s: offset %zu, want %zu", spec, t->name, t->offset, next);
        next = t->offset + t->size;
    }
    CHECK(next == at_net_num_params(net));
    CHECK(at_net_tensor(net, -1) == NULL);
    CHECK(at_net_tensor(net, at_net_num_tensors(net)) == NULL);
    CHECK(at_net_find_tensor(net, "nope.weight") == NULL);
    at_net_free(net);
}

static void test_builtin_shapes(void) {
    const want_tensor lenet28[] = {
        {"conv1.weight", 4, {6, 1, 5, 5}}, {"conv1.bias", 1, {6}},
        {"conv2.weight", 4, {16, 6, 5, 5}}, {"conv2.bias", 1, {16}},
        {"fc1.weight", 2, {120, 400}},     {"fc1.bias", 1, {120}},
        {"fc2.weight", 2, {84, 120}},      {"fc2.bias", 1, {84}},
        {"fc3.weight", 2, {10, 84}},       {"fc3.bias", 1, {10}},
    };
    check_tensors("seed-cnn", 1, 28, 28, lenet28, 10, 61706);
    want_tensor lenet32[10];
    memcpy(lenet32, lenet28, sizeof lenet28);
    lenet32[0].shape[1] = 3;
    check_tensors("seed-cnn", 3, 32, 32, lenet32, 10, 62006);

    const want_tensor mlp[] = {
        {"1.weight", 2, {256, 784}}, {"1.bias", 1, {256}}, {"3.weight", 2, {128, 256}},
        {"3.bias", 1, {128}},        {"5.weight", 2, {10, 128}}, {"5.bias", 1, {10}},
    };
    check_tensors("mlp", 1, 28, 28, mlp, 6, 235146);
    check_tensors("mlp", 784, 1, 1, mlp, 6, 235146);

    const want_tensor smallcnn[] = {
        {"0.weight", 4, {16, 1, 4, 4}}, {"0.bias", 1, {16}},  {"2.weight", 4, {32, 16, 4, 4}},
        {"2.bias", 1, {32}},            {"5.weight", 2, {100, 1568}}, {"5.bias", 1, {100}},
        {"7.weight", 2, {10, 100}},     {"7.bias", 1, {10}},
    };
    check_tensors("smallcnn", 1, 28, 28, smallcnn, 8, 166406);

    const want_tensor seedmlp[] = {
        {"fc1.weight", 2, {50, 10}}, {"fc1.bias", 1, {50}},
        {"fc2.weight", 2, {10, 50}}, {"fc2.bias", 1, {10}},
    };
    check_tensors("seed-mlp", 10, 1, 1, seedmlp, 4, 1060);

    /* Layer output shapes of LeNet on 28x28 (conv1 pads by 2) and 32x32 (no padding). */
    static const int lenet_out[12][3] = {{6, 28, 28}, {6, 28, 28}, {6, 14, 14}, {16, 10, 10},
                                         {16, 10, 10}, {16, 5, 5},  {400, 1, 1}, {120, 1, 1},
                                         {120, 1, 1}, {84, 1, 1},   {84, 1, 1},  {10, 1, 1}};
    const int sizes[2][2] = {{1, 28}, {3, 32}};
    for (int k = 0; k < 2; k++) {
        at_net *net = NULL;
        CHECK_OK(at_net_from_spec(&net, "seed-cnn", sizes[k][0], sizes[k][1], sizes[k][1]));
        if (!net) continue;
        CHECK(at_net_num_layers(net) == 12);
        for (int l = 0; l < 12 && l < at_net_num_layers(net); l++) {
            int c, h, w;
            at_net_layer_out_shape(net, l, &c, &h, &w);
            CHECK_MSG(c == lenet_out[l][0] && h == lenet_out[l][1] && w == lenet_out[l][2],
                      "seed-cnn %dx%d layer %d: %dx%dx%d", sizes[k][1], sizes[k][1], l, c, h, w);
        }
        int c, h, w;
        at_net_in_shape(net, &c, &h, &w);
        CHECK(c == sizes[k][0] && h == sizes[k][1] && w == sizes[k][1]);
        at_net_free(net);
    }
    /* smallcnn: 28 -> 14 -> 7 with kernel 4, stride 2, padding 1. */
    at_net *net = NULL;
    CHECK_OK(at_net_from_spec(&net, "smallcnn", 1, 28, 28));
    if (net) {
        int c, h, w;
        at_net_layer_out_shape(net, 0, &c, &h, &w);
        CHECK(c == 16 && h == 14 && w == 14);
        at_net_layer_out_shape(net, 2, &c, &h, &w);
        CHECK(c == 32 && h == 7 && w == 7);
        const at_layer_desc *d = at_net_layer(net, 2);
        CHECK(d && d->kind == AT_LAYER_CONV2D && d->kernel == 4 && d->stride == 2 && d->pad == 1);
        CHECK(at_net_layer(net, 8) == NULL);
        at_net_free(net);
    }
    /* Layer kinds, in order, as the PyTorch modules. */
    enum { LIN = AT_LAYER_LINEAR, CONV = AT_LAYER_CONV2D, MAXP = AT_LAYER_MAXPOOL2D,
           RELU = AT_LAYER_RELU, FLAT = AT_LAYER_FLATTEN, END = -1 };
    static const struct {
        const char *spec;
        int c, h, w;
        int kinds[13];
    } arch[] = {
        {"seed-cnn", 1, 28, 28, {CONV, RELU, MAXP, CONV, RELU, MAXP, FLAT, LIN, RELU, LIN, RELU, LIN, END}},
        {"mlp", 1, 28, 28, {FLAT, LIN, RELU, LIN, RELU, LIN, END}},
        {"smallcnn", 1, 28, 28, {CONV, RELU, CONV, RELU, FLAT, LIN, RELU, LIN, END}},
        {"seed-mlp", 10, 1, 1, {FLAT, LIN, LIN, END}},
    };
    for (size_t a = 0; a < sizeof arch / sizeof *arch; a++) {
        at_net *an = NULL;
        CHECK_OK(at_net_from_spec(&an, arch[a].spec, arch[a].c, arch[a].h, arch[a].w));
        if (!an) continue;
        int nl = 0;
        while (arch[a].kinds[nl] != END) nl++;
        CHECK_MSG(at_net_num_layers(an) == nl, "%s: %d layers, want %d", arch[a].spec,
                  at_net_num_layers(an), nl);
        for (int l = 0; l < nl && l < at_net_num_layers(an); l++)
            CHECK_MSG((int)at_net_layer(an, l)->kind == arch[a].kinds[l], "%s layer %d: kind %d, want %d",
                      arch[a].spec, l, (int)at_net_layer(an, l)->kind, arch[a].kinds[l]);
        at_net_free(an);
    }
    CHECK(at_is_builtin_model("seed-cnn") && at_is_builtin_model("seed-mlp") &&
          at_is_builtin_model("mlp") && at_is_builtin_model("smallcnn"));
    CHECK(!at_is_builtin_model("lenet") && !at_is_builtin_model("") &&
          !at_is_builtin_model("flatten,linear:10"));
}

/* ------------------------------------------------------------ initialization */

static void check_init(const char *spec, int c, int h, int w) {
    at_net *net = NULL;
    CHECK_OK(at_net_from_spec(&net, spec, c, h, w));
    if (!net) return;
    /* Created networks start at zero. */
    const float *p = at_net_params(net);
    size_t np = at_net_num_params(net);
    size_t nonzero = 0;
    for (size_t i = 0; i < np; i++) nonzero += p[i] != 0.0f;
    CHECK_MSG(nonzero == 0, "%s: %zu non-zero parameters before init", spec, nonzero);
    at_net_init(net, 1234);
    for (int t = 0; t < at_net_num_tensors(net); t++) {
        const at_param_info *ti = at_net_tensor(net, t);
        /* fan_in = in_features (Linear) or in_channels * k * k (Conv2d), from the weight. */
        const at_param_info *wt = ti;
        if (ti->is_bias) {
            char wname[64];
            snprintf(wname, sizeof wname, "%.*s.weight", (int)(strlen(ti->name) - 5), ti->name);
            wt = at_net_find_tensor(net, wname);
            CHECK_MSG(wt != NULL, "%s: no weight for %s", spec, ti->name);
            if (!wt) continue;
        }
        size_t fan_in = wt->size / (size_t)wt->shape[0];
        double bound = 1.0 / sqrt((double)fan_in);
        double sum = 0, sum2 = 0, lo = INFINITY, hi = -INFINITY;
        for (size_t i = 0; i < ti->size; i++) {
            double v = p[ti->offset + i];
            sum += v;
            sum2 += v * v;
            lo = fmin(lo, v);
            hi = fmax(hi, v);
        }
        CHECK_MSG(lo >= -bound && hi <= bound, "%s %s: values in [%g, %g], bound %g", spec,
                  ti->name, lo, hi, bound);
        if (ti->size >= 200) {
            double mean = sum / ti->size, sd = sqrt(sum2 / ti->size - mean * mean);
            double want = bound / sqrt(3.0);
            CHECK_MSG(fabs(sd - want) <= 0.1 * want, "%s %s: std %g, want %g (uniform)", spec,
                      ti->name, sd, want);
            CHECK_MSG(fabs(mean) <= 4.0 * want / sqrt((double)ti->size) + 1e-6,
                      "%s %s: mean %g", spec, ti->name, mean);
            /* Both ends of the range are used. */
            CHECK_MSG(lo < -0.9 * bound && hi > 0.9 * bound, "%s %s: range [%g, %g] of %g", spec,
                      ti->name, lo, hi, bound);
        }
    }
    /* Same seed -> same parameters; another seed -> different ones. */
    float *first = malloc(np * sizeof(float));
    memcpy(first, p, np * sizeof(float));
    at_net_init(net, 1234);
    CHECK_MSG(memcmp(first, p, np * sizeof(float)) == 0, "%s: same seed, different params", spec);
    at_net_init(net, 1235);
    size_t same = 0;
    for (size_t i = 0; i < np; i++) same += first[i] == p[i];
    CHECK_MSG(same < np / 100 + 1, "%s: %zu of %zu params unchanged by another seed", spec, same, np);
    /* A second network with the same seed is identical. */
    at_net *other = NULL;
    CHECK_OK(at_net_from_spec(&other, spec, c, h, w));
    if (other) {
        at_net_init(other, 1234);
        CHECK(memcmp(first, at_net_params(other), np * sizeof(float)) == 0);
        at_net_free(other);
    }
    free(first);
    at_net_free(net);
}

static void test_init(void) {
    check_init("seed-cnn", 1, 28, 28);
    check_init("seed-cnn", 3, 32, 32);
    check_init("mlp", 1, 28, 28);
    check_init("smallcnn", 1, 28, 28);
    check_init("seed-mlp", 10, 1, 1);
    check_init("conv:8:3:1:1,relu,maxpool:2,flatten,linear:10", 3, 8, 8);

    /* The other initializers: Kaiming normal has std sqrt(2/fan_in), zero biases; Xavier uniform
     * stays within sqrt(6/(fan_in+fan_out)). */
    at_net *net = NULL;
    CHECK_OK(at_net_from_spec(&net, "mlp", 1, 28, 28));
    if (net) {
        at_net_init_with(net, AT_INIT_KAIMING_NORMAL, 3);
        const at_param_info *w1 = at_net_find_tensor(net, "1.weight");
        const at_param_info *b1 = at_net_find_tensor(net, "1.bias");
        const float *p = at_net_params(net);
        double s2 = 0;
        for (size_t i = 0; i < w1->size; i++) s2 += (double)p[w1->offset + i] * p[w1->offset + i];
        double sd = sqrt(s2 / w1->size), want = sqrt(2.0 / 784);
        CHECK_MSG(fabs(sd - want) < 0.05 * want, "kaiming std %g want %g", sd, want);
        for (size_t i = 0; i < b1->size; i++) CHECK(p[b1->offset + i] == 0.0f);
        at_net_init_with(net, AT_INIT_XAVIER_UNIFORM, 3);
        double a = sqrt(6.0 / (784 + 256)), lo = 0, hi = 0;
        for (size_t i = 0; i < w1->size; i++) {
            lo = fmin(lo, p[w1->offset + i]);
            hi = fmax(hi, p[w1->offset + i]);
        }
        CHECK_MSG(lo >= -a && hi <= a && hi > 0.9 * a, "xavier range [%g, %g] of %g", lo, hi, a);
        at_net_free(net);
    }
}

/* ------------------------------------------------------------ specs */

static void test_spec(void) {
    const char *spec = "conv:8:3:1:1,relu,maxpool:2,flatten,linear:10";
    at_net *net = NULL;
    CHECK_OK(at_net_from_spec(&net, spec, 3, 8, 8));
    if (net) {
        CHECK(at_net_num_layers(net) == 5);
        CHECK(strcmp(at_net_spec(net), spec) == 0);
        CHECK(at_net_num_tensors(net) == 4);
        const char *names[4] = {"0.weight", "0.bias", "4.weight", "4.bias"};
        for (int i = 0; i < 4 && i < at_net_num_tensors(net); i++)
            CHECK_MSG(strcmp(at_net_tensor(net, i)->name, names[i]) == 0, "tensor %d is %s", i,
                      at_net_tensor(net, i)->name);
        const at_param_info *w = at_net_find_tensor(net, "0.weight");
        CHECK(w && w->ndim == 4 && w->shape[0] == 8 && w->shape[1] == 3 && w->shape[2] == 3 &&
              w->shape[3] == 3);
        const at_param_info *f = at_net_find_tensor(net, "4.weight");
        CHECK(f && f->ndim == 2 && f->shape[0] == 10 && f->shape[1] == 8 * 4 * 4);
        CHECK(at_net_num_params(net) == 8 * 27 + 8 + 10 * 128 + 10);
        int c, h, wd;
        at_net_layer_out_shape(net, 0, &c, &h, &wd);
        CHECK(c == 8 && h == 8 && wd == 8);
        at_net_layer_out_shape(net, 2, &c, &h, &wd);
        CHECK(c == 8 && h == 4 && wd == 4);
        const at_layer_desc *mp = at_net_layer(net, 2);
        CHECK(mp && mp->kind == AT_LAYER_MAXPOOL2D && mp->kernel == 2 && mp->stride == 2 &&
              mp->pad == 0);
        at_net_free(net);
    }

    /* at_spec_parse: kinds, defaults and arguments. */
    at_layer_desc L[16];
    int n = 16;
    CHECK_OK(at_spec_parse("conv:4:5,maxpool:3:2:1,avgpool:2,leakyrelu,leakyrelu:0.2,dropout,"
                           "dropout:0.25,tanh,sigmoid,flatten,linear:7,RELU",
                           L, &n));
    CHECK(n == 12);
    if (n == 12) {
        CHECK(L[0].kind == AT_LAYER_CONV2D && L[0].out == 4 && L[0].kernel == 5 &&
              L[0].stride == 1 && L[0].pad == 0);
        CHECK(L[1].kind == AT_LAYER_MAXPOOL2D && L[1].kernel == 3 && L[1].stride == 2 &&
              L[1].pad == 1);
        CHECK(L[2].kind == AT_LAYER_AVGPOOL2D && L[2].kernel == 2 && L[2].stride == 2 &&
              L[2].pad == 0);
        CHECK(L[3].kind == AT_LAYER_LEAKYRELU && fabsf(L[3].alpha - 0.01f) < 1e-7f);
        CHECK(L[4].kind == AT_LAYER_LEAKYRELU && fabsf(L[4].alpha - 0.2f) < 1e-7f);
        CHECK(L[5].kind == AT_LAYER_DROPOUT && fabsf(L[5].alpha - 0.5f) < 1e-7f);
        CHECK(L[6].kind == AT_LAYER_DROPOUT && fabsf(L[6].alpha - 0.25f) < 1e-7f);
        CHECK(L[7].kind == AT_LAYER_TANH && L[8].kind == AT_LAYER_SIGMOID &&
              L[9].kind == AT_LAYER_FLATTEN);
        CHECK(L[10].kind == AT_LAYER_LINEAR && L[10].out == 7);
        CHECK(L[11].kind == AT_LAYER_RELU);
        CHECK(strcmp(L[10].name, "10") == 0);
    }
    n = 2;
    CHECK(at_spec_parse("relu,relu,relu", L, &n) == AT_ERR_ARG);

    /* Bad specs: AT_ERR_ARG with a message that names the problem. */
    static const struct {
        const char *spec, *mentions;
    } bad[] = {
        {"conv", "conv"},
        {"conv:8", "conv"},
        {"linear:abc", "abc"},
        {"foo", "foo"},
        {"relu,,relu", "empty"},
        {"flatten,linear:10,", "comma"},
        {"linear:-3", "linear:-3"},
        {"linear:2.5", "linear:2.5"},
        {"conv:8:3:1:1:1", "conv:8:3:1:1:1"},
        {"relu:3", "relu:3"},
        {"flatten,bogus:3,linear:10", "bogus"},
        {"", "''"},
        {",relu", "empty"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        net = (at_net *)1;
        at_status s = at_net_from_spec(&net, bad[i].spec, 1, 8, 8);
        CHECK_MSG(s == AT_ERR_ARG, "spec '%s': got %s (%s)", bad[i].spec, at_status_name(s),
                  at_error_message());
        CHECK_MSG(net == NULL, "spec '%s': *out not cleared", bad[i].spec);
        CHECK_MSG(strstr(at_error_message(), bad[i].mentions) != NULL,
                  "spec '%s': message '%s' does not mention '%s'", bad[i].spec, at_error_message(),
                  bad[i].mentions);
        if (s == AT_OK) at_net_free(net);
    }
    CHECK(at_net_from_spec(&net, NULL, 1, 8, 8) == AT_ERR_ARG);
    /* Invalid layer arguments the parser accepts but the layers reject. */
    CHECK(at_net_from_spec(&net, "dropout:1", 1, 8, 8) == AT_ERR_ARG);
    CHECK(at_net_from_spec(&net, "leakyrelu:-1", 1, 8, 8) == AT_ERR_ARG);
    CHECK(net == NULL);
}

static void test_shape_errors(void) {
    static const struct {
        const char *spec;
        int c, h, w;
    } bad[] = {
        {"seed-cnn", 1, 40, 40},         {"seed-cnn", 1, 28, 32},       {"mlp", 3, 32, 32},
        {"smallcnn", 3, 32, 32},         {"smallcnn", 1, 32, 32},       {"seed-mlp", 1, 28, 28},
        {"conv:4:9", 1, 5, 5},           {"conv:4:3:1:1,maxpool:8", 1, 5, 5},
        {"flatten,linear:0", 1, 4, 4},   {"maxpool:3:1:2", 1, 8, 8}, /* padding > kernel/2 */
        {"conv:0:3", 1, 8, 8},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        at_net *net = (at_net *)1;
        at_status s = at_net_from_spec(&net, bad[i].spec, bad[i].c, bad[i].h, bad[i].w);
        CHECK_MSG(s == AT_ERR_SHAPE, "'%s' on %dx%dx%d: got %s (%s)", bad[i].spec, bad[i].c,
                  bad[i].h, bad[i].w, at_status_name(s), at_error_message());
        CHECK_MSG(net == NULL, "'%s': *out not cleared", bad[i].spec);
        CHECK(at_error_message()[0] != '\0');
        if (s == AT_OK) at_net_free(net);
    }
    at_net *net = NULL;
    CHECK(at_net_from_spec(&net, "flatten,linear:10", 0, 4, 4) == AT_ERR_SHAPE);
    /* Kernel exactly as large as the padded input is fine (1x1 output). */
    CHECK_OK(at_net_from_spec(&net, "conv:2:7:1:1", 1, 5, 5));
    if (net) {
        int c, h, w;
        at_net_layer_out_shape(net, 0, &c, &h, &w);
        CHECK(c == 2 && h == 1 && w == 1);
        at_net_free(net);
    }
}

/* at_net_create with the documented defaults: stride 0 means 1 for conv, kernel for pooling. */
static void test_create_defaults(void) {
    at_layer_desc d[3];
    memset(d, 0, sizeof d);
    d[0].kind = AT_LAYER_CONV2D;
    d[0].out = 2;
    d[0].kernel = 3; /* stride 0: default 1 */
    d[1].kind = AT_LAYER_MAXPOOL2D;
    d[1].kernel = 2; /* stride 0: default = kernel */
    d[2].kind = AT_LAYER_LINEAR;
    d[2].out = 3;
    snprintf(d[2].name, sizeof d[2].name, "head");
    at_net *net = NULL;
    at_status s = at_net_create(&net, d, 3, 1, 8, 8);
    CHECK_MSG(s == AT_OK, "conv with stride 0 (documented default 1): %s: %s", at_status_name(s),
              at_error_message());
    if (net) {
        int c, h, w;
        at_net_layer_out_shape(net, 0, &c, &h, &w);
        CHECK_MSG(c == 2 && h == 6 && w == 6, "conv out %dx%dx%d", c, h, w);
        at_net_layer_out_shape(net, 1, &c, &h, &w);
        CHECK_MSG(c == 2 && h == 3 && w == 3, "pool out %dx%dx%d", c, h, w);
        CHECK(at_net_find_tensor(net, "0.weight") && at_net_find_tensor(net, "head.weight"));
        at_net_free(net);
    }
    /* Pooling alone, stride 0 -> kernel. */
    at_layer_desc p;
    memset(&p, 0, sizeof p);
    p.kind = AT_LAYER_AVGPOOL2D;
    p.kernel = 3;
    CHECK_OK(at_net_create(&net, &p, 1, 2, 9, 7));
    if (net) {
        int c, h, w;
        at_net_layer_out_shape(net, 0, &c, &h, &w);
        CHECK_MSG(c == 2 && h == 3 && w == 2, "avgpool out %dx%dx%d", c, h, w);
        CHECK(at_net_num_params(net) == 0 && at_net_num_tensors(net) == 0);
        at_net_free(net);
    }
    /* Duplicate parameter names are refused. */
    at_layer_desc dup[2];
    memset(dup, 0, sizeof dup);
    dup[0].kind = dup[1].kind = AT_LAYER_LINEAR;
    dup[0].out = dup[1].out = 4;
    snprintf(dup[0].name, sizeof dup[0].name, "fc");
    snprintf(dup[1].name, sizeof dup[1].name, "fc");
    CHECK(at_net_create(&net, dup, 2, 4, 1, 1) == AT_ERR_ARG);
    CHECK(strstr(at_error_message(), "fc.weight") != NULL);
    CHECK(at_net_create(&net, dup, 0, 4, 1, 1) == AT_ERR_ARG);
}

/* An unknown layer kind is an argument error whose message names the layer. Run last: it reads
 * the error details out of the network it has just freed (use-after-free under ASan). */
static void test_unknown_kind(void) {
    at_layer_desc unk[2];
    memset(unk, 0, sizeof unk);
    unk[0].kind = AT_LAYER_RELU;
    unk[1].kind = AT_LAYER_KIND_COUNT;
    at_net *net = (at_net *)1;
    CHECK(at_net_create(&net, unk, 2, 4, 1, 1) == AT_ERR_ARG);
    CHECK(net == NULL);
    CHECK(strstr(at_error_message(), "layer 1") != NULL);
}

static void test_describe(void) {
    at_net *net = NULL;
    CHECK_OK(at_net_from_spec(&net, "seed-cnn", 1, 28, 28));
    if (!net) return;
    char buf[4096];
    CHECK_OK(at_net_describe(net, buf, sizeof buf));
    CHECK(strstr(buf, "Conv2d(1, 6, kernel_size=5, stride=1, padding=2)") != NULL);
    CHECK(strstr(buf, "Conv2d(6, 16, kernel_size=5") != NULL);
    CHECK(strstr(buf, "MaxPool2d(kernel_size=2, stride=2") != NULL);
    CHECK(strstr(buf, "Linear(400, 120)") != NULL);
    CHECK(strstr(buf, "Linear(84, 10)") != NULL);
    CHECK(strstr(buf, "ReLU()") != NULL);
    CHECK(strstr(buf, "Flatten()") != NULL);
    CHECK(strstr(buf, "61706") != NULL);
    CHECK(strstr(buf, "1x28x28") != NULL);
    /* Too small a buffer: an error, a terminated string, no overflow. */
    char small[40];
    memset(small, 'x', sizeof small);
    CHECK(at_net_describe(net, small, 32) != AT_OK);
    CHECK(memchr(small, '\0', 32) != NULL);
    CHECK(small[32] == 'x');
    at_net_free(net);

    CHECK_OK(at_net_from_spec(&net, "avgpool:2,leakyrelu:0.2,tanh,sigmoid,dropout:0.3,flatten,"
                                    "linear:3",
                              2, 4, 4));
    if (net) {
        CHECK_OK(at_net_describe(net, buf, sizeof buf));
        CHECK(strstr(buf, "AvgPool2d") && strstr(buf, "LeakyReLU(negative_slope=0.2)") &&
              strstr(buf, "Tanh()") && strstr(buf, "Sigmoid()") && strstr(buf, "Dropout(p=0.3)") &&
              strstr(buf, "Linear(8, 3)"));
        at_net_free(net);
    }
}

/* ------------------------------------------------------------ model files */

static void fill_uniform(float *x, size_t n, uint64_t seed) {
    at_rng r;
    at_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = at_rng_uniform(&r);
}

static void roundtrip(const char *dir, const char *spec, int c, int h, int w) {
    char path[512];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    at_net *net = NULL;
    CHECK_OK(at_net_from_spec(&net, spec, c, h, w));
    if (!net) return;
    at_net_init(net, 77);
    at_st_meta extra[2] = {{"epoch", "3"}, {"note", "round trip"}};
    CHECK_OK(at_model_save(net, path, extra, 2));
    at_net *back = NULL;
    at_st_file *meta = NULL;
    at_status s = at_model_load(&back, path, &meta);
    CHECK_MSG(s == AT_OK, "%s: %s", spec, at_error_message());
    if (back) {
        CHECK(strcmp(at_net_spec(back), spec) == 0);
        int c2, h2, w2;
        at_net_in_shape(back, &c2, &h2, &w2);
        CHECK(c2 == c && h2 == h && w2 == w);
        CHECK(at_net_num_layers(back) == at_net_num_layers(net));
        CHECK(at_net_num_params(back) == at_net_num_params(net));
        if (at_net_num_params(back) == at_net_num_params(net))
            CHECK_MSG(memcmp(at_net_params(back), at_net_params(net),
                             at_net_num_params(net) * sizeof(float)) == 0,
                      "%s: weights differ after the round trip", spec);
        for (int i = 0; i < at_net_num_tensors(net) && i < at_net_num_tensors(back); i++)
            CHECK(strcmp(at_net_tensor(net, i)->name, at_net_tensor(back, i)->name) == 0);
        /* Same logits on the same inputs. */
        const int n = 3;
        size_t in = (size_t)at_net_in_size(net), out = (size_t)at_net_out_size(net);
        float *x = malloc(n * in * sizeof(float)), *y = malloc(n * out * sizeof(float));
        fill_uniform(x, n * in, 5);
        const float *logits = NULL;
        CHECK_OK(at_net_forward(net, x, n, &logits));
        if (logits) memcpy(y, logits, n * out * sizeof(float));
        CHECK_OK(at_net_forward(back, x, n, &logits));
        if (logits) CHECK(memcmp(y, logits, n * out * sizeof(float)) == 0);
        free(x);
        free(y);
        if (meta) {
            const char *e = at_st_meta_get(meta, "epoch"), *nt = at_st_meta_get(meta, "note");
            CHECK(e && strcmp(e, "3") == 0);
            CHECK(nt && strcmp(nt, "round trip") == 0);
            const char *arch = at_st_meta_get(meta, "advtrain.arch");
            CHECK(arch && strcmp(arch, spec) == 0);
            at_st_free(meta);
        }
        at_net_free(back);
    }
    /* Without a meta pointer too. */
    CHECK_OK(at_model_load(&back, path, NULL));
    at_net_free(back);
    at_net_free(net);
    unlink(path);
}

/* Writes the parameters of net to a safetensors file, leaving out tensor `skip` and optionally
 * giving tensor `reshape` a wrong shape, with the given metadata. */
static at_status write_params(at_net *net, const char *path, int skip, int reshape,
                              const at_st_meta *meta, int nmeta) {
    int nt = at_net_num_tensors(net), k = 0;
    at_st_entry *e = calloc((size_t)nt, sizeof *e);
    for (int i = 0; i < nt; i++) {
        if (i == skip) continue;
        const at_param_info *t = at_net_tensor(net, i);
        e[k].name = t->name;
        e[k].ndim = t->ndim;
        for (int d = 0; d < t->ndim; d++) e[k].shape[d] = t->shape[d];
        if (i == reshape) { /* transposed (same count, wrong shape) */
            e[k].shape[0] = t->shape[1];
            e[k].shape[1] = t->shape[0];
        }
        e[k].data = at_net_params(net) + t->offset;
        k++;
    }
    at_status s = at_st_write(path, e, k, meta, nmeta);
    free(e);
    return s;
}

static void test_model_files(void) {
    char dir[] = "/tmp/advtrain_test_net_XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK_MSG(0, "mkdtemp failed");
        return;
    }
    roundtrip(dir, "smallcnn", 1, 28, 28);
    roundtrip(dir, "seed-cnn", 3, 32, 32);
    roundtrip(dir, "seed-mlp", 10, 1, 1);
    roundtrip(dir, "conv:4:3:1:1,tanh,avgpool:2,conv:8:3:2:0,leakyrelu:0.1,maxpool:2,flatten,"
                   "linear:16,sigmoid,dropout:0.2,linear:10",
              3, 16, 16);

    char path[512];
    at_net *net = NULL;
    CHECK_OK(at_net_from_spec(&net, "seed-cnn", 1, 28, 28));
    if (net) {
        at_net_init(net, 9);
        /* A model file without advtrain.arch (as PyTorch would write it). */
        snprintf(path, sizeof path, "%s/plain.safetensors", dir);
        at_st_meta m1[2] = {{"format", "pt"}, {"advtrain.input", "1,28,28"}};
        CHECK_OK(write_params(net, path, -1, -1, m1, 2));
        at_net *back = (at_net *)1;
        at_st_file *meta = (at_st_file *)1;
        at_status s = at_model_load(&back, path, &meta);
        CHECK_MSG(s == AT_ERR_FORMAT, "no advtrain.arch: got %s", at_status_name(s));
        CHECK(back == NULL && meta == NULL);
        CHECK(strstr(at_error_message(), "advtrain.arch") != NULL);
        CHECK(strstr(at_error_message(), "plain.safetensors") != NULL);
        /* Metadata with a bad input shape. */
        at_st_meta m2[2] = {{"advtrain.arch", "seed-cnn"}, {"advtrain.input", "1x28x28"}};
        CHECK_OK(write_params(net, path, -1, -1, m2, 2));
        CHECK(at_model_load(&back, path, NULL) == AT_ERR_FORMAT);
        /* An architecture that does not fit the input shape. */
        at_st_meta m3[2] = {{"advtrain.arch", "seed-cnn"}, {"advtrain.input", "1,40,40"}};
        CHECK_OK(write_params(net, path, -1, -1, m3, 2));
        CHECK(at_model_load(&back, path, NULL) != AT_OK);
        CHECK(back == NULL);
        /* A missing file. */
        snprintf(path, sizeof path, "%s/absent.safetensors", dir);
        CHECK(at_model_load(&back, path, NULL) == AT_ERR_IO);

        /* at_net_load_weights: every tensor loaded; a missing tensor or a wrong shape is named. */
        snprintf(path, sizeof path, "%s/weights.safetensors", dir);
        at_net *dst = NULL;
        CHECK_OK(at_net_from_spec(&dst, "seed-cnn", 1, 28, 28));
        CHECK_OK(write_params(net, path, -1, -1, NULL, 0));
        at_st_file *f = NULL;
        CHECK_OK(at_st_read(path, &f));
        if (f && dst) {
            CHECK_OK(at_net_load_weights(dst, f, path));
            CHECK(memcmp(at_net_params(dst), at_net_params(net),
                         at_net_num_params(net) * sizeof(float)) == 0);
        }
        at_st_free(f);
        f = NULL;
        int fc2w = -1, fc1w = -1;
        for (int i = 0; i < at_net_num_tensors(net); i++) {
            if (strcmp(at_net_tensor(net, i)->name, "fc2.weight") == 0) fc2w = i;
            if (strcmp(at_net_tensor(net, i)->name, "fc1.weight") == 0) fc1w = i;
        }
        CHECK(fc2w >= 0 && fc1w >= 0);
        CHECK_OK(write_params(net, path, fc2w, -1, NULL, 0));
        CHECK_OK(at_st_read(path, &f));
        if (f && dst) {
            s = at_net_load_weights(dst, f, path);
            CHECK_MSG(s == AT_ERR_FORMAT || s == AT_ERR_SHAPE, "missing tensor: %s",
                      at_status_name(s));
            CHECK_MSG(strstr(at_error_message(), "fc2.weight") != NULL, "message: %s",
                      at_error_message());
        }
        at_st_free(f);
        f = NULL;
        CHECK_OK(write_params(net, path, -1, fc1w, NULL, 0));
        CHECK_OK(at_st_read(path, &f));
        if (f && dst) {
            s = at_net_load_weights(dst, f, path);
            CHECK_MSG(s == AT_ERR_SHAPE || s == AT_ERR_FORMAT, "wrong shape: %s", at_status_name(s));
            CHECK_MSG(strstr(at_error_message(), "fc1.weight") != NULL &&
                          strstr(at_error_message(), "400x120") != NULL &&
                          strstr(at_error_message(), "120x400") != NULL,
                      "message: %s", at_error_message());
        }
        at_st_free(f);
        /* A model file whose tensors do not match its architecture fails to load. */
        at_st_meta m4[2] = {{"advtrain.arch", "seed-cnn"}, {"advtrain.input", "1,28,28"}};
        CHECK_OK(write_params(net, path, fc2w, -1, m4, 2));
        back = (at_net *)1;
        CHECK(at_model_load(&back, path, NULL) != AT_OK);
        CHECK(back == NULL);
        CHECK(strstr(at_error_message(), "fc2.weight") != NULL);
        unlink(path);
        snprintf(path, sizeof path, "%s/plain.safetensors", dir);
        unlink(path);
        at_net_free(dst);
        at_net_free(net);
    }
    rmdir(dir);
}

/* ------------------------------------------------------------ training determinism */

/* 20 SGD steps of smallcnn on random data; returns the final parameters (malloc'd). */
static float *train_smallcnn(uint64_t seed, int threads, size_t *np) {
    at_set_threads(threads);
    at_net *net = NULL;
    CHECK_OK(at_net_from_spec(&net, "smallcnn", 1, 28, 28));
    if (!net) return NULL;
    at_net_init(net, seed);
    at_net_seed(net, seed);
    at_net_set_training(net, true);
    at_optim_config c = at_optim_defaults(AT_OPTIM_SGD);
    c.lr = 0.05f;
    c.momentum = 0.9f;
    c.weight_decay = 5e-4f;
    at_optim *o = NULL;
    CHECK_OK(at_optim_create(&o, net, &c));
    const int n = 16, in = 784;
    float *x = malloc(sizeof(float) * n * in), *dl = malloc(sizeof(float) * n * 10);
    int32_t y[16];
    at_rng r;
    at_rng_seed(&r, seed + 1);
    double first_loss = 0, loss_sum_end = 0;
    for (int step = 0; step < 20 && o; step++) {
        for (int i = 0; i < n * in; i++) x[i] = at_rng_uniform(&r);
        for (int i = 0; i < n; i++) y[i] = (int32_t)(i % 10);
        const float *logits = NULL;
        float loss = 0;
        CHECK_OK(at_net_forward(net, x, n, &logits));
        CHECK_OK(at_cross_entropy(logits, y, n, 10, 0.0f, &loss, dl, NULL));
        if (step == 0) first_loss = loss;
        if (step >= 15) loss_sum_end += loss;
        at_net_zero_grad(net);
        CHECK_OK(at_net_backward(net, dl, AT_GRAD_PARAMS, NULL));
        CHECK_OK(at_optim_step(o));
    }
    CHECK(isfinite(first_loss) && isfinite(loss_sum_end));
    *np = at_net_num_params(net);
    float *out = malloc(*np * sizeof(float));
    memcpy(out, at_net_params(net), *np * sizeof(float));
    free(x);
    free(dl);
    at_optim_free(o);
    at_net_free(net);
    return out;
}

static void test_training_determinism(void) {
    size_t n1 = 0, n2 = 0, n3 = 0;
    float *a = train_smallcnn(42, 2, &n1);
    float *b = train_smallcnn(42, 2, &n2);
    float *c = train_smallcnn(43, 2, &n3);
    if (a && b && c && n1 == n2 && n1 == n3) {
        CHECK_MSG(memcmp(a, b, n1 * sizeof(float)) == 0, "two identical runs differ");
        CHECK(memcmp(a, c, n1 * sizeof(float)) != 0);
        /* Training moved the parameters away from their initial values. */
        at_net *fresh = NULL;
        CHECK_OK(at_net_from_spec(&fresh, "smallcnn", 1, 28, 28));
        if (fresh) {
            at_net_init(fresh, 42);
            CHECK(memcmp(a, at_net_params(fresh), n1 * sizeof(float)) != 0);
            at_net_free(fresh);
        }
        for (size_t i = 0; i < n1; i++)
            if (!isfinite(a[i])) {
                CHECK_MSG(0, "parameter %zu is %g", i, (double)a[i]);
                break;
            }
    }
    float *d = train_smallcnn(42, 1, &n2);
    if (a && d) {
        /* Another thread count sums in another order: close, not necessarily identical. */
        size_t worst = 0;
        double v = tu_max_violation(d, a, n1, 1e-4, 1e-3, &worst);
        CHECK_MSG(v <= 1.0, "1 vs 2 threads: param %zu %g vs %g", worst, (double)d[worst],
                  (double)a[worst]);
    }
    free(a);
    free(b);
    free(c);
    free(d);
    at_set_threads(2);
}

/* A training forward keeps the conv rows (im2row) for the weight gradient; an evaluation forward
 * does not, and backward rebuilds them. Both must give the same gradients (tu_same_chunked): with
 * several blocks per chunk, an odd batch, one and two threads (each thread's chunk at its own
 * offset of the kept buffer), kernels 3, 4 and 5 (inlined copies) with and without padding. */
static void test_kept_columns(void) {
    const char *specs[] = {"smallcnn", "conv:8:3:2:1,relu,conv:6:5:3,flatten,linear:4",
                           "conv:8:4:2,relu,conv:4:3:1,flatten,linear:4"};
    for (int k = 0; k < 3; k++)
        for (int threads = 1; threads <= 2; threads++) {
            at_set_threads(threads);
            at_net *net = NULL;
            CHECK_OK(at_net_from_spec(&net, specs[k], 1, 28, 28));
            if (!net) continue;
            at_net_init(net, 5);
            const int n = 37, D = at_net_in_size(net), K = at_net_out_size(net);
            const size_t np = at_net_num_params(net);
            float *x = malloc(sizeof(float) * n * D), *dz = malloc(sizeof(float) * n * K);
            float *dx[2] = {malloc(sizeof(float) * n * D), malloc(sizeof(float) * n * D)};
            float *g[2] = {malloc(sizeof(float) * np), malloc(sizeof(float) * np)};
            fill_uniform(x, (size_t)n * D, 11);
            fill_uniform(dz, (size_t)n * K, 12);
            for (int pass = 0; pass < 2; pass++) {
                at_net_set_training(net, pass == 0);
                at_net_zero_grad(net);
                CHECK_OK(at_net_forward(net, x, n, NULL));
                CHECK_OK(at_net_backward(net, dz, AT_GRAD_PARAMS | AT_GRAD_INPUT, dx[pass]));
                memcpy(g[pass], at_net_grads(net), sizeof(float) * np);
            }
            CHECK_MSG(tu_same_chunked(at_gemm_backend_name(), g[0], g[1], np),
                      "%s, %d threads: weight gradients from kept and rebuilt rows differ", specs[k], threads);
            CHECK_MSG(tu_same_chunked(at_gemm_backend_name(), dx[0], dx[1], (size_t)n * D),
                      "%s, %d threads: input gradients differ", specs[k], threads);
            free(x);
            free(dz);
            for (int i = 0; i < 2; i++) {
                free(dx[i]);
                free(g[i]);
            }
            at_net_free(net);
        }
    at_set_threads(2);
}

/* Passes without weight gradients (evaluation, attack steps) hand samples out to threads in
 * chunks as the threads free up, so each sample's logits and input gradient must not depend on
 * which chunk it lands in: a batch on two threads, on one thread and cut into pieces of other
 * sizes (one sample alone among them) must agree (bit for bit with advtrain's GEMM kernel:
 * tu_same_chunked). */
/* at_net_input_gradient's loss: the fixed output gradient of its rows, and a copy of their logits. */
typedef struct {
    const float *dz;
    float *z;
    int K;
} fixed_rows;
static void fixed_loss(void *user, const float *z, int begin, int end, float *dlogits) {
    const fixed_rows *r = user;
    const size_t from = (size_t)begin * r->K, count = (size_t)(end - begin) * r->K;
    memcpy(dlogits + from, r->dz + from, sizeof(float) * count);
    memcpy(r->z + from, z + from, sizeof(float) * count);
}

static void test_chunk_independence(void) {
    /* resnet8 and preact-resnet18 keep their forward-only tensors (a branch's last BatchNorm or
     * convolution, a 1x1 shortcut) in gradient slots wider than them: the fused pass runs one
     * chunk's forward next to another's backward in the same slots. */
    const char *specs[] = {"smallcnn", "mlp", "seed-cnn",
                           "conv:8:3:1:1,tanh,maxpool:2,conv:6:3:2,avgpool:2,flatten,dropout:0.3,"
                           "linear:12,sigmoid,linear:5",
                           "resnet8", "preact-resnet18:4", "dscnn"};
    const int n = 77, pieces[] = {5, 1, 33, 38};
    for (size_t k = 0; k < sizeof specs / sizeof *specs; k++) {
        at_net *net = NULL;
        CHECK_OK(at_net_from_spec(&net, specs[k], 1, 28, 28));
        if (!net) continue;
        at_net_init(net, 7);
        const int D = at_net_in_size(net), K = at_net_out_size(net);
        float *x = malloc(sizeof(float) * n * D), *dz = malloc(sizeof(float) * n * K);
        at_net_set_training(net, true); /* running statistics away from 0 and 1 */
        fill_uniform(x, (size_t)n * D, 20);
        CHECK_OK(at_net_forward(net, x, n, NULL));
        at_net_set_training(net, false);
        float *z[4], *dx[4];
        fill_uniform(x, (size_t)n * D, 21);
        fill_uniform(dz, (size_t)n * K, 22);
        /* The fused pass (forward, loss and input gradient per chunk, 2 threads) too. */
        z[3] = malloc(sizeof(float) * n * K);
        dx[3] = malloc(sizeof(float) * n * D);
        float *dlogits = malloc(sizeof(float) * n * K);
        fixed_rows rows = {dz, z[3], K};
        CHECK_OK(at_net_input_gradient(net, x, n, fixed_loss, &rows, dlogits, dx[3], NULL));
        at_net_set_training(net, true);
        CHECK(at_net_input_gradient(net, x, n, fixed_loss, &rows, dlogits, dx[3], NULL) == AT_ERR_ARG);
        at_net_set_training(net, false);
        free(dlogits);
        for (int way = 0; way < 3; way++) {
            z[way] = malloc(sizeof(float) * n * K);
            dx[way] = malloc(sizeof(float) * n * D);
            at_set_threads(way == 0 ? 2 : 1);
            for (int first = 0, p = 0; first < n; p++) {
                const int m = way == 2 ? pieces[p] : n;
                const float *logits = NULL;
                CHECK_OK(at_net_forward(net, x + (size_t)first * D, m, &logits));
                if (logits) memcpy(z[way] + (size_t)first * K, logits, sizeof(float) * m * K);
                CHECK_OK(at_net_backward(net, dz + (size_t)first * K, AT_GRAD_INPUT,
                                         dx[way] + (size_t)first * D));
                first += m;
            }
        }
        const char *ways[] = {"", "one thread", "pieces of the batch", "the fused pass (at_net_input_gradient)"};
        for (int way = 1; way < 4; way++) {
            CHECK_MSG(tu_same_chunked(at_gemm_backend_name(), z[0], z[way], (size_t)n * K), "%s: logits on 2 threads differ from %s",
                      specs[k], ways[way]);
            CHECK_MSG(tu_same_chunked(at_gemm_backend_name(), dx[0], dx[way], (size_t)n * D),
                      "%s: input gradients on 2 threads differ from %s", specs[k], ways[way]);
        }
        for (int way = 0; way < 4; way++) {
            free(z[way]);
            free(dx[way]);
        }
        free(x);
        free(dz);
        at_net_free(net);
    }
    at_set_threads(2);
}

/* at_net_predict gives at_net_forward's logits (tu_same_chunked) from its short-lived slots, on one
 * and two threads, for chains and graphs (BatchNorm with trained statistics, residual adds,
 * depthwise convs), and leaves nothing for a backward pass. */
static void test_predict(void) {
    const char *specs[] = {"seed-cnn", "mlp", "resnet8", "dscnn", "preact-resnet18:4",
                           "conv:6:3:1:1,bn,a=relu,conv:6:3:1:1,add:a,relu,conv:4:3:2:1,relu,"
                           "flatten,linear:20,bn1d,relu,linear:7"};
    const int n = 45;
    for (size_t k = 0; k < sizeof specs / sizeof *specs; k++) {
        at_net *net = NULL;
        CHECK_OK(at_net_from_spec(&net, specs[k], 1, 28, 28));
        if (!net) continue;
        at_net_init(net, 9);
        const int D = at_net_in_size(net), K = at_net_out_size(net);
        float *x = malloc(sizeof(float) * n * D), *z = malloc(sizeof(float) * n * K);
        fill_uniform(x, (size_t)n * D, 31);
        const float *logits = NULL;
        at_net_set_training(net, true); /* move the running statistics away from 0 and 1 */
        CHECK_OK(at_net_forward(net, x, n, &logits));
        at_net_set_training(net, false);
        for (int threads = 1; threads <= 2; threads++) {
            at_set_threads(threads);
            CHECK_OK(at_net_forward(net, x, n, &logits));
            if (logits) memcpy(z, logits, sizeof(float) * n * K);
            CHECK_OK(at_net_predict(net, x, n, &logits));
            CHECK_MSG(logits && memcmp(z, logits, sizeof(float) * n * K) == 0,
                      "%s, %d thread(s): at_net_predict differs from at_net_forward", specs[k], threads);
            float *dl = calloc((size_t)n * K, sizeof(float));
            CHECK(at_net_backward(net, dl, AT_GRAD_PARAMS, NULL) == AT_ERR_ARG);
            free(dl);
        }
        /* Predictions take the activations of the last forward when they fit (n), slots of
         * their own when not (3n), and the activations again once a forward grew them. */
        float *x3 = malloc(sizeof(float) * 3 * n * D);
        for (int i = 0; i < 3; i++) memcpy(x3 + (size_t)i * n * D, x, sizeof(float) * n * D);
        for (int pass = 0; pass < 2; pass++) {
            if (pass == 1) CHECK_OK(at_net_forward(net, x3, 3 * n, NULL));
            CHECK_OK(at_net_predict(net, x3, 3 * n, &logits));
            for (int i = 0; logits && i < 3; i++)
                CHECK_MSG(tu_same_chunked(at_gemm_backend_name(), z, logits + (size_t)i * n * K, (size_t)n * K),
                          "%s: at_net_predict of 3n samples (%s) differs in part %d", specs[k],
                          pass ? "after a forward of 3n" : "slots of its own", i);
        }
        free(x3);
        at_net_set_training(net, true);
        CHECK(at_net_predict(net, x, n, &logits) == AT_ERR_ARG);
        free(x);
        free(z);
        at_net_free(net);
    }
    at_set_threads(2);
}

int main(void) {
    at_set_threads(2);
    test_predict();
    test_builtin_shapes();
    test_init();
    test_spec();
    test_shape_errors();
    test_create_defaults();
    test_describe();
    test_model_files();
    test_training_determinism();
    test_kept_columns();
    test_chunk_independence();
    test_unknown_kind();
    return tu_finish("test_net");
}
