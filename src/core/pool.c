#include "pool.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "daemon.h"
#include "log.h"

#define RESTART_RING 64

struct kpool {
    krt *rt;
    kpool *next, *prev;
    char *key;
    size_t keylen;
    char *cli, *model;
    char **argv, **env;
    const kproto_ops *proto;
    kdaemon *daemons;
    int live; /* daemons not stopping */
    kreq *qhead, *qtail;
    int queued;
    enum kpool_state state;
    int failures; /* consecutive, reset by an answer */
    uint64_t restarts_at[RESTART_RING];
    int nrestarts;
    uint64_t restarts;
    uv_timer_t timer; /* backoff and cool-down */
    int refs;
    int closing;
    char last_error[512];
};

static const char *const state_names[] = { "ok", "backoff", "cooldown" };

krt *kpool_rt(kpool *p)
{
    return p->rt;
}

/* A key that tells backends apart: every field, NUL-separated. */
static char *make_key(const kbackend_spec *b, size_t *len)
{
    kbuf k = { 0 };
    const char *parts[] = { b->protocol, b->cli, b->model ? b->model : "" };
    for (size_t i = 0; i < 3; i++)
        kbuf_append(&k, parts[i], strlen(parts[i]) + 1);
    for (const char *const *a = b->daemon_args; a && *a; a++)
        kbuf_append(&k, *a, strlen(*a) + 1);
    kbuf_append(&k, "\x01", 1);
    for (const char *const *e = b->env; e && *e; e++)
        kbuf_append(&k, *e, strlen(*e) + 1);
    *len = k.len;
    return k.data;
}

static void timer_closed(uv_handle_t *h)
{
    kpool *p = h->data;
    kstrv_free(p->argv);
    kstrv_free(p->env);
    free(p->key);
    free(p->cli);
    free(p->model);
    free(p);
}

void kpool_ref(kpool *p)
{
    p->refs++;
}

void kpool_unref(kpool *p)
{
    if (--p->refs == 0)
        uv_close((uv_handle_t *)&p->timer, timer_closed);
}

kpool *kpool_get(krt *rt, const kbackend_spec *b)
{
    size_t klen;
    char *key = make_key(b, &klen);
    for (kpool *p = rt->pools; p; p = p->next)
        if (p->keylen == klen && memcmp(p->key, key, klen) == 0) {
            free(key);
            return p;
        }
    kpool *p = kcalloc(1, sizeof *p);
    p->rt = rt;
    p->key = key;
    p->keylen = klen;
    p->cli = kstrdup(b->cli);
    p->model = b->model ? kstrdup(b->model) : NULL;
    p->argv = kbackend_argv(b->cli, b->daemon_args, b->model);
    p->env = kbackend_env(b->env, 1);
    p->proto = kproto_find(b->protocol);
    if (!p->proto)
        p->proto = &kproto_jsonl;
    p->refs = 1;
    uv_timer_init(rt->loop, &p->timer);
    p->timer.data = p;
    p->next = rt->pools;
    if (rt->pools)
        rt->pools->prev = p;
    rt->pools = p;
    return p;
}

static void enqueue(kpool *p, kreq *r)
{
    r->qnext = NULL;
    r->qprev = p->qtail;
    if (p->qtail)
        p->qtail->qnext = r;
    else
        p->qhead = r;
    p->qtail = r;
    p->queued++;
}

