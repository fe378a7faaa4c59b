/* kiro.core: the private C face under lua/kiro/init.lua. It exposes requests
 * with callbacks, timers and one loop step; the Lua face turns these into
 * coroutine-friendly calls. Callbacks run on the Lua thread that is driving
 * the loop at that moment (the one inside step()), never on a stored one. */
#include <lauxlib.h>
#include <limits.h>
#include <lua.h>
#include <stddef.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"
#include "pool.h"
#include "proc.h"
#include "proto.h"
#include "rt.h"
#include "version.h"
#include "lkiro.h"

#define RT_MT "kiro.runtime"
#define REQ_MT "kiro.request"
#define TIMER_MT "kiro.timer"
#define BACKEND_MT "kiro.backend"

typedef struct lreq {
    lrt *lrt;
    kreq *r;
    int ctx;    /* the caller's value handed to the dispatcher */
    int prompt; /* the prompt the request borrows, anchored until it ends */
} lreq;

typedef struct ltimer_state {
    uv_timer_t t;
    lrt *lrt;
    int cb;
    int live;
} ltimer_state;

typedef struct ltimer {
    ltimer_state *s;
} ltimer;

int lkiro_fail(lua_State *L, const char *msg)
{
    lua_pushnil(L);
    lua_pushstring(L, msg);
    return 2;
}

lrt *get_lrt(lua_State *L)
{
    lrt *x = lua_touserdata(L, lua_upvalueindex(1));
    if (!x->rt)
        luaL_error(L, "kiro runtime is closed");
    x->L = L;
    return x;
}

/* Calls the function on top of the stack with nargs arguments below it,
 * keeping the first error for step() to raise. */
void call_cb(lrt *x, int nargs)
{
    lua_State *L = x->L;
    /* Lua has news: make the current step() return instead of blocking in
     * poll (UV_RUN_ONCE runs due timers before it polls, then would sleep). */
    uv_stop(x->rt->loop);
    if (lua_pcall(L, nargs, 0, 0) != LUA_OK) {
        if (x->err_ref == LUA_NOREF)
            x->err_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        else
            lua_pop(L, 1);
    }
}

int raise_pending(lua_State *L, lrt *x)
{
    if (x->err_ref == LUA_NOREF)
        return 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, x->err_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, x->err_ref);
    x->err_ref = LUA_NOREF;
    return lua_error(L);
}

/* ---- backends ---------------------------------------------------------- */

/* A backend: how to start a CLI and speak to it. Built once per
 * configuration by the Lua face and named by every request. */
typedef struct lbackend {
    kbackend_spec spec;
    char **strings; /* everything spec points into, freed at __gc */
} lbackend;

