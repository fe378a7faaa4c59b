#include "pool.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "daemon.h"
#include "log.h"

#define RESTART_RING 64

/* A conversation (opts.session): the agent that holds it, or why it is
 * over. Every turn of it goes to that agent. */
typedef struct kconv {
    klist link;
    char *key;
    kdaemon *d; /* NULL once lost */
    uint64_t t_used;
    char lost[256]; /* why it is over; "" while it goes on */
} kconv;

struct kpool {
    kcore *core;
    char *cli, *model; /* copies, for messages and stats */
    char tag[12];
    kpool_spec spec; /* borrowed from the backend while open */
    kconfig cfg;     /* its backend's settings (a copy: it outlives its backend) */
    klist daemons;   /* kdaemon.link */
    int live;        /* daemons not stopping */
    klist queue;     /* kreq.queue: requests waiting for a daemon */
    int queued;
    enum kpool_state state;
    int failures; /* consecutive, reset by an answer */
    uint64_t restarts_at[RESTART_RING];
    int nrestarts;
    uint64_t restarts;
    uv_timer_t timer; /* backoff and cool-down */
    int refs;         /* its backend's until closed, and one per daemon */
    int closing;
    char last_error[512];
    klist convs; /* kconv.link, the most recently used first */
    int nconvs;  /* of them, not lost */
    int nlost;
};

static const char *const state_names[] = { "ok", "backoff", "cooldown" };

static void conv_free(kpool *p, kconv *c)
{
    klist_remove(&c->link);
    if (c->lost[0])
        p->nlost--;
    else
        p->nconvs--;
    free(c->key);
    free(c);
}

static void timer_closed(uv_handle_t *h)
{
    kpool *p = h->data;
    kconv *c;
    while ((c = klist_first(&p->convs, kconv, link)))
        conv_free(p, c);
    free(p->cli);
    free(p->model);
    free(p);
}

static void pool_unref(kpool *p)
{
    assert(p->refs > 0);
    if (--p->refs == 0)
        uv_close((uv_handle_t *)&p->timer, timer_closed);
}

kpool *kpool_new(kcore *core, const kpool_spec *spec)
{
    kpool *p = kcalloc(1, sizeof *p);
    p->core = core;
    p->spec = *spec;
    p->cfg = *spec->cfg;
    p->cli = kstrdup(spec->cli);
    p->model = spec->model ? kstrdup(spec->model) : NULL;
    snprintf(p->tag, sizeof p->tag, "%s", spec->tag ? spec->tag : "");
    klist_init(&p->daemons);
    klist_init(&p->queue);
    klist_init(&p->convs);
    p->refs = 1;
    uv_timer_init(core->loop, &p->timer);
    p->timer.data = p;
    return p;
}

static void enqueue(kpool *p, kreq *r)
{
    klist_insert_tail(&p->queue, &r->queue);
    p->queued++;
}

static void dequeue(kpool *p, kreq *r)
{
    assert(klist_linked(&r->queue));
    klist_remove(&r->queue);
    p->queued--;
}

static void queue_abort(void *carrier, kreq *r, enum kreq_abort why)
{
    (void)why;
    dequeue(carrier, r);
    kreq_unref(r);
}

static kdaemon *spawn_daemon(kpool *p);
static const char *unavailable_reason(kpool *p, char *buf, size_t n);

/* ---- conversations ---------------------------------------------------- */

static kconv *conv_find(kpool *p, const char *key)
{
    klist_foreach (n, &p->convs) {
        kconv *c = klist_entry(n, kconv, link);
        if (strcmp(c->key, key) == 0)
            return c;
    }
    return NULL;
}

/* It is over: its agent forgets it, and the next turn of it hears why (the
 * session_max most recently lost are remembered until then). */
