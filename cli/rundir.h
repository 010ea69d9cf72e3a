/* Run directories of fit --checkpoint-dir (cli/rundir.c). */
#ifndef ADVTRAIN_RUNDIR_H
#define ADVTRAIN_RUNDIR_H
#include "cli.h"

/* Whether dir holds files of a run; their names, comma-separated, go to found. */
bool rundir_holds_run(const char *dir, char *found, size_t cap);
/* Removes the run files from dir (--force); prints why and returns false on failure. */
bool rundir_clear(const char *cmd, const char *dir);
/* The first of DIR-2, DIR-3, ... that does not exist. */
void rundir_fresh_name(const char *dir, char *buf, size_t cap);
/* Whether the run's checkpoint says early stopping ended it. */
bool rundir_early_stopped(const char *dir);
/* Whether dir is a run directory (config.ini or last.safetensors: a file alone is not). */
bool rundir_is_run(const char *dir);
/* Whether two paths name the same existing directory or file. */
bool rundir_same(const char *a, const char *b);
/* Whether path's file name is one a run directory holds (model.safetensors, metrics.csv, ...). */
bool rundir_run_file(const char *path);
/* The directory part of path ("." when there is none). */
void rundir_parent(const char *path, char *buf, size_t cap);
#endif
