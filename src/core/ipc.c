#define _GNU_SOURCE /* struct ucred, SO_PEERCRED */
#include "ipc.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "buf.h"
#include "jsonl.h"
#include "log.h"
#include "os.h"

#define IPC_CLIENT_MAX_LINE (1u << 30) /* what a client accepts from its server */
#define IPC_KEEP_BUFFER (1u << 20)     /* a line buffer larger than this is freed once empty */
#define IPC_FLUSH_MS 2000              /* closing: how long queued writes get to go out */
#define IPC_CORK_MAX 65536             /* writes smaller than this wait for the end of the loop's turn */

struct kipc_listener {
    union {
        uv_pipe_t pipe;
        uv_tcp_t tcp;
    };
    int tcp_mode;
    char *path;
    dev_t dev;
    ino_t ino;
    void (*on_conn)(void *ud, kipc_conn *c);
    void *ud;
    kipc_limits lim;
    size_t buffered; /* unfinished lines of all connections */
    size_t held;     /* held by the owner for its peers' requests */
    int nconns;      /* connections not yet freed: each keeps the listener */
    unsigned closed : 1, handle_closed : 1;
};

struct kipc_conn {
    union {
        uv_pipe_t pipe;
        uv_tcp_t tcp;
    };
    uv_connect_t creq;
    /* Small writes are gathered here until the loop has finished its turn
     * (flusher, a uv_prepare, runs just before it polls) and go out as one:
     * the chunks of a reply that arrived together wake the peer once. */
    kbuf corked;
    uv_prepare_t flusher;
    uv_timer_t timer; /* idle and lifetime bounds, when the listener has them */
    int open_handles;
    kipc_listener *l; /* NULL on the client side */
    kjsonl fr;
    size_t counted;     /* this connection's share of l->buffered */
    size_t drain_below; /* with want_drain: call `drained` at this mark */
    uint64_t t_accept, t_read;
    kipc_conn_cbs cbs;
    void *ud;
    uid_t uid;
    unsigned attached : 1, closing : 1, dead : 1, has_timer : 1, want_drain : 1;
};

struct kipc_write {
    uv_write_t req;
    char *owned; /* freed when written, unless the data follows the struct */
    char data[];
};

static void maybe_free_listener(kipc_listener *l)
{
    if (l->handle_closed && l->nconns == 0) {
        free(l->path); /* NULL for TCP */
        free(l);
    }
}

static void conn_handle_closed(uv_handle_t *h)
{
    kipc_conn *c = h->data;
    if (--c->open_handles > 0)
        return;
    kjsonl_free(&c->fr);
    kbuf_free(&c->corked);
    if (c->l) {
        c->l->nconns--;
        maybe_free_listener(c->l);
    }
    free(c);
}

/* This connection's unfinished line no longer counts, nor takes memory. */
static void release(kipc_conn *c)
{
    if (c->l) {
        c->l->buffered -= c->counted;
        c->counted = 0;
    }
    kbuf_free(&c->fr.partial);
}

static void close_handles(kipc_conn *c)
{
    if (!uv_is_closing((uv_handle_t *)&c->flusher))
        uv_close((uv_handle_t *)&c->flusher, conn_handle_closed);
    if (c->has_timer && !uv_is_closing((uv_handle_t *)&c->timer))
        uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
    if (!uv_is_closing((uv_handle_t *)&c->pipe))
        uv_close((uv_handle_t *)&c->pipe, conn_handle_closed);
}

/* The connection is over: its owner hears `closed` once (unless the owner
 * closed it). Returns 0 if it was over already. */
static int mark_dead(kipc_conn *c, const char *why)
{
    if (c->dead)
        return 0;
    c->dead = 1;
    release(c);
    if (c->attached && !c->closing && c->cbs.closed)
        c->cbs.closed(c->ud, why);
    return 1;
}

/* Ends the connection at once. */
static void conn_end(kipc_conn *c, const char *why)
{
    if (mark_dead(c, why))
        close_handles(c);
}

static void on_written(uv_write_t *req, int status)
{
    struct kipc_write *w = (struct kipc_write *)req;
    kipc_conn *c = req->handle->data;
    (void)status; /* a broken connection shows up as a read error */
    free(w->owned);
    free(w);
    if (c->want_drain && !c->dead && kipc_unread(c) <= c->drain_below) {
        c->want_drain = 0;
        if (c->cbs.drained)
            c->cbs.drained(c->ud);
    }
}

