/* The certified training loss and its gradient: the cross-entropy of the worst-case logits z_wc,
 * where z_wc[j] = -(lower bound of z_y - z_j) and z_wc[y] = 0, over the eps-ball of each sample.
 * Minimizing it raises the margin bounds, which is what makes a network verifiable. The bounds
 * are IBP's (Gowal et al. 2018) or CROWN-IBP's (Zhang et al. 2020): beta * CROWN-IBP's +
 * (1 - beta) * IBP's, a lower bound whenever both are.
 *
 * The bounds are computed as ibp.c (and crown.c) compute them (the same pass, chunk by chunk
 * over the threads), then the loss gradient goes back through them node by node:
 * - the folded last Linear: m_j = c.mid + d - |c|.rad with c = W_y - W_j, d = b_y - b_j;
 * - CROWN-IBP's part through crown_loss.c, which leaves gradients of the interval bounds its
 *   ReLU relaxations read; they join the interval pass's below;
 * - a fused or standalone ReLU gates the lower and the upper bound by their own sign;
 * - an affine node (y = A x + c) maps centre and radius: the centre's gradient goes back through
 *   the node's own backward kernel (with the weight gradient from the centre), the radius's
 *   through the same kernel on |A| (the |A| copy of ibp.c), whose weight gradient, times
 *   sign(W), is the radius's part of dW (d|w|/dw = sign(w));
 * - a monotone node (max pooling, Tanh, ...) takes each bound's gradient through its backward
 *   at that bound.
 * Each thread adds its chunks' parameter gradients into its own buffer; the buffers are added
 * in thread order at the end (bit-identical for a thread count). BatchNorm is refused: in
 * training mode its bounds would need the batch's statistics (Shi et al. 2021), not yet here. */
#include "bounds.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

enum { LOSS_CHUNK = 16 };

typedef struct loss_job {
    margin_job m;            /* first: bounds_ball_input reads it (x, y, eps) */
    const at_net *net;
    int n, threads, elide;
    size_t np;
    float **grads, **abs_grads; /* per thread */
    double *loss;            /* per thread */
    int *verified;           /* per thread: samples whose margin bounds are all > 0 */
    float weight;            /* the gradient added is weight * dloss/dparams (loss: mean) */
    float beta;              /* CROWN-IBP's share of the margin bounds (0: IBP alone) */
    float *lin_params;       /* with beta > 0: the parameters with every bias zeroed */
} loss_job;

/* The thread's scratch beyond ibp.c's: each tensor's bound gradients, each fused ReLU's
 * producer's bound gradients before it, five big vectors, the chunk's margins (IBP, CROWN-IBP)
 * and their gradients, then (with CROWN-IBP) crown.c's and crown_loss.c's scratch. */
typedef struct back_bufs {
    float **dlo, **dhi; /* per tensor + 1; fused nodes alias */
    float **dpre_lo, **dpre_hi; /* per node: with a fused ReLU, else NULL */
    float *dmid, *drad, *dmid2, *drad2, *dummy;
    float *m_ibp, *m_crown, *dm;
    float *crown, *adjoint;
} back_bufs;

static size_t back_floats(const at_net *net, bool crown) {
    const size_t R = (size_t)LOSS_CHUNK * at_net_out_size(net);
    size_t f = 2 * (size_t)LOSS_CHUNK * net_in_size(net);
    for (int l = 0; l < net->nlayers; l++)
        if (!net->layers[l].fused) f += (net->layers[l].relu_out ? 4 : 2) * (size_t)LOSS_CHUNK * net->layers[l].out_size;
    f += 5 * (size_t)LOSS_CHUNK * bounds_max_tensor(net) + 3 * R;
    return crown ? f + crown_scratch(net, LOSS_CHUNK) + crown_adjoint_floats(net, LOSS_CHUNK) : f;
}

