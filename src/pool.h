/* A pool of daemons for one backend (cli path, model, arguments, env):
 * a warm minimum, growth on demand to pool_max, shrinking when idle, a bounded
 * queue when all are busy, and restarts with exponential backoff and an
 * intensity limit (too many in a window: daemon mode pauses for a cool-down,
 * and requests fail fast with `spawn` so the policy can serve them oneshot). */
#ifndef KIRO_POOL_H
#define KIRO_POOL_H

#include "rt.h"

struct daemon;

enum pool_state { POOL_OK, POOL_BACKOFF, POOL_COOLDOWN };

typedef struct pool pool;

pool *pool_get(krt *rt, const bspec *b);
void pool_submit(pool *p, kreq *r);
/* Passive: a daemon stopped by a signal, or a zombie, is replaced. Active
 * (probe_interval_ms): an idle daemon is sent probe_prompt and replaced if it
 * does not answer within probe_timeout_ms. */
void pool_health_check(pool *p);
/* Shutdown: stop every daemon; the memory goes once they are reaped. */
void pool_free(pool *p);
krt *pool_rt(pool *p);
void pool_ref(pool *p);
void pool_unref(pool *p);

/* From the daemons. */
void pool_daemon_idle(pool *p, struct daemon *d);
void pool_daemon_idle_expired(pool *p, struct daemon *d);
void pool_daemon_answered(pool *p);
void pool_daemon_stopping(pool *p, struct daemon *d);
void pool_daemon_exited(pool *p, struct daemon *d, int fault, int started, const char *reason);

/* For stats: walk pools and their daemons. */
typedef struct pool_info {
    const char *cli, *model, *state, *last_error;
    int live, queued, failures;
    uint64_t restarts;
} pool_info;
typedef struct daemon_info {
    int pid;
    const char *state;
    uint64_t served;
    int in_flight;
} daemon_info;
pool *pool_first(krt *rt);
pool *pool_next(pool *p);
void pool_describe(pool *p, pool_info *out);
/* Calls fn for each daemon of the pool. */
void pool_each_daemon(pool *p, void (*fn)(void *ud, const daemon_info *), void *ud);

#endif
