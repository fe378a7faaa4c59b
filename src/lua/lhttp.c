/* HTTP requests seen from Lua (core/http.c): core.http(opts, ctx) starts
 * one, and its events go to ctx. kiro.http makes them coroutine-friendly.
 * Included by kiro.c. */

#define HTTP_MT "kiro.http"

typedef struct lhttp {
    lrt *x;
    khttp_req *r; /* NULL once it ended or was cancelled */
    int ctx;      /* the caller's object, anchored until the end */
} lhttp;

/* Events: ctx:on_event("head", status, headers) (the header block's text),
 * ctx:on_event("data", bytes) as the body arrives, and last
 * ctx:on_event("end", code, message) (code nil on success, else timeout,
 * network, tls, too_big, invalid or cancelled). */

static void http_head(void *ud, long status, const char *headers, size_t len)
{
    lhttp *q = ud;
    if (q->ctx == LUA_NOREF || !q->x->L)
        return;
    push_event(q->x, q->ctx, "head");
    lua_pushinteger(q->x->L, status);
    lua_pushlstring(q->x->L, headers, len);
    call_cb(q->x, 4);
}

static void http_data(void *ud, const char *p, size_t n)
{
    lhttp *q = ud;
    if (q->ctx == LUA_NOREF || !q->x->L)
        return;
    push_event(q->x, q->ctx, "data");
    lua_pushlstring(q->x->L, p, n);
    call_cb(q->x, 3);
}

static void http_end(void *ud, enum khttp_error e, const char *msg)
{
    static const char *const codes[] = {
        NULL, "timeout", "network", "tls", "too_big", "invalid", "cancelled"
    };
    lhttp *q = ud;
    q->r = NULL; /* freed once this returns */
    int ctx = q->ctx;
    q->ctx = LUA_NOREF;
    if (ctx == LUA_NOREF || !q->x->L)
        return;
    lua_State *L = q->x->L;
    push_event(q->x, ctx, "end");
    if (codes[e])
        lua_pushstring(L, codes[e]);
    else
        lua_pushnil(L);
    lua_pushstring(L, msg);
    call_cb(q->x, 4);
    luaL_unref(L, LUA_REGISTRYINDEX, ctx);
}

/* request:cancel(): it ends now, with no event. */
static int http_cancel(lua_State *L)
{
    lhttp *q = luaL_checkudata(L, 1, HTTP_MT);
    if (q->r && q->x->rt)
        khttp_cancel(q->r);
    q->r = NULL;
    luaL_unref(L, LUA_REGISTRYINDEX, q->ctx);
    q->ctx = LUA_NOREF;
    return 0;
}

static const luaL_Reg http_methods[] = {
    { "cancel", http_cancel },
    { NULL, NULL },
};

/* The strings of the array at t.k, as a NULL-terminated vector in a
 * userdata on the stack (it lives as long as the stack slot). */
static const char **header_vector(lua_State *L, int t)
{
    lua_getfield(L, t, "headers");
    int h = lua_gettop(L);
    size_t n = lua_istable(L, h) ? lua_rawlen(L, h) : 0;
    if (!lua_isnil(L, h) && !lua_istable(L, h))
        luaL_error(L, "http: headers must be an array of \"Name: value\" strings");
    const char **v = lua_newuserdatauv(L, (n + 1) * sizeof *v, 0);
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, h, (lua_Integer)i + 1);
        const char *s = lua_tostring(L, -1);
        if (lua_type(L, -1) != LUA_TSTRING || !strchr(s, ':') || strpbrk(s, "\r\n"))
            luaL_error(L, "http: headers[%d] must be a \"Name: value\" string on one line", (int)i + 1);
        v[i] = s; /* the headers table keeps it */
        lua_pop(L, 1);
    }
    v[n] = NULL;
    return v;
}

/* core.http{ url =, method =, headers = { "Name: value", ... }, body =,
 *            timeout_ms =, max_bytes = } , ctx) -> request, or nil, message */
static int l_http(lua_State *L)
{
    lrt *x = get_lrt(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    khttp_opts o = { 0 };
    lua_getfield(L, 1, "url");
    o.url = lua_tostring(L, -1);
    if (lua_type(L, -1) != LUA_TSTRING)
        return luaL_error(L, "http: url must be a string");
    lua_getfield(L, 1, "method");
    o.method = lua_tostring(L, -1);
    if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING)
        return luaL_error(L, "http: method must be a string");
    lua_getfield(L, 1, "body");
    o.body = lua_tolstring(L, -1, &o.body_len);
    if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING)
        return luaL_error(L, "http: body must be a string");
    lua_getfield(L, 1, "timeout_ms");
    o.timeout_ms = (uint64_t)luaL_optinteger(L, -1, 0);
    lua_getfield(L, 1, "max_bytes");
    o.max_bytes = (size_t)luaL_optinteger(L, -1, 0);
    o.headers = header_vector(L, 1);
    char err[256];
    khttp *h = krt_http(x->rt, err, sizeof err);
    if (!h)
        return lkiro_fail(L, err);
    lhttp *q = lua_newuserdatauv(L, sizeof *q, 0);
    q->x = x;
    q->r = NULL;
    q->ctx = LUA_NOREF;
    luaL_setmetatable(L, HTTP_MT);
    khttp_sink sink = { http_head, http_data, http_end, q };
    q->r = khttp_start(h, &o, &sink, err, sizeof err);
    if (!q->r)
        return lkiro_fail(L, err);
    lua_pushvalue(L, 2);
    q->ctx = luaL_ref(L, LUA_REGISTRYINDEX);
    return 1;
}
