/* The layer table: every layer kind provides the same small set of functions.
 *
 * Kernels work on a chunk of n samples that one thread owns: x is n x in_size, y is n x out_size.
 * Backward adds (+=) parameter gradients into ctx->grads and writes (=) the input gradient dx
 * when dx is not NULL. Kernels never allocate: scratch memory comes from ctx->work. */
#ifndef ADVTRAIN_LAYER_H
#define ADVTRAIN_LAYER_H
#include "internal.h"
#include "vec.h"

typedef struct at_layer {
    at_layer_desc d;
    int in_c, in_h, in_w;
    int out_c, out_h, out_w;
    int in_size, out_size; /* floats per sample */
    size_t w_off, w_count; /* weight view into the parameter buffer (0 count if none) */
    size_t b_off, b_count; /* bias view */
    int index;             /* position in the network */
    bool relu_out;         /* applies the ReLU that follows it, which is then skipped (net.c) */
    bool fused;            /* runs in neither pass: a ReLU that the layer before it applies, or a
                            * Flatten (its output is its input's floats) */
    /* Floats per sample that a training-mode forward keeps for the weight gradient (the conv
     * columns), so that backward need not rebuild them; 0 if nothing. */
    size_t kept_per_sample;
} at_layer;

/* What one thread needs to run a chunk. */
typedef struct at_ctx {
    const float *params;
    float *grads;          /* this thread's gradient buffer */
    float *work;           /* this thread's scratch memory */
    bool training;
    uint64_t dropout_key;  /* changes every forward pass */
    int first_sample;      /* index of the chunk's first sample in the batch */
    /* This chunk's part of the layer's kept buffer (kept_per_sample floats per sample): the
     * forward writes it when not NULL; the backward is given it when it holds the last forward's
     * values, NULL otherwise. */
    float *kept;
} at_ctx;

typedef struct at_layer_ops {
    const char *name; /* spec keyword */
    /* Fills output shape and parameter counts from the input shape; AT_ERR_SHAPE if impossible. */
    at_status (*setup)(at_layer *L);
    /* Floats of scratch memory needed for a chunk of n samples. */
    size_t (*workspace)(const at_layer *L, int n);
    void (*forward)(const at_layer *L, const at_ctx *ctx, const float *x, float *y, int n);
    void (*backward)(const at_layer *L, const at_ctx *ctx, const float *x, const float *y,
                     const float *dy, float *dx, int n, bool param_grads);
    /* Optional: true if the layer can apply a following ReLU itself (relu_out). Its forward then
     * writes max(y, 0); its backward receives the gradient of that output and must zero it where
     * y <= 0, reading the y it is given (the ReLU's output). */
    bool (*fuses_relu)(const at_layer *L);
} at_layer_ops;

const at_layer_ops *at_layer_ops_for(at_layer_kind kind);

extern const at_layer_ops at_linear_ops, at_conv2d_ops, at_maxpool2d_ops, at_avgpool2d_ops,
    at_relu_ops, at_leakyrelu_ops, at_tanh_ops, at_sigmoid_ops, at_flatten_ops, at_dropout_ops;

/* The ReLU and its gradient, defined once: a layer that applies a fused ReLU (relu_out) must match
 * the ReLU layer bit for bit, NaN included (it maps to 0). The gate is the ReLU's input or its
 * output: both are positive at the same places. */
static inline float at_relu(float v) { return v > 0.0f ? v : 0.0f; }
static inline void at_relu_grad(float *dx, const float *dy, const float *gate, size_t count) {
    size_t i = 0;
    /* dy's bits where the gate is positive, else +0: a compare and an AND per vector */
    for (; i + VL <= count; i += VL) {
        const ivec keep = load_vec(gate + i) > (vec){0};
        store_vec(dx + i, (vec)((ivec)load_vec(dy + i) & keep));
    }
    for (; i < count; i++) dx[i] = gate[i] > 0.0f ? dy[i] : 0.0f;
}

/* Output size of a convolution or pooling window along one axis (floor mode, as PyTorch). */
static inline int at_window_out(int in, int kernel, int stride, int pad) {
    return (in + 2 * pad - kernel) / stride + 1;
}
#endif
