/* The CPU executor: each thread takes a chunk of samples through the nodes, with no wait
 * between nodes except at sync points.
 *
 * A training pass cuts the batch into one contiguous chunk per thread; parameter gradients of
 * thread t > 0 go to a private buffer that is added into the shared one in thread order
 * afterwards. A node that needs the whole batch (BatchNorm in training mode) is a sync point:
 * every thread sums its chunk, the sums are added in thread order on one thread (the same
 * additions for a thread count, so results are deterministic), the layer reduces them, and the
 * threads go on. A pass without sync points and weight gradients (evaluation, attack steps)
 * hands out smaller chunks as threads free up (take_chunk): no sample's result depends on its
 * chunk, so the bits are the same as with a fixed split. */
#include "net_internal.h"

#include <omp.h>
#include <string.h>


/* What every thread of one pass shares. */
typedef struct pass {
    at_net *net;
    int n, T;
    bool sync;         /* fixed split, sync points active (training-mode BatchNorm) */
    const float *x;    /* prediction: the caller's input, read in place */
    bool infer;        /* prediction: tensors in the plan's short-lived slots */
    bool params, input;
    const float *dlogits;
    float *dx;
} pass;

/* Threads for a pass over n samples: one per chunk of at least ~1M multiply-adds. Below that a
 * second thread costs more in wake-up and barrier time than it saves (seed-mlp batches of 8
 * took seconds instead of milliseconds with two threads on a busy machine). */
static int thread_count_for(const at_net *net, int n) {
    double macs = 0.0;
    for (int l = 0; l < net->nlayers; l++) {
        const at_layer *L = &net->layers[l];
        macs += L->w_count ? (double)L->w_count * L->out_h * L->out_w : (double)L->out_size;
    }
    int useful = (int)AT_MIN((double)n, 1.0 + macs * n / 1e6);
    return AT_MAX(1, AT_MIN(net->threads, useful));
}

static void chunk_bounds(int n, int parts, int t, int *begin, int *end) {
    *begin = (int)((int64_t)n * t / parts);
    *end = (int)((int64_t)n * (t + 1) / parts);
}

static at_ctx make_ctx(const at_net *net, int t, int first, bool training) {
    at_ctx ctx = {net->params, t == 0 ? net->grads : net->thread_grads[t], net->work[t],
                  training, net->dropout_key, net->sample_offset + first, NULL, net->buffers, net->state,
                  NULL, NULL};
    return ctx;
}

/* Layer l's kept values for the chunk that starts at sample `first` (NULL if it keeps none). */
static float *kept_part(const at_net *net, int l, int first) {
    if (!net->kept[l]) return NULL;
    return net->kept[l] + (size_t)first * net->layers[l].kept_per_sample;
}

static float *rows(float *base, int first, int width) { return base + (size_t)first * width; }

/* ------------------------------------------------------------ sync points */

static double *thread_stats(const at_net *net, int t) {
    return net->stats + (size_t)t * (size_t)AT_MAX(net->plan.max_stats, 1);
}

/* Data-parallel training: the batch sums and the sample count added over the ranks, so that
 * every rank normalises with the whole global batch's statistics (SyncBatchNorm). */
static int sum_over_ranks(const at_net *net, double *total, size_t count, int n) {
    if (!net->comm) return n;
    double samples = n;
    net->comm->allreduce_sum(net->comm->user, total, count);
    net->comm->allreduce_sum(net->comm->user, &samples, 1);
    return (int)samples;
}

/* Called by every thread of a fixed-split pass with its sums in acc: adds them in thread order
 * on the master thread (the one that may talk to MPI) and runs the layer's reduce hook on the
 * total. */
static void sync_point(const pass *P, const at_layer *L, bool forward, bool param_grads) {
    const at_layer_ops *ops = at_layer_ops_for(L->d.kind);
#pragma omp barrier
#pragma omp master
    {
        at_net *net = P->net;
        double *total = thread_stats(net, net->threads);
        memcpy(total, thread_stats(net, 0), sizeof(double) * L->stats_count);
        for (int u = 1; u < P->T; u++) {
            const double *part = thread_stats(net, u);
            for (size_t i = 0; i < L->stats_count; i++) total[i] += part[i];
        }
        const int n = sum_over_ranks(net, total, L->stats_count, P->n);
        const at_ctx ctx = make_ctx(net, 0, 0, forward ? net->training : net->last_training);
        /* Parameter gradients computed from sums over every rank (BatchNorm's weight and bias)
         * are added on rank 0 alone: the ranks' gradients are summed next. */
        if (forward)
            ops->forward_reduce(L, &ctx, total, n);
        else
            ops->backward_reduce(L, &ctx, total, n, param_grads && (!net->comm || net->comm->rank == 0));
    }
#pragma omp barrier /* every thread sees the reduced state */
}

