/* The plots of `advtrain report`, drawn with PLplot's "pngcairo" device: a line plot with named
 * series and a legend, and per-tensor histograms of weight magnitudes. Each PNG is written to
 * PATH.tmp and renamed to PATH once PLplot has finished it. PLplot keeps one global stream: the
 * functions are not reentrant (the CLI draws one picture at a time). */
#include "report.h"

#include <errno.h>
#include <math.h>
#include <plplot.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Colour map 0: background, ink, grid, the near-zero bar, histogram bars, then the series. */
enum { COL_BG, COL_INK, COL_GRID, COL_ZERO, COL_BAR, COL_SERIES, COL_COUNT = COL_SERIES + REPORT_MAX_SERIES };
static const unsigned char PALETTE[COL_COUNT][3] = {
    {255, 255, 255}, {0, 0, 0}, {215, 215, 215}, {214, 39, 40}, {70, 120, 180},
    /* matplotlib's tab10 */
    {31, 119, 180}, {255, 127, 14}, {44, 160, 44}, {214, 39, 40}, {148, 103, 189},
    {140, 86, 75}, {227, 119, 194}, {127, 127, 127}, {188, 189, 34}, {23, 190, 207},
};

/* PLplot calls this before it exits on an internal error (it always exits afterwards). */
static int on_plplot_exit(const char *message) {
    fprintf(stderr, "advtrain report: PLplot: %s\n", message ? message : "fatal error");
    return 1; /* EXIT_RUN_FAILED */
}

/* PLplot reads '#' as its escape character: double it in text that comes from the user. */
static void pl_text(char *dst, size_t cap, const char *src) {
    size_t j = 0;
    for (; src && *src && j + 3 < cap; src++) {
        if (*src == '#') dst[j++] = '#';
        dst[j++] = *src;
    }
    dst[j] = '\0';
}

/* Whether PLplot has its pngcairo device (plplot-driver-cairo); asked once. Without this check
 * plinit would prompt on stdin for another device. */
static bool have_pngcairo(void) {
    static int known = -1;
    if (known < 0) {
        enum { CAP = 256 };
        const char *menus[CAP], *names[CAP];
        const char **pm = menus, **pn = names;
        int n = CAP;
        plgFileDevs(&pm, &pn, &n);
        known = 0;
        for (int i = 0; i < n && i < CAP; i++)
            if (names[i] && strcmp(names[i], "pngcairo") == 0) known = 1;
    }
    return known == 1;
}

/* Opens a PLplot page of w x h pixels drawing into PATH.tmp (checked writable first, since
 * PLplot's own file opening would prompt on a terminal). */
static bool begin(const char *path, char *tmp, size_t tmpcap, int w, int h, int subx, int suby, char *err,
                  size_t errcap) {
    if ((size_t)snprintf(tmp, tmpcap, "%s.tmp", path) >= tmpcap) {
        snprintf(err, errcap, "%s: path too long", path);
        return false;
    }
    if (!have_pngcairo()) {
        snprintf(err, errcap, "%s: PLplot has no pngcairo device (install plplot-driver-cairo)", path);
        return false;
    }
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        snprintf(err, errcap, "cannot write %s: %s", tmp, strerror(errno));
        return false;
    }
    fclose(f);
    PLINT r[COL_COUNT], g[COL_COUNT], b[COL_COUNT];
    for (int i = 0; i < COL_COUNT; i++) {
        r[i] = PALETTE[i][0];
        g[i] = PALETTE[i][1];
        b[i] = PALETTE[i][2];
    }
    plsexit(on_plplot_exit);
    plsdev("pngcairo");
    plsfnam(tmp);
    plspage(0.0, 0.0, w, h, 0, 0);
    plscmap0n(COL_COUNT);
    plscmap0(r, g, b, COL_COUNT);
    plssub(subx, suby);
    plinit();
    return true;
}

