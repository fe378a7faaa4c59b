--- The client side of the kiro-rt server: connect (starting a server in the
-- background when none runs), hand-shake, send requests, relay chunks.

-- A client loads only the loop's core, the scheduler and the configuration:
-- not the whole Lua face (kiro-rt agent is a client, and starts for each call).
local core = require "kiro.core"
local errors = require "kiro.error"
local paths = require "kiro.paths"
local tasks = require "kiro.tasks"

local client = {}

client.START_TIMEOUT_MS = 10000    -- a new server must answer within this
client.HELLO_TIMEOUT_MS = 5000
client.GUARD_MS = core.GUARD_MS    -- past a request's own timeout_ms

--- The client's KIRO_* variables that are not kiro-rt's own (KIRO_CLI_PATH,
--- KIRO_USE_DAEMON, KIRO_MODEL, KIRO_LOG, KIRO_LUA_DIR, KIRO_SERVER_*), for
--- the backend: kiro-sim's knobs, say, reach it through the server.
---@return table<string, string> env
client.backend_env = core.backend_env

---@class kiro.client.Conn
---@field sock? userdata the connection (core.connect); nil once closed here
---@field reqs table<integer, kiro.client.Req> requests awaiting their end, by id
---@field replies table[] messages not about a request, not yet read (Conn:reply)
---@field reply_ev kiro.Event set when a reply arrives or the connection closes
---@field closed? string why the connection closed; nil while it is open
---@field error? table the server's error about the connection: { code, message }
---@field server_pid? integer from the handshake
---@field max_request_bytes? integer the server's limit, from the handshake
local Conn = {}
Conn.__index = Conn

