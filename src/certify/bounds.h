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
/* The centre and radius of a box. */
static inline void bounds_centre_radius(const float *lo, const float *hi, size_t count, float *mid, float *rad) {
    for (size_t i = 0; i < count; i++) {
        mid[i] = 0.5f * (lo[i] + hi[i]);
        rad[i] = 0.5f * (hi[i] - lo[i]);
    }
}
/* The class of a sample's q-th margin row (CROWN's rows skip the label y). */
static inline int margin_class(int q, int y) { return q < y ? q : q + 1; }
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

/* CROWN's working state for one chunk (crown.c): for margins, rows r = s * (classes - 1) + q are
 * the margins z_y - z_j of the chunk's samples s, j = margin_class(q, y). lam: per tensor + 1,
 * R rows of coefficients on that tensor (fused nodes alias their source's); after crown_rows each
 * holds what its producer passed on (relaxed where a ReLU was). keep (may be NULL): per node,
 * where a relaxed node's coefficients before the relaxation are copied (the training loss's
 * backward needs them). */
typedef struct crown_bufs {
    float **lam, **keep;
    float *dx, *dx2, *dummy, *work, *offset, *zeros;
    double *constant; /* per row */
    int R, K;           /* rows; rows per sample (the classes, for margins) */
    int s0;             /* the chunk's sample of row 0 */
} crown_bufs;

/* CROWN-IBP for the chunk's n samples with labels y: C's state, and the margin bounds in m (n x
 * classes, +inf at j = y). block: crown_scratch(net, n) floats; lam: nlayers + 1 pointers. */
void crown_rows(const at_net *net, const thread_bufs *T, float *block, float **lam, crown_bufs *C, const int32_t *y,
                int n, float *m);
/* Gradients of the interval bounds of a chunk (n rows each): per tensor + 1 (dlo, dhi; fused
 * nodes alias) and per node with a fused ReLU, of its bounds before the ReLU (dpre_lo, dpre_hi). */
typedef struct crown_bound_grads {
    float **dlo, **dhi, **dpre_lo, **dpre_hi;
} crown_bound_grads;

/* The reverse of crown_rows (crown_loss.c), C->keep set: for the adjoints dm of the margin
 * bounds (n x classes as crown_rows wrote them; the labels y), adds the gradient of
 * sum dm m to grads (the parameters; sg: a zeroed scratch of as many floats, left zeroed) and to
 * G (the interval bounds the ReLUs were relaxed with). A: crown_adjoint_carve's tables;
 * lin_params: the parameters with every bias zeroed. Kinds whose offset is not their bias are
 * not taken. */
typedef struct crown_adjoint {
    float **adj;  /* per tensor + 1: the adjoints of its coefficients; fused nodes alias */
    float *rowdm; /* per row: its margin's adjoint */
} crown_adjoint;
void crown_rows_backward(const at_net *net, const thread_bufs *T, const crown_bufs *C, const crown_adjoint *A,
                         const float *dm, const int32_t *y, int n, const float *lin_params, float *grads, float *sg,
                         const crown_bound_grads *G);
size_t crown_adjoint_floats(const at_net *net, int chunk);
/* Carves block for chunks of n samples: A's tables (adj: nlayers + 1 pointers) and keep (nlayers). */
void crown_adjoint_carve(const at_net *net, float *block, int n, crown_adjoint *A, float **keep);

/* CROWN-IBP margins of a chunk (crown.c): the bounds of every tensor are in T. */
void crown_margins(const bound_net *B, const thread_bufs *T, void *user, int begin, int n);
/* Full CROWN margins of a chunk (crown.c): the bounds every ReLU relaxation reads computed by
 * CROWN too (replacing the interval ones in T), then the margins as crown_margins. Its scratch:
 * crown_scratch_rows(net, max(chunk * classes, CROWN_ROWS)). */
void crown_full_margins(const bound_net *B, const thread_bufs *T, void *user, int begin, int n);
enum { CROWN_ROWS = 256 }; /* rows of one intermediate bound pass */
/* Floats of crown_margins' scratch per thread, for chunks of `chunk` samples (or `rows` rows);
 * and whether every node has a linear relaxation (the first that has not, or -1). */
size_t crown_scratch(const at_net *net, int chunk);
size_t crown_scratch_rows(const at_net *net, int rows);
int crown_unsupported(const at_net *net);
#endif
