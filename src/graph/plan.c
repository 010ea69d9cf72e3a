/* The buffer plan: computed once per graph, allocated by at_net_reserve.
 *
 * Activations: every node that runs has an output buffer of its own in one arena (a backward
 * pass reads them), a fused node shares its source's, and a prediction borrows the arena for its
 * slots when it fits. A tensor that no backward reads (an Add's input: a residual branch's last
 * BatchNorm, a 1x1 shortcut) lives only during the forward, in a gradient slot, idle then:
 * its rows are addressed at the slot's width, as the gradients are, so that a chunk's forward
 * and another chunk's backward never overlap (plan_forward_only). Gradients live in slots: walking the nodes in
 * backward order, a tensor's gradient takes a free slot when its last reader runs backward
 * (the first to reach it) and frees it once its producer has consumed it. A chain therefore
 * alternates between two slots; a tensor read by several nodes (a residual block's input)
 * keeps its slot until all of them have added into it, each reader after the first writing
 * into a scratch slot that is then added.
 *
 * Prediction (at_net_predict: evaluation, no backward) needs far less: slots assigned in forward
 * order, each freed after its tensor's last reader. The columns a training forward keeps for the
 * weight gradient take memory only up to a budget; a layer beyond it rebuilds them. */
#include "net_internal.h"

#include <string.h>

/* A free-slot list over at most 2 * nlayers + 2 slots, each remembering its widest tensor. */
typedef struct slot_pool {
    int count;
    bool *busy;
    int *width;
} slot_pool;

static int take_slot(slot_pool *p, int width) {
    int s = 0;
    while (s < p->count && p->busy[s]) s++;
    if (s == p->count) p->width[p->count++] = 0;
    p->busy[s] = true;
    if (width > p->width[s]) p->width[s] = width;
    return s;
}

static void give_slot(slot_pool *p, int s) {
    if (s >= 0) p->busy[s] = false;
}

int at_tensor_size(const at_net *net, int t) {
    return t < 0 ? net_in_size(net) : net->layers[t].out_size;
}

float *at_tensor_data(const at_net *net, int t) { return t < 0 ? net->input_copy : net->act[t]; }

int at_tensor_stride(const at_net *net, int t) {
    if (t >= 0 && net->plan.fwd_slot[t] >= 0) return net->plan.slot_width[net->plan.fwd_slot[t]];
    return at_tensor_size(net, t);
}

bool at_plan_needs_grad(const at_net *net, int t, bool params, bool input) {
    if (t < 0) return input;
    return input || (params && net->plan.param_below[t + 1]);
}

/* Readers, parameters upstream, and a check that every node's output is used. */
static at_status count_readers(at_net *net) {
    at_plan *P = &net->plan;
    const at_layer *last = &net->layers[net->nlayers - 1];
    P->out_tensor = last->fused ? last->src[0] : net->nlayers - 1;
    for (int l = 0; l < net->nlayers; l++) {
        const at_layer *L = &net->layers[l];
        if (L->fused) continue;
        bool below = L->w_count > 0;
        for (int i = 0; i < L->nsrc; i++) {
            P->readers[L->src[i] + 1]++;
            below = below || P->param_below[L->src[i] + 1];
        }
        P->param_below[l + 1] = below;
    }
    if (P->out_tensor >= 0 && P->readers[P->out_tensor + 1] > 0)
        return at_fail(AT_ERR_ARG, "the network's output (layer %d) is also read by another layer",
                       P->out_tensor);
    for (int l = 0; l < net->nlayers; l++)
        if (!net->layers[l].fused && l != P->out_tensor && P->readers[l + 1] == 0)
            return at_fail(AT_ERR_ARG, "layer %d (%s) is never used: nothing reads its output", l,
                           net->layers[l].d.name);
    return AT_OK;
}

/* Whether tensor t is needed only during the forward: its producer's backward does not read it
 * (no fused ReLU gate either), nor does any reader's, and it is not the network's output. */
