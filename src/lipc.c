/* Lua binding for the server's local IPC (ipc.c) and the process chores of
 * a background server: a lock file, a detached start, the executable path. */
#define _GNU_SOURCE /* pipe2 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "buf.h"
#include "ipc.h"
#include "lkiro.h"
#include "proc.h"

#define CONN_MT "kiro.conn"
#define LISTENER_MT "kiro.listener"
#define LOCK_MT "kiro.lock"

typedef struct lconn {
    ipc_conn *c;
    lrt *x;
    int ctx;
} lconn;

typedef struct llistener {
    ipc_listener *l;
    lrt *x;
    int ctx;
} llistener;

static void dispatch(lrt *x, int ctx, const char *ev)
{
    lua_State *L = x->L;
    luaL_checkstack(L, 6, NULL);
    lua_rawgeti(L, LUA_REGISTRYINDEX, x->dispatch_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ctx);
    lua_pushstring(L, ev);
}

static void conn_connected(void *ud, int status)
{
    lconn *k = ud;
    if (k->ctx == LUA_NOREF || !k->x->L)
        return;
    dispatch(k->x, k->ctx, "connect");
    if (status == 0) {
        lua_pushnil(k->x->L);
        lua_pushnil(k->x->L);
    } else {
        lua_pushstring(k->x->L, uv_err_name(status));
        lua_pushstring(k->x->L, uv_strerror(status));
    }
    call_cb(k->x, 4);
}

static void conn_line(void *ud, const char *line, size_t n)
{
    lconn *k = ud;
    if (k->ctx == LUA_NOREF || !k->x->L)
        return;
    dispatch(k->x, k->ctx, "line");
    lua_pushlstring(k->x->L, line, n);
    call_cb(k->x, 3);
}

static void conn_closed(void *ud, const char *why)
{
    lconn *k = ud;
    k->c = NULL; /* ipc frees it */
    if (k->ctx == LUA_NOREF || !k->x->L)
        return;
    dispatch(k->x, k->ctx, "close");
    lua_pushstring(k->x->L, why);
    call_cb(k->x, 3);
}

static const ipc_conn_cbs conn_cbs = { conn_connected, conn_line, conn_closed };

static lconn *push_conn(lua_State *L, lrt *x, ipc_conn *c)
{
    lconn *k = lua_newuserdatauv(L, sizeof *k, 0);
    k->c = c;
    k->x = x;
    k->ctx = LUA_NOREF;
    luaL_setmetatable(L, CONN_MT);
    return k;
}

/* The value at idx receives the connection's events from now on. */
static void attach(lua_State *L, lconn *k, int idx)
{
    luaL_unref(L, LUA_REGISTRYINDEX, k->ctx);
    lua_pushvalue(L, idx);
    k->ctx = luaL_ref(L, LUA_REGISTRYINDEX);
    ipc_attach(k->c, &conn_cbs, k);
}