static void dequeue(kpool *p, kreq *r)
{
    if (r->qprev)
        r->qprev->qnext = r->qnext;
    else
        p->qhead = r->qnext;
    if (r->qnext)
        r->qnext->qprev = r->qprev;
    else
        p->qtail = r->qprev;
    r->qnext = r->qprev = NULL;
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

/* Requests that would only wait for a daemon that cannot come soon fail fast
 * with `spawn`, so the policy can serve them another way. */
static void fail_queue(kpool *p, const char *why)
{
    while (p->qhead) {
        kreq *r = p->qhead;
        dequeue(p, r);
        kreq_end(r, KERR_SPAWN, "%s", why);
        kreq_unref(r);
    }
}

/* A pool that has no daemon and cannot start one now (backing off, cooling
 * down) strands nobody: what waits goes to the policy at once. */
static void unstrand(kpool *p)
{
    if (p->live == 0 && p->state != KPOOL_OK && p->qhead) {
        char why[768];
        fail_queue(p, unavailable_reason(p, why, sizeof why));
    }
}

static kdaemon *idle_daemon(kpool *p)
{
    for (kdaemon *d = p->daemons; d; d = d->next)
        if (kdaemon_idle(d))
            return d;
    return NULL;
}

/* With pipeline_depth > 1: the least loaded daemon that takes one more. */
static kdaemon *roomy_daemon(kpool *p)
{
    kdaemon *best = NULL;
    for (kdaemon *d = p->daemons; d; d = d->next)
        if (kdaemon_room(d) > 0 && (!best || d->count < best->count))
            best = d;
    return best;
}

/* Where a request goes: an idle daemon, else a new one (within pool_max and
 * when not backing off), else the back of a pipeline with room. */
static kdaemon *pick(kpool *p)
{
    kdaemon *d = idle_daemon(p);
    if (!d && p->state == KPOOL_OK && p->live < p->rt->cfg.pool_max)
        d = spawn_daemon(p);
    return d ? d : roomy_daemon(p);
}

static void top_up(kpool *p)
{
    while (!p->closing && p->state == KPOOL_OK && p->live < p->rt->cfg.pool_min)
        if (!spawn_daemon(p))
            break;
}

static void dispatch(kpool *p)
{
    while (p->qhead) {
        kdaemon *d = pick(p);
        if (!d)
            break;
        kreq *r = p->qhead;
        dequeue(p, r);
        kreq_clear_carrier(r);
        kdaemon_assign(d, r);
        kreq_unref(r);
    }
}

static const char *unavailable_reason(kpool *p, char *buf, size_t n)
{
    if (p->state == KPOOL_COOLDOWN)
        snprintf(buf, n, "daemon restart limit reached (%d restarts within %llu ms); daemon mode paused: %s",
                 p->rt->cfg.restart_max, (unsigned long long)p->rt->cfg.restart_window_ms, p->last_error);
    else if (p->last_error[0])
        snprintf(buf, n, "daemon is restarting after a failure: %s", p->last_error);
    else
        snprintf(buf, n, "no daemon available");
    return buf;
}

void kpool_submit(kpool *p, kreq *r)
{
    char why[768];
    kdaemon *d = pick(p);
    if (d) {
        kdaemon_assign(d, r);
        top_up(p);
        return;
    }
    if (p->live == 0) {
        kreq_end(r, KERR_SPAWN, "%s", unavailable_reason(p, why, sizeof why));
        return;
    }
    if (p->queued >= p->rt->cfg.queue_max) {
        kreq_end(r, KERR_OVERLOADED, "queue full: %d requests waiting for %s", p->queued, p->cli);
        return;
    }
    kreq_ref(r);
    enqueue(p, r);
    static const kreq_carrier_ops queue_ops = { queue_abort, NULL };
    kreq_set_carrier(r, p, &queue_ops);
    r->t_activity = 0; /* a queued request cannot stall */
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
    uint64_t win = p->rt->cfg.restart_window_ms;
    int count = p->nrestarts < RESTART_RING ? p->nrestarts : RESTART_RING;
    for (int i = 0; i < count; i++)
        if (now - p->restarts_at[i] <= win)
            n++;
    return n;
}

static void record_failure(kpool *p, const char *reason)
{
    kconfig *c = &p->rt->cfg;
    uint64_t now = uv_now(p->rt->loop);
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

static kdaemon *spawn_daemon(kpool *p)
{
    char err[512];
    kdaemon *d = kdaemon_new(p, p->argv, p->env, p->proto, err, sizeof err);
    if (!d) {
        klog(KLOG_INFO, "kiro.provider", "%s", err);
        p->rt->stats.daemon_start_failures++;
        record_failure(p, err);
        return NULL;
    }
    d->next = p->daemons;
    if (p->daemons)
        p->daemons->prev = d;
    p->daemons = d;
    p->live++;
    return d;
}

void kpool_daemon_idle(kpool *p, kdaemon *d)
{
    if (kdaemon_room(d) == 0)
        return;
    if (p->closing) {
        if (d->count == 0)
            kdaemon_stop(d, NULL);
        return;
    }
    dispatch(p);
    if (d->state == KD_READY && p->live > p->rt->cfg.pool_min)
        kdaemon_arm_idle(d, p->rt->cfg.pool_idle_ms);
}

void kpool_daemon_idle_expired(kpool *p, kdaemon *d)
{
    if (p->live > p->rt->cfg.pool_min) {
        klog(KLOG_DEBUG, "kiro.provider", "stopping idle daemon pid %d", d->pid);
        kdaemon_stop(d, NULL);
    }
}

void kpool_daemon_answered(kpool *p)
{
    p->failures = 0;
}

void kpool_daemon_stopping(kpool *p, kdaemon *d)
{
    (void)d;
    p->live--;
    unstrand(p);
}

void kpool_daemon_exited(kpool *p, kdaemon *d, int fault, int started, const char *reason)
{
    if (d->prev)
        d->prev->next = d->next;
    else
        p->daemons = d->next;
    if (d->next)
        d->next->prev = d->prev;
    d->next = d->prev = NULL;
    if (p->closing || !fault)
        return;
    if (started)
        p->rt->stats.daemon_restarts++;
    else
        p->rt->stats.daemon_start_failures++;
    record_failure(p, reason);
}

void kpool_health_check(kpool *p)
{
    kconfig *c = &p->rt->cfg;
    uint64_t now = uv_now(p->rt->loop);
    for (kdaemon *d = p->daemons, *next; d; d = next) {
        next = d->next;
        if (d->state == KD_STOPPING || !d->proc)
            continue;
        char st = kproc_state(d->proc);
        if (st == 'T' || st == 't' || st == 'Z') {
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

void kpool_free(kpool *p)
{
    if (p->prev)
        p->prev->next = p->next;
    else
        p->rt->pools = p->next;
    if (p->next)
        p->next->prev = p->prev;
    p->closing = 1;
    uv_timer_stop(&p->timer);
    fail_queue(p, "runtime shutting down");
    for (kdaemon *d = p->daemons; d; d = d->next)
        kdaemon_stop(d, NULL);
    kpool_unref(p);
}

kpool *kpool_first(krt *rt)
{
    return rt->pools;
}

kpool *kpool_next(kpool *p)
{
    return p->next;
}

void kpool_describe(kpool *p, kpool_info *out)
{
    out->cli = p->cli;
    out->model = p->model;
    out->state = state_names[p->state];
    out->last_error = p->last_error;
    out->live = p->live;
    out->queued = p->queued;
    out->failures = p->failures;
    out->restarts = p->restarts;
}

void kpool_each_daemon(kpool *p, void (*fn)(void *ud, const kdaemon_info *), void *ud)
{
    for (kdaemon *d = p->daemons; d; d = d->next) {
        kdaemon_info di = { d->pid, kdaemon_state_name(d->state), d->served, d->count - d->drains };
        fn(ud, &di);
    }
}
