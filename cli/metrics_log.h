/* The per-epoch CSV log of `advtrain fit --log FILE` (metrics.csv of a run directory): its
 * columns, written here and read by `advtrain report` (cli/report.c). */
#ifndef ADVTRAIN_METRICS_LOG_H
#define ADVTRAIN_METRICS_LOG_H
#include "cli.h"

/* The columns in file order: the one list the writer and the readers share. The epoch comes
 * first (a resumed log keeps rows by it). */
typedef enum metrics_column {
    MC_EPOCH,
    MC_LR,
    MC_TRAIN_LOSS,
    MC_TRAIN_METRIC, /* train_acc, or train_mse for regression */
    MC_VAL_LOSS,
    MC_VAL_METRIC,   /* val_acc / val_mse */
    MC_TEST_METRIC,  /* test_acc / test_mse */
    MC_EPS,
    MC_ADV_TRAIN_ACC,
    MC_ROBUST_VAL_ACC,
    MC_GUARD_ACC,
    MC_PENALTY,
    MC_L1_PENALTY,
    MC_L2_PENALTY,
    MC_SECONDS,
    MC_SKIPPED,      /* batches skipped for a non-finite loss or gradient (--on-nonfinite skip) */
    MC_COUNT
} metrics_column;

/* A column's name in the header; the metric columns are named for accuracy, or for MSE when
 * regression is true. */
const char *metrics_column_name(metrics_column c, bool regression);
/* Whether a column (any name, a future one too) holds accuracies: fractions in [0,1], shown
 * in %. */
bool metrics_column_is_accuracy(const char *name);

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