/* The caller's tables: dlo, dhi of nlayers + 1 pointers, dpre_lo, dpre_hi of nlayers. */
static void carve_back(const at_net *net, float *f, float **dlo, float **dhi, float **dpre_lo, float **dpre_hi,
                       back_bufs *B) {
    const size_t C = LOSS_CHUNK, big = C * bounds_max_tensor(net), R = C * at_net_out_size(net);
    B->dlo = dlo, B->dhi = dhi, B->dpre_lo = dpre_lo, B->dpre_hi = dpre_hi;
    B->dlo[0] = f, B->dhi[0] = f + C * net_in_size(net);
    f += 2 * C * net_in_size(net);
    for (int l = 0; l < net->nlayers; l++) {
        const at_layer *L = &net->layers[l];
        B->dpre_lo[l] = B->dpre_hi[l] = NULL;
        if (L->fused) {
            B->dlo[l + 1] = B->dlo[L->src[0] + 1];
            B->dhi[l + 1] = B->dhi[L->src[0] + 1];
            continue;
        }
        B->dlo[l + 1] = f, B->dhi[l + 1] = f + C * L->out_size;
        f += 2 * C * L->out_size;
        if (L->relu_out) {
            B->dpre_lo[l] = f, B->dpre_hi[l] = f + C * L->out_size;
            f += 2 * C * L->out_size;
        }
    }
    float **v[] = {&B->dmid, &B->drad, &B->dmid2, &B->drad2, &B->dummy};
    for (int i = 0; i < 5; i++, f += big) *v[i] = f;
    B->m_ibp = f, B->m_crown = f + R, B->dm = f + 2 * R;
    B->crown = f + 3 * R;
    B->adjoint = B->crown + crown_scratch(net, LOSS_CHUNK);
}

/* The worst-case logits' cross-entropy of one sample from its margin bounds m (m[y] unused);
 * dm receives dloss/dm (scale: the sample's share of the weighted mean). */
static double worst_case_ce(const float *m, int K, int y, double scale, float *dm) {
    double top = 0.0; /* z_wc[y] = 0 */
    for (int j = 0; j < K; j++)
        if (j != y) top = fmax(top, -(double)m[j]);
    double sum = exp(-top);
    for (int j = 0; j < K; j++)
        if (j != y) sum += exp(-(double)m[j] - top);
    for (int j = 0; j < K; j++) /* dz_wc[j] = softmax_j; dm_j = -dz_wc[j] */
        dm[j] = j == y ? 0.0f : (float)(-scale * exp(-(double)m[j] - top) / sum);
    return top + log(sum); /* -log softmax(z_wc)[y] with z_wc[y] = 0 */
}

/* The folded last Linear for one sample (its input's bounds lo, hi): the margins m (K floats,
 * +inf at y), leaving the input box's centre and radius in mid, rad. */
static void fold_margins(const at_layer *L, const float *W, const float *b, const float *lo, const float *hi, int y,
                         float *mid, float *rad, float *m) {
    const int D = L->in_size, K = L->out_size;
    bounds_centre_radius(lo, hi, (size_t)D, mid, rad);
    for (int j = 0; j < K; j++) {
        if (j == y) {
            m[j] = INFINITY;
            continue;
        }
        double centre = (double)b[y] - b[j], spread = 0.0;
        for (int i = 0; i < D; i++) {
            const double c = (double)W[(size_t)y * D + i] - W[(size_t)j * D + i];
            centre += c * mid[i];
            spread += fabs(c) * rad[i];
        }
        m[j] = (float)(centre - spread);
    }
}

/* Its gradient for the margins' gradient dm (times share): into dW, db and the bounds of its
 * input (dlo, dhi), with mid, rad as fold_margins left them. */
static void fold_back(const at_layer *L, const float *W, float *dW, float *db, const float *mid, const float *rad, int y,
                      const float *dm, float share, float *dlo, float *dhi) {
    const int D = L->in_size, K = L->out_size;
    for (int j = 0; j < K; j++) {
        const float d = dm[j] * share;
        if (j == y || d == 0.0f) continue;
        db[y] += d, db[j] -= d;
        for (int i = 0; i < D; i++) {
            const float c = W[(size_t)y * D + i] - W[(size_t)j * D + i], s = c > 0 ? 1.0f : (c < 0 ? -1.0f : 0.0f);
            const float g = d * (mid[i] - s * rad[i]); /* dm_j/dW_y; dm_j/dW_j is its negative */
            dW[(size_t)y * D + i] += g, dW[(size_t)j * D + i] -= g;
            const float dmid = d * c, drad = -d * fabsf(c);
            dlo[i] += 0.5f * (dmid - drad), dhi[i] += 0.5f * (dmid + drad);
        }
    }
}

