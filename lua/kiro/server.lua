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
--    "mode":"auto|daemon|oneshot","env":{...}},"timeout_ms":T,...}
--   {"op":"cancel","id":N}   {"op":"status"}   {"op":"stop"}
-- server -> client:
--   {"op":"hello","version":V,"proto":1,"pid":P}
--   {"id":N,"chunk":S}  {"id":N,"done":true}  {"id":N,"error":{"code":C,"message":M}}
--   {"op":"status",...}  {"op":"stopping"}  {"op":"error","message":M}

local kiro = require "kiro"
local paths = require "kiro.paths"
local core = kiro.core

local server = {}

server.PROTO = paths.PROTO
server.IDLE_MS = 600000                 -- exit after this long without requests
server.STOP_GRACE_MS = paths.STOP_GRACE_MS
server.paths = paths.paths
server.ensure_logdir = paths.ensure_logdir

local function log(level, msg) kiro.log(level, "kiro.server", msg) end



local function encode(t) return core.json_encode(t) .. "\n" end

---------------------------------------------------------------------------

local Server = {}
Server.__index = Server

local Conn = {}
Conn.__index = Conn

function Server:touch()
  self.last_activity = core.now()
end

function Server:on_event(ev, conn)
  if ev == "accept" then
    local c = setmetatable({ server = self, sock = conn, calls = {}, id = self.next_conn }, Conn)
    self.next_conn = self.next_conn + 1
    self.conns[c] = true
    conn:attach(c)
    self:touch()
  end
end

function Conn:send(t)
  self.sock:send(encode(t))
end

function Conn:on_event(ev, a)
  if ev == "line" then
    self:handle(a)
  elseif ev == "close" then
    -- The client went away (Ctrl-C, crash): its requests are cancelled, and
    -- each daemon drains the rest of its reply and stays usable.
    self.closed = true
    self.server.conns[self] = nil
    for _, call in pairs(self.calls) do call:cancel() end
    self.calls = {}
  end
end

function Conn:handle(line)
  local srv = self.server
  local msg = core.json_decode(line)
  if type(msg) ~= "table" then
    self:send { op = "error", message = "not a JSON object" }
    return
  end
  local op = msg.op
  if op == "request" then
    self:request(msg)
  elseif op == "cancel" then
    local call = self.calls[math.tointeger(msg.id) or -1]
    if call then call:cancel() end
  elseif op == "hello" then
    self:send { op = "hello", version = kiro.version, proto = server.PROTO, pid = core.getpid() }
  elseif op == "status" then
    self:send(srv:status())
  elseif op == "stop" then
    log("info", "stop requested by a client")
    self:send { op = "stopping", pid = core.getpid() }
    srv:stop("stop requested")
  else
    self:send { op = "error", message = "unknown op: " .. tostring(op) }
  end
end

local modes = { auto = true, daemon = true, oneshot = true }

function Conn:request(msg)
  local srv = self.server
  local id, b = math.tointeger(msg.id), msg.backend
  if not id or type(msg.prompt) ~= "string" or type(b) ~= "table"
     or type(b.cli) ~= "string" or not modes[b.mode or "auto"] then
    self:send { id = id, error = { code = "protocol", message = "malformed request" } }
    return
  end
  if srv.stopping then
    self:send { id = id, error = { code = "closed", message = "the kiro-rt server is stopping" } }
    return
  end
  local opts = {
    cli_path = b.cli,
    model = b.model ~= core.null and b.model or nil,
    mode = b.mode,
    env = type(b.env) == "table" and next(b.env) and b.env or nil,
  }
  for _, k in ipairs { "timeout_ms", "first_chunk_timeout_ms", "stall_timeout_ms" } do
    local v = math.tointeger(msg[k])
    if v and v >= 0 then opts[k] = v end
  end
  srv.inflight = srv.inflight + 1
  srv.served = srv.served + 1
  srv:touch()
  kiro.spawn(function()
    opts.stream = msg.stream ~= false
    local call = kiro.call(msg.prompt, opts)
    self.calls[id] = call
    local ok, err = true, nil
    while true do
      local chunk, e = call:next()
      if not chunk then ok, err = e == nil, e; break end
      if self.closed then call:cancel() break end
      self:send { id = id, chunk = chunk }
    end
    self.calls[id] = nil
    srv.inflight = srv.inflight - 1
    srv:touch()
    if self.closed then return end
    if ok then
      self:send { id = id, done = true }
    else
      local code = type(err) == "table" and err.code or "backend"
      local message = type(err) == "table" and err.message or tostring(err)
      self:send { id = id, error = { code = code, message = message } }
    end
    if srv.stopping and srv.inflight == 0 then srv.drained:set() end
  end)
end

