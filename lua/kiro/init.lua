--- kiro: drive LLM command-line backends from Lua.
--
--   local kiro = require "kiro"
--   print(kiro.chat("User: Hello\n\nAssistant: "))
--   for chunk in kiro.stream("Tell me a story") do io.write(chunk) end
--
-- The C core (kiro.core) owns the event loop, the processes, the pipes and
-- the JSON Lines codec. This file is the public face: tasks, blocking and
-- streaming calls, the fallback policy hook, and configuration.

local core = require "kiro.core"
local default_policy = require "kiro.policy"
local template = require "kiro.template"

local kiro = {
  version = core.version,
  template = template,
}

---------------------------------------------------------------------------
-- Errors

local Error = {}
Error.__index = Error
Error.__tostring = function(e) return ("kiro: %s: %s"):format(e.code, e.message) end

local function new_error(code, message)
  return setmetatable({ code = code, message = message }, Error)
end
kiro.Error = Error

---------------------------------------------------------------------------
-- Configuration

local MAX_ATTEMPTS = 4

local truthy = { ["true"] = true, ["1"] = true, yes = true, on = true }
local falsy = { ["false"] = true, ["0"] = true, no = true, off = true }

--- Parses a KIRO_USE_DAEMON-style boolean; nil, message for anything else.
function kiro.parse_bool(name, value)
  local v = value:lower()
  if truthy[v] then return true end
  if falsy[v] then return false end
  return nil, ("%s must be one of true/false, 1/0, yes/no, on/off (got %q)"):format(name, value)
end

local function default_mode()
  local v = os.getenv("KIRO_USE_DAEMON")
  if not v or v == "" then return "auto" end
  local on, err = kiro.parse_bool("KIRO_USE_DAEMON", v)
  if on == nil then error(err, 0) end
  return on and "auto" or "oneshot"
end

