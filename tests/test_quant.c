#define _DEFAULT_SOURCE /* mkdtemp */
/* int8 inference (src/quant): the fixed-point requantization against a double reference over
 * random scales; each int8 kernel against a straightforward reference (the exact integer sum,
 * then the real multiplier in double); whole networks against their float selves (BatchNorm
 * folded and not, grouped convolutions, pooling, a residual Add); bad input answered with an
 * error. */
#include "advtrain.h"
#include "quant/quant.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uint64_t lcg = 12345;
static uint32_t next_u32(void) {
    lcg = lcg * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(lcg >> 32);
}
static double uniform(void) { return next_u32() / 4294967296.0; }
static int8_t random_i8(void) { return (int8_t)((int)(next_u32() % 256) - 128); }

/* round half away from zero, the rule requantization follows */
static double round_away(double v) { return v >= 0 ? floor(v + 0.5) : -floor(-v + 0.5); }

/* The two roundings of the scheme, written out in 64-bit integers: x * m / 2^31 rounded half
 * up, then divided by 2^-shift rounded half away from zero. */
static int64_t two_roundings(int32_t x, int32_t m, int shift) {
    const int64_t ab = (int64_t)x * ((int64_t)1 << (shift > 0 ? shift : 0)) * m;
    const int64_t v = (ab + ((int64_t)1 << 30)) >> 31; /* floor: half up */
    if (shift >= 0) return v;
    const int64_t d = (int64_t)1 << -shift, q = ((v >= 0 ? v : -v) + d / 2) / d;
    return v >= 0 ? q : -q;
}

/* q_multiplier keeps a multiplier to 31 bits; qk_requant(x) equals the two roundings above
 * exactly, and so lies within one unit of x * real (a single rounding would be within half). */
static void test_requant(void) {
    int mismatches = 0, far = 0, total = 0;
    for (int k = 0; k < 2000; k++) {
        const double real = exp(log(1e-6) + uniform() * (log(4.0) - log(1e-6)));
        int32_t m, shift;
        q_multiplier(real, &m, &shift);
        CHECK(m >= (1 << 30) && m <= INT32_MAX);
        const double kept = (double)m * ldexp(1.0, shift - 31);
        CHECK_MSG(fabs(kept - real) <= real * ldexp(1.0, -30), "multiplier of %g kept as %g", real, kept);
        for (int j = 0; j < 20; j++) {
            const int32_t x = (int32_t)(next_u32() % 2000001) - 1000000;
            const int32_t got = qk_requant(x, m, shift);
            total++;
            mismatches += got != two_roundings(x, m, shift);
            far += fabs(got - (double)x * kept) >= 1.0;
        }
    }
    CHECK_MSG(mismatches == 0 && far == 0, "requant: %d of %d differ from the two roundings, %d a unit or more from "
              "x * real", mismatches, total, far);
    /* the boundaries: a zero multiplier, rounding shifts of ties both ways */
    int32_t m, shift;
    q_multiplier(0.0, &m, &shift);
    CHECK(m == 0 && qk_requant(12345, m, shift) == 0);
    CHECK(qk_rounding_shift(5, 1) == 3 && qk_rounding_shift(-5, 1) == -3 && qk_rounding_shift(-4, 1) == -2);
    q_multiplier(1.0, &m, &shift);
    CHECK(qk_requant(77, m, shift) == 77 && qk_requant(-77, m, shift) == -77);
}

/* qk_quantize (no libm, for the exported C) against round() half away from zero: random values,
 * exact ties, huge values and NaN. */
