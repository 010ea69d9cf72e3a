/* SGEMM: a packed register-blocked kernel of our own where it is built for AVX-512 (faster than
 * OpenBLAS on these layers' shapes) or where OpenBLAS misdetects the CPU; OpenBLAS otherwise.
 *
 * The own kernel follows the Goto/BLIS structure: B is packed into KC x NR panels, A into
 * MR x KC panels (zero-padded at the edges), and a micro-kernel keeps an MR x NR tile of C in
 * registers while streaming both panels. */
#include "gemm.h"
#include "internal.h"
#include "vec.h"

#include <cblas.h>
#include <stdio.h>
#include <string.h>

/* The register tile follows the vector registers the compiler may use: 8 x 32 with AVX-512's
 * 32 zmm registers, 6 x 16 with AVX's 16 ymm (12 accumulators, 2 B vectors, 1 broadcast), 4 x 8
 * with SSE. A vector wider than the target's registers would be emulated piecewise, many times
 * slower. */
#if defined(__AVX512F__)
enum { MR = 8 };
#elif defined(__AVX__)
enum { MR = 6 };
#else
enum { MR = 4 };
#endif
enum { NR = 2 * VL, KC = 256, MC = 16 * MR, NC = 2048 };

/* The index lists of the three rounds (SHUFFLE8, vec.h). */
#define LO2 0, 8, 1, 9, 4, 12, 5, 13
#define HI2 2, 10, 3, 11, 6, 14, 7, 15
#define LO4 0, 1, 8, 9, 4, 5, 12, 13
#define HI4 2, 3, 10, 11, 6, 7, 14, 15
#define LO8 0, 1, 2, 3, 8, 9, 10, 11
#define HI8 4, 5, 6, 7, 12, 13, 14, 15

/* out[k] = (r[0][k], ..., r[7][k]): three rounds of pairwise interleaving, 24 shuffles in all. */
static inline void transpose8(const f8 r[8], f8 out[8]) {
    f8 t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = SHUFFLE8(r[i], r[i + 1], LO2);
        t[i + 1] = SHUFFLE8(r[i], r[i + 1], HI2);
    }
    for (int i = 0; i < 8; i += 4) {
        u[i] = SHUFFLE8(t[i], t[i + 2], LO4);
        u[i + 1] = SHUFFLE8(t[i], t[i + 2], HI4);
        u[i + 2] = SHUFFLE8(t[i + 1], t[i + 3], LO4);
        u[i + 3] = SHUFFLE8(t[i + 1], t[i + 3], HI4);
    }
    for (int i = 0; i < 4; i++) {
        out[i] = SHUFFLE8(u[i], u[i + 4], LO8);
        out[i + 4] = SHUFFLE8(u[i], u[i + 4], HI8);
    }
}

/* dst[p*pitch + i] = src[i*ld + p] for i < 8 (rows past `rows` read as zero), p < kc: eight
 * source rows, contiguous along p, into eight panel columns. Blocks of 8 x 8 go through
 * transpose8 (a scalar transpose writes every float to another cache line); the tail of kc
 * one float at a time. */
static void pack_transposed8(const float *src, size_t ld, int rows, int kc, float *dst, int pitch) {
    int p = 0;
    for (; p + 8 <= kc; p += 8) {
        f8 r[8], out[8];
        for (int i = 0; i < 8; i++) r[i] = i < rows ? load8(src + i * ld + p) : (f8){0};
        transpose8(r, out);
        for (int k = 0; k < 8; k++) store8(dst + (size_t)(p + k) * pitch, out[k]);
    }
    for (; p < kc; p++)
        for (int i = 0; i < 8; i++) dst[(size_t)p * pitch + i] = i < rows ? src[i * ld + p] : 0.0f;
}

/* Packs rows [i0, i0+mc) x cols [p0, p0+kc) of op(A) into MR-row panels: panel[k*MR + r].
 * The loop order follows the source's contiguous direction. */
