--- The kiro-rt server: keeps backends warm between `kiro-rt agent` calls.
--
-- It listens on a Unix socket private to the user and speaks JSON Lines with
-- request ids (one connection may carry several requests; chunks are relayed
-- as they arrive). It hosts the Lua runtime, so the fallback policy that
-- governs a request is the server's, replaceable while it runs.
--
-- Wire protocol, client -> server (one JSON object per line):
--   {"op":"hello","version":V,"proto":1}
--   {"op":"request","id":N,"prompt":S,"stream":B,"backend":{"cli":P,"model":M,
--    "mode":"auto|daemon|oneshot","env":{...}},"timeout_ms":T,...,
--    "expect":{"version":V,"proto":P}}  (kiro.wire; expect: instead of hello)
--   {"op":"cancel","id":N}   {"op":"status"}   {"op":"stop"}   {"op":"reload"}
-- server -> client:
--   {"op":"hello","version":V,"proto":1,"pid":P,"max_request_bytes":B}
--   {"id":N,"chunk":S}  {"id":N,"done":true}  {"id":N,"error":{"code":C,"message":M}}
--   {"op":"status",...}  {"op":"stopping"}  {"op":"error","code":C,"message":M}
--   {"op":"reloaded","path":P} (or an error with code "config")
-- Every request line gets exactly one {"done"} or {"error"} on its id (a
-- request whose id is unusable gets its error with "id": null). A line
-- past max_request_bytes, or past what the server may buffer for all
-- clients, gets {"op":"error","code":"overloaded"} and the connection closes.

local kiro = require "kiro"
local paths = require "kiro.paths"
local wire = require "kiro.wire"
local core = kiro.core

local server = {}

server.PROTO = paths.PROTO
server.IDLE_MS = 600000                 -- exit after this long without requests
server.STOP_GRACE_MS = paths.STOP_GRACE_MS
server.paths = paths.paths
server.ensure_logdir = paths.ensure_logdir
-- Bounds, so nothing a client sends or fails to read grows the server
-- without limit (the largest request is kiro's max_request_bytes).
server.MAX_BUFFERED_BYTES = 128 * 1024 * 1024 -- requests held, and unfinished lines, of all clients
server.MAX_UNREAD_BYTES = 16 * 1024 * 1024    -- replies one client has not read yet
-- Flow control: past UNREAD_HIGH unread bytes a client's request waits (its
-- backend too) until the client is down to UNREAD_LOW; a client that reads
-- nothing for UNREAD_TIMEOUT_MS meanwhile is disconnected.
server.UNREAD_HIGH = 4 * 1024 * 1024
server.UNREAD_LOW = 1024 * 1024
server.UNREAD_TIMEOUT_MS = 10000
server.MAX_CLIENTS = 512                      -- connections at once
server.LOG_MAX_BYTES = 10 * 1024 * 1024       -- server.log is rotated to server.log.1 past this
-- The metrics endpoint is on TCP, where any local user can reach it.
server.METRICS_LIMITS = { max_line = 16384, max_conns = 16, idle_ms = 5000, lifetime_ms = 10000,
                          max_unread = 1024 * 1024 }
server.METRICS_MAX_HEADER_BYTES = 8192

local function log(level, msg) kiro.log(level, "kiro.server", msg) end

---------------------------------------------------------------------------

---@class kiro.server.Server
---@field paths table the socket, lock and log paths (kiro.paths)
---@field conns table<kiro.server.Conn, true> the connected clients
---@field inflight integer requests being served
---@field served integer requests taken since start
---@field idle_ms integer exit after this long without requests (0: never)
---@field listener? userdata the socket's listener; nil once stopping
---@field stopping? boolean
---@field done kiro.Event set when the server stops
---@field drained kiro.Event set, once stopping, when nothing is left in flight or the grace period is over
local Server = {}
Server.__index = Server

