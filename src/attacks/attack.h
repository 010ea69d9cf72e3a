/* The attacks' shared pieces (src/attacks only): the batch every attack works on, the helpers
 * (helpers.c, which calls into no attack) and the table entry each attack file defines (driver.c
 * lists them).
 *
 * One call of at_attack_run / at_attack_dataset cuts the samples into batches of at most `cap`
 * and runs the attack on each batch through an atk_batch: the clean inputs, labels and logits of
 * the batch, the output rows, a per-sample "still robust" flag and one random generator per
 * sample. Attacks keep the state of the samples they are still working on in compact rows
 * (row j belongs to batch sample ids[j]) so the network always sees one contiguous block, and
 * drop rows (atk_compact) when samples are done. Every buffer, the attack's own workspace
 * included, is carved out of one arena that is allocated before the first batch. */
#ifndef ADVTRAIN_ATTACK_H
#define ADVTRAIN_ATTACK_H
#include "internal.h"

#include <stdint.h>

typedef struct atk_batch {
    at_net *net;
    const at_attack_config *cfg; /* the call's, defaults resolved */
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

    /* Rows every attack may use (cap rows each unless noted). */
    int32_t *ids;                /* compact row -> batch sample */
    int32_t *row_target;         /* target class of each compact row (targeted losses) */
    int32_t *pred;               /* prediction of each compact row */
    uint8_t *keep;
    float *xs;                   /* clean inputs of the compact rows */
    float *xa;                   /* current iterate */
    float *grad;                 /* input gradient (an attack without gradients may reuse it) */
    float *dlogits;              /* cap x K */
    float *loss;                 /* cap */

    at_attack_result *res;
    bool counted_grad;           /* zero/non-finite gradient statistics taken for this batch */
} atk_batch;

/* ---- an arena: atk_carve hands out pieces at 64-byte offsets; with base NULL it only measures */
typedef struct atk_arena {
    char *base;
    size_t used;
} atk_arena;
void *atk_carve(atk_arena *a, size_t bytes);

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
/* A random start in the eps-ball around x (D values) from r, projected onto [0,1]: uniform in
 * the L-inf ball, or a uniform radius along a Gaussian direction in the L2 ball. */
void atk_random_start(at_attack_norm norm, float eps, at_rng *r, const float *x, float *v, int D);
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
/* atk_gather_active, then each row's target: with `top` the (pass+1)-th highest-scoring class of
 * the clean input (AT_TARGET_TOP tries one per pass), else the sample's own target. */
int atk_gather_targets(atk_batch *b, bool top, int pass);
/* The runs of an iterative attack: one per restart and, with AT_TARGET_TOP, per target rank
 * (pass), each on the samples still to do (their targets gathered, m of them); none once every
 * sample is done. `last` tells the final run, whose examples the caller's final pass judges. */
typedef at_status (*atk_run_fn)(atk_batch *b, const at_attack_config *cfg, void *state, int m, bool last);
at_status atk_each_run(atk_batch *b, const at_attack_config *cfg, atk_run_fn run, void *state);

/* Sharing among ranks (shard.c; each rank's samples: at_comm_share): whether cfg->comm has
 * several ranks, and the rank results put together (every rank gets the whole result, x_adv and
 * adv_pred with every row). */
bool atk_shared(const at_attack_config *cfg);
at_status atk_merge(const at_attack_config *cfg, int n, int lo, int hi, int D, float *x_adv, int32_t *adv_pred,
                    at_attack_result *res);

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
/* Starts every sample's generator from the call's seed and the sample's index. */
void atk_reseed(atk_batch *b);

/* ---- the table of attacks: one entry per kind, defined in the attack's own file and listed in
 * driver.c */

/* A named configuration: the kind's defaults with this norm, loss and target mode (zero: L-inf,
 * cross-entropy, untargeted). */
typedef struct atk_preset {
    const char *name;
    at_attack_norm norm;
    at_attack_loss loss;
    at_attack_target target;
} atk_preset;

enum { ATK_MAX_PRESETS = 6 };

typedef struct at_attack_method {
    /* The names at_attack_from_name knows for this kind, its default first (unused ones have
     * no name). */
    atk_preset presets[ATK_MAX_PRESETS];
    /* at_attack_name: the first preset of the configuration's norm for which names() holds
     * (NULL: the first of that norm); `unnamed` if there is none (NULL: "attack"). */
    bool (*names)(const atk_preset *p, const at_attack_config *cfg);
    const char *unnamed;
    bool gradients; /* follows input gradients (at_attack_uses_gradients) */
    /* The kind's own defaults, on top of the fields every kind shares (at_attack_defaults). */
    void (*defaults)(at_attack_config *cfg);
    /* Fills in what the kind alone decides (its step size) and refuses what it cannot do; the
     * shared fields, steps included, are resolved and checked before. K: classes. */
    at_status (*check)(at_attack_config *cfg, int K);
    /* at_attack_set_budget (NULL: iterations are the steps) and at_attack_budget_text (NULL:
     * the steps, times the target classes under AT_TARGET_TOP). */
    void (*set_budget)(at_attack_config *cfg, int iterations, int queries);
    void (*budget_text)(const at_attack_config *cfg, char *buf, size_t cap);
    /* Bytes of the attack's own workspace for batches of cap samples of D floats (NULL: none). */
    size_t (*workspace)(const at_attack_config *cfg, int cap, int D);
    /* Attacks the batch's samples with todo[i] set, with the resolved cfg: writes b->adv and
     * clears b->todo[i] of the samples it fools (or brings to their target). ws: the workspace
     * (a piece of the call's arena), as the previous batch left it. */
    at_status (*run)(atk_batch *b, const at_attack_config *cfg, void *ws);
} at_attack_method;
#endif
