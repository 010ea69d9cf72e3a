/* advtrain bench: throughput of one training or attack workload on Fashion-MNIST, the same
 * workloads as bench/torch_bench.py so the two can be compared side by side; and, with
 * --mode sgemm, this machine's SGEMM ceiling to compare the workloads' GFLOP/s with. */
#include "cli.h"

#include <cblas.h> /* OpenBLAS's own threads and core name, for --mode sgemm */
#include <cjson/cJSON.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

typedef enum bench_mode { MODE_PLAIN, MODE_L1L2, MODE_FGSM, MODE_PGD7, MODE_PGD20_EVAL } bench_mode;

static const char *const mode_names[] = {"plain", "l1l2", "fgsm", "pgd7", "pgd20-eval"};

typedef struct bench {
    at_net *net;
    at_optim *opt;
    int batch, in_size, classes;
    float *x, *dlogits;
    int32_t *y;
    at_adv_workspace *ws; /* crafting buffers and the random-start RNG */
} bench;

/* Multiply-accumulates of one forward pass of one sample; *first: those of the lowest layer
 * with weights (a training step needs no input gradient below it). The weight gradient and the
 * input gradient of a layer each take as many as its forward. */
static double forward_macs(const at_net *net, double *first) {
    double macs = 0.0;
    int first_layer = -1;
    *first = 0.0;
    for (int i = 0; i < at_net_num_tensors(net); i++) {
        const at_param_info *t = at_net_tensor(net, i);
        if (t->is_bias) continue;
        int c, h, w;
        at_net_layer_out_shape(net, t->layer, &c, &h, &w);
        double layer = (double)t->size * h * w; /* each weight is used once per output position */
        if (first_layer < 0 || t->layer == first_layer) {
            first_layer = t->layer;
            *first += layer;
        }
        macs += layer;
    }
    return macs;
}

/* L1 1e-5 and L2 1e-4 on every weight tensor of rank > 1 (all weights, no biases): the
 * library call `advtrain fit --l1 1e-5 --l2 1e-4` makes, so the bench times what users run. */
static at_status add_l1l2(at_net *net) {
    const at_reg_select all_weights = {.layers = NULL, .bias = false};
    return at_elastic_net_regularization(net, &all_weights, 1e-5f, 1e-4f, NULL);
}

static at_status train_step(bench *b, const float *x, bool l1l2) {
    const float *logits;
    float loss;
    at_status s = at_net_forward(b->net, x, b->batch, &logits);
    if (s == AT_OK) s = at_cross_entropy(logits, b->y, b->batch, b->classes, 0.0f, &loss, b->dlogits, NULL);
    if (s != AT_OK) return s;
    at_net_zero_grad(b->net);
    if ((s = at_net_backward(b->net, b->dlogits, AT_GRAD_PARAMS, NULL)) != AT_OK) return s;
    if (l1l2 && (s = add_l1l2(b->net)) != AT_OK) return s;
    return at_optim_step(b->opt);
}

/* L-inf PGD (FGSM for one step) from x_orig with a uniform random start, through the library's
 * crafting (at_adv_craft: what `advtrain fit --adv` runs); *x_adv receives the result. */
static at_status pgd(bench *b, int n, float eps, float alpha, int steps, const float **x_adv) {
    at_attack_config a = at_attack_defaults(steps == 1 ? AT_ATTACK_FGSM : AT_ATTACK_PGD);
    a.eps = eps;
    a.alpha = alpha;
    a.steps = steps;
    a.random_start = true;
    return at_adv_craft(b->net, b->ws, &a, b->x, b->y, NULL, n, x_adv);
}

/* ------------------------------------------------------------ --mode sgemm */

static void fill(float *p, size_t count, uint64_t seed) {
    at_rng rng;
    at_rng_seed(&rng, seed);
    for (size_t i = 0; i < count; i++) p[i] = 2.0f * at_rng_uniform(&rng) - 1.0f;
}

/* `reps` n x n x n products c = a b through kernel; false if one fails. */
static bool products(at_gemm_kernel kernel, int n, int reps, const float *a, const float *b, float *c) {
    bool ok = true;
    for (int r = 0; r < reps; r++)
        ok = at_sgemm(kernel, false, false, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n) == AT_OK && ok;
    return ok;
}

/* GFLOP/s of `reps` n x n x n products: `threads` OpenMP threads each run their own single-threaded
 * products at once (how advtrain's layers use GEMM: each thread a share of the batch), so the
 * figure is the whole machine's. Returns a negative number when memory runs out. */
