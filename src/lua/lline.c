/* A console's line editor: a terminal's input read a line at a time with
 * editing and a history (the arrow keys recall earlier lines, kept in a
 * file between runs), on the loop. libedit (BSD; loaded when a console
 * first asks, like libcurl) reads the keys through its callback interface,
 * fed when a poll of fd 0 says one came; between prompts it holds nothing,
 * so a reply streams to a terminal in its usual mode and Ctrl-C is a
 * signal. Included by kiro.c. */

#include <editline/readline.h>
#include <sys/stat.h>

#define LINE_MT "kiro.line"

static struct {
    __typeof__(rl_callback_handler_install) *callback_handler_install;
    __typeof__(rl_callback_read_char) *callback_read_char;
    __typeof__(rl_callback_handler_remove) *callback_handler_remove;
    __typeof__(using_history) *using_history;
    __typeof__(stifle_history) *stifle_history;
    __typeof__(add_history) *add_history;
    __typeof__(read_history) *read_history;
    __typeof__(write_history) *write_history;
    int *catch_signals;         /* rl_catch_signals: libuv owns the signals */
    const char **readline_name; /* rl_readline_name: for ~/.editrc's settings */
} E;

static int load_edit(char *err, size_t errlen)
{
    static kos_lib lib = { "libedit.so.2", "Line editing", 0, "" };
    static const kos_sym syms[] = {
#define SYM(f) { (void **)&E.f, "rl_" #f }
        SYM(callback_handler_install),
        SYM(callback_read_char),
        SYM(callback_handler_remove),
        SYM(catch_signals),
        SYM(readline_name),
#undef SYM
        { (void **)&E.using_history, "using_history" },
        { (void **)&E.stifle_history, "stifle_history" },
        { (void **)&E.add_history, "add_history" },
        { (void **)&E.read_history, "read_history" },
        { (void **)&E.write_history, "write_history" },
    };
    return kos_lib_load(&lib, syms, sizeof syms / sizeof *syms, err, errlen);
}

typedef struct lline_state {
    uv_poll_t poll;
    lrt *x;
    int ctx;       /* the reader: ctx:on_event("line", text) and ("eof", message) */
    int prompting; /* libedit holds the terminal and reads the keys */
    int stopped;
    char *history; /* its file, or NULL */
    char *prompt;
    struct lline_state **owner; /* the Lua handle's pointer to it, cleared when it stops */
} lline_state;

/* libedit's line handler takes no argument: one editor at a time. */
static lline_state *editing;

static void line_event(lline_state *s, const char *ev, const char *text)
{
    if (s->ctx == LUA_NOREF || !s->x->L)
        return;
    push_event(s->x, s->ctx, ev);
    if (text)
        lua_pushstring(s->x->L, text);
    else
        lua_pushnil(s->x->L);
    call_cb(s->x, 3);
}

/* The prompt goes: the terminal is as it was, until the next prompt. */
static void line_hold(lline_state *s)
{
    if (!s->prompting)
        return;
    s->prompting = 0;
    E.callback_handler_remove();
    uv_poll_stop(&s->poll);
}

static void line_closed(uv_handle_t *h)
{
    lline_state *s = h->data;
    free(s->history);
    free(s->prompt);
    free(s);
}

static void line_stop(lline_state *s)
{
    if (s->stopped)
        return;
    s->stopped = 1;
    line_hold(s);
    if (s->x->L && s->ctx != LUA_NOREF)
        luaL_unref(s->x->L, LUA_REGISTRYINDEX, s->ctx);
    s->ctx = LUA_NOREF;
    if (editing == s)
        editing = NULL;
    if (s->owner)
        *s->owner = NULL;
    uv_close((uv_handle_t *)&s->poll, line_closed);
}

/* The runtime closes: its editor stops. */
static void line_stop_all(lrt *x)
{
    if (editing && editing->x == x)
        line_stop(editing);
}

/* A line came (NULL: the end of input, Ctrl-D on an empty line). */
static void on_line(char *text)
{
    lline_state *s = editing;
    if (!s) {
        free(text);
        return;
    }
    line_hold(s); /* (before the reply: libedit would show its prompt again) */
    if (!text) {
        line_event(s, "eof", NULL);
        return;
    }
    if (*text) {
        E.add_history(text);
        if (s->history && E.write_history(s->history) == 0)
            chmod(s->history, 0600); /* (what one typed is one's own) */
    }
    line_event(s, "line", text);
    free(text);
}

static void on_key(uv_poll_t *p, int status, int events)
{
    (void)events;
    lline_state *s = p->data;
    if (status < 0) {
        line_hold(s);
        line_event(s, "eof", uv_strerror(status));
        return;
    }
    E.callback_read_char();
}

static lline_state *check_line(lua_State *L)
{
    lline_state **u = luaL_checkudata(L, 1, LINE_MT);
    luaL_argcheck(L, *u != NULL, 1, "the line editor has stopped");
    return *u;
}

/* editor:prompt(text): shows text and reads a line, edited, into a "line"
 * event (or "eof"). */
static int line_prompt(lua_State *L)
{
    lline_state *s = check_line(L);
    const char *text = luaL_optstring(L, 2, "");
    line_hold(s);
    free(s->prompt);
    s->prompt = kstrdup(text);
    editing = s;
    E.callback_handler_install(s->prompt, on_line);
    s->prompting = 1;
    uv_poll_start(&s->poll, UV_READABLE, on_key);
    return 0;
}

/* editor:hold(): the prompt goes (the terminal is as it was). */
static int line_hold_l(lua_State *L)
{
    line_hold(check_line(L));
    return 0;
}

/* editor:stop(): no more events; the terminal is as it was. */
static int line_gc(lua_State *L)
{
    lline_state **u = luaL_checkudata(L, 1, LINE_MT);
    if (*u) {
        (*u)->owner = NULL;
        line_stop(*u);
    }
    *u = NULL;
    return 0;
}

static const luaL_Reg line_methods[] = {
    { "prompt", line_prompt },
    { "hold", line_hold_l },
    { "stop", line_gc },
    { NULL, NULL },
};

/* core.line_editor(ctx [, history_file]) -> editor, or nil and why not (no
 * terminal on both sides, or no libedit): a terminal's lines, edited, with
 * a history kept in history_file (made private) between runs. */
static int l_line_editor(lua_State *L)
{
    lrt *x = get_lrt(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    const char *history = luaL_optstring(L, 2, NULL);
    if (!isatty(0) || !isatty(1))
        return lkiro_fail(L, "line editing needs a terminal");
    if (editing)
        return lkiro_fail(L, "a line editor is in use already");
    char err[300];
    if (load_edit(err, sizeof err) != 0)
        return lkiro_fail(L, err);
    lline_state *s = kcalloc(1, sizeof *s);
    int rc = uv_poll_init(x->rt->core.loop, &s->poll, 0);
    if (rc != 0) {
        free(s);
        return lkiro_fail(L, uv_strerror(rc));
    }
    s->poll.data = s;
    s->x = x;
    *E.readline_name = "kiro-rt";
    *E.catch_signals = 0;
    E.using_history();
    E.stifle_history(1000);
    if (history) {
        s->history = kstrdup(history);
        E.read_history(history); /* (none yet: a first run) */
    }
    lua_pushvalue(L, 1);
    s->ctx = luaL_ref(L, LUA_REGISTRYINDEX);
    editing = s;
    lline_state **u = lua_newuserdatauv(L, sizeof *u, 0);
    *u = s;
    s->owner = u;
    luaL_setmetatable(L, LINE_MT);
    return 1;
}