/* ------------------------------------------------------------ forward */

/* Tensor t's rows for the chunk at `begin`: its activation buffer, or in a prediction its slot
 * (each chunk at the slot's width times begin, whichever tensor the slot holds: threads are not
 * synchronised between nodes) or the caller's input. */
static float *tensor_rows(const pass *P, int t, int begin) {
    const at_net *net = P->net;
    if (!P->infer) return rows(at_tensor_data(net, t), begin, at_tensor_stride(net, t));
    if (t < 0) return (float *)P->x + (size_t)begin * net_in_size(net);
    const int k = net->plan.infer_slot[t + 1];
    return rows(net->infer[k], begin, net->plan.infer_width[k]);
}

static void forward_node(const pass *P, at_ctx *ctx, int l, int begin, int end) {
    at_net *net = P->net;
    const at_layer *L = &net->layers[l];
    const at_layer_ops *ops = at_layer_ops_for(L->d.kind);
    const float *in = tensor_rows(P, L->src[0], begin);
    float *out = tensor_rows(P, l, begin);
    ctx->x2 = L->nsrc == 2 ? tensor_rows(P, L->src[1], begin) : NULL;
    /* Only a training forward keeps: attack and evaluation passes need no weight gradient, and
     * writing the kept buffer would cost them time. */
    ctx->kept = net->training ? kept_part(net, l, begin) : NULL;
    if (P->sync && ops->forward_stats) {
        double *acc = thread_stats(net, omp_get_thread_num());
        memset(acc, 0, sizeof(double) * L->stats_count);
        ops->forward_stats(L, ctx, in, end - begin, acc);
        sync_point(P, L, true, false);
    }
    ops->forward(L, ctx, in, out, end - begin);
    if (net->hooks) net->hooks->forward(net, l, out, begin, end - begin, omp_get_thread_num());
}

/* The forward pass of samples [begin, end) through every node. */
static void forward_chunk(const pass *P, at_ctx ctx, const float *x, int begin, int end) {
    at_net *net = P->net;
    /* The input is kept for backward; each thread copies its own samples. */
    const int in_size = net_in_size(net);
    if (!P->infer)
        memcpy(rows(net->input_copy, begin, in_size), x + (size_t)begin * in_size,
               sizeof(float) * (size_t)(end - begin) * in_size);
    for (int l = 0; l < net->nlayers && end > begin; l++)
        if (!net->layers[l].fused) forward_node(P, &ctx, l, begin, end);
}

/* What a shared-out chunk's activations may take: a chunk goes through every layer forward and
 * back before the next, so its tensors are read again while still in cache if they fit. */
enum { CHUNK_BYTES = 8 << 20 };

/* Samples per shared-out chunk: about four per thread, so that a thread on a slower core takes
 * fewer of them, and at least 16, so that the products stay efficient; fewer where a chunk's
 * activations would pass CHUNK_BYTES (resnet8 at 28x28: 0.58 MB a sample, so chunks of 64 of
 * pgd20-eval's 512 went to memory between the layers; seed-cnn, smallcnn and mlp take 30-40 KB
 * a sample and keep their chunks). */
static int dynamic_chunk(const at_net *net, int n, int T) {
    size_t floats = (size_t)net_in_size(net);
    for (int l = 0; l < net->nlayers; l++)
        if (!net->layers[l].fused) floats += (size_t)net->layers[l].out_size;
    const size_t fit = CHUNK_BYTES / (sizeof(float) * AT_MAX(floats, 1));
    const int even = (n + 4 * T - 1) / (4 * T);
    return AT_MAX(MIN_CHUNK, (int)AT_MIN((size_t)even, fit));
}

/* The next samples [begin, end) thread t works on, false when there are none. A fixed split
 * gives each thread one slice (turn 0); a shared one hands out `chunk` samples at a time from
 * *next. */
static bool take_chunk(bool dynamic, int n, int T, int t, int chunk, int turn, int *next,
                       int *begin, int *end) {
    if (!dynamic) {
        chunk_bounds(n, T, t, begin, end);
        return turn == 0;
    }
    int first;
#pragma omp atomic capture
    {
        first = *next;
        *next += chunk;
    }
    *begin = AT_MIN(first, n);
    *end = AT_MIN(first + chunk, n);
    return *begin < *end;
}

