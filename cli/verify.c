/* advtrain verify: verified (certified) accuracy of a saved classifier at an L-inf radius, next to
 * its clean accuracy and, with --attack, its robust accuracy under that attack. An attack can only
 * show that a model is not robust; a verified sample is proven robust. So verified <= robust <=
 * clean must hold, and a violation is flagged (a bug in the bounds or in the attack). */
#include "attack_cli.h"

#include <cjson/cJSON.h>
#include <string.h>

typedef struct verify_options {
    const char *method, *eps_text, *attack, *data_source, *model_spec, *split;
    int samples, offset, threads;
    bool json;
    at_bound_method bound; /* --method, resolved by usage_ok */
} verify_options;

typedef struct verify_outcome {
    float eps;
    at_verify_result v;
    at_attack_result robust; /* with --attack */
    bool attacked, ordered;  /* ordered: verified <= robust <= clean */
} verify_outcome;

static double share(int k, int n) { return n ? (double)k / n : 0.0; }

static void print_text(const char *path, const atk_cli_model *m, const verify_options *o, const verify_outcome *r) {
    printf("%s (%s) on %s %s, %d sample%s from %d\n", path, at_net_spec(m->net), m->data.name, o->split,
           r->v.samples, cli_s(r->v.samples), o->offset);
    printf("clean accuracy     %6.2f%% (%d/%d)\n", 100 * share(r->v.clean_correct, r->v.samples), r->v.clean_correct,
           r->v.samples);
    if (r->attacked)
        printf("robust accuracy    %6.2f%% (%s, eps %g on the 0-1 scale: an upper bound)\n",
               100 * share(r->robust.robust, r->robust.samples), o->attack, (double)r->eps);
    printf("verified accuracy  %6.2f%% (%s, eps %g = %g/255: proven, a lower bound) in %.1fs\n",
           100 * share(r->v.verified, r->v.samples), o->method, (double)r->eps, (double)r->eps * 255.0, r->v.seconds);
    printf("check verified <= %sclean: %s\n", r->attacked ? "robust <= " : "", r->ordered ? "ok" : "FAILED");
}

static void print_json(const char *path, const atk_cli_model *m, const verify_options *o, const verify_outcome *r) {
    cJSON *j = atk_cli_json_head(path, m->net, m->data_source, o->split, o->offset, r->v.samples);
    cJSON_AddStringToObject(j, "method", o->method);
    cJSON_AddNumberToObject(j, "eps", r->eps);
    cJSON_AddStringToObject(j, "eps_scale", "0-1 pixels");
    cJSON_AddNumberToObject(j, "clean_accuracy", share(r->v.clean_correct, r->v.samples));
    cJSON_AddNumberToObject(j, "verified_accuracy", share(r->v.verified, r->v.samples));
    cJSON_AddNumberToObject(j, "seconds", r->v.seconds);
    if (r->attacked) {
        cJSON_AddStringToObject(j, "attack", o->attack);
        cJSON_AddNumberToObject(j, "robust_accuracy", share(r->robust.robust, r->robust.samples));
    }
    cJSON_AddBoolToObject(j, "ordered", r->ordered);
    cli_print_json(j);
}

/* The attack at eps on the same samples, for the robust-accuracy column. */
static bool run_attack(const atk_cli_model *m, const verify_options *o, verify_outcome *r) {
    at_attack_config cfg;
    at_status s = at_attack_from_name(o->attack, &cfg);
    if (s == AT_OK) {
        cfg.eps = r->eps;
        cfg.index_base = o->offset;
        cfg.comm = cli_comm();
        s = at_attack_dataset(m->net, &cfg, m->ds, m->ds->n, NULL, NULL, &r->robust);
    }
    if (s != AT_OK) cli_error("verify", o->attack, s);
    return r->attacked = s == AT_OK;
}

/* Verification of ds; under mpirun each rank verifies its share and the counts are summed. */
static at_status verify_share(at_net *net, at_dataset *ds, float eps, at_bound_method method, at_verify_result *v) {
    const at_comm *c = cli_comm();
    int lo, hi;
    at_comm_share(c, ds->n, &lo, &hi);
    at_status s = at_dataset_keep_range(ds, lo, hi - lo);
    if (s == AT_OK && hi > lo) s = at_verify_dataset(net, ds, hi - lo, eps, method, v);
    if (s != AT_OK || !c) return s;
    double sums[4] = {v->samples, v->clean_correct, v->verified, 0};
    s = c->allreduce_sum(c->user, sums, 4);
    v->samples = (int)sums[0], v->clean_correct = (int)sums[1], v->verified = (int)sums[2];
    return s;
}

