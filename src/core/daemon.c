#include "daemon.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "log.h"

#define DAEMON_STDERR_TAIL 2048

const char *kdaemon_state_name(enum kdaemon_state s)
{
    static const char *const names[] = { "ready", "busy", "draining", "stopping" };
    return names[s];
}

static void daemon_abort(void *carrier, kreq *r, enum kreq_abort why);
static void daemon_pause(void *carrier, kreq *r, int on);
static void daemon_answer(void *carrier, kreq *r, int token, const char *option);
static void on_timer(uv_timer_t *t);

static const kreq_carrier_ops daemon_ops = { daemon_abort, daemon_pause, daemon_answer };

/* The request that paused the daemon's output leaves it: reading resumes. */
static void unpause(kdaemon *d, kreq *r)
{
    if (r && d->pauser == r) {
        d->pauser = NULL;
        if (d->proc)
            kproc_pause_output(d->proc, 0);
    }
}

static kdaemon_slot *head_slot(kdaemon *d)
{
    return d->count ? &d->slots[d->head] : NULL;
}

static void update_state(kdaemon *d)
{
    if (d->state == KD_STOPPING)
        return;
    d->state = d->count == 0 ? KD_READY : d->drains == d->count ? KD_DRAINING : KD_BUSY;
}

int kdaemon_room(const kdaemon *d)
{
    if (d->state == KD_STOPPING)
        return 0;
    int depth = d->cfg->pipeline_depth;
    if (depth < 1)
        depth = 1;
    if (depth > DAEMON_MAX_DEPTH)
        depth = DAEMON_MAX_DEPTH;
    /* A probe never stands in a user request's way: it does not use depth. */
    int busy = d->count - d->probes;
    return depth > busy ? depth - busy : 0;
}

int kdaemon_idle(const kdaemon *d)
{
    return d->state != KD_STOPPING && d->count == d->probes;
}

#define DAEMON_KEEP_BUFFER (1u << 20)

/* Between replies: the gathered reply is empty, and a buffer a large reply
 * grew goes back to the system. */
static void shrink(kdaemon *d)
{
    d->acc.len = 0;
    if (d->acc.cap > DAEMON_KEEP_BUFFER)
        kbuf_free(&d->acc);
}

/* Every request still on the wire leaves it: the daemon is gone or going.
 * With a reason, each ends (`crashed`, or `spawn` if the daemon never
 * answered); without one, each goes back to the owner unanswered (a daemon
 * that never answered: they start anew elsewhere; a probe just ends). */
static void empty_wire(kdaemon *d, const char *reason)
{
    while (d->count) {
        kdaemon_slot s = d->slots[d->head];
        d->head = (d->head + 1) % DAEMON_MAX_DEPTH;
        d->count--;
        if (!s.r)
            continue;
        unpause(d, s.r);
        if (s.r->internal)
            d->probes--;
        if (!reason && !s.r->internal) {
            kreq_clear_carrier(s.r);
            d->cbs->requeue(d->owner, s.r);
        } else if (!reason) {
            kreq_end(s.r, KERR_CANCELLED, "the daemon went before it answered");
        } else if (d->started || s.r->chunks) {
            kreq_end(s.r, KERR_CRASHED, "%s", reason);
        } else {
            kreq_end(s.r, KERR_SPAWN, "daemon failed before answering: %s", reason);
        }
        kreq_unref(s.r);
    }
    d->drains = 0;
    shrink(d);
}

/* The reply at the head of the line is complete. */
static void finish(kdaemon *d, const char *code, const char *msg)
{
    kdaemon_slot s = d->slots[d->head];
    assert(d->count > 0);
    d->head = (d->head + 1) % DAEMON_MAX_DEPTH;
    d->count--;
    d->started = 1;
    shrink(d);
    unpause(d, s.r);
    if (!s.r)
        d->drains--;
    else if (s.r->internal)
        d->probes--;
    if (d->drains == 0 && uv_is_active((uv_handle_t *)&d->timer))
        uv_timer_stop(&d->timer); /* nothing left to drain */
    update_state(d);
    if (d->count == 0)
        d->t_idle = uv_now(d->core->loop);
    if (s.r) {
        d->served += !s.r->internal;
        klog(KLOG_DEBUG, "kiro.provider", "Received response in %llums",
             (unsigned long long)(uv_now(d->core->loop) - s.r->t_start));
        d->cbs->answered(d->owner, d);
        if (code && strcmp(code, KERR_AUTH) == 0)
            d->core->stats.auth_failures++;
        if (code)
            kreq_end(s.r, code, "%s", msg);
        else
            kreq_end(s.r, NULL, NULL);
        kreq_unref(s.r);
    }
    /* Lines already read belong to the reply just ended or are wrong: the
     * daemon takes a new request only after they are all looked at. */
    if (d->reading)
        d->idle_pending = 1;
    else
        d->cbs->idle(d->owner, d);
}