static bool forward_only(const at_net *net, int t) {
    const at_layer *T = &net->layers[t];
    if (t == net->plan.out_tensor || T->relu_out || !at_layer_ops_for(T->d.kind)->output_dead_in_backward)
        return false;
    for (int l = t + 1; l < net->nlayers; l++) {
        const at_layer *L = &net->layers[l];
        for (int i = 0; !L->fused && i < L->nsrc; i++)
            if (L->src[i] == t && !at_layer_ops_for(L->d.kind)->inputs_dead_in_backward) return false;
    }
    return true;
}

/* Forward-only tensors into gradient slots wide enough, where no other forward-only tensor in
 * the slot is alive from the producer to the last reader (last[t + 1]). */
static void plan_forward_only(at_net *net, const int *last) {
    at_plan *P = &net->plan;
    for (int t = 0; t < net->nlayers; t++) {
        P->fwd_slot[t] = -1;
        if (net->layers[t].fused || !forward_only(net, t)) continue;
        for (int s = 0; s < P->nslots && P->fwd_slot[t] < 0; s++) {
            bool free = P->slot_width[s] >= net->layers[t].out_size;
            for (int u = 0; free && u < t; u++) free = P->fwd_slot[u] != s || last[u + 1] < t;
            if (free) P->fwd_slot[t] = s;
        }
    }
}

/* Gradient slots in backward order (see the header). */
static void assign_slots(at_net *net, slot_pool *pool) {
    at_plan *P = &net->plan;
    bool input_seen = false; /* the caller's dx: the first writer writes it, later ones add */
    for (int t = 0; t <= net->nlayers; t++) P->grad_slot[t] = -1;
    for (int l = net->nlayers - 1; l >= 0; l--) {
        const at_layer *L = &net->layers[l];
        if (L->fused) continue;
        int scratch[2] = {-1, -1};
        for (int i = 0; i < L->nsrc; i++) {
            const int t = L->src[i];
            bool seen;
            if (t < 0) {
                seen = input_seen;
                input_seen = true;
            } else {
                seen = P->grad_slot[t + 1] >= 0;
                if (!seen) P->grad_slot[t + 1] = take_slot(pool, at_tensor_size(net, t));
            }
            at_grad_edge *e = &P->edges[l][i];
            e->target = t < 0 ? -1 : P->grad_slot[t + 1];
            e->scratch = seen ? (scratch[i] = take_slot(pool, at_tensor_size(net, t))) : -1;
        }
        for (int i = 0; i < 2; i++) give_slot(pool, scratch[i]);
        give_slot(pool, P->grad_slot[l + 1]); /* -1 for the output: its gradient is dlogits */
    }
}

/* Prediction slots in forward order: a node's output takes a free slot, then the inputs it read
 * for the last time give theirs back (after, so that output and inputs never share one). */
static void assign_infer_slots(at_net *net, slot_pool *pool, const int *last) {
    at_plan *P = &net->plan;
    memset(pool->busy, 0, sizeof(bool) * (2 * (size_t)net->nlayers + 4));
    pool->count = 0;
    for (int t = 0; t <= net->nlayers; t++) P->infer_slot[t] = -1;
    for (int l = 0; l < net->nlayers; l++) {
        const at_layer *L = &net->layers[l];
        if (L->fused) continue;
        if (l == P->out_tensor) { /* its own slot, exactly out_size wide: the logits array */
            P->infer_slot[l + 1] = pool->count;
            pool->busy[pool->count] = true;
            pool->width[pool->count++] = L->out_size;
        } else {
            P->infer_slot[l + 1] = take_slot(pool, L->out_size);
        }
        for (int i = 0; i < L->nsrc; i++) {
            const int t = L->src[i];
            if (t >= 0 && last[t + 1] == l && t != P->out_tensor) give_slot(pool, P->infer_slot[t + 1]);
        }
    }
}

