/* Shared by `advtrain eval --attack`, `advtrain attack` (and `report`): attack and eps lists,
 * progress, budgets, the model and its data. What each attack takes, its defaults and its checks
 * come from the library's table of attacks (at_attack_set_budget, at_attack_check,
 * at_attack_budget_text): nothing here names an attack. */
#include "attack_cli.h"

#include <cjson/cJSON.h>

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static bool parse_norm(const char *cmd, const char *norm, bool *l2) {
    *l2 = false;
    if (!norm) return true;
    if (strcmp(norm, "l2") == 0 || strcmp(norm, "L2") == 0) {
        *l2 = true;
        return true;
    }
    if (strcmp(norm, "linf") == 0 || strcmp(norm, "Linf") == 0 || strcmp(norm, "inf") == 0) return true;
    fprintf(stderr, "advtrain %s: --norm %s: use linf or l2\n", cmd, norm);
    return false;
}

static bool parse_target(const char *cmd, const char *text, int num_classes, at_attack_target *target,
                         int32_t *target_class) {
    *target = AT_TARGET_NONE;
    *target_class = -1;
    if (!text) return true;
    if (strcmp(text, "random") == 0) {
        *target = AT_TARGET_RANDOM;
        return true;
    }
    if (strcmp(text, "least-likely") == 0 || strcmp(text, "ll") == 0) {
        *target = AT_TARGET_LEAST_LIKELY;
        return true;
    }
    char *end;
    long t = strtol(text, &end, 10);
    if (end == text || *end || t < 0 || t >= num_classes) {
        fprintf(stderr, "advtrain %s: --target %s: use random, least-likely or a class in [0, %d)\n", cmd, text,
                num_classes);
        return false;
    }
    *target = AT_TARGET_GIVEN;
    *target_class = (int32_t)t;
    return true;
}

/* The configuration of one listed attack with the settings applied, checked by the library;
 * the message names the attack and the flags that shape it. */
static bool one_config(const char *cmd, const char *name, const atk_cli_settings *s, bool l2,
                       at_attack_target target, int num_classes, at_attack_config *c) {
    if (at_attack_from_name(name, c) != AT_OK) {
        fprintf(stderr, "advtrain %s: --attack: %s\n", cmd, at_error_message());
        return false;
    }
    if (l2) c->norm = AT_NORM_L2; /* pgd becomes pgd-l2, auto auto-l2, ... */
    at_attack_set_budget(c, s->steps, s->queries);
    if (s->restarts > 0) c->restarts = s->restarts;
    if (s->alpha > 0) c->alpha = s->alpha;
    if (s->batch > 0) c->batch = s->batch;
    c->seed = s->seed;
    c->attack_all = s->all;
    c->last_iterate = s->last_iterate;
    if (target != AT_TARGET_NONE) {
        if (c->target != AT_TARGET_NONE) {
            fprintf(stderr, "advtrain %s: --target %s: %s aims at targets of its own (the top classes in turn)\n",
                    cmd, s->target, name);
            return false;
        }
        c->target = target;
    }
    if (at_attack_check(c, num_classes, NULL) != AT_OK) {
        fprintf(stderr, "advtrain %s: --attack %s%s%s%s: %s\n", cmd, name, l2 ? " --norm l2" : "",
                s->target ? " --target " : "", s->target ? s->target : "", at_error_message());
        return false;
    }
    return true;
}

