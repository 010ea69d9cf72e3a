/* What the bound methods share (ibp.c, crown.c): the chunk runner, each thread's interval
 * bounds of every tensor, and the input box. Interval bounds of every tensor come first (IBP);
 * a method then finishes each chunk with its own bounds of the margins. */
#ifndef ADVTRAIN_CERTIFY_BOUNDS_H
#define ADVTRAIN_CERTIFY_BOUNDS_H
#include "graph/net_internal.h"

/* The network, its |A| copy, and what a chunk runs. */
typedef struct bound_net {
    at_net *net;
    float *abs_params, *abs_buffers;
    int stop;          /* nodes [0, stop) get interval bounds */
    int chunk;         /* samples per chunk */
    size_t extra;      /* floats of a method's own scratch per thread (thread_bufs.extra) */
} bound_net;

typedef struct thread_bufs {
    float **lo, **hi;          /* per tensor + 1 (index t + 1), chunk rows; fused nodes alias */
    float **pre_lo, **pre_hi;  /* per node: its bounds before a fused ReLU (relu_out), else NULL */
    float *mid, *rad, *mid2, *rad2, *ymid, *yrad, *work;
    float *extra;
} thread_bufs;

/* What is done with a chunk's bounds: rows [begin, begin + n) of the batch. */
typedef void (*chunk_done)(const bound_net *B, const thread_bufs *T, void *user, int begin, int n);
/* How a chunk's input box is made: rows [begin, begin + n) into lo, hi. */
typedef void (*chunk_input)(const at_net *net, void *user, int begin, int n, float *lo, float *hi);

/* Floats of the largest tensor of one sample (the input included): the size of scratch rows. */
static inline size_t bounds_max_tensor(const at_net *net) {
    size_t m = (size_t)net_in_size(net);
    for (int l = 0; l < net->nlayers; l++) m = AT_MAX(m, (size_t)net->layers[l].out_size);
    return m;
}
/* The first node before B->stop whose kind has no interval rule, or -1. */
int bounds_unsupported(const at_net *net, int stop);
/* Interval bounds of every tensor for chunks of `total` rows over the threads, eval mode. */
at_status bounds_run(bound_net *B, int total, chunk_input input, chunk_done done, void *user);

/* The L-inf ball of radius eps around x, inside the pixel box [0,1] (user: a margin_job). */
typedef struct margin_job {
    const float *x;
    const int32_t *y;
    float eps;
    float *margins;
    int elide;  /* ibp.c: the final Linear node folded into the margins, or -1 */
} margin_job;
void bounds_ball_input(const at_net *net, void *user, int begin, int n, float *lo, float *hi);

/* CROWN-IBP margins of a chunk (crown.c): the bounds of every tensor are in T. */
void crown_margins(const bound_net *B, const thread_bufs *T, void *user, int begin, int n);
/* Floats of crown_margins' scratch per thread, for chunks of `chunk` samples; and whether every
 * node has a linear relaxation (the first that has not, or -1). */
size_t crown_scratch(const at_net *net, int chunk);
int crown_unsupported(const at_net *net);
#endif
