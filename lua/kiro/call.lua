--- A call: one request as its caller sees it, from the first attempt to the
-- last. It asks the fallback policy what to do when an attempt fails, and
-- never retries or falls back once part of a reply reached the caller.

local core = require "kiro.core"
local config = require "kiro.config"
local template = require "kiro.template"
local errors = require "kiro.error"
local tasks = require "kiro.tasks"
local trust = require "kiro.trust"

local call = {}

local MAX_ATTEMPTS = 4
local remember_tool, tool_of -- an agent's tool calls, for its permission requests (below)
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

--- Records a request's first chunk, as its caller saw it, once.
---@param r table a call or a reader: r.h0 (its start, core.hrtime), r.seen
---@param mode string how it was served
---@param cli string
function call.observe_first(r, mode, cli)
  if r.seen then return end
  r.seen = 1
  if r.flighted then return end -- a flight's readers are what metrics count
  M().first(cli or "", mode, (core.hrtime() - r.h0) / 1e9)
end

--- Records a request's end (code nil: success), once.
---@param r table a call or a reader: r.h0 (its start, core.hrtime), r.seen
---@param mode string how it was served
---@param code? string the error code; nil on success
---@param cli? string
---@param model? string
function call.observe_end(r, mode, code, cli, model)
  if r.seen == 2 then return end
  r.seen = 2
  if r.flighted then return end
  M().finished(cli or "", model or "", mode, code or "ok", (core.hrtime() - r.h0) / 1e9)
end

local function log(level, target, msg)
  if core.log_enabled(level, target) then core.log(level, target, msg) end
end

-- A call's options (kiro.chat's, kiro.stream's, kiro.call's).
local CALL_OPTIONS = { "mode", "protocol", "model", "cli_path", "backend", "env", "cache", "on_update", "permission",
  "trust", "template", "vars", "history", "session", "stream", "timeout_ms", "first_chunk_timeout_ms",
  "stall_timeout_ms" }

local NO_OPTS = setmetatable({}, { __newindex = function() error("read-only", 2) end })

