/* advtrain eval on an int8 model file (docs/quantization.md): clean accuracy by integer
 * inference and, with --attack, the attacks on the deployed int8 network: each attack's float
 * adversarial examples given to it (transfer) and, for L-inf PGD, PGD with the float model's
 * gradient judged by the int8 model at every iterate (BPDA), per-sample worst case of both. */
#include "attack_cli.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

/* Whether the int8 model gets each of the n samples x right (labels y): ok[i]. */
static at_status int8_hits(at_qnet *q, const float *x, const int32_t *y, int n, int batch, bool *ok) {
    const at_net *net = at_qnet_net(q);
    const int D = at_net_in_size(net), K = at_net_out_size(net);
    for (int first = 0; first < n; first += batch) {
        const int m = n - first < batch ? n - first : batch;
        const float *z;
        at_status s = at_qnet_predict(q, x + (size_t)first * D, m, &z);
        if (s != AT_OK) return s;
        for (int i = 0; i < m; i++) ok[first + i] = at_argmax(z + (size_t)i * K, K) == y[first + i];
    }
    return AT_OK;
}

static int count_true(const bool *v, int n) {
    int c = 0;
    for (int i = 0; i < n; i++) c += v[i];
    return c;
}

/* The float model the int8 file came from: --float-model, else its advtrain.float_model. */
static at_net *load_float_model(const atk_cli_model *m, const int8_eval_args *a) {
    const char *path = a->float_model ? a->float_model : at_st_meta_get(m->file, "advtrain.float_model");
    if (!path) {
        fprintf(stderr, "advtrain eval: %s names no float model: give the one it was quantized from with --float-model\n",
                a->path);
        return NULL;
    }
    at_net *net = NULL;
    at_status s = at_model_load(&net, path, NULL);
    if (s != AT_OK) {
        cli_error("eval", a->float_model ? "--float-model" : "the float model named by the int8 file (--float-model to give another)", s);
        return NULL;
    }
    if (strcmp(at_net_spec(net), at_net_spec(at_qnet_net(m->qnet))) != 0) {
        fprintf(stderr, "advtrain eval: the float model %s is a %s, the int8 model a %s\n", path, at_net_spec(net),
                at_net_spec(at_qnet_net(m->qnet)));
        at_net_free(net);
        return NULL;
    }
    return net;
}

typedef struct transfer_row {
    at_attack_config cfg;
    at_attack_result res; /* on the float model */
    int int8_robust;      /* transfer */
    int bpda_robust;      /* PGD (L-inf): the float gradient's steps judged by int8 at every iterate; -1: not run */
    int worst_robust;     /* int8-robust under both */
} transfer_row;

/* PGD on the int8 model with the float model's gradient in place of its own (the int8 network
 * has none: BPDA, Athalye et al. 2018, with the float shadow as the backward pass): random start,
 * cfg->steps signed steps of cfg->alpha (default 2.5 eps / steps) in the L-inf ball, and a sample
 * is fooled when the int8 model is wrong at any iterate. fooled[i] is set for such samples of
 * batch [first, first + m). */
static at_status bpda_batch(at_net *fnet, at_qnet *q, const at_attack_config *cfg, const float *x, const int32_t *y,
                            int first, int m, int batch, float *xa, float *dz, float *dx, bool *ok, bool *fooled) {
    const int D = at_net_in_size(fnet), K = at_net_out_size(fnet), steps = cfg->steps > 0 ? cfg->steps : 20;
    const float eps = cfg->eps, alpha = cfg->alpha > 0 ? cfg->alpha : 2.5f * eps / (float)steps;
    const float *xs = x + (size_t)first * D;
    for (int i = 0; i < m; i++) {
        at_rng r;
        at_rng_for_sample(&r, cfg->seed, cfg->index_base + first + i);
        for (int j = 0; j < D; j++) {
            const float v = xs[(size_t)i * D + j] + eps * (2.0f * at_rng_uniform(&r) - 1.0f);
            xa[(size_t)i * D + j] = v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
        }
    }
    at_status s = AT_OK;
    for (int k = 0; s == AT_OK && k <= steps; k++) {
        if ((s = int8_hits(q, xa, y + first, m, batch, ok)) != AT_OK) break;
        for (int i = 0; i < m; i++) fooled[first + i] |= !ok[i];
        if (k == steps) break;
        const float *z;
        float loss;
        if ((s = at_net_forward(fnet, xa, m, &z)) != AT_OK) break;
        s = at_cross_entropy(z, y + first, m, K, 0.0f, &loss, dz, NULL);
        if (s == AT_ERR_NAN) s = AT_OK; /* a non-finite row just takes no useful step */
        if (s == AT_OK) s = at_net_backward(fnet, dz, AT_GRAD_INPUT, dx);
        for (size_t j = 0; s == AT_OK && j < (size_t)m * D; j++) {
            const float g = dx[j], x0 = xs[j];
            float v = xa[j] + alpha * (float)((g > 0.0f) - (g < 0.0f));
            v = v < x0 - eps ? x0 - eps : (v > x0 + eps ? x0 + eps : v);
            xa[j] = v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
        }
    }
    return s;
}

