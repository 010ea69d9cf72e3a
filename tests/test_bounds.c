/* Certified bounds (src/certify/ibp.c) are sound: for random networks of every layer kind (BatchNorm
 * with negative scales and trained statistics, residual adds, depthwise and bias-free convs, both
 * poolings, global pooling, dropout, the smooth activations) and random boxes, every sampled input's
 * logits lie inside the interval bounds, and every sampled margin z_y - z_j above its bound. The
 * bounds are not vacuous: at eps 0 they are the logits themselves, they grow with eps and nest,
 * and the folded last layer gives margins at least as tight as the logit intervals. The network is
 * left as it was (parameters, buffers, mode). Bad input is refused. And on the graph network of
 * tests/fixtures/bounds_lirpa.safetensors (tools/make_bound_fixtures.py) the interval bounds of the
 * logits and the CROWN-IBP and CROWN bounds of the margins equal auto_LiRPA's within 1e-4. */
#include "advtrain.h"
#include "testutil.h"

#include <stdint.h>

static uint64_t rng_state = 88172645463325252ull;
static float uniform(void) { /* xorshift64: the test's own reproducible numbers */
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 40) * (1.0 / 16777216.0));
}

typedef struct spec_case {
    const char *spec;
    int c, h, w;
    bool piecewise_linear; /* affine layers and ReLUs only: CROWN-IBP applies */
} spec_case;

static const spec_case cases[] = {
    {"flatten,linear:20,tanh,linear:12,sigmoid,linear:5", 1, 6, 6, false},
    {"conv:4:3:1:1,bn,relu,maxpool:2,conv:6:3:1:1,relu,avgpool:2,flatten,linear:7", 2, 8, 8, false},
    {"conv:4:3:1:1:bias=0,bn,a=relu,conv:4:3:1:1,bn,add:a,relu,conv:8:3:2:1,leakyrelu:0.1,"
     "conv:8:3:1:1:groups=8,bn,relu,gap,flatten,linear:5", 1, 8, 8, false},
    {"conv:4:3:1:1:bias=0,bn,a=relu,conv:4:3:1:1,bn,add:a,relu,conv:8:3:2:1,relu,"
     "conv:8:3:1:1:groups=8,bn,relu,avgpool:2,flatten,linear:16,relu,linear:5", 1, 8, 8, true},
    {"flatten,dropout:0.3,linear:16,bn1d,relu,linear:16,relu,linear:4", 1, 5, 5, true},
    {"resnet8", 1, 28, 28, true},
    {"preact-resnet18:4", 1, 28, 28, true},
    {"dscnn", 1, 28, 28, true},
};

/* Random BatchNorm scales (negative ones too) and shifts, then running statistics away from 0/1. */
static void randomize(at_net *net, int n, int D) {
    for (int t = 0; t < at_net_num_tensors(net); t++) {
        const at_param_info *p = at_net_tensor(net, t);
        const at_layer_kind kind = at_net_layer(net, p->layer)->kind;
        if (kind != AT_LAYER_BATCHNORM2D && kind != AT_LAYER_BATCHNORM1D) continue;
        float *v = at_net_params(net) + p->offset;
        for (size_t i = 0; i < p->size; i++) v[i] = 3.0f * uniform() - 1.5f;
    }
    float *x = malloc(sizeof(float) * (size_t)n * D);
    for (size_t i = 0; i < (size_t)n * D; i++) x[i] = uniform();
    at_net_set_training(net, true);
    CHECK_OK(at_net_forward(net, x, n, NULL));
    at_net_set_training(net, false);
    free(x);
}

static float largest(const float *a, const float *b, size_t n) {
    float m = 1.0f;
    for (size_t i = 0; i < n; i++) m = fmaxf(m, fmaxf(fabsf(a[i]), fabsf(b[i])));
    return m;
}