/* Gates a bound's gradient by its pre-activation being positive (the ReLU's derivative). */
static void relu_gate(float *d, const float *pre, size_t count) {
    for (size_t i = 0; i < count; i++)
        if (!(pre[i] > 0.0f)) d[i] = 0.0f;
}

/* An affine node's bound gradients into its inputs', and its weight gradients. */
static void affine_back(const bound_net *B, const thread_bufs *T, const back_bufs *K, float *grads, float *abs_grads,
                        int l, int n) {
    const at_net *net = B->net;
    at_layer A = net->layers[l];
    A.relu_out = false;
    const at_layer_ops *ops = at_layer_ops_for(A.d.kind);
    const size_t in = (size_t)n * A.in_size, out = (size_t)n * A.out_size;
    float *dlo = K->dlo[l + 1], *dhi = K->dhi[l + 1];
    for (size_t i = 0; i < out; i++) { /* lo = ym - yr, hi = ym + yr */
        const float a = dlo[i], b = dhi[i];
        dlo[i] = a + b; /* now d ym */
        dhi[i] = b - a; /* now d yr */
    }
    const int s0 = A.src[0] + 1, s1 = A.nsrc == 2 ? A.src[1] + 1 : 0;
    bounds_centre_radius(T->lo[s0], T->hi[s0], in, T->mid, T->rad);
    at_ctx ctx = {.params = net->params, .grads = grads, .work = T->work, .buffers = net->buffers, .dx2 = K->dmid2};
    ops->backward(&A, &ctx, T->mid, K->dummy, dlo, K->dmid, n, A.w_count > 0);
    ctx = (at_ctx){.params = B->abs_params, .grads = abs_grads, .work = T->work, .buffers = B->abs_buffers,
                   .dx2 = K->drad2};
    ops->backward(&A, &ctx, T->rad, K->dummy, dhi, K->drad, n, A.w_count > 0);
    for (size_t i = 0; i < A.w_count; i++) { /* d|w|/dw = sign(w) */
        const float w = net->params[A.w_off + i];
        grads[A.w_off + i] += w > 0 ? abs_grads[A.w_off + i] : (w < 0 ? -abs_grads[A.w_off + i] : 0.0f);
        abs_grads[A.w_off + i] = 0.0f;
    }
    memset(abs_grads + A.b_off, 0, sizeof(float) * A.b_count); /* the radius has no offset */
    for (size_t i = 0; i < in; i++) {
        K->dlo[s0][i] += 0.5f * (K->dmid[i] - K->drad[i]);
        K->dhi[s0][i] += 0.5f * (K->dmid[i] + K->drad[i]);
        if (s1) {
            K->dlo[s1][i] += 0.5f * (K->dmid2[i] - K->drad2[i]);
            K->dhi[s1][i] += 0.5f * (K->dmid2[i] + K->drad2[i]);
        }
    }
}

/* A monotone node: each bound's gradient through the node's backward at that bound. */
static void monotone_back(const at_net *net, const thread_bufs *T, const back_bufs *K, float *grads, int l, int n) {
    const at_layer *L = &net->layers[l];
    const at_layer_ops *ops = at_layer_ops_for(L->d.kind);
    const int s0 = L->src[0] + 1;
    const size_t in = (size_t)n * L->in_size;
    const at_ctx ctx = {.params = net->params, .grads = grads, .work = T->work, .buffers = net->buffers};
    ops->backward(L, &ctx, T->lo[s0], T->lo[l + 1], K->dlo[l + 1], K->dmid, n, false);
    ops->backward(L, &ctx, T->hi[s0], T->hi[l + 1], K->dhi[l + 1], K->drad, n, false);
    for (size_t i = 0; i < in; i++) {
        K->dlo[s0][i] += K->dmid[i];
        K->dhi[s0][i] += K->drad[i];
    }
}

