--- Configuration: the options, their defaults (from the environment, read
-- once), kiro.configure, and the backend every call names.

local core = require "kiro.core"
local env = require "kiro.env"
local errors = require "kiro.error"
local trust = require "kiro.trust"
local tasks = require "kiro.tasks"
local policies = require "kiro.policies"

local config = {}

--- The longest duration any option takes: 2^31 - 1 ms (24.8 days).
config.MAX_MS = env.MAX_MS

--- Parses a KIRO_USE_DAEMON-style boolean (kiro.env's).
config.parse_bool = env.parse_bool

--- The options kept in Lua (the core's are kept in C: core.config()).
local cfg = {
  cli_path = nil,          -- KIRO_CLI_PATH, else kiro-cli on PATH
  model = nil,             -- KIRO_MODEL
  mode = nil,              -- KIRO_USE_DAEMON: auto (daemon with fallback) or oneshot
  protocol = nil,          -- KIRO_PROTOCOL: auto, jsonl or acp
  acp_model = nil,         -- how an ACP agent takes the model: argv or session (default: the agent's)
  daemon_args = nil,       -- the protocol's own (DAEMON_ARGS)
  oneshot_args = { "chat", "--no-interactive" },
  env = nil,               -- extra environment for backends: { NAME = "value" }
  policy = require "kiro.policy",
  cache = false,           -- cache (and coalesce) replies by default
  cache_max_bytes = 64 * 1024 * 1024,
  cache_ttl_ms = 300000,
  max_request_bytes = 64 * 1024 * 1024, -- the largest prompt a request may carry
  permission = nil,        -- decides an ACP agent's permission requests (default: reject)
  trust = nil,             -- ...or a trust list does: "all" or { kinds =, titles = } (kiro.trust)
  on_task_error = nil,     -- hears a failed task's error and traceback (default: the log)
  host = nil,              -- a host adapter (kiro.host.*): waiting the host's way (kiro.tasks)
  backends = nil,          -- named backends: { NAME = { cli_path =, model =, protocol =, env =, ... } }
  default_backend = nil,   -- the one calls use when they name none (else cli_path, KIRO_CLI_PATH)
  templates = nil,         -- named prompt forms: { NAME = { system =, max_turns =, max_chars =, ... } }
  policies = nil,          -- policy plugins, composed in order (kiro.policies)
  policy_path = nil,       -- directories searched for policy plugins before kiro-rt's own
  policy_timeout_ms = 100, -- the longest a policy's hook may run
  log = nil,               -- the log filter or function last configured (the environment's: nil)
}
config.cfg = cfg

local MODES = env.MODES
config.MODES = MODES
config.PROTOCOLS = env.PROTOCOLS

--- How a long-lived backend starts, by protocol (before --model M): the
--- seed's `daemon` subcommand, or an ACP agent (`kiro-cli acp`).
config.DAEMON_ARGS = { jsonl = { "daemon" }, acp = { "acp" } }

--- CLIs known to be ACP agents, by the name of their executable: how each
--- starts one, and how it takes a model (argv: --model M at start; session:
--- session/set_model in each session). Protocol auto picks ACP for them.
config.KNOWN_AGENTS = {
  gemini = { args = { "--acp" }, model = "argv" },
  copilot = { args = { "--acp" }, model = "argv" },
  ["claude-code-acp"] = { args = {}, model = "session" },
  ["codex-acp"] = { args = {}, model = "session" },
}
local lua_options = {
  cli_path = "string", model = "string", mode = "string", protocol = "string", acp_model = "string",
  daemon_args = "table", oneshot_args = "table", env = "table", policy = "policy", log = "log",
  cache = "boolean", cache_max_bytes = "number", cache_ttl_ms = "number",
  max_request_bytes = "number", permission = "function", trust = "trust", on_task_error = "function",
  host = "host", backends = "backends", default_backend = "string", templates = "templates",
  policies = "policies", policy_path = "table", policy_timeout_ms = "number",
}
local ranges = {
  cache_ttl_ms = { 0, config.MAX_MS },
  cache_max_bytes = { 0, 1 << 40 }, max_request_bytes = { 64, 1 << 40 }, policy_timeout_ms = { 1, config.MAX_MS },
}
local core_options = core.config()
-- Options that `false` resets to their default (environment, PATH lookup).
local resettable = {
  cli_path = true, model = true, env = true, protocol = true, daemon_args = true, permission = true,
  acp_model = true, trust = true, on_task_error = true, host = true, backends = true, default_backend = true,
  templates = true, policies = true, policy_path = true, mode = true, policy_timeout_ms = true,
}
-- Their defaults, for `false` where the default is not nil.
local defaults_of = { policy_timeout_ms = 100 }

-- What a named backend may set: how to start and speak to its CLI, whether
-- its replies are cached by default, and its own pool, timeout and probe
-- settings (the core's, over the runtime's: core.backend_settings()).
local BACKEND_KEYS = {
  cli_path = "string", model = "string", protocol = "string", env = "table", daemon_args = "table",
  oneshot_args = "table", acp_model = "string", cache = "boolean",
}
local BACKEND_SETTINGS = core.backend_settings()
config.BACKEND_SETTINGS = BACKEND_SETTINGS

-- Whether v is a list of strings, or (map) a table of NAME = "value".
local function strings(v, map)
  for k, x in pairs(v) do
    if type(x) ~= "string" or (map and type(k) ~= "string") or (not map and math.type(k) ~= "integer") then
      return false
    end
  end
  return true
end

-- A named backend's settings checked (pool_max: the runtime's, as this
-- configure leaves it); nil and what is wrong.
local function check_backend(name, b, pool_max)
  local at = "backends." .. tostring(name)
  if type(name) ~= "string" or not name:match("^[%w_.-]+$") then
    return nil, ("backends: %q is not a backend name (letters, digits, _ . -)"):format(tostring(name))
  end
  if type(b) ~= "table" then return nil, at .. " must be a table" end
  local own = {}
  for k, v in pairs(b) do
    local want = BACKEND_KEYS[k]
    if BACKEND_SETTINGS[k] then
      own[k] = v
    elseif not want then
      local all = {}
      for x in pairs(BACKEND_KEYS) do all[#all + 1] = x end
      for x in pairs(BACKEND_SETTINGS) do all[#all + 1] = x end
      return nil, ("%s.%s: unknown setting%s"):format(at, tostring(k), errors.did_you_mean(k, all))
    elseif type(v) ~= want then
      return nil, ("%s.%s: expected a %s, got %s"):format(at, k, want, type(v))
    elseif want == "table" and not strings(v, k == "env") then
      return nil, ("%s.%s: expected %s"):format(at, k, k == "env" and 'NAME = "value" strings' or "a list of strings")
    end
  end
  if next(own) then
    local max = own.pool_max or pool_max
    if math.type(own.pool_min) == "integer" and math.type(max) == "integer" and own.pool_min > max then
      return nil, ("%s.pool_min: %d is more than its pool_max, %d"):format(at, own.pool_min, max)
    end
    local check = {}
    for k, v in pairs(own) do check[k] = v end
    if own.pool_min and not own.pool_max and math.type(max) == "integer" then check.pool_max = max end
    local ok, err = pcall(core.configure, check, true)
    if not ok then
      local key, rest = tostring(err):match("^configure: ([%w_]+) (.*)$")
      if not key then return nil, at .. ": " .. tostring(err):gsub("^configure: ", "") end
      return nil, ("%s.%s: %s, got %q"):format(at, key, rest:gsub("^must be ", "expected "), tostring(own[key]))
    end
  end
  if type(b.cli_path) ~= "string" or b.cli_path == "" then
    return nil, at .. ": cli_path is missing (a backend needs its CLI)"
  end
  if b.protocol and not env.PROTOCOLS[b.protocol] then
    return nil, ("%s.protocol: expected auto, jsonl or acp, got %q"):format(at, b.protocol)
  end
  if b.acp_model and b.acp_model ~= "argv" and b.acp_model ~= "session" then
    return nil, ("%s.acp_model: expected argv or session, got %q"):format(at, b.acp_model)
  end
  return true
end

--- A named backend's own core settings (those of BACKEND_SETTINGS it sets), or nil.
---@param b table
---@return table?
local function own_settings(b)
  local own
  for k, v in pairs(b) do
    if BACKEND_SETTINGS[k] then
      own = own or {}
      own[k] = v
    end
  end
  return own
end

--- A whole number within [lo, hi].
---@param what string the option, for the message
---@param v any
---@param lo integer
---@param hi integer
---@return integer|nil v, string? message
function config.check_range(what, v, lo, hi)
  if math.type(v) ~= "integer" or v < lo or v > hi then
    return nil, ("%s must be an integer from %d to %d"):format(what, lo, hi)
  end
  return v
end

local listeners = {} -- called after every configure()

--- fn() is called after every kiro.configure.
---@param fn function
function config.on_change(fn)
  listeners[#listeners + 1] = fn
end

local NO_MODEL = {}

--- Checks options as kiro.configure takes them, setting nothing (a
--- configuration file is checked whole before any of it is used).
---@param tbl any
---@return boolean|nil ok
---@return string? message what is wrong, naming the option
---@return table? for_core the options the C core keeps
function config.validate(tbl)
  if type(tbl) ~= "table" then return nil, "expected a table" end
  local for_core = {}
  for k, v in pairs(tbl) do
    local kind = lua_options[k]
    if v == false and resettable[k] then -- luacheck: ignore 542
      -- back to the default
    elseif kind == "policy" then
      if type(v) ~= "function" and not (type(v) == "table" and type(v.decide) == "function") then
        return nil, "policy must be a function or a table with a decide function"
      end
    elseif kind == "trust" then
      local ok, err = trust.check(v)
      if not ok then return nil, err end
    elseif kind == "log" then
      if type(v) == "string" then
        local ok, err = core.set_log(v, true)
        if not ok then return nil, err end
      elseif type(v) ~= "function" and v ~= false then
        return nil, "log must be a filter (a level, or target=level pairs), a function(level, target, message) that "
          .. "takes the log's lines, or false (stderr again)"
      end
    elseif kind == "templates" then
      if type(v) ~= "table" then return nil, "templates must be a table of NAME = { system = ..., ... }" end
      for name, t in pairs(v) do
        local ok, err = require("kiro.template").check(name, t)
        if not ok then return nil, err end
      end
    elseif kind == "backends" then
      if type(v) ~= "table" then return nil, "backends must be a table of NAME = { cli_path = ..., ... }" end
      local pool_max = tbl.pool_max
      if pool_max == nil then pool_max = core.config("pool_max") end
      for name, b in pairs(v) do
        local ok, err = check_backend(name, b, pool_max)
        if not ok then return nil, err end
      end
    elseif kind == "policies" then -- loaded below, once the rest checks
      if type(v) ~= "table" then return nil, "policies must be a list of policies or plugin names" end
    elseif k == "policy_path" then
      if type(v) ~= "table" or not strings(v) then return nil, "policy_path must be a list of directories" end
    elseif kind == "host" then
      if type(v) ~= "table" or type(v.can_wait) ~= "function" or type(v.wait) ~= "function"
         or type(v.wake) ~= "function" or type(v.start) ~= "function" then
        return nil, "host must be a host adapter (kiro.host.luv(), kiro.host.cqueues(), ...): "
          .. "a table with can_wait, wait, wake and start functions"
      end
    elseif kind then
      if type(v) ~= kind then return nil, ("%s must be a %s"):format(k, kind) end
      if kind == "number" then
        local ok, err = config.check_range(k, v, ranges[k][1], ranges[k][2])
        if not ok then return nil, err end
      end
    elseif type(k) == "string" and core_options[k] ~= nil then
      for_core[k] = v
    else
      return nil, ("unknown option '%s'%s"):format(tostring(k), errors.did_you_mean(k, config.option_names()))
    end
  end
  if tbl.mode and not MODES[tbl.mode] then
    return nil, ("mode must be auto, daemon or oneshot (got %q)"):format(tbl.mode)
  end
  if tbl.acp_model and tbl.acp_model ~= "argv" and tbl.acp_model ~= "session" then
    return nil, ("acp_model must be argv or session (got %q)"):format(tbl.acp_model)
  end
  if tbl.protocol and not env.PROTOCOLS[tbl.protocol] then
    return nil, ("protocol must be auto, jsonl or acp (got %q)"):format(tbl.protocol)
  end
  -- The default backend that results must be one of the backends that result.
  local function after(k) if tbl[k] == nil then return cfg[k] end return tbl[k] or nil end
  local dflt, known = after("default_backend"), after("backends") or {}
  if dflt and not known[dflt] then
    return nil, ("default_backend: no backend is named %q"):format(dflt)
  end
  local ok, err = pcall(core.configure, for_core, true)
  if not ok then return nil, (tostring(err):gsub("^configure: ", "")) end
  local prepared = { core = for_core }
  if tbl.policies then -- read (each plugin afresh) and made once, here
    local loaded, files = policies.load(tbl.policies, after("policy_path"))
    if not loaded then return nil, "policies: " .. files end
    prepared.policies, prepared.files = loaded, files
  end
  return true, nil, prepared
end

local NO_CHAIN, gen -- no policies; the configuration's generation in force (below)

--- A named template's settings, or nil.
---@param name string
---@return table?
function config.named_template(name)
  return cfg.templates and cfg.templates[name] or gen.chain.templates and gen.chain.templates[name]
end

--- A named backend's settings, or nil.
---@param name string
---@return table?
function config.named_backend(name)
  return cfg.backends and cfg.backends[name]
end

-- ---- generations -----------------------------------------------------------
-- What calls see of the configuration from their start to their end: the
-- composed policies, the named backends and handles for them, and the
-- hooks. Each configure makes a new generation; a call keeps the one it
-- started under (config.acquire, config.release). Once the last call of an
-- old generation ends, its handles go: those the new one names the same
-- way plainly (their backends, and daemons, stay), the others retired (their
-- daemons stop once their requests end).

---@class kiro.Generation
---@field chain table composed policies (kiro.policies.compose; empty: none)
---@field policy function|table kiro.configure's `policy`: decides when no policy does
---@field permission? function kiro.configure's `permission`
---@field trust? string|table kiro.configure's `trust`
---@field backends table named backends' settings
---@field handles table backend handles for named backends, made on first use
---@field defaults table handles for the configured CLI, by model
---@field users integer calls under way under it
---@field over boolean a newer one is in force

NO_CHAIN = {}
gen = { chain = NO_CHAIN, loaded = {}, budget = cfg.policy_timeout_ms, policy = cfg.policy, backends = {},
        handles = {}, defaults = {}, users = 0, over = false }

-- The handles an old generation holds go (see above).
local function dispose(g)
  local now = {}
  for _, h in pairs(gen.handles) do now[h:key()] = true end
  for _, h in pairs(g.handles) do
    if now[h:key()] then h:close() else h:retire() end
  end
  for _, h in pairs(g.defaults) do h:close() end
  g.handles, g.defaults = {}, {}
end

--- A generation (default: the one in force), held by a call until config.release.
---@param g? kiro.Generation
---@return kiro.Generation
function config.acquire(g)
  g = g or gen
  g.users = g.users + 1
  return g
end

--- A call under g ended.
---@param g kiro.Generation
function config.release(g)
  g.users = g.users - 1
  if g.over and g.users == 0 then dispose(g) end
end

--- The generation in force.
---@return kiro.Generation
function config.current()
  return gen
end

local user_sink -- the log function kiro.configure was given, if any

-- The log's lines go to the user's function, or to stderr; through the
-- policies' redact hooks first, when any policy has one.
local function route_log()
  local redact = gen.chain.redact
  if not redact then
    core.set_log_sink(user_sink)
  elseif user_sink then
    local sink = user_sink
    core.set_log_sink(function(level, target, msg) sink(level, target, redact(msg)) end)
  else
    core.set_log_sink(function(level, target, msg) core.log(level, target, redact(msg)) end)
  end
end

-- A new generation, from cfg and the policies just loaded (nil: the same
-- as before); the old one goes once its calls end.
local function next_generation(loaded)
  local old = gen
  local chain = old.chain
  loaded = loaded or old.loaded -- (composed again: policy_timeout_ms may have changed)
  if loaded ~= old.loaded or cfg.policy_timeout_ms ~= old.budget then
    chain = #loaded > 0 and policies.compose(loaded, cfg.policy_timeout_ms) or NO_CHAIN
  end
  gen = { chain = chain, loaded = loaded, budget = cfg.policy_timeout_ms, policy = cfg.policy,
          permission = cfg.permission, trust = cfg.trust,
          backends = cfg.backends or {}, handles = {}, defaults = {}, users = 0, over = false }
  -- Handles for the named backends in use, made now so the old ones can
  -- be told apart: same key, same backend (its daemons stay).
  for name in pairs(old.handles) do
    if gen.backends[name] then config.backend_named(name, gen) end
  end
  old.over = true
  if old.users == 0 then dispose(old) end
  -- A backend that sets its own pool_min is warm from now on, not from its first request.
  for name, b in pairs(gen.backends) do
    if b.pool_min and b.pool_min > 0 then
      local h, err = config.backend_named(name, gen)
      if h then
        h:warm()
      else
        core.log("warn", "kiro.config", ("backend %s cannot be warmed: %s"):format(name, err))
      end
    end
  end
end

--- Sets runtime options; unknown keys, and values of the wrong type or out
--- of range, are misuse (and nothing is set). Options left out keep their
--- values; `false` sets one back to its default.
---@param tbl table
---@param prepared? table what config.validate made of tbl (internal: a file checked whole and then used)
function config.configure(tbl, prepared)
  if not prepared then
    local ok, err
    ok, err, prepared = config.validate(tbl)
    if not ok then errors.misuse("kiro.configure", err) end
  end
  if type(tbl.log) == "string" then
    core.set_log(tbl.log)
  elseif tbl.log ~= nil then
    user_sink = tbl.log or nil
  end
  if tbl.log ~= nil then cfg.log = tbl.log or nil end -- (what a reload that drops it goes back to)
  core.configure(prepared.core)
  for k, v in pairs(tbl) do
    if lua_options[k] and k ~= "log" then
      if v == false and resettable[k] then cfg[k] = defaults_of[k] else cfg[k] = v end
    end
  end
  local loaded = prepared.policies
  if tbl.policies == false then loaded = {} end
  next_generation(loaded)
  if tbl.log ~= nil or loaded ~= nil then route_log() end
  if tbl.cli_path == false then env.forget_cli() end
  if tbl.on_task_error ~= nil then tasks.set_error_handler(cfg.on_task_error) end
  if tbl.host ~= nil then tasks.set_host(cfg.host) end
  for _, fn in ipairs(listeners) do fn() end
end

--- The CLI calls use unless they name another: cli_path, KIRO_CLI_PATH, or
--- kiro-cli on PATH.
---@return string?
function config.cli()
  return cfg.cli_path or env.cli()
end

--- The mode calls use unless they name one; nil and a message when
--- KIRO_USE_DAEMON is unusable.
---@return string? mode, string? message
function config.mode()
  if cfg.mode then return cfg.mode end
  return env.mode()
end

--- The protocol calls use unless they name one; nil and a message when
--- KIRO_PROTOCOL is unusable.
---@return string? protocol, string? message
function config.protocol()
  if cfg.protocol then return cfg.protocol end
  return env.protocol()
end

---@return string?
function config.model()
  return cfg.model or env.model()
end

--- An option's value as set (nil: unset, its default from the environment).
---@param name string
---@return any
function config.raw_option(name)
  if lua_options[name] then return cfg[name] end
  if core_options[name] ~= nil then return core.config(name) end
  return nil
end

--- Every option's name, sorted.
---@return string[]
function config.option_names()
  local names = {}
  for k in pairs(lua_options) do names[#names + 1] = k end
  for k in pairs(core_options) do names[#names + 1] = k end
  table.sort(names)
  return names
end

--- The effective value of an option (after environment defaults). Raises
--- for an unusable KIRO_USE_DAEMON.
---@param name string
---@return any value nil for an unknown option
function config.option(name)
  -- A default from the environment: its value, or its error at the caller.
  local function settled(v, err)
    if v == nil then error(err, 3) end
    return v
  end
  if name == "mode" then return settled(config.mode()) end
  if name == "model" then return config.model() end
  if name == "protocol" then return settled(config.protocol()) end
  if name == "cli_path" then return config.cli() end
  if lua_options[name] then return cfg[name] end
  if core_options[name] ~= nil then return core.config(name) end
  return nil
end

local function backend_spec(cli, model, extra, protocol, over)
  over = over or cfg
  local merged = extra
  if cfg.env and extra then
    merged = {}
    for k, v in pairs(cfg.env) do merged[k] = v end
    for k, v in pairs(extra) do merged[k] = v end
  end
  -- auto: a known agent speaks ACP; any other CLI gets the seed's `daemon`
  -- protocol, and ACP where it has no such subcommand (the core finds out
  -- once per backend), with oneshot behind both.
  local known = config.KNOWN_AGENTS[cli:match("[^/]*$")]
  local acp_args = known and known.args or config.DAEMON_ARGS.acp
  if protocol == "auto" and known then protocol = "acp" end
  local args = protocol == "acp" and acp_args or config.DAEMON_ARGS.jsonl
  return {
    cli = cli, model = model, protocol = protocol,
    daemon_args = over.daemon_args or args, acp_args = protocol == "auto" and acp_args or nil,
    session_model = (over.acp_model or known and known.model) == "session",
    oneshot_args = over.oneshot_args or cfg.oneshot_args, env = merged or cfg.env,
  }
end

--- The handle for the named backend `name` under generation g (made on
--- first use and kept with g); nil, message, code when max_backends are in
--- use or the protocol is unusable.
---@param name string
---@param g kiro.Generation
---@return userdata|nil handle, string? message, string? code
function config.backend_named(name, g)
  local h = g.handles[name]
  if h then return h end
  local b = g.backends[name]
  local configured, perr = config.protocol()
  if not configured then return nil, perr, "config" end
  local spec = backend_spec(b.cli_path, b.model, b.env, b.protocol or configured, b)
  spec.settings = own_settings(b)
  local err, code
  h, err, code = core.backend(spec)
  if not h then return nil, err, code end
  g.handles[name] = h
  return h
end

--- The backend a call names: a handle, and whether the call owns it (and
--- closes it when it is over). The handles for the configured CLI (by
--- model) and for named backends are the generation's; any other is the
--- call's own. nil, message, code when max_backends are in use, or the
--- protocol is unusable.
---@param cli string
---@param model? string
---@param extra_env? table
---@param protocol? string the call's own (else the configured one)
---@param named? table a named backend's settings (its argv, acp_model and own settings)
---@param name? string its name: the call takes it as configured (its handle is the generation's)
---@param g? kiro.Generation the call's (default: the one in force)
---@return userdata|nil handle, boolean|string owned_or_message, string? code
function config.backend(cli, model, extra_env, protocol, named, name, g)
  g = g or gen
  if name and g.backends[name] == named then
    local h, err, code = config.backend_named(name, g)
    if not h then return nil, err, code end
    return h, false
  end
  local configured, perr = config.protocol()
  if not configured then return nil, perr, "config" end
  if named or extra_env or cli ~= config.cli() or (model and model ~= config.model())
     or (protocol and protocol ~= configured) then
    local spec = backend_spec(cli, model, extra_env, protocol or configured, named)
    spec.settings = named and own_settings(named)
    local b, err, code = core.backend(spec)
    if not b then return nil, err, code end
    return b, true
  end
  local key = model or NO_MODEL
  local b = g.defaults[key]
  if not b then
    local err, code
    b, err, code = core.backend(backend_spec(cli, model, nil, configured))
    if not b then return nil, err, code end
    g.defaults[key] = b
  end
  return b, false
end

return config
