/* The per-epoch CSV log of `advtrain fit --log FILE` (see metrics_log.c for the columns). */
#ifndef ADVTRAIN_METRICS_LOG_H
#define ADVTRAIN_METRICS_LOG_H
#include "cli.h"

typedef struct metrics_log {
    FILE *f;
    const char *path;
} metrics_log;

/* Writes the header; keep_epochs > 0 (resume) keeps the existing rows of epochs 1..keep_epochs.
 * Prints the error (naming the file) and returns false on failure. */
bool metrics_log_open(metrics_log *m, const char *path, bool regression, int keep_epochs);
/* One row: the epoch's statistics; NAN cells stay empty. */
bool metrics_log_row(metrics_log *m, const at_epoch_stats *s, double l1_penalty, double l2_penalty);
void metrics_log_close(metrics_log *m);
#endif
