/* advtrain report: PNG plots (PLplot, cli/report_plots.c) and an HTML page for a training run
 * directory (written by `advtrain fit --checkpoint-dir DIR`) or a single model file: training
 * curves from metrics.csv, robust accuracy against eps per attack, weight-magnitude histograms
 * (L1 sparsity), a grid of adversarial examples, and the run's settings and final metrics. */
#include "attack_cli.h"
#include "metrics_log.h"
#include "outpaths.h"
#include "report.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define CMD "report"

enum { PATH_CAP = 4200, EXAMPLE_ROWS = 8 };

static const char *const FASHION_NAMES[10] = {"T-SHIRT", "TROUSER", "PULLOVER", "DRESS", "COAT",
                                              "SANDAL",  "SHIRT",   "SNEAKER",  "BAG",   "BOOT"};

static void fail(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

static void fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "advtrain " CMD ": ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
}

/* DIR/NAME into buf; false (with a message) if it does not fit. */
static bool join(char *buf, size_t cap, const char *dir, const char *name) {
    if ((size_t)snprintf(buf, cap, "%s/%s", dir, name) >= cap) {
        fail("%s/%s: path too long", dir, name);
        return false;
    }
    return true;
}

static bool is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* The shortest decimal that reads back as v (0.025f prints 0.025). */
static void float_text(float v, char *buf, size_t cap) {
    for (int digits = 1; digits <= 9; digits++) {
        snprintf(buf, cap, "%.*g", digits, (double)v);
        if ((float)strtod(buf, NULL) == v) return;
    }
}

/* Reads a whole text file (NUL-terminated). NULL with a message on failure. */
static char *read_text(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fail("cannot read %s: %s", path, strerror(errno));
        return NULL;
    }
    char *text = cli_read_text(CMD, path, f, len);
    fclose(f);
    return text;
}

static char *dup_text(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* Splits buf into lines in place: calls fn(user, line, lineno) for each; stops on false. */
static bool for_lines(char *buf, bool (*fn)(void *, char *, int), void *user) {
    int lineno = 0;
    char *p = buf;
    while (*p) {
        char *nl = strchr(p, '\n');
        if (nl) *nl = '\0';
        lineno++;
        if (!fn(user, p, lineno)) return false;
        if (!nl) break;
        p = nl + 1;
    }
    return true;
}

/* ---------------------------------------------------------------- metrics.csv */

typedef struct metrics {
    const char *path;
    int ncols, nrows, cap;
    char **names;
    double *v; /* nrows x ncols; NAN: not measured */
    int epoch_col;
    bool failed;
} metrics;

static void metrics_free(metrics *m) {
    for (int i = 0; i < m->ncols; i++) free(m->names[i]);
    free(m->names);
    free(m->v);
    memset(m, 0, sizeof *m);
}

static int metrics_col(const metrics *m, const char *name) {
    for (int i = 0; i < m->ncols; i++)
        if (strcmp(m->names[i], name) == 0) return i;
    return -1;
}

static double metrics_at(const metrics *m, int row, int col) {
    return col < 0 || row < 0 ? NAN : m->v[(size_t)row * m->ncols + col];
}

/* Counts the comma-separated fields of a line. */
static int count_fields(const char *line) {
    int n = 1;
    for (; *line; line++) n += *line == ',';
    return n;
}

/* The field at *p (cut at its comma, trimmed); *p moves to the next one. */
static char *next_field(char **p) {
    char *field = *p, *comma = strchr(field, ',');
    if (comma) *comma = '\0';
    *p = comma ? comma + 1 : field + strlen(field);
    return cli_trim(field);
}

/* The header row t of nf column names: unique, non-empty, an epoch among them. */
static bool metrics_header(metrics *m, char *t, int nf, int lineno) {
    m->names = calloc((size_t)nf, sizeof *m->names);
    if (!m->names) {
        fail("%s: out of memory", m->path);
        return false;
    }
    m->epoch_col = -1;
    for (int i = 0; i < nf; i++) {
        char *name = next_field(&t);
        if (!*name) {
            fail("%s:%d: header column %d has no name", m->path, lineno, i + 1);
            return false;
        }
        for (int j = 0; j < i; j++)
            if (strcmp(m->names[j], name) == 0) {
                fail("%s:%d: column '%s' appears twice in the header", m->path, lineno, name);
                return false;
            }
        if (!(m->names[i] = dup_text(name))) {
            fail("%s: out of memory", m->path);
            return false;
        }
        m->ncols = i + 1;
        if (strcmp(name, metrics_column_name(MC_EPOCH, false)) == 0) m->epoch_col = i;
    }
    if (m->epoch_col < 0) {
        fail("%s:%d: the header has no '%s' column (expected %s,%s,%s,...)", m->path, lineno,
             metrics_column_name(MC_EPOCH, false), metrics_column_name(MC_EPOCH, false),
             metrics_column_name(MC_LR, false), metrics_column_name(MC_TRAIN_LOSS, false));
        return false;
    }
    return true;
}

/* Room for one more row. */
static bool metrics_grow(metrics *m) {
    if (m->nrows < m->cap) return true;
    int cap = m->cap ? 2 * m->cap : 64;
    if (cap > 10000000) {
        fail("%s: too many rows", m->path);
        return false;
    }
    double *v = realloc(m->v, sizeof(double) * (size_t)cap * m->ncols);
    if (!v) {
        fail("%s: out of memory", m->path);
        return false;
    }
    m->v = v;
    m->cap = cap;
    return true;
}

/* The number in column i's cell (NAN when empty: not measured), checked against what the
 * column holds. */
static bool metrics_cell(const metrics *m, int i, const char *cell, int lineno, double *out) {
    const char *col = m->names[i];
    if (!*cell) {
        if (i == m->epoch_col) {
            fail("%s:%d: the epoch cell is empty", m->path, lineno);
            return false;
        }
        *out = NAN;
        return true;
    }
    char *end;
    errno = 0;
    double v = strtod(cell, &end);
    if (end == cell || *end || errno == ERANGE) {
        fail("%s:%d: column '%s': '%.40s' is not a number (metrics.csv holds numbers only)", m->path, lineno, col,
             cell);
        return false;
    }
    if (i == m->epoch_col && (!isfinite(v) || v < 0 || v != floor(v) || v > 1e9)) {
        fail("%s:%d: epoch '%.40s' is not a whole number >= 0", m->path, lineno, cell);
        return false;
    }
    if (metrics_column_is_accuracy(col) && isfinite(v) && (v < 0.0 || v > 1.0)) {
        fail("%s:%d: column '%s' holds %.40s: accuracies are fractions in [0,1]", m->path, lineno, col, cell);
        return false;
    }
    *out = v;
    return true;
}

/* A data row t of nf fields. */
static bool metrics_row(metrics *m, char *t, int nf, int lineno) {
    if (nf != m->ncols) {
        fail("%s:%d: malformed line: %d fields, the header has %d columns", m->path, lineno, nf, m->ncols);
        return false;
    }
    if (!metrics_grow(m)) return false;
    double *row = m->v + (size_t)m->nrows * m->ncols;
    for (int i = 0; i < nf; i++)
        if (!metrics_cell(m, i, next_field(&t), lineno, &row[i])) return false;
    m->nrows++;
    return true;
}

static bool metrics_line(void *user, char *line, int lineno) {
    metrics *m = user;
    char *t = cli_trim(line);
    if (!*t) return true; /* blank lines are skipped */
    int nf = count_fields(t);
    return m->names ? metrics_row(m, t, nf, lineno) : metrics_header(m, t, nf, lineno);
}

static bool metrics_load(const char *path, metrics *m) {
    memset(m, 0, sizeof *m);
    m->path = path;
    size_t len;
    char *buf = read_text(path, &len);
    if (!buf) return false;
    bool ok = for_lines(buf, metrics_line, m);
    free(buf);
    if (ok && !m->names) {
        fail("%s: empty file (no header row)", path);
        ok = false;
    }
    if (!ok) metrics_free(m);
    return ok;
}

/* ---------------------------------------------------------------- settings (key = value) */

typedef struct kv {
    char *section, *key, *value;
    bool dflt; /* config.ini: a default shown commented out ("; lr = 0.05") */
} kv;

typedef struct kv_list {
    kv *items;
    int n, cap;
} kv_list;

static bool kv_add(kv_list *l, const char *section, const char *key, const char *value, bool dflt) {
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 32;
        kv *items = realloc(l->items, sizeof *items * (size_t)cap);
        if (!items) return false;
        l->items = items;
        l->cap = cap;
    }
    kv *e = &l->items[l->n];
    e->dflt = dflt;
    e->section = dup_text(section);
    e->key = dup_text(key);
    e->value = dup_text(value);
    if (!e->section || !e->key || !e->value) {
        free(e->section);
        free(e->key);
        free(e->value);
        return false;
    }
    l->n++;
    return true;
}

