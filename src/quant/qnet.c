/* A quantized network (at_qnet): built from a float network and calibration samples, run with
 * integer arithmetic only.
 *
 * Building: the float network runs over the calibration samples node by node (eval mode) and
 * records each tensor's range; every tensor gets int8 parameters for its range (the input's are
 * fixed at scale 1/255, zero point -128 when the samples are pixels in [0, 1]: every 8-bit pixel
 * exactly); then each node becomes an int8 kernel call (quant.h): weights per output channel,
 * biases and multipliers from the scales around it. Pooling, ReLU and Dropout keep their input's
 * parameters; a Flatten and a ReLU fused into its producer are no node at all. */
#include "quant/qat.h"
#include "quant/quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif


/* ------------------------------------------------------------ calibration */

/* A float eval-mode pass node by node through the layers' own kernels, batch by batch, keeping
 * every tensor's values of the batch (val[t + 1]; val[0]: the input rows). */
typedef struct calib_pass {
    at_net *net;
    int T, batch, D;
    float **val;
    float *scratch;
} calib_pass;

static void pass_close(calib_pass *p) {
    for (int t = 1; p->val && t < p->T; t++) free(p->val[t]);
    free(p->val);
    free(p->scratch);
}

static at_status pass_open(calib_pass *p, at_net *net, int n) {
    *p = (calib_pass){net, net->nlayers + 1, n < 256 ? n : 256, net_in_size(net), NULL, NULL};
    size_t work = 1;
    for (int l = 0; l < net->nlayers; l++) {
        const at_layer *L = &net->layers[l];
        const at_layer_ops *ops = at_layer_ops_for(L->d.kind);
        if (ops->workspace && ops->workspace(L, p->batch) > work) work = ops->workspace(L, p->batch);
    }
    p->val = at_calloc((size_t)p->T, sizeof *p->val, "calibration");
    p->scratch = at_alloc_floats(work, "calibration scratch");
    at_status s = p->val && p->scratch ? AT_OK : AT_ERR_NOMEM;
    for (int l = 0; s == AT_OK && l < net->nlayers; l++)
        if (!net->layers[l].fused &&
            !(p->val[l + 1] = at_alloc_floats((size_t)p->batch * net->layers[l].out_size, "calibration")))
            s = AT_ERR_NOMEM;
    if (s != AT_OK) pass_close(p);
    return s;
}

/* Runs the m samples x. */
static void pass_forward(calib_pass *p, const float *x, int m) {
    at_net *net = p->net;
    p->val[0] = (float *)x;
    for (int l = 0; l < net->nlayers; l++) {
        const at_layer *L = &net->layers[l];
        if (L->fused) continue;
        at_ctx ctx = {.params = net->params, .work = p->scratch, .buffers = net->buffers, .state = net->state};
        if (L->nsrc == 2) ctx.x2 = p->val[L->src[1] + 1];
        at_layer_ops_for(L->d.kind)->forward(L, &ctx, p->val[L->src[0] + 1], p->val[l + 1], m);
    }
}

/* How many values tensor t (index + 1) holds after m samples (0: none of its own). */
static size_t pass_count(const calib_pass *p, int t, int m) {
    if (!p->val[t]) return 0;
    return (size_t)m * (t == 0 ? (size_t)p->D : (size_t)p->net->layers[t - 1].out_size);
}

enum { BINS = 4096 };

/* Narrows each tensor's [lo, hi] to its pct-th percentiles: the lowest and the highest
 * (100 - pct) percent of its values are clipped (a second pass bins every value in BINS bins of
 * the full range; the bounds are bin edges). */