/* Output from the daemon keeps every request on its wire alive (stall). */
static void touch_all(kdaemon *d)
{
    for (int i = 0; i < d->count; i++) {
        kreq *r = d->slots[(d->head + i) % DAEMON_MAX_DEPTH].r;
        if (r)
            kreq_activity(r);
    }
}

/* The protocol answers the backend, or takes a turn's next step. */
static void on_write(void *ud, const char *data, size_t n)
{
    kdaemon *d = ud;
    if (!n || !d->proc || d->state == KD_STOPPING)
        return;
    char *copy = kmalloc(n);
    memcpy(copy, data, n);
    kproc_write_owned(d->proc, copy, n);
}

static void on_alive(void *ud)
{
    kdaemon *d = ud;
    if (!d->started) {
        d->started = 1;
        klog(KLOG_DEBUG, "kiro.provider", "Daemon started successfully (pid %d)", d->pid);
    }
    touch_all(d);
}

static void on_update(void *ud, const char *json, size_t n)
{
    kdaemon *d = ud;
    kdaemon_slot *s = head_slot(d);
    on_alive(d);
    if (s && s->r)
        kreq_update(s->r, json, n);
}

/* A question from the backend (once per question): does the caller decide? */
static int on_asks(void *ud)
{
    kdaemon *d = ud;
    kdaemon_slot *s = head_slot(d);
    int asks = s && s->r && s->r->asks;
    d->core->stats.permission_requests++;
    d->core->stats.permission_defaults += !asks;
    return asks;
}

static void on_ask(void *ud, int token, const char *json, size_t n)
{
    kdaemon *d = ud;
    kdaemon_slot *s = head_slot(d);
    on_alive(d);
    if (s && s->r)
        kreq_ask(s->r, token, json, n);
}

/* The daemon said something that cannot belong to any request on its wire:
 * the request at the head (if any) ends `protocol`, and the daemon, whose
 * next words can no longer be trusted to answer the right request, goes. */
static void protocol_fault(kdaemon *d, const char *msg)
{
    klog(KLOG_WARN, "kiro.provider", "%s; replacing the daemon", msg);
    kdaemon_slot *s = head_slot(d);
    if (s && s->r) {
        kreq *r = s->r;
        s->r = NULL;
        unpause(d, r);
        d->drains++;
        d->probes -= r->internal;
        kreq_end(r, KERR_PROTOCOL, "%s", msg);
        kreq_unref(r);
    }
    kdaemon_stop(d, msg);
}

static void on_violation(void *ud, const char *why, const char *line, size_t n)
{
    kdaemon *d = ud;
    char msg[384];
    snprintf(msg, sizeof msg, "daemon pid %d broke the protocol: %s: %.*s", d->pid, why,
             (int)(n > 160 ? 160 : n), line);
    protocol_fault(d, msg);
}

static void on_reply(void *ud, const char *content, size_t n, int done)
{
    kdaemon *d = ud;
    kdaemon_slot *s = head_slot(d);
    if (!s) {
        on_violation(d, "a reply line with no request in flight", content, n);
        return;
    }
    on_alive(d);
    /* A stream relays each part as it comes; a plain request gathers the
     * parts ("done": false lines) and gets the whole reply at its end. */
    if (s->r && n) {
        if (s->stream) {
            kreq_chunk(s->r, content, n);
        } else {
            kbuf_append(&d->acc, content, n);
            kreq_progress(s->r);
        }
    }
    if (done == KPROTO_DONE_FALSE)
        return;
    if (s->r && !s->stream && d->acc.len)
        kreq_chunk(s->r, d->acc.data, d->acc.len);
    finish(d, NULL, NULL);
}

static void on_error(void *ud, const char *code, const char *msg)
{
    kdaemon *d = ud;
    if (!head_slot(d)) {
        on_violation(d, "an error reply with no request in flight", msg, strlen(msg));
        return;
    }
    d->started = 1;
    finish(d, code ? code : KERR_BACKEND, msg);
}

