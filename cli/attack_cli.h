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

/* The model and data of a subcommand that attacks: MODEL.safetensors (or weights read into
 * --model SPEC), the data source the model was trained on unless one is given, and the split
 * (test or train). */
typedef struct atk_cli_model {
    at_net *net;
    at_st_file *file;
    at_data data;
    const char *data_source;
    at_dataset *ds;
} atk_cli_model;
/* Prints what failed and returns false; atk_cli_close frees what was loaded either way. */
bool atk_cli_open(const char *cmd, atk_cli_model *m, const char *path, const char *data_source,
                  const char *model_spec, const char *split);
void atk_cli_close(atk_cli_model *m);

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