static at_status narrow_to_percentile(calib_pass *p, const float *x, int n, float pct, float *lo, float *hi) {
    uint64_t *hist = calloc((size_t)p->T * BINS, sizeof *hist);
    if (!hist) return at_fail(AT_ERR_NOMEM, "out of memory for calibration histograms");
    for (int first = 0; first < n; first += p->batch) {
        const int m = n - first < p->batch ? n - first : p->batch;
        pass_forward(p, x + (size_t)first * p->D, m);
        for (int t = 0; t < p->T; t++) {
            const size_t count = pass_count(p, t, m);
            const double width = ((double)hi[t] - lo[t]) / BINS;
            for (size_t i = 0; i < count && width > 0; i++) {
                int b = (int)(((double)p->val[t][i] - lo[t]) / width);
                hist[(size_t)t * BINS + (b < 0 ? 0 : (b >= BINS ? BINS - 1 : b))]++;
            }
        }
    }
    for (int t = 0; t < p->T; t++) {
        const uint64_t *h = hist + (size_t)t * BINS;
        uint64_t total = 0;
        for (int b = 0; b < BINS; b++) total += h[b];
        const double width = ((double)hi[t] - lo[t]) / BINS, tail = (100.0 - pct) / 100.0 * (double)total;
        if (total == 0 || width <= 0) continue;
        int a = 0, z = BINS - 1;
        for (uint64_t c = h[0]; a < BINS - 1 && (double)c <= tail; c += h[++a]) {}
        for (uint64_t c = h[BINS - 1]; z > 0 && (double)c <= tail; c += h[--z]) {}
        const float nlo = (float)(lo[t] + a * width), nhi = (float)(lo[t] + (z + 1) * width);
        if (nlo < nhi) lo[t] = nlo, hi[t] = nhi;
    }
    free(hist);
    return AT_OK;
}

/* Each tensor's range over n samples (lo, hi: per tensor + 1): its smallest and largest value,
 * or with pct < 100 its central values, the pct-th percentile of each side. */
static at_status calibrate(at_net *net, const float *x, int n, float pct, float *lo, float *hi) {
    calib_pass p;
    at_status s = pass_open(&p, net, n);
    if (s != AT_OK) return s;
    for (int t = 0; t < p.T; t++) lo[t] = INFINITY, hi[t] = -INFINITY;
    for (int first = 0; s == AT_OK && first < n; first += p.batch) {
        const int m = n - first < p.batch ? n - first : p.batch;
        pass_forward(&p, x + (size_t)first * p.D, m);
        for (int t = 0; t < p.T && s == AT_OK; t++) {
            const size_t count = pass_count(&p, t, m);
            for (size_t i = 0; i < count; i++) {
                if (!isfinite(p.val[t][i])) {
                    s = at_fail(AT_ERR_NAN, "int8 calibration: %s of sample %d is not finite",
                                t == 0 ? "the input" : "a layer's output", first);
                    break;
                }
                lo[t] = fminf(lo[t], p.val[t][i]);
                hi[t] = fmaxf(hi[t], p.val[t][i]);
            }
        }
    }
    if (s == AT_OK && pct < 100.0f) s = narrow_to_percentile(&p, x, n, pct, lo, hi);
    pass_close(&p);
    return s;
}

/* ------------------------------------------------------------ building */

static bool alloc_channels(qnode *q, int nout, size_t weights) {
    q->nout = nout;
    q->nweights = weights;
    q->w = calloc(weights ? weights : 1, 1);
    q->bias = calloc((size_t)nout, sizeof(int32_t));
    q->mult = calloc((size_t)nout, sizeof(int32_t));
    q->shift = calloc((size_t)nout, sizeof(int32_t));
    if (q->w && q->bias && q->mult && q->shift) return true;
    at_fail(AT_ERR_NOMEM, "out of memory quantizing the weights");
    return false;
}

static int32_t saturate32(double v) {
    return v >= 2147483647.0 ? INT32_MAX : (v <= -2147483648.0 ? INT32_MIN : (int32_t)lround(v));
}