/* A point of the box: uniform inside, or a corner (each coordinate lo or hi). */
static void sample_point(const float *lo, const float *hi, int D, int kind, float *x) {
    for (int i = 0; i < D; i++) {
        const float u = uniform();
        x[i] = kind == 0 ? lo[i] + u * (hi[i] - lo[i]) : (u < 0.5f ? lo[i] : hi[i]);
        x[i] = fminf(fmaxf(x[i], lo[i]), hi[i]);
    }
}

/* Every sampled point's logits inside [lo, hi] of its box (tolerance: float rounding). */
static void check_sound(at_net *net, const char *spec, const float *blo, const float *bhi, int n, float eps,
                        const float *zlo, const float *zhi) {
    const int D = at_net_in_size(net), K = at_net_out_size(net), points = 24;
    float *x = malloc(sizeof(float) * (size_t)points * D);
    int outside = 0;
    for (int s = 0; s < n; s++) {
        for (int p = 0; p < points; p++) sample_point(blo + (size_t)s * D, bhi + (size_t)s * D, D, p % 3 == 0, x + (size_t)p * D);
        const float *z = NULL;
        CHECK_OK(at_net_predict(net, x, points, &z));
        const float *lo = zlo + (size_t)s * K, *hi = zhi + (size_t)s * K;
        const float tol = 1e-5f * largest(lo, hi, (size_t)K);
        for (int p = 0; z && p < points; p++)
            for (int k = 0; k < K; k++) {
                const float v = z[(size_t)p * K + k];
                if (!(v >= lo[k] - tol && v <= hi[k] + tol) && outside++ == 0)
                    printf("  %s eps %g: sample %d point %d logit %d = %.9g outside [%.9g, %.9g]\n", spec,
                           (double)eps, s, p, k, (double)v, (double)lo[k], (double)hi[k]);
            }
    }
    CHECK_MSG(outside == 0, "%s eps %g: %d sampled logits outside the interval bounds", spec, (double)eps, outside);
    free(x);
}

/* Margins: sampled ones above the bound; the bound at least the logit intervals' lo_y - hi_j. */
static double check_margins(at_net *net, const char *spec, const float *x0, const int32_t *y, int n, float eps,
                            at_bound_method method, const float *zlo, const float *zhi) {
    const int D = at_net_in_size(net), K = at_net_out_size(net), points = 16;
    float *m = malloc(sizeof(float) * (size_t)n * K), *x = malloc(sizeof(float) * (size_t)points * D);
    float *lo = malloc(sizeof(float) * D), *hi = malloc(sizeof(float) * D);
    CHECK_OK(at_net_margin_bounds(net, x0, y, n, eps, method, m));
    int below = 0, looser = 0;
    double total = 0.0;
    for (int s = 0; s < n; s++) {
        for (int i = 0; i < D; i++) {
            lo[i] = fmaxf(x0[(size_t)s * D + i] - eps, 0.0f);
            hi[i] = fminf(x0[(size_t)s * D + i] + eps, 1.0f);
        }
        for (int p = 0; p < points; p++) sample_point(lo, hi, D, p % 2, x + (size_t)p * D);
        const float *z = NULL;
        CHECK_OK(at_net_predict(net, x, points, &z));
        const float *ms = m + (size_t)s * K;
        const float tol = 1e-5f * largest(zlo + (size_t)s * K, zhi + (size_t)s * K, (size_t)K);
        CHECK(isinf(ms[y[s]]) && ms[y[s]] > 0);
        for (int j = 0; j < K; j++) {
            if (j == y[s]) continue;
            if (method == AT_BOUND_IBP) looser += ms[j] < zlo[(size_t)s * K + y[s]] - zhi[(size_t)s * K + j] - tol;
            total += ms[j];
            for (int p = 0; z && p < points; p++)
                below += z[(size_t)p * K + y[s]] - z[(size_t)p * K + j] < ms[j] - tol;
        }
    }
    CHECK_MSG(below == 0, "%s eps %g, %s: %d sampled margins below their bound", spec, (double)eps,
              method == AT_BOUND_IBP ? "ibp" : method == AT_BOUND_CROWN ? "crown" : "crown-ibp", below);
    CHECK_MSG(looser == 0, "%s eps %g: %d folded margins looser than the logit intervals", spec, (double)eps, looser);
    free(m);
    free(x);
    free(lo);
    free(hi);
    return total;
}

