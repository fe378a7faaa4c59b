/* A backend wire protocol over JSON Lines framing. The daemon connection
 * (daemon.c) only frames lines and drives requests; what a request looks like
 * on the wire and what a reply line means is the protocol's business: the
 * seed's JSON Lines (proto_jsonl.c) and the Agent Client Protocol, JSON-RPC
 * 2.0 (proto_acp.c), plug in here without touching the pool, the policy or
 * the Lua face.
 *
 * Requests are answered in the order they were sent: a protocol that keeps
 * ids and sessions (ACP) serves one turn at a time and queues the rest, so
 * each reply still belongs to the oldest request on the wire. */
#ifndef KIRO_PROTO_H
#define KIRO_PROTO_H

#include <stddef.h>
#include "buf.h"

enum { KPROTO_DONE_ABSENT = -1, KPROTO_DONE_FALSE = 0, KPROTO_DONE_TRUE = 1 };

typedef struct kproto_sink {
    void *ud;
    /* A reply line: its content (n == 0 when absent) and the `done` flag as
     * sent (KPROTO_DONE_ABSENT: the whole reply in one line). */
    void (*reply)(void *ud, const char *content, size_t n, int done);
    /* The backend ended the request with an error: its code (NULL:
     * "backend") and message. */
    void (*error)(void *ud, const char *code, const char *msg);
    /* A line that is not part of the protocol (banners, stray output). */
    void (*noise)(void *ud, const char *line, size_t n, const char *why);
    /* A line that is in the protocol but wrong (a field of the wrong type):
     * nothing it says can be trusted, and the connection is replaced. */
    void (*violation)(void *ud, const char *why, const char *line, size_t n);
    /* Bytes the protocol sends on its own: answers to the backend's own
     * requests, the next step of a turn. */
    void (*write)(void *ud, const char *data, size_t n);
    /* A line in the protocol that is no reply (a handshake's answer, an
     * update, a request from the backend): the backend is alive and busy. */
    void (*alive)(void *ud);
    /* For the request being answered: something that is not reply text
     * (kreq_update), as a JSON object's text. */
    void (*update)(void *ud, const char *json, size_t n);
    /* Does the request being answered answer the backend's questions
     * itself? If so, ask(token, the question's JSON), and the answer comes
     * back through kproto_ops.answer. */
    int (*asks)(void *ud);
    void (*ask)(void *ud, int token, const char *json, size_t n);
} kproto_sink;

/* One request, as a protocol encodes it. */
typedef struct kproto_req {
    const char *prompt;
    size_t len;
    /* The prompt form around it (kiro's template, e.g. "User: " and
     * "\n\nAssistant: "), for protocols that take a prompt text (JSON Lines);
     * an ACP agent takes the user's text as it is. Empty when none. */
    const char *pre, *post;
    size_t pre_len, post_len;
    int stream;
    const char *session; /* a conversation's key, or NULL */
} kproto_req;

typedef struct kproto_ops {
    const char *name;
    /* The bytes to send when the backend starts (a handshake). May be NULL. */
    void (*start)(void *state, kbuf *out);
    /* Appends the bytes of one request to `out` (none, when the protocol
     * sends it later). Returns 0, or -1 with *err set to a static message
     * when the request cannot be carried. */
    int (*encode)(void *state, const kproto_req *q, kbuf *out, const char **err);
    /* Whether it keeps conversations (kproto_req.session). */
    int conversations;
    void (*decode)(void *state, const char *line, size_t len, const kproto_sink *sink);
    /* The request `pos` places behind the oldest on the wire is abandoned
     * (cancelled, timed out): appends what tells the backend, if anything.
     * Its reply still ends in order, read and dropped. Returns 1 when that
     * end must come from the backend (which drain_ms then bounds), 0 when
     * the protocol ends it itself. May be NULL (the backend cannot be told:
     * its reply runs out unread, within drain_ms). */
    int (*abandon)(void *state, int pos, kbuf *out);
    /* The answer to question `token` (an option's id, or NULL: cancelled):
     * appends what tells the backend. May be NULL (a protocol that never
     * asks). */
    void (*answer)(void *state, int token, const char *option, kbuf *out);
    /* The conversation `session` is over: the protocol forgets it. May be
     * NULL (a protocol without sessions). */
    void (*forget)(void *state, const char *session);
    /* Per-connection state, for protocols that keep sessions (may be NULL).
     * model: one the protocol itself chooses in each session (ACP's
     * session/set_model), or NULL (the backend's argv says, or its default). */
    void *(*state_new)(const char *model);
    void (*state_free)(void *state);
} kproto_ops;

extern const kproto_ops kproto_jsonl;
extern const kproto_ops kproto_acp;

const kproto_ops *kproto_find(const char *name);

#endif