static void test_quantize_rounding(void) {
    int bad = 0;
    for (int k = 0; k < 200000; k++) {
        const float scale = (float)exp(log(1e-4) + uniform() * (log(10.0) - log(1e-4)));
        const int32_t zp = (int32_t)(next_u32() % 256) - 128;
        float v = (float)((uniform() - 0.5) * 300.0 * scale);
        if (k % 4 == 0) v = (float)((double)((int32_t)(next_u32() % 301) - 150) + 0.5) * scale; /* near ties */
        if (k % 1000 == 0) v = (k % 2000 ? 1e30f : -1e30f);
        double q = zp + round((double)v / scale);
        q = q < -128 ? -128 : (q > 127 ? 127 : q);
        bad += qk_quantize(v, scale, zp) != (int8_t)q;
    }
    CHECK_MSG(bad == 0, "qk_quantize: %d of 200000 differ from round()", bad);
    /* the library's vectorized form: the same bits on ties and random values */
    enum { N = 4099 };
    float v[N];
    int8_t a[N];
    const qparams p = {0.0371f, -17};
    for (int i = 0; i < N; i++)
        v[i] = i % 3 ? (float)((uniform() - 0.5) * 20.0) : (float)(((int)(next_u32() % 401) - 200) + 0.5) * p.scale;
    q_quantize_values(v, N, p, a);
    bad = 0;
    for (int i = 0; i < N; i++) bad += a[i] != qk_quantize(v[i], p.scale, p.zp);
    CHECK_MSG(bad == 0, "q_quantize_values: %d of %d differ from qk_quantize", bad, N);
    CHECK(qk_quantize(NAN, 0.1f, -7) == -7 && qk_quantize(0.75f, 0.5f, 0) == 2 && qk_quantize(-0.75f, 0.5f, 4) == 2);
    CHECK(qk_quantize(2.5f, 1.0f, 0) == 3 && qk_quantize(-2.5f, 1.0f, 0) == -3 && qk_quantize(-0.5f, 1.0f, 0) == -1);
}

/* q_requant_rows (vectorized) against qk_requant + qk_store over the whole range of shifts, left
 * shifts that saturate included, per-channel rows (area 9) and one value per channel (area 1). */
static void test_requant_rows(void) {
    enum { C = 37, AREA = 9 };
    int32_t mult[C], shift[C], acc[C * AREA];
    int8_t y[C * AREA];
    for (int o = 0; o < C; o++) {
        mult[o] = o == 5 ? 0 : (int32_t)((1u << 30) + next_u32() % (1u << 30));
        shift[o] = (int32_t)(next_u32() % 62) - 31;
    }
    for (int i = 0; i < C * AREA; i++)
        acc[i] = i % 7 == 0 ? (i % 2 ? INT32_MAX : INT32_MIN) : (int32_t)next_u32() >> (next_u32() % 31);
    for (int area = 1; area <= AREA; area += AREA - 1) {
        qnode q = {.nout = C, .mult = mult, .shift = shift};
        q.k = (qk_layer){.out_zp = 9, .lo = -20, .hi = 127};
        q_requant_rows(&q, acc, area, y);
        int bad = 0;
        for (int o = 0; o < C; o++)
            for (int i = 0; i < area; i++)
                bad += y[o * area + i] != qk_store(qk_requant(acc[o * area + i], mult[o], shift[o]), 9, -20, 127);
        CHECK_MSG(bad == 0, "q_requant_rows (area %d): %d values differ from qk_requant", area, bad);
    }
}

/* A conv node by hand: random int8 weights, biases and per-channel scales. */
static at_net *conv_net(const char *spec, int c, int h, int w) {
    at_net *net = NULL;
    CHECK_OK(at_net_from_spec(&net, spec, c, h, w));
    return net;
}

static void random_channels(qnode *q, int nout, size_t weights) {
    q->nout = nout;
    q->nweights = weights;
    q->w = malloc(weights);
    q->bias = malloc(sizeof(int32_t) * nout);
    q->mult = malloc(sizeof(int32_t) * nout);
    q->shift = malloc(sizeof(int32_t) * nout);
    for (size_t i = 0; i < weights; i++) {
        q->w[i] = random_i8();
        if (q->w[i] == -128) q->w[i] = -127;
    }
    for (int o = 0; o < nout; o++) {
        q->bias[o] = (int32_t)(next_u32() % 20001) - 10000;
        q_multiplier(exp(log(1e-4) + uniform() * (log(1e-2) - log(1e-4))), &q->mult[o], &q->shift[o]);
    }
}

