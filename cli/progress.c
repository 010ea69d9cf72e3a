/* The progress line on a terminal (stdout): redrawn in place with "\r\033[K", always one
 * column narrower than the terminal so that no redraw wraps (a wrapped line is not erased by
 * "\r" and every refresh would stack). Width: $COLUMNS when set, else the terminal's
 * (TIOCGWINSZ), else 80. Nothing at all when stdout is not a terminal: piped output stays
 * clean. */
#define _POSIX_C_SOURCE 200809L /* isatty, fileno */
#include "cli.h"

#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static bool showing; /* a progress line is on the screen */

bool cli_is_tty(void) { return isatty(STDOUT_FILENO) == 1; }

int cli_term_width(void) {
    const char *env = getenv("COLUMNS");
    char *end;
    long v = env ? strtol(env, &end, 10) : 0;
    if (env && end != env && *end == '\0' && v >= 20 && v <= 1000) return (int)v;
    struct winsize ws;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20) return ws.ws_col;
    return 80;
}

void cli_format_duration(char *buf, size_t cap, double seconds) {
    long s = seconds > 0 && seconds < 1e8 ? (long)(seconds + 0.5) : 0;
    if (s < 60) snprintf(buf, cap, "%lds", s);
    else if (s < 3600) snprintf(buf, cap, "%ldm%02lds", s / 60, s % 60);
    else snprintf(buf, cap, "%ldh%02ldm", s / 3600, s / 60 % 60);
}

/* Writes text as the progress line, cut to fit the terminal. */
static void show(const char *text) {
    int width = cli_term_width() - 1;
    printf("\r\033[K%.*s", width, text);
    fflush(stdout);
    showing = true;
}

void cli_progress_eta(const char *label, int done, int total, const char *eta, const char *extra) {
    if (!cli_is_tty() || total <= 0) return;
    char tail[256], line[1200];
    /* Everything but the bar first: the bar takes what the terminal has left (10 to 40 wide),
     * and the extra text goes first when even the narrowest bar does not fit. */
    snprintf(tail, sizeof tail, "%3d%% %d/%d  ETA %s", (int)(100L * done / total), done, total, eta);
    int width = cli_term_width() - 1, fixed = (int)(strlen(label) + strlen(tail)) + 4;
    int room = width - fixed - (extra && *extra ? (int)strlen(extra) + 2 : 0);
    if (room < 10 && extra) {
        extra = NULL;
        room = width - fixed;
    }
    int bar = room < 10 ? 10 : room > 40 ? 40 : room;
    char bars[41];
    int filled = (int)((long)bar * done / total);
    for (int i = 0; i < bar; i++) bars[i] = i < filled ? '#' : '.';
    bars[bar] = '\0';
    snprintf(line, sizeof line, "%s [%s] %s%s%s", label, bars, tail, extra && *extra ? "  " : "",
             extra ? extra : "");
    show(line);
}

void cli_progress(const char *label, int done, int total, double elapsed, const char *extra) {
    char eta[32];
    cli_format_duration(eta, sizeof eta, done > 0 ? elapsed * (total - done) / done : 0.0);
    cli_progress_eta(label, done, total, eta, extra);
}

void cli_progress_text(const char *text) {
    if (cli_is_tty()) show(text);
}

void cli_progress_done(void) {
    if (!cli_is_tty() || !showing) return;
    printf("\r\033[K");
    fflush(stdout);
    showing = false;
}

bool cli_progress_showing(void) { return showing; }
