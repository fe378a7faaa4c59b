/* kiro.core: the C core seen from Lua, private to lua/kiro/ (init.lua and
 * its modules build the public face on it; its shape may change with any
 * release). One hub in the manner of luv: it includes one file per area and
 * owns the single table of functions; everything else is static.
 *
 * Callbacks run on the Lua thread that drives the loop at that moment (the
 * one inside step()), never on a stored one, and reach the Lua object they
 * belong to as obj:on_event(name, ...) (no Lua closures held in C). */
#define _GNU_SOURCE /* pipe2 */
#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <limits.h>
#include <lua.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include <jansson.h>

#include "backend.h"
#include "buf.h"
#include "ipc.h"
#include "jsonstr.h"
#include "kiro.h"
#include "log.h"
#include "os.h"
#include "pool.h"
#include "proc.h"
#include "proto.h"
#include "rt.h"
#include "version.h"

#include "lutil.c"    /* the runtime handle, events, result shapes */
#include "ljson.c"    /* json_encode, null */
#include "lbackend.c" /* backend */
#include "lrequest.c" /* request; request:cancel, :pause */
#include "lloop.c"    /* step, timer, now, hrtime, signals, shutdown */
#include "lconfig.c"  /* configure, config, stats, log and its filter, which */
#include "lipc.c"     /* connect, listen, listen_tcp, secure_dir; conn, listener */
#include "los.c"      /* lock, start_detached, process facts, memory */
#include "lhttp.c"    /* http; request:cancel */
#include "lwsock.c"   /* websocket; conn:send, :close, :release */
#include "lstdin.c"   /* stdin; reader:stop */
#include "lline.c"    /* line_editor; editor:prompt, :hold, :stop */

static const luaL_Reg core_fns[] = {
    /* lbackend.c, lrequest.c */
    { "backend", l_backend },
    { "request", l_request },
    /* lloop.c */
    { "step", l_step },
    { "wait", l_wait },
    { "backend_fd", l_backend_fd },
    { "backend_timeout", l_backend_timeout },
    { "timer", l_timer },
    { "watch", l_watch },
    { "now", l_now },
    { "hrtime", l_hrtime },
    { "handle_signals", l_handle_signals },
    { "handle_hup", l_handle_hup },
    { "shutdown", l_shutdown },
    { "shutting_down", l_shutting_down },
    /* lconfig.c */
    { "configure", l_configure },
    { "config", l_config },
    { "backend_settings", l_backend_settings },
    { "stats", l_stats },
    { "log", l_log },
    { "log_enabled", l_log_enabled },
    { "set_log", l_set_log },
    { "set_log_sink", l_set_log_sink },
    { "log_file", l_log_file },
    { "log_reopen", l_log_reopen },
    { "which", l_which },
    /* ljson.c */
    { "json_encode", l_json_encode },
    /* lipc.c */
    { "connect", l_connect },
    { "server_paths", l_server_paths },
    { "backend_env", l_backend_env },
    { "listen", l_listen },
    { "listen_tcp", l_listen_tcp },
    { "secure_dir", l_secure_dir },
    /* los.c */
    { "lock", l_lock },
    { "start_detached", l_start_detached },
    { "check_writable", l_check_writable },
    { "raise_nofile", l_raise_nofile },
    { "trim_memory", l_trim_memory },
    { "mkdir", l_mkdir },
    { "exe", l_exe },
    { "cwd", l_cwd },
    { "realpath", l_realpath },
    { "process_state", l_process_state },
    { "process_rss", l_process_rss },
    { "getuid", l_getuid },
    { "file_owner", l_file_owner },
    { "getpid", l_getpid },
    { "isatty", l_isatty },
    /* lhttp.c */
    { "http", l_http },
    /* lwsock.c */
    { "websocket", l_websocket },
    /* lstdin.c */
    { "stdin", l_stdin },
    /* lline.c */
    { "line_editor", l_line_editor },
    { NULL, NULL },
};

/* The runtime: one per Lua state, anchored in the registry; collected (all
 * children stopped and reaped) when the state closes. Left on the stack. */
static lrt *push_runtime(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, RT_MT ".instance");
    if (!lua_isnil(L, -1))
        return lua_touserdata(L, -1);
    lua_pop(L, 1);
    lrt *x = lua_newuserdatauv(L, sizeof *x, 0);
    memset(x, 0, sizeof *x);
    x->err_ref = x->sig_ref = x->hup_ref = x->log_ref = LUA_NOREF;
    const char *spec = getenv("KIRO_LOG");
    if (spec && klog_set_filter(spec) != 0)
        fprintf(stderr, "[WARN kiro.rt] ignoring invalid KIRO_LOG '%s'\n", spec);
    luaL_newmetatable(L, RT_MT);
    lua_pushcfunction(L, rt_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, RT_MT ".instance");
    return x;
}

KIRO_EXPORT int luaopen_kiro_core(lua_State *L)
{
    /* A reader that went away must show up as EPIPE, not kill the host,
     * whose SIGPIPE disposition stays its own (os.h: kos_sigpipe). */
    kos_sigpipe_init();
    luaL_checkversion(L);
    kjson_seed();

    lkiro_class(L, REQ_MT, req_gc, req_gc, request_methods);
    lkiro_class(L, BACKEND_MT, backend_close, backend_close, backend_methods);
    lkiro_class(L, TIMER_MT, timer_stop, NULL, timer_methods);
    lkiro_class(L, WATCH_MT, watch_stop, NULL, watch_methods);
    lkiro_class(L, CONN_MT, conn_close, NULL, conn_methods);
    lkiro_class(L, LISTENER_MT, listener_close, NULL, listener_methods);
    lkiro_class(L, LOCK_MT, lock_release, NULL, lock_methods);
    lkiro_class(L, HTTP_MT, http_cancel, NULL, http_methods);
    lkiro_class(L, WS_MT, ws_release, NULL, ws_methods);
    lkiro_class(L, STDIN_MT, stdin_gc, NULL, stdin_methods);
    lkiro_class(L, LINE_MT, line_gc, NULL, line_methods);

    push_runtime(L);
    lua_newtable(L);
    lua_pushvalue(L, -2); /* every function has the runtime as upvalue 1 */
    luaL_setfuncs(L, core_fns, 1);
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    lua_pushstring(L, KIRO_VERSION);
    lua_setfield(L, -2, "version");
    lua_pushinteger(L, KIPC_PROTO);
    lua_setfield(L, -2, "PROTO");
    lua_pushinteger(L, KIPC_GUARD_MS);
    lua_setfield(L, -2, "GUARD_MS");
    return 1;
}

/* `require "kiro"` resolves to lua/kiro/init.lua via LUA_PATH; if only
 * LUA_CPATH is set, say what is missing instead of half-loading. */
KIRO_EXPORT int luaopen_kiro(lua_State *L)
{
    lua_pushliteral(L, "kiro: the Lua part of the module was not found; add "
                       "'<kiro-rt>/lua/?.lua;<kiro-rt>/lua/?/init.lua' to LUA_PATH");
    return lua_error(L);
}
