/* A pool of daemons for one backend: a warm minimum, growth on demand to
 * pool_max, shrinking when idle, a bounded queue when all are busy, and
 * restarts with exponential backoff and an intensity limit (too many in a
 * window: daemon mode pauses for a cool-down, and what waits goes to the
 * policy at once, with `spawn`, to be served another way).
 *
 * Ownership: its backend creates it and closes it; a closed pool stops its
 * daemons and frees itself once they are reaped, never calling back. */
#ifndef KIRO_POOL_H
#define KIRO_POOL_H

#include "core.h"
#include "proto.h"
#include "request.h"

enum kpool_state { KPOOL_OK, KPOOL_BACKOFF, KPOOL_COOLDOWN };

typedef struct kpool kpool;

/* How its daemons start. Borrowed: the backend keeps it valid until it
 * closes the pool. */
typedef struct kpool_spec {
    const char *cli, *model; /* for messages and stats (copied) */
    char *const *argv;
    char *const *env;
    const kproto_ops *proto;
    /* protocol auto: where a daemon exits with status 2 (a usage error: the
     * CLI has no such subcommand) before it answered, daemons start this
     * way instead, and switched(ud) tells the owner (once). */
    char *const *alt_argv;
    const kproto_ops *alt_proto;
    void (*switched)(void *ud, char *const *argv, const kproto_ops *proto);
    void *ud;
    const char *session_model; /* ACP: the model each session is set to, or NULL */
    const char *tag;           /* a short name for its backend among others of the same CLI (copied) */
    const kconfig *cfg;        /* its settings (copied) */
} kpool_spec;

kpool *kpool_new(kcore *core, const kpool_spec *spec);
void kpool_submit(kpool *p, kreq *r);
/* Its settings changed (copied): what they bound from now on follows them. */
void kpool_configure(kpool *p, const kconfig *cfg);
/* Requests waiting in its queue or on its daemons' wires. */
int kpool_busy(const kpool *p);
/* Passive: a daemon stopped by a job-control signal ('T'), or a zombie, is
 * replaced; one a tracer holds ('t': strace, gdb) is left alone. Active
 * (probe_interval_ms): an idle daemon is sent probe_prompt and replaced if it
 * does not answer within probe_timeout_ms. */
void kpool_health_check(kpool *p);
/* Stops every daemon (what waits fails with `msg`); the memory goes once
 * they are reaped. The pool must not be used afterwards. */
void kpool_close(kpool *p, const char *msg);

/* For stats. */
typedef struct kpool_info {
    const char *cli, *model, *protocol, *tag, *state, *last_error;
    int live, queued, failures, conversations;
    uint64_t restarts;
} kpool_info;
typedef struct kdaemon_info {
    int pid;
    const char *state;
    uint64_t served;
    int in_flight;
} kdaemon_info;
void kpool_describe(const kpool *p, kpool_info *out);
/* Calls fn for each daemon of the pool. */
void kpool_each_daemon(const kpool *p, void (*fn)(void *ud, const kdaemon_info *), void *ud);

#endif
