/* HTTP requests on libcurl's multi-socket interface, driven by the
 * runtime's libuv loop: one multi handle per runtime, a uv_poll_t for each
 * socket curl asks to watch and one uv_timer_t for curl's timeouts. No
 * thread, no second loop; connections are kept and reused by the multi
 * handle. TLS peers are verified (curl's defaults, never turned off).
 *
 * Ownership: a request is the caller's until its end callback, after which
 * it is freed; khttp_cancel ends it at once with no callback. A callback may
 * cancel any request, its own included. */
#ifndef KIRO_HTTP_H
#define KIRO_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct khttp khttp;
typedef struct khttp_req khttp_req;

enum khttp_error {
    KHTTP_OK = 0,
    KHTTP_TIMEOUT,   /* timeout_ms passed */
    KHTTP_NETWORK,   /* resolving, connecting, sending or receiving failed */
    KHTTP_TLS,       /* the peer's certificate or the handshake failed */
    KHTTP_TOO_BIG,   /* the response passed max_bytes */
    KHTTP_INVALID,   /* the request itself (URL, method) is unusable */
    KHTTP_CANCELLED, /* khttp_end_all: the runtime ends what is under way */
};

typedef struct khttp_sink {
    /* The response's status and header block ("Name: value\r\n" lines, the
     * last response's when curl followed none), once, before any data. */
    void (*head)(void *ud, long status, const char *headers, size_t len);
    /* Body bytes as they arrive. */
    void (*data)(void *ud, const char *p, size_t n);
    /* The end: err KHTTP_OK, or why it failed, in msg. The request is
     * freed after this returns. */
    void (*end)(void *ud, enum khttp_error err, const char *msg);
    void *ud;
} khttp_sink;

typedef struct khttp_opts {
    const char *method;         /* GET, POST, ...; NULL: GET, or POST with a body */
    const char *url;            /* http:// or https:// only */
    const char *const *headers; /* "Name: value", NULL-terminated; may be NULL */
    const char *body;           /* copied; may be NULL */
    size_t body_len;
    uint64_t timeout_ms; /* the whole exchange; 0: none */
    size_t max_bytes;    /* the body's limit; 0: none */
} khttp_opts;

/* The runtime's client, made on first use; NULL with a message when curl
 * cannot start. */
khttp *khttp_new(uv_loop_t *loop, char *err, size_t errlen);
/* Starts a request; NULL with a message (nothing called back) when it
 * cannot be made. */
khttp_req *khttp_start(khttp *h, const khttp_opts *o, const khttp_sink *sink, char *err, size_t errlen);
/* Ends it now, without a callback. */
void khttp_cancel(khttp_req *r);
/* Every request under way ends now with KHTTP_CANCELLED and msg. */
void khttp_end_all(khttp *h, const char *msg);
/* Requests under way. */
int khttp_active(const khttp *h);
/* Every request ends (cancelled, no callback) and the client goes; its
 * handles are closed on the loop, which must run once more to free them. */
void khttp_free(khttp *h);

#endif
