/* Ctrl-C (SIGINT) and SIGTERM (a cluster's preemption) during a long command.
 *
 * At once: end the progress line, say what was kept and how to go on, exit 128 + the signal
 * (130, 143). The library's writes are atomic (a temporary file renamed in place), so exiting
 * mid-write is safe: the last checkpoint stays loadable.
 * Gracefully, while `fit` trains with checkpoints: the first signal only sets a flag that the
 * training loop reads between steps (it then writes a mid-epoch checkpoint and returns); a
 * second one exits at once, as above.
 * The handler only touches sig_atomic_t flags and calls write and _exit (async-signal-safe); the
 * message is composed beforehand, outside the handler, into one of two buffers, and the
 * published index switches only once a buffer is complete. */
#define _POSIX_C_SOURCE 200809L /* sigaction */
#include "interrupt.h"

#include <string.h>
#include <unistd.h>

static char messages[2][1024];
static volatile sig_atomic_t current = -1; /* the complete buffer, or -1: none yet */
static volatile sig_atomic_t on_tty;
static volatile sig_atomic_t graceful;
static volatile sig_atomic_t stop_signal; /* the first signal while graceful, else 0 */
static const char stopping_note[] = "\nadvtrain: stopping after the current step to write a checkpoint; "
                                    "press Ctrl-C again to stop at once\n";

static void say(int fd, const char *text) {
    ssize_t w = write(fd, text, strlen(text));
    (void)w;
}

static void on_signal(int sig) {
    if (graceful && !stop_signal) {
        stop_signal = sig;
        say(STDERR_FILENO, stopping_note);
        return;
    }
    /* The progress line (and the terminal's "^C" echoed on it) is erased; the text is written
     * from the start of a fresh line. */
    if (on_tty) say(STDOUT_FILENO, "\r\033[K");
    int i = current;
    if (i >= 0) say(STDERR_FILENO, messages[i]);
    _exit(128 + sig);
}

void cli_interrupt_install(void) {
    on_tty = isatty(STDOUT_FILENO) == 1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

volatile sig_atomic_t *cli_interrupt_graceful(bool on) {
    graceful = on;
    return &stop_signal;
}

void cli_interrupt_message(const char *text) {
    int next = current == 0 ? 1 : 0;
    snprintf(messages[next], sizeof messages[next], "%s", text);
    current = next;
}