static void conv_lose(kpool *p, kconv *c, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void conv_lose(kpool *p, kconv *c, const char *fmt, ...)
{
    if (c->lost[0])
        return;
    if (c->d)
        kdaemon_forget(c->d, c->key);
    c->d = NULL;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->lost, sizeof c->lost, fmt, ap);
    va_end(ap);
    klog(KLOG_INFO, "kiro.provider", "conversation '%s' on %s is over: %s", c->key, p->cli, c->lost);
    p->nconvs--;
    p->nlost++;
}

/* Past session_max lost conversations, the oldest go (never called while
 * the list is being walked). */
static void convs_trim(kpool *p)
{
    while (p->nlost > p->cfg.session_max) {
        kconv *old = NULL;
        klist_foreach (n, &p->convs) {
            kconv *x = klist_entry(n, kconv, link);
            if (x->lost[0])
                old = x;
        }
        conv_free(p, old);
    }
}

/* Conversation c was used now: the most recently used. */
static void conv_assign_touch(kpool *p, kconv *c)
{
    c->t_used = uv_now(p->core->loop);
    klist_remove(&c->link);
    klist_insert_head(&p->convs, &c->link);
}

/* Turn r of conversation c starts on d. */
static void conv_assign(kpool *p, kconv *c, kdaemon *d, kreq *r)
{
    conv_assign_touch(p, c);
    kdaemon_assign(d, r);
}

/* A new conversation, held by d; past session_max the least recently used
 * one is over. */
static kconv *conv_new(kpool *p, const char *key, kdaemon *d)
{
    if (p->nconvs >= p->cfg.session_max) {
        kconv *lru = NULL;
        klist_foreach (n, &p->convs) {
            kconv *x = klist_entry(n, kconv, link);
            if (!x->lost[0])
                lru = x;
        }
        conv_lose(p, lru, "session_max (%d) reached: the least recently used conversation was dropped",
                  p->cfg.session_max);
        convs_trim(p);
    }
    kconv *c = kcalloc(1, sizeof *c);
    c->key = kstrdup(key);
    c->d = d;
    klist_insert_head(&p->convs, &c->link);
    p->nconvs++;
    return c;
}

/* r goes to d; a conversation it starts is d's once d has taken it (a
 * protocol without conversations refuses it at once). */
static void assign_new(kpool *p, kdaemon *d, kreq *r)
{
    kdaemon_assign(d, r);
    if (r->session && !r->ended && !conv_find(p, r->session))
        conv_assign_touch(p, conv_new(p, r->session, d));
}

/* Where a conversation's turn goes now: 1 (assigned, or ended: lost), 0
 * (its agent is busy: it waits). */
static int conv_route(kpool *p, kconv *c, kreq *r)
{
    if (c->lost[0]) {
        kreq_end(r, KERR_SESSION_LOST, "conversation '%s' is over: %s", c->key, c->lost);
        conv_free(p, c);
        return 1;
    }
    if (kdaemon_room(c->d) == 0)
        return 0;
    conv_assign(p, c, c->d, r);
    return 1;
}

/* Does d hold a conversation that goes on? (It is then kept, idle or not.) */
static int holds_convs(kpool *p, const kdaemon *d)
{
    klist_foreach (n, &p->convs)
        if (klist_entry(n, kconv, link)->d == d)
            return 1;
    return 0;
}

/* Its conversations end with the daemon (those it never started simply go). */
static void convs_of_gone_daemon(kpool *p, kdaemon *d)
{
    klist_foreach (n, &p->convs) {
        kconv *c = klist_entry(n, kconv, link);
        if (c->d != d)
            continue;
        if (!d->started) {
            conv_free(p, c);
            continue;
        }
        c->d = NULL; /* its protocol state goes with it: nothing to forget */
        conv_lose(p, c, "the agent that held it (pid %d) went away", d->pid);
        /* Its turns that wait hear so now, not when some daemon is free;
         * once one has heard, the key is free for a new conversation. */
        int told = 0;
        klist_foreach (q, &p->queue) {
            kreq *r = klist_entry(q, kreq, queue);
            if (r->session && strcmp(r->session, c->key) == 0) {
                dequeue(p, r);
                kreq_clear_carrier(r);
                kreq_end(r, KERR_SESSION_LOST, "conversation '%s' is over: %s", c->key, c->lost);
                kreq_unref(r);
                told = 1;
            }
        }
        if (told)
            conv_free(p, c);
    }
    convs_trim(p);
}

