/* advtrain eval on an int8 model file (docs/quantization.md): clean accuracy by integer
 * inference and, with --attack, the attacks on the deployed int8 network: each attack's float
 * adversarial examples given to it (transfer), and each attack run on it (every forward pass and
 * judgement the int8 model's, gradients the float model's: BPDA; Square needs none), with the
 * per-sample worst case of both. */
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
    at_attack_result res;  /* on the float model */
    int int8_robust;       /* transfer */
    at_attack_result direct; /* on the int8 model, gradients from the float one */
    int worst_robust;      /* int8-robust under both */
} transfer_row;

/* The int8 model as the attacked model of an attack on its float stand-in (at_attack_config.forward). */
static at_status int8_forward(void *q, const float *x, int n, const float **logits) {
    return at_qnet_predict(q, x, n, logits);
}

/* Each attack and eps on the float model, its examples then judged by the int8 model
 * (transfer); and on the int8 model itself, gradients from the float model (BPDA). */
static at_status run_transfers(at_net *fnet, at_qnet *q, const at_dataset *ds, const float *x, const int32_t *y,
                               const bool *clean_ok, int batch, transfer_row *rows, int nrows) {
    const int n = ds->n, D = at_dataset_sample_size(ds);
    float *adv = malloc(sizeof(float) * (size_t)n * D);
    bool *ok = malloc(sizeof(bool) * (size_t)n);
    int32_t *pred = malloc(sizeof(int32_t) * (size_t)n);
    at_status s = adv && ok && pred ? AT_OK : at_fail(AT_ERR_NOMEM, "out of memory for %d adversarial examples", n);
    for (int r = 0; s == AT_OK && r < nrows; r++) {
        transfer_row *t = &rows[r];
        s = at_attack_run(fnet, &t->cfg, x, y, n, adv, NULL, &t->res);
        if (s == AT_OK) s = int8_hits(q, adv, y, n, batch, ok);
        at_attack_config on_int8 = t->cfg;
        on_int8.last_iterate = false; /* judged at every iterate by the int8 model itself */
        on_int8.forward = int8_forward;
        on_int8.forward_user = q;
        if (s == AT_OK) s = at_attack_run(fnet, &on_int8, x, y, n, NULL, pred, &t->direct);
        t->int8_robust = t->worst_robust = 0;
        for (int i = 0; s == AT_OK && i < n; i++) {
            t->int8_robust += clean_ok[i] && ok[i];
            t->worst_robust += clean_ok[i] && ok[i] && pred[i] == y[i];
        }
    }
    free(adv);
    free(ok);
    free(pred);
    return s;
}

/* The gradient-masking check of the int8 model at row r's eps: whether a gradient-free way in
 * (Square on the int8 logits, or any transfer from the float model) fools it more often than
 * the best gradient attack run on it, by more than 1% of the samples (at least 2: a transfer of
 * the same attack ties with it within a sample or so), the sign that quantization hides the
 * gradient's way (arXiv 2404.05688). The message goes into msg; false when nothing to flag. */
static bool masking(const transfer_row *rows, int nrows, int r, int n, char *msg, size_t cap) {
    for (int k = 0; k < r; k++) /* one check per eps: its first row's (rows go attack by attack) */
        if (rows[k].cfg.eps == rows[r].cfg.eps) return false;
    int gradient = -1, other = n + 1;
    const char *other_name = "";
    for (int k = 0; k < nrows; k++) {
        const transfer_row *t = &rows[k];
        if (t->cfg.eps != rows[r].cfg.eps) continue;
        if (t->cfg.kind == AT_ATTACK_SQUARE && t->direct.robust < other) other = t->direct.robust, other_name = "square";
        if (t->int8_robust < other) other = t->int8_robust, other_name = at_attack_name(&t->cfg);
        if (t->cfg.kind != AT_ATTACK_SQUARE && (gradient < 0 || t->direct.robust < gradient)) gradient = t->direct.robust;
    }
    const int margin = n / 100 > 2 ? n / 100 : 2;
    if (gradient < 0 || other > gradient - margin) return false;
    snprintf(msg, cap, "at eps %g the int8 model is robust on %d samples under %s%s but %d under its best gradient "
                       "attack: the gradients of its float stand-in miss its way (possible gradient masking)",
             (double)rows[r].cfg.eps, other, other_name, strcmp(other_name, "square") == 0 ? " (direct)" : " (transfer)",
             gradient);
    return true;
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
            cJSON_AddNumberToObject(o, "int8_direct_robust_accuracy", (double)rows[r].direct.robust / n);
            cJSON_AddNumberToObject(o, "int8_robust_accuracy", (double)rows[r].worst_robust / n);
            cJSON_AddItemToArray(arr, o);
        }
        cJSON *warn = nrows ? cJSON_AddArrayToObject(j, "warnings") : NULL;
        for (int r = 0; r < nrows; r++) {
            char msg[320];
            if (masking(rows, nrows, r, n, msg, sizeof msg))
                cJSON_AddItemToArray(warn, cJSON_CreateString(msg));
        }
        cJSON_AddNumberToObject(j, "seconds", seconds);
        cli_print_json(j);
        return;
    }
    printf("%s (int8) on %s %s (%d sample%s): accuracy %.2f%%\n", a->path, m->data.name, a->split, n, cli_s(n),
           n ? 100.0 * clean_q / n : 0.0);
    if (!nrows) return;
    printf("float model: clean accuracy %.2f%%. int8 columns: transfer = the float model's adversarial examples\n"
           "(white-box on it; PGD: its last iterates) given to the int8 model; direct = the attack run on the int8\n"
           "model, every forward pass and judgement its own, gradients the float model's (BPDA); worst = per sample,\n"
           "either fools it\n\n",
           100.0 * clean_f / n);
    printf("%-10s %-8s %-7s %13s %15s %11s %11s\n", "attack", "eps", "x255", "float robust", "int8 transfer",
           "int8 direct", "int8 worst");
    for (int r = 0; r < nrows; r++) {
        const transfer_row *t = &rows[r];
        printf("%-10s %-8.4g %-7.3g %12.2f%% %14.2f%% %10.2f%% %10.2f%%\n", at_attack_name(&t->cfg), t->cfg.eps,
               t->cfg.eps * 255.0, 100.0 * t->res.robust / n, 100.0 * t->int8_robust / n, 100.0 * t->direct.robust / n,
               100.0 * t->worst_robust / n);
    }
    for (int r = 0; r < nrows; r++) {
        char msg[320];
        if (masking(rows, nrows, r, n, msg, sizeof msg)) fprintf(stderr, "advtrain eval: warning: %s\n", msg);
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
    int32_t *y = malloc(sizeof(int32_t) * (size_t)n);
    bool *clean_ok = malloc(sizeof(bool) * (size_t)n);
    at_status s = x && y && clean_ok ? AT_OK : at_fail(AT_ERR_NOMEM, "out of memory for %d samples", n);
    if (s == AT_OK) at_dataset_range(ds, 0, n, x, y, NULL);
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
    free(clean_ok);
    return rc;
}
