#include "oneshot.h"

#include <stdlib.h>
#include <string.h>

#include "ansi.h"
#include "buf.h"
#include "log.h"
#include "proc.h"

#define ONESHOT_STDERR_TAIL 2048

struct koneshot {
    kcore *core;
    klist link; /* in core->oneshots, for health checks */
    kreq *req;
    kproc *proc;
    kansi_state ansi;
    kbuf reply; /* non-streamed requests gather the whole reply */
    char *cli;
};

static void os_free(koneshot *o)
{
    klist_remove(&o->link);
    kbuf_free(&o->reply);
    free(o->cli);
    free(o);
}

static void os_abort(void *carrier, kreq *r, enum kreq_abort why)
{
    koneshot *o = carrier;
    (void)r;
    (void)why;
    /* The child's output no longer has a reader: stop it and forget it. */
    kproc_detach(o->proc, o->core->cfg.kill_grace_ms);
    kreq_unref(o->req);
    os_free(o);
}

static void os_pause(void *carrier, kreq *r, int on)
{
    koneshot *o = carrier;
    (void)r;
    kproc_pause_output(o->proc, on);
}

static const kreq_carrier_ops os_ops = { os_abort, os_pause, NULL };

static void os_stdout(void *ud, const char *data, size_t n)
{
    koneshot *o = ud;
    char *clean = kmalloc(n);
    size_t m = kansi_strip(&o->ansi, data, n, clean);
    kreq_activity(o->req);
    if (m) {
        if (o->req->stream) {
            kreq_chunk(o->req, clean, m);
        } else {
            kbuf_append(&o->reply, clean, m);
            kreq_progress(o->req);
        }
    }
    free(clean);
}

static void os_stderr(void *ud, const char *data, size_t n)
{
    koneshot *o = ud;
    (void)data;
    (void)n;
    kreq_activity(o->req);
}

static void os_end(void *ud, int64_t status, int sig)
{
    koneshot *o = ud;
    kreq *r = o->req;
    uint64_t ms = uv_now(o->core->loop) - r->t_start;
    if (sig)
        kreq_end(r, KERR_CRASHED, "%s was killed by signal %d: %s", o->cli, sig, kproc_stderr_tail(o->proc));
    else if (status != 0)
        kreq_end(r, KERR_BACKEND, "%s exited with status %lld: %s", o->cli, (long long)status,
                 kproc_stderr_tail(o->proc));
    else {
        if (!r->stream)
            kreq_chunk(r, o->reply.data ? o->reply.data : "", o->reply.len);
        klog(KLOG_DEBUG, "kiro.provider", "Received oneshot response in %llums", (unsigned long long)ms);
        kreq_end(r, NULL, NULL);
    }
    kreq_unref(r);
    os_free(o);
}

void koneshot_health_check(kcore *core)
{
    klist_foreach (n, &core->oneshots) {
        koneshot *o = klist_entry(n, koneshot, link);
        char st = kproc_state(o->proc);
        if (st != 'T') /* 't', a tracer's stop (strace, gdb, LeakSanitizer at exit), is left alone */
            continue;
        /* Stopped by a signal: it will not answer; nobody should wait for
         * the stall timeout to find that out. */
        kreq *r = o->req;
        int pid = kproc_pid(o->proc);
        core->stats.health_failures++;
        klog(KLOG_WARN, "kiro.health", "oneshot pid %d is stopped by a signal; killing it", pid);
        kproc_kill_now(o->proc);
        kproc_detach(o->proc, core->cfg.kill_grace_ms);
        kreq_end(r, KERR_CRASHED, "%s (pid %d) was stopped by a signal and killed", o->cli, pid);
        kreq_unref(r);
        os_free(o);
    }
}

void koneshot_start(kcore *core, const koneshot_spec *spec, kreq *r)
{
    static const kproc_cbs cbs = { os_stdout, os_stderr, os_end };
    koneshot *o = kcalloc(1, sizeof *o);
    kproc_opts po = { .argv = spec->argv,
                      .env = spec->env,
                      .log_target = "kiro.oneshot",
                      .stderr_tail = ONESHOT_STDERR_TAIL,
                      .close_fds = core->cfg.close_fds };
    o->core = core;
    o->req = r;
    o->cli = kstrdup(spec->cli);
    klist_init(&o->link);
    kreq_ref(r);
    klog(KLOG_DEBUG, "kiro.provider", "Running oneshot: %s", spec->cli);
    int rc = kproc_spawn(core->loop, &po, &cbs, o, &o->proc);
    if (rc < 0) {
        kreq_end(r, KERR_SPAWN, "cannot start %s: %s", spec->cli, uv_strerror(rc));
        kreq_unref(r);
        os_free(o);
        return;
    }
    klist_insert_tail(&core->oneshots, &o->link);
    kreq_set_carrier(r, o, &os_ops);
    /* The prompt in its form (kreq.pre, .post), as the CLI reads it. */
    size_t n = r->pre_len + r->prompt_len + r->post_len;
    char *copy = kmalloc(n ? n : 1);
    if (r->pre_len)
        memcpy(copy, r->pre, r->pre_len);
    memcpy(copy + r->pre_len, r->prompt, r->prompt_len);
    if (r->post_len)
        memcpy(copy + r->pre_len + r->prompt_len, r->post, r->post_len);
    kproc_write_owned(o->proc, copy, n);
    kproc_close_stdin(o->proc);
}
