/* What every part of the core shares: the loop, the settings, the counters,
 * the requests in flight and the oneshot children. The runtime (rt.c) owns
 * it; the parts below it (requests, daemons, pools, oneshots, backends) are
 * handed a pointer and never see the runtime itself. */
#ifndef KIRO_CORE_H
#define KIRO_CORE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "list.h"

/* The longest duration any option takes: 2^31 - 1 ms (24.8 days). */
#define KIRO_MAX_MS 2147483647
/* The most requests one daemon holds at once (pipeline_depth). */
#define KIRO_MAX_PIPELINE_DEPTH 64

typedef struct kconfig {
    size_t max_line_bytes;
    int pool_min, pool_max, queue_max;
    uint64_t pool_idle_ms;  /* an idle daemon above pool_min, or an unused backend's pool */
    int max_backends;       /* backends (and so pools) alive at once */
    uint64_t kill_grace_ms; /* stdin closed -> SIGTERM -> SIGKILL steps */
    uint64_t drain_ms;      /* a cancelled reply must finish within this */
    uint64_t restart_backoff_ms, restart_backoff_max_ms;
    int restart_max; /* restarts allowed within restart_window_ms */
    uint64_t restart_window_ms, cooldown_ms;
    int pipeline_depth;          /* requests in flight per daemon (replies in order) */
    uint64_t health_interval_ms; /* process-state checks of every daemon; 0: off */
    uint64_t probe_interval_ms;  /* active probe of an idle daemon; 0: off */
    uint64_t probe_timeout_ms;
    char probe_prompt[256];
    int close_fds; /* backends get only their pipes (see kproc_opts) */
    /* A request's limits unless it sets its own (0: none): the whole reply,
     * the first chunk, and the longest silence while output is awaited. */
    uint64_t timeout_ms, first_chunk_timeout_ms, stall_timeout_ms;
    int session_max;          /* conversations (opts.session) a pool keeps */
    uint64_t session_idle_ms; /* a conversation unused this long is over */
} kconfig;

typedef struct kstats {
    uint64_t requests, ok, errors, chunks, timeouts, cancelled;
    uint64_t daemon_requests, oneshot_requests;
    uint64_t daemon_starts, daemon_restarts, daemon_start_failures;
    uint64_t health_failures, probes, probe_failures;
    uint64_t acp_requests;        /* daemon requests that were ACP turns */
    uint64_t auth_failures;       /* requests an agent refused for want of credentials */
    uint64_t permission_requests; /* permission requests from agents */
    uint64_t permission_defaults; /* ...answered by the default (reject), no hook asked */
} kstats;

typedef struct kcore {
    uv_loop_t *loop;
    kconfig cfg;
    kstats stats;
    klist requests; /* kreq.all: every request not yet ended */
    int nrequests;
    klist spare_requests; /* kreq.all: ended and freed, kept for reuse */
    int nspare;
    int closing;    /* the runtime is being freed: nothing is kept for reuse */
    klist oneshots; /* koneshot.link: live oneshot children */
} kcore;

#endif
