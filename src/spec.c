/* Architectures: the built-in models and the spec syntax for custom ones.
 *
 * Spec syntax (docs/architectures.md): comma-separated layers,
 *   conv:OUT:K[:STRIDE[:PAD]]  maxpool:K[:STRIDE[:PAD]]  avgpool:K[:STRIDE[:PAD]]  linear:OUT
 *   relu  leakyrelu[:SLOPE]  tanh  sigmoid  flatten  dropout[:P]  dropout2d[:P]
 * Layers are named by position, as nn.Sequential names its modules ("0.weight", "3.bias"). */
#include "internal.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LAYERS 64

static at_layer_desc layer(at_layer_kind kind, const char *name, int out, int kernel, int stride,
                           int pad, float alpha) {
    at_layer_desc d;
    memset(&d, 0, sizeof d);
    d.kind = kind;
    snprintf(d.name, sizeof d.name, "%s", name);
    d.out = out;
    d.kernel = kernel;
    d.stride = stride;
    d.pad = pad;
    d.alpha = alpha;
    return d;
}

static const char *const builtin_names[] = {"seed-mlp", "seed-cnn", "mlp", "smallcnn"};

bool at_is_builtin_model(const char *name) {
    for (size_t i = 0; i < sizeof builtin_names / sizeof *builtin_names; i++)
        if (strcmp(name, builtin_names[i]) == 0) return true;
    return false;
}

/* Fills the layers of a built-in model; returns the count or -1 with the error set. */
static int builtin_layers(const char *name, int c, int h, int w, at_layer_desc *L) {
    int n = 0;
    if (strcmp(name, "seed-mlp") == 0) {
        /* The tutorial's Net: fc2(fc1(x)), no activation in between. */
        if (c * h * w != 10) {
            at_fail(AT_ERR_SHAPE, "seed-mlp takes 10 input features, the data has %d", c * h * w);
            return -1;
        }
        L[n++] = layer(AT_LAYER_FLATTEN, "", 0, 0, 0, 0, 0);
        L[n++] = layer(AT_LAYER_LINEAR, "fc1", 50, 0, 0, 0, 0);
        L[n++] = layer(AT_LAYER_LINEAR, "fc2", 10, 0, 0, 0, 0);
    } else if (strcmp(name, "seed-cnn") == 0) {
        /* The tutorial's LeNet. conv1 pads so that the flattened size stays 16*5*5 = 400:
         * 32x32 (CIFAR-10) needs none, 28x28 needs 2. */
        if (h != w || h > 32 || (32 - h) % 2 != 0) {
            at_fail(AT_ERR_SHAPE,
                    "seed-cnn needs square images of even size up to 32 (28x28 or 32x32), got %dx%d",
                    h, w);
            return -1;
        }
        int pad = (32 - h) / 2;
        L[n++] = layer(AT_LAYER_CONV2D, "conv1", 6, 5, 1, pad, 0);
        L[n++] = layer(AT_LAYER_RELU, "", 0, 0, 0, 0, 0);
        L[n++] = layer(AT_LAYER_MAXPOOL2D, "pool", 0, 2, 2, 0, 0);
        L[n++] = layer(AT_LAYER_CONV2D, "conv2", 16, 5, 1, 0, 0);
        L[n++] = layer(AT_LAYER_RELU, "", 0, 0, 0, 0, 0);
        L[n++] = layer(AT_LAYER_MAXPOOL2D, "pool", 0, 2, 2, 0, 0);
        L[n++] = layer(AT_LAYER_FLATTEN, "", 0, 0, 0, 0, 0);
        L[n++] = layer(AT_LAYER_LINEAR, "fc1", 120, 0, 0, 0, 0);
        L[n++] = layer(AT_LAYER_RELU, "", 0, 0, 0, 0, 0);
        L[n++] = layer(AT_LAYER_LINEAR, "fc2", 84, 0, 0, 0, 0);
        L[n++] = layer(AT_LAYER_RELU, "", 0, 0, 0, 0, 0);
        L[n++] = layer(AT_LAYER_LINEAR, "fc3", 10, 0, 0, 0, 0);
    } else if (strcmp(name, "mlp") == 0) {
        if (c * h * w != 784) {
            at_fail(AT_ERR_SHAPE, "mlp takes 784 inputs (28x28 grey images), the data has %d",
                    c * h * w);
            return -1;
        }
        L[n++] = layer(AT_LAYER_FLATTEN, "0", 0, 0, 0, 0, 0);
        L[n++] = layer(AT_LAYER_LINEAR, "1", 256, 0, 0, 0, 0);
        L[n++] = layer(AT_LAYER_RELU, "2", 0, 0, 0, 0, 0);
        L[n++] = layer(AT_LAYER_LINEAR, "3", 128, 0, 0, 0, 0);
        L[n++] = layer(AT_LAYER_RELU, "4", 0, 0, 0, 0, 0);
        L[n++] = layer(AT_LAYER_LINEAR, "5", 10, 0, 0, 0, 0);
    } else if (strcmp(name, "smallcnn") == 0) {
        if (c != 1 || h != 28 || w != 28) {
            at_fail(AT_ERR_SHAPE, "smallcnn takes 1x28x28 images, the data is %dx%dx%d", c, h, w);
            return -1;
        }
        L[n++] = layer(AT_LAYER_CONV2D, "0", 16, 4, 2, 1, 0);
        L[n++] = layer(AT_LAYER_RELU, "1", 0, 0, 0, 0, 0);
        L[n++] = layer(AT_LAYER_CONV2D, "2", 32, 4, 2, 1, 0);
        L[n++] = layer(AT_LAYER_RELU, "3", 0, 0, 0, 0, 0);
        L[n++] = layer(AT_LAYER_FLATTEN, "4", 0, 0, 0, 0, 0);
        L[n++] = layer(AT_LAYER_LINEAR, "5", 100, 0, 0, 0, 0);
        L[n++] = layer(AT_LAYER_RELU, "6", 0, 0, 0, 0, 0);
        L[n++] = layer(AT_LAYER_LINEAR, "7", 10, 0, 0, 0, 0);
    }
    return n;
}