static void free_channels(qnode *q) {
    free(q->w);
    free(q->w16);
    free(q->bias);
    free(q->mult);
    free(q->shift);
}

/* The reference output of channel o from its exact integer sum. */
static int32_t reference_out(const qnode *q, int o, int64_t acc) {
    const double v = q->out.zp + round_away((double)acc * q->mult[o] * ldexp(1.0, q->shift[o] - 31));
    return (int32_t)(v < q->k.lo ? q->k.lo : (v > q->k.hi ? q->k.hi : v));
}

static void test_conv_kernel(const char *spec, int relu) {
    enum { C = 4, H = 7, W = 6 };
    at_net *net = conv_net(spec, C, H, W);
    if (!net) return;
    const at_layer *L = &net->layers[0];
    qnode q = {.layer = 0, .op = L, .kind = AT_LAYER_CONV2D, .src = {-1, -1}};
    q.in[0] = (qparams){0.02f, -7};
    q.out = (qparams){0.05f, 3};
    random_channels(&q, L->out_c, L->w_count);
    q_kernel_view(&q, relu);
    CHECK(q_widen(&q));
    int8_t x[C * H * W], *y = malloc((size_t)L->out_size), *direct = malloc((size_t)L->out_size);
    for (int i = 0; i < C * H * W; i++) x[i] = random_i8();
    void *work = malloc(q_work_bytes(&q));
    q_conv(&q, x, y, work);
    /* the library's fast kernel and the exported C's plain one (qkernels.h): the same bits */
    qk_conv(&q.k, x, direct);
    CHECK_MSG(memcmp(y, direct, (size_t)L->out_size) == 0, "%s: q_conv and qk_conv differ", spec);
    free(direct);
    const int K = L->d.kernel, S = L->d.stride, P = L->d.pad, groups = L->d.groups > 1 ? L->d.groups : 1;
    const int cin = C / groups, cout = L->out_c / groups;
    int off = 0, worse = 0;
    for (int o = 0; o < L->out_c; o++)
        for (int oh = 0; oh < L->out_h; oh++)
            for (int ow = 0; ow < L->out_w; ow++) {
                int64_t acc = q.bias[o];
                for (int c = 0; c < cin; c++)
                    for (int ki = 0; ki < K; ki++)
                        for (int kj = 0; kj < K; kj++) {
                            const int ih = oh * S - P + ki, iw = ow * S - P + kj, ci = (o / cout) * cin + c;
                            if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                            acc += (int64_t)q.w[((o * cin + c) * K + ki) * K + kj] * (x[(ci * H + ih) * W + iw] - q.in[0].zp);
                        }
                const int d = abs(y[(o * L->out_h + oh) * L->out_w + ow] - reference_out(&q, o, acc));
                off += d == 1;
                worse += d > 1;
            }
    CHECK_MSG(worse == 0 && off <= L->out_size / 50 + 1, "%s: %d outputs off by one, %d worse", spec, off, worse);
    free(work);
    free(y);
    free_channels(&q);
    at_net_free(net);
}

/* q_sums_fit: |bias| + 255 * sum |w| per channel within int32, exactly at the edge. */
static void test_sums_fit(void) {
    at_net *net = conv_net("flatten,linear:2", 1, 1, 4);
    if (!net) return;
    qnode q = {.op = &net->layers[1], .kind = AT_LAYER_LINEAR};
    int8_t w[8] = {127, -127, 127, -127, 1, 0, 0, 0};
    int32_t bias[2] = {INT32_MAX - 255 * 508, INT32_MAX - 255 + 1}, mult[2] = {0};
    int32_t sh[2] = {0};
    q.nout = 2, q.nweights = 8, q.w = w, q.bias = bias, q.mult = mult, q.shift = sh;
    int c = -1;
    CHECK(!q_sums_fit(&q, &c) && c == 1); /* channel 1: 255 * 1 + bias = INT32_MAX + 1 */
    bias[1]--;
    CHECK(q_sums_fit(&q, &c));
    bias[0] = -bias[0] - 1; /* |INT32_MIN + 255 * 508| + 255 * 508 > INT32_MAX */
    CHECK(!q_sums_fit(&q, &c) && c == 0);
    at_net_free(net);
}

