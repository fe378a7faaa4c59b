#include "oneshot.h"

#include <stdlib.h>
#include <string.h>

#include "ansi.h"
#include "buf.h"
#include "log.h"
#include "proc.h"

#define ONESHOT_STDERR_TAIL 2048

struct oneshot {
    krt *rt;
    oneshot *next, *prev; /* the runtime's live oneshots, for health checks */
    kreq *req;
    proc *proc;
    ansi_state ansi;
    kbuf reply; /* non-streamed requests gather the whole reply */
    char *cli;
};

static void os_free(oneshot *o)
{
    if (o->prev)
        o->prev->next = o->next;
    else if (o->rt->oneshots == o)
        o->rt->oneshots = o->next;
    if (o->next)
        o->next->prev = o->prev;
    kbuf_free(&o->reply);
    free(o->cli);
    free(o);
}

static void os_abort(void *carrier, kreq *r, enum req_abort why)
{
    oneshot *o = carrier;
    (void)r;
    (void)why;
    /* The child's output no longer has a reader: stop it and forget it. */
    proc_detach(o->proc, o->rt->cfg.kill_grace_ms);
    req_unref(o->req);
    os_free(o);
}

static void os_pause(void *carrier, kreq *r, int on)
{
    oneshot *o = carrier;
    (void)r;
    proc_pause_output(o->proc, on);
}

static const req_carrier_ops os_ops = { os_abort, os_pause };

static void os_stdout(void *ud, const char *data, size_t n)
{
    oneshot *o = ud;
    char *clean = kmalloc(n);
    size_t m = ansi_strip(&o->ansi, data, n, clean);
    req_activity(o->req);
    if (m) {
        if (o->req->stream) {
            req_chunk(o->req, clean, m);
        } else {
            kbuf_append(&o->reply, clean, m);
            req_progress(o->req);
        }
    }
    free(clean);
}

static void os_stderr(void *ud, const char *data, size_t n)
{
    oneshot *o = ud;
    (void)data;
    (void)n;
    req_activity(o->req);
}

static void os_end(void *ud, int64_t status, int sig)
{
    oneshot *o = ud;
    kreq *r = o->req;
    uint64_t ms = uv_now(o->rt->loop) - r->t_start;
    if (sig)
        req_end(r, KERR_CRASHED, "%s was killed by signal %d: %s", o->cli, sig, proc_stderr_tail(o->proc));
    else if (status != 0)
        req_end(r, KERR_BACKEND, "%s exited with status %lld: %s", o->cli, (long long)status,
                proc_stderr_tail(o->proc));
    else {
        if (!r->stream)
            req_chunk(r, o->reply.data ? o->reply.data : "", o->reply.len);
        klog(LOG_DEBUG, "kiro.provider", "Received oneshot response in %llums", (unsigned long long)ms);
        req_end(r, NULL, NULL);
    }
    req_unref(r);
    os_free(o);
}

void oneshot_health_check(krt *rt)
{
    for (oneshot *o = rt->oneshots, *next; o; o = next) {
        next = o->next;
        char st = proc_state(o->proc);
        if (st != 'T' && st != 't')
            continue;
        /* Stopped by a signal: it will not answer; nobody should wait for
         * the stall timeout to find that out. */
        kreq *r = o->req;
        int pid = proc_pid(o->proc);
        rt->stats.health_failures++;
        klog(LOG_WARN, "kiro.health", "oneshot pid %d is stopped by a signal; killing it", pid);
        proc_kill_now(o->proc);
        proc_detach(o->proc, rt->cfg.kill_grace_ms);
        req_end(r, KERR_CRASHED, "%s (pid %d) was stopped by a signal and killed", o->cli, pid);
        req_unref(r);
        os_free(o);
    }
}

void oneshot_start(krt *rt, const bspec *b, kreq *r)
{
    static const proc_cbs cbs = { os_stdout, os_stderr, os_end };
    oneshot *o = kcalloc(1, sizeof *o);
    char **argv = argv_build(b->cli, b->oneshot_args, b->model);
    char **env = env_build(b->env, 1);
    proc_opts po = { .argv = argv, .env = env, .log_target = "kiro.oneshot",
                     .stderr_tail = ONESHOT_STDERR_TAIL,
                     .close_fds = rt->cfg.close_fds };
    o->rt = rt;
    o->req = r;
    o->cli = kstrdup(b->cli);
    req_ref(r);
    klog(LOG_DEBUG, "kiro.provider", "Running oneshot: %s", b->cli);
    int rc = proc_spawn(rt->loop, &po, &cbs, o, &o->proc);
    strv_free(argv);
    strv_free(env);
    if (rc < 0) {
        req_end(r, KERR_SPAWN, "cannot start %s: %s", b->cli, uv_strerror(rc));
        req_unref(r);
        os_free(o);
        return;
    }
    o->next = rt->oneshots;
    if (o->next)
        o->next->prev = o;
    rt->oneshots = o;
    req_set_carrier(r, o, &os_ops);
    char *copy = kmalloc(r->prompt_len ? r->prompt_len : 1);
    memcpy(copy, r->prompt, r->prompt_len);
    proc_write_owned(o->proc, copy, r->prompt_len);
    proc_close_stdin(o->proc);
}
