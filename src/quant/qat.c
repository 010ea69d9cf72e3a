/* Quantization-aware training: fake quantization of the weights and of the int8 model's tensors,
 * with straight-through gradients (qat.h). Which tensors are rounded, and with whose range,
 * follows at_quantize's plan (qplan.c): a Conv2d, Linear, BatchNorm or Add output has a range of
 * its own; pooling and a standalone ReLU keep their input's; a Dropout or Flatten is its input;
 * a Conv2d or Linear folded into the BatchNorm after it has no int8 tensor at all. */
#include "quant/qat.h"
#include "quant/quant.h"

#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The executor's hooks (net_internal.h's at_net_hooks), below. */
static at_status qat_pass_begin(at_net *net, int n, bool infer);
static at_status qat_pass_end(at_net *net);
static void qat_forward(at_net *net, int l, float *y, int begin, int n, int thread);
static void qat_backward(const at_net *net, int l, float *dy, int begin, int n);
static const at_net_hooks QAT_HOOKS = {qat_pass_begin, qat_pass_end, qat_forward, qat_backward, qat_free};

/* Which tensor's range quantizes each tensor, and which are rounded. */
static void plan_tensors(at_qat *q, const at_net *net) {
    for (int l = 0; l < net->nlayers; l++) {
        const at_layer *L = &net->layers[l];
        qat_tensor *t = &q->t[l + 1];
        const int src_own = q->t[L->src[0] + 1].own;
        if (L->fused || q_folded_away(net, l)) continue; /* no int8 tensor of its own */
        if (q_copies_input(L)) {
            t->own = src_own;
        } else if (q_keeps_input_params(net, l)) {
            t->own = src_own;
            t->apply = src_own != 0;
        } else {
            t->own = l + 1;
            t->apply = true;
        }
    }
    /* The logits: their int8 rounding only decides near-ties of the argmax, and rounding them
     * here would make the loss a staircase. */
    q->t[net->plan.out_tensor + 1].apply = false;
}

void qat_free(at_net *net) {
    at_qat *q = net->qat;
    if (!q) return;
    for (int t = 0; q->t && t < q->T; t++) free(q->t[t].mask);
    free(q->t);
    free(q->master);
    free(q->tmin);
    free(q->tmax);
    free(q);
    net->qat = NULL;
    net->hooks = NULL;
}

at_status qat_attach(at_net *net, float momentum) {
    if (!(momentum > 0.0f && momentum <= 1.0f))
        return at_fail(AT_ERR_ARG, "QAT range momentum %g: give one in (0, 1] (default 0.01)", (double)momentum);
    at_status s = q_check_supported(net);
    if (s != AT_OK) {
        char why[400]; /* at_fail must not format its own message into itself */
        snprintf(why, sizeof why, "%s", at_error_message());
        return at_fail(s, "quantization-aware training: %s", why);
    }
    if (net->qat) {
        net->qat->momentum = momentum;
        return AT_OK;
    }
    at_qat *q = at_calloc(1, sizeof *q, "QAT state");
    if (!q) return AT_ERR_NOMEM;
    net->qat = q;
    net->hooks = &QAT_HOOKS;
    q->momentum = momentum;
    q->T = net->nlayers + 1;
    q->t = calloc((size_t)q->T, sizeof *q->t);
    q->master = malloc(sizeof(float) * (net->nparams ? net->nparams : 1));
    if (!q->t || !q->master) {
        qat_free(net);
        return at_fail(AT_ERR_NOMEM, "out of memory for the QAT state");
    }
    plan_tensors(q, net);
    return AT_OK;
}

/* ------------------------------------------------------------ weights */

/* The weights of layer L (Conv2d or Linear) as int8 values per output channel times their
 * scale max|w| / 127: the values at_quantize gives them (a BatchNorm folded into L scales each
 * channel, which scales its int8 scale and leaves its int8 values as they are). */
static void fake_quantize_weights(const at_layer *L, float *w) {
    const int nout = L->d.kind == AT_LAYER_CONV2D ? L->out_c : L->out_size;
    const size_t per = L->w_count / (size_t)nout;
    for (int o = 0; o < nout; o++) {
        float *wo = w + (size_t)o * per;
        double amax = 0.0;
        for (size_t i = 0; i < per; i++) amax = fmax(amax, fabs(wo[i]));
        const double s = q_weight_scale(amax);
        for (size_t i = 0; i < per; i++) wo[i] = (float)(q_weight_int8(wo[i], s) * s);
    }
}

static bool quantized_weights(const at_layer *L) {
    return !L->fused && L->w_count > 0 && (L->d.kind == AT_LAYER_CONV2D || L->d.kind == AT_LAYER_LINEAR);
}

void qat_begin(at_net *net) {
    at_qat *q = net->qat;
    if (!q || q->depth++ > 0) return;
    memcpy(q->master, net->params, sizeof(float) * net->nparams);
    for (int l = 0; l < net->nlayers; l++)
        if (quantized_weights(&net->layers[l]))
            fake_quantize_weights(&net->layers[l], net->params + net->layers[l].w_off);
}

