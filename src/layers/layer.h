/* The layer table: every layer kind provides the same small set of functions.
 *
 * Kernels work on a chunk of n samples that one thread owns: x is n x in_size, y is n x out_size.
 * Backward adds (+=) parameter gradients into ctx->grads and writes (=) the input gradient dx
 * when dx is not NULL. Kernels never allocate: scratch memory comes from ctx->work. */
#ifndef ADVTRAIN_LAYER_H
#define ADVTRAIN_LAYER_H
#include "internal.h"
#include "vec.h"

#include <limits.h>
#include <stdint.h>

/* A buffer of a layer (state saved with the model, never trained): its name after the module's,
 * e.g. "running_mean", and its size. */
typedef struct at_buffer_desc {
    char suffix[24];
    int count;
    bool integer; /* a counter (num_batches_tracked): int64 in files, a float in memory */
} at_buffer_desc;

enum { AT_MAX_BUFFERS = 3 };

/* One node of the network. */
typedef struct at_layer {
    at_layer_desc d;
    int in_c, in_h, in_w;
    int out_c, out_h, out_w;
    int in_size, out_size; /* floats per sample */
    size_t w_off, w_count; /* weight view into the parameter buffer (0 count if none) */
    size_t b_off, b_count; /* bias view */
    int w_ndim, w_shape[4]; /* the weight's shape in PyTorch's state_dict (setup fills it) */
    /* Buffers, consecutive from buf_off in the buffer array (setup describes them). */
    int nbufs;
    at_buffer_desc bufs[AT_MAX_BUFFERS];
    size_t buf_off;
    /* Per-pass state a sync point computes for the whole batch (BatchNorm's batch mean and
     * inverse deviation, its reduced gradient sums): floats from state_off in the state array. */
    size_t state_count, state_off;
    /* Doubles each thread sums at a sync point (forward_stats, backward_stats). */
    size_t stats_count;
    int index;             /* position in the network */
    int src[2], nsrc;      /* the nodes read (-1: the network input), after resolving fusion */
    int described[2];      /* the nodes its description names, before fusion */
    bool relu_out;         /* applies the ReLU that reads it, which is then skipped (net.c) */
    bool fused;            /* runs in neither pass: a ReLU that its producer applies, or a
                            * Flatten (its output is its input's floats) */
    /* Floats per sample that a training-mode forward keeps for the weight gradient (the conv
     * columns), so that backward need not rebuild them; 0 if nothing. */
    size_t kept_per_sample;
} at_layer;

/* What one thread needs to run a chunk. params, grads, buffers and state are the whole arrays:
 * a layer finds its own part at its offsets (L->w_off, L->buf_off, L->state_off). */
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
    float *buffers;        /* running statistics: read in eval mode, updated by forward_reduce */
    float *state;          /* written by the reduce hooks, read by every chunk afterwards */
    /* A two-input node's (Add's) second input and its gradient (NULL when not wanted): the
     * backward writes dx2 (=) as it writes dx. */
    const float *x2;
    float *dx2;
} at_ctx;

/* How interval bounds pass through a layer kind in eval mode (certified robustness,
 * src/certify/ibp.c). */
typedef enum at_bound_rule {
    AT_BOUND_NONE,     /* no rule: bound propagation refuses the network, naming the layer */
    AT_BOUND_AFFINE,   /* y = A x + c (x2 too for Add): the centre of the box goes through forward,
                        * its radius through |A| (abs_map) */
    AT_BOUND_MONOTONE, /* every output non-decreasing in every input: forward of the lower and of
                        * the upper bound */
} at_bound_rule;