static double gemm_per_thread(at_gemm_kernel kernel, int n, int reps, int warmup, int threads) {
    const size_t nn = (size_t)n * n;
    double seconds = 0.0;
    int failed = 0;
#pragma omp parallel num_threads(threads) reduction(+ : failed)
    {
        float *a = malloc(sizeof(float) * nn), *b = malloc(sizeof(float) * nn), *c = malloc(sizeof(float) * nn);
        if (!a || !b || !c) {
            failed = 1;
        } else {
            fill(a, nn, 1 + (uint64_t)omp_get_thread_num());
            fill(b, nn, 101 + (uint64_t)omp_get_thread_num());
            failed = !products(kernel, n, warmup, a, b, c);
        }
#pragma omp barrier
        double start = cli_now();
        if (a && b && c && !products(kernel, n, reps, a, b, c)) failed = 1;
#pragma omp barrier
#pragma omp master
        seconds = cli_now() - start;
        free(a);
        free(b);
        free(c);
    }
    if (failed) return -1.0;
    return 2.0 * n * (double)n * n * reps * threads / seconds / 1e9;
}

/* GFLOP/s of one OpenBLAS product at a time with OpenBLAS's own threads (the usual way to
 * quote a BLAS's speed). */
static double gemm_openblas_threaded(int n, int reps, int warmup, int threads) {
    const size_t nn = (size_t)n * n;
    float *a = malloc(sizeof(float) * nn), *b = malloc(sizeof(float) * nn), *c = malloc(sizeof(float) * nn);
    double gflops = -1.0;
    if (a && b && c) {
        fill(a, nn, 1);
        fill(b, nn, 101);
        openblas_set_num_threads(threads);
        bool ok = products(AT_GEMM_OPENBLAS, n, warmup, a, b, c);
        double start = cli_now();
        ok = products(AT_GEMM_OPENBLAS, n, reps, a, b, c) && ok;
        double seconds = cli_now() - start;
        openblas_set_num_threads(1); /* back to advtrain's setting (at_set_threads) */
        if (ok) gflops = 2.0 * n * (double)n * n * reps / seconds / 1e9;
    }
    free(a);
    free(b);
    free(c);
    return gflops;
}

/* GFLOP/s of `threads` threads each running at_fma_burn at once: the machine's arithmetic peak
 * for the vectors advtrain is built with, the bound no implementation of the same float32 work
 * can pass. */
static double fma_peak(int threads) {
    const long iters = 40L * 1000 * 1000; /* about 0.1 s per round */
    double best = 0.0;
    for (int round = 0; round < 4; round++) { /* the best round: a VM's other guests only slow it */
        double flops = 0.0, seconds = 0.0;
#pragma omp parallel num_threads(threads) reduction(+ : flops)
        {
#pragma omp barrier
            double start = cli_now(), done = 0.0;
            at_fma_burn(iters, &done); /* iters > 0: cannot fail */
            flops += done;
#pragma omp barrier
#pragma omp master
            seconds = cli_now() - start;
        }
        if (flops / seconds / 1e9 > best) best = flops / seconds / 1e9;
    }
    return best;
}

static int run_sgemm(int n, int reps, int warmup, bool json) {
    const int threads = at_get_threads();
    double peak = fma_peak(threads);
    /* the per-thread runs first: OpenBLAS's own threads keep spinning a while after a call */
    double own = gemm_per_thread(AT_GEMM_OWN, n, reps, warmup, threads);
    double blas1 = gemm_per_thread(AT_GEMM_OPENBLAS, n, reps, warmup, threads);
    double blas = gemm_openblas_threaded(n, reps, warmup, threads);
    if (own < 0 || blas1 < 0 || blas < 0) {
        fprintf(stderr, "advtrain bench: out of memory for %dx%d matrices\n", n, n);
        return EXIT_RUN_FAILED;
    }
    const char *core = openblas_get_corename();
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "mode", "sgemm");
        cJSON_AddNumberToObject(o, "size", n);
        cJSON_AddNumberToObject(o, "threads", threads);
        cJSON_AddNumberToObject(o, "reps", reps);
        cJSON_AddNumberToObject(o, "gflops", blas);
        cJSON_AddNumberToObject(o, "openblas_gflops", blas);
        cJSON_AddNumberToObject(o, "openblas_per_thread_gflops", blas1);
        cJSON_AddNumberToObject(o, "own_per_thread_gflops", own);
        cJSON_AddNumberToObject(o, "fma_peak_gflops", peak);
        cJSON_AddStringToObject(o, "openblas_core", core ? core : "unknown");
        cJSON_AddStringToObject(o, "gemm", at_gemm_backend_name());
        cli_print_json(o);
    } else {
        printf("sgemm %d^3, %d threads, %d reps (OpenBLAS core %s; advtrain uses %s):\n", n, threads, reps,
               core ? core : "unknown", at_gemm_backend_name());
        printf("  OpenBLAS, %d threads in one product:       %7.1f GFLOP/s\n", threads, blas);
        printf("  OpenBLAS single-threaded, %d at once:       %7.1f GFLOP/s\n", threads, blas1);
        printf("  advtrain kernel single-threaded, %d at once: %7.1f GFLOP/s\n", threads, own);
        printf("  arithmetic peak (vector multiply-adds only): %7.1f GFLOP/s\n", peak);
    }
    return 0;
}

