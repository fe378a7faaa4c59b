/* Local IPC seen from Lua: connections and listeners (the server socket,
 * the metrics endpoint), their events and limits. Included by kiro.c. */

#define CONN_MT "kiro.conn"
#define LISTENER_MT "kiro.listener"

typedef struct lconn {
    kipc_conn *c;
    lrt *x;
    int ctx;
    int json; /* lines are decoded here: Lua gets values, not text */
} lconn;

typedef struct llistener {
    kipc_listener *l;
    lrt *x;
    int ctx;
    int json; /* for its connections */
} llistener;

static void conn_connected(void *ud, int status)
{
    lconn *k = ud;
    if (k->ctx == LUA_NOREF || !k->x->L)
        return;
    push_event(k->x, k->ctx, "connect");
    if (status == 0) {
        lua_pushnil(k->x->L);
        lua_pushnil(k->x->L);
    } else {
        lua_pushstring(k->x->L, uv_err_name(status));
        lua_pushstring(k->x->L, uv_strerror(status));
    }
    call_cb(k->x, 4);
}

/* A line: its text, or on a JSON connection its value and nil, or nil and
 * why it is not JSON (decoded straight from the read buffer: a large
 * request is never also a Lua string of its text). */
static void conn_line(void *ud, const char *line, size_t n)
{
    lconn *k = ud;
    if (k->ctx == LUA_NOREF || !k->x->L)
        return;
    push_event(k->x, k->ctx, "line");
    if (k->json) {
        ljson_push_decoded(k->x->L, line, n);
        call_cb(k->x, 4);
    } else {
        lua_pushlstring(k->x->L, line, n);
        call_cb(k->x, 3);
    }
}

static void conn_closed(void *ud, const char *why)
{
    lconn *k = ud;
    k->c = NULL; /* ipc frees it */
    if (k->ctx == LUA_NOREF || !k->x->L)
        return;
    int ctx = k->ctx;
    k->ctx = LUA_NOREF; /* its last event: the owner is no longer anchored by it */
    push_event(k->x, ctx, "close");
    lua_pushstring(k->x->L, why);
    call_cb(k->x, 3);
    luaL_unref(k->x->L, LUA_REGISTRYINDEX, ctx);
}

static void conn_drained(void *ud)
{
    lconn *k = ud;
    if (k->ctx == LUA_NOREF || !k->x->L)
        return;
    push_event(k->x, k->ctx, "drain");
    call_cb(k->x, 2);
}

static const kipc_conn_cbs conn_cbs = { conn_connected, conn_line, conn_closed, conn_drained };

static lconn *push_conn(lua_State *L, lrt *x, kipc_conn *c, int json)
{
    lconn *k = lua_newuserdatauv(L, sizeof *k, 0);
    k->c = c;
    k->x = x;
    k->ctx = LUA_NOREF;
    k->json = json;
    luaL_setmetatable(L, CONN_MT);
    return k;
}

/* The value at idx receives the connection's events from now on. */
static void attach(lua_State *L, lconn *k, int idx)
{
    luaL_unref(L, LUA_REGISTRYINDEX, k->ctx);
    lua_pushvalue(L, idx);
    k->ctx = luaL_ref(L, LUA_REGISTRYINDEX);
    kipc_attach(k->c, &conn_cbs, k);
}

/* core.connect(path, ctx [, json]) -> conn; events: connect(err, msg),
 * line (text; with json, value and error), close */
static int l_connect(lua_State *L)
{
    lrt *x = get_lrt(L);
    const char *path = luaL_checkstring(L, 1);
    luaL_checkany(L, 2);
    int json = lua_toboolean(L, 3);
    lconn *k = push_conn(L, x, kipc_connect(x->rt->core.loop, path, 0), json);
    attach(L, k, 2);
    return 1;
}

static int conn_attach(lua_State *L)
{
    lconn *k = luaL_checkudata(L, 1, CONN_MT);
    luaL_checkany(L, 2);
    if (!k->c)
        return luaL_error(L, "connection is closed");
    attach(L, k, 2);
    return 0;
}

static int unread_refused(lua_State *L)
{
    lua_pushnil(L);
    lua_pushliteral(L, "the peer is not reading: it has more unread bytes than its limit");
    return 2;
}