/* last[t + 1]: the last node that reads tensor t. */
static int *last_readers(const at_net *net) {
    int *last = at_calloc((size_t)net->nlayers + 1, sizeof *last, "plan");
    for (int l = 0; last && l < net->nlayers; l++)
        for (int i = 0; !net->layers[l].fused && i < net->layers[l].nsrc; i++)
            last[net->layers[l].src[i] + 1] = l;
    return last;
}

static at_status allocate_plan(at_net *net, slot_pool *pool) {
    at_plan *P = &net->plan;
    const size_t n = (size_t)net->nlayers + 1, max_slots = 2 * n + 4;
    P->infer_slot = at_calloc(n, sizeof *P->infer_slot, "plan");
    P->readers = at_calloc(n, sizeof *P->readers, "plan");
    P->param_below = at_calloc(n, sizeof *P->param_below, "plan");
    P->grad_slot = at_calloc(n, sizeof *P->grad_slot, "plan");
    P->edges = at_calloc(n, sizeof *P->edges, "plan");
    P->fwd_slot = at_calloc(n, sizeof *P->fwd_slot, "plan");
    pool->busy = at_calloc(max_slots, sizeof *pool->busy, "plan");
    pool->width = at_calloc(max_slots, sizeof *pool->width, "plan");
    pool->count = 0;
    bool ok = P->readers && P->param_below && P->grad_slot && P->edges && pool->busy && pool->width &&
              P->infer_slot && P->fwd_slot;
    return ok ? AT_OK : AT_ERR_NOMEM;
}

at_status at_plan_build(at_net *net) {
    at_plan *P = &net->plan;
    slot_pool pool = {0, NULL, NULL};
    at_status s = allocate_plan(net, &pool);
    if (s == AT_OK) s = count_readers(net);
    int *last = s == AT_OK ? last_readers(net) : NULL;
    if (s == AT_OK && !last) s = AT_ERR_NOMEM;
    if (s == AT_OK) {
        assign_slots(net, &pool);
        for (int l = 0; l < net->nlayers; l++)
            P->max_stats = AT_MAX(P->max_stats, (int)net->layers[l].stats_count);
        P->nslots = pool.count;
        P->slot_width = pool.width; /* kept: the pool's widths are the slots' */
        plan_forward_only(net, last);
        pool.width = at_calloc(2 * (size_t)net->nlayers + 4, sizeof *pool.width, "plan");
        if (pool.width) assign_infer_slots(net, &pool, last);
        s = pool.width ? AT_OK : AT_ERR_NOMEM;
        P->ninfer = pool.count;
        P->infer_width = pool.width;
        pool.width = NULL;
    }
    free(last);
    free(pool.busy);
    free(pool.width);
    return s;
}

void at_plan_free(at_plan *P) {
    free(P->readers);
    free(P->param_below);
    free(P->grad_slot);
    free(P->edges);
    free(P->fwd_slot);
    free(P->slot_width);
    free(P->infer_slot);
    free(P->infer_width);
    memset(P, 0, sizeof *P);
}

/* ------------------------------------------------------------ allocation */

void at_net_free_buffers(at_net *net) {
    if (net->grad)
        for (int s = 0; s < net->plan.nslots; s++) free(net->grad[s]);
    if (net->kept)
        for (int l = 0; l < net->nlayers; l++) free(net->kept[l]);
    if (net->infer && !net->infer_in_arena)
        for (int s = 0; s < net->plan.ninfer; s++) free(net->infer[s]);
    for (int t = 0; t < net->threads; t++) {
        if (net->work) free(net->work[t]);
        if (net->thread_grads) free(net->thread_grads[t]);
    }
    free(net->act);
    free(net->arena);
    free(net->grad);
    free(net->kept);
    free(net->infer);
    free(net->work);
    free(net->thread_grads);
    free(net->input_copy);
    free(net->stats);
    free(net->chunk_owner);
    free(net->chunk_claimed);
    net->act = net->grad = net->kept = net->work = net->thread_grads = net->infer = NULL;
    net->work_batch = net->infer_batch = net->kept_batch = 0;
    net->input_copy = net->arena = NULL;
    net->arena_floats = 0;
    net->infer_in_arena = false;
    net->stats = NULL;
    net->chunk_owner = net->chunk_claimed = NULL;
    net->last_training = false;
    net->max_batch = net->threads = 0;
    net->last_n = 0;
}

