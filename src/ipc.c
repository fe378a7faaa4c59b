#define _GNU_SOURCE /* struct ucred, SO_PEERCRED */
#include "ipc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "jsonl.h"
#include "log.h"

#define IPC_MAX_LINE (256u << 20)

struct ipc_listener {
    union {
        uv_pipe_t pipe;
        uv_tcp_t tcp;
    };
    int tcp_mode;
    char *path;
    dev_t dev;
    ino_t ino;
    void (*on_conn)(void *ud, ipc_conn *c);
    void *ud;
};

struct ipc_conn {
    union {
        uv_pipe_t pipe;
        uv_tcp_t tcp;
    };
    uv_connect_t creq;
    jsonl_framer fr;
    ipc_conn_cbs cbs;
    void *ud;
    uid_t uid;
    unsigned attached : 1, closing : 1, dead : 1;
};

struct ipc_write {
    uv_write_t req;
    char data[];
};

static void conn_closed(uv_handle_t *h)
{
    ipc_conn *c = h->data;
    jsonl_free(&c->fr);
    free(c);
}

/* Ends the connection: one `closed` callback (unless the owner closed it). */
static void conn_end(ipc_conn *c, const char *why)
{
    if (c->dead)
        return;
    c->dead = 1;
    if (c->attached && !c->closing && c->cbs.closed)
        c->cbs.closed(c->ud, why);
    if (!uv_is_closing((uv_handle_t *)&c->pipe))
        uv_close((uv_handle_t *)&c->pipe, conn_closed);
}

static int on_line(void *ud, const char *line, size_t n)
{
    ipc_conn *c = ud;
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
    ipc_conn *c = s->data;
    if (n < 0) {
        conn_end(c, n == UV_EOF ? "connection closed by peer" : uv_strerror((int)n));
        return;
    }
    if (n > 0 && jsonl_feed(&c->fr, buf->base, (size_t)n, on_line, c) == JSONL_OVERFLOW)
        conn_end(c, "line too long");
}

static ipc_conn *conn_new(uv_loop_t *loop, size_t max_line, int tcp)
{
    ipc_conn *c = kcalloc(1, sizeof *c);
    if (tcp)
        uv_tcp_init(loop, &c->tcp);
    else
        uv_pipe_init(loop, &c->pipe, 0);
    c->pipe.data = c;
    jsonl_init(&c->fr, max_line ? max_line : IPC_MAX_LINE);
    c->uid = (uid_t)-1;
    return c;
}

void ipc_attach(ipc_conn *c, const ipc_conn_cbs *cbs, void *ud)
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
    ipc_conn *c = req->data;
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

ipc_conn *ipc_connect(uv_loop_t *loop, const char *path, size_t max_line)
{
    ipc_conn *c = conn_new(loop, max_line, 0);
    c->creq.data = c;
    uv_pipe_connect(&c->creq, &c->pipe, path, on_connect);
    return c;
}

static void on_written(uv_write_t *req, int status)
{
    (void)status; /* a broken connection shows up as a read error */
    free(req);
}

void ipc_send(ipc_conn *c, const char *data, size_t n)
{
    if (c->dead || c->closing)
        return;
    struct ipc_write *w = kmalloc(sizeof *w + n);
    memcpy(w->data, data, n);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
    if (uv_write(&w->req, (uv_stream_t *)&c->pipe, &b, 1, on_written) < 0)
        free(w);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    ipc_conn *c = req->data;
    (void)status;
    free(req);
    if (!uv_is_closing((uv_handle_t *)&c->pipe))
        uv_close((uv_handle_t *)&c->pipe, conn_closed);
}

void ipc_close(ipc_conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    if (c->dead)
        return;
    c->dead = 1;
    uv_read_stop((uv_stream_t *)&c->pipe);
    /* Queued writes are flushed before the socket closes. */
    uv_shutdown_t *req = kmalloc(sizeof *req);
    req->data = c;
    if (uv_shutdown(req, (uv_stream_t *)&c->pipe, on_shutdown) != 0) {
        free(req);
        uv_close((uv_handle_t *)&c->pipe, conn_closed);
    }
}

uid_t ipc_peer_uid(const ipc_conn *c)
{
    return c->uid;
}

