/* Quantization-aware training (docs/quantization.md, "Quantization-aware training").
 *
 * A network in training simulates the int8 model advtrain quantize will make of it: inside a
 * QAT scope (qat_begin .. qat_end) the Conv2d and Linear weights in net->params are their
 * per-output-channel int8 values times their scale (the float weights wait in a master copy, which
 * the optimizer updates), and every tensor the int8 model holds is rounded to its int8 grid as
 * the executor writes it (through the hooks qat_attach installs, net_internal.h). Gradients pass the rounding unchanged and stop where a
 * value was clamped at the grid's ends (the straight-through estimator, Bengio et al. 2013; Jacob
 * et al. 2018, arXiv 1712.05877, section 3). Each tensor's range is an exponential moving average
 * of its minimum and maximum over the training forwards, as PyTorch's MovingAverageMinMaxObserver;
 * a tensor is first rounded in the forward after the one that first saw it.
 *
 * The ranges stay with the network after training: model files keep them (advtrain.qat metadata)
 * and at_quantize uses them instead of calibrating, so that the int8 model is the one trained. */
#ifndef ADVTRAIN_QAT_H
#define ADVTRAIN_QAT_H
#include "graph/net_internal.h"

/* One tensor of the network (index + 1; 0: the input). */
typedef struct qat_tensor {
    int own;             /* the tensor (+ 1) whose range quantizes it, 0 if none */
    bool apply;          /* its values are rounded (the logits' are not) */
    bool masked;         /* the last forward recorded its STE mask */
    bool seen;           /* (an owner) a range exists */
    float lo, hi;        /* (an owner) the moving range */
    unsigned char *mask; /* 1 where the rounded value was not clamped, for `cap` samples */
} qat_tensor;

typedef struct at_qat {
    float momentum;      /* EMA weight of a new batch's minimum and maximum */
    int T;               /* tensors + 1 */
    qat_tensor *t;
    int depth;           /* nested scopes open (qat_begin) */
    float *master;       /* the float weights while params hold the fake-quantized ones */
    int nthreads;
    float *tmin, *tmax;  /* per thread x tensor: this forward's extremes */
    int cap;             /* samples the masks hold */
} at_qat;

/* Attaches QAT state (no ranges yet) to net, or keeps the one it has (a file's ranges);
 * AT_ERR_ARG naming a layer with no int8 kernel. */
at_status qat_attach(at_net *net, float momentum);
void qat_free(at_net *net);
/* A scope in which the network computes as the int8 model would (weights and tensors rounded).
 * Scopes nest; the outermost end puts the float weights back. */
void qat_begin(at_net *net);
void qat_end(at_net *net);


/* Model files: the ranges as metadata text (*out NULL when there are none; free it), and back. */
at_status qat_ranges_text(const at_net *net, char **out);
at_status qat_ranges_parse(at_net *net, const char *text, const char *path);
/* Tensor t's (index + 1) trained range, false if it has none. */
bool qat_range(const at_net *net, int t, float *lo, float *hi);
#endif
