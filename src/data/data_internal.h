/* Helpers shared by the dataset loaders (src/data only). */
#ifndef ADVTRAIN_DATA_INTERNAL_H
#define ADVTRAIN_DATA_INTERNAL_H
#include "internal.h"

#include <zlib.h>

/* Opens `path` for reading through zlib, so gzipped and plain files both work.
 * A missing or unreadable file gives AT_ERR_IO naming the path and the system's reason. */
at_status at_gz_open(const char *path, gzFile *out);

/* Reads up to `n` bytes into buf; *got receives how many arrived (fewer only at end of file,
 * including a gzip stream that was cut short). Corrupt gzip data gives AT_ERR_FORMAT. */
at_status at_gz_read(gzFile f, const char *path, void *buf, size_t n, size_t *got);

/* Reads until end of file or `limit` bytes into a new buffer (*out, *len; free with free()).
 * The buffer grows as data arrives, so a header that lies about its size cannot force a huge
 * allocation before the file proves it has the data. */
at_status at_gz_read_upto(gzFile f, const char *path, size_t limit, uint8_t **out, size_t *len);

/* Joins dir and name into buf (cap bytes); AT_ERR_ARG if it does not fit. */
at_status at_path_join(char *buf, size_t cap, const char *dir, const char *name);
#endif