/* A fresh dropout key per forward pass; backward reuses it to rebuild the masks. */
static void next_dropout_key(at_net *net) {
    uint64_t k = net->seed * 0x9E3779B97F4A7C15ull + (++net->forward_count);
    k = (k ^ (k >> 31)) * 0xD6E8FEB86659FD93ull;
    net->dropout_key = k ^ (k >> 32);
}

/* BatchNorm in training mode needs two values per channel (PyTorch refuses one as well). */
static at_status check_batch(const at_net *net, int n) {
    for (int l = 0; net->training && l < net->nlayers; l++) {
        const at_layer *L = &net->layers[l];
        if (at_layer_ops_for(L->d.kind)->forward_stats && !L->fused &&
            (int64_t)n * L->in_h * L->in_w < 2)
            return at_fail(AT_ERR_ARG,
                           "layer %d (%s) in training mode needs more than one value per channel "
                           "(batch of %d)",
                           l, L->d.name, n);
    }
    return AT_OK;
}

static at_status cpu_forward(at_net *net, const float *x, int n) {
    at_status s = check_batch(net, n);
    if (s == AT_OK && net->training) s = at_plan_reserve_kept(net, n);
    if (s == AT_OK && net->hooks) s = net->hooks->pass_begin(net, n, false);
    if (s != AT_OK) return s;
    next_dropout_key(net);
    const int T = thread_count_for(net, n);
    /* A training forward keeps each thread's samples fixed (its backward sums weight gradients
     * per thread, in a fixed order, and sync points need every thread); other passes share
     * chunks out as threads free up. */
    const bool dynamic = !net->training;
    const int chunk = dynamic ? dynamic_chunk(net, n, T) : 0;
    const pass P = {net, n, T, net->training, NULL, false, false, false, NULL, NULL};
    int next = 0;
#pragma omp parallel num_threads(T)
    {
        const int t = omp_get_thread_num();
        int begin, end;
        for (int turn = 0; take_chunk(dynamic, n, T, t, chunk, turn, &next, &begin, &end); turn++) {
            if (dynamic) net->chunk_owner[begin / chunk] = t;
            forward_chunk(&P, make_ctx(net, t, begin, net->training), x, begin, end);
        }
    }
    net->last_chunk = chunk;
    net->last_n = n;
    net->last_training = net->training;
    return net->hooks ? net->hooks->pass_end(net) : AT_OK;
}

/* ------------------------------------------------------------ backward */

static void add_into(float *restrict dst, const float *restrict src, size_t count) {
    for (size_t i = 0; i < count; i++) dst[i] += src[i];
}

/* Gradient slot s's rows for the chunk at `begin`. Every tensor in a slot starts its chunk at
 * the same offset, the slot's width times begin: threads are not synchronised between nodes,
 * so a chunk's place must not depend on which tensor the slot holds at the moment. */
static float *slot_rows(const at_net *net, int s, int begin) {
    return rows(net->grad[s], begin, net->plan.slot_width[s]);
}

/* Where input i of node l writes its gradient for the chunk at `begin`: the source tensor's
 * slot, the caller's dx, or scratch to be added into either (NULL: not wanted). */
static float *grad_out(const pass *P, const at_layer *L, int i, int begin, float **target) {
    at_net *net = P->net;
    const int t = L->src[i];
    *target = NULL;
    if (!at_plan_needs_grad(net, t, P->params, P->input)) return NULL;
    const at_grad_edge *e = &net->plan.edges[L->index][i];
    *target = e->target < 0 ? rows(P->dx, begin, at_tensor_size(net, t)) : slot_rows(net, e->target, begin);
    return e->scratch < 0 ? *target : slot_rows(net, e->scratch, begin);
}

static void backward_node(const pass *P, at_ctx *ctx, int l, int begin, int end) {
    at_net *net = P->net;
    const at_layer *L = &net->layers[l];
    const at_layer_ops *ops = at_layer_ops_for(L->d.kind);
    float *target[2] = {NULL, NULL}, *d_in[2] = {NULL, NULL};
    for (int i = 0; i < L->nsrc; i++) d_in[i] = grad_out(P, L, i, begin, &target[i]);
    const bool param_grads = P->params && L->w_count > 0;
    if (!param_grads && !d_in[0] && !d_in[1]) return; /* nothing below needs it */
    const int n = end - begin;
    const float *dy = l == net->plan.out_tensor
                          ? P->dlogits + (size_t)begin * L->out_size
                          : slot_rows(net, net->plan.grad_slot[l + 1], begin);
    const float *x = tensor_rows(P, L->src[0], begin), *y = tensor_rows(P, l, begin);
    ctx->x2 = L->nsrc == 2 ? tensor_rows(P, L->src[1], begin) : NULL;
    ctx->dx2 = d_in[1];
    ctx->kept = net->last_training ? kept_part(net, l, begin) : NULL;
    /* dy is the slot's (writable) unless l is the output, whose gradient is the caller's. */
    if (net->hooks && l != net->plan.out_tensor) net->hooks->backward(net, l, (float *)dy, begin, n);
    if (P->sync && ops->backward_stats) {
        double *acc = thread_stats(net, omp_get_thread_num());
        memset(acc, 0, sizeof(double) * L->stats_count);
        ops->backward_stats(L, ctx, x, y, dy, n, acc);
        sync_point(P, L, false, param_grads);
    }
    ops->backward(L, ctx, x, y, dy, d_in[0], n, param_grads);
    for (int i = 0; i < L->nsrc; i++)
        if (d_in[i] && d_in[i] != target[i])
            add_into(target[i], d_in[i], (size_t)n * at_tensor_size(net, L->src[i]));
}