size_t kipc_unread(const kipc_conn *c)
{
    return uv_stream_get_write_queue_size((const uv_stream_t *)&c->pipe) + c->corked.len;
}

void kipc_notify_drain(kipc_conn *c, size_t below)
{
    c->drain_below = below;
    c->want_drain = 1;
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    kipc_conn *c = req->data;
    (void)status;
    free(req);
    close_handles(c);
}

static void on_close_deadline(uv_timer_t *t)
{
    close_handles(t->data); /* the peer would not take what was queued */
}

static void write_owned(kipc_conn *c, char *data, size_t n)
{
    struct kipc_write *w = kmalloc(sizeof *w);
    w->owned = data;
    uv_buf_t b = uv_buf_init(data, (unsigned)n);
    kos_sigpipe g;
    kos_sigpipe_hold(&g);
    if (uv_write(&w->req, (uv_stream_t *)&c->pipe, &b, 1, on_written) < 0) {
        free(data);
        free(w);
    }
    kos_sigpipe_release(&g);
}

/* What waits in `corked` goes out now (its buffer with it). */
static void flush_corked(kipc_conn *c)
{
    uv_prepare_stop(&c->flusher);
    if (c->corked.len == 0)
        return;
    char *data = c->corked.data;
    size_t n = c->corked.len;
    c->corked = (kbuf){ 0 };
    write_owned(c, data, n);
}

static void on_flush(uv_prepare_t *p)
{
    flush_corked(p->data);
}

/* n bytes of data go out with the next flush (they are copied). */
static void cork(kipc_conn *c, const char *data, size_t n)
{
    kbuf_append(&c->corked, data, n);
    if (!uv_is_active((uv_handle_t *)&c->flusher))
        uv_prepare_start(&c->flusher, on_flush);
}

/* The connection's timer, made on first use: one more handle to close. */
static void ensure_timer(kipc_conn *c)
{
    if (c->has_timer)
        return;
    uv_timer_init(c->pipe.loop, &c->timer);
    c->timer.data = c;
    c->has_timer = 1;
    c->open_handles++;
}

/* Queued writes are flushed, then the connection closes; within
 * IPC_FLUSH_MS, since a peer that does not read would hold it forever. */
static void flush_and_close(kipc_conn *c)
{
    flush_corked(c);
    uv_read_stop((uv_stream_t *)&c->pipe);
    ensure_timer(c);
    uv_timer_start(&c->timer, on_close_deadline, IPC_FLUSH_MS, 0);
    uv_shutdown_t *req = kmalloc(sizeof *req);
    req->data = c;
    if (uv_shutdown(req, (uv_stream_t *)&c->pipe, on_shutdown) != 0) {
        free(req);
        close_handles(c);
    }
}

static void write_raw(kipc_conn *c, const char *data, size_t n)
{
    flush_corked(c); /* in order */
    struct kipc_write *w = kmalloc(sizeof *w + n);
    w->owned = NULL;
    memcpy(w->data, data, n);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
    kos_sigpipe g;
    kos_sigpipe_hold(&g);
    if (uv_write(&w->req, (uv_stream_t *)&c->pipe, &b, 1, on_written) < 0)
        free(w);
    kos_sigpipe_release(&g);
}

/* The peer went past a limit: it is told why (on a JSON Lines connection),
 * the owner hears `closed` with the same reason, and the connection goes. */
