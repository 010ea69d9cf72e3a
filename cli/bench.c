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
    float *x, *dlogits; /* dlogits: inside x's block */
    int32_t *y, *idx;   /* idx: inside y's block */
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

typedef struct bench_args {
    const char *model, *mode_name, *data_source;
    int batches, threads, warmup, size;
    bool json, sgemm;
    bench_mode mode; /* unless sgemm */
} bench_args;

/* Parses the command line into a; -1 to go on, else the exit code. */
static int bench_parse(int argc, char **argv, bench_args *a) {
    *a = (bench_args){"smallcnn", "plain", "fashion-mnist", 50, 0, 3, 1024, false, false, MODE_PLAIN};
    cli_option opts[] = {
        {"model", OPT_STRING, &a->model, "NAME|SPEC", "model (default smallcnn)", 1, 0},
        {"mode", OPT_STRING, &a->mode_name, "MODE", "plain, l1l2, fgsm, pgd7, pgd20-eval, or sgemm: this machine's SGEMM GFLOP/s at --size (OpenBLAS on --threads threads, and OpenBLAS and advtrain's kernel single-threaded, --threads at once) (default plain)", 1, 0},
        {"batches", OPT_INT, &a->batches, "N", "timed batches of 128 (default 50; pgd20-eval: 512 images each; sgemm: products)", 1, 1000000},
        {"warmup", OPT_INT, &a->warmup, "N", "untimed batches first (default 3)", 0, 1000},
        {"size", OPT_INT, &a->size, "N", "sgemm: N x N x N products (default 1024)", 1, 16384},
        CLI_OPT_THREADS(&a->threads),
        {"data", OPT_STRING, &a->data_source, "SOURCE", "dataset (default fashion-mnist)", 1, 0},
        {"json", OPT_FLAG, &a->json, NULL, "print one JSON object", 1, 0},
    };
    cli_command cmd = {"bench", "advtrain bench [--model M] [--mode MODE|sgemm] [--batches N] [--threads T] [--json]",
                       "Measure samples per second of one workload (batch 128, SGD lr 0.01 momentum 0.9).",
                       opts, (int)(sizeof opts / sizeof *opts), NULL, 0, 0};
    int early = cli_start(&cmd, argc, argv);
    if (early >= 0) return early;
    int mode = -1;
    for (int i = 0; i < (int)(sizeof mode_names / sizeof *mode_names); i++)
        if (strcmp(a->mode_name, mode_names[i]) == 0) mode = i;
    a->sgemm = strcmp(a->mode_name, "sgemm") == 0;
    if (mode < 0 && !a->sgemm) {
        fprintf(stderr, "advtrain bench: --mode %s: unknown (plain, l1l2, fgsm, pgd7, pgd20-eval, sgemm)\n", a->mode_name);
        return EXIT_USAGE;
    }
    if (!a->sgemm && cli_find(&cmd, "size")->seen) {
        fprintf(stderr, "advtrain bench: --size applies to --mode sgemm only\n");
        return EXIT_USAGE;
    }
    if (mode >= 0) a->mode = (bench_mode)mode;
    return -1;
}

/* The network (seed 1), its SGD optimizer, the batch buffers and the crafting workspace; 0, or
 * the exit code after printing why. */
static int bench_setup(bench *b, const char *model, const at_dataset *ds, bench_mode mode) {
    memset(b, 0, sizeof *b);
    b->batch = mode == MODE_PGD20_EVAL ? 512 : 128;
    at_status s = at_net_from_spec(&b->net, model, ds->c, ds->h, ds->w);
    if (s != AT_OK) {
        fprintf(stderr, "advtrain bench: --model %s: %s\n", model, at_error_message());
        return EXIT_USAGE;
    }
    at_net_init(b->net, 1);
    at_optim_config oc = at_optim_defaults(AT_OPTIM_SGD);
    oc.lr = 0.01f;
    oc.momentum = 0.9f;
    b->in_size = at_net_in_size(b->net);
    b->classes = at_net_out_size(b->net);
    /* one block of floats (inputs, logit gradients), one of indices (labels, sample numbers) */
    b->x = malloc(sizeof(float) * (size_t)b->batch * (b->in_size + b->classes));
    b->y = malloc(sizeof(int32_t) * (size_t)b->batch * 2);
    if (!b->x || !b->y) {
        fprintf(stderr, "advtrain bench: out of memory\n");
        return EXIT_RUN_FAILED;
    }
    b->dlogits = b->x + (size_t)b->batch * b->in_size;
    b->idx = b->y + b->batch;
    if ((s = at_optim_create(&b->opt, b->net, &oc)) != AT_OK || (s = at_net_reserve(b->net, b->batch)) != AT_OK ||
        (s = at_adv_workspace_create(&b->ws, b->net, b->batch)) != AT_OK) {
        cli_error("bench", "setting up", s);
        return EXIT_RUN_FAILED;
    }
    at_net_set_training(b->net, mode != MODE_PGD20_EVAL);
    return 0;
}

