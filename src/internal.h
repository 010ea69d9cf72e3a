/* Helpers shared inside the library; not part of the public API. */
#ifndef ADVTRAIN_INTERNAL_H
#define ADVTRAIN_INTERNAL_H
#include "advtrain.h"
#include <stdlib.h>

/* Allocation that records a clear error on failure. */
void *at_alloc(size_t bytes, const char *what);
void *at_calloc(size_t count, size_t size, const char *what);
/* 64-byte aligned, zeroed; free with free(). */
float *at_alloc_floats(size_t count, const char *what);

/* Duplicates a string (NULL on failure, with the error set). */
char *at_strdup(const char *s);

/* Records the spec string a network was built from (built-in name or custom spec). */
at_status at_net_set_spec(at_net *net, const char *spec);

#define AT_MIN(a, b) ((a) < (b) ? (a) : (b))
#define AT_MAX(a, b) ((a) > (b) ? (a) : (b))
#endif