static void check_case(const spec_case *c) {
    at_net *net = NULL;
    CHECK_OK(at_net_from_spec(&net, c->spec, c->c, c->h, c->w));
    if (!net) return;
    at_net_init(net, 17);
    const int D = at_net_in_size(net), K = at_net_out_size(net), n = 5;
    randomize(net, 20, D);
    const size_t np = at_net_num_params(net), nb = at_net_num_buffer_floats(net);
    float *p0 = malloc(sizeof(float) * np), *b0 = malloc(sizeof(float) * (nb ? nb : 1));
    memcpy(p0, at_net_params(net), sizeof(float) * np);
    if (nb) memcpy(b0, at_net_buffers(net), sizeof(float) * nb);
    float *x = malloc(sizeof(float) * n * D), *lo = malloc(sizeof(float) * n * D), *hi = malloc(sizeof(float) * n * D);
    float *zlo = malloc(sizeof(float) * n * K), *zhi = malloc(sizeof(float) * n * K), *prev = malloc(sizeof(float) * n * K * 2);
    int32_t y[5];
    for (int i = 0; i < n * D; i++) x[i] = uniform();
    for (int s = 0; s < n; s++) y[s] = (int32_t)(uniform() * K) % K;
    const float eps[] = {0.0f, 0.003f, 0.02f, 0.1f};
    for (int e = 0; e < 4; e++) {
        for (int i = 0; i < n * D; i++) {
            lo[i] = fmaxf(x[i] - eps[e], 0.0f);
            hi[i] = fminf(x[i] + eps[e], 1.0f);
        }
        CHECK_OK(at_net_interval_bounds(net, lo, hi, n, zlo, zhi));
        check_sound(net, c->spec, lo, hi, n, eps[e], zlo, zhi);
        const double ibp = check_margins(net, c->spec, x, y, n, eps[e], AT_BOUND_IBP, zlo, zhi);
        if (c->piecewise_linear) {
            const double crown = check_margins(net, c->spec, x, y, n, eps[e], AT_BOUND_CROWN_IBP, zlo, zhi);
            /* Linear bounds carried backward beat boxes on these networks at every radius. */
            CHECK_MSG(crown >= ibp - 1e-4 * fabs(ibp), "%s eps %g: CROWN-IBP margins (sum %.6g) looser than IBP's (%.6g)",
                      c->spec, (double)eps[e], crown, ibp);
            if (e == 3) printf("  %-40.40s eps 0.1: sum of margin bounds IBP %.4g, CROWN-IBP %.4g\n", c->spec, ibp, crown);
            if (D <= 400) { /* full CROWN: a backward pass per neuron, small networks only */
                const double full = check_margins(net, c->spec, x, y, n, eps[e], AT_BOUND_CROWN, zlo, zhi);
                CHECK_MSG(full >= crown - 1e-4 * fabs(crown), "%s eps %g: CROWN margins (sum %.6g) looser than CROWN-IBP's (%.6g)",
                          c->spec, (double)eps[e], full, crown);
                if (e == 3) printf("  %-40.40s eps 0.1: sum of margin bounds CROWN %.4g\n", c->spec, full);
            }
        }
        const float tol = 1e-5f * largest(zlo, zhi, (size_t)n * K);
        bool nested = true, tight = true;
        for (int i = 0; i < n * K; i++) {
            if (e == 0) tight = tight && zhi[i] - zlo[i] <= tol; /* one point: the logits */
            if (e > 0) nested = nested && zlo[i] <= prev[i] + tol && zhi[i] >= prev[n * K + i] - tol;
        }
        CHECK_MSG(tight && nested, "%s eps %g: bounds at eps 0 wider than rounding (%d) or not nested (%d)", c->spec,
                  (double)eps[e], !tight, !nested);
        memcpy(prev, zlo, sizeof(float) * n * K);
        memcpy(prev + n * K, zhi, sizeof(float) * n * K);
    }
    CHECK_MSG(memcmp(p0, at_net_params(net), sizeof(float) * np) == 0 &&
                  (!nb || memcmp(b0, at_net_buffers(net), sizeof(float) * nb) == 0) && !at_net_is_training(net),
              "%s: bounds changed the network", c->spec);
    printf("  %-40.40s eps 0.1: widest logit interval %.3g\n", c->spec, (double)(zhi[0] - zlo[0]));
    free(p0), free(b0), free(x), free(lo), free(hi), free(zlo), free(zhi), free(prev);
    at_net_free(net);
}