static char **strv_copy_table(lua_State *L, int t, const char *k, int map)
{
    lua_getfield(L, t, k);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return NULL;
    }
    if (!lua_istable(L, -1))
        luaL_error(L, "backend: %s must be a table", k);
    int src = lua_gettop(L);
    size_t n = 0;
    if (map) {
        lua_pushnil(L);
        while (lua_next(L, src)) {
            if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
                luaL_error(L, "backend: %s: names and values must be strings", k);
            n++;
            lua_pop(L, 1);
        }
    } else {
        n = lua_rawlen(L, src);
        for (size_t i = 1; i <= n; i++) {
            if (lua_rawgeti(L, src, (lua_Integer)i) != LUA_TSTRING)
                luaL_error(L, "backend: %s[%d] must be a string", k, (int)i);
            lua_pop(L, 1);
        }
    }
    /* Checked first, allocated after: no luaL_error with memory in hand. */
    char **v = kcalloc(n + 1, sizeof *v);
    size_t i = 0;
    if (map) {
        lua_pushnil(L);
        while (lua_next(L, src)) {
            size_t kl, vl;
            const char *key = lua_tolstring(L, -2, &kl), *val = lua_tolstring(L, -1, &vl);
            v[i] = kmalloc(kl + vl + 2);
            memcpy(v[i], key, kl);
            v[i][kl] = '=';
            memcpy(v[i] + kl + 1, val, vl + 1);
            i++;
            lua_pop(L, 1);
        }
    } else {
        for (; i < n; i++) {
            lua_rawgeti(L, src, (lua_Integer)i + 1);
            v[i] = kstrdup(lua_tostring(L, -1));
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    return v;
}

static const char *opt_str(lua_State *L, int t, const char *k, const char *def)
{
    lua_getfield(L, t, k);
    int ty = lua_type(L, -1);
    if (ty != LUA_TNIL && ty != LUA_TSTRING)
        luaL_error(L, "backend: %s must be a string", k);
    const char *s = ty == LUA_TNIL ? def : lua_tostring(L, -1);
    lua_pop(L, 1); /* the spec table keeps the string alive */
    return s;
}

static int backend_gc(lua_State *L)
{
    lbackend *b = luaL_checkudata(L, 1, BACKEND_MT);
    kstrv_free((char **)b->spec.daemon_args);
    kstrv_free((char **)b->spec.oneshot_args);
    kstrv_free((char **)b->spec.env);
    kstrv_free(b->strings);
    memset(b, 0, sizeof *b);
    return 0;
}

/* core.backend{ cli=, model=, protocol=, daemon_args=, oneshot_args=, env= } */
static int l_backend(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    const char *cli = opt_str(L, 1, "cli", NULL);
    const char *model = opt_str(L, 1, "model", NULL);
    const char *protocol = opt_str(L, 1, "protocol", "jsonl");
    if (!cli || !*cli)
        return luaL_error(L, "backend: cli is required");
    if (!kproto_find(protocol))
        return luaL_error(L, "backend: unknown protocol '%s'", protocol);
    lbackend *b = lua_newuserdatauv(L, sizeof *b, 0);
    memset(b, 0, sizeof *b);
    luaL_setmetatable(L, BACKEND_MT);
    b->spec.daemon_args = (const char *const *)strv_copy_table(L, 1, "daemon_args", 0);
    b->spec.oneshot_args = (const char *const *)strv_copy_table(L, 1, "oneshot_args", 0);
    b->spec.env = (const char *const *)strv_copy_table(L, 1, "env", 1);
    b->strings = kcalloc(4, sizeof *b->strings);
    b->strings[0] = kstrdup(cli);
    b->strings[1] = kstrdup(protocol);
    b->strings[2] = model ? kstrdup(model) : NULL;
    b->spec.cli = b->strings[0];
    b->spec.protocol = b->strings[1];
    b->spec.model = b->strings[2];
    if (!model) /* keep kstrv_free's NULL terminator after cli and protocol */
        b->strings[2] = NULL;
    return 1;
}

/* ---- requests ---------------------------------------------------------- */

/* Events go to one dispatcher, set by core.on_event(fn): fn(ctx, "chunk",
 * data) and, last, fn(ctx, "end", code, message) (code nil on success). */
static void push_dispatch(lrt *x, lreq *q, const char *ev)
{
    lua_State *L = x->L;
    luaL_checkstack(L, 6, NULL);
    lua_rawgeti(L, LUA_REGISTRYINDEX, x->dispatch_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, q->ctx);
    lua_pushstring(L, ev);
}

static void sink_chunk(void *ud, const char *data, size_t n)
{
    lreq *q = ud;
    lrt *x = q->lrt;
    if (q->ctx == LUA_NOREF || !x->L)
        return;
    push_dispatch(x, q, "chunk");
    lua_pushlstring(x->L, data, n);
    call_cb(x, 3);
}

static void sink_end(void *ud, const char *code, const char *msg)
{
    lreq *q = ud;
    lrt *x = q->lrt;
    kreq *r = q->r;
    q->r = NULL;
    if (x->L) {
        luaL_unref(x->L, LUA_REGISTRYINDEX, q->prompt);
        q->prompt = LUA_NOREF;
    }
    if (q->ctx != LUA_NOREF && x->L) {
        lua_State *L = x->L;
        push_dispatch(x, q, "end");
        luaL_unref(L, LUA_REGISTRYINDEX, q->ctx);
        q->ctx = LUA_NOREF;
        if (code) {
            lua_pushstring(L, code);
            lua_pushstring(L, msg ? msg : code);
        } else {
            lua_pushnil(L);
            lua_pushnil(L);
        }
        call_cb(x, 4);
    }
    kreq_unref(r);
}

static uint64_t arg_ms(lua_State *L, int i)
{
    lua_Integer v = luaL_optinteger(L, i, 0);
    luaL_argcheck(L, v >= 0, i, "milliseconds must not be negative");
    return (uint64_t)v;
}

/* core.request(backend, mode, prompt, stream, timeout_ms,
 *              first_chunk_timeout_ms, stall_timeout_ms, ctx) -> request */
static int l_request(lua_State *L)
{
    lrt *x = get_lrt(L);
    lbackend *b = luaL_checkudata(L, 1, BACKEND_MT);
    const char *mode = luaL_checkstring(L, 2);
    size_t plen;
    const char *prompt = luaL_checklstring(L, 3, &plen);
    int stream = lua_toboolean(L, 4);
    uint64_t timeout_ms = arg_ms(L, 5), first_chunk_ms = arg_ms(L, 6), stall_ms = arg_ms(L, 7);
    int oneshot = strcmp(mode, "oneshot") == 0;
    luaL_argcheck(L, oneshot || strcmp(mode, "daemon") == 0, 2, "mode must be daemon or oneshot");
    luaL_argcheck(L, b->spec.cli, 1, "backend is closed");
    if (x->dispatch_ref == LUA_NOREF)
        return luaL_error(L, "request: no event dispatcher (core.on_event)");
    lua_settop(L, 8);

    lreq *q = lua_newuserdatauv(L, sizeof *q, 0);
    q->lrt = x;
    /* The request borrows the prompt: anchored until it ends, and not a
     * moment longer (a user value would live until the handle's finaliser). */
    lua_pushvalue(L, 3);
    q->prompt = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, 8);
    q->ctx = luaL_ref(L, LUA_REGISTRYINDEX);
    q->r = NULL;
    luaL_setmetatable(L, REQ_MT);
    kreq_sink sink = { sink_chunk, sink_end, q };
    kreq *r = kreq_new(x->rt, prompt, plen, stream, &sink);
    x->rt->stats.requests++;
    q->r = r;
    r->timeout_ms = timeout_ms;
    r->first_chunk_ms = first_chunk_ms;
    r->stall_ms = stall_ms;
    kreq_start(r);
    if (oneshot)
        krt_submit_oneshot(x->rt, &b->spec, r);
    else
        krt_submit_daemon(x->rt, &b->spec, r);
    raise_pending(L, x);
    return 1;
}

