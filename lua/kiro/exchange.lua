--- One request to the kiro-rt server without the loop: what `kiro-rt agent`
-- sends when it has a short prompt and nothing else to do. It connects,
-- sends the request line and reads the reply in one blocking exchange (the
-- C core's kipc_exchange), so a call costs no event loop, no handles and
-- no client module. kiro.client speaks the same protocol over the loop, for
-- everything else (tasks, status, stop, starting or replacing a server).

local core = require "kiro.core"
local paths = require "kiro.paths"

local exchange = {}

--- A request's answer may come this long after its own timeout_ms before the
--- client stops waiting for a server that stopped answering.
exchange.GUARD_MS = 2000

--- The fields of a request line (kiro.wire checks them on the server).
---@param id integer the request's id on its connection
---@param opts table stream, cli, model, mode, env, timeout_ms, first_chunk_timeout_ms, stall_timeout_ms
---@param expect? table { version =, proto = }: the server this request is for (instead of a handshake)
---@return table fields
function exchange.fields(id, opts, expect)
  return {
    op = "request", id = id, stream = opts.stream ~= false,
    backend = { cli = opts.cli, model = opts.model, mode = opts.mode or "auto", env = opts.env },
    timeout_ms = opts.timeout_ms, first_chunk_timeout_ms = opts.first_chunk_timeout_ms,
    stall_timeout_ms = opts.stall_timeout_ms, expect = expect,
  }
end

-- Variables of kiro-rt itself; every other KIRO_* variable of the client is
-- passed to the backend (so kiro-sim's knobs, say, reach it through the server).
local reserved = {
  KIRO_CLI_PATH = true, KIRO_USE_DAEMON = true, KIRO_MODEL = true, KIRO_LOG = true,
  KIRO_LUA_DIR = true,
}

--- The client's KIRO_* variables that are not kiro-rt's own, for the backend.
---@return table<string, string> env
function exchange.backend_env()
  local env = {}
  for k, v in pairs(core.environ("KIRO_")) do
    if not reserved[k] and k:sub(1, 12) ~= "KIRO_SERVER_" then env[k] = v end
  end
  return env
end

--- How long a client waits for a request's end: its timeout_ms, and a guard.
---@param opts table
---@return integer ms
function exchange.limit_ms(opts)
  return (opts.timeout_ms or core.config("timeout_ms")) + exchange.GUARD_MS
end

--- Sends one request to the server at socket and hands its chunks to
--- on_chunk as they arrive. The request names the server it expects (this
--- version and protocol); one of another version refuses it unserved
--- (code "version"). Codes of its own: "none" (no server listens),
--- "timeout" (no end within timeout_ms and a guard), "closed" (the server
--- went away).
---@param socket string
---@param prompt string
---@param opts table as for exchange.fields
---@param on_chunk fun(chunk: string)
---@return true|nil ok, string? message, string? code
function exchange.call(socket, prompt, opts, on_chunk)
  local fields = exchange.fields(1, opts, { version = core.version, proto = paths.PROTO })
  fields.prompt = prompt
  local err
  local limit = exchange.limit_ms(opts)
  local ok, msg, code = core.exchange(socket, core.json_encode(fields) .. "\n", limit, function(m)
    if type(m) ~= "table" then return false end
    if m.id == 1 then
      if m.chunk then
        on_chunk(m.chunk)
        return false
      end
      if m.error then err = m.error end
      return m.done or m.error ~= nil
    end
    if m.op == "error" then -- about the connection: a line over the server's limits
      err = m
      return true
    end
    return false
  end)
  if err then
    return nil, tostring(err.message or ""), type(err.code) == "string" and err.code or "backend"
  end
  if ok then return true end
  if code == "timeout" then
    return nil, ("no answer from the kiro-rt server within %d ms"):format(limit), code
  elseif code == "closed" then
    return nil, "the kiro-rt server went away (" .. msg .. ")", code
  end
  return nil, msg, code
end

return exchange
