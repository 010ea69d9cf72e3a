/* Inverted dropout: keep with probability 1-p and scale survivors by 1/(1-p); identity in eval.
 * Dropout2d (nn.Dropout2d) makes one decision per (sample, channel) and so zeroes whole feature
 * maps; on flat inputs (h = w = 1) every feature is its own channel.
 *
 * The keep/drop decision for an element is a hash of (forward-pass key, sample, element), so
 * backward recomputes the mask instead of storing it, and the mask does not depend on how the
 * batch was split across threads. */
#include "layer.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static at_status dropout_setup(at_layer *L) {
    if (!(L->d.alpha >= 0.0f && L->d.alpha < 1.0f))
        return at_fail(AT_ERR_ARG, "dropout layer %d: probability must be in [0, 1), got %g",
                       L->index, (double)L->d.alpha);
    L->out_c = L->in_c;
    L->out_h = L->in_h;
    L->out_w = L->in_w;
    return AT_OK;
}

static size_t dropout_workspace(const at_layer *L, int n) { return 0; }

static inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* unit i of sample s is kept; units are elements (dropout) or channels (dropout2d). */
static inline bool keep(const at_layer *L, const at_ctx *ctx, int s, size_t i, size_t units) {
    uint64_t sample = (uint64_t)(ctx->first_sample + s);
    uint64_t h = mix64(ctx->dropout_key ^ mix64(((uint64_t)L->index << 48) ^
                                                (sample * (uint64_t)units + i)));
    float u = (float)(h >> 40) * (1.0f / 16777216.0f);
    return u >= L->d.alpha;
}

static void dropout_apply(const at_layer *L, const at_ctx *ctx, const float *in, float *out,
                          int n) {
    const size_t size = (size_t)L->in_size;
    if (!ctx->training || L->d.alpha == 0.0f) {
        memcpy(out, in, sizeof(float) * n * size);
        return;
    }
    const float scale = 1.0f / (1.0f - L->d.alpha);
    for (int s = 0; s < n; s++)
        for (size_t i = 0; i < size; i++)
            out[s * size + i] = keep(L, ctx, s, i, size) ? in[s * size + i] * scale : 0.0f;
}

static void dropout_forward(const at_layer *L, const at_ctx *ctx, const float *x, float *y, int n) {
    dropout_apply(L, ctx, x, y, n);
}

static void dropout_backward(const at_layer *L, const at_ctx *ctx, const float *x, const float *y,
                             const float *dy, float *dx, int n, bool param_grads) {
    if (dx) dropout_apply(L, ctx, dy, dx, n);
}

/* dropout[:P] and dropout2d[:P], 0.5 by default as PyTorch's. */
static at_status dropout_parse(at_layer_desc *d, const double *args, int count,
                               const char *const *keys, const double *vals, int nkeys,
                               const char *token) {
    d->alpha = count ? (float)args[0] : 0.5f;
    return at_spec_no_keys(nkeys, keys, token);
}

static void dropout_word(const at_layer_desc *d, char *buf, size_t cap) {
    snprintf(buf, cap, "%s:%.9g", d->kind == AT_LAYER_DROPOUT2D ? "dropout2d" : "dropout",
             (double)d->alpha);
}

static void dropout_describe(const at_layer *L, char *buf, size_t cap) {
    snprintf(buf, cap, "%s(p=%g)", L->d.kind == AT_LAYER_DROPOUT2D ? "Dropout2d" : "Dropout",
             (double)L->d.alpha);
}

const at_layer_ops at_dropout_ops = {.name = "dropout", .setup = dropout_setup,
                                     .workspace = dropout_workspace, .forward = dropout_forward,
                                     .backward = dropout_backward, .max_args = 1,
                                     .parse = dropout_parse, .spec_word = dropout_word,
                                     .describe = dropout_describe,
                                     .bound_rule = AT_BOUND_AFFINE};

/* ------------------------------------------------------------ Dropout2d */

static void dropout2d_apply(const at_layer *L, const at_ctx *ctx, const float *in, float *out,
                            int n) {
    const size_t size = (size_t)L->in_size, channels = (size_t)L->in_c, plane = size / channels;
    if (!ctx->training || L->d.alpha == 0.0f) {
        memcpy(out, in, sizeof(float) * n * size);
        return;
    }
    const float scale = 1.0f / (1.0f - L->d.alpha);
    for (int s = 0; s < n; s++)
        for (size_t c = 0; c < channels; c++) {
            const float *src = in + s * size + c * plane;
            float *dst = out + s * size + c * plane;
            if (keep(L, ctx, s, c, channels))
                for (size_t i = 0; i < plane; i++) dst[i] = src[i] * scale;
            else
                memset(dst, 0, sizeof(float) * plane);
        }
}

static void dropout2d_forward(const at_layer *L, const at_ctx *ctx, const float *x, float *y,
                              int n) {
    dropout2d_apply(L, ctx, x, y, n);
}

static void dropout2d_backward(const at_layer *L, const at_ctx *ctx, const float *x, const float *y,
                               const float *dy, float *dx, int n, bool param_grads) {
    if (dx) dropout2d_apply(L, ctx, dy, dx, n);
}

const at_layer_ops at_dropout2d_ops = {.name = "dropout2d", .setup = dropout_setup,
                                       .workspace = dropout_workspace,
                                       .forward = dropout2d_forward,
                                       .backward = dropout2d_backward, .max_args = 1,
                                       .parse = dropout_parse, .spec_word = dropout_word,
                                       .describe = dropout_describe,
                                       .bound_rule = AT_BOUND_AFFINE};