static void test_linear_kernel(void) {
    at_net *net = conv_net("flatten,linear:9", 3, 4, 5);
    if (!net) return;
    const at_layer *L = &net->layers[1];
    qnode q = {.layer = 1, .op = L, .kind = AT_LAYER_LINEAR, .src = {-1, -1}};
    q.in[0] = (qparams){0.02f, 11};
    q.out = (qparams){0.1f, -20};
    random_channels(&q, 9, L->w_count);
    q_kernel_view(&q, false);
    CHECK(q.k.in_c == 60 && q.k.out_c == 9);
    CHECK(q_widen(&q));
    int8_t x[60], y[9], direct[9];
    for (int i = 0; i < 60; i++) x[i] = random_i8();
    void *work = malloc(q_work_bytes(&q));
    q_linear(&q, x, y, 1, work);
    qk_linear(&q.k, x, direct);
    CHECK_MSG(memcmp(y, direct, sizeof y) == 0, "q_linear and qk_linear differ");
    /* samples taken together: each one's bits as alone, for every group size */
    int8_t xs[Q_LINEAR_GROUP * 60], ys[Q_LINEAR_GROUP * 9], one[9];
    for (int i = 0; i < Q_LINEAR_GROUP * 60; i++) xs[i] = random_i8();
    for (int m = 1; m <= Q_LINEAR_GROUP; m++) {
        q_linear(&q, xs, ys, m, work);
        for (int s = 0; s < m; s++) {
            qk_linear(&q.k, xs + s * 60, one);
            CHECK_MSG(memcmp(ys + s * 9, one, sizeof one) == 0, "q_linear of %d samples: sample %d differs", m, s);
        }
    }
    free(work);
    for (int o = 0; o < 9; o++) {
        int64_t acc = q.bias[o];
        for (int i = 0; i < 60; i++) acc += (int64_t)q.w[o * 60 + i] * (x[i] - q.in[0].zp);
        CHECK_MSG(abs(y[o] - reference_out(&q, o, acc)) <= 1, "linear output %d: %d against %d", o, y[o],
                  reference_out(&q, o, acc));
    }
    free_channels(&q);
    at_net_free(net);
}

/* Pooling keeps the scale: max pooling is the int8 maximum, average pooling the rounded mean of
 * q - zp (padding counted as 0), global pooling likewise; Add against its real-valued result. */
