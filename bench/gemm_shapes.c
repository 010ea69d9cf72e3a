/* GFLOP/s of advtrain's own SGEMM kernel on the products smallcnn's and mlp's layers run per
 * thread (batch 128 on 2 threads: 64 samples; convolutions per block of samples), single-threaded,
 * best of 7 timings. Where a product qualifies for the short-A path (C = A B^T, A short), the
 * packed path is timed beside it on the same product (A passed pre-transposed, which takes the
 * packed route and gives the same bits): the numbers quoted in docs/performance.md, session 8.
 *
 *   cmake --build build --target bench_gemm_shapes && ./build/bench/bench_gemm_shapes */
#include "gemm.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static float *filled(size_t count, unsigned seed) {
    float *p = malloc(sizeof(float) * count);
    if (!p) {
        fprintf(stderr, "bench_gemm_shapes: out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < count; i++) p[i] = (float)((i * 2654435761u + seed) % 1000) / 1000.0f - 0.5f;
    return p;
}

/* Best GFLOP/s of C (m x n) = op(A) op(B) + beta C over 7 timings of enough repetitions. */
static double gflops(bool ta, bool tb, int m, int n, int k, float beta) {
    const int lda = ta ? m : k, ldb = tb ? k : n;
    float *a = filled((size_t)m * k, 1), *b = filled((size_t)k * n, 2), *c = filled((size_t)m * n, 3);
    const double flops = 2.0 * m * n * k;
    const int reps = (int)(4e8 / flops) + 1;
    double best = 1e30;
    for (int t = 0; t < 7; t++) {
        const double t0 = now();
        for (int r = 0; r < reps; r++) at_gemm_own(ta, tb, m, n, k, 1.0f, a, lda, b, ldb, beta, c, n);
        const double dt = (now() - t0) / reps;
        if (dt < best) best = dt;
    }
    free(a);
    free(b);
    free(c);
    return flops / best / 1e9;
}

int main(void) {
    static const struct {
        const char *what;
        bool ta, tb;
        int m, n, k;
        float beta;
    } shapes[] = {
        {"smallcnn conv1 forward (block of 6)", false, true, 16, 1176, 16, 0.0f},
        {"smallcnn conv2 forward (block of 5)", false, true, 32, 245, 256, 0.0f},
        {"smallcnn conv1 weight gradient", false, false, 16, 16, 1176, 1.0f},
        {"smallcnn conv2 weight gradient", false, false, 32, 256, 245, 1.0f},
        {"smallcnn conv2 input gradient", true, false, 256, 245, 32, 0.0f},
        {"smallcnn fc1 forward", false, true, 64, 100, 1568, 1.0f},
        {"smallcnn fc1 input gradient", false, false, 64, 1568, 100, 0.0f},
        {"smallcnn fc1 weight gradient", true, false, 100, 1568, 64, 1.0f},
        {"mlp layer 1 forward", false, true, 64, 256, 784, 1.0f},
        {"mlp layer 2 forward", false, true, 64, 128, 256, 1.0f},
        {"mlp layer 3 forward", false, true, 64, 10, 128, 1.0f},
        {"1024^3", false, false, 1024, 1024, 1024, 0.0f},
    };
    printf("%-38s %5s %5s %5s  %-5s  %8s  %8s\n", "product", "M", "N", "K", "op", "GFLOP/s",
           "packed");
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        const bool short_a = !shapes[i].ta && shapes[i].tb;
        const double g = gflops(shapes[i].ta, shapes[i].tb, shapes[i].m, shapes[i].n, shapes[i].k,
                                shapes[i].beta);
        printf("%-38s %5d %5d %5d  %s%s  %8.1f", shapes[i].what, shapes[i].m, shapes[i].n,
               shapes[i].k, shapes[i].ta ? "T" : "N", shapes[i].tb ? "T" : "N", g);
        if (short_a) /* the same product through the packed path */
            printf("  %8.1f", gflops(true, true, shapes[i].m, shapes[i].n, shapes[i].k, shapes[i].beta));
        printf("\n");
    }
    return 0;
}
