/* advtrain: train small neural networks that generalize and resist adversarial attacks.
 *
 * The whole public API. Conventions:
 *  - every function that can fail returns an at_status; on failure at_error_message() says what
 *    went wrong (naming the file, tensor or argument). The library never prints and never exits.
 *  - float32 everywhere; images are NCHW, pixels in [0,1].
 *  - a network is a sequence of layers. Its parameters live in one contiguous buffer, their
 *    gradients in another; each parameter tensor is a named view (PyTorch state_dict names).
 */
#ifndef ADVTRAIN_H
#define ADVTRAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <signal.h> /* sig_atomic_t */
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define AT_VERSION "0.1.0"

/* ---------------------------------------------------------------- status */

typedef enum at_status {
    AT_OK = 0,
    AT_ERR_ARG,         /* invalid argument or configuration */
    AT_ERR_NOMEM,       /* allocation failed */
    AT_ERR_SHAPE,       /* impossible or mismatched shapes */
    AT_ERR_IO,          /* file missing, unreadable or unwritable */
    AT_ERR_FORMAT,      /* file exists but is truncated, corrupted or malformed */
    AT_ERR_NAN,         /* a loss or value became NaN or infinite */
    AT_ERR_UNSUPPORTED, /* valid request this build cannot do */
    AT_ERR_INTERRUPTED  /* stopped on request (at_train_callbacks.stop) between two steps */
} at_status;