static void test_pool_and_add(void) {
    at_net *net = conv_net("avgpool:3:2:1,maxpool:2", 2, 6, 6);
    if (!net) return;
    int8_t x[72], y[18], m[8];
    for (int i = 0; i < 72; i++) x[i] = random_i8();
    qnode q = {.op = &net->layers[0], .kind = AT_LAYER_AVGPOOL2D, .in = {{0.1f, 5}}, .out = {0.1f, 5}};
    q_kernel_view(&q, false);
    qk_avgpool(&q.k, x, y);
    int bad = 0;
    for (int c = 0; c < 2; c++)
        for (int oh = 0; oh < 3; oh++)
            for (int ow = 0; ow < 3; ow++) {
                int sum = 0;
                for (int i = oh * 2 - 1; i <= oh * 2 + 1; i++)
                    for (int j = ow * 2 - 1; j <= ow * 2 + 1; j++)
                        if (i >= 0 && i < 6 && j >= 0 && j < 6) sum += x[(c * 6 + i) * 6 + j] - 5;
                bad += y[(c * 3 + oh) * 3 + ow] != (int8_t)(5 + round_away(sum / 9.0));
            }
    CHECK_MSG(bad == 0, "avgpool: %d outputs wrong", bad);
    qnode mq = {.op = &net->layers[1], .kind = AT_LAYER_MAXPOOL2D};
    q_kernel_view(&mq, false);
    qk_maxpool(&mq.k, y, m);
    CHECK(m[0] == (int8_t)fmax(fmax(y[0], y[1]), fmax(y[3], y[4])));
    at_net_free(net);

    qk_layer a = {.in_zp = -10, .in_zp2 = 4, .out_zp = -3, .lo = -128, .hi = 127};
    const double twice = 2 * 0.07;
    q_multiplier(0.03 / twice, &a.add_mult[0], &a.add_shift[0]);
    q_multiplier(0.07 / twice, &a.add_mult[1], &a.add_shift[1]);
    q_multiplier(twice / ((1 << 20) * 0.08), &a.add_mult[2], &a.add_shift[2]);
    int8_t p[256], r[256], s[256];
    for (int i = 0; i < 256; i++) p[i] = (int8_t)(i - 128), r[i] = random_i8();
    qk_add(&a, p, r, s, 256);
    int8_t fast[256];
    q_add_values(&a, p, r, fast, 256); /* the library's vectorized form: the same bits */
    CHECK(memcmp(fast, s, sizeof fast) == 0);
    bad = 0;
    for (int i = 0; i < 256; i++) {
        double v = -3 + round_away(((p[i] + 10) * 0.03 + (r[i] - 4) * 0.07) / 0.08);
        v = v < -128 ? -128 : (v > 127 ? 127 : v);
        bad += fabs(s[i] - v) > 1;
    }
    CHECK_MSG(bad == 0, "add: %d sums more than one step from the real sum", bad);
}

/* A whole network: its int8 logits, dequantized, against its float logits on the calibration
 * distribution: the same prediction for nearly every sample, and close values. */
static void compare_with_float(const char *spec, int c, int side, double min_agree) {
    enum { N = 200 };
    at_net *net = conv_net(spec, c, side, side);
    if (!net) return;
    at_net_init(net, 7);
    /* BatchNorm with statistics of its own, as after training */
    const int nt = at_net_num_buffer_floats(net);
    float *b = at_net_buffers(net);
    for (int i = 0; i < nt; i++) b[i] = (float)(0.2 + uniform());
    const int D = c * side * side, K = at_net_out_size(net);
    float *x = malloc(sizeof(float) * N * D);
    for (int i = 0; i < N * D; i++) x[i] = (float)uniform();
    at_qnet *q = NULL;
    CHECK_OK(at_quantize(&q, net, x, N, NULL));
    if (!q) {
        at_net_free(net);
        free(x);
        return;
    }
    const float *zf, *zq;
    float *f = malloc(sizeof(float) * N * K);
    CHECK_OK(at_net_predict(net, x, N, &zf));
    memcpy(f, zf, sizeof(float) * N * K);
    CHECK_OK(at_qnet_predict(q, x, N, &zq));
    int agree = 0;
    double gap = 0, range = 0;
    for (int i = 0; i < N; i++) {
        agree += at_argmax(f + i * K, K) == at_argmax(zq + i * K, K);
        for (int k = 0; k < K; k++) {
            gap = fmax(gap, fabs(f[i * K + k] - zq[i * K + k]));
            range = fmax(range, fabs(f[i * K + k]));
        }
    }
    printf("  %s: int8 agrees with float on %d of %d, logits within %.3g of %.3g\n", spec, agree, N, gap, range);
    CHECK_MSG(agree >= min_agree * N && gap <= 0.1 * range, "%s: %d of %d agree, gap %g of %g", spec, agree, N, gap,
              range);
    /* the same bits with 1 and 2 threads */
    int8_t *z1 = malloc((size_t)N * K);
    const int8_t *zz;
    at_set_threads(1);
    CHECK_OK(at_qnet_forward(q, x, N, &zz));
    memcpy(z1, zz, (size_t)N * K);
    at_set_threads(2);
    CHECK_OK(at_qnet_forward(q, x, N, &zz));
    CHECK(memcmp(z1, zz, (size_t)N * K) == 0);
    free(z1);
    free(f);
    free(x);
    at_qnet_free(q);
    at_net_free(net);
}

