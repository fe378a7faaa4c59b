/* Requests: the C core's requests seen from Lua, their events, cancel and
 * flow control. Included by kiro.c. */

#define REQ_MT "kiro.request"

typedef struct lreq {
    lrt *lrt;
    kreq *r;
    int ctx;    /* the caller's object: it gets the events */
    int prompt; /* the prompt the request borrows, anchored until it ends */
} lreq;

/* Events: ctx:on_event("chunk", data), ctx:on_event("update", table) (what
 * the backend reported that is not reply text, decoded),
 * ctx:on_event("ask", token, table) (a question for ctx, when ctx.asks:
 * answered with request:answer(token, option)), and last
 * ctx:on_event("end", code, message) (code nil on success). */

/* Starts event ev for the request's ctx: the state to push its arguments
 * on, or NULL when nobody listens any more. */
static lua_State *begin_event(lreq *q, const char *ev)
{
    if (q->ctx == LUA_NOREF || !q->lrt->L)
        return NULL;
    push_event(q->lrt, q->ctx, ev);
    return q->lrt->L;
}

static void sink_chunk(void *ud, const char *data, size_t n)
{
    lreq *q = ud;
    lua_State *L = begin_event(q, "chunk");
    if (!L)
        return;
    lua_pushlstring(L, data, n);
    call_cb(q->lrt, 3);
}

static void sink_update(void *ud, const char *json, size_t n)
{
    lreq *q = ud;
    lua_State *L = begin_event(q, "update");
    if (!L)
        return;
    ljson_push_decoded(L, json, n);
    lua_pop(L, 1); /* the decoder's second value */
    call_cb(q->lrt, 3);
}

static void sink_ask(void *ud, int token, const char *json, size_t n)
{
    lreq *q = ud;
    lua_State *L = begin_event(q, "ask");
    if (!L)
        return;
    lua_pushinteger(L, token);
    ljson_push_decoded(L, json, n);
    lua_pop(L, 1); /* the decoder's second value */
    call_cb(q->lrt, 4);
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
        push_event(x, q->ctx, "end");
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

/* A duration field of the request's ctx, in ms: absent, the configured
 * default; 0, none. */
static uint64_t field_ms(lua_State *L, int t, const char *k, uint64_t dflt)
{
    lua_getfield(L, t, k);
    lua_Integer v = lua_isnil(L, -1) ? (lua_Integer)dflt : lua_tointeger(L, -1);
    lua_pop(L, 1);
    return v > 0 ? (uint64_t)v : 0;
}

/* core.request(backend, prompt, ctx) -> request. ctx receives the request's
 * events (ctx:on_event) and says how to make it: ctx.mode ("daemon" or
 * "oneshot"), ctx.stream, and its limits ctx.timeout_ms,
 * ctx.first_chunk_timeout_ms, ctx.stall_timeout_ms (absent: the configured
 * ones). */
static int l_request(lua_State *L)
{
    lrt *x = get_lrt(L);
    lbackend *b = check_backend(L, 1);
    size_t plen;
    const char *prompt = luaL_checklstring(L, 2, &plen);
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_settop(L, 3);
    lua_getfield(L, 3, "mode");
    const char *mode = lua_tostring(L, -1);
    int oneshot = mode && strcmp(mode, "oneshot") == 0;
    luaL_argcheck(L, oneshot || (mode && strcmp(mode, "daemon") == 0), 3, "mode must be daemon or oneshot");
    lua_pop(L, 1);
    lua_getfield(L, 3, "stream");
    int stream = lua_toboolean(L, -1);
    lua_pop(L, 1);

    lreq *q = lua_newuserdatauv(L, sizeof *q, 0);
    q->lrt = x;
    /* The request borrows the prompt: anchored until it ends, and not a
     * moment longer (a user value would live until the handle's finaliser). */
    lua_pushvalue(L, 2);
    q->prompt = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, 3);
    q->ctx = luaL_ref(L, LUA_REGISTRYINDEX);
    q->r = NULL;
    luaL_setmetatable(L, REQ_MT);
    kreq_sink sink = { sink_chunk, sink_end, q, sink_update, sink_ask };
    kreq *r = kreq_new(&x->rt->core, prompt, plen, stream, &sink);
    x->rt->core.stats.requests++;
    q->r = r;
    const kconfig *cfg = kbackend_config(b->b);
    r->timeout_ms = field_ms(L, 3, "timeout_ms", cfg->timeout_ms);
    r->first_chunk_ms = field_ms(L, 3, "first_chunk_timeout_ms", cfg->first_chunk_timeout_ms);
    r->stall_ms = field_ms(L, 3, "stall_timeout_ms", cfg->stall_timeout_ms);
    lua_getfield(L, 3, "asks");
    r->asks = lua_toboolean(L, -1);
    lua_pop(L, 1);
    /* A conversation's key: borrowed from ctx, which is anchored (with the
     * string) until the request ends. */
    /* The prompt form around it (opts.template): borrowed likewise. */
    size_t fl;
    lua_getfield(L, 3, "pre");
    r->pre = lua_tolstring(L, -1, &fl);
    r->pre_len = r->pre ? fl : 0;
    lua_getfield(L, 3, "post");
    r->post = lua_tolstring(L, -1, &fl);
    r->post_len = r->post ? fl : 0;
    lua_pop(L, 2);
    lua_getfield(L, 3, "session");
    luaL_argcheck(L, lua_isnil(L, -1) || lua_type(L, -1) == LUA_TSTRING, 3, "session must be a string");
    r->session = lua_tostring(L, -1);
    lua_pop(L, 1);
    kreq_start(r);
    krt_submit(x->rt, b->b, oneshot, r);
    raise_pending(L, x);
    return 1;
}

static int req_cancel_m(lua_State *L)
{
    lreq *q = luaL_checkudata(L, 1, REQ_MT);
    if (q->r) {
        q->lrt->L = L;
        kreq_cancel(q->r, KABORT_CANCEL, KERR_CANCELLED, luaL_optstring(L, 2, "cancelled by caller"));
        q->lrt->rt->core.stats.cancelled++;
    }
    return 0;
}

/* request:answer(token, option): the answer to the backend's question
 * token, an option's id, or nil (cancelled). */
static int req_answer_m(lua_State *L)
{
    lreq *q = luaL_checkudata(L, 1, REQ_MT);
    int token = (int)luaL_checkinteger(L, 2);
    const char *option = luaL_optstring(L, 3, NULL);
    if (q->r) {
        q->lrt->L = L;
        kreq_answer(q->r, token, option);
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
        q->lrt->rt->core.stats.cancelled++;
        kreq_cancel(q->r, KABORT_CANCEL, KERR_CANCELLED, "request handle collected");
    }
    return 0;
}

static const luaL_Reg request_methods[] = {
    { "cancel", req_cancel_m },
    { "pause", req_pause_m },
    { "answer", req_answer_m },
    { NULL, NULL },
};