/* Zeroes every bound gradient of the chunk and the dummy. */
static void zero_back(const at_net *net, const back_bufs *K) {
    for (int l = 0; l <= net->nlayers; l++) {
        if (l > 0 && net->layers[l - 1].fused) continue;
        const size_t size = LOSS_CHUNK * (size_t)(l ? net->layers[l - 1].out_size : net_in_size(net));
        memset(K->dlo[l], 0, sizeof(float) * size);
        memset(K->dhi[l], 0, sizeof(float) * size);
        if (l > 0 && K->dpre_lo[l - 1]) {
            memset(K->dpre_lo[l - 1], 0, sizeof(float) * size);
            memset(K->dpre_hi[l - 1], 0, sizeof(float) * size);
        }
    }
    memset(K->dummy, 0, sizeof(float) * LOSS_CHUNK * bounds_max_tensor(net));
}

/* A chunk's per-thread state beyond thread_bufs. */
typedef struct chunk_state {
    back_bufs K;
    crown_bufs C;
    float **lam;
    crown_adjoint A;
} chunk_state;

/* The chunk's margins (IBP's with the last Linear folded in, mixed with CROWN-IBP's when
 * beta > 0), their loss and verified count added to the thread's, the loss's gradient per
 * margin in K.dm. */
static void chunk_margins(const loss_job *J, const thread_bufs *T, chunk_state *S, int begin, int n, int t) {
    const at_net *net = J->net;
    const at_layer *E = &net->layers[J->elide];
    const int D = E->in_size, src = E->src[0] + 1, k = E->out_size;
    const int32_t *y = J->m.y + begin;
    back_bufs *K = &S->K;
    for (int r = 0; r < n; r++)
        fold_margins(E, net->params + E->w_off, net->params + E->b_off, T->lo[src] + (size_t)r * D,
                     T->hi[src] + (size_t)r * D, y[r], T->mid, T->rad, K->m_ibp + (size_t)r * k);
    if (J->beta > 0.0f) {
        crown_rows(net, T, K->crown, S->lam, &S->C, y, n, K->m_crown);
        for (int i = 0; i < n * k; i++)
            if (i % k != y[i / k]) K->m_ibp[i] = J->beta * K->m_crown[i] + (1.0f - J->beta) * K->m_ibp[i];
    }
    for (int r = 0; r < n; r++) {
        const float *m = K->m_ibp + (size_t)r * k;
        bool all = true;
        for (int j = 0; j < k; j++) all = all && (j == y[r] || m[j] > 0.0f);
        J->verified[t] += all;
        J->loss[t] += worst_case_ce(m, k, y[r], (double)J->weight / J->n, K->dm + (size_t)r * k);
    }
}

/* The margins' gradient back: the folded Linear's share (1 - beta) and CROWN-IBP's (beta) into
 * the parameters and the interval bounds, then through the interval pass, last node first. */