static void pack_a(bool trans, const float *a, int lda, int i0, int mc, int p0, int kc, float *dst) {
    for (int ir = 0; ir < mc; ir += MR, dst += (size_t)MR * kc) {
        int rows = AT_MIN(MR, mc - ir);
        if (!trans && MR == 8) {
            pack_transposed8(a + (size_t)(i0 + ir) * lda + p0, (size_t)lda, rows, kc, dst, MR);
        } else if (trans && rows == MR) { /* one fixed-size copy per k */
            for (int p = 0; p < kc; p++)
                memcpy(dst + p * MR, a + (size_t)(p0 + p) * lda + i0 + ir, sizeof(float) * MR);
        } else if (trans) {
            for (int p = 0; p < kc; p++) {
                const float *src = a + (size_t)(p0 + p) * lda + i0 + ir;
                for (int r = 0; r < rows; r++) dst[p * MR + r] = src[r];
                for (int r = rows; r < MR; r++) dst[p * MR + r] = 0.0f;
            }
        } else {
            for (int r = 0; r < MR; r++) {
                if (r >= rows) {
                    for (int p = 0; p < kc; p++) dst[p * MR + r] = 0.0f;
                    continue;
                }
                const float *src = a + (size_t)(i0 + ir + r) * lda + p0;
                for (int p = 0; p < kc; p++) dst[p * MR + r] = src[p];
            }
        }
    }
}

/* Packs rows [p0, p0+kc) x cols [j0, j0+nc) of op(B) into NR-column panels: panel[k*NR + c]. */
static void pack_b(bool trans, const float *b, int ldb, int p0, int kc, int j0, int nc, float *dst) {
    for (int jr = 0; jr < nc; jr += NR, dst += (size_t)NR * kc) {
        int cols = AT_MIN(NR, nc - jr);
        if (trans && NR % 8 == 0) {
            for (int c = 0; c < NR; c += 8) {
                const int rows = AT_MAX(0, AT_MIN(8, cols - c)); /* past cols: zero columns */
                const float *src = rows > 0 ? b + (size_t)(j0 + jr + c) * ldb + p0 : b;
                pack_transposed8(src, (size_t)ldb, rows, kc, dst + c, NR);
            }
        } else if (trans) {
            for (int c = 0; c < NR; c++) {
                if (c >= cols) {
                    for (int p = 0; p < kc; p++) dst[p * NR + c] = 0.0f;
                    continue;
                }
                const float *src = b + (size_t)(j0 + jr + c) * ldb + p0;
                for (int p = 0; p < kc; p++) dst[p * NR + c] = src[p];
            }
        } else {
            for (int p = 0; p < kc; p++) {
                const float *src = b + (size_t)(p0 + p) * ldb + j0 + jr;
                if (cols == NR) {
                    memcpy(dst + p * NR, src, sizeof(float) * NR);
                } else {
                    for (int c = 0; c < cols; c++) dst[p * NR + c] = src[c];
                    for (int c = cols; c < NR; c++) dst[p * NR + c] = 0.0f;
                }
            }
        }
    }
}

/* C[0..rows, 0..cols) = alpha * Ap Bp + beta_eff * C, tile MR x (NV vectors) held in registers.
 * NV is 2 (NR columns) or 1 for a panel of at most VL columns (smallcnn's conv1 weight gradient
 * is 16 wide): half the multiply-adds of a padded full tile. Each element is the same chain of
 * multiply-adds either way. */
/* The register tile's multiply-adds: acc[r][v] = sum over p < kc of a(r, p) * b(p)[v], in order of
 * p. a(r, p) comes from a packed panel (a_pitch 0: ap[p*MR + r]) or from rows read in place
 * (ap[r*a_pitch + p]; rows past `rows` repeat the last one), b(p) is NV vectors at bp + p*bstride. */
