/* WebSocket connections seen from Lua (core/ws.c): core.websocket(url,
 * max_bytes, ctx) opens one, and its events go to ctx. kiro.websocket
 * makes them coroutine-friendly. Included by kiro.c. */

#define WS_MT "kiro.websocket"

typedef struct lws_conn {
    lrt *x;
    kws_conn *c; /* NULL once released */
    int ctx;     /* the caller's object, anchored until the end */
} lws_conn;

/* Events: ctx:on_event("open"), ctx:on_event("message", bytes, binary),
 * and last ctx:on_event("closed", code, reason). */

static void ws_open(void *ud)
{
    lws_conn *q = ud;
    if (q->ctx == LUA_NOREF || !q->x->L)
        return;
    push_event(q->x, q->ctx, "open");
    call_cb(q->x, 2);
}

static void ws_message(void *ud, const char *p, size_t n, int binary)
{
    lws_conn *q = ud;
    if (q->ctx == LUA_NOREF || !q->x->L)
        return;
    push_event(q->x, q->ctx, "message");
    lua_pushlstring(q->x->L, p, n);
    lua_pushboolean(q->x->L, binary);
    call_cb(q->x, 4);
}

static void ws_closed(void *ud, int code, const char *reason)
{
    lws_conn *q = ud;
    int ctx = q->ctx;
    q->ctx = LUA_NOREF;
    if (ctx == LUA_NOREF || !q->x->L)
        return;
    lua_State *L = q->x->L;
    push_event(q->x, ctx, "closed");
    lua_pushinteger(L, code);
    lua_pushstring(L, reason);
    call_cb(q->x, 4);
    luaL_unref(L, LUA_REGISTRYINDEX, ctx);
}

static lws_conn *check_ws(lua_State *L)
{
    return luaL_checkudata(L, 1, WS_MT);
}

/* conn:send(text [, binary]) -> true, or nil, message once it is closing. */
static int ws_send(lua_State *L)
{
    lws_conn *q = check_ws(L);
    size_t n;
    const char *p = luaL_checklstring(L, 2, &n);
    if (!q->c || kws_send(q->c, p, n, lua_toboolean(L, 3)) != 0)
        return lkiro_fail(L, "connection closed");
    lua_pushboolean(L, 1);
    return 1;
}

/* conn:close([code [, reason]]): the closing handshake; "closed" follows. */
static int ws_close(lua_State *L)
{
    lws_conn *q = check_ws(L);
    lua_Integer code = luaL_optinteger(L, 2, 1000);
    const char *reason = luaL_optstring(L, 3, "");
    luaL_argcheck(L, code == 1000 || (code >= 3000 && code <= 4999), 2,
                  "a close code is 1000 or 3000 to 4999");
    luaL_argcheck(L, strlen(reason) <= 123, 3, "a close reason is 123 bytes at the most");
    if (q->c)
        kws_close(q->c, (int)code, reason);
    return 0;
}

/* conn:release() (and __gc): no more events; the socket goes now. */
static int ws_release(lua_State *L)
{
    lws_conn *q = check_ws(L);
    if (q->c)
        kws_release(q->c);
    q->c = NULL;
    luaL_unref(L, LUA_REGISTRYINDEX, q->ctx);
    q->ctx = LUA_NOREF;
    return 0;
}

static const luaL_Reg ws_methods[] = {
    { "send", ws_send },
    { "close", ws_close },
    { "release", ws_release },
    { NULL, NULL },
};

/* core.websocket(url, max_bytes, ctx) -> connection, or nil, message */
static int l_websocket(lua_State *L)
{
    lrt *x = get_lrt(L);
    const char *url = luaL_checkstring(L, 1);
    lua_Integer max = luaL_checkinteger(L, 2);
    luaL_checktype(L, 3, LUA_TTABLE);
    luaL_argcheck(L, max >= 1, 2, "max_bytes must be >= 1");
    char err[256];
    kws *w = krt_ws(x->rt, err, sizeof err);
    if (!w)
        return lkiro_fail(L, err);
    lws_conn *q = lua_newuserdatauv(L, sizeof *q, 0);
    q->x = x;
    q->c = NULL;
    q->ctx = LUA_NOREF;
    luaL_setmetatable(L, WS_MT);
    kws_sink sink = { ws_open, ws_message, ws_closed, q };
    q->c = kws_connect(w, url, (size_t)max, &sink, err, sizeof err);
    if (!q->c)
        return lkiro_fail(L, err);
    lua_pushvalue(L, 3);
    q->ctx = luaL_ref(L, LUA_REGISTRYINDEX);
    return 1;
}
