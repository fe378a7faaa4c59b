/* A pool of daemons for one backend (cli path, model, arguments, env):
 * a warm minimum, growth on demand to pool_max, shrinking when idle, a bounded
 * queue when all are busy, and restarts with exponential backoff and an
 * intensity limit (too many in a window: daemon mode pauses for a cool-down,
 * and requests fail fast with `spawn` so the policy can serve them oneshot). */
#ifndef KIRO_POOL_H
#define KIRO_POOL_H

#include "rt.h"

struct kdaemon;

enum kpool_state { KPOOL_OK, KPOOL_BACKOFF, KPOOL_COOLDOWN };

typedef struct kpool kpool;

kpool *kpool_get(krt *rt, const kbackend_spec *b);
void kpool_submit(kpool *p, kreq *r);
/* Passive: a daemon stopped by a signal, or a zombie, is replaced. Active
 * (probe_interval_ms): an idle daemon is sent probe_prompt and replaced if it
 * does not answer within probe_timeout_ms. */
void kpool_health_check(kpool *p);
/* Shutdown: stop every daemon; the memory goes once they are reaped. */
void kpool_free(kpool *p);
krt *kpool_rt(kpool *p);
void kpool_ref(kpool *p);
void kpool_unref(kpool *p);

/* From the daemons. */
void kpool_daemon_idle(kpool *p, struct kdaemon *d);
void kpool_daemon_idle_expired(kpool *p, struct kdaemon *d);
void kpool_daemon_answered(kpool *p);
void kpool_daemon_stopping(kpool *p, struct kdaemon *d);
void kpool_daemon_exited(kpool *p, struct kdaemon *d, int fault, int started, const char *reason);

/* For stats: walk pools and their daemons. */
typedef struct kpool_info {
    const char *cli, *model, *state, *last_error;
    int live, queued, failures;
    uint64_t restarts;
} kpool_info;
typedef struct kdaemon_info {
    int pid;
    const char *state;
    uint64_t served;
    int in_flight;
} kdaemon_info;
kpool *kpool_first(krt *rt);
kpool *kpool_next(kpool *p);
void kpool_describe(kpool *p, kpool_info *out);
/* Calls fn for each daemon of the pool. */
void kpool_each_daemon(kpool *p, void (*fn)(void *ud, const kdaemon_info *), void *ud);

#endif
