/* Strength on a small standard-trained model (tests/attack_model.h): APGD-CE, APGD-T and Square
 * are at least as strong as PGD-20, and the `auto` ensemble is the per-sample worst case of its
 * members: no weaker than any of them (run alone with the same seed) nor than PGD-20, and only
 * samples correct on clean inputs count as robust. */
#include "attack_model.h"

static void check_strength(at_net *net, const at_dataset *ds, float eps) {
    const int n = ds->n;
    int32_t *p_pgd = malloc(sizeof(int32_t) * n), *p_ce = malloc(sizeof(int32_t) * n), *p_t = malloc(sizeof(int32_t) * n),
            *p_sq = malloc(sizeof(int32_t) * n), *p_auto = malloc(sizeof(int32_t) * n);
    at_attack_result pgd = am_attack(net, ds, "pgd", eps, 20, NULL, p_pgd);
    at_attack_result ce = am_attack(net, ds, "apgd-ce", eps, 0, NULL, p_ce);
    at_attack_result t = am_attack(net, ds, "apgd-t", eps, 0, NULL, p_t);
    at_attack_result sq = am_attack(net, ds, "square", eps, 0, NULL, p_sq);
    at_attack_result au = am_attack(net, ds, "auto", eps, 0, NULL, p_auto);
    printf("  eps %.3f (clean %d of %d): pgd-20 %d (%.1fs), apgd-ce %d (%.1fs), apgd-t %d (%.1fs), square %d (%.1fs), "
           "auto %d (%.1fs: %d %d %d)\n",
           (double)eps, pgd.clean_correct, n, pgd.robust, pgd.seconds, ce.robust, ce.seconds, t.robust, t.seconds,
           sq.robust, sq.seconds, au.robust, au.seconds, au.members[0].robust, au.members[1].robust, au.members[2].robust);
    CHECK_MSG(ce.robust <= pgd.robust, "APGD-CE %d > PGD-20 %d", ce.robust, pgd.robust);
    CHECK_MSG(t.robust <= pgd.robust, "APGD-T %d > PGD-20 %d", t.robust, pgd.robust);
    /* Square is a random search: allow two points of noise at 5000 queries. */
    CHECK_MSG(sq.robust <= pgd.robust + n / 50, "Square %d > PGD-20 %d + 2%%", sq.robust, pgd.robust);
    CHECK_MSG(au.robust <= pgd.robust && au.robust <= ce.robust && au.robust <= t.robust && au.robust <= sq.robust,
              "auto %d is weaker than a member or PGD", au.robust);
    CHECK(au.nmembers == 3);
    CHECK(au.members[0].robust == ce.robust);                  /* the same seeds: the same APGD-CE */
    CHECK(au.members[0].robust >= au.members[1].robust && au.members[1].robust >= au.members[2].robust);
    CHECK(au.members[2].robust == au.robust);
    /* Per sample: robust under auto only if robust under every member; misclassified clean
     * samples never robust. */
    int not_worst = 0;
    for (int i = 0; i < n; i++) {
        int y = ds->labels[i];
        bool a = p_auto[i] == y, all = p_ce[i] == y && p_t[i] == y && p_sq[i] == y;
        not_worst += a && !all;
    }
    CHECK_MSG(not_worst == 0, "%d samples robust under auto but fooled by a member", not_worst);
    CHECK(au.robust <= au.clean_correct && au.clean_correct == pgd.clean_correct);
    CHECK(au.zero_grad == 0 && au.nonfinite == 0 && au.outside_ball == 0 && au.outside_box == 0);
    free(p_pgd);
    free(p_ce);
    free(p_t);
    free(p_sq);
    free(p_auto);
}

int main(void) {
    at_set_threads(1);
    at_data data;
    at_net *net = am_trained_model(&data, 150);
    if (net) {
        check_strength(net, &data.test, 0.06f);
#ifndef __SANITIZE_ADDRESS__ /* one eps is enough under the (slow) sanitizers */
        check_strength(net, &data.test, 0.03f);
#endif
    }
    at_net_free(net);
    at_data_free(&data);
    return tu_finish("test_attack_strength");
}
