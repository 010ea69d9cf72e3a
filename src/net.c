/* A network: a sequence of layers, one parameter buffer, one gradient buffer, and the
 * activations of the last forward pass.
 *
 * Threads: each thread runs every layer on a chunk of samples, so there is no synchronisation
 * between layers. A training pass cuts the batch into one contiguous chunk per thread; parameter
 * gradients of thread t > 0 go to a private buffer that is added into the shared one in thread
 * order afterwards: results are deterministic for a fixed thread count. A pass without weight
 * gradients (evaluation, attack steps) hands out smaller chunks as threads free up (take_chunk):
 * no sample's result depends on its chunk, so the bits are the same.
 *
 * A ReLU right after a layer that can apply it (ops->fuses_relu, e.g. a convolution) is fused:
 * the layer writes max(y, 0) in place, the ReLU is skipped in both passes and has no buffer of
 * its own, and the layer masks the incoming gradient itself. That saves a pass over the largest
 * activations; results are bit-identical to running the ReLU separately. A Flatten is skipped
 * the same way: its output is its input's floats. */
#include "layers/layer.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>


struct at_net {
    char *spec;
    int nlayers;
    at_layer *layers;
    int in_c, in_h, in_w;
    size_t nparams;
    float *params, *grads;
    int ntensors;
    at_param_info *tensors;
    bool training;
    uint64_t seed, forward_count, dropout_key;
    /* Buffers sized by at_net_reserve. */
    int max_batch, threads;
    float **act;          /* act[0] = input copy, act[l+1] = output of layer l (NULL if fused) */
    float *grad_a, *grad_b; /* ping-pong buffers for activation gradients */
    float **work;         /* per-thread scratch */
    float **thread_grads; /* per-thread parameter gradients, [0] unused (shared buffer) */
    float **kept;         /* per layer: what its training forward keeps (NULL if nothing) */
    bool kept_valid;      /* the last forward was in training mode: kept holds its values */
    int last_n;           /* batch size of the last forward, 0 if none */
    int lowest_param_layer;    /* the first layer with parameters (nlayers if none) */
    int first_computing_layer; /* the first layer that is not fused (nlayers if none) */
    /* Chunks of a pass that shares samples out (take_chunk): which thread ran each chunk of the
     * last forward, so that backward runs it on the same core (its activations are in that
     * core's cache), and which chunks the running backward has claimed. */
    int *chunk_owner, *chunk_claimed;
    int last_chunk; /* chunk size of the last forward; 0: it split the batch in fixed parts */
};

/* The fewest samples a pass hands a thread at a time (take_chunk). */
enum { MIN_CHUNK = 16 };

/* Where layer l's output lives: a fused ReLU's output is its producer's, rectified in place, and
 * a Flatten's is its input (the same floats). */
static float *input_of(const at_net *net, int l);
static float *output_of(const at_net *net, int l) {
    return net->layers[l].fused ? input_of(net, l) : net->act[l + 1];
}
static float *input_of(const at_net *net, int l) { return l == 0 ? net->act[0] : output_of(net, l - 1); }

static int max_activation(const at_net *net) {
    int m = net->in_c * net->in_h * net->in_w;
    for (int l = 0; l < net->nlayers; l++) m = AT_MAX(m, net->layers[l].out_size);
    return m;
}

static void free_buffers(at_net *net) {
    if (net->act)
        for (int l = 0; l <= net->nlayers; l++) free(net->act[l]);
    free(net->act);
    free(net->grad_a);
    free(net->grad_b);
    for (int t = 0; t < net->threads; t++) {
        if (net->work) free(net->work[t]);
        if (net->thread_grads) free(net->thread_grads[t]);
    }
    free(net->work);
    free(net->thread_grads);
    if (net->kept)
        for (int l = 0; l < net->nlayers; l++) free(net->kept[l]);
    free(net->kept);
    free(net->chunk_owner);
    free(net->chunk_claimed);
    net->chunk_owner = net->chunk_claimed = NULL;
    net->kept = NULL;
    net->kept_valid = false;
    net->act = NULL;
    net->grad_a = net->grad_b = NULL;
    net->work = net->thread_grads = NULL;
    net->max_batch = net->threads = 0;
    net->last_n = 0;
}