/* BatchNorm B's eval-mode map of channel c: y = scale * x + shift (identity without B). */
static void bn_map(const at_net *net, const at_layer *B, int c, double *scale, double *shift) {
    *scale = 1.0;
    *shift = 0.0;
    if (!B) return;
    const int C = B->in_c;
    const double gamma = net->params[B->w_off + c], beta = net->params[B->b_off + c];
    const double mean = net->buffers[B->buf_off + c], var = net->buffers[B->buf_off + C + c];
    *scale = gamma / sqrt(var + AT_BN_EPS);
    *shift = beta - mean * *scale;
}

/* The int32 bias and the multiplier of output channel o, whose int8 weights have scale s_w. */
static void channel_scales(qnode *q, int o, double s_w, double bias) {
    const double acc_scale = (double)q->in[0].scale * s_w;
    q->bias[o] = saturate32(bias / acc_scale);
    q_multiplier(acc_scale / q->out.scale, &q->mult[o], &q->shift[o]);
}

/* Conv2d or Linear P, with BatchNorm B folded in when B is not NULL: per output channel its
 * weights and bias times B's scale, plus B's shift, quantized symmetrically. */
static void weighted_node(qnode *q, const at_net *net, const at_layer *P, const at_layer *B) {
    const int nout = q->nout;
    const size_t per = P->w_count / (size_t)nout;
    const float *w = net->params + P->w_off, *b = P->b_count ? net->params + P->b_off : NULL;
    for (int o = 0; o < nout; o++) {
        double scale, shift, amax = 0.0;
        bn_map(net, B, o, &scale, &shift);
        const float *wo = w + (size_t)o * per;
        for (size_t i = 0; i < per; i++) amax = fmax(amax, fabs(wo[i] * scale));
        const double s_w = q_weight_scale(amax);
        for (size_t i = 0; i < per; i++) q->w[(size_t)o * per + i] = q_weight_int8(wo[i] * scale, s_w);
        channel_scales(q, o, s_w, (b ? b[o] : 0.0) * scale + shift);
    }
}

/* A BatchNorm applied on its own: per channel, its scale as one int8 weight (+-127) and its
 * shift as the bias. */
static void affine_node(qnode *q, const at_net *net, const at_layer *B) {
    for (int c = 0; c < B->in_c; c++) {
        double scale, shift;
        bn_map(net, B, c, &scale, &shift);
        q->w[c] = (int8_t)(scale > 0.0 ? 127 : (scale < 0.0 ? -127 : 0));
        channel_scales(q, c, scale != 0.0 ? fabs(scale) / 127.0 : 1.0, shift);
    }
}

static void add_node(qnode *q) {
    const double twice = 2.0 * fmax(q->in[0].scale, q->in[1].scale);
    qk_layer *k = &q->k;
    q_multiplier(q->in[0].scale / twice, &k->add_mult[0], &k->add_shift[0]);
    q_multiplier(q->in[1].scale / twice, &k->add_mult[1], &k->add_shift[1]);
    q_multiplier(twice / ((double)(1 << 20) * q->out.scale), &k->add_mult[2], &k->add_shift[2]);
}

void q_kernel_view(qnode *n, bool relu_out) {
    const at_layer *op = n->op;
    qk_layer *k = &n->k;
    if (n->kind == AT_LAYER_LINEAR) {
        k->in_c = op->in_size, k->out_c = op->out_size;
        k->in_h = k->in_w = k->out_h = k->out_w = 1;
    } else {
        k->in_c = op->in_c, k->in_h = op->in_h, k->in_w = op->in_w;
        k->out_c = op->out_c, k->out_h = op->out_h, k->out_w = op->out_w;
    }
    k->kernel = op->d.kernel, k->stride = op->d.stride, k->pad = op->d.pad;
    k->groups = op->d.groups > 1 ? op->d.groups : 1;
    k->in_zp = n->in[0].zp, k->in_zp2 = n->in[1].zp, k->out_zp = n->out.zp;
    k->lo = relu_out && n->out.zp > -128 ? n->out.zp : -128;
    k->hi = 127;
    k->w = n->w, k->bias = n->bias, k->mult = n->mult, k->shift = n->shift;
}

