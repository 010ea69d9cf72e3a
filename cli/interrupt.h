/* Ctrl-C handling (cli/interrupt.c). */
#ifndef ADVTRAIN_INTERRUPT_H
#define ADVTRAIN_INTERRUPT_H
#include "cli.h"

/* From now on SIGINT clears the progress line, prints the current message (stderr) and exits
 * with status 130. */
void cli_interrupt_install(void);
/* The message SIGINT prints from now on (what was kept, how to resume); ends with a newline. */
void cli_interrupt_message(const char *text);
#endif
