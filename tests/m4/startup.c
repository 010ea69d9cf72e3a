/* The smallest start for a Cortex-M4 on QEMU's MPS2 AN386 board (tests/cli_export_int8.sh): the
 * vector table (initial stack pointer, reset handler), .data copied from flash to RAM, then
 * newlib's _start (librdimon: clears .bss, sets up semihosting so that printf reaches the host's
 * terminal and main's return value becomes QEMU's exit status). Faults spin; the test's timeout
 * catches them. */
#include <stdint.h>

extern uint32_t __stack_top, __data_load, __data_start, __data_end;
extern void _start(void);

void reset_handler(void);
void reset_handler(void) {
    const uint32_t *src = &__data_load;
    for (uint32_t *dst = &__data_start; dst < &__data_end;) *dst++ = *src++;
    _start();
}

static void fault(void) {
    for (;;) {
    }
}

__attribute__((section(".vectors"), used)) static void *const vectors[16] = {
    &__stack_top, (void *)reset_handler, (void *)fault, (void *)fault, (void *)fault, (void *)fault, (void *)fault,
    0, 0, 0, 0, (void *)fault, (void *)fault, 0, (void *)fault, (void *)fault};
