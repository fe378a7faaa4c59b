/* WebSocket client connections on libwebsockets, driven by the runtime's
 * libuv loop (libwebsockets' libuv event library on a foreign loop: no
 * thread, no second loop). One lws context per runtime, made on first use;
 * TLS peers are verified (the system's CA store, or KIRO_CA_FILE).
 *
 * Ownership: a connection is the caller's until kws_release. Its events
 * come to the sink; `closed` is the last one. After kws_release no event
 * comes and the connection is freed (at once, or once libwebsockets lets
 * go of its socket). */
#ifndef KIRO_WS_H
#define KIRO_WS_H

#include <stddef.h>
#include <uv.h>

typedef struct kws kws;
typedef struct kws_conn kws_conn;

typedef struct kws_sink {
    /* The handshake is done: sends may go. */
    void (*open)(void *ud);
    /* One whole message (fragments joined). */
    void (*message)(void *ud, const char *p, size_t n, int binary);
    /* The end, once: the peer's close code and reason, 1006 with why when
     * the connection failed or dropped without a close frame, 1009 when a
     * message passed max_bytes. */
    void (*closed)(void *ud, int code, const char *reason);
    void *ud;
} kws_sink;

/* A client context on loop, or NULL with why in err (libwebsockets or its
 * libuv event library missing). */
kws *kws_new(uv_loop_t *loop, char *err, size_t errlen);

/* Ends every connection (each gets `closed` with 1001 and why) and lets
 * the context go; the loop finishes closing its handles. */
void kws_free(kws *w, const char *why);

/* Opens ws:// or wss:// url: its host looked up in libuv's thread pool (not
 * on the loop), then each of its addresses tried in turn. max_bytes caps
 * one message (0: 16 MiB). NULL with why in err when the URL is unusable
 * or the connection cannot be started; a failure later (no such host, no
 * address that answers) comes as `closed` with 1006. */
kws_conn *kws_connect(kws *w, const char *url, size_t max_bytes, const kws_sink *sink, char *err,
                      size_t errlen);

/* Queues a text (or binary) message; -1 once the connection is closing. */
int kws_send(kws_conn *c, const char *p, size_t n, int binary);

/* Starts the closing handshake with code and reason; `closed` follows. */
void kws_close(kws_conn *c, int code, const char *reason);

/* The caller lets go: no more events; the socket goes at once. */
void kws_release(kws_conn *c);

#endif