static void refuse(kipc_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void refuse(kipc_conn *c, const char *fmt, ...)
{
    char why[256], line[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    if (!mark_dead(c, why))
        return;
    if (!(c->l && c->l->tcp_mode)) {
        /* why holds no quote or backslash: it is ours, made of numbers. */
        int n = snprintf(line, sizeof line, "{\"op\":\"error\",\"code\":\"overloaded\",\"message\":\"%s\"}\n",
                         why);
        write_raw(c, line, (size_t)n);
    }
    flush_and_close(c);
}

static int on_line(void *ud, const char *line, size_t n)
{
    kipc_conn *c = ud;
    if (c->closing || !c->cbs.line)
        return 1;
    c->cbs.line(c->ud, line, n);
    return c->closing || c->dead;
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    static char slab[65536];
    (void)h;
    (void)hint;
    buf->base = slab;
    buf->len = sizeof slab;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    kipc_conn *c = s->data;
    if (n < 0) {
        conn_end(c, n == UV_EOF ? "connection closed by peer" : uv_strerror((int)n));
        return;
    }
    if (n == 0 || c->dead)
        return;
    kipc_listener *l = c->l;
    if (c->has_timer)
        c->t_read = uv_now(s->loop);
    /* A line that ends in this read passes from this connection's count to
     * what the owner holds for it (kipc_listener_hold), not to both. */
    if (l) {
        l->buffered -= c->counted;
        c->counted = 0;
    }
    if (kjsonl_feed(&c->fr, buf->base, (size_t)n, on_line, c) == KJSONL_OVERFLOW) {
        refuse(c, "a line longer than %zu bytes (the server's max_request_bytes); connection closed",
               c->fr.max_line);
        return;
    }
    if (c->dead || !l)
        return;
    /* What this connection holds back now counts against the budget every
     * connection shares. */
    size_t pending = kjsonl_pending(&c->fr);
    if (l->lim.max_buffered && l->buffered + l->held + pending > l->lim.max_buffered) {
        refuse(c, "the server holds %zu bytes of requests (max_buffered_bytes %zu); connection closed",
               l->buffered + l->held, l->lim.max_buffered);
        return;
    }
    l->buffered += pending;
    c->counted = pending;
    kjsonl_trim(&c->fr, IPC_KEEP_BUFFER); /* a large line went through: give its memory back */
}

static kipc_conn *conn_new(uv_loop_t *loop, size_t max_line, int tcp)
{
    kipc_conn *c = kcalloc(1, sizeof *c);
    if (tcp)
        uv_tcp_init(loop, &c->tcp);
    else
        uv_pipe_init(loop, &c->pipe, 0);
    c->pipe.data = c;
    uv_prepare_init(loop, &c->flusher);
    c->flusher.data = c;
    c->open_handles = 2;
    kjsonl_init(&c->fr, max_line);
    c->uid = (uid_t)-1;
    return c;
}

void kipc_attach(kipc_conn *c, const kipc_conn_cbs *cbs, void *ud)
{
    c->cbs = *cbs;
    c->ud = ud;
    if (c->attached)
        return;
    c->attached = 1;
    if (!c->dead && c->uid != (uid_t)-1) /* accepted: read now */
        uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read);
}

static void on_connect(uv_connect_t *req, int status)
{
    kipc_conn *c = req->data;
    if (c->closing || c->dead) {
        conn_end(c, "closed");
        return;
    }
    if (status == 0) {
        c->uid = getuid();
        uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read);
    }
    if (c->cbs.connected)
        c->cbs.connected(c->ud, status);
    if (status < 0)
        conn_end(c, uv_strerror(status));
}

kipc_conn *kipc_connect(uv_loop_t *loop, const char *path, size_t max_line)
{
    kipc_conn *c = conn_new(loop, max_line ? max_line : IPC_CLIENT_MAX_LINE, 0);
    c->creq.data = c;
    uv_pipe_connect(&c->creq, &c->pipe, path, on_connect);
    return c;
}

/* Would n more bytes take this peer past what it may leave unread? One
 * write is always let through to a peer that has read everything. */
static int over_unread(kipc_conn *c, size_t n)
{
    size_t queued = kipc_unread(c);
    return c->l && c->l->lim.max_unread && queued > 0 && queued + n > c->l->lim.max_unread;
}

int kipc_send(kipc_conn *c, const char *data, size_t n)
{
    if (c->dead || c->closing)
        return 0;
    if (over_unread(c, n))
        return -1;
    if (c->corked.len + n <= IPC_CORK_MAX)
        cork(c, data, n);
    else
        write_raw(c, data, n);
    return 0;
}

int kipc_send_owned(kipc_conn *c, char *data, size_t n)
{
    if (c->dead || c->closing || over_unread(c, n)) {
        int refused = !(c->dead || c->closing);
        free(data);
        return refused ? -1 : 0;
    }
    if (c->corked.len + n <= IPC_CORK_MAX) {
        cork(c, data, n);
        free(data);
    } else {
        flush_corked(c); /* in order */
        write_owned(c, data, n);
    }
    return 0;
}

