--- kiro's defaults from the environment (SPEC section 3), read once: Lua
-- cannot change its own environment. kiro.config lays kiro.configure's
-- options over them; `kiro-rt agent` through the server needs only these.

local core = require "kiro.core"

local env = {}

local truthy = { ["true"] = true, ["1"] = true, yes = true, on = true }
local falsy = { ["false"] = true, ["0"] = true, no = true, off = true }

--- Parses a KIRO_USE_DAEMON-style boolean.
---@param name string the variable, for the message
---@param value string
---@return boolean|nil on, string? message
function env.parse_bool(name, value)
  if type(name) ~= "string" or type(value) ~= "string" then
    error("kiro.parse_bool: expected a variable's name and its value (strings)", 2)
  end
  local v = value:lower()
  if truthy[v] then return true end
  if falsy[v] then return false end
  return nil, ("%s must be one of true/false, 1/0, yes/no, on/off (got %q)"):format(name, value)
end

local function nonempty(v) return v ~= "" and v or nil end

local model, cli = nonempty(os.getenv("KIRO_MODEL")), nonempty(os.getenv("KIRO_CLI_PATH"))
local mode, mode_error = "auto", nil
do
  local v = os.getenv("KIRO_USE_DAEMON")
  if v and v ~= "" then
    local on, err = env.parse_bool("KIRO_USE_DAEMON", v)
    if on == nil then mode, mode_error = nil, err else mode = on and "auto" or "oneshot" end
  end
end
--- The longest duration any option or flag takes: 2^31 - 1 ms (24.8 days).
env.MAX_MS = 2147483647

--- The modes a call may name: auto (daemon, oneshot behind it), daemon, oneshot.
env.MODES = { auto = true, daemon = true, oneshot = true }

--- The backend protocols a call may name: auto (the seed's `daemon`
--- protocol, else oneshot), jsonl (that protocol) or acp (the Agent Client
--- Protocol).
env.PROTOCOLS = { auto = true, jsonl = true, acp = true }
local protocol, protocol_error = nonempty(os.getenv("KIRO_PROTOCOL")) or "auto", nil
if not env.PROTOCOLS[protocol] then
  protocol, protocol_error = nil, ("KIRO_PROTOCOL must be auto, jsonl or acp (got %q)"):format(protocol)
end
local found_cli -- kiro-cli on PATH, looked up on first use

--- KIRO_MODEL, or nil (the backend's own default).
---@return string?
function env.model() return model end

--- KIRO_USE_DAEMON as a mode: "auto" or "oneshot"; nil and a message when
--- it is unusable (each call's `config` error).
---@return string? mode, string? message
function env.mode() return mode, mode_error end

--- KIRO_PROTOCOL: auto, jsonl or acp; nil and a message when it is
--- unusable (each call's `config` error).
---@return string? protocol, string? message
function env.protocol() return protocol, protocol_error end

--- KIRO_CLI_PATH, else kiro-cli on PATH (looked up once), else nil.
---@return string?
function env.cli()
  if cli then return cli end
  found_cli = found_cli or core.which("kiro-cli")
  return found_cli
end

--- Forgets the PATH lookup (kiro.configure { cli_path = false }).
function env.forget_cli() found_cli = nil end

return env
