--- The server's wire protocol: what a client may send, checked completely
-- at the door. A line that is not a well-formed request never reaches a
-- task: it is answered with an error naming the field, on its id.
--
--   {"op":"request","id":N,"prompt":S,"stream":B,
--    "backend":{"cli":P,"model":M,"mode":"auto|daemon|oneshot","protocol":"auto|jsonl|acp",
--               "env":{NAME:S,...}}   (or {"name":N,...}: a backend the server's configuration names;
--               neither cli nor name: the server's default backend),
--    "template":"default"|NAME,"vars":{NAME:S,...},"session":K,"trust":"all"|{"kinds":[K,...],"titles":[P,...]},
--    "timeout_ms":T,"first_chunk_timeout_ms":T,"stall_timeout_ms":T,"expect":{"version":V,"proto":P}}
--
-- "expect" lets a client skip the hello round trip: a server that is not
-- that version and protocol refuses the request (code "version") without
-- serving any of it. "template" has the server render the prompt as one
-- user turn of the named template before the backend sees it ("default":
-- kiro.template.render's `User: ...\n\nAssistant: ` form; any other: one
-- the server's configuration names, its {{variables}} from "vars");
-- without it the prompt goes as it is. "session" names a conversation (an ACP agent's,
-- kept by the server between calls: kiro.call's opts.session). "trust" is
-- the client's trust list for an ACP agent's permission requests (kiro.trust;
-- the user's own choice, as on the command line: the socket is theirs).
--
-- Unknown fields are ignored (a newer client may send more).

local wire = {}

local defaults = require "kiro.env"
local trust = require "kiro.trust"

local MAX_MS = defaults.MAX_MS -- as kiro.configure: 24.8 days
wire.MAX_ENV = 256        -- variables a request may pass to its backend
wire.MAX_NAME = 4096      -- bytes of a path, a model, a variable's name or value
-- JSON null decodes to a light userdata (core.null).
local function absent(v) return v == nil or type(v) == "userdata" end

local MODES = defaults.MODES
local PROTOCOLS = defaults.PROTOCOLS
local TIMEOUTS = { "timeout_ms", "first_chunk_timeout_ms", "stall_timeout_ms" }

--- The id as the client sent it, when it can be echoed back (a number, a
--- string or a boolean); nil otherwise (the error then goes out with "id": null).
---@param msg any a decoded line
---@return number|string|boolean|nil id
function wire.raw_id(msg)
  local t = type(msg) == "table" and type(msg.id)
  if t == "number" or t == "string" or t == "boolean" then return msg.id end
  return nil
end

-- A string of 1 to MAX_NAME bytes without NUL (C strings end at NUL).
local function name_ok(v)
  return type(v) == "string" and #v > 0 and #v <= wire.MAX_NAME and not v:find("\0", 1, true)
end

-- An object of NAME: "value" strings (backend.env, vars), or nil and what
-- is wrong with it, naming the field `what`.
local function check_env(env, what)
  what = what or "backend.env"
  if absent(env) then return nil end
  if type(env) ~= "table" or (#env > 0) then
    return nil, what .. " must be an object of NAME: \"value\" strings"
  end
  local n = 0
  for k, v in pairs(env) do
    n = n + 1
    if n > wire.MAX_ENV then
      return nil, ("%s holds more than %d variables"):format(what, wire.MAX_ENV)
    end
    if type(k) ~= "string" or not k:match("^[%a_][%w_]*$") or #k > wire.MAX_NAME then
      return nil, ("%s: %q is not a variable name"):format(what, tostring(k))
    end
    if type(v) ~= "string" or #v > wire.MAX_NAME or v:find("\0", 1, true) then
      return nil, ("%s.%s must be a string of at most %d bytes without NUL"):format(what, k, wire.MAX_NAME)
    end
  end
  return n > 0 and env or nil
end

--- request(msg, max_prompt) -> a checked request, or nil, message (a
--- malformed request), or nil, message, "overloaded" (a prompt past
--- max_prompt).
--- The result: { id, prompt, stream, template, vars, session, trust, cli, model, mode, protocol, env,
---  timeout_ms, ... }.
---@param msg table a decoded request line
---@param max_prompt integer the largest prompt taken, in bytes (max_request_bytes)
---@return table|nil req
---@return string? message what is wrong, naming the field
---@return string? code "overloaded" for a prompt too large
function wire.request(msg, max_prompt)
  local id = msg.id
  if math.type(id) ~= "integer" then return nil, "id must be an integer" end
  if type(msg.prompt) ~= "string" then return nil, "prompt must be a string" end
  if #msg.prompt > max_prompt then
    return nil, ("the prompt is %d bytes; the server takes at most %d (max_request_bytes)")
      :format(#msg.prompt, max_prompt), "overloaded"
  end
  if not absent(msg.stream) and type(msg.stream) ~= "boolean" then return nil, "stream must be a boolean" end
  local b = msg.backend
  if type(b) ~= "table" then return nil, "backend must be an object" end
  -- No cli and no name: the server's own default backend.
  local named = not absent(b.name) and b.name or nil
  if named ~= nil and not name_ok(named) then return nil, "backend.name must be a non-empty string" end
  if not absent(b.cli) then
    if not name_ok(b.cli) then return nil, "backend.cli must be a non-empty string (the CLI's absolute path)" end
    if b.cli:sub(1, 1) ~= "/" then return nil, "backend.cli must be an absolute path" end
  end
  if not absent(b.model) and not name_ok(b.model) then
    return nil, "backend.model must be a non-empty string"
  end
  if not absent(b.mode) and not MODES[b.mode] then
    return nil, "backend.mode must be auto, daemon or oneshot"
  end
  if not absent(b.protocol) and not PROTOCOLS[b.protocol] then
    return nil, "backend.protocol must be auto, jsonl or acp"
  end
  local env, err = check_env(b.env)
  if err then return nil, err end
  local expect = msg.expect
  if not absent(expect) then
    if type(expect) ~= "table" or type(expect.version) ~= "string" or math.type(expect.proto) ~= "integer" then
      return nil, "expect must be an object of version (a string) and proto (an integer)"
    end
  else
    expect = nil
  end
  local template = msg.template
  if absent(template) then
    template = nil
  elseif not name_ok(template) or #template > 64 or not template:match("^[%w_.-]+$") then
    return nil, "template must be the name of a template the server has (default, or one it configures)"
  end
  local vars, verr = check_env(msg.vars, "vars")
  if verr then return nil, verr end
  local session = msg.session
  if absent(session) then
    session = nil
  elseif type(session) ~= "string" or #session == 0 or #session > 256 then
    return nil, "session must be a string of 1 to 256 bytes"
  end
  local trusted = msg.trust
  if absent(trusted) then
    trusted = nil
  else
    local terr
    trusted, terr = trust.check(trusted)
    if not trusted then return nil, terr end
  end
  local req = {
    id = id, prompt = msg.prompt, stream = msg.stream ~= false, template = template, vars = vars, session = session,
    trust = trusted,
    cli = not absent(b.cli) and b.cli or nil, backend_name = named, model = not absent(b.model) and b.model or nil,
    mode = not absent(b.mode) and b.mode or "auto", env = env, expect = expect,
    protocol = not absent(b.protocol) and b.protocol or nil,
  }
  for _, k in ipairs(TIMEOUTS) do
    local v = msg[k]
    if not absent(v) then
      if math.type(v) ~= "integer" or v < 0 or v > MAX_MS then
        return nil, ("%s must be an integer from 0 to %d"):format(k, MAX_MS)
      end
      req[k] = v
    end
  end
  return req
end

return wire
