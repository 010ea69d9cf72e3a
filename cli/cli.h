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
    /* What a default value means where the number alone would not say (alpha 0: the method's
     * own step); the effective config writes it after the value as an INI comment. */
    const char *note;
} cli_option;

/* Option rows several commands share (rows of a cli_option table): one definition of each name,
 * range and help text. */
#define CLI_OPT_THREADS(p) {"threads", OPT_INT, (p), "N", "compute threads (default: all cores)", 1, 1024}
#define CLI_OPT_JSON(p) {"json", OPT_FLAG, (p), NULL, "print one JSON object on stdout", 1, 0}
#define CLI_OPT_SPLIT(p) {"split", OPT_STRING, (p), "test|train", "which split (default test)", 1, 0}
/* A command reading a saved model: the data to run it on, and the architecture of a weight file
 * that does not say it. */
#define CLI_OPTS_MODEL_FILE(data, spec)                                                                  \
    {"data", OPT_STRING, (data), "SOURCE", "dataset (default: the one the model was trained on)", 1, 0}, \
    {"model", OPT_STRING, (spec), "NAME|SPEC",                                                          \
     "architecture, for weight files without advtrain metadata (e.g. written by PyTorch)", 1, 0}

typedef struct cli_command {
    const char *name;    /* "fit" */
    const char *usage;   /* "advtrain fit [options]" */
    const char *summary; /* one line */
    cli_option *options;
    int noptions;
    /* Positional arguments: up to max_positional are collected here. */
    const char **positional;
    int max_positional, npositional;
    /* Options a config file neither sets nor records (e.g. "config" itself); NULL-terminated. */
    const char *const *not_in_config;
    /* Options a config file may set but the effective config does not record (presentation
     * only, e.g. "quiet"); NULL-terminated. */
    const char *const *not_recorded;
} cli_command;

/* Parses argv (after the subcommand). Prints the error and returns false on bad usage; sets
 * *help when --help was asked for (then the caller prints help and exits 0). */
bool cli_parse(cli_command *cmd, int argc, char **argv, bool *help);
void cli_print_help(const cli_command *cmd, FILE *out);
/* Parses argv, prints help or the usage error, and checks that the positional argument (the
 * model file) is there. Returns -1 to go on, else the exit code to return. */
int cli_start(cli_command *cmd, int argc, char **argv);
const cli_option *cli_find(const cli_command *cmd, const char *name);
/* Sets an option from text as the command line would (range checks, message naming the flag). */
bool cli_set_option(const cli_command *cmd, cli_option *o, const char *value);

/* Strings that must live as long as the options pointing at them (config file values). */
typedef struct cli_strings {
    char **items;
    int count, cap;
} cli_strings;
const char *cli_strings_add(cli_strings *s, const char *value);
void cli_strings_free(cli_strings *s);

/* Config files (cli/config_file.c): INI parsed by libinih, section [COMMAND], keys are the flag
 * names. Options already set on the command line keep their values. Prints what is wrong
 * (file, line, key) and returns false on error. */
bool cli_read_config(cli_command *cmd, const char *path, cli_strings *strings);

/* One setting of an INI text, as cli_ini_parse hands it over. */
typedef struct cli_ini_entry {
    const char *section; /* "" before any [section] */
    const char *key, *value;
    const char *note;    /* "value  ; note": the comment after the value ("" if none) */
    bool dflt;           /* "; key = value" inside a section: a default the effective
                            configuration shows commented out (cli_write_config) */
} cli_ini_entry;
/* Takes one setting; false, with the reason in why, refuses it (the parse stops there). */
typedef bool (*cli_ini_fn)(void *user, const cli_ini_entry *e, char *why, size_t cap);
/* Where an INI text failed. */
typedef struct cli_ini_error {
    int line;       /* 1-based; 0: out of memory */
    char what[512]; /* the callback's reason; "" where the line itself is not INI */
    char text[64];  /* the start of that line, trimmed */
} cli_ini_error;
/* Parses INI text with libinih, calling fn for each setting in order; the commented-out
 * defaults of an effective configuration too when defaults is true. Prints nothing. */