static void check_bad_input(void) {
    at_net *net = NULL;
    CHECK_OK(at_net_from_spec(&net, "flatten,linear:3", 1, 2, 2));
    if (!net) return;
    float lo[4] = {0, 0, 0, 0}, hi[4] = {1, 1, 0.5f, 1}, out[6], m[3];
    int32_t y = 1;
    lo[2] = 0.7f; /* above its upper bound */
    CHECK(at_net_interval_bounds(net, lo, hi, 1, out, out + 3) == AT_ERR_ARG);
    lo[2] = NAN;
    CHECK(at_net_interval_bounds(net, lo, hi, 1, out, out + 3) == AT_ERR_ARG);
    CHECK(at_net_margin_bounds(net, hi, &y, 1, -0.1f, AT_BOUND_IBP, m) == AT_ERR_ARG);
    CHECK(at_net_margin_bounds(net, hi, &y, 1, NAN, AT_BOUND_IBP, m) == AT_ERR_ARG);
    y = 3;
    CHECK(at_net_margin_bounds(net, hi, &y, 1, 0.1f, AT_BOUND_IBP, m) == AT_ERR_ARG);
    at_net_free(net);
    /* CROWN-IBP has no relaxation of max pooling yet: refused, naming the node. */
    net = NULL;
    CHECK_OK(at_net_from_spec(&net, "conv:2:3:1:1,relu,maxpool:2,flatten,linear:3", 1, 4, 4));
    if (!net) return;
    float x[16] = {0};
    y = 0;
    CHECK(at_net_margin_bounds(net, x, &y, 1, 0.1f, AT_BOUND_CROWN_IBP, m) == AT_ERR_ARG &&
          strstr(at_error_message(), "maxpool"));
    at_net_free(net);
}

/* The mean worst-case cross-entropy of margins m (n x K, +inf at y), as the loss defines it. */
static double worst_case_mean(const float *m, const int32_t *y, int n, int K) {
    double total = 0.0;
    for (int s = 0; s < n; s++) {
        double top = 0.0, sum = 0.0;
        for (int j = 0; j < K; j++)
            if (j != y[s]) top = fmax(top, -(double)m[s * K + j]);
        sum = exp(-top);
        for (int j = 0; j < K; j++)
            if (j != y[s]) sum += exp(-(double)m[s * K + j] - top);
        total += top + log(sum);
    }
    return total / n;
}

/* The certified loss's parameter gradient against central differences of the loss, at an eps
 * that leaves many ReLUs unstable. beta 0 (IBP): networks of every kind the loss takes (conv,
 * linear, ReLU fused and not, average and max pooling, a residual add, Tanh, a depthwise conv);
 * beta > 0 (CROWN-IBP, through both bound passes and the relaxations' dependence on the interval
 * bounds): the piecewise-linear ones, a bias-free conv among them. At beta 1 the loss is that of
 * at_net_margin_bounds' CROWN-IBP margins. */
