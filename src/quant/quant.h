/* int8 inference (docs/quantization.md): the scheme of TensorFlow Lite Micro and CMSIS-NN.
 *
 *   real = (q - zero_point) * scale
 *
 * Weights are int8, symmetric per output channel (zero point 0, range [-127, 127]); activations
 * int8 per tensor, asymmetric; biases int32 at scale_in * scale_w; an int32 accumulator goes back
 * to int8 through a fixed-point multiplier and a shift (Jacob et al. 2018, arXiv 1712.05877,
 * section 2.3). BatchNorm is folded into the Conv2d or Linear it follows when it is that layer's
 * only reader; a ReLU the float graph fuses into its producer becomes the output clamp.
 *
 * The files: qkernels.h (every kernel with plain arguments: the one source of the arithmetic,
 * shared with the exported C), qplan.c (which tensors the int8 model holds), requant.c (the
 * constants: multipliers, tensor parameters),
 * qnet.c (calibration, folding, weights and the forward pass), qconv.c and qlinear.c (the
 * library's faster Conv2d and Linear, the same bits as qkernels.h's), qfile.c (int8 files),
 * qexport.c (`advtrain export --c --int8`). */
#ifndef ADVTRAIN_QUANT_H
#define ADVTRAIN_QUANT_H
#include "graph/net_internal.h"
#include "quant/qkernels.h"

#include <math.h>
#include <stdint.h>

/* ---- requant.c: building the constants (double arithmetic, host only) */
/* real (>= 0) as mult * 2^shift / 2^31 with mult in [2^30, 2^31) (0 for real = 0). */
void q_multiplier(double real, int32_t *mult, int32_t *shift);
/* A tensor's quantization: real = (q - zp) * scale. */
typedef struct qparams {
    float scale;
    int32_t zp;
} qparams;
/* The asymmetric int8 parameters covering [lo, hi] (widened to hold 0, as zero padding needs). */
qparams q_params_for_range(float lo, float hi);
static inline int8_t q_quantize(float v, qparams p) { return qk_quantize(v, p.scale, p.zp); }

/* One int8 kernel call: a node of the float graph computed in int8. The library owns the
 * per-channel arrays; k is what the kernels read (qkernels.h): geometry, zero points, clamp,
 * the arrays, the Add multipliers. */
typedef struct qnode {
    int layer;           /* the float node whose output tensor this writes */
    const at_layer *op;  /* the layer whose geometry the kernel runs (a folded BatchNorm's conv) */
    at_layer_kind kind;  /* the kernel: op's kind; AT_LAYER_BATCHNORM2D/1D: a per-channel affine map */
    int src[2];          /* tensors read (-1: the input) */
    qparams in[2], out;
    /* Conv2d, Linear and the affine map: per output channel */
    int nout;
    size_t nweights;     /* int8 weights: the layer's (Conv2d, Linear), one per channel (affine) */
    int8_t *w;
    int16_t *w16;        /* the same weights as int16, for the int16 dot products (q_widen) */
    int32_t *bias, *mult, *shift;
    qk_layer k;
} qnode;

struct at_qnet {
    at_net *net;     /* shapes and graph (its parameters are not read after building) */
    bool owns_net;   /* loaded from a file: the network is the qnet's */
    int nnodes;
    qnode *nodes;
    qparams *tq;     /* per tensor + 1 (index 0: the input) */
    int *alias;      /* per tensor + 1: the tensor whose int8 values it is (Dropout: its input) */
    int8_t **act;    /* per tensor + 1: n samples' int8 values (the forward's buffers) */
    int cap;         /* samples the buffers hold */
    size_t work;     /* scratch bytes per thread */
    unsigned char *scratch;
    int threads;
    float *logits;   /* dequantized output, cap samples */
};

/* A weight channel's int8 scale (max|w| / 127; 1 for a channel of zeros) and a weight's int8
 * value at it: symmetric, rounded half away from zero, in [-127, 127]. at_quantize and
 * quantization-aware training (qat.c) round weights with these, so that they cannot differ. */
