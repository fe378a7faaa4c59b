/* Local IPC for the kiro-rt server: a Unix stream socket private to the user
 * (SO_PEERCRED checked on every connection), carrying JSON Lines; and a TCP
 * listener for the metrics endpoint. Every listener is bounded (ipc_limits):
 * nothing a peer sends or fails to read can grow the server without limit.
 *
 * Ownership: a listener and its connections are freed by ipc itself, once
 * closed and no longer referenced; the owner hears `closed` once per
 * connection (unless it closed it) and must not touch it afterwards. */
#ifndef KIRO_IPC_H
#define KIRO_IPC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

typedef struct ipc_listener ipc_listener;
typedef struct ipc_conn ipc_conn;

typedef struct ipc_conn_cbs {
    /* Connect result (client side): status 0 or a negative libuv error. */
    void (*connected)(void *ud, int status);
    void (*line)(void *ud, const char *line, size_t n);
    /* The last callback: the peer closed, an error, a limit, or ipc_close(). */
    void (*closed)(void *ud, const char *why);
    /* What the peer had not read fell to the mark of ipc_notify_drain. */
    void (*drained)(void *ud);
} ipc_conn_cbs;

/* Bounds for the connections of one listener (0: no bound). */
typedef struct ipc_limits {
    size_t max_line;     /* longest line a peer may send (the request cap) */
    size_t max_buffered; /* unfinished lines of all peers, plus what the owner
                            holds (ipc_listener_hold) */
    size_t max_unread;   /* bytes queued to one peer that it has not read */
    int max_conns;       /* connections at once; more are refused at accept */
    uint64_t idle_ms;    /* a peer silent this long is disconnected */
    uint64_t lifetime_ms; /* a connection is closed this long after accept */
} ipc_limits;

/* Binds `path` (under a temporary name, renamed into place) and listens.
 * Connections from another uid are refused before on_conn is called. */
int ipc_listen(uv_loop_t *loop, const char *path, const ipc_limits *lim,
               void (*on_conn)(void *ud, ipc_conn *c), void *ud, ipc_listener **out, char *err,
               size_t errlen);
/* A TCP listener (the metrics endpoint: no peer check is possible). `host`
 * is an address or a name (localhost). */
int ipc_listen_tcp(uv_loop_t *loop, const char *host, int port, const ipc_limits *lim,
                   void (*on_conn)(void *ud, ipc_conn *c), void *ud, ipc_listener **out, char *err,
                   size_t errlen);
/* The bound TCP port (for port 0), or -1. */
int ipc_listener_port(ipc_listener *l);
/* The owner holds n more bytes (n < 0: fewer) on behalf of its peers. A
 * positive n is refused (returns -1, nothing held) when it would take the
 * listener past max_buffered. */
int ipc_listener_hold(ipc_listener *l, long long n);
/* Bytes of unfinished lines plus bytes held. */
size_t ipc_listener_buffered(const ipc_listener *l);
/* Stops listening and removes the socket file (if it is still ours). Open
 * connections stay usable until closed. */
void ipc_listener_close(ipc_listener *l);

ipc_conn *ipc_connect(uv_loop_t *loop, const char *path, size_t max_line);
/* Sets the callbacks and starts reading (an accepted connection reads only
 * once it has an owner). */
void ipc_attach(ipc_conn *c, const ipc_conn_cbs *cbs, void *ud);
/* Queues a copy of data. Returns 0, or -1 when the peer already has more
 * than max_unread bytes it has not read (nothing is queued then). */
int ipc_send(ipc_conn *c, const char *data, size_t n);
/* The same, taking ownership of data (malloc'd): no copy. */
int ipc_send_owned(ipc_conn *c, char *data, size_t n);
/* Bytes queued to the peer that it has not read yet. */
size_t ipc_unread(const ipc_conn *c);
/* Calls `drained` once the peer's unread bytes fall to `below` or fewer. */
void ipc_notify_drain(ipc_conn *c, size_t below);
/* No more callbacks after this; pending writes are flushed first (for two
 * seconds at most). */
void ipc_close(ipc_conn *c);
/* The same, at once: pending writes are dropped (a peer that does not read). */
void ipc_abort(ipc_conn *c);
uid_t ipc_peer_uid(const ipc_conn *c);

/* Creates `dir` 0700 if missing; refuses one that another user owns or that
 * others can write. Returns 0, or -1 with a message. */
int ipc_secure_dir(const char *dir, char *err, size_t errlen);

#endif