void qat_end(at_net *net) {
    at_qat *q = net->qat;
    if (!q || q->depth == 0 || --q->depth > 0) return;
    /* Only the quantized weights change; biases and BatchNorm parameters are the params' own. */
    for (int l = 0; l < net->nlayers; l++) {
        const at_layer *L = &net->layers[l];
        if (quantized_weights(L))
            memcpy(net->params + L->w_off, q->master + L->w_off, sizeof(float) * L->w_count);
    }
}

/* ------------------------------------------------------------ the executor's hooks */

static bool rounds(const at_qat *q, int t) { return q->depth > 0 && q->t[t].apply && q->t[q->t[t].own].seen; }

static at_status qat_pass_begin(at_net *net, int n, bool infer) {
    at_qat *q = net->qat;
    if (!q) return AT_OK;
    for (int t = 0; t < q->T; t++) q->t[t].masked = !infer && rounds(q, t);
    if (q->depth > 0 && net->training) {
        const int threads = AT_MAX(net->threads, omp_get_max_threads());
        if (threads > q->nthreads) {
            free(q->tmin);
            free(q->tmax);
            q->tmin = malloc(sizeof(float) * (size_t)threads * q->T);
            q->tmax = malloc(sizeof(float) * (size_t)threads * q->T);
            q->nthreads = q->tmin && q->tmax ? threads : 0;
            if (!q->nthreads) return at_fail(AT_ERR_NOMEM, "out of memory for the QAT ranges");
        }
        for (size_t i = 0; i < (size_t)q->nthreads * q->T; i++) q->tmin[i] = INFINITY, q->tmax[i] = -INFINITY;
    }
    if (infer || q->depth == 0 || n <= q->cap) return AT_OK; /* masks only inside a scope */
    for (int t = 1; t < q->T; t++) {
        free(q->t[t].mask);
        q->t[t].mask = NULL;
        if (q->t[t].apply && !(q->t[t].mask = malloc((size_t)n * net->layers[t - 1].out_size)))
            return at_fail(AT_ERR_NOMEM, "out of memory for the QAT masks (%d samples)", n);
    }
    q->cap = n;
    return AT_OK;
}

/* Data-parallel training: every rank's extremes of tensor t in lo[t], hi[t] replaced by the
 * whole batch's (each rank's values in its own slots of a sum), so that all ranks move the same
 * ranges, those one process would. */
static at_status share_extremes(const at_comm *comm, int T, float *lo, float *hi) {
    const size_t per = 2 * (size_t)T;
    double *all = calloc(per * (size_t)comm->size, sizeof *all);
    if (!all) return at_fail(AT_ERR_NOMEM, "out of memory for the QAT ranges' exchange");
    for (int t = 0; t < T; t++) all[per * comm->rank + 2 * t] = lo[t], all[per * comm->rank + 2 * t + 1] = hi[t];
    const at_status s = comm->allreduce_sum(comm->user, all, per * (size_t)comm->size);
    for (int r = 0; s == AT_OK && r < comm->size; r++)
        for (int t = 0; t < T; t++) {
            lo[t] = fminf(lo[t], (float)all[per * r + 2 * t]);
            hi[t] = fmaxf(hi[t], (float)all[per * r + 2 * t + 1]);
        }
    free(all);
    return s;
}

/* After a training forward: each owner's range moves toward the batch's extremes (the first
 * batch sets it). */
static at_status qat_pass_end(at_net *net) {
    at_qat *q = net->qat;
    if (!q || q->depth == 0 || !net->training) return AT_OK;
    float *lo = malloc(sizeof(float) * 2 * (size_t)q->T), *hi = lo + q->T;
    if (!lo) return at_fail(AT_ERR_NOMEM, "out of memory for the QAT ranges");
    for (int t = 0; t < q->T; t++) {
        lo[t] = INFINITY, hi[t] = -INFINITY;
        for (int k = 0; k < q->nthreads; k++) {
            lo[t] = fminf(lo[t], q->tmin[(size_t)k * q->T + t]);
            hi[t] = fmaxf(hi[t], q->tmax[(size_t)k * q->T + t]);
        }
    }
    at_status s = net->comm && net->comm->size > 1 ? share_extremes(net->comm, q->T, lo, hi) : AT_OK;
    for (int t = 1; s == AT_OK && t < q->T; t++) {
        qat_tensor *r = &q->t[t];
        if (!r->apply || r->own != t || !(lo[t] <= hi[t]) || !isfinite(lo[t]) || !isfinite(hi[t])) continue;
        if (!r->seen) {
            r->lo = lo[t], r->hi = hi[t], r->seen = true;
        } else {
            r->lo += q->momentum * (lo[t] - r->lo);
            r->hi += q->momentum * (hi[t] - r->hi);
        }
    }
    free(lo);
    return s;
}

