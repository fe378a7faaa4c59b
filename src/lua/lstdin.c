/* Standard input read on the loop, for a console (kiro-rt bot --console):
 * a terminal or a pipe as a libuv stream, a regular file by the loop's
 * file reads. Included by kiro.c. */

#define STDIN_MT "kiro.stdin"

typedef struct lstdin_state {
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_tty_t tty;
        uv_pipe_t pipe;
    } h;
    uv_fs_t fs;
    int is_file, in_read, stopped;
    lrt *x;
    int ctx;
    char buf[16384];
} lstdin_state;

/* A handle knows its reader by number: the reader's memory may be gone
 * (it ended) while the handle lives on. */
typedef struct lstdin {
    lrt *x;
    unsigned n;
} lstdin;

/* Events: ctx:on_event("data", bytes), and last ctx:on_event("eof", message)
 * (message nil at the end of input, else why reading failed). */
static void stdin_event(lstdin_state *s, const char *ev, const char *p, size_t n)
{
    if (s->ctx == LUA_NOREF || !s->x->L)
        return;
    push_event(s->x, s->ctx, ev);
    if (p)
        lua_pushlstring(s->x->L, p, n);
    else
        lua_pushnil(s->x->L);
    call_cb(s->x, 3);
}

static void stdin_closed(uv_handle_t *h)
{
    free(h->data);
}

/* Reading ends: no more events; the memory goes once libuv is done with it. */
static void stdin_stop(lstdin_state *s)
{
    if (s->stopped)
        return;
    s->stopped = 1;
    if (s->x->L && s->ctx != LUA_NOREF)
        luaL_unref(s->x->L, LUA_REGISTRYINDEX, s->ctx);
    s->ctx = LUA_NOREF;
    if (s->x->stdin_state == s)
        s->x->stdin_state = NULL;
    if (!s->is_file) {
        uv_read_stop(&s->h.stream);
        uv_close(&s->h.handle, stdin_closed);
    } else if (!s->in_read) {
        free(s);
    } /* else: the read under way frees it */
}

static void stdin_end(lstdin_state *s, const char *why)
{
    stdin_event(s, "eof", why, why ? strlen(why) : 0);
    stdin_stop(s);
}

static void stdin_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    lstdin_state *s = h->data;
    *buf = uv_buf_init(s->buf, sizeof s->buf);
}

static void stdin_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    lstdin_state *s = st->data;
    if (n > 0)
        stdin_event(s, "data", buf->base, (size_t)n);
    else if (n == UV_EOF)
        stdin_end(s, NULL);
    else if (n < 0)
        stdin_end(s, uv_strerror((int)n));
}

static void file_next(lstdin_state *s);

static void file_read(uv_fs_t *req)
{
    lstdin_state *s = req->data;
    ssize_t n = req->result;
    uv_fs_req_cleanup(req);
    s->in_read = 0;
    if (s->stopped) {
        free(s);
        return;
    }
    if (n > 0) {
        stdin_event(s, "data", s->buf, (size_t)n);
        if (!s->stopped)
            file_next(s);
    } else {
        stdin_end(s, n < 0 ? uv_strerror((int)n) : NULL);
    }
}

static void file_next(lstdin_state *s)
{
    uv_buf_t b = uv_buf_init(s->buf, sizeof s->buf);
    s->in_read = 1;
    s->fs.data = s;
    if (uv_fs_read(s->x->rt->core.loop, &s->fs, 0, &b, 1, -1, file_read) != 0) {
        s->in_read = 0;
        stdin_end(s, "cannot read standard input");
    }
}

/* reader:stop(): no more events. */
static int stdin_gc(lua_State *L)
{
    lstdin *r = luaL_checkudata(L, 1, STDIN_MT);
    if (r->x && r->x->stdin_state && r->x->stdin_n == r->n)
        stdin_stop(r->x->stdin_state);
    r->x = NULL;
    return 0;
}

static const luaL_Reg stdin_methods[] = {
    { "stop", stdin_gc },
    { NULL, NULL },
};

/* core.stdin(ctx) -> reader, or nil and a message: standard input, read
 * on the loop (one reader at a time). */
static int l_stdin(lua_State *L)
{
    lrt *x = get_lrt(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    if (x->stdin_state)
        return lkiro_fail(L, "standard input is being read already");
    uv_loop_t *loop = x->rt->core.loop;
    lstdin_state *s = kcalloc(1, sizeof *s);
    s->x = x;
    s->ctx = LUA_NOREF;
    int rc = 0;
    switch (uv_guess_handle(0)) {
    case UV_TTY:
        rc = uv_tty_init(loop, &s->h.tty, 0, 1);
        break;
    case UV_NAMED_PIPE:
        rc = uv_pipe_init(loop, &s->h.pipe, 0);
        if (rc == 0 && (rc = uv_pipe_open(&s->h.pipe, 0)) != 0) {
            s->h.handle.data = s;
            uv_close(&s->h.handle, stdin_closed); /* which frees it */
            return lkiro_fail(L, uv_strerror(rc));
        }
        break;
    case UV_FILE:
        s->is_file = 1;
        break;
    default:
        rc = UV_EINVAL;
    }
    if (rc != 0) {
        free(s);
        return lkiro_fail(L, "standard input cannot be read on the loop (a terminal, a pipe or a file can)");
    }
    s->h.handle.data = s;
    lua_pushvalue(L, 1);
    s->ctx = luaL_ref(L, LUA_REGISTRYINDEX);
    x->stdin_state = s;
    if (s->is_file)
        file_next(s);
    else
        uv_read_start(&s->h.stream, stdin_alloc, stdin_read);
    lstdin *r = lua_newuserdatauv(L, sizeof *r, 0);
    r->x = x;
    r->n = ++x->stdin_n;
    luaL_setmetatable(L, STDIN_MT);
    return 1;
}
