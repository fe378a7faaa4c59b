-- kiro.websocket: WebSocket client connections on kiro's own loop
-- (libwebsockets with its libuv event library in the C core), against a
-- real peer (Python's, spec/hosts/ws_echo.py).
local H = require "helper"

local function echo(tls)
  local port, dir = H.fake_host("ws_echo", nil, tls)
  return (tls and "wss" or "ws") .. "://127.0.0.1:" .. port .. "/echo", dir
end

describe("kiro.websocket", function()
  after_each(H.check_leaks)

  it("sends and receives text and binary; fragments are joined; a large message is whole", function()
    local kiro = H.setup()
    local url = echo()
    kiro.spawn(function()
      local ws = assert(kiro.websocket.connect(url))
      assert.is_true(ws:send("hello"))
      assert.are.same({ "hello", false }, { ws:receive(5000) })
      assert.is_true(ws:send("\0\1\2\255", true))
      assert.are.same({ "\0\1\2\255", true }, { ws:receive(5000) })
      ws:send("frag abcdef")
      assert.are.same({ "abcdef", false }, { ws:receive(5000) })
      ws:send("big 300000")
      local big = ws:receive(5000)
      assert.are.equal(("x"):rep(300000), big)
      local long = ("é"):rep(40000) -- sent as one message too
      ws:send(long)
      assert.are.equal(long, (ws:receive(5000)))
      ws:close(1000, "done")
      assert.are.same({ nil, "closed (1000: done)", "closed" }, { ws:receive(5000) })
      assert.are.equal(1000, ws.close_code)
    end)
    assert.are.equal(0, kiro.run())
  end)

  it("tasks wait side by side: a receive suspends only its task, and times out on its own", function()
    local kiro = H.setup()
    local url = echo()
    local seq = {}
    kiro.spawn(function()
      local ws = assert(kiro.websocket.connect(url))
      ws:send("silent")
      seq[#seq + 1] = "waiting"
      assert.are.same({ nil, "timeout", "timeout" }, { ws:receive(200) })
      seq[#seq + 1] = "timed out"
      ws:send("still open")
      assert.are.equal("still open", (ws:receive(5000)))
      ws:release()
    end)
    kiro.spawn(function()
      kiro.sleep(50)
      seq[#seq + 1] = "other task ran"
    end)
    assert.are.equal(0, kiro.run())
    assert.are.same({ "waiting", "other task ran", "timed out" }, seq)
  end)

  it("release lets the socket go at once, after a quiet spell too", function()
    local kiro = H.setup()
    local url = echo()
    local function sockets()
      local p = assert(io.popen("ls -l /proc/" .. H.pid .. "/fd 2>/dev/null | grep -c 'socket:'"))
      local n = tonumber(p:read("a"))
      p:close()
      return n
    end
    kiro.spawn(function()
      local before = sockets()
      local ws = assert(kiro.websocket.connect(url))
      assert.are.equal(before + 1, sockets())
      kiro.sleep(1500) -- (nothing on the wire for a while)
      ws:release()
      kiro.sleep(50)
      assert.are.equal(before, sockets())
    end)
    assert.are.equal(0, kiro.run())
  end)

  it("reports how a connection ended: the peer's close code, a drop, a message too big, a refused port", function()
    local kiro = H.setup()
    local url = echo()
    kiro.spawn(function()
      local ws = assert(kiro.websocket.connect(url))
      ws:send("close 4004 Authentication failed.")
      assert.are.same({ nil, "closed (4004: Authentication failed.)", "closed" }, { ws:receive(5000) })
      assert.are.same({ 4004, "Authentication failed." }, { ws.close_code, ws.close_reason })
      assert.are.same({ nil, "closed (4004: Authentication failed.)", "closed" }, { ws:send("late") })

      ws = assert(kiro.websocket.connect(url))
      ws:send("drop")
      local m, _, code = ws:receive(5000)
      assert.are.same({ nil, "network", 1006 }, { m, code, ws.close_code })

      ws = assert(kiro.websocket.connect(url, { max_bytes = 100 }))
      ws:send("big 101")
      assert.are.same({ nil, "message too big", "too_big" }, { ws:receive(5000) })

      local r, msg
      r, msg, code = kiro.websocket.connect("ws://127.0.0.1:1/")
      assert.are.same({ nil, "network" }, { r, code }, msg)
    end)
    assert.are.equal(0, kiro.run())
  end)

  it("an address no connection can reach is refused at once, named, and leaves nothing on the loop", function()
    -- (libwebsockets 4.1 leaves a libuv handle behind when connect() fails at
    -- once: such addresses never reach it; a runtime that closes with a
    -- handle still open says so)
    local dir = H.tmpdir()
    H.write_file(dir .. "/x.lua", [[
local kiro = require "kiro"
for _, url in ipairs { "ws://[ff02::1]:9/", "ws://255.255.255.255:9/", "ws://224.0.0.1:9/" } do
  print(select(2, kiro.websocket.connect(url)), (select(3, kiro.websocket.connect(url))))
end
]])
    local r = H.run({ H.kiro_rt, "run", dir .. "/x.lua" }, H.sim_env())
    assert.are.same({ 0, "" }, { r.code, r.err })
    assert.are.equal(table.concat({ "cannot connect to ff02::1: not a host's address\tnetwork",
      "cannot connect to 255.255.255.255: not a host's address\tnetwork",
      "cannot connect to 224.0.0.1: not a host's address\tnetwork", "" }, "\n"), r.out)
  end)

  it("looks a host's name up off the loop: localhost connects; a name that does not exist is named; a connection "
    .. "let go while its name is looked up leaves nothing behind", function()
    local kiro = H.setup()
    local url = echo():gsub("127%.0%.0%.1", "localhost")
    kiro.spawn(function()
      local ws = assert(kiro.websocket.connect(url))
      ws:send("by name")
      assert.are.equal("by name", (ws:receive(5000)))
      ws:release()
      local r, msg, code = kiro.websocket.connect("ws://no-such-host.invalid/")
      assert.are.same({ nil, "network" }, { r, code })
      assert.matches("^cannot resolve no%-such%-host%.invalid: ", msg)
    end)
    assert.are.equal(0, kiro.run())
    -- Let go at once, while the name is looked up (the core's handle): no
    -- event comes, though the loop runs long enough for the lookup to end
    -- (ASan and valgrind see that it frees what it had).
    local events = 0
    local h = assert(kiro.core.websocket(url, 1000, { on_event = function() events = events + 1 end }))
    h:release()
    kiro.spawn(function() kiro.sleep(300) end)
    assert.are.equal(0, kiro.run())
    assert.are.equal(0, events)
  end)

  it("verifies TLS peers: a self-signed certificate is refused unless trusted (SSL_CERT_FILE); misuse raises",
    function()
    local kiro = H.setup()
    local url, dir = echo(true)
    -- Trusted: OpenSSL's SSL_CERT_FILE names it (a program of its own: the
    -- variable is read when TLS starts).
    local script = H.tmpdir() .. "/wss.lua"
    H.write_file(script, ([[
local ws = assert(require("kiro").websocket.connect(%q))
ws:send("over TLS")
print(ws:receive(5000))
]]):format(url))
    local r = H.run({ H.kiro_rt, "run", script }, { SSL_CERT_FILE = dir .. "/cert.pem" })
    assert.are.same({ 0, "over TLS\tfalse\n" }, { r.code, r.out }, r.err)
    kiro.spawn(function()
      local ws, msg, code = kiro.websocket.connect(url, { timeout_ms = 5000 })
      assert.are.same({ nil, "TLS: self-signed certificate", "tls" }, { ws, msg, code })
    end)
    assert.are.equal(0, kiro.run())
    assert.has_error(function() kiro.websocket.connect("http://127.0.0.1/") end,
      "kiro.websocket.connect: url must be a ws:// or wss:// URL")
    assert.has_error(function() kiro.websocket.connect("ws://x/", { timeout_ms = 0 }) end,
      "kiro.websocket.connect: timeout_ms must be an integer >= 1")
  end)

  it("a napper's stop ends the wait for a handshake (cancelled); after it none begins", function()
    local kiro = H.setup()
    -- (an HTTP server that holds its answer 5 s: the handshake waits)
    local url = "ws://127.0.0.1:" .. H.fake_host("http_fake") .. "/slow?ms=5000"
    local n = kiro.napper()
    local result
    kiro.spawn(function() result = { kiro.websocket.connect(url, { stop = n }) } end)
    kiro.spawn(function() n:stop() end)
    assert.are.equal(0, kiro.run())
    assert.are.same({ nil, "stopped", "cancelled" }, result) -- (not the server's answer, 5 s later)
    assert.are.same({ nil, "stopped", "cancelled" }, { kiro.websocket.connect(url, { stop = n }) })
    local ok, err = pcall(kiro.websocket.connect, url, { stop = true })
    assert.is_false(ok)
    assert.matches("stop must be a kiro.napper()", err, 1, true)
  end)

  it("ends what is open when the runtime shuts down: a waiting receive returns cancelled", function()
    local kiro = H.setup()
    local url = echo()
    local got
    local open = kiro.event()
    kiro.spawn(function()
      local ws = assert(kiro.websocket.connect(url))
      open:set()
      got = { ws:receive() }
    end)
    kiro.spawn(function()
      open:wait()
      kiro.shutdown()
    end)
    kiro.run()
    assert.are.same({ nil, "runtime shutting down", "cancelled" }, got)
  end)
end)