static int l_on_event(lua_State *L)
{
    lrt *x = get_lrt(L);
    luaL_checktype(L, 1, LUA_TFUNCTION);
    luaL_unref(L, LUA_REGISTRYINDEX, x->dispatch_ref);
    lua_pushvalue(L, 1);
    x->dispatch_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

static int req_cancel_m(lua_State *L)
{
    lreq *q = luaL_checkudata(L, 1, REQ_MT);
    if (q->r) {
        q->lrt->L = L;
        kreq_cancel(q->r, KABORT_CANCEL, KERR_CANCELLED, luaL_optstring(L, 2, "cancelled by caller"));
        q->lrt->rt->stats.cancelled++;
    }
    return 0;
}

/* request:pause(on): flow control; the carrier stops reading its output
 * while on (the reader is behind), and starts again when off. */
static int req_pause_m(lua_State *L)
{
    lreq *q = luaL_checkudata(L, 1, REQ_MT);
    if (q->r)
        kreq_pause(q->r, lua_toboolean(L, 2));
    return 0;
}

static int req_gc(lua_State *L)
{
    lreq *q = luaL_checkudata(L, 1, REQ_MT);
    luaL_unref(L, LUA_REGISTRYINDEX, q->ctx);
    q->ctx = LUA_NOREF;
    if (q->r && q->lrt->rt) {
        luaL_unref(L, LUA_REGISTRYINDEX, q->prompt);
        q->prompt = LUA_NOREF;
        q->lrt->rt->stats.cancelled++;
        kreq_cancel(q->r, KABORT_CANCEL, KERR_CANCELLED, "request handle collected");
    }
    return 0;
}

/* ---- timers ------------------------------------------------------------ */

static void timer_closed(uv_handle_t *h)
{
    free(h->data);
}

static void on_timer(uv_timer_t *t)
{
    ltimer_state *s = t->data;
    lrt *x = s->lrt;
    s->live = 0;
    if (s->cb != LUA_NOREF && x->L) {
        int cb = s->cb;
        s->cb = LUA_NOREF;
        lua_rawgeti(x->L, LUA_REGISTRYINDEX, cb);
        luaL_unref(x->L, LUA_REGISTRYINDEX, cb);
        call_cb(x, 0);
    }
}

static int l_timer(lua_State *L)
{
    lrt *x = get_lrt(L);
    lua_Integer ms = luaL_checkinteger(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    if (ms < 0)
        ms = 0;
    ltimer *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->s = kcalloc(1, sizeof *u->s);
    luaL_setmetatable(L, TIMER_MT);
    lua_pushvalue(L, 2);
    u->s->cb = luaL_ref(L, LUA_REGISTRYINDEX);
    u->s->lrt = x;
    u->s->live = 1;
    uv_timer_init(x->rt->loop, &u->s->t);
    u->s->t.data = u->s;
    uv_update_time(x->rt->loop); /* ms from now, not from the last step */
    uv_timer_start(&u->s->t, on_timer, (uint64_t)ms, 0);
    return 1;
}

static int timer_stop(lua_State *L)
{
    ltimer *u = luaL_checkudata(L, 1, TIMER_MT);
    if (u->s) {
        luaL_unref(L, LUA_REGISTRYINDEX, u->s->cb);
        u->s->cb = LUA_NOREF;
        if (u->s->lrt->rt) {
            uv_timer_stop(&u->s->t);
            uv_close((uv_handle_t *)&u->s->t, timer_closed);
        }
        u->s = NULL;
    }
    return 0;
}

/* ---- loop, config, stats ----------------------------------------------- */

static int l_step(lua_State *L)
{
    lrt *x = get_lrt(L);
    int nowait = lua_toboolean(L, 1);
    int alive = uv_run(x->rt->loop, nowait ? UV_RUN_NOWAIT : UV_RUN_ONCE);
    raise_pending(L, x);
    lua_pushboolean(L, alive);
    return 1;
}

static int l_now(lua_State *L)
{
    lrt *x = get_lrt(L);
    uv_update_time(x->rt->loop);
    lua_pushinteger(L, (lua_Integer)uv_now(x->rt->loop));
    return 1;
}

/* Monotonic nanoseconds, for measuring. */
static int l_hrtime(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)uv_hrtime());
    return 1;
}