static inline __attribute__((always_inline)) void
tile_accumulate(int nv, int kc, const float *ap, int a_pitch, int rows, const float *bp, int bstride,
                vec acc[MR][2]) {
    for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = (vec){0};
    for (int p = 0; p < kc; p++) {
        const vec b0 = load_vec(bp), b1 = nv == 2 ? load_vec(bp + VL) : (vec){0};
        for (int r = 0; r < MR; r++) {
            const float av = a_pitch ? ap[(size_t)AT_MIN(r, rows - 1) * a_pitch + p] : ap[(size_t)p * MR + r];
            acc[r][0] += av * b0;
            if (nv == 2) acc[r][1] += av * b1;
        }
        bp += bstride;
    }
}

static inline __attribute__((always_inline)) void
micro_tile(int nv, int kc, const float *ap, int a_pitch, const float *bp, int bstride, float alpha,
           float beta, float *c, int ldc, int rows, int cols) {
    vec acc[MR][2];
    tile_accumulate(nv, kc, ap, a_pitch, rows, bp, bstride, acc);
    if (rows == MR && cols == nv * VL) {
        for (int r = 0; r < MR; r++) {
            float *row = c + (size_t)r * ldc;
            for (int v = 0; v < nv; v++) {
                vec cv = alpha * acc[r][v];
                if (beta != 0.0f) cv += beta * load_vec(row + v * VL);
                store_vec(row + v * VL, cv);
            }
        }
        return;
    }
    float tile[MR][NR];
    for (int r = 0; r < MR; r++)
        for (int v = 0; v < nv; v++) store_vec(tile[r] + v * VL, acc[r][v]);
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < cols; j++) {
            float *x = c + (size_t)r * ldc + j;
            *x = alpha * tile[r][j] + (beta != 0.0f ? beta * *x : 0.0f);
        }
}

static void micro_kernel(int kc, const float *ap, const float *bp, int bstride, float alpha,
                         float beta, float *c, int ldc, int rows, int cols) {
    if (cols <= VL)
        micro_tile(1, kc, ap, 0, bp, bstride, alpha, beta, c, ldc, rows, cols);
    else
        micro_tile(2, kc, ap, 0, bp, bstride, alpha, beta, c, ldc, rows, cols);
}

/* C = A B + beta C with a few rows of A, exactly one or two vectors of columns and a long k (a
 * convolution's weight gradient dY times its rows when the layer has 16 or 32 taps, smallcnn's
 * conv1): both operands are read in place, A's rows broadcast element by element, B's rows as
 * vectors, where packing them would cost as much as the multiply. Same chains per KC block as
 * the packed path, so the same bits. */
static bool unpacked_applies(bool trans_a, bool trans_b, int m, int n, int k, float alpha) {
    return !trans_a && !trans_b && m <= 4 * MR && (n == VL || n == 2 * VL) && k >= KC &&
           alpha == 1.0f;
}

static void gemm_unpacked(int m, int n, int k, const float *a, int lda, const float *b, int ldb,
                          float beta, float *c, int ldc) {
    for (int p0 = 0; p0 < k; p0 += KC) {
        const int kc = AT_MIN(KC, k - p0);
        const float beta_eff = p0 == 0 ? beta : 1.0f;
        for (int i0 = 0; i0 < m; i0 += MR) {
            const int rows = AT_MIN(MR, m - i0);
            const float *ap = a + (size_t)i0 * lda + p0, *bp = b + (size_t)p0 * ldb;
            float *ct = c + (size_t)i0 * ldc;
            if (n == VL)
                micro_tile(1, kc, ap, lda, bp, ldb, 1.0f, beta_eff, ct, ldc, rows, n);
            else
                micro_tile(2, kc, ap, lda, bp, ldb, 1.0f, beta_eff, ct, ldc, rows, n);
        }
    }
}

/* Packing buffers, one pair per thread, allocated on first use and kept. */
static _Thread_local float *packed_a, *packed_b;
enum { SHORT_A_MAX = 256 };