const char *at_status_name(at_status s);
/* Detail of the most recent failure in the calling thread ("" if none). */
const char *at_error_message(void);
/* Sets the detail message and returns `s` (for use inside the library and by extensions). */
at_status at_fail(at_status s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Number of threads used by compute kernels (>= 1). Deterministic for a fixed count. */
void at_set_threads(int n);
int at_get_threads(void);
/* Which matrix-multiply kernel runs: OpenBLAS, or advtrain's own when OpenBLAS fell back to
 * pre-AVX kernels on an unrecognised CPU. */
const char *at_gemm_backend_name(void);

/* For benchmarks: the two single-threaded SGEMMs every layer runs on (at_gemm_backend_name says
 * which one the layers use), and the arithmetic peak they are measured against. */
typedef enum at_gemm_kernel {
    AT_GEMM_OPENBLAS, /* cblas_sgemm, on as many threads as OpenBLAS is set to (advtrain sets 1) */
    AT_GEMM_OWN       /* advtrain's packed, register-blocked kernel */
} at_gemm_kernel;
/* C = alpha op(A) op(B) + beta C, row-major, op(A) m x k and op(B) k x n (A, B transposed when
 * trans_a, trans_b), C m x n, through the kernel named. AT_ERR_ARG for a negative size, a NULL
 * matrix or a leading dimension shorter than a stored row. */
at_status at_sgemm(at_gemm_kernel kernel, bool trans_a, bool trans_b, int m, int n, int k, float alpha,
                   const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc);
/* One core's arithmetic peak: runs iters rounds of 12 independent vector multiply-adds (as wide as
 * the kernel's vectors, no loads) and sets *flops to the operations done (2 per lane and
 * multiply-add); time it to get FLOP/s. */
at_status at_fma_burn(long iters, double *flops);

/* ---------------------------------------------------------------- random numbers */

/* xoshiro256** seeded through splitmix64: the library never touches rand(). */
typedef struct at_rng {
    uint64_t s[4];
} at_rng;

void at_rng_seed(at_rng *r, uint64_t seed);
uint64_t at_rng_next(at_rng *r);
float at_rng_uniform(at_rng *r);             /* [0, 1) */
/* n draws of at_rng_uniform into out, the same values in the same order, faster. */
void at_rng_fill_uniform(at_rng *r, float *out, size_t n);
float at_rng_normal(at_rng *r);              /* standard normal */
uint32_t at_rng_below(at_rng *r, uint32_t n); /* uniform integer in [0, n) */
void at_rng_shuffle(at_rng *r, int32_t *a, int n);

/* Per-sample draws: the generator of sample `index` under `key`, so that a sample draws the same
 * numbers whatever batch, thread or process it falls in (dropout's masks follow the same rule).
 * Attacks seed it with (at_attack_config.seed, index_base + i); training with at_draw_key's key
 * for what is drawn (augmentation, noise, random starts) and the epoch, and the sample's index in
 * the epoch's order. */
void at_rng_for_sample(at_rng *r, uint64_t key, int64_t index);
typedef enum at_draw_purpose {
    AT_DRAW_AUGMENT = 1, /* crop and flip */
    AT_DRAW_NOISE,       /* input noise */
    AT_DRAW_MIXUP,       /* mixup's weight and partners (one generator per batch: index = batch) */
    AT_DRAW_CRAFT        /* adversarial training's random starts */
} at_draw_purpose;
uint64_t at_draw_key(uint64_t seed, at_draw_purpose purpose, int64_t epoch);

/* ---------------------------------------------------------------- layers and networks */

typedef enum at_layer_kind {
    AT_LAYER_LINEAR,
    AT_LAYER_CONV2D,
    AT_LAYER_MAXPOOL2D,
    AT_LAYER_AVGPOOL2D,
    AT_LAYER_RELU,
    AT_LAYER_LEAKYRELU,
    AT_LAYER_TANH,
    AT_LAYER_SIGMOID,
    AT_LAYER_FLATTEN,
    AT_LAYER_DROPOUT,
    AT_LAYER_DROPOUT2D, /* nn.Dropout2d: zeroes whole channels */
    AT_LAYER_BATCHNORM2D, /* nn.BatchNorm2d: per channel over (N, H, W) */
    AT_LAYER_BATCHNORM1D, /* nn.BatchNorm1d on (N, C) features */
    AT_LAYER_ADD,         /* residual sum of two nodes of the same shape */
    AT_LAYER_GLOBALAVGPOOL, /* nn.AdaptiveAvgPool2d(1): each channel's mean, output C x 1 x 1 */
    AT_LAYER_KIND_COUNT
} at_layer_kind;

/* What a user asks for: one node of the network. Input sizes are inferred when the network is
 * built. A node reads the node before it unless `input` names another; an Add also reads
 * `input2`. Names refer to earlier nodes (the nearest one of that name); "input" is the
 * network's input. A zero-filled description with a kind is a valid chain layer. */
typedef struct at_layer_desc {
    at_layer_kind kind;
    char name[32]; /* module name for parameter names ("fc1", "0"); "" for parameterless layers */
    int out;       /* Linear: out_features; Conv2d: out_channels */
    int kernel;    /* Conv2d / pooling kernel size (square) */
    int stride;    /* Conv2d / pooling stride (0 = default: 1 for conv, kernel for pooling) */
    int pad;       /* Conv2d / pooling zero padding */
    float alpha;   /* Dropout: drop probability; LeakyReLU: negative slope */
    int groups;    /* Conv2d: groups (0 or 1 = dense; in_channels = depthwise) */
    bool no_bias;  /* Conv2d: bias=False */
    char input[32];  /* the node read ("" = the one before) */
    char input2[32]; /* Add: the second node read */
} at_layer_desc;

/* A parameter tensor of a network: a named view into the parameter buffer. */
typedef struct at_param_info {
    char name[48];     /* PyTorch state_dict name, e.g. "fc1.weight" */
    int ndim;
    int shape[4];      /* Linear weight (out, in); conv weight (out, in, kh, kw); bias (out) */
    size_t offset;     /* into at_net_params() / at_net_grads() */
    size_t size;       /* number of floats */
    int layer;         /* index of the owning layer */
    bool is_bias;
    bool is_integer;   /* buffers only: an integer counter (num_batches_tracked, int64 in files) */
} at_param_info;

typedef struct at_net at_net;

/* Builds a network for inputs of shape (c, h, w) (flat vectors: c = features, h = w = 1).
 * Parameters are allocated and zero; call at_net_init to initialize them. */
at_status at_net_create(at_net **out, const at_layer_desc *layers, int nlayers, int in_c, int in_h,
                        int in_w);
/* Builds a built-in model ("seed-mlp", "seed-cnn", "mlp", "smallcnn") or a custom architecture
 * written in the spec syntax (docs/architectures.md), for inputs of shape (c, h, w). */
at_status at_net_from_spec(at_net **out, const char *spec, int in_c, int in_h, int in_w);
/* Parses a custom spec into layer descriptions (*nlayers in: capacity, out: count). */
at_status at_spec_parse(const char *spec, at_layer_desc *layers, int *nlayers);
/* True if `name` is one of the built-in model names. */
bool at_is_builtin_model(const char *name);
void at_net_free(at_net *net);

/* PyTorch default initialization: weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as
 * nn.Linear / nn.Conv2d's reset_parameters (kaiming_uniform_ with a = sqrt(5)). */
void at_net_init(at_net *net, uint64_t seed);
typedef enum at_init_kind { AT_INIT_PYTORCH, AT_INIT_KAIMING_NORMAL, AT_INIT_XAVIER_UNIFORM } at_init_kind;
void at_net_init_with(at_net *net, at_init_kind kind, uint64_t seed);

/* Allocation phase: sizes every activation and workspace buffer for batches up to max_batch.
 * Forward/backward allocate nothing afterwards. Called implicitly by forward if too small. */
at_status at_net_reserve(at_net *net, int max_batch);

/* Train mode enables dropout and makes BatchNorm normalise with the batch's statistics and
 * update its running statistics; eval mode (the default) makes dropout the identity and
 * BatchNorm an affine map of its running statistics that changes nothing. */
void at_net_set_training(at_net *net, bool training);
bool at_net_is_training(const at_net *net);
/* Seeds the network's own generator (dropout masks). */
void at_net_seed(at_net *net, uint64_t seed);

/* Forward pass over n samples laid out as n x (c*h*w) floats. *logits (if not NULL) receives a
 * pointer, valid until the next call, to n x at_net_out_size() outputs. */
at_status at_net_forward(at_net *net, const float *x, int n, const float **logits);

/* Eval-mode forward for evaluation only: the same logits as at_net_forward, bit for bit, but
 * no activation is kept for a backward pass, so a few short-lived buffers serve the whole
 * network (resnet8 at batch 256: 38 MB instead of 148), taken from the activations of an
 * earlier training or attack pass when they are large enough. at_net_backward afterwards fails.
 * AT_ERR_ARG in training mode. *logits: n x at_net_out_size(), valid until the next call. */
at_status at_net_predict(at_net *net, const float *x, int n, const float **logits);

enum {
    AT_GRAD_PARAMS = 1, /* accumulate (+=) parameter gradients into at_net_grads() */
    AT_GRAD_INPUT = 2   /* write the input gradient into dx */
};
/* Backward pass for the last forward: dlogits is n x out_size. With AT_GRAD_INPUT, dx (n x in_size)
 * receives dLoss/dx. Without AT_GRAD_PARAMS no parameter gradient is computed (attacks). */
at_status at_net_backward(at_net *net, const float *dlogits, int flags, float *dx);

/* Called by at_net_input_gradient for samples [begin, end): reads their rows of logits (n x
 * out_size, the whole batch's array) and writes their rows of dlogits. Runs on the library's
 * threads, several chunks at once: touch only those rows (and per-sample state of your own). */
typedef void (*at_chunk_loss_fn)(void *user, const float *logits, int begin, int end, float *dlogits);
/* An attack step in one pass: for each chunk of samples the forward, `loss`, and the input
 * gradient into dx (n x in_size), one thread per chunk without waiting for the others, while the
 * chunk's activations are still in that core's cache. Eval mode only (AT_ERR_ARG otherwise): the
 * same bits as at_net_forward, the loss over all rows, then at_net_backward(AT_GRAD_INPUT).
 * dlogits: n x out_size floats. *logits (if not NULL) as at_net_forward's. */
at_status at_net_input_gradient(at_net *net, const float *x, int n, at_chunk_loss_fn loss, void *user,
                                float *dlogits, float *dx, const float **logits);

int at_net_in_size(const at_net *net);  /* c*h*w */
int at_net_out_size(const at_net *net);
void at_net_in_shape(const at_net *net, int *c, int *h, int *w);
int at_net_num_layers(const at_net *net);
const at_layer_desc *at_net_layer(const at_net *net, int i);
/* Output shape of layer i for one sample. */
void at_net_layer_out_shape(const at_net *net, int i, int *c, int *h, int *w);
/* The layers layer i reads, as its description names them (src[k] = -1: the network input;
 * src[1] = -1 when it reads one); returns how many it reads (1, or 2 for an Add). */
int at_net_layer_inputs(const at_net *net, int i, int src[2]);
/* A short human-readable description of the architecture, like PyTorch's print(model). */
at_status at_net_describe(const at_net *net, char *buf, size_t cap);
/* PyTorch's print(model) wording for layer i alone, e.g. "Conv2d(1, 6, kernel_size=5, ...)". */
at_status at_net_describe_layer(const at_net *net, int i, char *buf, size_t cap);
/* The spec the network was built from (built-in name or custom spec): the architecture model
 * files record. at_net_create leaves it empty; at_net_set_spec sets it (for a network built
 * from layer descriptions that some spec also describes, e.g. one with dropout added). */
const char *at_net_spec(const at_net *net);
at_status at_net_set_spec(at_net *net, const char *spec);

size_t at_net_num_params(const at_net *net);
float *at_net_params(at_net *net);
float *at_net_grads(at_net *net);
void at_net_zero_grad(at_net *net);
int at_net_num_tensors(const at_net *net);
const at_param_info *at_net_tensor(const at_net *net, int i);
const at_param_info *at_net_find_tensor(const at_net *net, const char *name);
/* Buffers: state that is saved with the model but never trained (BatchNorm's running_mean,
 * running_var and num_batches_tracked): views into at_net_buffers(), named as PyTorch's
 * state_dict names them. Optimizers, weight decay and penalties never touch them. */
int at_net_num_buffers(const at_net *net);
const at_param_info *at_net_buffer(const at_net *net, int i);
const at_param_info *at_net_find_buffer(const at_net *net, const char *name);
float *at_net_buffers(at_net *net);
size_t at_net_num_buffer_floats(const at_net *net);
/* BatchNorm layers whose running statistics were never trained (num_batches_tracked == 0): in
 * eval mode they normalise with their initial mean 0 and variance 1, so accuracy and
 * robustness measured on them mean little. Returns the count; *first (if not NULL) receives the
 * first one's buffer name ("layer1.bn1.num_batches_tracked"). */
int at_net_untrained_statistics(const at_net *net, const char **first);

/* ---------------------------------------------------------------- losses */

/* Softmax cross-entropy (fused, log-sum-exp stable), mean over the batch, PyTorch semantics.
 * label_smoothing in [0,1): target = (1-e)*onehot + e/K. dlogits (may be NULL) receives
 * dLoss/dlogits. correct (may be NULL) receives the number of argmax hits. */
at_status at_cross_entropy(const float *logits, const int32_t *labels, int n, int k,
                           float label_smoothing, float *loss, float *dlogits, int *correct);
/* Mean squared error over all n*k elements (PyTorch MSELoss 'mean'). */
at_status at_mse(const float *pred, const float *target, int n, int k, float *loss, float *dpred);
/* Index of the largest of k values (first on ties). */
int at_argmax(const float *v, int k);
/* Cross-entropy against soft targets (n x k, each row a distribution): mean over the batch of
 * -sum_j t_j log softmax(z)_j, as PyTorch's cross_entropy with probability targets. Mixup uses
 * it; one-hot or smoothed one-hot rows give at_cross_entropy's values. correct (may be NULL):
 * samples whose logit argmax is the target's argmax. */
at_status at_cross_entropy_soft(const float *logits, const float *targets, int n, int k,
                                float *loss, float *dlogits, int *correct);

/* ---------------------------------------------------------------- optimizers */

typedef enum at_optim_kind {
    AT_OPTIM_SGD,
    AT_OPTIM_ADAM,
    AT_OPTIM_ADAMW /* torch.optim.AdamW: Adam with decoupled weight decay (default 0.01) */
} at_optim_kind;

typedef struct at_optim_config {
    at_optim_kind kind;
    float lr;
    float momentum;     /* SGD */
    float dampening;    /* SGD (PyTorch default 0) */
    bool nesterov;      /* SGD */
    float beta1, beta2; /* Adam (0.9, 0.999) */
    float eps;          /* Adam (1e-8) */
    float weight_decay; /* coupled: g += wd*w (PyTorch SGD/Adam semantics) */
    bool decoupled;     /* decay w -= lr*wd*w before the update instead (AdamW; SGDW for SGD).
                         * Always on for AT_OPTIM_ADAMW. The decay is multiplied by lr. */
} at_optim_config;

at_optim_config at_optim_defaults(at_optim_kind kind);

typedef struct at_optim at_optim;
at_status at_optim_create(at_optim **out, at_net *net, const at_optim_config *cfg);
void at_optim_free(at_optim *opt);
/* One update of every parameter from the gradient buffer. */
at_status at_optim_step(at_optim *opt);
void at_optim_set_lr(at_optim *opt, float lr);
float at_optim_lr(const at_optim *opt);
const at_optim_config *at_optim_get_config(const at_optim *opt);
/* The optimizer state as one buffer (momentum / moments), for checkpoints. */
float *at_optim_state(at_optim *opt, size_t *count);
int64_t at_optim_steps(const at_optim *opt);

/* ---------------------------------------------------------------- regularization */

/* Which parameter tensors a penalty, weight decay, proximal step or constraint covers.
 * layers: NULL, "" or "all" selects every layer with weights; otherwise a comma-separated list
 * whose items are layer names (the module name of the parameters: "fc1", "3") or layer kinds
 * ("linear", "conv"). Biases are covered only when bias is true (Keras's default: weights only;
 * PyTorch's optimizers decay everything unless told otherwise). A NULL selection means every
 * weight, no bias. */
typedef struct at_reg_select {
    const char *layers;
    bool bias;
} at_reg_select;

/* AT_ERR_ARG (naming the culprit) if sel names a layer the network lacks, a layer without
 * parameters, or selects nothing at all. */
at_status at_reg_check(const at_net *net, const at_reg_select *sel);
/* Whether parameter tensor i (at_net_tensor) is selected. */
bool at_reg_selected(const at_net *net, const at_reg_select *sel, int tensor);

/* Penalties, named after the tutorial's functions. *penalty (may be NULL) receives the value to
 * add to the loss; the gradient is added (+=) into at_net_grads(), so call them after backward:
 *   L1: lambda * sum |w|    gradient lambda * sign(w)  (sign(0) = 0, torch.abs's subgradient)
 *   L2: lambda * sum w^2    gradient 2 * lambda * w    (no 1/2: L2 lambda = weight_decay 2*lambda)
 * Elastic net is both in one pass. */
at_status at_l1_regularization(at_net *net, const at_reg_select *sel, float lambda, float *penalty);
at_status at_l2_regularization(at_net *net, const at_reg_select *sel, float lambda, float *penalty);
at_status at_elastic_net_regularization(at_net *net, const at_reg_select *sel, float l1, float l2,
                                        float *penalty);
/* Proximal L1 step (soft-thresholding), after an optimizer step:
 * w = sign(w) * max(|w| - threshold, 0), with threshold = lr * lambda. Gives exact zeros. */
at_status at_prox_l1(at_net *net, const at_reg_select *sel, float threshold);
/* Max-norm constraint (Keras MaxNorm(c, axis=0)), after an optimizer step: each unit's incoming
 * weight vector (a row of a Linear weight (out, in); an output filter of a conv weight) whose L2
 * norm exceeds c is scaled by c / (norm + 1e-7). Biases are never touched. */
at_status at_max_norm(at_net *net, const at_reg_select *sel, float c);
/* Gradient clipping by global norm (torch.nn.utils.clip_grad_norm_): the L2 norm of all
 * gradients together; every gradient is scaled by max_norm / (norm + 1e-6) when that is < 1.
 * *norm (may be NULL) receives the norm before clipping; AT_ERR_NAN if it is not finite. */
at_status at_clip_grad_norm(at_net *net, float max_norm, float *norm);
/* Restricts the optimizer's weight decay (coupled or decoupled) to the selected tensors
 * (NULL: every parameter again, torch.optim's behaviour and the default). */
at_status at_optim_set_decay_select(at_optim *opt, const at_reg_select *sel);

/* Size and sparsity of one parameter tensor, for reports. */
typedef struct at_tensor_stats {
    size_t count;  /* values */
    double l1;     /* sum |w| */
    double l2;     /* sqrt(sum w^2) */
    size_t zeros;  /* values exactly 0 */
    float max_abs;
} at_tensor_stats;
void at_tensor_stats_of(const at_net *net, int tensor, at_tensor_stats *out);

/* ---------------------------------------------------------------- learning-rate schedules */

typedef enum at_schedule_kind {
    AT_SCHEDULE_CONSTANT,
    AT_SCHEDULE_STEP,     /* StepLR: base * gamma^floor(t / step_size); t in epochs */
    AT_SCHEDULE_COSINE,   /* CosineAnnealingLR: min + (base-min)(1 + cos(pi t / T_max))/2; epochs */
    AT_SCHEDULE_ONECYCLE, /* OneCycleLR(anneal 'linear', cycle_momentum False); t in batches */
    AT_SCHEDULE_PLATEAU   /* ReduceLROnPlateau ('rel' threshold); observed once per epoch */
} at_schedule_kind;

typedef struct at_schedule_config {
    at_schedule_kind kind;
    int step_size;          /* step: epochs between decays (at_train: 0 = a third of the epochs) */
    float gamma;            /* step: decay factor (0.1) */
    int t_max;              /* cosine: period (0 = the run's length) */
    float min_lr;           /* cosine: eta_min; plateau: min_lr (0) */
    float pct_start;        /* onecycle: fraction of the steps spent rising (0.3) */
    float div_factor;       /* onecycle: starting lr = peak / div_factor (25) */
    float final_div_factor; /* onecycle: final lr = starting lr / final_div_factor (1e4) */
    float factor;           /* plateau: lr *= factor on a plateau (0.1) */
    int patience;           /* plateau: epochs without improvement tolerated (10) */
    float threshold;        /* plateau: relative improvement that counts (1e-4) */
    int cooldown;           /* plateau: epochs to wait after a reduction (0) */
} at_schedule_config;

at_schedule_config at_schedule_defaults(at_schedule_kind kind);

/* A schedule in progress: a plain value, no allocation. */
typedef struct at_schedule {
    at_schedule_config cfg;
    float base_lr; /* the optimizer's lr; onecycle's peak */
    float lr;      /* the current learning rate */
    int total;     /* the run's length in the schedule's unit (cosine's default T_max, onecycle) */
    bool maximize; /* plateau: a larger metric is better */
    double best;
    int bad_epochs, cooldown_left;
} at_schedule;

at_status at_schedule_init(at_schedule *s, const at_schedule_config *cfg, float base_lr, int total,
                           bool maximize);
/* constant, step, cosine, onecycle: the learning rate for step t (0-based). */
float at_schedule_lr(at_schedule *s, int t);
/* plateau: reports the monitored metric after an epoch; returns the learning rate to use next. */
float at_schedule_observe(at_schedule *s, float metric);

/* ---------------------------------------------------------------- augmentation and noise */

typedef struct at_augment_config {
    bool flip;    /* horizontal flip with probability 1/2 (off by default: wrong for digits) */
    int crop_pad; /* > 0: random crop of the original size from the image zero-padded by crop_pad */
} at_augment_config;

/* Augments n images (c x h x w floats each) in place; one decision per image, image i's drawn
 * by at_rng_for_sample(key, index_base + i). */
void at_augment_batch(float *x, int n, int c, int h, int w, const at_augment_config *cfg,
                      uint64_t key, int64_t index_base);
/* Adds N(0, std^2) noise to the d values of each of n samples, sample i's drawn by
 * at_rng_for_sample(key, index_base + i); clip: clamp to [0, 1] afterwards (pixels). */
void at_gaussian_noise(float *x, int n, size_t d, float std, bool clip, uint64_t key, int64_t index_base);
/* Gamma(shape, 1) (Marsaglia-Tsang; shape < 1 by boosting) and Beta(a, b) = X / (X + Y). */
double at_rng_gamma(at_rng *r, double shape);
double at_rng_beta(at_rng *r, double a, double b);
/* Mixup (Zhang et al. 2018): out_x[i] = lam*x[i] + (1-lam)*x[perm[i]] over d values per sample,
 * and likewise out_t from t over k values (soft labels or regression targets; t may be NULL). */
void at_mixup(const float *x, const float *t, int n, int d, int k, float lam, const int32_t *perm,
              float *out_x, float *out_t);
/* Soft targets from labels: (1 - smoothing) * onehot + smoothing / k (PyTorch's label smoothing). */
void at_soft_targets(const int32_t *labels, int n, int k, float smoothing, float *t);

/* ---------------------------------------------------------------- data */

/* A dataset held in memory. Images stay as bytes and are scaled to [0,1] per batch; regression
 * data (synthetic) keeps float features and float targets. */
typedef struct at_dataset {
    int n;            /* samples */
    int c, h, w;      /* per-sample shape (vectors: c = features, h = w = 1) */
    int num_classes;  /* classification: number of classes; regression: 0 */
    int target_dim;   /* regression: target size; classification: 0 */
    uint8_t *images;  /* n*c*h*w bytes, or NULL */
    float *features;  /* n*c*h*w floats, or NULL */
    int32_t *labels;  /* n labels (classification), or NULL */
    float *targets;   /* n*target_dim (regression), or NULL */
} at_dataset;

/* A train/test pair with a human-readable name. */
typedef struct at_data {
    char name[64];
    at_dataset train;
    at_dataset test;
} at_data;

/* Loads a dataset from a source string:
 *   "fashion-mnist"   Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist)
 *   "mnist:DIR" "idx:DIR" "fashion-mnist:DIR"   IDX files (gzipped or not) in DIR
 *   "cifar10:DIR"     CIFAR-10 binary batches
 *   "synthetic"       the seed-mlp regression task (synthetic[:SEED] to vary the teacher)
 * A missing dataset fails with AT_ERR_IO and a message that says how to get it. */
at_status at_data_load(at_data *data, const char *source);
void at_data_free(at_data *data);

/* IDX files: images (idx3, uint8) and labels (idx1, uint8), gzipped or not. */
at_status at_idx_load(at_dataset *ds, const char *images_path, const char *labels_path);
/* CIFAR-10 binary: the five data_batch_*.bin (train) or test_batch.bin (test) in dir. */
at_status at_cifar10_load(at_dataset *ds, const char *dir, bool train);
/* The seed-mlp regression task: y = teacher(x) + noise, with a fixed random teacher. */
at_status at_synthetic_load(at_data *data, uint64_t seed);

/* Moves a seeded random fraction of `train` into `val` (frac in (0,1)). */
at_status at_dataset_split(at_dataset *train, at_dataset *val, float frac, uint64_t seed);
/* Keeps only the first n samples (n <= ds->n). */
at_status at_dataset_truncate(at_dataset *ds, int n);
/* Keeps only samples [first, first + n): one shard of an evaluation split across machines. */
at_status at_dataset_keep_range(at_dataset *ds, int first, int n);
void at_dataset_free(at_dataset *ds);
int at_dataset_sample_size(const at_dataset *ds); /* c*h*w */

/* Gathers samples idx[0..n) into x (n x c*h*w floats in [0,1]) and labels y (classification) or
 * targets t (regression, n x target_dim). y or t may be NULL when not wanted. */
void at_dataset_batch(const at_dataset *ds, const int32_t *idx, int n, float *x, int32_t *y,
                      float *t);
/* The same for the contiguous samples [first, first + n). */
void at_dataset_range(const at_dataset *ds, int first, int n, float *x, int32_t *y, float *t);

/* ---------------------------------------------------------------- safetensors */

/* The element types read and written (safetensors' names). */
typedef enum at_st_dtype { AT_ST_F32, AT_ST_I64, AT_ST_I32, AT_ST_I8 } at_st_dtype;

typedef struct at_st_tensor {
    char *name;
    int ndim;
    int64_t shape[8];
    size_t count;  /* number of elements */
    float *data;   /* F32 data (owned by the file object); I64 data converted to floats; NULL
                      for I8 and I32 */
    bool integer;  /* stored as I64 (PyTorch's num_batches_tracked) */
    at_st_dtype dtype;
    int32_t *ints; /* I8 and I32 data (int8 models), exact; NULL for F32 and I64 */
} at_st_tensor;

typedef struct at_st_meta {
    char *key;
    char *value;
} at_st_meta;

typedef struct at_st_file {
    int ntensors;
    at_st_tensor *tensors;
    int nmeta;
    at_st_meta *meta;
} at_st_file;

/* Reads and validates a safetensors file (F32 tensors, I64 ones converted to floats, exact up to
 * 2^24, and I8 and I32 ones as int32 values; header size, offsets, sizes and names are checked).
 * Errors name the file and what is wrong. */
at_status at_st_read(const char *path, at_st_file **out);
void at_st_free(at_st_file *f);
const at_st_tensor *at_st_find(const at_st_file *f, const char *name);
const char *at_st_meta_get(const at_st_file *f, const char *key);

/* A tensor to write: data points to count floats; integer: written as I64 (each float a whole
 * number, such as a counter). Or, when ints is set (data NULL), count int32 values written as I32,
 * or as I8 when int8 (each then in [-128, 127]). */
typedef struct at_st_entry {
    const char *name;
    int ndim;
    int64_t shape[8];
    const float *data;
    bool integer;
    const int32_t *ints;
    bool int8;
} at_st_entry;

/* Writes atomically (temp file in the same directory, fsync, rename). */
at_status at_st_write(const char *path, const at_st_entry *tensors, int ntensors,
                      const at_st_meta *meta, int nmeta);

/* Writes len bytes to path atomically (temporary file in the same directory, fsync, rename): a
 * reader, or a process killed mid-write, sees the old file or the new one, never a mix. */
at_status at_file_write_atomic(const char *path, const void *data, size_t len);

/* ---------------------------------------------------------------- model files */

/* Saves the network's parameters under their PyTorch names, with the architecture
 * ("advtrain.arch", "advtrain.input") and any extra metadata. */
at_status at_model_save(const at_net *net, const char *path, const at_st_meta *extra, int nextra);
/* Builds the network a model file describes and loads its weights. meta (may be NULL) receives
 * the file object (caller frees with at_st_free) for reading further metadata. */
at_status at_model_load(at_net **out, const char *path, at_st_file **meta);
/* Loads weights (e.g. written by PyTorch) into an existing network; every parameter must be
 * present with the right shape. Both fail with AT_ERR_NAN, naming the tensor, if a value is not
 * finite. */
at_status at_net_load_weights(at_net *net, const at_st_file *f, const char *path);


/* ---------------------------------------------------------------- adversarial attacks */

/* Attacks work on raw pixels in [0,1] with the network in eval mode (dropout off; the mode is
 * restored afterwards). Every adversarial example is projected onto the eps-ball around its clean
 * input, in the attack's norm, and onto [0,1]. eps is on the 0-1 pixel scale (8/255 = 0.0314).
 * Only samples classified correctly on the clean input are attacked; the others count as not
 * robust and are returned unchanged (attack_all attacks every sample, e.g. for training).
 * Deterministic for a seed and thread count: each sample draws from its own generator, seeded
 * from the seed and the sample's index, so results do not depend on the batch size. Workspaces
 * are allocated once per call; the attack steps allocate nothing. Gradients come from the
 * input-only backward pass (no parameter gradients). */

typedef enum at_attack_kind {
    AT_ATTACK_FGSM,   /* Goodfellow et al. 2015: one step of size eps along the gradient sign */
    AT_ATTACK_PGD,    /* Madry et al. 2018: random start, `steps` steps of size alpha, restarts */
    AT_ATTACK_APGD,   /* Croce & Hein 2020 Auto-PGD: CE or DLR loss; targeted DLR = APGD-T */
    AT_ATTACK_SQUARE, /* Andriushchenko et al. 2020: score-based random search (L-inf only) */
    AT_ATTACK_AUTO,   /* APGD-CE, APGD-T, then Square on the survivors: per-sample worst case */
    AT_ATTACK_KIND_COUNT
} at_attack_kind;

typedef enum at_attack_norm { AT_NORM_LINF, AT_NORM_L2 } at_attack_norm;

/* The loss an attack maximizes (z: logits, y: label, t: target class). */
typedef enum at_attack_loss {
    AT_ATTACK_LOSS_CE,  /* cross-entropy; targeted: minus the cross-entropy of t */
    AT_ATTACK_LOSS_CW,  /* Carlini-Wagner margin max_{j!=y} z_j - z_y; targeted: z_t - max_{j!=t} z_j */
    AT_ATTACK_LOSS_DLR  /* -(z_y - max_{j!=y} z_j) / (z_pi1 - z_pi3); targeted:
                           -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4)/2)  (pi: sorted order) */
} at_attack_loss;

typedef enum at_attack_target {
    AT_TARGET_NONE,         /* untargeted */
    AT_TARGET_GIVEN,        /* targets[i] for sample i */
    AT_TARGET_RANDOM,       /* a seeded random class other than the label */
    AT_TARGET_LEAST_LIKELY, /* the class with the lowest clean logit */
    AT_TARGET_TOP           /* each of the `target_classes` highest-scoring other classes in turn
                               (APGD-T); success = any misclassification */
} at_attack_target;

/* A communicator (docs/distributed.md): the ranks of a job that share work, supplied by the
 * caller (the advtrain tool's is Open MPI's; the library itself never links MPI). The library
 * only needs a sum over the ranks, in place, the same result on every rank: of doubles (counts,
 * statistics, gathered rows), and optionally of floats (the gradients of a training step, half
 * the bytes; NULL: they go through the double sum). */
typedef struct at_comm {
    int rank, size;
    at_status (*allreduce_sum)(void *user, double *buf, size_t count);
    void *user;
    at_status (*allreduce_sum_float)(void *user, float *buf, size_t count);
} at_comm;
/* This rank's share [*lo, *hi) of n items (samples of an evaluation, of a training batch):
 * rank r of s ranks takes [n r / s, n (r + 1) / s), contiguous and at most one item apart in
 * size; all of them without a communicator (NULL) or with one rank. */
void at_comm_share(const at_comm *comm, int n, int *lo, int *hi);

typedef struct at_attack_config {
    at_attack_kind kind;
    at_attack_norm norm;
    at_attack_loss loss;      /* FGSM / PGD / APGD */
    at_attack_target target;
    const int32_t *targets;   /* AT_TARGET_GIVEN: one class per sample */
    float eps;                /* radius on the 0-1 pixel scale */
    float alpha;              /* PGD step size; 0 = 2.5*eps/steps (Madry et al.) */
    int steps;                /* PGD / APGD iterations; Square: queries per sample */
    int restarts;             /* independent runs; a sample stays robust only if all fail */
    bool random_start;        /* PGD: uniform in the L-inf ball, uniform radius in the L2 ball */
    int target_classes;       /* AT_TARGET_TOP: how many classes (AutoAttack standard: 9) */
    float momentum;           /* APGD: 0.75 */
    float rho;                /* APGD: halve the step if fewer than rho*k of the last k steps
                                 raised the loss (0.75) */
    float p_init;             /* Square: initial fraction of pixels in a square (0.8) */
    int square_queries;       /* AT_ATTACK_AUTO: queries of its Square member (0 = 5000) */
    bool square_rescale;      /* Square: stretch the p schedule (written for 10000 queries) to
                                 `steps` queries, as the paper; false = AutoAttack's fixed one */
    bool attack_all;          /* also attack samples that are misclassified on clean inputs */
    bool last_iterate;        /* PGD (and CW): each sample's example is its last iterate
                                 (Madry et al., torchattacks); default false: the first
                                 iterate that fools the model, so a sample is robust only if
                                 no iterate fooled it (at least as strong, and fooled samples
                                 stop costing passes) */
    uint64_t seed;
    int batch;                /* samples attacked together (default 1000) */
    /* The global index of the first sample (default 0). Each sample's random draws (random
     * start, Square's search, random target) derive from (seed, index_base + its index), so a
     * shard of a split evaluation (eval --offset) draws for each sample what the whole run draws. */
    int64_t index_base;
    /* Optional (NULL: this process alone): with comm->size > 1 the n samples are split into one
     * contiguous share per rank, each rank attacks its own, and the results are summed over the
     * ranks, so that every rank returns the whole result (x_adv and adv_pred with every row).
     * Every rank must make the same call. */
    const at_comm *comm;
    /* Optional: called after each batch (and each ensemble member) with samples done so far. */
    void (*progress)(void *user, int done, int total);
    void *user;
    /* Optional (NULL: the network itself): the model under attack when it is not the network,
     * e.g. an int8 model (at_qnet_predict). Every forward pass goes to it (the clean pass, each
     * iterate's success check, Square's queries, the final judgement), while gradients come from
     * the network, which stands in for it (BPDA, Athalye et al. 2018). logits: n x K floats. */
    at_status (*forward)(void *forward_user, const float *x, int n, const float **logits);
    void *forward_user;
} at_attack_config;

/* Defaults per kind. FGSM: L-inf, CE. PGD: L-inf, CE, 20 steps, alpha 2.5*eps/steps, random start,
 * 1 restart. APGD: CE, 100 steps, 1 restart, momentum 0.75, rho 0.75. Square: 5000 queries,
 * p_init 0.8, margin loss. AUTO: AutoAttack "standard" (APGD-CE 100 steps; APGD-T 100 steps over
 * the top 9 classes; Square 5000 queries). eps is 0: set it. */
at_attack_config at_attack_defaults(at_attack_kind kind);
/* Sets *cfg to the defaults of a named attack: fgsm, fgsm-l2, pgd, pgd-l2, cw (PGD on the CW
 * margin), cw-l2, apgd-ce, apgd-dlr, apgd-t (targeted DLR over the top 9 classes), square, auto,
 * auto-l2. Unknown names fail with AT_ERR_ARG listing the valid ones. */
at_status at_attack_from_name(const char *name, at_attack_config *cfg);
/* The name of a configuration ("pgd", "apgd-t", ...). */
const char *at_attack_name(const at_attack_config *cfg);
/* Every name at_attack_from_name knows, comma-separated (for help texts and messages). */
void at_attack_names(char *buf, size_t cap);
/* The checks at_attack_run makes on a configuration, for a classifier with num_classes outputs,
 * without running it (the targets array of AT_TARGET_GIVEN is checked against the samples when
 * the attack runs). resolved (may be NULL) receives cfg with the defaults of its unset fields
 * filled in, as the attack would run it. */
at_status at_attack_check(const at_attack_config *cfg, int num_classes, at_attack_config *resolved);
/* Sets the budget from the two numbers a front end asks for (0 keeps the kind's): iterations,
 * the steps of the iterative attacks (FGSM keeps its single step, Square takes none), and
 * queries, the budget of the score-based search (Square's steps, auto's square_queries). */
void at_attack_set_budget(at_attack_config *cfg, int iterations, int queries);
/* The budget of a resolved configuration (at_attack_check) in a few characters: "20" (steps),
 * "9x100" (top classes x steps), "5000q" (queries), "100+9x100+5000q" (auto's members). */
void at_attack_budget_text(const at_attack_config *cfg, char *buf, size_t cap);
/* Whether the kind follows input gradients (all but Square): gradient masking shows in them. */
bool at_attack_uses_gradients(at_attack_kind kind);

#define AT_ATTACK_MAX_MEMBERS 4
typedef struct at_attack_member {
    char name[16];
    int robust;     /* samples still robust after this member and the ones before it */
    double seconds;
} at_attack_member;

typedef struct at_attack_result {
    int samples;
    int clean_correct;
    int robust;             /* correct on the clean input and on its adversarial example */
    int targeted;           /* samples attacked towards one target class */
    int target_hits;        /* ... whose adversarial example is classified as the target */
    int steps, restarts;    /* settings used (defaults resolved) */
    float alpha;
    double seconds;
    int64_t forwards, backwards; /* per-sample forward and backward passes (queries) */
    /* Sanity measurements over every returned example: */
    float max_perturbation; /* largest ||x_adv - x|| in the attack's norm */
    int outside_ball;       /* examples with ||x_adv - x|| > eps (beyond float rounding) */
    int64_t outside_box;    /* pixels outside [0,1] */
    int zero_grad;          /* attacked samples whose first input gradient was exactly zero */
    int nonfinite;          /* attacked samples that met a NaN or infinite loss or gradient */
    int nmembers;           /* AT_ATTACK_AUTO: the members, in order */
    at_attack_member members[AT_ATTACK_MAX_MEMBERS];
} at_attack_result;

/* Attacks n samples x (n x at_net_in_size floats in [0,1]) with labels y. x_adv (may be NULL)
 * receives the adversarial examples, adv_pred (may be NULL) the network's predictions on them. */
at_status at_attack_run(at_net *net, const at_attack_config *cfg, const float *x, const int32_t *y,
                        int n, float *x_adv, int32_t *adv_pred, at_attack_result *res);
/* The same over the first n samples of a classification dataset (n <= 0: all), converting
 * pixels batch by batch. x_adv and adv_pred may be NULL. */
at_status at_attack_dataset(at_net *net, const at_attack_config *cfg, const at_dataset *ds, int n,
                            float *x_adv, int32_t *adv_pred, at_attack_result *res);

/* ---------------------------------------------------------------- sanity checks */

/* One attack run of a robustness evaluation: its configuration and its result. */
typedef struct at_sanity_run {
    at_attack_config cfg;
    at_attack_result res;
} at_sanity_run;

/* One check: its name (stable: "eps0_equals_clean", "inside_ball_and_box", "monotone_in_eps",
 * "pgd_below_fgsm", "ensemble_not_weaker", "gradients_nonzero_finite", "square_not_stronger",
 * "unbounded_eps_breaks_model", "batchnorm_statistics_trained"), whether it passed, and one
 * sentence with the numbers (the first failure, or what was compared). */
typedef struct at_sanity_check {
    const char *name;
    bool passed;
    char detail[512];
} at_sanity_check;

#define AT_SANITY_MAX_CHECKS 16
typedef struct at_sanity_report {
    int nchecks, passed, failed;
    at_sanity_check checks[AT_SANITY_MAX_CHECKS];
} at_sanity_report;

/* The sanity checks of docs/robustness.md on the attack runs an evaluation made on the first n
 * samples of ds (n <= 0: all), of which clean_correct are classified correctly. With extra_runs,
 * a few cheap runs complete them: each attack at eps 0 (at most 5 iterations, 50 queries), FGSM
 * at each PGD run's eps when none was made, and PGD-10 at eps 1. A check with nothing to compare
 * is left out of the report. The model is left as it was. Fails only when an extra run fails. */
at_status at_robustness_sanity(at_net *net, const at_dataset *ds, int n, int clean_correct,
                               const at_sanity_run *runs, int nruns, bool extra_runs,
                               at_sanity_report *report);

/* ---------------------------------------------------------------- certified bounds */

/* Interval bounds (IBP, Gowal et al. 2018) of the outputs of n inputs whose features lie in
 * [lo, hi] (n x at_net_in_size each): every output any such input produces in eval mode lies in
 * [out_lo, out_hi] (n x at_net_out_size), up to float rounding. Runs in eval mode whatever the
 * network's mode (restored) and changes nothing in it. AT_ERR_ARG if a bound is NaN or lo > hi
 * somewhere, or if a layer kind has no bound rule (naming it). */
at_status at_net_interval_bounds(at_net *net, const float *lo, const float *hi, int n, float *out_lo,
                                 float *out_hi);

/* How margins are bounded. IBP: interval bounds, with a final Linear layer folded into the
 * margin (Gowal et al.'s elision, tighter than the difference of two logit intervals).
 * CROWN_IBP: the margins' linear bounds propagated backward through the network (CROWN, Zhang
 * et al. 2018), each ReLU relaxed with the interval bounds of its input (CROWN-IBP, Zhang et
 * al. 2020); at least as tight as IBP's on ReLU networks in most cases, never claimed tighter:
 * take the larger of the two where both hold. CROWN-IBP needs piecewise-linear networks (no max
 * pooling, Tanh, Sigmoid or LeakyReLU: AT_ERR_ARG naming the layer). CROWN: the same with
 * the bounds each ReLU is relaxed with computed by CROWN as well (from that ReLU's input back to
 * the network's input, in order), as auto_LiRPA's method "CROWN": tighter than CROWN_IBP in
 * most cases, and one backward pass per neuron of every ReLU's input: far slower (one sample per
 * chunk). */
typedef enum at_bound_method { AT_BOUND_IBP, AT_BOUND_CROWN_IBP, AT_BOUND_CROWN } at_bound_method;
/* "ibp", "crown-ibp", "crown"; AT_ERR_ARG names the valid ones. */
at_status at_bound_method_from_name(const char *name, at_bound_method *method);
const char *at_bound_method_name(at_bound_method method);

/* Lower bounds of the margins z_y - z_j of a classifier over the L-inf ball of radius eps around
 * each of n inputs x, clipped to the pixel box [0,1]: margins is n x K (K = at_net_out_size),
 * +inf at j = y. A sample whose margins are all > 0 is verified: no input of the ball changes
 * its prediction. */
at_status at_net_margin_bounds(at_net *net, const float *x, const int32_t *y, int n, float eps,
                               at_bound_method method, float *margins);

/* The IBP training loss (Gowal et al. 2018): the mean over n samples of the cross-entropy of
 * the worst-case logits over each sample's eps-ball (clipped to [0,1]): z_wc[j] = -(lower bound
 * of z_y - z_j), z_wc[y] = 0. Adds weight * dloss/dparams to the gradient buffer (as
 * at_adversarial_loss does), returns the loss and, in verified (may be NULL), the samples whose
 * margin bounds are all > 0. The bounds are those of at_net_margin_bounds (AT_BOUND_IBP), in
 * eval mode. The network must end with a Linear layer and have no BatchNorm (AT_ERR_ARG). */
at_status at_ibp_loss(at_net *net, const float *x, const int32_t *y, int n, float eps, float weight, float *loss,
                      int *verified);
/* The CROWN-IBP training loss (Zhang et al. 2020): as at_ibp_loss, with each margin's lower bound
 * beta * (its CROWN-IBP bound, at_net_margin_bounds' AT_BOUND_CROWN_IBP) + (1 - beta) * (its IBP
 * bound), beta in [0, 1] (a mix of two lower bounds is one). The gradient goes back through both
 * bound passes, the CROWN-IBP ReLU relaxations' dependence on the interval bounds included.
 * beta > 0 also needs a piecewise-linear network (no max pooling, Tanh, Sigmoid, LeakyReLU). */
at_status at_certified_loss(at_net *net, const float *x, const int32_t *y, int n, float eps, float beta, float weight,
                            float *loss, int *verified);

/* Verified (certified) accuracy of a classifier at L-inf radius eps over the first n samples of
 * ds (n <= 0: all): a sample counts when it is classified correctly and every margin bound of
 * at_net_margin_bounds is > 0, so that no input of its eps-ball changes the prediction. */
typedef struct at_verify_result {
    int samples, clean_correct, verified;
    double seconds;
} at_verify_result;
at_status at_verify_dataset(at_net *net, const at_dataset *ds, int n, float eps, at_bound_method method,
                            at_verify_result *res);

/* ---------------------------------------------------------------- int8 inference */

/* A network quantized to int8 (docs/quantization.md), the scheme of TensorFlow Lite Micro and
 * CMSIS-NN: weights int8 symmetric per output channel, activations int8 per tensor (asymmetric),
 * int32 biases, requantization by fixed-point multipliers; BatchNorm folded into the Conv2d or
 * Linear it follows; integer arithmetic only. */
typedef struct at_qnet at_qnet;
typedef struct at_quant_config {
    /* Activation ranges: 100 (or 0, the default) takes each tensor's smallest and largest value
     * in the calibration pass; below 100 (at least 50), its percentiles: the lowest and highest
     * (100 - percentile) percent of its values are clipped (e.g. 99.99). */
    float percentile;
} at_quant_config;
/* Post-training quantization: each tensor's range comes from the values the float network (eval
 * mode) produces on the n calibration samples calib (cfg may be NULL: min and max); inputs in
 * [0, 1] get scale 1/255 and zero point -128 (every 8-bit pixel exactly). The weights are read
 * now; net provides the shapes and must outlive the result. AT_ERR_ARG for a layer with no int8
 * kernel (Tanh, Sigmoid, LeakyReLU) or a percentile out of range, AT_ERR_NAN for a non-finite
 * value in the calibration pass. */
at_status at_quantize(at_qnet **out, at_net *net, const float *calib, int n, const at_quant_config *cfg);
void at_qnet_free(at_qnet *q);
/* The tensors of net with an activation range trained by QAT (at_train_config.qat, or read
 * from a model file's advtrain.qat metadata): at_quantize takes those ranges instead of
 * calibrating them. 0 when there are none. */
int at_net_qat_ranges(const at_net *net);
/* The int8 logits of n samples (n x at_net_out_size; valid until the next call): the inputs are
 * quantized with the input tensor's parameters, then every layer runs in integers. */
at_status at_qnet_forward(at_qnet *q, const float *x, int n, const int8_t **logits);
/* The logits' parameters: real = (q - zero_point) * scale. */
void at_qnet_output_params(const at_qnet *q, float *scale, int32_t *zero_point);
/* at_qnet_forward's logits dequantized to floats. */
at_status at_qnet_predict(at_qnet *q, const float *x, int n, const float **logits);
/* Clean accuracy of the int8 model on a classification dataset (batch: samples per call, <= 0:
 * 256): samples and accuracy in r, the rest 0 (the loss of dequantized logits means little). */
struct at_eval_result;
at_status at_qnet_evaluate(at_qnet *q, const at_dataset *ds, int batch, struct at_eval_result *r);
/* The float network whose graph and shapes q runs (its parameters are not q's). */
const at_net *at_qnet_net(const at_qnet *q);
/* int8 model files (docs/quantization.md): safetensors with I8 weights and I32 biases,
 * multipliers and shifts, and F32/I32 tensor scales and zero points, marked by the metadata
 * advtrain.format = "int8" (plus the caller's meta). Written atomically. at_qnet_load checks every
 * value the kernels rely on and names the tensor otherwise; meta (may be NULL) receives the file
 * for its metadata (at_st_free it). A float model file is refused (AT_ERR_FORMAT). */
at_status at_qnet_save(const at_qnet *q, const char *path, const at_st_meta *meta, int nmeta);
at_status at_qnet_load(at_qnet **out, const char *path, at_st_file **meta);

/* ---------------------------------------------------------------- C export */

/* Writes the network as standalone C99 for microcontrollers (docs/export.md): DIR/PREFIX.h and
 * DIR/PREFIX.c, with the parameters as static const float arrays and one inference function,
 * PREFIX_forward (caller-provided scratch, reentrant) plus PREFIX_predict (static buffers). No
 * allocation, no dependency beyond <math.h> for Tanh/Sigmoid. Files are written atomically; DIR
 * is created if missing (not its parents). AT_ERR_ARG if prefix is not a C identifier, AT_ERR_IO
 * naming the path if DIR cannot be written, AT_ERR_NAN if a parameter is not finite. */
at_status at_export_c(const at_net *net, const char *dir, const char *prefix);

/* The float network as an ONNX model file (docs/export.md): IR 7, opset 13, one node per layer
 * of the spec's graph (Conv, Gemm, BatchNormalization in eval form, pooling, Add, activations),
 * initializers with PyTorch's names, input "input" (batch x C x H x W), output "logits". Written
 * atomically. AT_ERR_ARG for a layer with no ONNX form. */
at_status at_export_onnx(const at_net *net, const char *path);
/* The int8 network as an ONNX model in QuantizeLinear/DequantizeLinear form (docs/export.md):
 * int8 weights with per-channel scales, int32 biases, each tensor's scale and zero point around
 * the float operators; input "input" (float), output "logits" (the dequantized int8 logits). */
at_status at_qnet_export_onnx(const at_qnet *q, const char *path);

/* The int8 network as standalone C99 with integer arithmetic only (docs/export.md): DIR/PREFIX.c
 * (the library's own int8 kernels, the constants as const arrays, PREFIX_forward on int8 input
 * with a caller-provided scratch, PREFIX_quantize_input, PREFIX_predict with static buffers) and
 * DIR/PREFIX.h; no allocation, no library. With ngolden > 0, also DIR/PREFIX_golden.c: those
 * samples (golden: ngolden float inputs) as int8 inputs, the library's int8 logits for them and
 * PREFIX_golden_check(), which counts the samples whose exported logits differ in any bit.
 * All files written atomically, together; errors as at_export_c. info (may be NULL) receives
 * the figures below. */
typedef struct at_int8_export_info {
    size_t const_bytes;   /* weights, biases, multipliers, shifts and layer tables (32-bit target) */
    size_t scratch_bytes; /* working memory of one inference (PREFIX_SCRATCH_BYTES) */
    uint64_t macs;        /* multiply-accumulates per inference (Conv2d, Linear, BatchNorm) */
    int layers;           /* kernel calls per inference */
} at_int8_export_info;
at_status at_qnet_export_c(at_qnet *q, const char *dir, const char *prefix, const float *golden, int ngolden,
                           at_int8_export_info *info);

/* ---------------------------------------------------------------- adversarial training */

/* Buffers for crafting adversarial examples during training (made once per run, so training
 * steps allocate nothing). */
typedef struct at_adv_workspace at_adv_workspace;
at_status at_adv_workspace_create(at_adv_workspace **out, at_net *net, int max_batch);
void at_adv_workspace_free(at_adv_workspace *ws);

/* Crafts adversarial examples of x (n samples, labels y, optional soft targets n x K for
 * mixup/label smoothing) with an FGSM or PGD configuration (at_attack_defaults: eps, alpha,
 * steps, norm, random_start, CE or CW loss). The network is in eval mode while crafting (its mode
 * is restored). Every sample runs every step. Sample i's random start is drawn from
 * (attack->seed, attack->index_base + i), as an evaluation attack draws it: at_train sets them
 * from the run's seed and epoch and the sample's index in the epoch, so a sample starts from the
 * same point whatever batch, thread or process crafts it. *x_adv points into the workspace. */
at_status at_adv_craft(at_net *net, at_adv_workspace *ws, const at_attack_config *attack,
                       const float *x, const int32_t *y, const float *soft, int n,
                       const float **x_adv);

/* The tutorial's adversarial_loss: crafts adversarial examples of the batch, then runs the
 * network (in its current mode) on them and returns their cross-entropy in *loss, adding
 * weight * dLoss/dparams to the gradient buffer. So a loop writes
 *     loss = clean_loss + lambda * adversarial_loss
 * as at_clean_loss(..., 1, ...) + at_adversarial_loss(..., lambda, ...). correct (may be NULL)
 * counts argmax hits on the adversarial examples. */
at_status at_adversarial_loss(at_net *net, at_adv_workspace *ws, const at_attack_config *attack,
                              const float *x, const int32_t *y, const float *soft, int n,
                              float weight, float *loss, int *correct);
/* The clean counterpart: cross-entropy on x, weight * gradient added. */
at_status at_clean_loss(at_net *net, at_adv_workspace *ws, const float *x, const int32_t *y,
                        const float *soft, int n, float weight, float *loss, int *correct);

/* TRADES (Zhang et al. 2019): CE(f(x), y) + beta * KL(f(x) || f(x_adv)), mean over the batch,
 * x_adv maximizing the KL by inner->steps signed steps of size inner->alpha in the L-inf
 * inner->eps-ball from x + 0.001 N(0,1) (eval mode while crafting; sample i's noise drawn from
 * (inner->seed, inner->index_base + i)). Gradients flow through both terms; weight * dLoss/dparams
 * is added to the gradient buffer. */
at_status at_trades_loss(at_net *net, at_adv_workspace *ws, const at_attack_config *inner, float beta,
                         const float *x, const int32_t *y, const float *soft, int n, float weight,
                         float *loss, int *correct);

/* Free adversarial training (Shafahi et al. 2019): one replay of a minibatch. Forward/backward on
 * clamp(x + delta) in training mode gives the parameter gradient and, from the same pass, the
 * input gradient that moves delta by eps * sign(g) (clipped to the eps-ball). delta persists
 * across replays and minibatches; at_free_reset zeroes it. */
at_status at_free_replay(at_net *net, at_adv_workspace *ws, float eps, const float *x,
                         const int32_t *y, const float *soft, int n, float *loss, int *correct);
void at_free_reset(at_adv_workspace *ws);

/* ---------------------------------------------------------------- training and evaluation */

/* Accuracy (classification) or mean squared error (regression) of a network on a dataset, in
 * eval mode. */
typedef struct at_eval_result {
    int samples;
    float loss;     /* mean cross-entropy, or MSE */
    float accuracy; /* fraction correct (classification), else 0 */
    float mse;      /* regression, else 0 */
} at_eval_result;

/* A loss that is not finite (a diverging run's logits overflow) is reported as such, with the
 * accuracy still counted: it is not an error. */
at_status at_evaluate(at_net *net, const at_dataset *ds, int batch, at_eval_result *out);
/* The figure of merit reported for a dataset: accuracy for classification, MSE for regression. */
float at_eval_metric(const at_dataset *ds, const at_eval_result *r);

/* Adversarial training inside at_train. Each batch's gradient comes from the method:
 *   fgsm     Goodfellow et al. 2015: clean_weight*CE(x) + (1-clean_weight)*CE(FGSM(x)), no
 *            random start, step eps (the tutorial's recipe);
 *   fgsm-rs  Wong et al. 2020: CE on FGSM from a uniform random start, step alpha = 1.25 eps,
 *            guarded against catastrophic overfitting (see guard below);
 *   pgd      Madry et al. 2018: CE on PGD (steps of alpha, random start), L-inf or L2;
 *   trades   Zhang et al. 2019: CE(x) + beta*KL(f(x) || f(x_adv)), x_adv maximizing the KL;
 *   free     Shafahi et al. 2019: each batch replayed `replays` times, one optimizer step per
 *            replay, the perturbation updated from the same backward pass (an epoch then costs
 *            `replays` plain epochs: divide the epochs by it to compare at equal cost).
 * Crafting runs in eval mode. eps ramps linearly from 0 over warmup_epochs. With a validation
 * set, PGD robust accuracy on it is measured every epoch and the best epoch's weights are kept
 * (robust overfitting). */
typedef enum at_adv_method {
    AT_ADV_NONE = 0,
    AT_ADV_FGSM,
    AT_ADV_FGSM_RS,
    AT_ADV_PGD,
    AT_ADV_TRADES,
    AT_ADV_FREE
} at_adv_method;

typedef struct at_adv_train_config {
    at_adv_method method;
    at_attack_norm norm;     /* pgd: L-inf or L2; the others are L-inf */
    float eps;               /* 0-1 pixel scale */
    float alpha;             /* step; 0 = the method's default (fgsm eps, fgsm-rs 1.25 eps,
                                pgd 2.5 eps/steps, trades 0.25 eps) */
    int steps;               /* pgd (default 7) and trades (default 10) inner steps */
    float clean_weight;      /* fgsm: weight of the clean loss (0.5) */
    float beta;              /* trades: weight of the KL term (6) */
    int replays;             /* free: m (default 8) */
    int warmup_epochs;       /* eps ramps linearly from 0 over these epochs (0: none) */
    int robust_val_steps;    /* PGD steps of the per-epoch robust validation (default 10) */
    int robust_val_samples;  /* validation samples it attacks (default 1000) */
    bool keep_best;          /* restore the epoch with the best robust validation accuracy
                                (default true when a validation set exists) */
    bool guard;              /* fgsm-rs: check for catastrophic overfitting each epoch (default on) */
    int guard_samples;       /* held-out batch of the guard (default 512: from the validation set,
                                else the first training samples) */
} at_adv_train_config;

/* Defaults for a method at a given eps (the values above). */
at_adv_train_config at_adv_train_defaults(at_adv_method method, float eps);
/* "fgsm", "fgsm-rs", "pgd", "trades", "free" (and "none"); AT_ERR_ARG names the valid ones. */
at_status at_adv_method_from_name(const char *name, at_adv_method *method);
const char *at_adv_method_name(at_adv_method method);

/* What early stopping and the plateau schedule watch: the validation loss (Keras's default) or
 * the validation metric (accuracy, higher is better; MSE, lower is better). Without a validation
 * set the plateau schedule watches the training loss or metric. */
typedef enum at_monitor { AT_MONITOR_VAL_LOSS, AT_MONITOR_VAL_METRIC } at_monitor;

/* Checkpoints. With dir set, at_train rewrites DIR/last.safetensors after every epoch with the
 * weights and everything needed to continue: optimizer state, RNG states, epoch and step,
 * schedule, early-stopping and adversarial-training state. DIR/best.safetensors is rewritten
 * whenever the epoch is the best so far: by robust validation accuracy when adversarial training
 * measures it, else by the validation value early stopping monitors (no best file without a
 * validation set). Both are model files (at_model_load reads them); writes are atomic (temporary
 * file, fsync, rename), so a killed process leaves the previous checkpoint intact. A stop request
 * (at_train_callbacks.stop) writes last.safetensors mid-epoch. Weights that are not finite are
 * never written: at_train fails with AT_ERR_NAN and the previous files stay. With resume,
 * training continues after the step DIR/last.safetensors holds and ends with the same weights,
 * bit for bit, as an uninterrupted run with the same configuration and thread count. DIR must
 * exist; a missing last.safetensors fails with AT_ERR_IO. */
typedef struct at_checkpoint_config {
    const char *dir;        /* NULL: no checkpoints */
    bool resume;
    const at_st_meta *meta; /* extra metadata for both files (data source, settings) */
    int nmeta;
} at_checkpoint_config;

/* The last completed epoch saved in DIR/last.safetensors (AT_ERR_IO when there is none). */
at_status at_checkpoint_epoch(const char *dir, int *epoch);
/* The same, and the batches of the next epoch it holds (0 unless written by a stop request). */
at_status at_checkpoint_progress(const char *dir, int *epoch, int *batches);

/* Certified training (docs/certified.md), IBP (Gowal et al. 2018) or CROWN-IBP (Zhang et al.
 * 2020): the loss is kappa * CE(clean) + (1 - kappa) * at_certified_loss at eps_t. After
 * warmup_epochs of clean training (eps_t 0, kappa 1), eps_t rises linearly to eps and kappa to
 * kappa_end over ramp_epochs, then both stay; with CROWN-IBP, the CROWN-IBP share of the margin
 * bounds, beta, moves linearly from beta_start to beta_end over the same ramp (the paper: 1 to 0).
 * Off when eps is 0. Needs hard labels (no mixup, label smoothing or regression), a network
 * that ends with a Linear layer and no BatchNorm; not combined with adversarial training. */
typedef struct at_certify_config {
    float eps;           /* 0-1 pixel scale; 0: off */
    int warmup_epochs;   /* clean epochs first (default 1) */
    int ramp_epochs;     /* epochs over which eps and kappa move (default 5) */
    float kappa_end;     /* the clean loss's weight at the end of the ramp (default 0.5) */
    at_bound_method method; /* AT_BOUND_IBP (0) or AT_BOUND_CROWN_IBP */
    float beta_start, beta_end; /* CROWN-IBP: its share of the bounds over the ramp (1, 0) */
} at_certify_config;

/* Quantization-aware training (docs/quantization.md): every step computes as the int8 model
 * at_quantize will make: Conv2d and Linear weights rounded to their per-channel int8 values, and
 * each tensor the int8 model holds rounded to its int8 grid, whose range is a moving average of
 * the tensor's minimum and maximum over the training batches (the first batch only records
 * them). Gradients pass the rounding unchanged and stop at clamped values (straight-through
 * estimator); the optimizer, the regularizers and checkpoints see the float weights. The
 * per-epoch validation and test metrics are the rounded network's. The ranges stay with the
 * network (model files keep them, at_quantize uses them); training without QAT drops them. */
typedef struct at_qat_config {
    bool enabled;
    float momentum; /* weight of a batch's extremes in the moving ranges (default 0.01) */
} at_qat_config;

/* Everything after `optim` is regularization and is off in at_train_defaults(). Per step, in
 * this order: batch (+ augmentation, input noise, mixup), forward, loss (+ penalty), backward,
 * penalty gradients, gradient clipping, optimizer step (with weight decay), proximal L1,
 * max-norm. */
typedef struct at_train_config {
    int epochs;
    int batch;
    uint64_t seed;        /* shuffling, dropout, augmentation, noise and mixup */
    at_optim_config optim;
    float l1, l2;         /* penalties l1*sum|w| + l2*sum w^2 over reg_select, added to the loss */
    bool prox_l1;         /* apply l1 as a proximal step (threshold lr*l1) instead of a gradient */
    float max_norm;       /* > 0: max-norm constraint on reg_select's weights after each step */
    at_reg_select reg_select; /* covers l1, l2, prox, max-norm and the optimizer's weight decay
                               * (default: every weight, no bias) */
    float label_smoothing;    /* classification: targets (1-e)*onehot + e/K */
    float clip_grad;          /* > 0: clip the global gradient norm to this */
    float input_noise;        /* > 0: N(0, s^2) added to training inputs; images clamped to [0,1] */
    at_augment_config augment; /* images only: random crop with zero padding, horizontal flip */
    float mixup_alpha;        /* > 0: mixup, lam ~ Beta(alpha, alpha) once per batch */
    at_schedule_config schedule; /* learning-rate schedule (default constant) */
    int early_stop;           /* > 0: patience in epochs; needs a validation set; the best
                               * epoch's weights are restored at the end */
    float min_delta;          /* early stopping: the smallest change that counts as improvement */
    at_monitor monitor;
    at_adv_train_config adv;  /* adversarial training (off in at_train_defaults) */
    at_checkpoint_config checkpoint; /* off in at_train_defaults */
    /* A step whose loss or gradient is not finite: false (default) stops training with
     * AT_ERR_NAN; true skips the batch (no update) and halves the learning rate from then on
     * (schedules included), counted in at_epoch_stats.skipped; 10 skipped in a row stop. */
    bool skip_nonfinite;
    /* Optional (NULL: this process alone): data-parallel training over comm's ranks
     * (docs/distributed.md). Every rank makes the same call with the same data and
     * configuration; each trains on its slice of every global batch of `batch` samples, with
     * BatchNorm statistics and gradients summed over the ranks, so that all ranks hold the
     * model one process trains (up to float summation order). Rank 0 alone writes checkpoints.
     * Adversarial training with random starts is not shared yet (AT_ERR_ARG); FGSM is. */
    const at_comm *comm;
    at_certify_config certify; /* certified training (off in at_train_defaults) */
    at_qat_config qat;         /* quantization-aware training (off in at_train_defaults) */
} at_train_config;

at_train_config at_train_defaults(void);

/* What the training loop reports after each epoch. Metrics are accuracy (classification) or MSE
 * (regression); NAN where a split is absent. */
typedef struct at_epoch_stats {
    int epoch, epochs; /* 1-based */
    float lr;
    float train_loss;
    float train_metric; /* running, over the epoch's batches in train mode */
    float val_metric;
    float test_metric;
    double seconds;     /* training time of the epoch (evaluation excluded) */
    float val_loss;     /* NAN without a validation set */
    float penalty;      /* mean L1/L2 penalty over the epoch's batches (0 if none) */
    float grad_norm;    /* mean global gradient norm before clipping (clip_grad > 0), else NAN */
    int best_epoch;     /* early stopping / robust selection: the best epoch so far, else 0 */
    bool stopping;      /* early stopping ends training after this epoch */
    /* Adversarial training (NAN / 0 otherwise): */
    float eps;          /* the epoch's final eps (after warm-up) */
    float adv_metric;   /* running accuracy on the adversarial training examples */
    float robust_val;   /* PGD robust accuracy on the validation samples */
    float guard_acc;    /* FGSM-RS guard: PGD accuracy on the held-out batch */
    bool collapsed;     /* the guard found catastrophic overfitting and restored the weights of
                           the last good epoch; alpha is the step used from now on */
    float alpha;        /* the FGSM-RS step size in use (0-1 pixel scale) */
    const char *method; /* adversarial training method now in use ("fgsm-rs", "pgd"), or the
                           certified one ("ibp", "crown-ibp"); NULL for plain training */
    int skipped;        /* batches skipped for a non-finite loss or gradient (skip_nonfinite) */
} at_epoch_stats;

typedef struct at_train_callbacks {
    void *user;
    /* After every batch (may be NULL): for progress bars. The running values average the epoch's
     * batches so far: the loss, and the training metric (accuracy, or the loss for regression). */
    void (*on_batch)(void *user, int epoch, int batch, int nbatches, float running_loss,
                     float running_metric);
    /* After every epoch (may be NULL). Returning false stops training. */
    bool (*on_epoch)(void *user, const at_epoch_stats *stats);
    /* May be NULL. When *stop becomes non-zero (a signal handler may set it), at_train finishes
     * the step under way, writes DIR/last.safetensors there, mid-epoch (with checkpoint.dir),
     * and returns AT_ERR_INTERRUPTED; resuming continues with the next step, bit for bit. With
     * at_train_config.comm, any rank's request stops every rank after the same step. */
    volatile sig_atomic_t *stop;
} at_train_callbacks;

/* Trains net on `train` with minibatch SGD/Adam; evaluates on val and test (either may be NULL)
 * after each epoch. Fails with AT_ERR_NAN if the loss diverges, saying when. */
at_status at_train(at_net *net, const at_dataset *train, const at_dataset *val,
                   const at_dataset *test, const at_train_config *cfg,
                   const at_train_callbacks *cb);

#ifdef __cplusplus
}
#endif
#endif /* ADVTRAIN_H */