--- The connection's events: "connect" (a, b: the error's name and message;
--- nil on success), "line" (a: the decoded message) and "close" (a: why).
---@param ev string
---@param a any
---@param b? string
function Conn:on_event(ev, a, b)
  if ev == "connect" then
    self.connect_err, self.connect_msg = a, b
    self.connected:set()
  elseif ev == "line" then
    local msg = a -- decoded by the connection
    if type(msg) ~= "table" then return end
    if msg.id ~= nil and msg.id ~= core.null then
      local req = self.reqs[msg.id]
      if req then req:on_message(msg) end
      return
    end
    if msg.op == "error" then
      -- About the connection, not one request (a line over the server's
      -- limits): every request on it ends with the server's reason.
      self.error = { code = msg.code or "protocol", message = tostring(msg.message) }
      self:fail_all(self.error)
    end
    self.replies[#self.replies + 1] = msg
    self.reply_ev:set()
  elseif ev == "close" then
    self.closed = a or "closed"
    self.connected:set()
    self.reply_ev:set()
    self:fail_all(self.error or { code = "closed", message = "the kiro-rt server went away (" .. self.closed .. ")" })
  end
end

--- Ends every request on the connection not yet done with err.
---@param err table { code = string, message = string }
function Conn:fail_all(err)
  for _, req in pairs(self.reqs) do
    if not req.done then -- a reply that ended just before stands
      req:on_message { error = err }
    end
  end
end

--- Sends t as one line of JSON.
---@param t table
---@return boolean|nil sent false once closed; nil when the server is not reading
---@return string? message
function Conn:send(t)
  return self.sock:send_json(t)
end

--- The next non-request message (hello, status, stopping), or nil, why.
---@param timeout_ms? integer how long to wait (nil: until the connection closes)
---@return table|nil msg
---@return string? message
function Conn:reply(timeout_ms)
  local timer
  if timeout_ms then
    timer = core.timer(timeout_ms, function() self.timed_out = true; self.reply_ev:set() end)
  end
  while #self.replies == 0 and not self.closed and not self.timed_out do
    self.reply_ev:wait()
    self.reply_ev = tasks.event()
  end
  if timer then timer:stop() end
  local msg = table.remove(self.replies, 1)
  if msg then return msg end
  if self.timed_out then self.timed_out = nil; return nil, "no answer from the server" end
  return nil, "the kiro-rt server went away (" .. tostring(self.closed) .. ")"
end

--- Closes the connection; closing it again does nothing.
function Conn:close()
  if self.sock then self.sock:close() end
  self.sock = nil
end

--- Connects to a running server; nil, err_name, message when there is none.
---@param path string the server's socket
---@return kiro.client.Conn|nil conn
---@return string? err_name e.g. "ENOENT"
---@return string? message
function client.connect(path)
  local c = setmetatable({ reqs = {}, replies = {}, reply_ev = tasks.event(),
                           connected = tasks.event(), next_id = 1 }, Conn)
  c.sock = core.connect(path, c, true)
  c.connected:wait()
  if c.connect_err or c.closed then
    c:close()
    return nil, c.connect_err or "ECONNRESET", c.connect_msg or c.closed
  end
  return c
end

local function hello(c)
  c:send { op = "hello", version = core.version, proto = paths.PROTO }
  local msg, err = c:reply(client.HELLO_TIMEOUT_MS)
  if not msg then return nil, err end
  if msg.op == "error" then return nil, tostring(msg.message) end
  if msg.op ~= "hello" then return nil, "unexpected answer to hello" end
  return msg
end

local function alive(pid)
  local state = core.process_state(pid)
  return state ~= nil and state ~= "Z" and state ~= "X"
end
client.alive = alive

-- Polls until a server answers at p.socket; nil, why when none will. The
-- one we started may have lost the race to another (it then leaves at
-- once): while someone holds the lock, a server is on its way.
local function wait_for_server(p, ms, pid)
  local deadline = core.now() + ms
  while core.now() < deadline do
    local c = client.connect(p.socket)
    if c then return c end
    if not alive(pid) then
      local lock = core.lock(p.lock)
      if lock then
        lock:release()
        return nil, ("the server (pid %d) exited at start-up; see %s"):format(pid, p.log)
      end
    end
    tasks.sleep(5)
  end
  return nil, ("the server did not come up within %d ms (see %s)"):format(ms, p.log)
end

-- Waits until nothing answers at path any more.
local function wait_gone(path, ms)
  local deadline = core.now() + ms
  while core.now() < deadline do
    local c = client.connect(path)
    if not c then return true end
    c:close()
    tasks.sleep(10)
  end
  return false
end

--- Starts `kiro-rt serve` in the background, detached in its own session,
--- logging to the state directory.
---@param p table the paths, as kiro.paths.paths() gives them
---@return integer|nil pid
---@return string? message
function client.start_server(p)
  local ok, err = core.secure_dir(p.dir)
  if not ok then return nil, err end
  ok, err = paths.ensure_logdir(p)
  if not ok then return nil, err end
  -- The server's only voice is its log: one it could not write would leave
  -- a silent failure to start.
  ok, err = core.check_writable(p.log)
  if not ok then return nil, "its log is unusable: " .. err end
  local exe = core.exe()
  if not exe then return nil, "cannot find the kiro-rt executable" end
  local pid
  pid, err = core.start_detached { exe, "serve", "--log-file", p.log }
  if not pid then return nil, err end
  core.log("debug", "kiro.client", ("started a server (pid %d), log %s"):format(pid, p.log))
  return pid
end

--- open{ autostart = bool } -> connection, or nil, message. The handshake
--- brings the server's version: one of another version is asked to stop and
--- replaced by ours.
---@param opts? table autostart
---@return kiro.client.Conn|nil conn
---@return string? message
---@return string? code "none" when no server runs and autostart is off
function client.open(opts)
  opts = opts or {}
  local p = paths.paths()
  for _ = 1, 3 do
    local c = client.connect(p.socket)
    if not c then
      if not opts.autostart then return nil, "no server running", "none" end
      local pid, err = client.start_server(p)
      if not pid then return nil, "cannot start a server: " .. err end
      c, err = wait_for_server(p, client.START_TIMEOUT_MS, pid)
      if not c then return nil, err end
    end
    local h, err = hello(c)
    if not h then
      c:close()
      return nil, "handshake failed: " .. err
    end
    if h.version == core.version and h.proto == paths.PROTO then
      c.server_pid, c.max_request_bytes = h.pid, h.max_request_bytes
      return c
    end
    core.log("warn", "kiro.client", ("the running server is version %s (pid %s), this is %s: replacing it")
      :format(tostring(h.version), tostring(h.pid), core.version))
    c:send { op = "stop" }
    c:close()
    if not wait_gone(p.socket, paths.STOP_GRACE_MS + 2000) then
      return nil, "the old server (pid " .. tostring(h.pid) .. ") did not stop"
    end
    if not opts.autostart then return nil, "no server running", "none" end
  end
  return nil, "could not reach a server of this version"
end

---@class kiro.client.Req
---@field chunks table the chunks received (false once handed out)
---@field ev kiro.Event set when a message arrives
---@field done? boolean its end or its error has arrived
---@field err? kiro.Error
local Req = {}
Req.__index = Req

--- A message on the request's id: a chunk, its end, or its error.
---@param msg table
function Req:on_message(msg)
  if msg.chunk then
    self.chunks[#self.chunks + 1] = msg.chunk
  elseif msg.done then
    self.done = true
  elseif msg.error then
    self.done = true
    self.err = errors.new(msg.error.code or "backend", msg.error.message or "")
  end
  self.ev:set()
end

--- The fields of a request line (kiro.wire checks them on the server).
---@param id integer the request's id on its connection
---@param opts table stream, cli, model, mode, protocol, env, template, vars, session, trust, and the timeouts (*_ms)
---@return table fields
local function request_fields(id, opts)
  return {
    op = "request", id = id, stream = opts.stream ~= false,
    backend = { cli = opts.cli, name = opts.backend_name, model = opts.model, mode = opts.mode or "auto",
                protocol = opts.protocol, env = opts.env },
    template = opts.template, vars = opts.vars, session = opts.session, trust = opts.trust,
    timeout_ms = opts.timeout_ms,
    first_chunk_timeout_ms = opts.first_chunk_timeout_ms, stall_timeout_ms = opts.stall_timeout_ms,
  }
end

--- After its line is sent: the request's chunks, as an iterator that raises
--- an error object on failure.
---@param id integer the request's id
---@param opts table the request's options (timeout_ms)
---@return fun(): string|nil iterator
function Conn:iterate(id, opts)
  local req = setmetatable({ chunks = {}, ev = tasks.event() }, Req)
  self.reqs[id] = req
  if self.error then req:on_message { error = self.error } end
  -- Nobody waits forever, even on a server that hangs.
  local limit = (opts.timeout_ms or core.config("timeout_ms")) + client.GUARD_MS
  local guard = core.timer(limit, function()
    if req.done then return end
    self:send { op = "cancel", id = id }
    req:on_message { error = { code = "timeout",
      message = ("no answer from the kiro-rt server within %d ms"):format(limit) } }
  end)
  local i = 0
  return function()
    while true do
      if i < #req.chunks then
        i = i + 1
        local c = req.chunks[i]
        req.chunks[i] = false
        return c
      end
      if req.done then
        self.reqs[id] = nil
        guard:stop()
        if req.err then error(req.err, 0) end
        return nil
      end
      req.ev:wait()
      req.ev = tasks.event()
    end
  end
end

--- The next request id of the connection.
---@return integer
function Conn:new_id()
  local id = self.next_id
  self.next_id = id + 1
  return id
end

--- c:request(prompt, opts) -> iterator of chunks; raises an error object.
--- opts: stream, model, mode, protocol, cli, env, template, timeout_ms, first_chunk_timeout_ms, stall_timeout_ms.
---@param prompt string
---@param opts table
---@return fun(): string|nil iterator
function Conn:request(prompt, opts)
  local max = self.max_request_bytes
  if max and #prompt > max then
    errors.raise("overloaded",
      ("the prompt is %d bytes; the server takes at most %d (max_request_bytes)"):format(#prompt, max))
  end
  local id = self:new_id()
  local fields = request_fields(id, opts)
  fields.prompt = prompt
  self.sock:send_json(fields)
  return self:iterate(id, opts)
end

--- c:request_stdin(strip_newline, opts) -> iterator, as request, for the
--- prompt on stdin (opts.template puts the prompt form around it on the
--- server); or nil, message, kind ("empty", "utf8": the input is not a
--- prompt; "size", "read", "closed"). Stdin goes from the kernel into the
--- request line without a Lua string or a second copy, so a prompt of any
--- size costs about its own size once.
---@param strip boolean strip_newline: drop stdin's final newline
---@param opts table as request's
---@return fun(): string|nil iterator
---@return string? message
---@return string? kind
function Conn:request_stdin(strip, opts)
  local id = self:new_id()
  local head = core.json_encode(request_fields(id, opts)):sub(1, -2) -- without its "}"
  local sent, err, kind = self.sock:send_stdin_prompt(head, strip, self.max_request_bytes)
  if not sent then return nil, err, kind end
  return self:iterate(id, opts)
end

return client
