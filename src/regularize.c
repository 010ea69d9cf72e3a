/* Penalties, proximal steps and constraints over a network's parameter buffer.
 *
 * Everything here works on whole parameter tensors (named views into the one parameter buffer),
 * chosen by an at_reg_select: layer names ("fc1"), layer kinds ("linear", "conv") or every layer,
 * weights only unless biases are asked for. Sums run in float vector lanes over blocks of 1024
 * values and in double across blocks. Nothing allocates. */
#include "internal.h"
#include "vec.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* ------------------------------------------------------------ selection */

/* Kind words accepted in a selection list. */
static bool kind_word(const char *item, size_t len, at_layer_kind *kind) {
    static const struct {
        const char *word;
        at_layer_kind kind;
    } words[] = {{"linear", AT_LAYER_LINEAR},
                 {"conv", AT_LAYER_CONV2D},
                 {"conv2d", AT_LAYER_CONV2D}};
    for (size_t i = 0; i < sizeof words / sizeof *words; i++)
        if (strlen(words[i].word) == len && strncmp(item, words[i].word, len) == 0) {
            *kind = words[i].kind;
            return true;
        }
    return false;
}

static bool is_all(const char *layers) {
    return !layers || !*layers || strcmp(layers, "all") == 0;
}

/* Does one list item (not NUL-terminated) select layer desc d? */
static bool item_matches(const at_layer_desc *d, const char *item, size_t len) {
    if (len == 3 && strncmp(item, "all", 3) == 0) return true;
    if (strlen(d->name) == len && strncmp(d->name, item, len) == 0) return true;
    at_layer_kind k;
    return kind_word(item, len, &k) && d->kind == k;
}

bool at_reg_selected(const at_net *net, const at_reg_select *sel, int tensor) {
    const at_param_info *p = at_net_tensor(net, tensor);
    if (!p) return false;
    if (p->is_bias && !(sel && sel->bias)) return false;
    const char *layers = sel ? sel->layers : NULL;
    if (is_all(layers)) return true;
    const at_layer_desc *d = at_net_layer(net, p->layer);
    for (const char *s = layers; *s;) {
        size_t len = strcspn(s, ",");
        if (len && item_matches(d, s, len)) return true;
        s += len;
        if (*s == ',') s++;
    }
    return false;
}

/* Lists the names of the layers with parameters, for error messages. */
static void layer_names(const at_net *net, char *buf, size_t cap) {
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < at_net_num_tensors(net) && used < cap; i++) {
        const at_param_info *p = at_net_tensor(net, i);
        if (p->is_bias) continue;
        int w = snprintf(buf + used, cap - used, "%s%s", used ? ", " : "",
                         at_net_layer(net, p->layer)->name);
        if (w > 0) used += (size_t)w;
    }
}

at_status at_reg_check(const at_net *net, const at_reg_select *sel) {
    const char *layers = sel ? sel->layers : NULL;
    char names[256];
    if (!is_all(layers)) {
        for (const char *s = layers; *s;) {
            size_t len = strcspn(s, ",");
            if (len == 0)
                return at_fail(AT_ERR_ARG, "layer selection '%s' has an empty item", layers);
            at_layer_kind k;
            bool known = (len == 3 && strncmp(s, "all", 3) == 0) || kind_word(s, len, &k);
            for (int l = 0; !known && l < at_net_num_layers(net); l++) {
                const at_layer_desc *d = at_net_layer(net, l);
                if (strlen(d->name) == len && strncmp(d->name, s, len) == 0) {
                    known = true;
                    bool has_weights = false;
                    for (int t = 0; t < at_net_num_tensors(net); t++)
                        has_weights |= at_net_tensor(net, t)->layer == l;
                    if (!has_weights)
                        return at_fail(AT_ERR_ARG,
                                       "layer selection '%s': layer '%.*s' has no parameters",
                                       layers, (int)len, s);
                }
            }
            if (!known) {
                layer_names(net, names, sizeof names);
                return at_fail(AT_ERR_ARG,
                               "layer selection '%s': '%.*s' is neither a layer of this model "
                               "(layers with weights: %s) nor a kind (linear, conv) nor 'all'",
                               layers, (int)len, s, names);
            }
            s += len;
            if (*s == ',') {
                s++;
                if (!*s)
                    return at_fail(AT_ERR_ARG, "layer selection '%s' ends with a comma", layers);
            }
        }
    }
    for (int t = 0; t < at_net_num_tensors(net); t++)
        if (at_reg_selected(net, sel, t)) return AT_OK;
    return at_fail(AT_ERR_ARG, "layer selection '%s' selects no parameters of this model",
                   layers ? layers : "all");
}