/* The core's options, by name: one table for configure() and config(),
 * each with the range it accepts. */
enum cfg_type { CFG_INT, CFG_SIZE, CFG_U64, CFG_BOOL };
#define MAX_MS KIRO_MAX_MS
static const struct cfg_field {
    const char *name;
    size_t offset;
    enum cfg_type type;
    lua_Integer min, max;
} cfg_fields[] = {
#define F(name, type, min, max) { #name, offsetof(kconfig, name), type, min, max }
    F(max_line_bytes, CFG_SIZE, 64, 1 << 30),
    F(pool_min, CFG_INT, 0, 1024),
    F(pool_max, CFG_INT, 1, 1024),
    F(queue_max, CFG_INT, 0, 1000000),
    F(pool_idle_ms, CFG_U64, 0, MAX_MS),
    F(kill_grace_ms, CFG_U64, 0, MAX_MS),
    F(drain_ms, CFG_U64, 0, MAX_MS),
    F(restart_backoff_ms, CFG_U64, 0, MAX_MS),
    F(restart_backoff_max_ms, CFG_U64, 0, MAX_MS),
    F(restart_max, CFG_INT, 0, 1000000),
    F(restart_window_ms, CFG_U64, 0, MAX_MS),
    F(cooldown_ms, CFG_U64, 0, MAX_MS),
    F(pipeline_depth, CFG_INT, 1, KIRO_MAX_PIPELINE_DEPTH),
    F(health_interval_ms, CFG_U64, 0, MAX_MS),
    F(probe_interval_ms, CFG_U64, 0, MAX_MS),
    F(probe_timeout_ms, CFG_U64, 1, MAX_MS),
    F(close_fds, CFG_BOOL, 0, 1),
#undef F
};
#define NCFG (sizeof cfg_fields / sizeof cfg_fields[0])

