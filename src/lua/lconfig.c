/* Settings, counters and the log, seen from Lua. Included by kiro.c. */

/* The core's options, by name: one table for configure() and config(),
 * each with the range it accepts. */
enum cfg_type { CFG_INT, CFG_SIZE, CFG_U64, CFG_BOOL };
#define MAX_MS KIRO_MAX_MS
static const struct cfg_field {
    const char *name;
    size_t offset;
    enum cfg_type type;
    lua_Integer min, max;
    int per_backend; /* a backend may set it for itself (core.backend's settings) */
} cfg_fields[] = {
#define F(name, type, min, max, per_backend)                        \
    {                                                               \
#name, offsetof(kconfig, name), type, min, max, per_backend \
    }
    F(max_line_bytes, CFG_SIZE, 64, 1 << 30, 1),
    F(pool_min, CFG_INT, 0, 1024, 1),
    F(pool_max, CFG_INT, 1, 1024, 1),
    F(queue_max, CFG_INT, 0, 1000000, 1),
    F(pool_idle_ms, CFG_U64, 0, MAX_MS, 1),
    F(max_backends, CFG_INT, 1, 4096, 0),
    F(kill_grace_ms, CFG_U64, 0, MAX_MS, 1),
    F(drain_ms, CFG_U64, 0, MAX_MS, 1),
    F(restart_backoff_ms, CFG_U64, 0, MAX_MS, 1),
    F(restart_backoff_max_ms, CFG_U64, 0, MAX_MS, 1),
    F(restart_max, CFG_INT, 0, 1000000, 1),
    F(restart_window_ms, CFG_U64, 0, MAX_MS, 1),
    F(cooldown_ms, CFG_U64, 0, MAX_MS, 1),
    F(pipeline_depth, CFG_INT, 1, KIRO_MAX_PIPELINE_DEPTH, 1),
    F(health_interval_ms, CFG_U64, 0, MAX_MS, 0),
    F(probe_interval_ms, CFG_U64, 0, MAX_MS, 1),
    F(probe_timeout_ms, CFG_U64, 1, MAX_MS, 1),
    F(close_fds, CFG_BOOL, 0, 1, 0),
    F(timeout_ms, CFG_U64, 0, MAX_MS, 1),
    F(first_chunk_timeout_ms, CFG_U64, 0, MAX_MS, 1),
    F(stall_timeout_ms, CFG_U64, 0, MAX_MS, 1),
    F(session_max, CFG_INT, 1, 100000, 1),
    F(session_idle_ms, CFG_U64, 1, MAX_MS, 1),
#undef F
};
#define NCFG (sizeof cfg_fields / sizeof cfg_fields[0])
_Static_assert(NCFG + 1 <= MAX_BACKEND_SETTINGS, "room for a backend's every setting");

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
        lua_pushinteger(L, (lua_Integer) * (const size_t *)p);
        break;
    default:
        lua_pushinteger(L, (lua_Integer) * (const uint64_t *)p);
    }
}