static void convs_expire(kpool *p)
{
    uint64_t now = uv_now(p->core->loop), idle = p->cfg.session_idle_ms;
    klist_foreach (n, &p->convs) {
        kconv *c = klist_entry(n, kconv, link);
        if (!c->lost[0] && now - c->t_used >= idle)
            conv_lose(p, c, "unused for %llu ms (session_idle_ms)", (unsigned long long)idle);
    }
    convs_trim(p);
}

/* Requests that would only wait for a daemon that cannot come soon fail fast
 * with `spawn`, so the policy can serve them another way. */
static void fail_queue(kpool *p, const char *why)
{
    kreq *r;
    while ((r = klist_first(&p->queue, kreq, queue))) {
        dequeue(p, r);
        kreq_end(r, KERR_SPAWN, "%s", why);
        kreq_unref(r);
    }
}

/* A pool that has no daemon and cannot start one now (backing off, cooling
 * down) strands nobody: what waits goes to the policy at once. */
static void unstrand(kpool *p)
{
    if (p->live == 0 && p->state != KPOOL_OK && p->queued) {
        char why[768];
        fail_queue(p, unavailable_reason(p, why, sizeof why));
    }
}

static kdaemon *idle_daemon(kpool *p)
{
    klist_foreach (n, &p->daemons) {
        kdaemon *d = klist_entry(n, kdaemon, link);
        if (kdaemon_idle(d))
            return d;
    }
    return NULL;
}

/* With pipeline_depth > 1: the least loaded daemon that takes one more. */
static kdaemon *roomy_daemon(kpool *p)
{
    kdaemon *best = NULL;
    klist_foreach (n, &p->daemons) {
        kdaemon *d = klist_entry(n, kdaemon, link);
        if (kdaemon_room(d) > 0 && (!best || d->count < best->count))
            best = d;
    }
    return best;
}

/* Where a request goes: an idle daemon, else a new one (within pool_max and
 * when not backing off), else the back of a pipeline with room. */
static kdaemon *pick(kpool *p)
{
    kdaemon *d = idle_daemon(p);
    if (!d && p->state == KPOOL_OK && p->live < p->cfg.pool_max)
        d = spawn_daemon(p);
    return d ? d : roomy_daemon(p);
}

static void top_up(kpool *p)
{
    while (!p->closing && p->state == KPOOL_OK && p->live < p->cfg.pool_min)
        if (!spawn_daemon(p))
            break;
}

void kpool_configure(kpool *p, const kconfig *cfg)
{
    p->cfg = *cfg;
    top_up(p);
}

/* Serves the queue in order: a request goes to a daemon with room, and a
 * conversation's turn to the daemon that holds it (while that one is busy,
 * the turn waits and those behind it go on). */
static void dispatch(kpool *p)
{
    int spawnable = 1;
    klist_foreach (n, &p->queue) {
        kreq *r = klist_entry(n, kreq, queue);
        if (r->session && p->spec.alt_proto)
            continue; /* waits until the protocol is known */
        kconv *c = r->session ? conv_find(p, r->session) : NULL;
        if (c) {
            if (!c->lost[0] && kdaemon_room(c->d) == 0)
                continue;
            dequeue(p, r);
            kreq_clear_carrier(r);
            conv_route(p, c, r); /* assigned, or ended (lost) */
            kreq_unref(r);
            continue;
        }
        kdaemon *d = spawnable ? pick(p) : NULL;
        if (!d) {
            if (p->nconvs == 0)
                break;     /* no daemon for the rest, and no conversation to go on */
            spawnable = 0; /* only turns of conversations may go on */
            continue;
        }
        dequeue(p, r);
        kreq_clear_carrier(r);
        assign_new(p, d, r);
        kreq_unref(r);
    }
}