void at_net_free(at_net *net) {
    if (!net) return;
    free_buffers(net);
    free(net->spec);
    free(net->layers);
    free(net->params);
    free(net->grads);
    free(net->tensors);
    free(net);
}

static void add_tensor(at_net *net, const at_layer *L, bool bias) {
    at_param_info *t = &net->tensors[net->ntensors++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s.%s", L->d.name, bias ? "bias" : "weight");
    t->layer = L->index;
    t->is_bias = bias;
    t->offset = bias ? L->b_off : L->w_off;
    t->size = bias ? L->b_count : L->w_count;
    if (bias) {
        t->ndim = 1;
        t->shape[0] = L->out_c;
    } else if (L->d.kind == AT_LAYER_CONV2D) {
        t->ndim = 4;
        t->shape[0] = L->out_c;
        t->shape[1] = L->in_c;
        t->shape[2] = t->shape[3] = L->d.kernel;
    } else {
        t->ndim = 2;
        t->shape[0] = L->out_size;
        t->shape[1] = L->in_size;
    }
}

/* Writes the network as a spec (docs/architectures.md) when its layers are named by position,
 * as a spec would name them, so that a network built from layer descriptions can be saved and
 * rebuilt. Networks with other names keep an empty spec (at_net_from_spec sets its own). */
static at_status record_spec(at_net *net) {
    char spec[1024];
    size_t used = 0;
    spec[0] = '\0';
    for (int l = 0; l < net->nlayers; l++) {
        const at_layer_desc *d = &net->layers[l].d;
        char index[16];
        snprintf(index, sizeof index, "%d", l);
        if (strcmp(d->name, index) != 0) return AT_OK;
        char word[64];
        switch (d->kind) {
        case AT_LAYER_LINEAR: snprintf(word, sizeof word, "linear:%d", d->out); break;
        case AT_LAYER_CONV2D:
            snprintf(word, sizeof word, "conv:%d:%d:%d:%d", d->out, d->kernel, d->stride, d->pad);
            break;
        case AT_LAYER_MAXPOOL2D:
        case AT_LAYER_AVGPOOL2D:
            snprintf(word, sizeof word, "%s:%d:%d:%d",
                     d->kind == AT_LAYER_MAXPOOL2D ? "maxpool" : "avgpool", d->kernel, d->stride,
                     d->pad);
            break;
        case AT_LAYER_LEAKYRELU:
        case AT_LAYER_DROPOUT:
        case AT_LAYER_DROPOUT2D:
            snprintf(word, sizeof word, "%s:%.9g", at_layer_ops_for(d->kind)->name, (double)d->alpha);
            break;
        default: snprintf(word, sizeof word, "%s", at_layer_ops_for(d->kind)->name); break;
        }
        int w = snprintf(spec + used, sizeof spec - used, "%s%s", l ? "," : "", word);
        if (w < 0 || (size_t)w >= sizeof spec - used) return AT_OK; /* too long to record */
        used += (size_t)w;
    }
    return at_net_set_spec(net, spec);
}

at_status at_net_create(at_net **out, const at_layer_desc *layers, int nlayers, int in_c,
                        int in_h, int in_w) {
    *out = NULL;
    if (nlayers <= 0 || !layers) return at_fail(AT_ERR_ARG, "a network needs at least one layer");
    if (in_c <= 0 || in_h <= 0 || in_w <= 0)
        return at_fail(AT_ERR_SHAPE, "input shape %dx%dx%d is not positive", in_c, in_h, in_w);
    at_net *net = at_calloc(1, sizeof *net, "a network");
    if (!net) return AT_ERR_NOMEM;
    net->layers = at_calloc((size_t)nlayers, sizeof *net->layers, "layers");
    net->tensors = at_calloc((size_t)nlayers * 2, sizeof *net->tensors, "parameter list");
    net->spec = at_strdup("");
    if (!net->layers || !net->tensors || !net->spec) {
        at_net_free(net);
        return AT_ERR_NOMEM;
    }
    net->nlayers = nlayers;
    net->in_c = in_c;
    net->in_h = in_h;
    net->in_w = in_w;
    int c = in_c, h = in_h, w = in_w;
    size_t offset = 0;
    for (int l = 0; l < nlayers; l++) {
        at_layer *L = &net->layers[l];
        L->d = layers[l];
        L->index = l;
        if (L->d.name[0] == '\0') snprintf(L->d.name, sizeof L->d.name, "%d", l);
        const at_layer_ops *ops = at_layer_ops_for(L->d.kind);
        if (!ops) {
            at_status s = at_fail(AT_ERR_ARG, "layer %d has an unknown kind (%d)", l, (int)L->d.kind);
            at_net_free(net);
            return s;
        }
        L->in_c = c;
        L->in_h = h;
        L->in_w = w;
        L->in_size = c * h * w;
        at_status s = ops->setup(L);
        if (s != AT_OK) {
            at_net_free(net);
            return s;
        }
        if (L->out_c <= 0 || L->out_h <= 0 || L->out_w <= 0) {
            s = at_fail(AT_ERR_SHAPE, "layer %d (%s) would produce an empty %dx%dx%d output", l,
                        ops->name, L->out_c, L->out_h, L->out_w);
            at_net_free(net);
            return s;
        }
        L->out_size = L->out_c * L->out_h * L->out_w;
        L->w_off = offset;
        offset += L->w_count;
        L->b_off = offset;
        offset += L->b_count;
        if (L->w_count) add_tensor(net, L, false);
        if (L->b_count) add_tensor(net, L, true);
        c = L->out_c;
        h = L->out_h;
        w = L->out_w;
    }
    for (int i = 0; i < net->ntensors; i++)
        for (int j = 0; j < i; j++)
            if (strcmp(net->tensors[i].name, net->tensors[j].name) == 0) {
                at_status s = at_fail(AT_ERR_ARG, "two parameters would both be named '%s'",
                                      net->tensors[i].name);
                at_net_free(net);
                return s;
            }
    for (int l = 1; l < nlayers; l++) {
        at_layer *L = &net->layers[l], *prev = &net->layers[l - 1];
        const at_layer_ops *ops = at_layer_ops_for(prev->d.kind);
        if (L->d.kind == AT_LAYER_RELU && !prev->fused && ops->fuses_relu && ops->fuses_relu(prev)) {
            prev->relu_out = true;
            L->fused = true;
        }
    }
    /* NCHW is contiguous per sample: a Flatten changes the shape only, and runs in neither pass. */
    for (int l = 0; l < nlayers; l++)
        if (net->layers[l].d.kind == AT_LAYER_FLATTEN) net->layers[l].fused = true;
    net->lowest_param_layer = net->first_computing_layer = nlayers;
    for (int l = nlayers - 1; l >= 0; l--) {
        if (net->layers[l].w_count > 0) net->lowest_param_layer = l;
        if (!net->layers[l].fused) net->first_computing_layer = l;
    }
    net->nparams = offset;
    net->params = at_alloc_floats(offset, "parameters");
    net->grads = at_alloc_floats(offset, "gradients");
    if (!net->params || !net->grads) {
        at_net_free(net);
        return AT_ERR_NOMEM;
    }
    at_net_seed(net, 0);
    at_status s = record_spec(net);
    if (s != AT_OK) {
        at_net_free(net);
        return s;
    }
    *out = net;
    return AT_OK;
}

/* ------------------------------------------------------------ initialization */

void at_net_init_with(at_net *net, at_init_kind kind, uint64_t seed) {
    at_rng rng;
    at_rng_seed(&rng, seed);
    for (int l = 0; l < net->nlayers; l++) {
        const at_layer *L = &net->layers[l];
        if (!L->w_count) continue;
        size_t fan_in = L->w_count / (size_t)L->out_c;
        size_t fan_out = L->w_count / (size_t)L->in_c;
        if (L->d.kind == AT_LAYER_LINEAR) fan_out = (size_t)L->out_size;
        float *W = net->params + L->w_off, *b = net->params + L->b_off;
        double bound = 1.0 / sqrt((double)fan_in);
        for (size_t i = 0; i < L->w_count; i++) {
            switch (kind) {
            case AT_INIT_KAIMING_NORMAL: /* He et al., fan_in, gain sqrt(2) */
                W[i] = at_rng_normal(&rng) * (float)sqrt(2.0 / (double)fan_in);
                break;
            case AT_INIT_XAVIER_UNIFORM: {
                double a = sqrt(6.0 / (double)(fan_in + fan_out));
                W[i] = (float)((2.0 * at_rng_uniform(&rng) - 1.0) * a);
                break;
            }
            case AT_INIT_PYTORCH:
            default: W[i] = (float)((2.0 * at_rng_uniform(&rng) - 1.0) * bound); break;
            }
        }
        for (size_t i = 0; i < L->b_count; i++)
            b[i] = kind == AT_INIT_PYTORCH ? (float)((2.0 * at_rng_uniform(&rng) - 1.0) * bound)
                                           : 0.0f;
    }
}

void at_net_init(at_net *net, uint64_t seed) { at_net_init_with(net, AT_INIT_PYTORCH, seed); }

/* ------------------------------------------------------------ buffers */

at_status at_net_reserve(at_net *net, int max_batch) {
    if (max_batch <= 0) return at_fail(AT_ERR_ARG, "batch size must be positive, got %d", max_batch);
    int threads = at_get_threads();
    if (max_batch <= net->max_batch && threads == net->threads) return AT_OK;
    max_batch = AT_MAX(max_batch, net->max_batch);
    free_buffers(net);
    /* A small pass may run on fewer threads (thread_count_for), with larger chunks: size the
     * scratch for a whole batch on one thread (conv scratch is bounded by its block size). */
    int chunk = max_batch;
    size_t work = 0;
    for (int l = 0; l < net->nlayers; l++) {
        const at_layer *L = &net->layers[l];
        work = AT_MAX(work, at_layer_ops_for(L->d.kind)->workspace(L, chunk));
    }
    net->act = at_calloc((size_t)net->nlayers + 1, sizeof(float *), "activations");
    net->work = at_calloc((size_t)threads, sizeof(float *), "workspaces");
    net->thread_grads = at_calloc((size_t)threads, sizeof(float *), "thread gradients");
    net->threads = threads;
    bool ok = net->act && net->work && net->thread_grads;
    for (int l = 0; ok && l <= net->nlayers; l++) {
        if (l > 0 && net->layers[l - 1].fused) continue;
        int size = l == 0 ? at_net_in_size(net) : net->layers[l - 1].out_size;
        ok = (net->act[l] = at_alloc_floats((size_t)max_batch * size, "activations")) != NULL;
    }
    size_t biggest = (size_t)max_batch * max_activation(net);
    ok = ok && (net->grad_a = at_alloc_floats(biggest, "activation gradients"));
    ok = ok && (net->grad_b = at_alloc_floats(biggest, "activation gradients"));
    ok = ok && (net->kept = at_calloc((size_t)net->nlayers, sizeof(float *), "kept buffers"));
    const size_t chunks = (size_t)max_batch / MIN_CHUNK + 1;
    ok = ok && (net->chunk_owner = at_calloc(chunks, sizeof(int), "chunk owners"));
    ok = ok && (net->chunk_claimed = at_calloc(chunks, sizeof(int), "chunk claims"));
    for (int l = 0; ok && l < net->nlayers; l++) {
        const size_t per_sample = net->layers[l].kept_per_sample;
        if (per_sample)
            ok = (net->kept[l] = at_alloc_floats((size_t)max_batch * per_sample, "kept rows")) != NULL;
    }
    for (int t = 0; ok && t < threads; t++) {
        ok = (net->work[t] = at_alloc_floats(work, "workspace")) != NULL;
        if (ok && t > 0)
            ok = (net->thread_grads[t] = at_alloc_floats(net->nparams, "thread gradients")) != NULL;
    }
    if (!ok) {
        free_buffers(net);
        return AT_ERR_NOMEM;
    }
    net->max_batch = max_batch;
    return AT_OK;
}

/* ------------------------------------------------------------ mode */

void at_net_set_training(at_net *net, bool training) { net->training = training; }
bool at_net_is_training(const at_net *net) { return net->training; }
uint64_t at_net_forward_count(const at_net *net) { return net->forward_count; }
void at_net_set_forward_count(at_net *net, uint64_t count) { net->forward_count = count; }
void at_net_seed(at_net *net, uint64_t seed) {
    net->seed = seed;
    net->forward_count = 0;
}

/* ------------------------------------------------------------ passes */

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

static at_ctx make_ctx(const at_net *net, int t, int first) {
    at_ctx ctx = {net->params, t == 0 ? net->grads : net->thread_grads[t], net->work[t],
                  net->training, net->dropout_key, first, NULL};
    return ctx;
}

/* Layer l's kept values for the chunk that starts at sample `first` (NULL if it keeps none). */
static float *kept_part(const at_net *net, int l, int first) {
    if (!net->kept[l]) return NULL;
    return net->kept[l] + (size_t)first * net->layers[l].kept_per_sample;
}

/* The forward pass of samples [begin, end) through every layer. */
static void forward_chunk(at_net *net, at_ctx ctx, const float *x, int begin, int end) {
    /* The input is kept for backward; each thread copies its own samples. */
    const size_t in_size = (size_t)at_net_in_size(net);
    memcpy(net->act[0] + begin * in_size, x + begin * in_size, sizeof(float) * (end - begin) * in_size);
    for (int l = 0; l < net->nlayers && end > begin; l++) {
        const at_layer *L = &net->layers[l];
        if (L->fused) continue;
        /* Only a training forward keeps: attack and evaluation passes need no weight
         * gradient, and writing the kept buffer would cost them time. */
        ctx.kept = net->training ? kept_part(net, l, begin) : NULL;
        const float *in = input_of(net, l) + (size_t)begin * L->in_size;
        float *out = output_of(net, l) + (size_t)begin * L->out_size;
        at_layer_ops_for(L->d.kind)->forward(L, &ctx, in, out, end - begin);
    }
}

/* Samples per shared-out chunk: about four per thread, so that a thread on a slower core takes
 * fewer of them, and at least 16, so that the products stay efficient. Each sample's results
 * do not depend on which chunk or thread computes it: the bits are the same as with a fixed
 * split. */
static int dynamic_chunk(int n, int T) { return AT_MAX(MIN_CHUNK, (n + 4 * T - 1) / (4 * T)); }

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

at_status at_net_forward(at_net *net, const float *x, int n, const float **logits) {
    if (n <= 0) return at_fail(AT_ERR_ARG, "forward pass needs at least one sample (got %d)", n);
    at_status s = at_net_reserve(net, n);
    if (s != AT_OK) return s;
    next_dropout_key(net);
    int T = thread_count_for(net, n);
    /* A training forward keeps each thread's samples fixed (its backward sums weight gradients
     * per thread, in a fixed order); other passes share chunks out as threads free up. */
    const bool dynamic = !net->training;
    const int chunk = dynamic ? dynamic_chunk(n, T) : 0;
    int next = 0;
#pragma omp parallel num_threads(T)
    {
        const int t = omp_get_thread_num();
        int begin, end;
        for (int turn = 0; take_chunk(dynamic, n, T, t, chunk, turn, &next, &begin, &end); turn++) {
            if (dynamic) net->chunk_owner[begin / chunk] = t;
            forward_chunk(net, make_ctx(net, t, begin), x, begin, end);
        }
    }
    net->last_chunk = chunk;
    net->last_n = n;
    net->kept_valid = net->training;
    if (logits) *logits = output_of(net, net->nlayers - 1);
    return AT_OK;
}

/* The backward pass of samples [begin, end), from the logits' gradient down. */
static void backward_chunk(at_net *net, at_ctx ctx, const float *dlogits, bool params, bool input,
                           float *dx, int begin, int end) {
    /* Each chunk owns a fixed slice of the ping-pong buffers, sized for the widest layer:
     * threads are not synchronised between layers, so offsets must not depend on the layer. */
    const size_t slice = (size_t)begin * max_activation(net);
    const float *dy = dlogits + (size_t)begin * at_net_out_size(net);
    float *bufs[2] = {net->grad_a + slice, net->grad_b + slice};
    int next_buf = 0;
    /* The lowest layer this pass must run: the first for an input gradient, else the lowest
     * with parameters. Its own input gradient is computed only when the caller wants it (mlp's
     * first Linear would otherwise spend a 784 x 256 product per sample on a gradient nobody
     * reads). */
    const int lowest = input ? net->first_computing_layer : params ? net->lowest_param_layer : net->nlayers;
    for (int l = net->nlayers - 1; l >= lowest && end > begin; l--) {
        const at_layer *L = &net->layers[l];
        if (L->fused) continue; /* a Flatten, or a ReLU whose producer masks dy */
        float *d_in = NULL;
        if (l > lowest)
            d_in = bufs[next_buf ^= 1];
        else if (input)
            d_in = dx + (size_t)begin * L->in_size;
        ctx.kept = net->kept_valid ? kept_part(net, l, begin) : NULL;
        at_layer_ops_for(L->d.kind)->backward(
            L, &ctx, input_of(net, l) + (size_t)begin * L->in_size,
            output_of(net, l) + (size_t)begin * L->out_size, dy, d_in, end - begin,
            params && L->w_count > 0);
        dy = d_in;
    }
    /* Nothing but Flattens: the input gradient is the output gradient. */
    if (input && lowest == net->nlayers && end > begin)
        memcpy(dx + (size_t)begin * at_net_in_size(net), dy,
               sizeof(float) * (size_t)(end - begin) * at_net_in_size(net));
}

at_status at_net_backward(at_net *net, const float *dlogits, int flags, float *dx) {
    const int n = net->last_n;
    if (n <= 0) return at_fail(AT_ERR_ARG, "backward pass without a forward pass");
    if ((flags & AT_GRAD_INPUT) && !dx)
        return at_fail(AT_ERR_ARG, "AT_GRAD_INPUT needs an output buffer for the input gradient");
    const bool params = (flags & AT_GRAD_PARAMS) != 0;
    const bool input = (flags & AT_GRAD_INPUT) != 0;
    int T = thread_count_for(net, n);
    /* A pass without weight gradients after a forward that shared chunks out goes over the same
     * chunks: each thread first the ones it ran forward, then any another has not begun. */
    const int chunk = params ? 0 : net->last_chunk;
    const int chunks = chunk ? (n + chunk - 1) / chunk : 0;
    if (chunks) memset(net->chunk_claimed, 0, sizeof(int) * (size_t)chunks);
#pragma omp parallel num_threads(T)
    {
        const int t = omp_get_thread_num();
        /* Threads past the first accumulate into buffers of their own, summed below. */
        if (params && t > 0) memset(net->thread_grads[t], 0, sizeof(float) * net->nparams);
        int begin, end;
        if (!chunks) {
            chunk_bounds(n, T, t, &begin, &end);
            backward_chunk(net, make_ctx(net, t, begin), dlogits, params, input, dx, begin, end);
        }
        for (int round = 0; round < 2 && chunks; round++)
            for (int c = 0; c < chunks; c++) {
                if (round == 0 && net->chunk_owner[c] != t) continue;
                int taken;
#pragma omp atomic capture
                {
                    taken = net->chunk_claimed[c];
                    net->chunk_claimed[c] = 1;
                }
                if (taken) continue;
                begin = c * chunk;
                end = AT_MIN(n, begin + chunk);
                backward_chunk(net, make_ctx(net, t, begin), dlogits, params, input, dx, begin, end);
            }
        if (params && T > 1) {
            /* Each thread sums one range of every thread's gradients, in thread order: the
             * same additions as one thread summing them all. */
#pragma omp barrier
            size_t lo, hi;
            at_split_range(net->nparams, t, T, &lo, &hi);
            float *restrict sum = net->grads;
            for (int u = 1; u < T; u++) {
                const float *restrict src = net->thread_grads[u];
                for (size_t i = lo; i < hi; i++) sum[i] += src[i];
            }
        }
    }
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
    if (s != AT_OK) return s;
    next_dropout_key(net); /* as at_net_forward, so later training passes draw the same masks */
    const int T = thread_count_for(net, n), chunk = dynamic_chunk(n, T);
    const float *z = output_of(net, net->nlayers - 1);
    int next = 0;
#pragma omp parallel num_threads(T)
    {
        const int t = omp_get_thread_num();
        int begin, end;
        for (int turn = 0; take_chunk(true, n, T, t, chunk, turn, &next, &begin, &end); turn++) {
            net->chunk_owner[begin / chunk] = t;
            forward_chunk(net, make_ctx(net, t, begin), x, begin, end);
            loss(user, z, begin, end, dlogits);
            backward_chunk(net, make_ctx(net, t, begin), dlogits, false, true, dx, begin, end);
        }
    }
    net->last_chunk = chunk;
    net->last_n = n;
    net->kept_valid = false;
    if (logits) *logits = z;
    return AT_OK;
}

/* ------------------------------------------------------------ queries */

int at_net_in_size(const at_net *net) { return net->in_c * net->in_h * net->in_w; }
int at_net_out_size(const at_net *net) { return net->layers[net->nlayers - 1].out_size; }
void at_net_in_shape(const at_net *net, int *c, int *h, int *w) {
    *c = net->in_c;
    *h = net->in_h;
    *w = net->in_w;
}
int at_net_num_layers(const at_net *net) { return net->nlayers; }
const at_layer_desc *at_net_layer(const at_net *net, int i) {
    return i >= 0 && i < net->nlayers ? &net->layers[i].d : NULL;
}
void at_net_layer_out_shape(const at_net *net, int i, int *c, int *h, int *w) {
    const at_layer *L = &net->layers[i];
    *c = L->out_c;
    *h = L->out_h;
    *w = L->out_w;
}
size_t at_net_num_params(const at_net *net) { return net->nparams; }
float *at_net_params(at_net *net) { return net->params; }
float *at_net_grads(at_net *net) { return net->grads; }
void at_net_zero_grad(at_net *net) { memset(net->grads, 0, sizeof(float) * net->nparams); }
int at_net_num_tensors(const at_net *net) { return net->ntensors; }
const at_param_info *at_net_tensor(const at_net *net, int i) {
    return i >= 0 && i < net->ntensors ? &net->tensors[i] : NULL;
}
const at_param_info *at_net_find_tensor(const at_net *net, const char *name) {
    for (int i = 0; i < net->ntensors; i++)
        if (strcmp(net->tensors[i].name, name) == 0) return &net->tensors[i];
    return NULL;
}
const char *at_net_spec(const at_net *net) { return net->spec; }

at_status at_net_set_spec(at_net *net, const char *spec) {
    char *copy = at_strdup(spec);
    if (!copy) return AT_ERR_NOMEM;
    free(net->spec);
    net->spec = copy;
    return AT_OK;
}

at_status at_net_describe(const at_net *net, char *buf, size_t cap) {
    size_t used = 0;
    int w = snprintf(buf, cap, "input %dx%dx%d\n", net->in_c, net->in_h, net->in_w);
    used = w > 0 ? (size_t)w : 0;
    for (int l = 0; l < net->nlayers && used < cap; l++) {
        const at_layer *L = &net->layers[l];
        const at_layer_desc *d = &L->d;
        char what[96];
        switch (d->kind) {
        case AT_LAYER_LINEAR:
            snprintf(what, sizeof what, "Linear(%d, %d)", L->in_size, d->out);
            break;
        case AT_LAYER_CONV2D:
            snprintf(what, sizeof what, "Conv2d(%d, %d, kernel_size=%d, stride=%d, padding=%d)",
                     L->in_c, d->out, d->kernel, d->stride, d->pad);
            break;
        case AT_LAYER_MAXPOOL2D:
        case AT_LAYER_AVGPOOL2D:
            snprintf(what, sizeof what, "%s(kernel_size=%d, stride=%d, padding=%d)",
                     d->kind == AT_LAYER_MAXPOOL2D ? "MaxPool2d" : "AvgPool2d", d->kernel,
                     d->stride, d->pad);
            break;
        case AT_LAYER_RELU: snprintf(what, sizeof what, "ReLU()"); break;
        case AT_LAYER_LEAKYRELU:
            snprintf(what, sizeof what, "LeakyReLU(negative_slope=%g)", (double)d->alpha);
            break;
        case AT_LAYER_TANH: snprintf(what, sizeof what, "Tanh()"); break;
        case AT_LAYER_SIGMOID: snprintf(what, sizeof what, "Sigmoid()"); break;
        case AT_LAYER_FLATTEN: snprintf(what, sizeof what, "Flatten()"); break;
        case AT_LAYER_DROPOUT: snprintf(what, sizeof what, "Dropout(p=%g)", (double)d->alpha); break;
        case AT_LAYER_DROPOUT2D:
            snprintf(what, sizeof what, "Dropout2d(p=%g)", (double)d->alpha);
            break;
        default: snprintf(what, sizeof what, "?"); break;
        }
        w = snprintf(buf + used, cap - used, "  (%s): %-52s -> %dx%dx%d\n", d->name, what, L->out_c,
                     L->out_h, L->out_w);
        if (w > 0) used += (size_t)w;
    }
    if (used < cap)
        snprintf(buf + used, cap - used, "parameters: %zu\n", net->nparams);
    return used >= cap ? at_fail(AT_ERR_ARG, "description buffer too small") : AT_OK;
}