/* The bytes a field takes in kconfig. */
static size_t cfg_size(const struct cfg_field *f)
{
    return f->type == CFG_INT || f->type == CFG_BOOL ? sizeof(int)
           : f->type == CFG_SIZE                     ? sizeof(size_t)
                                                     : sizeof(uint64_t);
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

/* probe_prompt from the value on top of the stack, into c; raises for
 * anything but a string of 1 to 255 bytes. */
static void probe_prompt_set(lua_State *L, kconfig *c, const char *who)
{
    size_t n;
    const char *v = lua_tolstring(L, -1, &n);
    if (lua_type(L, -1) != LUA_TSTRING || n == 0 || n >= sizeof c->probe_prompt)
        luaL_error(L, "%s: probe_prompt must be a string of 1 to %d bytes", who,
                   (int)sizeof c->probe_prompt - 1);
    memset(c->probe_prompt, 0, sizeof c->probe_prompt);
    memcpy(c->probe_prompt, v, n);
}

/* A backend's own settings, the table at t (core.backend's `settings`):
 * each checked as configure checks it and kept in vals, and listed in out
 * (room for NCFG + 1) in one order, the table's above. Raises for a name
 * a backend cannot set. Returns how many. */
static size_t backend_settings(lua_State *L, int t, kconfig *vals, kbackend_setting *out)
{
    lua_pushnil(L);
    while (lua_next(L, t)) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
        int ok = strcmp(k, "probe_prompt") == 0;
        for (size_t i = 0; i < NCFG && !ok; i++)
            ok = cfg_fields[i].per_backend && strcmp(k, cfg_fields[i].name) == 0;
        if (!ok)
            luaL_error(L, "backend: '%s' is not a setting a backend can have", k);
        lua_pop(L, 1);
    }
    size_t n = 0;
    int min_set = 0, max_set = 0;
    for (size_t i = 0; i < NCFG; i++) {
        const struct cfg_field *f = &cfg_fields[i];
        if (lua_getfield(L, t, f->name) != LUA_TNIL) {
            cfg_set(L, vals, f);
            out[n++] = (kbackend_setting){ f->offset, cfg_size(f), (char *)vals + f->offset };
            min_set |= f->offset == offsetof(kconfig, pool_min);
            max_set |= f->offset == offsetof(kconfig, pool_max);
        }
        lua_pop(L, 1);
    }
    if (min_set && max_set && vals->pool_min > vals->pool_max)
        luaL_error(L, "backend: pool_min (%d) exceeds pool_max (%d)", vals->pool_min, vals->pool_max);
    if (lua_getfield(L, t, "probe_prompt") != LUA_TNIL) {
        probe_prompt_set(L, vals, "backend");
        out[n++] = (kbackend_setting){ offsetof(kconfig, probe_prompt), sizeof vals->probe_prompt,
                                       vals->probe_prompt };
    }
    lua_pop(L, 1);
    return n;
}

/* core.configure(options [, check_only]): the core's options, all checked
 * before any is set (check_only: none is). */
static int l_configure(lua_State *L)
{
    lrt *x = get_lrt(L);
    kconfig c = x->rt->core.cfg;
    luaL_checktype(L, 1, LUA_TTABLE);
    int check_only = lua_toboolean(L, 2);
    lua_settop(L, 1);
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        const char *k = luaL_checkstring(L, -2);
        if (strcmp(k, "probe_prompt") == 0) {
            probe_prompt_set(L, &c, "configure");
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
    if (check_only)
        return 0;
    x->rt->core.cfg = c;
    kbackends_configure(&x->rt->backends);
    krt_health_start(x->rt);
    return 0;
}

/* core.backend_settings() -> { name = true } for each setting a backend
 * may make its own */
static int l_backend_settings(lua_State *L)
{
    lua_createtable(L, 0, (int)NCFG);
    for (size_t i = 0; i < NCFG; i++)
        if (cfg_fields[i].per_backend) {
            lua_pushboolean(L, 1);
            lua_setfield(L, -2, cfg_fields[i].name);
        }
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "probe_prompt");
    return 1;
}

