--- Configuration: the options, their defaults (from the environment, read
-- once), kiro.configure, and the backend every call names.

local core = require "kiro.core"
local env = require "kiro.env"
local errors = require "kiro.error"
local trust = require "kiro.trust"
local tasks = require "kiro.tasks"

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
}
local ranges = {
  cache_ttl_ms = { 0, config.MAX_MS },
  cache_max_bytes = { 0, 1 << 40 }, max_request_bytes = { 64, 1 << 40 },
}
local core_options = core.config()
-- Options that `false` resets to their default (environment, PATH lookup).
local resettable = {
  cli_path = true, model = true, env = true, protocol = true, daemon_args = true, permission = true,
  acp_model = true, trust = true, on_task_error = true, host = true, backends = true, default_backend = true,
  templates = true,
}

-- What a named backend may set: how to start and speak to its CLI.
local BACKEND_KEYS = {
  cli_path = "string", model = "string", protocol = "string", env = "table", daemon_args = "table",
  oneshot_args = "table", acp_model = "string",
}

-- A named backend's settings checked; nil and what is wrong.
local function check_backend(name, b)
  local at = "backends." .. tostring(name)
  if type(name) ~= "string" or not name:match("^[%w_.-]+$") then
    return nil, ("backends: %q is not a backend name (letters, digits, _ . -)"):format(tostring(name))
  end
  if type(b) ~= "table" then return nil, at .. " must be a table" end
  for k, v in pairs(b) do
    local want = BACKEND_KEYS[k]
    if not want then
      return nil, ("%s.%s: unknown setting (%s; pool and timeout settings per backend are to come)")
        :format(at, tostring(k), "cli_path, model, protocol, env, daemon_args, oneshot_args, acp_model")
    end
    if type(v) ~= want then return nil, ("%s.%s must be a %s"):format(at, k, want) end
  end
  if type(b.cli_path) ~= "string" or b.cli_path == "" then return nil, at .. ".cli_path: a backend needs its CLI" end
  if b.protocol and not env.PROTOCOLS[b.protocol] then
    return nil, ("%s.protocol must be auto, jsonl or acp (got %q)"):format(at, b.protocol)
  end
  if b.acp_model and b.acp_model ~= "argv" and b.acp_model ~= "session" then
    return nil, ("%s.acp_model must be argv or session (got %q)"):format(at, b.acp_model)
  end
  return true
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

local defaults = {} -- backend handles for the configured CLI, by model
local NO_MODEL = {}

local function close_defaults()
  for _, b in pairs(defaults) do b:close() end
  defaults = {}
end

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
      for name, b in pairs(v) do
        local ok, err = check_backend(name, b)
        if not ok then return nil, err end
      end
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
      return nil, ("unknown option '%s'"):format(tostring(k))
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
  local dflt = tbl.default_backend
  if dflt then
    local known = tbl.backends or (tbl.backends == nil and cfg.backends) or {}
    if not known[dflt] then return nil, ("default_backend: no backend is named %q"):format(dflt) end
  end
  local ok, err = pcall(core.configure, for_core, true)
  if not ok then return nil, (tostring(err):gsub("^configure: ", "")) end
  return true, nil, for_core
end

--- A named template's settings, or nil.
---@param name string
---@return table?
function config.named_template(name)
  return cfg.templates and cfg.templates[name]
end

--- A named backend's settings, or nil.
---@param name string
---@return table?
function config.named_backend(name)
  return cfg.backends and cfg.backends[name]
end

--- Sets runtime options; unknown keys, and values of the wrong type or out
--- of range, are misuse (and nothing is set).
---@param tbl table
function config.configure(tbl)
  local ok, err, for_core = config.validate(tbl)
  if not ok then errors.misuse("kiro.configure", err) end
  if type(tbl.log) == "string" then
    core.set_log(tbl.log)
  elseif tbl.log ~= nil then
    core.set_log_sink(tbl.log or nil)
  end
  core.configure(for_core)
  for k, v in pairs(tbl) do
    if lua_options[k] and k ~= "log" then
      if v == false and resettable[k] then cfg[k] = nil else cfg[k] = v end
    end
  end
  close_defaults()
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

--- The backend a call names: a handle, and whether the call owns it (and
--- closes it when it is over). The configured CLI's handles are kept (by
--- model) until the next configure; any other is the call's own. nil,
--- message, code when max_backends are in use, or the protocol is unusable.
---@param cli string
---@param model? string
---@param extra_env? table
---@param protocol? string the call's own (else the configured one)
---@param named? table a named backend's settings (its argv and acp_model)
---@return userdata|nil handle, boolean|string owned_or_message, string? code
function config.backend(cli, model, extra_env, protocol, named)
  local configured, perr = config.protocol()
  if not configured then return nil, perr, "config" end
  if named or extra_env or cli ~= config.cli() or (model and model ~= config.model())
     or (protocol and protocol ~= configured) then
    local b, err, code = core.backend(backend_spec(cli, model, extra_env, protocol or configured, named))
    if not b then return nil, err, code end
    return b, true
  end
  local key = model or NO_MODEL
  local b = defaults[key]
  if not b then
    local err, code
    b, err, code = core.backend(backend_spec(cli, model, nil, configured))
    if not b then return nil, err, code end
    defaults[key] = b
  end
  return b, false
end

return config
