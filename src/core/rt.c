#include "rt.h"

#include <stdio.h>
#include <stdlib.h>

#include "buf.h"
#include "log.h"
#include "os.h"
#include "oneshot.h"

static const kconfig config_defaults = {
    .max_line_bytes = 16u << 20,
    .pool_min = 1,
    .pool_max = 4,
    .queue_max = 1024,
    .pool_idle_ms = 300000,
    .max_backends = 64,
    .kill_grace_ms = 2000,
    .drain_ms = 5000,
    .restart_backoff_ms = 100,
    .restart_backoff_max_ms = 30000,
    .restart_max = 5,
    .restart_window_ms = 60000,
    .cooldown_ms = 60000,
    .pipeline_depth = 1,
    .health_interval_ms = 1000,
    .probe_interval_ms = 0,
    .probe_timeout_ms = 5000,
    .probe_prompt = "ping",
    .close_fds = 1,
    .timeout_ms = 600000,
    .first_chunk_timeout_ms = 120000,
    .stall_timeout_ms = 120000,
    .session_max = 64,
    .session_idle_ms = 1800000,
};

const kconfig *krt_defaults(void)
{
    return &config_defaults;
}

krt *krt_new(void)
{
    krt *rt = kcalloc(1, sizeof *rt);
    rt->core.loop = &rt->loop_storage;
    if (uv_loop_init(rt->core.loop) != 0) {
        free(rt);
        return NULL;
    }
    rt->core.cfg = config_defaults;
    klist_init(&rt->core.requests);
    klist_init(&rt->core.spare_requests);
    klist_init(&rt->core.oneshots);
    kbackends_init(&rt->backends, &rt->core);
    uv_timer_init(rt->core.loop, &rt->health);
    rt->health.data = rt;
    uv_unref((uv_handle_t *)&rt->health); /* never keeps the loop alive */
    return rt;
}

void krt_shutdown(krt *rt, int reopen)
{
    if (!rt->shutting_down) {
        rt->shutting_down = 1;
        kreq_cancel_all(&rt->core, "runtime shutting down");
        if (rt->http) { /* its connections go too; a new client comes on demand */
            khttp_end_all(rt->http, "runtime shutting down");
            khttp_free(rt->http);
            rt->http = NULL;
        }
        if (rt->ws) { /* its connections end (closed, 1001) */
            kws_free(rt->ws, "runtime shutting down");
            rt->ws = NULL;
        }
        uv_timer_stop(&rt->health);
        kbackends_close_pools(&rt->backends, "runtime shutting down");
    }
    if (reopen)
        rt->shutting_down = 0;
}

static void on_health(uv_timer_t *t)
{
    krt *rt = t->data;
    kbackends_health_check(&rt->backends);
    koneshot_health_check(&rt->core);
    if (rt->core.cfg.health_interval_ms)
        uv_timer_start(&rt->health, on_health, rt->core.cfg.health_interval_ms, 0);
}

void krt_health_start(krt *rt)
{
    /* Re-armed with the interval as configured now: a shorter one takes
     * effect at once, 0 stops the checks. */
    uv_timer_stop(&rt->health);
    if (rt->core.cfg.health_interval_ms && !rt->shutting_down)
        uv_timer_start(&rt->health, on_health, rt->core.cfg.health_interval_ms, 0);
}

static void walk_close(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        klog(KLOG_ERROR, "kiro.rt", "handle of type %s still open at close", uv_handle_type_name(h->type));
}

void krt_free(krt *rt)
{
    krt_shutdown(rt, 0);
    kbackends_free(&rt->backends);
    kreq_free_spares(&rt->core);
    if (rt->http) { /* one made after a shutdown that may be reopened */
        khttp_free(rt->http);
        rt->http = NULL;
    }
    if (rt->ws) {
        kws_free(rt->ws, "runtime shutting down");
        rt->ws = NULL;
    }
    uv_close((uv_handle_t *)&rt->health, NULL);
    /* Children get their stop sequence; this ends once all are reaped. A
     * uv_stop() left over from a callback only cuts one run short. */
    kos_sigpipe g;
    kos_sigpipe_hold(&g);
    while (uv_run(rt->core.loop, UV_RUN_DEFAULT) != 0)
        ;
    kos_sigpipe_release(&g);
    if (uv_loop_close(rt->core.loop) != 0) {
        uv_walk(rt->core.loop, walk_close, NULL);
        return; /* leak rather than free memory libuv still points at */
    }
    free(rt);
}

khttp *krt_http(krt *rt, char *err, size_t errlen)
{
    if (rt->shutting_down) {
        snprintf(err, errlen, "runtime is shutting down");
        return NULL;
    }
    if (!rt->http)
        rt->http = khttp_new(rt->core.loop, err, errlen);
    return rt->http;
}

kws *krt_ws(krt *rt, char *err, size_t errlen)
{
    if (rt->shutting_down) {
        snprintf(err, errlen, "runtime is shutting down");
        return NULL;
    }
    if (!rt->ws)
        rt->ws = kws_new(rt->core.loop, err, errlen);
    return rt->ws;
}

void krt_submit(krt *rt, kbackend *b, int oneshot, kreq *r)
{
    if (rt->shutting_down) {
        kreq_end(r, KERR_CLOSED, "runtime is shutting down");
        return;
    }
    if (oneshot)
        kbackend_submit_oneshot(b, r);
    else
        kbackend_submit_daemon(b, r);
    krt_health_start(rt);
}
