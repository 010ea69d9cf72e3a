/* Run directories (fit --checkpoint-dir): which files make a run, whether a directory already
 * holds one, clearing it for --force, a fresh name to suggest, and whether a run is complete.
 * A new run must never mix its files with another run's: report DIR would then show the new
 * curves beside the old best.safetensors. */
#define _POSIX_C_SOURCE 200809L /* stat */
#include "rundir.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

/* Every file fit writes into a run directory (model.safetensors is the default --out). */
static const char *const run_files[] = {"config.ini", "metrics.csv", "last.safetensors",
                                        "best.safetensors", "model.safetensors", NULL};

static bool exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

bool rundir_holds_run(const char *dir, char *found, size_t cap) {
    size_t len = 0;
    if (cap) found[0] = '\0';
    for (const char *const *f = run_files; *f; f++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, *f);
        if (!exists(path)) continue;
        int n = snprintf(found + len, cap - len, "%s%s", len ? ", " : "", *f);
        if (n > 0 && (size_t)n < cap - len) len += (size_t)n;
    }
    return len > 0;
}

bool rundir_clear(const char *cmd, const char *dir) {
    for (const char *const *f = run_files; *f; f++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, *f);
        if (remove(path) != 0 && errno != ENOENT) {
            fprintf(stderr, "advtrain %s: --force: cannot remove %s: %s\n", cmd, path, strerror(errno));
            return false;
        }
    }
    return true;
}

void rundir_fresh_name(const char *dir, char *buf, size_t cap) {
    size_t len = strlen(dir);
    while (len > 1 && dir[len - 1] == '/') len--; /* "runs/pgd/" -> "runs/pgd-2" */
    for (int i = 2; i < 10000; i++) {
        snprintf(buf, cap, "%.*s-%d", (int)len, dir, i);
        if (!exists(buf)) return;
    }
}

bool rundir_early_stopped(const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/last.safetensors", dir);
    at_st_file *f = NULL;
    if (at_st_read(path, &f) != AT_OK) return false;
    /* The training state the library keeps in the checkpoint (src/checkpoint.c). */
    const char *text = at_st_meta_get(f, "advtrain.train_state");
    cJSON *o = text ? cJSON_Parse(text) : NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "early_stopped");
    bool stopped = cJSON_IsNumber(v) && v->valuedouble != 0.0;
    cJSON_Delete(o);
    at_st_free(f);
    return stopped;
}

bool rundir_is_run(const char *dir) {
    char a[4096], b[4096];
    snprintf(a, sizeof a, "%s/config.ini", dir);
    snprintf(b, sizeof b, "%s/last.safetensors", dir);
    return exists(a) || exists(b);
}

bool rundir_same(const char *a, const char *b) {
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

void rundir_parent(const char *path, char *buf, size_t cap) {
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(buf, cap, ".");
    else if (slash == path) snprintf(buf, cap, "/");
    else snprintf(buf, cap, "%.*s", (int)(slash - path), path);
}

bool rundir_run_file(const char *path) {
    const char *slash = strrchr(path, '/'), *base = slash ? slash + 1 : path;
    for (const char *const *f = run_files; *f; f++)
        if (strcmp(base, *f) == 0) return true;
    return false;
}
