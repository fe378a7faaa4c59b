/* A backend wire protocol over JSON Lines framing. The daemon connection
 * (daemon.c) only frames lines and drives requests; what a request looks like
 * on the wire and what a reply line means is the protocol's business, so a
 * second protocol (the Agent Client Protocol, JSON-RPC 2.0) plugs in here
 * without touching the pool, the policy or the Lua face. */
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
    /* The backend ended the request with an error message. */
    void (*error)(void *ud, const char *msg);
    /* A line that is not part of the protocol (banners, stray output). */
    void (*noise)(void *ud, const char *line, size_t n, const char *why);
    /* A line that is in the protocol but wrong (a field of the wrong type):
     * nothing it says can be trusted, and the connection is replaced. */
    void (*violation)(void *ud, const char *why, const char *line, size_t n);
} kproto_sink;

typedef struct kproto_ops {
    const char *name;
    /* Appends the bytes of one request to `out`. Returns 0, or -1 with *err
     * set to a static message when the prompt cannot be carried. */
    int (*encode)(void *state, const char *prompt, size_t len, int stream, kbuf *out, const char **err);
    void (*decode)(void *state, const char *line, size_t len, const kproto_sink *sink);
    /* Per-connection state, for protocols that keep sessions (may be NULL). */
    void *(*state_new)(void);
    void (*state_free)(void *state);
} kproto_ops;

extern const kproto_ops kproto_jsonl;

const kproto_ops *kproto_find(const char *name);

#endif