static void cfg_push(lua_State *L, const kconfig *c, const struct cfg_field *f)
{
    const char *p = (const char *)c + f->offset;
    switch (f->type) {
    case CFG_BOOL:
        lua_pushboolean(L, *(const int *)p);
        break;
    case CFG_INT:
        lua_pushinteger(L, *(const int *)p);
        break;
    case CFG_SIZE:
        lua_pushinteger(L, (lua_Integer)*(const size_t *)p);
        break;
    default:
        lua_pushinteger(L, (lua_Integer)*(const uint64_t *)p);
    }
}

/* Sets f from the value on top of the stack; raises for a wrong type or
 * a value out of range. */
static void cfg_set(lua_State *L, kconfig *c, const struct cfg_field *f)
{
    char *p = (char *)c + f->offset;
    if (f->type == CFG_BOOL) {
        if (!lua_isboolean(L, -1))
            luaL_error(L, "configure: %s must be a boolean", f->name);
        *(int *)p = lua_toboolean(L, -1);
        return;
    }
    lua_Integer v = lua_tointeger(L, -1);
    if (!lua_isinteger(L, -1) || v < f->min || v > f->max)
        luaL_error(L, "configure: %s must be an integer from %I to %I", f->name, f->min, f->max);
    switch (f->type) {
    case CFG_INT:
        *(int *)p = (int)v;
        break;
    case CFG_SIZE:
        *(size_t *)p = (size_t)v;
        break;
    default:
        *(uint64_t *)p = (uint64_t)v;
    }
}

static int l_configure(lua_State *L)
{
    lrt *x = get_lrt(L);
    kconfig c = x->rt->cfg;
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        const char *k = luaL_checkstring(L, -2);
        if (strcmp(k, "probe_prompt") == 0) {
            size_t n;
            const char *v = lua_tolstring(L, -1, &n);
            if (lua_type(L, -1) != LUA_TSTRING || n == 0 || n >= sizeof c.probe_prompt)
                return luaL_error(L, "configure: probe_prompt must be a string of 1 to %d bytes",
                                  (int)sizeof c.probe_prompt - 1);
            memcpy(c.probe_prompt, v, n + 1);
            lua_pop(L, 1);
            continue;
        }
        const struct cfg_field *f = NULL;
        for (size_t i = 0; i < NCFG && !f; i++)
            if (strcmp(k, cfg_fields[i].name) == 0)
                f = &cfg_fields[i];
        if (!f)
            return luaL_error(L, "configure: unknown option '%s'", k);
        cfg_set(L, &c, f);
        lua_pop(L, 1);
    }
    if (c.pool_min > c.pool_max)
        return luaL_error(L, "configure: pool_min (%d) exceeds pool_max (%d)", c.pool_min, c.pool_max);
    x->rt->cfg = c;
    krt_health_start(x->rt);
    return 0;
}