---@class kiro.server.Conn
---@field server kiro.server.Server
---@field sock userdata the client's connection
---@field id integer the connection's number, for the log
---@field calls table<integer, kiro.Call|kiro.Reader|true> requests in flight by id (true: not yet started)
---@field closed? boolean
---@field drain_ev kiro.Event set when the client has read enough, or has gone
local Conn = {}
Conn.__index = Conn

--- Notes activity now: the idle exit counts from it.
function Server:touch()
  self.last_activity = core.now()
end

--- The listener's events: "accept" (conn: a new client's connection).
---@param ev string
---@param conn userdata
function Server:on_event(ev, conn)
  if ev == "accept" then
    local c = setmetatable({ server = self, sock = conn, calls = {}, id = self.next_conn,
                             drain_ev = kiro.event() }, Conn)
    self.next_conn = self.next_conn + 1
    self.conns[c] = true
    conn:attach(c)
    self:touch()
  end
end

--- Sends t; false if the connection is gone. A client that leaves more
--- than MAX_UNREAD_BYTES of replies unread is disconnected, its requests
--- cancelled: it cannot make the server hold its replies for it.
---@param t table
---@return boolean sent
function Conn:send(t)
  if self.closed then return false end
  local ok, err = self.sock:send_json(t)
  if ok == nil then
    self:gone(("client %d is not reading its replies (%s); disconnected, its requests cancelled")
      :format(self.id, err), "warn")
    self.sock:close(true) -- what it left unread goes too
    return false
  end
  return ok
end

--- The connection is over: every request it made is cancelled, and each
--- daemon drains the rest of its reply and stays usable.
---@param why string for the log
---@param level? string the log level (default "debug")
function Conn:gone(why, level)
  if self.closed then return end
  self.closed = true
  self.drain_ev:set()
  self.server.conns[self] = nil
  log(level or "debug", why)
  for _, call in pairs(self.calls) do
    if call ~= true then call:cancel() end
  end
end

--- The connection's events: "line" (a: the decoded line, nil when it is
--- not JSON), "drain" and "close" (a: why).
---@param ev string
---@param a any
function Conn:on_event(ev, a)
  if ev == "line" then
    -- Nothing a client sends may end the server: whatever goes wrong in
    -- handling one line is that line's error. (The line arrives decoded:
    -- a large request is never also a Lua string of its JSON text.)
    local ok, err = xpcall(self.handle, debug.traceback, self, a)
    if not ok then
      log("error", "internal error handling a client's line: " .. tostring(err))
      self:send { op = "error", code = "protocol", message = "internal error in the kiro-rt server (see its log)" }
    end
  elseif ev == "drain" then
    self.drain_ev:set()
  elseif ev == "close" then
    local limit = a and (a:find("max_", 1, true) or a:find("too many", 1, true))
    self:gone(("client %d: %s"):format(self.id, tostring(a)), limit and "warn" or "debug")
  end
end

--- The client is behind: the request waits, its backend paused, until the
--- client has read down to UNREAD_LOW. False when the client went away, or
--- read nothing for UNREAD_TIMEOUT_MS (it is then disconnected).
---@param call kiro.Call|kiro.Reader the request that waits
---@return boolean caught_up
function Conn:catch_up(call)
  local srv = self.server
  call:pause(true)
  while not self.closed and self.sock:unread() > server.UNREAD_LOW do
    local before = self.sock:unread()
    local ev = self.drain_ev
    self.sock:notify_drain(server.UNREAD_LOW)
    local timer = core.timer(srv.unread_timeout_ms, function() ev:set() end)
    ev:wait()
    timer:stop()
    if self.drain_ev == ev then self.drain_ev = kiro.event() end
    if not self.closed and self.sock:unread() >= before then
      self:gone(("client %d read none of its %d unread bytes in %d ms; disconnected, its requests cancelled")
        :format(self.id, before, srv.unread_timeout_ms), "warn")
      self.sock:close(true)
    end
  end
  call:pause(false)
  return not self.closed
end