static void on_noise(void *ud, const char *line, size_t n, const char *why)
{
    kdaemon *d = ud;
    touch_all(d);
    klog(KLOG_INFO, "kiro.provider", "skipped a line from daemon pid %d (%s): %.*s", d->pid, why,
         (int)(n > 200 ? 200 : n), line);
}

static int on_line(void *ud, const char *line, size_t n)
{
    kdaemon *d = ud;
    const kproto_sink sink = { d,        on_reply, on_error,  on_noise, on_violation,
                               on_write, on_alive, on_update, on_asks,  on_ask };
    if (n == 0)
        return 0;
    d->proto->decode(d->pstate, line, n, &sink);
    return d->state == KD_STOPPING; /* stop reading once it is being replaced */
}

static void on_stdout(void *ud, const char *data, size_t n)
{
    kdaemon *d = ud;
    if (d->state == KD_STOPPING)
        return;
    d->reading = 1;
    int rc = kjsonl_feed(&d->fr, data, n, on_line, d);
    d->reading = 0;
    kjsonl_trim(&d->fr, DAEMON_KEEP_BUFFER); /* a long line went through: its buffer goes */
    if (rc == KJSONL_OVERFLOW && d->state != KD_STOPPING) {
        char msg[160];
        snprintf(msg, sizeof msg, "reply line longer than max_line_bytes (%zu bytes) from daemon pid %d",
                 d->fr.max_line, d->pid);
        protocol_fault(d, msg);
    }
    if (d->idle_pending) {
        d->idle_pending = 0;
        if (d->state != KD_STOPPING)
            d->cbs->idle(d->owner, d);
    }
}

static void on_stderr(void *ud, const char *data, size_t n)
{
    kdaemon *d = ud;
    (void)data;
    (void)n;
    touch_all(d);
}

static void on_timer_closed(uv_handle_t *h)
{
    kdaemon *d = h->data;
    const kdaemon_cbs *cbs = d->cbs;
    void *owner = d->owner;
    free(d);
    cbs->freed(owner);
}

static void on_end(void *ud, int64_t status, int sig)
{
    kdaemon *d = ud;
    char reason[768];
    int planned = d->state == KD_STOPPING && !d->fault;

    if (d->fault)
        snprintf(reason, sizeof reason, "%s", d->why);
    else if (sig)
        snprintf(reason, sizeof reason, "daemon pid %d was killed by signal %d%s%s", d->pid, sig,
                 *kproc_stderr_tail(d->proc) ? ": " : "", kproc_stderr_tail(d->proc));
    else
        snprintf(reason, sizeof reason, "daemon pid %d exited with status %lld%s%s", d->pid,
                 (long long)status, *kproc_stderr_tail(d->proc) ? ": " : "", kproc_stderr_tail(d->proc));
    if (planned)
        klog(KLOG_DEBUG, "kiro.provider", "daemon pid %d stopped", d->pid);
    else
        klog(KLOG_INFO, "kiro.provider", "%s", reason);

    if (d->state != KD_STOPPING) {
        d->state = KD_STOPPING;
        d->cbs->stopping(d->owner, d);
    }
    d->proc = NULL;
    d->exit_status = (long long)status;
    d->exit_signal = sig;
    empty_wire(d, d->cbs->exited(d->owner, d, !planned, d->started, reason) ? NULL : reason);
    kjsonl_free(&d->fr);
    kbuf_free(&d->acc);
    if (d->proto->state_free)
        d->proto->state_free(d->pstate);
    uv_close((uv_handle_t *)&d->timer, on_timer_closed);
}

