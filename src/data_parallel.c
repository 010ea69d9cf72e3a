/* Data-parallel training over the ranks of a communicator (docs/distributed.md). Every rank
 * holds the whole dataset and shuffles it identically from the seed; it prepares the whole global
 * batch (mixup pairs samples across it), then runs forward and backward on its slice only. Every
 * per-sample draw (augmentation, noise, random starts, dropout) follows the sample's index in the
 * epoch, not the rank that draws it. BatchNorm adds its batch sums over the ranks at every
 * sync point (exec_cpu.c: SyncBatchNorm), and the gradients are scaled by slice over batch size and summed in one buffer per
 * step, so that every rank takes the optimizer step one process takes on the whole batch (up to
 * the order in which float sums are added). */
#include "data_parallel.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

bool dp_shared(const at_train_config *cfg) { return cfg->comm && cfg->comm->size > 1; }

at_status dp_check(const at_train_config *cfg) {
    if (!dp_shared(cfg)) return AT_OK;
    const at_comm *c = cfg->comm;
    if (c->rank < 0 || c->rank >= c->size || !c->allreduce_sum)
        return at_fail(AT_ERR_ARG, "training communicator: rank %d of %d, or no allreduce", c->rank, c->size);
    if (cfg->batch < c->size)
        return at_fail(AT_ERR_ARG, "a batch of %d cannot be shared by %d ranks", cfg->batch, c->size);
    /* Free-AT's perturbation belongs to a slot of the batch and moves with every replay: a rank
     * would keep its slice's slots, which the last, shorter batch splits otherwise. */
    if (cfg->adv.method == AT_ADV_FREE)
        return at_fail(AT_ERR_ARG, "free adversarial training is not shared among ranks: run it in one "
                                   "process, or use fgsm-rs (as fast, and shared)");
    return AT_OK;
}

/* Rank 0's values of count floats on every rank (a sum with zeros elsewhere: exact). */
static at_status from_rank0(const at_comm *comm, float *v, size_t count) {
    double *buf = calloc(count ? count : 1, sizeof(double));
    if (!buf) return at_fail(AT_ERR_NOMEM, "out of memory sharing the initial weights");
    for (size_t i = 0; comm->rank == 0 && i < count; i++) buf[i] = v[i];
    at_status s = comm->allreduce_sum(comm->user, buf, count);
    for (size_t i = 0; s == AT_OK && i < count; i++) v[i] = (float)buf[i];
    free(buf);
    return s;
}

at_status dp_start(at_net *net, const at_comm *comm) {
    at_status s = from_rank0(comm, at_net_params(net), at_net_num_params(net));
    if (s == AT_OK) s = from_rank0(comm, at_net_buffers(net), at_net_num_buffer_floats(net));
    return s;
}

size_t dp_buffer_floats(const at_net *net, const at_comm *comm) {
    const size_t count = at_net_num_params(net) + DP_EXTRA;
    return comm->allreduce_sum_float ? count : count * 3; /* room for the doubles after the floats */
}

/* count floats summed over the ranks: the float sum, or through doubles (scratch after buf). */
static at_status sum_floats(const at_comm *comm, float *buf, size_t count) {
    if (comm->allreduce_sum_float) return comm->allreduce_sum_float(comm->user, buf, count);
    double *d = (double *)(((uintptr_t)(buf + count) + 7) & ~(uintptr_t)7);
    for (size_t i = 0; i < count; i++) d[i] = buf[i];
    at_status s = comm->allreduce_sum(comm->user, d, count);
    for (size_t i = 0; s == AT_OK && i < count; i++) buf[i] = (float)d[i];
    return s;
}

at_status dp_sum_batch(at_net *net, const at_comm *comm, int n_slice, int n, dp_batch *b, float *buf) {
    const size_t np = at_net_num_params(net);
    float *g = at_net_grads(net);
    memcpy(buf, g, sizeof(float) * np); /* already the slice's share (batch_gradients) */
    buf[np] = b->loss * (float)n_slice;
    buf[np + 1] = (float)b->correct; /* counts up to 2^24: exact in floats */
    buf[np + 2] = (float)b->adv_correct;
    buf[np + 3] = b->nonfinite || !isfinite(b->loss);
    buf[np + 4] = b->stop;
    at_status s = sum_floats(comm, buf, np + DP_EXTRA);
    if (s != AT_OK) return at_fail(s, "summing the gradients over %d ranks failed", comm->size);
    memcpy(g, buf, sizeof(float) * np);
    b->loss = buf[np] / (float)n;
    b->correct = (int)buf[np + 1];
    b->adv_correct = (int)buf[np + 2];
    b->nonfinite = buf[np + 3] > 0;
    b->stop = buf[np + 4] > 0;
    return AT_OK;
}
