/* The kiro Lua module's entry points: `kiro.core` (the private C face under
 * lua/kiro/init.lua) and `kiro` (which only says where the Lua part is).
 * The only symbols kiro.so exports. */
#ifndef KIRO_LUA_KIRO_H
#define KIRO_LUA_KIRO_H

#include <lua.h>

#define KIRO_EXPORT __attribute__((visibility("default")))

KIRO_EXPORT int luaopen_kiro_core(lua_State *L);
KIRO_EXPORT int luaopen_kiro(lua_State *L);

#endif
