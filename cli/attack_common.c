/* Shared by `advtrain eval --attack` and `advtrain attack`: attack and eps lists, progress. */
#include "attack_cli.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

bool atk_cli_configs(const char *cmd, const atk_cli_settings *s, int num_classes,
                     at_attack_config *cfgs, int cap, int *count, int32_t *target_class) {
    *count = 0;
    *target_class = -1;
    bool l2 = false;
    if (s->norm) {
        if (strcmp(s->norm, "l2") == 0 || strcmp(s->norm, "L2") == 0)
            l2 = true;
        else if (strcmp(s->norm, "linf") != 0 && strcmp(s->norm, "Linf") != 0 && strcmp(s->norm, "inf") != 0) {
            fprintf(stderr, "advtrain %s: --norm %s: use linf or l2\n", cmd, s->norm);
            return false;
        }
    }
    at_attack_target target = AT_TARGET_NONE;
    if (s->target) {
        if (strcmp(s->target, "random") == 0)
            target = AT_TARGET_RANDOM;
        else if (strcmp(s->target, "least-likely") == 0 || strcmp(s->target, "ll") == 0)
            target = AT_TARGET_LEAST_LIKELY;
        else {
            char *end;
            long t = strtol(s->target, &end, 10);
            if (end == s->target || *end || t < 0 || t >= num_classes) {
                fprintf(stderr, "advtrain %s: --target %s: use random, least-likely or a class in [0, %d)\n",
                        cmd, s->target, num_classes);
                return false;
            }
            target = AT_TARGET_GIVEN;
            *target_class = (int32_t)t;
        }
    }
    const char *p = s->attacks;
    while (p && *p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char name[48];
        if (len == 0 || len + 4 >= sizeof name) {
            fprintf(stderr, "advtrain %s: --attack %s: empty or overlong item\n", cmd, s->attacks);
            return false;
        }
        memcpy(name, p, len);
        name[len] = '\0';
        /* --norm l2 turns pgd into pgd-l2, auto into auto-l2, ... */
        if (l2 && (len < 3 || strcmp(name + len - 3, "-l2") != 0)) {
            if (strcmp(name, "square") == 0) {
                fprintf(stderr, "advtrain %s: the Square attack is L-inf only; drop it or --norm l2\n", cmd);
                return false;
            }
            strcat(name, "-l2");
        }
        if (*count >= cap) {
            fprintf(stderr, "advtrain %s: --attack: at most %d attacks\n", cmd, cap);
            return false;
        }
        at_attack_config *c = &cfgs[*count];
        if (at_attack_from_name(name, c) != AT_OK) {
            fprintf(stderr, "advtrain %s: --attack: %s\n", cmd, at_error_message());
            return false;
        }
        /* --steps: iterations of the gradient attacks (auto: its APGD members); Square's
         * budget is --queries */
        if (s->steps > 0 && c->kind != AT_ATTACK_FGSM && c->kind != AT_ATTACK_SQUARE) c->steps = s->steps;
        if (s->queries > 0) {
            if (c->kind == AT_ATTACK_SQUARE) c->steps = s->queries;
            c->square_queries = s->queries;
        }
        if (s->restarts > 0) c->restarts = s->restarts;
        if (s->alpha > 0) c->alpha = s->alpha;
        if (s->batch > 0) c->batch = s->batch;
        c->seed = s->seed;
        c->attack_all = s->all;
        c->last_iterate = s->last_iterate;
        if (target != AT_TARGET_NONE) {
            if (c->kind == AT_ATTACK_AUTO || c->kind == AT_ATTACK_SQUARE || c->target == AT_TARGET_TOP) {
                fprintf(stderr, "advtrain %s: --target applies to fgsm, pgd, cw and apgd-ce/apgd-dlr, not %s\n",
                        cmd, name);
                return false;
            }
            c->target = target;
        }
        (*count)++;
        p = comma ? comma + 1 : NULL;
    }
    if (*count == 0) {
        fprintf(stderr, "advtrain %s: --attack needs at least one attack\n", cmd);
        return false;
    }
    return true;
}

void atk_cli_eps_text(float eps, char *buf, size_t cap) {
    snprintf(buf, cap, "%.4g (%.3g/255)", (double)eps, (double)eps * 255.0);
}

void atk_cli_progress(void *user, int done, int total) {
    static double start;
    if (done <= 0 || start == 0.0) start = cli_now();
    cli_progress((const char *)user, done, total, cli_now() - start, "");
    if (done >= total) {
        cli_progress_done();
        start = 0.0;
    }
}

void atk_cli_budget_text(const at_attack_config *cfg, const at_attack_result *r, char *buf, size_t cap) {
    switch (cfg->kind) {
    case AT_ATTACK_SQUARE: snprintf(buf, cap, "%dq", r->steps); break;
    case AT_ATTACK_AUTO:
        if (cfg->norm == AT_NORM_LINF)
            snprintf(buf, cap, "%d+%dx%d+%dq", r->steps, cfg->target_classes > 0 ? cfg->target_classes : 9,
                     r->steps, cfg->square_queries > 0 ? cfg->square_queries : 5000);
        else
            snprintf(buf, cap, "%d+%dx%d", r->steps, cfg->target_classes > 0 ? cfg->target_classes : 9, r->steps);
        break;
    case AT_ATTACK_APGD:
        if (cfg->target == AT_TARGET_TOP)
            snprintf(buf, cap, "%dx%d", cfg->target_classes > 0 ? cfg->target_classes : 9, r->steps);
        else
            snprintf(buf, cap, "%d", r->steps);
        break;
    default: snprintf(buf, cap, "%d", r->steps); break;
    }
}
