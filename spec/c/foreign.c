/* A third-party C module, as a user might load one into kiro-rt or beside
 * kiro in a Lua host: its function names happen to be kiro's own. It must
 * keep calling its own functions (symbols spec). */
#include <lauxlib.h>
#include <lua.h>
#include <stdarg.h>
#include <stdio.h>

static char last[128];

/* Same name (and shape) as the log function kiro once exported. */
void log_write(int level, const char *target, const char *fmt, ...);
void log_write(int level, const char *target, const char *fmt, ...)
{
    va_list ap;
    int n = snprintf(last, sizeof last, "foreign %d %s: ", level, target);
    va_start(ap, fmt);
    vsnprintf(last + n, sizeof last - (size_t)n, fmt, ap);
    va_end(ap);
}

int luaopen_foreign(lua_State *L);
int luaopen_foreign(lua_State *L)
{
    last[0] = '\0';
    log_write(2, "m", "hello");
    lua_pushstring(L, last);
    return 1;
}