static void check_loss_gradient(float beta) {
    const spec_case nets[] = {
        {"conv:3:3:1:1,relu,avgpool:2,flatten,linear:8,relu,linear:4", 1, 6, 6, true},
        {"flatten,linear:10,tanh,linear:6,relu,linear:3", 1, 4, 4, false},
        {"conv:4:3:1:1,a=relu,conv:4:3:1:1:groups=4,add:a,relu,maxpool:2,flatten,linear:4", 1, 6, 6, false},
        {"conv:4:3:1:1:bias=0,a=relu,conv:4:3:1:1:groups=2,add:a,relu,avgpool:2,flatten,linear:6,relu,linear:4", 2, 6, 6, true},
        {"flatten,linear:12,relu,linear:10,relu,linear:5", 1, 3, 3, true},
    };
    for (size_t k = 0; k < sizeof nets / sizeof *nets; k++) {
        if (beta > 0.0f && !nets[k].piecewise_linear) continue;
        at_net *net = NULL;
        CHECK_OK(at_net_from_spec(&net, nets[k].spec, nets[k].c, nets[k].h, nets[k].w));
        if (!net) continue;
        at_net_init(net, 5 + (uint64_t)k);
        const int n = 3, D = at_net_in_size(net), K = at_net_out_size(net);
        const size_t np = at_net_num_params(net);
        float x[3 * 72], loss = 0, lp, lm, m[3 * 8];
        int32_t y[3];
        for (int i = 0; i < n * D; i++) x[i] = uniform();
        for (int i = 0; i < n; i++) y[i] = i % K;
        at_net_zero_grad(net);
        CHECK_OK(at_certified_loss(net, x, y, n, 0.05f, beta, 1.0f, &loss, NULL));
        if (beta == 1.0f) {
            CHECK_OK(at_net_margin_bounds(net, x, y, n, 0.05f, AT_BOUND_CROWN_IBP, m));
            const double want = worst_case_mean(m, y, n, K);
            CHECK_MSG(fabs(want - loss) <= 1e-5 * fmax(1.0, fabs(want)), "%s: CROWN-IBP loss %.7g, of its margins %.7g",
                      nets[k].spec, (double)loss, want);
        }
        float *g = malloc(sizeof(float) * np), *p = at_net_params(net);
        memcpy(g, at_net_grads(net), sizeof(float) * np);
        int bad = 0, checked = 0, kinks = 0;
        for (size_t i = 0; i < np; i += 1 + np / 60, checked++) {
            /* The loss is piecewise smooth (ReLU gates on the bounds, |w|, max pooling) and, with
             * CROWN-IBP, has small jumps (a relaxation's slope flips where u = -l): where the two
             * one-sided slopes disagree a kink lies within h, and the central difference says
             * nothing there. A gradient is wrong when no step (h, h/10) free of kinks agrees. */
            bool kink = true, agree = false;
            double fd = 0.0;
            for (int tries = 0; tries < 2 && !agree; tries++) {
                const float keep = p[i], h = (tries ? 1e-3f : 1e-2f) * fmaxf(fabsf(keep), 0.1f);
                p[i] = keep + h;
                CHECK_OK(at_certified_loss(net, x, y, n, 0.05f, beta, 0.0f, &lp, NULL));
                p[i] = keep - h;
                CHECK_OK(at_certified_loss(net, x, y, n, 0.05f, beta, 0.0f, &lm, NULL));
                p[i] = keep;
                const double up = ((double)lp - loss) / h, down = ((double)loss - lm) / h;
                fd = ((double)lp - lm) / (2.0 * h);
                if (fabs(up - down) > 1e-2 + 0.1 * fabs(fd)) continue;
                kink = false;
                agree = fabs(fd - g[i]) <= 2e-3 + 2e-2 * fabs(fd);
            }
            kinks += kink;
            if (!kink && !agree && bad++ < 3)
                printf("  %s beta %g: parameter %zu: gradient %.6g, central difference %.6g\n", nets[k].spec, (double)beta,
                       i, (double)g[i], fd);
        }
        CHECK_MSG(bad == 0 && kinks * 10 < checked && loss > 0, "%s beta %g: %d of %d certified-loss gradients off, %d at kinks (loss %g)",
                  nets[k].spec, (double)beta, bad, checked, kinks, (double)loss);
        free(g);
        at_net_free(net);
    }
}