static void tensor_aliases(at_qnet *q) {
    const at_net *net = q->net;
    q->alias[0] = 0;
    for (int l = 0; l < net->nlayers; l++) {
        const at_layer *L = &net->layers[l];
        q->alias[l + 1] = q_copies_input(L) ? q->alias[L->src[0] + 1] : l + 1;
    }
}

/* The parameters of the tensors that keep their input's, in order (the others are set). */
void q_inherit_params(at_qnet *q) {
    const at_net *net = q->net;
    for (int l = 0; l < net->nlayers; l++)
        if (q_keeps_input_params(net, l)) q->tq[l + 1] = q->tq[net->layers[l].src[0] + 1];
}

/* The int8 parameters of every tensor from the calibrated ranges. */
static void tensor_params(at_qnet *q, const float *lo, const float *hi) {
    const at_net *net = q->net;
    q->tq[0] = lo[0] >= 0.0f && hi[0] <= 1.0f ? (qparams){1.0f / 255.0f, -128} : q_params_for_range(lo[0], hi[0]);
    for (int l = 0; l < net->nlayers; l++)
        if (!q_keeps_input_params(net, l)) q->tq[l + 1] = q_params_for_range(lo[l + 1], hi[l + 1]);
    q_inherit_params(q);
}

/* The kernel call computing layer l's output tensor: what it reads, the parameters around it and
 * its clamp, with its per-channel arrays allocated (Conv2d, Linear, a BatchNorm's affine map). */
static bool node_shape(at_qnet *q, int l, qnode *n) {
    const at_net *net = q->net;
    const at_layer *L = &net->layers[l];
    const at_layer *op = q_folds_into(net, l) ? &net->layers[L->src[0]] : L;
    memset(n, 0, sizeof *n);
    n->layer = l;
    n->op = op;
    n->kind = op->d.kind;
    n->src[0] = op->src[0];
    n->src[1] = op->nsrc == 2 ? op->src[1] : -1;
    n->in[0] = q->tq[n->src[0] + 1];
    n->in[1] = op->nsrc == 2 ? q->tq[n->src[1] + 1] : (qparams){1.0f, 0};
    n->out = q->tq[l + 1];
    bool ok = true;
    switch (n->kind) {
    case AT_LAYER_CONV2D: ok = alloc_channels(n, op->out_c, op->w_count); break;
    case AT_LAYER_LINEAR: ok = alloc_channels(n, op->out_size, op->w_count); break;
    case AT_LAYER_BATCHNORM2D: case AT_LAYER_BATCHNORM1D: ok = alloc_channels(n, L->in_c, (size_t)L->in_c); break;
    case AT_LAYER_ADD: add_node(n); break;
    default: break;
    }
    q_kernel_view(n, L->relu_out);
    return ok;
}

bool q_sums_fit(const qnode *n, int *channel) {
    if (n->nout <= 0) return true;
    const size_t per = n->nweights / (size_t)n->nout;
    for (int o = 0; o < n->nout; o++) {
        int64_t bound = n->bias[o] < 0 ? -(int64_t)n->bias[o] : n->bias[o];
        for (size_t i = 0; i < per && bound <= INT32_MAX; i++) bound += 255 * (int64_t)abs(n->w[(size_t)o * per + i]);
        if (bound > INT32_MAX) {
            *channel = o;
            return false;
        }
    }
    return true;
}

bool q_widen(qnode *n) {
    if (n->kind != AT_LAYER_CONV2D && n->kind != AT_LAYER_LINEAR) return true;
    const size_t per = n->nweights / (size_t)n->nout, kp = q_kpad(per);
    free(n->w16);
    if (!(n->w16 = calloc((size_t)n->nout * kp + 1, sizeof(int16_t)))) {
        at_fail(AT_ERR_NOMEM, "out of memory for int8 weights");
        return false;
    }
    for (int o = 0; o < n->nout; o++)
        for (size_t i = 0; i < per; i++) n->w16[(size_t)o * kp + i] = n->w[(size_t)o * per + i];
    return true;
}

