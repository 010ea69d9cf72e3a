/* The seed-mlp regression task.
 *
 * seed-mlp is Linear(10,50) then Linear(50,10) with no activation, i.e. a linear model with a
 * redundant hidden layer. The task is therefore a noisy linear teacher it can represent exactly:
 *     x ~ N(0, I_10),   y = W x + b + e,   e ~ N(0, 0.5^2 I_10)
 * W (10x10) is sparse: exactly 30 of its 100 entries (chosen at random) are N(0,1), the rest
 * are 0; b ~ N(0,1). Sparsity gives L1 something to find; the tiny training set (40 samples
 * for 10*50+50+50*10+10 = 1060 parameters) makes overfitting and the benefit of L1/L2 plainly
 * visible against the 2000-sample test set, whose error floor is the noise variance 0.25.
 *
 * Teacher, training inputs and test inputs come from independent streams derived from the
 * seed, so the same seed always yields the same teacher and the same data. */
#include "internal.h"

#include <string.h>

#define SYN_IN 10
#define SYN_OUT 10
#define SYN_NONZERO 30
#define SYN_TRAIN 40
#define SYN_TEST 2000
#define SYN_NOISE 0.5f

/* Distinct stream tags so the three parts never share random numbers. */
#define STREAM_TEACHER 0x7465616368657231ull
#define STREAM_TRAIN 0x747261696e000001ull
#define STREAM_TEST 0x7465737400000001ull

typedef struct teacher {
    float w[SYN_OUT * SYN_IN]; /* row-major (out, in), like nn.Linear's weight */
    float b[SYN_OUT];
} teacher;

static void make_teacher(teacher *t, uint64_t seed) {
    at_rng r;
    at_rng_seed(&r, seed ^ STREAM_TEACHER);
    int32_t order[SYN_OUT * SYN_IN];
    for (int i = 0; i < SYN_OUT * SYN_IN; i++) order[i] = i;
    at_rng_shuffle(&r, order, SYN_OUT * SYN_IN);
    memset(t->w, 0, sizeof t->w);
    for (int i = 0; i < SYN_NONZERO; i++) t->w[order[i]] = at_rng_normal(&r);
    for (int o = 0; o < SYN_OUT; o++) t->b[o] = at_rng_normal(&r);
}

static at_status make_set(at_dataset *ds, const teacher *t, int n, uint64_t stream) {
    memset(ds, 0, sizeof *ds);
    ds->features = at_alloc_floats((size_t)n * SYN_IN, "synthetic features");
    ds->targets = at_alloc_floats((size_t)n * SYN_OUT, "synthetic targets");
    if (!ds->features || !ds->targets) {
        at_dataset_free(ds);
        return AT_ERR_NOMEM;
    }
    ds->n = n;
    ds->c = SYN_IN;
    ds->h = ds->w = 1;
    ds->target_dim = SYN_OUT;
    at_rng r;
    at_rng_seed(&r, stream);
    for (int i = 0; i < n; i++) {
        float *x = ds->features + (size_t)i * SYN_IN, *y = ds->targets + (size_t)i * SYN_OUT;
        for (int j = 0; j < SYN_IN; j++) x[j] = at_rng_normal(&r);
        for (int o = 0; o < SYN_OUT; o++) {
            float acc = t->b[o];
            for (int j = 0; j < SYN_IN; j++) acc += t->w[o * SYN_IN + j] * x[j];
            y[o] = acc + SYN_NOISE * at_rng_normal(&r);
        }
    }
    return AT_OK;
}

at_status at_synthetic_load(at_data *data, uint64_t seed) {
    if (!data) return at_fail(AT_ERR_ARG, "at_synthetic_load: data is NULL");
    memset(data, 0, sizeof *data);
    teacher t;
    make_teacher(&t, seed);
    at_status s = make_set(&data->train, &t, SYN_TRAIN, seed ^ STREAM_TRAIN);
    if (s == AT_OK) s = make_set(&data->test, &t, SYN_TEST, seed ^ STREAM_TEST);
    if (s != AT_OK) {
        at_data_free(data);
        return s;
    }
    strcpy(data->name, "synthetic");
    return AT_OK;
}
