-- Installing kiro-rt like a Lua library: `make install` / `cmake --install`
-- at any prefix (and staged with DESTDIR), then used from a clean
-- environment that knows only that prefix's standard Lua paths; the C core
-- through pkg-config; and `luarocks make` from the checkout.
local H = require "helper"

local LUA_DIRS = "/share/lua/5.4/?.lua;%s/share/lua/5.4/?/init.lua"

-- A clean environment for a prefix: its bin, its Lua paths, nothing of ours.
local function clean_env(prefix, extra)
  local env = {
    PATH = prefix .. "/bin:/usr/bin:/bin",
    LUA_PATH = prefix .. LUA_DIRS:format(prefix), LUA_CPATH = prefix .. "/lib/lua/5.4/?.so",
    KIRO_CLI_PATH = prefix .. "/bin/kiro-sim", KIRO_BUILD_DIR = false, KIRO_SOURCE_DIR = false,
  }
  local dir = H.tmpdir()
  assert(os.execute("mkdir -m 700 -p " .. H.q(dir .. "/run") .. " " .. H.q(dir .. "/state")))
  env.XDG_RUNTIME_DIR, env.XDG_STATE_HOME = dir .. "/run", dir .. "/state"
  env.KIRO_SIM_LOG = dir .. "/sim.log" -- every kiro-sim it starts must be gone after the test
  for k, v in pairs(extra or {}) do env[k] = v end
  H.envs[#H.envs + 1] = env -- its server is stopped after the test
  return env
end

local function install(prefix, destdir)
  local r = H.run({ "cmake", "--install", H.build, "--prefix", prefix }, { DESTDIR = destdir or false })
  assert.are.equal(0, r.code, r.err)
end

local function works(prefix)
  local env = clean_env(prefix)
  local r = H.run({ prefix .. "/bin/kiro-rt", "agent", "-m", "hi" }, env) -- through a server it starts
  assert.are.equal(0, r.code, r.err)
  assert.are.equal("You said: hi\n", r.out)
  r = H.run({ prefix .. "/bin/kiro-rt", "agent", "-m", "in-process", "--no-server" }, env)
  assert.are.equal("You said: in-process\n", r.out, r.err)
  r = H.run({ "lua5.4", "-e", [[
    local kiro = require "kiro"
    assert(package.searchpath("kiro", package.path):find(os.getenv("PREFIX"), 1, true) == 1)
    print(kiro.version, kiro.chat("from Lua"))
  ]] }, clean_env(prefix, { PREFIX = prefix }))
  assert.are.equal(0, r.code, r.err)
  assert.matches("^%d+%.%d+%.%d+\tYou said: from Lua\n$", r.out)
  H.run({ prefix .. "/bin/kiro-rt", "stop" }, env)
end

describe("install", function()
  after_each(H.check_leaks)

  it("cmake --install at any prefix, and staged with DESTDIR then moved: kiro-rt and require 'kiro' work "
    .. "with only the prefix's Lua paths", function()
    local prefix = H.tmpdir() .. "/prefix"
    install(prefix)
    works(prefix)
    -- Staged for /opt/kiro (a package build), then put somewhere else.
    local stage = H.tmpdir()
    install("/opt/kiro", stage)
    assert.is_true(H.exists(stage .. "/opt/kiro/bin/kiro-rt"))
    assert.is_true(H.exists(stage .. "/opt/kiro/lib/lua/5.4/kiro.so"))
    assert.is_true(H.exists(stage .. "/opt/kiro/share/lua/5.4/kiro/init.lua"))
    local moved = H.tmpdir() .. "/elsewhere"
    assert(os.execute(("mv %s %s"):format(H.q(stage .. "/opt/kiro"), H.q(moved))))
    works(moved)
  end)

  it("a C host builds against the installed core with pkg-config, and runs a request", function()
    local prefix = H.tmpdir() .. "/prefix"
    install(prefix)
    local env = { PKG_CONFIG_PATH = prefix .. "/lib/pkgconfig" }
    local flags = H.run({ "pkg-config", "--cflags", "--libs", "kiro-core" }, env)
    assert.are.equal(0, flags.code, flags.err)
    assert.matches("%-lkiro%-core", flags.out)
    local exe = H.tmpdir() .. "/embed"
    local argv = { "cc", "-o", exe, H.source .. "/spec/c/embed.c" }
    for f in flags.out:gmatch("%S+") do argv[#argv + 1] = f end
    if H.sanitized then argv[#argv + 1] = "-fsanitize=address,undefined" end
    local cc = H.run(argv, env)
    assert.are.equal(0, cc.code, cc.err)
    local r = H.run({ exe, H.sim, "hello core" }, H.sim_env())
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("You said: hello core\n", r.out)
  end)

  it("luarocks make installs a working module and commands into a tree", function()
    -- A copy of the checkout, so the build stays out of the source tree.
    local src = H.tmpdir() .. "/src"
    assert(os.execute("mkdir -p " .. H.q(src)))
    for _, f in ipairs { "CMakeLists.txt", "Makefile", "kiro-core.pc.in", "kiro-rt-scm-1.rockspec", "src", "lua",
                         "plugins", "scripts", "spec", "bench" } do
      assert(os.execute(("cp -r %s %s"):format(H.q(H.source .. "/" .. f), H.q(src .. "/"))))
    end
    local tree = H.tmpdir() .. "/tree"
    local r = H.run({ "sh", "-c", ("cd %s && luarocks --lua-version 5.4 make --tree %s kiro-rt-scm-1.rockspec")
      :format(H.q(src), H.q(tree)) }, { LD_PRELOAD = false })
    assert.are.equal(0, r.code, r.out .. r.err)
    assert.is_true(H.exists(tree .. "/lib/lua/5.4/kiro.so"))
    assert.is_false(H.exists(tree .. "/lib/lua/5.4/libkiro-core.a")) -- the C core is not a Lua module
    works(tree)
  end)
end)
