#include "rt.h"

#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "log.h"
#include "oneshot.h"
#include "pool.h"

extern char **environ;

static const kconfig config_defaults = {
    .max_line_bytes = 16u << 20,
    .pool_min = 1,
    .pool_max = 4,
    .queue_max = 1024,
    .pool_idle_ms = 300000,
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
};

krt *krt_new(void)
{
    krt *r = kcalloc(1, sizeof *r);
    r->loop = &r->loop_storage;
    if (uv_loop_init(r->loop) != 0) {
        free(r);
        return NULL;
    }
    r->cfg = config_defaults;
    uv_timer_init(r->loop, &r->health);
    r->health.data = r;
    uv_unref((uv_handle_t *)&r->health); /* never keeps the loop alive */
    return r;
}

void krt_track_request(krt *rt, kreq *r)
{
    r->all_prev = NULL;
    r->all_next = rt->requests;
    if (rt->requests)
        rt->requests->all_prev = r;
    rt->requests = r;
    rt->nrequests++;
}

void krt_untrack_request(krt *rt, kreq *r)
{
    if (r->all_prev)
        r->all_prev->all_next = r->all_next;
    else
        rt->requests = r->all_next;
    if (r->all_next)
        r->all_next->all_prev = r->all_prev;
    r->all_next = r->all_prev = NULL;
    rt->nrequests--;
}

void krt_shutdown(krt *rt)
{
    if (rt->shutting_down)
        return;
    rt->shutting_down = 1;
    while (rt->requests)
        kreq_cancel(rt->requests, KABORT_SHUTDOWN, KERR_CANCELLED, "runtime shutting down");
    uv_timer_stop(&rt->health);
    while (rt->pools)
        kpool_free(rt->pools);
}

static void on_health(uv_timer_t *t)
{
    krt *rt = t->data;
    for (kpool *p = rt->pools; p; p = kpool_next(p))
        kpool_health_check(p);
    koneshot_health_check(rt);
    if (rt->cfg.health_interval_ms)
        uv_timer_start(&rt->health, on_health, rt->cfg.health_interval_ms, 0);
}

void krt_health_start(krt *rt)
{
    if (rt->cfg.health_interval_ms && !uv_is_active((uv_handle_t *)&rt->health))
        uv_timer_start(&rt->health, on_health, rt->cfg.health_interval_ms, 0);
}

static void walk_close(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        klog(KLOG_ERROR, "kiro.rt", "handle of type %s still open at close", uv_handle_type_name(h->type));
}

void krt_free(krt *rt)
{
    krt_shutdown(rt);
    uv_close((uv_handle_t *)&rt->health, NULL);
    /* Children get their stop sequence; this ends once all are reaped. A
     * uv_stop() left over from a callback only cuts one run short. */
    while (uv_run(rt->loop, UV_RUN_DEFAULT) != 0)
        ;
    if (uv_loop_close(rt->loop) != 0) {
        uv_walk(rt->loop, walk_close, NULL);
        return; /* leak rather than free memory libuv still points at */
    }
    free(rt);
}

static int refuse_when_closing(krt *rt, kreq *r)
{
    if (!rt->shutting_down)
        return 0;
    kreq_end(r, KERR_CLOSED, "runtime is shutting down");
    return 1;
}

void krt_submit_daemon(krt *rt, const kbackend_spec *b, kreq *r)
{
    if (refuse_when_closing(rt, r))
        return;
    rt->stats.daemon_requests++;
    kpool_submit(kpool_get(rt, b), r);
    krt_health_start(rt);
}

void krt_submit_oneshot(krt *rt, const kbackend_spec *b, kreq *r)
{
    if (refuse_when_closing(rt, r))
        return;
    rt->stats.oneshot_requests++;
    koneshot_start(rt, b, r);
    krt_health_start(rt);
}

static size_t strv_len(const char *const *v)
{
    size_t n = 0;
    while (v && v[n])
        n++;
    return n;
}

char **kbackend_argv(const char *cli, const char *const *args, const char *model)
{
    size_t n = strv_len(args), i = 0;
    char **v = kcalloc(n + 4, sizeof *v);
    v[i++] = kstrdup(cli);
    for (size_t k = 0; k < n; k++)
        v[i++] = kstrdup(args[k]);
    if (model && *model) {
        v[i++] = kstrdup("--model");
        v[i++] = kstrdup(model);
    }
    return v;
}

static int same_key(const char *a, const char *b)
{
    const char *ea = strchr(a, '='), *eb = strchr(b, '=');
    size_t la = ea ? (size_t)(ea - a) : strlen(a), lb = eb ? (size_t)(eb - b) : strlen(b);
    return la == lb && memcmp(a, b, la) == 0;
}

static void env_put(char **v, size_t *n, const char *kv)
{
    for (size_t i = 0; i < *n; i++)
        if (same_key(v[i], kv)) {
            free(v[i]);
            v[i] = kstrdup(kv);
            return;
        }
    v[(*n)++] = kstrdup(kv);
}

char **kbackend_env(const char *const *extra, int plain_terminal)
{
    size_t base = strv_len((const char *const *)environ), ne = strv_len(extra), n = 0;
    char **v = kcalloc(base + ne + 3, sizeof *v);
    for (size_t i = 0; i < base; i++)
        env_put(v, &n, environ[i]);
    for (size_t i = 0; i < ne; i++)
        env_put(v, &n, extra[i]);
    if (plain_terminal) {
        env_put(v, &n, "NO_COLOR=1");
        env_put(v, &n, "TERM=dumb");
    }
    return v;
}

void kstrv_free(char **v)
{
    if (!v)
        return;
    for (size_t i = 0; v[i]; i++)
        free(v[i]);
    free(v);
}
