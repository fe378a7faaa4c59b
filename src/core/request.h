/* One request's life: its deadlines, its output, and the carrier (a queue, a
 * daemon, a oneshot child) that serves it. Every request ends exactly once,
 * with a reply or an error code; nothing ends in silence.
 *
 * Who holds a request: its owner (the Lua binding, or a daemon for its own
 * probe) holds the reference kreq_new returns and drops it with
 * kreq_unref, at the latest once `end` was called. The core holds a second
 * reference from kreq_new until the request ends (it is then in
 * core->requests). A carrier that keeps the request past the call that
 * handed it over (a queue, a daemon's slot, a oneshot) takes a reference of
 * its own and drops it when it lets go. The memory goes with the last
 * reference; the request is ended before that, always. */
#ifndef KIRO_REQUEST_H
#define KIRO_REQUEST_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core.h"

typedef struct kreq kreq;

/* Error codes, as Lua sees them (SPEC section 5). */
#define KERR_TIMEOUT "timeout"
#define KERR_SPAWN "spawn"
#define KERR_CRASHED "crashed"
#define KERR_PROTOCOL "protocol"
#define KERR_BACKEND "backend"
#define KERR_CANCELLED "cancelled"
#define KERR_OVERLOADED "overloaded"
#define KERR_CLOSED "closed"
#define KERR_AUTH "auth"                 /* the backend needs credentials (ACP -32000) */
#define KERR_SESSION_LOST "session_lost" /* the agent holding the request's session is gone */
#define KERR_CONFIG "config"             /* the backend cannot do what it is configured to (a model) */

/* Why a carrier loses its request. */
enum kreq_abort { KABORT_TIMEOUT, KABORT_CANCEL, KABORT_SHUTDOWN };

/* What a carrier does for the request it holds: let go of it (required),
 * and stop or start reading its output (optional: flow control, when the
 * request's reader cannot keep up). */
typedef struct kreq_carrier_ops {
    void (*abort)(void *carrier, kreq *r, enum kreq_abort why);
    void (*pause)(void *carrier, kreq *r, int on);
    /* The answer to the backend's question `token` (kreq_sink.ask): an
     * option's id, or NULL (cancelled). Optional. */
    void (*answer)(void *carrier, kreq *r, int token, const char *option);
} kreq_carrier_ops;

typedef struct kreq_sink {
    void (*chunk)(void *ud, const char *data, size_t n);
    /* code NULL: success. The request may be freed once this returns. */
    void (*end)(void *ud, const char *code, const char *msg);
    void *ud;
    /* Something the backend reported that is not reply text (an ACP tool
     * call, thought, plan): a JSON object's text, in order with the chunks.
     * May be NULL (nobody wants them). */
    void (*update)(void *ud, const char *json, size_t n);
    /* The backend asks (an ACP permission request: a JSON object's text)
     * and waits for kreq_answer(token). Only for a request with `asks` set;
     * may be NULL then. */
    void (*ask)(void *ud, int token, const char *json, size_t n);
} kreq_sink;

struct kreq {
    kcore *core;
    const char *prompt; /* borrowed from the creator: valid until the request ends */
    size_t prompt_len;
    const char *session; /* a conversation's key (ACP), or NULL; borrowed like the prompt */
    /* The prompt form around the prompt for backends that take a prompt
     * text (JSON Lines, oneshot), or NULL; borrowed like the prompt. */
    const char *pre, *post;
    size_t pre_len, post_len;
    int stream;
    uint64_t timeout_ms, first_chunk_ms, stall_ms; /* 0: none */
    uint64_t t_start, t_activity;
    uint64_t chunks;
    kreq_sink sink;

    /* The carrier that holds the request, told when it must let go. */
    void *carrier;
    const kreq_carrier_ops *ops;
    klist queue; /* in a pool's queue, while it waits for a daemon */
    klist all;   /* in core->requests until it ends */

    uv_timer_t timer;
    int refs;
    unsigned ended : 1, internal : 1; /* internal: a probe, not counted */
    unsigned progressed : 1;          /* the backend sent reply content */
    unsigned paused : 1;              /* its reader asked the carrier to wait */
    unsigned asks : 1;                /* its owner answers the backend's questions */
};

/* The prompt is borrowed, not copied: the creator keeps it valid until the
 * request ends (carriers read it only when it is handed to them). */
kreq *kreq_new(kcore *core, const char *prompt, size_t len, int stream, const kreq_sink *sink);
/* Starts the deadline clock; call once the request is configured. */
void kreq_start(kreq *r);
void kreq_set_carrier(kreq *r, void *carrier, const kreq_carrier_ops *ops);
void kreq_clear_carrier(kreq *r);
/* From the carrier: output and the end. */
void kreq_chunk(kreq *r, const char *data, size_t n);
/* Reply content arrived that the carrier holds back (a reply not streamed):
 * the first-chunk deadline is met and the request is not stalled. */
void kreq_progress(kreq *r);
void kreq_activity(kreq *r);
/* The backend reported something that is not reply text (kreq_sink.update):
 * activity, and handed on to whoever wants it. */
void kreq_update(kreq *r, const char *json, size_t n);
/* The backend asks the owner (kreq_sink.ask); the owner answers. */
void kreq_ask(kreq *r, int token, const char *json, size_t n);
void kreq_answer(kreq *r, int token, const char *option);
void kreq_end(kreq *r, const char *code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* From the owner: stop waiting for this request. */
void kreq_cancel(kreq *r, enum kreq_abort why, const char *code, const char *msg);
/* From the owner: hold the output back (on) or let it flow again. While
 * paused the stall deadline does not run: the silence is the reader's. */
void kreq_pause(kreq *r, int on);
void kreq_ref(kreq *r);
void kreq_unref(kreq *r);
/* Ends every request not yet ended: `cancelled` (the runtime shuts down). */
void kreq_cancel_all(kcore *core, const char *msg);
/* Frees the memory kept for requests to come (the runtime ends). */
void kreq_free_spares(kcore *core);

#endif