/* The backward pass of samples [begin, end), from the logits' gradient down. */
static void backward_chunk(const pass *P, at_ctx ctx, int begin, int end) {
    at_net *net = P->net;
    if (end <= begin) return;
    for (int l = net->nlayers - 1; l >= 0; l--)
        if (!net->layers[l].fused) backward_node(P, &ctx, l, begin, end);
    /* Nothing but Flattens: the input gradient is the output gradient. */
    if (P->input && net->plan.out_tensor < 0) {
        const int size = net_in_size(net);
        memcpy(rows(P->dx, begin, size), P->dlogits + (size_t)begin * size,
               sizeof(float) * (size_t)(end - begin) * size);
    }
}

/* Each thread sums one range of every thread's gradients, in thread order: the same additions
 * as one thread summing them all. */
static void sum_thread_grads(at_net *net, int t, int T) {
#pragma omp barrier
    size_t lo, hi;
    at_split_range(net->nparams, t, T, &lo, &hi);
    float *restrict sum = net->grads;
    for (int u = 1; u < T; u++) {
        const float *restrict src = net->thread_grads[u];
        for (size_t i = lo; i < hi; i++) sum[i] += src[i];
    }
}

/* A pass without weight gradients after a forward that shared chunks out goes over the same
 * chunks: each thread first the ones it ran forward, then any another has not begun. */
static void backward_shared(const pass *P, int t, int chunk, int chunks) {
    at_net *net = P->net;
    for (int round = 0; round < 2; round++)
        for (int c = 0; c < chunks; c++) {
            if (round == 0 && net->chunk_owner[c] != t) continue;
            int taken;
#pragma omp atomic capture
            {
                taken = net->chunk_claimed[c];
                net->chunk_claimed[c] = 1;
            }
            if (taken) continue;
            const int begin = c * chunk;
            backward_chunk(P, make_ctx(net, t, begin, net->last_training), begin,
                           AT_MIN(P->n, begin + chunk));
        }
}

static at_status cpu_backward(at_net *net, const float *dlogits, bool params, bool input, float *dx) {
    const int n = net->last_n;
    const int T = thread_count_for(net, n);
    const int chunk = params ? 0 : net->last_chunk;
    const int chunks = chunk ? (n + chunk - 1) / chunk : 0;
    if (chunks) memset(net->chunk_claimed, 0, sizeof(int) * (size_t)chunks);
    const pass P = {net, n, T, net->last_training, NULL, false, params, input, dlogits, dx};
#pragma omp parallel num_threads(T)
    {
        const int t = omp_get_thread_num();
        /* Threads past the first accumulate into buffers of their own, summed below. */
        if (params && t > 0) memset(net->thread_grads[t], 0, sizeof(float) * net->nparams);
        if (chunks) {
            backward_shared(&P, t, chunk, chunks);
        } else {
            int begin, end;
            chunk_bounds(n, T, t, &begin, &end);
            backward_chunk(&P, make_ctx(net, t, begin, net->last_training), begin, end);
        }
        if (params && T > 1) sum_thread_grads(net, t, T);
    }
    return AT_OK;
}

