/* Shared by the Lua binding files (lkiro.c, lipc.c): the runtime as Lua
 * holds it, and how callbacks reach Lua. */
#ifndef KIRO_LKIRO_H
#define KIRO_LKIRO_H

#include <lauxlib.h>
#include <lua.h>
#include <uv.h>

#include "rt.h"

/* What a loadable module exports; everything else is hidden. */
#define KIRO_EXPORT __attribute__((visibility("default")))

typedef struct lrt {
    krt *rt;
    lua_State *L;     /* the thread driving the loop right now */
    int err_ref;      /* first error raised by a callback, re-raised by step() */
    int sig_ref;      /* Lua handler for SIGINT/SIGTERM */
    int hup_ref;      /* Lua handler for SIGHUP */
    int dispatch_ref; /* Lua function that receives events: fn(ctx, event, a, b) */
    uv_signal_t *sigs[3]; /* SIGINT, SIGTERM, SIGHUP */
} lrt;

/* A failure as the caller gets it: pushes nil and msg, returns 2. */
int lkiro_fail(lua_State *L, const char *msg);
/* The runtime from upvalue 1; remembers L as the thread driving the loop. */
lrt *get_lrt(lua_State *L);
/* Calls the function below nargs arguments on x->L, keeping the first error
 * for step() to raise; makes the current step() return. */
void call_cb(lrt *x, int nargs);
int raise_pending(lua_State *L, lrt *x);
/* Registers metatable `name`: __gc (and __close, when given) and methods. */
void lkiro_class(lua_State *L, const char *name, lua_CFunction gc, lua_CFunction close,
                 const luaL_Reg *methods);
/* Adds listen/connect and friends to the table on top (upvalue: runtime). */
void lipc_register(lua_State *L);
/* Adds json_encode, json_decode and null to the table on top. */
void ljson_register(lua_State *L);
/* Pushes the value JSON text s decodes to and nil, or nil and a message. */
void ljson_push_decoded(lua_State *L, const char *s, size_t n);
/* The value at idx as one line of JSON (with its "\n"), malloc'd: no Lua
 * string in between. Raises for what JSON cannot carry. */
char *ljson_encode_line(lua_State *L, int idx, size_t *len);

#endif