/* Floats rounded up to whole cache lines, so that every buffer carved from a block is aligned. */
static size_t lines(size_t floats) { return (floats + 15) & ~(size_t)15; }

static bool allocate_tensors(at_net *net, int max_batch) {
    bool ok = (net->input_copy = at_alloc_floats((size_t)max_batch * net_in_size(net), "activations"));
    size_t total = 0;
    for (int l = 0; l < net->nlayers; l++)
        if (!net->layers[l].fused && net->plan.fwd_slot[l] < 0)
            total += lines((size_t)max_batch * net->layers[l].out_size);
    ok = ok && (net->arena = at_alloc_floats(total, "activations"));
    net->arena_floats = ok ? total : 0;
    for (int s = 0; ok && s < net->plan.nslots; s++)
        ok = (net->grad[s] = at_alloc_floats((size_t)max_batch * net->plan.slot_width[s],
                                             "activation gradients"));
    for (int l = 0, at = 0; ok && l < net->nlayers; l++) {
        const int slot = net->plan.fwd_slot[l];
        if (net->layers[l].fused) continue;
        net->act[l] = slot >= 0 ? net->grad[slot] : net->arena + at;
        if (slot < 0) at += lines((size_t)max_batch * net->layers[l].out_size);
    }
    return ok;
}

/* Per-thread scratch for chunks of up to n samples (a small pass may run on one thread, with
 * the whole batch as its chunk; conv scratch is bounded by its block size). */
static bool ensure_work(at_net *net, int n) {
    if (n <= net->work_batch) return true;
    size_t work = 0;
    for (int l = 0; l < net->nlayers; l++) {
        const at_layer *L = &net->layers[l];
        work = AT_MAX(work, at_layer_ops_for(L->d.kind)->workspace(L, n));
    }
    for (int t = 0; t < net->threads; t++) {
        free(net->work[t]);
        if (!(net->work[t] = at_alloc_floats(work, "workspace"))) {
            net->work_batch = 0;
            return false;
        }
    }
    net->work_batch = n;
    return true;
}

static bool allocate_threads(at_net *net, int threads, int max_batch) {
    const size_t chunks = (size_t)max_batch / MIN_CHUNK + 1;
    bool ok = (net->chunk_owner = at_calloc(chunks, sizeof(int), "chunk owners"));
    ok = ok && (net->chunk_claimed = at_calloc(chunks, sizeof(int), "chunk claims"));
    ok = ok && (net->stats = at_calloc((size_t)(threads + 1) * (size_t)AT_MAX(net->plan.max_stats, 1),
                                       sizeof(double), "batch statistics"));
    for (int t = 1; ok && t < threads; t++)
        ok = (net->thread_grads[t] = at_alloc_floats(net->nparams, "thread gradients")) != NULL;
    return ok && ensure_work(net, max_batch);
}

/* Floats all kept buffers together may take: columns beyond it are rebuilt in backward, which
 * costs an im2row per layer and block. smallcnn's 7.6 MB at batch 128 fit (keeping them made
 * its training 16% faster); resnet8 would keep 49 MB, and was no faster keeping 21 MB of them
 * than none (1 thread, interleaved), so it keeps one layer's 6.9 MB. */
#define KEPT_BUDGET_FLOATS ((size_t)2 << 20)