/* Closes the page (PLplot writes the PNG now) and moves PATH.tmp to PATH. */
static bool finish(const char *path, const char *tmp, char *err, size_t errcap) {
    plend();
    struct stat st;
    if (stat(tmp, &st) != 0 || st.st_size < 8) {
        snprintf(err, errcap, "PLplot wrote no picture to %s (is plplot-driver-cairo installed?)", tmp);
        remove(tmp);
        return false;
    }
    if (rename(tmp, path) != 0) {
        snprintf(err, errcap, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
        remove(tmp);
        return false;
    }
    return true;
}

/* A range that PLplot can draw: non-empty, padded by frac of its span. */
static void pad_range(double *lo, double *hi, double frac) {
    double span = *hi - *lo;
    if (!(span > 1e-12 * fmax(1.0, fmax(fabs(*lo), fabs(*hi))))) {
        double half = fmax(0.05 * fabs(*hi), 1e-3);
        *lo -= half;
        *hi += half;
        return;
    }
    *lo -= frac * span;
    *hi += frac * span;
}

/* What a line plot spans: x and y ranges over the finite points. */
typedef struct plot_range {
    double xmin, xmax, ymin, ymax;
    int points;  /* finite (x, y) pairs */
    int longest; /* the longest series */
} plot_range;

static plot_range data_range(const report_series *series, int nseries) {
    plot_range g = {INFINITY, -INFINITY, INFINITY, -INFINITY, 0, 0};
    for (int s = 0; s < nseries; s++) {
        g.longest = series[s].n > g.longest ? series[s].n : g.longest;
        for (int i = 0; i < series[s].n; i++) {
            double x = series[s].x[i], y = series[s].y[i];
            if (!isfinite(x) || !isfinite(y)) continue;
            g.points++;
            g.xmin = fmin(g.xmin, x);
            g.xmax = fmax(g.xmax, x);
            g.ymin = fmin(g.ymin, y);
            g.ymax = fmax(g.ymax, y);
        }
    }
    return g;
}

/* The drawn window: the data's range padded, or the axes' fixed y range, within their limits. */
static void window(const report_axes *ax, plot_range *g) {
    if (ax->whole_x && g->xmax - g->xmin < 1.0) {
        g->xmin -= 0.5;
        g->xmax += 0.5;
    }
    pad_range(&g->xmin, &g->xmax, 0.02);
    if (ax->ymin < ax->ymax) {
        g->ymin = ax->ymin;
        g->ymax = ax->ymax;
        return;
    }
    pad_range(&g->ymin, &g->ymax, 0.06);
    if (ax->ylo < ax->yhi) {
        g->ymin = fmax(g->ymin, ax->ylo);
        g->ymax = fmin(g->ymax, ax->yhi);
        if (!(g->ymax > g->ymin)) {
            g->ymin = ax->ylo;
            g->ymax = ax->yhi;
        }
    }
}

/* The plot's right edge (page fraction): the legend goes right of it, with room for its
 * longest name. */
static double plot_right(const report_series *series, int nseries) {
    size_t longest_name = 0;
    for (int s = 0; s < nseries; s++) {
        size_t len = series[s].name ? strlen(series[s].name) : 0;
        longest_name = len > longest_name ? len : longest_name;
    }
    double right = 0.95 - (0.0105 * (double)longest_name + 0.12);
    return right < 0.5 ? 0.5 : (right > 0.8 ? 0.8 : right);
}

/* Grid, axes, labels and title of the current page. */
static void draw_frame(const report_axes *ax, const plot_range *g, double right) {
    double xtick = 0.0;
    PLINT nxsub = 0;
    if (ax->whole_x && g->xmax - g->xmin <= 12.5) {
        xtick = 1.0;
        nxsub = 1;
    }
    pladv(0);
    plschr(0.0, 1.0);
    plvpor(0.085, right, 0.12, 0.90);
    plwind(g->xmin, g->xmax, g->ymin, g->ymax);
    plwidth(0.5);
    plcol0(COL_GRID);
    plbox("g", xtick, nxsub, "g", 0.0, 0);
    plwidth(1.0);
    plcol0(COL_INK);
    plbox("bcnst", xtick, nxsub, "bcnstv", 0.0, 0);
    char title[256], xl[128], yl[128];
    pl_text(title, sizeof title, ax->title);
    pl_text(xl, sizeof xl, ax->xlabel);
    pl_text(yl, sizeof yl, ax->ylabel);
    pllab(xl, yl, "");
    plschr(0.0, 1.15);
    plmtex("t", 1.2, 0.0, 0.0, title); /* left-aligned: a long title runs on over the legend */
    plschr(0.0, 1.0);
}

/* Each series as lines broken at missing values; markers on every point when there are few,
 * on isolated points always. False when out of memory. */
static bool draw_lines(const report_series *series, int nseries, int longest) {
    bool markers = longest <= 40;
    double *bx = malloc(sizeof(double) * (size_t)(longest > 0 ? longest : 1));
    double *by = malloc(sizeof(double) * (size_t)(longest > 0 ? longest : 1));
    for (int s = 0; bx && by && s < nseries; s++) {
        plcol0(COL_SERIES + s);
        plwidth(2.0);
        int i = 0;
        while (i < series[s].n) {
            int m = 0;
            while (i < series[s].n && isfinite(series[s].x[i]) && isfinite(series[s].y[i])) {
                bx[m] = series[s].x[i];
                by[m] = series[s].y[i];
                m++;
                i++;
            }
            if (m > 1) plline(m, bx, by);
            if (m == 1 || (markers && m > 0)) plpoin(m, bx, by, 17);
            if (m == 0) i++;
        }
    }
    bool ok = bx && by;
    free(bx);
    free(by);
    return ok;
}

/* The legend, outside the plot on the right. */
static void draw_legend(const report_series *series, int nseries) {
    PLINT opt[REPORT_MAX_SERIES], text_col[REPORT_MAX_SERIES], line_col[REPORT_MAX_SERIES],
        line_style[REPORT_MAX_SERIES], sym_col[REPORT_MAX_SERIES], sym_num[REPORT_MAX_SERIES];
    PLFLT line_w[REPORT_MAX_SERIES], sym_scale[REPORT_MAX_SERIES];
    char names[REPORT_MAX_SERIES][96];
    const char *text[REPORT_MAX_SERIES], *symbols[REPORT_MAX_SERIES];
    for (int s = 0; s < nseries; s++) {
        opt[s] = PL_LEGEND_LINE | PL_LEGEND_SYMBOL;
        text_col[s] = COL_INK;
        line_col[s] = sym_col[s] = COL_SERIES + s;
        line_style[s] = 1;
        line_w[s] = 2.0;
        sym_scale[s] = 1.0;
        sym_num[s] = 3;
        symbols[s] = "#(850)"; /* Hershey filled circle, like plpoin's 17 */
        pl_text(names[s], sizeof names[s], series[s].name);
        text[s] = names[s];
    }
    PLFLT lw, lh;
    pllegend(&lw, &lh, PL_LEGEND_BACKGROUND | PL_LEGEND_BOUNDING_BOX, PL_POSITION_RIGHT | PL_POSITION_OUTSIDE, 0.02, 0.0, 0.07, COL_BG, COL_INK, 1, 0, 0, nseries, opt, 0.8, 0.9, 2.0, 0.0, text_col,
             text, NULL, NULL, NULL, NULL, line_col, line_style, line_w, sym_col, sym_scale, sym_num, symbols);
}

bool report_line_plot(const char *path, const report_axes *ax, const report_series *series, int nseries,
                      char *err, size_t errcap) {
    if (nseries < 1 || nseries > REPORT_MAX_SERIES) {
        snprintf(err, errcap, "%s: %d series (1 to %d can be drawn)", path, nseries, REPORT_MAX_SERIES);
        return false;
    }
    plot_range g = data_range(series, nseries);
    if (!g.points) {
        snprintf(err, errcap, "%s: no finite values to plot", path);
        return false;
    }
    window(ax, &g);
    double right = plot_right(series, nseries);
    char tmp[4200];
    if (!begin(path, tmp, sizeof tmp, 960, 500, 1, 1, err, errcap)) return false;
    draw_frame(ax, &g, right);
    if (!draw_lines(series, nseries, g.longest)) {
        plend();
        remove(tmp);
        snprintf(err, errcap, "%s: out of memory", path);
        return false;
    }
    plwidth(1.0);
    draw_legend(series, nseries);
    return finish(path, tmp, err, errcap);
}

/* Histogram of one tensor's |w| on the current subpage. */
static void draw_hist_panel(const report_hist *p) {
    enum { MAXBINS = 120 };
    const double lo = -6.0, width = 0.1; /* log10|w| bins from 1e-6, a tenth of a decade wide */
    double maxabs = 0.0;
    size_t zeros = 0, tiny = 0;
    for (size_t i = 0; i < p->count; i++) {
        double a = fabs((double)p->values[i]);
        if (!isfinite(a)) continue;
        maxabs = fmax(maxabs, a);
        zeros += p->values[i] == 0.0f;
        tiny += a < 1e-6;
    }
    double hi = maxabs > 1e-6 ? ceil(log10(maxabs) + 1e-9) : -5.0;
    if (hi < lo + 1.0) hi = lo + 1.0;
    int nb = (int)lround((hi - lo) / width);
    if (nb > MAXBINS) nb = MAXBINS;
    double counts[MAXBINS];
    memset(counts, 0, sizeof counts);
    for (size_t i = 0; i < p->count; i++) {
        double a = fabs((double)p->values[i]);
        if (!isfinite(a) || a < 1e-6) continue;
        int b = (int)floor((log10(a) - lo) / width);
        b = b < 0 ? 0 : (b >= nb ? nb - 1 : b);
        counts[b] += 1.0;
    }
    double maxcount = (double)tiny;
    for (int b = 0; b < nb; b++) maxcount = fmax(maxcount, counts[b]);
    const double base = -0.15; /* log10 of the bar foot: a count of 1 still shows */
    double ytop = maxcount > 0 ? log10(maxcount) : 0.0;
    ytop = ytop * 1.1 + 0.3;
    const double zlo = lo - 0.55, zhi = lo - 0.15; /* the |w| < 1e-6 bar */
    pladv(0);
    plvpor(0.13, 0.96, 0.17, 0.78);
    plwind(lo - 0.9, lo + nb * width + 0.1, base, ytop);
    plwidth(0.5);
    plcol0(COL_GRID);
    plbox("", 0.0, 0, "g", 1.0, 1);
    plwidth(1.0);
    for (int b = 0; b < nb; b++) {
        if (counts[b] <= 0) continue;
        double x0 = lo + b * width, x1 = x0 + width, y1 = log10(counts[b]);
        PLFLT px[4] = {x0, x0, x1, x1}, py[4] = {base, y1, y1, base};
        plcol0(COL_BAR);
        plfill(4, px, py);
    }
    if (tiny > 0) {
        PLFLT px[4] = {zlo, zlo, zhi, zhi}, py[4] = {base, log10((double)tiny), log10((double)tiny), base};
        plcol0(COL_ZERO);
        plfill(4, px, py);
    }
    /* The near-zero bar's region: a dotted separator and a vertical label. */
    plcol0(COL_ZERO);
    pllsty(3);
    pljoin(lo - 0.08, base, lo - 0.08, ytop);
    pllsty(1);
    plschr(0.0, 0.7);
    plptex(zlo - 0.04, base + 0.97 * (ytop - base), 0.0, 1.0, 1.0, "|w| < 1e-6");
    plcol0(COL_INK);
    plbox("bcnstl", 1.0, 1, "bcnstvl", 1.0, 1);
    plschr(0.0, 0.9);
    pllab("|w|", "count", "");
    char name[128], line[200];
    pl_text(name, sizeof name, p->name);
    plschr(0.0, 1.0);
    plmtex("t", 2.2, 0.5, 0.5, name);
    double n = p->count ? (double)p->count : 1.0;
    snprintf(line, sizeof line, "exact zeros %.2f%%   |w| < 1e-6 %.2f%% (red)   max |w| %.3g", 100.0 * zeros / n,
             100.0 * tiny / n, maxabs);
    plschr(0.0, 0.8);
    plmtex("t", 0.8, 0.5, 0.5, line);
    plschr(0.0, 1.0);
}

bool report_weight_histograms(const char *path, const report_hist *panels, int npanels, char *err, size_t errcap) {
    if (npanels < 1 || npanels > REPORT_MAX_PANELS) {
        snprintf(err, errcap, "%s: %d histograms (1 to %d fit on the page)", path, npanels, REPORT_MAX_PANELS);
        return false;
    }
    int cols = npanels == 1 ? 1 : (npanels <= 8 ? 2 : 3);
    int rows = (npanels + cols - 1) / cols;
    char tmp[4200];
    if (!begin(path, tmp, sizeof tmp, cols == 1 ? 700 : 450 * cols, 330 * rows, cols, rows, err, errcap))
        return false;
    for (int i = 0; i < npanels; i++) draw_hist_panel(&panels[i]);
    return finish(path, tmp, err, errcap);
}
