-- Shared test helpers: paths, running commands, reading kiro-sim's event log,
-- and the leak check every spec runs after each test (no child process, no
-- zombie, no fd left behind).

local H = {}

H.build = assert(os.getenv("KIRO_BUILD_DIR"), "KIRO_BUILD_DIR is not set (run the specs through ctest)")
H.source = os.getenv("KIRO_SOURCE_DIR") or "."
H.sim = H.build .. "/kiro-sim"
H.kiro_rt = H.build .. "/kiro-rt"
H.sanitized = os.getenv("KIRO_SANITIZED") == "1"

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
H.q = shell_quote

local tmp_root
--- A fresh private directory, removed when the spec process ends.
function H.tmpdir()
  if not tmp_root then
    local p = io.popen("mktemp -d /tmp/kiro-spec.XXXXXX")
    tmp_root = p:read("l")
    p:close()
    -- Collected when the Lua state closes, at the end of the spec file.
    H.tmp_reaper = setmetatable({}, { __gc = function()
      if os.getenv("KIRO_SPEC_KEEP_TMP") ~= "1" then os.execute("rm -rf " .. shell_quote(tmp_root)) end
    end })
  end
  H.ntmp = (H.ntmp or 0) + 1
  local d = ("%s/t%d"):format(tmp_root, H.ntmp)
  assert(os.execute("mkdir -p " .. shell_quote(d)))
  return d
end

function H.read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

