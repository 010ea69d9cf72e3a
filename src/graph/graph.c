/* Building a network: nodes from layer descriptions, each reading the node before it or the
 * earlier node its description names; shapes, parameter and buffer views under PyTorch's
 * state_dict names; ReLU fusion; then the buffer plan (plan.c).
 *
 * A ReLU whose producer can apply it (ops->fuses_relu, e.g. a convolution) and has no other
 * reader is fused: the producer writes max(y, 0) in place, the ReLU runs in neither pass and
 * has no buffer of its own, and the producer masks the incoming gradient itself. That saves a
 * pass over the largest activations; results are bit-identical to running the ReLU separately.
 * A producer with a second reader (a residual block's input) keeps its output unrectified for
 * that reader, so the ReLU runs on its own. A Flatten is skipped the same way: its output is
 * its input's floats. */
#include "net_internal.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

void at_net_free(at_net *net) {
    if (!net) return;
    if (net->hooks) net->hooks->release(net);
    at_net_free_buffers(net);
    at_plan_free(&net->plan);
    free(net->spec);
    free(net->layers);
    free(net->params);
    free(net->grads);
    free(net->buffers);
    free(net->state);
    free(net->tensors);
    free(net->buffer_info);
    free(net);
}

static at_param_info *add_view(at_param_info *list, int *count, const at_layer *L,
                               const char *suffix, size_t offset, size_t size) {
    at_param_info *t = &list[(*count)++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s.%s", L->d.name, suffix);
    t->layer = L->index;
    t->offset = offset;
    t->size = size;
    return t;
}

/* The layer's weight and bias as parameter tensors, its buffers as buffer views. */
static void add_views(at_net *net, at_layer *L, size_t *buf_offset) {
    if (L->w_count) {
        at_param_info *t = add_view(net->tensors, &net->ntensors, L, "weight", L->w_off, L->w_count);
        t->ndim = L->w_ndim;
        for (int d = 0; d < L->w_ndim; d++) t->shape[d] = L->w_shape[d];
    }
    if (L->b_count) {
        at_param_info *t = add_view(net->tensors, &net->ntensors, L, "bias", L->b_off, L->b_count);
        t->is_bias = true;
        t->ndim = 1;
        t->shape[0] = (int)L->b_count;
    }
    L->buf_off = *buf_offset;
    for (int b = 0; b < L->nbufs; b++) {
        const at_buffer_desc *B = &L->bufs[b];
        at_param_info *t = add_view(net->buffer_info, &net->nbuffers, L, B->suffix, *buf_offset,
                                    (size_t)B->count);
        t->is_integer = B->integer;
        t->ndim = B->integer ? 0 : 1; /* num_batches_tracked is a 0-dimensional tensor */
        t->shape[0] = B->count;
        *buf_offset += (size_t)B->count;
    }
}

/* The node an input name refers to: the nearest earlier node of that name, -1 for "input". */
static at_status resolve_input(const at_net *net, int l, const char *name, int *src) {
    if (name[0] == '\0') {
        *src = l - 1;
        return AT_OK;
    }
    if (strcmp(name, "input") == 0) {
        *src = -1;
        return AT_OK;
    }
    for (int k = l - 1; k >= 0; k--)
        if (strcmp(net->layers[k].d.name, name) == 0) {
            *src = k;
            return AT_OK;
        }
    return at_fail(AT_ERR_ARG, "layer %d (%s) reads '%s', but no layer before it has that name", l,
                   at_layer_ops_for(net->layers[l].d.kind)->name, name);
}

static void shape_of(const at_net *net, int t, int *c, int *h, int *w) {
    if (t < 0) {
        *c = net->in_c, *h = net->in_h, *w = net->in_w;
        return;
    }
    const at_layer *L = &net->layers[t];
    *c = L->out_c, *h = L->out_h, *w = L->out_w;
}

/* Resolves a node's inputs and checks a second input has the first one's shape. */
static at_status connect(at_net *net, at_layer *L, const at_layer_ops *ops) {
    const int l = L->index;
    at_status s = resolve_input(net, l, L->d.input, &L->src[0]);
    L->nsrc = 1;
    if (s == AT_OK && ops->inputs == 2) {
        if (L->d.input2[0] == '\0')
            return at_fail(AT_ERR_ARG, "layer %d (%s) needs a second input", l, ops->name);
        s = resolve_input(net, l, L->d.input2, &L->src[1]);
        L->nsrc = 2;
    } else if (s == AT_OK && L->d.input2[0] != '\0') {
        return at_fail(AT_ERR_ARG, "layer %d (%s) reads one input, not a second ('%s')", l,
                       ops->name, L->d.input2);
    }
    if (s != AT_OK) return s;
    L->described[0] = L->src[0];
    L->described[1] = L->nsrc == 2 ? L->src[1] : -1;
    shape_of(net, L->src[0], &L->in_c, &L->in_h, &L->in_w);
    if (L->nsrc == 2) {
        int c, h, w;
        shape_of(net, L->src[1], &c, &h, &w);
        if (c != L->in_c || h != L->in_h || w != L->in_w)
            return at_fail(AT_ERR_SHAPE, "layer %d (%s) adds a %dx%dx%d input to a %dx%dx%d one", l,
                           ops->name, c, h, w, L->in_c, L->in_h, L->in_w);
    }
    L->in_size = L->in_c * L->in_h * L->in_w;
    return AT_OK;
}

/* The numbers of a description within AT_MAX_ARG, as the spec syntax bounds them (layer.h). */
static at_status check_desc(const at_layer *L, const at_layer_ops *ops) {
    const at_layer_desc *d = &L->d;
    if (d->out > AT_MAX_ARG || d->kernel > AT_MAX_ARG || d->stride > AT_MAX_ARG ||
        d->pad > AT_MAX_ARG || d->groups > AT_MAX_ARG)
        return at_fail(AT_ERR_SHAPE, "layer %d (%s): out %d, kernel %d, stride %d, padding %d, groups %d: "
                                     "each must be at most %d",
                       L->index, ops->name, d->out, d->kernel, d->stride, d->pad, d->groups, AT_MAX_ARG);
    return AT_OK;
}

/* What setup computed, within the limits of layer.h: the output of one sample and the weight
 * (its shape's product, computed without overflow, is the count setup gave). */
static at_status check_sizes(const at_layer *L, const at_layer_ops *ops) {
    if (L->out_c <= 0 || L->out_h <= 0 || L->out_w <= 0)
        return at_fail(AT_ERR_SHAPE, "layer %d (%s) would produce an empty %dx%dx%d output", L->index,
                       ops->name, L->out_c, L->out_h, L->out_w);
    if (L->out_h >= AT_MAX_SIDE || L->out_w >= AT_MAX_SIDE || at_count(L->out_c, L->out_h, L->out_w, 1) < 0)
        return at_fail(AT_ERR_SHAPE, "layer %d (%s) would produce a %dx%dx%d output per sample: too large "
                                     "(at most %d values, sides below %d)",
                       L->index, ops->name, L->out_c, L->out_h, L->out_w, AT_MAX_COUNT, AT_MAX_SIDE);
    if (L->w_count) {
        int64_t w = 1;
        for (int d = 0; d < L->w_ndim && w >= 0; d++) w = at_count(w, L->w_shape[d], 1, 1);
        if (w < 0 || (size_t)w != L->w_count)
            return at_fail(AT_ERR_SHAPE, "layer %d (%s): its weight is too large (at most %d values)",
                           L->index, ops->name, AT_MAX_COUNT);
    }
    return AT_OK;
}

/* Connects and sets up node l, and places its parameters and per-pass state. */
static at_status add_node(at_net *net, int l, size_t *offset) {
    at_layer *L = &net->layers[l];
    L->index = l;
    if (L->d.name[0] == '\0') snprintf(L->d.name, sizeof L->d.name, "%d", l);
    const at_layer_ops *ops = at_layer_ops_for(L->d.kind);
    if (!ops) return at_fail(AT_ERR_ARG, "layer %d has an unknown kind (%d)", l, (int)L->d.kind);
    at_status s = check_desc(L, ops);
    if (s == AT_OK) s = connect(net, L, ops);
    if (s == AT_OK) s = ops->setup(L);
    if (s == AT_OK) s = check_sizes(L, ops);
    if (s != AT_OK) return s;
    L->out_size = L->out_c * L->out_h * L->out_w;
    L->w_off = *offset;
    *offset += L->w_count;
    L->b_off = *offset;
    *offset += L->b_count;
    L->state_off = net->nstate;
    net->nstate += L->state_count;
    return AT_OK;
}

static at_status check_unique_names(const at_param_info *list, int count) {
    for (int i = 0; i < count; i++)
        for (int j = 0; j < i; j++)
            if (strcmp(list[i].name, list[j].name) == 0)
                return at_fail(AT_ERR_ARG, "two tensors would both be named '%s'", list[i].name);
    return AT_OK;
}

/* Nodes reading tensor t directly (fused ones included), the loss counting for the last. */
static int raw_readers(const at_net *net, int t) {
    int count = t == net->nlayers - 1;
    for (int l = t + 1; l < net->nlayers; l++)
        for (int i = 0; i < net->layers[l].nsrc; i++) count += net->layers[l].src[i] == t;
    return count;
}

/* Fuses ReLUs into single-reader producers that can apply them, skips Flattens, and rewrites
 * every node's inputs to the tensors they resolve to. */
static void fuse(at_net *net) {
    for (int l = 0; l < net->nlayers; l++) {
        at_layer *L = &net->layers[l];
        const int p = L->src[0];
        if (L->d.kind == AT_LAYER_FLATTEN) L->fused = true; /* NCHW is contiguous per sample */
        if (L->d.kind != AT_LAYER_RELU || p < 0) continue;
        at_layer *P = &net->layers[p];
        const at_layer_ops *ops = at_layer_ops_for(P->d.kind);
        if (!P->fused && ops->fuses_relu && ops->fuses_relu(P) && raw_readers(net, p) == 1) {
            P->relu_out = true;
            L->fused = true;
        }
    }
    /* A fused node's tensor is its source's: resolve inputs through them, in order. */
    for (int l = 0; l < net->nlayers; l++) {
        at_layer *L = &net->layers[l];
        for (int i = 0; i < L->nsrc; i++) {
            const int t = L->src[i];
            if (t >= 0 && net->layers[t].fused) L->src[i] = net->layers[t].src[0];
        }
    }
}

/* Writes the network as a spec (docs/architectures.md) when its layers are named by position,
 * as a spec would name them, so that a network built from layer descriptions can be saved and
 * rebuilt. Networks with other names keep an empty spec (at_net_from_spec sets its own). */
static at_status record_spec(at_net *net) {
    char spec[4096];
    size_t used = 0;
    spec[0] = '\0';
    for (int l = 0; l < net->nlayers; l++) {
        const at_layer_desc *d = &net->layers[l].d;
        const at_layer_ops *ops = at_layer_ops_for(d->kind);
        char index[16], word[160];
        snprintf(index, sizeof index, "%d", l);
        if (strcmp(d->name, index) != 0) return AT_OK;
        if (ops->spec_word)
            ops->spec_word(d, word, sizeof word);
        else
            snprintf(word, sizeof word, "%s", ops->name);
        int w = snprintf(spec + used, sizeof spec - used, "%s%s%s%s", l ? "," : "", word,
                         d->input[0] ? "@" : "", d->input);
        if (w < 0 || (size_t)w >= sizeof spec - used) return AT_OK; /* too long to record */
        used += (size_t)w;
    }
    return at_net_set_spec(net, spec);
}

static at_status allocate(at_net *net, int nlayers, size_t nparams) {
    int nbufs = 0;
    for (int l = 0; l < nlayers; l++) nbufs += net->layers[l].nbufs;
    net->buffer_info = at_calloc((size_t)nbufs + 1, sizeof *net->buffer_info, "buffer list");
    net->nparams = nparams;
    net->params = at_alloc_floats(nparams, "parameters");
    net->grads = at_alloc_floats(nparams, "gradients");
    net->state = at_alloc_floats(net->nstate, "batch statistics");
    if (!net->buffer_info || !net->params || !net->grads || !net->state) return AT_ERR_NOMEM;
    size_t buf_offset = 0;
    for (int l = 0; l < nlayers; l++) add_views(net, &net->layers[l], &buf_offset);
    net->nbuffer_floats = buf_offset;
    net->buffers = at_alloc_floats(buf_offset, "buffers");
    return net->buffers ? AT_OK : AT_ERR_NOMEM;
}

/* Fails, before anything large is allocated, when the parameters and buffers would take more
 * than max_floats floats (a model file's network can hold no more than the file does). */
static at_status check_bound(const at_net *net, size_t nparams, size_t max_floats) {
    size_t floats = nparams;
    for (int l = 0; l < net->nlayers; l++)
        for (int b = 0; b < net->layers[l].nbufs; b++) floats += (size_t)net->layers[l].bufs[b].count;
    if (floats > max_floats)
        return at_fail(AT_ERR_FORMAT, "the network has %zu parameter and buffer values, over the limit "
                                      "of %zu",
                       floats, max_floats);
    return AT_OK;
}

static at_status build(at_net *net, const at_layer_desc *layers, int nlayers, size_t max_floats) {
    size_t offset = 0;
    for (int l = 0; l < nlayers; l++) {
        net->layers[l].d = layers[l];
        at_status s = add_node(net, l, &offset);
        if (s != AT_OK) return s;
    }
    at_status s = check_bound(net, offset, max_floats);
    if (s != AT_OK) return s;
    s = allocate(net, nlayers, offset);
    if (s == AT_OK) s = check_unique_names(net->tensors, net->ntensors);
    if (s == AT_OK) s = check_unique_names(net->buffer_info, net->nbuffers);
    if (s != AT_OK) return s;
    fuse(net);
    s = at_plan_build(net);
    if (s != AT_OK) return s;
    at_net_seed(net, 0);
    return record_spec(net);
}

at_status at_net_create(at_net **out, const at_layer_desc *layers, int nlayers, int in_c,
                        int in_h, int in_w) {
    return at_net_create_bounded(out, layers, nlayers, in_c, in_h, in_w, SIZE_MAX);
}

at_status at_net_create_bounded(at_net **out, const at_layer_desc *layers, int nlayers, int in_c,
                                int in_h, int in_w, size_t max_floats) {
    *out = NULL;
    if (nlayers <= 0 || !layers) return at_fail(AT_ERR_ARG, "a network needs at least one layer");
    if (in_c <= 0 || in_h <= 0 || in_w <= 0)
        return at_fail(AT_ERR_SHAPE, "input shape %dx%dx%d is not positive", in_c, in_h, in_w);
    if (in_h >= AT_MAX_SIDE || in_w >= AT_MAX_SIDE || at_count(in_c, in_h, in_w, 1) < 0)
        return at_fail(AT_ERR_SHAPE, "input shape %dx%dx%d is too large (at most %d values per sample, "
                                     "sides below %d)",
                       in_c, in_h, in_w, AT_MAX_COUNT, AT_MAX_SIDE);
    at_net *net = at_calloc(1, sizeof *net, "a network");
    if (!net) return AT_ERR_NOMEM;
    net->layers = at_calloc((size_t)nlayers, sizeof *net->layers, "layers");
    net->tensors = at_calloc((size_t)nlayers * 2, sizeof *net->tensors, "parameter list");
    net->spec = at_strdup("");
    net->nlayers = nlayers;
    net->in_c = in_c;
    net->in_h = in_h;
    net->in_w = in_w;
    net->exec = &at_cpu_executor;
    at_status s = net->layers && net->tensors && net->spec ? build(net, layers, nlayers, max_floats) : AT_ERR_NOMEM;
    if (s != AT_OK) {
        at_net_free(net);
        return s;
    }
    *out = net;
    return AT_OK;
}

/* ------------------------------------------------------------ initialization */

/* The fan-in rule of nn.Linear / nn.Conv2d (or the chosen scheme) for one layer's weight and
 * bias; fans from the weight's shape, (out, in / groups, k, k) for a convolution. */
static void init_fan_in(const at_layer *L, at_init_kind kind, at_rng *rng, float *W, float *b) {
    const size_t fan_in = L->w_count / (size_t)L->w_shape[0];
    const size_t fan_out = L->w_count / (size_t)L->w_shape[1];
    const double bound = 1.0 / sqrt((double)fan_in);
    for (size_t i = 0; i < L->w_count; i++) {
        switch (kind) {
        case AT_INIT_KAIMING_NORMAL: /* He et al., fan_in, gain sqrt(2) */
            W[i] = at_rng_normal(rng) * (float)sqrt(2.0 / (double)fan_in);
            break;
        case AT_INIT_XAVIER_UNIFORM: {
            double a = sqrt(6.0 / (double)(fan_in + fan_out));
            W[i] = (float)((2.0 * at_rng_uniform(rng) - 1.0) * a);
            break;
        }
        case AT_INIT_PYTORCH:
        default: W[i] = (float)((2.0 * at_rng_uniform(rng) - 1.0) * bound); break;
        }
    }
    for (size_t i = 0; i < L->b_count; i++)
        b[i] = kind == AT_INIT_PYTORCH ? (float)((2.0 * at_rng_uniform(rng) - 1.0) * bound) : 0.0f;
}

void at_net_init_with(at_net *net, at_init_kind kind, uint64_t seed) {
    at_rng rng;
    at_rng_seed(&rng, seed);
    for (int l = 0; l < net->nlayers; l++) {
        const at_layer *L = &net->layers[l];
        const at_layer_ops *ops = at_layer_ops_for(L->d.kind);
        if (ops->init)
            ops->init(L, net->params, net->buffers);
        else if (L->w_count)
            init_fan_in(L, kind, &rng, net->params + L->w_off, net->params + L->b_off);
    }
}

void at_net_init(at_net *net, uint64_t seed) { at_net_init_with(net, AT_INIT_PYTORCH, seed); }

/* ------------------------------------------------------------ mode */

void at_net_set_training(at_net *net, bool training) { net->training = training; }
bool at_net_is_training(const at_net *net) { return net->training; }
uint64_t at_net_forward_count(const at_net *net) { return net->forward_count; }
void at_net_set_forward_count(at_net *net, uint64_t count) { net->forward_count = count; }
void at_net_share(at_net *net, const at_comm *comm, int sample_offset) {
    net->comm = comm && comm->size > 1 ? comm : NULL;
    net->sample_offset = sample_offset;
}

void at_net_seed(at_net *net, uint64_t seed) {
    net->seed = seed;
    net->forward_count = 0;
}

/* ------------------------------------------------------------ queries */

int at_net_in_size(const at_net *net) { return net_in_size(net); }
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
static const at_param_info *find(const at_param_info *list, int count, const char *name) {
    for (int i = 0; i < count; i++)
        if (strcmp(list[i].name, name) == 0) return &list[i];
    return NULL;
}
const at_param_info *at_net_find_tensor(const at_net *net, const char *name) {
    return find(net->tensors, net->ntensors, name);
}
int at_net_num_buffers(const at_net *net) { return net->nbuffers; }
const at_param_info *at_net_buffer(const at_net *net, int i) {
    return i >= 0 && i < net->nbuffers ? &net->buffer_info[i] : NULL;
}
const at_param_info *at_net_find_buffer(const at_net *net, const char *name) {
    return find(net->buffer_info, net->nbuffers, name);
}
float *at_net_buffers(at_net *net) { return net->buffers; }
size_t at_net_num_buffer_floats(const at_net *net) { return net->nbuffer_floats; }
const char *at_net_spec(const at_net *net) { return net->spec; }

int at_net_untrained_statistics(const at_net *net, const char **first) {
    int count = 0;
    if (first) *first = NULL;
    for (int i = 0; i < net->nbuffers; i++) {
        const at_param_info *b = &net->buffer_info[i];
        if (!b->is_integer || net->buffers[b->offset] != 0.0f) continue;
        if (first && !count) *first = b->name;
        count++;
    }
    return count;
}

at_status at_net_set_spec(at_net *net, const char *spec) {
    char *copy = at_strdup(spec);
    if (!copy) return AT_ERR_NOMEM;
    free(net->spec);
    net->spec = copy;
    return AT_OK;
}

int at_net_layer_inputs(const at_net *net, int i, int src[2]) {
    if (i < 0 || i >= net->nlayers) return 0;
    const at_layer *L = &net->layers[i];
    src[0] = L->described[0];
    src[1] = L->described[1];
    return L->nsrc;
}

at_status at_net_describe_layer(const at_net *net, int i, char *buf, size_t cap) {
    if (i < 0 || i >= net->nlayers || cap == 0) return at_fail(AT_ERR_ARG, "no layer %d", i);
    const at_layer *L = &net->layers[i];
    at_layer_ops_for(L->d.kind)->describe(L, buf, cap);
    return AT_OK;
}

/* " <- a, b" after a node that reads anything but the node before it. */
static void describe_inputs(const at_layer_desc *d, char *buf, size_t cap) {
    buf[0] = '\0';
    if (d->input[0] || d->input2[0])
        snprintf(buf, cap, " <- %s%s%s", d->input[0] ? d->input : "(previous)",
                 d->input2[0] ? ", " : "", d->input2);
}

at_status at_net_describe(const at_net *net, char *buf, size_t cap) {
    size_t used = 0;
    int w = snprintf(buf, cap, "input %dx%dx%d\n", net->in_c, net->in_h, net->in_w);
    used = w > 0 ? (size_t)w : 0;
    for (int l = 0; l < net->nlayers && used < cap; l++) {
        const at_layer *L = &net->layers[l];
        char what[160], from[80];
        at_net_describe_layer(net, l, what, sizeof what);
        describe_inputs(&L->d, from, sizeof from);
        size_t len = strlen(what);
        snprintf(what + len, sizeof what - len, "%s", from);
        w = snprintf(buf + used, cap - used, "  (%s): %-52s -> %dx%dx%d\n", L->d.name, what,
                     L->out_c, L->out_h, L->out_w);
        if (w > 0) used += (size_t)w;
    }
    if (used < cap) snprintf(buf + used, cap - used, "parameters: %zu\n", net->nparams);
    return used >= cap ? at_fail(AT_ERR_ARG, "description buffer too small") : AT_OK;
}
