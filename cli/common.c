/* Error reporting, data loading and terminal progress for the subcommands. */
#include "cli.h"

#include <string.h>
#include <time.h>
#include <unistd.h>

void cli_error(const char *cmd, const char *what, at_status s) {
    const char *detail = at_error_message();
    fprintf(stderr, "advtrain %s: %s: %s\n", cmd, what, *detail ? detail : at_status_name(s));
}

bool cli_load_data(const char *cmd, at_data *data, const char *source) {
    at_status s = at_data_load(data, source);
    if (s != AT_OK) {
        fprintf(stderr, "advtrain %s: cannot load data '%s': %s\n", cmd, source,
                *at_error_message() ? at_error_message() : at_status_name(s));
        return false;
    }
    return true;
}

bool cli_is_tty(void) { return isatty(STDOUT_FILENO) == 1; }

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void cli_progress(const char *label, int done, int total, double elapsed, const char *extra) {
    if (!cli_is_tty() || total <= 0) return;
    enum { WIDTH = 28 };
    int filled = (int)((long)WIDTH * done / total);
    char bar[WIDTH + 1];
    for (int i = 0; i < WIDTH; i++) bar[i] = i < filled ? '#' : '.';
    bar[WIDTH] = '\0';
    double eta = done > 0 ? elapsed * (total - done) / done : 0.0;
    printf("\r\033[K%s [%s] %3d%% %d/%d  ETA %.0fs  %s", label, bar, 100 * done / total, done,
           total, eta, extra ? extra : "");
    fflush(stdout);
}

void cli_progress_done(void) {
    if (!cli_is_tty()) return;
    printf("\r\033[K");
    fflush(stdout);
}
