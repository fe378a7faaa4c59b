/* The oneshot path (SPEC 2.2): one child per request, prompt on stdin, reply
 * on stdout until EOF, ANSI escapes stripped, relayed as it arrives. */
#ifndef KIRO_ONESHOT_H
#define KIRO_ONESHOT_H

#include "core.h"
#include "request.h"

typedef struct koneshot koneshot;

/* How to start the CLI for one request (read only during koneshot_start). */
typedef struct koneshot_spec {
    const char *cli; /* for messages */
    char *const *argv;
    char *const *env;
} koneshot_spec;

void koneshot_start(kcore *core, const koneshot_spec *spec, kreq *r);
/* A child stopped by a job-control signal (SIGSTOP, SIGTSTP: state 'T') is
 * killed and its request ends `crashed`, as a stopped daemon would. One a
 * tracer holds ('t': strace, gdb, LeakSanitizer's check at exit) is not: it
 * goes on once let go, and the stall timeout still bounds the wait. */
void koneshot_health_check(kcore *core);

#endif
