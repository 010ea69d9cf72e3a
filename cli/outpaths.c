/* Output paths, checked before any work starts: a run that trains for an hour and then cannot
 * save its model has lost that hour. Every subcommand's outputs (fit --out, --checkpoint-dir,
 * --log, attack --out and --grid, report --out, export --c) go through these two functions, so
 * they all behave alike: missing parent directories are created (mkdir -p, as --checkpoint-dir
 * always did), and a path that can never be written fails at once, naming the flag and path. */
#define _POSIX_C_SOURCE 200809L /* mkdir, access */
#include "outpaths.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* mkdir -p dir; the message names the flag, the path the user gave and the part that failed. */
static int make_dirs(const char *cmd, const char *flag, const char *given, const char *dir) {
    char buf[4096];
    size_t len = strlen(dir);
    if (len >= sizeof buf) {
        fprintf(stderr, "advtrain %s: %s %s: path too long\n", cmd, flag, given);
        return EXIT_USAGE;
    }
    memcpy(buf, dir, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (buf[i] != '/' && buf[i] != '\0') continue;
        char saved = buf[i];
        buf[i] = '\0';
        struct stat st;
        if (mkdir(buf, 0777) != 0 && errno != EEXIST) {
            fprintf(stderr, "advtrain %s: %s %s: cannot create the directory %s: %s\n", cmd, flag,
                    given, buf, strerror(errno));
            return EXIT_RUN_FAILED;
        }
        if (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode)) {
            if (strcmp(buf, given) == 0)
                fprintf(stderr, "advtrain %s: %s %s: exists and is not a directory\n", cmd, flag, given);
            else
                fprintf(stderr, "advtrain %s: %s %s: %s exists and is not a directory\n", cmd, flag,
                        given, buf);
            return EXIT_RUN_FAILED;
        }
        buf[i] = saved;
    }
    /* Writes are atomic (a temporary file renamed in place): the directory must be writable. */
    if (access(dir, W_OK | X_OK) != 0) {
        fprintf(stderr, "advtrain %s: %s %s: cannot write in %s: %s\n", cmd, flag, given, dir,
                strerror(errno));
        return EXIT_RUN_FAILED;
    }
    return 0;
}

int out_check_dir(const char *cmd, const char *flag, const char *dir) {
    if (!dir || !*dir) {
        fprintf(stderr, "advtrain %s: %s: empty path\n", cmd, flag);
        return EXIT_USAGE;
    }
    return make_dirs(cmd, flag, dir, dir);
}

int out_check_file(const char *cmd, const char *flag, const char *path) {
    size_t len = path ? strlen(path) : 0;
    if (len == 0) {
        fprintf(stderr, "advtrain %s: %s: empty path\n", cmd, flag);
        return EXIT_USAGE;
    }
    struct stat st;
    if (path[len - 1] == '/' || (stat(path, &st) == 0 && S_ISDIR(st.st_mode))) {
        fprintf(stderr, "advtrain %s: %s %s: is a directory; name a file (e.g. %s%smodel.safetensors)\n",
                cmd, flag, path, path, path[len - 1] == '/' ? "" : "/");
        return EXIT_USAGE;
    }
    char parent[4096];
    const char *slash = strrchr(path, '/');
    if (!slash) return make_dirs(cmd, flag, path, ".");
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    if (n >= sizeof parent) {
        fprintf(stderr, "advtrain %s: %s %s: path too long\n", cmd, flag, path);
        return EXIT_USAGE;
    }
    memcpy(parent, path, n);
    parent[n] = '\0';
    return make_dirs(cmd, flag, path, parent);
}