at_status at_plan_reserve_kept(at_net *net, int n) {
    if (n <= net->kept_batch) return AT_OK;
    size_t used = 0;
    for (int l = 0; l < net->nlayers; l++) {
        const size_t per = net->layers[l].kept_per_sample;
        free(net->kept[l]);
        net->kept[l] = NULL;
        /* (beyond the budget: n * per is not formed, it could wrap around) */
        if (!per || (size_t)n > (KEPT_BUDGET_FLOATS - used) / per) continue;
        const size_t want = (size_t)n * per;
        if (!(net->kept[l] = at_alloc_floats(want, "kept rows"))) return AT_ERR_NOMEM;
        used += want;
    }
    net->kept_batch = n;
    return AT_OK;
}

/* The prediction slots for n samples inside the arena, if they fit there. */
static bool infer_in_arena(at_net *net, int n) {
    size_t need = 0;
    for (int k = 0; k < net->plan.ninfer; k++) need += lines((size_t)n * net->plan.infer_width[k]);
    if (need > net->arena_floats) return false;
    if (!net->infer_in_arena)
        for (int k = 0; k < net->plan.ninfer; k++) free(net->infer[k]);
    need = 0;
    for (int k = 0; k < net->plan.ninfer; k++) {
        net->infer[k] = net->arena + need;
        need += lines((size_t)n * net->plan.infer_width[k]);
    }
    return net->infer_in_arena = true;
}

/* Slots of their own, when the arena is smaller (no training or attack pass ran this big). */
static bool infer_own(at_net *net, int n) {
    for (int k = 0; k < net->plan.ninfer; k++) {
        if (!net->infer_in_arena) free(net->infer[k]);
        net->infer[k] = NULL;
    }
    net->infer_in_arena = false;
    for (int k = 0; k < net->plan.ninfer; k++)
        if (!(net->infer[k] = at_alloc_floats((size_t)n * net->plan.infer_width[k], "activations")))
            return false;
    return true;
}

at_status at_plan_reserve_infer(at_net *net, int n) {
    at_status s = at_net_reserve(net, 1); /* the per-thread parts, for the current thread count */
    if (s != AT_OK || n <= net->infer_batch) return s;
    if (!ensure_work(net, n)) return AT_ERR_NOMEM;
    if (!net->infer && !(net->infer = at_calloc((size_t)AT_MAX(net->plan.ninfer, 1), sizeof(float *), "slots")))
        return AT_ERR_NOMEM;
    if (!infer_in_arena(net, n) && !infer_own(net, n)) {
        net->infer_batch = 0;
        return AT_ERR_NOMEM;
    }
    net->infer_batch = n;
    return AT_OK;
}

at_status at_net_reserve(at_net *net, int max_batch) {
    if (max_batch <= 0) return at_fail(AT_ERR_ARG, "batch size must be positive, got %d", max_batch);
    int threads = at_get_threads();
    if (max_batch <= net->max_batch && threads == net->threads) return AT_OK;
    max_batch = AT_MAX(max_batch, net->max_batch);
    at_net_free_buffers(net);
    net->act = at_calloc((size_t)net->nlayers, sizeof(float *), "activations");
    net->kept = at_calloc((size_t)net->nlayers, sizeof(float *), "kept buffers");
    net->grad = at_calloc((size_t)AT_MAX(net->plan.nslots, 1), sizeof(float *), "gradient slots");
    net->work = at_calloc((size_t)threads, sizeof(float *), "workspaces");
    net->thread_grads = at_calloc((size_t)threads, sizeof(float *), "thread gradients");
    net->threads = threads;
    bool ok = net->act && net->kept && net->grad && net->work && net->thread_grads;
    ok = ok && allocate_tensors(net, max_batch) && allocate_threads(net, threads, max_batch);
    if (!ok) {
        at_net_free_buffers(net);
        return AT_ERR_NOMEM;
    }
    net->max_batch = max_batch;
    return AT_OK;
}