void kipc_close(kipc_conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    if (c->dead)
        return;
    c->dead = 1;
    release(c);
    flush_and_close(c);
}

void kipc_abort(kipc_conn *c)
{
    c->closing = 1;
    if (!c->dead) {
        c->dead = 1;
        release(c);
    }
    close_handles(c); /* queued writes are dropped */
}

/* ---- bounds on an accepted connection's time ---------------------------- */

static void on_conn_timer(uv_timer_t *t)
{
    kipc_conn *c = t->data;
    const kipc_limits *lim = &c->l->lim;
    uint64_t now = uv_now(t->loop), next = 0;
    if (lim->lifetime_ms) {
        if (now - c->t_accept >= lim->lifetime_ms) {
            conn_end(c, "connection open too long");
            return;
        }
        next = c->t_accept + lim->lifetime_ms;
    }
    if (lim->idle_ms) {
        if (now - c->t_read >= lim->idle_ms) {
            conn_end(c, "idle timeout");
            return;
        }
        if (!next || c->t_read + lim->idle_ms < next)
            next = c->t_read + lim->idle_ms;
    }
    uv_timer_start(&c->timer, on_conn_timer, next - now, 0);
}

static void start_conn_timer(kipc_conn *c)
{
    const kipc_limits *lim = &c->l->lim;
    if (!lim->idle_ms && !lim->lifetime_ms)
        return;
    ensure_timer(c);
    c->t_accept = c->t_read = uv_now(c->pipe.loop);
    uint64_t first = lim->idle_ms && (!lim->lifetime_ms || lim->idle_ms < lim->lifetime_ms)
                         ? lim->idle_ms
                         : lim->lifetime_ms;
    uv_timer_start(&c->timer, on_conn_timer, first, 0);
}

/* ---- listeners ---------------------------------------------------------- */

static void on_connection(uv_stream_t *server, int status)
{
    kipc_listener *l = server->data;
    if (status < 0 || l->closed)
        return;
    kipc_conn *c =
        conn_new(server->loop, l->lim.max_line ? l->lim.max_line : IPC_CLIENT_MAX_LINE, l->tcp_mode);
    c->l = l;
    l->nconns++;
    if (uv_accept(server, (uv_stream_t *)&c->pipe) != 0) {
        conn_end(c, "accept failed");
        return;
    }
    if (l->lim.max_conns && l->nconns > l->lim.max_conns) {
        klog(KLOG_DEBUG, "kiro.server", "refused a connection: %d open (the most)", l->lim.max_conns);
        refuse(c, "too many connections (%d open); try again later", l->lim.max_conns);
        return;
    }
    if (!l->tcp_mode) {
        uv_os_fd_t fd;
        struct ucred cred;
        socklen_t len = sizeof cred;
        if (uv_fileno((uv_handle_t *)&c->pipe, &fd) != 0 ||
            getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
            klog(KLOG_WARN, "kiro.server", "cannot read peer credentials; connection refused");
            conn_end(c, "no credentials");
            return;
        }
        if (cred.uid != getuid()) {
            klog(KLOG_WARN, "kiro.server", "refused a connection from uid %u (pid %d): not our user",
                 (unsigned)cred.uid, (int)cred.pid);
            conn_end(c, "foreign uid");
            return;
        }
        c->uid = cred.uid;
    } else {
        c->uid = 0; /* no user to check on TCP: only the metrics endpoint uses it */
    }
    start_conn_timer(c);
    l->on_conn(l->ud, c);
}

static kipc_listener *listener_new(const kipc_limits *lim, void (*on_conn)(void *, kipc_conn *), void *ud)
{
    kipc_listener *l = kcalloc(1, sizeof *l);
    l->on_conn = on_conn;
    l->ud = ud;
    if (lim)
        l->lim = *lim;
    return l;
}