static const char *unavailable_reason(kpool *p, char *buf, size_t n)
{
    if (p->state == KPOOL_COOLDOWN)
        snprintf(buf, n, "daemon restart limit reached (%d restarts within %llu ms); daemon mode paused: %s",
                 p->cfg.restart_max, (unsigned long long)p->cfg.restart_window_ms, p->last_error);
    else if (p->last_error[0])
        snprintf(buf, n, "daemon is restarting after a failure: %s", p->last_error);
    else
        snprintf(buf, n, "no daemon available");
    return buf;
}

/* protocol auto, not settled yet: a conversation's turn waits to know
 * (JSON Lines has none; ACP does), and a daemon is asked something so that
 * the pool learns (a probe; or it exits, having no such subcommand). */
static int wait_for_protocol(kpool *p, kreq *r)
{
    if (!r->session || !p->spec.alt_proto)
        return 0;
    if (p->live == 0 && p->state == KPOOL_OK)
        spawn_daemon(p);
    klist_foreach (n, &p->daemons) {
        kdaemon *d = klist_entry(n, kdaemon, link);
        if (!d->started && kdaemon_idle(d) && d->probes == 0)
            kdaemon_probe(d);
    }
    return 1;
}

void kpool_submit(kpool *p, kreq *r)
{
    char why[768];
    kconv *c = r->session ? conv_find(p, r->session) : NULL;
    kdaemon *d = NULL;
    if (wait_for_protocol(p, r)) {
        kreq_ref(r);
        enqueue(p, r);
        static const kreq_carrier_ops held_ops = { queue_abort, NULL, NULL };
        kreq_set_carrier(r, p, &held_ops);
        return;
    }
    if (c && conv_route(p, c, r))
        return;
    if (!c && (d = pick(p))) {
        assign_new(p, d, r);
        top_up(p);
        return;
    }
    if (p->live == 0) {
        kreq_end(r, KERR_SPAWN, "%s", unavailable_reason(p, why, sizeof why));
        return;
    }
    if (p->queued >= p->cfg.queue_max) {
        kreq_end(r, KERR_OVERLOADED, "queue full: %d requests waiting for %s", p->queued, p->cli);
        return;
    }
    kreq_ref(r);
    enqueue(p, r);
    static const kreq_carrier_ops queue_ops = { queue_abort, NULL, NULL };
    kreq_set_carrier(r, p, &queue_ops);
}

static void on_timer(uv_timer_t *t)
{
    kpool *p = t->data;
    if (p->state == KPOOL_COOLDOWN) {
        klog(KLOG_INFO, "kiro.provider", "cool-down over for %s; trying daemon mode again", p->cli);
        p->nrestarts = 0;
        p->failures = 0;
    }
    p->state = KPOOL_OK;
    top_up(p);
    dispatch(p);
}

static int restarts_in_window(kpool *p, uint64_t now)
{
    int n = 0;
    uint64_t win = p->cfg.restart_window_ms;
    int count = p->nrestarts < RESTART_RING ? p->nrestarts : RESTART_RING;
    for (int i = 0; i < count; i++)
        if (now - p->restarts_at[i] <= win)
            n++;
    return n;
}