/* Post-training quantization of node n's weights (it has its shape). */
static void quantize_node(const at_net *net, qnode *n) {
    const at_layer *L = &net->layers[n->layer];
    if (n->kind == AT_LAYER_CONV2D || n->kind == AT_LAYER_LINEAR) weighted_node(n, net, n->op, n->op != L ? L : NULL);
    else if (q_is_bn(n->kind)) affine_node(n, net, L);
}

static void free_nodes(at_qnet *q) {
    for (int i = 0; q->nodes && i < q->nnodes; i++) {
        free(q->nodes[i].w);
        free(q->nodes[i].w16);
        free(q->nodes[i].bias);
        free(q->nodes[i].mult);
        free(q->nodes[i].shift);
    }
    free(q->nodes);
}

void at_qnet_free(at_qnet *q) {
    if (!q) return;
    free_nodes(q);
    for (int t = 0; q->act && t <= q->net->nlayers; t++) free(q->act[t]);
    if (q->owns_net) at_net_free(q->net);
    free(q->act);
    free(q->tq);
    free(q->alias);
    free(q->scratch);
    free(q->logits);
    free(q);
}

/* The nodes that compute something: not a copy, not a Conv2d folded into its BatchNorm. */
static bool runs(const at_net *net, int l) { return !q_copies_input(&net->layers[l]) && !q_folded_away(net, l); }

at_status q_alloc(at_qnet **out, at_net *net) {
    *out = NULL;
    at_status s = q_check_supported(net);
    if (s != AT_OK) return s;
    const int T = net->nlayers + 1;
    at_qnet *q = at_calloc(1, sizeof *q, "quantized network");
    if (!q) return AT_ERR_NOMEM;
    q->net = net;
    q->tq = at_calloc((size_t)T, sizeof *q->tq, "tensor scales");
    q->alias = at_calloc((size_t)T, sizeof *q->alias, "tensor aliases");
    q->nodes = at_calloc((size_t)net->nlayers, sizeof *q->nodes, "int8 nodes");
    q->act = at_calloc((size_t)T, sizeof *q->act, "int8 activations");
    if (!q->tq || !q->alias || !q->nodes || !q->act) {
        at_qnet_free(q);
        return AT_ERR_NOMEM;
    }
    for (int t = 0; t < T; t++) q->tq[t] = (qparams){1.0f, 0};
    tensor_aliases(q);
    *out = q;
    return AT_OK;
}

/* Every node's structure from q->tq, with the scratch it needs. */
at_status q_shape_nodes(at_qnet *q) {
    for (int l = 0; l < q->net->nlayers; l++) {
        if (!runs(q->net, l)) continue;
        if (!node_shape(q, l, &q->nodes[q->nnodes++])) return AT_ERR_NOMEM;
        const size_t work = q_work_bytes(&q->nodes[q->nnodes - 1]);
        if (work > q->work) q->work = work;
    }
    return AT_OK;
}