int kipc_listen(uv_loop_t *loop, const char *path, const kipc_limits *lim,
                void (*on_conn)(void *ud, kipc_conn *c), void *ud, kipc_listener **out, char *err,
                size_t errlen)
{
    kipc_listener *l = listener_new(lim, on_conn, ud);
    char tmp[4096];
    int rc;
    snprintf(tmp, sizeof tmp, "%s.%d.tmp", path, (int)getpid());
    unlink(tmp);
    uv_pipe_init(loop, &l->pipe, 0);
    l->pipe.data = l;
    l->path = kstrdup(path);
    /* Bind under a private name, listen, then rename: the socket appears
     * at `path` only when it accepts connections, and atomically. */
    mode_t old = umask(0077);
    rc = uv_pipe_bind(&l->pipe, tmp);
    umask(old);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&l->pipe, 128, on_connection);
    if (rc == 0 && rename(tmp, path) != 0)
        rc = uv_translate_sys_error(errno);
    if (rc != 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", path, uv_strerror(rc));
        unlink(tmp);
        kipc_listener_close(l);
        *out = NULL;
        return -1;
    }
    struct stat st;
    if (stat(path, &st) == 0) {
        l->dev = st.st_dev;
        l->ino = st.st_ino;
    }
    *out = l;
    return 0;
}

int kipc_listen_tcp(uv_loop_t *loop, const char *host, int port, const kipc_limits *lim,
                    void (*on_conn)(void *ud, kipc_conn *c), void *ud, kipc_listener **out, char *err,
                    size_t errlen)
{
    kipc_listener *l = listener_new(lim, on_conn, ud);
    uv_getaddrinfo_t req;
    struct addrinfo hints;
    char service[16];
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | AI_PASSIVE;
    snprintf(service, sizeof service, "%d", port);
    uv_tcp_init(loop, &l->tcp);
    l->tcp.data = l;
    l->tcp_mode = 1;
    /* A name (localhost) is resolved here, once; no callback: synchronous. */
    int rc = uv_getaddrinfo(loop, &req, NULL, host, service, &hints);
    if (rc == 0) {
        rc = uv_tcp_bind(&l->tcp, req.addrinfo->ai_addr, 0);
        uv_freeaddrinfo(req.addrinfo);
    }
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&l->tcp, 64, on_connection);
    if (rc != 0) {
        snprintf(err, errlen, "cannot listen on %s:%d: %s", host, port, uv_strerror(rc));
        kipc_listener_close(l);
        *out = NULL;
        return -1;
    }
    *out = l;
    return 0;
}

int kipc_listener_port(kipc_listener *l)
{
    struct sockaddr_storage addr;
    int len = sizeof addr;
    if (!l->tcp_mode || uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&addr, &len) != 0)
        return -1;
    return ntohs(addr.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&addr)->sin6_port
                                            : ((struct sockaddr_in *)&addr)->sin_port);
}

int kipc_listener_hold(kipc_listener *l, long long n)
{
    if (n < 0) {
        size_t m = (size_t)-n;
        l->held = m > l->held ? 0 : l->held - m;
        return 0;
    }
    if (l->lim.max_buffered && l->buffered + l->held + (size_t)n > l->lim.max_buffered)
        return -1;
    l->held += (size_t)n;
    return 0;
}

size_t kipc_listener_buffered(const kipc_listener *l)
{
    return l->buffered + l->held;
}

static void listener_closed(uv_handle_t *h)
{
    kipc_listener *l = h->data;
    l->handle_closed = 1;
    maybe_free_listener(l);
}

void kipc_listener_close(kipc_listener *l)
{
    struct stat st;
    if (l->closed)
        return;
    l->closed = 1;
    /* Remove the socket only if it is still the one we bound. */
    if (l->path && l->ino && stat(l->path, &st) == 0 && st.st_ino == l->ino && st.st_dev == l->dev)
        unlink(l->path);
    l->ino = 0;
    uv_close((uv_handle_t *)&l->pipe, listener_closed);
}

int kipc_secure_dir(const char *dir, char *err, size_t errlen)
{
    struct stat st;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %s: %s", dir, strerror(errno));
        return -1;
    }
    if (lstat(dir, &st) != 0) {
        snprintf(err, errlen, "cannot stat %s: %s", dir, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "%s is not a directory (a symlink or a file is refused)", dir);
        return -1;
    }
    if (st.st_uid != getuid()) {
        snprintf(err, errlen, "%s belongs to uid %u, not to us (uid %u): refusing to use it", dir,
                 (unsigned)st.st_uid, (unsigned)getuid());
        return -1;
    }
    if (st.st_mode & (S_IWGRP | S_IWOTH)) {
        snprintf(err, errlen,
                 "%s is writable by others (mode %03o): refusing to use it; "
                 "chmod 700 it or remove it",
                 dir, (unsigned)(st.st_mode & 0777));
        return -1;
    }
    return 0;
}

