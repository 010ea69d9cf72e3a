/* Config files for a subcommand: INI read with libinih ("name = value" under [fit], the flag
 * names without "--"), and the effective configuration written back. Flags given on the command
 * line win over the file. */
#define _POSIX_C_SOURCE 200809L /* stat */
#include "cli.h"

#include <ini.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct config_reader {
    cli_command *cmd;
    const char *path;
    bool from_command_line[256]; /* which options the command line already set */
    cli_strings *strings;
    char error[512];
} config_reader;

static bool parse_bool(const char *v, bool *out) {
    static const char *const yes[] = {"true", "yes", "on", "1"}, *const no[] = {"false", "no", "off", "0"};
    for (int i = 0; i < 4; i++) {
        if (strcmp(v, yes[i]) == 0) return *out = true, true;
        if (strcmp(v, no[i]) == 0) return *out = false, true;
    }
    return false;
}

static int on_entry(void *user, const char *section, const char *name, const char *value) {
    config_reader *r = user;
    if (*section && strcmp(section, r->cmd->name) != 0) {
        snprintf(r->error, sizeof r->error, "section [%s]: advtrain %s reads [%s] only", section,
                 r->cmd->name, r->cmd->name);
        return 0;
    }
    cli_option *o = (cli_option *)cli_find(r->cmd, name);
    if (!o || cli_not_in_config(r->cmd, o)) {
        snprintf(r->error, sizeof r->error, "'%s' is not a setting of advtrain %s (see advtrain %s --help)",
                 name, r->cmd->name, r->cmd->name);
        return 0;
    }
    int index = (int)(o - r->cmd->options);
    if (r->from_command_line[index]) return 1; /* the command line wins */
    if (o->type == OPT_FLAG) {
        bool on;
        if (!parse_bool(value, &on)) {
            snprintf(r->error, sizeof r->error, "%s = %s: use true or false", name, value);
            return 0;
        }
        *(bool *)o->target = on;
        o->seen = true;
        return 1;
    }
    const char *copy = cli_strings_add(r->strings, value);
    if (!copy) {
        snprintf(r->error, sizeof r->error, "out of memory");
        return 0;
    }
    if (!cli_set_option(r->cmd, o, copy)) {
        snprintf(r->error, sizeof r->error, "%s = %s: invalid (the message above says why)", name, value);
        return 0;
    }
    return 1;
}

static bool cli_listed(const char *const *names, const cli_option *o) {
    for (const char *const *n = names; n && *n; n++)
        if (strcmp(*n, o->name) == 0) return true;
    return false;
}

bool cli_not_in_config(const cli_command *cmd, const cli_option *o) { return cli_listed(cmd->not_in_config, o); }

bool cli_read_config(cli_command *cmd, const char *path, cli_strings *strings) {
    /* fopen succeeds on a directory and inih then reads nothing: the defaults would run. */
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        fprintf(stderr, "advtrain %s: --config %s: is a directory; give a file (e.g. %s/config.ini, "
                        "written by --checkpoint-dir)\n", cmd->name, path, path);
        return false;
    }
    config_reader *r = calloc(1, sizeof *r);
    if (!r || cmd->noptions > 256) {
        free(r);
        fprintf(stderr, "advtrain %s: cannot read %s: out of memory\n", cmd->name, path);
        return false;
    }
    r->cmd = cmd;
    r->path = path;
    r->strings = strings;
    for (int i = 0; i < cmd->noptions; i++) r->from_command_line[i] = cmd->options[i].seen;
    int line = ini_parse(path, on_entry, r);
    bool ok = line == 0;
    if (line == -1)
        fprintf(stderr, "advtrain %s: cannot open config file %s\n", cmd->name, path);
    else if (line == -2)
        fprintf(stderr, "advtrain %s: out of memory reading %s\n", cmd->name, path);
    else if (line > 0)
        fprintf(stderr, "advtrain %s: %s line %d: %s\n", cmd->name, path, line,
                *r->error ? r->error : "not 'name = value', '[section]' or a ; comment");
    free(r);
    return ok;
}

