/* Process chores seen from Lua (core/os.c does the work): the server's lock
 * file, its start in the background, its limits and memory, facts about
 * processes, this one's executable and directory. Included by kiro.c. */

#define LOCK_MT "kiro.lock"

/* core.lock(path) -> lock, or nil, message, "busy" when another holds it.
 * The lock dies with the process, so a killed server never leaves it stale. */
static int l_lock(lua_State *L)
{
    char err[512];
    int fd;
    int rc = kos_lock(luaL_checkstring(L, 1), &fd, err, sizeof err);
    if (rc != 0) {
        lkiro_fail(L, err);
        lua_pushstring(L, rc > 0 ? "busy" : "error");
        return 3;
    }
    int *u = lua_newuserdatauv(L, sizeof *u, 0);
    *u = fd;
    luaL_setmetatable(L, LOCK_MT);
    return 1;
}

static int lock_release(lua_State *L)
{
    int *u = luaL_checkudata(L, 1, LOCK_MT);
    if (*u >= 0)
        close(*u);
    *u = -1;
    return 0;
}

static const luaL_Reg lock_methods[] = { { "release", lock_release }, { NULL, NULL } };

/* core.start_detached(argv) -> pid, or nil, message (see kos_start_detached:
 * a server that holds none of its starter's descriptors). */
static int l_start_detached(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    int n = (int)lua_rawlen(L, 1);
    luaL_argcheck(L, n >= 1, 1, "argv is empty");
    char **argv = lua_newuserdatauv(L, (size_t)(n + 1) * sizeof *argv, 0);
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, 1, i + 1);
        argv[i] = (char *)luaL_checkstring(L, -1);
        lua_pop(L, 1); /* the table keeps the string */
    }
    argv[n] = NULL;
    char err[512];
    pid_t pid = kos_start_detached(argv, err, sizeof err);
    if (pid < 0)
        return lkiro_fail(L, err);
    lua_pushinteger(L, pid);
    return 1;
}

/* core.check_writable(path) -> true, or nil, message */
static int l_check_writable(lua_State *L)
{
    char err[512];
    if (kos_check_writable(luaL_checkstring(L, 1), err, sizeof err) != 0)
        return lkiro_fail(L, err);
    lua_pushboolean(L, 1);
    return 1;
}

/* core.raise_nofile() -> the descriptor limit now in force */
static int l_raise_nofile(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)kos_raise_nofile());
    return 1;
}

/* core.mkdir(path): mkdir 0700; true if it exists afterwards. */
static int l_mkdir(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    if (mkdir(path, 0700) != 0 && errno != EEXIST) {
        lua_pushnil(L);
        lua_pushfstring(L, "cannot create %s: %s", path, strerror(errno));
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int l_exe(lua_State *L)
{
    char buf[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n < 0)
        return 0;
    lua_pushlstring(L, buf, (size_t)n);
    return 1;
}

static int l_cwd(lua_State *L)
{
    char buf[PATH_MAX];
    size_t n = sizeof buf;
    if (uv_cwd(buf, &n) != 0)
        return 0;
    lua_pushlstring(L, buf, n);
    return 1;
}

/* core.realpath(path) -> the absolute path with no symlink, . or .. in it,
 * or nil when it does not exist */
static int l_realpath(lua_State *L)
{
    char *p = realpath(luaL_checkstring(L, 1), NULL);
    if (!p)
        return 0;
    lua_pushstring(L, p);
    free(p);
    return 1;
}

/* core.process_state(pid) -> "R", "S", "T", "Z", ... or nil when gone */
static int l_process_state(lua_State *L)
{
    char st = kos_process_state((int)luaL_checkinteger(L, 1));
    if (!st)
        return 0;
    lua_pushlstring(L, &st, 1);
    return 1;
}

/* core.process_rss(pid) -> resident bytes, or nil */
static int l_process_rss(lua_State *L)
{
    long long rss = kos_process_rss((int)luaL_checkinteger(L, 1));
    if (rss < 0)
        return 0;
    lua_pushinteger(L, (lua_Integer)rss);
    return 1;
}

/* core.file_owner(path) -> uid, mode (permission bits), or nil, message:
 * for refusing a configuration file that others can write. */
static int l_file_owner(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    struct stat st;
    if (stat(path, &st) != 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", path, strerror(errno));
        return 2;
    }
    lua_pushinteger(L, st.st_uid);
    lua_pushinteger(L, st.st_mode & 07777);
    return 2;
}

static int l_getuid(lua_State *L)
{
    lua_pushinteger(L, getuid());
    return 1;
}

static int l_getpid(lua_State *L)
{
    lua_pushinteger(L, getpid());
    return 1;
}

/* core.isatty(fd) -> whether the descriptor is a terminal */
static int l_isatty(lua_State *L)
{
    lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
    return 1;
}

/* core.trim_memory(): a full garbage collection, then freed heap memory
 * handed back to the system (after a large request, whose buffers the
 * collector and the allocator would otherwise keep for a while). */
static int l_trim_memory(lua_State *L)
{
    lua_gc(L, LUA_GCCOLLECT);
    lua_gc(L, LUA_GCCOLLECT); /* what finalisers of the first let go */
    kos_trim_memory();
    return 0;
}
