/* Reading files through zlib: gzread is transparent for plain files, so one path serves both
 * "train-images-idx3-ubyte.gz" and an already decompressed copy. */
#include "data_internal.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

at_status at_gz_open(const char *path, gzFile *out) {
    *out = NULL;
    errno = 0;
    gzFile f = gzopen(path, "rb");
    if (!f) {
        /* zlib sets errno only when the open itself failed; 0 means its own allocation did. */
        if (errno == 0) return at_fail(AT_ERR_NOMEM, "cannot open %s: out of memory", path);
        return at_fail(AT_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    }
    /* A larger buffer than zlib's 8 KiB default: fewer read() calls on a 26 MB archive. */
    gzbuffer(f, 1u << 18);
    *out = f;
    return AT_OK;
}

at_status at_gz_read(gzFile f, const char *path, void *buf, size_t n, size_t *got) {
    uint8_t *p = buf;
    size_t done = 0;
    while (done < n) {
        /* gzread takes an unsigned count and returns an int: stay well inside both. */
        size_t want = AT_MIN(n - done, (size_t)1 << 30);
        errno = 0;
        int r = gzread(f, p + done, (unsigned)want);
        if (r < 0) {
            int saved = errno, err = Z_OK;
            const char *msg = gzerror(f, &err);
            if (err == Z_ERRNO) {
                *got = done;
                return at_fail(AT_ERR_IO, "cannot read %s: %s", path,
                               saved ? strerror(saved) : msg);
            }
            if (err == Z_BUF_ERROR) break; /* gzip stream cut short: the caller reports it */
            *got = done;
            return at_fail(AT_ERR_FORMAT, "%s: corrupt gzip data (%s)", path, msg);
        }
        if (r == 0) break;
        done += (size_t)r;
    }
    *got = done;
    return AT_OK;
}

at_status at_gz_read_upto(gzFile f, const char *path, size_t limit, uint8_t **out, size_t *len) {
    *out = NULL;
    *len = 0;
    size_t cap = AT_MIN(limit, (size_t)16 << 20), used = 0;
    uint8_t *buf = at_alloc(cap, path);
    if (!buf) return AT_ERR_NOMEM;
    for (;;) {
        size_t got;
        at_status s = at_gz_read(f, path, buf + used, cap - used, &got);
        if (s != AT_OK) {
            free(buf);
            return s;
        }
        used += got;
        if (used < cap || cap == limit) break; /* end of file, or read all we may */
        size_t grown = cap > limit / 2 ? limit : cap * 2;
        uint8_t *nb = realloc(buf, grown);
        if (!nb) {
            free(buf);
            return at_fail(AT_ERR_NOMEM, "out of memory reading %s (%zu bytes)", path, grown);
        }
        buf = nb;
        cap = grown;
    }
    *out = buf;
    *len = used;
    return AT_OK;
}

at_status at_path_join(char *buf, size_t cap, const char *dir, const char *name) {
    size_t dl = strlen(dir);
    const char *sep = (dl > 0 && dir[dl - 1] == '/') ? "" : "/";
    int w = snprintf(buf, cap, "%s%s%s", dir, sep, name);
    if (w < 0 || (size_t)w >= cap) return at_fail(AT_ERR_ARG, "path too long: %s/%s", dir, name);
    return AT_OK;
}