function H.write_file(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

--- A path with its symlinks, . and .. resolved (realpath(1)).
---@param path string
---@return string
function H.realpath(path)
  local p = io.popen("realpath -- " .. H.q(path))
  local out = p:read("l")
  p:close()
  return out
end

--- Writes a configuration file as kiro-rt wants one: private (0600).
---@param path string
---@param text string
---@return string path
function H.write_config(path, text)
  H.write_file(path, text)
  assert(os.execute("chmod 600 " .. H.q(path)))
  return path
end

--- Runs fn when the running test ends, passed or failed, after those
--- deferred before it (in reverse order). busted's own `finally` keeps one
--- function a test: a second call would drop the first's cleanup.
---@param fn function
function H.defer(fn)
  local list = H.deferred
  if not list then
    list = {}
    H.deferred = list
    -- busted gives `finally` to the spec's environment, not to this module's:
    -- found through the caller's _ENV.
    local fin
    for level = 2, 20 do
      local info = debug.getinfo(level, "f")
      if not info then break end
      for i = 1, 255 do
        local name, v = debug.getupvalue(info.func, i)
        if not name then break end
        if name == "_ENV" and type(v) == "table" and type(v.finally) == "function" then fin = v.finally end
      end
      if fin then break end
    end
    assert(fin, "H.defer: called outside a test")
    fin(function()
      H.deferred = nil
      for i = #list, 1, -1 do pcall(list[i]) end
    end)
  end
  list[#list + 1] = fn
end

--- Runs argv (a list) with extra environment, stdin text optional.
-- Returns { out =, err =, code = }.
-- Under `make asan` the specs' lua5.4 runs with libasan preloaded; other
-- programs (promtool, prometheus, curl, an instrumented kiro-rt) must not
-- inherit that.
local function without_preload(argv, env)
  if argv[1] == "lua5.4" or not os.getenv("LD_PRELOAD") then return env end
  local e = { LD_PRELOAD = false }
  for k, v in pairs(env or {}) do e[k] = v end
  return e
end

function H.run(argv, env, stdin)
  env = without_preload(argv, env)
  local dir = H.tmpdir()
  local parts = { "env" }
  for k, v in pairs(env or {}) do -- env takes its options before assignments
    if v == false then parts[#parts + 1] = "-u " .. k end
  end
  for k, v in pairs(env or {}) do
    if v ~= false then parts[#parts + 1] = shell_quote(k .. "=" .. v) end
  end
  for _, a in ipairs(argv) do parts[#parts + 1] = shell_quote(a) end
  local cmd = table.concat(parts, " ")
  if stdin then
    H.write_file(dir .. "/stdin", stdin)
    cmd = cmd .. " <" .. shell_quote(dir .. "/stdin")
  else
    cmd = cmd .. " </dev/null"
  end
  cmd = cmd .. " >" .. shell_quote(dir .. "/out") .. " 2>" .. shell_quote(dir .. "/err")
  local _, _, code = os.execute(cmd)
  return { out = H.read_file(dir .. "/out"), err = H.read_file(dir .. "/err"), code = code }
end

H.envs = {}

--- Environment for a kiro-rt run against kiro-sim, with a sim log and a
-- private runtime and state directory (so each test has its own server).
function H.sim_env(extra)
  local dir = H.tmpdir()
  assert(os.execute("mkdir -m 700 -p " .. H.q(dir .. "/run") .. " " .. H.q(dir .. "/state")))
  local env = {
    KIRO_CLI_PATH = H.sim, KIRO_SIM_LOG = dir .. "/sim.log", KIRO_LOG = "warn",
    XDG_RUNTIME_DIR = dir .. "/run", XDG_STATE_HOME = dir .. "/state",
  }
  for k, v in pairs(extra or {}) do env[k] = v end
  H.envs[#H.envs + 1] = env
  return env, env.KIRO_SIM_LOG
end

--- The server's log for an environment from sim_env.
function H.server_log(env)
  return H.read_file(env.XDG_STATE_HOME .. "/kiro-rt/server.log") or ""
end

-- cjson gives every number as a float: make whole ones integers again.
local function integers(v)
  if type(v) == "table" then
    for k, x in pairs(v) do v[k] = integers(x) end
  elseif math.type(v) == "float" then
    return math.tointeger(v) or v
  end
  return v
end

--- The running server's status (a table), or nil.
function H.status(env)
  local r = H.run({ H.kiro_rt, "status", "--json" }, env)
  if r.code ~= 0 then return nil, r.err end
  return integers(require("cjson").decode(r.out))
end

function H.agent(args, env, stdin)
  local argv = { H.kiro_rt, "agent" }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return H.run(argv, env, stdin)
end

-- Starts a command in the background; returns its pid and a function that
-- waits for its exit status.
function H.spawn_bg(argv, env)
  env = without_preload(argv, env)
  local dir = H.tmpdir()
  local parts = { "env" }
  for k, v in pairs(env) do if v == false then parts[#parts + 1] = "-u " .. k end end
  for k, v in pairs(env) do if v ~= false then parts[#parts + 1] = H.q(k .. "=" .. v) end end
  for _, a in ipairs(argv) do parts[#parts + 1] = H.q(a) end
  local cmd = table.concat(parts, " ")
  local script = ("(%s </dev/null >%s 2>%s & echo $! >%s; wait $!; echo $? >%s) >/dev/null 2>&1 &")
    :format(cmd, H.q(dir .. "/out"), H.q(dir .. "/err"), H.q(dir .. "/pid"), H.q(dir .. "/rc"))
  assert(os.execute(script))
  assert(H.wait_for(function() return (H.read_file(dir .. "/pid") or ""):match("%d+") end, 5000))
  local pid = tonumber(H.read_file(dir .. "/pid"):match("%d+"))
  local function wait_exit()
    assert(H.wait_for(function() return (H.read_file(dir .. "/rc") or ""):match("%d+") end, 15000),
      "the command did not exit")
    return tonumber(H.read_file(dir .. "/rc"):match("%d+")), H.read_file(dir .. "/out"), H.read_file(dir .. "/err")
  end
  return pid, wait_exit, dir
end

--- Starts one of the specs' fake servers (spec/hosts/NAME.py, on a port of
--- its own, fakeserver.py) for the running test, stopped when it ends.
--- tls: a fresh self-signed certificate for 127.0.0.1 (files in the
--- returned dir: cert.pem, key.pem). Returns its port and its folder.
---@param name string
---@param args? string[] its arguments after the port file
---@param tls? boolean
---@return string port, string dir
function H.fake_host(name, args, tls)
  local dir = H.tmpdir()
  local argv = { "/usr/bin/python3", H.source .. "/spec/hosts/" .. name .. ".py", dir .. "/port" }
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  if tls then
    assert(os.execute(("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 "
      .. "-addext subjectAltName=IP:127.0.0.1 -keyout %s -out %s "
      .. ">/dev/null 2>&1"):format(H.q(dir .. "/key.pem"), H.q(dir .. "/cert.pem"))))
    for _, a in ipairs { "--tls", dir .. "/cert.pem", dir .. "/key.pem" } do argv[#argv + 1] = a end
  end
  local pid, wait = H.spawn_bg(argv, {})
  assert(H.wait_for(function() return H.exists(dir .. "/port") end, 10000), name .. " did not start")
  H.defer(function()
    -- the server's own pid (the shell's may be another process's)
    local own = (H.read_file(dir .. "/port.pid") or ""):match("%d+")
    os.execute("kill " .. (own or pid))
    wait()
  end)
  return H.read_file(dir .. "/port"), dir
end

--- The control endpoints of a fake chat service (telegram_fake,
--- discord_fake) at base: post(what, body) -> its JSON answer, get(what).
---@param base string
---@return table
function H.fake_control(base)
  local cjson = require "cjson"
  local api = { base = base }
  function api.post(what, body)
    local r = H.run({ "curl", "-s", "-X", "POST", "-H", "Content-Type: application/json", "-d", cjson.encode(body),
      base .. "/control/" .. what }, {})
    assert(r.code == 0, r.err)
    return r.out ~= "" and cjson.decode(r.out) or nil
  end
  function api.get(what)
    local r = H.run({ "curl", "-s", base .. "/control/" .. what }, {})
    assert(r.code == 0, r.err)
    return cjson.decode(r.out)
  end
  return api
end

--- A TCP port free now on every address (the system's pick, let go at
--- once), for a server that must be told its port.
---@return integer
function H.free_port()
  local r = H.run({ "/usr/bin/python3", "-c",
    "import socket; s = socket.socket(); s.bind(('', 0)); print(s.getsockname()[1])" }, {})
  return assert(math.tointeger(tonumber(r.out)), r.err)
end

--- `kiro-rt bot --config path` in the background against kiro-sim (knobs:
--- its environment) for the running test: { pid =, wait =, dir =, env = }.
--- A test that fails stops it too, whatever that takes.
---@param path string
---@param knobs? table
---@param extra_args? string[]
---@return table bot
function H.bot(path, knobs, extra_args)
  local env = H.sim_env(knobs)
  local argv = { H.kiro_rt, "bot", "--config", path }
  for _, a in ipairs(extra_args or {}) do argv[#argv + 1] = a end
  local pid, wait, dir = H.spawn_bg(argv, env)
  local b = { pid = pid, wait = wait, dir = dir, env = env }
  H.defer(function()
    if not b.stopped then
      os.execute("kill -TERM " .. pid)
      if not pcall(wait) then
        os.execute("kill -KILL " .. pid)
        pcall(wait)
      end
    end
  end)
  return b
end

--- Stops a bot (SIGTERM) and checks that it exited 0 and that token is
--- nowhere in its log; returns the log.
---@param b table from H.bot
---@param token string
---@return string log
function H.stop_bot(b, token)
  assert(os.execute("kill -TERM " .. b.pid))
  b.stopped = true
  local code, _, err = b.wait()
  local check = require "luassert"
  check.are.equal(0, code, err)
  check.is_nil(err:find(token, 1, true), "the token is in the log")
  return err
end

--- n characters of words, the same for the same n and seed.
---@param n integer
---@param seed? integer
---@return string
function H.words(n, seed)
  local out, i = {}, 0
  while #table.concat(out, " ") < n do
    i = i + 1
    out[#out + 1] = ("w%d_%d"):format(seed or 0, i)
  end
  return (table.concat(out, " "):sub(1, n):gsub("%s+$", ""))
end

--- A chat's calls to a service, as its fake logged them: none refused
--- (429), and each write (what(c) names it: nil for what is not one) at
--- least ~1 s after the one before.
---@param calls table[] { t =, status =, ... }
---@param what fun(c: table): string?
function H.paced(calls, what)
  local check = require "luassert"
  local last
  for _, c in ipairs(calls) do
    local name = what(c)
    check.are_not.equal(429, c.status, ("a 429 for %s at %.0f ms"):format(tostring(name or c.method or c.route), c.t))
    if name then
      if last then check.is_true(c.t - last >= 950, ("writes %.0f ms apart"):format(c.t - last)) end
      last = c.t
    end
  end
end

--- kiro-sim's event log as a list of { pid =, mode =, event =, ... }.
function H.sim_events(path)
  local events = {}
  local text = H.read_file(path) or ""
  for line in text:gmatch("[^\n]+") do
    local e = {}
    for k, v in line:gmatch("(%w+)=(%S+)") do e[k] = tonumber(v) or v end
    events[#events + 1] = e
  end
  return events
end

function H.count(events, pred)
  local n = 0
  for _, e in ipairs(events) do
    local ok = true
    for k, v in pairs(pred) do if e[k] ~= v then ok = false end end
    if ok then n = n + 1 end
  end
  return n
end

--- Distinct pids that logged an event matching pred.
function H.pids(events, pred)
  local seen, list = {}, {}
  for _, e in ipairs(events) do
    local ok = true
    for k, v in pairs(pred or {}) do if e[k] ~= v then ok = false end end
    if ok and not seen[e.pid] then seen[e.pid] = true; list[#list + 1] = e.pid end
  end
  return list
end

--- Runs fn(i) in n kiro tasks at once; returns their results, packed.
function H.concurrently(kiro, n, fn)
  local results = {}
  for i = 1, n do kiro.spawn(function() results[i] = table.pack(fn(i)) end) end
  kiro.run()
  return results
end

--- Distinct pids of daemons kiro-sim logged as started.
function H.daemon_pids(log)
  return H.pids(H.sim_events(log), { mode = "daemon", event = "start" })
end

--- The server socket of an environment from sim_env.
function H.socket(env)
  return env.XDG_RUNTIME_DIR .. "/kiro-rt/server.sock"
end

--- A raw connection to a server, from this (in-process) kiro: every line
-- the server sends is decoded into c.msgs; c:send(text) sends text as is.
function H.raw_conn(kiro, path)
  local c = { msgs = {}, connected = kiro.event() }
  function c:on_event(ev, a)
    if ev == "connect" then
      self.err = a
      self.connected:set()
    elseif ev == "line" then
      self.msgs[#self.msgs + 1] = require("cjson").decode(a)
    elseif ev == "close" then
      self.closed = a or "closed"
      self.connected:set()
    end
  end
  function c:send(text) return self.sock:send(text) end
  function c:close() self.sock:close() end
  c.sock = kiro.core.connect(path, c)
  c.connected:wait()
  assert(not c.err, "cannot connect to " .. path .. ": " .. tostring(c.err))
  return c
end

--- Waits, driving kiro's loop, until pred() holds (10 s at most).
function H.wait_kiro(kiro, pred, what)
  assert(H.wait_for(pred, 10000, kiro), "timed out waiting for " .. what)
end

--- Process state letter from /proc (nil if gone).
function H.proc_state(pid)
  local stat = H.read_file("/proc/" .. pid .. "/stat")
  if not stat then return nil end
  return stat:match("^%d+ %b() (%a)")
end

function H.alive(pid)
  local st = H.proc_state(pid)
  return st ~= nil and st ~= "Z" and st ~= "X"
end

local function my_pid()
  local stat = H.read_file("/proc/self/stat")
  -- /proc/self is the reader (cat or this lua); io.open reads it in-process.
  return tonumber(stat:match("^(%d+)"))
end
H.pid = my_pid()

local lfs = require "lfs" -- busted depends on it

--- Whether anything (a file, a socket) exists at path.
function H.exists(path)
  return lfs.symlinkattributes(path, "mode") ~= nil
end

--- Child processes of this process (live or zombie).
function H.children()
  local kids = {}
  for name in lfs.dir("/proc") do
    if name:match("^%d+$") then
      local stat = H.read_file("/proc/" .. name .. "/stat")
      local ppid = stat and tonumber(stat:match("^%d+ %b() %a (%d+)"))
      if ppid == H.pid then kids[#kids + 1] = tonumber(name) end
    end
  end
  return kids
end

--- Open fds of this process, read in-process (a child listing them races
-- with the fds popen itself opens and closes).
function H.fd_count()
  local n, list = 0, {}
  for fd in lfs.dir("/proc/self/fd") do
    if fd:match("^%d+$") then
      n = n + 1
      list[#list + 1] = fd .. "->" .. tostring(lfs.symlinkattributes("/proc/self/fd/" .. fd, "target"))
    end
  end
  return n - 1, table.concat(list, " ") -- less the directory being read
end

--- Waits (driving kiro's loop when given) until pred() holds, up to ms.
function H.wait_for(pred, ms, kiro)
  local deadline = os.time() + math.ceil((ms or 5000) / 1000) + 1
  while not pred() do
    if os.time() > deadline then return false end
    if kiro then kiro.sleep(10) else os.execute("sleep 0.01") end
  end
  return true
end

-- In-process specs: a fresh runtime state per test and the leak check.
local kiro_loaded
function H.kiro()
  if kiro_loaded then return kiro_loaded end
  local kiro = require "kiro"
  kiro_loaded = kiro
  -- Warm up once so the loop's own fds (epoll, signal pipe) exist before
  -- the baseline is taken.
  kiro.configure { cli_path = H.sim }
  assert(kiro.chat("warm-up"))
  kiro.reset()
  H.fd_baseline = H.fd_count()
  return kiro
end

local base_config
--- Per-test setup: kiro configured for kiro-sim with the given knobs.
function H.setup(knobs, options)
  local kiro = H.kiro()
  local dir = H.tmpdir()
  local env = { KIRO_SIM_LOG = dir .. "/sim.log" }
  for k, v in pairs(knobs or {}) do env[k] = tostring(v) end
  base_config = base_config or kiro.core.config()
  -- The core's defaults first, then what every test starts from.
  local cfg = {}
  for k, v in pairs(base_config) do cfg[k] = v end
  for k, v in pairs { cli_path = H.sim, env = env, mode = "auto", model = false,
                      protocol = false, acp_model = false, permission = false, -- back to the environment's
                      policies = false, backends = false, default_backend = false, templates = false,
                      trust = false, policy_timeout_ms = false,
                      log = os.getenv("KIRO_LOG") or "warn",
                      timeout_ms = 20000, first_chunk_timeout_ms = 15000, stall_timeout_ms = 15000,
                      cache = false, cache_ttl_ms = 300000, cache_max_bytes = 64 * 1024 * 1024,
                      policy = require "kiro.policy", kill_grace_ms = 500 } do
    cfg[k] = v
  end
  for k, v in pairs(options or {}) do cfg[k] = v end
  kiro.configure(cfg)
  return kiro, env.KIRO_SIM_LOG, dir
end

--- After each out-of-process test: every kiro-sim that logged a start is gone
-- (kiro-rt reaps its children before it exits).
function H.check_sims_gone()
  for _, env in ipairs(H.envs) do
    -- A server the test started (if any) is stopped, and must go.
    local s = H.status(env)
    if s then
      local r = H.run({ H.kiro_rt, "stop" }, env)
      assert(r.code == 0, "kiro-rt stop failed: " .. tostring(r.err))
      assert(H.wait_for(function() return not H.alive(s.pid) end, 5000),
        ("the server pid %d outlived its test"):format(s.pid))
    end
    local log = env.KIRO_SIM_LOG
    for _, pid in ipairs(H.pids(H.sim_events(log), { event = "start" })) do
      assert(H.wait_for(function() return not H.alive(pid) end, 5000),
        ("kiro-sim pid %d outlived its test (%s)"):format(pid, log))
    end
  end
  H.envs = {}
end

--- After each in-process test: stop everything, then nothing may be left.
function H.check_leaks()
  H.check_sims_gone() -- for tests that also ran the CLI
  if not kiro_loaded then return end
  kiro_loaded.reset()
  local kids = H.children()
  assert(#kids == 0, "child processes left behind: " .. table.concat(kids, ", "))
  -- Connections a test closed finish closing on the loop's next turns.
  H.wait_for(function() return H.fd_count() == H.fd_baseline end, 2000, kiro_loaded)
  local fds, list = H.fd_count()
  assert(fds == H.fd_baseline, ("fd leak: %d open, %d at start: %s"):format(fds, H.fd_baseline, list))
  assert(kiro_loaded.stats().in_flight == 0, "requests still in flight")
end

_G.H = H
return H
