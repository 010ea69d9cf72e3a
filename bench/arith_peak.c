/* The per-core arithmetic peaks that bound int8 against float evaluation (docs/quantization.md,
 * "Speed"): float FMA (vfmadd231ps, 8 multiply-adds) and the int16 multiply-add advtrain's int8
 * kernels use (vpmaddwd + vpaddd, 16 multiply-adds), each as independent chains in a loop, in
 * GMAC/s on one thread. x86-64 with AVX2 and FMA only.
 *
 *   build/bench/bench_arith_peak */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(void) {
#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__)
    const long n = 100000000;
    double t = now();
    for (long i = 0; i < n; i++) /* 10 independent FMA chains: 80 multiply-adds */
        __asm__ volatile("vfmadd231ps %%ymm14,%%ymm15,%%ymm0\n vfmadd231ps %%ymm14,%%ymm15,%%ymm1\n"
                         "vfmadd231ps %%ymm14,%%ymm15,%%ymm2\n vfmadd231ps %%ymm14,%%ymm15,%%ymm3\n"
                         "vfmadd231ps %%ymm14,%%ymm15,%%ymm4\n vfmadd231ps %%ymm14,%%ymm15,%%ymm5\n"
                         "vfmadd231ps %%ymm14,%%ymm15,%%ymm6\n vfmadd231ps %%ymm14,%%ymm15,%%ymm7\n"
                         "vfmadd231ps %%ymm14,%%ymm15,%%ymm8\n vfmadd231ps %%ymm14,%%ymm15,%%ymm9\n" ::
                             : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9");
    const double tf = now() - t;
    t = now();
    for (long i = 0; i < n; i++) /* 8 independent madd + add chains: 128 multiply-adds */
        __asm__ volatile("vpmaddwd %%ymm14,%%ymm15,%%ymm10\n vpaddd %%ymm10,%%ymm0,%%ymm0\n"
                         "vpmaddwd %%ymm14,%%ymm15,%%ymm11\n vpaddd %%ymm11,%%ymm1,%%ymm1\n"
                         "vpmaddwd %%ymm14,%%ymm15,%%ymm12\n vpaddd %%ymm12,%%ymm2,%%ymm2\n"
                         "vpmaddwd %%ymm14,%%ymm15,%%ymm13\n vpaddd %%ymm13,%%ymm3,%%ymm3\n"
                         "vpmaddwd %%ymm14,%%ymm15,%%ymm10\n vpaddd %%ymm10,%%ymm4,%%ymm4\n"
                         "vpmaddwd %%ymm14,%%ymm15,%%ymm11\n vpaddd %%ymm11,%%ymm5,%%ymm5\n"
                         "vpmaddwd %%ymm14,%%ymm15,%%ymm12\n vpaddd %%ymm12,%%ymm6,%%ymm6\n"
                         "vpmaddwd %%ymm14,%%ymm15,%%ymm13\n vpaddd %%ymm13,%%ymm7,%%ymm7\n" ::
                             : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm10", "xmm11",
                               "xmm12", "xmm13");
    const double ti = now() - t;
    printf("float FMA:        %.1f GMAC/s per core\n", (double)n * 80 / tf / 1e9);
    printf("int16 vpmaddwd:   %.1f GMAC/s per core\n", (double)n * 128 / ti / 1e9);
    printf("int16 / float:    %.2fx (the most int8-through-int16 evaluation can gain at equal efficiency)\n",
           ((double)n * 128 / ti) / ((double)n * 80 / tf));
    return 0;
#else
    printf("bench_arith_peak: x86-64 with AVX2 and FMA only\n");
    return 0;
#endif
}