/* Parses up to `max` colon-separated numbers after the keyword. */
static int parse_args(const char *args, double *vals, int max, const char *token) {
    int count = 0;
    while (*args == ':') {
        args++;
        if (count == max) {
            at_fail(AT_ERR_ARG, "spec layer '%s' has too many arguments (at most %d)", token, max);
            return -1;
        }
        char *end;
        errno = 0;
        double v = strtod(args, &end);
        if (end == args || errno) {
            at_fail(AT_ERR_ARG, "spec layer '%s': '%s' is not a number", token, args);
            return -1;
        }
        vals[count++] = v;
        args = end;
    }
    if (*args) {
        at_fail(AT_ERR_ARG, "spec layer '%s': unexpected '%s'", token, args);
        return -1;
    }
    return count;
}

static bool is_int(double v) { return v == (double)(int)v && v >= 0 && v < 1e6; }

static at_status parse_layer(const char *token, int index, at_layer_desc *d) {
    static const struct {
        const char *word;
        at_layer_kind kind;
        int min_args, max_args;
    } words[] = {
        {"conv", AT_LAYER_CONV2D, 2, 4},    {"maxpool", AT_LAYER_MAXPOOL2D, 1, 3},
        {"avgpool", AT_LAYER_AVGPOOL2D, 1, 3}, {"linear", AT_LAYER_LINEAR, 1, 1},
        {"relu", AT_LAYER_RELU, 0, 0},      {"leakyrelu", AT_LAYER_LEAKYRELU, 0, 1},
        {"tanh", AT_LAYER_TANH, 0, 0},      {"sigmoid", AT_LAYER_SIGMOID, 0, 0},
        {"flatten", AT_LAYER_FLATTEN, 0, 0}, {"dropout", AT_LAYER_DROPOUT, 0, 1},
        {"dropout2d", AT_LAYER_DROPOUT2D, 0, 1},
    };
    size_t len = strcspn(token, ":");
    for (size_t i = 0; i < sizeof words / sizeof *words; i++) {
        if (strlen(words[i].word) != len || strncmp(token, words[i].word, len) != 0) continue;
        double v[4] = {0, 0, 0, 0};
        int count = parse_args(token + len, v, words[i].max_args, token);
        if (count < 0) return AT_ERR_ARG;
        if (count < words[i].min_args)
            return at_fail(AT_ERR_ARG, "spec layer '%s' needs at least %d argument(s)", token,
                           words[i].min_args);
        char name[16];
        snprintf(name, sizeof name, "%d", index);
        at_layer_kind k = words[i].kind;
        if (k == AT_LAYER_LEAKYRELU || k == AT_LAYER_DROPOUT || k == AT_LAYER_DROPOUT2D) {
            float def = k == AT_LAYER_LEAKYRELU ? 0.01f : 0.5f;
            *d = layer(k, name, 0, 0, 0, 0, count ? (float)v[0] : def);
            return AT_OK;
        }
        for (int a = 0; a < count; a++)
            if (!is_int(v[a]))
                return at_fail(AT_ERR_ARG, "spec layer '%s': argument %d must be a whole number",
                               token, a + 1);
        if (k == AT_LAYER_CONV2D)
            *d = layer(k, name, (int)v[0], (int)v[1], count > 2 ? (int)v[2] : 1,
                       count > 3 ? (int)v[3] : 0, 0);
        else if (k == AT_LAYER_MAXPOOL2D || k == AT_LAYER_AVGPOOL2D)
            *d = layer(k, name, 0, (int)v[0], count > 1 ? (int)v[1] : (int)v[0],
                       count > 2 ? (int)v[2] : 0, 0);
        else
            *d = layer(k, name, count ? (int)v[0] : 0, 0, 0, 0, 0);
        return AT_OK;
    }
    return at_fail(AT_ERR_ARG,
                   "unknown layer '%s' in spec (known: conv, maxpool, avgpool, linear, relu, "
                   "leakyrelu, tanh, sigmoid, flatten, dropout, dropout2d)",
                   token);
}

