#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"
#include "os.h"

/* After exit, how long to wait for EOF on the output pipes before giving up
 * on them (a grandchild may hold them open). */
#define PROC_EOF_WAIT_MS 2000
#define PROC_READ_SIZE 65536

enum { STAGE_NONE, STAGE_TERM, STAGE_KILL, STAGE_EOF_WAIT };

struct kproc {
    uv_process_t process;
    uv_pipe_t in, out, err;
    uv_timer_t timer;
    uv_shutdown_t shut;
    int open_handles;
    unsigned exited : 1, out_eof : 1, err_eof : 1, ended : 1, in_closing : 1, detached : 1;
    unsigned out_paused : 1;
    int stage;
    uint64_t grace_ms;
    int64_t status;
    int signal;
    int pid;
    kproc_cbs cbs;
    void *ud;
    const char *target;
    char *tail; /* ring buffer of stderr */
    size_t tail_cap, tail_len, tail_pos;
    kbuf errline; /* partial stderr line, for logging */
};

struct proc_write {
    uv_write_t req;
    char *data;
};

static int live_procs;

/* Signals go to the child's process group (it leads one: it runs in a
 * session of its own), so helpers it started go with it. */
static void signal_group(kproc *p, int sig)
{
    if (p->pid > 0 && kill(-p->pid, sig) != 0 && !p->exited)
        uv_process_kill(&p->process, sig);
}

int kproc_live_count(void)
{
    return live_procs;
}

static void on_handle_closed(uv_handle_t *h)
{
    kproc *p = h->data;
    if (--p->open_handles > 0)
        return;
    free(p->tail);
    kbuf_free(&p->errline);
    free(p);
    live_procs--;
}

static void close_handle(kproc *p, uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, on_handle_closed);
}

static void maybe_end(kproc *p)
{
    if (p->ended || !p->exited || !p->out_eof || !p->err_eof)
        return;
    p->ended = 1;
    uv_timer_stop(&p->timer);
    if (!p->detached && p->cbs.on_end)
        p->cbs.on_end(p->ud, p->status, p->signal);
    close_handle(p, (uv_handle_t *)&p->in);
    close_handle(p, (uv_handle_t *)&p->out);
    close_handle(p, (uv_handle_t *)&p->err);
    close_handle(p, (uv_handle_t *)&p->timer);
    close_handle(p, (uv_handle_t *)&p->process);
}

static void on_timer(uv_timer_t *t)
{
    kproc *p = t->data;
    switch (p->stage) {
    case STAGE_TERM:
        if (!p->exited) {
            klog(KLOG_DEBUG, p->target, "pid %d did not exit after stdin closed; sending SIGTERM", p->pid);
            signal_group(p, SIGTERM);
            p->stage = STAGE_KILL;
            uv_timer_start(&p->timer, on_timer, p->grace_ms, 0);
        }
        break;
    case STAGE_KILL:
        if (!p->exited) {
            klog(KLOG_WARN, p->target, "pid %d ignored SIGTERM; sending SIGKILL", p->pid);
            signal_group(p, SIGKILL);
        }
        break;
    case STAGE_EOF_WAIT:
        /* Exited, but someone still holds the pipes: stop waiting for them. */
        p->out_eof = p->err_eof = 1;
        uv_read_stop((uv_stream_t *)&p->out);
        uv_read_stop((uv_stream_t *)&p->err);
        maybe_end(p);
        break;
    }
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);
static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf);

void kproc_pause_output(kproc *p, int pause)
{
    if (p->out_eof || p->ended || p->out_paused == (unsigned)!!pause)
        return;
    p->out_paused = (unsigned)!!pause;
    if (pause)
        uv_read_stop((uv_stream_t *)&p->out);
    else
        uv_read_start((uv_stream_t *)&p->out, on_alloc, on_read);
}

static void on_proc_exit(uv_process_t *h, int64_t status, int sig)
{
    kproc *p = h->data;
    kproc_pause_output(p, 0); /* what it wrote before it went is still read */
    p->exited = 1;
    p->status = status;
    p->signal = sig;
    uv_timer_stop(&p->timer);
    if (!p->out_eof || !p->err_eof) {
        /* Something it left behind holds the pipes: its process group goes
         * with it, so EOF comes now rather than when a helper feels like it. */
        klog(KLOG_DEBUG, p->target, "pid %d exited with its output still held open; killing its group",
             p->pid);
        if (kill(-p->pid, SIGKILL) != 0 && errno != ESRCH)
            klog(KLOG_DEBUG, p->target, "kill(-%d): %s", p->pid, strerror(errno));
        p->stage = STAGE_EOF_WAIT;
        uv_timer_start(&p->timer, on_timer, PROC_EOF_WAIT_MS, 0);
    }
    maybe_end(p);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    /* One buffer serves every read: read callbacks consume it at once. */
    static char slab[PROC_READ_SIZE];
    (void)h;
    (void)hint;
    buf->base = slab;
    buf->len = sizeof slab;
}

