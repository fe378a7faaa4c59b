--- Policies (SPEC 5.3): Lua modules that return hooks, composed in the
-- order the configuration lists them (kiro.configure's `policies`).
--
-- A policy is a table of hooks, any of:
--
--   route(request)        before a request is made: it may change
--                         request.backend, .model, .template, .vars and
--                         .prompt (a table the hook edits in place; later
--                         policies see what earlier ones made of it)
--   decide(failure)       an attempt failed (kiro.policy's failure table):
--                         "oneshot", "retry", "replay", "fail", or
--                         { backend = NAME } (fail over: the next attempt
--                         goes to that backend, within what is left of the
--                         call's timeout_ms); nil: the next policy decides,
--                         and in the end kiro.configure's `policy`
--   permission(question)  an agent asks (as kiro.configure's `permission`);
--                         nil: the next policy, then the hook or trust list
--   cacheable(prompt, opts)  true or false; nil: the next policy, then `cache`
--   finished(outcome)     a request ended: { backend =, code =, attempts = };
--                         code nil: success; else the failure's code,
--                         "cancelled", "cache" (served from the cache or by
--                         another's call: no backend was asked) or "policy"
--                         (a route hook failed). A circuit breaker learns here.
--   redact(text)          returns the text to use instead: applied to every
--                         prompt after routing, and to every log line
--
-- and `templates = { NAME = { ... } }`: named templates it brings (as
-- kiro.configure's; the configuration's own win over a policy's).
--
-- An entry of `policies` is a policy table, a plugin's name ("failover"),
-- or { "failover", option = ... } (the plugin's options). A plugin is a
-- Lua file, found in the directories of `policy_path` and then among the
-- ones kiro-rt ships (plugins/policies), that returns a policy or a
-- function(options) that makes one. Each load reads the file afresh, in an
-- environment of its own, so a reload picks up an edited plugin.
--
-- Hooks run on the caller's coroutine, under a time limit (policy_timeout_ms):
-- one that runs longer is stopped, reported in the log and counted
-- (kiro_policy_errors_total), as is one that raises. Either way the
-- request goes the safe way: route fails it (code "policy"), decide
-- fails it, permission rejects, cacheable says no, finished is ignored,
-- and redact replaces the whole text with "[redaction failed]".

local core = require "kiro.core"
local plugins = require "kiro.plugins"

local policies = {}

policies.HOOKS = { route = true, decide = true, permission = true, cacheable = true, finished = true,
                   redact = true }

--- Hooks that ran too long or raised, by policy and hook (for metrics).
policies.errors = {}

-- A policy table checked: nil and what is wrong.
local function check_hooks(p, what)
  if type(p) ~= "table" then return nil, what .. " must be a table of hooks" end
  local any = false
  for k, v in pairs(p) do
    if policies.HOOKS[k] then
      if type(v) ~= "function" then return nil, ("%s: %s must be a function"):format(what, k) end
      any = true
    elseif k == "templates" then -- named templates it brings
      if type(v) ~= "table" then return nil, what .. ": templates must be a table of NAME = { ... }" end
      for name, t in pairs(v) do
        local ok, err = require("kiro.template").check(name, t)
        if not ok then return nil, ("%s: %s"):format(what, err) end
      end
      any = true
    elseif k ~= "name" and k ~= 1 then
      return nil, ("%s: %s is not a hook (route, decide, permission, cacheable, finished, redact) nor templates")
        :format(what, tostring(k))
    end
  end
  if not any then return nil, what .. " has no hooks" end
  return true
end

--- Loads the policies an entry list names, each plugin read afresh.
--- Returns the list of { name =, hooks = } and the files read, or nil and
--- a message naming the entry (and the plugin's file and line when the
--- plugin is at fault).
---@param list any kiro.configure's `policies`
---@param path? string[] directories searched first
---@return table[]|nil loaded, string[]|string files_or_message
function policies.load(list, path)
  if type(list) ~= "table" then return nil, "policies must be a list of policies or plugin names" end
  for k in pairs(list) do -- a list, checked before any plugin runs
    if math.type(k) ~= "integer" or k < 1 or k > #list then
      return nil, "policies must be a list (1, 2, ...), in the order they apply"
    end
  end
  local out, files = {}, {}
  for i, e in ipairs(list) do
    local at = ("policies[%d]"):format(i)
    local name, hooks
    if type(e) == "string" or (type(e) == "table" and type(e[1]) == "string") then
      name = type(e) == "string" and e or e[1]
      local file, err = plugins.find("policies", name, path)
      if not file then return nil, at .. ": " .. err end
      files[#files + 1] = file
      local made, lerr = plugins.load(file)
      if lerr then return nil, ("%s (%s): %s"):format(at, name, lerr) end
      local ok = true
      if type(made) == "function" then
        local options = {}
        if type(e) == "table" then
          for k, v in pairs(e) do if k ~= 1 then options[k] = v end end
        end
        ok, made = pcall(made, options)
      end
      if not ok then return nil, ("%s (%s): %s"):format(at, name, tostring(made)) end
      hooks = made
    elseif type(e) == "table" then
      name, hooks = type(e.name) == "string" and e.name or ("policy" .. i), e
    else
      return nil, ("%s: expected a policy table or a plugin's name, got %s"):format(at, type(e))
    end
    local ok, err = check_hooks(hooks, ("%s (%s)"):format(at, name))
    if not ok then return nil, err end
    out[#out + 1] = { name = name, hooks = hooks }
  end
  return out, files
end

-- ---- running hooks under a time limit -------------------------------------

local TIMEOUT = setmetatable({}, { __tostring = function() return "ran too long" end })
-- The hrtime past which the hook running on a coroutine is stopped, by
-- coroutine: hooks that yield (a route hook may ask a backend) each keep
-- their own.
local deadlines = setmetatable({}, { __mode = "k" })
local hrtime = core.hrtime
local sethook, gethook, running = debug.sethook, debug.gethook, coroutine.running

local function watchdog()
  local d = deadlines[running()]
  if d and hrtime() > d then error(TIMEOUT, 0) end
end

local function report(p, hook, err, budget_ms)
  local why = err == TIMEOUT and "timeout" or "error"
  local key = p.name .. "\0" .. hook .. "\0" .. why
  policies.errors[key] = (policies.errors[key] or 0) + 1
  local msg = err == TIMEOUT and ("ran longer than %d ms and was stopped"):format(budget_ms) or tostring(err)
  core.log("error", "kiro.policy", ("policy %s: %s hook %s"):format(p.name, hook,
    err == TIMEOUT and msg or "raised an error: " .. msg))
  return ("policy %s: %s %s"):format(p.name, hook, err == TIMEOUT and msg or "failed: " .. msg)
end

--- Runs p's hook with a and b, stopped after budget_ms: true and its
--- result, or false and a message (already logged and counted).
---@param p table { name =, hooks = }
---@param hook string
---@param budget_ms integer
---@return boolean ok, any result
local function run(p, hook, budget_ms, a, b)
  local co = running()
  local outer = deadlines[co]
  deadlines[co] = hrtime() + budget_ms * 1000000
  local h, mask, count = gethook()
  sethook(watchdog, "", 1000)
  local ok, r = pcall(p.hooks[hook], a, b)
  sethook(h, mask, count)
  deadlines[co] = outer
  if ok then return true, r end
  return false, report(p, hook, r, budget_ms)
end
policies.run = run

--- The hooks of a list of policies composed into one policy; `fallback` is
--- the decide used when no policy decides (kiro.configure's `policy`).
---@param list table[] policies.load's
---@param budget_ms integer policy_timeout_ms
---@return table composed { route =, decide =, permission =, cacheable =, finished =, redact = }
---  (a hook absent: no policy has it)
function policies.compose(list, budget_ms)
  local with = {}
  for hook in pairs(policies.HOOKS) do
    local ps = {}
    for _, p in ipairs(list) do
      if p.hooks[hook] then ps[#ps + 1] = p end
    end
    with[hook] = #ps > 0 and ps or nil
  end
  local c = { names = {}, templates = {} }
  for i, p in ipairs(list) do
    c.names[i] = p.name
    for name, t in pairs(p.hooks.templates or {}) do c.templates[name] = t end
  end
  local redacting = with.redact
  if redacting then
    function c.redact(text)
      for _, p in ipairs(redacting) do
        local ok, r = run(p, "redact", budget_ms, text)
        if not ok or type(r) ~= "string" then
          if ok then report(p, "redact", "returned " .. type(r) .. ", not a string", budget_ms) end
          return "[redaction failed]"
        end
        text = r
      end
      return text
    end
  end
  if with.route or redacting then
    local routing = with.route or {}
    --- nil and a message when a hook fails (the request fails: code "policy").
    function c.route(req)
      for _, p in ipairs(routing) do
        local ok, err = run(p, "route", budget_ms, req)
        if not ok then return nil, err end
      end
      if redacting then req.prompt = c.redact(req.prompt) end
      return req
    end
  end
  if with.decide then
    function c.decide(failure)
      for _, p in ipairs(with.decide) do
        local ok, action = run(p, "decide", budget_ms, failure)
        if not ok then return "fail" end
        if action ~= nil then return action, p.name end
      end
      return nil
    end
  end
  -- The first policy with an answer gives it; nil when none has one.
  local function first(hook, safe)
    local ps = with[hook]
    if not ps then return nil end
    return function(a, b)
      for _, p in ipairs(ps) do
        local ok, r = run(p, hook, budget_ms, a, b)
        if not ok then return safe end
        if r ~= nil then return r end
      end
      return nil
    end
  end
  c.permission = first("permission", "reject")
  c.cacheable = first("cacheable", false)
  if with.finished then
    function c.finished(outcome)
      for _, p in ipairs(with.finished) do run(p, "finished", budget_ms, outcome) end
    end
  end
  return c
end

return policies