static int l_config(lua_State *L)
{
    lrt *x = get_lrt(L);
    lua_createtable(L, 0, (int)NCFG);
    for (size_t i = 0; i < NCFG; i++) {
        cfg_push(L, &x->rt->cfg, &cfg_fields[i]);
        lua_setfield(L, -2, cfg_fields[i].name);
    }
    lua_pushstring(L, x->rt->cfg.probe_prompt);
    lua_setfield(L, -2, "probe_prompt");
    return 1;
}

#define SET(name, v) (lua_pushinteger(L, (lua_Integer)(v)), lua_setfield(L, -2, name))

static void push_daemon(void *ud, const kdaemon_info *di)
{
    lua_State *L = ud;
    lua_createtable(L, 0, 3);
    SET("pid", di->pid);
    lua_pushstring(L, di->state);
    lua_setfield(L, -2, "state");
    SET("served", di->served);
    SET("in_flight", di->in_flight);
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
}

static int l_stats(lua_State *L)
{
    lrt *x = get_lrt(L);
    kstats *s = &x->rt->stats;
    lua_createtable(L, 0, 16);
    SET("requests", s->requests);
    SET("ok", s->ok);
    SET("errors", s->errors);
    SET("chunks", s->chunks);
    SET("timeouts", s->timeouts);
    SET("cancelled", s->cancelled);
    SET("daemon_requests", s->daemon_requests);
    SET("oneshot_requests", s->oneshot_requests);
    SET("daemon_starts", s->daemon_starts);
    SET("daemon_restarts", s->daemon_restarts);
    SET("daemon_start_failures", s->daemon_start_failures);
    SET("health_failures", s->health_failures);
    SET("probes", s->probes);
    SET("probe_failures", s->probe_failures);
    SET("in_flight", x->rt->nrequests);
    SET("children", kproc_live_count());
    lua_newtable(L);
    int daemons = 0;
    for (kpool *p = kpool_first(x->rt); p; p = kpool_next(p)) {
        kpool_info pi;
        kpool_describe(p, &pi);
        lua_createtable(L, 0, 9);
        lua_pushstring(L, pi.cli);
        lua_setfield(L, -2, "cli");
        if (pi.model) {
            lua_pushstring(L, pi.model);
            lua_setfield(L, -2, "model");
        }
        lua_pushstring(L, pi.state);
        lua_setfield(L, -2, "state");
        lua_pushstring(L, pi.last_error);
        lua_setfield(L, -2, "last_error");
        SET("live", pi.live);
        SET("queued", pi.queued);
        SET("failures", pi.failures);
        SET("restarts", pi.restarts);
        daemons += pi.live;
        lua_newtable(L);
        kpool_each_daemon(p, push_daemon, L);
        lua_setfield(L, -2, "daemons");
        lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
    }
    lua_setfield(L, -2, "pools");
    SET("daemons", daemons);
    return 1;
}
#undef SET

static int l_log(lua_State *L)
{
    const char *lvl = luaL_checkstring(L, 1);
    const char *target = luaL_checkstring(L, 2);
    const char *msg = luaL_checkstring(L, 3);
    int l = klog_level_parse(lvl);
    if (l <= 0)
        return luaL_error(L, "log: unknown level '%s'", lvl);
    klog(l, target, "%s", msg);
    return 0;
}

static int l_log_enabled(lua_State *L)
{
    int l = klog_level_parse(luaL_checkstring(L, 1));
    lua_pushboolean(L, l > 0 && klog_enabled(l, luaL_checkstring(L, 2)));
    return 1;
}