static void qat_forward(at_net *net, int l, float *y, int begin, int n, int thread) {
    at_qat *q = net->qat;
    const int t = l + 1;
    if (!q || q->depth == 0 || !q->t[t].apply) return;
    const size_t count = (size_t)n * net->layers[l].out_size;
    if (net->training && q->t[t].own == t && thread < q->nthreads) {
        float lo = q->tmin[(size_t)thread * q->T + t], hi = q->tmax[(size_t)thread * q->T + t];
        for (size_t i = 0; i < count; i++) lo = fminf(lo, y[i]), hi = fmaxf(hi, y[i]);
        q->tmin[(size_t)thread * q->T + t] = lo, q->tmax[(size_t)thread * q->T + t] = hi;
    }
    const qat_tensor *range = &q->t[q->t[t].own];
    if (!range->seen) return;
    const qparams p = q_params_for_range(range->lo, range->hi);
    /* The grid's ends, half a step out: a value beyond them is clamped, its gradient stopped. */
    const double below = (-128.5 - p.zp) * (double)p.scale, above = (127.5 - p.zp) * (double)p.scale;
    unsigned char *mask = q->t[t].masked ? q->t[t].mask + (size_t)begin * net->layers[l].out_size : NULL;
    for (size_t i = 0; i < count; i++) {
        const float v = y[i];
        if (mask) mask[i] = v >= below && v <= above;
        y[i] = (float)((qk_quantize(v, p.scale, p.zp) - p.zp) * (double)p.scale);
    }
}

static void qat_backward(const at_net *net, int l, float *dy, int begin, int n) {
    const at_qat *q = net->qat;
    if (!q || !q->t[l + 1].masked) return;
    const size_t size = (size_t)net->layers[l].out_size, count = (size_t)n * size;
    const unsigned char *mask = q->t[l + 1].mask + (size_t)begin * size;
    for (size_t i = 0; i < count; i++)
        if (!mask[i]) dy[i] = 0.0f;
}

/* ------------------------------------------------------------ files */

/* "layer lo hi" per trained range, separated by ';' (9 significant digits: the floats exactly). */
at_status qat_ranges_text(const at_net *net, char **out) {
    const at_qat *q = net->qat;
    *out = NULL;
    const int have = at_net_qat_ranges(net);
    if (!have) return AT_OK;
    const size_t cap = (size_t)have * 64 + 1;
    char *text = malloc(cap);
    if (!text) return at_fail(AT_ERR_NOMEM, "out of memory for the QAT ranges' metadata");
    size_t used = 0;
    text[0] = '\0';
    for (int t = 1; t < q->T; t++)
        if (q->t[t].seen)
            used += (size_t)snprintf(text + used, cap - used, "%s%d %.9g %.9g", used ? ";" : "", t - 1,
                                     (double)q->t[t].lo, (double)q->t[t].hi);
    *out = text;
    return AT_OK;
}

static bool parse_float(const char **s, float *v) {
    char *end;
    errno = 0;
    const double d = strtod(*s, &end);
    if (end == *s || errno || !isfinite(d) || fabs(d) > 3e38) return false;
    *v = (float)d;
    *s = end;
    return true;
}

/* One "layer lo hi" entry at *s into q, its layer an owner tensor. */
static bool parse_entry(at_qat *q, const char **s) {
    char *end;
    errno = 0;
    const long l = strtol(*s, &end, 10);
    if (end == *s || errno || l < 0 || l >= q->T - 1 || q->t[l + 1].own != l + 1) return false;
    *s = end;
    float lo, hi;
    if (!parse_float(s, &lo) || !parse_float(s, &hi) || !(lo <= hi)) return false;
    q->t[l + 1].lo = lo, q->t[l + 1].hi = hi, q->t[l + 1].seen = true;
    return true;
}

static void forget_ranges(at_qat *q) {
    for (int t = 0; t < q->T; t++) q->t[t].seen = false;
}

at_status qat_ranges_parse(at_net *net, const char *text, const char *path) {
    at_status s = qat_attach(net, net->qat ? net->qat->momentum : 0.01f);
    if (s != AT_OK) return at_fail(s, "%s: advtrain.qat metadata on a network that cannot be quantized", path);
    at_qat *q = net->qat;
    forget_ranges(q);
    const char *p = text;
    do {
        if (!parse_entry(q, &p) || (*p != ';' && *p != '\0')) {
            forget_ranges(q);
            return at_fail(AT_ERR_FORMAT, "%s: advtrain.qat metadata '%.60s': at character %ld, not 'LAYER LO HI' for a "
                                          "layer with an int8 range of its own and LO <= HI",
                           path, text, (long)(p - text));
        }
    } while (*p++ == ';');
    return AT_OK;
}

bool qat_range(const at_net *net, int t, float *lo, float *hi) {
    const at_qat *q = net->qat;
    if (!q || t <= 0 || t >= q->T || !q->t[t].seen || q->t[t].own != t) return false;
    *lo = q->t[t].lo, *hi = q->t[t].hi;
    return true;
}

int at_net_qat_ranges(const at_net *net) {
    int n = 0;
    for (int t = 1; net->qat && t < net->qat->T; t++) n += net->qat->t[t].seen && net->qat->t[t].own == t;
    return n;
}