static int l_config(lua_State *L)
{
    const kconfig *cfg = lrt_config(L);
    if (!lua_isnoneornil(L, 1)) { /* core.config(name): one option's value */
        const char *k = luaL_checkstring(L, 1);
        for (size_t i = 0; i < NCFG; i++)
            if (strcmp(k, cfg_fields[i].name) == 0) {
                cfg_push(L, cfg, &cfg_fields[i]);
                return 1;
            }
        lua_pushstring(L, cfg->probe_prompt);
        return strcmp(k, "probe_prompt") == 0 ? 1 : luaL_argerror(L, 1, "unknown option");
    }
    lua_createtable(L, 0, (int)NCFG);
    for (size_t i = 0; i < NCFG; i++) {
        cfg_push(L, cfg, &cfg_fields[i]);
        lua_setfield(L, -2, cfg_fields[i].name);
    }
    lua_pushstring(L, cfg->probe_prompt);
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

struct pools_acc {
    lua_State *L;
    int daemons, conversations;
};

/* One pool's table, appended to the array on top. */
static void push_pool(void *ud, const kpool *p)
{
    struct pools_acc *acc = ud;
    lua_State *L = acc->L;
    kpool_info pi;
    kpool_describe(p, &pi);
    lua_createtable(L, 0, 12);
    lua_pushstring(L, pi.cli);
    lua_setfield(L, -2, "cli");
    if (pi.model) {
        lua_pushstring(L, pi.model);
        lua_setfield(L, -2, "model");
    }
    lua_pushstring(L, pi.protocol);
    lua_setfield(L, -2, "protocol");
    lua_pushstring(L, pi.tag);
    lua_setfield(L, -2, "backend");
    lua_pushstring(L, pi.state);
    lua_setfield(L, -2, "state");
    lua_pushstring(L, pi.last_error);
    lua_setfield(L, -2, "last_error");
    SET("live", pi.live);
    SET("queued", pi.queued);
    SET("failures", pi.failures);
    SET("conversations", pi.conversations);
    acc->conversations += pi.conversations;
    SET("restarts", pi.restarts);
    acc->daemons += pi.live;
    lua_newtable(L);
    kpool_each_daemon(p, push_daemon, L);
    lua_setfield(L, -2, "daemons");
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
}

static int l_stats(lua_State *L)
{
    lrt *x = get_lrt(L);
    kstats *s = &x->rt->core.stats;
    lua_createtable(L, 0, 26);
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
    SET("acp_requests", s->acp_requests);
    SET("auth_failures", s->auth_failures);
    SET("permission_requests", s->permission_requests);
    SET("permission_defaults", s->permission_defaults);
    SET("in_flight", x->rt->core.nrequests);
    SET("children", kproc_live_count());
    lua_newtable(L);
    struct pools_acc acc = { L, 0, 0 };
    kbackends_each_pool(&x->rt->backends, push_pool, &acc);
    lua_setfield(L, -2, "pools");
    SET("backends", x->rt->backends.count);
    SET("backends_peak", x->rt->backends.peak);
    SET("daemons", acc.daemons);
    SET("conversations", acc.conversations);
    return 1;
}

/* The log's lines to a Lua function, called on a thread of its own (its
 * function at the bottom of that thread's stack): whichever coroutine logs,
 * alive or not, the function runs on a stack that is there. A function
 * that fails, or yields, costs the line and a note on stderr. */
static void lua_log_sink(void *ud, enum klog_level lvl, const char *target, const char *msg)
{
    lrt *x = ud;
    lua_State *T = x->log_thread;
    if (!T || !lua_checkstack(T, 4)) {
        fprintf(stderr, "[%s %s] %s\n", klog_level_name(lvl), target, msg);
        return;
    }
    lua_pushvalue(T, 1);
    lua_pushstring(T, klog_level_name(lvl));
    lua_pushstring(T, target);
    lua_pushstring(T, msg);
    if (lua_pcall(T, 3, 0, 0) != LUA_OK) {
        const char *e = lua_tostring(T, -1);
        fprintf(stderr, "[ERROR kiro.log] the log function failed: %s\n",
                e ? e : "(an error that is not a string)");
        lua_settop(T, 1);
    }
}

/* core.set_log_sink(fn|nil): the log's lines go to fn(level, target,
 * message) instead of stderr; nil: to stderr again. */
static int l_set_log_sink(lua_State *L)
{
    lrt *x = lua_touserdata(L, lua_upvalueindex(1));
    klog_set_sink(NULL, NULL);
    luaL_unref(L, LUA_REGISTRYINDEX, x->log_ref);
    x->log_ref = LUA_NOREF;
    x->log_thread = NULL;
    if (lua_isnoneornil(L, 1))
        return 0;
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_State *T = lua_newthread(L);
    x->log_ref = luaL_ref(L, LUA_REGISTRYINDEX); /* anchors the thread, which holds fn */
    lua_pushvalue(L, 1);
    lua_xmove(L, T, 1);
    x->log_thread = T;
    klog_set_sink(lua_log_sink, x);
    return 0;
}

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

/* core.set_log(filter [, check_only]) -> true, or nil, message */
static int l_set_log(lua_State *L)
{
    const char *spec = luaL_checkstring(L, 1);
    if ((lua_toboolean(L, 2) ? klog_check_filter(spec) : klog_set_filter(spec)) != 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "invalid log filter '%s' (levels: error warn info debug trace)", spec);
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* core.which(name) -> the first executable name on PATH (or name itself
 * when it has a slash), or nothing. */
static int l_which(lua_State *L)
{
    char buf[PATH_MAX];
    if (kos_which(luaL_checkstring(L, 1), buf, sizeof buf) != 0)
        return 0;
    lua_pushstring(L, buf);
    return 1;
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
