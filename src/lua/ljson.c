/* JSON for the Lua face (the server's wire protocol), on jansson: the same
 * codec library the C core uses, and no second one to load at start-up.
 * Integers stay integers; JSON null is core.null. Included by kiro.c. */

#define JSON_MAX_DEPTH 64

/* A string as JSON can carry it: invalid UTF-8 sequences become U+FFFD. */
static json_t *utf8_string(const char *s, size_t n)
{
    json_t *j = json_stringn(s, n);
    if (j)
        return j;
    kbuf b = { 0 };
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (len && i + len <= n) {
            json_t *probe = json_stringn(s + i, len);
            if (probe) {
                json_decref(probe);
                kbuf_append(&b, s + i, len);
                i += len;
                continue;
            }
        }
        kbuf_append(&b, "\xef\xbf\xbd", 3);
        i++;
    }
    j = json_stringn(b.data ? b.data : "", b.len);
    kbuf_free(&b);
    return j;
}

static json_t *to_json(lua_State *L, int idx, int depth)
{
    if (depth > JSON_MAX_DEPTH)
        luaL_error(L, "json: nesting deeper than %d", JSON_MAX_DEPTH);
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        return json_null();
    case LUA_TBOOLEAN:
        return json_boolean(lua_toboolean(L, idx));
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx))
            return json_integer((json_int_t)lua_tointeger(L, idx));
        return json_real(lua_tonumber(L, idx));
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        return utf8_string(s, n);
    }
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL)
            return json_null();
        break;
    case LUA_TTABLE: {
        idx = lua_absindex(L, idx);
        lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
        if (n > 0) { /* a sequence: an array */
            json_t *a = json_array();
            for (lua_Integer i = 1; i <= n; i++) {
                lua_rawgeti(L, idx, i);
                json_array_append_new(a, to_json(L, -1, depth + 1));
                lua_pop(L, 1);
            }
            return a;
        }
        json_t *o = json_object();
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            if (lua_type(L, -2) == LUA_TSTRING) {
                size_t kl;
                const char *k = lua_tolstring(L, -2, &kl);
                json_object_setn_new(o, k, kl, to_json(L, -1, depth + 1));
            }
            lua_pop(L, 1);
        }
        return o;
    }
    default:
        break;
    }
    luaL_error(L, "json: cannot encode a %s", luaL_typename(L, idx));
    return NULL;
}

static int l_json_encode(lua_State *L)
{
    luaL_checkany(L, 1);
    json_t *j = to_json(L, 1, 0);
    char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(j);
    if (!s)
        return luaL_error(L, "json: cannot encode");
    lua_pushstring(L, s);
    free(s);
    return 1;
}

static void push_json(lua_State *L, json_t *j, int depth)
{
    luaL_checkstack(L, 4, "json: too deep");
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        const char *k;
        json_t *v;
        lua_createtable(L, 0, (int)json_object_size(j));
        json_object_foreach(j, k, v)
        {
            push_json(L, v, depth + 1);
            lua_setfield(L, -2, k);
        }
        break;
    }
    case JSON_ARRAY: {
        size_t i;
        json_t *v;
        lua_createtable(L, (int)json_array_size(j), 0);
        json_array_foreach(j, i, v)
        {
            push_json(L, v, depth + 1);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        break;
    }
    case JSON_STRING:
        lua_pushlstring(L, json_string_value(j), json_string_length(j));
        break;
    case JSON_INTEGER:
        lua_pushinteger(L, (lua_Integer)json_integer_value(j));
        break;
    case JSON_REAL:
        lua_pushnumber(L, json_real_value(j));
        break;
    case JSON_TRUE:
        lua_pushboolean(L, 1);
        break;
    case JSON_FALSE:
        lua_pushboolean(L, 0);
        break;
    case JSON_NULL:
        lua_pushlightuserdata(L, NULL);
        break;
    }
}

/* Pushes the value JSON text s decodes to and nil, or nil and a message. */
static void ljson_push_decoded(lua_State *L, const char *s, size_t n)
{
    json_error_t err;
    json_t *j = json_loadb(s, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    if (!j) {
        lua_pushnil(L);
        lua_pushfstring(L, "json: %s (at %d)", err.text, err.position);
        return;
    }
    push_json(L, j, 0);
    json_decref(j);
    lua_pushnil(L);
}

/* The value at idx as one line of JSON (with its "\n"), malloc'd: no Lua
 * string in between. Raises for what JSON cannot carry. */
static char *ljson_encode_line(lua_State *L, int idx, size_t *len)
{
    json_t *j = to_json(L, idx, 0);
    size_t n = json_dumpb(j, NULL, 0, JSON_COMPACT | JSON_ENCODE_ANY);
    char *buf = n ? kmalloc(n + 1) : NULL;
    if (buf && json_dumpb(j, buf, n, JSON_COMPACT | JSON_ENCODE_ANY) != n) {
        free(buf);
        buf = NULL;
    }
    json_decref(j);
    if (!buf)
        luaL_error(L, "json: cannot encode");
    buf[n] = '\n';
    *len = n + 1;
    return buf;
}