at_status at_quantize(at_qnet **out, at_net *net, const float *calib, int n, const at_quant_config *cfg) {
    *out = NULL;
    if (n <= 0 || !calib) return at_fail(AT_ERR_ARG, "int8 calibration needs samples (got %d)", n);
    const float pct = cfg && cfg->percentile > 0.0f ? cfg->percentile : 100.0f;
    if (!(pct >= 50.0f && pct <= 100.0f))
        return at_fail(AT_ERR_ARG, "int8 calibration percentile %g: give one in [50, 100] (100: min and max)", (double)pct);
    at_qnet *q;
    at_status s = q_alloc(&q, net);
    if (s != AT_OK) return s;
    const int T = net->nlayers + 1;
    float *lo = at_alloc_floats((size_t)T, "ranges"), *hi = at_alloc_floats((size_t)T, "ranges");
    s = lo && hi ? calibrate(net, calib, n, pct, lo, hi) : AT_ERR_NOMEM;
    /* A network trained with QAT is quantized with the ranges it was trained with. */
    for (int t = 1; s == AT_OK && t < T; t++) qat_range(net, t, &lo[t], &hi[t]);
    if (s == AT_OK) tensor_params(q, lo, hi);
    if (s == AT_OK) s = q_shape_nodes(q);
    for (int k = 0; s == AT_OK && k < q->nnodes; k++) {
        quantize_node(net, &q->nodes[k]);
        int c;
        if (!q_widen(&q->nodes[k])) s = AT_ERR_NOMEM;
        else if (!q_sums_fit(&q->nodes[k], &c))
            s = at_fail(AT_ERR_ARG, "int8 quantization: layer %d's int32 sums could overflow at output channel %d "
                                    "(a bias far beyond its weights' range)", q->nodes[k].layer, c);
    }
    free(lo);
    free(hi);
    if (s != AT_OK) {
        at_qnet_free(q);
        return s;
    }
    *out = q;
    return AT_OK;
}

/* ------------------------------------------------------------ the forward pass */

static int per_sample(const at_net *net, int t) { return t < 0 ? net_in_size(net) : net->layers[t].out_size; }

static at_status reserve(at_qnet *q, int n) {
    const at_net *net = q->net;
    const int threads = at_get_threads();
    if (n <= q->cap && threads <= q->threads) return AT_OK;
    const int cap = n > q->cap ? n : q->cap;
    for (int t = 0; t <= net->nlayers; t++) {
        free(q->act[t]);
        q->act[t] = NULL;
        if (q->alias[t] == t && !(q->act[t] = malloc((size_t)cap * per_sample(net, t - 1))))
            return at_fail(AT_ERR_NOMEM, "out of memory for int8 activations of %d samples", cap);
    }
    free(q->scratch);
    free(q->logits);
    q->scratch = malloc((q->work ? q->work : 1) * (size_t)threads);
    q->logits = at_alloc_floats((size_t)cap * at_net_out_size(net), "int8 logits");
    if (!q->scratch || !q->logits) return at_fail(AT_ERR_NOMEM, "out of memory for int8 inference");
    q->cap = cap;
    q->threads = threads;
    return AT_OK;
}

/* Samples [i, i + m) of node k: its kernel on its inputs' rows (a Linear takes them together,
 * every other kernel one at a time). */
static void run_samples(const at_qnet *q, const qnode *k, int i, int m, void *work) {
    const at_net *net = q->net;
    const int s0 = k->src[0], w0 = per_sample(net, s0), wy = per_sample(net, k->layer);
    if (k->kind == AT_LAYER_LINEAR) {
        q_linear(k, q->act[q->alias[s0 + 1]] + (size_t)i * w0, q->act[k->layer + 1] + (size_t)i * wy, m, work);
        return;
    }
    for (int end = i + m; i < end; i++) {
        const int8_t *x = q->act[q->alias[s0 + 1]] + (size_t)i * w0;
        int8_t *y = q->act[k->layer + 1] + (size_t)i * wy;
        switch (k->kind) {
        case AT_LAYER_CONV2D: q_conv(k, x, y, work); break;
        case AT_LAYER_BATCHNORM2D: case AT_LAYER_BATCHNORM1D: qk_affine(&k->k, x, y); break;
        case AT_LAYER_MAXPOOL2D: qk_maxpool(&k->k, x, y); break;
        case AT_LAYER_AVGPOOL2D: qk_avgpool(&k->k, x, y); break;
        case AT_LAYER_GLOBALAVGPOOL: qk_globalavgpool(&k->k, x, y); break;
        case AT_LAYER_RELU: qk_relu(&k->k, x, y, (size_t)wy); break;
        case AT_LAYER_ADD:
            q_add_values(&k->k, x, q->act[q->alias[k->src[1] + 1]] + (size_t)i * per_sample(net, k->src[1]), y,
                         (size_t)wy);
            break;
        default: break;
        }
    }
}