typedef struct at_layer_ops {
    const char *name; /* spec keyword */
    /* 2 for a node that reads two inputs of the same shape (Add: ctx->x2, ctx->dx2; its spec's
     * first argument names the second input); 0 or 1: one input. */
    int inputs;
    /* Fills output shape, parameter counts and shapes, buffers and state sizes from the input
     * shape; AT_ERR_SHAPE if impossible. */
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
    /* What backward does not read, so that the plan may keep a tensor only during the forward
     * (plan.c): output_dead_in_backward, y but to gate a fused ReLU; inputs_dead_in_backward,
     * x and x2 (Add). */
    bool output_dead_in_backward, inputs_dead_in_backward;

    /* The spec syntax (spec.c): "name:ARG:ARG...:key=value". parse fills d (kind and name are
     * set) from the positional numbers and the named values (keys[i] = vals[i]); count within
     * [min_args, max_args]. NULL: the keyword takes nothing. spec_word writes d back in that
     * syntax; NULL: the keyword alone. */
    int min_args, max_args;
    at_status (*parse)(at_layer_desc *d, const double *args, int count, const char *const *keys,
                       const double *vals, int nkeys, const char *token);
    void (*spec_word)(const at_layer_desc *d, char *buf, size_t cap);
    /* PyTorch's print(model) line for the module, e.g. "Linear(in_features=400, ...)". */
    void (*describe)(const at_layer *L, char *buf, size_t cap);
    /* Optional: sets parameters and buffers instead of the fan-in rule every weighted layer
     * gets (BatchNorm: weight 1, bias 0, running_var 1). */
    void (*init)(const at_layer *L, float *params, float *buffers);

    /* Optional sync points, for a layer that needs the whole batch in training mode
     * (BatchNorm). Each thread adds its chunk's sums into acc (L->stats_count doubles, zeroed
     * before); the threads' sums are added in thread order (bit-identical for a thread count)
     * and the reduce hook runs once, on one thread, with the total over the batch of n samples
     * (it writes ctx->state, and in the forward the running statistics); then every chunk runs
     * the forward or backward, which reads ctx->state. Eval passes have no sync point. */
    void (*forward_stats)(const at_layer *L, const at_ctx *ctx, const float *x, int n, double *acc);
    void (*forward_reduce)(const at_layer *L, const at_ctx *ctx, const double *sum, int n);
    void (*backward_stats)(const at_layer *L, const at_ctx *ctx, const float *x, const float *y,
                           const float *dy, int n, double *acc);
    /* Writes the parameter gradients that are batch sums into ctx->grads when param_grads. */
    void (*backward_reduce)(const at_layer *L, const at_ctx *ctx, const double *sum, int n,
                            bool param_grads);

    /* Certified bounds: the rule, and for AT_BOUND_AFFINE with parameters the map |A| (no
     * offset) written over copies of the network's parameters and buffers; NULL: the default,
     * weight |w| and bias 0 (Linear, Conv2d). */
    at_bound_rule bound_rule;
    void (*abs_map)(const at_layer *L, float *params, float *buffers);
} at_layer_ops;

/* Spec helpers shared by the layer files (spec_args.c): AT_ERR_ARG, naming the token, unless
 * every argument is a whole number, or when any key=value option is given. */
at_status at_spec_whole(const double *args, int count, const char *token);
at_status at_spec_no_keys(int nkeys, const char *const *keys, const char *token);

const at_layer_ops *at_layer_ops_for(at_layer_kind kind);
/* The kind whose spec keyword is word[0..len), NULL if none; and the kind of a table. */
const at_layer_ops *at_layer_ops_named(const char *word, size_t len);
at_layer_kind at_layer_kind_of(const at_layer_ops *ops);
/* Every kind's spec keyword, comma-separated (for messages). */
void at_layer_keywords(char *buf, size_t cap);

/* Each kind's table, defined in its file; registry.c maps kinds to them. */
extern const at_layer_ops at_linear_ops, at_conv2d_ops, at_maxpool2d_ops, at_avgpool2d_ops,
    at_relu_ops, at_leakyrelu_ops, at_tanh_ops, at_sigmoid_ops, at_flatten_ops, at_dropout_ops,
    at_dropout2d_ops, at_batchnorm2d_ops, at_batchnorm1d_ops, at_add_ops, at_globalavgpool_ops;

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

/* Limits of what a network may hold, checked when it is built (graph.c, conv2d.c) so that no
 * size computed from a layer description or a model file overflows. Kernels index a sample's
 * tensor and a weight tensor with int: each holds at most AT_MAX_COUNT floats. Heights and
 * widths stay below AT_MAX_SIDE and the numbers of a layer description below AT_MAX_ARG (the
 * spec syntax's bound), so that in_h + 2 * pad and window sizes cannot overflow an int. */
#define AT_MAX_COUNT INT_MAX
#define AT_MAX_SIDE (1 << 24)
#define AT_MAX_ARG 1000000

/* a * b * c * d for non-negative factors, or -1 when it exceeds AT_MAX_COUNT. */
static inline int64_t at_count(int64_t a, int64_t b, int64_t c, int64_t d) {
    int64_t p;
    if (__builtin_mul_overflow(a, b, &p) || __builtin_mul_overflow(p, c, &p) ||
        __builtin_mul_overflow(p, d, &p) || p > AT_MAX_COUNT)
        return -1;
    return p;
}

/* Output size of a convolution or pooling window along one axis (floor mode, as PyTorch). */
static inline int at_window_out(int in, int kernel, int stride, int pad) {
    return (in + 2 * pad - kernel) / stride + 1;
}
#endif
