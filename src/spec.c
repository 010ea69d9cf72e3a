/* Architectures: the built-in models and the spec syntax for custom ones.
 *
 * Spec syntax (docs/architectures.md): comma-separated layers,
 *   conv:OUT:K[:STRIDE[:PAD]]  maxpool:K[:STRIDE[:PAD]]  avgpool:K[:STRIDE[:PAD]]  linear:OUT
 *   relu  leakyrelu[:SLOPE]  tanh  sigmoid  flatten  dropout[:P]  dropout2d[:P]
 * Layers are named by position, as nn.Sequential names its modules ("0.weight", "3.bias"). */
#include "layers/layer.h"

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

/* One spec token split into its parts: "[LABEL=]WORD[:ARG...][@FROM]". */
typedef struct token_parts {
    char label[32], from[32], ref[32];
    const at_layer_ops *ops;
    double args[8], vals[8];
    const char *keys[8];
    char key_text[8][16];
    int count, nkeys;
} token_parts;

static at_status copy_name(char *dst, size_t cap, const char *src, size_t len, const char *token) {
    if (len == 0 || len >= cap)
        return at_fail(AT_ERR_ARG, "spec layer '%s': empty or overlong name", token);
    memcpy(dst, src, len);
    dst[len] = '\0';
    return AT_OK;
}

/* Parses one ":"-separated argument: a number, key=number, or (first argument of a two-input
 * layer) the name of the second input. */
static at_status parse_arg(token_parts *t, const char *arg, size_t len, const char *token) {
    char text[48];
    if (len == 0 || len >= sizeof text)
        return at_fail(AT_ERR_ARG, "spec layer '%s': empty or overlong argument", token);
    memcpy(text, arg, len);
    text[len] = '\0';
    if (t->ops->inputs == 2 && t->count == 0 && t->ref[0] == '\0')
        return copy_name(t->ref, sizeof t->ref, text, len, token);
    char *eq = strchr(text, '='), *end;
    const char *num = eq ? eq + 1 : text;
    errno = 0;
    double v = strtod(num, &end);
    if (end == num || *end || errno)
        return at_fail(AT_ERR_ARG, "spec layer '%s': '%s' is not a number", token, num);
    if (eq) {
        if (t->nkeys == 8 || (size_t)(eq - text) >= sizeof t->key_text[0])
            return at_fail(AT_ERR_ARG, "spec layer '%s': bad option '%s'", token, text);
        memcpy(t->key_text[t->nkeys], text, (size_t)(eq - text));
        t->key_text[t->nkeys][eq - text] = '\0';
        t->keys[t->nkeys] = t->key_text[t->nkeys];
        t->vals[t->nkeys++] = v;
    } else {
        if (t->nkeys > 0 || t->count == t->ops->max_args)
            return at_fail(AT_ERR_ARG, "spec layer '%s' has too many arguments (at most %d)", token,
                           t->ops->max_args);
        t->args[t->count++] = v;
    }
    return AT_OK;
}

/* Splits a lower-cased token into label, keyword, arguments and input reference. */
static at_status split_token(const char *token, token_parts *t) {
    memset(t, 0, sizeof *t);
    const char *p = token, *colon = strchr(token, ':'), *eq = strchr(token, '=');
    at_status s = AT_OK;
    if (eq && (!colon || eq < colon)) {
        s = copy_name(t->label, sizeof t->label, p, (size_t)(eq - p), token);
        p = eq + 1;
    }
    const char *at = strchr(p, '@');
    size_t body = at ? (size_t)(at - p) : strlen(p);
    if (s == AT_OK && at) s = copy_name(t->from, sizeof t->from, at + 1, strlen(at + 1), token);
    if (s != AT_OK) return s;
    size_t word = strcspn(p, ":@");
    t->ops = at_layer_ops_named(p, word);
    if (!t->ops)
        return at_fail(AT_ERR_ARG,
                       "unknown layer '%s' in spec (known: conv, maxpool, avgpool, linear, relu, "
                       "leakyrelu, tanh, sigmoid, flatten, dropout, dropout2d, bn, bn1d, add, gap)",
                       token);
    for (size_t i = word; s == AT_OK && i < body;) {
        size_t len = strcspn(p + i + 1, ":@");
        if (i + 1 + len > body) len = body - i - 1;
        s = parse_arg(t, p + i + 1, len, token);
        i += 1 + len;
    }
    return s;
}

/* A reference to an earlier node: a label, else a node name as it is ("3", "input"). */
static void resolve_ref(const char *ref, char labels[][32], int n, char *out) {
    for (int k = n - 1; k >= 0; k--)
        if (labels[k][0] && strcmp(labels[k], ref) == 0) {
            snprintf(out, 32, "%d", k);
            return;
        }
    snprintf(out, 32, "%s", ref);
}

static at_status parse_layer(const char *token, int index, char labels[][32], at_layer_desc *d) {
    token_parts t;
    at_status s = split_token(token, &t);
    if (s != AT_OK) return s;
    if (t.ops->inputs == 2 && t.ref[0] == '\0')
        return at_fail(AT_ERR_ARG, "spec layer '%s' needs the name of the layer to add", token);
    if (t.count < t.ops->min_args)
        return at_fail(AT_ERR_ARG, "spec layer '%s' needs at least %d argument(s)", token,
                       t.ops->min_args);
    memset(d, 0, sizeof *d);
    d->kind = at_layer_kind_of(t.ops);
    snprintf(d->name, sizeof d->name, "%d", index);
    if (t.from[0]) resolve_ref(t.from, labels, index, d->input);
    if (t.ref[0]) resolve_ref(t.ref, labels, index, d->input2);
    if (t.ops->parse)
        s = t.ops->parse(d, t.args, t.count, t.keys, t.vals, t.nkeys, token);
    else if (t.count + t.nkeys > 0)
        s = at_fail(AT_ERR_ARG, "spec layer '%s' takes no arguments", token);
    snprintf(labels[index], 32, "%s", t.label);
    return s;
}

at_status at_spec_parse(const char *spec, at_layer_desc *layers, int *nlayers) {
    int cap = *nlayers, n = 0;
    char token[128];
    char(*labels)[32] = at_calloc((size_t)AT_MAX(cap, 1), 32, "spec labels");
    if (!labels) return AT_ERR_NOMEM;
    const char *p = spec;
    at_status s = AT_OK;
    *nlayers = 0;
    if (!*spec) s = at_fail(AT_ERR_ARG, "empty architecture spec");
    while (s == AT_OK && *p) {
        size_t len = strcspn(p, ",");
        if (len == 0 || len >= sizeof token) {
            s = at_fail(AT_ERR_ARG, "spec '%s': empty or overlong layer at position %d", spec, n);
            break;
        }
        for (size_t i = 0; i < len; i++) token[i] = (char)tolower((unsigned char)p[i]);
        token[len] = '\0';
        if (n == cap) {
            s = at_fail(AT_ERR_ARG, "spec '%s' has more than %d layers", spec, cap);
            break;
        }
        s = parse_layer(token, n, labels, &layers[n]);
        n++;
        p += len;
        if (s == AT_OK && *p == ',' && !*++p) s = at_fail(AT_ERR_ARG, "spec '%s' ends with a comma", spec);
    }
    free(labels);
    if (s == AT_OK) *nlayers = n;
    return s;
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