at_status at_spec_parse(const char *spec, at_layer_desc *layers, int *nlayers) {
    int cap = *nlayers, n = 0;
    char token[128];
    const char *p = spec;
    *nlayers = 0;
    if (!*spec) return at_fail(AT_ERR_ARG, "empty architecture spec");
    while (*p) {
        size_t len = strcspn(p, ",");
        if (len == 0 || len >= sizeof token)
            return at_fail(AT_ERR_ARG, "spec '%s': empty or overlong layer at position %d", spec, n);
        for (size_t i = 0; i < len; i++) token[i] = (char)tolower((unsigned char)p[i]);
        token[len] = '\0';
        if (n == cap) return at_fail(AT_ERR_ARG, "spec '%s' has more than %d layers", spec, cap);
        at_status s = parse_layer(token, n, &layers[n]);
        if (s != AT_OK) return s;
        n++;
        p += len;
        if (*p == ',') {
            p++;
            if (!*p) return at_fail(AT_ERR_ARG, "spec '%s' ends with a comma", spec);
        }
    }
    *nlayers = n;
    return AT_OK;
}

at_status at_net_from_spec(at_net **out, const char *spec, int c, int h, int w) {
    at_layer_desc L[MAX_LAYERS];
    int n = MAX_LAYERS;
    *out = NULL;
    if (!spec) return at_fail(AT_ERR_ARG, "no architecture given");
    if (at_is_builtin_model(spec)) {
        n = builtin_layers(spec, c, h, w, L);
        if (n < 0) return AT_ERR_SHAPE;
    } else {
        at_status s = at_spec_parse(spec, L, &n);
        if (s != AT_OK) {
            if (!strchr(spec, ',') && !strchr(spec, ':'))
                return at_fail(AT_ERR_ARG,
                               "unknown model '%s': use seed-mlp, seed-cnn, mlp, smallcnn or a "
                               "spec such as 'flatten,linear:100,relu,linear:10'",
                               spec);
            return s;
        }
    }
    at_status s = at_net_create(out, L, n, c, h, w);
    if (s == AT_OK) s = at_net_set_spec(*out, spec);
    if (s != AT_OK) {
        at_net_free(*out);
        *out = NULL;
    }
    return s;
}