static void chunk_back(const loss_job *J, const bound_net *B, const thread_bufs *T, chunk_state *S, int begin, int n,
                       int t) {
    const at_net *net = J->net;
    const at_layer *E = &net->layers[J->elide];
    const int D = E->in_size, src = E->src[0] + 1, k = E->out_size;
    back_bufs *K = &S->K;
    float *g = J->grads[t];
    for (int r = 0; J->beta < 1.0f && r < n; r++) {
        bounds_centre_radius(T->lo[src] + (size_t)r * D, T->hi[src] + (size_t)r * D, (size_t)D, T->mid, T->rad);
        fold_back(E, net->params + E->w_off, g + E->w_off, g + E->b_off, T->mid, T->rad, J->m.y[begin + r],
                  K->dm + (size_t)r * k, 1.0f - J->beta, K->dlo[src] + (size_t)r * D, K->dhi[src] + (size_t)r * D);
    }
    if (J->beta > 0.0f) {
        for (int i = 0; i < n * k; i++) K->dm[i] *= J->beta;
        const crown_bound_grads G = {K->dlo, K->dhi, K->dpre_lo, K->dpre_hi};
        crown_rows_backward(net, T, &S->C, &S->A, K->dm, J->m.y + begin, n, J->lin_params, g, J->abs_grads[t], &G);
    }
    for (int l = J->elide - 1; l >= 0; l--) {
        const at_layer *L = &net->layers[l];
        if (L->fused) continue;
        if (L->relu_out) { /* the gradient of the bounds before the ReLU: gated, plus CROWN's */
            const size_t count = (size_t)n * L->out_size;
            relu_gate(K->dlo[l + 1], T->pre_lo[l], count);
            relu_gate(K->dhi[l + 1], T->pre_hi[l], count);
            for (size_t i = 0; J->beta > 0.0f && i < count; i++) {
                K->dlo[l + 1][i] += K->dpre_lo[l][i];
                K->dhi[l + 1][i] += K->dpre_hi[l][i];
            }
        }
        if (at_layer_ops_for(L->d.kind)->bound_rule == AT_BOUND_AFFINE)
            affine_back(B, T, K, g, J->abs_grads[t], l, n);
        else
            monotone_back(net, T, K, g, l, n);
    }
}

static void chunk_loss(const bound_net *B, const thread_bufs *T, void *user, int begin, int n) {
    const loss_job *J = user;
    const at_net *net = B->net;
    const int t = omp_get_thread_num();
    float *dlo[net->nlayers + 1], *dhi[net->nlayers + 1], *dpre_lo[net->nlayers], *dpre_hi[net->nlayers];
    float *lam[net->nlayers + 1], *adj[net->nlayers + 1], *keep[net->nlayers];
    chunk_state S = {.C = {.keep = keep}, .lam = lam, .A = {.adj = adj}};
    carve_back(net, T->extra, dlo, dhi, dpre_lo, dpre_hi, &S.K);
    zero_back(net, &S.K);
    if (J->beta > 0.0f) crown_adjoint_carve(net, S.K.adjoint, n, &S.A, keep);
    chunk_margins(J, T, &S, begin, n, t);
    chunk_back(J, B, T, &S, begin, n, t);
}

/* What the loss needs of the network: the folded last Linear, no BatchNorm, at most 64 classes;
 * with CROWN-IBP, a linear relaxation of every node and affine nodes whose offset is their bias
 * (the default |A| rule: Linear, Conv2d, pooling, Add, Flatten). */
static at_status check_network(const at_net *net, bool crown, int *elide) {
    const char *what = crown ? "CROWN-IBP training" : "IBP training";
    const int t = net->plan.out_tensor;
    const at_layer *L = &net->layers[t];
    if (L->d.kind != AT_LAYER_LINEAR || L->relu_out)
        return at_fail(AT_ERR_ARG, "%s needs a network that ends with a Linear layer", what);
    if (L->out_size > 64) return at_fail(AT_ERR_ARG, "%s supports at most 64 classes, not %d", what, L->out_size);
    for (int l = 0; l < net->nlayers; l++) {
        const at_layer_kind k = net->layers[l].d.kind;
        if (k == AT_LAYER_BATCHNORM2D || k == AT_LAYER_BATCHNORM1D)
            return at_fail(AT_ERR_ARG, "%s of a network with BatchNorm (node %d) is not supported yet", what, l);
    }
    int u = bounds_unsupported(net, t);
    if (u < 0 && crown) u = crown_unsupported(net);
    for (int l = 0; u < 0 && crown && l < net->nlayers; l++)
        if (!net->layers[l].fused && at_layer_ops_for(net->layers[l].d.kind)->abs_map) u = l;
    if (u >= 0)
        return at_fail(AT_ERR_ARG, "%s: node %d (%s) has no %s rule", what, u, at_layer_ops_for(net->layers[u].d.kind)->name,
                       crown ? "linear relaxation" : "bound");
    *elide = t;
    return AT_OK;
}

