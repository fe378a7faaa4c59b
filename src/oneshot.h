/* The oneshot path (SPEC 2.2): one child per request, prompt on stdin, reply
 * on stdout until EOF, ANSI escapes stripped, relayed as it arrives. */
#ifndef KIRO_ONESHOT_H
#define KIRO_ONESHOT_H

#include "rt.h"

void oneshot_start(krt *rt, const bspec *b, kreq *r);

#endif
