/* The oneshot path (SPEC 2.2): one child per request, prompt on stdin, reply
 * on stdout until EOF, ANSI escapes stripped, relayed as it arrives. */
#ifndef KIRO_ONESHOT_H
#define KIRO_ONESHOT_H

#include "rt.h"

typedef struct koneshot koneshot;

void koneshot_start(krt *rt, const kbackend_spec *b, kreq *r);
/* A child stopped by a signal (SIGSTOP, a debugger) is killed and its
 * request ends `crashed`, as a stopped daemon would. */
void koneshot_health_check(krt *rt);

#endif
