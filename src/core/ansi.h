/* Streaming removal of ANSI escape sequences (CSI, OSC, two-byte ESC forms).
 * State survives between calls, so a sequence split across reads is removed. */
#ifndef KIRO_ANSI_H
#define KIRO_ANSI_H

#include <stddef.h>

typedef struct kansi_state {
    int st;
} kansi_state;

/* Filters `in` into `out` (at least n bytes); returns the bytes written. */
size_t kansi_strip(kansi_state *s, const char *in, size_t n, char *out);

#endif
