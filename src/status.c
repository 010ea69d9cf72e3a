/* Status codes, the per-thread error message and allocation helpers. */
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>

static _Thread_local char error_message[1024];

const char *at_status_name(at_status s) {
    switch (s) {
    case AT_OK: return "ok";
    case AT_ERR_ARG: return "invalid argument";
    case AT_ERR_NOMEM: return "out of memory";
    case AT_ERR_SHAPE: return "shape mismatch";
    case AT_ERR_IO: return "I/O error";
    case AT_ERR_FORMAT: return "malformed file";
    case AT_ERR_NAN: return "non-finite value";
    case AT_ERR_UNSUPPORTED: return "unsupported";
    case AT_ERR_INTERRUPTED: return "interrupted";
    }
    return "unknown status";
}

const char *at_error_message(void) { return error_message; }

at_status at_fail(at_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error_message, sizeof error_message, fmt, ap);
    va_end(ap);
    return s;
}

void *at_alloc(size_t bytes, const char *what) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) at_fail(AT_ERR_NOMEM, "out of memory allocating %zu bytes for %s", bytes, what);
    return p;
}

void *at_calloc(size_t count, size_t size, const char *what) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) at_fail(AT_ERR_NOMEM, "out of memory allocating %zu x %zu bytes for %s", count, size, what);
    return p;
}

float *at_alloc_floats(size_t count, const char *what) {
    /* A count whose byte size would wrap around must fail, not allocate a few bytes. */
    size_t bytes = count > (SIZE_MAX - 63) / sizeof(float) ? 0 : (count * sizeof(float) + 63) & ~(size_t)63;
    float *p = bytes || !count ? aligned_alloc(64, bytes ? bytes : 64) : NULL;
    if (!p) {
        at_fail(AT_ERR_NOMEM, "out of memory allocating %zu floats for %s", count, what);
        return NULL;
    }
    memset(p, 0, bytes);
    return p;
}

char *at_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = at_alloc(n, "a string");
    if (d) memcpy(d, s, n);
    return d;
}