static int verify_model(const char *path, atk_cli_model *m, const verify_options *o, float eps) {
    at_dataset *ds = m->ds;
    if (o->offset >= ds->n) {
        fprintf(stderr, "advtrain verify: --offset %d: the %s split has only %d samples\n", o->offset, o->split, ds->n);
        return EXIT_USAGE;
    }
    int keep = ds->n - o->offset;
    if (o->samples > 0 && o->samples < keep) keep = o->samples;
    at_status s = at_dataset_keep_range(ds, o->offset, keep);
    verify_outcome r = {.eps = eps};
    if (s == AT_OK && o->attack && !run_attack(m, o, &r)) return EXIT_RUN_FAILED; /* shared by the ranks */
    if (s == AT_OK) s = verify_share(m->net, ds, eps, o->bound, &r.v);
    if (s != AT_OK) {
        cli_error("verify", path, s);
        return EXIT_RUN_FAILED;
    }
    const int robust = r.attacked ? r.robust.robust : r.v.clean_correct;
    r.ordered = r.v.verified <= robust && robust <= r.v.clean_correct;
    if (o->json)
        print_json(path, m, o, &r);
    else
        print_text(path, m, o, &r);
    if (!r.ordered)
        fprintf(stderr, "advtrain verify: verified %d, robust %d, clean %d: not in order (a bug in the bounds or the attack)\n",
                r.v.verified, robust, r.v.clean_correct);
    return r.ordered ? 0 : EXIT_RUN_FAILED;
}

/* Usage errors before anything is loaded; the radius in *eps, the bound method in o->bound. */
static bool usage_ok(verify_options *o, float *eps) {
    if (at_bound_method_from_name(o->method, &o->bound) != AT_OK) {
        fprintf(stderr, "advtrain verify: --method %s: use ibp (interval bounds), crown-ibp (linear bounds backward, ReLU "
                        "networks) or crown (linear bounds for every ReLU's input too)\n", o->method);
        return false;
    }
    if (!o->eps_text) {
        fprintf(stderr, "advtrain verify: --eps is required (the L-inf radius on the 0-1 pixel scale, e.g. 0.1 or 8/255)\n");
        return false;
    }
    int n = 0;
    if (!cli_parse_eps("verify", o->eps_text, eps, 1, &n)) return false;
    at_attack_config cfg;
    if (o->attack && at_attack_from_name(o->attack, &cfg) != AT_OK) {
        cli_error("verify", "--attack", AT_ERR_ARG);
        return false;
    }
    if (strcmp(o->split, "test") != 0 && strcmp(o->split, "train") != 0) {
        fprintf(stderr, "advtrain verify: --split %s: use test or train\n", o->split);
        return false;
    }
    return true;
}

int cmd_verify(int argc, char **argv) {
    verify_options o = {"ibp", NULL, NULL, NULL, NULL, "test", 0, 0, 0, false};
    cli_option opts[] = {
        {"eps", OPT_STRING, &o.eps_text, "E", "L-inf radius on the 0-1 pixel scale (8/255 accepted)", 1, 0},
        {"method", OPT_STRING, &o.method, "ibp|crown-ibp|crown", "bounds: ibp, interval bound propagation (default); crown-ibp, linear bounds propagated backward (ReLU networks; tighter, slower); crown, the same for every ReLU's input too (tightest, one backward pass per neuron: far slower)", 1, 0},
        {"attack", OPT_STRING, &o.attack, "NAME", "also robust accuracy under this attack (e.g. pgd, auto), to compare", 1, 0},
        CLI_OPTS_MODEL_FILE(&o.data_source, &o.model_spec),
        CLI_OPT_SPLIT(&o.split),
        {"samples", OPT_INT, &o.samples, "N", "verify N samples only", 1, 100000000},
        {"offset", OPT_INT, &o.offset, "N", "skip the first N samples", 0, 100000000},
        CLI_OPT_THREADS(&o.threads),
        CLI_OPT_JSON(&o.json),
    };
    const char *positional[1] = {NULL};
    cli_command cmd = {"verify", "advtrain verify MODEL.safetensors --eps E [--method ibp|crown-ibp|crown] [--attack NAME] [--json]",
                       "Verified accuracy: the share of samples whose prediction no input within eps (L-inf,\n"
                       "clipped to [0,1]) can change, proven by bound propagation; with clean accuracy and,\n"
                       "with --attack, robust accuracy: verified <= robust <= clean is checked.",
                       opts, (int)(sizeof opts / sizeof *opts), positional, 1, 0};
    int early = cli_start(&cmd, argc, argv);
    if (early >= 0) return early;
    float eps = 0.0f;
    if (!usage_ok(&o, &eps)) return EXIT_USAGE;
    if (o.threads > 0) at_set_threads(o.threads);
    atk_cli_model m;
    int status = EXIT_RUN_FAILED;
    if (atk_cli_open("verify", &m, positional[0], o.data_source, o.model_spec, o.split, false))
        status = verify_model(positional[0], &m, &o, eps);
    atk_cli_close(&m);
    return status;
}
