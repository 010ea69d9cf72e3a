/* A small table-driven option parser: "--name value", "--name=value" and flags, with range checks
 * and generated --help. Every error names the flag and what was wrong with it. */
#include "cli.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

const cli_option *cli_find(const cli_command *cmd, const char *name) {
    for (int i = 0; i < cmd->noptions; i++)
        if (strcmp(cmd->options[i].name, name) == 0) return &cmd->options[i];
    return NULL;
}

static bool in_range(const cli_option *o, double v) { return o->min > o->max || (v >= o->min && v <= o->max); }

static bool bad_value(const cli_command *cmd, const cli_option *o, const char *value,
                      const char *why) {
    fprintf(stderr, "advtrain %s: --%s %s: %s", cmd->name, o->name, value, why);
    if (o->min <= o->max) fprintf(stderr, " (accepted: %g to %g)", o->min, o->max);
    fprintf(stderr, "\n");
    return false;
}

bool cli_set_option(const cli_command *cmd, cli_option *o, const char *value) {
    char *end;
    errno = 0;
    switch (o->type) {
    case OPT_INT: {
        long v = strtol(value, &end, 10);
        if (end == value || *end || errno) return bad_value(cmd, o, value, "not a whole number");
        /* an unranged option still holds an int: 3000000000 must not wrap around */
        if (!in_range(o, (double)v) || v < INT_MIN || v > INT_MAX)
            return bad_value(cmd, o, value, "out of range");
        *(int *)o->target = (int)v;
        break;
    }
    case OPT_U64: {
        /* strtoull skips leading spaces and then negates "-1" into 2^64 - 1 */
        if (strchr(value, '-')) return bad_value(cmd, o, value, "must not be negative");
        unsigned long long v = strtoull(value, &end, 10);
        if (end == value || *end || errno) return bad_value(cmd, o, value, "not a whole number");
        *(uint64_t *)o->target = (uint64_t)v;
        break;
    }
    case OPT_FLOAT: {
        double v = strtod(value, &end);
        /* finite as the float it is stored in: 1e39 is a finite double but an infinite float */
        if (end == value || *end || errno || !isfinite(v) || !isfinite((float)v))
            return bad_value(cmd, o, value, "not a finite number");
        if (!in_range(o, v)) return bad_value(cmd, o, value, "out of range");
        *(float *)o->target = (float)v;
        break;
    }
    case OPT_STRING:
        if (!*value) return bad_value(cmd, o, "''", "must not be empty");
        *(const char **)o->target = value;
        break;
    case OPT_FLAG: *(bool *)o->target = true; break;
    }
    o->seen = true;
    return true;
}

bool cli_parse(cli_command *cmd, int argc, char **argv, bool *help) {
    *help = false;
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            *help = true;
            return true;
        }
        if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0') {
            if (arg[0] == '-' && arg[1] != '\0') {
                fprintf(stderr, "advtrain %s: unknown flag '%s' (see advtrain %s --help)\n",
                        cmd->name, arg, cmd->name);
                return false;
            }
            if (cmd->npositional >= cmd->max_positional) {
                fprintf(stderr, "advtrain %s: unexpected argument '%s' (see advtrain %s --help)\n",
                        cmd->name, arg, cmd->name);
                return false;
            }
            cmd->positional[cmd->npositional++] = arg;
            continue;
        }
        char name[64];
        const char *eq = strchr(arg + 2, '=');
        size_t len = eq ? (size_t)(eq - arg - 2) : strlen(arg + 2);
        if (len >= sizeof name) len = sizeof name - 1;
        memcpy(name, arg + 2, len);
        name[len] = '\0';
        cli_option *o = (cli_option *)cli_find(cmd, name);
        if (!o) {
            fprintf(stderr, "advtrain %s: unknown flag '--%s' (see advtrain %s --help)\n",
                    cmd->name, name, cmd->name);
            return false;
        }
        if (o->type == OPT_FLAG) {
            if (eq) {
                fprintf(stderr, "advtrain %s: --%s takes no value\n", cmd->name, name);
                return false;
            }
            cli_set_option(cmd, o, "");
            continue;
        }
        const char *value = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!value) {
            fprintf(stderr, "advtrain %s: --%s needs a value (%s)\n", cmd->name, name,
                    o->metavar ? o->metavar : "see --help");
            return false;
        }
        if (!cli_set_option(cmd, o, value)) return false;
    }
    return true;
}

enum { HELP_WIDTH = 100, HELP_INDENT = 29 }; /* "  " + 26 columns of flag + " " */

/* text word-wrapped to HELP_WIDTH columns, continuation lines indented under the first. */
static void print_wrapped(FILE *out, const char *text) {
    int col = HELP_INDENT;
    const char *p = text;
    while (*p) {
        size_t word = strcspn(p, " ");
        if (col > HELP_INDENT && col + 1 + (int)word > HELP_WIDTH) {
            fprintf(out, "\n%*s", HELP_INDENT, "");
            col = HELP_INDENT;
        } else if (col > HELP_INDENT) {
            fputc(' ', out);
            col++;
        }
        fwrite(p, 1, word, out);
        col += (int)word;
        p += word;
        while (*p == ' ') p++;
    }
    fputc('\n', out);
}

void cli_print_help(const cli_command *cmd, FILE *out) {
    fprintf(out, "usage: %s\n\n%s\n\noptions:\n", cmd->usage, cmd->summary);
    for (int i = 0; i < cmd->noptions; i++) {
        const cli_option *o = &cmd->options[i];
        char left[64];
        snprintf(left, sizeof left, "--%s%s%s", o->name, o->metavar ? " " : "",
                 o->metavar ? o->metavar : "");
        if (strlen(left) > 26) /* a long flag gets a line of its own */
            fprintf(out, "  %s\n%*s", left, HELP_INDENT, "");
        else
            fprintf(out, "  %-26s ", left);
        print_wrapped(out, o->help);
    }
    fprintf(out, "  %-26s %s\n", "--help", "show this help");
}

int cli_start(cli_command *cmd, int argc, char **argv) {
    bool help;
    if (!cli_parse(cmd, argc, argv, &help)) return EXIT_USAGE;
    if (help) {
        cli_print_help(cmd, stdout);
        return 0;
    }
    if (cmd->max_positional > 0 && cmd->npositional != cmd->max_positional) {
        fprintf(stderr, "advtrain %s: which model? usage: %s\n", cmd->name, cmd->usage);
        return EXIT_USAGE;
    }
    return -1;
}