static void on_connection(uv_stream_t *server, int status)
{
    ipc_listener *l = server->data;
    if (status < 0)
        return;
    ipc_conn *c = conn_new(server->loop, l->tcp_mode ? 65536 : 0, l->tcp_mode);
    if (uv_accept(server, (uv_stream_t *)&c->pipe) != 0) {
        conn_end(c, "accept failed");
        return;
    }
    if (l->tcp_mode) { /* no user to check on TCP: only the metrics endpoint uses it */
        c->uid = 0;
        l->on_conn(l->ud, c);
        return;
    }
    uv_os_fd_t fd;
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (uv_fileno((uv_handle_t *)&c->pipe, &fd) != 0 ||
        getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
        klog(LOG_WARN, "kiro.server", "cannot read peer credentials; connection refused");
        conn_end(c, "no credentials");
        return;
    }
    if (cred.uid != getuid()) {
        klog(LOG_WARN, "kiro.server", "refused a connection from uid %u (pid %d): not our user",
             (unsigned)cred.uid, (int)cred.pid);
        conn_end(c, "foreign uid");
        return;
    }
    c->uid = cred.uid;
    l->on_conn(l->ud, c);
}

int ipc_listen(uv_loop_t *loop, const char *path, void (*on_conn)(void *ud, ipc_conn *c), void *ud,
               ipc_listener **out, char *err, size_t errlen)
{
    ipc_listener *l = kcalloc(1, sizeof *l);
    char tmp[4096];
    int rc;
    snprintf(tmp, sizeof tmp, "%s.%d.tmp", path, (int)getpid());
    unlink(tmp);
    uv_pipe_init(loop, &l->pipe, 0);
    l->pipe.data = l;
    l->path = kstrdup(path);
    l->on_conn = on_conn;
    l->ud = ud;
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
        ipc_listener_close(l);
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

int ipc_listen_tcp(uv_loop_t *loop, const char *host, int port, void (*on_conn)(void *ud, ipc_conn *c),
                   void *ud, ipc_listener **out, char *err, size_t errlen)
{
    ipc_listener *l = kcalloc(1, sizeof *l);
    struct sockaddr_storage addr;
    int rc = uv_ip4_addr(host, port, (struct sockaddr_in *)&addr);
    if (rc != 0)
        rc = uv_ip6_addr(host, port, (struct sockaddr_in6 *)&addr);
    uv_tcp_init(loop, &l->tcp);
    l->tcp.data = l;
    l->tcp_mode = 1;
    l->on_conn = on_conn;
    l->ud = ud;
    if (rc == 0)
        rc = uv_tcp_bind(&l->tcp, (const struct sockaddr *)&addr, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&l->tcp, 64, on_connection);
    if (rc != 0) {
        snprintf(err, errlen, "cannot listen on %s:%d: %s", host, port, uv_strerror(rc));
        ipc_listener_close(l);
        *out = NULL;
        return -1;
    }
    *out = l;
    return 0;
}

int ipc_listener_port(ipc_listener *l)
{
    struct sockaddr_storage addr;
    int len = sizeof addr;
    if (!l->tcp_mode || uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&addr, &len) != 0)
        return -1;
    return ntohs(addr.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&addr)->sin6_port
                                            : ((struct sockaddr_in *)&addr)->sin_port);
}

static void listener_closed(uv_handle_t *h)
{
    ipc_listener *l = h->data;
    free(l->path); /* NULL for TCP */
    free(l);
}

void ipc_listener_close(ipc_listener *l)
{
    struct stat st;
    /* Remove the socket only if it is still the one we bound. */
    if (l->path && l->ino && stat(l->path, &st) == 0 && st.st_ino == l->ino && st.st_dev == l->dev)
        unlink(l->path);
    l->ino = 0;
    if (!uv_is_closing((uv_handle_t *)&l->pipe))
        uv_close((uv_handle_t *)&l->pipe, listener_closed);
}

int ipc_secure_dir(const char *dir, char *err, size_t errlen)
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
        snprintf(err, errlen, "%s is writable by others (mode %03o): refusing to use it; "
                              "chmod 700 it or remove it", dir, (unsigned)(st.st_mode & 0777));
        return -1;
    }
    return 0;
}
