/* `auto`: the AutoAttack "standard" ensemble without FAB-T (Croce & Hein 2020): APGD-CE
 * (100 steps, 1 restart), then APGD-T (targeted DLR, 100 steps, the 9 highest-scoring wrong
 * classes in turn), then Square (5000 queries), each on the samples that survived the ones
 * before, each with the random numbers it would use alone. A sample is robust only if it is classified correctly on the clean input and every
 * member fails on it: the per-sample worst case. Under L2 the Square member is left out (it is
 * implemented for L-inf only). The result records, per member, the samples still robust after
 * it and the time it took. */
#include "attack.h"

static int survivors(const atk_batch *b) {
    int count = 0;
    for (int i = 0; i < b->n; i++)
        count += b->todo[i] && at_argmax(b->clean_logits + (size_t)i * b->K, b->K) == b->y[i];
    return count;
}

at_status atk_auto(atk_batch *b, const at_attack_config *cfg) {
    at_attack_config members[3];
    for (int k = 0; k < 3; k++) members[k] = *cfg;
    members[0].kind = AT_ATTACK_APGD;
    members[0].loss = AT_ATTACK_LOSS_CE;
    members[0].target = AT_TARGET_NONE;
    members[0].restarts = 1;
    members[1].kind = AT_ATTACK_APGD;
    members[1].loss = AT_ATTACK_LOSS_DLR;
    members[1].target = AT_TARGET_TOP;
    members[1].restarts = 1;
    members[2].kind = AT_ATTACK_AUTO; /* atk_square reads its budget from square_queries */
    const int count = b->res->nmembers;
    for (int k = 0; k < count; k++) {
        double start = atk_now();
        /* Each member draws the random numbers it would draw alone: the ensemble is exactly the
         * per-sample worst case of its members run separately with the same seed. */
        atk_reseed(b);
        at_status s = k < 2 ? atk_apgd(b, &members[k]) : atk_square(b, &members[k]);
        if (s != AT_OK) return s;
        b->res->members[k].seconds += atk_now() - start;
        b->res->members[k].robust += survivors(b);
    }
    return AT_OK;
}
