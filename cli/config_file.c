/* Config files for a subcommand: INI read with libinih ("name = value" under [fit], the flag
 * names without "--"), and the effective configuration written back. Flags given on the command
 * line win over the file. The effective configuration's own conventions (defaults commented out,
 * notes after values) are written and read here, for `advtrain report` too. */
#define _POSIX_C_SOURCE 200809L /* stat */
#include "cli.h"

#include <ctype.h>
#include <ini.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---------------------------------------------------------------- reading INI text */

/* libinih parses each line; the lines reach it through next_line, which first reads what INI
 * leaves to comments: "; key = value" inside a section is a setting left at its default (shown
 * commented out by cli_write_config), and "value  ; note" says what a default means. libinih
 * (as Debian builds it) reads at most 199 bytes of a line: a longer setting's value is kept
 * here and the key alone passed on. Leading blanks are dropped: libinih would take an indented
 * line for the continuation of the previous value, which no option joins (fit would replace
 * the value with the continuation). */
typedef struct ini_text {
    const char *next; /* what is left of the text */
    int lineno;
    char *line;       /* the current line (a copy: the text stays whole for messages) */
    size_t cap;
    bool defaults, nomem;
    /* the current line beyond INI */
    bool dflt;
    const char *note, *value; /* value: a value too long for libinih, else NULL */
    cli_ini_fn fn;
    void *user;
    cli_ini_error *err;
    int refused; /* the line fn refused (0: none) */
} ini_text;

static const char DEFAULT_KEY_CHARS[] = "abcdefghijklmnopqrstuvwxyz0123456789_-.";

/* Cuts "  ; note" off the value starting at v (libinih's rule: a ';' after a blank) and keeps
 * the note. */
static void lift_note(ini_text *t, char *v) {
    for (bool was_space = false; *v; was_space = isspace((unsigned char)*v), v++)
        if (was_space && *v == ';') {
            *v = '\0';
            t->note = cli_trim(v + 1);
            return;
        }
}

/* What libinih is to see of line p (within num bytes): comments shrink to ";", an effective
 * configuration's default loses its ';', a setting its note, a long setting its value. The
 * line is the first *n bytes of what it returns (cutting them short in place would cut the
 * value of "key=value" too: it starts right after the '='). */
static const char *shape_line(ini_text *t, char *p, int num, size_t *n) {
    *n = SIZE_MAX; /* all of it */
    /* every blank libinih's isspace() sees: a line starting with '\r' was a continuation too */
    p += strspn(p, " \t\r\v\f");
    if (*p == ';' || *p == '#') {
        char *c = p + 1 + strspn(p + 1, " \t");
        size_t keylen = strspn(c, DEFAULT_KEY_CHARS);
        if (!t->defaults || keylen == 0 || c[keylen + strspn(c + keylen, " \t")] != '=') return ";";
        t->dflt = true;
        p = c;
    }
    char *sep = strpbrk(p, "=:");
    if (*p == '[' || !sep) return p; /* a section, or not INI (libinih says so) */
    lift_note(t, sep + 1);
    if (strlen(p) < (size_t)num) return p;
    t->value = cli_trim(sep + 1);
    *n = (size_t)(sep + 1 - p);
    return p;
}

/* libinih's line reader (fgets-like): the next line, shaped. */
static char *next_line(char *str, int num, void *stream) {
    ini_text *t = stream;
    if (!*t->next || t->refused || t->nomem) return NULL; /* the end, or stop at the refusal */
    size_t len = strcspn(t->next, "\n");
    if (len + 1 > t->cap) {
        char *bigger = realloc(t->line, len + 1);
        if (!bigger) {
            t->nomem = true;
            return NULL;
        }
        t->line = bigger;
        t->cap = len + 1;
    }
    memcpy(t->line, t->next, len);
    t->line[len] = '\0';
    t->next += len + (t->next[len] == '\n');
    t->lineno++;
    t->dflt = false;
    t->note = "";
    t->value = NULL;
    char *p = t->line;
    if (t->lineno == 1 && strncmp(p, "\xEF\xBB\xBF", 3) == 0) p += 3; /* a UTF-8 byte order mark */
    size_t n;
    const char *shaped = shape_line(t, p, num, &n);
    if (n > (size_t)num - 1) n = (size_t)num - 1; /* libinih's buffer (its error: the line is long) */
    snprintf(str, (size_t)num, "%.*s", (int)n, shaped);
    return str;
}

static int on_ini_entry(void *user, const char *section, const char *name, const char *value) {
    ini_text *t = user;
    if (t->dflt && !*section) return 1; /* "; key = value" above every section: a comment */
    cli_ini_entry e = {section, name, t->value ? t->value : value, t->note, t->dflt};
    if (t->fn(t->user, &e, t->err->what, sizeof t->err->what)) return 1;
    t->refused = t->lineno;
    return 0;
}

