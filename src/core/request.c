#include "request.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "log.h"

/* Requests whose memory can be used again, their timer still initialised:
 * closing a handle costs a turn of the loop (a poll that cannot block), so
 * a request that ends does not close its timer while the cache has room. */
#define KREQ_CACHE 64

kreq *kreq_new(kcore *core, const char *prompt, size_t len, int stream, const kreq_sink *sink)
{
    kreq *r = klist_first(&core->spare_requests, kreq, all);
    if (r) {
        klist_remove(&r->all);
        core->nspare--;
        uv_timer_t timer = r->timer;
        memset(r, 0, sizeof *r);
        r->timer = timer;
    } else {
        r = kcalloc(1, sizeof *r);
        uv_timer_init(core->loop, &r->timer);
    }
    r->timer.data = r;
    r->core = core;
    r->prompt = prompt;
    r->prompt_len = len;
    r->stream = stream;
    r->sink = *sink;
    r->refs = 2; /* the owner's, and the core's until the request ends */
    klist_init(&r->queue);
    klist_insert_tail(&core->requests, &r->all);
    core->nrequests++;
    return r;
}

void kreq_cancel_all(kcore *core, const char *msg)
{
    kreq *r;
    while ((r = klist_first(&core->requests, kreq, all)))
        kreq_cancel(r, KABORT_SHUTDOWN, KERR_CANCELLED, msg);
}

/* Deadlines are checked lazily: activity only moves a timestamp, and the
 * timer, when it fires early, re-arms for what is left. */
static uint64_t next_deadline(const kreq *r, const char **why, uint64_t *limit)
{
    uint64_t best = 0;
#define CONSIDER(when, name, lim) \
    do {                          \
        uint64_t w_ = (when);     \
        if (!best || w_ < best) { \
            best = w_;            \
            *why = (name);        \
            *limit = (lim);       \
        }                         \
    } while (0)
    if (r->timeout_ms)
        CONSIDER(r->t_start + r->timeout_ms, "timeout_ms", r->timeout_ms);
    if (r->first_chunk_ms && !r->progressed)
        CONSIDER(r->t_start + r->first_chunk_ms, "first_chunk_timeout_ms", r->first_chunk_ms);
    /* The stall clock runs while a backend holds the request: one waiting
     * in a pool's queue has nobody to stall. */
    if (r->stall_ms && r->ops && !klist_linked(&r->queue) && !r->paused)
        CONSIDER(r->t_activity + r->stall_ms, "stall_timeout_ms", r->stall_ms);
#undef CONSIDER
    return best;
}

static void on_deadline(uv_timer_t *t)
{
    kreq *r = t->data;
    const char *why = "timeout_ms";
    uint64_t limit = 0, now = uv_now(r->core->loop);
    uint64_t d = next_deadline(r, &why, &limit);
    if (!d)
        return;
    if (d > now) {
        uv_timer_start(&r->timer, on_deadline, d - now, 0);
        return;
    }
    char msg[160];
    if (strcmp(why, "stall_timeout_ms") == 0)
        snprintf(msg, sizeof msg, "backend sent nothing for %llu ms (stall_timeout_ms)",
                 (unsigned long long)limit);
    else
        snprintf(msg, sizeof msg, "no %s within %llu ms (%s)",
                 strcmp(why, "timeout_ms") == 0 ? "complete reply" : "first chunk", (unsigned long long)limit,
                 why);
    r->core->stats.timeouts++;
    kreq_cancel(r, KABORT_TIMEOUT, KERR_TIMEOUT, msg);
}

static void rearm(kreq *r)
{
    const char *why;
    uint64_t limit, d = next_deadline(r, &why, &limit), now = uv_now(r->core->loop);
    if (!d)
        uv_timer_stop(&r->timer);
    else
        uv_timer_start(&r->timer, on_deadline, d > now ? d - now : 0, 0);
}

void kreq_start(kreq *r)
{
    r->t_start = uv_now(r->core->loop);
    rearm(r);
}

