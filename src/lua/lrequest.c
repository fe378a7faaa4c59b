/* Requests: the C core's requests seen from Lua, events to one dispatcher,
 * cancel and flow control. Included by kiro.c. */

#define REQ_MT "kiro.request"

typedef struct lreq {
    lrt *lrt;
    kreq *r;
    int ctx;    /* the caller's value handed to the dispatcher */
    int prompt; /* the prompt the request borrows, anchored until it ends */
} lreq;


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

static const luaL_Reg request_methods[] = {
    { "cancel", req_cancel_m },
    { "pause", req_pause_m },
    { NULL, NULL },
};
