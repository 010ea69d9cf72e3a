/* Data-parallel training (data_parallel.c, docs/distributed.md): the ranks of at_train_config.comm
 * take slices of every global batch and add their gradients, so that they train the model one
 * process would train on the whole batch. */
#ifndef ADVTRAIN_DATA_PARALLEL_H
#define ADVTRAIN_DATA_PARALLEL_H
#include "internal.h"

/* Whether cfg shares training among several ranks; AT_ERR_ARG for what is not shared yet. */
bool dp_shared(const at_train_config *cfg);
at_status dp_check(const at_train_config *cfg);
/* Every rank starts from rank 0's parameters and buffers. */
at_status dp_start(at_net *net, const at_comm *comm);

/* What a rank's slice gave, summed over the ranks into what the global batch gives. */
typedef struct dp_batch {
    float loss;          /* in: the slice's mean loss; out: the global batch's */
    int correct, adv_correct;
    bool nonfinite;      /* in: this slice's loss or gradient is not finite; out: any slice's */
    bool stop;           /* in: a stop was requested here (a signal); out: on any rank, so that
                          * every rank stops after the same step */
} dp_batch;
/* The network's gradients (the slice's part of the global batch's mean loss) summed over the
 * ranks in one buffer of floats, with the batch's numbers (loss: the slice's mean over n_slice
 * in, the batch's mean over n out); buf holds num_params + DP_EXTRA floats, or twice as many
 * when the communicator sums doubles only. */
enum { DP_EXTRA = 5 }; /* floats of dp_sum_batch's buffer beyond the parameters */
size_t dp_buffer_floats(const at_net *net, const at_comm *comm);
at_status dp_sum_batch(at_net *net, const at_comm *comm, int n_slice, int n, dp_batch *b, float *buf);
#endif