static void tail_add(kproc *p, const char *d, size_t n)
{
    if (!p->tail_cap)
        return;
    if (n > p->tail_cap) {
        d += n - p->tail_cap;
        n = p->tail_cap;
    }
    for (size_t i = 0; i < n; i++) {
        p->tail[p->tail_pos] = d[i];
        p->tail_pos = (p->tail_pos + 1) % p->tail_cap;
    }
    p->tail_len = p->tail_len + n > p->tail_cap ? p->tail_cap : p->tail_len + n;
}

static void log_stderr(kproc *p, const char *d, size_t n)
{
    if (!klog_enabled(KLOG_DEBUG, "kiro.backend"))
        return;
    for (;;) {
        const char *nl = memchr(d, '\n', n);
        if (!nl) {
            if (p->errline.len < 4096)
                kbuf_append(&p->errline, d, n);
            return;
        }
        if (p->errline.len < 4096)
            kbuf_append(&p->errline, d, (size_t)(nl - d));
        klog(KLOG_DEBUG, "kiro.backend", "pid %d stderr: %.*s", p->pid,
             (int)(p->errline.len > 512 ? 512 : p->errline.len), p->errline.data);
        p->errline.len = 0;
        n -= (size_t)(nl - d) + 1;
        d = nl + 1;
    }
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    kproc *p = s->data;
    int is_out = s == (uv_stream_t *)&p->out;
    if (n < 0) {
        uv_read_stop(s);
        if (is_out)
            p->out_eof = 1;
        else
            p->err_eof = 1;
        maybe_end(p);
        return;
    }
    if (n == 0)
        return;
    if (is_out) {
        if (!p->detached && p->cbs.on_stdout)
            p->cbs.on_stdout(p->ud, buf->base, (size_t)n);
    } else {
        tail_add(p, buf->base, (size_t)n);
        log_stderr(p, buf->base, (size_t)n);
        if (!p->detached && p->cbs.on_stderr)
            p->cbs.on_stderr(p->ud, buf->base, (size_t)n);
    }
}

int kproc_spawn(uv_loop_t *loop, const kproc_opts *o, const kproc_cbs *cbs, void *ud, kproc **out)
{
    kproc *p = kcalloc(1, sizeof *p);
    uv_process_options_t po;
    uv_stdio_container_t stdio[3];
    int rc, spawned = 0;

    live_procs++;
    p->cbs = *cbs;
    p->ud = ud;
    p->target = o->log_target ? o->log_target : "kiro.proc";
    p->tail_cap = o->stderr_tail;
    p->tail = p->tail_cap ? kmalloc(p->tail_cap) : NULL;
    uv_pipe_init(loop, &p->in, 0);
    uv_pipe_init(loop, &p->out, 0);
    uv_pipe_init(loop, &p->err, 0);
    uv_timer_init(loop, &p->timer);
    p->in.data = p->out.data = p->err.data = p->timer.data = p->process.data = p;
    p->open_handles = 5;

    /* Real pipes (libuv's UV_CREATE_PIPE makes socketpairs, which cost more
     * per round trip); the child's ends are closed here once it has them. */
    uv_file in_fd[2] = { -1, -1 }, out_fd[2] = { -1, -1 }, err_fd[2] = { -1, -1 };
    if ((rc = uv_pipe(in_fd, 0, 0)) < 0 || (rc = uv_pipe(out_fd, 0, 0)) < 0 ||
        (rc = uv_pipe(err_fd, 0, 0)) < 0)
        goto fail;
    memset(&po, 0, sizeof po);
    stdio[0].flags = UV_INHERIT_FD;
    stdio[0].data.fd = in_fd[0];
    stdio[1].flags = UV_INHERIT_FD;
    stdio[1].data.fd = out_fd[1];
    stdio[2].flags = UV_INHERIT_FD;
    stdio[2].data.fd = err_fd[1];
    po.file = o->argv[0];
    po.args = (char **)o->argv;
    po.env = (char **)o->env;
    po.stdio = stdio;
    po.stdio_count = 3;
    po.exit_cb = on_proc_exit;
    /* Own session: a terminal's Ctrl-C reaches us, and we stop the backends
     * in order, instead of every backend dying mid-reply at once. */
    po.flags = UV_PROCESS_DETACHED;

    if (o->close_fds)
        kos_cloexec_all();
    rc = uv_spawn(loop, &p->process, &po);
    spawned = rc == 0;
    close(in_fd[0]);
    close(out_fd[1]);
    close(err_fd[1]);
    in_fd[0] = out_fd[1] = err_fd[1] = -1;
    if (rc < 0)
        goto fail;
    uv_pipe_open(&p->in, in_fd[1]);
    uv_pipe_open(&p->out, out_fd[0]);
    uv_pipe_open(&p->err, err_fd[0]);
    p->pid = p->process.pid;
    uv_read_start((uv_stream_t *)&p->out, on_alloc, on_read);
    uv_read_start((uv_stream_t *)&p->err, on_alloc, on_read);
    klog(KLOG_TRACE, p->target, "spawned pid %d: %s", p->pid, o->argv[0]);
    *out = p;
    return 0;

fail:
    for (int i = 0; i < 2; i++) {
        if (in_fd[i] >= 0)
            close(in_fd[i]);
        if (out_fd[i] >= 0)
            close(out_fd[i]);
        if (err_fd[i] >= 0)
            close(err_fd[i]);
    }
    p->ended = p->detached = 1;
    close_handle(p, (uv_handle_t *)&p->in);
    close_handle(p, (uv_handle_t *)&p->out);
    close_handle(p, (uv_handle_t *)&p->err);
    close_handle(p, (uv_handle_t *)&p->timer);
    if (spawned || p->process.type == UV_PROCESS)
        close_handle(p, (uv_handle_t *)&p->process);
    else
        p->open_handles--;
    *out = NULL;
    return rc;
}

