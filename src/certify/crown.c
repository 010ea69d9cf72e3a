/* CROWN-IBP margin bounds (Zhang et al. 2018, "Efficient neural network robustness certification
 * with general activation functions"; Zhang et al. 2020, "Towards stable and efficient training of
 * verifiably robust neural networks"): each margin z_y - z_j is a linear function of the network's
 * last tensor; that linear function is carried backward, node by node, down to the input, where
 * its minimum over the input box is exact.
 *
 * - An affine node y = A x + c turns coefficients L on y into L A on x plus the constant L c: the
 *   node's own backward kernel computes L A (the rows of L are its "samples"), its forward of a
 *   zero input gives c.
 * - A ReLU z -> max(z, 0) with input bounds [l, u] (the interval bounds of ibp.c: the IBP part of
 *   CROWN-IBP) is replaced by a line below it (coefficients >= 0: alpha z, alpha 1 where u > -l,
 *   else 0) or above it (coefficients < 0: u (z - l) / (u - l)); stable ReLUs are exact.
 * - A tensor read by several nodes (a residual) adds the coefficients coming from each.
 * Full CROWN (the end of this file) bounds each ReLU's input the same way, from that node back
 * to the input, before the margins, instead of taking its interval bounds.
 * Max pooling and the smooth activations have no relaxation here yet: networks with them get
 * interval bounds only. */
#include "bounds.h"

#include <math.h>
#include <string.h>

int crown_unsupported(const at_net *net) {
    for (int l = 0; l < net->nlayers; l++) {
        const at_layer *L = &net->layers[l];
        if (L->fused) continue;
        const at_layer_ops *ops = at_layer_ops_for(L->d.kind);
        if (ops->bound_rule != AT_BOUND_AFFINE && L->d.kind != AT_LAYER_RELU) return l;
    }
    return -1;
}

/* The scratch of one thread: coefficients of every tensor, the backward's outputs and a dummy
 * input, its workspace, the constants (doubles) and one node's offset c. */
size_t crown_scratch(const at_net *net, int chunk) { return crown_scratch_rows(net, chunk * at_net_out_size(net)); }

size_t crown_scratch_rows(const at_net *net, int rows) {
    const size_t R = (size_t)rows, big = bounds_max_tensor(net);
    size_t f = R * net_in_size(net), work = 0;
    for (int l = 0; l < net->nlayers; l++) {
        const at_layer *L = &net->layers[l];
        if (L->fused) continue;
        f += R * L->out_size;
        work = AT_MAX(work, at_layer_ops_for(L->d.kind)->workspace(L, (int)R));
    }
    return f + 3 * R * big + work + 2 * R + 2 * big + 64;
}

static void carve(const at_net *net, float *block, int R, float **lam, crown_bufs *C) {
    const size_t big = bounds_max_tensor(net);
    C->lam = lam;
    lam[0] = block;
    block += (size_t)R * net_in_size(net);
    size_t work = 0;
    for (int l = 0; l < net->nlayers; l++) {
        const at_layer *L = &net->layers[l];
        if (L->fused) {
            lam[l + 1] = lam[L->src[0] + 1];
            continue;
        }
        lam[l + 1] = block;
        block += (size_t)R * L->out_size;
        work = AT_MAX(work, at_layer_ops_for(L->d.kind)->workspace(L, R));
    }
    C->dx = block;
    C->dx2 = C->dx + (size_t)R * big;
    C->dummy = C->dx2 + (size_t)R * big;
    C->work = C->dummy + (size_t)R * big;
    C->offset = C->work + work;
    C->zeros = C->offset + big;
    C->constant = (double *)(((uintptr_t)(C->zeros + big) + 7) & ~(uintptr_t)7);
}

/* A pass of R rows (per rows for each sample, the first of them sample s0) back from node top:
 * C carved out of block, the coefficients of the tensors up to top's output and the constants
 * zeroed. */
static void begin_pass(const at_net *net, float *block, int R, int per, int s0, int top, float **lam, crown_bufs *C) {
    C->R = R, C->K = per, C->s0 = s0;
    carve(net, block, R, lam, C);
    for (int t = 0; t <= top + 1; t++)
        if (t == 0 || !net->layers[t - 1].fused)
            memset(lam[t], 0, sizeof(float) * (size_t)R * (t ? net->layers[t - 1].out_size : net_in_size(net)));
    memset(C->zeros, 0, sizeof(float) * bounds_max_tensor(net));
    memset(C->dummy, 0, sizeof(float) * (size_t)R * bounds_max_tensor(net));
    memset(C->constant, 0, sizeof(double) * (size_t)R);
}

/* The margins' coefficients on the last tensor: K - 1 rows per sample, e_y - e_j for the classes
 * j != y in order (the margin z_y - z_y is not bounded). */
