/* The files a C export writes together (docs/export.md): the .h/.c pair and, for int8 models,
 * the golden test vectors. Each is written to a temporary name beside its target, and all are
 * renamed only when every one is complete, so a failed export (full disk, bad directory) leaves
 * the previous files as they were. */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

bool at_export_prefix_ok(const char *p) {
    if (!p || !*p || strlen(p) > AT_EXPORT_MAX_PREFIX) return false;
    if (!(isalpha((unsigned char)p[0]) || p[0] == '_')) return false;
    for (const char *c = p; *c; c++)
        if (!(isalnum((unsigned char)*c) || *c == '_') || (unsigned char)*c > 127) return false;
    return true;
}

at_status at_export_check(const char *dir, const char *prefix) {
    if (!dir || !*dir) return at_fail(AT_ERR_ARG, "C export: no output directory");
    if (!at_export_prefix_ok(prefix))
        return at_fail(AT_ERR_ARG,
                       "C export: prefix '%s' is not a C identifier (letters, digits and '_', not "
                       "starting with a digit, at most %d characters)",
                       prefix ? prefix : "(null)", AT_EXPORT_MAX_PREFIX);
    return AT_OK;
}

static char *join_path(const char *dir, const char *name, const char *ext) {
    size_t n = strlen(dir) + strlen(name) + strlen(ext) + 2;
    char *p = at_alloc(n, "file name");
    if (p) {
        bool slash = *dir && dir[strlen(dir) - 1] == '/';
        snprintf(p, n, "%s%s%s%s", dir, slash ? "" : "/", name, ext);
    }
    return p;
}

/* The directory, created when missing (one level, as `mkdir`). */
static at_status ensure_dir(const char *dir) {
    struct stat st;
    if (stat(dir, &st) != 0) {
        if (errno != ENOENT || mkdir(dir, 0777) != 0)
            return at_fail(AT_ERR_IO, "%s: cannot create the directory: %s", dir, strerror(errno));
    } else if (!S_ISDIR(st.st_mode)) {
        return at_fail(AT_ERR_IO, "%s: not a directory", dir);
    }
    return AT_OK;
}

/* Each file to its temporary name; a target that exists but is not a plain file would fail its
 * rename, so it is refused before anything is written. */
static at_status write_all(char **paths, char **tmps, int nfiles, at_export_write_fn write, void *user) {
    struct stat st;
    for (int f = 0; f < nfiles; f++)
        if (stat(paths[f], &st) == 0 && !S_ISREG(st.st_mode))
            return at_fail(AT_ERR_IO, "%s: exists and is not a regular file", paths[f]);
    for (int f = 0; f < nfiles; f++) {
        FILE *fp;
        at_status s = at_temp_open(paths[f], &tmps[f], &fp);
        if (s != AT_OK) return s;
        s = write(fp, f, user);
        const at_status fs = at_temp_close(paths[f], tmps[f], fp);
        if (s != AT_OK || fs != AT_OK) return s != AT_OK ? s : fs;
    }
    return AT_OK;
}

at_status at_export_files(const char *dir, const char *prefix, const char *const *suffixes, int nfiles,
                          at_export_write_fn write, void *user) {
    at_status s = at_export_check(dir, prefix);
    if (s != AT_OK) return s;
    s = ensure_dir(dir);
    if (s != AT_OK) return s;
    char *paths[AT_EXPORT_MAX_FILES] = {NULL}, *tmps[AT_EXPORT_MAX_FILES] = {NULL};
    if (nfiles > AT_EXPORT_MAX_FILES) return at_fail(AT_ERR_ARG, "C export: %d files at once", nfiles);
    for (int f = 0; f < nfiles && s == AT_OK; f++)
        if (!(paths[f] = join_path(dir, prefix, suffixes[f]))) s = AT_ERR_NOMEM;
    if (s == AT_OK) s = write_all(paths, tmps, nfiles, write, user);
    for (int f = 0; f < nfiles && s == AT_OK; f++)
        if (rename(tmps[f], paths[f]) != 0)
            s = at_fail(AT_ERR_IO, "%s: cannot replace it with %s: %s", paths[f], tmps[f], strerror(errno));
        else {
            free(tmps[f]);
            tmps[f] = NULL;
        }
    if (s == AT_OK) at_sync_parent_dir(paths[0]); /* make the renames durable */
    for (int f = 0; f < nfiles; f++) {
        if (tmps[f]) unlink(tmps[f]);
        free(tmps[f]);
        free(paths[f]);
    }
    return s;
}
