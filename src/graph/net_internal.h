/* The network as a graph, shared by its three parts:
 *   graph.c  builds it: nodes, their inputs, shapes, parameter and buffer views, ReLU fusion;
 *   plan.c   the buffer plan: which tensor each node reads, where each activation and each
 *            gradient lives, which nodes a backward pass must run; allocation (at_net_reserve);
 *   exec_cpu.c  the CPU executor: forward, backward and the fused attack step, chunked over
 *            threads and split at sync points (BatchNorm in training mode).
 *
 * Tensors are named by the node that produces them: tensor v is node v's output, tensor -1 the
 * network input. A fused node (a ReLU its producer applies, a Flatten) has no tensor of its
 * own: it reads and writes its source's (at_layer.src holds resolved tensors). */
#ifndef ADVTRAIN_NET_INTERNAL_H
#define ADVTRAIN_NET_INTERNAL_H
#include "layers/layer.h"

/* A backend runs a plan's passes (today the CPU one; a CUDA or an MPI-synchronised one would
 * implement the same three functions over the same plan). */
typedef struct at_executor {
    at_status (*forward)(at_net *net, const float *x, int n);
    at_status (*backward)(at_net *net, const float *dlogits, bool params, bool input, float *dx);
    at_status (*input_gradient)(at_net *net, const float *x, int n, at_chunk_loss_fn loss,
                                void *user, float *dlogits, float *dx);
    at_status (*predict)(at_net *net, const float *x, int n);
} at_executor;

extern const at_executor at_cpu_executor;

/* What a pass calls around and between the nodes when something is attached to the network:
 * quantization-aware training's rounding (quant/qat.c installs it). The graph engine does not
 * know what they do. Before a pass over n samples (infer: a prediction, which keeps nothing for
 * backward) and after a forward; after node l wrote rows y of samples [begin, begin + n) on
 * thread `thread`; before node l's backward reads its output gradient dy of those samples; and
 * when the network is freed. */
typedef struct at_net_hooks {
    at_status (*pass_begin)(at_net *net, int n, bool infer);
    at_status (*pass_end)(at_net *net);
    void (*forward)(at_net *net, int l, float *y, int begin, int n, int thread);
    void (*backward)(const at_net *net, int l, float *dy, int begin, int n);
    void (*release)(at_net *net);
} at_net_hooks;

/* The fewest samples a pass hands a thread at a time (exec_cpu.c's take_chunk; plan.c sizes the
 * chunk bookkeeping by it). */
enum { MIN_CHUNK = 16 };

/* Where a backward pass puts one input gradient of a node: straight into the tensor's gradient
 * (the first reader in backward order writes it), or into scratch that is then added (a tensor
 * with several readers accumulates). */
typedef struct at_grad_edge {
    int target;  /* gradient slot of the source tensor; -1: the caller's dx (network input) */
    int scratch; /* slot written first and added into target, or -1 to write target directly */
} at_grad_edge;

/* The buffer plan: computed once per graph (plan.c), sized by at_net_reserve. */
typedef struct at_plan {
    int out_tensor;        /* the tensor the last node's output is (its producer's if fused) */
    int *readers;          /* per tensor + 1 (index t + 1): real nodes reading it */
    bool *param_below;     /* per tensor + 1: it or an ancestor has parameters */
    int *grad_slot;        /* per tensor + 1: its gradient's slot (-1: none, or the caller's) */
    at_grad_edge (*edges)[2]; /* per node, per input */
    int nslots;
    int *slot_width;       /* floats per sample of each slot */
    int max_stats;         /* doubles of the largest sync point */
    int *fwd_slot;         /* per node: the gradient slot its forward-only output lives in, or -1 */
    /* Prediction (at_net_predict) keeps no activation for a backward pass: a tensor's slot is
     * free once its last reader has run, so a few slots serve the whole network. */
    int *infer_slot;       /* per tensor + 1 (-1 for the input: read in place) */
    int ninfer;
    int *infer_width;
} at_plan;

struct at_net {
    char *spec;
    int nlayers;
    at_layer *layers;
    int in_c, in_h, in_w;
    size_t nparams, nbuffer_floats, nstate;
    float *params, *grads, *buffers, *state;
    int ntensors, nbuffers;
    at_param_info *tensors, *buffer_info;
    bool training;
    uint64_t seed, forward_count, dropout_key;
    const at_executor *exec;
    at_plan plan;
    /* Buffers sized by at_net_reserve. */
    int max_batch, threads;
    /* Data-parallel training (at_net_share): the ranks whose BatchNorm sums are added at every
     * sync point, and the index in the global batch of this rank's first sample (dropout). */
    const at_comm *comm;
    int sample_offset;
    float *input_copy;     /* the last forward's input */
    float **act;           /* act[v]: node v's output (NULL if fused), in the arena */
    float *arena;          /* all activations of a training or attack pass, in one block */
    size_t arena_floats;
    float **grad;          /* grad[s]: gradient slot s */
    float **work;          /* per-thread scratch, sized for work_batch samples */
    int work_batch;
    float **infer;         /* prediction slots, sized for infer_batch samples */
    int infer_batch;
    bool infer_in_arena;   /* the slots lie in the arena (a prediction ends the last forward) */
    int kept_batch;        /* samples the kept buffers hold (allocated by the first training
                            * forward, within a memory budget) */
    float **thread_grads;  /* per-thread parameter gradients, [0] unused (shared buffer) */
    double *stats;         /* per-thread sums at a sync point, threads x plan.max_stats, + total */
    float **kept;          /* per layer: what its training forward keeps (NULL if nothing) */
    bool last_training;    /* the last forward ran in training mode (kept and state hold it) */
    int last_n;            /* batch size of the last forward, 0 if none */
    /* Chunks of a pass that shares samples out: which thread ran each chunk of the last
     * forward, so that backward runs it on the same core (its activations are in that core's
     * cache), and which chunks the running backward has claimed. */
    int *chunk_owner, *chunk_claimed;
    int last_chunk; /* chunk size of the last forward; 0: it split the batch in fixed parts */
    const at_net_hooks *hooks; /* NULL if none */
    struct at_qat *qat;        /* quantization-aware training's state (quant/qat.h), NULL if none */
};

/* Floats per input sample. The public at_net_in_size is graph.c's; the planner and the executor,
 * which graph.c calls, use this one so that they do not call back into graph.c. */
static inline int net_in_size(const at_net *net) { return net->in_c * net->in_h * net->in_w; }


/* plan.c */
at_status at_plan_build(at_net *net);
at_status at_plan_reserve_infer(at_net *net, int n);
at_status at_plan_reserve_kept(at_net *net, int n);
void at_plan_free(at_plan *plan);
void at_net_free_buffers(at_net *net);
/* The floats of tensor t (-1: the input copy), for all samples: sample i's at i * stride (the
 * size, or a gradient slot's width for a forward-only tensor). */
float *at_tensor_data(const at_net *net, int t);
int at_tensor_size(const at_net *net, int t); /* floats per sample */
int at_tensor_stride(const at_net *net, int t);
/* Whether a backward pass with these flags needs tensor t's gradient. */
bool at_plan_needs_grad(const at_net *net, int t, bool params, bool input);
#endif
