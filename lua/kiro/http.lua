--- kiro.http: HTTP requests on kiro's own loop (libcurl's multi interface
-- in the C core: no thread, no second loop, connections reused, TLS peers
-- verified). Coroutine-friendly as kiro.chat is: inside a kiro task (or a
-- host's coroutine) a request suspends only its caller.
--
--   local r, err, code = kiro.http.request {
--     url = "https://api.example.org/v1/x", method = "POST",
--     headers = { ["Content-Type"] = "application/json" }, body = "{}",
--     timeout_ms = 30000, max_bytes = 1 << 20,
--   }
--   -- r.status, r.headers (names in lower case), r.body
--
-- With on_data = function(chunk) ... end the body is handed over as it
-- arrives (a long poll, a stream) and r.body is nil. With stop = a
-- kiro.napper(), its stop() ends the request at once (a long poll a
-- channel no longer wants). Failures: nil, message, code: timeout,
-- network, tls, too_big (past max_bytes), invalid (the URL or method),
-- cancelled (stopped, or the runtime was reset). Strings listed in
-- `secrets` (a token in the URL) never appear in a message.

local core = require "kiro.core"
local tasks = require "kiro.tasks"

local http = {}

http.TIMEOUT_MS = 30000         -- a request's whole exchange, unless it says
http.MAX_BYTES = 16 * 1024 * 1024 -- the largest body kept, unless it says

local METHODS = { GET = true, POST = true, PUT = true, PATCH = true, DELETE = true, HEAD = true, OPTIONS = true }

--- Header block text to a table: lower-case names; repeated ones joined
--- with ", " (as HTTP allows).
---@param text string
---@return table<string, string>
function http.parse_headers(text)
  local h = {}
  for line in text:gmatch("[^\r\n]+") do
    local name, value = line:match("^([^:%s]+):%s*(.-)%s*$")
    if name then
      name = name:lower()
      h[name] = h[name] and (h[name] .. ", " .. value) or value
    end
  end
  return h
end

-- msg with every secret masked.
local function masked(msg, secrets)
  for _, s in ipairs(secrets or {}) do
    if type(s) == "string" and #s > 0 then msg = msg:gsub(s:gsub("%p", "%%%0"), "***") end
  end
  return msg
end

local Req = {}
Req.__index = Req

--- The request's events from the core: head, data, end.
---@param ev string
---@param a any status, bytes, or the error code (nil: success)
---@param b any the header block, or the message
function Req:on_event(ev, a, b)
  if ev == "data" then
    local n = self.n + 1
    self.n, self[n] = n, a
  elseif ev == "head" then
    self.status, self.head = a, b
  else -- end
    self.ended, self.code, self.msg = true, a, b
  end
  tasks.wake(self)
end

-- The caller's options as core.http takes them; nil and a message.
local function checked(opts)
  if type(opts) ~= "table" then return nil, "opts must be a table" end
  local url = opts.url
  if type(url) ~= "string" or not (url:find("^https?://[^/%s]")) then
    return nil, "url must be an http:// or https:// URL"
  end
  local method = opts.method
  if method ~= nil and not METHODS[method] then
    return nil, ("method must be one of GET POST PUT PATCH DELETE HEAD OPTIONS (got %s)"):format(tostring(method))
  end
  if opts.body ~= nil and type(opts.body) ~= "string" then return nil, "body must be a string" end
  if opts.on_data ~= nil and type(opts.on_data) ~= "function" then return nil, "on_data must be a function" end
  if opts.stop ~= nil and not tasks.is_napper(opts.stop) then
    return nil, "stop must be a kiro.napper()"
  end
  local headers = {}
  if opts.headers ~= nil then
    if type(opts.headers) ~= "table" then return nil, "headers must be a table of name = value" end
    for name, value in pairs(opts.headers) do
      if type(name) ~= "string" or not name:match("^[%w!#$%%&'*+.^_`|~-]+$") then
        return nil, ("headers: %q is not a header name"):format(tostring(name))
      end
      value = tostring(value)
      if value:find("[\r\n]") then return nil, ("headers.%s: a value is one line"):format(name) end
      headers[#headers + 1] = name .. ": " .. value
    end
  end
  for _, k in ipairs { "timeout_ms", "max_bytes" } do
    local v = opts[k]
    if v ~= nil and (math.type(v) ~= "integer" or v < 1) then return nil, k .. " must be an integer >= 1" end
  end
  return {
    url = url, method = method, body = opts.body, headers = headers,
    timeout_ms = opts.timeout_ms or http.TIMEOUT_MS, max_bytes = opts.max_bytes or http.MAX_BYTES,
  }
end

--- One request, waited for (suspending only the calling task): the
--- response { status =, headers =, body = }, or nil, message, code.
--- Misuse (a bad URL, option or header) raises at the caller.
---@param opts table url, method, headers, body, timeout_ms, max_bytes, on_data, stop, secrets
---@return table|nil response, string? message, string? code
function http.request(opts)
  local o, err = checked(opts)
  if not o then error("kiro.http.request: " .. err, 2) end
  if opts.stop and opts.stop.cut then return nil, "stopped", "cancelled" end
  local r = setmetatable({ woken = false, n = 0, head_at = 1, ended = false }, Req)
  local h, herr = core.http(o, r)
  if not h then
    return nil, masked(herr, opts.secrets), herr:find("shutting down", 1, true) and "cancelled" or "network"
  end
  r.handle = h -- anchored with r while it runs
  local forget = opts.stop and opts.stop:on_stop(function()
    if r.ended then return end
    h:cancel() -- (no event comes after this: its end is told here)
    r:on_event("end", "cancelled", "stopped")
  end)
  local on_data, parts = opts.on_data, {}
  local ok, perr = pcall(function()
    while true do
      for i = r.head_at, r.n do
        local chunk = r[i]
        r[i] = nil
        r.head_at = i + 1
        if on_data then on_data(chunk) else parts[#parts + 1] = chunk end
      end
      if r.ended and r.head_at > r.n then return end
      tasks.block(r)
    end
  end)
  if forget then forget() end
  if not ok then -- on_data raised, or the caller was interrupted: the request goes too
    h:cancel()
    error(perr, 0)
  end
  if r.code then return nil, masked(r.msg, opts.secrets), r.code end
  return { status = r.status, headers = http.parse_headers(r.head or ""),
           body = not on_data and table.concat(parts) or nil }
end

return http