at_status at_qnet_forward(at_qnet *q, const float *x, int n, const int8_t **logits) {
    if (n <= 0) return at_fail(AT_ERR_ARG, "int8 forward of %d samples", n);
    at_status s = reserve(q, n);
    if (s != AT_OK) return s;
    const size_t count = (size_t)n * net_in_size(q->net);
    for (size_t i = 0; i < count; i++)
        if (!isfinite(x[i])) return at_fail(AT_ERR_NAN, "int8 forward: input value %zu is not finite", i);
    q_quantize_values(x, count, q->tq[0], q->act[0]);
    for (int k = 0; k < q->nnodes; k++) {
        const qnode *node = &q->nodes[k];
        const int m = node->kind == AT_LAYER_LINEAR ? Q_LINEAR_GROUP : 1, parts = (n + m - 1) / m;
#pragma omp parallel for num_threads(q->threads) schedule(static)
        for (int g = 0; g < parts; g++) {
            int t = 0;
#ifdef _OPENMP
            t = omp_get_thread_num();
#endif
            run_samples(q, node, g * m, AT_MIN(m, n - g * m), q->scratch + (size_t)t * q->work);
        }
    }
    *logits = q->act[q->alias[q->net->plan.out_tensor + 1]];
    return AT_OK;
}

void at_qnet_output_params(const at_qnet *q, float *scale, int32_t *zero_point) {
    const qparams p = q->tq[q->alias[q->net->plan.out_tensor + 1]];
    *scale = p.scale;
    *zero_point = p.zp;
}

at_status at_qnet_evaluate(at_qnet *q, const at_dataset *ds, int batch, at_eval_result *r) {
    memset(r, 0, sizeof *r);
    if (batch <= 0) batch = 256;
    if (!ds->labels || ds->num_classes != at_net_out_size(q->net) || at_dataset_sample_size(ds) != net_in_size(q->net))
        return at_fail(AT_ERR_ARG, "int8 evaluation needs a classification dataset of the model's input and classes");
    const int D = net_in_size(q->net), K = at_net_out_size(q->net);
    float *x = at_alloc_floats((size_t)batch * D, "int8 evaluation batch");
    int32_t *y = at_calloc((size_t)batch, sizeof(int32_t), "labels");
    at_status s = x && y ? AT_OK : AT_ERR_NOMEM;
    long hits = 0;
    for (int first = 0; s == AT_OK && first < ds->n; first += batch) {
        const int n = ds->n - first < batch ? ds->n - first : batch;
        at_dataset_range(ds, first, n, x, y, NULL);
        const float *z;
        if ((s = at_qnet_predict(q, x, n, &z)) == AT_OK)
            for (int i = 0; i < n; i++) hits += at_argmax(z + (size_t)i * K, K) == y[i];
    }
    free(x);
    free(y);
    r->samples = ds->n;
    r->accuracy = ds->n ? (float)((double)hits / ds->n) : 0.0f;
    return s;
}

at_status at_qnet_predict(at_qnet *q, const float *x, int n, const float **logits) {
    const int8_t *z;
    at_status s = at_qnet_forward(q, x, n, &z);
    if (s != AT_OK) return s;
    float scale;
    int32_t zp;
    at_qnet_output_params(q, &scale, &zp);
    const size_t count = (size_t)n * at_net_out_size(q->net);
    for (size_t i = 0; i < count; i++) q->logits[i] = (float)(z[i] - zp) * scale;
    *logits = q->logits;
    return AT_OK;
}