/* One option's value as the config file writes it. */
static void format_value(const cli_option *o, char *buf, size_t cap) {
    switch (o->type) {
    case OPT_INT: snprintf(buf, cap, "%d", *(const int *)o->target); break;
    case OPT_U64: snprintf(buf, cap, "%llu", (unsigned long long)*(const uint64_t *)o->target); break;
    case OPT_FLOAT: cli_format_float(buf, cap, *(const float *)o->target); break;
    case OPT_STRING: {
        const char *s = *(const char *const *)o->target;
        snprintf(buf, cap, "%s", s ? s : "");
        break;
    }
    case OPT_FLAG: snprintf(buf, cap, "%s", *(const bool *)o->target ? "true" : "false"); break;
    }
}

/* The header. A run directory's config.ini names that directory: rerunning it as it stands
 * would meet the directory's own run (refused), so the hint says how to rerun elsewhere. */
static void rerun_hint(const cli_command *cmd, const char *path, char *line, size_t cap) {
    const cli_option *dir = cli_find(cmd, "checkpoint-dir");
    const char *d = dir && dir->seen ? *(const char *const *)dir->target : NULL;
    int n = snprintf(line, cap,
                     "; advtrain %s: the effective configuration of this run. Settings that were\n"
                     "; given are active; the others show their defaults, commented out.\n",
                     cmd->name);
    if (n < 0 || (size_t)n >= cap) return;
    if (d)
        snprintf(line + n, cap - (size_t)n,
                 "; Rerun with: advtrain %s --config %s --checkpoint-dir NEW_DIR\n"
                 "; Continue it: advtrain %s --resume %s\n[%s]\n",
                 cmd->name, path, cmd->name, d, cmd->name);
    else
        snprintf(line + n, cap - (size_t)n, "; Rerun with: advtrain %s --config %s\n[%s]\n", cmd->name,
                 path, cmd->name);
}

bool cli_write_config(const cli_command *cmd, const char *path) {
    size_t cap = 4096, len = 0;
    char *text = malloc(cap);
    bool ok = text != NULL;
    for (int i = -1; ok && i < cmd->noptions; i++) {
        char line[1024];
        if (i < 0) {
            rerun_hint(cmd, path, line, sizeof line);
        } else {
            const cli_option *o = &cmd->options[i];
            if (cli_not_in_config(cmd, o) || cli_listed(cmd->not_recorded, o)) continue;
            char value[900];
            format_value(o, value, sizeof value);
            if (!o->seen && o->type == OPT_STRING && !*value) continue; /* unset, no default */
            if (!o->seen && o->note)
                snprintf(line, sizeof line, "; %s = %s  ; %s\n", o->name, value, o->note);
            else
                snprintf(line, sizeof line, "%s%s = %s\n", o->seen ? "" : "; ", o->name, value);
        }
        size_t n = strlen(line);
        if (len + n + 1 > cap) {
            char *bigger = realloc(text, cap = 2 * (len + n + 1));
            if (!bigger) ok = false;
            else text = bigger;
        }
        if (ok) {
            memcpy(text + len, line, n + 1);
            len += n;
        }
    }
    if (ok) ok = cli_write_text_atomic(cmd->name, path, text, len);
    else fprintf(stderr, "advtrain %s: out of memory writing %s\n", cmd->name, path);
    free(text);
    return ok;
}

const char *cli_strings_add(cli_strings *s, const char *value) {
    if (s->count == s->cap) {
        int cap = s->cap ? 2 * s->cap : 16;
        char **items = realloc(s->items, sizeof *items * (size_t)cap);
        if (!items) return NULL;
        s->items = items;
        s->cap = cap;
    }
    size_t n = strlen(value) + 1;
    char *copy = malloc(n);
    if (copy) {
        memcpy(copy, value, n);
        s->items[s->count++] = copy;
    }
    return copy;
}

void cli_strings_free(cli_strings *s) {
    for (int i = 0; i < s->count; i++) free(s->items[i]);
    free(s->items);
    memset(s, 0, sizeof *s);
}
