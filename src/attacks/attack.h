/* Pieces shared by the attacks (src/attacks only).
 *
 * One call of at_attack_run / at_attack_dataset cuts the samples into batches of at most `cap`
 * and runs the attack on each batch through an atk_batch: the clean inputs, labels and logits of
 * the batch, the output rows, a per-sample "still robust" flag and one random generator per
 * sample. Attacks keep the state of the samples they are still working on in compact rows
 * (row j belongs to batch sample ids[j]) so the network always sees one contiguous block, and
 * drop rows (atk_compact) when samples are done. Every buffer is carved out of one arena that
 * is allocated before the first batch. */
#ifndef ADVTRAIN_ATTACK_H
#define ADVTRAIN_ATTACK_H
#include "internal.h"

#include <stdint.h>

typedef struct atk_batch {
    at_net *net;
    const at_attack_config *cfg; /* defaults resolved */
    int D, K;                    /* floats per sample, classes */
    int cap;                     /* largest batch */
    int n;                       /* samples in this batch */
    int64_t base;                /* index of the batch's first sample in the whole call */
    const float *x;              /* n x D clean inputs */
    const int32_t *y;            /* n labels */
    float *adv;                  /* n x D: the returned examples (starts as a copy of x) */
    float *clean_logits;         /* n x K */
    int32_t *target;             /* n: the target class of single-target attacks, else -1 */
    uint8_t *todo;               /* n: 1 while the sample is attacked and not yet fooled */
    uint8_t *bad;                /* n: met a NaN or infinite loss or gradient */
    at_rng *rng;                 /* n: one generator per sample */

    /* Workspaces (cap rows each unless noted). */
    int32_t *ids;                /* compact row -> batch sample */
    int32_t *row_target;         /* target class of each compact row (targeted losses) */
    int32_t *pred;               /* prediction of each compact row */
    uint8_t *keep;
    float *xs;                   /* clean inputs of the compact rows */
    float *xa;                   /* current iterate */
    float *grad;                 /* input gradient */
    float *dlogits;              /* cap x K */
    float *loss;                 /* cap */
    float *ws[4];                /* extra cap x D rows (APGD: previous, best, best gradient) */
    float *fs[4];                /* extra per-row floats (APGD step, best losses; Square) */
    float *hist;                 /* APGD loss history: cap x (hist_len) */
    int hist_len;
    uint8_t *flags;              /* per-row bytes */

    at_attack_result *res;
    bool counted_grad;           /* zero/non-finite gradient statistics taken for this batch */
} atk_batch;

/* ---- losses: value to maximize and d value / d logits for one sample */
float atk_sample_loss(at_attack_loss loss, bool targeted, const float *z, int K, int y, int t,
                      float *dz);
/* z_y - max_{j != y} z_j (> 0: classified as y). */
float atk_margin(const float *z, int K, int y);

/* Forward on m contiguous rows; logits for row j at (*logits)[j*K]. */
at_status atk_forward(atk_batch *b, const float *x, int m, const float **logits);
/* Forward + per-row loss + input gradient for the compact rows in b->xa (m rows).
 * Loss values go to b->loss, gradients to b->grad. With `targets` (per row, may be NULL)
 * the loss is the targeted one. pred (may be NULL) receives the argmax per row. */
at_status atk_loss_grad(atk_batch *b, at_attack_loss loss, bool targeted, const int32_t *targets,
                        int m, int32_t *pred);

/* ---- projections */
/* Projects v (D floats) onto the eps-ball around x in the norm, then onto [0,1]. */
void atk_project(at_attack_norm norm, float eps, const float *x, float *v, int D);
/* The L-inf random start from D uniforms in [0,1) already in v: v = x + eps * (2u - 1), then
 * atk_project. Callers draw the uniforms (at_rng_fill_uniform) from whichever generator. */
void atk_linf_start(float eps, const float *x, float *v, int D);
/* v += step * (sign(g) under L-inf, g/||g|| under L2), then atk_project. */
void atk_ascent_step(at_attack_norm norm, float step, float eps, const float *x, float *v,
                     const float *g, int D);
/* Index of the class with the rank-th largest value (rank 0: the argmax). */
int atk_ranked_class(const float *z, int K, int rank);
/* ||v||_2, computed in double. */
double atk_l2(const float *v, int D);

/* ---- compaction: keeps the rows with keep[j] != 0 (not in order: the last kept rows fill the
 * places of dropped ones); returns the new count */
typedef struct atk_rows {
    void *p;
    size_t row_bytes;
} atk_rows;
int atk_compact(int m, const uint8_t *keep, const atk_rows *rows, int nrows);

/* Fills b->ids and b->xs with the batch samples still to attack (todo[i] != 0); returns how many. */
int atk_gather_active(atk_batch *b);

/* ---- the attacks, on the batch's samples with todo[i] set; they write b->adv and clear
 * b->todo[i] of the samples they fool (or bring to their target). */
at_status atk_fgsm(atk_batch *b, const at_attack_config *cfg);
at_status atk_pgd(atk_batch *b, const at_attack_config *cfg);
at_status atk_apgd(atk_batch *b, const at_attack_config *cfg);
at_status atk_square(atk_batch *b, const at_attack_config *cfg);
at_status atk_auto(atk_batch *b, const at_attack_config *cfg);

/* Success test of a single-target or untargeted attack for batch sample i with prediction p. */
static inline bool atk_fooled(const atk_batch *b, int i, int p) {
    return b->target[i] >= 0 ? p == b->target[i] : p != b->y[i];
}
/* Success of a run: with AT_TARGET_TOP (`top`) any misclassification, whatever class the run
 * aims at; otherwise atk_fooled. */
static inline bool atk_success(const atk_batch *b, bool top, int i, int p) {
    return top ? p != b->y[i] : atk_fooled(b, i, p);
}

double atk_now(void);
/* Restarts every sample's generator from the call's seed (as at the start of the call). */
void atk_reseed(atk_batch *b);

/* Sizes of the workspaces an attack needs: extra D rows, extra floats per row, history length. */
void atk_workspace_needs(const at_attack_config *cfg, int *wrows, int *frows, int *hist_len);
#endif
