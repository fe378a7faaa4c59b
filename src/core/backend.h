/* A backend: how to start one CLI and speak to it (path, model, arguments,
 * protocol, environment) as an object of its own. It is found or created
 * once, by a key computed once, and owns the pool of daemons that serve it.
 *
 * Ownership: whoever names a backend (a Lua handle) holds a reference. One
 * that nobody holds keeps its pool warm for pool_idle_ms, in case it is
 * named again, and then stops its daemons and goes, once no request waits
 * on it. At most max_backends exist at once: past that, the one unused the
 * longest goes at once, and if every one is in use the new one is refused. */
#ifndef KIRO_BACKEND_H
#define KIRO_BACKEND_H

#include "core.h"
#include "pool.h"
#include "request.h"

/* A setting a backend makes its own over the runtime's: `size` bytes at
 * `offset` in kconfig (a pool's or a request's setting; see
 * kbackend_config). */
typedef struct kbackend_setting {
    size_t offset, size;
    const void *value;
} kbackend_setting;

typedef struct kbackend_spec {
    const char *cli, *model, *protocol; /* protocol: jsonl, acp, or auto */
    const char *const *daemon_args;     /* NULL-terminated */
    const char *const *acp_args;        /* auto: an ACP agent's, for a CLI with no `daemon` */
    int session_model; /* ACP agents get the model per session (session/set_model), not --model */
    const char *const *oneshot_args;  /* NULL-terminated */
    const char *const *env;           /* extra KEY=VALUE, NULL-terminated */
    const kbackend_setting *settings; /* its own, over the runtime's, in one order every caller keeps */
    size_t nsettings;
} kbackend_spec;

typedef struct kbackend kbackend;

/* Every backend of a runtime. */
typedef struct kbackends {
    kcore *core;
    klist all; /* kbackend.link */
    int count;
    int peak; /* the most alive at once */
} kbackends;

void kbackends_init(kbackends *set, kcore *core);
/* Found or created, and held (one reference for the caller). NULL with a
 * message when max_backends are in use, or the protocol is unknown.
 * Protocol auto: daemon_args with JSON Lines, and where the CLI has no such
 * subcommand (its daemon exits with status 2 before answering), acp_args
 * with ACP; what worked is remembered while the backend lives. */
kbackend *kbackend_get(kbackends *set, const kbackend_spec *spec, char *err, size_t errlen);
void kbackend_ref(kbackend *b);
void kbackend_unref(kbackend *b);
/* Its settings: the runtime's, with its own over them. */
const kconfig *kbackend_config(const kbackend *b);
/* The runtime's settings changed: every backend's follow, its own kept. */
void kbackends_configure(kbackends *set);
/* Nobody will name it again (a configuration no longer has it): once no
 * reference holds it and no request waits on it, it goes at once, not
 * after pool_idle_ms. */
void kbackend_retire(kbackend *b);
/* What tells it apart from every other backend: all its fields. */
const char *kbackend_key(const kbackend *b, size_t *len);
/* Its key hashed short: what its pools show as their backend. */
const char *kbackend_tag(const kbackend *b);
/* Serves r on its pool of daemons (started now if need be), or by a child
 * of its own. */
void kbackend_submit_daemon(kbackend *b, kreq *r);
void kbackend_submit_oneshot(kbackend *b, kreq *r);
/* Its pool starts now, with pool_min daemons, before any request. */
void kbackend_warm(kbackend *b);

/* Every pool stops; what waits ends with msg. Backends stay, and get pools
 * again on demand. */
void kbackends_close_pools(kbackends *set, const char *msg);
/* Frees every backend, held or not (the runtime ends). */
void kbackends_free(kbackends *set);
void kbackends_health_check(kbackends *set);
/* Calls fn for each backend that has a pool. */
void kbackends_each_pool(kbackends *set, void (*fn)(void *ud, const kpool *p), void *ud);

#endif
