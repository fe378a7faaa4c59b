/* The binding's plumbing: the runtime as Lua holds it, how C reaches Lua
 * (obj:on_event, called on the thread driving the loop), and the shapes
 * every binding returns. Included by kiro.c. */

typedef struct lrt {
    krt *rt;                          /* made on first use (get_lrt): a process that only
                                         reads options or makes one blocking exchange never
                                         opens a loop */
    int closed;                       /* the Lua state is closing: no runtime any more */
    lua_State *L;                     /* the thread driving the loop right now */
    int err_ref;                      /* first error raised by a callback, re-raised by step() */
    int sig_ref;                      /* Lua handler for SIGINT/SIGTERM */
    int hup_ref;                      /* Lua handler for SIGHUP */
    int log_ref;                      /* Lua function that takes the log's lines, or LUA_NOREF */
    lua_State *log_thread;            /* ...called on this thread (log_ref anchors it), or NULL */
    struct lstdin_state *stdin_state; /* standard input being read (lstdin.c), or NULL */
    unsigned stdin_n;                 /* ...its number (readers are counted) */
    uv_signal_t *sigs[3];             /* SIGINT, SIGTERM, SIGHUP */
} lrt;

/* Pushes what delivers an event: ctx's on_event method, ctx and the event's
 * name; the caller pushes the event's values and calls call_cb. Every event
 * of the core reaches the object it belongs to this way (no Lua closure is
 * held in C). */
static void push_event(lrt *x, int ctx, const char *ev)
{
    lua_State *L = x->L;
    luaL_checkstack(L, 8, NULL);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ctx);
    lua_getfield(L, -1, "on_event");
    lua_insert(L, -2);
    lua_pushstring(L, ev);
}

/* A failure as the caller gets it: nil and a message (luv's shape). */
static int lkiro_fail(lua_State *L, const char *msg)
{
    lua_pushnil(L);
    lua_pushstring(L, msg);
    return 2;
}

/* The runtime, made now if this is its first use. */
static lrt *get_lrt(lua_State *L)
{
    lrt *x = lua_touserdata(L, lua_upvalueindex(1));
    if (!x->rt) {
        if (x->closed)
            luaL_error(L, "kiro runtime is closed");
        x->rt = krt_new();
        if (!x->rt)
            luaL_error(L, "kiro: cannot initialise the event loop");
    }
    x->L = L;
    return x;
}

/* The options in force: the runtime's, or the defaults before it exists. */
static const kconfig *lrt_config(lua_State *L)
{
    lrt *x = lua_touserdata(L, lua_upvalueindex(1));
    return x->rt ? &x->rt->core.cfg : krt_defaults();
}

/* Calls the function on top of the stack with nargs arguments below it,
 * keeping the first error for step() to raise. */
static void call_cb(lrt *x, int nargs)
{
    lua_State *L = x->L;
    /* Lua has news: make the current step() return instead of blocking in
     * poll (UV_RUN_ONCE runs due timers before it polls, then would sleep). */
    uv_stop(x->rt->core.loop);
    if (lua_pcall(L, nargs, 0, 0) != LUA_OK) {
        if (x->err_ref == LUA_NOREF)
            x->err_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        else
            lua_pop(L, 1);
    }
}

static int raise_pending(lua_State *L, lrt *x)
{
    if (x->err_ref == LUA_NOREF)
        return 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, x->err_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, x->err_ref);
    x->err_ref = LUA_NOREF;
    return lua_error(L);
}

static void lkiro_class(lua_State *L, const char *name, lua_CFunction gc, lua_CFunction close,
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
