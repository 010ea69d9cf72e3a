/* `auto`: the AutoAttack "standard" ensemble without FAB-T (Croce & Hein 2020): APGD-CE
 * (100 steps, 1 restart), then APGD-T (targeted DLR, 100 steps, the 9 highest-scoring wrong
 * classes in turn), then Square (5000 queries), each on the samples that survived the ones
 * before, each with the random numbers it would use alone. A sample is robust only if it is classified correctly on the clean input and every
 * member fails on it: the per-sample worst case. Under L2 the Square member is left out (it is
 * implemented for L-inf only). The result records, per member, the samples still robust after
 * it and the time it took. */
#include "attack.h"

#include <stdio.h>

/* The members' kinds (apgd.c, square.c). */
extern const at_attack_method at_apgd_method, at_square_method;

enum { MEMBERS = 3 };

static int survivors(const atk_batch *b) {
    int count = 0;
    for (int i = 0; i < b->n; i++)
        count += b->todo[i] && at_argmax(b->clean_logits + (size_t)i * b->K, b->K) == b->y[i];
    return count;
}

/* The members' configurations, from the ensemble's resolved one. */
static void members_of(const at_attack_config *cfg, at_attack_config *members) {
    for (int k = 0; k < MEMBERS; k++) members[k] = *cfg;
    members[0].kind = AT_ATTACK_APGD;
    members[0].loss = AT_ATTACK_LOSS_CE;
    members[0].target = AT_TARGET_NONE;
    members[0].restarts = 1;
    members[1].kind = AT_ATTACK_APGD;
    members[1].loss = AT_ATTACK_LOSS_DLR;
    members[1].target = AT_TARGET_TOP;
    members[1].restarts = 1;
    members[2].kind = AT_ATTACK_SQUARE;
    members[2].steps = cfg->square_queries;
    members[2].square_rescale = false; /* AutoAttack "standard" runs Square with the fixed schedule */
}

/* The members run one after the other: one workspace, the larger of the two kinds'. */
static size_t auto_workspace(const at_attack_config *cfg, int cap, int D) {
    at_attack_config members[MEMBERS];
    members_of(cfg, members);
    size_t apgd = at_apgd_method.workspace(&members[0], cap, D);
    size_t square = at_square_method.workspace(&members[2], cap, D);
    return apgd > square ? apgd : square;
}

static at_status auto_attack(atk_batch *b, const at_attack_config *cfg, void *ws) {
    static const char *const names[MEMBERS] = {"apgd-ce", "apgd-t", "square"};
    const at_attack_method *const kinds[MEMBERS] = {&at_apgd_method, &at_apgd_method, &at_square_method};
    at_attack_config members[MEMBERS];
    members_of(cfg, members);
    at_attack_result *res = b->res;
    res->nmembers = cfg->norm == AT_NORM_LINF ? MEMBERS : MEMBERS - 1; /* the same on every batch */
    for (int k = 0; k < res->nmembers; k++) {
        snprintf(res->members[k].name, sizeof res->members[k].name, "%s", names[k]);
        double start = atk_now();
        /* Each member draws the random numbers it would draw alone: the ensemble is exactly the
         * per-sample worst case of its members run separately with the same seed. */
        atk_reseed(b);
        at_status s = kinds[k]->run(b, &members[k], ws);
        if (s != AT_OK) return s;
        res->members[k].seconds += atk_now() - start;
        res->members[k].robust += survivors(b);
    }
    return AT_OK;
}

static void auto_defaults(at_attack_config *cfg) {
    cfg->steps = 100; /* APGD iterations; Square keeps its own budget, square_queries */
    cfg->square_rescale = false;
}

static at_status auto_check(at_attack_config *cfg, int K) {
    if (cfg->square_queries <= 0) cfg->square_queries = 5000;
    cfg->alpha = 0.0f; /* no member takes a step size */
    if (cfg->target != AT_TARGET_NONE)
        return at_fail(AT_ERR_ARG, "auto takes no target: its APGD-T member aims at the top classes itself");
    cfg->loss = AT_ATTACK_LOSS_CE; /* each member has its own */
    if (K < 4)
        return at_fail(AT_ERR_ARG, "the targeted DLR loss of auto's APGD-T needs at least 4 classes, the model has %d",
                       K);
    return AT_OK;
}

/* Iterations are its APGD members' steps; queries its Square member's. */
static void auto_set_budget(at_attack_config *cfg, int iterations, int queries) {
    if (iterations > 0) cfg->steps = iterations;
    if (queries > 0) cfg->square_queries = queries;
}

/* "100+9x100+5000q": APGD-CE's steps, APGD-T's classes x steps, Square's queries (L-inf only). */
static void auto_budget_text(const at_attack_config *cfg, char *buf, size_t cap) {
    int w = snprintf(buf, cap, "%d+%dx%d", cfg->steps, cfg->target_classes, cfg->steps);
    if (cfg->norm == AT_NORM_LINF && w > 0 && (size_t)w < cap)
        snprintf(buf + w, cap - (size_t)w, "+%dq", cfg->square_queries);
}

const at_attack_method at_auto_method = {
    .presets = {{"auto"}, {"auto-l2", .norm = AT_NORM_L2}},
    .gradients = true,
    .defaults = auto_defaults, .check = auto_check, .workspace = auto_workspace, .run = auto_attack,
    .set_budget = auto_set_budget, .budget_text = auto_budget_text,
};