static void bench_free(bench *b) {
    at_optim_free(b->opt);
    at_adv_workspace_free(b->ws);
    at_net_free(b->net);
    free(b->x); /* and dlogits */
    free(b->y); /* and idx */
}

/* Runs warmup + batches consecutive batches of ds; *seconds: the time of the last `batches`. */
static bool bench_time(bench *b, const at_dataset *ds, bench_mode mode, int warmup, int batches, double *seconds) {
    double start = 0.0;
    int next = 0;
    for (int it = 0; it < warmup + batches; it++) {
        if (it == warmup) start = cli_now();
        for (int i = 0; i < b->batch; i++) b->idx[i] = (next + i) % ds->n;
        next = (next + b->batch) % ds->n;
        at_dataset_batch(ds, b->idx, b->batch, b->x, b->y, NULL);
        at_status s = run_batch(b, mode);
        if (s != AT_OK) {
            cli_error("bench", "running the workload", s);
            return false;
        }
    }
    *seconds = cli_now() - start;
    return true;
}

/* The floating-point work of one sample's step, counted the same for any implementation: a
 * training step is the forward, the weight gradients and the input gradients above the lowest
 * layer with weights; an attack step the forward and every input gradient (the input's
 * included). */
static double workload_flops(const at_net *net, bench_mode mode) {
    double first, fwd = forward_macs(net, &first);
    double train_step = 2.0 * (3.0 * fwd - first), attack_step = 2.0 * 2.0 * fwd;
    switch (mode) {
    case MODE_PLAIN:
    case MODE_L1L2: return train_step;
    case MODE_FGSM: return 1 * attack_step + train_step;
    case MODE_PGD7: return 7 * attack_step + train_step;
    case MODE_PGD20_EVAL: return 20 * attack_step;
    }
    return 0.0;
}

static void print_result(const bench_args *a, const bench *b, double seconds, double flops) {
    double samples = (double)a->batches * b->batch;
    double gflops = flops * samples / seconds / 1e9;
    if (a->json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "model", a->model);
        cJSON_AddStringToObject(o, "mode", a->mode_name);
        cJSON_AddNumberToObject(o, "threads", at_get_threads());
        cJSON_AddNumberToObject(o, "batch", b->batch);
        cJSON_AddNumberToObject(o, "batches", a->batches);
        cJSON_AddNumberToObject(o, "seconds", seconds);
        cJSON_AddNumberToObject(o, "samples_per_s", samples / seconds);
        cJSON_AddNumberToObject(o, "gflops", gflops);
        cJSON_AddNumberToObject(o, "flops_per_sample", flops);
        cJSON_AddNumberToObject(o, "parameters", (double)at_net_num_params(b->net)); /* a step's gradient sum */
        cJSON_AddStringToObject(o, "gemm", at_gemm_backend_name());
        cli_print_json(o);
    } else {
        printf("%s %s: %.0f samples/s (%d threads, %d batches of %d, %.2fs, ~%.1f GFLOP/s, gemm: %s)\n",
               a->model, a->mode_name, samples / seconds, at_get_threads(), a->batches, b->batch, seconds,
               gflops, at_gemm_backend_name());
    }
}

/* A training or attack workload on the data source's images. */
static int run_workload(const bench_args *a) {
    at_data data;
    if (!cli_load_data("bench", &data, a->data_source)) return EXIT_RUN_FAILED;
    const at_dataset *ds = a->mode == MODE_PGD20_EVAL ? &data.test : &data.train;
    bench b;
    int status = bench_setup(&b, a->model, ds, a->mode);
    double seconds;
    if (status == 0 && !bench_time(&b, ds, a->mode, a->warmup, a->batches, &seconds)) status = EXIT_RUN_FAILED;
    if (status == 0) print_result(a, &b, seconds, workload_flops(b.net, a->mode));
    bench_free(&b);
    at_data_free(&data);
    return status;
}

int cmd_bench(int argc, char **argv) {
    bench_args a;
    int early = bench_parse(argc, argv, &a);
    if (early >= 0) return early;
    at_set_threads(a.threads > 0 ? a.threads : at_get_threads());
    return a.sgemm ? run_sgemm(a.size, a.batches, a.warmup, a.json) : run_workload(&a);
}
