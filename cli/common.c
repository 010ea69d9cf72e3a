/* Error reporting, data loading, files and JSON output for the subcommands. */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include "cli.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void cli_error(const char *cmd, const char *what, at_status s) {
    const char *detail = at_error_message();
    fprintf(stderr, "advtrain %s: %s: %s\n", cmd, what, *detail ? detail : at_status_name(s));
}

bool cli_load_data(const char *cmd, at_data *data, const char *source) {
    at_status s = at_data_load(data, source);
    if (s != AT_OK) {
        fprintf(stderr, "advtrain %s: cannot load data '%s': %s\n", cmd, source,
                *at_error_message() ? at_error_message() : at_status_name(s));
        return false;
    }
    return true;
}

const char *cli_s(long n) { return n == 1 ? "" : "s"; }

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void cli_print_json(cJSON *o) {
    char *text = cli_json_text(o);
    printf("%s\n", text ? text : "{}");
    free(text);
    cJSON_Delete(o);
}

bool cli_write_text_atomic(const char *cmd, const char *path, const char *text, size_t len) {
    at_status s = at_file_write_atomic(path, text, len);
    if (s != AT_OK) cli_error(cmd, "writing a file", s);
    return s == AT_OK;
}

void cli_format_float(char *buf, size_t cap, float v) {
    for (int digits = 6; digits <= 9; digits++) {
        snprintf(buf, cap, "%.*g", digits, (double)v);
        if ((float)strtod(buf, NULL) == v) return;
    }
}

char *cli_trim(char *s) {
    /* isspace()'s blanks, as libinih trims: a value longer than its line buffer is trimmed here
     * (config_file.c), and must come out as a shorter one would */
    while (isspace((unsigned char)*s)) s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = '\0';
    return s;
}

/* Reads f into *buf (grown by doubling); false when memory or the 1 GiB cap runs out. */
static bool read_all(FILE *f, char **buf, size_t *n, bool *too_big) {
    size_t cap = 4096;
    *n = 0;
    *too_big = false;
    *buf = malloc(cap);
    while (*buf) {
        if (*n + 1 >= cap) {
            *too_big = cap > ((size_t)1 << 30);
            char *bigger = *too_big ? NULL : realloc(*buf, cap * 2);
            if (!bigger) break;
            *buf = bigger;
            cap *= 2;
        }
        size_t got = fread(*buf + *n, 1, cap - 1 - *n, f);
        *n += got;
        if (got == 0) return true;
    }
    free(*buf);
    *buf = NULL;
    return false;
}

char *cli_read_text(const char *cmd, const char *path, FILE *f, size_t *len) {
    char *buf;
    size_t n;
    bool too_big;
    if (!read_all(f, &buf, &n, &too_big)) {
        fprintf(stderr, "advtrain %s: %s: %s\n", cmd, path, too_big ? "larger than 1 GiB" : "out of memory");
        return NULL;
    }
    if (ferror(f)) {
        fprintf(stderr, "advtrain %s: error reading %s\n", cmd, path);
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    if (memchr(buf, '\0', n)) {
        fprintf(stderr, "advtrain %s: %s: not a text file (it holds NUL bytes)\n", cmd, path);
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}