static void record_failure(kpool *p, const char *reason)
{
    const kconfig *c = &p->cfg;
    uint64_t now = uv_now(p->core->loop);
    snprintf(p->last_error, sizeof p->last_error, "%s", reason);
    p->failures++;
    p->restarts++;
    p->restarts_at[p->nrestarts++ % RESTART_RING] = now;
    if (p->state == KPOOL_COOLDOWN) {
        unstrand(p);
        return;
    }
    if (restarts_in_window(p, now) > c->restart_max) {
        p->state = KPOOL_COOLDOWN;
        klog(KLOG_WARN, "kiro.provider",
             "daemon for %s failed %d times within %llu ms; daemon mode paused for %llu ms: %s", p->cli,
             restarts_in_window(p, now), (unsigned long long)c->restart_window_ms,
             (unsigned long long)c->cooldown_ms, reason);
        uv_timer_start(&p->timer, on_timer, c->cooldown_ms, 0);
    } else {
        uint64_t delay = c->restart_backoff_ms;
        for (int i = 1; i < p->failures && delay < c->restart_backoff_max_ms; i++)
            delay *= 2;
        if (delay > c->restart_backoff_max_ms)
            delay = c->restart_backoff_max_ms;
        p->state = KPOOL_BACKOFF;
        klog(KLOG_INFO, "kiro.provider", "restarting daemon for %s in %llu ms", p->cli,
             (unsigned long long)delay);
        uv_timer_start(&p->timer, on_timer, delay, 0);
    }
    unstrand(p);
}

static const kdaemon_cbs daemon_cbs;

static kdaemon *spawn_daemon(kpool *p)
{
    char err[512];
    kdaemon_opts o = { p->spec.argv, p->spec.env, p->spec.proto,
                       p->spec.proto == &kproto_acp ? p->spec.session_model : NULL, &p->cfg };
    assert(!p->closing);
    kdaemon *d = kdaemon_new(p->core, &o, &daemon_cbs, p, err, sizeof err);
    if (!d) {
        klog(KLOG_INFO, "kiro.provider", "%s", err);
        p->core->stats.daemon_start_failures++;
        record_failure(p, err);
        return NULL;
    }
    klist_insert_head(&p->daemons, &d->link);
    p->live++;
    p->refs++; /* dropped when the daemon is freed */
    return d;
}

/* ---- what its daemons tell it ----------------------------------------- */

static void on_daemon_idle(void *owner, kdaemon *d)
{
    kpool *p = owner;
    if (kdaemon_room(d) == 0)
        return;
    if (p->closing) {
        if (d->count == 0)
            kdaemon_stop(d, NULL);
        return;
    }
    dispatch(p);
    if (d->state == KD_READY && p->live > p->cfg.pool_min && !holds_convs(p, d))
        kdaemon_arm_idle(d, p->cfg.pool_idle_ms);
}

static void on_daemon_idle_expired(void *owner, kdaemon *d)
{
    kpool *p = owner;
    if (p->live > p->cfg.pool_min && !holds_convs(p, d)) {
        klog(KLOG_DEBUG, "kiro.provider", "stopping idle daemon pid %d", d->pid);
        kdaemon_stop(d, NULL);
    }
}

static void on_daemon_answered(void *owner, kdaemon *d)
{
    kpool *p = owner;
    p->failures = 0;
    if (p->spec.alt_proto && d->proto == p->spec.proto) {
        /* protocol auto: the first protocol works; settled. */
        p->spec.alt_argv = NULL;
        p->spec.alt_proto = NULL;
        if (p->spec.switched)
            p->spec.switched(p->spec.ud, p->spec.argv, p->spec.proto);
        if (!p->closing)
            dispatch(p); /* conversations that waited to know */
    }
}

static void on_daemon_stopping(void *owner, kdaemon *d)
{
    kpool *p = owner;
    convs_of_gone_daemon(p, d);
    p->live--;
    assert(p->live >= 0);
    unstrand(p);
}

