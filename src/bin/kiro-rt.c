/* kiro-rt: the host executable. It sets up Lua with the kiro module (the C
 * core linked in, the Lua face found beside the binary or where it was
 * installed) and hands argv to lua/kiro/cli.lua. */
#include <lauxlib.h>
#include <limits.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kiro.h"
#include "os.h"

#ifndef KIRO_LUA_INSTALL_DIR
#define KIRO_LUA_INSTALL_DIR "/usr/local/share/kiro-rt/lua"
#endif

/* KIRO_LUA_DIR; else, beside the binary, lua/ (a build tree's byte-compiled
 * copy) or ../lua (the sources); else the install location. */
static const char *lua_dir(char *buf, size_t n)
{
    static const char *const candidates[] = { "/lua", "/../lua" };
    const char *env = getenv("KIRO_LUA_DIR");
    if (env && *env)
        return env;
    ssize_t len = readlink("/proc/self/exe", buf, n - 16);
    if (len > 0) {
        buf[len] = '\0';
        char *slash = strrchr(buf, '/');
        for (size_t i = 0; slash && i < sizeof candidates / sizeof *candidates; i++) {
            strcpy(slash, candidates[i]);
            char probe[PATH_MAX + 32];
            snprintf(probe, sizeof probe, "%s/kiro/init.lua", buf);
            if (access(probe, R_OK) == 0)
                return buf;
        }
    }
    return KIRO_LUA_INSTALL_DIR;
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
    char buf[PATH_MAX];
    const char *dir = lua_dir(buf, sizeof buf);

    luaL_openlibs(L);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_kiro_core);
    lua_setfield(L, -2, "kiro.core");
    lua_pop(L, 1);

    lua_getglobal(L, "package");
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;", dir, dir);
    lua_getfield(L, -2, "path");
    lua_concat(L, 2);
    lua_setfield(L, -2, "path");
    lua_pop(L, 1);

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
