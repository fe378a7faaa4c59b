/* The loop as Lua drives it: one step, timers, the clock, signals, and
 * the runtime's end. Included by kiro.c. */

#define TIMER_MT "kiro.timer"
#define RT_MT "kiro.runtime"

typedef struct ltimer_state {
    uv_timer_t t;
    lrt *lrt;
    int cb;
    int live;
} ltimer_state;

typedef struct ltimer {
    ltimer_state *s;
} ltimer;

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
    if (ms > KIRO_MAX_MS) /* (libuv's clock would wrap past the end: it would fire at once) */
        ms = KIRO_MAX_MS;
    ltimer *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->s = kcalloc(1, sizeof *u->s);
    luaL_setmetatable(L, TIMER_MT);
    lua_pushvalue(L, 2);
    u->s->cb = luaL_ref(L, LUA_REGISTRYINDEX);
    u->s->lrt = x;
    u->s->live = 1;
    uv_timer_init(x->rt->core.loop, &u->s->t);
    u->s->t.data = u->s;
    uv_update_time(x->rt->core.loop); /* ms from now, not from the last step */
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

static int l_step(lua_State *L)
{
    lrt *x = get_lrt(L);
    int nowait = lua_toboolean(L, 1);
    kos_sigpipe g;
    kos_sigpipe_hold(&g);
    int alive = uv_run(x->rt->core.loop, nowait ? UV_RUN_NOWAIT : UV_RUN_ONCE);
    kos_sigpipe_release(&g);
    raise_pending(L, x);
    lua_pushboolean(L, alive);
    return 1;
}

/* core.wait([ms]): waits for the loop's I/O or its next timer, ms at the
 * most (absent or negative: as long as the loop needs; 0: not at all),
 * then runs what is ready without blocking again. For a host that drives
 * kiro: the wait is a poll() on libuv's backend descriptor, the one a host
 * watches itself (core.backend_fd). Returns whether the loop is alive. */
static int l_wait(lua_State *L)
{
    lrt *x = get_lrt(L);
    uv_loop_t *loop = x->rt->core.loop;
    lua_Integer want = luaL_optinteger(L, 1, -1);
    int t = 0;
    if (want != 0) { /* 0, a host's step when kiro's descriptor turned readable: no wait */
        uv_update_time(loop);
        t = uv_backend_timeout(loop);
        if (want > 0 && (t < 0 || want < t))
            t = want > INT_MAX ? INT_MAX : (int)want;
    }
    if (t != 0) {
        struct pollfd p = { .fd = uv_backend_fd(loop), .events = POLLIN };
        (void)poll(&p, 1, t); /* EINTR: a signal is work too */
    }
    kos_sigpipe g;
    kos_sigpipe_hold(&g);
    int alive = uv_run(loop, UV_RUN_NOWAIT);
    kos_sigpipe_release(&g);
    raise_pending(L, x);
    lua_pushboolean(L, alive);
    return 1;
}

/* core.backend_fd(): libuv's backend descriptor, readable when the loop
 * has I/O to handle (epoll's on Linux). */
static int l_backend_fd(lua_State *L)
{
    lua_pushinteger(L, uv_backend_fd(get_lrt(L)->rt->core.loop));
    return 1;
}

/* core.backend_timeout(): ms until the loop's next timer, 0 when it has
 * work now, -1 when it has none (only I/O can wake it; libuv says 0 for a
 * loop with nothing alive, which needs no step at all). */
static int l_backend_timeout(lua_State *L)
{
    uv_loop_t *loop = get_lrt(L)->rt->core.loop;
    uv_update_time(loop);
    lua_pushinteger(L, uv_loop_alive(loop) ? uv_backend_timeout(loop) : -1);
    return 1;
}

/* core.watch(path, ctx) -> a watch: ctx:on_event("change") when the file
 * at path is written, replaced or moved (its directory is watched, so an
 * editor's write-and-rename counts too). w:stop() ends it. It does not keep
 * the loop alive. */
#define WATCH_MT "kiro.watch"

typedef struct lwatch_state {
    uv_fs_event_t h;
    lrt *lrt;
    int ctx;
    char *name; /* the file's name in its directory */
} lwatch_state;

typedef struct lwatch {
    lwatch_state *s;
} lwatch;

static void watch_closed(uv_handle_t *h)
{
    lwatch_state *s = h->data;
    free(s->name);
    free(s);
}

static void on_fs_event(uv_fs_event_t *h, const char *filename, int events, int status)
{
    lwatch_state *s = h->data;
    lrt *x = s->lrt;
    (void)events;
    if (status < 0 || !filename || strcmp(filename, s->name) != 0 || s->ctx == LUA_NOREF || !x->L)
        return;
    push_event(x, s->ctx, "change");
    call_cb(x, 2);
}