/* An int8 file reads back as the same network: the same int8 logits bit for bit. A float model
 * file, a value the kernels cannot take and a missing tensor are refused, naming the tensor. */
static void test_file_round_trip(void) {
    enum { N = 64 };
    const char *spec = "conv:8:3:1:1:bias=0,bn,a=relu,conv:8:3:1:1:groups=8:bias=0,bn,relu,conv:8:1,bn,add:a,bn,"
                       "relu,maxpool:2,flatten,linear:10";
    at_net *net = conv_net(spec, 1, 8, 8);
    if (!net) return;
    at_net_init(net, 3);
    float *b = at_net_buffers(net);
    for (size_t i = 0; i < at_net_num_buffer_floats(net); i++) b[i] = (float)(0.3 + uniform());
    float x[N * 64];
    for (int i = 0; i < N * 64; i++) x[i] = (float)uniform();
    at_qnet *q = NULL, *r = NULL;
    CHECK_OK(at_quantize(&q, net, x, N, NULL));
    char dir[] = "/tmp/advtrain-quant-XXXXXX", path[64], fpath[64];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/m.int8.safetensors", dir);
    snprintf(fpath, sizeof fpath, "%s/float.safetensors", dir);
    at_st_meta meta[1] = {{"advtrain.data", "fashion-mnist"}};
    CHECK_OK(at_qnet_save(q, path, meta, 1));
    at_st_file *f = NULL;
    CHECK_OK(at_qnet_load(&r, path, &f));
    if (q && r) {
        const int8_t *z;
        int8_t a[N * 10];
        CHECK_OK(at_qnet_forward(q, x, N, &z));
        memcpy(a, z, sizeof a);
        CHECK_OK(at_qnet_forward(r, x, N, &z));
        CHECK(memcmp(a, z, sizeof a) == 0);
        CHECK(f && at_st_meta_get(f, "advtrain.data") && strcmp(at_st_meta_get(f, "advtrain.data"), "fashion-mnist") == 0);
        CHECK(strcmp(at_net_spec(at_qnet_net(r)), at_net_spec(net)) == 0);
    }
    at_st_free(f);
    at_qnet_free(r);
    /* a float file is not an int8 one, and the other way round */
    CHECK_OK(at_model_save(net, fpath, NULL, 0));
    CHECK(at_qnet_load(&r, fpath, NULL) == AT_ERR_FORMAT && strstr(at_error_message(), "not an int8 model"));
    at_net *g = NULL;
    CHECK(at_model_load(&g, path, NULL) == AT_ERR_FORMAT && strstr(at_error_message(), "int8 model"));
    /* a shift out of range, then a missing tensor */
    at_st_file *w = NULL;
    CHECK_OK(at_st_read(path, &w));
    if (w) {
        at_st_entry e[64];
        int n = 0;
        for (int i = 0; i < w->ntensors && n < 64; i++) {
            at_st_tensor *t = &w->tensors[i];
            if (strcmp(t->name, "6.shift") == 0 && t->ints) t->ints[0] = 99; /* conv:8:1 */
            e[n] = (at_st_entry){.name = t->name, .ndim = t->ndim, .data = t->data, .integer = t->integer,
                                 .ints = t->ints, .int8 = t->dtype == AT_ST_I8};
            memcpy(e[n].shape, t->shape, sizeof t->shape);
            n++;
        }
        CHECK_OK(at_st_write(path, e, n, w->meta, w->nmeta));
        CHECK(at_qnet_load(&r, path, NULL) == AT_ERR_FORMAT && strstr(at_error_message(), "'6.shift' holds 99"));
        CHECK_OK(at_st_write(path, e + 1, n - 1, w->meta, w->nmeta)); /* without quant.input.scale */
        CHECK(at_qnet_load(&r, path, NULL) == AT_ERR_FORMAT && strstr(at_error_message(), "quant.input.scale"));
        at_st_free(w);
    }
    remove(path);
    remove(fpath);
    rmdir(dir);
    at_qnet_free(q);
    at_net_free(net);
}