/* Line n (1-based) of text, trimmed, into buf. */
static void line_text(const char *text, int n, char *buf, size_t cap) {
    for (int i = 1; i < n && strchr(text, '\n'); i++) text = strchr(text, '\n') + 1;
    char line[256];
    snprintf(line, sizeof line, "%.*s", (int)strcspn(text, "\n"), text);
    snprintf(buf, cap, "%s", cli_trim(line));
}

bool cli_ini_parse(const char *text, bool defaults, cli_ini_fn fn, void *user, cli_ini_error *err) {
    memset(err, 0, sizeof *err);
    ini_text t = {.next = text, .defaults = defaults, .fn = fn, .user = user, .err = err};
    int line = ini_parse_stream(next_line, &t, on_ini_entry, &t);
    free(t.line);
    if (t.nomem || line < 0) {
        snprintf(err->what, sizeof err->what, "out of memory");
        return false;
    }
    if (line == 0) return true;
    err->line = line;
    if (line != t.refused) err->what[0] = '\0'; /* libinih's own error: the line is not INI */
    line_text(text, line, err->text, sizeof err->text);
    return false;
}

/* ---------------------------------------------------------------- the config file of a subcommand */

typedef struct config_reader {
    cli_command *cmd;
    bool from_command_line[256]; /* which options the command line already set */
    cli_strings *strings;
} config_reader;

static bool parse_bool(const char *v, bool *out) {
    static const char *const yes[] = {"true", "yes", "on", "1"}, *const no[] = {"false", "no", "off", "0"};
    for (int i = 0; i < 4; i++) {
        if (strcmp(v, yes[i]) == 0) return *out = true, true;
        if (strcmp(v, no[i]) == 0) return *out = false, true;
    }
    return false;
}

static bool on_entry(void *user, const cli_ini_entry *e, char *why, size_t cap) {
    config_reader *r = user;
    if (*e->section && strcmp(e->section, r->cmd->name) != 0) {
        snprintf(why, cap, "section [%s]: advtrain %s reads [%s] only", e->section, r->cmd->name, r->cmd->name);
        return false;
    }
    cli_option *o = (cli_option *)cli_find(r->cmd, e->key);
    if (!o || cli_not_in_config(r->cmd, o)) {
        snprintf(why, cap, "'%s' is not a setting of advtrain %s (see advtrain %s --help)", e->key, r->cmd->name,
                 r->cmd->name);
        return false;
    }
    int index = (int)(o - r->cmd->options);
    if (r->from_command_line[index]) return true; /* the command line wins */
    if (o->type == OPT_FLAG) {
        bool on;
        if (!parse_bool(e->value, &on)) {
            snprintf(why, cap, "%s = %s: use true or false", e->key, e->value);
            return false;
        }
        *(bool *)o->target = on;
        o->seen = true;
        return true;
    }
    const char *copy = cli_strings_add(r->strings, e->value);
    if (!copy) {
        snprintf(why, cap, "out of memory");
        return false;
    }
    if (!cli_set_option(r->cmd, o, copy)) {
        snprintf(why, cap, "%s = %s: invalid (the message above says why)", e->key, e->value);
        return false;
    }
    return true;
}

static bool cli_listed(const char *const *names, const cli_option *o) {
    for (const char *const *n = names; n && *n; n++)
        if (strcmp(*n, o->name) == 0) return true;
    return false;
}

bool cli_not_in_config(const cli_command *cmd, const cli_option *o) { return cli_listed(cmd->not_in_config, o); }

/* The file's text; NULL after printing why. */
static char *config_text(const cli_command *cmd, const char *path) {
    /* fopen succeeds on a directory, which then reads as empty: the defaults would run. */
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        fprintf(stderr, "advtrain %s: --config %s: is a directory; give a file (e.g. %s/config.ini, "
                        "written by --checkpoint-dir)\n", cmd->name, path, path);
        return NULL;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "advtrain %s: cannot open config file %s\n", cmd->name, path);
        return NULL;
    }
    size_t len;
    char *text = cli_read_text(cmd->name, path, f, &len);
    fclose(f);
    return text;
}

bool cli_read_config(cli_command *cmd, const char *path, cli_strings *strings) {
    char *text = config_text(cmd, path);
    if (!text) return false;
    config_reader *r = calloc(1, sizeof *r);
    if (!r || cmd->noptions > 256) {
        fprintf(stderr, "advtrain %s: cannot read %s: out of memory\n", cmd->name, path);
        free(r);
        free(text);
        return false;
    }
    r->cmd = cmd;
    r->strings = strings;
    for (int i = 0; i < cmd->noptions; i++) r->from_command_line[i] = cmd->options[i].seen;
    cli_ini_error err;
    bool ok = cli_ini_parse(text, false, on_entry, r, &err);
    if (!ok && err.line == 0)
        fprintf(stderr, "advtrain %s: out of memory reading %s\n", cmd->name, path);
    else if (!ok)
        fprintf(stderr, "advtrain %s: %s line %d: %s\n", cmd->name, path, err.line,
                *err.what ? err.what : "not 'name = value', '[section]' or a ; comment");
    free(r);
    free(text);
    return ok;
}