static void init_rows(const at_net *net, const crown_bufs *C, const int32_t *y, int n, int K) {
    float *lam = C->lam[net->plan.out_tensor + 1];
    memset(lam, 0, sizeof(float) * (size_t)C->R * K);
    for (int s = 0; s < n; s++)
        for (int q = 0; q < K - 1; q++) {
            float *row = lam + ((size_t)s * (K - 1) + q) * K;
            row[y[s]] = 1.0f;
            row[margin_class(q, y[s])] = -1.0f;
        }
}

/* Replaces the coefficients on a ReLU's output by coefficients on its input (bounds lo, hi per
 * sample) and the constants of the upper lines used. */
static void relax_relu(const crown_bufs *C, float *lam, const float *lo, const float *hi, int size, float *keep) {
    if (keep) memcpy(keep, lam, sizeof(float) * (size_t)C->R * size);
    for (int r = 0; r < C->R; r++) {
        const size_t s = (size_t)(C->s0 + r / C->K) * size;
        float *row = lam + (size_t)r * size;
        double add = 0.0;
        for (int i = 0; i < size; i++) {
            const float l = lo[s + i], u = hi[s + i], c = row[i];
            if (u <= 0.0f) {
                row[i] = 0.0f;
            } else if (l < 0.0f) { /* unstable */
                if (c >= 0.0f) {
                    row[i] = u > -l ? c : 0.0f;
                } else {
                    const double a = (double)u / ((double)u - l);
                    row[i] = (float)(c * a);
                    add -= c * a * l;
                }
            }
        }
        C->constant[r] += add;
    }
}

/* Adds count floats of src into dst. */
static void accumulate(float *dst, const float *src, size_t count) {
    for (size_t i = 0; i < count; i++) dst[i] += src[i];
}

/* An affine node: the constants take L c, its inputs' coefficients L A. */
static void affine_back(const at_net *net, const crown_bufs *C, int l) {
    at_layer A = net->layers[l];
    A.relu_out = false;
    const at_layer_ops *ops = at_layer_ops_for(A.d.kind);
    at_ctx ctx = {.params = net->params, .work = C->work, .buffers = net->buffers};
    ctx.x2 = C->zeros;
    ops->forward(&A, &ctx, C->zeros, C->offset, 1);
    const float *lam = C->lam[l + 1];
    for (int r = 0; r < C->R; r++) {
        double dot = 0.0;
        for (int i = 0; i < A.out_size; i++) dot += (double)lam[(size_t)r * A.out_size + i] * C->offset[i];
        C->constant[r] += dot;
    }
    ctx.x2 = NULL;
    ctx.dx2 = A.nsrc == 2 ? C->dx2 : NULL;
    ops->backward(&A, &ctx, C->dummy, C->dummy, lam, C->dx, C->R, false);
    accumulate(C->lam[A.src[0] + 1], C->dx, (size_t)C->R * A.in_size);
    if (A.nsrc == 2) accumulate(C->lam[A.src[1] + 1], C->dx2, (size_t)C->R * A.in_size);
}

/* Nodes top, ..., 0 (the coefficients on top's output set), without relaxing top's own fused
 * ReLU when relax_top is false (its input's bounds are wanted). */
static void back_substitute_from(const at_net *net, const thread_bufs *T, const crown_bufs *C, int top, bool relax_top) {
    for (int l = top; l >= 0; l--) {
        const at_layer *L = &net->layers[l];
        if (L->fused) continue;
        float *lam = C->lam[l + 1];
        float *keep = C->keep ? C->keep[l] : NULL;
        if (L->relu_out && (l < top || relax_top)) relax_relu(C, lam, T->pre_lo[l], T->pre_hi[l], L->out_size, keep);
        if (L->d.kind == AT_LAYER_RELU) { /* a ReLU of its own: its input is its source */
            relax_relu(C, lam, T->lo[L->src[0] + 1], T->hi[L->src[0] + 1], L->out_size, keep);
            accumulate(C->lam[L->src[0] + 1], lam, (size_t)C->R * L->out_size);
            continue;
        }
        affine_back(net, C, l);
    }
}

/* The minimum of row r's linear function over its sample's input box: centre minus
 * |coefficients| radius, plus the constant. */
static double row_minimum(const at_net *net, const thread_bufs *T, const crown_bufs *C, int r) {
    const int D = net_in_size(net), s = C->s0 + r / C->K;
    const float *lo = T->lo[0] + (size_t)s * D, *hi = T->hi[0] + (size_t)s * D, *row = C->lam[0] + (size_t)r * D;
    double bound = C->constant[r];
    for (int i = 0; i < D; i++)
        bound += 0.5 * ((double)row[i] * ((double)lo[i] + hi[i]) - fabs((double)row[i]) * ((double)hi[i] - lo[i]));
    return bound;
}