bool cli_ini_parse(const char *text, bool defaults, cli_ini_fn fn, void *user, cli_ini_error *err);
/* Writes every option as an INI file: given ones active, defaults commented out. Atomic. */
bool cli_write_config(const cli_command *cmd, const char *path);
bool cli_not_in_config(const cli_command *cmd, const cli_option *o);

/* The shortest decimal that reads back as v ("0.05", not "0.0500000007"). */
void cli_format_float(char *buf, size_t cap, float v);
/* Writes text to path atomically (temporary file in the same directory, fsync, rename); prints
 * "advtrain CMD: path: why" and returns false on failure. */
bool cli_write_text_atomic(const char *cmd, const char *path, const char *text, size_t len);
/* All of f (opened from path) as one NUL-terminated text (free it); NULL after printing
 * "advtrain CMD: path: why" (out of memory, a read error, over 1 GiB, NUL bytes). */
char *cli_read_text(const char *cmd, const char *path, FILE *f, size_t *len);
/* s without its leading and trailing blanks (isspace: spaces, tabs, CR, LF, VT, FF), cut in place. */
char *cli_trim(char *s);

/* --json output: o on one line of stdout; o is deleted. */
typedef struct cJSON cJSON;
void cli_print_json(cJSON *o);
/* o as one line of JSON, every number in its shortest round-trip form (cli/json.c); its
 * numbers become raw text, so read none of them back from o afterwards. Free the text. */
char *cli_json_text(cJSON *o);

/* "s" unless n is 1: "%d epoch%s" with n, cli_s(n) ("1 epoch", "2 epochs"). */
const char *cli_s(long n);

/* Prints "advtrain CMD: what: detail" for a failed library call. */
void cli_error(const char *cmd, const char *what, at_status s);

/* Parses a comma-separated list of eps on the 0-1 scale ("8/255" accepted) for every
 * subcommand's --eps (cli/eps.c); prints what is wrong, naming the flag. */
bool cli_parse_eps(const char *cmd, const char *text, float *eps, int cap, int *count);

/* Loads a data source, translating library errors into a message. */
bool cli_load_data(const char *cmd, at_data *data, const char *source);

/* Progress line on a terminal (stdout, cli/progress.c): redrawn in place, fitted to the
 * terminal's width, cleared by cli_progress_done; nothing when stdout is not a terminal. */
void cli_progress(const char *label, int done, int total, double elapsed, const char *extra);
/* The same with the ETA text given (fit: the whole run's). */
void cli_progress_eta(const char *label, int done, int total, const char *eta, const char *extra);
/* A phase without a count (fit: "evaluating ..."), as the progress line. */
void cli_progress_text(const char *text);
void cli_progress_done(void);
bool cli_progress_showing(void);
bool cli_is_tty(void);
/* Columns: $COLUMNS, else the terminal's, else 80. */
int cli_term_width(void);
/* "45s", "12m05s", "1h02m". */
void cli_format_duration(char *buf, size_t cap, double seconds);
double cli_now(void);

int cmd_fit(int argc, char **argv);
/* The job's communicator (comm.c): started in main (MPI_Init when built with MPI and run by
 * mpirun; false and a message on failure), ended with the exit status (a failure aborts every
 * rank). cli_comm is NULL for one process; only rank 0 prints and writes files. */
bool cli_comm_start(int *argc, char ***argv);
void cli_comm_end(int status);
const at_comm *cli_comm(void);
bool cli_is_root(void);
/* Seconds this rank has spent inside the sums over the ranks, waiting for the others included
 * (0 for one process): the communication share of a data-parallel run. */
double cli_comm_seconds(void);
/* Waits until every rank has come here (true at once for one process). */
bool cli_comm_barrier(void);

int cmd_eval(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
#endif
