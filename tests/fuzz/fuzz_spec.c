/* Fuzz target: the spec syntax (at_spec_parse, at_net_from_spec, docs/architectures.md).
 *
 * The input, as a NUL-terminated string, is parsed into a small table (the capacity check) and
 * built (at_net_from_spec, with a bound on its size: see build) for a few input shapes: images of MNIST's and CIFAR-10's size, a feature vector and a
 * single value. Every network that builds is described (into a large buffer and a tiny one)
 * and, when small, run: a prediction on a zero sample, and a training-mode forward and backward
 * pass (parameter and input gradients) on two samples. */
#include "fuzz_common.h"
#include "internal.h"

#include <stdlib.h>
#include <string.h>

static const int shapes[][3] = {{1, 28, 28}, {3, 32, 32}, {10, 1, 1}, {1, 1, 1}};

/* Forward and backward in training mode on two constant samples (BatchNorm needs a batch). */
static void train_pass(at_net *net) {
    const size_t in = (size_t)at_net_in_size(net), out = (size_t)at_net_out_size(net);
    float *x = malloc(2 * in * sizeof *x), *dx = malloc(2 * in * sizeof *dx);
    float *dy = malloc(2 * out * sizeof *dy);
    if (!x || !dx || !dy) fuzz_fail("out of memory", "training pass");
    for (size_t i = 0; i < 2 * in; i++) x[i] = (float)(i % 7) / 7.0f;
    for (size_t i = 0; i < 2 * out; i++) dy[i] = 0.5f - (float)(i % 3);
    at_net_set_training(net, true);
    const float *logits;
    at_status s = at_net_forward(net, x, 2, &logits);
    if (s == AT_OK) {
        at_net_zero_grad(net);
        s = at_net_backward(net, dy, AT_GRAD_PARAMS | AT_GRAD_INPUT, dx);
    }
    fuzz_check_message(s, "training pass");
    if (s != AT_OK && s != AT_ERR_NOMEM) fuzz_fail("training pass failed", at_error_message());
    at_net_set_training(net, false);
    free(x);
    free(dx);
    free(dy);
}

static bool small(const at_net *net) {
    return fuzz_sample_floats(net) <= 200000 && at_net_num_params(net) <= 200000;
}

/* Networks of up to 2^22 parameters and buffers (16 MB). A spec may ask for 2^31 values per
 * weight tensor, valid but gigabytes each: at_net_from_spec_bounded is at_net_from_spec with a
 * bound on them (model files use it, bounded by the file), failing before it allocates. */
#define SPEC_MAX_FLOATS ((size_t)1 << 22)

static void build(const char *spec, int k) {
    at_net *net = NULL;
    at_status s = at_net_from_spec_bounded(&net, spec, shapes[k][0], shapes[k][1], shapes[k][2],
                                           SPEC_MAX_FLOATS);
    fuzz_check_message(s, "at_net_from_spec");
    if (s != AT_OK) {
        if (net) fuzz_fail("at_net_from_spec failed but returned a network", NULL);
        return;
    }
    static char text[16384];
    char tiny[24];
    fuzz_check_message(at_net_describe(net, text, sizeof text), "at_net_describe");
    fuzz_check_message(at_net_describe(net, tiny, sizeof tiny), "at_net_describe");
    if (!memchr(tiny, '\0', sizeof tiny)) fuzz_fail("at_net_describe overran a small buffer", NULL);
    for (int i = 0; i < at_net_num_layers(net); i++)
        fuzz_check_message(at_net_describe_layer(net, i, text, sizeof text), "at_net_describe_layer");
    if (small(net)) {
        fuzz_predict_small(net);
        train_pass(net);
    }
    at_net_free(net);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 4096) return 0; /* no spec is longer; larger inputs only slow the search */
    char *spec = malloc(size + 1);
    if (!spec) return 0;
    memcpy(spec, data, size);
    spec[size] = '\0';
    fuzz_dir(); /* one thread, as every target */
    at_layer_desc layers[4];
    int n = 4;
    fuzz_check_message(at_spec_parse(spec, layers, &n), "at_spec_parse");
    for (int k = 0; k < (int)(sizeof shapes / sizeof shapes[0]); k++) build(spec, k);
    free(spec);
    return 0;
}