static at_status run_bpda(at_net *fnet, at_qnet *q, const at_attack_config *cfg, const float *x, const int32_t *y, int n,
                          int batch, bool *fooled) {
    const int D = at_net_in_size(fnet), K = at_net_out_size(fnet);
    float *xa = malloc(sizeof(float) * (size_t)batch * D), *dx = malloc(sizeof(float) * (size_t)batch * D);
    float *dz = malloc(sizeof(float) * (size_t)batch * K);
    bool *ok = malloc(sizeof(bool) * (size_t)batch);
    at_status s = xa && dx && dz && ok ? AT_OK : at_fail(AT_ERR_NOMEM, "out of memory for the int8 attack");
    memset(fooled, 0, sizeof(bool) * (size_t)n);
    for (int first = 0; s == AT_OK && first < n; first += batch)
        s = bpda_batch(fnet, q, cfg, x, y, first, n - first < batch ? n - first : batch, batch, xa, dz, dx, ok, fooled);
    free(xa);
    free(dx);
    free(dz);
    free(ok);
    return s;
}

/* Each attack and eps on the float model, its examples then judged by the int8 model. */
static at_status run_transfers(at_net *fnet, at_qnet *q, const at_dataset *ds, const float *x, const int32_t *y,
                               const bool *clean_ok, int batch, transfer_row *rows, int nrows) {
    const int n = ds->n, D = at_dataset_sample_size(ds);
    float *adv = malloc(sizeof(float) * (size_t)n * D);
    bool *ok = malloc(sizeof(bool) * (size_t)n), *fooled = malloc(sizeof(bool) * (size_t)n);
    at_status s = adv && ok && fooled ? AT_OK : at_fail(AT_ERR_NOMEM, "out of memory for %d adversarial examples", n);
    for (int r = 0; s == AT_OK && r < nrows; r++) {
        transfer_row *t = &rows[r];
        s = at_attack_run(fnet, &t->cfg, x, y, n, adv, NULL, &t->res);
        if (s == AT_OK) s = int8_hits(q, adv, y, n, batch, ok);
        const bool bpda = t->cfg.kind == AT_ATTACK_PGD && t->cfg.norm == AT_NORM_LINF;
        memset(fooled, 0, sizeof(bool) * (size_t)n);
        if (s == AT_OK && bpda) s = run_bpda(fnet, q, &t->cfg, x, y, n, batch, fooled);
        t->int8_robust = t->worst_robust = 0;
        t->bpda_robust = bpda ? 0 : -1;
        for (int i = 0; s == AT_OK && i < n; i++) {
            t->int8_robust += clean_ok[i] && ok[i];
            if (bpda) t->bpda_robust += clean_ok[i] && !fooled[i];
            t->worst_robust += clean_ok[i] && ok[i] && !fooled[i];
        }
    }
    free(adv);
    free(ok);
    free(fooled);
    return s;
}

static void report(const atk_cli_model *m, const int8_eval_args *a, int n, int clean_q, int clean_f,
                   const transfer_row *rows, int nrows, double seconds) {
    const at_net *net = at_qnet_net(m->qnet);
    if (a->json) {
        cJSON *j = atk_cli_json_head(a->path, net, m->data_source, a->split, a->first, n);
        cJSON_AddStringToObject(j, "format", "int8");
        cJSON_AddNumberToObject(j, "clean_accuracy", n ? (double)clean_q / n : 0.0);
        if (clean_f >= 0) cJSON_AddNumberToObject(j, "float_clean_accuracy", n ? (double)clean_f / n : 0.0);
        cJSON *arr = nrows ? cJSON_AddArrayToObject(j, "transfer_attacks") : NULL;
        for (int r = 0; r < nrows; r++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "attack", at_attack_name(&rows[r].cfg));
            cJSON_AddNumberToObject(o, "eps", rows[r].cfg.eps);
            cJSON_AddNumberToObject(o, "float_robust_accuracy", (double)rows[r].res.robust / n);
            cJSON_AddNumberToObject(o, "int8_transfer_robust_accuracy", (double)rows[r].int8_robust / n);
            if (rows[r].bpda_robust >= 0)
                cJSON_AddNumberToObject(o, "int8_bpda_robust_accuracy", (double)rows[r].bpda_robust / n);
            cJSON_AddNumberToObject(o, "int8_robust_accuracy", (double)rows[r].worst_robust / n);
            cJSON_AddItemToArray(arr, o);
        }
        cJSON_AddNumberToObject(j, "seconds", seconds);
        cli_print_json(j);
        return;
    }
    printf("%s (int8) on %s %s (%d sample%s): accuracy %.2f%%\n", a->path, m->data.name, a->split, n, cli_s(n),
           n ? 100.0 * clean_q / n : 0.0);
    if (!nrows) return;
    printf("float model: clean accuracy %.2f%%. int8 columns: transfer = the float model's adversarial examples\n"
           "(white-box on it; PGD: its last iterates) given to the int8 model; bpda = PGD on the int8 model with the\n"
           "float model's gradient, every iterate judged by the int8 model; worst = per sample, either fools it\n\n",
           100.0 * clean_f / n);
    printf("%-10s %-8s %-7s %13s %15s %11s %11s\n", "attack", "eps", "x255", "float robust", "int8 transfer",
           "int8 bpda", "int8 worst");
    for (int r = 0; r < nrows; r++) {
        const transfer_row *t = &rows[r];
        char bpda[16] = "-";
        if (t->bpda_robust >= 0) snprintf(bpda, sizeof bpda, "%.2f%%", 100.0 * t->bpda_robust / n);
        printf("%-10s %-8.4g %-7.3g %12.2f%% %14.2f%% %11s %10.2f%%\n", at_attack_name(&t->cfg), t->cfg.eps,
               t->cfg.eps * 255.0, 100.0 * t->res.robust / n, 100.0 * t->int8_robust / n, bpda, 100.0 * t->worst_robust / n);
    }
}

