/* Streaming removal of ANSI escape sequences (CSI, OSC, two-byte ESC forms).
 * State survives between calls, so a sequence split across reads is removed. */
#ifndef KIRO_ANSI_H
#define KIRO_ANSI_H

#include <stddef.h>

typedef struct ansi_state {
    int st;
} ansi_state;

/* Filters `in` into `out` (at least n bytes); returns the bytes written. */
size_t ansi_strip(ansi_state *s, const char *in, size_t n, char *out);

#endif
