/* advtrain report: the PLplot drawing functions (cli/report_plots.c) and the subcommand
 * (cli/report.c). Every picture is a PNG written with PLplot's "pngcairo" device, atomically
 * (PATH.tmp, then renamed to PATH). */
#ifndef ADVTRAIN_REPORT_H
#define ADVTRAIN_REPORT_H

#include <stdbool.h>
#include <stddef.h>

enum { REPORT_MAX_SERIES = 10, REPORT_MAX_PANELS = 16 };

/* One named curve of a line plot: n points (x[i], y[i]). A non-finite y is a missing value:
 * the line breaks there (a column measured only at some epochs is drawn as points). */
typedef struct report_series {
    const char *name; /* legend text */
    const double *x, *y;
    int n;
} report_series;

typedef struct report_axes {
    const char *title, *xlabel, *ylabel;
    double ymin, ymax;   /* fixed y range; ymin >= ymax: from the data, padded */
    double ylo, yhi;     /* with a range from the data: never beyond these (ylo >= yhi: no limit) */
    bool whole_x;        /* x ticks at whole numbers (epochs) */
} report_axes;

/* Line plot of up to REPORT_MAX_SERIES series with a legend right of the plot. On failure
 * returns false with the reason (naming the file) in err. */
bool report_line_plot(const char *path, const report_axes *axes, const report_series *series,
                      int nseries, char *err, size_t errcap);

/* One panel of the weight histogram: a weight tensor's values. */
typedef struct report_hist {
    const char *name; /* "fc1.weight 32x784" */
    const float *values;
    size_t count;
} report_hist;

/* Histograms of |w| per tensor (up to REPORT_MAX_PANELS panels on one page): log-magnitude
 * bins (0.1 decade wide) with a log count axis; the values with |w| < 1e-6 (exact zeros
 * included) get their own red bar at the left, and each panel's title gives the fraction of
 * exact zeros and of |w| < 1e-6 (what an L1 penalty or a proximal step produces). */
bool report_weight_histograms(const char *path, const report_hist *panels, int npanels, char *err,
                              size_t errcap);

/* `advtrain report RUN_DIR_OR_MODEL --out DIR` */
int cmd_report(int argc, char **argv);
#endif