/* One row per attack and eps of --attack and --eps. */
static transfer_row *plan_rows(const atk_cli_settings *set, int num_classes, int first, int *nrows) {
    float eps[ATK_CLI_MAX];
    int neps, ncfg;
    at_attack_config cfgs[ATK_CLI_MAX];
    int32_t target_class;
    if (!cli_parse_eps("eval", set->eps, eps, ATK_CLI_MAX, &neps) ||
        !atk_cli_configs("eval", set, num_classes, cfgs, ATK_CLI_MAX, &ncfg, &target_class))
        return NULL;
    if (target_class >= 0) {
        fprintf(stderr, "advtrain eval: --target with an int8 model: not built yet (untargeted attacks only)\n");
        return NULL;
    }
    transfer_row *rows = calloc((size_t)ncfg * neps, sizeof *rows);
    for (int c = 0; rows && c < ncfg; c++)
        for (int e = 0; e < neps; e++) {
            rows[c * neps + e].cfg = cfgs[c];
            rows[c * neps + e].cfg.eps = eps[e];
            rows[c * neps + e].cfg.index_base = first;
            /* An example that just crosses the float model's boundary (PGD's first fooling
             * iterate) rarely fools another model: transfer the last, most adversarial iterate. */
            if (cfgs[c].kind == AT_ATTACK_PGD) rows[c * neps + e].cfg.last_iterate = true;
        }
    *nrows = ncfg * neps;
    return rows;
}

int atk_cli_eval_int8(const atk_cli_model *m, const int8_eval_args *a) {
    const at_dataset *ds = m->ds;
    const int n = ds->n, D = at_dataset_sample_size(ds);
    const double start = cli_now();
    float *x = malloc(sizeof(float) * (size_t)n * D);
    int32_t *y = malloc(sizeof(int32_t) * (size_t)n), *idx = malloc(sizeof(int32_t) * (size_t)n);
    bool *clean_ok = malloc(sizeof(bool) * (size_t)n);
    at_status s = x && y && idx && clean_ok ? AT_OK : at_fail(AT_ERR_NOMEM, "out of memory for %d samples", n);
    for (int i = 0; s == AT_OK && i < n; i++) idx[i] = i;
    if (s == AT_OK) at_dataset_batch(ds, idx, n, x, y, NULL);
    if (s == AT_OK) s = int8_hits(m->qnet, x, y, n, a->batch, clean_ok);
    int rc = s == AT_OK ? 0 : EXIT_RUN_FAILED, nrows = 0, clean_f = -1;
    if (s != AT_OK) cli_error("eval", "int8 inference failed", s);
    transfer_row *rows = NULL;
    at_net *fnet = NULL;
    if (rc == 0 && a->set->attacks) {
        rows = plan_rows(a->set, at_net_out_size(at_qnet_net(m->qnet)), a->first, &nrows);
        fnet = rows ? load_float_model(m, a) : NULL;
        rc = fnet ? 0 : rows ? EXIT_RUN_FAILED : EXIT_USAGE;
    }
    if (rc == 0 && fnet) {
        at_eval_result fr;
        s = at_evaluate(fnet, ds, a->batch, &fr);
        clean_f = (int)((double)fr.accuracy * n + 0.5);
        if (s == AT_OK) s = run_transfers(fnet, m->qnet, ds, x, y, clean_ok, a->batch, rows, nrows);
        if (s != AT_OK) {
            cli_error("eval", "the transfer attacks failed", s);
            rc = EXIT_RUN_FAILED;
        }
    }
    if (rc == 0) report(m, a, n, count_true(clean_ok, n), clean_f, rows, nrows, cli_now() - start);
    at_net_free(fnet);
    free(rows);
    free(x);
    free(y);
    free(idx);
    free(clean_ok);
    return rc;
}
