--- A call: one request as its caller sees it, from the first attempt to the
-- last. It asks the fallback policy what to do when an attempt fails, and
-- never retries or falls back once part of a reply reached the caller.

local core = require "kiro.core"
local config = require "kiro.config"
local errors = require "kiro.error"
local tasks = require "kiro.tasks"

local call = {}

local MAX_ATTEMPTS = 4
local cfg = config.cfg

--- Counters the policy loop keeps (kiro.stats adds them to the core's).
call.stats = { fallbacks = 0, retries = 0, fallbacks_by_reason = {} }

-- Metrics per request, as its caller saw it (the rest is read from the
-- core's counters when metrics are rendered). Loaded on first use: a
-- command that makes no request (kiro-rt agent, as a client) skips it.
local metrics
local function M()
  metrics = metrics or require("kiro.exposition").requests()
  return metrics
end

--- r: a call, or a reader of one (fields cli, model, h0, flighted); mode:
--- how it was served.
function call.observe_first(r, mode)
  if r.saw_first or r.flighted then return end
  r.saw_first = true
  M().first(r.cli or "", mode, (core.hrtime() - r.h0) / 1e9)
end

function call.observe_end(r, mode, code)
  if r.observed or r.flighted then return end
  r.observed = true
  M().finished(r.cli or "", r.model or "", mode, code or "ok", (core.hrtime() - r.h0) / 1e9)
end

local function log(level, target, msg)
  if core.log_enabled(level, target) then core.log(level, target, msg) end
end

local NO_OPTS = setmetatable({}, { __newindex = function() error("read-only", 2) end })

--- Checks a call's arguments; misuse raises at the caller of `fname`.
---@param fname string kiro.chat, kiro.stream or kiro.call
---@param prompt any
---@param opts any
---@return table opts
function call.check_opts(fname, prompt, opts)
  local function bad(msg) errors.misuse(fname, msg, 3) end
  if type(prompt) ~= "string" then bad("prompt must be a string") end
  if opts == nil then return NO_OPTS end
  if type(opts) ~= "table" then bad("opts must be a table") end
  for k, v in pairs(opts) do
    if k == "mode" then
      if not config.MODES[v] then bad("mode must be auto, daemon or oneshot") end
    elseif k == "model" or k == "cli_path" then
      if type(v) ~= "string" then bad(k .. " must be a string") end
    elseif k == "env" then
      if type(v) ~= "table" then bad("env must be a table") end
    elseif k == "cache" then
      if type(v) ~= "boolean" then bad("cache must be a boolean") end
    elseif k == "stream" and fname == "kiro.call" then
      if type(v) ~= "boolean" then bad("stream must be a boolean") end
    elseif k == "timeout_ms" or k == "first_chunk_timeout_ms" or k == "stall_timeout_ms" then
      local ok, err = config.check_range(k, v, 0, config.MAX_MS)
      if not ok then bad(err) end
    else
      bad(("unknown option '%s'"):format(tostring(k)))
    end
  end
  return opts
end

--- The CLI a call names: its own, else the configured one.
---@return string?
function call.cli_of(opts)
  return opts.cli_path or config.cli()
end

---@return string?
function call.model_of(opts)
  return opts.model or config.model()
end

---@class kiro.Call
---@field stream boolean
---@field mode string       "daemon" or "oneshot": the path of the attempt under way
---@field attempt integer
---@field delivered boolean  part of the reply reached the caller
local Call = {}
Call.__index = Call
Call.__close = function(c) c:cancel() end

-- A failure known before any backend is asked: the call ends at once.
local function ended(c, code, msg)
  c.ended, c.code, c.msg = true, code, msg
  c.cli = nil -- nothing to fall back to
  return c
end

--- Opens a call (opts already checked); its first attempt is under way.
---@param prompt string
---@param opts table
---@param stream boolean
---@param backend? userdata a handle for the backend, already resolved
---@param owned? boolean the call closes that handle when it is over
---@return kiro.Call
function call.open(prompt, opts, stream, backend, owned)
  local mode, mode_err = opts.mode, nil
  if not mode then mode, mode_err = config.mode() end
  -- The call is also its own wait record (woken, task) for block/wake, and
  -- says how to make its request (mode, stream, timeouts: core.request).
  local c = setmetatable({
    prompt = prompt, opts = opts, stream = stream,
    requested_mode = mode,
    mode = mode == "oneshot" and "oneshot" or "daemon",
    model = call.model_of(opts),
    timeout_ms = opts.timeout_ms or cfg.timeout_ms,
    first_chunk_timeout_ms = opts.first_chunk_timeout_ms or cfg.first_chunk_timeout_ms,
    stall_timeout_ms = opts.stall_timeout_ms or cfg.stall_timeout_ms,
    attempt = 1, delivered = false,
    chunks = {}, chead = 1, ctail = 0,
    woken = false,
    cli = call.cli_of(opts),
    t0 = core.now(), h0 = core.hrtime(),
  }, Call)
  if backend then c.backend, c.owns_backend = backend, owned end
  if not mode then return c:release() or ended(c, "config", mode_err) end
  if not c.cli then
    return ended(c, "spawn", "no backend: kiro-cli is not on PATH and KIRO_CLI_PATH is not set")
  end
  if #prompt > cfg.max_request_bytes then
    return ended(c, "overloaded",
      ("the prompt is %d bytes; max_request_bytes is %d"):format(#prompt, cfg.max_request_bytes))
  end
  if not c.backend then
    local b, owned_or_err, code = config.backend(c.cli, c.model, opts.env)
    if not b then return ended(c, code, owned_or_err) end
    c.backend, c.owns_backend = b, owned_or_err
  end
  c:submit()
  return c
end

--- Makes the attempt's request.
function Call:submit()
  self.attempt_timeout_ms = 0
  if self.timeout_ms > 0 then
    self.attempt_timeout_ms = self.attempt == 1 and self.timeout_ms
      or math.max(1, self.timeout_ms - (core.now() - self.t0))
  end
  self.ended, self.code, self.msg = false, nil, nil
  self.req = core.request(self.backend, self.prompt, self)
end

--- A request's events: chunks, then its end.
function Call:on_event(ev, a, b)
  if ev == "chunk" then
    self.ctail = self.ctail + 1
    self.chunks[self.ctail] = a
  else
    self.ended, self.code, self.msg = true, a, b
  end
  tasks.wake(self)
end

-- The attempt failed: ask the policy whether to try another way.
function Call:recover()
  if self.cancelled or not self.cli then return false end -- nothing to fall back to
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
  local stats = call.stats
  if action == "oneshot" then
    if self.code == "spawn" and self.mode == "daemon" then
      log("warn", "kiro.provider", "Failed to start daemon, falling back to oneshot: " .. self.msg)
    else
      log("warn", "kiro.provider", ("Daemon request failed (%s), falling back to oneshot: %s")
        :format(self.code, self.msg))
    end
    stats.fallbacks = stats.fallbacks + 1
    M().fallback(self.code)
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

--- The next chunk; nil at the end; nil, message, code on failure.
---@return string|nil chunk, string? message, string? code
function Call:next()
  while true do
    if self.chead <= self.ctail then
      local c = self.chunks[self.chead]
      self.chunks[self.chead] = nil
      self.chead = self.chead + 1
      if self.stream then self.delivered = true end
      call.observe_first(self, self.mode)
      return c
    end
    if self.ended then
      if not self.code then
        call.observe_end(self, self.mode)
        self:release()
        return nil
      end
      if self.failed or not self:recover() then
        self.failed = true
        call.observe_end(self, self.mode, self.code)
        self:release()
        return nil, self.msg, self.code
      end
    else
      tasks.block(self)
    end
  end
end

--- The call is over for good: what it held for another attempt (the
--- prompt, the request, which borrows it, a backend of its own) goes,
--- whoever still holds the call.
function Call:release()
  if self.owns_backend then self.backend:close() end
  self.prompt, self.req, self.backend, self.owns_backend = nil, nil, nil, nil
end

--- Flow control: while paused, the backend's output waits (its pipe fills
--- and it blocks); for a reader that cannot keep up.
---@param on boolean
function Call:pause(on)
  if self.req and not self.ended then self.req:pause(on) end
end

--- Ends the call `cancelled`; the backend drains the rest of the reply.
function Call:cancel()
  if self.req and not self.ended then
    self.cancelled = true
    self.req:cancel()
    self:release() -- whether or not anyone asks for the rest
  end
end

return call
