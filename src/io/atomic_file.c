/* Atomic file writes: a temporary file in the target's directory, written, flushed and fsynced,
 * then renamed over the target, so that a reader (or a process killed mid-write) sees the old
 * file or the new one, never a mix. Model files, checkpoints and the CLI's text files use it. */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* mkstemp creates files 0600; give the result the mode a plain create would have had (or keep
 * the mode of the file being replaced). POSIX has no way to read the umask without setting it. */
static void set_new_file_mode(int fd, const char *path) {
    struct stat st;
    mode_t mode;
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
        mode = st.st_mode & 07777;
    } else {
        mode_t mask = umask(077);
        umask(mask);
        mode = 0666 & ~mask;
    }
    (void)fchmod(fd, mode);
}

void at_sync_parent_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    char *dir = slash ? at_alloc((size_t)(slash - path) + 2, "directory name") : NULL;
    if (slash && !dir) return;
    if (dir) {
        size_t n = slash == path ? 1 : (size_t)(slash - path);
        memcpy(dir, path, n);
        dir[n] = '\0';
    }
    int fd = open(dir ? dir : ".", O_RDONLY);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(dir);
}

at_status at_temp_open(const char *path, char **tmp_out, FILE **fp_out) {
    static const char suffix[] = ".tmp.XXXXXX";
    *tmp_out = NULL;
    *fp_out = NULL;
    size_t plen = strlen(path);
    char *tmp = at_alloc(plen + sizeof suffix, "temporary file name");
    if (!tmp) return AT_ERR_NOMEM;
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, suffix, sizeof suffix);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        at_status s = at_fail(AT_ERR_IO, "%s: cannot create temporary file %s: %s", path, tmp,
                              strerror(errno));
        free(tmp);
        return s;
    }
    set_new_file_mode(fd, path);
    FILE *fp = fdopen(fd, "wb");
    if (!fp) {
        at_status s = at_fail(AT_ERR_IO, "%s: cannot open temporary file %s: %s", path, tmp,
                              strerror(errno));
        close(fd);
        unlink(tmp);
        free(tmp);
        return s;
    }
    *tmp_out = tmp;
    *fp_out = fp;
    return AT_OK;
}

at_status at_temp_close(const char *path, const char *tmp, FILE *fp) {
    at_status s = AT_OK;
    if (ferror(fp) || fflush(fp) != 0 || fsync(fileno(fp)) != 0)
        s = at_fail(AT_ERR_IO, "%s: cannot flush %s: %s", path, tmp, strerror(errno));
    if (fclose(fp) != 0 && s == AT_OK)
        s = at_fail(AT_ERR_IO, "%s: cannot close %s: %s", path, tmp, strerror(errno));
    return s;
}

/* Temp file in the target's directory (so rename is atomic), synced, then renamed over the
 * target. On failure the temp file is removed and the target is untouched. */
at_status at_write_atomic_with(const char *path, at_write_fn write, void *user) {
    char *tmp;
    FILE *fp;
    at_status s = at_temp_open(path, &tmp, &fp);
    if (s != AT_OK) return s;
    s = write(fp, path, tmp, user);
    at_status closed = at_temp_close(path, tmp, fp);
    if (s == AT_OK) s = closed;
    if (s == AT_OK && rename(tmp, path) != 0)
        s = at_fail(AT_ERR_IO, "%s: cannot replace with %s: %s", path, tmp, strerror(errno));
    if (s != AT_OK) unlink(tmp);
    else at_sync_parent_dir(path);
    free(tmp);
    return s;
}

typedef struct bytes {
    const void *data;
    size_t len;
} bytes;

static at_status write_bytes(FILE *fp, const char *path, const char *tmp, void *user) {
    const bytes *b = user;
    if (b->len && fwrite(b->data, 1, b->len, fp) != b->len)
        return at_fail(AT_ERR_IO, "%s: cannot write %s: %s", path, tmp, strerror(errno));
    return AT_OK;
}

at_status at_file_write_atomic(const char *path, const void *data, size_t len) {
    if (!path || (!data && len)) return at_fail(AT_ERR_ARG, "at_file_write_atomic: no path or data");
    bytes b = {data, len};
    return at_write_atomic_with(path, write_bytes, &b);
}