--- One line from the client: request, cancel, hello, status or stop; any
--- other line is answered with a protocol error.
---@param msg any the decoded line
function Conn:handle(msg)
  local srv = self.server
  if type(msg) ~= "table" or #msg > 0 then
    self:send { op = "error", code = "protocol", message = "not a JSON object" }
    return
  end
  local op = msg.op
  if op == "request" then
    self:request(msg)
  elseif op == "cancel" then
    local call = self.calls[math.tointeger(msg.id) or false]
    if call and call ~= true then call:cancel() end
  elseif op == "hello" then
    self:send { op = "hello", version = kiro.version, proto = server.PROTO, pid = core.getpid(),
                max_request_bytes = srv.max_request_bytes }
  elseif op == "status" then
    self:send(srv:status())
  elseif op == "reload" then
    if not srv.config_path then
      self:send { op = "error", code = "config", message = "the server runs without a configuration file" }
    else
      local conf, err = require("kiro.configfile").reload(srv.config_path)
      if conf then
        self:send { op = "reloaded", path = srv.config_path }
      else
        self:send { op = "error", code = "config", message = err }
      end
    end
  elseif op == "stop" then
    log("info", "stop requested by a client")
    self:send { op = "stopping", pid = core.getpid() }
    srv:stop("stop requested")
  else
    self:send { op = "error", code = "protocol",
                message = type(op) == "string" and "unknown op: " .. op or "op must be a string" }
  end
end

--- Sends the error that ends request id (nil: an id that cannot be echoed,
--- sent as null).
---@param id? number|string|boolean
---@param code string
---@param message string
function Conn:fail(id, code, message)
  self:send { id = id == nil and core.null or id, error = { code = code, message = message } }
end

--- A request line: checked, then served by a task of its own; refused at
--- once when it is malformed, its id is in flight, it expects another
--- server, the server is stopping, or it would hold too many bytes.
---@param msg table the decoded line
function Conn:request(msg)
  local srv = self.server
  local req, err, code = wire.request(msg, srv.max_request_bytes)
  if code then return self:fail(wire.raw_id(msg), code, err) end
  if not req then return self:fail(wire.raw_id(msg), "protocol", "bad request: " .. err) end
  local id = req.id
  if self.calls[id] then
    return self:fail(id, "protocol", ("bad request: id %d is already in flight on this connection"):format(id))
  end
  local expect = req.expect
  if expect and (expect.version ~= kiro.version or expect.proto ~= server.PROTO) then
    return self:fail(id, "version", ("this server is kiro-rt %s (protocol %d); the request expects %s (protocol %d)")
      :format(kiro.version, server.PROTO, expect.version, expect.proto))
  end
  if srv.stopping then return self:fail(id, "closed", "the kiro-rt server is stopping") end
  -- Its prompt stays in memory until it ends: it counts against the bytes
  -- the server holds for all clients.
  local held = #req.prompt
  if not srv.listener or not srv.listener:hold(held) then
    return self:fail(id, "overloaded",
      ("the server holds %d bytes of requests (max_buffered_bytes %d); try again later")
        :format(srv.listener and srv.listener:buffered() or 0, srv.max_buffered_bytes))
  end
  self.calls[id] = true -- taken from now on
  srv.inflight = srv.inflight + 1
  srv.served = srv.served + 1
  srv:touch()
  local listener = srv.listener
  kiro.spawn(function()
    local ok, outcome, e = xpcall(self.relay, debug.traceback, self, id, req)
    listener:hold(-held)
    if held >= 4 * 1024 * 1024 then srv:reclaim() end
    self.calls[id] = nil
    srv.inflight = srv.inflight - 1
    srv:touch()
    srv.last_request = core.now()
    srv:settle()
    if not ok then
      log("error", ("internal error in request %d: %s"):format(id, tostring(outcome)))
      outcome, e = false, { code = "backend", message = "internal error in the kiro-rt server (see its log)" }
    end
    if not self.closed then
      if outcome then
        self:send { id = id, done = true }
      else
        self:fail(id, e.code or "backend", e.message or tostring(e))
      end
    end
    if srv.stopping and srv.inflight == 0 then srv.drained:set() end
  end)