-- A call that names a backend (opts.backend; else the default_backend
-- configured, when the call names no CLI of its own) gets that backend's
-- settings under its own: a new table (opts.named: the backend's;
-- opts.name: its name; opts.backend_name: its name again when the call
-- takes it as it is, and shares the configuration's handle; opts.raw: the
-- caller's). nil and a message for a name no backend has.
local function resolve(opts, g)
  local name = opts.backend
  if name == nil and opts.cli_path == nil then name = cfg.default_backend end
  if name == nil then return opts end
  local b = g.backends[name]
  if not b then return nil, ("no backend is named %q"):format(tostring(name)) end
  local r = {}
  for k, v in pairs(opts) do r[k] = v end
  r.backend, r.named, r.raw, r.name = nil, b, opts, name
  r.cli_path, r.model, r.protocol = b.cli_path, opts.model or b.model, opts.protocol or b.protocol
  if b.env and opts.env then
    r.env = {}
    for k, v in pairs(b.env) do r.env[k] = v end
    for k, v in pairs(opts.env) do r.env[k] = v end
  else
    r.env = opts.env or b.env
  end
  if r.model == b.model and r.protocol == b.protocol and r.env == b.env then r.backend_name = name end
  return r
end

--- A template's check: the name is "default" or a configured one, and every
--- variable it needs has a value. nil and what is wrong.
---@param name any
---@param history? table
---@param vars? table
---@return boolean|nil ok, string? message
local function check_template(name, history, vars)
  if name == nil or name == "default" then return true end
  local t = type(name) == "string" and config.named_template(name)
  if not t then
    return nil, ('template must be "default" (the seed\'s prompt form) or a configured one (got %q)')
      :format(tostring(name))
  end
  local ok, err = template.form(t, name, history, vars)
  if not ok then return nil, err end
  return true
end

call.check_template = check_template

--- Checks a call's arguments; misuse raises at the caller of `fname`.
---@param fname string kiro.chat, kiro.stream or kiro.call
---@param prompt any
---@param opts any
---@return table opts
function call.check_opts(fname, prompt, opts)
  local function bad(msg) errors.misuse(fname, msg, 3) end
  if type(prompt) == "string" and opts == nil then -- the common case, at no cost
    if not cfg.default_backend then return NO_OPTS end
    opts = NO_OPTS
  end
  if type(prompt) ~= "string" then bad("prompt must be a string") end
  if opts == nil then return NO_OPTS end
  if type(opts) ~= "table" then bad("opts must be a table") end
  if opts == NO_OPTS then goto resolved end
  for k, v in pairs(opts) do
    if k == "mode" then
      if not config.MODES[v] then bad("mode must be auto, daemon or oneshot") end
    elseif k == "protocol" then
      if not config.PROTOCOLS[v] then bad("protocol must be auto, jsonl or acp") end
    elseif k == "model" or k == "cli_path" or k == "backend" then
      if type(v) ~= "string" then bad(k .. " must be a string") end
    elseif k == "env" then
      if type(v) ~= "table" then bad("env must be a table") end
    elseif k == "cache" then
      if type(v) ~= "boolean" then bad("cache must be a boolean") end
    elseif k == "on_update" or k == "permission" then
      if type(v) ~= "function" then bad(k .. " must be a function") end
    elseif k == "trust" then
      local ok, err = trust.check(v)
      if not ok then bad(err) end
    elseif k == "template" then -- luacheck: ignore 542
      -- checked below, once history and vars are
    elseif k == "vars" then
      if type(v) ~= "table" then bad("vars must be a table of the template's {{variables}}") end
    elseif k == "history" then
      local okh = type(v) == "table"
      for _, m in ipairs(okh and v or {}) do
        if type(m) ~= "table" or not template.labels[m.role] or type(m.content) ~= "string" then okh = false end
      end
      if not okh then bad("history must be an array of { role = user|assistant|system, content = string }") end
    elseif k == "session" then
      if type(v) ~= "string" or #v == 0 or #v > 256 then bad("session must be a string of 1 to 256 bytes") end
    elseif k == "stream" and fname == "kiro.call" then
      if type(v) ~= "boolean" then bad("stream must be a boolean") end
    elseif k == "timeout_ms" or k == "first_chunk_timeout_ms" or k == "stall_timeout_ms" then
      local ok, err = config.check_range(k, v, 0, config.MAX_MS)
      if not ok then bad(err) end
    else
      bad(("unknown option '%s'%s"):format(tostring(k), errors.did_you_mean(k, CALL_OPTIONS)))
    end
  end
  do
    local ok, err = check_template(opts.template, opts.history, opts.vars)
    if not ok then bad(err) end
  end
  ::resolved::
  local resolved, err = resolve(opts, config.current())
  if not resolved then bad(err) end
  return resolved
end

--- The policies' route hooks, on a request whose options are checked:
--- the prompt and options to use (the same ones when no hook changed
--- them), or nil and a message (the request fails, code "policy").
---@param prompt string
---@param opts table
---@param g kiro.Generation
---@return string|nil prompt, table|string opts_or_message, table? request what the hooks made of it (on failure)
function call.route(prompt, opts, g)
  local raw = opts.raw or opts
  local name = opts.name
  local req = { prompt = prompt, backend = name, model = opts.model, template = opts.template, vars = opts.vars }
  local ok, err = g.chain.route(req)
  if not ok then return nil, err, req end
  if type(req.prompt) ~= "string" then return nil, "the route hooks left the request no prompt", req end
  if req.template and req.template ~= "default" then -- (a hook may have changed vars in place)
    local tok, terr = check_template(req.template, opts.history, req.vars)
    if not tok then return nil, "route: " .. terr, req end
  end
  if req.backend == name and req.model == opts.model and req.template == opts.template and req.vars == opts.vars then
    return req.prompt, opts
  end
  local o = {}
  for k, v in pairs(raw) do o[k] = v end
  o.backend = req.backend
  if req.model ~= opts.model then o.model = req.model end
  o.template, o.vars = req.template, req.vars
  if req.backend ~= nil and type(req.backend) ~= "string" then return nil, "route: backend must be a name", req end
  local checked, terr = check_template(o.template, o.history, o.vars)
  if not checked then return nil, "route: " .. terr, req end
  local r, rerr = resolve(o, g)
  if not r then return nil, "route: " .. rerr, req end
  return req.prompt, r
end

--- The CLI a call names: its own, else the configured one.
---@param opts table the call's options
---@return string?
function call.cli_of(opts)
  return opts.cli_path or config.cli()
end

--- The model a call names: its own, else the configured one (nil: the CLI's default).
---@param opts table the call's options
---@return string?
function call.model_of(opts)
  return opts.model or config.model()
end

---@class kiro.Call
---@field stream boolean
---@field mode string       "daemon" or "oneshot": the path of the attempt under way
---@field attempt integer
local Call = {}
Call.__index = Call
Call.__close = function(c) c:cancel() end

-- A failure known before any backend is asked: the call ends at once, with
-- nothing to fall back to.
local function ended(c, code, msg)
  c.code, c.msg, c.final = code, msg, true
  c:release()
  return c
end

--- A call that failed before it began (a route hook failed: code "policy").
---@param code string
---@param msg string
---@return kiro.Call
function call.failed(code, msg)
  return ended(setmetatable({ false, opts = NO_OPTS, head = 1, tail = 0, h0 = core.hrtime(), mode = "daemon",
    attempt = 1 }, Call), code, msg)
end

--- Opens a call (opts already checked); its first attempt is under way.
---@param prompt string
---@param opts table
---@param stream boolean
---@param backend? userdata a handle for the backend, already resolved
---@param owned? boolean the call closes that handle when it is over
---@param g? kiro.Generation the configuration it runs under (default: the one in force)
---@return kiro.Call
function call.open(prompt, opts, stream, backend, owned, g)
  g = config.acquire(g)
  local mode, mode_err = opts.mode, nil
  if not mode then mode, mode_err = config.mode() end
  -- One table per call, sized once: every field a call uses on its way
  -- (20) is named here, and its reply's chunks queue up in its array part
  -- (self[head..tail]). The call is also its own wait record (woken, task)
  -- and says how to make its request (mode, stream, limits: core.request).
  -- code: nil while an attempt is under way, false once it succeeded.
  local c = setmetatable({
    false,
    prompt = prompt, opts = opts, stream = stream,
    mode = mode == "oneshot" and "oneshot" or "daemon",
    backend = backend or false, owns = owned or false, req = false,
    attempt = 1, h0 = core.hrtime(), woken = false, task = nil,
    code = nil, msg = nil, head = 1, tail = 0, seen = nil,
    -- An agent's permission requests come to Lua when a hook or a trust
    -- list decides them (and its tool calls, by id, to know what is asked).
    asks = (opts.permission or g.permission or opts.trust or g.trust or g.chain.permission) and true or nil,
    tools = nil, gen = g, -- the configuration it runs under, until it ends
    session = opts.session, -- an ACP conversation's key (core.request reads it)
    pre = nil, post = nil,  -- opts.template's form around the prompt (core.request reads them)
  }, Call)
  if opts.template == "default" then
    c.pre, c.post = template.parts("default")
  elseif opts.template then
    local t = config.named_template(opts.template)
    if not t then return ended(c, "config", ("no template is named %q"):format(opts.template)) end
    c.pre, c.post = template.form(t, opts.template, opts.history, opts.vars)
    if not c.pre then
      local msg = c.post
      c.post = nil
      return ended(c, "config", msg)
    end
    if g.chain.redact then -- the history, variables and system prompt around the text too
      c.pre, c.post = g.chain.redact(c.pre), g.chain.redact(c.post)
    end
  end
  if opts ~= NO_OPTS then -- the request's own limits; absent, the configured ones
    c.timeout_ms = opts.timeout_ms
    c.first_chunk_timeout_ms = opts.first_chunk_timeout_ms
    c.stall_timeout_ms = opts.stall_timeout_ms
  end
  if not mode then return ended(c, "config", mode_err) end
  if opts.session and mode == "oneshot" then
    return ended(c, "config", "a conversation (opts.session) needs a long-lived ACP agent; oneshot has none")
  end
  local cli = call.cli_of(opts)
  if not cli then
    return ended(c, "spawn", "no backend: kiro-cli is not on PATH and KIRO_CLI_PATH is not set")
  end
  if #prompt > cfg.max_request_bytes then
    return ended(c, "overloaded",
      ("the prompt is %d bytes; max_request_bytes is %d"):format(#prompt, cfg.max_request_bytes))
  end
  if not c.backend then
    local b, owned_or_err, code = config.backend(cli, call.model_of(opts), opts.env, opts.protocol, opts.named,
      opts.backend_name, g)
    if not b then return ended(c, code, owned_or_err) end
    c.backend, c.owns = b, owned_or_err
  end
  c:submit()
  return c
end

local function elapsed_ms(c)
  return (core.hrtime() - c.h0) // 1000000
end

-- The call's whole timeout_ms (0: none): its own, its backend's, the runtime's.
local function limit_ms(c)
  local o = c.opts
  return o.timeout_ms or o.named and o.named.timeout_ms or core.config("timeout_ms")
end

--- Makes the attempt's request.
function Call:submit()
  if self.attempt > 1 then -- what is left of the call's timeout_ms
    local limit = limit_ms(self)
    if limit > 0 then self.timeout_ms = math.max(1, limit - elapsed_ms(self)) end
  end
  self.code, self.msg = nil, nil
  self.req = core.request(self.backend, self.prompt, self)
end

--- A request's events: chunks, then its end.
---@param ev string "chunk" or "end"
---@param a? string the chunk; for "end", the error code (nil on success)
---@param b? string for "end", the error message
function Call:on_event(ev, a, b)
  if ev == "chunk" then
    local t = self.tail + 1
    self.tail, self[t] = t, a
  elseif ev == "update" then -- in line with the chunks, for opts.on_update
    if type(a) ~= "table" then return end
    if self.asks and a.toolCallId ~= nil then remember_tool(self, a) end
    if not self.opts.on_update then return end
    local t = self.tail + 1
    self.tail, self[t] = t, a
  elseif ev == "ask" then -- a permission request, decided in line too
    local t = self.tail + 1
    self.tail, self[t] = t, { token = a, question = type(b) == "table" and b or {} }
  else
    self.code, self.msg = a or false, b
  end
  tasks.wake(self)
end

--- Part of the reply reached the caller: no other attempt may follow.
---@return boolean
function Call:delivered()
  return self.stream and self.seen ~= nil
end

-- A request served another way after a failure with this code: counted.
local function counted_fallback(code)
  local stats = call.stats
  stats.fallbacks = stats.fallbacks + 1
  M().fallback(code)
  stats.fallbacks_by_reason[code] = (stats.fallbacks_by_reason[code] or 0) + 1
end

--- The attempt failed: ask the policy whether to try another way.
---@return boolean retried another attempt is under way
function Call:recover()
  if self.cancelled or self.final then return false end -- nothing to fall back to
  if self:delivered() or self.attempt >= MAX_ATTEMPTS then return false end
  local limit = limit_ms(self)
  local remaining = limit > 0 and limit - elapsed_ms(self) or math.huge
  if remaining <= 0 then return false end
  local failure = {
    code = self.code, message = self.msg, mode = self.mode,
    requested_mode = self.opts.mode or config.mode(), attempt = self.attempt,
    delivered = false, remaining_ms = remaining,
    prompt = self.prompt, opts = self.opts, backend = self.opts.name,
  }
  local g = self.gen
  local action = g.chain.decide and g.chain.decide(failure)
  if action == nil then
    local p = g.policy
    local ok
    ok, action = pcall(type(p) == "function" and p or p.decide, failure)
    if not ok then
      log("error", "kiro.policy", "policy raised an error; failing the request: " .. tostring(action))
      return false
    end
  end
  local stats = call.stats
  if type(action) == "table" and type(action.backend) == "string" then
    if not self:fail_over(action.backend) then return false end
    counted_fallback(self.code)
  elseif action == "oneshot" then
    if self.code == "spawn" and self.mode == "daemon" then
      log("warn", "kiro.provider", "Failed to start daemon, falling back to oneshot: " .. self.msg)
    else
      log("warn", "kiro.provider", ("Daemon request failed (%s), falling back to oneshot: %s")
        :format(self.code, self.msg))
    end
    counted_fallback(self.code)
    self.mode = "oneshot"
  elseif action == "retry" then
    log("info", "kiro.provider", ("retrying after %s: %s"):format(self.code, self.msg))
    stats.retries = stats.retries + 1
  elseif action == "replay" then
    -- A conversation that is over starts again under its key: the new
    -- one's first turn carries its past (opts.history) and this turn.
    local history = self.opts.history
    if self.code ~= "session_lost" or not history then
      log("error", "kiro.policy", "policy returned replay, which needs a session_lost failure and opts.history")
      return false
    end
    local turns = {}
    for i, m in ipairs(history) do turns[i] = m end
    turns[#turns + 1] = { role = "user", content = self.prompt }
    log("info", "kiro.provider", ("%s; replaying %d turns in a new conversation"):format(self.msg, #history))
    self.prompt = template.render(turns)
    if self.gen.chain.redact then self.prompt = self.gen.chain.redact(self.prompt) end
    self.pre, self.post = nil, nil
    stats.retries = stats.retries + 1
  elseif action == "fail" or action == nil then
    return false
  else
    log("error", "kiro.policy",
      ("policy returned %q; expected oneshot, retry, replay, fail or { backend = NAME }"):format(tostring(action)))
    return false
  end
  self.attempt = self.attempt + 1
  for i = self.head, self.tail do self[i] = nil end
  self.head, self.tail = 1, 0
  self:submit()
  return true
end

--- The next attempt goes to the backend `name` (a policy's fail-over), as
--- the caller's options name it with that backend instead; false (logged)
--- when there is no such backend or no handle for it.
---@param name string
---@return boolean
function Call:fail_over(name)
  local from = self.opts.name or call.cli_of(self.opts)
  local o = {}
  for k, v in pairs(self.opts.raw or self.opts) do o[k] = v end
  o.backend, o.cli_path = name, nil
  local r, err = resolve(o, self.gen)
  local b, owned, code
  if r then
    b, owned, code = config.backend(r.cli_path, r.model, r.env, r.protocol, r.named, r.backend_name, self.gen)
  end
  if not b then
    log("error", "kiro.policy", ("cannot fail over to %s: %s"):format(name, err or owned or code))
    return false
  end
  log("warn", "kiro.provider", ("%s failed (%s: %s); failing over to backend %s")
    :format(from, self.code, self.msg, name))
  if self.owns then self.backend:close() end
  self.opts, self.backend, self.owns = r, b, owned
  if self.mode == "oneshot" and (r.mode or config.mode()) ~= "oneshot" then self.mode = "daemon" end
  return true
end

-- The call is over (code nil: it succeeded): its metrics, the policies'
-- finished hooks, and what it held goes.
local function over(self, code)
  call.observe_end(self, self.mode, code, call.cli_of(self.opts), call.model_of(self.opts))
  self.outcome = code or false
  self:release()
end

--- The next chunk; nil at the end; nil, message, code on failure.
---@return string|nil chunk, string? message, string? code
function Call:next()
  while true do
    if self.cancelled then -- what was left of the reply goes with the call
      for i = self.head, self.tail do self[i] = nil end
      self.head, self.tail = 1, 0
      over(self, "cancelled")
      return nil, "cancelled by caller", "cancelled"
    end
    local h = self.head
    if h <= self.tail then
      local c = self[h]
      self[h] = nil
      if h == self.tail then self.head, self.tail = 1, 0 else self.head = h + 1 end
      if type(c) == "table" and c.token then -- a permission request
        self:decide(c.token, c.question)
      elseif type(c) == "table" then -- an update: the caller's hook sees it, in order
        self.opts.on_update(c)
      else
        call.observe_first(self, self.mode, call.cli_of(self.opts))
        return c
      end
    elseif self.code == false then
      over(self, nil)
      return nil
    elseif self.code then
      local code = self.code
      if self.seen == 2 or not self:recover() then
        over(self, code)
        return nil, self.msg, code
      end
    else
      tasks.block(self)
    end
  end
end

--- A tool call the agent reported (tool_call, tool_call_update): its kind
--- and title, by id, for the permission request that may name it alone.
---@param self kiro.Call
---@param u table the update
function remember_tool(self, u)
  local tools = self.tools or {}
  self.tools = tools
  local t = tools[u.toolCallId] or {}
  tools[u.toolCallId] = t
  if type(u.kind) == "string" then t.kind = u.kind end
  if type(u.title) == "string" then t.title = u.title end
end

--- What a permission request is about: its toolCall, what it leaves out
--- filled from the tool call's updates.
---@param self kiro.Call
---@param asked any the question's toolCall
---@return table tool { toolCallId =, kind =, title = }
function tool_of(self, asked)
  asked = type(asked) == "table" and asked or {}
  local known = self.tools and self.tools[asked.toolCallId] or {}
  return {
    toolCallId = asked.toolCallId,
    kind = type(asked.kind) == "string" and asked.kind or known.kind,
    title = type(asked.title) == "string" and asked.title or known.title,
  }
end

--- The option a permission hook's answer names: "allow" (the first
--- allow_* option), "reject" (the first reject_* option) or an optionId.
---@param options table[] the options the agent offered
---@param answer any what the hook returned
---@return string? option_id nil: none fits (the request is cancelled)
local function option_for(options, answer)
  for _, o in ipairs(type(options) == "table" and options or {}) do
    local kind = type(o) == "table" and type(o.kind) == "string" and o.kind or ""
    if (answer == "allow" or answer == "reject") and kind:sub(1, #answer) == answer then return o.optionId end
    if type(answer) == "string" and o.optionId == answer then return answer end
  end
  return nil
end

--- An agent asks permission (ACP session/request_permission): the call's
--- `permission` hook, else the configured one, else the call's or the
--- configured trust list decides; the answer goes back at once, and is
--- logged at info with the tool's title. A hook that raises cancels the
--- question and the call, and its error goes on to the caller.
---@param token integer the question's token (request:answer)
---@param question table { toolCall =, options =, sessionId = } as the agent sent them
function Call:decide(token, question)
  local g = self.gen or config.current()
  local hook = self.opts.permission
  local tool = tool_of(self, question.toolCall)
  local ok, answer, how = true, nil, "by the permission hook"
  if not hook and g.chain.permission then -- the policies answer, or pass
    answer, how = g.chain.permission(question), "by a policy"
  end
  hook = hook or g.permission
  if answer ~= nil then -- luacheck: ignore 542
    -- a policy answered
  elseif hook then
    ok, answer = pcall(hook, question)
  elseif trust.allows(self.opts.trust or g.trust, tool) then
    answer, how = "allow", "trusted"
  else
    answer, how = "reject", "not in the trust list"
  end
  local option = ok and option_for(question.options, answer) or nil
  local outcome = not ok and "error" or not option and "cancelled"
    or (answer == "allow" or answer == "reject") and answer or "option"
  M().permission(outcome)
  core.log("info", "kiro.provider", ("permission %s: %q (kind %s, %s)"):format(outcome == "option" and option
    or outcome, tostring(tool.title or tool.toolCallId), tostring(tool.kind or "unknown"), how))
  if ok and not option then
    core.log("warn", "kiro.provider", ("permission hook answered %q, which names no option: cancelled")
      :format(tostring(answer)))
  end
  if self.req then self.req:answer(token, option) end
  if not ok then
    self:cancel()
    error(answer, 0)
  end
end

--- The call is over for good: what it held for another attempt (the
--- prompt, the request, which borrows it, a backend of its own) goes,
--- whoever still holds the call.
function Call:release()
  if self.owns then self.backend:close() end
  self.prompt, self.req, self.backend, self.owns = nil, nil, nil, nil
  local g = self.gen
  if g then -- the policies hear how it ended, once: success, its code, or cancelled
    self.gen = nil
    if g.chain.finished then
      local code = self.outcome
      if code == nil then code = self.cancelled and "cancelled" or self.code or "cancelled" end
      g.chain.finished { backend = self.opts.name, code = code or nil, attempts = self.attempt }
    end
    config.release(g)
  end
end

--- Flow control: while paused, the backend's output waits (its pipe fills
--- and it blocks); for a reader that cannot keep up.
---@param on boolean
function Call:pause(on)
  if self.req and self.code == nil then self.req:pause(on) end
end

--- Ends the call `cancelled`: next() says so from now on, whatever of the
--- reply had arrived; the backend drains the rest. A no-op once the caller
--- has had the call's end.
function Call:cancel()
  if self.cancelled or self.seen == 2 then return end
  self.cancelled = true
  if self.req and self.code == nil then self.req:cancel() end
  self:release() -- whether or not anyone asks for the rest
end

return call