/* The text of a config file being written; `failed` once an allocation failed. */
typedef struct text_buf {
    char *p;
    size_t len, cap;
    bool failed;
} text_buf;

static void append(text_buf *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void append(text_buf *t, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = t->failed ? -1 : vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        t->failed = true;
        return;
    }
    if (t->len + (size_t)n + 1 > t->cap) {
        size_t cap = 2 * (t->len + (size_t)n + 1);
        char *bigger = realloc(t->p, cap);
        if (!bigger) {
            t->failed = true;
            return;
        }
        t->p = bigger;
        t->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(t->p + t->len, t->cap - t->len, fmt, ap);
    va_end(ap);
    t->len += (size_t)n;
}

/* One option's value as the config file writes it: a string option's own text (any length: a
 * fixed buffer cut long specs short), else the number or flag formatted into num. */
static const char *value_text(const cli_option *o, char *num, size_t cap) {
    switch (o->type) {
    case OPT_INT: snprintf(num, cap, "%d", *(const int *)o->target); break;
    case OPT_U64: snprintf(num, cap, "%llu", (unsigned long long)*(const uint64_t *)o->target); break;
    case OPT_FLOAT: cli_format_float(num, cap, *(const float *)o->target); break;
    case OPT_STRING: {
        const char *s = *(const char *const *)o->target;
        return s ? s : "";
    }
    case OPT_FLAG: snprintf(num, cap, "%s", *(const bool *)o->target ? "true" : "false"); break;
    }
    return num;
}

/* The header. A run directory's config.ini names that directory: rerunning it as it stands
 * would meet the directory's own run (refused), so the hint says how to rerun elsewhere. */
static void rerun_hint(const cli_command *cmd, const char *path, text_buf *t) {
    const cli_option *dir = cli_find(cmd, "checkpoint-dir");
    const char *d = dir && dir->seen ? *(const char *const *)dir->target : NULL;
    append(t, "; advtrain %s: the effective configuration of this run. Settings that were\n"
              "; given are active; the others show their defaults, commented out.\n",
           cmd->name);
    if (d)
        append(t, "; Rerun with: advtrain %s --config %s --checkpoint-dir NEW_DIR\n"
                  "; Continue it: advtrain %s --resume %s\n[%s]\n",
               cmd->name, path, cmd->name, d, cmd->name);
    else
        append(t, "; Rerun with: advtrain %s --config %s\n[%s]\n", cmd->name, path, cmd->name);
}

/* Whether `name =v` reads back as v: the reader trims blanks around the value, cuts it at a ';'
 * after a blank (a note) and reads one line. INI has no quoting, so such a value cannot be
 * recorded at all. */
static bool ini_value_survives(const char *v) {
    size_t n = strlen(v);
    if (n > 0 && (isspace((unsigned char)v[0]) || isspace((unsigned char)v[n - 1]))) return false;
    if (strchr(v, '\n')) return false;
    for (size_t i = 1; i < n; i++)
        if (v[i] == ';' && isspace((unsigned char)v[i - 1])) return false;
    return true;
}

/* One option's line; false (with the message printed) if its value would not read back. */
static bool option_line(const cli_command *cmd, const cli_option *o, const char *path, text_buf *t) {
    char num[64];
    const char *value = value_text(o, num, sizeof num);
    if (!o->seen && o->type == OPT_STRING && !*value) return true; /* unset, no default */
    if (o->seen && !ini_value_survives(value)) {
        /* A config file that reruns the run differently is worse than none. */
        fprintf(stderr, "advtrain %s: cannot record --%s '%s' in %s: an INI value may not start or "
                        "end with a blank, hold ' ;' or a newline\n",
                cmd->name, o->name, value, path);
        return false;
    }
    if (!o->seen && o->note)
        append(t, "; %s = %s  ; %s\n", o->name, value, o->note);
    else /* "name = ;x" would read as an empty value and a note; "name =;x" reads ";x" */
        append(t, "%s%s =%s%s\n", o->seen ? "" : "; ", o->name, value[0] == ';' ? "" : " ", value);
    return true;
}

bool cli_write_config(const cli_command *cmd, const char *path) {
    text_buf t = {0};
    rerun_hint(cmd, path, &t);
    bool ok = true;
    for (int i = 0; ok && i < cmd->noptions; i++) {
        const cli_option *o = &cmd->options[i];
        if (cli_not_in_config(cmd, o) || cli_listed(cmd->not_recorded, o)) continue;
        ok = option_line(cmd, o, path, &t);
    }
    if (ok && t.failed) {
        fprintf(stderr, "advtrain %s: out of memory writing %s\n", cmd->name, path);
        ok = false;
    }
    if (ok) ok = cli_write_text_atomic(cmd->name, path, t.p, t.len);
    free(t.p);
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
