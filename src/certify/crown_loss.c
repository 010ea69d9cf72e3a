/* The gradient of CROWN-IBP margin bounds (crown.c) with respect to the network's parameters and
 * to the interval bounds the ReLUs were relaxed with: what CROWN-IBP training (Zhang et al. 2020)
 * needs. crown_rows carries each margin's coefficients backward, node by node; this file runs
 * that pass in reverse (first node to last), carrying the adjoint of every coefficient (its rows
 * are crown_rows': per sample, the margins to the classes other than its label):
 *
 * - at the input, a row's bound is  constant + sum_i lam_i mid_i - |lam_i| rad_i, so the adjoint
 *   of lam_i is dm (mid_i - sign(lam_i) rad_i) and that of the constant is dm;
 * - an affine node turned coefficients L on its output into L A on its input plus the constant
 *   L c: the adjoint of L is A applied to the input's adjoint (the node's own forward with its
 *   biases zeroed) plus dm c; the weight gradient is that of the node's backward kernel with the
 *   input's adjoint as its "input" and L as its "output gradient"; the bias gradient is dm times
 *   L summed over each channel;
 * - a relaxed ReLU (bounds l < 0 < u) kept a coefficient c >= 0 (slope 1 where u > -l, else 0:
 *   a choice, with no gradient) or turned c < 0 into c a, a = u / (u - l), adding -c a l to the
 *   constant: the adjoint of c is a (g - dm l) for the adjoint g of c a, and l and u get
 *   (through a and the constant) what ibp_loss.c then carries back through the interval pass.
 * The coefficients before each relaxation are kept by crown_rows (crown_bufs.keep). */
#include "bounds.h"

#include <math.h>
#include <string.h>

/* Floats of the adjoint's scratch for chunks of `chunk` samples: every tensor's coefficient
 * adjoints and the kept coefficients of every relaxed node. */
size_t crown_adjoint_floats(const at_net *net, int chunk) {
    const size_t R = (size_t)chunk * at_net_out_size(net);
    size_t f = R * net_in_size(net) + R;
    for (int l = 0; l < net->nlayers; l++) {
        const at_layer *L = &net->layers[l];
        if (L->fused) continue;
        f += R * L->out_size;
        if (L->relu_out || L->d.kind == AT_LAYER_RELU) f += R * L->out_size;
    }
    return f;
}

void crown_adjoint_carve(const at_net *net, float *block, int n, crown_adjoint *A, float **keep) {
    const int R = n * (at_net_out_size(net) - 1);
    float **adj = A->adj;
    A->rowdm = block;
    block += (size_t)n * at_net_out_size(net);
    adj[0] = block;
    block += (size_t)R * net_in_size(net);
    for (int l = 0; l < net->nlayers; l++) {
        const at_layer *L = &net->layers[l];
        keep[l] = NULL;
        if (L->fused) {
            adj[l + 1] = adj[L->src[0] + 1];
            continue;
        }
        adj[l + 1] = block;
        block += (size_t)R * L->out_size;
        if (L->relu_out || L->d.kind == AT_LAYER_RELU) {
            keep[l] = block;
            block += (size_t)R * L->out_size;
        }
    }
}

/* The input: the adjoint of each row's coefficients on the input box. */
static void input_adjoint(const at_net *net, const thread_bufs *T, const crown_bufs *C, const float *dm, float *adj) {
    const int D = net_in_size(net);
    for (int r = 0; r < C->R; r++) {
        const int s = r / C->K;
        const float *lo = T->lo[0] + (size_t)s * D, *hi = T->hi[0] + (size_t)s * D, *lam = C->lam[0] + (size_t)r * D;
        float *a = adj + (size_t)r * D;
        for (int i = 0; i < D; i++) {
            const float sign = lam[i] > 0.0f ? 1.0f : (lam[i] < 0.0f ? -1.0f : 0.0f);
            a[i] = dm[r] * (0.5f * (lo[i] + hi[i]) - sign * 0.5f * (hi[i] - lo[i]));
        }
    }
}

/* The reverse of relax_relu on one node: g (the adjoint of the relaxed coefficients) becomes the
 * adjoint of the coefficients before it (kept in c); dl, du (n rows) receive the bounds' part. */
static void relax_adjoint(const crown_bufs *C, float *g, const float *c, const float *lo, const float *hi, const float *dm,
                          int size, float *dl, float *du) {
    for (int r = 0; r < C->R; r++) {
        const size_t s = (size_t)(r / C->K) * size, o = (size_t)r * size;
        for (int i = 0; i < size; i++) {
            const double l = lo[s + i], u = hi[s + i], k = c[o + i];
            if (u <= 0.0) {
                g[o + i] = 0.0f;
            } else if (l < 0.0) {
                if (k >= 0.0) {
                    if (!(u > -l)) g[o + i] = 0.0f;
                } else {
                    const double den = u - l, a = u / den, h = (double)g[o + i] - (double)dm[r] * l, da = k * h;
                    g[o + i] = (float)(a * h);
                    dl[s + i] += (float)(da * u / (den * den) - (double)dm[r] * k * a);
                    du[s + i] += (float)(-da * l / (den * den));
                }
            }
        }
    }
}

