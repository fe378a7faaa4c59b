/* The runtime: one libuv loop, its settings, its pools and live requests. */
#ifndef KIRO_RT_H
#define KIRO_RT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "request.h"

/* The longest duration any option takes: 2^31 - 1 ms (24.8 days). */
#define KIRO_MAX_MS 2147483647
/* The most requests one daemon holds at once (pipeline_depth). */
#define KIRO_MAX_PIPELINE_DEPTH 64

typedef struct kconfig {
    size_t max_line_bytes;
    int pool_min, pool_max, queue_max;
    uint64_t pool_idle_ms;
    uint64_t kill_grace_ms;      /* stdin closed -> SIGTERM -> SIGKILL steps */
    uint64_t drain_ms;           /* a cancelled reply must finish within this */
    uint64_t restart_backoff_ms, restart_backoff_max_ms;
    int restart_max;             /* restarts allowed within restart_window_ms */
    uint64_t restart_window_ms, cooldown_ms;
    int pipeline_depth;          /* requests in flight per daemon (replies in order) */
    uint64_t health_interval_ms; /* process-state checks of every daemon; 0: off */
    uint64_t probe_interval_ms;  /* active probe of an idle daemon; 0: off */
    uint64_t probe_timeout_ms;
    char probe_prompt[256];
    int close_fds;               /* backends get only their pipes (see kproc_opts) */
} kconfig;

typedef struct kstats {
    uint64_t requests, ok, errors, chunks, timeouts, cancelled;
    uint64_t daemon_requests, oneshot_requests;
    uint64_t daemon_starts, daemon_restarts, daemon_start_failures;
    uint64_t health_failures, probes, probe_failures;
} kstats;

/* What a backend is: how to start it and speak to it. */
typedef struct kbackend_spec {
    const char *cli, *model, *protocol;
    const char *const *daemon_args;  /* NULL-terminated */
    const char *const *oneshot_args; /* NULL-terminated */
    const char *const *env;          /* extra KEY=VALUE, NULL-terminated */
} kbackend_spec;

struct kpool;

typedef struct krt {
    uv_loop_t loop_storage;
    uv_loop_t *loop;
    kconfig cfg;
    kstats stats;
    struct kpool *pools;
    struct koneshot *oneshots; /* live oneshot children */
    kreq *requests;
    int nrequests;
    int shutting_down;
    uv_timer_t health; /* one timer checks every pool's daemons */
} krt;

krt *krt_new(void);
/* Ends every request (cancelled) and stops every backend, in order. */
void krt_shutdown(krt *rt);
/* Shuts down, runs the loop until every child is reaped, frees. */
void krt_free(krt *rt);
void krt_track_request(krt *rt, kreq *r);
/* (Re)starts the periodic health check after a configuration change. */
void krt_health_start(krt *rt);
void krt_untrack_request(krt *rt, kreq *r);

/* Serve `r` on the backend's daemon pool, or by a oneshot child. */
void krt_submit_daemon(krt *rt, const kbackend_spec *b, kreq *r);
void krt_submit_oneshot(krt *rt, const kbackend_spec *b, kreq *r);

/* argv: cli, args..., [--model M], NULL. env: environ + extras + overrides. */
char **kbackend_argv(const char *cli, const char *const *args, const char *model);
char **kbackend_env(const char *const *extra, int plain_terminal);
void kstrv_free(char **v);

#endif