end

--- Serves one checked request, relaying its chunks; true, or false and the
--- error object.
---@param id integer the request's id
---@param req table the request, as kiro.wire.request checked it
---@return boolean ok
---@return table? err { code = string, message = string }
function Conn:relay(id, req)
  local config = require "kiro.config"
  -- (which configuration the server has: a name is looked for there)
  local path = self.server.config_path
  local its = path and (" (its configuration: %s)"):format(path)
    or " (it runs with no configuration file: `kiro-rt stop`, then start it with one)"
  if req.backend_name and not config.named_backend(req.backend_name) then
    return false, { code = "config", message = ("the server has no backend named %q%s"):format(req.backend_name, its) }
  end
  if req.template and req.template ~= "default" then
    if not config.named_template(req.template) then
      return false, { code = "config", message = ("the server has no template named %q%s"):format(req.template, its) }
    end
    local ok, terr = require("kiro.call").check_template(req.template, nil, req.vars)
    if not ok then return false, { code = "config", message = terr } end
  end
  local opts = {
    cli_path = req.cli, backend = req.backend_name, model = req.model, mode = req.mode, protocol = req.protocol,
    env = req.env,
    stream = req.stream, session = req.session, template = req.template, vars = req.vars, trust = req.trust,
    timeout_ms = req.timeout_ms, first_chunk_timeout_ms = req.first_chunk_timeout_ms,
    stall_timeout_ms = req.stall_timeout_ms,
  }
  local call = kiro.call(req.prompt, opts)
  self.calls[id] = call
  while true do
    local chunk, msg, code = call:next()
    if not chunk then return code == nil, code and { code = code, message = msg } end
    if self.closed or not self:send { id = id, chunk = chunk }
       or (self.sock:unread() > server.UNREAD_HIGH and not self:catch_up(call)) then
      call:cancel()
      return false, { code = "cancelled", message = "client gone" }
    end
  end
end

-- The configuration file in use, and how its reloads went.
local function opts_config(self)
  if not self.config_path then return nil end
  local r = require("kiro.configfile").reloads
  return { path = self.config_path, reloads = r.ok, reload_errors = r.error, last_error = r.last_error,
           last_reload_ms = r.last_ms }
end

