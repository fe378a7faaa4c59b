/* The runtime: one libuv loop and everything on it. It owns the shared core
 * (settings, counters, requests, oneshots), the backends and their pools,
 * and the health timer; it is the only part that sees the whole. */
#ifndef KIRO_RT_H
#define KIRO_RT_H

#include <uv.h>

#include "backend.h"
#include "core.h"
#include "http.h"
#include "request.h"
#include "ws.h"

typedef struct krt {
    uv_loop_t loop_storage;
    kcore core;
    kbackends backends;
    int shutting_down;
    uv_timer_t health; /* one timer checks every daemon and oneshot child */
    khttp *http;       /* the HTTP client, made on first use */
    kws *ws;           /* the WebSocket client, made on first use */
} krt;

krt *krt_new(void);
/* The options a new runtime starts with. */
const kconfig *krt_defaults(void);
/* Ends every request (cancelled) and stops every backend's daemons, in
 * order. `reopen`: new requests are taken afterwards (pools start again on
 * demand); else the runtime refuses them with `closed`. */
void krt_shutdown(krt *rt, int reopen);
/* Shuts down, runs the loop until every child is reaped, frees. */
void krt_free(krt *rt);
/* (Re)starts the periodic health check after a configuration change. */
void krt_health_start(krt *rt);
/* The runtime's HTTP client, made now if need be; NULL with a message. */
khttp *krt_http(krt *rt, char *err, size_t errlen);
/* The runtime's WebSocket client, likewise. */
kws *krt_ws(krt *rt, char *err, size_t errlen);
/* Serves r on the backend's daemon pool, or by a oneshot child. */
void krt_submit(krt *rt, kbackend *b, int oneshot, kreq *r);

#endif