/* conn:send(data) -> true; false when closed; nil, message when the peer
 * leaves more unread than its listener allows (nothing is queued then). */
static int conn_send(lua_State *L)
{
    lconn *k = luaL_checkudata(L, 1, CONN_MT);
    size_t n;
    const char *s = luaL_checklstring(L, 2, &n);
    if (!k->c) {
        lua_pushboolean(L, 0);
        return 1;
    }
    if (kipc_send(k->c, s, n) != 0)
        return unread_refused(L);
    lua_pushboolean(L, 1);
    return 1;
}

/* conn:unread() -> bytes queued to the peer that it has not read */
static int conn_unread(lua_State *L)
{
    lconn *k = luaL_checkudata(L, 1, CONN_MT);
    lua_pushinteger(L, k->c ? (lua_Integer)kipc_unread(k->c) : 0);
    return 1;
}

/* conn:notify_drain(bytes): a "drain" event once the peer's unread bytes
 * fall to `bytes` or fewer. */
static int conn_notify_drain(lua_State *L)
{
    lconn *k = luaL_checkudata(L, 1, CONN_MT);
    lua_Integer below = luaL_checkinteger(L, 2);
    if (k->c)
        kipc_notify_drain(k->c, below < 0 ? 0 : (size_t)below);
    return 0;
}

/* conn:send_json(value): as send, for value as one line of JSON, encoded
 * straight into the buffer that is written. */
static int conn_send_json(lua_State *L)
{
    lconn *k = luaL_checkudata(L, 1, CONN_MT);
    luaL_checkany(L, 2);
    if (!k->c) {
        lua_pushboolean(L, 0);
        return 1;
    }
    size_t n;
    char *line = ljson_encode_line(L, 2, &n);
    if (kipc_send_owned(k->c, line, n) != 0)
        return unread_refused(L);
    lua_pushboolean(L, 1);
    return 1;
}

/* Reads all of fd 0 into one buffer that starts `room` bytes in (so a header
 * can go before it without a copy). NULL with errno on a read error. */
