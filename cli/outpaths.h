/* Output paths checked before any work starts (cli/outpaths.c). */
#ifndef ADVTRAIN_OUTPATHS_H
#define ADVTRAIN_OUTPATHS_H
#include "cli.h"

/* A file the command will write: its parent directories are created if missing; an existing
 * directory, an uncreatable parent or an unwritable one is an error printed at once, naming
 * cmd, flag and path. Returns 0, or the exit code (EXIT_USAGE, EXIT_RUN_FAILED). */
int out_check_file(const char *cmd, const char *flag, const char *path);
/* A directory the command will write into: created with its parents if missing. */
int out_check_dir(const char *cmd, const char *flag, const char *dir);
#endif