static int on_daemon_exited(void *owner, kdaemon *d, int fault, int started, const char *reason)
{
    kpool *p = owner;
    klist_remove(&d->link);
    if (p->closing || !fault)
        return 0;
    int no_subcommand = !started && !d->exit_signal && d->exit_status == 2;
    if (no_subcommand && d->proto != p->spec.proto)
        return 1; /* started before the switch below: its requests go the new way */
    if (no_subcommand && p->spec.alt_proto) {
        /* protocol auto: no such subcommand. The other protocol, at once,
         * for the requests it held too; remembered by the backend. */
        klog(KLOG_INFO, "kiro.provider", "`%s %s`: no such subcommand (%s); speaking %s instead: %s %s",
             p->cli, p->spec.argv[1] ? p->spec.argv[1] : "", reason, p->spec.alt_proto->name,
             p->spec.alt_argv[0], p->spec.alt_argv[1] ? p->spec.alt_argv[1] : "");
        p->spec.argv = p->spec.alt_argv;
        p->spec.proto = p->spec.alt_proto;
        p->spec.alt_argv = NULL;
        p->spec.alt_proto = NULL;
        if (p->spec.switched)
            p->spec.switched(p->spec.ud, p->spec.argv, p->spec.proto);
        dispatch(p); /* what waits goes the new way too */
        top_up(p);
        return 1;
    }
    if (started)
        p->core->stats.daemon_restarts++;
    else
        p->core->stats.daemon_start_failures++;
    record_failure(p, reason);
    return 0;
}

static void on_daemon_requeue(void *owner, kreq *r)
{
    kpool_submit(owner, r);
}

static void on_daemon_freed(void *owner)
{
    pool_unref(owner);
}

static const kdaemon_cbs daemon_cbs = {
    on_daemon_idle,   on_daemon_idle_expired, on_daemon_answered, on_daemon_stopping,
    on_daemon_exited, on_daemon_requeue,      on_daemon_freed,
};

int kpool_busy(const kpool *p)
{
    if (p->queued)
        return 1;
    klist_foreach (n, &p->daemons) {
        const kdaemon *d = klist_entry(n, kdaemon, link);
        if (d->count > d->drains + d->probes)
            return 1;
    }
    return 0;
}

void kpool_health_check(kpool *p)
{
    const kconfig *c = &p->cfg;
    uint64_t now = uv_now(p->core->loop);
    convs_expire(p);
    klist_foreach (n, &p->daemons) {
        kdaemon *d = klist_entry(n, kdaemon, link);
        if (d->state == KD_STOPPING || !d->proc)
            continue;
        char st = kproc_state(d->proc);
        if (st == 'T' || st == 'Z') { /* not 't': a tracer holds it, and lets it go */
            char why[128];
            snprintf(why, sizeof why, "daemon pid %d is %s", d->pid,
                     st == 'Z' ? "a zombie" : "stopped by a signal");
            kdaemon_fail(d, why);
            continue;
        }
        if (c->probe_interval_ms && d->state == KD_READY && now - d->t_idle >= c->probe_interval_ms)
            kdaemon_probe(d);
    }
}

void kpool_close(kpool *p, const char *msg)
{
    assert(!p->closing);
    p->closing = 1;
    uv_timer_stop(&p->timer);
    fail_queue(p, msg);
    klist_foreach (n, &p->daemons)
        kdaemon_stop(klist_entry(n, kdaemon, link), NULL);
    pool_unref(p);
}

void kpool_describe(const kpool *p, kpool_info *out)
{
    out->cli = p->cli;
    out->model = p->model;
    out->protocol = p->spec.proto->name;
    out->tag = p->tag;
    out->state = state_names[p->state];
    out->last_error = p->last_error;
    out->live = p->live;
    out->queued = p->queued;
    out->failures = p->failures;
    out->conversations = p->nconvs;
    out->restarts = p->restarts;
}

void kpool_each_daemon(const kpool *p, void (*fn)(void *ud, const kdaemon_info *), void *ud)
{
    klist_foreach (n, &p->daemons) {
        const kdaemon *d = klist_entry(n, kdaemon, link);
        kdaemon_info di = { d->pid, kdaemon_state_name(d->state), d->served, d->count - d->drains };
        fn(ud, &di);
    }
}