static int l_set_log(lua_State *L)
{
    const char *spec = luaL_checkstring(L, 1);
    if (klog_set_filter(spec) != 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "invalid log filter '%s' (levels: error warn info debug trace)", spec);
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* The first executable `name` on PATH (or `name` itself if it has a slash). */
static int l_which(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    if (strchr(name, '/')) {
        if (access(name, X_OK) == 0) {
            lua_pushstring(L, name);
            return 1;
        }
        return 0;
    }
    const char *path = getenv("PATH");
    if (!path)
        path = "/usr/local/bin:/usr/bin:/bin";
    luaL_Buffer b;
    while (*path) {
        const char *end = strchr(path, ':');
        size_t n = end ? (size_t)(end - path) : strlen(path);
        luaL_buffinit(L, &b);
        luaL_addlstring(&b, n ? path : ".", n ? n : 1);
        luaL_addchar(&b, '/');
        luaL_addstring(&b, name);
        luaL_pushresult(&b);
        if (access(lua_tostring(L, -1), X_OK) == 0)
            return 1;
        lua_pop(L, 1);
        path += n + (end ? 1 : 0);
    }
    return 0;
}

static void on_signal(uv_signal_t *h, int signum)
{
    lrt *x = h->data;
    klog(KLOG_INFO, "kiro.rt", "signal %d: shutting down", signum);
    if (x->sig_ref != LUA_NOREF && x->L) {
        lua_rawgeti(x->L, LUA_REGISTRYINDEX, x->sig_ref);
        lua_pushinteger(x->L, signum);
        call_cb(x, 1);
    }
    krt_shutdown(x->rt);
}

/* core.handle_signals(fn): on SIGINT/SIGTERM call fn(signum), then shut the
 * runtime down (every request ends `cancelled`, every backend is stopped). */
static int l_handle_signals(lua_State *L)
{
    static const int sigs[2] = { SIGINT, SIGTERM };
    lrt *x = get_lrt(L);
    luaL_checktype(L, 1, LUA_TFUNCTION);
    luaL_unref(L, LUA_REGISTRYINDEX, x->sig_ref);
    lua_pushvalue(L, 1);
    x->sig_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    for (int i = 0; i < 2; i++) {
        if (x->sigs[i])
            continue;
        x->sigs[i] = kcalloc(1, sizeof(uv_signal_t));
        uv_signal_init(x->rt->loop, x->sigs[i]);
        x->sigs[i]->data = x;
        uv_signal_start(x->sigs[i], on_signal, sigs[i]);
        uv_unref((uv_handle_t *)x->sigs[i]);
    }
    return 0;
}

static void on_hup(uv_signal_t *h, int signum)
{
    lrt *x = h->data;
    (void)signum;
    if (x->hup_ref != LUA_NOREF && x->L) {
        lua_rawgeti(x->L, LUA_REGISTRYINDEX, x->hup_ref);
        call_cb(x, 0);
    }
}

/* core.handle_hup(fn): on SIGHUP call fn() (reopen logs, reload). */
static int l_handle_hup(lua_State *L)
{
    lrt *x = get_lrt(L);
    luaL_checktype(L, 1, LUA_TFUNCTION);
    luaL_unref(L, LUA_REGISTRYINDEX, x->hup_ref);
    lua_pushvalue(L, 1);
    x->hup_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    if (!x->sigs[2]) {
        x->sigs[2] = kcalloc(1, sizeof(uv_signal_t));
        uv_signal_init(x->rt->loop, x->sigs[2]);
        x->sigs[2]->data = x;
        uv_signal_start(x->sigs[2], on_hup, SIGHUP);
        uv_unref((uv_handle_t *)x->sigs[2]);
    }
    return 0;
}

/* core.log_file(path, max_bytes) -> true, or nil, message: the log (and
 * stderr) goes to path from now on, rotated past max_bytes. */
static int l_log_file(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    lua_Integer max = luaL_optinteger(L, 2, 0);
    char err[512];
    luaL_argcheck(L, max >= 0, 2, "must not be negative");
    if (klog_set_file(path, (size_t)max, err, sizeof err) != 0) {
        return lkiro_fail(L, err);
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* core.log_reopen() -> true or false: the log file opened again. */
static int l_log_reopen(lua_State *L)
{
    lua_pushboolean(L, klog_reopen() == 0);
    return 1;
}

static void sig_closed(uv_handle_t *h)
{
    free(h);
}

/* core.shutdown([reopen]): end every request and stop every backend; with
 * `reopen`, the runtime takes new requests afterwards. */
static int l_shutdown(lua_State *L)
{
    lrt *x = get_lrt(L);
    krt_shutdown(x->rt);
    if (lua_toboolean(L, 1))
        x->rt->shutting_down = 0;
    raise_pending(L, x);
    return 0;
}

static int rt_gc(lua_State *L)
{
    lrt *x = luaL_checkudata(L, 1, RT_MT);
    if (!x->rt)
        return 0;
    x->L = NULL; /* no Lua callbacks from here on */
    for (int i = 0; i < 3; i++)
        if (x->sigs[i])
            uv_close((uv_handle_t *)x->sigs[i], sig_closed);
    krt_free(x->rt);
    x->rt = NULL;
    return 0;
}

static const luaL_Reg core_fns[] = {
    { "backend", l_backend },
    { "request", l_request },
    { "on_event", l_on_event },
    { "timer", l_timer },
    { "step", l_step },
    { "now", l_now },
    { "hrtime", l_hrtime },
    { "configure", l_configure },
    { "config", l_config },
    { "stats", l_stats },
    { "log", l_log },
    { "log_enabled", l_log_enabled },
    { "set_log", l_set_log },
    { "which", l_which },
    { "handle_signals", l_handle_signals },
    { "handle_hup", l_handle_hup },
    { "log_file", l_log_file },
    { "log_reopen", l_log_reopen },
    { "shutdown", l_shutdown },
    { NULL, NULL },
};

void lkiro_class(lua_State *L, const char *name, lua_CFunction gc, lua_CFunction close,
                 const luaL_Reg *methods)
{
    luaL_newmetatable(L, name);
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__gc");
    if (close) {
        lua_pushcfunction(L, close);
        lua_setfield(L, -2, "__close");
    }
    if (methods) {
        lua_newtable(L);
        luaL_setfuncs(L, methods, 0);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
}

KIRO_EXPORT int luaopen_kiro_core(lua_State *L)
{
    static const luaL_Reg req_m[] = { { "cancel", req_cancel_m }, { "pause", req_pause_m }, { NULL, NULL } };
    static const luaL_Reg timer_m[] = { { "stop", timer_stop }, { NULL, NULL } };

    /* A reader that went away must show up as EPIPE, not kill the host. */
    signal(SIGPIPE, SIG_IGN);
    luaL_checkversion(L);

    lkiro_class(L, REQ_MT, req_gc, req_gc, req_m);
    lkiro_class(L, BACKEND_MT, backend_gc, NULL, NULL);
    lkiro_class(L, TIMER_MT, timer_stop, NULL, timer_m);

    /* One runtime per Lua state, anchored in the registry; collected (all
     * children stopped and reaped) when the state closes. */
    lua_getfield(L, LUA_REGISTRYINDEX, RT_MT ".instance");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lrt *x = lua_newuserdatauv(L, sizeof *x, 0);
        memset(x, 0, sizeof *x);
        x->err_ref = x->sig_ref = x->hup_ref = x->dispatch_ref = LUA_NOREF;
        x->rt = krt_new();
        if (!x->rt)
            return luaL_error(L, "kiro: cannot initialise the event loop");
        const char *spec = getenv("KIRO_LOG");
        if (spec && klog_set_filter(spec) != 0)
            fprintf(stderr, "[WARN kiro.rt] ignoring invalid KIRO_LOG '%s'\n", spec);
        luaL_newmetatable(L, RT_MT);
        lua_pushcfunction(L, rt_gc);
        lua_setfield(L, -2, "__gc");
        lua_setmetatable(L, -2);
        lua_pushvalue(L, -1);
        lua_setfield(L, LUA_REGISTRYINDEX, RT_MT ".instance");
    }
    lua_newtable(L);
    lua_pushvalue(L, -2);
    luaL_setfuncs(L, core_fns, 1);
    lipc_register(L);
    ljson_register(L);
    lua_pushstring(L, KIRO_VERSION);
    lua_setfield(L, -2, "version");
    return 1;
}
