/* One long-lived backend connection: a supervised child, a line framer, a
 * wire protocol and at most one request in flight (the JSON Lines protocol
 * has no request ids). The pool decides which daemon serves what. */
#ifndef KIRO_DAEMON_H
#define KIRO_DAEMON_H

#include <stdint.h>
#include <uv.h>

#include "jsonl.h"
#include "proc.h"
#include "proto.h"
#include "rt.h"

struct pool;

enum daemon_state { D_READY, D_BUSY, D_DRAINING, D_STOPPING };

#define DAEMON_MAX_DEPTH KIRO_MAX_PIPELINE_DEPTH

/* A request on the wire. The protocol has no ids, so replies come back in
 * the order requests were sent; a cancelled request keeps its slot with
 * r == NULL, and its reply is read and dropped (drained). */
typedef struct daemon_slot {
    kreq *r;
    int stream;
} daemon_slot;

typedef struct daemon {
    struct pool *pool;
    krt *rt;
    proc *proc;
    int pid;
    jsonl_framer fr;
    const proto_ops *proto;
    void *pstate;
    daemon_slot slots[DAEMON_MAX_DEPTH]; /* ring: head is the reply being read */
    int head, count, drains, probes; /* probes: in flight, not counted against depth */
    enum daemon_state state; /* ready: nothing in flight; busy; draining: only dropped replies */
    unsigned started : 1; /* it has answered in its protocol at least once */
    unsigned fault : 1;   /* stopped by us because it misbehaved */
    unsigned reading : 1; /* inside on_stdout: lines of one read are being looked at */
    unsigned idle_pending : 1; /* a reply ended while reading: tell the pool afterwards */
    kbuf acc;             /* the head's reply, when not streamed, until it ends */
    kreq *pauser;         /* the request whose reader asked the output to wait */
    uint64_t served, t_spawn, t_sent, t_idle;
    uv_timer_t timer;     /* idle shrink, or the drain bound */
    struct daemon *next, *prev;
    char why[256];        /* why we stopped it */
} daemon;

/* Spawns a daemon. On failure returns NULL with a reason in `err`. */
daemon *daemon_new(struct pool *owner, char **argv, char **env, const proto_ops *proto,
                   char *err, size_t errlen);
/* Sends `r`; the daemon must have room (daemon_room). */
void daemon_assign(daemon *d, kreq *r);
/* How many more requests it takes now (pipeline_depth less those in flight). */
int daemon_room(const daemon *d);
/* Nothing in flight but, perhaps, a probe. */
int daemon_idle(const daemon *d);
/* Orderly stop (stdin closed, then signals). `fault`: why, when it misbehaved. */
void daemon_stop(daemon *d, const char *fault);
void daemon_arm_idle(daemon *d, uint64_t ms);
/* The daemon is unhealthy: its request fails, it is killed and replaced. */
void daemon_fail(daemon *d, const char *why);
/* Sends the configured probe prompt; a probe that times out replaces it. */
void daemon_probe(daemon *d);
const char *daemon_state_name(enum daemon_state s);

#endif