/* C = A B^T + beta C for a short A (up to SHORT_A_MAX rows, taken 2 VL at a time) and a long B,
 * both contiguous along k: a convolution's forward, W (out channels x taps) times its rows
 * (pixels x taps) transposed, and a linear layer's, x W^T. The packed path would transpose the
 * long B into panels; here C^T = B A^T is computed instead, with B's rows read in place and
 * broadcast and only the short A transposed (into packed_a). Every element of C is the same
 * chain of multiply-adds per KC block as in micro_kernel, added to C the same way (alpha 1,
 * beta 0 or 1: one rounding), so both paths give the same bits. */
static bool short_a_applies(bool trans_a, bool trans_b, int m, int k, float alpha, float beta) {
    /* With k < 32 the tile's transposed write-back outweighs its multiply-adds (smallcnn's conv1
     * forward: 45 against 78 GFLOP/s packed; bench/gemm_shapes.c). */
    return !trans_a && trans_b && m <= SHORT_A_MAX && k >= 32 && alpha == 1.0f &&
           (beta == 0.0f || beta == 1.0f);
}

/* Adds the MR x (2 VL) register tile acc (acc[r] holds C[0..m)[j0 + r]) to C's rows, eight
 * columns at a time through transpose8 when the tile is whole, else one float at a time. */
static void add_transposed_tile(vec acc[MR][2], int nv, int m, int rows, float beta, float *c,
                                int ldc, int j0) {
    float tile[MR][2 * VL];
    for (int r = 0; r < MR; r++)
        for (int v = 0; v < nv; v++) store_vec(tile[r] + v * VL, acc[r][v]);
    if (MR == 8 && rows == 8) {
        for (int i0 = 0; i0 < m; i0 += 8) {
            f8 in[8], out[8];
            for (int r = 0; r < 8; r++) in[r] = load8(tile[r] + i0);
            transpose8(in, out);
            for (int q = 0; q < 8 && i0 + q < m; q++) {
                float *row = c + (size_t)(i0 + q) * ldc + j0;
                store8(row, beta != 0.0f ? out[q] + load8(row) : out[q]);
            }
        }
        return;
    }
    for (int i = 0; i < m; i++)
        for (int r = 0; r < rows; r++) {
            float *x = c + (size_t)i * ldc + j0 + r;
            *x = beta != 0.0f ? tile[r][i] + *x : tile[r][i];
        }
}

static void gemm_short_a_group(int m, int n, int k, const float *a, int lda, const float *b,
                               int ldb, float beta, float *c, int ldc);

/* A in groups of 2 VL rows: B is streamed once per group. */
static void gemm_short_a(int m, int n, int k, const float *a, int lda, const float *b, int ldb,
                         float beta, float *c, int ldc) {
    for (int i0 = 0; i0 < m; i0 += 2 * VL)
        gemm_short_a_group(AT_MIN(2 * VL, m - i0), n, k, a + (size_t)i0 * lda, lda, b, ldb, beta,
                           c + (size_t)i0 * ldc, ldc);
}

static void gemm_short_a_group(int m, int n, int k, const float *a, int lda, const float *b,
                               int ldb, float beta, float *c, int ldc) {
    const int nv = (m + VL - 1) / VL, pitch = nv * VL;
    for (int p0 = 0; p0 < k; p0 += KC) {
        const int kc = AT_MIN(KC, k - p0);
        const float beta_eff = p0 == 0 ? beta : 1.0f;
        for (int i0 = 0; i0 < pitch; i0 += 8) { /* A^T: packed_a[p * pitch + i] */
            const int rows = AT_MAX(0, AT_MIN(8, m - i0));
            pack_transposed8(rows > 0 ? a + (size_t)i0 * lda + p0 : a, (size_t)lda, rows, kc,
                             packed_a + i0, pitch);
        }
        for (int j0 = 0; j0 < n; j0 += MR) {
            /* B's rows broadcast against A^T's vectors; rows past n repeat the last, dropped */
            const int rows = AT_MIN(MR, n - j0);
            const float *brows = b + (size_t)j0 * ldb + p0;
            vec acc[MR][2];
            if (nv == 2)
                tile_accumulate(2, kc, brows, ldb, rows, packed_a, pitch, acc);
            else
                tile_accumulate(1, kc, brows, ldb, rows, packed_a, pitch, acc);
            add_transposed_tile(acc, nv, m, rows, beta_eff, c, ldc, j0);
        }
    }
}