static void on_written(uv_write_t *req, int status)
{
    struct proc_write *w = (struct proc_write *)req;
    (void)status; /* a dead reader shows up as the child's exit */
    free(w->data);
    free(w);
}

void kproc_write_owned(kproc *p, char *data, size_t n)
{
    if (p->in_closing || p->exited) {
        free(data);
        return;
    }
    /* Written now when the pipe takes it all (the common case): no request
     * and no callback, so the loop's next poll can block at once. */
    size_t done = 0;
    kos_sigpipe g;
    kos_sigpipe_hold(&g);
    if (uv_stream_get_write_queue_size((uv_stream_t *)&p->in) == 0) {
        uv_buf_t b = uv_buf_init(data, (unsigned)n);
        int rc = uv_try_write((uv_stream_t *)&p->in, &b, 1);
        if (rc > 0)
            done = (size_t)rc;
    }
    if (done == n) {
        kos_sigpipe_release(&g);
        free(data);
        return;
    }
    struct proc_write *w = kmalloc(sizeof *w);
    uv_buf_t b = uv_buf_init(data + done, (unsigned)(n - done));
    w->data = data;
    if (uv_write(&w->req, (uv_stream_t *)&p->in, &b, 1, on_written) < 0) {
        free(data);
        free(w);
    }
    kos_sigpipe_release(&g);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    kproc *p = req->data;
    (void)status;
    close_handle(p, (uv_handle_t *)&p->in);
}

void kproc_close_stdin(kproc *p)
{
    if (p->in_closing)
        return;
    p->in_closing = 1;
    p->shut.data = p;
    if (uv_shutdown(&p->shut, (uv_stream_t *)&p->in, on_shutdown) < 0)
        close_handle(p, (uv_handle_t *)&p->in);
}

void kproc_stop(kproc *p, uint64_t grace_ms)
{
    kproc_close_stdin(p);
    if (p->exited || p->stage != STAGE_NONE)
        return;
    p->grace_ms = grace_ms;
    p->stage = STAGE_TERM;
    uv_timer_start(&p->timer, on_timer, grace_ms, 0);
}

void kproc_terminate(kproc *p, uint64_t grace_ms)
{
    kproc_close_stdin(p);
    if (p->exited || p->stage == STAGE_KILL)
        return;
    p->grace_ms = grace_ms;
    signal_group(p, SIGTERM);
    p->stage = STAGE_KILL;
    uv_timer_start(&p->timer, on_timer, grace_ms, 0);
}

void kproc_detach(kproc *p, uint64_t grace_ms)
{
    p->detached = 1;
    kproc_terminate(p, grace_ms);
}

int kproc_pid(const kproc *p)
{
    return p->pid;
}

char kproc_state(const kproc *p)
{
    return p->exited ? 0 : kos_process_state(p->pid);
}

void kproc_kill_now(kproc *p)
{
    kproc_close_stdin(p);
    if (!p->exited)
        signal_group(p, SIGKILL);
}

const char *kproc_stderr_tail(const kproc *p)
{
    static char out[512];
    size_t n = p->tail_len, o = 0;
    size_t start = (p->tail_pos + p->tail_cap - n) % (p->tail_cap ? p->tail_cap : 1);
    /* Quote only the last few lines, on one line. */
    if (n > sizeof out - 1)
        start = (start + n - (sizeof out - 1)) % p->tail_cap, n = sizeof out - 1;
    for (size_t i = 0; i < n; i++) {
        char c = p->tail[(start + i) % p->tail_cap];
        if (c == '\n' || c == '\r' || c == '\t')
            c = ' ';
        else if ((unsigned char)c < 0x20)
            continue;
        out[o++] = c;
    }
    while (o && out[o - 1] == ' ')
        o--;
    size_t b = 0;
    while (b < o && out[b] == ' ')
        b++;
    out[o] = '\0';
    return out + b;
}