/* ------------------------------------------------------------ workloads */

static at_status run_batch(bench *b, bench_mode mode) {
    at_status s;
    switch (mode) {
    case MODE_PLAIN: return train_step(b, b->x, false);
    case MODE_L1L2: return train_step(b, b->x, true);
    case MODE_FGSM:
    case MODE_PGD7: {
        const float *x_adv; /* crafted in eval mode (at_adv_craft switches and restores) */
        s = mode == MODE_FGSM ? pgd(b, b->batch, 0.1f, 0.125f, 1, &x_adv)
                              : pgd(b, b->batch, 0.1f, 2.5f * 0.1f / 7.0f, 7, &x_adv);
        return s == AT_OK ? train_step(b, x_adv, false) : s;
    }
    case MODE_PGD20_EVAL: {
        const float *x_adv;
        return pgd(b, b->batch, 0.1f, 0.01f, 20, &x_adv);
    }
    }
    return AT_OK;
}

int cmd_bench(int argc, char **argv) {
    const char *model = "smallcnn", *mode_name = "plain", *data_source = "fashion-mnist";
    int batches = 50, threads = 0, warmup = 3, size = 1024;
    bool json = false;
    cli_option opts[] = {
        {"model", OPT_STRING, &model, "NAME|SPEC", "model (default smallcnn)", 1, 0},
        {"mode", OPT_STRING, &mode_name, "MODE", "plain, l1l2, fgsm, pgd7, pgd20-eval, or sgemm: this machine's SGEMM GFLOP/s at --size (OpenBLAS on --threads threads, and OpenBLAS and advtrain's kernel single-threaded, --threads at once) (default plain)", 1, 0},
        {"batches", OPT_INT, &batches, "N", "timed batches of 128 (default 50; pgd20-eval: 512 images each; sgemm: products)", 1, 1000000},
        {"warmup", OPT_INT, &warmup, "N", "untimed batches first (default 3)", 0, 1000},
        {"size", OPT_INT, &size, "N", "sgemm: N x N x N products (default 1024)", 1, 16384},
        {"threads", OPT_INT, &threads, "N", "compute threads (default: all cores)", 1, 1024},
        {"data", OPT_STRING, &data_source, "SOURCE", "dataset (default fashion-mnist)", 1, 0},
        {"json", OPT_FLAG, &json, NULL, "print one JSON object", 1, 0},
    };
    cli_command cmd = {"bench", "advtrain bench [--model M] [--mode MODE|sgemm] [--batches N] [--threads T] [--json]",
                       "Measure samples per second of one workload (batch 128, SGD lr 0.01 momentum 0.9).",
                       opts, (int)(sizeof opts / sizeof *opts), NULL, 0, 0};
    int early = cli_start(&cmd, argc, argv);
    if (early >= 0) return early;
    int mode = -1;
    for (int i = 0; i < (int)(sizeof mode_names / sizeof *mode_names); i++)
        if (strcmp(mode_name, mode_names[i]) == 0) mode = i;
    bool sgemm = strcmp(mode_name, "sgemm") == 0;
    if (mode < 0 && !sgemm) {
        fprintf(stderr, "advtrain bench: --mode %s: unknown (plain, l1l2, fgsm, pgd7, pgd20-eval, sgemm)\n", mode_name);
        return EXIT_USAGE;
    }
    if (!sgemm && cli_find(&cmd, "size")->seen) {
        fprintf(stderr, "advtrain bench: --size applies to --mode sgemm only\n");
        return EXIT_USAGE;
    }
    at_set_threads(threads > 0 ? threads : at_get_threads());
    if (sgemm) return run_sgemm(size, batches, warmup, json);
    at_data data;
    if (!cli_load_data("bench", &data, data_source)) return EXIT_RUN_FAILED;
    const at_dataset *ds = mode == MODE_PGD20_EVAL ? &data.test : &data.train;
    bench b;
    memset(&b, 0, sizeof b);
    b.batch = mode == MODE_PGD20_EVAL ? 512 : 128;
    int status = EXIT_RUN_FAILED;
    at_status s = at_net_from_spec(&b.net, model, ds->c, ds->h, ds->w);
    if (s != AT_OK) {
        fprintf(stderr, "advtrain bench: --model %s: %s\n", model, at_error_message());
        at_data_free(&data);
        return EXIT_USAGE;
    }
    at_net_init(b.net, 1);
    at_optim_config oc = at_optim_defaults(AT_OPTIM_SGD);
    oc.lr = 0.01f;
    oc.momentum = 0.9f;
    b.in_size = at_net_in_size(b.net);
    b.classes = at_net_out_size(b.net);
    size_t xs = (size_t)b.batch * b.in_size;
    b.x = malloc(sizeof(float) * xs);
    b.dlogits = malloc(sizeof(float) * (size_t)b.batch * b.classes);
    b.y = malloc(sizeof(int32_t) * (size_t)b.batch);
    int32_t *idx = malloc(sizeof(int32_t) * (size_t)b.batch);
    if (!b.x || !b.dlogits || !b.y || !idx) {
        fprintf(stderr, "advtrain bench: out of memory\n");
        goto done;
    }
    if ((s = at_optim_create(&b.opt, b.net, &oc)) != AT_OK || (s = at_net_reserve(b.net, b.batch)) != AT_OK ||
        (s = at_adv_workspace_create(&b.ws, b.net, b.batch, 1)) != AT_OK) {
        cli_error("bench", "setting up", s);
        goto done;
    }
    at_net_set_training(b.net, mode != MODE_PGD20_EVAL);
    double start = 0.0;
    int next = 0;
    for (int it = 0; it < warmup + batches; it++) {
        if (it == warmup) start = cli_now();
        for (int i = 0; i < b.batch; i++) idx[i] = (next + i) % ds->n;
        next = (next + b.batch) % ds->n;
        at_dataset_batch(ds, idx, b.batch, b.x, b.y, NULL);
        if ((s = run_batch(&b, (bench_mode)mode)) != AT_OK) {
            cli_error("bench", "running the workload", s);
            goto done;
        }
    }
    double seconds = cli_now() - start;
    double samples = (double)batches * b.batch;
    /* The floating-point work a step needs, counted the same for any implementation: a training
     * step is the forward, the weight gradients and the input gradients above the lowest layer
     * with weights; an attack step the forward and every input gradient (the input's included). */
    double first, fwd = forward_macs(b.net, &first);
    double train_step = 2.0 * (3.0 * fwd - first), attack_step = 2.0 * 2.0 * fwd, flops = 0.0;
    switch ((bench_mode)mode) {
    case MODE_PLAIN:
    case MODE_L1L2: flops = train_step; break;
    case MODE_FGSM: flops = 1 * attack_step + train_step; break;
    case MODE_PGD7: flops = 7 * attack_step + train_step; break;
    case MODE_PGD20_EVAL: flops = 20 * attack_step; break;
    }
    double gflops = flops * samples / seconds / 1e9;
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "model", model);
        cJSON_AddStringToObject(o, "mode", mode_name);
        cJSON_AddNumberToObject(o, "threads", at_get_threads());
        cJSON_AddNumberToObject(o, "batch", b.batch);
        cJSON_AddNumberToObject(o, "batches", batches);
        cJSON_AddNumberToObject(o, "seconds", seconds);
        cJSON_AddNumberToObject(o, "samples_per_s", samples / seconds);
        cJSON_AddNumberToObject(o, "gflops", gflops);
        cJSON_AddNumberToObject(o, "flops_per_sample", flops);
        cJSON_AddStringToObject(o, "gemm", at_gemm_backend_name());
        cli_print_json(o);
    } else {
        printf("%s %s: %.0f samples/s (%d threads, %d batches of %d, %.2fs, ~%.1f GFLOP/s, gemm: %s)\n",
               model, mode_name, samples / seconds, at_get_threads(), batches, b.batch, seconds,
               gflops, at_gemm_backend_name());
    }
    status = 0;
done:
    at_optim_free(b.opt);
    at_net_free(b.net);
    free(b.x);
    at_adv_workspace_free(b.ws);
    free(b.dlogits);
    free(b.y);
    free(idx);
    at_data_free(&data);
    return status;
}