/* core.connect(path, ctx) -> conn; events: connect(err, msg), line, close */
static int l_connect(lua_State *L)
{
    lrt *x = get_lrt(L);
    const char *path = luaL_checkstring(L, 1);
    luaL_checkany(L, 2);
    lconn *k = push_conn(L, x, ipc_connect(x->rt->loop, path, 0));
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

static int conn_send(lua_State *L)
{
    lconn *k = luaL_checkudata(L, 1, CONN_MT);
    size_t n;
    const char *s = luaL_checklstring(L, 2, &n);
    if (!k->c) {
        lua_pushboolean(L, 0);
        return 1;
    }
    ipc_send(k->c, s, n);
    lua_pushboolean(L, 1);
    return 1;
}

static int conn_close(lua_State *L)
{
    lconn *k = luaL_checkudata(L, 1, CONN_MT);
    if (k->c)
        ipc_close(k->c);
    k->c = NULL;
    luaL_unref(L, LUA_REGISTRYINDEX, k->ctx);
    k->ctx = LUA_NOREF;
    return 0;
}

static void on_accept(void *ud, ipc_conn *c)
{
    llistener *ls = ud;
    lrt *x = ls->x;
    if (ls->ctx == LUA_NOREF || !x->L) {
        ipc_close(c);
        return;
    }
    dispatch(x, ls->ctx, "accept");
    push_conn(x->L, x, c);
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

static int listen_failed(lua_State *L, const char *err)
{
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
}

/* core.listen(path, ctx) -> listener, or nil, message; events: accept(conn) */
static int l_listen(lua_State *L)
{
    lrt *x = get_lrt(L);
    const char *path = luaL_checkstring(L, 1);
    luaL_checkany(L, 2);
    llistener *ls = new_listener(L, x);
    char err[512];
    if (ipc_listen(x->rt->loop, path, on_accept, ls, &ls->l, err, sizeof err) != 0)
        return listen_failed(L, err);
    lua_pushvalue(L, 2);
    ls->ctx = luaL_ref(L, LUA_REGISTRYINDEX);
    return 1;
}

/* core.listen_tcp(host, port, ctx) -> listener, port; or nil, message */
static int l_listen_tcp(lua_State *L)
{
    lrt *x = get_lrt(L);
    const char *host = luaL_checkstring(L, 1);
    int port = (int)luaL_checkinteger(L, 2);
    luaL_checkany(L, 3);
    luaL_argcheck(L, port >= 0 && port <= 65535, 2, "port out of range");
    llistener *ls = new_listener(L, x);
    char err[512];
    if (ipc_listen_tcp(x->rt->loop, host, port, on_accept, ls, &ls->l, err, sizeof err) != 0)
        return listen_failed(L, err);
    lua_pushvalue(L, 3);
    ls->ctx = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushinteger(L, ipc_listener_port(ls->l));
    return 2;
}

static int listener_close(lua_State *L)
{
    llistener *ls = luaL_checkudata(L, 1, LISTENER_MT);
    if (ls->l && ls->x->rt)
        ipc_listener_close(ls->l);
    ls->l = NULL;
    luaL_unref(L, LUA_REGISTRYINDEX, ls->ctx);
    ls->ctx = LUA_NOREF;
    return 0;
}

static int l_secure_dir(lua_State *L)
{
    char err[512];
    if (ipc_secure_dir(luaL_checkstring(L, 1), err, sizeof err) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* core.lock(path) -> lock, or nil, message, "busy" when another holds it.
 * The lock dies with the process, so a killed server never leaves it stale. */
static int l_lock(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "cannot open %s: %s", path, strerror(errno));
        return 2;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        close(fd);
        lua_pushnil(L);
        lua_pushfstring(L, "%s is locked: %s", path, strerror(e));
        lua_pushstring(L, e == EWOULDBLOCK ? "busy" : "error");
        return 3;
    }
    int *u = lua_newuserdatauv(L, sizeof *u, 0);
    *u = fd;
    luaL_setmetatable(L, LOCK_MT);
    return 1;
}

static int lock_release(lua_State *L)
{
    int *u = luaL_checkudata(L, 1, LOCK_MT);
    if (*u >= 0)
        close(*u);
    *u = -1;
    return 0;
}

/* core.start_detached(argv, logfile) -> pid, or nil, message. Double fork:
 * the grandchild runs in a session of its own, is nobody's child here, and
 * writes stdout and stderr to logfile. No shell is involved. */
static int l_start_detached(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    const char *log = luaL_checkstring(L, 2);
    int n = (int)lua_rawlen(L, 1);
    luaL_argcheck(L, n >= 1, 1, "argv is empty");
    char **argv = lua_newuserdatauv(L, (size_t)(n + 1) * sizeof *argv, 0);
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, 1, i + 1);
        argv[i] = (char *)luaL_checkstring(L, -1);
        lua_pop(L, 1); /* the table keeps the string */
    }
    argv[n] = NULL;
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) != 0)
        return luaL_error(L, "pipe: %s", strerror(errno));
    pid_t child = fork();
    if (child < 0) {
        close(pfd[0]);
        close(pfd[1]);
        lua_pushnil(L);
        lua_pushfstring(L, "fork: %s", strerror(errno));
        return 2;
    }
    if (child == 0) {
        /* Only async-signal-safe calls from here to exec. */
        close(pfd[0]);
        setsid();
        pid_t gc = fork();
        if (gc != 0) {
            if (gc > 0)
                (void)!write(pfd[1], &gc, sizeof gc);
            _exit(gc > 0 ? 0 : 1);
        }
        int in = open("/dev/null", O_RDONLY);
        int out = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (in < 0 || out < 0)
            _exit(127);
        dup2(in, 0);
        dup2(out, 1);
        dup2(out, 2);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        execv(argv[0], argv);
        _exit(127);
    }
    close(pfd[1]);
    pid_t gc = 0;
    ssize_t r;
    do
        r = read(pfd[0], &gc, sizeof gc);
    while (r < 0 && errno == EINTR);
    close(pfd[0]);
    int status;
    while (waitpid(child, &status, 0) < 0 && errno == EINTR)
        ;
    if (r != sizeof gc) {
        lua_pushnil(L);
        lua_pushliteral(L, "could not start the background process");
        return 2;
    }
    lua_pushinteger(L, gc);
    return 1;
}

