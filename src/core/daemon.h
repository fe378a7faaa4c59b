/* One long-lived backend connection: a supervised child, a line framer, a
 * wire protocol and the requests on its wire, answered in order (the JSON
 * Lines protocol has no request ids). Its owner (a pool) decides which
 * daemon serves what, and hears what happens through kdaemon_cbs.
 *
 * Ownership: the daemon frees itself once its child has been reaped and its
 * timer closed; `freed` is its last word to the owner, who must outlive it. */
#ifndef KIRO_DAEMON_H
#define KIRO_DAEMON_H

#include <stdint.h>
#include <uv.h>

#include "buf.h"
#include "core.h"
#include "jsonl.h"
#include "proc.h"
#include "proto.h"
#include "request.h"

typedef struct kdaemon kdaemon;

/* What a daemon tells its owner. */
typedef struct kdaemon_cbs {
    void (*idle)(void *owner, kdaemon *d);         /* it has room for another request */
    void (*idle_expired)(void *owner, kdaemon *d); /* idle for the time kdaemon_arm_idle set */
    void (*answered)(void *owner, kdaemon *d);     /* a reply came: its backend works */
    void (*stopping)(void *owner, kdaemon *d);     /* it takes no more requests */
    /* It exited: `fault` when it was not asked to, `started` when it had
     * answered in its protocol at least once (d->exit_status, d->exit_signal
     * say how). Returns 1 to take back the requests on its wire (requeue,
     * once each) instead of failing them: the owner will start them anew. */
    int (*exited)(void *owner, kdaemon *d, int fault, int started, const char *reason);
    void (*requeue)(void *owner, kreq *r);
    void (*freed)(void *owner); /* the last callback: the daemon's memory is gone */
} kdaemon_cbs;

/* How to start one. */
typedef struct kdaemon_opts {
    char *const *argv;
    char *const *env;
    const kproto_ops *proto;
    const char *session_model; /* chosen in each session (ACP), or NULL */
    const kconfig *cfg;        /* its settings: its pool's, which outlives it */
} kdaemon_opts;

enum kdaemon_state { KD_READY, KD_BUSY, KD_DRAINING, KD_STOPPING };

#define DAEMON_MAX_DEPTH KIRO_MAX_PIPELINE_DEPTH

/* A request on the wire. The protocol has no ids, so replies come back in
 * the order requests were sent; a cancelled request keeps its slot with
 * r == NULL, and its reply is read and dropped (drained). */
typedef struct kdaemon_slot {
    kreq *r;
    int stream;
} kdaemon_slot;

struct kdaemon {
    kcore *core;
    const kdaemon_cbs *cbs;
    void *owner;
    const kconfig *cfg;
    kproc *proc;
    int pid;
    kjsonl fr;
    const kproto_ops *proto;
    void *pstate;
    kdaemon_slot slots[DAEMON_MAX_DEPTH]; /* ring: head is the reply being read */
    int head, count, drains, probes;      /* probes: in flight, not counted against depth */
    enum kdaemon_state state;             /* ready: nothing in flight; busy; draining: only dropped replies */
    unsigned started : 1;                 /* it has answered in its protocol at least once */
    unsigned fault : 1;                   /* stopped by us because it misbehaved */
    unsigned reading : 1;                 /* inside on_stdout: lines of one read are being looked at */
    unsigned idle_pending : 1;            /* a reply ended while reading: tell the pool afterwards */
    kbuf acc;                             /* the head's reply, when not streamed, until it ends */
    kreq *pauser;                         /* the request whose reader asked the output to wait */
    uint64_t served, t_idle;
    long long exit_status; /* once exited: its status, or the signal that ended it */
    int exit_signal;
    uv_timer_t timer; /* idle shrink, or the drain bound */
    klist link;       /* in its owner's list */
    char why[256];    /* why we stopped it */
};

/* Spawns a daemon. On failure returns NULL with a reason in `err`. */
kdaemon *kdaemon_new(kcore *core, const kdaemon_opts *o, const kdaemon_cbs *cbs, void *owner, char *err,
                     size_t errlen);
/* Sends `r`; the daemon must have room (kdaemon_room). */
void kdaemon_assign(kdaemon *d, kreq *r);
/* How many more requests it takes now (pipeline_depth less those in flight). */
int kdaemon_room(const kdaemon *d);
/* Nothing in flight but, perhaps, a probe. */
int kdaemon_idle(const kdaemon *d);
/* Orderly stop (stdin closed, then signals). `fault`: why, when it misbehaved. */
void kdaemon_stop(kdaemon *d, const char *fault);
void kdaemon_arm_idle(kdaemon *d, uint64_t ms);
/* The conversation `session` is over: its protocol forgets it. */
void kdaemon_forget(kdaemon *d, const char *session);
/* The daemon is unhealthy: its request fails, it is killed and replaced. */
void kdaemon_fail(kdaemon *d, const char *why);
/* Sends the configured probe prompt; a probe that times out replaces it. */
void kdaemon_probe(kdaemon *d);
const char *kdaemon_state_name(enum kdaemon_state s);

#endif