static inline double q_weight_scale(double amax) { return amax > 0.0 ? amax / 127.0 : 1.0; }
static inline int8_t q_weight_int8(double w, double scale) {
    const double v = round(w / scale);
    return (int8_t)(v > 127 ? 127 : (v < -127 ? -127 : v));
}
static inline bool q_is_bn(at_layer_kind k) { return k == AT_LAYER_BATCHNORM2D || k == AT_LAYER_BATCHNORM1D; }

/* qplan.c: the int8 model's tensors. Which layer has no int8 kernel (AT_ERR_ARG naming the first);
 * whether BatchNorm l is folded into the Conv2d or Linear it reads, and whether layer l is that
 * Conv2d or Linear (no tensor of its own); whether layer L's output is its input's values (a
 * Dropout, a Flatten, a fused ReLU), and whether it keeps its input's parameters (those, pooling
 * and a standalone ReLU). */
at_status q_check_supported(const at_net *net);
bool q_folds_into(const at_net *net, int l);
bool q_folded_away(const at_net *net, int l);
bool q_copies_input(const at_layer *L);
bool q_keeps_input_params(const at_net *net, int l);

/* qnet.c, for qfile.c. An empty qnet over net (arrays allocated, aliases set), for at_quantize
 * and at_qnet_load. The parameters of the tensors that keep their input's (q_inherit_params sets
 * them once the others are), and the nodes' structure (inputs, parameters around them, clamp,
 * per-channel arrays allocated but not filled) once q->tq is complete. */
at_status q_alloc(at_qnet **out, at_net *net);
void q_inherit_params(at_qnet *q);
at_status q_shape_nodes(at_qnet *q);

/* What the kernels read of node n (n->k, qkernels.h) from its op's geometry, its parameters and
 * its per-channel arrays (their pointers: the values may come later); a Linear is in_c inputs
 * and out_c outputs of 1x1. relu_out: the float node applies a ReLU (the output clamp). */
void q_kernel_view(qnode *n, bool relu_out);
/* Whether every int32 sum of node n stays in int32 whatever its int8 inputs: |bias| + 255 * the
 * sum of |w| per output channel (x - zp is within [-255, 255]). A quantized network's always do
 * by a wide margin; a damaged file's may not, and is refused. *channel: the first that fails. */
bool q_sums_fit(const qnode *n, int *channel);
/* Fills n->w16 from n->w once its weights are set, each channel's row padded with zeros to
 * q_kpad (false: out of memory, error set). */
bool q_widen(qnode *n);

/* The library's Conv2d and Linear (qkernels.h's qk_conv and qk_linear, faster on a PC): one
 * sample of x (the op's input shape) into y (its output shape), or m samples for q_linear; work
 * is per-call scratch of q_work_bytes(node) bytes. */
size_t q_work_bytes(const qnode *q);
/* qgemm.c: a row length rounded up to 16 int16 (the vector width); acc[o * npos + i] = bias[o] +
 * the dot product of w's row o with p's row i (rows of kp int16, zero-padded); the int8 outputs
 * of acc (nout channels of area values) through q's multipliers, shifts and clamp. */
size_t q_kpad(size_t k);
void q_gemm16(const int16_t *w, const int16_t *p, int nout, int npos, int kp, const int32_t *bias, int32_t *acc);
void q_requant_rows(const qnode *q, const int32_t *acc, int area, int8_t *y);
/* qk_add, vectorized where the machine allows. */
void q_add_values(const qk_layer *k, const int8_t *a, const int8_t *b, int8_t *y, size_t count);
/* qk_quantize of n finite values (vectorized where the machine allows). */
void q_quantize_values(const float *x, size_t n, qparams p, int8_t *out);
void q_conv(const qnode *q, const int8_t *x, int8_t *y, void *work);
/* q_linear takes m <= Q_LINEAR_GROUP samples (rows of x and y) at once. */
enum { Q_LINEAR_GROUP = 8 };
void q_linear(const qnode *q, const int8_t *x, int8_t *y, int m, void *work);
#endif