function Server:status()
  local s = kiro.stats()
  local pools = {}
  for _, p in ipairs(s.pools) do
    local daemons = {}
    for _, d in ipairs(p.daemons) do
      daemons[#daemons + 1] = { pid = d.pid, state = d.state, served = d.served, rss_bytes = core.process_rss(d.pid) }
    end
    pools[#pools + 1] = {
      cli = p.cli, model = p.model, state = p.state, live = p.live, queued = p.queued,
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
    requests = self.served, fallbacks = s.fallbacks, socket = self.paths.socket,
    metrics = self.metrics_addr and ("http://" .. self.metrics_addr .. "/metrics") or nil,
    cache = s.cache,
    pools = pools,
  }
end

--- Stop: no new connections, in-flight requests finish (within the grace
-- period), then every backend is stopped and `serve` returns.
function Server:stop(why)
  if self.stopping then return end
  self.stopping = true
  self.stop_reason = why
  log("info", "stopping: " .. why)
  if self.listener then self.listener:close(); self.listener = nil end
  if self.metrics_listener then self.metrics_listener:close(); self.metrics_listener = nil end
  self.done:set()
end

-- A timer, not a task: it must not hold `serve` up once the server stops.
function Server:arm_idle()
  local idle_for = core.now() - self.last_activity
  local wait = self.inflight > 0 and self.idle_ms or math.max(0, self.idle_ms - idle_for)
  self.idle_timer = core.timer(math.max(10, wait), function()
    if self.stopping then return end
    local now_idle = core.now() - self.last_activity
    if self.inflight == 0 and now_idle >= self.idle_ms then
      self:stop(("idle for %d ms"):format(now_idle))
    else
      self:arm_idle()
    end
  end)
end

---------------------------------------------------------------------------
-- The metrics endpoint: just enough HTTP/1.1 for a Prometheus scrape.

local Http = {}
Http.__index = Http

function Http:on_event(ev, line)
  if ev ~= "line" or self.answered then return end
  if not self.request_line then
    self.request_line = line
    return
  end
  if line ~= "" then return end -- headers: not needed
  self.answered = true
  local method, path = self.request_line:match("^(%u+) (%S+) HTTP/1%.[01]$")
  local status, body, ctype = "200 OK", nil, "text/plain; version=0.0.4; charset=utf-8"
  if not method then
    status, body, ctype = "400 Bad Request", "bad request\n", "text/plain"
  elseif method ~= "GET" and method ~= "HEAD" then
    status, body, ctype = "405 Method Not Allowed", "use GET\n", "text/plain"
  elseif path:gsub("%?.*", "") ~= "/metrics" then
    status, body, ctype = "404 Not Found", "try /metrics\n", "text/plain"
  else
    body = kiro.metrics()
  end
  self.sock:send(("HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s")
    :format(status, ctype, #body, method == "HEAD" and "" or body))
  self.sock:close()
end

local Metrics = {}
Metrics.__index = Metrics
function Metrics:on_event(ev, conn)
  if ev == "accept" then conn:attach(setmetatable({ sock = conn }, Http)) end
end

--- "PORT" or "HOST:PORT" (loopback when no host is given) -> host, port.
function server.parse_listen(spec)
  local host, port = spec:match("^%[(.+)%]:(%d+)$")
  if not host then host, port = spec:match("^([^:]+):(%d+)$") end
  if not host then host, port = "127.0.0.1", spec:match("^(%d+)$") end
  port = tonumber(port)
  if not port or port > 65535 then return nil, "expected PORT or HOST:PORT, got '" .. spec .. "'" end
  return host, port
end

--- Is a server answering at path? A socket that refuses connections is
-- stale (its server was killed) and is removed; only then.
local function clear_stale(path)
  local probe = { done = kiro.event() }
  function probe:on_event(ev, err) if ev == "connect" then self.err = err or false; self.done:set() end end
  local sock = core.connect(path, probe)
  probe.done:wait()
  sock:close()
  if probe.err == false then return nil, "a kiro-rt server is already answering on " .. path end
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
-- kiro task. Returns true, or nil, message, code ("busy": another server).
function server.serve(opts)
  opts = opts or {}
  local p = server.paths()
  local ok, err = core.secure_dir(p.dir)
  if not ok then return nil, err, "insecure" end
  -- One server per user: the lock dies with its holder, so it never goes stale.
  local lock, lerr, why = core.lock(p.lock)
  if not lock then return nil, lerr, why end
  ok, err = clear_stale(p.socket)
  if not ok then lock:release(); return nil, err, "busy" end

  local self = setmetatable({
    paths = p, conns = {}, next_conn = 1, inflight = 0, served = 0,
    idle_ms = opts.idle_ms or server.IDLE_MS,
    stop_grace_ms = opts.stop_grace_ms or server.STOP_GRACE_MS,
    started = core.now(), done = kiro.event(), drained = kiro.event(),
  }, Server)
  self:touch()
  local listener
  listener, err = core.listen(p.socket, self)
  if not listener then lock:release(); return nil, err, "listen" end
  self.listener = listener
  if opts.metrics_listen then
    local host, port = server.parse_listen(opts.metrics_listen)
    local ml, merr
    if host then ml, merr = core.listen_tcp(host, port, setmetatable({}, Metrics)) else merr = port end
    if not ml then
      listener:close()
      lock:release()
      return nil, "metrics: " .. merr, "listen"
    end
    self.metrics_listener = ml
    self.metrics_addr = (host:find(":") and "[%s]:%d" or "%s:%d"):format(host, merr)
    log("info", ("metrics on http://%s/metrics"):format(self.metrics_addr))
  end
  log("info", ("listening on %s (pid %d, version %s, idle exit after %d ms)")
    :format(p.socket, core.getpid(), kiro.version, self.idle_ms))
  if opts.on_ready then opts.on_ready(self) end
  kiro.on_signal(function(sig)
    log("info", ("signal %d: stopping"):format(sig))
    self:stop("signal " .. sig)
  end)

  self:arm_idle()
  self.done:wait()
  self.idle_timer:stop()

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
