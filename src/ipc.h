/* Local IPC for the kiro-rt server: a Unix stream socket private to the user
 * (SO_PEERCRED checked on every connection), carrying JSON Lines. */
#ifndef KIRO_IPC_H
#define KIRO_IPC_H

#include <stddef.h>
#include <sys/types.h>
#include <uv.h>

typedef struct ipc_listener ipc_listener;
typedef struct ipc_conn ipc_conn;

typedef struct ipc_conn_cbs {
    /* Connect result (client side): status 0 or a negative libuv error. */
    void (*connected)(void *ud, int status);
    void (*line)(void *ud, const char *line, size_t n);
    /* The last callback: the peer closed, an error, or ipc_close(). */
    void (*closed)(void *ud, const char *why);
} ipc_conn_cbs;

/* Binds `path` (under a temporary name, renamed into place) and listens.
 * Connections from another uid are refused before on_conn is called. */
int ipc_listen(uv_loop_t *loop, const char *path, void (*on_conn)(void *ud, ipc_conn *c), void *ud,
               ipc_listener **out, char *err, size_t errlen);
/* A TCP listener (for the metrics endpoint: no peer check is possible). */
int ipc_listen_tcp(uv_loop_t *loop, const char *host, int port, void (*on_conn)(void *ud, ipc_conn *c),
                   void *ud, ipc_listener **out, char *err, size_t errlen);
/* The bound TCP port (for port 0), or -1. */
int ipc_listener_port(ipc_listener *l);
/* Stops listening and removes the socket file (if it is still ours). */
void ipc_listener_close(ipc_listener *l);

ipc_conn *ipc_connect(uv_loop_t *loop, const char *path, size_t max_line);
/* Sets the callbacks and starts reading (an accepted connection reads only
 * once it has an owner). */
void ipc_attach(ipc_conn *c, const ipc_conn_cbs *cbs, void *ud);
void ipc_send(ipc_conn *c, const char *data, size_t n);
/* No more callbacks after this; pending writes are flushed first. */
void ipc_close(ipc_conn *c);
uid_t ipc_peer_uid(const ipc_conn *c);

/* Creates `dir` 0700 if missing; refuses one that another user owns or that
 * others can write. Returns 0, or -1 with a message. */
int ipc_secure_dir(const char *dir, char *err, size_t errlen);

#endif
