/* The per-epoch metrics log of `advtrain fit --log FILE` (CSV, one row per epoch). On resume the
 * rows after the checkpoint's epoch are dropped (a run killed between logging an epoch and
 * checkpointing it repeats that epoch) and new rows are appended. */
#include "metrics_log.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *header(bool regression) {
    return regression
               ? "epoch,lr,train_loss,train_mse,val_loss,val_mse,test_mse,eps,adv_train_acc,"
                 "robust_val_acc,guard_acc,penalty,l1_penalty,l2_penalty,seconds\n"
               : "epoch,lr,train_loss,train_acc,val_loss,val_acc,test_acc,eps,adv_train_acc,"
                 "robust_val_acc,guard_acc,penalty,l1_penalty,l2_penalty,seconds\n";
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
        char *end;
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
    const char *h = header(regression);
    size_t hl = strlen(h);
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

/* A number, or an empty cell when it was not measured. */
static void cell(FILE *f, double v, const char *fmt) {
    fputc(',', f);
    if (!isnan(v)) fprintf(f, fmt, v);
}

bool metrics_log_row(metrics_log *m, const at_epoch_stats *s, double l1_penalty, double l2_penalty) {
    if (!m->f) return true;
    FILE *f = m->f;
    fprintf(f, "%d", s->epoch);
    char lr[32];
    cli_format_float(lr, sizeof lr, s->lr);
    fprintf(f, ",%s", lr);
    cell(f, s->train_loss, "%.6f");
    cell(f, s->train_metric, "%.6f");
    cell(f, s->val_loss, "%.6f");
    cell(f, s->val_metric, "%.6f");
    cell(f, s->test_metric, "%.6f");
    cell(f, s->eps, "%.6g");
    cell(f, s->adv_metric, "%.6f");
    cell(f, s->robust_val, "%.6f");
    cell(f, s->guard_acc, "%.6f");
    cell(f, s->penalty, "%.6g");
    cell(f, l1_penalty, "%.6g");
    cell(f, l2_penalty, "%.6g");
    cell(f, s->seconds, "%.3f");
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