/* at_attack_config.forward: the attacked model's forward passes replace the network's, for every
 * judgement; the network only supplies gradients. A stand-in that is always right leaves every
 * sample robust whatever the attack; one that is always wrong, none; the int8 model at eps 0, its
 * own clean count. */
/* A model reading the class off the input: class k's pixels 3k..3k+2 are bright (1) and the
 * others dark (0), which an eps-0.3 perturbation cannot hide; shift 1 answers the next class. */
typedef struct oracle {
    int shift;
    float z[64 * 10];
} oracle;

static at_status oracle_forward(void *user, const float *x, int n, const float **logits) {
    oracle *o = user;
    for (int i = 0; i < n; i++) {
        int best = 0;
        for (int k = 1; k < 10; k++)
            if (x[i * 36 + 3 * k] + x[i * 36 + 3 * k + 1] + x[i * 36 + 3 * k + 2] >
                x[i * 36 + 3 * best] + x[i * 36 + 3 * best + 1] + x[i * 36 + 3 * best + 2])
                best = k;
        for (int k = 0; k < 10; k++) o->z[i * 10 + k] = k == (best + o->shift) % 10;
    }
    *logits = o->z;
    return AT_OK;
}

static at_status qforward(void *q, const float *x, int n, const float **logits) { return at_qnet_predict(q, x, n, logits); }

static void test_attack_override(void) {
    enum { N = 64 };
    at_net *net = conv_net("conv:4:3:1:1,relu,flatten,linear:10", 1, 6, 6);
    if (!net) return;
    at_net_init(net, 9);
    float x[N * 36];
    int32_t y[N];
    for (int i = 0; i < N; i++) {
        y[i] = i % 10;
        for (int j = 0; j < 36; j++) x[i * 36 + j] = j / 3 == y[i] ? 1.0f : 0.0f;
    }
    at_attack_config cfg = at_attack_defaults(AT_ATTACK_SQUARE);
    cfg.eps = 0.3f;
    cfg.steps = 50;
    at_attack_result r;
    oracle right = {0, {0}}, wrong = {1, {0}};
    cfg.forward = oracle_forward;
    cfg.forward_user = &right;
    CHECK_OK(at_attack_run(net, &cfg, x, y, N, NULL, NULL, &r));
    CHECK_MSG(r.robust == N && r.clean_correct == N, "an always-right model: %d robust of %d", r.robust, N);
    cfg.forward_user = &wrong;
    CHECK_OK(at_attack_run(net, &cfg, x, y, N, NULL, NULL, &r));
    CHECK(r.robust == 0 && r.clean_correct == 0);
    at_qnet *q = NULL;
    CHECK_OK(at_quantize(&q, net, x, N, NULL));
    if (q) {
        const float *z;
        CHECK_OK(at_qnet_predict(q, x, N, &z));
        int hits = 0;
        for (int i = 0; i < N; i++) hits += at_argmax(z + i * 10, 10) == y[i];
        at_attack_config pgd = at_attack_defaults(AT_ATTACK_PGD);
        pgd.eps = 0.0f;
        pgd.forward = qforward;
        pgd.forward_user = q;
        CHECK_OK(at_attack_run(net, &pgd, x, y, N, NULL, NULL, &r));
        CHECK_MSG(r.clean_correct == hits && r.robust == hits, "eps 0 on the int8 model: %d clean, %d robust, int8 right on %d",
                  r.clean_correct, r.robust, hits);
        at_qnet_free(q);
    }
    at_net_free(net);
}

/* Percentile calibration clips the tails: every tensor's range is within its min/max range and
 * some are narrower (the input keeps the pixel scale); the network still agrees with its float
 * self; a percentile below 50 is refused. */