bool atk_cli_configs(const char *cmd, const atk_cli_settings *s, int num_classes,
                     at_attack_config *cfgs, int cap, int *count, int32_t *target_class) {
    *count = 0;
    bool l2;
    at_attack_target target;
    if (!parse_norm(cmd, s->norm, &l2) || !parse_target(cmd, s->target, num_classes, &target, target_class))
        return false;
    const char *p = s->attacks;
    while (p && *p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char name[48];
        if (len == 0 || len >= sizeof name) {
            fprintf(stderr, "advtrain %s: --attack %s: empty or overlong item\n", cmd, s->attacks);
            return false;
        }
        memcpy(name, p, len);
        name[len] = '\0';
        if (*count >= cap) {
            fprintf(stderr, "advtrain %s: --attack: at most %d attacks\n", cmd, cap);
            return false;
        }
        if (!one_config(cmd, name, s, l2, target, num_classes, &cfgs[*count])) return false;
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
    /* The configuration as it ran; no class count clips the target classes here. */
    at_attack_config resolved;
    if (at_attack_check(cfg, 1 << 30, &resolved) == AT_OK)
        at_attack_budget_text(&resolved, buf, cap);
    else
        snprintf(buf, cap, "%d", r->steps);
}

void atk_cli_help_texts(atk_cli_help *h, const char *before) {
    char names[512], budgets[256] = "";
    at_attack_names(names, sizeof names);
    snprintf(h->attack, sizeof h->attack, "%s%s", before, names);
    size_t used = 0;
    for (int k = 0; k < AT_ATTACK_KIND_COUNT && used < sizeof budgets; k++) {
        at_attack_config c = at_attack_defaults((at_attack_kind)k), r;
        char budget[48];
        if (at_attack_check(&c, 1 << 30, &r) != AT_OK) continue;
        at_attack_budget_text(&r, budget, sizeof budget);
        int w = snprintf(budgets + used, sizeof budgets - used, "%s%s %s", used ? ", " : "", at_attack_name(&c),
                         budget);
        if (w > 0) used += (size_t)w;
    }
    snprintf(h->steps, sizeof h->steps, "iterations of the iterative attacks (default budgets: %s)", budgets);
}

bool atk_cli_open(const char *cmd, atk_cli_model *m, const char *path, const char *data_source,
                  const char *model_spec, const char *split, bool int8_ok) {
    memset(m, 0, sizeof *m);
    at_status s = at_st_read(path, &m->file);
    if (s != AT_OK) {
        cli_error(cmd, "cannot read the model", s);
        return false;
    }
    if (!data_source) data_source = at_st_meta_get(m->file, "advtrain.data");
    m->data_source = data_source ? data_source : "fashion-mnist";
    if (!cli_load_data(cmd, &m->data, m->data_source)) return false;
    m->ds = strcmp(split, "train") == 0 ? &m->data.train : &m->data.test;
    const char *format = at_st_meta_get(m->file, "advtrain.format");
    if (format && strcmp(format, "int8") == 0) {
        if (!int8_ok) {
            fprintf(stderr, "advtrain %s: %s is an int8 model (advtrain quantize wrote it): %s takes float models; "
                            "int8 models go to advtrain eval\n", cmd, path, cmd);
            return false;
        }
        if ((s = at_qnet_load(&m->qnet, path, NULL)) != AT_OK) cli_error(cmd, "cannot load the int8 model", s);
        return s == AT_OK;
    }
    if (model_spec) {
        s = at_net_from_spec(&m->net, model_spec, m->ds->c, m->ds->h, m->ds->w);
        if (s == AT_OK) s = at_net_load_weights(m->net, m->file, path);
    } else {
        s = at_model_load(&m->net, path, NULL);
    }
    if (s != AT_OK) {
        cli_error(cmd, "cannot load the model", s);
        return false;
    }
    return true;
}

void atk_cli_close(atk_cli_model *m) {
    at_net_free(m->net);
    at_qnet_free(m->qnet);
    at_st_free(m->file);
    at_data_free(&m->data);
    memset(m, 0, sizeof *m);
}

cJSON *atk_cli_json_head(const char *path, const at_net *net, const char *data_source, const char *split, int first,
                         int samples) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "model", path);
    cJSON_AddStringToObject(o, "arch", at_net_spec(net));
    cJSON_AddStringToObject(o, "data", data_source);
    cJSON_AddStringToObject(o, "split", split);
    cJSON_AddNumberToObject(o, "first_sample", first);
    cJSON_AddNumberToObject(o, "samples", samples);
    return o;
}
