/* Ctrl-C (SIGINT) during a long command: end the progress line, say what was kept and how to go
 * on, exit 130. The library's training loop cannot be asked to stop from a signal handler, and
 * its writes are atomic (a temporary file renamed in place), so exiting at once is safe: the
 * last checkpoint stays loadable. The handler only calls write and _exit (async-signal-safe);
 * the message is composed beforehand, outside the handler, into one of two buffers, and the
 * published index switches only once a buffer is complete. */
#define _POSIX_C_SOURCE 200809L /* sigaction */
#include "interrupt.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

static char messages[2][1024];
static volatile sig_atomic_t current = -1; /* the complete buffer, or -1: none yet */
static volatile sig_atomic_t on_tty;

static void on_sigint(int sig) {
    (void)sig;
    /* The progress line (and the terminal's "^C" echoed on it) is erased; the text is written
     * from the start of a fresh line. */
    if (on_tty) {
        ssize_t w = write(STDOUT_FILENO, "\r\033[K", 4);
        (void)w;
    }
    int i = current;
    if (i >= 0) {
        ssize_t w = write(STDERR_FILENO, messages[i], strlen(messages[i]));
        (void)w;
    }
    _exit(130);
}

void cli_interrupt_install(void) {
    on_tty = isatty(STDOUT_FILENO) == 1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
}

void cli_interrupt_message(const char *text) {
    int next = current == 0 ? 1 : 0;
    snprintf(messages[next], sizeof messages[next], "%s", text);
    current = next;
}
