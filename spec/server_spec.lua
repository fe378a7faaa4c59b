-- The background server: auto-start, privacy, lifecycle, recovery.
local H = require "helper"

local function agent_ok(env, text)
  local r = H.agent({ "-m", text or "hi" }, env)
  assert.are.equal(0, r.code, r.err)
  assert.are.equal("You said: " .. (text or "hi") .. "\n", r.out)
  return r
end

local function count_lines(text, pat)
  local n = 0
  for line in text:gmatch("[^\n]+") do if line:find(pat) then n = n + 1 end end
  return n
end

describe("kiro-rt server", function()
  after_each(H.check_sims_gone)

  it("is started by the first agent and reused by the next", function()
    local env, log = H.sim_env()
    assert.is_nil(H.status(env))
    local r = agent_ok(env, "one")
    assert.are.equal("", r.err) -- auto-start is silent
    local s1 = assert(H.status(env))
    agent_ok(env, "two")
    local s2 = assert(H.status(env))
    assert.are.equal(s1.pid, s2.pid)
    assert.are.equal(2, s2.requests)
    -- One warm daemon served both calls.
    assert.are.equal(1, #H.pids(H.sim_events(log), { event = "start" }))
    assert.are.equal(1, #s2.pools)
    assert.are.equal(2, s2.pools[1].daemons[1].served)
    assert.is_true(s2.pools[1].daemons[1].rss_bytes > 0)
    -- It runs in a session of its own, orphaned (nobody's child here).
    local function sid_ppid(pid)
      local stat = H.read_file("/proc/" .. pid .. "/stat")
      local ppid, _, sid = stat:match("^%d+ %b() %a (%d+) (%d+) (%d+)")
      return tonumber(sid), tonumber(ppid)
    end
    local sid, ppid = sid_ppid(s2.pid)
    assert.are_not.equal(sid_ppid(H.pid), sid)
    assert.are_not.equal(H.pid, ppid)
  end)

  it("concurrent first calls end up with one server", function()
    local env = H.sim_env()
    local waits = {}
    for i = 1, 6 do
      local _, wait_exit = H.spawn_bg({ H.kiro_rt, "agent", "-m", "c" .. i }, env)
      waits[i] = wait_exit
    end
    for i = 1, 6 do
      local code, out = waits[i]()
      assert.are.equal(0, code)
      assert.are.equal("You said: c" .. i .. "\n", out)
    end
    local s = assert(H.status(env))
    assert.are.equal(6, s.requests)
    -- Every server but one found the lock taken and left.
    assert.are.equal(1, count_lines(H.server_log(env), "listening on"))
  end)

  it("keeps a pool per backend: model and KIRO_* knobs of each call", function()
    local env = H.sim_env()
    agent_ok(env, "a")
    local r = H.agent({ "-m", "a", "--model", "m1" }, env)
    assert.are.equal("[m1] You said: a\n", r.out)
    local env2 = {}
    for k, v in pairs(env) do env2[k] = v end
    env2.KIRO_SIM_FAULT = "error"
    r = H.agent({ "-m", "a" }, env2)
    assert.are.equal(1, r.code)
    assert.are.equal("kiro-rt: backend: simulated backend failure\n", r.err)
    local s = assert(H.status(env))
    assert.are.equal(3, #s.pools)
  end)

  -- A plain -m call to a running server is served before Lua starts
  -- (src/bin/agent.c); everything else by lua/kiro/cli.lua. The two must
  -- not differ in anything a user sees.
  it("renders the template on the server for -m prompts, cold and warm; --raw sends the text #jsonl", function()
    local env, log = H.sim_env()
    agent_ok(env, "hi") -- starts the server
    agent_ok(env, "hi") -- a warm call
    local r = H.agent({ "--raw", "-m", "hi" }, env)
    assert.are.equal(0, r.code, r.err)
    local bytes = {}
    for _, e in ipairs(H.sim_events(log)) do
      if e.event == "request" then bytes[#bytes + 1] = e.bytes end
    end
    assert.are.same({ #"User: hi\n\nAssistant: ", #"User: hi\n\nAssistant: ", 2 }, bytes)
  end)

  it("with a server running, a malformed call is still the CLI's usage error, and reaches no server", function()
    local env = H.sim_env()
    agent_ok(env)
    local cases = {
      { { "-m", "" }, "agent: empty prompt" },
      { { "-m" }, "-m needs a value" },
      { { "--message=" }, "agent: empty prompt" },
      { { "-m", "hi", "--mode", "fast" }, "--mode must be auto, daemon or oneshot (got 'fast')" },
      { { "-m", "hi", "--timeout-ms", "0" }, "--timeout-ms needs a whole number from 1 to 2147483647 (got '0')" },
      { { "-m", "hi", "--timeout-ms=+5" }, "(got '+5')" },
      { { "-m", "hi", "--timeout-ms", "99999999999999999999" }, "--timeout-ms needs a whole number" },
      { { "-m", "\255hi" }, "agent: the prompt is not valid UTF-8" },
      { { "-m", "hi", "--bogus" }, "agent: unknown argument '--bogus'" },
      { { "-m", "hi", "--raw=1" }, "agent: unknown argument '1'" },
      { { "-m", "hi" }, "KIRO_USE_DAEMON must be one of", { KIRO_USE_DAEMON = "maybe" } },
      { { "-m", "hi", "--protocol", "acp" }, "KIRO_PROTOCOL must be auto, jsonl or acp", { KIRO_PROTOCOL = "smtp" } },
    }
    for _, c in ipairs(cases) do
      local e = env
      if c[3] then
        e = {}
        for k, v in pairs(env) do e[k] = v end
        for k, v in pairs(c[3]) do e[k] = v end
      end
      local r = H.agent(c[1], e)
      assert.are.equal(2, r.code, table.concat(c[1], " ") .. ": " .. r.err)
      assert.are.equal("", r.out)
      assert.is_truthy(r.err:find(c[2], 1, true), r.err)
    end
    assert.are.equal(1, assert(H.status(env)).requests)
  end)

  it("with a server running: --flag=value, a repeated flag, KIRO_MODEL, KIRO_USE_DAEMON spellings", function()
    local env = H.sim_env()
    agent_ok(env)
    local function with(extra)
      local e = {}
      for k, v in pairs(env) do e[k] = v end
      for k, v in pairs(extra) do e[k] = v end
      return e
    end
    local r = H.agent({ "--message=one", "--model=m1", "--no-stream" }, env)
    assert.are.equal("[m1] You said: one\n", r.out)
    r = H.agent({ "-m", "a", "-m", "b", "--mode", "daemon" }, env)
    assert.are.equal("You said: b\n", r.out)
    r = H.agent({ "-m", "hi" }, with { KIRO_MODEL = "m2" })
    assert.are.equal("[m2] You said: hi\n", r.out)
    r = H.agent({ "-m", "hi", "--model", "m3" }, with { KIRO_MODEL = "m2" })
    assert.are.equal("[m3] You said: hi\n", r.out)
    r = H.agent({ "-m", "hi" }, with { KIRO_USE_DAEMON = "YES" })
    assert.are.equal("You said: hi\n", r.out)
    assert.are.equal(6, assert(H.status(env)).requests)
    -- Off means in-process, server or not.
    r = H.agent({ "-m", "hi" }, with { KIRO_USE_DAEMON = "Off" })
    assert.are.equal("You said: hi\n", r.out)
    r = H.agent({ "-m", "hi", "--mode", "oneshot" }, env)
    assert.are.equal("You said: hi\n", r.out)
    assert.are.equal(6, assert(H.status(env)).requests)
  end)

  it("finds the backend on PATH by name, and sends the server its absolute path", function()
    local bin = H.tmpdir()
    assert(os.execute("ln -s " .. H.q(H.sim) .. " " .. H.q(bin .. "/kiro-cli")))
    assert(os.execute("ln -s " .. H.q(H.sim) .. " " .. H.q(bin .. "/my-sim")))
    local env = H.sim_env { KIRO_CLI_PATH = false, PATH = bin .. ":" .. os.getenv("PATH") }
    agent_ok(env) -- kiro-cli on PATH, starting the server
    agent_ok(env) -- and warm
    env.KIRO_CLI_PATH = "my-sim"
    agent_ok(env)
    agent_ok(env)
    local clis = {}
    for _, p in ipairs(assert(H.status(env)).pools) do clis[#clis + 1] = p.cli end
    table.sort(clis)
    assert.are.same({ bin .. "/kiro-cli", bin .. "/my-sim" }, clis)
  end)

  it("refuses a socket directory that others can write, and says so", function()
    local env = H.sim_env()
    assert(os.execute("mkdir -m 777 " .. H.q(env.XDG_RUNTIME_DIR .. "/kiro-rt")))
    assert(os.execute("chmod 777 " .. H.q(env.XDG_RUNTIME_DIR .. "/kiro-rt")))
    local r = H.agent({ "-m", "hi" }, env)
    -- The request is still served, in-process, with a warning.
    assert.are.equal(0, r.code)
    assert.are.equal("You said: hi\n", r.out)
    assert.matches("writable by others", r.err)
    assert.matches("serving in%-process", r.err)
    r = H.run({ H.kiro_rt, "serve" }, env)
    assert.are.equal(1, r.code)
    assert.matches("kiro%-rt/? is writable by others %(mode 777%)", r.err)
    assert.is_false(H.exists(env.XDG_RUNTIME_DIR .. "/kiro-rt/server.sock"))
  end)

  local root = H.read_file("/proc/self/status"):match("\nUid:%s+0%s") ~= nil
  local it_root = root and it or pending
  it_root("refuses connections from another user (SO_PEERCRED)", function()
    local env = H.sim_env()
    agent_ok(env)
    local s = assert(H.status(env))
    -- Open the way on purpose, so only the peer check stands between.
    local dir = env.XDG_RUNTIME_DIR
    local path = ""
    for part in (dir .. "/kiro-rt"):gmatch("[^/]+") do
      path = path .. "/" .. part
      if path:find("^/tmp/kiro%-spec") then os.execute("chmod o+rx " .. H.q(path)) end
    end
    os.execute("chmod 777 " .. H.q(dir .. "/kiro-rt/server.sock"))
    local r = H.run({ "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                      H.kiro_rt, "status" }, env)
    assert.are_not.equal(0, r.code)
    assert.matches("no server running", r.err)
    assert(H.wait_for(function()
      return H.server_log(env):find("refused a connection from uid 65534") ~= nil
    end, 3000))
    assert.are.equal(s.pid, assert(H.status(env)).pid) -- still serving its user
  end)

  it("recovers from a stale socket left by a SIGKILLed server", function()
    local env = H.sim_env()
    agent_ok(env)
    local old = assert(H.status(env))
    os.execute("kill -KILL " .. old.pid)
    assert(H.wait_for(function() return not H.alive(old.pid) end, 3000))
    assert.is_true(H.exists(env.XDG_RUNTIME_DIR .. "/kiro-rt/server.sock")) -- left behind
    agent_ok(env, "after")
    local new = assert(H.status(env))
    assert.are_not.equal(old.pid, new.pid)
    assert.matches("removed a stale socket", H.server_log(env))
  end)

  it("replaces a server of another version", function()
    local env = H.sim_env()
    local script = H.tmpdir() .. "/old-server.lua"
    -- A stand-in for a kiro-rt of another version: holds the lock and the
    -- socket, answers hello with its version, refuses a request that expects
    -- another (as every server does), and leaves when asked to stop.
    H.write_file(script, [[
      local kiro = require "kiro"
      local cjson = require "cjson"
      local core = kiro.core
      local p = require("kiro.server").paths()
      assert(core.secure_dir(p.dir))
      local lock = assert(core.lock(p.lock))
      local done = kiro.event()
      local srv = {}
      local listener
      function srv:on_event(ev, conn)
        local c = { sock = conn }
        function c:on_event(e, line)
          if e ~= "line" then return end
          local msg = cjson.decode(line)
          if msg.op == "hello" then
            conn:send(cjson.encode { op = "hello", version = "0.0.1-old", proto = 1, pid = core.getpid() } .. "\n")
          elseif msg.op == "request" then
            assert(msg.expect and msg.expect.version == core.version, "a request names the server it expects")
            conn:send(cjson.encode { id = msg.id, error = { code = "version", message = "this is 0.0.1-old" } } .. "\n")
          elseif msg.op == "stop" then
            conn:send(cjson.encode { op = "stopping" } .. "\n")
            listener:close()
            lock:release()
            done:set()
          end
        end
        srv[c] = true
        conn:attach(c)
      end
      listener = assert(core.listen(p.socket, srv))
      io.stdout:write("ready\n"); io.stdout:flush()
      done:wait()
    ]])
    local old_pid, wait_old = H.spawn_bg({ H.kiro_rt, "run", script }, env)
    assert(H.wait_for(function()
      return H.exists(env.XDG_RUNTIME_DIR .. "/kiro-rt/server.sock")
    end, 5000))
    local r = H.agent({ "-m", "hi" }, env)
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("You said: hi\n", r.out)
    assert.matches("the running server is version 0%.0%.1%-old", r.err)
    assert.are.equal(0, (wait_old()))
    local s = assert(H.status(env))
    assert.are_not.equal(old_pid, s.pid)
    assert.are.equal(require("kiro.core").version, s.version)
  end)

  it("a client killed mid-stream leaves the server and its daemon healthy", function()
    local env, log = H.sim_env { KIRO_SIM_CHUNK_DELAY_MS = "150" }
    local pid, wait_exit, dir = H.spawn_bg({ H.kiro_rt, "agent", "-m", "one two three four five six" }, env)
    assert(H.wait_for(function() return (H.read_file(dir .. "/out") or ""):find("You") end, 5000))
    local s = assert(H.status(env))
    os.execute("kill -INT " .. pid)
    assert.are.equal(130, (wait_exit()))
    -- The request was cancelled; the daemon drains the rest and serves again.
    assert(H.wait_for(function()
      local st = H.status(env)
      return st and st.in_flight == 0 and st.pools[1].daemons[1].state == "ready"
    end, 5000))
    local r = H.agent({ "-m", "next" }, env)
    assert.are.equal("You said: next\n", r.out)
    local after = assert(H.status(env))
    assert.are.equal(s.pid, after.pid)
    assert.are.equal(1, #H.pids(H.sim_events(log), { event = "start" })) -- same daemon
  end)

  it("exits after its idle period and removes its socket", function()
    local env = H.sim_env { KIRO_SERVER_IDLE_MS = "300" }
    agent_ok(env)
    local s = assert(H.status(env))
    assert.are.equal(300, s.idle_ms)
    assert(H.wait_for(function() return not H.alive(s.pid) end, 5000), "no idle exit")
    assert.is_false(H.exists(env.XDG_RUNTIME_DIR .. "/kiro-rt/server.sock"))
    assert.matches("stopped %(idle for %d+ ms%)", H.server_log(env))
  end)

  it("status and stop", function()
    local env, log = H.sim_env()
    local r = H.run({ H.kiro_rt, "status" }, env)
    assert.are.equal(1, r.code)
    assert.matches("no server running", r.err)
    agent_ok(env)
    r = H.run({ H.kiro_rt, "serve" }, env) -- a second: told why not, in words
    assert.are.same({ 1, "kiro-rt: serve: a kiro-rt server is already running for you (`kiro-rt status` shows it; "
      .. "`kiro-rt stop` ends it)\n" }, { r.code, r.err })
    r = H.run({ H.kiro_rt, "status" }, env)
    assert.are.equal(0, r.code)
    assert.matches("^server   pid %d+, version [%d.]+, up [%d.]+ s, rss [%d.]+ MiB", r.out)
    assert.matches("\n  daemon pid %d+, ready, served 1, rss [%d.]+ MiB", r.out)
    local s = assert(H.status(env))
    local daemon = s.pools[1].daemons[1].pid
    r = H.run({ H.kiro_rt, "stop" }, env)
    assert.are.equal(0, r.code)
    assert.are.equal(("kiro-rt: server (pid %d) stopped\n"):format(s.pid), r.out)
    assert.is_false(H.alive(s.pid))
    assert(H.wait_for(function() return not H.alive(daemon) end, 3000))
    assert.are.equal(1, H.count(H.sim_events(log), { event = "exit", status = 0 }))
    r = H.run({ H.kiro_rt, "stop" }, env)
    assert.are.equal(0, r.code)
    assert.matches("no server running", r.out)
    -- --idle-ms 0: a server that stays (and says so)
    local _, wait_serve = H.spawn_bg({ H.kiro_rt, "serve", "--idle-ms", "0" }, env)
    assert(H.wait_for(function() return H.status(env) end, 5000), "the server did not start")
    assert.are.equal(0, H.status(env).idle_ms)
    r = H.run({ H.kiro_rt, "status" }, env)
    assert.matches("connections, no idle exit\n", r.out, 1, true)
    assert.are.equal(0, H.run({ H.kiro_rt, "stop" }, env).code)
    local code, _, err = wait_serve()
    assert.are.equal(0, code)
    assert.matches("no idle exit)", err, 1, true)
  end)

  it("stop lets an in-flight request finish", function()
    local env = H.sim_env { KIRO_SIM_LATENCY_MS = "400" }
    agent_ok(env, "warm")
    local _, wait_exit = H.spawn_bg({ H.kiro_rt, "agent", "-m", "in flight" }, env)
    assert(H.wait_for(function() local s = H.status(env); return s and s.in_flight == 1 end, 5000))
    local r = H.run({ H.kiro_rt, "stop" }, env)
    assert.are.equal(0, r.code)
    local code, out, err = wait_exit()
    assert.are.equal(0, code, err)
    assert.are.equal("You said: in flight\n", out)
  end)

  it("SIGTERM, as stop, lets an in-flight request finish; a second signal does not wait", function()
    local env = H.sim_env { KIRO_SIM_LATENCY_MS = "400" }
    agent_ok(env, "warm")
    local pid = H.status(env).pid
    local _, wait_exit = H.spawn_bg({ H.kiro_rt, "agent", "-m", "in flight" }, env)
    assert(H.wait_for(function() local s = H.status(env); return s and s.in_flight == 1 end, 5000))
    assert(os.execute("kill -TERM " .. pid))
    local code, out, err = wait_exit()
    assert.are.equal(0, code, err)
    assert.are.equal("You said: in flight\n", out)
    assert(H.wait_for(function() return not H.alive(pid) end, 5000), "the server did not stop")
    -- Twice: the second signal ends what is under way at once.
    env = H.sim_env { KIRO_SIM_LATENCY_MS = "3000" }
    agent_ok(env, "warm")
    pid = H.status(env).pid
    local _, wait2 = H.spawn_bg({ H.kiro_rt, "agent", "-m", "held a b" }, env)
    assert(H.wait_for(function() local s = H.status(env); return s and s.in_flight == 1 end, 5000))
    assert(os.execute("kill -TERM " .. pid))
    assert(os.execute("kill -TERM " .. pid))
    code = wait2()
    assert.are_not.equal(0, code) -- (waited for, it would have had its reply after 3 s)
    assert(H.wait_for(function() return not H.alive(pid) end, 5000), "the server did not stop")
  end)

  it("a server killed during a request: the client gets an error, the next call works", function()
    local gate = H.tmpdir() .. "/gate"
    local env = H.sim_env { KIRO_SIM_GATE = gate }
    local _, wait_exit, dir = H.spawn_bg({ H.kiro_rt, "agent", "-m", "a b c" }, env)
    assert(H.wait_for(function() return (H.read_file(dir .. "/out") or ""):find("You") end, 5000))
    local s = assert(H.status(env))
    os.execute("kill -KILL " .. s.pid)
    local code, _, err = wait_exit()
    assert.are.equal(1, code)
    assert.matches("^kiro%-rt: closed: the kiro%-rt server went away", err)
    H.write_file(gate, "") -- let the orphaned daemon finish and see EOF
    local r = H.agent({ "-m", "again" }, env)
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("You said: again\n", r.out)
  end)

  it("a server that stops answering mid-request: the client gives up after its timeout", function()
    local gate = H.tmpdir() .. "/gate"
    local env = H.sim_env { KIRO_SIM_GATE = gate }
    local _, wait_exit, dir = H.spawn_bg({ H.kiro_rt, "agent", "-m", "a b c", "--timeout-ms", "1000" }, env)
    assert(H.wait_for(function() return (H.read_file(dir .. "/out") or ""):find("You") end, 5000))
    local s = assert(H.status(env))
    os.execute("kill -STOP " .. s.pid)
    local code, _, err = wait_exit()
    os.execute("kill -CONT " .. s.pid)
    H.write_file(gate, "")
    assert.are.equal(124, code)
    assert.matches("no answer from the kiro%-rt server within 3000 ms", err)
  end)

  it("SIGTERM to `kiro-rt serve` leaves no backend alive", function()
    local env, log = H.sim_env()
    local pid, wait_exit = H.spawn_bg({ H.kiro_rt, "serve" }, env)
    assert(H.wait_for(function() return H.status(env) ~= nil end, 5000))
    agent_ok(env)
    local daemon = H.pids(H.sim_events(log), { event = "start" })[1]
    os.execute("kill -TERM " .. pid)
    assert.are.equal(0, (wait_exit()))
    assert.is_false(H.alive(daemon))
  end)

  it("with no backend at all: a clear error, and no server is started", function()
    local env = H.sim_env { KIRO_CLI_PATH = false, PATH = "/nonexistent" }
    local r = H.agent({ "-m", "hi" }, env)
    assert.are.equal(1, r.code)
    assert.are.equal("kiro-rt: spawn: no backend: kiro-cli is not on PATH and KIRO_CLI_PATH is not set\n", r.err)
    assert.is_false(H.exists(env.XDG_RUNTIME_DIR .. "/kiro-rt"))
  end)

  it("--no-server and KIRO_USE_DAEMON=false need no server", function()
    local env = H.sim_env()
    local r = H.agent({ "-m", "hi", "--no-server" }, env)
    assert.are.equal("You said: hi\n", r.out)
    env.KIRO_USE_DAEMON = "false"
    r = H.agent({ "-m", "hi" }, env)
    assert.are.equal("You said: hi\n", r.out)
    assert.is_nil(H.status(env))
  end)
end)
