/* Error reporting, data loading, files and JSON output for the subcommands. */
#define _POSIX_C_SOURCE 200809L /* mkdir, isatty */
#include "cli.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <string.h>
#include <time.h>
#include <unistd.h>

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

bool cli_make_dir(const char *cmd, const char *flag, const char *path) {
    /* mkdir -p: each parent in turn, then the directory itself */
    char buf[4096];
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof buf) {
        fprintf(stderr, "advtrain %s: %s '%s': empty or too long a path\n", cmd, flag, path);
        return false;
    }
    memcpy(buf, path, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (buf[i] != '/' && buf[i] != '\0') continue;
        char saved = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST) {
            fprintf(stderr, "advtrain %s: %s %s: cannot create %s: %s\n", cmd, flag, path, buf,
                    strerror(errno));
            return false;
        }
        buf[i] = saved;
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "advtrain %s: %s %s: exists and is not a directory\n", cmd, flag, path);
        return false;
    }
    return true;
}