static void test_percentile(void) {
    enum { N = 200 };
    at_net *net = conv_net("conv:8:3:1:1,relu,maxpool:2,conv:16:3:1:1,relu,maxpool:2,flatten,linear:10", 1, 12, 12);
    if (!net) return;
    at_net_init(net, 7);
    float *x = malloc(sizeof(float) * N * 144);
    for (int i = 0; i < N * 144; i++) x[i] = (float)uniform();
    at_qnet *a = NULL, *b = NULL;
    const at_quant_config pct = {99.0f}, bad = {30.0f};
    CHECK_OK(at_quantize(&a, net, x, N, NULL));
    CHECK_OK(at_quantize(&b, net, x, N, &pct));
    if (a && b) {
        int narrower = 0;
        for (int t = 0; t <= at_net_num_layers(net); t++) {
            CHECK(b->tq[t].scale <= a->tq[t].scale * 1.0001f);
            narrower += b->tq[t].scale < 0.99f * a->tq[t].scale;
        }
        CHECK(b->tq[0].scale == a->tq[0].scale && narrower >= 2);
        const float *zq;
        CHECK_OK(at_qnet_predict(b, x, N, &zq));
        float *zf = malloc(sizeof(float) * N * 10);
        const float *z;
        CHECK_OK(at_net_predict(net, x, N, &z));
        memcpy(zf, z, sizeof(float) * N * 10);
        int agree = 0;
        for (int i = 0; i < N; i++) agree += at_argmax(zf + i * 10, 10) == at_argmax(zq + i * 10, 10);
        CHECK_MSG(agree >= 0.9 * N, "percentile 99: %d of %d agree with float", agree, N);
        free(zf);
    }
    at_qnet *c = NULL;
    CHECK(at_quantize(&c, net, x, N, &bad) == AT_ERR_ARG && c == NULL);
    at_qnet_free(a);
    at_qnet_free(b);
    free(x);
    at_net_free(net);
}

static void test_bad_input(void) {
    at_net *net = conv_net("flatten,linear:8,tanh,linear:3", 1, 2, 2);
    float x[8] = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f, 0.7f, 0.8f};
    at_qnet *q = (at_qnet *)1;
    CHECK(at_quantize(&q, net, x, 2, NULL) == AT_ERR_ARG && q == NULL && strstr(at_error_message(), "tanh"));
    at_net_free(net);
    net = conv_net("flatten,linear:3", 1, 2, 2);
    CHECK(at_quantize(&q, net, x, 0, NULL) == AT_ERR_ARG);
    x[5] = NAN;
    CHECK(at_quantize(&q, net, x, 2, NULL) == AT_ERR_NAN);
    x[5] = 0.6f;
    CHECK_OK(at_quantize(&q, net, x, 2, NULL));
    const int8_t *z;
    x[1] = INFINITY;
    CHECK(at_qnet_forward(q, x, 2, &z) == AT_ERR_NAN);
    at_qnet_free(q);
    at_net_free(net);
}

int main(void) {
    test_requant();
    test_quantize_rounding();
    test_requant_rows();
    test_conv_kernel("conv:6:3:1:1", 0);
    test_conv_kernel("conv:6:3:2:1:groups=2", 1);
    test_conv_kernel("conv:4:3:1:1:groups=4", 0);
    test_linear_kernel();
    test_sums_fit();
    test_pool_and_add();
    compare_with_float("conv:8:3:1:1,relu,maxpool:2,conv:16:3:1:1,relu,maxpool:2,flatten,linear:10", 1, 12, 0.95);
    compare_with_float("conv:8:3:1:1:bias=0,bn,a=relu,conv:8:3:1:1:groups=8:bias=0,bn,relu,conv:8:1,bn,add:a,bn,"
                       "relu,avgpool:2,gap,flatten,linear:10",
                       3, 10, 0.9);
    compare_with_float("conv:8:3:2:1,bn,relu,flatten,linear:32,bn,relu,dropout:0.2,linear:10", 1, 12, 0.95);
    test_file_round_trip();
    test_attack_override();
    test_percentile();
    test_bad_input();
    return tu_finish("test_quant");
}