void at_gemm_own(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a,
                 int lda, const float *b, int ldb, float beta, float *c, int ldc) {
    if (m <= 0 || n <= 0) return;
    if (k <= 0 || alpha == 0.0f) {
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) {
                float *x = c + (size_t)i * ldc + j;
                *x = beta == 0.0f ? 0.0f : beta * *x;
            }
        return;
    }
    if (!packed_a) {
        packed_a = aligned_alloc(64, sizeof(float) * MC * KC);
        packed_b = aligned_alloc(64, sizeof(float) * KC * NC);
        if (!packed_a || !packed_b) { /* cannot happen in practice; degrade, never crash */
            free(packed_a);
            free(packed_b);
            packed_a = packed_b = NULL;
            at_gemm_blas(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
            return;
        }
    }
    if (unpacked_applies(trans_a, trans_b, m, n, k, alpha)) {
        gemm_unpacked(m, n, k, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    if (short_a_applies(trans_a, trans_b, m, k, alpha, beta)) {
        gemm_short_a(m, n, k, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    for (int j0 = 0; j0 < n; j0 += NC) {
        int nc = AT_MIN(NC, n - j0);
        /* A non-transposed B is read in place for whole NR-column panels: each element is used
         * only m times, so packing it would cost as much as the multiply when m is small. */
        int direct = trans_b ? 0 : nc - nc % NR;
        for (int p0 = 0; p0 < k; p0 += KC) {
            int kc = AT_MIN(KC, k - p0);
            /* Only the first K block applies beta; later ones accumulate. */
            float beta_eff = p0 == 0 ? beta : 1.0f;
            if (direct < nc) pack_b(trans_b, b, ldb, p0, kc, j0 + direct, nc - direct, packed_b);
            for (int i0 = 0; i0 < m; i0 += MC) {
                int mc = AT_MIN(MC, m - i0);
                pack_a(trans_a, a, lda, i0, mc, p0, kc, packed_a);
                for (int jr = 0; jr < nc; jr += NR) {
                    const float *bp = jr < direct ? b + (size_t)p0 * ldb + j0 + jr
                                                  : packed_b + (size_t)(jr - direct) * kc;
                    int bstride = jr < direct ? ldb : NR;
                    for (int ir = 0; ir < mc; ir += MR)
                        micro_kernel(kc, packed_a + (size_t)ir * kc, bp, bstride, alpha, beta_eff,
                                     c + (size_t)(i0 + ir) * ldc + j0 + jr, ldc,
                                     AT_MIN(MR, mc - ir), AT_MIN(NR, nc - jr));
                }
            }
        }
    }
}

at_status at_fma_burn(long iters, double *flops) {
    if (iters < 0 || !flops) return at_fail(AT_ERR_ARG, "at_fma_burn: iters %ld < 0 or flops NULL", iters);
    enum { CHAINS = 12 }; /* enough independent chains to cover the FMA latency on both pipes */
    vec acc[CHAINS];
    const vec mul = splat(0.999999f), add = splat(1e-7f);
    for (int i = 0; i < CHAINS; i++) acc[i] = splat((float)i);
    for (long it = 0; it < iters; it++)
        for (int i = 0; i < CHAINS; i++) acc[i] = acc[i] * mul + add; /* contracted: one FMA */
    /* The result must be used, or the loop goes; a volatile store keeps it. */
    volatile float sink = 0.0f;
    for (int i = 0; i < CHAINS; i++) sink += sum_lanes(acc[i]);
    (void)sink;
    *flops = 2.0 * VL * CHAINS * (double)iters;
    return AT_OK;
}

void at_gemm_blas(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a,
                  int lda, const float *b, int ldb, float beta, float *c, int ldc) {
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

/* OpenBLAS cores whose kernels predate AVX: on a CPU with AVX2 they mean misdetection. */
static bool openblas_core_is_fallback(const char *core) {
    static const char *const old[] = {"Prescott", "Core2", "Penryn", "Dunnington", "Nehalem",
                                      "Atom", "Nano", "Katmai", "Coppermine", "Northwood",
                                      "Banias", "Athlon", "Opteron", "Opteron_SSE3", "Barcelona"};
    for (size_t i = 0; i < sizeof old / sizeof *old; i++)
        if (strcmp(core, old[i]) == 0) return true;
    return false;
}

static int use_own = -1; /* -1: not decided yet */
static char backend_name[96];

static void decide(void) {
    const char *core = openblas_get_corename();
    if (!core) core = "unknown";
    __builtin_cpu_init();
    bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    /* Built for AVX-512, the own kernel beats OpenBLAS's Cooperlake/SkylakeX kernels on these
     * layers' shapes (A/B on the 2-core EPYC, medians of 5: 1.02x-1.54x on 12 of the 15 bench
     * workloads, 0.96x-0.98x on seed-cnn plain and l1l2); built for AVX2 only, OpenBLAS's Haswell
     * kernels win (0.64x-0.98x on 10 of 12), so it keeps them unless it misdetected the CPU. */
#if defined(__AVX512F__)
    bool own = __builtin_cpu_supports("avx512f") || (avx2 && openblas_core_is_fallback(core));
#else
    bool own = avx2 && openblas_core_is_fallback(core);
#endif
    snprintf(backend_name, sizeof backend_name, own ? "advtrain kernel (OpenBLAS chose %s)" : "OpenBLAS (%s)", core);
    use_own = own;
}

const char *at_gemm_backend(void) {
    if (use_own < 0) decide();
    return backend_name;
}

const char *at_gemm_backend_name(void) { return at_gemm_backend(); }

void at_gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a, int lda,
             const float *b, int ldb, float beta, float *c, int ldc) {
    if (use_own < 0) decide();
    if (use_own)
        at_gemm_own(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    else
        at_gemm_blas(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

/* Whether a row-major matrix whose op() is rows x cols can be stored with leading dimension ld. */
static bool ld_fits(bool trans, int rows, int cols, int ld) { return ld >= AT_MAX(1, trans ? rows : cols); }

at_status at_sgemm(at_gemm_kernel kernel, bool trans_a, bool trans_b, int m, int n, int k, float alpha,
                   const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc) {
    if (m < 0 || n < 0 || k < 0) return at_fail(AT_ERR_ARG, "at_sgemm: negative size %d x %d x %d", m, n, k);
    if ((m && n && !c) || (m && n && k && (!a || !b))) return at_fail(AT_ERR_ARG, "at_sgemm: a matrix is NULL");
    /* OpenBLAS would print its own message for these. */
    if (!ld_fits(trans_a, m, k, lda) || !ld_fits(trans_b, k, n, ldb) || !ld_fits(false, m, n, ldc))
        return at_fail(AT_ERR_ARG, "at_sgemm: a leading dimension is shorter than a row (lda %d, ldb %d, ldc %d)",
                       lda, ldb, ldc);
    if (kernel == AT_GEMM_OWN)
        at_gemm_own(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    else if (kernel == AT_GEMM_OPENBLAS)
        at_gemm_blas(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    else
        return at_fail(AT_ERR_ARG, "at_sgemm: unknown kernel %d", (int)kernel);
    return AT_OK;
}