--- The status reply: the server, its limits, and its pools and their daemons.
---@return table
function Server:status()
  local s = kiro.stats()
  local pools = {}
  local names = {} -- the configured backends' names, by their pools' tag
  for name, h in pairs(require("kiro.config").current().handles) do names[h:tag()] = name end
  for _, p in ipairs(s.pools) do
    local daemons = {}
    for _, d in ipairs(p.daemons) do
      daemons[#daemons + 1] = { pid = d.pid, state = d.state, served = d.served, rss_bytes = core.process_rss(d.pid) }
    end
    pools[#pools + 1] = {
      cli = p.cli, model = p.model, protocol = p.protocol, state = p.state, live = p.live, queued = p.queued,
      conversations = p.conversations, backend = p.backend, name = names[p.backend],
      restarts = p.restarts, last_error = p.last_error ~= "" and p.last_error or nil,
      daemons = daemons,
    }
  end
  local conns = 0
  for _ in pairs(self.conns) do conns = conns + 1 end
  return {
    op = "status", pid = core.getpid(), version = kiro.version,
    uptime_ms = core.now() - self.started, idle_ms = self.idle_ms,
    rss_bytes = core.process_rss(core.getpid()), connections = conns, in_flight = self.inflight,
    buffered_bytes = self.listener and self.listener:buffered() or 0,
    lua_bytes = math.floor(collectgarbage("count") * 1024),
    -- quiet since its last request, and its memory handed back
    settled = self.settled_at ~= nil and self.settled_at >= self.last_request and self.inflight == 0,
    limits = { max_request_bytes = self.max_request_bytes, max_buffered_bytes = self.max_buffered_bytes,
               max_unread_bytes = self.max_unread_bytes, max_clients = self.max_clients },
    log = self.log_file,
    requests = self.served, fallbacks = s.fallbacks, socket = self.paths.socket,
    backends = s.backends, backends_peak = s.backends_peak,
    metrics = self.metrics_addr and ("http://" .. self.metrics_addr .. "/metrics") or nil,
    cache = s.cache,
    pools = pools,
    config = opts_config(self),
  }
end

--- Stop: no new connections, in-flight requests finish (within the grace
--- period), then every backend is stopped and `serve` returns.
---@param why string for the log
function Server:stop(why)
  if self.stopping then return end
  self.stopping = true
  self.stop_reason = why
  log("info", "stopping: " .. why)
  if self.listener then self.listener:close(); self.listener = nil end
  if self.metrics_listener then self.metrics_listener:close(); self.metrics_listener = nil end
  self.done:set()
end

--- A large request is over: its memory goes back to the system now rather
--- than when the collector gets round to it (a resident size that stays at
--- its peak looks like a leak, and counts against MemoryMax). From a timer:
--- once the task that served it has finished.
function Server:reclaim()
  self.reclaim_timer = core.timer(0, core.trim_memory) -- kept: a collected timer never fires
end

--- Once the server has been quiet for a while (past pool_idle_ms, when
--- unused backends have stopped their daemons), the memory its requests and
--- pools used goes back to the system.
function Server:settle()
  if self.settle_timer then return end
  local delay = math.max(1000, kiro.option("pool_idle_ms") + 500)
  local function check()
    local quiet = core.now() - self.last_request
    if self.inflight == 0 and quiet >= delay then
      self.settle_timer = nil
      core.trim_memory()
      self.settled_at = core.now()
    else
      self.settle_timer = core.timer(math.max(10, delay - quiet), check)
    end
  end
  self.settle_timer = core.timer(delay, check)
end

--- Stops the server once it has been idle for idle_ms with nothing in flight
--- (idle_ms 0: never). A timer, not a task: it must not hold `serve` up
--- once the server stops.
function Server:arm_idle()
  if self.idle_ms == 0 then return end
  local idle_for = core.now() - self.last_activity
  local wait = self.inflight > 0 and self.idle_ms or math.max(0, self.idle_ms - idle_for)
  self.idle_timer = core.timer(math.max(10, wait), function()
    if self.stopping then return end
    local now_idle = core.now() - self.last_activity
    -- Conversations the server keeps hold it: they end on their own
    -- (session_idle_ms), and the server goes after that.
    if self.inflight == 0 and now_idle >= self.idle_ms and kiro.stats().conversations == 0 then
      self:stop(("idle for %d ms"):format(now_idle))
    else
      self:arm_idle()
    end
  end)
end

---------------------------------------------------------------------------
-- The metrics endpoint: just enough HTTP/1.1 for a Prometheus scrape.

---@class kiro.server.Http
---@field sock userdata the scraper's connection
---@field header_bytes integer bytes of the request line and headers so far
---@field request_line? string
---@field answered? boolean
local Http = {}
Http.__index = Http

--- A scrape's connection events: its lines, then its close.
---@param ev string
---@param line? string
function Http:on_event(ev, line)
  -- As on the socket: whatever goes wrong with one scrape ends that one.
  local ok, err = xpcall(self.handle, debug.traceback, self, ev, line)
  if not ok then
    log("error", "internal error answering a metrics request: " .. tostring(err))
    self.sock:close(true)
  end
end

--- Takes the request line and the headers, then answers GET or HEAD
--- /metrics (an error status for anything else) and closes.
---@param ev string
---@param line? string
function Http:handle(ev, line)
  if ev ~= "line" or self.answered then return end
  self.header_bytes = self.header_bytes + #line + 2
  if self.header_bytes > server.METRICS_MAX_HEADER_BYTES then
    self.answered = true
    self.sock:send("HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    self.sock:close()
    return
  end
  if not self.request_line then
    self.request_line = line
    return
  end
  if line ~= "" then return end -- headers: not needed
  self.answered = true
  local method, path = self.request_line:match("^(%u+) (%S+) HTTP/1%.[01]$")
  local status, body, ctype
  if not method then
    status, body, ctype = "400 Bad Request", "bad request\n", "text/plain"
  elseif method ~= "GET" and method ~= "HEAD" then
    status, body, ctype = "405 Method Not Allowed", "use GET\n", "text/plain"
  elseif path:gsub("%?.*", "") ~= "/metrics" then
    status, body, ctype = "404 Not Found", "try /metrics\n", "text/plain"
  else
    status, body, ctype = "200 OK", kiro.metrics(), "text/plain; version=0.0.4; charset=utf-8"
  end
  self.sock:send(("HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s")
    :format(status, ctype, #body, method == "HEAD" and "" or body))
  self.sock:close()
end

---@class kiro.server.Metrics
local Metrics = {}
Metrics.__index = Metrics
--- The metrics listener's events: "accept" (conn: a scrape's connection).
---@param _ kiro.server.Metrics the listener's context
---@param ev string
---@param conn userdata
function Metrics.on_event(_, ev, conn)
  if ev == "accept" then conn:attach(setmetatable({ sock = conn, header_bytes = 0 }, Http)) end
end

--- An HTTP endpoint for Prometheus on [HOST:]PORT: the listener and its
--- address (HOST:PORT), or nil and a message.
---@param spec string
---@return userdata|nil listener, string address_or_message
function server.metrics_listener(spec)
  local host, port = server.parse_listen(spec)
  if not host then return nil, port end
  local ml, bound = core.listen_tcp(host, port, setmetatable({}, Metrics), server.METRICS_LIMITS)
  if not ml then return nil, bound end
  return ml, (host:find(":") and "[%s]:%d" or "%s:%d"):format(host, bound)
end

--- "PORT" or "HOST:PORT" (loopback when no host is given; HOST may be a
--- name, like localhost, or [IPv6]) -> host, port.
---@param spec string
---@return string|nil host
---@return integer|string port the port; the message when host is nil
function server.parse_listen(spec)
  local host, port = spec:match("^%[(.+)%]:(%d+)$")
  if not host then host, port = spec:match("^([^:]+):(%d+)$") end
  if not host then host, port = "127.0.0.1", spec:match("^(%d+)$") end
  port = port and #port <= 5 and math.tointeger(tonumber(port))
  if not port or port > 65535 then
    return nil, "expected PORT or HOST:PORT with PORT from 0 to 65535, got '" .. spec .. "'"
  end
  return host, port
end

--- Is a server answering at path? A socket that refuses connections is
-- stale (its server was killed) and is removed; only then.
--- Readies path for a listener: true when nothing answers there (a socket
--- left by a process that died is removed), else nil and why.
---@param path string
---@return boolean|nil ok, string? message
function server.clear_stale(path)
  local probe = { done = kiro.event() }
  function probe:on_event(ev, err) if ev == "connect" then self.err = err or false; self.done:set() end end
  local sock = core.connect(path, probe)
  probe.done:wait()
  sock:close()
  if probe.err == false then return nil, "a kiro-rt process is already answering on " .. path end
  if probe.err == "ENOENT" then return true end
  if probe.err == "ECONNREFUSED" then
    local ok, err = os.remove(path)
    if not ok then return nil, "cannot remove the stale socket: " .. err end
    log("info", "removed a stale socket " .. path)
    return true
  end
  return nil, ("cannot probe %s: %s"):format(path, tostring(probe.err))
end

--- serve(opts): run the server until it is stopped or idle. Call it from a
--- kiro task. Returns true, or nil, message, code ("busy": another server).
---@param opts? table idle_ms, stop_grace_ms, max_buffered_bytes, max_unread_bytes, max_clients,
---  unread_timeout_ms, log_file, metrics_listen, on_ready
---@return boolean|nil ok
---@return string? message
---@return string? code "busy" (another server), "insecure", "listen" or "error"
function server.serve(opts)
  opts = opts or {}
  local p = server.paths()
  local ok, err = core.secure_dir(p.dir)
  if not ok then return nil, err, "insecure" end
  -- One server per user: the lock dies with its holder, so it never goes stale.
  local lock, lerr, why = core.lock(p.lock)
  if not lock then return nil, lerr, why end
  ok, err = server.clear_stale(p.socket)
  if not ok then lock:release(); return nil, err, "busy" end

  local self = setmetatable({
    paths = p, conns = {}, next_conn = 1, inflight = 0, served = 0,
    idle_ms = opts.idle_ms or server.IDLE_MS,
    stop_grace_ms = opts.stop_grace_ms or server.STOP_GRACE_MS,
    max_request_bytes = kiro.option("max_request_bytes"),
    max_buffered_bytes = opts.max_buffered_bytes or server.MAX_BUFFERED_BYTES,
    max_unread_bytes = opts.max_unread_bytes or server.MAX_UNREAD_BYTES,
    max_clients = opts.max_clients or server.MAX_CLIENTS,
    unread_timeout_ms = opts.unread_timeout_ms or server.UNREAD_TIMEOUT_MS,
    log_file = opts.log_file, config_path = opts.config,
    started = core.now(), done = kiro.event(), drained = kiro.event(),
  }, Server)
  self:touch()
  self.last_request = self.last_activity
  core.raise_nofile()
  local listener
  listener, err = core.listen(p.socket, self, {
    json = true,
    -- A request line carries its prompt JSON-escaped: room for the escapes.
    max_line = self.max_request_bytes + self.max_request_bytes // 8 + 65536,
    max_buffered = self.max_buffered_bytes, max_unread = self.max_unread_bytes,
    max_conns = self.max_clients,
  })
  if not listener then lock:release(); return nil, err, "listen" end
  self.listener = listener
  if opts.metrics_listen then
    local ml, addr = server.metrics_listener(opts.metrics_listen)
    if not ml then
      listener:close()
      lock:release()
      return nil, "metrics: " .. addr, "listen"
    end
    self.metrics_listener, self.metrics_addr = ml, addr
    log("info", ("metrics on http://%s/metrics"):format(self.metrics_addr))
  end
  log("info", ("listening on %s (pid %d, version %s, %s)"):format(p.socket, core.getpid(), kiro.version,
    self.idle_ms == 0 and "no idle exit" or ("idle exit after %d ms"):format(self.idle_ms)))
  if opts.on_ready then opts.on_ready(self) end
  local signalled = false
  kiro.on_signal(function(sig)
    if signalled then return end -- a second signal: everything ends now
    signalled = true
    log("info", ("signal %d: stopping"):format(sig))
    self:stop("signal " .. sig)
    return true -- requests under way finish (stop_grace_ms), then the backends stop
  end)
  -- SIGHUP: the log was moved away (logrotate): write to a new one; and
  -- the configuration file is read again (kept if it does not check), as
  -- it is when it changes.
  core.handle_hup(function()
    if core.log_reopen() then log("info", "SIGHUP: log reopened") end
    if opts.config then require("kiro.configfile").reload(opts.config) end
  end)
  if opts.config then
    local werr
    self.config_watch, werr = require("kiro.configfile").watch(opts.config, opts.config_files)
    if not self.config_watch then log("warn", "cannot watch " .. opts.config .. " for changes: " .. werr) end
  end

  self:arm_idle()
  self.done:wait()
  if self.idle_timer then self.idle_timer:stop() end
  if self.config_watch then self.config_watch.stop() end
  if self.settle_timer then self.settle_timer:stop() end

  -- Let in-flight requests finish, within the grace period.
  if self.inflight > 0 then
    local grace = core.timer(self.stop_grace_ms, function() self.drained:set() end)
    self.drained:wait()
    grace:stop()
  end
  -- Every backend stopped and reaped before clients hear the socket close.
  kiro.reset()
  for c in pairs(self.conns) do c.closed = true; c.sock:close() end
  lock:release()
  log("info", "stopped (" .. tostring(self.stop_reason) .. ")")
  return true
end

return server
