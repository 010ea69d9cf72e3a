/* Architectures: the built-in models and the spec syntax for custom ones.
 *
 * Spec syntax (docs/architectures.md): comma-separated layers, each
 *   [LABEL=]KEYWORD[:ARG...][:KEY=VALUE...][@FROM]
 * where each layer file's parse hook says what its arguments mean (conv:OUT:K[:STRIDE[:PAD]]
 * with groups=G and bias=0, linear:OUT, bn, add:OTHER, ...). A layer reads the one before it,
 * or FROM (a label or "input"); add:OTHER adds OTHER to it. Layers are named by position, as
 * nn.Sequential names its modules ("0.weight", "3.bias"); labels only name references. */
#include "layers/layer.h"
#include "models/models.h"

#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LAYERS 128

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
    if (!t->ops) {
        char known[256];
        at_layer_keywords(known, sizeof known);
        return at_fail(AT_ERR_ARG, "unknown layer '%s' in spec (known: %s)", token, known);
    }
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
    return at_net_from_spec_bounded(out, spec, c, h, w, SIZE_MAX);
}

at_status at_net_from_spec_bounded(at_net **out, const char *spec, int c, int h, int w,
                                   size_t max_floats) {
    at_layer_desc L[MAX_LAYERS];
    int n = MAX_LAYERS;
    *out = NULL;
    if (!spec) return at_fail(AT_ERR_ARG, "no architecture given");
    if (at_is_builtin_model(spec)) {
        at_status s = at_builtin_layers(spec, c, h, w, L, MAX_LAYERS, &n);
        if (s != AT_OK) return s;
    } else {
        at_status s = at_spec_parse(spec, L, &n);
        if (s != AT_OK) {
            if (!strchr(spec, ',') && !strchr(spec, ':')) {
                char names[256];
                at_builtin_names(names, sizeof names);
                return at_fail(AT_ERR_ARG,
                               "unknown model '%s': use %s or a spec such as "
                               "'flatten,linear:100,relu,linear:10'",
                               spec, names);
            }
            return s;
        }
    }
    at_status s = at_net_create_bounded(out, L, n, c, h, w, max_floats);
    if (s == AT_OK) s = at_net_set_spec(*out, spec);
    if (s != AT_OK) {
        at_net_free(*out);
        *out = NULL;
    }
    return s;
}