kdaemon *kdaemon_new(kcore *core, const kdaemon_opts *o, const kdaemon_cbs *cbs, void *owner, char *err,
                     size_t errlen)
{
    static const kproc_cbs proc_cbs = { on_stdout, on_stderr, on_end };
    kdaemon *d = kcalloc(1, sizeof *d);
    kproc_opts po = { .argv = o->argv,
                      .env = o->env,
                      .log_target = "kiro.daemon",
                      .stderr_tail = DAEMON_STDERR_TAIL,
                      .close_fds = o->cfg->close_fds };
    d->core = core;
    d->cfg = o->cfg;
    d->cbs = cbs;
    d->owner = owner;
    d->proto = o->proto;
    klist_init(&d->link);
    klog(KLOG_DEBUG, "kiro.provider", "Starting Kiro CLI daemon: %s %s", o->argv[0],
         o->argv[1] ? o->argv[1] : "");
    int rc = kproc_spawn(core->loop, &po, &proc_cbs, d, &d->proc);
    if (rc < 0) {
        snprintf(err, errlen, "cannot start %s: %s", o->argv[0], uv_strerror(rc));
        free(d);
        return NULL;
    }
    d->pid = kproc_pid(d->proc);
    d->t_idle = uv_now(core->loop);
    kjsonl_init(&d->fr, d->cfg->max_line_bytes);
    d->pstate = o->proto->state_new ? o->proto->state_new(o->session_model) : NULL;
    if (o->proto->start) { /* a handshake, paid before the first request */
        kbuf hello = { 0 };
        o->proto->start(d->pstate, &hello);
        if (hello.len)
            kproc_write_owned(d->proc, hello.data, hello.len);
        else
            kbuf_free(&hello);
    }
    uv_timer_init(core->loop, &d->timer);
    d->timer.data = d;
    d->state = KD_READY;
    core->stats.daemon_starts++;
    return d;
}

void kdaemon_assign(kdaemon *d, kreq *r)
{
    kbuf out = { 0 };
    const char *err = NULL;
    if (r->session && !d->proto->conversations) {
        kreq_end(r, KERR_CONFIG,
                 "a conversation (opts.session, --session) needs an ACP agent; this backend speaks %s",
                 d->proto == &kproto_jsonl ? "JSON Lines" : d->proto->name);
        return;
    }
    const kproto_req q = {
        r->prompt, r->prompt_len, r->pre ? r->pre : "", r->post ? r->post : "", r->pre_len, r->post_len,
        r->stream, r->session
    };
    if (d->proto->encode(d->pstate, &q, &out, &err) != 0) {
        kbuf_free(&out);
        kreq_end(r, KERR_PROTOCOL, "%s", err);
        return;
    }
    assert(d->count < DAEMON_MAX_DEPTH && kdaemon_room(d) > 0); /* the slot ring has room */
    if (d->count == 0)
        uv_timer_stop(&d->timer); /* the idle-shrink timer */
    d->fr.max_line = d->cfg->max_line_bytes;
    d->slots[(d->head + d->count) % DAEMON_MAX_DEPTH] = (kdaemon_slot){ r, r->stream };
    d->count++;
    d->probes += r->internal;
    d->core->stats.acp_requests += d->proto == &kproto_acp && !r->internal;
    update_state(d);
    kreq_ref(r);
    kreq_set_carrier(r, d, &daemon_ops);
    size_t n = out.len;
    if (n)
        kproc_write_owned(d->proc, out.data, n);
    else
        kbuf_free(&out); /* the protocol sends it later (a turn waits for its handshake) */
    klog(KLOG_DEBUG, "kiro.provider", "Query sent to daemon (pid %d, %zu bytes, %d in flight)", d->pid, n,
         d->count);
}

static void on_timer(uv_timer_t *t)
{
    kdaemon *d = t->data;
    if (d->drains) {
        char msg[128];
        snprintf(msg, sizeof msg, "daemon pid %d did not finish an abandoned reply within %llu ms", d->pid,
                 (unsigned long long)d->cfg->drain_ms);
        kdaemon_stop(d, msg);
    } else if (d->state == KD_READY) {
        d->cbs->idle_expired(d->owner, d);
    }
}

void kdaemon_arm_idle(kdaemon *d, uint64_t ms)
{
    uv_timer_start(&d->timer, on_timer, ms, 0);
}

static kdaemon_slot *slot_of(kdaemon *d, kreq *r)
{
    for (int i = 0; i < d->count; i++) {
        kdaemon_slot *s = &d->slots[(d->head + i) % DAEMON_MAX_DEPTH];
        if (s->r == r)
            return s;
    }
    return NULL;
}

