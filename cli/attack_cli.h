/* Pieces of the attack subcommands (eval --attack, attack): parsing attack and eps lists,
 * progress, and the PNG image grid. */
#ifndef ADVTRAIN_ATTACK_CLI_H
#define ADVTRAIN_ATTACK_CLI_H
#include "cli.h"

enum { ATK_CLI_MAX = 32 };

/* Settings shared by both subcommands; zero / NULL means "the attack's default". */
typedef struct atk_cli_settings {
    const char *attacks; /* "pgd,auto" */
    const char *eps;     /* "0.05,0.1" or "8/255" */
    const char *norm;    /* "linf" | "l2" | NULL */
    const char *target;  /* "random" | "least-likely" | class number | NULL */
    int steps, restarts, queries, batch;
    float alpha;
    uint64_t seed;
    bool all;            /* attack misclassified samples too */
    bool last_iterate;   /* PGD: judge last iterates, not the first that fools */
} atk_cli_settings;

/* Builds one configuration per listed attack with the settings applied (eps left 0) and
 * checked by the library for a model of num_classes classes; prints what is wrong, naming the
 * flags. */
bool atk_cli_configs(const char *cmd, const atk_cli_settings *s, int num_classes,
                     at_attack_config *cfgs, int cap, int *count, int32_t *target_class);
/* "0.0314 (8.0/255)" */
void atk_cli_eps_text(float eps, char *buf, size_t cap);
/* Progress bar callback for at_attack_config.progress; user points to a label string. */
void atk_cli_progress(void *user, int done, int total);
/* Steps column, the library's words for the budget: "20", "100+9x100+5000q" for auto, "5000q"
 * for square. */
void atk_cli_budget_text(const at_attack_config *cfg, const at_attack_result *r, char *buf,
                         size_t cap);
/* Help texts from the library's table of attacks: every name (after `before`), and --steps
 * with every kind's default budget ("fgsm 1, pgd 20, ..."). */
typedef struct atk_cli_help {
    char attack[640], steps[320];
} atk_cli_help;
void atk_cli_help_texts(atk_cli_help *h, const char *before);

/* The option rows `attack` and `eval` share (rows of a cli_option table: one definition of their
 * names, ranges and help). */
#define ATK_CLI_OPTIONS(set, help)                                                                                \
    {"norm", OPT_STRING, &(set).norm, "linf|l2", "threat model (default linf; l2 turns pgd into pgd-l2, ...)", 1, 0}, \
    {"steps", OPT_INT, &(set).steps, "K", (help).steps, 1, 1000000},                                              \
    {"restarts", OPT_INT, &(set).restarts, "R", "random restarts (default 1)", 1, 10000},                       \
    {"alpha", OPT_FLOAT, &(set).alpha, "A", "PGD step size (default 2.5*eps/steps)", 1e-9, 10},                  \
    {"queries", OPT_INT, &(set).queries, "Q", "queries of square and of auto's Square (defaults: the q under --steps)", 1, 10000000}, \
    {"target", OPT_STRING, &(set).target, "T", "targeted attack: random, least-likely or a class number", 1, 0}, \
    {"seed", OPT_U64, &(set).seed, "S", "random starts and Square's search (default 0)", 1, 0},                 \
    {"all", OPT_FLAG, &(set).all, NULL, "attack misclassified samples too (they never count as robust)", 1, 0},  \
    {"last-iterate", OPT_FLAG, &(set).last_iterate, NULL,                                                       \
     "pgd, cw: judge each sample's last iterate (as torchattacks) instead of stopping at the first iterate that fools the model", 1, 0}

/* The model and data of a subcommand that attacks: MODEL.safetensors (or weights read into
 * --model SPEC), the data source the model was trained on unless one is given, and the split
 * (test or train). */
typedef struct atk_cli_model {
    at_net *net;      /* NULL when the file is an int8 model (then qnet) */
    at_qnet *qnet;
    at_st_file *file;
    at_data data;
    const char *data_source;
    at_dataset *ds;
} atk_cli_model;
/* Prints what failed and returns false; atk_cli_close frees what was loaded either way. An int8
 * model file (advtrain quantize) loads into qnet when int8_ok, else it is refused by name. */
bool atk_cli_open(const char *cmd, atk_cli_model *m, const char *path, const char *data_source,
                  const char *model_spec, const char *split, bool int8_ok);
/* The opening fields of eval's and verify's JSON object: model (the file), arch, data, split,
 * first_sample, samples. */
struct cJSON *atk_cli_json_head(const char *path, const at_net *net, const char *data_source, const char *split,
                                int first, int samples);
void atk_cli_close(atk_cli_model *m);

/* eval on an int8 model (cli/eval_int8.c): clean accuracy, and with set->attacks the float
 * model's adversarial examples judged by the int8 model (transfer). m->ds holds the samples. */
typedef struct int8_eval_args {
    const char *path, *split, *float_model; /* float_model: NULL for the file's advtrain.float_model */
    int first, batch;
    bool json;
    const atk_cli_settings *set;
} int8_eval_args;
int atk_cli_eval_int8(const atk_cli_model *m, const int8_eval_args *a);

/* The image grid: for each of n samples (C x H x W floats in [0,1]) the clean image, the
 * perturbation (mid-gray = 0, scaled so +-scale_eps is full range; red/blue in colour) and the
 * adversarial image, each with its label / prediction drawn in a small bitmap font. class_names
 * (may be NULL) gives names for the labels. Written atomically. */
bool grid_write_png(const char *path, const char *title, const float *x, const float *adv,
                    const int32_t *labels, const int32_t *clean_pred, const int32_t *adv_pred,
                    int n, int c, int h, int w, float scale_eps, const char *const *class_names,
                    char *err, size_t errcap);

int cmd_attack(int argc, char **argv);
#endif
