/* Backends: how to start a CLI and speak to it, built once per
 * configuration by the Lua face and named by every request. Included by
 * kiro.c. */

#define BACKEND_MT "kiro.backend"

typedef struct lbackend {
    kbackend_spec spec;
    char **strings; /* everything spec points into, freed at __gc */
} lbackend;

static char **strv_copy_table(lua_State *L, int t, const char *k, int map)
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
            if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
                luaL_error(L, "backend: %s: names and values must be strings", k);
            n++;
            lua_pop(L, 1);
        }
    } else {
        n = lua_rawlen(L, src);
        for (size_t i = 1; i <= n; i++) {
            if (lua_rawgeti(L, src, (lua_Integer)i) != LUA_TSTRING)
                luaL_error(L, "backend: %s[%d] must be a string", k, (int)i);
            lua_pop(L, 1);
        }
    }
    /* Checked first, allocated after: no luaL_error with memory in hand. */
    char **v = kcalloc(n + 1, sizeof *v);
    size_t i = 0;
    if (map) {
        lua_pushnil(L);
        while (lua_next(L, src)) {
            size_t kl, vl;
            const char *key = lua_tolstring(L, -2, &kl), *val = lua_tolstring(L, -1, &vl);
            v[i] = kmalloc(kl + vl + 2);
            memcpy(v[i], key, kl);
            v[i][kl] = '=';
            memcpy(v[i] + kl + 1, val, vl + 1);
            i++;
            lua_pop(L, 1);
        }
    } else {
        for (; i < n; i++) {
            lua_rawgeti(L, src, (lua_Integer)i + 1);
            v[i] = kstrdup(lua_tostring(L, -1));
            lua_pop(L, 1);
        }
    }
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

static int backend_gc(lua_State *L)
{
    lbackend *b = luaL_checkudata(L, 1, BACKEND_MT);
    kstrv_free((char **)b->spec.daemon_args);
    kstrv_free((char **)b->spec.oneshot_args);
    kstrv_free((char **)b->spec.env);
    kstrv_free(b->strings);
    memset(b, 0, sizeof *b);
    return 0;
}

/* core.backend{ cli=, model=, protocol=, daemon_args=, oneshot_args=, env= } */
static int l_backend(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    const char *cli = opt_str(L, 1, "cli", NULL);
    const char *model = opt_str(L, 1, "model", NULL);
    const char *protocol = opt_str(L, 1, "protocol", "jsonl");
    if (!cli || !*cli)
        return luaL_error(L, "backend: cli is required");
    if (!kproto_find(protocol))
        return luaL_error(L, "backend: unknown protocol '%s'", protocol);
    lbackend *b = lua_newuserdatauv(L, sizeof *b, 0);
    memset(b, 0, sizeof *b);
    luaL_setmetatable(L, BACKEND_MT);
    b->spec.daemon_args = (const char *const *)strv_copy_table(L, 1, "daemon_args", 0);
    b->spec.oneshot_args = (const char *const *)strv_copy_table(L, 1, "oneshot_args", 0);
    b->spec.env = (const char *const *)strv_copy_table(L, 1, "env", 1);
    b->strings = kcalloc(4, sizeof *b->strings);
    b->strings[0] = kstrdup(cli);
    b->strings[1] = kstrdup(protocol);
    b->strings[2] = model ? kstrdup(model) : NULL;
    b->spec.cli = b->strings[0];
    b->spec.protocol = b->strings[1];
    b->spec.model = b->strings[2];
    if (!model) /* keep kstrv_free's NULL terminator after cli and protocol */
        b->strings[2] = NULL;
    return 1;
}