/* The interval and CROWN-IBP bounds of auto_LiRPA 0.3 (float64) on the committed fixture. */
static void check_lirpa(void) {
    const char *path = tu_source_path("tests/fixtures/bounds_lirpa.safetensors");
    at_st_file *f = NULL;
    CHECK_OK(at_st_read(path, &f));
    if (!f) return;
    const char *spec = at_st_meta_get(f, "spec"), *input = at_st_meta_get(f, "input");
    int c = 0, h = 0, w = 0;
    at_net *net = NULL;
    if (spec && input && sscanf(input, "%d,%d,%d", &c, &h, &w) == 3) CHECK_OK(at_net_from_spec(&net, spec, c, h, w));
    const at_st_tensor *x = at_st_find(f, "x"), *yf = at_st_find(f, "y"), *eps = at_st_find(f, "eps");
    const at_st_tensor *ilo = at_st_find(f, "ibp_lo"), *ihi = at_st_find(f, "ibp_hi"), *cr = at_st_find(f, "crown_ibp");
    CHECK(net && x && yf && eps && ilo && ihi && cr);
    if (!net || !x || !yf || !eps || !ilo || !ihi || !cr) goto done;
    CHECK_OK(at_net_load_weights(net, f, path));
    at_net_set_training(net, false);
    const int n = (int)yf->count, K = at_net_out_size(net), D = at_net_in_size(net);
    CHECK(x->count == (size_t)n * D && ilo->count == (size_t)n * K && cr->count == (size_t)n * K);
    float *lo = malloc(sizeof(float) * n * D), *hi = malloc(sizeof(float) * n * D);
    float *zlo = malloc(sizeof(float) * n * K), *zhi = malloc(sizeof(float) * n * K), *m = malloc(sizeof(float) * n * K);
    int32_t y[16];
    for (int i = 0; i < n && i < 16; i++) y[i] = (int32_t)lrintf(yf->data[i]);
    for (int i = 0; i < n * D; i++) {
        lo[i] = fmaxf(x->data[i] - eps->data[0], 0.0f);
        hi[i] = fminf(x->data[i] + eps->data[0], 1.0f);
    }
    CHECK_OK(at_net_interval_bounds(net, lo, hi, n, zlo, zhi));
    const double worst_ibp = fmax(tu_max_violation(zlo, ilo->data, (size_t)n * K, 1e-4, 0, NULL),
                                  tu_max_violation(zhi, ihi->data, (size_t)n * K, 1e-4, 0, NULL));
    CHECK_MSG(worst_ibp <= 1, "interval bounds differ from auto_LiRPA's by %.3g x 1e-4", worst_ibp);
    const at_st_tensor *want[2] = {cr, at_st_find(f, "crown")};
    const at_bound_method methods[2] = {AT_BOUND_CROWN_IBP, AT_BOUND_CROWN};
    double worst[2] = {0, 0};
    CHECK(want[1] && want[1]->count == (size_t)n * K);
    for (int k = 0; k < 2 && want[k]; k++) {
        CHECK_OK(at_net_margin_bounds(net, x->data, y, n, eps->data[0], methods[k], m));
        for (int i = 0; i < n * K; i++)
            if (isfinite(want[k]->data[i])) worst[k] = fmax(worst[k], fabs((double)m[i] - want[k]->data[i]) / 1e-4);
            else CHECK(isinf(m[i]) && m[i] > 0);
        CHECK_MSG(worst[k] <= 1, "%s margins differ from auto_LiRPA's by %.3g x 1e-4", k ? "CROWN" : "CROWN-IBP", worst[k]);
    }
    printf("  auto_LiRPA fixture (%d samples, eps %g): interval bounds within %.2g, CROWN-IBP margins within %.2g, "
           "CROWN margins within %.2g\n", n, (double)eps->data[0], worst_ibp * 1e-4, worst[0] * 1e-4, worst[1] * 1e-4);
    free(lo), free(hi), free(zlo), free(zhi), free(m);
done:
    at_net_free(net);
    at_st_free(f);
}

int main(void) {
    at_set_threads(2);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) check_case(&cases[i]);
    check_bad_input();
    check_lirpa();
    check_loss_gradient(0.0f);
    check_loss_gradient(0.5f);
    check_loss_gradient(1.0f);
    return tu_finish("test_bounds");
}