void kreq_set_carrier(kreq *r, void *carrier, const kreq_carrier_ops *ops)
{
    r->carrier = carrier;
    r->ops = ops;
    r->t_activity = uv_now(r->core->loop);
    if (r->paused && ops->pause)
        ops->pause(carrier, r, 1);
    if (r->stall_ms)
        rearm(r);
}

void kreq_clear_carrier(kreq *r)
{
    r->carrier = NULL;
    r->ops = NULL;
}

void kreq_pause(kreq *r, int on)
{
    on = !!on;
    if (r->ended || r->paused == (unsigned)on)
        return;
    r->paused = (unsigned)on;
    if (!on) {
        r->t_activity = uv_now(r->core->loop); /* the stall clock starts again */
        rearm(r);
    }
    if (r->ops && r->ops->pause)
        r->ops->pause(r->carrier, r, on);
}

void kreq_activity(kreq *r)
{
    r->t_activity = uv_now(r->core->loop);
}

void kreq_update(kreq *r, const char *json, size_t n)
{
    if (r->ended)
        return;
    kreq_activity(r);
    if (r->sink.update)
        r->sink.update(r->sink.ud, json, n);
}

void kreq_ask(kreq *r, int token, const char *json, size_t n)
{
    if (r->ended)
        return;
    kreq_activity(r);
    if (r->sink.ask)
        r->sink.ask(r->sink.ud, token, json, n);
}

void kreq_answer(kreq *r, int token, const char *option)
{
    if (!r->ended && r->carrier && r->ops->answer)
        r->ops->answer(r->carrier, r, token, option);
}

void kreq_progress(kreq *r)
{
    r->t_activity = uv_now(r->core->loop);
    if (!r->progressed) {
        r->progressed = 1;
        rearm(r); /* the first-chunk deadline is met */
    }
}

void kreq_chunk(kreq *r, const char *data, size_t n)
{
    if (r->ended)
        return;
    kreq_progress(r);
    r->chunks++;
    if (!r->internal)
        r->core->stats.chunks++;
    if (r->sink.chunk)
        r->sink.chunk(r->sink.ud, data, n);
}

static void end_now(kreq *r, const char *code, const char *msg)
{
    assert(!r->ended); /* every request ends exactly once */
    r->ended = 1;
    r->prompt = NULL; /* borrowed until now */
    uv_timer_stop(&r->timer);
    kreq_clear_carrier(r);
    assert(klist_linked(&r->all) && !klist_linked(&r->queue));
    klist_remove(&r->all);
    r->core->nrequests--;
    if (r->internal)
        ;
    else if (code)
        r->core->stats.errors++;
    else
        r->core->stats.ok++;
    if (r->sink.end)
        r->sink.end(r->sink.ud, code, msg);
    kreq_unref(r);
}

void kreq_end(kreq *r, const char *code, const char *fmt, ...)
{
    char msg[1024] = "";
    if (r->ended)
        return;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
    }
    end_now(r, code, code ? msg : NULL);
}

void kreq_cancel(kreq *r, enum kreq_abort why, const char *code, const char *msg)
{
    if (r->ended)
        return;
    void *carrier = r->carrier;
    const kreq_carrier_ops *ops = r->ops;
    kreq_clear_carrier(r);
    if (ops)
        ops->abort(carrier, r, why);
    end_now(r, code, msg);
}

void kreq_ref(kreq *r)
{
    r->refs++;
}

static void on_timer_closed(uv_handle_t *h)
{
    free(h->data);
}

void kreq_unref(kreq *r)
{
    assert(r->refs > 0);
    if (--r->refs > 0)
        return;
    kcore *core = r->core;
    if (core->nspare < KREQ_CACHE && !core->closing) {
        uv_timer_stop(&r->timer);
        klist_insert_head(&core->spare_requests, &r->all);
        core->nspare++;
        return;
    }
    uv_close((uv_handle_t *)&r->timer, on_timer_closed);
}

void kreq_free_spares(kcore *core)
{
    kreq *r;
    core->closing = 1;
    while ((r = klist_first(&core->spare_requests, kreq, all))) {
        klist_remove(&r->all);
        core->nspare--;
        uv_close((uv_handle_t *)&r->timer, on_timer_closed);
    }
}
