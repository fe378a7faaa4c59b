/* Local IPC for the kiro-rt server: a Unix stream socket private to the user
 * (SO_PEERCRED checked on every connection), carrying JSON Lines; and a TCP
 * listener for the metrics endpoint. Every listener is bounded (kipc_limits):
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

#include "jsonl.h"

typedef struct kipc_listener kipc_listener;
typedef struct kipc_conn kipc_conn;

typedef struct kipc_conn_cbs {
    /* Connect result (client side): status 0 or a negative libuv error. */
    void (*connected)(void *ud, int status);
    void (*line)(void *ud, const char *line, size_t n);
    /* The last callback: the peer closed, an error, a limit, or kipc_close(). */
    void (*closed)(void *ud, const char *why);
    /* What the peer had not read fell to the mark of kipc_notify_drain. */
    void (*drained)(void *ud);
} kipc_conn_cbs;

/* Bounds for the connections of one listener (0: no bound). */
typedef struct kipc_limits {
    size_t max_line;      /* longest line a peer may send (the request cap) */
    size_t max_buffered;  /* unfinished lines of all peers, plus what the owner
                             holds (kipc_listener_hold) */
    size_t max_unread;    /* bytes queued to one peer that it has not read */
    int max_conns;        /* connections at once; more are refused at accept */
    uint64_t idle_ms;     /* a peer silent this long is disconnected */
    uint64_t lifetime_ms; /* a connection is closed this long after accept */
} kipc_limits;

/* Binds `path` (under a temporary name, renamed into place) and listens.
 * Connections from another uid are refused before on_conn is called. */
int kipc_listen(uv_loop_t *loop, const char *path, const kipc_limits *lim,
                void (*on_conn)(void *ud, kipc_conn *c), void *ud, kipc_listener **out, char *err,
                size_t errlen);
/* A TCP listener (the metrics endpoint: no peer check is possible). `host`
 * is an address or a name (localhost). */
int kipc_listen_tcp(uv_loop_t *loop, const char *host, int port, const kipc_limits *lim,
                    void (*on_conn)(void *ud, kipc_conn *c), void *ud, kipc_listener **out, char *err,
                    size_t errlen);
/* The bound TCP port (for port 0), or -1. */
int kipc_listener_port(kipc_listener *l);
/* The owner holds n more bytes (n < 0: fewer) on behalf of its peers. A
 * positive n is refused (returns -1, nothing held) when it would take the
 * listener past max_buffered. */
int kipc_listener_hold(kipc_listener *l, long long n);
/* Bytes of unfinished lines plus bytes held. */
size_t kipc_listener_buffered(const kipc_listener *l);
/* Stops listening and removes the socket file (if it is still ours). Open
 * connections stay usable until closed. */
void kipc_listener_close(kipc_listener *l);

kipc_conn *kipc_connect(uv_loop_t *loop, const char *path, size_t max_line);
/* Sets the callbacks and starts reading (an accepted connection reads only
 * once it has an owner). */
void kipc_attach(kipc_conn *c, const kipc_conn_cbs *cbs, void *ud);
/* Queues a copy of data. Returns 0, or -1 when the peer already has more
 * than max_unread bytes it has not read (nothing is queued then). */
int kipc_send(kipc_conn *c, const char *data, size_t n);
/* The same, taking ownership of data (malloc'd): no copy. */
int kipc_send_owned(kipc_conn *c, char *data, size_t n);
/* Bytes queued to the peer that it has not read yet. */
size_t kipc_unread(const kipc_conn *c);
/* Calls `drained` once the peer's unread bytes fall to `below` or fewer. */
void kipc_notify_drain(kipc_conn *c, size_t below);
/* No more callbacks after this; pending writes are flushed first (for two
 * seconds at most). */
void kipc_close(kipc_conn *c);
/* The same, at once: pending writes are dropped (a peer that does not read). */
void kipc_abort(kipc_conn *c);

/* Creates `dir` 0700 if missing; refuses one that another user owns or that
 * others can write. Returns 0, or -1 with a message. */
int kipc_secure_dir(const char *dir, char *err, size_t errlen);

/* The server's wire protocol version: a client names it (with kiro-rt's
 * version) in a request's "expect" or its hello. */
#define KIPC_PROTO 1
/* A client waits for a request's end this long past its own timeout_ms
 * before it gives up on a server that stopped answering. */
#define KIPC_GUARD_MS 2000

/* The server's directory, written to buf: $XDG_RUNTIME_DIR/kiro-rt, else
 * /tmp/kiro-rt-UID. Returns 0, or -1 when it does not fit. */
int kipc_server_dir(char *buf, size_t n);
/* The server's socket in that directory (server.sock); 0 or -1 as above. */
int kipc_server_socket(char *buf, size_t n);
/* Is the environment variable `name` (NAME=value or NAME) one a client
 * passes to its backend? Every KIRO_* variable is, except kiro-rt's own
 * (KIRO_CLI_PATH, KIRO_USE_DAEMON, KIRO_MODEL, KIRO_PROTOCOL, KIRO_LOG,
 * KIRO_LUA_DIR, KIRO_SERVER_*): kiro-sim's knobs, say, reach it through the server. */
int kipc_backend_var(const char *name);

/* One exchange without the loop, for a process that makes one call and
 * leaves (kiro-rt agent, where a loop, its handles and their teardown would
 * cost more than the call). kipc_dial connects to the socket at path: a
 * descriptor, or a negative errno (-ENOENT or -ECONNREFUSED: nothing
 * listens there). kipc_exchange sends the n bytes of data on it and hands
 * each line it reads to `line` until that returns non-zero. Returns 0
 * then; otherwise a negative errno: -ETIMEDOUT (not over within
 * timeout_ms), -EPIPE (the peer closed first), -EMSGSIZE (a line past the
 * client's bound), or what read or write said. The caller closes fd. */
int kipc_dial(const char *path);
int kipc_exchange(int fd, const char *data, size_t n, uint64_t timeout_ms, kjsonl_line_cb line, void *ud);

#endif