static void daemon_abort(void *carrier, kreq *r, enum kreq_abort why)
{
    kdaemon *d = carrier;
    kdaemon_slot *s = slot_of(d, r);
    if (!s)
        return;
    int must_drain = 1; /* its end has to come from the backend */
    if (why != KABORT_SHUTDOWN && d->proto->abandon && d->proc) {
        kbuf out = { 0 };
        int pos = (int)((s - d->slots) - d->head + DAEMON_MAX_DEPTH) % DAEMON_MAX_DEPTH;
        must_drain = d->proto->abandon(d->pstate, pos, &out);
        if (out.len)
            kproc_write_owned(d->proc, out.data, out.len);
        else
            kbuf_free(&out);
    }
    s->r = NULL;
    unpause(d, r);
    d->drains++;
    if (r->internal)
        d->probes--;
    kreq_unref(r);
    switch (why) {
    case KABORT_CANCEL:
    case KABORT_TIMEOUT:
        /* Told to stop if its protocol can (ACP's session/cancel), or not
         * (JSON Lines): the reply runs out, unread, within drain_ms; a hung
         * daemon is replaced when that runs out. */
        update_state(d);
        if (must_drain && (!uv_is_active((uv_handle_t *)&d->timer) || d->count == d->drains))
            uv_timer_start(&d->timer, on_timer, d->cfg->drain_ms, 0);
        break;
    case KABORT_SHUTDOWN:
        kdaemon_stop(d, NULL);
        break;
    }
}

static void daemon_answer(void *carrier, kreq *r, int token, const char *option)
{
    kdaemon *d = carrier;
    (void)r;
    if (!d->proto->answer || !d->proc || d->state == KD_STOPPING)
        return;
    kbuf out = { 0 };
    d->proto->answer(d->pstate, token, option, &out);
    if (out.len)
        kproc_write_owned(d->proc, out.data, out.len);
    else
        kbuf_free(&out);
}

/* Flow control: the daemon's output waits while a request's reader is
 * behind. Replies come in order, so the whole pipe waits. */
static void daemon_pause(void *carrier, kreq *r, int on)
{
    kdaemon *d = carrier;
    if (!on) {
        unpause(d, r);
    } else if (d->proc && !d->pauser) {
        d->pauser = r;
        kproc_pause_output(d->proc, 1);
    }
}

void kdaemon_forget(kdaemon *d, const char *session)
{
    if (d->proto->forget)
        d->proto->forget(d->pstate, session);
}

void kdaemon_fail(kdaemon *d, const char *why)
{
    d->core->stats.health_failures++;
    klog(KLOG_WARN, "kiro.health", "%s; replacing it", why);
    kdaemon_stop(d, why);
    if (d->proc)
        kproc_kill_now(d->proc); /* a stopped process cannot act on SIGTERM */
}

static void probe_chunk(void *ud, const char *data, size_t n)
{
    (void)ud, (void)data, (void)n;
}

static void probe_end(void *ud, const char *code, const char *msg)
{
    kcore *core = ud;
    /* An {"error": ...} answer is still an answer: the daemon is alive; a
     * probe of a daemon that went (taken back, shut down) has no verdict. */
    if (code && strcmp(code, KERR_BACKEND) != 0 && strcmp(code, KERR_CANCELLED) != 0) {
        core->stats.probe_failures++;
        klog(KLOG_WARN, "kiro.health", "probe failed (%s): %s", code, msg);
    }
}

void kdaemon_probe(kdaemon *d)
{
    kcore *core = d->core;
    kreq_sink sink = { probe_chunk, probe_end, core, NULL, NULL };
    kreq *r = kreq_new(core, d->cfg->probe_prompt, strlen(d->cfg->probe_prompt), 0, &sink);
    r->internal = 1;
    r->timeout_ms = d->cfg->probe_timeout_ms;
    core->stats.probes++;
    klog(KLOG_DEBUG, "kiro.health", "probing idle daemon pid %d", d->pid);
    kreq_start(r);
    kdaemon_assign(d, r);
    kreq_unref(r); /* only the daemon and the runtime hold a probe */
}

void kdaemon_stop(kdaemon *d, const char *fault)
{
    if (d->state == KD_STOPPING)
        return;
    uv_timer_stop(&d->timer);
    d->state = KD_STOPPING;
    if (fault) {
        d->fault = 1;
        snprintf(d->why, sizeof d->why, "%s", fault);
    }
    d->cbs->stopping(d->owner, d);
    if (!d->proc)
        return;
    /* A daemon that misbehaved gets no grace: it may be hung; nor does one
     * that only holds replies nobody wants any more. */
    if (fault || (d->count && d->count == d->drains))
        kproc_terminate(d->proc, d->cfg->kill_grace_ms);
    else
        kproc_stop(d->proc, d->cfg->kill_grace_ms);
}