/* core.mkdir(path): mkdir 0700; true if it exists afterwards. */
static int l_mkdir(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    if (mkdir(path, 0700) != 0 && errno != EEXIST) {
        lua_pushnil(L);
        lua_pushfstring(L, "cannot create %s: %s", path, strerror(errno));
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

extern char **environ;

/* core.environ() -> { NAME = value, ... } */
static int l_environ(lua_State *L)
{
    lua_newtable(L);
    for (char **e = environ; e && *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq)
            continue;
        lua_pushlstring(L, *e, (size_t)(eq - *e));
        lua_pushstring(L, eq + 1);
        lua_rawset(L, -3);
    }
    return 1;
}

static int l_exe(lua_State *L)
{
    char buf[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n < 0)
        return 0;
    lua_pushlstring(L, buf, (size_t)n);
    return 1;
}

static int l_cwd(lua_State *L)
{
    char buf[PATH_MAX];
    size_t n = sizeof buf;
    if (uv_cwd(buf, &n) != 0)
        return 0;
    lua_pushlstring(L, buf, n);
    return 1;
}

/* core.process_state(pid) -> "R", "S", "T", "Z", ... or nil when gone */
static int l_process_state(lua_State *L)
{
    char st = proc_state_of((int)luaL_checkinteger(L, 1));
    if (!st)
        return 0;
    lua_pushlstring(L, &st, 1);
    return 1;
}

/* core.process_rss(pid) -> resident bytes, or nil */
static int l_process_rss(lua_State *L)
{
    long long rss = proc_rss_of((int)luaL_checkinteger(L, 1));
    if (rss < 0)
        return 0;
    lua_pushinteger(L, (lua_Integer)rss);
    return 1;
}

static int l_getuid(lua_State *L)
{
    lua_pushinteger(L, getuid());
    return 1;
}

static int l_getpid(lua_State *L)
{
    lua_pushinteger(L, getpid());
    return 1;
}

static const luaL_Reg ipc_fns[] = {
    { "connect", l_connect },
    { "listen", l_listen },
    { "listen_tcp", l_listen_tcp },
    { "secure_dir", l_secure_dir },
    { "lock", l_lock },
    { "start_detached", l_start_detached },
    { "exe", l_exe },
    { "mkdir", l_mkdir },
    { "cwd", l_cwd },
    { "process_state", l_process_state },
    { "process_rss", l_process_rss },
    { "environ", l_environ },
    { "getuid", l_getuid },
    { "getpid", l_getpid },
    { NULL, NULL },
};

void lipc_register(lua_State *L)
{
    static const luaL_Reg conn_m[] = {
        { "attach", conn_attach }, { "send", conn_send }, { "close", conn_close }, { NULL, NULL },
    };
    static const luaL_Reg listener_m[] = { { "close", listener_close }, { NULL, NULL } };
    static const luaL_Reg lock_m[] = { { "release", lock_release }, { NULL, NULL } };
    lkiro_class(L, CONN_MT, conn_close, NULL, conn_m);
    lkiro_class(L, LISTENER_MT, listener_close, NULL, listener_m);
    lkiro_class(L, LOCK_MT, lock_release, NULL, lock_m);

    lua_pushvalue(L, -2); /* the runtime, as upvalue */
    luaL_setfuncs(L, ipc_fns, 1);
}