static int l_watch(lua_State *L)
{
    lrt *x = get_lrt(L);
    const char *path = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    const char *slash = strrchr(path, '/');
    char dir[PATH_MAX];
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == path)
        snprintf(dir, sizeof dir, "/");
    else
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    lwatch *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->s = kcalloc(1, sizeof *u->s);
    luaL_setmetatable(L, WATCH_MT);
    u->s->lrt = x;
    u->s->name = kstrdup(slash ? slash + 1 : path);
    uv_fs_event_init(x->rt->core.loop, &u->s->h);
    u->s->h.data = u->s;
    int rc = uv_fs_event_start(&u->s->h, on_fs_event, dir, 0);
    if (rc < 0) {
        uv_close((uv_handle_t *)&u->s->h, watch_closed);
        u->s = NULL;
        return lkiro_fail(L, uv_strerror(rc));
    }
    uv_unref((uv_handle_t *)&u->s->h);
    lua_pushvalue(L, 2);
    u->s->ctx = luaL_ref(L, LUA_REGISTRYINDEX);
    return 1;
}

static int watch_stop(lua_State *L)
{
    lwatch *u = luaL_checkudata(L, 1, WATCH_MT);
    if (u->s) {
        luaL_unref(L, LUA_REGISTRYINDEX, u->s->ctx);
        u->s->ctx = LUA_NOREF;
        if (u->s->lrt->rt)
            uv_close((uv_handle_t *)&u->s->h, watch_closed);
        u->s = NULL;
    }
    return 0;
}

static const luaL_Reg watch_methods[] = { { "stop", watch_stop }, { NULL, NULL } };

static int l_now(lua_State *L)
{
    lrt *x = get_lrt(L);
    uv_update_time(x->rt->core.loop);
    lua_pushinteger(L, (lua_Integer)uv_now(x->rt->core.loop));
    return 1;
}

/* Monotonic nanoseconds, for measuring. */
static int l_hrtime(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)uv_hrtime());
    return 1;
}

static void on_signal(uv_signal_t *h, int signum)
{
    lrt *x = h->data;
    int own = 0; /* the handler shuts down itself, when it is ready */
    if (x->sig_ref != LUA_NOREF && x->L) {
        lua_State *L = x->L;
        lua_rawgeti(L, LUA_REGISTRYINDEX, x->sig_ref);
        lua_pushinteger(L, signum);
        uv_stop(x->rt->core.loop); /* Lua has news */
        if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
            if (x->err_ref == LUA_NOREF)
                x->err_ref = luaL_ref(L, LUA_REGISTRYINDEX);
            else
                lua_pop(L, 1);
        } else {
            own = lua_toboolean(L, -1);
            lua_pop(L, 1);
        }
    }
    if (own)
        return;
    klog(KLOG_INFO, "kiro.rt", "signal %d: shutting down", signum);
    krt_shutdown(x->rt, 0);
}

/* core.handle_signals(fn): on SIGINT/SIGTERM call fn(signum), then shut the
 * runtime down (every request ends `cancelled`, every backend is stopped),
 * unless fn returns true: it will see to that itself (kiro.shutdown), once
 * what is under way has finished. */
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
        uv_signal_init(x->rt->core.loop, x->sigs[i]);
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
        uv_signal_init(x->rt->core.loop, x->sigs[2]);
        x->sigs[2]->data = x;
        uv_signal_start(x->sigs[2], on_hup, SIGHUP);
        uv_unref((uv_handle_t *)x->sigs[2]);
    }
    return 0;
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
    krt_shutdown(x->rt, lua_toboolean(L, 1));
    raise_pending(L, x);
    return 0;
}

/* core.shutting_down() -> whether a shutdown without reopen was asked for */
static int l_shutting_down(lua_State *L)
{
    lrt *x = get_lrt(L);
    lua_pushboolean(L, x->rt && x->rt->shutting_down);
    return 1;
}

static void stdin_stop(struct lstdin_state *s); /* lstdin.c */
static void line_stop_all(lrt *x);              /* lline.c */

static int rt_gc(lua_State *L)
{
    lrt *x = luaL_checkudata(L, 1, RT_MT);
    x->closed = 1;
    if (x->log_ref != LUA_NOREF) /* the state goes: the log goes back to stderr */
        klog_set_sink(NULL, NULL);
    x->log_thread = NULL;
    x->L = NULL; /* no Lua callbacks from here on */
    if (!x->rt)
        return 0;
    for (int i = 0; i < 3; i++)
        if (x->sigs[i])
            uv_close((uv_handle_t *)x->sigs[i], sig_closed);
    if (x->stdin_state)
        stdin_stop(x->stdin_state);
    line_stop_all(x);
    krt_free(x->rt);
    x->rt = NULL;
    return 0;
}

static const luaL_Reg timer_methods[] = { { "stop", timer_stop }, { NULL, NULL } };