static void kv_free(kv_list *l) {
    for (int i = 0; i < l->n; i++) {
        free(l->items[i].section);
        free(l->items[i].key);
        free(l->items[i].value);
    }
    free(l->items);
    memset(l, 0, sizeof *l);
}

static const char *kv_get(const kv_list *l, const char *section, const char *key) {
    for (int i = 0; i < l->n; i++)
        if (strcmp(l->items[i].section, section) == 0 && strcmp(l->items[i].key, key) == 0) return l->items[i].value;
    return NULL;
}

/* One setting of config.ini. */
static bool ini_setting(void *user, const cli_ini_entry *e, char *why, size_t cap) {
    if (!*e->key) {
        snprintf(why, cap, "a value without a key");
        return false;
    }
    /* "0  ; what 0 means" (the note fit writes after a computed default) reads as "0 (what 0 means)". */
    char shown[1024];
    if (*e->note) snprintf(shown, sizeof shown, "%s (%s)", e->value, e->note);
    if (!kv_add(user, e->section, e->key, *e->note ? shown : e->value, e->dflt)) {
        snprintf(why, cap, "out of memory");
        return false;
    }
    return true;
}

/* config.ini with its commented-out defaults (cli_ini_parse, libinih). */
static bool ini_load(const char *path, kv_list *l) {
    memset(l, 0, sizeof *l);
    size_t len;
    char *text = read_text(path, &len);
    if (!text) return false;
    cli_ini_error err;
    bool ok = cli_ini_parse(text, true, ini_setting, l, &err);
    free(text);
    if (ok) return true;
    if (!err.line)
        fail("%s: %s", path, err.what);
    else if (*err.what)
        fail("%s:%d: %s", path, err.line, err.what);
    else if (err.text[0] == '[')
        fail("%s:%d: malformed section header '%.60s' (expected [name])", path, err.line, err.text);
    else
        fail("%s:%d: malformed line '%.60s' (expected key = value or [section])", path, err.line, err.text);
    kv_free(l);
    return false;
}

/* Flattens a JSON object into key/value pairs ("train.accuracy" = "0.85"); arrays are skipped. */
static bool kv_from_json(kv_list *l, const char *section, const char *prefix, const cJSON *o) {
    for (const cJSON *c = o ? o->child : NULL; c; c = c->next) {
        char key[192], value[64];
        snprintf(key, sizeof key, "%s%s%s", prefix, *prefix ? "." : "", c->string ? c->string : "?");
        const char *v = value;
        if (cJSON_IsObject(c)) {
            if (!kv_from_json(l, section, key, c)) return false;
            continue;
        } else if (cJSON_IsArray(c)) {
            continue;
        } else if (cJSON_IsString(c)) {
            v = c->valuestring;
        } else if (cJSON_IsNumber(c)) {
            snprintf(value, sizeof value, "%.7g", c->valuedouble);
        } else if (cJSON_IsBool(c)) {
            v = cJSON_IsTrue(c) ? "true" : "false";
        } else {
            v = "null";
        }
        if (!kv_add(l, section, key, v, false)) return false;
    }
    return true;
}

/* ---------------------------------------------------------------- output files */

static void html_esc(FILE *f, const char *s) {
    for (; s && *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&#39;", f); break;
        default: fputc(*s, f);
        }
    }
}