at_status certified_check_network(const at_net *net, bool crown) {
    int elide;
    return check_network(net, crown, &elide);
}

static void free_job(loss_job *J) {
    for (int t = 0; J->grads && t < J->threads; t++) free(J->grads[t]);
    for (int t = 0; J->abs_grads && t < J->threads; t++) free(J->abs_grads[t]);
    free(J->grads), free(J->abs_grads), free(J->loss), free(J->verified), free(J->lin_params);
}

/* The per-thread sums, and with CROWN-IBP the parameters with every bias zeroed. */
static at_status alloc_job(loss_job *J) {
    J->grads = calloc((size_t)J->threads, sizeof(float *));
    J->abs_grads = calloc((size_t)J->threads, sizeof(float *));
    J->loss = calloc((size_t)J->threads, sizeof(double));
    J->verified = calloc((size_t)J->threads, sizeof(int));
    bool ok = J->grads && J->abs_grads && J->loss && J->verified;
    for (int t = 0; ok && t < J->threads; t++)
        ok = (J->grads[t] = at_alloc_floats(J->np, "certified-loss gradients")) &&
             (J->abs_grads[t] = at_alloc_floats(J->np, "certified-loss gradients"));
    if (ok && J->beta > 0.0f) ok = (J->lin_params = at_alloc_floats(AT_MAX(J->np, 1), "certified-loss parameters"));
    if (!ok) return at_fail(AT_ERR_NOMEM, "out of memory for the certified training loss");
    const at_net *net = J->net;
    if (J->lin_params) {
        memcpy(J->lin_params, net->params, sizeof(float) * J->np);
        for (int l = 0; l < net->nlayers; l++)
            memset(J->lin_params + net->layers[l].b_off, 0, sizeof(float) * net->layers[l].b_count);
    }
    return AT_OK;
}

at_status at_certified_loss(at_net *net, const float *x, const int32_t *y, int n, float eps, float beta, float weight,
                            float *loss, int *verified) {
    if (!net || !x || !y || !loss || n <= 0) return at_fail(AT_ERR_ARG, "certified loss: NULL argument or no samples");
    if (!(eps >= 0.0f) || !isfinite(eps)) return at_fail(AT_ERR_ARG, "certified loss: eps %g must be finite and >= 0", (double)eps);
    if (!(beta >= 0.0f && beta <= 1.0f)) return at_fail(AT_ERR_ARG, "certified loss: beta %g must be in [0, 1]", (double)beta);
    loss_job J = {.m = {x, y, eps, NULL, -1}, .net = net, .n = n, .threads = AT_MAX(1, at_get_threads()),
                  .np = net->nparams, .weight = weight, .beta = beta};
    at_status s = check_network(net, beta > 0.0f, &J.elide);
    for (int i = 0; s == AT_OK && i < n; i++)
        if (y[i] < 0 || y[i] >= at_net_out_size(net)) s = at_fail(AT_ERR_ARG, "certified loss: label %d outside the classes", y[i]);
    if (s == AT_OK) s = alloc_job(&J);
    bound_net B = {.net = net, .stop = J.elide, .chunk = LOSS_CHUNK, .extra = back_floats(net, beta > 0.0f)};
    if (s == AT_OK) s = bounds_run(&B, n, bounds_ball_input, chunk_loss, &J);
    double total = 0.0;
    int proven = 0;
    for (int t = 0; s == AT_OK && t < J.threads; t++) { /* in thread order */
        for (size_t i = 0; i < J.np; i++) net->grads[i] += J.grads[t][i];
        total += J.loss[t];
        proven += J.verified[t];
    }
    if (s == AT_OK) *loss = (float)(total / n);
    if (s == AT_OK && verified) *verified = proven;
    free_job(&J);
    return s;
}

at_status at_ibp_loss(at_net *net, const float *x, const int32_t *y, int n, float eps, float weight, float *loss,
                      int *verified) {
    return at_certified_loss(net, x, y, n, eps, 0.0f, weight, loss, verified);
}