/* ---- where the server is, and one exchange without the loop ------------- */

int kipc_server_dir(char *buf, size_t n)
{
    const char *runtime = getenv("XDG_RUNTIME_DIR");
    int w = runtime && *runtime ? snprintf(buf, n, "%s/kiro-rt", runtime)
                                : snprintf(buf, n, "/tmp/kiro-rt-%u", (unsigned)getuid());
    return w < 0 || (size_t)w >= n ? -1 : 0;
}

int kipc_server_socket(char *buf, size_t n)
{
    if (kipc_server_dir(buf, n) != 0)
        return -1;
    size_t len = strlen(buf);
    int w = snprintf(buf + len, n - len, "/server.sock");
    return w < 0 || (size_t)w >= n - len ? -1 : 0;
}

int kipc_backend_var(const char *name)
{
    static const char *const own[] = { "KIRO_CLI_PATH", "KIRO_USE_DAEMON", "KIRO_MODEL",
                                       "KIRO_PROTOCOL", "KIRO_LOG",        "KIRO_LUA_DIR" };
    size_t len = strcspn(name, "=");
    if (len <= 5 || strncmp(name, "KIRO_", 5) != 0 || strncmp(name, "KIRO_SERVER_", 12) == 0)
        return 0;
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++)
        if (strlen(own[i]) == len && strncmp(name, own[i], len) == 0)
            return 0;
    return 1;
}

static uint64_t now_ms(void)
{
    return uv_hrtime() / 1000000;
}

/* Waits for events on fd until the deadline: 0, or a negative errno. */
static int wait_fd(int fd, short events, uint64_t deadline)
{
    uint64_t now = now_ms();
    if (now >= deadline)
        return -ETIMEDOUT;
    uint64_t left = deadline - now;
    struct pollfd p = { .fd = fd, .events = events };
    int r = poll(&p, 1, left > INT32_MAX ? INT32_MAX : (int)left);
    if (r < 0)
        return errno == EINTR ? 0 : -errno; /* a handled signal: look again */
    return r == 0 ? -ETIMEDOUT : 0;
}

int kipc_dial(const char *path)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    size_t len = strlen(path);
    if (len >= sizeof a.sun_path)
        return -ENAMETOOLONG;
    memcpy(a.sun_path, path, len + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    /* A Unix socket connects at once, or not at all (EAGAIN: its backlog is full). */
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

int kipc_exchange(int fd, const char *data, size_t n, uint64_t timeout_ms, kjsonl_line_cb line, void *ud)
{
    uint64_t deadline = now_ms() + timeout_ms;
    for (size_t off = 0; off < n;) {
        ssize_t w = send(fd, data + off, n - off, MSG_NOSIGNAL);
        if (w > 0) {
            off += (size_t)w;
            continue;
        }
        if (w < 0 && errno != EAGAIN && errno != EINTR)
            return -errno;
        int rc = wait_fd(fd, POLLOUT, deadline);
        if (rc != 0)
            return rc;
    }
    kjsonl fr;
    kjsonl_init(&fr, IPC_CLIENT_MAX_LINE);
    char buf[65536];
    int rc;
    for (;;) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r == 0) {
            rc = -EPIPE;
            break;
        }
        if (r < 0) {
            if (errno != EAGAIN && errno != EINTR) {
                rc = -errno;
                break;
            }
            if ((rc = wait_fd(fd, POLLIN, deadline)) != 0)
                break;
            continue;
        }
        int f = kjsonl_feed(&fr, buf, (size_t)r, line, ud);
        if (f == KJSONL_STOPPED) {
            rc = 0;
            break;
        }
        if (f == KJSONL_OVERFLOW) {
            rc = -EMSGSIZE;
            break;
        }
    }
    kjsonl_free(&fr);
    return rc;
}
