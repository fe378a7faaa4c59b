/* kiro-rt: the host executable. It sets up Lua with the kiro module (the C
 * core and the Lua face, both compiled in) and hands argv to
 * lua/kiro/cli.lua; a plain `agent -m TEXT` for a running server is served
 * before that, in C (agent.c). */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "embedded.h"
#include "kiro.h"
#include "os.h"

/* A package.searchers entry for the Lua face compiled into the program:
 * kiro-rt runs the Lua that matches its C core, and a start opens no file
 * for it. */
static int embedded_loader(lua_State *L)
{
    const struct kembedded *m = lua_touserdata(L, lua_upvalueindex(1));
    if (luaL_loadbufferx(L, (const char *)m->code, m->len, m->name, "b") != LUA_OK)
        return lua_error(L);
    lua_pushstring(L, m->name);
    lua_pushliteral(L, ":kiro-rt:"); /* where it came from: as require gives a file's path */
    lua_call(L, 2, 1);
    return 1;
}

static int embedded_searcher(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    for (const struct kembedded *m = kiro_embedded; m->name; m++)
        if (strcmp(m->name, name) == 0) {
            lua_pushlightuserdata(L, (void *)m);
            lua_pushcclosure(L, embedded_loader, 1);
            lua_pushliteral(L, ":kiro-rt:");
            return 2;
        }
    lua_pushfstring(L, "\n\tno module '%s' in kiro-rt", name);
    return 1;
}

/* Where require finds kiro's modules: compiled in, unless KIRO_LUA_DIR
 * names a directory of sources to run instead (for work on the Lua face). */
static void install_searcher(lua_State *L)
{
    const char *dir = getenv("KIRO_LUA_DIR");
    lua_getglobal(L, "package");
    if (dir && *dir) {
        lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;", dir, dir);
        lua_getfield(L, -2, "path");
        lua_concat(L, 2);
        lua_setfield(L, -2, "path");
    } else {
        /* searchers: preload, this one, then Lua files and C modules. */
        lua_getfield(L, -1, "searchers");
        for (lua_Integer i = (lua_Integer)luaL_len(L, -1); i >= 2; i--) {
            lua_rawgeti(L, -1, i);
            lua_rawseti(L, -2, i + 1);
        }
        lua_pushcfunction(L, embedded_searcher);
        lua_rawseti(L, -2, 2);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

static int traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (!msg)
        msg = luaL_tolstring(L, 1, NULL);
    luaL_traceback(L, L, msg, 1);
    return 1;
}

static int boot(lua_State *L)
{
    int argc = (int)lua_tointeger(L, 1);
    char **argv = lua_touserdata(L, 2);
    luaL_openlibs(L);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_kiro_core);
    lua_setfield(L, -2, "kiro.core");
    lua_pop(L, 1);

    install_searcher(L);

    lua_getglobal(L, "require");
    lua_pushliteral(L, "kiro.cli");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "main");
    lua_createtable(L, argc, 0);
    for (int i = 1; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i);
    }
    lua_call(L, 1, 1);
    return 1;
}

int main(int argc, char **argv)
{
    /* Descriptors kiro-rt inherited never reach a backend or the server. */
    kos_cloexec_all();
    /* Its own process: a reader that went away is EPIPE, at no cost per write. */
    signal(SIGPIPE, SIG_IGN);
    if (argc > 1 && strcmp(argv[1], "agent") == 0) {
        int served = kiro_agent_fast(argc, argv);
        if (served >= 0)
            return served;
    }
    lua_State *L = luaL_newstate();
    if (!L) {
        fputs("kiro-rt: cannot create a Lua state\n", stderr);
        return 1;
    }
    lua_pushcfunction(L, traceback);
    lua_pushcfunction(L, boot);
    lua_pushinteger(L, argc);
    lua_pushlightuserdata(L, argv);
    int status;
    if (lua_pcall(L, 2, 1, 1) != LUA_OK) {
        fprintf(stderr, "kiro-rt: %s\n", lua_tostring(L, -1));
        status = 1;
    } else {
        status = lua_isinteger(L, -1) ? (int)lua_tointeger(L, -1) : 0;
    }
    fflush(stdout);
    /* Closing the state stops every backend and reaps every child. */
    lua_close(L);
    return status;
}
