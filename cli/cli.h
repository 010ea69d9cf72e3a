/* Shared pieces of the advtrain command-line tool: option tables, errors, progress output. */
#ifndef ADVTRAIN_CLI_H
#define ADVTRAIN_CLI_H
#include "advtrain.h"

#include <stdbool.h>
#include <stdio.h>

/* Exit codes: 0 success, 1 a run that failed (bad data, model file, divergence), 2 bad usage. */
enum { EXIT_RUN_FAILED = 1, EXIT_USAGE = 2 };

typedef enum opt_type { OPT_INT, OPT_FLOAT, OPT_STRING, OPT_FLAG, OPT_U64 } opt_type;

typedef struct cli_option {
    const char *name; /* without the leading "--" */
    opt_type type;
    void *target;     /* int*, float*, const char**, bool*, uint64_t* */
    const char *metavar;
    const char *help;
    double min, max;  /* accepted range for numbers (min > max: no limit) */
    bool seen;
} cli_option;

typedef struct cli_command {
    const char *name;    /* "fit" */
    const char *usage;   /* "advtrain fit [options]" */
    const char *summary; /* one line */
    cli_option *options;
    int noptions;
    /* Positional arguments: up to max_positional are collected here. */
    const char **positional;
    int max_positional, npositional;
} cli_command;

/* Parses argv (after the subcommand). Prints the error and returns false on bad usage; sets
 * *help when --help was asked for (then the caller prints help and exits 0). */
bool cli_parse(cli_command *cmd, int argc, char **argv, bool *help);
void cli_print_help(const cli_command *cmd, FILE *out);
/* Parses argv, prints help or the usage error, and checks that the positional argument (the
 * model file) is there. Returns -1 to go on, else the exit code to return. */
int cli_start(cli_command *cmd, int argc, char **argv);
const cli_option *cli_find(const cli_command *cmd, const char *name);

/* Prints "advtrain CMD: what: detail" for a failed library call. */
void cli_error(const char *cmd, const char *what, at_status s);

/* Loads a data source, translating library errors into a message. */
bool cli_load_data(const char *cmd, at_data *data, const char *source);

/* Progress bar on a terminal (stdout): redrawn in place, cleared by cli_progress_done. */
void cli_progress(const char *label, int done, int total, double elapsed, const char *extra);
void cli_progress_done(void);
bool cli_is_tty(void);
double cli_now(void);

int cmd_fit(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_export(int argc, char **argv);
#endif