/* An affine node's weight and bias gradients: the weights' from the node's backward kernel (its
 * input: the input's adjoint; its output gradient: the coefficients L), through the zeroed
 * scratch sg; the bias's, dm L summed over each channel's outputs. */
static void affine_params(const at_net *net, const crown_bufs *C, const at_layer *A, int l, const float *in_adj,
                          const float *dm, float *grads, float *sg) {
    const at_layer_ops *ops = at_layer_ops_for(A->d.kind);
    const float *lam = C->lam[l + 1];
    if (A->w_count) {
        const at_ctx ctx = {.params = net->params, .grads = sg, .work = C->work, .buffers = net->buffers};
        ops->backward(A, &ctx, in_adj, C->dummy, lam, NULL, C->R, true);
        for (size_t i = 0; i < A->w_count; i++) grads[A->w_off + i] += sg[A->w_off + i];
        memset(sg + A->w_off, 0, sizeof(float) * A->w_count);
        memset(sg + A->b_off, 0, sizeof(float) * A->b_count);
    }
    if (!A->b_count) return;
    const size_t area = (size_t)A->out_size / A->b_count;
    for (size_t ch = 0; ch < A->b_count; ch++) {
        double sum = 0.0;
        for (int r = 0; r < C->R; r++) {
            const float *row = lam + (size_t)r * A->out_size + ch * area;
            double part = 0.0;
            for (size_t p = 0; p < area; p++) part += row[p];
            sum += dm[r] * part;
        }
        grads[A->b_off + ch] += (float)sum;
    }
}

/* An affine node: the adjoint of its output's coefficients, and its parameters' gradients. */
static void affine_adjoint(const at_net *net, const crown_bufs *C, float **adj, const float *lin_params, const float *dm,
                           int l, float *grads, float *sg) {
    at_layer A = net->layers[l];
    A.relu_out = false;
    const at_layer_ops *ops = at_layer_ops_for(A.d.kind);
    at_ctx ctx = {.params = net->params, .work = C->work, .buffers = net->buffers, .x2 = C->zeros};
    ops->forward(&A, &ctx, C->zeros, C->offset, 1); /* the offset c */
    ctx.params = lin_params;
    ctx.x2 = A.nsrc == 2 ? adj[A.src[1] + 1] : NULL;
    float *out = adj[l + 1];
    ops->forward(&A, &ctx, adj[A.src[0] + 1], out, C->R);
    for (int r = 0; r < C->R; r++)
        for (int i = 0; i < A.out_size; i++) out[(size_t)r * A.out_size + i] += dm[r] * C->offset[i];
    affine_params(net, C, &A, l, adj[A.src[0] + 1], dm, grads, sg);
}

void crown_rows_backward(const at_net *net, const thread_bufs *T, const crown_bufs *C, const crown_adjoint *Adj,
                         const float *margin_dm, const int32_t *y, int n, const float *lin_params, float *grads, float *sg,
                         const crown_bound_grads *G) {
    const int K = at_net_out_size(net);
    float **adj = Adj->adj, *dm = Adj->rowdm;
    for (int s = 0; s < n; s++) /* crown_rows' rows: the classes other than y, in order */
        for (int q = 0; q < K - 1; q++) dm[s * (K - 1) + q] = margin_dm[(size_t)s * K + margin_class(q, y[s])];
    input_adjoint(net, T, C, dm, adj[0]);
    for (int l = 0; l < net->nlayers; l++) {
        const at_layer *L = &net->layers[l];
        if (L->fused) continue;
        const int src = L->src[0] + 1;
        if (L->d.kind == AT_LAYER_RELU) { /* its coefficients went to its source unchanged */
            memcpy(adj[l + 1], adj[src], sizeof(float) * (size_t)C->R * L->out_size);
            relax_adjoint(C, adj[l + 1], C->keep[l], T->lo[src], T->hi[src], dm, L->out_size, G->dlo[src], G->dhi[src]);
            continue;
        }
        affine_adjoint(net, C, adj, lin_params, dm, l, grads, sg);
        if (L->relu_out)
            relax_adjoint(C, adj[l + 1], C->keep[l], T->pre_lo[l], T->pre_hi[l], dm, L->out_size, G->dpre_lo[l],
                          G->dpre_hi[l]);
    }
}