/* ------------------------------------------------------------ penalties */

static at_status check_lambda(float v, const char *what) {
    if (!(v >= 0.0f) || !isfinite(v))
        return at_fail(AT_ERR_ARG, "%s must be a finite number >= 0, got %g", what, (double)v);
    return AT_OK;
}

/* sum |w| and sum w^2 of n floats. Blocks of SUM_BLOCK floats are summed in vector lanes (a fixed
 * order, so deterministic), the block sums in double. A plain loop is one chain of dependent
 * double additions, each waiting for the one before: it cannot use the vector units. */
enum { SUM_BLOCK = 1024 };
typedef int ivec __attribute__((vector_size(VL * sizeof(int))));

static void abs_and_square_sums(const float *w, size_t n, double *sum_abs, double *sum_sq) {
    double a = 0.0, q = 0.0;
    for (size_t start = 0; start < n; start += SUM_BLOCK) {
        const size_t end = AT_MIN(n, start + SUM_BLOCK);
        vec lanes_abs = splat(0.0f), lanes_sq = splat(0.0f);
        size_t i = start;
        for (; i + VL <= end; i += VL) {
            vec v = load_vec(w + i), magnitude;
            ivec bits;
            memcpy(&bits, &v, sizeof bits);
            bits &= 0x7fffffff; /* |v|: the sign bit cleared */
            memcpy(&magnitude, &bits, sizeof magnitude);
            lanes_abs += magnitude;
            lanes_sq += v * v;
        }
        float block_abs = sum_lanes(lanes_abs), block_sq = sum_lanes(lanes_sq);
        for (; i < end; i++) {
            block_abs += fabsf(w[i]);
            block_sq += w[i] * w[i];
        }
        a += block_abs;
        q += block_sq;
    }
    *sum_abs = a;
    *sum_sq = q;
}

/* l1 * sum |w| + l2 * sum w^2 over the selection; gradient added into the gradient buffer. */
at_status at_elastic_net_regularization(at_net *net, const at_reg_select *sel, float l1, float l2,
                                        float *penalty) {
    at_status s = check_lambda(l1, "the L1 coefficient");
    if (s == AT_OK) s = check_lambda(l2, "the L2 coefficient");
    if (s != AT_OK) return s;
    const float *w = at_net_params(net);
    float *g = at_net_grads(net);
    const float two_l2 = 2.0f * l2;
    double sum_abs = 0.0, sum_sq = 0.0;
    for (int t = 0; t < at_net_num_tensors(net); t++) {
        if (!at_reg_selected(net, sel, t)) continue;
        const at_param_info *p = at_net_tensor(net, t);
        const float *pw = w + p->offset;
        float *pg = g + p->offset;
        for (size_t i = 0; i < p->size; i++) {
            const float v = pw[i];
            /* sign(0) = 0: the subgradient torch.abs uses. */
            const float sign = (float)((v > 0.0f) - (v < 0.0f));
            pg[i] += l1 * sign + two_l2 * v;
        }
        double a, q;
        abs_and_square_sums(pw, p->size, &a, &q);
        sum_abs += a;
        sum_sq += q;
    }
    double value = (double)l1 * sum_abs + (double)l2 * sum_sq;
    if (penalty) *penalty = (float)value;
    if (!isfinite(value)) return at_fail(AT_ERR_NAN, "the regularization penalty is %g", value);
    return AT_OK;
}

at_status at_l1_regularization(at_net *net, const at_reg_select *sel, float lambda,
                               float *penalty) {
    return at_elastic_net_regularization(net, sel, lambda, 0.0f, penalty);
}