static at_status cpu_input_gradient(at_net *net, const float *x, int n, at_chunk_loss_fn loss,
                                    void *user, float *dlogits, float *dx) {
    const at_status s = net->hooks ? net->hooks->pass_begin(net, n, false) : AT_OK;
    if (s != AT_OK) return s;
    next_dropout_key(net); /* as at_net_forward, so later training passes draw the same masks */
    const int T = thread_count_for(net, n), chunk = dynamic_chunk(net, n, T);
    const float *z = at_tensor_data(net, net->plan.out_tensor);
    const pass P = {net, n, T, false, NULL, false, false, true, dlogits, dx};
    int next = 0;
#pragma omp parallel num_threads(T)
    {
        const int t = omp_get_thread_num();
        int begin, end;
        for (int turn = 0; take_chunk(true, n, T, t, chunk, turn, &next, &begin, &end); turn++) {
            net->chunk_owner[begin / chunk] = t;
            forward_chunk(&P, make_ctx(net, t, begin, false), x, begin, end);
            loss(user, z, begin, end, dlogits);
            backward_chunk(&P, make_ctx(net, t, begin, false), begin, end);
        }
    }
    net->last_chunk = chunk;
    net->last_n = n;
    net->last_training = false;
    return AT_OK;
}

/* An eval-mode forward that keeps nothing for backward: shared-out chunks over the prediction
 * slots, the input read in place. Each sample's logits are at_net_forward's bits. */
static at_status cpu_predict(at_net *net, const float *x, int n) {
    const at_status s = net->hooks ? net->hooks->pass_begin(net, n, true) : AT_OK;
    if (s != AT_OK) return s;
    next_dropout_key(net); /* as at_net_forward, so later training passes draw the same masks */
    const int T = thread_count_for(net, n), chunk = dynamic_chunk(net, n, T);
    const pass P = {net, n, T, false, x, true, false, false, NULL, NULL};
    int next = 0;
#pragma omp parallel num_threads(T)
    {
        const int t = omp_get_thread_num();
        int begin, end;
        for (int turn = 0; take_chunk(true, n, T, t, chunk, turn, &next, &begin, &end); turn++)
            forward_chunk(&P, make_ctx(net, t, begin, false), x, begin, end);
    }
    net->last_n = 0; /* nothing for a backward pass */
    return AT_OK;
}

const at_executor at_cpu_executor = {cpu_forward, cpu_backward, cpu_input_gradient, cpu_predict};

/* ------------------------------------------------------------ the public passes */

at_status at_net_forward(at_net *net, const float *x, int n, const float **logits) {
    if (n <= 0) return at_fail(AT_ERR_ARG, "forward pass needs at least one sample (got %d)", n);
    at_status s = at_net_reserve(net, n);
    if (s == AT_OK) s = net->exec->forward(net, x, n);
    if (s == AT_OK && logits) *logits = at_tensor_data(net, net->plan.out_tensor);
    return s;
}

at_status at_net_backward(at_net *net, const float *dlogits, int flags, float *dx) {
    if (net->last_n <= 0) return at_fail(AT_ERR_ARG, "backward pass without a forward pass");
    if ((flags & AT_GRAD_INPUT) && !dx)
        return at_fail(AT_ERR_ARG, "AT_GRAD_INPUT needs an output buffer for the input gradient");
    return net->exec->backward(net, dlogits, (flags & AT_GRAD_PARAMS) != 0,
                               (flags & AT_GRAD_INPUT) != 0, dx);
}

at_status at_net_predict(at_net *net, const float *x, int n, const float **logits) {
    if (n <= 0) return at_fail(AT_ERR_ARG, "prediction needs at least one sample (got %d)", n);
    if (net->training)
        return at_fail(AT_ERR_ARG, "at_net_predict runs in eval mode (at_net_set_training(net, false))");
    at_status s = at_plan_reserve_infer(net, n);
    if (s == AT_OK) net->last_n = 0; /* no backward: its slots may lie over the activations */
    if (s == AT_OK) s = net->exec->predict(net, x, n);
    if (s != AT_OK) return s;
    const int t = net->plan.out_tensor;
    if (logits) *logits = t < 0 ? x : net->infer[net->plan.infer_slot[t + 1]];
    return AT_OK;
}

at_status at_net_input_gradient(at_net *net, const float *x, int n, at_chunk_loss_fn loss, void *user,
                                float *dlogits, float *dx, const float **logits) {
    if (n <= 0) return at_fail(AT_ERR_ARG, "input gradient needs at least one sample (got %d)", n);
    if (!x || !loss || !dlogits || !dx)
        return at_fail(AT_ERR_ARG, "at_net_input_gradient needs inputs, a loss, dlogits and dx");
    if (net->training)
        return at_fail(AT_ERR_ARG, "at_net_input_gradient runs in eval mode (at_net_set_training(net, false))");
    at_status s = at_net_reserve(net, n);
    if (s == AT_OK) s = net->exec->input_gradient(net, x, n, loss, user, dlogits, dx);
    if (s == AT_OK && logits) *logits = at_tensor_data(net, net->plan.out_tensor);
    return s;
}