static char *slurp_stdin(size_t room, size_t *len)
{
    struct stat st;
    size_t cap = 65536, n = 0;
    if (fstat(0, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0)
        cap = (size_t)st.st_size + 1; /* +1: EOF is seen without a regrow */
    char *buf = kmalloc(room + cap);
    for (;;) {
        if (n == cap) {
            cap *= 2; /* pages not yet touched cost no memory */
            buf = krealloc(buf, room + cap);
        }
        ssize_t r = read(0, buf + room + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            free(buf);
            return NULL;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    *len = n;
    return buf;
}

/* conn:send_stdin_prompt(head, strip_newline, max_prompt)
 *   -> bytes sent, or nil, message, kind ("empty", "utf8", "size", "read",
 *      "closed")
 * Sends one request line whose prompt is all of stdin: head is the
 * request's JSON object without its closing brace, and the prompt is
 * appended as its last field. Stdin is read into the buffer that is sent
 * and escaped there in place: a prompt of any size costs about its own size
 * once, never a Lua string or a second copy. */
static int conn_send_stdin_prompt(lua_State *L)
{
    lconn *k = luaL_checkudata(L, 1, CONN_MT);
    size_t hl;
    const char *head = luaL_checklstring(L, 2, &hl);
    int strip = lua_toboolean(L, 3);
    lua_Integer max_prompt = luaL_optinteger(L, 4, 0);
    size_t body, esc, bad = 0;
    if (!k->c) {
        lua_pushnil(L);
        lua_pushliteral(L, "the connection to the server is closed");
        lua_pushliteral(L, "closed");
        return 3;
    }
    static const char field[] = ",\"prompt\":\"", tail[] = "\"}\n";
    size_t room = hl + (sizeof field - 1);
    char *buf = slurp_stdin(room, &body);
    if (!buf) {
        lua_pushnil(L);
        lua_pushfstring(L, "cannot read the prompt from stdin: %s", strerror(errno));
        lua_pushliteral(L, "read");
        return 3;
    }
    char *text = buf + room;
    if (strip && body && text[body - 1] == '\n')
        body--;
    const char *kind = NULL;
    if (body == 0)
        kind = "empty";
    else if (kjstr_measure(text, body, &esc, &bad) != 0)
        kind = "utf8";
    size_t total = kind ? 0 : room + esc + sizeof tail - 1;
    if (!kind && max_prompt > 0 && body > (size_t)max_prompt)
        kind = "size";
    if (kind) {
        free(buf);
        lua_pushnil(L);
        if (kind[0] == 'e')
            lua_pushliteral(L, "empty prompt (give -m TEXT or text on stdin)");
        else if (kind[0] == 'u')
            lua_pushfstring(L, "the prompt is not valid UTF-8 (byte %I of stdin)", (lua_Integer)bad);
        else
            lua_pushfstring(L, "the prompt is %I bytes; the server takes at most %I (max_request_bytes)",
                            (lua_Integer)body, max_prompt);
        lua_pushstring(L, kind);
        return 3;
    }
    buf = krealloc(buf, total);
    text = buf + room;
    kjstr_write_in_place(text, body, 0, esc); /* escaped where it lies */
    memcpy(buf, head, hl);
    memcpy(buf + hl, field, sizeof field - 1);
    memcpy(text + esc, tail, sizeof tail - 1);
    if (kipc_send_owned(k->c, buf, total) != 0)
        return unread_refused(L);
    lua_pushinteger(L, (lua_Integer)total);
    return 1;
}

/* conn:close([abort]): pending writes are flushed first, unless `abort`. */
static int conn_close(lua_State *L)
{
    lconn *k = luaL_checkudata(L, 1, CONN_MT);
    if (k->c && lua_toboolean(L, 2))
        kipc_abort(k->c);
    else if (k->c)
        kipc_close(k->c);
    k->c = NULL;
    luaL_unref(L, LUA_REGISTRYINDEX, k->ctx);
    k->ctx = LUA_NOREF;
    return 0;
}

static void on_accept(void *ud, kipc_conn *c)
{
    llistener *ls = ud;
    lrt *x = ls->x;
    if (ls->ctx == LUA_NOREF || !x->L) {
        kipc_close(c);
        return;
    }
    push_event(x, ls->ctx, "accept");
    push_conn(x->L, x, c, ls->json);
    call_cb(x, 3);
}

static llistener *new_listener(lua_State *L, lrt *x)
{
    llistener *ls = lua_newuserdatauv(L, sizeof *ls, 0);
    memset(ls, 0, sizeof *ls);
    ls->x = x;
    ls->ctx = LUA_NOREF;
    luaL_setmetatable(L, LISTENER_MT);
    return ls;
}

/* Reads the optional limits table at idx: { max_line=, max_buffered=,
 * max_unread=, max_conns=, idle_ms=, lifetime_ms= } (0 or absent: none),
 * and its `json` flag (connections hand over decoded lines). */
static int get_limits(lua_State *L, int idx, kipc_limits *lim)
{
    memset(lim, 0, sizeof *lim);
    if (lua_isnoneornil(L, idx))
        return 0;
    luaL_checktype(L, idx, LUA_TTABLE);
    static const char *const names[] = { "max_line",  "max_buffered", "max_unread",
                                         "max_conns", "idle_ms",      "lifetime_ms" };
    lua_Integer v[6];
    for (int i = 0; i < 6; i++) {
        lua_getfield(L, idx, names[i]);
        v[i] = luaL_optinteger(L, -1, 0);
        luaL_argcheck(L, v[i] >= 0, idx, "limits must not be negative");
        lua_pop(L, 1);
    }
    lim->max_line = (size_t)v[0];
    lim->max_buffered = (size_t)v[1];
    lim->max_unread = (size_t)v[2];
    lim->max_conns = v[3] > INT_MAX ? INT_MAX : (int)v[3];
    lim->idle_ms = (uint64_t)v[4];
    lim->lifetime_ms = (uint64_t)v[5];
    lua_getfield(L, idx, "json");
    int json = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return json;
}

/* core.listen(path, ctx [, limits]) -> listener, or nil, message;
 * events: accept(conn) */
static int l_listen(lua_State *L)
{
    lrt *x = get_lrt(L);
    const char *path = luaL_checkstring(L, 1);
    luaL_checkany(L, 2);
    kipc_limits lim;
    int json = get_limits(L, 3, &lim);
    llistener *ls = new_listener(L, x);
    ls->json = json;
    char err[512];
    if (kipc_listen(x->rt->core.loop, path, &lim, on_accept, ls, &ls->l, err, sizeof err) != 0)
        return lkiro_fail(L, err);
    lua_pushvalue(L, 2);
    ls->ctx = luaL_ref(L, LUA_REGISTRYINDEX);
    return 1;
}

/* core.listen_tcp(host, port, ctx [, limits]) -> listener, port; or nil, message */
static int l_listen_tcp(lua_State *L)
{
    lrt *x = get_lrt(L);
    const char *host = luaL_checkstring(L, 1);
    lua_Integer port = luaL_checkinteger(L, 2);
    luaL_checkany(L, 3);
    luaL_argcheck(L, port >= 0 && port <= 65535, 2, "port out of range");
    kipc_limits lim;
    int json = get_limits(L, 4, &lim);
    llistener *ls = new_listener(L, x);
    ls->json = json;
    char err[512];
    if (kipc_listen_tcp(x->rt->core.loop, host, (int)port, &lim, on_accept, ls, &ls->l, err, sizeof err) != 0)
        return lkiro_fail(L, err);
    lua_pushvalue(L, 3);
    ls->ctx = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushinteger(L, kipc_listener_port(ls->l));
    return 2;
}

static int listener_close(lua_State *L)
{
    llistener *ls = luaL_checkudata(L, 1, LISTENER_MT);
    if (ls->l && ls->x->rt)
        kipc_listener_close(ls->l);
    ls->l = NULL;
    luaL_unref(L, LUA_REGISTRYINDEX, ls->ctx);
    ls->ctx = LUA_NOREF;
    return 0;
}

/* listener:hold(n) -> true, or false when n more bytes would take the
 * listener past its max_buffered (nothing is held then); n < 0 releases. */
static int listener_hold(lua_State *L)
{
    llistener *ls = luaL_checkudata(L, 1, LISTENER_MT);
    lua_Integer n = luaL_checkinteger(L, 2);
    lua_pushboolean(L, !ls->l || kipc_listener_hold(ls->l, n) == 0);
    return 1;
}

/* listener:buffered() -> bytes of unfinished lines plus bytes held */
static int listener_buffered(lua_State *L)
{
    llistener *ls = luaL_checkudata(L, 1, LISTENER_MT);
    lua_pushinteger(L, ls->l ? (lua_Integer)kipc_listener_buffered(ls->l) : 0);
    return 1;
}

/* core.server_paths() -> dir, socket: where the server lives
 * (kipc_server_dir). */
static int l_server_paths(lua_State *L)
{
    char dir[PATH_MAX], sock[PATH_MAX];
    if (kipc_server_dir(dir, sizeof dir) != 0 || kipc_server_socket(sock, sizeof sock) != 0)
        return luaL_error(L, "XDG_RUNTIME_DIR is too long for a socket path");
    lua_pushstring(L, dir);
    lua_pushstring(L, sock);
    return 2;
}

extern char **environ;

/* core.backend_env() -> { NAME = value }: the client's variables that go
 * to its backend (kipc_backend_var). */
static int l_backend_env(lua_State *L)
{
    lua_newtable(L);
    for (char **e = environ; e && *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq || !kipc_backend_var(*e))
            continue;
        lua_pushlstring(L, *e, (size_t)(eq - *e));
        lua_pushstring(L, eq + 1);
        lua_rawset(L, -3);
    }
    return 1;
}

static int l_secure_dir(lua_State *L)
{
    char err[512];
    if (kipc_secure_dir(luaL_checkstring(L, 1), err, sizeof err) != 0) {
        return lkiro_fail(L, err);
    }
    lua_pushboolean(L, 1);
    return 1;
}

static const luaL_Reg conn_methods[] = {
    { "attach", conn_attach },
    { "send", conn_send },
    { "send_json", conn_send_json },
    { "unread", conn_unread },
    { "notify_drain", conn_notify_drain },
    { "send_stdin_prompt", conn_send_stdin_prompt },
    { "close", conn_close },
    { NULL, NULL },
};

static const luaL_Reg listener_methods[] = {
    { "close", listener_close },
    { "hold", listener_hold },
    { "buffered", listener_buffered },
    { NULL, NULL },
};