at_status at_l2_regularization(at_net *net, const at_reg_select *sel, float lambda,
                               float *penalty) {
    return at_elastic_net_regularization(net, sel, 0.0f, lambda, penalty);
}

/* ------------------------------------------------------------ proximal step and constraints */

at_status at_prox_l1(at_net *net, const at_reg_select *sel, float threshold) {
    at_status s = check_lambda(threshold, "the soft-threshold");
    if (s != AT_OK) return s;
    float *w = at_net_params(net);
    for (int t = 0; t < at_net_num_tensors(net); t++) {
        if (!at_reg_selected(net, sel, t)) continue;
        const at_param_info *p = at_net_tensor(net, t);
        float *pw = w + p->offset;
        for (size_t i = 0; i < p->size; i++) {
            float v = pw[i], m = fabsf(v) - threshold;
            pw[i] = m > 0.0f ? copysignf(m, v) : 0.0f;
        }
    }
    return AT_OK;
}

at_status at_max_norm(at_net *net, const at_reg_select *sel, float c) {
    if (!(c > 0.0f) || !isfinite(c))
        return at_fail(AT_ERR_ARG, "the max-norm bound must be a finite number > 0, got %g",
                       (double)c);
    float *w = at_net_params(net);
    for (int t = 0; t < at_net_num_tensors(net); t++) {
        const at_param_info *p = at_net_tensor(net, t);
        if (p->is_bias || !at_reg_selected(net, sel, t)) continue;
        /* Linear (out, in) and conv (out, in, kh, kw): unit u's incoming weights are the u-th
         * contiguous block of size/out values. */
        const size_t units = (size_t)p->shape[0], fan_in = p->size / units;
        for (size_t u = 0; u < units; u++) {
            float *row = w + p->offset + u * fan_in;
            double sq = 0.0;
            for (size_t i = 0; i < fan_in; i++) sq += (double)row[i] * row[i];
            double norm = sqrt(sq);
            if (norm <= c) continue;
            /* Keras MaxNorm: w * c / (eps + norm) with eps = 1e-7. */
            float scale = (float)((double)c / (norm + 1e-7));
            for (size_t i = 0; i < fan_in; i++) row[i] *= scale;
        }
    }
    return AT_OK;
}

at_status at_clip_grad_norm(at_net *net, float max_norm, float *norm_out) {
    if (!(max_norm > 0.0f) || !isfinite(max_norm))
        return at_fail(AT_ERR_ARG, "the gradient-norm bound must be a finite number > 0, got %g",
                       (double)max_norm);
    float *g = at_net_grads(net);
    const size_t n = at_net_num_params(net);
    double unused_abs, sq;
    abs_and_square_sums(g, n, &unused_abs, &sq);
    double norm = sqrt(sq);
    if (norm_out) *norm_out = (float)norm;
    if (!isfinite(norm)) return at_fail(AT_ERR_NAN, "the gradient norm is %g", norm);
    /* torch.nn.utils.clip_grad_norm_: coefficient max/(norm+1e-6), applied only below 1. */
    double coef = (double)max_norm / (norm + 1e-6);
    if (coef < 1.0) {
        const float f = (float)coef;
        for (size_t i = 0; i < n; i++) g[i] *= f;
    }
    return AT_OK;
}

/* ------------------------------------------------------------ reporting */

void at_tensor_stats_of(const at_net *net, int tensor, at_tensor_stats *out) {
    memset(out, 0, sizeof *out);
    const at_param_info *p = at_net_tensor(net, tensor);
    if (!p) return;
    const float *w = at_net_params((at_net *)net) + p->offset;
    double a = 0.0, q = 0.0;
    float m = 0.0f;
    size_t zeros = 0;
    for (size_t i = 0; i < p->size; i++) {
        float v = fabsf(w[i]);
        a += v;
        q += (double)v * v;
        zeros += w[i] == 0.0f;
        if (v > m) m = v;
    }
    out->count = p->size;
    out->l1 = a;
    out->l2 = sqrt(q);
    out->zeros = zeros;
    out->max_abs = m;
}