void crown_rows(const at_net *net, const thread_bufs *T, float *block, float **lam, crown_bufs *C, const int32_t *y,
                int n, float *m) {
    const int K = at_net_out_size(net);
    begin_pass(net, block, n * (K - 1), K - 1, 0, net->nlayers - 1, lam, C);
    init_rows(net, C, y, n, K);
    back_substitute_from(net, T, C, net->nlayers - 1, true);
    for (int s = 0; s < n; s++) {
        m[(size_t)s * K + y[s]] = INFINITY;
        for (int q = 0; q < K - 1; q++)
            m[(size_t)s * K + margin_class(q, y[s])] = (float)row_minimum(net, T, C, s * (K - 1) + q);
    }
}

void crown_margins(const bound_net *B, const thread_bufs *T, void *user, int begin, int n) {
    const margin_job *J = user;
    const at_net *net = B->net;
    float *lam[net->nlayers + 1];
    crown_bufs C = {.keep = NULL};
    crown_rows(net, T, T->extra, lam, &C, J->y + begin, n, J->margins + (size_t)begin * at_net_out_size(net));
}

/* ------------------------------------------------------------ full CROWN */

/* Whether tensor t (a node's output, t >= 1) is the input of a standalone ReLU. */
static bool read_by_relu(const at_net *net, int t) {
    for (int l = t; l < net->nlayers; l++)
        if (!net->layers[l].fused && net->layers[l].d.kind == AT_LAYER_RELU && net->layers[l].src[0] + 1 == t) return true;
    return false;
}

/* An affine node reading only the input: its interval bounds are already exact. */
static bool on_input(const at_net *net, int l) {
    const at_layer *L = &net->layers[l];
    return at_layer_ops_for(L->d.kind)->bound_rule == AT_BOUND_AFFINE && L->src[0] == -1 && (L->nsrc < 2 || L->src[1] == -1);
}

/* The CROWN bounds of node top's output before its fused ReLU, for sample s, into lo, hi (its
 * rows): rows +e_i (lower bound of z_i) and -e_i (minus its upper bound), CROWN_ROWS at a time. */
static void node_bounds(const at_net *net, const thread_bufs *T, float *block, float **lam, int top, int s, float *lo,
                        float *hi) {
    const int O = net->layers[top].out_size;
    crown_bufs C = {.keep = NULL};
    for (int g0 = 0; g0 < 2 * O; g0 += CROWN_ROWS) {
        const int R = AT_MIN(CROWN_ROWS, 2 * O - g0);
        begin_pass(net, block, R, R, s, top, lam, &C);
        for (int q = 0; q < R; q++) {
            const int g = g0 + q;
            lam[top + 1][(size_t)q * O + g % O] = g < O ? 1.0f : -1.0f;
        }
        back_substitute_from(net, T, &C, top, false);
        for (int q = 0; q < R; q++) {
            const int g = g0 + q;
            const double v = row_minimum(net, T, &C, q);
            if (g < O)
                lo[g] = (float)v;
            else
                hi[g - O] = (float)-v;
        }
    }
}

/* Full CROWN's intermediate bounds: every bound a ReLU relaxation reads, by CROWN from that
 * node back to the input, node by node in order (each uses the ones before), replacing the
 * interval bounds in T for the chunk's n samples. A fused ReLU's output takes the ReLU of its
 * input's bounds. Nodes that read only the input keep their interval bounds, which are exact. */
static void crown_intermediate(const at_net *net, const thread_bufs *T, float *block, float **lam, int n) {
    for (int l = 0; l < net->nlayers; l++) {
        const at_layer *L = &net->layers[l];
        if (L->fused || on_input(net, l)) continue;
        const size_t O = (size_t)L->out_size;
        if (L->relu_out) {
            for (int s = 0; s < n; s++) node_bounds(net, T, block, lam, l, s, T->pre_lo[l] + s * O, T->pre_hi[l] + s * O);
            for (size_t i = 0; i < n * O; i++) {
                T->lo[l + 1][i] = at_relu(T->pre_lo[l][i]);
                T->hi[l + 1][i] = at_relu(T->pre_hi[l][i]);
            }
        } else if (read_by_relu(net, l + 1)) {
            for (int s = 0; s < n; s++) node_bounds(net, T, block, lam, l, s, T->lo[l + 1] + s * O, T->hi[l + 1] + s * O);
        }
    }
}

void crown_full_margins(const bound_net *B, const thread_bufs *T, void *user, int begin, int n) {
    const margin_job *J = user;
    const at_net *net = B->net;
    float *lam[net->nlayers + 1];
    crown_intermediate(net, T, T->extra, lam, n);
    crown_bufs C = {.keep = NULL};
    crown_rows(net, T, T->extra, lam, &C, J->y + begin, n, J->margins + (size_t)begin * at_net_out_size(net));
}
