--- kiro.websocket: WebSocket client connections on kiro's own loop
-- (libwebsockets with its libuv event library in the C core: no thread, no
-- second loop; TLS peers verified). Coroutine-friendly as kiro.http is:
-- inside a kiro task (or a host's coroutine) a wait suspends only its
-- caller.
--
--   local ws, err, code = kiro.websocket.connect("wss://gateway.example/?v=10",
--     { timeout_ms = 10000, max_bytes = 1 << 20 })
--   ws:send('{"op":1}')
--   local msg, binary = ws:receive(5000) -- nil, reason, code at the end
--   ws:close(1000)
--
-- Failures: nil, message, code, where code is timeout (nothing in time),
-- network (the connection failed or dropped: ws.close_code 1006), tls (the
-- peer's certificate or the handshake failed), closed
-- (the peer closed: ws.close_code and ws.close_reason say how), too_big (a
-- message passed max_bytes) or cancelled (the runtime ended it).

local core = require "kiro.core"
local tasks = require "kiro.tasks"

local websocket = {}

websocket.TIMEOUT_MS = 30000         -- the handshake, unless connect says
websocket.MAX_BYTES = 16 * 1024 * 1024 -- the largest message, unless it says

---@class kiro.WebSocket
---@field close_code integer|nil how it ended (1006: dropped), once it has
---@field close_reason string|nil
local Conn = {}
Conn.__index = Conn

--- The connection's events from the core: open, message, closed.
---@param ev string
---@param a any the message, or the close code
---@param b any whether it is binary, or the reason
function Conn:on_event(ev, a, b)
  if ev == "message" then
    local n = self.n + 1
    self.n, self[n], self.bin[n] = n, a, b
  elseif ev == "open" then
    self.opened = true
  else -- closed
    self.close_code, self.close_reason = a, b
  end
  tasks.wake(self)
end

-- Why it ended, as a message and a code.
local function ended(self)
  local c, why = self.close_code, self.close_reason or ""
  if c == 1006 then
    if why:find("^tls: ") then return nil, "TLS: " .. why:sub(6), "tls" end
    return nil, why ~= "" and why or "connection lost", "network"
  elseif c == 1009 then
    return nil, "message too big", "too_big"
  elseif c == 1001 and why:find("shutting down", 1, true) then
    return nil, "runtime shutting down", "cancelled"
  end
  return nil, ("closed (%d%s)"):format(c, why ~= "" and ": " .. why or ""), "closed"
end

-- Waits (suspending the caller) until ready() holds or ms pass; true
-- when it holds.
local function wait_for(self, ready, ms)
  if ready() then return true end
  local timer
  if ms then
    timer = core.timer(ms, function()
      self.expired = true
      tasks.wake(self)
    end)
  end
  self.expired = false
  local ok, err = pcall(function()
    while not ready() and not self.expired do tasks.block(self) end
  end)
  if timer then timer:stop() end
  if not ok then error(err, 0) end
  return ready()
end

--- The next message (fragments joined) and whether it is binary; waits
--- ms at the most (nil: as long as it takes). nil, message, code once the
--- connection has ended, or after ms (code "timeout").
---@param ms? integer
---@return string|nil message, boolean|string binary_or_reason, string? code
function Conn:receive(ms)
  if ms ~= nil and (math.type(ms) ~= "integer" or ms < 0) then
    error("kiro.websocket: receive: ms must be an integer >= 0", 2)
  end
  if not wait_for(self, function() return self.head <= self.n or self.close_code ~= nil end, ms) then
    return nil, "timeout", "timeout"
  end
  if self.head <= self.n then
    local i = self.head
    local msg, bin = self[i], self.bin[i]
    self[i], self.bin[i], self.head = nil, nil, i + 1
    return msg, bin
  end
  return ended(self)
end

--- Sends a text message (binary when asked): true, or nil, message, code
--- once the connection is closing or has ended.
---@param data string
---@param binary? boolean
---@return boolean|nil ok, string? message, string? code
function Conn:send(data, binary)
  if type(data) ~= "string" then error("kiro.websocket: send: data must be a string", 2) end
  if self.close_code then return ended(self) end
  local ok = self.handle:send(data, binary)
  if not ok then return nil, "connection closing", "closed" end
  return true
end

--- Starts the closing handshake (code 1000, or 3000 to 4999 of one's
--- own). Messages already received can still be read; receive then says
--- how it ended.
---@param code? integer
---@param reason? string
function Conn:close(code, reason)
  self.handle:close(code, reason)
end

--- Lets go at once (no closing handshake): the socket goes, nothing more
--- is received.
function Conn:release()
  self.handle:release()
  if not self.close_code then self.close_code, self.close_reason = 1006, "released" end
  tasks.wake(self) -- (a receive under way returns)
end

--- Opens a connection and waits for its handshake.
---@param url string ws:// or wss://
---@param opts? table timeout_ms (the handshake), max_bytes (one message), stop (a kiro.napper: its stop()
---  ends the wait for the handshake, code "cancelled")
---@return kiro.WebSocket|nil conn, string? message, string? code
function websocket.connect(url, opts)
  opts = opts or {}
  if type(url) ~= "string" or not url:find("^wss?://[^/%s]") then
    error("kiro.websocket.connect: url must be a ws:// or wss:// URL", 2)
  end
  for _, k in ipairs { "timeout_ms", "max_bytes" } do
    local v = opts[k]
    if v ~= nil and (math.type(v) ~= "integer" or v < 1) then
      error("kiro.websocket.connect: " .. k .. " must be an integer >= 1", 2)
    end
  end
  local stop = opts.stop
  if stop ~= nil and not tasks.is_napper(stop) then
    error("kiro.websocket.connect: stop must be a kiro.napper()", 2)
  end
  if stop and stop.cut then return nil, "stopped", "cancelled" end
  local self = setmetatable({ woken = false, n = 0, head = 1, bin = {}, opened = false }, Conn)
  local h, err = core.websocket(url, opts.max_bytes or websocket.MAX_BYTES, self)
  if not h then
    return nil, err, err:find("shutting down", 1, true) and "cancelled" or "network"
  end
  self.handle = h
  local forget = stop and stop:on_stop(function()
    self.stopped = true
    tasks.wake(self)
  end)
  local ok, werr = pcall(wait_for, self, function() return self.opened or self.close_code ~= nil or self.stopped end,
    opts.timeout_ms or websocket.TIMEOUT_MS)
  if forget then forget() end
  if not ok then -- the caller was interrupted: the connection goes too
    h:release()
    error(werr, 0)
  end
  if self.opened then return self end
  if self.stopped then
    h:release()
    return nil, "stopped", "cancelled"
  end
  if not self.close_code then
    h:release()
    return nil, "no handshake in time", "timeout"
  end
  return ended(self)
end

return websocket
