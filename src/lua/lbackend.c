/* Backends: how to start a CLI and speak to it, built once per
 * configuration by the Lua face and named by every request. Included by
 * kiro.c. */

#define BACKEND_MT "kiro.backend"
#define MAX_BACKEND_SETTINGS 32 /* room for every one (lconfig.c checks) */

/* A handle holds one reference to a C backend (core/backend.c), dropped by
 * handle:close() or when the handle is collected. */
typedef struct lbackend {
    kbackend *b;
    lrt *x;
} lbackend;

/* A NULL-terminated array of the strings in the table field k (an array,
 * or with `map` a { NAME = value } table, as "NAME=value"), in scratch
 * memory the Lua stack keeps: a userdata, and a table for made strings.
 * NULL if the field is absent. Raises for anything but strings. */
static const char *const *scratch_strings(lua_State *L, int t, int keep, const char *k, int map)
{
    lua_getfield(L, t, k);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return NULL;
    }
    if (!lua_istable(L, -1))
        luaL_error(L, "backend: %s must be a table", k);
    int src = lua_gettop(L);
    size_t n = 0;
    if (map) {
        lua_pushnil(L);
        while (lua_next(L, src)) {
            n++;
            lua_pop(L, 1);
        }
    } else {
        n = lua_rawlen(L, src);
    }
    const char **v = lua_newuserdatauv(L, (n + 1) * sizeof *v, 0);
    lua_rawseti(L, keep, (lua_Integer)lua_rawlen(L, keep) + 1);
    size_t i = 0;
    if (map) {
        lua_pushnil(L);
        while (lua_next(L, src)) {
            if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
                luaL_error(L, "backend: %s: names and values must be strings", k);
            v[i++] = lua_pushfstring(L, "%s=%s", lua_tostring(L, -2), lua_tostring(L, -1));
            lua_rawseti(L, keep, (lua_Integer)lua_rawlen(L, keep) + 1);
            lua_pop(L, 1);
        }
    } else {
        for (; i < n; i++) {
            if (lua_rawgeti(L, src, (lua_Integer)i + 1) != LUA_TSTRING)
                luaL_error(L, "backend: %s[%d] must be a string", k, (int)i + 1);
            v[i] = lua_tostring(L, -1); /* kept: it is in the spec table */
            lua_pop(L, 1);
        }
    }
    v[n] = NULL;
    lua_pop(L, 1);
    return v;
}

static const char *opt_str(lua_State *L, int t, const char *k, const char *def)
{
    lua_getfield(L, t, k);
    int ty = lua_type(L, -1);
    if (ty != LUA_TNIL && ty != LUA_TSTRING)
        luaL_error(L, "backend: %s must be a string", k);
    const char *s = ty == LUA_TNIL ? def : lua_tostring(L, -1);
    lua_pop(L, 1); /* the spec table keeps the string alive */
    return s;
}

static int backend_close(lua_State *L)
{
    lbackend *h = luaL_checkudata(L, 1, BACKEND_MT);
    if (h->b && h->x->rt) /* a closed runtime has freed every backend */
        kbackend_unref(h->b);
    h->b = NULL;
    return 0;
}

/* backend:retire(): closes the handle, and the backend goes as soon as no
 * other handle holds it and no request waits on it (a configuration no
 * longer names it), not after pool_idle_ms. */
static int backend_retire(lua_State *L)
{
    lbackend *h = luaL_checkudata(L, 1, BACKEND_MT);
    if (h->b && h->x->rt)
        kbackend_retire(h->b);
    return backend_close(L);
}

static lbackend *check_backend(lua_State *L, int idx)
{
    lbackend *h = luaL_checkudata(L, idx, BACKEND_MT);
    luaL_argcheck(L, h->b != NULL, idx, "backend is closed");
    return h;
}

/* backend:warm(): its pool starts its pool_min daemons now. */
static int backend_warm(lua_State *L)
{
    kbackend_warm(check_backend(L, 1)->b);
    return 0;
}

/* backend:key() -> the string that tells it from every other backend */
static int backend_key(lua_State *L)
{
    size_t n;
    const char *k = kbackend_key(check_backend(L, 1)->b, &n);
    lua_pushlstring(L, k, n);
    return 1;
}

/* backend:tag() -> its key hashed short, as its pools show it (status) */
static int backend_tag(lua_State *L)
{
    lua_pushstring(L, kbackend_tag(check_backend(L, 1)->b));
    return 1;
}

static const luaL_Reg backend_methods[] = {
    { "key", backend_key },       /* what tells it apart */
    { "tag", backend_tag },       /* the same, hashed short */
    { "close", backend_close },   /* the handle lets go of it */
    { "retire", backend_retire }, /* and it goes once nothing holds it */
    { "warm", backend_warm },     /* its pool_min daemons start now */
    { NULL, NULL },
};

static size_t backend_settings(lua_State *L, int t, kconfig *vals, kbackend_setting *out); /* lconfig.c */

/* core.backend{ cli=, model=, protocol= (jsonl, acp or auto), daemon_args=,
 *               acp_args= (auto: an ACP agent's), oneshot_args=, env=,
 *               settings= { pool_max = 4, timeout_ms = ..., ... } (its own,
 *               over the runtime's: core.backend_settings() names them) }
 *   -> handle, or nil, message, "overloaded" (max_backends in use) */
static int l_backend(lua_State *L)
{
    lrt *x = get_lrt(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_newtable(L); /* 2: keeps the scratch memory */
    kbackend_spec spec;
    spec.cli = opt_str(L, 1, "cli", NULL);
    spec.model = opt_str(L, 1, "model", NULL);
    spec.protocol = opt_str(L, 1, "protocol", "jsonl");
    if (!spec.cli || !*spec.cli)
        return luaL_error(L, "backend: cli is required");
    if (!kproto_find(spec.protocol) && strcmp(spec.protocol, "auto") != 0)
        return luaL_error(L, "backend: unknown protocol '%s'", spec.protocol);
    spec.daemon_args = scratch_strings(L, 1, 2, "daemon_args", 0);
    spec.acp_args = scratch_strings(L, 1, 2, "acp_args", 0);
    lua_getfield(L, 1, "session_model");
    spec.session_model = lua_toboolean(L, -1);
    lua_pop(L, 1);
    spec.oneshot_args = scratch_strings(L, 1, 2, "oneshot_args", 0);
    spec.env = scratch_strings(L, 1, 2, "env", 1);
    kconfig vals;
    kbackend_setting own[MAX_BACKEND_SETTINGS];
    spec.settings = own;
    spec.nsettings = 0;
    if (lua_getfield(L, 1, "settings") == LUA_TTABLE)
        spec.nsettings = backend_settings(L, lua_gettop(L), &vals, own);
    else if (!lua_isnil(L, -1))
        return luaL_error(L, "backend: settings must be a table");
    lua_pop(L, 1);
    lbackend *h = lua_newuserdatauv(L, sizeof *h, 0);
    h->b = NULL;
    h->x = x;
    luaL_setmetatable(L, BACKEND_MT);
    char err[256];
    h->b = kbackend_get(&x->rt->backends, &spec, err, sizeof err);
    if (!h->b) {
        lkiro_fail(L, err);
        lua_pushliteral(L, "overloaded");
        return 3;
    }
    return 1;
}
