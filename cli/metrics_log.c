/* The per-epoch metrics log of `advtrain fit --log FILE` (CSV, one row per epoch, the columns
 * of COLUMNS below). On resume the rows after the checkpoint's epoch are dropped (a run killed between logging an epoch and
 * checkpointing it repeats that epoch) and new rows are appended. */
#include "metrics_log.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Name (classification, regression) and cell format of every column, in file order. A NULL
 * format: the shortest text that reads back as the float (the learning rate). */
static const struct {
    const char *name, *regression_name, *format;
} COLUMNS[MC_COUNT] = {
    [MC_EPOCH] = {"epoch", NULL, "%.0f"},
    [MC_LR] = {"lr", NULL, NULL},
    [MC_TRAIN_LOSS] = {"train_loss", NULL, "%.6f"},
    [MC_TRAIN_METRIC] = {"train_acc", "train_mse", "%.6f"},
    [MC_VAL_LOSS] = {"val_loss", NULL, "%.6f"},
    [MC_VAL_METRIC] = {"val_acc", "val_mse", "%.6f"},
    [MC_TEST_METRIC] = {"test_acc", "test_mse", "%.6f"},
    [MC_EPS] = {"eps", NULL, "%.6g"},
    [MC_ADV_TRAIN_ACC] = {"adv_train_acc", NULL, "%.6f"},
    [MC_ROBUST_VAL_ACC] = {"robust_val_acc", NULL, "%.6f"},
    [MC_GUARD_ACC] = {"guard_acc", NULL, "%.6f"},
    [MC_PENALTY] = {"penalty", NULL, "%.6g"},
    [MC_L1_PENALTY] = {"l1_penalty", NULL, "%.6g"},
    [MC_L2_PENALTY] = {"l2_penalty", NULL, "%.6g"},
    [MC_SECONDS] = {"seconds", NULL, "%.3f"},
    [MC_SKIPPED] = {"skipped_batches", NULL, "%.0f"},
};

const char *metrics_column_name(metrics_column c, bool regression) {
    if (c < 0 || c >= MC_COUNT) return "";
    return regression && COLUMNS[c].regression_name ? COLUMNS[c].regression_name : COLUMNS[c].name;
}

bool metrics_column_is_accuracy(const char *name) {
    size_t n = strlen(name);
    return n >= 4 && strcmp(name + n - 4, "_acc") == 0;
}

/* The header line ("epoch,lr,...,seconds\n") into buf; its length. */
static size_t header(bool regression, char *buf, size_t cap) {
    size_t len = 0;
    for (int c = 0; c < MC_COUNT && len < cap; c++)
        len += (size_t)snprintf(buf + len, cap - len, "%s%s", metrics_column_name(c, regression),
                                c + 1 < MC_COUNT ? "," : "\n");
    return len < cap ? len : cap - 1;
}

/* The existing rows for epochs 1..keep, or NULL (with *len 0) when the file does not exist. */
static char *kept_rows(const char *path, int keep, size_t *len, bool *failed) {
    *len = 0;
    *failed = false;
    FILE *f = fopen(path, "r");
    if (!f) {
        *failed = errno != ENOENT;
        if (*failed) fprintf(stderr, "advtrain fit: --log %s: cannot read: %s\n", path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096;
    char *out = malloc(cap), line[4096];
    bool first = true;
    while (out && fgets(line, sizeof line, f)) {
        if (first) { /* the header: written anew */
            first = false;
            continue;
        }
        char *end; /* MC_EPOCH: the first cell */
        long epoch = strtol(line, &end, 10);
        if (end == line || *end != ',' || epoch < 1 || epoch > keep) continue;
        size_t n = strlen(line);
        if (*len + n + 1 > cap) {
            char *bigger = realloc(out, cap = 2 * (*len + n + 1));
            if (!bigger) {
                free(out);
                out = NULL;
                break;
            }
            out = bigger;
        }
        memcpy(out + *len, line, n + 1);
        *len += n;
    }
    fclose(f);
    if (!out) {
        *failed = true;
        fprintf(stderr, "advtrain fit: --log %s: out of memory\n", path);
    }
    return out;
}

bool metrics_log_open(metrics_log *m, const char *path, bool regression, int keep_epochs) {
    memset(m, 0, sizeof *m);
    m->path = path;
    size_t rows_len = 0;
    bool failed = false;
    char *rows = keep_epochs > 0 ? kept_rows(path, keep_epochs, &rows_len, &failed) : NULL;
    if (failed) return false;
    char h[512];
    size_t hl = header(regression, h, sizeof h);
    char *text = malloc(hl + rows_len + 1);
    if (!text) {
        free(rows);
        fprintf(stderr, "advtrain fit: --log %s: out of memory\n", path);
        return false;
    }
    memcpy(text, h, hl);
    if (rows_len) memcpy(text + hl, rows, rows_len);
    text[hl + rows_len] = '\0';
    at_status s = at_file_write_atomic(path, text, hl + rows_len);
    bool ok = s == AT_OK;
    if (!ok) fprintf(stderr, "advtrain fit: --log %s: %s\n", path, at_error_message());
    free(text);
    free(rows);
    if (!ok) return false;
    m->f = fopen(path, "a");
    if (!m->f) {
        fprintf(stderr, "advtrain fit: --log %s: cannot append: %s\n", path, strerror(errno));
        return false;
    }
    return true;
}

/* Column c's cell: a number, or nothing when it was not measured (NAN). */
static void cell(FILE *f, metrics_column c, double v) {
    if (c > 0) fputc(',', f);
    if (!COLUMNS[c].format) {
        char text[32];
        cli_format_float(text, sizeof text, (float)v);
        fputs(text, f);
    } else if (!isnan(v)) {
        fprintf(f, COLUMNS[c].format, v);
    }
}

bool metrics_log_row(metrics_log *m, const at_epoch_stats *s, double l1_penalty, double l2_penalty) {
    if (!m->f) return true;
    FILE *f = m->f;
    const double v[MC_COUNT] = {
        [MC_EPOCH] = s->epoch,           [MC_LR] = s->lr,
        [MC_TRAIN_LOSS] = s->train_loss, [MC_TRAIN_METRIC] = s->train_metric,
        [MC_VAL_LOSS] = s->val_loss,     [MC_VAL_METRIC] = s->val_metric,
        [MC_TEST_METRIC] = s->test_metric, [MC_EPS] = s->eps,
        [MC_ADV_TRAIN_ACC] = s->adv_metric, [MC_ROBUST_VAL_ACC] = s->robust_val,
        [MC_GUARD_ACC] = s->guard_acc,   [MC_PENALTY] = s->penalty,
        [MC_L1_PENALTY] = l1_penalty,    [MC_L2_PENALTY] = l2_penalty,
        [MC_SECONDS] = s->seconds,       [MC_SKIPPED] = s->skipped,
    };
    for (int c = 0; c < MC_COUNT; c++) cell(f, c, v[c]);
    fputc('\n', f);
    if (fflush(f) != 0 || ferror(f)) {
        fprintf(stderr, "advtrain fit: --log %s: cannot write: %s\n", m->path, strerror(errno));
        return false;
    }
    return true;
}

void metrics_log_close(metrics_log *m) {
    if (m->f) fclose(m->f);
    m->f = NULL;
}
