/* Ctrl-C and SIGTERM handling (cli/interrupt.c). */
#ifndef ADVTRAIN_INTERRUPT_H
#define ADVTRAIN_INTERRUPT_H
#include "cli.h"

#include <signal.h>

/* From now on SIGINT and SIGTERM clear the progress line, print the current message (stderr)
 * and exit with status 128 + the signal (130, 143). */
void cli_interrupt_install(void);
/* With on, the first signal only sets the returned flag to its number (the training loop stops
 * between two steps, at_train_callbacks.stop); a second one exits as above. */
volatile sig_atomic_t *cli_interrupt_graceful(bool on);
/* The message SIGINT prints from now on (what was kept, how to resume); ends with a newline. */
void cli_interrupt_message(const char *text);
#endif