/* fprintf whose result is HTML-escaped. */
static void html_printf(FILE *f, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static void html_printf(FILE *f, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    html_esc(f, buf);
}

/* ---------------------------------------------------------------- the report */

typedef struct robust_run {
    at_attack_config cfg;
    at_attack_result res;
    const char *name;
} robust_run;

typedef struct report {
    const char *input, *out, *model_path, *data_source;
    bool run_dir, regression, has_csv;
    char data_name[64];
    metrics csv;
    kv_list settings;     /* config.ini, or the model's advtrain.settings */
    const char *settings_from;
    kv_list results;      /* model-file input: the model's advtrain.results */
    at_st_file *meta;
    at_net *net;
    int samples;          /* attacked test images */
    uint64_t seed;
    float eps[ATK_CLI_MAX];
    int neps, ncfg;
    robust_run *runs;     /* ncfg x neps */
    int clean_correct;
    /* what was drawn */
    bool loss_png, acc_png, robust_png, weights_png, examples_png;
    const char *acc_name; /* accuracy.png or mse.png */
    char note_curves[512], note_robust[512], note_examples[512], examples_caption[256];
    int weight_panels, weight_tensors;
} report;

static bool emit_png_status(bool ok, const char *path, const char *err) {
    if (ok)
        printf("wrote %s\n", path);
    else
        fail("%s", err);
    return ok;
}

/* A curve of the training plots: a metrics.csv column and its legend. */
typedef struct curve {
    metrics_column col;
    const char *legend;
} curve;

/* The metric plot shows the first three for regression (the others are accuracies). */
static const curve LOSS_CURVES[] = {{MC_TRAIN_LOSS, "train"}, {MC_VAL_LOSS, "validation"}};
static const curve METRIC_CURVES[] = {{MC_TRAIN_METRIC, "train"},
                                      {MC_VAL_METRIC, "validation"},
                                      {MC_TEST_METRIC, "test"},
                                      {MC_ROBUST_VAL_ACC, "robust val. (PGD)"},
                                      {MC_ADV_TRAIN_ACC, "adv. training"}};

/* One of the training plots: its file, its curves and their scale, its axes. */
typedef struct curve_plot {
    const char *file;
    const curve *curves;
    int ncurves;
    double scale;
    report_axes ax;
} curve_plot;

/* loss.png, then accuracy.png (mse.png for regression). */
static curve_plot loss_plot(const report *r) {
    curve_plot p = {"loss.png", LOSS_CURVES, 2, 1.0, {0}};
    p.ax.title = r->regression ? "Loss (mean squared error) per epoch" : "Loss (cross-entropy) per epoch";
    p.ax.ylabel = "loss";
    p.ax.yhi = 1e30;
    return p;
}

static curve_plot metric_plot(const report *r) {
    if (r->regression) {
        curve_plot p = {"mse.png", METRIC_CURVES, 3, 1.0, {0}};
        p.ax.title = "Mean squared error per epoch";
        p.ax.ylabel = "MSE";
        p.ax.yhi = 1e30;
        return p;
    }
    curve_plot p = {"accuracy.png", METRIC_CURVES, 5, 100.0, {0}};
    p.ax.title = "Accuracy per epoch";
    p.ax.ylabel = "accuracy (%)";
    p.ax.yhi = 100.0;
    return p;
}

/* The plot's series: every curve whose column has a value (ys: room for REPORT_MAX_SERIES). */
static int curve_series(const report *r, const curve_plot *p, const double *x, double *ys,
                        report_series *series) {
    const metrics *m = &r->csv;
    int ns = 0;
    for (int c = 0; c < p->ncurves; c++) {
        int col = metrics_col(m, metrics_column_name(p->curves[c].col, r->regression));
        if (col < 0) continue;
        double *y = ys + (size_t)ns * m->nrows;
        bool any = false;
        for (int i = 0; i < m->nrows; i++) {
            y[i] = p->scale * metrics_at(m, i, col);
            any = any || isfinite(y[i]);
        }
        if (!any) continue;
        series[ns++] = (report_series){p->curves[c].legend, x, y, m->nrows};
    }
    return ns;
}

/* Draws one plot against the epochs x; *drawn stays false when no curve has a value. */
static bool draw_curve_plot(report *r, curve_plot *p, const double *x, double *ys, bool *drawn) {
    report_series series[REPORT_MAX_SERIES];
    int ns = curve_series(r, p, x, ys, series);
    if (!ns) return true;
    p->ax.whole_x = true;
    p->ax.xlabel = "epoch";
    char path[PATH_CAP], err[PATH_CAP + 256];
    if (!join(path, sizeof path, r->out, p->file)) return false;
    *drawn = emit_png_status(report_line_plot(path, &p->ax, series, ns, err, sizeof err), path, err);
    return *drawn;
}

/* Whether metrics.csv has epochs to plot; if not, the note says why. */
static bool have_curves(report *r) {
    if (!r->has_csv) {
        snprintf(r->note_curves, sizeof r->note_curves,
                 r->run_dir ? "No training curves: the run directory has no metrics.csv."
                            : "No training curves: the input is a model file, which keeps no per-epoch history. "
                              "Run advtrain report on the run directory written by advtrain fit --checkpoint-dir "
                              "DIR to see them.");
        return false;
    }
    if (r->csv.nrows == 0) {
        snprintf(r->note_curves, sizeof r->note_curves, "No training curves: metrics.csv has no epochs yet.");
        return false;
    }
    return true;
}

/* loss.png and accuracy.png (mse.png for regression) from metrics.csv. */
static bool draw_curves(report *r) {
    const metrics *m = &r->csv;
    if (!have_curves(r)) return true;
    double *x = malloc(sizeof(double) * (size_t)m->nrows);
    double *ys = malloc(sizeof(double) * (size_t)m->nrows * REPORT_MAX_SERIES);
    if (!x || !ys) {
        free(x);
        free(ys);
        fail("out of memory");
        return false;
    }
    for (int i = 0; i < m->nrows; i++) x[i] = metrics_at(m, i, m->epoch_col);
    curve_plot loss = loss_plot(r), metric = metric_plot(r);
    bool ok = draw_curve_plot(r, &loss, x, ys, &r->loss_png) && draw_curve_plot(r, &metric, x, ys, &r->acc_png);
    if (r->acc_png) r->acc_name = metric.file;
    free(x);
    free(ys);
    if (ok && !r->loss_png && !r->acc_png)
        snprintf(r->note_curves, sizeof r->note_curves,
                 "No training curves: metrics.csv has no loss or accuracy values.");
    return ok;
}

/* Robust accuracy for every attack and eps on the first r->samples test images. */
static bool run_attacks(report *r, const at_dataset *test, const at_attack_config *cfgs) {
    r->runs = calloc((size_t)r->ncfg * r->neps, sizeof *r->runs);
    if (!r->runs) {
        fail("out of memory");
        return false;
    }
    r->clean_correct = -1;
    for (int a = 0; a < r->ncfg; a++)
        for (int e = 0; e < r->neps; e++) {
            robust_run *run = &r->runs[a * r->neps + e];
            run->cfg = cfgs[a];
            run->cfg.eps = r->eps[e];
            run->name = at_attack_name(&run->cfg);
            char label[96];
            snprintf(label, sizeof label, "%s eps %g", run->name, (double)r->eps[e]);
            at_attack_config cfg = run->cfg;
            cfg.progress = atk_cli_progress;
            cfg.user = label;
            at_status s = at_attack_dataset(r->net, &cfg, test, r->samples, NULL, NULL, &run->res);
            if (s != AT_OK) {
                cli_error(CMD, run->name, s);
                return false;
            }
            if (r->clean_correct < 0) r->clean_correct = run->res.clean_correct;
            char budget[48];
            atk_cli_budget_text(&run->cfg, &run->res, budget, sizeof budget);
            printf("%-8s eps %-7g steps %-6s robust accuracy %6.2f%% (%d/%d, %.1fs)\n", run->name,
                   (double)r->eps[e], budget, 100.0 * run->res.robust / run->res.samples, run->res.robust,
                   run->res.samples, run->res.seconds);
            fflush(stdout);
        }
    return true;
}

static bool draw_robustness(report *r) {
    double x[ATK_CLI_MAX], y[ATK_CLI_MAX][ATK_CLI_MAX];
    report_series series[REPORT_MAX_SERIES];
    char names[REPORT_MAX_SERIES][128];
    int ns = r->ncfg < REPORT_MAX_SERIES ? r->ncfg : REPORT_MAX_SERIES;
    for (int e = 0; e < r->neps; e++) x[e] = r->eps[e];
    for (int a = 0; a < ns; a++) {
        const robust_run *first = &r->runs[a * r->neps];
        for (int e = 0; e < r->neps; e++) {
            const at_attack_result *res = &r->runs[a * r->neps + e].res;
            y[a][e] = res->samples ? 100.0 * res->robust / res->samples : NAN;
        }
        char budget[48];
        atk_cli_budget_text(&first->cfg, &first->res, budget, sizeof budget);
        /* "pgd-20", "square-5000q"; fgsm and auto by name (the table has the budgets) */
        if (first->cfg.kind == AT_ATTACK_FGSM || first->cfg.kind == AT_ATTACK_AUTO)
            snprintf(names[a], sizeof names[a], "%s", first->name);
        else
            snprintf(names[a], sizeof names[a], "%s-%s%s", first->name, budget,
                     first->res.restarts > 1 ? " (restarts)" : "");
        series[a] = (report_series){names[a], x, y[a], r->neps};
    }
    /* The eps are sorted for the lines (the table keeps the order asked for). */
    int order[ATK_CLI_MAX];
    for (int e = 0; e < r->neps; e++) order[e] = e;
    for (int i = 1; i < r->neps; i++)
        for (int j = i; j > 0 && r->eps[order[j]] < r->eps[order[j - 1]]; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    double xs[ATK_CLI_MAX], ysorted[ATK_CLI_MAX][ATK_CLI_MAX];
    for (int e = 0; e < r->neps; e++) {
        xs[e] = x[order[e]];
        for (int a = 0; a < ns; a++) ysorted[a][e] = y[a][order[e]];
    }
    for (int a = 0; a < ns; a++) {
        series[a].x = xs;
        series[a].y = ysorted[a];
    }
    char title[160];
    snprintf(title, sizeof title, "Robust accuracy on the first %d test images (%s)", r->samples, r->data_name);
    report_axes ax;
    memset(&ax, 0, sizeof ax);
    ax.title = title;
    ax.xlabel = "eps (0-1 pixel scale, L-inf unless the attack says l2)";
    ax.ylabel = "robust accuracy (%)";
    ax.ymin = 0.0;
    ax.ymax = 100.0;
    char path[PATH_CAP], err[PATH_CAP + 256];
    if (!join(path, sizeof path, r->out, "robustness.png")) return false;
    r->robust_png = emit_png_status(report_line_plot(path, &ax, series, ns, err, sizeof err), path, err);
    return r->robust_png;
}

/* The tensors the weights section shows: weights of rank 2 and more (no biases, no BatchNorm
 * vectors). */
static bool is_weight(const at_param_info *p) { return !p->is_bias && p->ndim >= 2; }

static bool draw_weights(report *r) {
    report_hist panels[REPORT_MAX_PANELS];
    char names[REPORT_MAX_PANELS][96];
    const float *params = at_net_params(r->net);
    int np = 0;
    for (int t = 0; t < at_net_num_tensors(r->net); t++) {
        const at_param_info *p = at_net_tensor(r->net, t);
        if (!is_weight(p)) continue;
        r->weight_tensors++;
        if (np == REPORT_MAX_PANELS) continue;
        int len = snprintf(names[np], sizeof names[np], "%s ", p->name);
        for (int d = 0; d < p->ndim && len < (int)sizeof names[np] - 12; d++)
            len += snprintf(names[np] + len, sizeof names[np] - len, "%s%d", d ? "x" : "", p->shape[d]);
        panels[np] = (report_hist){names[np], params + p->offset, p->size};
        np++;
    }
    r->weight_panels = np;
    if (!np) return true;
    char path[PATH_CAP], err[PATH_CAP + 256];
    if (!join(path, sizeof path, r->out, "weights.png")) return false;
    r->weights_png = emit_png_status(report_weight_histograms(path, panels, np, err, sizeof err), path, err);
    return r->weights_png;
}

/* examples.png: PGD at the largest eps on the first few test images, through grid_write_png. */
static bool draw_examples(report *r, const at_dataset *test) {
    float eps = 0.0f;
    for (int e = 0; e < r->neps; e++) eps = r->eps[e] > eps ? r->eps[e] : eps;
    if (eps <= 0.0f) {
        snprintf(r->note_examples, sizeof r->note_examples, "No adversarial examples: every eps asked for is 0.");
        return true;
    }
    int n = r->samples < EXAMPLE_ROWS ? r->samples : EXAMPLE_ROWS;
    const int D = at_dataset_sample_size(test), K = at_net_out_size(r->net);
    float *x = malloc(sizeof(float) * (size_t)n * D), *adv = malloc(sizeof(float) * (size_t)n * D);
    int32_t *labels = malloc(sizeof(int32_t) * (size_t)n), *clean_pred = malloc(sizeof(int32_t) * (size_t)n),
            *adv_pred = malloc(sizeof(int32_t) * (size_t)n);
    bool ok = false;
    if (!x || !adv || !labels || !clean_pred || !adv_pred) {
        fail("out of memory");
        goto done;
    }
    for (int i = 0; i < n; i++) clean_pred[i] = i;
    at_dataset_batch(test, clean_pred, n, x, labels, NULL);
    at_attack_config cfg;
    at_attack_from_name("pgd", &cfg);
    cfg.eps = eps;
    cfg.seed = r->seed;
    at_attack_result res;
    at_status s = at_attack_run(r->net, &cfg, x, labels, n, adv, adv_pred, &res);
    const float *z;
    if (s == AT_OK) s = at_net_forward(r->net, x, n, &z);
    if (s != AT_OK) {
        cli_error(CMD, "adversarial examples", s);
        goto done;
    }
    for (int i = 0; i < n; i++) clean_pred[i] = at_argmax(z + (size_t)i * K, K);
    int c, h, w;
    at_net_in_shape(r->net, &c, &h, &w);
    char title[96], path[PATH_CAP], err[PATH_CAP + 256];
    snprintf(title, sizeof title, "PGD-%d EPS %g LINF", res.steps, (double)eps);
    snprintf(r->examples_caption, sizeof r->examples_caption,
             "PGD-%d (L-inf, eps %g, seed %llu) on the first %d test images: clean image, perturbation "
             "(mid-gray = 0, full range = ±eps), adversarial image, with label and predictions; %d of %d stay "
             "correct.",
             res.steps, (double)eps, (unsigned long long)r->seed, n, res.robust, n);
    if (!join(path, sizeof path, r->out, "examples.png")) goto done;
    const char *const *names =
        strncmp(r->data_source, "fashion-mnist", 13) == 0 && K == 10 ? FASHION_NAMES : NULL;
    ok = emit_png_status(grid_write_png(path, title, x, adv, labels, clean_pred, adv_pred, n, c, h, w, eps, names,
                                        err, sizeof err),
                         path, err);
    r->examples_png = ok;
done:
    free(x);
    free(adv);
    free(labels);
    free(clean_pred);
    free(adv_pred);
    return ok;
}

/* The row of the best epoch and what made it best: the model's recorded best_epoch, else the
 * highest robust validation accuracy, the highest validation accuracy, the lowest validation
 * MSE, the lowest validation loss. -1 if none applies. */
static int best_row(const report *r, char *why, size_t cap) {
    const metrics *m = &r->csv;
    /* best.safetensors of a run directory says "advtrain.best_epoch"; last.safetensors keeps it in
     * its training state, a final model file in its results. */
    double epoch = -1;
    const char *text = r->meta ? at_st_meta_get(r->meta, "advtrain.best_epoch") : NULL;
    if (text) {
        char *end;
        epoch = strtod(text, &end);
        if (end == text || *end) epoch = -1;
    }
    static const char *const json_keys[] = {"advtrain.train_state", "advtrain.results"};
    for (size_t k = 0; k < 2 && epoch <= 0 && r->meta; k++) {
        const char *json = at_st_meta_get(r->meta, json_keys[k]);
        cJSON *o = json ? cJSON_Parse(json) : NULL;
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(o, "best_epoch");
        if (cJSON_IsNumber(b)) epoch = b->valuedouble;
        cJSON_Delete(o);
    }
    for (int i = 0; epoch > 0 && i < m->nrows; i++)
        if (metrics_at(m, i, m->epoch_col) == epoch) {
            const char *base = strrchr(r->model_path, '/');
            snprintf(why, cap, "as recorded in %s", base ? base + 1 : r->model_path);
            return i;
        }
    static const struct {
        metrics_column col;
        bool regression; /* the column's regression name */
        const char *why;
        int sign;
    } rules[] = {{MC_ROBUST_VAL_ACC, false, "highest robust validation accuracy", 1},
                 {MC_VAL_METRIC, false, "highest validation accuracy", 1},
                 {MC_VAL_METRIC, true, "lowest validation MSE", -1},
                 {MC_VAL_LOSS, false, "lowest validation loss", -1}};
    for (size_t k = 0; k < sizeof rules / sizeof *rules; k++) {
        int col = metrics_col(m, metrics_column_name(rules[k].col, rules[k].regression)), best = -1;
        for (int i = 0; col >= 0 && i < m->nrows; i++) {
            double v = metrics_at(m, i, col);
            if (isfinite(v) && (best < 0 || rules[k].sign * (v - metrics_at(m, best, col)) > 0)) best = i;
        }
        if (best >= 0) {
            snprintf(why, cap, "%s", rules[k].why);
            return best;
        }
    }
    return -1;
}

static void cell_value(FILE *f, const char *col, double v) {
    if (isnan(v))
        fputs("&mdash;", f);
    else if (metrics_column_is_accuracy(col))
        fprintf(f, "%.2f%%", 100.0 * v);
    else
        fprintf(f, "%.6g", v);
}

static void img(FILE *f, const char *file, const char *alt) {
    fprintf(f, "<figure><img src=\"");
    html_esc(f, file);
    fprintf(f, "\" alt=\"");
    html_esc(f, alt);
    fprintf(f, "\"></figure>\n");
}

static void note(FILE *f, const char *text) {
    fprintf(f, "<p class=\"note\">");
    html_esc(f, text);
    fprintf(f, "</p>\n");
}

static void kv_table(FILE *f, const kv_list *l) {
    bool sections = false, defaults = false;
    for (int i = 1; i < l->n; i++) sections = sections || strcmp(l->items[i].section, l->items[0].section) != 0;
    for (int i = 0; i < l->n; i++) defaults = defaults || l->items[i].dflt;
    if (defaults)
        fprintf(f, "<p>Settings given for the run in bold; the others are the defaults it ran with.</p>\n");
    fprintf(f, "<table class=\"kv\">\n<tr>%s<th>key</th><th>value</th></tr>\n", sections ? "<th>section</th>" : "");
    for (int i = 0; i < l->n; i++) {
        fprintf(f, "<tr%s>", defaults ? (l->items[i].dflt ? " class=\"dflt\"" : " class=\"set\"") : "");
        if (sections) {
            fprintf(f, "<td>");
            html_esc(f, l->items[i].section);
            fprintf(f, "</td>");
        }
        fprintf(f, "<td>");
        html_esc(f, l->items[i].key);
        fprintf(f, "</td><td>");
        html_esc(f, l->items[i].value);
        fprintf(f, "</td></tr>\n");
    }
    fprintf(f, "</table>\n");
}

/* The page up to the first section: title, style, what was reported on. */
static void html_head(FILE *f, const report *r) {
    fprintf(f, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>advtrain report: ");
    html_esc(f, r->input);
    fprintf(f, "</title>\n<style>\n"
               "body{font-family:system-ui,-apple-system,'DejaVu Sans',sans-serif;max-width:1000px;margin:2em auto;"
               "padding:0 1em;color:#222;line-height:1.45}\n"
               "h1{font-size:1.6em}h2{margin-top:1.8em;border-bottom:1px solid #ddd}\n"
               "table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:.2em .6em;"
               "text-align:left}th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}\n"
               "figure{margin:1em 0}img{max-width:100%%;border:1px solid #eee}\n"
               ".note{color:#666;font-style:italic}tr.dflt td{color:#777}tr.set td{font-weight:bold}code{background:#f5f5f5;padding:0 .2em}\n"
               "</style>\n</head>\n<body>\n");
    fprintf(f, "<h1>advtrain report: <code>");
    html_esc(f, r->input);
    fprintf(f, "</code></h1>\n<p>");
    if (r->run_dir) {
        fprintf(f, "Run directory <code>");
        html_esc(f, r->input);
        fprintf(f, "</code>; the model evaluated below is <code>");
        html_esc(f, r->model_path);
        fprintf(f, "</code>.");
    } else {
        fprintf(f, "Model file <code>");
        html_esc(f, r->input);
        fprintf(f, "</code>.");
    }
    fprintf(f, " Written by <code>advtrain report</code> %s.</p>\n", AT_VERSION);
}

/* The network: architecture, input, parameters, data, layers. */
static void html_model(FILE *f, const report *r) {
    const at_net *net = r->net;
    int c, h, w;
    at_net_in_shape(net, &c, &h, &w);
    fprintf(f, "<h2>Model</h2>\n<table class=\"kv\">\n<tr><th>architecture</th><td><code>");
    html_esc(f, at_net_spec(net));
    fprintf(f, "</code></td></tr>\n<tr><th>input</th><td>");
    html_printf(f, "%d x %d x %d", c, h, w);
    fprintf(f, "</td></tr>\n<tr><th>parameters</th><td>%zu</td></tr>\n<tr><th>data</th><td><code>",
            at_net_num_params(net));
    html_esc(f, r->data_source);
    fprintf(f, "</code>");
    if (strcmp(r->data_name, r->data_source) != 0) {
        fprintf(f, " (");
        html_esc(f, r->data_name);
        fprintf(f, ")");
    }
    fprintf(f, "</td></tr>\n");
    const char *version = r->meta ? at_st_meta_get(r->meta, "advtrain.version") : NULL;
    if (version) {
        fprintf(f, "<tr><th>written by</th><td>advtrain ");
        html_esc(f, version);
        fprintf(f, "</td></tr>\n");
    }
    char desc[4096];
    if (at_net_describe(net, desc, sizeof desc) == AT_OK) {
        fprintf(f, "<tr><th>layers</th><td><pre>");
        html_esc(f, desc);
        fprintf(f, "</pre></td></tr>\n");
    }
    fprintf(f, "</table>\n");
}

/* The settings of the run (config.ini) or of the model file. */
static void html_settings(FILE *f, const report *r) {
    fprintf(f, "<h2>Settings</h2>\n");
    if (r->settings.n) {
        fprintf(f, "<p>From ");
        html_esc(f, r->settings_from);
        fprintf(f, ".</p>\n");
        kv_table(f, &r->settings);
    } else {
        note(f, r->run_dir ? "No settings: the run directory has no config.ini."
                           : "No settings: the model file has no advtrain.settings metadata.");
    }
}

/* The last and the best epoch's value of every column (best < 0: none). */
static void html_metrics_table(FILE *f, const metrics *m, int last, int best) {
    fprintf(f, "<table>\n<tr><th>column</th><th>last epoch (%.0f)</th>", metrics_at(m, last, m->epoch_col));
    if (best >= 0) fprintf(f, "<th>best epoch (%.0f)</th>", metrics_at(m, best, m->epoch_col));
    fprintf(f, "</tr>\n");
    for (int col = 0; col < m->ncols; col++) {
        if (col == m->epoch_col) continue;
        fprintf(f, "<tr><td>");
        html_esc(f, m->names[col]);
        fprintf(f, "</td><td class=\"num\">");
        cell_value(f, m->names[col], metrics_at(m, last, col));
        fprintf(f, "</td>");
        if (best >= 0) {
            fprintf(f, "<td class=\"num\">");
            cell_value(f, m->names[col], metrics_at(m, best, col));
            fprintf(f, "</td>");
        }
        fprintf(f, "</tr>\n");
    }
    fprintf(f, "</table>\n");
}

/* The last and best epochs of metrics.csv, or the model file's recorded results. */
static void html_final_metrics(FILE *f, const report *r) {
    fprintf(f, "<h2>Final metrics</h2>\n");
    const metrics *m = &r->csv;
    if (r->has_csv && m->nrows > 0) {
        int last = m->nrows - 1;
        char why[PATH_CAP];
        int best = best_row(r, why, sizeof why);
        double total = 0.0;
        int secs = metrics_col(m, metrics_column_name(MC_SECONDS, false));
        for (int i = 0; secs >= 0 && i < m->nrows; i++)
            if (isfinite(metrics_at(m, i, secs))) total += metrics_at(m, i, secs);
        fprintf(f, "<p>From metrics.csv: %d epoch%s", m->nrows, m->nrows == 1 ? "" : "s");
        if (secs >= 0) fprintf(f, ", %.3g s of training in all", total);
        if (best >= 0) {
            fprintf(f, "; best epoch %.0f (", metrics_at(m, best, m->epoch_col));
            html_esc(f, why);
            fprintf(f, ")");
        }
        fprintf(f, ". Accuracies in %%; &mdash; = not measured.</p>\n");
        html_metrics_table(f, m, last, best);
    } else if (r->results.n) {
        fprintf(f, "<p>From the model file&rsquo;s advtrain.results metadata (measured when it was saved).</p>\n");
        kv_table(f, &r->results);
    } else {
        note(f, r->has_csv ? "metrics.csv has no epochs yet." : "No final metrics recorded.");
    }
}

/* The training curves drawn by draw_curves. */
static void html_curves(FILE *f, const report *r) {
    fprintf(f, "<h2>Training curves</h2>\n");
    if (r->loss_png) img(f, "loss.png", "training and validation loss per epoch");
    if (r->acc_png) img(f, r->acc_name, r->regression ? "MSE per epoch" : "accuracy per epoch");
    if (*r->note_curves) note(f, r->note_curves);
}

/* One attack at one eps: a row of the robustness table (its data- attributes for scripts). */
static void html_robust_row(FILE *f, const robust_run *run) {
    char eps[32], budget[48];
    float_text(run->cfg.eps, eps, sizeof eps);
    atk_cli_budget_text(&run->cfg, &run->res, budget, sizeof budget);
    const char *norm = run->cfg.norm == AT_NORM_L2 ? "l2" : "linf";
    fprintf(f, "<tr data-attack=\"");
    html_esc(f, run->name);
    fprintf(f, "\" data-eps=\"%s\" data-steps=\"%d\" data-restarts=\"%d\" data-robust=\"%d\" "
               "data-samples=\"%d\"><td>",
            eps, run->res.steps, run->res.restarts, run->res.robust, run->res.samples);
    html_esc(f, run->name);
    fprintf(f, "</td><td>%s</td><td class=\"num\">%s</td><td class=\"num\">%.3g</td><td class=\"num\">",
            norm, eps, (double)run->cfg.eps * 255.0);
    html_esc(f, budget);
    fprintf(f, "</td><td class=\"num\">%d</td><td class=\"num\">%d/%d</td><td class=\"num\">%.2f%%</td>"
               "<td class=\"num\">%.1f</td></tr>\n",
            run->res.restarts, run->res.robust, run->res.samples,
            run->res.samples ? 100.0 * run->res.robust / run->res.samples : 0.0, run->res.seconds);
}

/* The robustness plot and table from run_attacks. */
static void html_robustness(FILE *f, const report *r) {
    fprintf(f, "<h2>Robustness</h2>\n");
    if (r->runs) {
        int n = r->runs[0].res.samples;
        fprintf(f, "<p>Robust accuracy on the first %d test images of <code>", n);
        html_esc(f, r->data_source);
        fprintf(f, "</code>: an image counts as robust when the model classifies it correctly and still does "
                   "on its adversarial example. Clean accuracy on these images: %.2f%% (%d/%d). eps is on the "
                   "0-1 pixel scale (eps &times; 255 on the 0-255 scale); random starts seeded with %llu.</p>\n",
                n ? 100.0 * r->clean_correct / n : 0.0, r->clean_correct, n, (unsigned long long)r->seed);
        if (r->robust_png) img(f, "robustness.png", "robust accuracy against eps, one line per attack");
        fprintf(f, "<table class=\"robust\">\n<tr><th>attack</th><th>norm</th><th>eps</th><th>eps &times; 255</th>"
                   "<th>steps</th><th>restarts</th><th>robust</th><th>robust accuracy</th><th>seconds</th></tr>\n");
        for (int i = 0; i < r->ncfg * r->neps; i++) html_robust_row(f, &r->runs[i]);
        fprintf(f, "</table>\n");
    }
    if (*r->note_robust) note(f, r->note_robust);
}

/* One weight tensor: a row of the weights table (sparsity, norms). */
static void html_weight_row(FILE *f, const at_net *net, int t, const float *params) {
    const at_param_info *p = at_net_tensor(net, t);
    at_tensor_stats ts;
    at_tensor_stats_of(net, t, &ts);
    size_t tiny = 0;
    for (size_t i = 0; i < p->size; i++) tiny += fabsf(params[p->offset + i]) < 1e-6f;
    char shape[64];
    int len = 0;
    for (int d = 0; d < p->ndim; d++)
        len += snprintf(shape + len, sizeof shape - (size_t)len, "%s%d", d ? " x " : "", p->shape[d]);
    double cnt = ts.count ? (double)ts.count : 1.0;
    fprintf(f, "<tr><td>");
    html_esc(f, p->name);
    fprintf(f, "</td><td>%s</td><td class=\"num\">%zu</td><td class=\"num\">%zu (%.2f%%)</td>"
               "<td class=\"num\">%zu (%.2f%%)</td><td class=\"num\">%.4g</td><td class=\"num\">%.4g</td>"
               "<td class=\"num\">%.4g</td></tr>\n",
            shape, ts.count, ts.zeros, 100.0 * ts.zeros / cnt, tiny, 100.0 * tiny / cnt, ts.l1, ts.l2,
            (double)ts.max_abs);
}

/* The weight histograms and a table of every weight tensor. */
static void html_weights(FILE *f, const report *r) {
    fprintf(f, "<h2>Weights</h2>\n");
    if (r->weights_png) {
        fprintf(f, "<p>Magnitudes |w| of each weight tensor (biases left out) in log-spaced bins, counts on a log "
                   "axis; the red bar holds |w| &lt; 1e-6, exact zeros included: the sparsity an L1 penalty or "
                   "the proximal L1 step gives.");
        if (r->weight_tensors > r->weight_panels)
            fprintf(f, " The picture shows the first %d of %d tensors; the table has them all.", r->weight_panels,
                    r->weight_tensors);
        fprintf(f, "</p>\n");
        img(f, "weights.png", "histograms of weight magnitudes per layer");
    }
    fprintf(f, "<table>\n<tr><th>tensor</th><th>shape</th><th>count</th><th>exact zeros</th><th>|w| &lt; 1e-6</th>"
               "<th>L1 (sum |w|)</th><th>L2 (norm)</th><th>max |w|</th></tr>\n");
    const float *params = at_net_params(r->net);
    for (int t = 0; t < at_net_num_tensors(r->net); t++)
        if (is_weight(at_net_tensor(r->net, t))) html_weight_row(f, r->net, t, params);
    fprintf(f, "</table>\n");
}

/* The adversarial examples drawn by draw_examples. */
static void html_examples(FILE *f, const report *r) {
    fprintf(f, "<h2>Adversarial examples</h2>\n");
    if (r->examples_png) {
        img(f, "examples.png", "clean images, perturbations and adversarial examples");
        fprintf(f, "<p>");
        html_esc(f, r->examples_caption);
        fprintf(f, "</p>\n");
    }
    if (*r->note_examples) note(f, r->note_examples);
}

static void write_html_body(FILE *f, const report *r) {
    html_head(f, r);
    html_model(f, r);
    html_settings(f, r);
    html_final_metrics(f, r);
    html_curves(f, r);
    html_robustness(f, r);
    html_weights(f, r);
    html_examples(f, r);
    fprintf(f, "</body>\n</html>\n");
}

static bool write_html(const report *r) {
    char path[PATH_CAP], tmp[PATH_CAP + 8];
    if (!join(path, sizeof path, r->out, "index.html")) return false;
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        fail("cannot write %s: %s", tmp, strerror(errno));
        return false;
    }
    write_html_body(f, r);
    bool ok = !ferror(f);
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        fail("cannot write %s: %s", path, strerror(errno));
        remove(tmp);
        return false;
    }
    printf("wrote %s\n", path);
    return true;
}

/* Finds the model of a run directory and reads metrics.csv and config.ini. */
static bool open_run_dir(report *r, char *model_path, size_t cap) {
    char csv[PATH_CAP], ini[PATH_CAP];
    if (!join(model_path, cap, r->input, "best.safetensors")) return false;
    if (!is_file(model_path)) {
        if (!join(model_path, cap, r->input, "last.safetensors")) return false;
        if (!is_file(model_path)) {
            fail("%s: no best.safetensors or last.safetensors in this directory (a run directory is written by "
                 "advtrain fit --checkpoint-dir DIR)",
                 r->input);
            return false;
        }
    }
    if (!join(csv, sizeof csv, r->input, "metrics.csv") || !join(ini, sizeof ini, r->input, "config.ini"))
        return false;
    if (is_file(csv)) {
        if (!metrics_load(csv, &r->csv)) return false;
        r->has_csv = true;
    }
    if (is_file(ini)) {
        if (!ini_load(ini, &r->settings)) return false;
        r->settings_from = "config.ini";
    }
    return true;
}

/* Parses the command line into r and cfgs (the attacks); -1 to go on, else the exit code. */
static int report_args(int argc, char **argv, report *r, at_attack_config *cfgs) {
    const char *out = NULL, *data_source = NULL;
    int samples = 500, threads = 0;
    atk_cli_settings set;
    memset(&set, 0, sizeof set);
    set.attacks = "fgsm,pgd";
    set.eps = "0,0.025,0.05,0.1,0.15,0.2";
    cli_option opts[] = {
        {"out", OPT_STRING, &out, "DIR", "where the PNG files and index.html go (created if missing)", 1, 0},
        {"data", OPT_STRING, &data_source, "SOURCE", "dataset (default: the one the model was trained on)", 1, 0},
        {"samples", OPT_INT, &samples, "N", "attack the first N test images (default 500)", 1, 100000000},
        {"attack", OPT_STRING, &set.attacks, "LIST", "attacks for the robustness curve (default fgsm,pgd: PGD-20)", 1, 0},
        {"eps", OPT_STRING, &set.eps, "LIST", "attack radii, 0-1 pixel scale (default 0,0.025,0.05,0.1,0.15,0.2)", 1, 0},
        CLI_OPT_THREADS(&threads),
        {"seed", OPT_U64, &set.seed, "S", "random starts of the attacks (default 0)", 1, 0},
    };
    const char *positional[1] = {NULL};
    cli_command cmd = {CMD, "advtrain report RUN_DIR|MODEL.safetensors --out DIR",
                       "Plots (PNG, PLplot) and an HTML page for a training run directory (written by\n"
                       "advtrain fit --checkpoint-dir) or a model file: loss and accuracy per epoch, robust\n"
                       "accuracy against eps per attack, weight-magnitude histograms, adversarial examples.",
                       opts, (int)(sizeof opts / sizeof *opts), positional, 1, 0};
    int early = cli_start(&cmd, argc, argv);
    if (early >= 0) return early;
    if (!out) {
        fail("--out DIR is required (usage: %s)", cmd.usage);
        return EXIT_USAGE;
    }
    r->input = positional[0];
    r->out = out;
    r->data_source = data_source; /* NULL: found in open_input */
    r->samples = samples;
    r->seed = set.seed;
    int32_t target_class;
    if (!cli_parse_eps(CMD, set.eps, r->eps, ATK_CLI_MAX, &r->neps)) return EXIT_USAGE;
    if (!atk_cli_configs(CMD, &set, 1 << 30, cfgs, ATK_CLI_MAX, &r->ncfg, &target_class)) return EXIT_USAGE;
    if (r->ncfg > REPORT_MAX_SERIES) {
        fail("--attack: at most %d attacks fit on the plot", REPORT_MAX_SERIES);
        return EXIT_USAGE;
    }
    if (threads > 0) at_set_threads(threads);
    return -1;
}

/* A JSON object of the model file's metadata (key) as key/value pairs in l. */
static bool kv_from_meta(kv_list *l, const at_st_file *meta, const char *key) {
    const char *json = at_st_meta_get(meta, key);
    cJSON *o = json ? cJSON_Parse(json) : NULL;
    bool ok = kv_from_json(l, "", "", o);
    cJSON_Delete(o);
    if (!ok) fail("out of memory");
    return ok;
}

/* The model (a file, or a run directory's best or last), its settings and results, and the
 * data source: --data, else the model's, else the settings', else Fashion-MNIST. */
static bool open_input(report *r, char *model_path, size_t cap) {
    struct stat st;
    if (stat(r->input, &st) != 0) {
        fail("%s: %s", r->input, strerror(errno));
        return false;
    }
    r->run_dir = S_ISDIR(st.st_mode);
    if (r->run_dir && !open_run_dir(r, model_path, cap)) return false;
    r->model_path = r->run_dir ? model_path : r->input;
    at_status s = at_model_load(&r->net, r->model_path, &r->meta);
    if (s != AT_OK) {
        cli_error(CMD, "cannot load the model", s);
        return false;
    }
    at_net_set_training(r->net, false); /* eval mode: dropout off */
    if (!r->settings.n) {
        if (!kv_from_meta(&r->settings, r->meta, "advtrain.settings")) return false;
        r->settings_from = "the model file's advtrain.settings metadata";
    }
    if (!r->run_dir && !kv_from_meta(&r->results, r->meta, "advtrain.results")) return false;
    if (!r->data_source) r->data_source = at_st_meta_get(r->meta, "advtrain.data");
    if (!r->data_source) r->data_source = kv_get(&r->settings, "fit", "data");
    if (!r->data_source) r->data_source = "fashion-mnist";
    return true;
}

/* --out, created if missing and checked writable. Here, not first: a report that fails on its
 * input leaves no --out directory behind, and nothing costly (data, attacks) has run yet. */
static bool prepare_out(const report *r) {
    if (out_check_dir(CMD, "--out", r->out) != 0) return false;
    /* Fail now, not after the attacks, if nothing can be written there. */
    char probe[PATH_CAP];
    if (!join(probe, sizeof probe, r->out, ".report-probe.tmp")) return false;
    FILE *f = fopen(probe, "wb");
    if (!f) {
        fail("--out %s: cannot write there: %s", r->out, strerror(errno));
        return false;
    }
    fclose(f);
    remove(probe);
    return true;
}

/* The data source's test split, checked against the model; regression or classes. */
static bool load_test_data(report *r, at_data *data) {
    if (!cli_load_data(CMD, data, r->data_source)) return false;
    snprintf(r->data_name, sizeof r->data_name, "%s", data->name);
    const at_dataset *test = &data->test;
    if (at_dataset_sample_size(test) != at_net_in_size(r->net)) {
        int c, h, w;
        at_net_in_shape(r->net, &c, &h, &w);
        fail("%s takes %dx%dx%d inputs, but %s has %dx%dx%d samples (see --data)", r->model_path, c, h, w,
             r->data_source, test->c, test->h, test->w);
        return false;
    }
    r->regression = !test->labels;
    if (r->has_csv && (metrics_col(&r->csv, metrics_column_name(MC_TRAIN_METRIC, true)) >= 0 ||
                       metrics_col(&r->csv, metrics_column_name(MC_VAL_METRIC, true)) >= 0))
        r->regression = true;
    if (r->samples > test->n) r->samples = test->n;
    return true;
}

/* The robustness curve and the adversarial examples, or notes on why there are none. */
static bool draw_attacks(report *r, const at_dataset *test, const at_attack_config *cfgs) {
    if (r->regression || !test->labels) {
        snprintf(r->note_robust, sizeof r->note_robust,
                 "No robustness measurements: %s is a regression dataset, and the attacks need classes.",
                 r->data_source);
        snprintf(r->note_examples, sizeof r->note_examples, "No adversarial examples (regression data).");
        return true;
    }
    if (at_net_out_size(r->net) != test->num_classes) {
        fail("%s has %d outputs, but %s has %d classes (see --data)", r->model_path, at_net_out_size(r->net),
             r->data_source, test->num_classes);
        return false;
    }
    if (!run_attacks(r, test, cfgs) || !draw_robustness(r)) return false;
    if (test->h > 1 && test->w > 1) return draw_examples(r, test);
    snprintf(r->note_examples, sizeof r->note_examples, "No adversarial examples: the samples are vectors, not images.");
    return true;
}

int cmd_report(int argc, char **argv) {
    report r;
    memset(&r, 0, sizeof r);
    at_attack_config cfgs[ATK_CLI_MAX];
    int early = report_args(argc, argv, &r, cfgs);
    if (early >= 0) return early;
    at_data data;
    memset(&data, 0, sizeof data);
    char model_path[PATH_CAP];
    bool ok = open_input(&r, model_path, sizeof model_path) && prepare_out(&r) && load_test_data(&r, &data) &&
              draw_curves(&r) && draw_attacks(&r, &data.test, cfgs) && draw_weights(&r) && write_html(&r);
    free(r.runs);
    metrics_free(&r.csv);
    kv_free(&r.settings);
    kv_free(&r.results);
    at_st_free(r.meta);
    at_net_free(r.net);
    at_data_free(&data);
    return ok ? 0 : EXIT_RUN_FAILED;
}
