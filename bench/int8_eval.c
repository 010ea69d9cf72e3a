/* int8 against float evaluation speed (docs/quantization.md, "Speed"): the clean accuracy of a
 * float model and of its int8 file on a whole test split, best of R runs each, at a given
 * thread count, run alternately so that both see the same machine.
 *
 *   build/bench/bench_int8_eval FLOAT.safetensors INT8.safetensors [threads=1] [runs=5]
 *
 * Prints each side's best time, samples per second, and the ratio float time / int8 time
 * (above 1: int8 is faster). The accuracies are printed too, to show the same work was done. */
#define _POSIX_C_SOURCE 200809L
#include "advtrain.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s FLOAT.safetensors INT8.safetensors [threads] [runs]\n", argv[0]);
        return 2;
    }
    const int threads = argc > 3 ? atoi(argv[3]) : 1, runs = argc > 4 ? atoi(argv[4]) : 5;
    at_set_threads(threads);
    at_net *net;
    at_qnet *q;
    at_data data;
    if (at_model_load(&net, argv[1], NULL) != AT_OK || at_qnet_load(&q, argv[2], NULL) != AT_OK ||
        at_data_load(&data, "fashion-mnist") != AT_OK) {
        fprintf(stderr, "%s\n", at_error_message());
        return 1;
    }
    double best_f = 1e30, best_q = 1e30;
    at_eval_result rf, rq;
    for (int r = 0; r < runs; r++) {
        double t = now();
        if (at_evaluate(net, &data.test, 256, &rf) != AT_OK) return 1;
        t = now() - t;
        best_f = t < best_f ? t : best_f;
        t = now();
        if (at_qnet_evaluate(q, &data.test, 256, &rq) != AT_OK) return 1;
        t = now() - t;
        best_q = t < best_q ? t : best_q;
    }
    const int n = data.test.n;
    printf("threads %d, %d samples, best of %d\n", threads, n, runs);
    printf("float: %.3f s (%.0f samples/s), accuracy %.2f%%\n", best_f, n / best_f, 100.0 * rf.accuracy);
    printf("int8:  %.3f s (%.0f samples/s), accuracy %.2f%%\n", best_q, n / best_q, 100.0 * rq.accuracy);
    printf("int8 speed / float speed: %.2fx\n", best_f / best_q);
    at_qnet_free(q);
    at_net_free(net);
    at_data_free(&data);
    return 0;
}