-- Defaults that come from the environment, read once (Lua cannot change
-- its own environment). A bad KIRO_USE_DAEMON is reported at each call.
local env_mode_ok, env_mode = pcall(default_mode)
local env_model = os.getenv("KIRO_MODEL")
if env_model == "" then env_model = nil end
local env_cli = os.getenv("KIRO_CLI_PATH")
if env_cli == "" then env_cli = nil end
local found_cli -- kiro-cli on PATH, looked up on first use
local replies    -- the response cache, made on first use
-- Backend objects (the C core's view of cli + model + args + env), built
-- once per configuration and model; configure() starts afresh.
local backends, nbackends = {}, 0

local cfg = {
  cli_path = nil,          -- resolved on first use: KIRO_CLI_PATH, else kiro-cli on PATH
  model = nil,             -- KIRO_MODEL
  mode = nil,              -- KIRO_USE_DAEMON: auto (daemon with fallback) or oneshot
  protocol = "jsonl",
  timeout_ms = 600000,
  first_chunk_timeout_ms = 120000,
  stall_timeout_ms = 120000,
  daemon_args = { "daemon" },
  oneshot_args = { "chat", "--no-interactive" },
  env = nil,               -- extra environment for backends: { NAME = "value" }
  policy = default_policy,
  cache = false,           -- cache (and coalesce) replies by default
  cache_max_bytes = 64 * 1024 * 1024,
  cache_ttl_ms = 300000,
  max_request_bytes = 64 * 1024 * 1024, -- the largest prompt a request may carry
}

local modes = { auto = true, daemon = true, oneshot = true }
local lua_options = {
  cli_path = "string", model = "string", mode = "string", protocol = "string",
  timeout_ms = "number", first_chunk_timeout_ms = "number", stall_timeout_ms = "number",
  daemon_args = "table", oneshot_args = "table", env = "table", policy = "policy", log = "string",
  cache = "boolean", cache_max_bytes = "number", cache_ttl_ms = "number",
  max_request_bytes = "number",
}
-- The range of each number option (durations: 2^31 - 1 ms, 24.8 days, as in the core).
local MAX_MS = 2147483647
local ranges = {
  timeout_ms = { 0, MAX_MS }, first_chunk_timeout_ms = { 0, MAX_MS }, stall_timeout_ms = { 0, MAX_MS },
  cache_ttl_ms = { 0, MAX_MS }, cache_max_bytes = { 0, 1 << 40 }, max_request_bytes = { 64, 1 << 40 },
}
kiro.MAX_MS = MAX_MS

-- Whole numbers within [lo, hi]; nil, message otherwise.
local function check_range(what, v, lo, hi)
  if math.type(v) ~= "integer" or v < lo or v > hi then
    return nil, ("%s must be an integer from %d to %d"):format(what, lo, hi)
  end
  return v
end
local core_options = core.config()
-- Options that `false` resets to their default (environment, PATH lookup).
local resettable = { cli_path = true, model = true, env = true }

--- configure(tbl): set runtime options. Unknown keys are an error.
-- Lua-level: cli_path, model, mode, protocol, timeout_ms, first_chunk_timeout_ms,
-- stall_timeout_ms, daemon_args, oneshot_args, env, policy, log.
-- Core: max_line_bytes, pool_min, pool_max, queue_max, pool_idle_ms,
-- kill_grace_ms, drain_ms, restart_backoff_ms, restart_backoff_max_ms,
-- restart_max, restart_window_ms, cooldown_ms.
function kiro.configure(tbl)
  if type(tbl) ~= "table" then error("kiro.configure: expected a table", 2) end
  local for_core = {}
  for k, v in pairs(tbl) do
    local kind = lua_options[k]
    if v == false and resettable[k] then -- luacheck: ignore 542
      -- back to the default
    elseif kind == "policy" then
      if type(v) ~= "function" and not (type(v) == "table" and type(v.decide) == "function") then
        error("kiro.configure: policy must be a function or a table with a decide function", 2)
      end
    elseif kind then
      if type(v) ~= kind then
        error(("kiro.configure: %s must be a %s"):format(k, kind), 2)
      end
      if kind == "number" then
        local ok, err = check_range(k, v, ranges[k][1], ranges[k][2])
        if not ok then error("kiro.configure: " .. err, 2) end
      end
    elseif core_options[k] ~= nil then
      for_core[k] = v
    else
      error(("kiro.configure: unknown option '%s'"):format(tostring(k)), 2)
    end
  end
  if tbl.mode and not modes[tbl.mode] then
    error(("kiro.configure: mode must be auto, daemon or oneshot (got %q)"):format(tbl.mode), 2)
  end
  if tbl.log then
    local ok, err = core.set_log(tbl.log)
    if not ok then error("kiro.configure: " .. err, 2) end
  end
  local ok, err = pcall(core.configure, for_core)
  if not ok then error("kiro." .. tostring(err), 2) end
  for k, v in pairs(tbl) do
    if lua_options[k] and k ~= "log" then
      if v == false and resettable[k] then cfg[k] = nil else cfg[k] = v end
    end
  end
  backends, nbackends = {}, 0
  if tbl.cli_path == false then found_cli = nil end
  if replies then
    replies.max_bytes, replies.ttl_ms = cfg.cache_max_bytes, cfg.cache_ttl_ms
    replies:trim()
  end
end

--- The effective value of an option (after environment defaults).
function kiro.option(name)
  if name == "mode" then
    if cfg.mode then return cfg.mode end
    if not env_mode_ok then error(env_mode, 0) end
    return env_mode
  end
  if name == "model" then return cfg.model or env_model end
  if name == "cli_path" then
    if cfg.cli_path or env_cli then return cfg.cli_path or env_cli end
    found_cli = found_cli or core.which("kiro-cli")
    return found_cli
  end
  if lua_options[name] then return cfg[name] end
  return core.config()[name]
end

local NO_MODEL = {}

-- A backend is named by cli, model and extra environment. The common case
-- (the configured cli and env) is keyed by model alone.
local function backend_for(cli, model, env)
  local key = model or NO_MODEL
  if env or cli ~= (cfg.cli_path or env_cli or found_cli) then
    local vars = {}
    for k, v in pairs(env or {}) do vars[#vars + 1] = k .. "=" .. v end
    table.sort(vars)
    key = table.concat({ cli, model or "", table.concat(vars, "\0") }, "\1")
  end
  local b = backends[key]
  if not b then
    if nbackends >= 256 then backends, nbackends = {}, 0 end -- bounded
    local merged = env
    if cfg.env and env then
      merged = {}
      for k, v in pairs(cfg.env) do merged[k] = v end
      for k, v in pairs(env) do merged[k] = v end
    end
    b = core.backend {
      cli = cli, model = model, protocol = cfg.protocol,
      daemon_args = cfg.daemon_args, oneshot_args = cfg.oneshot_args, env = merged or cfg.env,
    }
    backends[key] = b
    nbackends = nbackends + 1
  end
  return b
end

---------------------------------------------------------------------------
-- Tasks: coroutines driven by the loop

local WAIT = setmetatable({}, { __name = "kiro.wait" })
local tasks = {}        -- coroutine -> true
local ntasks = 0
local ready, rhead, rtail = {}, 1, 0
local running = false

local spawn_args = setmetatable({}, { __mode = "k" }) -- first resume's arguments

local function schedule(co)
  rtail = rtail + 1
  ready[rtail] = co
end

local function in_task()
  local co = coroutine.running()
  return tasks[co] and co or nil
end

--- spawn(fn, ...): start fn(...) as a kiro task; it runs when the loop runs.
function kiro.spawn(fn, ...)
  if type(fn) ~= "function" then error("kiro.spawn: expected a function", 2) end
  local co = coroutine.create(fn)
  tasks[co] = true
  ntasks = ntasks + 1
  if select("#", ...) > 0 then spawn_args[co] = table.pack(...) end
  schedule(co)
  return co
end

local function step_task(co)
  local ok, res
  local args = spawn_args[co]
  if args then
    spawn_args[co] = nil
    ok, res = coroutine.resume(co, table.unpack(args, 1, args.n))
  else
    ok, res = coroutine.resume(co)
  end
  if coroutine.status(co) == "dead" then
    tasks[co] = nil
    ntasks = ntasks - 1
    if not ok then
      local msg = debug.traceback(co, tostring(res))
      coroutine.close(co)
      error(msg, 0)
    end
    coroutine.close(co) -- its stack goes now, with whatever it still pointed at
  elseif res ~= WAIT then
    schedule(co) -- a plain coroutine.yield(): let others run, then go on
  end
end

local function run_ready()
  while rhead <= rtail do
    local co = ready[rhead]
    ready[rhead] = nil
    rhead = rhead + 1
    step_task(co)
  end
  rhead, rtail = 1, 0
end

--- run(): run the loop until no task is left.
function kiro.run()
  if in_task() then error("kiro.run: called from inside a kiro task", 2) end
  if running then error("kiro.run: already running", 2) end
  running = true
  local ok, err = pcall(function()
    while ntasks > 0 do
      run_ready()
      if ntasks > 0 then core.step() end
    end
  end)
  running = false
  if not ok then error(err, 0) end
end

-- Block until `w.woken` is set by `wake(w)`: a task yields to the loop; any
-- other caller (a plain script, a foreign coroutine) drives the loop itself.
local function block(w)
  local co = in_task()
  if co then
    w.task = co
    while not w.woken do coroutine.yield(WAIT) end
    w.task = nil
  else
    while not w.woken do core.step() end
  end
  w.woken = false
end

local function wake(w)
  if w.woken then return end
  w.woken = true
  if w.task then schedule(w.task) end
end

--- event(): a one-shot signal between tasks. ev:wait() suspends the calling
-- task (or drives the loop for a plain caller) until ev:set(); ev:is_set().
local Event = {}
Event.__index = Event
function Event:wait()
  if self.done then return end
  local w = { woken = false }
  self.waiters[#self.waiters + 1] = w
  while not self.done do block(w) end
end
function Event:set()
  if self.done then return end
  self.done = true
  for _, w in ipairs(self.waiters) do wake(w) end
  self.waiters = {}
end
function Event:is_set() return self.done end
function kiro.event() return setmetatable({ done = false, waiters = {} }, Event) end

--- sleep(ms): suspend the calling task (or block a plain caller) for ms.
function kiro.sleep(ms)
  if math.type(ms) == nil then error("kiro.sleep: expected milliseconds", 2) end
  local w = {}
  w.timer = core.timer(math.floor(ms), function() wake(w) end)
  block(w)
  w.timer:stop()
end

---------------------------------------------------------------------------
-- Calls

local stats = { fallbacks = 0, retries = 0, fallbacks_by_reason = {} }

-- Metrics recorded per request, as its caller saw it (the rest is read
-- from the core's counters when metrics are rendered). Loaded on first use:
-- a command that makes no request (kiro-rt agent, as a client) skips it.
local M, m_requests, m_duration, m_first, m_fallbacks

local function metrics()
  if M then return M end
  M = require "kiro.metrics"
  m_requests = M.counter("kiro_requests_total",
    "Requests by backend, model, the mode that ended them (daemon, oneshot, cache, coalesced) and outcome.",
    { "backend", "model", "mode", "outcome" })
  m_duration = M.histogram("kiro_request_duration_seconds",
    "Time from the call to the end of its reply.", { "backend", "mode" })
  m_first = M.histogram("kiro_first_chunk_seconds",
    "Time from the call to the first chunk handed to the caller.", { "backend", "mode" })
  m_fallbacks = M.counter("kiro_fallbacks_total",
    "Requests served another way after a failure, by the failure's code.", { "reason" })
  return M
end

-- r: a Call or a Reader (fields cli, model, h0); mode: how it was served.
local function observe_first(r, mode)
  if r.saw_first or r.flighted then return end
  r.saw_first = true
  metrics().observe(m_first, { r.cli or "", mode }, (core.hrtime() - r.h0) / 1e9)
end

local function observe_end(r, mode, err)
  if r.observed or r.flighted then return end
  r.observed = true
  local backend = r.cli or ""
  metrics().inc(m_requests, { backend, r.model or "", mode, err and err.code or "ok" })
  M.observe(m_duration, { backend, mode }, (core.hrtime() - r.h0) / 1e9)
end

local Call = {}
Call.__index = Call
Call.__close = function(call) call:cancel() end

local NO_OPTS = setmetatable({}, { __newindex = function() error("read-only", 2) end })

local function check_opts(fname, prompt, opts)
  if type(prompt) ~= "string" then error(fname .. ": prompt must be a string", 3) end
  if opts == nil then return NO_OPTS end
  if type(opts) ~= "table" then error(fname .. ": opts must be a table", 3) end
  for k, v in pairs(opts) do
    if k == "mode" then
      if not modes[v] then error(fname .. ": mode must be auto, daemon or oneshot", 3) end
    elseif k == "model" or k == "cli_path" then
      if type(v) ~= "string" then error(("%s: %s must be a string"):format(fname, k), 3) end
    elseif k == "env" then
      if type(v) ~= "table" then error(fname .. ": env must be a table", 3) end
    elseif k == "cache" then
      if type(v) ~= "boolean" then error(fname .. ": cache must be a boolean", 3) end
    elseif k == "stream" and fname == "kiro.call" then
      if type(v) ~= "boolean" then error(fname .. ": stream must be a boolean", 3) end
    elseif k == "timeout_ms" or k == "first_chunk_timeout_ms" or k == "stall_timeout_ms" then
      local ok, err = check_range(k, v, 0, MAX_MS)
      if not ok then error(fname .. ": " .. err, 3) end
    else
      error(("%s: unknown option '%s'"):format(fname, tostring(k)), 3)
    end
  end
  return opts
end

-- The backend a call names: its own cli_path and model, else the configured
-- ones, else the environment's.
local function cli_of(opts)
  return opts.cli_path or cfg.cli_path or env_cli or kiro.option("cli_path")
end

local function model_of(opts)
  return opts.model or cfg.model or env_model
end

local function open_call(fname, prompt, opts, stream)
  local mode = opts.mode or cfg.mode or (env_mode_ok and env_mode)
  -- The call is also its own wait record (woken, task) for block/wake.
  local call = setmetatable({
    prompt = prompt, opts = opts, stream = stream,
    requested_mode = mode,
    mode = mode == "oneshot" and "oneshot" or "daemon",
    model = model_of(opts),
    timeout_ms = opts.timeout_ms or cfg.timeout_ms,
    attempt = 1, delivered = false,
    chunks = {}, chead = 1, ctail = 0,
    woken = false,
    cli = cli_of(opts),
    t0 = core.now(), h0 = core.hrtime(),
  }, Call)
  -- Failures known before any backend is asked end the call at once.
  if not mode then
    call.ended, call.code, call.msg = true, "config", env_mode
  elseif not call.cli then
    call.ended, call.code = true, "spawn"
    call.msg = "no backend: kiro-cli is not on PATH and KIRO_CLI_PATH is not set"
  elseif #prompt > cfg.max_request_bytes then
    call.ended, call.code = true, "overloaded"
    call.msg = ("the prompt is %d bytes; max_request_bytes is %d"):format(#prompt, cfg.max_request_bytes)
  end
  if call.ended then
    call.cli = nil -- nothing to fall back to
    return call
  end
  call:submit()
  return call
end

function Call:submit()
  local remaining = 0
  if self.timeout_ms > 0 then
    remaining = self.attempt == 1 and self.timeout_ms
      or math.max(1, self.timeout_ms - (core.now() - self.t0))
  end
  self.ended, self.code, self.msg = false, nil, nil
  local o = self.opts
  self.req = core.request(backend_for(self.cli, self.model, o.env), self.mode, self.prompt, self.stream,
    remaining, o.first_chunk_timeout_ms or cfg.first_chunk_timeout_ms,
    o.stall_timeout_ms or cfg.stall_timeout_ms, self)
end

-- A request's events: chunks, then its end.
function Call:on_event(ev, a, b)
  if ev == "chunk" then
    self.ctail = self.ctail + 1
    self.chunks[self.ctail] = a
  else
    self.ended, self.code, self.msg = true, a, b
  end
  wake(self)
end

-- Every event of the C core (requests, connections) arrives here, with the
-- object it belongs to as ctx.
core.on_event(function(ctx, ev, a, b) ctx:on_event(ev, a, b) end)

local function log(level, target, msg)
  if core.log_enabled(level, target) then core.log(level, target, msg) end
end

-- The request failed: ask the policy whether to try another way.
function Call:recover()
  if self.cancelled or not self.cli then return false end -- no backend: nothing to fall back to
  if self.delivered or self.attempt >= MAX_ATTEMPTS then return false end
  local remaining = self.timeout_ms > 0 and self.timeout_ms - (core.now() - self.t0) or math.huge
  if remaining <= 0 then return false end
  local failure = {
    code = self.code, message = self.msg, mode = self.mode,
    requested_mode = self.requested_mode, attempt = self.attempt,
    delivered = self.delivered, remaining_ms = remaining,
    prompt = self.prompt, opts = self.opts,
  }
  local p = cfg.policy
  local ok, action = pcall(type(p) == "function" and p or p.decide, failure)
  if not ok then
    log("error", "kiro.policy", "policy raised an error; failing the request: " .. tostring(action))
    return false
  end
  if action == "oneshot" then
    if self.code == "spawn" and self.mode == "daemon" then
      log("warn", "kiro.provider", "Failed to start daemon, falling back to oneshot: " .. self.msg)
    else
      log("warn", "kiro.provider", ("Daemon request failed (%s), falling back to oneshot: %s")
        :format(self.code, self.msg))
    end
    stats.fallbacks = stats.fallbacks + 1
    metrics().inc(m_fallbacks, { self.code })
    stats.fallbacks_by_reason[self.code] = (stats.fallbacks_by_reason[self.code] or 0) + 1
    self.mode = "oneshot"
  elseif action == "retry" then
    log("info", "kiro.provider", ("retrying after %s: %s"):format(self.code, self.msg))
    stats.retries = stats.retries + 1
  elseif action == "fail" or action == nil then
    return false
  else
    log("error", "kiro.policy", ("policy returned %q; expected oneshot, retry or fail"):format(tostring(action)))
    return false
  end
  self.attempt = self.attempt + 1
  self.ctail, self.chead, self.chunks = 0, 1, {}
  self:submit()
  return true
end

--- The next chunk; nil at the end; nil, err on failure.
function Call:next()
  while true do
    if self.chead <= self.ctail then
      local c = self.chunks[self.chead]
      self.chunks[self.chead] = nil
      self.chead = self.chead + 1
      if self.stream then self.delivered = true end
      observe_first(self, self.mode)
      return c
    end
    if self.ended then
      if not self.code then
        observe_end(self, self.mode)
        self:release()
        return nil
      end
      if not self:recover() then
        self.failed = self.failed or new_error(self.code, self.msg)
        observe_end(self, self.mode, self.failed)
        self:release()
        return nil, self.failed
      end
    else
      block(self)
    end
  end
end

-- The call is over for good: what it held for a retry (the prompt, the
-- request, which borrows it) goes, whoever still holds the call.
function Call:release()
  self.prompt, self.req = nil, nil
end

--- Flow control: while paused, the backend's output waits (its pipe fills
-- and it blocks); for a reader that cannot keep up.
function Call:pause(on)
  if self.req and not self.ended then self.req:pause(on) end
end

function Call:cancel()
  if self.req and not self.ended then
    self.cancelled = true
    self.req:cancel()
  end
end

---------------------------------------------------------------------------
-- Cache and coalescing. A cacheable request is a Flight: one backend call
-- whose chunks every Reader of it gets, each at its own pace, from the
-- first. Identical cacheable requests in flight share it; a finished one
-- fills the cache, and a cache hit is a Flight that is already complete.

local flights = {}       -- key -> Flight in progress
local coalesced = 0

local function reply_cache()
  replies = replies or require("kiro.cache").new {
    max_bytes = cfg.cache_max_bytes, ttl_ms = cfg.cache_ttl_ms, now = core.now,
  }
  return replies
end

local Flight = {}
Flight.__index = Flight

function Flight:wake_all()
  local ws = self.waiters
  self.waiters = {}
  for _, w in ipairs(ws) do wake(w) end
end

function Flight:finish(err)
  self.done, self.err = true, err
  if flights[self.key] == self then flights[self.key] = nil end
  if not err and self.call then reply_cache():put(self.key, self.chunks) end
  self:wake_all()
end

local Reader = {}
Reader.__index = Reader
Reader.__close = function(r) r:cancel() end

local function cancelled_error() return new_error("cancelled", "cancelled by caller") end

function Reader:next()
  local f = self.flight
  while true do
    if self.cancelled then return nil, cancelled_error() end
    if self.pos < f.n then
      self.pos = self.pos + 1
      observe_first(self, self:mode())
      return f.chunks[self.pos]
    end
    if f.done then
      self:leave()
      observe_end(self, self:mode(), f.err)
      if f.err then return nil, f.err end
      return nil
    end
    if not f.pulling then
      -- Nobody is reading the backend call: this reader does, for everyone.
      f.pulling = true
      local c, err = f.call:next()
      f.pulling = false
      if c then
        f.n = f.n + 1
        f.chunks[f.n] = c
        f:wake_all()
      else
        f:finish(err)
      end
    else
      local w = { woken = false }
      self.w = w
      f.waiters[#f.waiters + 1] = w
      block(w)
      self.w = nil
    end
  end
end

-- How this reader was served: from the cache, by another caller's backend
-- call, or by its own.
function Reader:mode()
  if not self.flight.call then return "cache" end
  if self.follower then return "coalesced" end
  return self.flight.call.mode
end

function Reader:leave()
  if self.left then return end
  self.left = true
  local f = self.flight
  f.readers = f.readers - 1
  if f.readers == 0 and not f.done then
    -- The last reader left: nobody wants this reply any more.
    if flights[f.key] == f then flights[f.key] = nil end
    f.call:cancel()
  elseif not f.done then
    f:wake_all() -- someone else takes over pulling
  end
end

function Reader:cancel()
  if self.cancelled or self.left then return end
  self.cancelled = true
  self:leave()
  if self.w then wake(self.w) end
end

local function cache_key(fname, prompt, opts)
  local vars = {}
  for k, v in pairs(opts.env or cfg.env or {}) do vars[#vars + 1] = k .. "=" .. v end
  table.sort(vars)
  return table.concat({
    cli_of(opts) or "", model_of(opts) or "", table.concat(vars, "\1"), prompt,
  }, "\0")
end

local function cacheable(prompt, opts)
  if opts.cache ~= nil then return opts.cache end
  local p = cfg.policy
  if type(p) == "table" and type(p.cacheable) == "function" then
    local v = p.cacheable(prompt, opts)
    if v ~= nil then return v end
  end
  return cfg.cache
end

-- Opens a request: a plain Call, or a Reader of a (shared or cached) Flight.
local function open(fname, prompt, opts, stream)
  opts = check_opts(fname, prompt, opts)
  if not cacheable(prompt, opts) then return open_call(fname, prompt, opts, stream) end
  local key = cache_key(fname, prompt, opts)
  local f = flights[key]
  local follower = f ~= nil
  if f then
    coalesced = coalesced + 1
  else
    local hit = reply_cache():get(key)
    if hit then
      f = setmetatable({ key = key, chunks = hit, n = #hit, done = true, readers = 0, waiters = {} }, Flight)
    else
      f = setmetatable({ key = key, chunks = {}, n = 0, done = false, readers = 0, waiters = {} }, Flight)
      f.call = open_call(fname, prompt, opts, stream)
      f.call.flighted = true -- its readers are what metrics count
      flights[key] = f
    end
  end
  f.readers = f.readers + 1
  return setmetatable({ flight = f, pos = 0, follower = follower, h0 = core.hrtime(),
    cli = cli_of(opts), model = model_of(opts) }, Reader)
end

--- chat(prompt [, opts]) -> reply, or nil, message, code
function kiro.chat(prompt, opts)
  local call = open("kiro.chat", prompt, opts, false)
  local first, parts
  while true do
    local c, err = call:next()
    if c then
      if not first then
        first = c
      else
        parts = parts or { first }
        parts[#parts + 1] = c
      end
    elseif err then
      return nil, err.message, err.code
    else
      return parts and table.concat(parts) or first or ""
    end
  end
end

--- stream(prompt [, opts]) -> iterator for `for chunk in kiro.stream(...)`.
-- Raises an error object (.code, .message) on failure. Leaving the loop early
-- (break, error, return) cancels the request.
function kiro.stream(prompt, opts)
  local call = open("kiro.stream", prompt, opts, true)
  local function iter()
    while true do
      local c, err = call:next()
      if err then error(err, 0) end
      if c == nil or #c > 0 then return c end
    end
  end
  return iter, nil, nil, call
end

--- call(prompt [, opts]) -> call: the request under chat and stream, for
-- callers that relay it (like the server). opts as for chat, plus `stream`
-- (default true). call:next() -> chunk; nil at the end; nil, err (an error
-- object) on failure. call:cancel() ends it with `cancelled`.
function kiro.call(prompt, opts)
  local stream = opts == nil or opts.stream ~= false
  return open("kiro.call", prompt, opts, stream)
end

--- stats() -> table of counters (requests, ok, errors, fallbacks, pools, ...)
function kiro.stats()
  local s = core.stats()
  s.fallbacks = stats.fallbacks
  s.retries = stats.retries
  s.fallbacks_by_reason = {}
  for k, v in pairs(stats.fallbacks_by_reason) do s.fallbacks_by_reason[k] = v end
  s.tasks = ntasks
  local c = replies or { hits = 0, misses = 0, evictions = 0, bytes = 0, entries = 0 }
  s.cache = { hits = c.hits, misses = c.misses, evictions = c.evictions, bytes = c.bytes,
              entries = c.entries, coalesced = coalesced }
  return s
end

--- metrics() -> Prometheus text exposition (format 0.0.4) of this runtime.
function kiro.metrics()
  local s = kiro.stats()
  local daemons, queue, restarts = {}, {}, {}
  for _, p in ipairs(s.pools) do
    local by_state = { ready = 0, busy = 0, draining = 0, stopping = 0 }
    for _, d in ipairs(p.daemons) do by_state[d.state] = (by_state[d.state] or 0) + 1 end
    for _, st in ipairs { "ready", "busy", "draining", "stopping" } do
      daemons[#daemons + 1] = { { p.cli, p.model or "", st }, by_state[st] }
    end
    queue[#queue + 1] = { { p.cli, p.model or "" }, p.queued }
    restarts[#restarts + 1] = { { p.cli, p.model or "" }, p.restarts }
  end
  local function counter(name, help, v) return { name = name, kind = "counter", help = help, samples = { { {}, v } } } end
  local function gauge(name, help, v) return { name = name, kind = "gauge", help = help, samples = { { {}, v } } } end
  local c = s.cache
  return metrics().render {
    { name = "kiro_daemons", kind = "gauge", help = "Daemons by backend, model and state.",
      labels = { "backend", "model", "state" }, samples = daemons },
    { name = "kiro_queue_depth", kind = "gauge", help = "Requests waiting for a daemon.",
      labels = { "backend", "model" }, samples = queue },
    { name = "kiro_pool_restarts_total", kind = "counter",
      help = "Daemon failures that led to a restart, by backend and model (pools live until reset).",
      labels = { "backend", "model" }, samples = restarts },
    counter("kiro_daemon_starts_total", "Daemons started.", s.daemon_starts),
    counter("kiro_daemon_restarts_total", "Daemons that died after answering and were replaced.", s.daemon_restarts),
    counter("kiro_daemon_start_failures_total", "Daemons that died before answering.", s.daemon_start_failures),
    counter("kiro_timeouts_total", "Requests ended by a timeout.", s.timeouts),
    counter("kiro_cancelled_total", "Requests cancelled by their caller.", s.cancelled),
    counter("kiro_chunks_total", "Reply chunks received from backends.", s.chunks),
    counter("kiro_health_failures_total", "Daemons found stopped or zombie and replaced.", s.health_failures),
    counter("kiro_probes_total", "Active health probes sent.", s.probes),
    counter("kiro_probe_failures_total", "Active health probes that failed.", s.probe_failures),
    counter("kiro_retries_total", "Requests the policy sent to the daemon pool again.", s.retries),
    counter("kiro_cache_hits_total", "Response cache hits.", c.hits),
    counter("kiro_cache_misses_total", "Response cache misses.", c.misses),
    counter("kiro_cache_evictions_total", "Response cache entries evicted (bytes bound or TTL).", c.evictions),
    counter("kiro_coalesced_total", "Requests that shared another's backend call.", c.coalesced),
    gauge("kiro_cache_bytes", "Bytes held by the response cache.", c.bytes),
    gauge("kiro_cache_entries", "Entries in the response cache.", c.entries),
    gauge("kiro_in_flight", "Requests in flight.", s.in_flight),
    gauge("process_resident_memory_bytes", "Resident memory size in bytes.",
      core.process_rss(core.getpid()) or 0),
    { name = "kiro_build_info", kind = "gauge", help = "kiro-rt's version.", labels = { "version" },
      samples = { { { kiro.version }, 1 } } },
  }
end

--- shutdown(): end every request (`cancelled`) and stop every backend; no
-- request is taken afterwards.
function kiro.shutdown() core.shutdown(false) end

--- reset(): end every request (`cancelled`), stop every backend, wait
-- until each one has exited, and empty the cache; the runtime stays usable
-- (fresh pools).
-- Called outside any task, it also closes tasks left waiting (say, by a
-- kiro.run that ended in an error).
function kiro.reset()
  core.shutdown(true)
  if replies then replies:clear() end
  if in_task() then
    while core.stats().children > 0 do kiro.sleep(5) end
    return
  end
  while core.stats().children > 0 do core.step() end
  for co in pairs(tasks) do coroutine.close(co) end
  tasks, ntasks, ready, rhead, rtail = {}, 0, {}, 1, 0
end
--- log(level, target, message): write through kiro's logger (KIRO_LOG).
kiro.log = log
--- on_signal(fn): on SIGINT/SIGTERM, call fn(signum) and shut down.
kiro.on_signal = core.handle_signals
kiro.core = core

return kiro
