/* Attacks shared among the ranks of a communicator (at_attack_config.comm, docs/distributed.md):
 * each rank's share of the samples, and the results put together on every rank. Per-sample
 * randomness comes from the sample's index in the whole call (helpers.c, atk_reseed), so a
 * sample is attacked the same way whichever rank takes it. */
#include "attack.h"

#include <stdlib.h>
#include <string.h>

bool atk_shared(const at_attack_config *cfg) { return cfg->comm && cfg->comm->size > 1; }

/* The result's fields in one row of doubles, and back: counters are summed over the ranks,
 * the largest perturbation and the times are the largest. */
enum { SUMS = 10, MAXES = 2, ROW = SUMS + MAXES + 2 * AT_ATTACK_MAX_MEMBERS };

static void pack(const at_attack_result *r, double *row) {
    const double sums[SUMS] = {r->clean_correct, r->robust,    r->targeted,     r->target_hits, (double)r->forwards,
                               (double)r->backwards, r->outside_ball, (double)r->outside_box, r->zero_grad,
                               r->nonfinite};
    memcpy(row, sums, sizeof sums);
    row[SUMS] = r->max_perturbation;
    row[SUMS + 1] = r->seconds;
    for (int k = 0; k < r->nmembers; k++) {
        row[SUMS + MAXES + 2 * k] = r->members[k].robust;
        row[SUMS + MAXES + 2 * k + 1] = r->members[k].seconds;
    }
}

static void unpack(const double *rows, int ranks, at_attack_result *r) {
    double v[ROW] = {0};
    for (int q = 0; q < ranks; q++)
        for (int f = 0; f < ROW; f++) {
            const double x = rows[(size_t)q * ROW + f];
            const bool largest = (f >= SUMS && f < SUMS + MAXES) || (f >= SUMS + MAXES && (f - SUMS - MAXES) % 2);
            v[f] = largest ? (q == 0 || x > v[f] ? x : v[f]) : v[f] + x;
        }
    r->clean_correct = (int)v[0], r->robust = (int)v[1], r->targeted = (int)v[2], r->target_hits = (int)v[3];
    r->forwards = (int64_t)v[4], r->backwards = (int64_t)v[5], r->outside_ball = (int)v[6];
    r->outside_box = (int64_t)v[7], r->zero_grad = (int)v[8], r->nonfinite = (int)v[9];
    r->max_perturbation = (float)v[SUMS];
    r->seconds = v[SUMS + 1];
    for (int k = 0; k < r->nmembers; k++) {
        r->members[k].robust = (int)v[SUMS + MAXES + 2 * k];
        r->members[k].seconds = v[SUMS + MAXES + 2 * k + 1];
    }
}

/* rows [lo, hi) of a width-w array are this rank's; the others come from theirs (zero here,
 * then summed). Through doubles: float and int32 values are exact in them. */
static at_status gather_rows(const at_comm *c, int n, int lo, int hi, size_t w, float *f, int32_t *i) {
    double *buf = calloc((size_t)n * w, sizeof(double));
    if (!buf) return at_fail(AT_ERR_NOMEM, "attack: out of memory gathering %d rows across ranks", n);
    for (size_t k = (size_t)lo * w; k < (size_t)hi * w; k++) buf[k] = f ? (double)f[k] : (double)i[k];
    at_status s = c->allreduce_sum(c->user, buf, (size_t)n * w);
    for (size_t k = 0; s == AT_OK && k < (size_t)n * w; k++) {
        if (f) f[k] = (float)buf[k];
        else i[k] = (int32_t)buf[k];
    }
    free(buf);
    return s;
}

at_status atk_merge(const at_attack_config *cfg, int n, int lo, int hi, int D, float *x_adv, int32_t *adv_pred,
                    at_attack_result *res) {
    const at_comm *c = cfg->comm;
    double *rows = calloc((size_t)c->size * ROW, sizeof(double));
    if (!rows) return at_fail(AT_ERR_NOMEM, "attack: out of memory merging results across ranks");
    pack(res, rows + (size_t)c->rank * ROW);
    at_status s = c->allreduce_sum(c->user, rows, (size_t)c->size * ROW);
    if (s == AT_OK) unpack(rows, c->size, res);
    free(rows);
    if (s == AT_OK && x_adv) s = gather_rows(c, n, lo, hi, (size_t)D, x_adv, NULL);
    if (s == AT_OK && adv_pred) s = gather_rows(c, n, lo, hi, 1, NULL, adv_pred);
    return s;
}
