/* The loadable module: kiro.so, for `require "kiro"` in a stock lua5.4. The
 * symbol lives in lkiro.c; this file only makes the module a link unit. */
#include "lkiro.h"

/* `require "kiro"` resolves to lua/kiro/init.lua via LUA_PATH; if only
 * LUA_CPATH is set, say what is missing instead of half-loading. */
KIRO_EXPORT int luaopen_kiro(lua_State *L);
KIRO_EXPORT int luaopen_kiro(lua_State *L)
{
    lua_pushliteral(L, "kiro: the Lua part of the module was not found; add "
                       "'<kiro-rt>/lua/?.lua;<kiro-rt>/lua/?/init.lua' to LUA_PATH");
    return lua_error(L);
}
