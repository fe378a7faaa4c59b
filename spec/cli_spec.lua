-- kiro-rt's command line (SPEC sections 3 and 4), run as a user would.
local H = require "helper"

local function lines_matching(text, pat)
  local n = 0
  for line in (text or ""):gmatch("[^\n]+") do if line:find(pat) then n = n + 1 end end
  return n
end

local spawn_bg = H.spawn_bg

describe("kiro-rt agent", function()
  after_each(H.check_sims_gone)

  it("prints the predicted reply, streamed from the daemon", function()
    -- In-process: the provider's log is on our stderr.
    local env = H.sim_env { KIRO_LOG = "kiro.provider=debug" }
    local r = H.agent({ "-m", "Hello", "--no-server" }, env)
    assert.are.equal(0, r.code)
    assert.are.equal("You said: Hello\n", r.out)
    assert.are.equal(1, lines_matching(r.err, "Query sent to daemon"))
    assert.are.equal(1, lines_matching(r.err, "Received response in %d+ms"))
    assert.are.equal(0, lines_matching(r.err, "oneshot"))
    -- Through the server (the default): the same reply; the log is the server's.
    r = H.agent({ "-m", "Hello" }, env)
    assert.are.equal(0, r.code)
    assert.are.equal("You said: Hello\n", r.out)
    assert.are.equal(1, lines_matching(H.server_log(env), "Query sent to daemon"))
  end)

  it("gives the same text with --no-stream, asked for whole #jsonl", function()
    local env, log = H.sim_env()
    local r = H.agent({ "-m", "Hello", "--no-stream" }, env)
    assert.are.equal(0, r.code)
    assert.are.equal("You said: Hello\n", r.out)
    assert.are.equal(1, H.count(H.sim_events(log), { mode = "daemon", event = "request", stream = 0 }))
  end)

  it("uses oneshot for every call with KIRO_USE_DAEMON=false", function()
    for _, off in ipairs { "false", "0", "no", "OFF" } do
      local env, log = H.sim_env { KIRO_USE_DAEMON = off, KIRO_LOG = "debug" }
      local r = H.agent({ "-m", "Hello" }, env)
      assert.are.equal(0, r.code)
      assert.are.equal("You said: Hello\n", r.out)
      assert.are.equal(1, lines_matching(r.err, "Running oneshot"))
      assert.are.equal(0, lines_matching(r.err, "Query sent to daemon"))
      assert.are.equal(0, H.count(H.sim_events(log), { mode = "daemon" }))
    end
  end)

  it("reads the prompt from stdin without -m", function()
    local r = H.agent({}, H.sim_env(), "from stdin\n")
    assert.are.equal(0, r.code)
    assert.are.equal("You said: from stdin\n", r.out)
  end)

  it("passes --model and KIRO_MODEL to the backend", function()
    assert.are.equal("[m1] You said: hi\n", H.agent({ "-m", "hi", "--model", "m1" }, H.sim_env()).out)
    assert.are.equal("[m2] You said: hi\n", H.agent({ "-m", "hi" }, H.sim_env { KIRO_MODEL = "m2" }).out)
  end)

  it("answers every request by oneshot when the CLI has no daemon mode, with the warn line", function()
    local warn = "^%[WARN kiro.provider%] Failed to start daemon, falling back to oneshot: .*unrecognized subcommand"
    local env, log = H.sim_env { KIRO_SIM_FAULT = "no-daemon,no-acp" } -- neither long-lived protocol
    local r = H.agent({ "-m", "old cli", "--no-server" }, env)
    assert.are.equal(0, r.code)
    assert.are.equal("You said: old cli\n", r.out)
    assert.are.equal(1, lines_matching(r.err, warn))
    assert.are.equal(1, H.count(H.sim_events(log), { mode = "chat", event = "request" }))
    r = H.agent({ "-m", "old cli" }, env)
    assert.are.equal(0, r.code)
    assert.are.equal("You said: old cli\n", r.out)
    assert.are.equal(1, lines_matching(H.server_log(env), warn))
    assert.are.equal(2, H.count(H.sim_events(log), { mode = "chat", event = "request" }))
  end)

  it("exits 124 on a timeout and 1 on a backend failure, with a one-line reason", function()
    local r = H.agent({ "-m", "x", "--timeout-ms", "300" }, H.sim_env { KIRO_SIM_FAULT = "hang" })
    assert.are.equal(124, r.code)
    assert.matches("^kiro%-rt: timeout: [^\n]*\n$", r.err)
    r = H.agent({ "-m", "x" }, H.sim_env { KIRO_SIM_FAULT = "error" })
    assert.are.equal(1, r.code)
    assert.are.equal("kiro-rt: backend: simulated backend failure\n", r.err)
    r = H.agent({ "-m", "x" }, H.sim_env { KIRO_CLI_PATH = "/nonexistent/kiro-cli", KIRO_LOG = "error" })
    assert.are.equal(1, r.code)
    assert.matches("^kiro%-rt: spawn: cannot start /nonexistent/kiro%-cli", r.err)
  end)

  it("rejects bad usage with exit status 2 and a clear message", function()
    local env = H.sim_env { XDG_CONFIG_HOME = H.tmpdir() } -- (no configuration file of the user's)
    local script = H.tmpdir() .. "/ok.lua"
    H.write_file(script, "return 0\n")
    local cases = {
      { { "agent", "-m" }, "needs a value" },
      { { "agent", "--mode", "turbo", "-m", "x" }, "auto, daemon or oneshot" },
      { { "agent", "--timeout-ms", "soon", "-m", "x" }, "whole number from 1 to 2147483647" },
      -- Decimal only, within range (issue 7: these were accepted, or exited 124 at once).
      { { "agent", "--timeout-ms", "0x10", "-m", "x" }, "got '0x10'" },
      { { "agent", "--timeout-ms", "9223372036854775000", "-m", "x" }, "from 1 to 2147483647" },
      { { "agent", "--timeout-ms", "-5", "-m", "x" }, "got '%-5'" },
      { { "agent", "--timeout-ms", "1e3", "-m", "x" }, "got '1e3'" },
      { { "agent", "--timeout-ms", " 5", "-m", "x" }, "got ' 5'" },
      { { "agent", "--timeout-ms", "0", "-m", "x" }, "from 1 to" },
      { { "serve", "--idle-ms", "10.5" }, "%-%-idle%-ms needs a whole number from 0 to 2147483647" },
      { { "serve", "--pool-max", "0" }, "%-%-pool%-max needs a whole number from 1 to 1024" },
      { { "serve", "--pool-min", "+1" }, "got '%+1'" },
      { { "serve", "--metrics-listen", "99999" }, "PORT from 0 to 65535" },
      { { "serve", "--metrics-listen", "localhost:0x50" }, "PORT from 0 to 65535" },
      { { "serve", "--max-request-bytes", "12" }, "from 1024 to" },
      { { "agent", "--colour", "-m", "x" }, "unknown argument '%-%-colour'" },
      { { "agent", "-m", "" }, "empty prompt" },
      { { "frobnicate" }, "unknown command 'frobnicate'" },
      { { "run" }, "which script" },
      { { "run", "/nonexistent.lua" }, "cannot open" },
      { { "run", "--watch", script }, "%-%-watch needs a configuration file" },
      { { "bot", "--watch" }, "%-%-watch needs a configuration file" },
      { { "bot" }, "no configuration file %(none named with %-%-config" },
      { { "bot", "--stop-grace-ms" }, "whole number" },
    }
    for _, c in ipairs(cases) do
      local argv = { H.kiro_rt }
      for _, a in ipairs(c[1]) do argv[#argv + 1] = a end
      local r = H.run(argv, env)
      assert.are.equal(2, r.code, table.concat(c[1], " "))
      assert.matches(c[2], r.err)
    end
    local r = H.agent({ "-m", "x" }, H.sim_env { KIRO_USE_DAEMON = "maybe" })
    assert.are.equal(2, r.code)
    assert.matches("KIRO_USE_DAEMON must be one of", r.err)
    r = H.run({ H.kiro_rt, "serve" }, H.sim_env { KIRO_SERVER_IDLE_MS = "0x10" })
    assert.are.equal(2, r.code)
    assert.matches("KIRO_SERVER_IDLE_MS needs a whole number from 0 to 2147483647 %(got '0x10'%)", r.err)
    assert.are.equal(2, H.run({ H.kiro_rt }, env).code)
  end)

  it("has --help and --version", function()
    local r = H.run({ H.kiro_rt, "--help" }, {})
    assert.are.equal(0, r.code)
    assert.matches("kiro%-rt agent %-m TEXT", r.out)
    assert.matches("KIRO_USE_DAEMON", r.out)
    r = H.run({ H.kiro_rt, "agent", "--help" }, {})
    assert.are.equal(0, r.code)
    assert.matches("%-%-no%-stream", r.out)
    r = H.run({ H.kiro_rt, "--version" }, {})
    assert.matches("^kiro%-rt %d+%.%d+%.%d+\n$", r.out)
    r = H.run({ H.sim, "--help" }, {})
    for _, knob in ipairs { "STARTUP_MS", "LATENCY_MS", "CHUNK_DELAY_MS", "crash%-before%-chunk",
                            "crash%-mid%-stream", "hang", "noise", "overlong", "stderr%-flood",
                            "error", "no%-daemon", "die%-at%-start" } do
      assert.matches(knob, r.out)
    end
  end)

  it("streams to stdout: the first chunk is out before the backend writes the last", function()
    local env = H.sim_env()
    local gate = H.tmpdir() .. "/gate"
    env.KIRO_SIM_GATE = gate
    local parts = {}
    for k, v in pairs(env) do parts[#parts + 1] = H.q(k .. "=" .. v) end
    local p = io.popen("env " .. table.concat(parts, " ") .. " " .. H.q(H.kiro_rt)
                       .. " agent -m 'alpha beta gamma' 2>/dev/null")
    -- Blocks until "You" is on the pipe; the backend cannot finish before
    -- the gate exists, so the chunk was flushed mid-reply.
    assert.are.equal("You", p:read(3))
    assert.is_nil(H.read_file(gate))
    H.write_file(gate, "")
    assert.are.equal(" said: alpha beta gamma\n", p:read("a"))
    assert.is_true(p:close())
  end)

  for _, sig in ipairs { { "TERM", 143 }, { "INT", 130 } } do
    it("leaves no backend alive after SIG" .. sig[1] .. " (in-process)", function()
      local env, log = H.sim_env()
      env.KIRO_SIM_GATE = H.tmpdir() .. "/never"
      local pid, wait_exit = spawn_bg({ H.kiro_rt, "agent", "--no-server", "-m", "a b c" }, env)
      assert(H.wait_for(function() return H.count(H.sim_events(log), { event = "request" }) == 1 end, 5000))
      local daemon = H.pids(H.sim_events(log), { mode = "daemon" })[1]
      assert.is_true(H.alive(daemon))
      os.execute(("kill -%s %d"):format(sig[1], pid))
      local code, out = wait_exit()
      assert.are.equal(sig[2], code)
      assert.are.equal("You said: a b\n", out) -- all the backend sent before its gate
      assert.is_false(H.alive(daemon))
    end)
  end

  it("its daemons exit on stdin EOF after kiro-rt is SIGKILLed", function()
    local env, log = H.sim_env()
    local script = H.tmpdir() .. "/warm.lua"
    H.write_file(script, [[
      local kiro = require "kiro"
      kiro.configure { pool_min = 2 }
      assert(kiro.chat("warm"))
      kiro.sleep(60000)
    ]])
    local pid, wait_exit = spawn_bg({ H.kiro_rt, "run", script }, env)
    assert(H.wait_for(function() return #H.pids(H.sim_events(log), { event = "start" }) == 2 end, 5000))
    local daemons = H.pids(H.sim_events(log), { event = "start" })
    os.execute("kill -KILL " .. pid)
    assert.are.equal(137, (wait_exit()))
    assert(H.wait_for(function()
      return not H.alive(daemons[1]) and not H.alive(daemons[2])
    end, 5000), "daemons outlived their parent")
    assert.are.equal(2, H.count(H.sim_events(log), { event = "exit", status = 0 }))
  end)
end)

describe("kiro-rt run", function()
  after_each(H.check_sims_gone)

  it("runs a script as a kiro task, with arguments and exit status", function()
    local script = H.tmpdir() .. "/s.lua"
    H.write_file(script, [[
      local kiro = require "kiro"
      local replies = {}
      kiro.spawn(function() local r = kiro.chat(arg[1]); replies[#replies + 1] = r end)
      local r = kiro.chat(arg[2])
      replies[#replies + 1] = r
      while #replies < 2 do kiro.sleep(5) end
      table.sort(replies)
      print(table.concat(replies, "|"))
      return tonumber(arg[3])
    ]])
    local r = H.run({ H.kiro_rt, "run", script, "one", "two", "7" }, H.sim_env())
    assert.are.equal(7, r.code)
    assert.are.equal("You said: one|You said: two\n", r.out)
  end)

  it("reports a script error with exit status 1", function()
    local script = H.tmpdir() .. "/bad.lua"
    H.write_file(script, "error('script failed on purpose')")
    local r = H.run({ H.kiro_rt, "run", script }, H.sim_env())
    assert.are.equal(1, r.code)
    assert.matches("kiro%-rt: run: .*script failed on purpose", r.err)
  end)

  it("a task that fails is logged with its traceback, the others finish, and the exit status is 1", function()
    local script = H.tmpdir() .. "/tasks.lua"
    H.write_file(script, [[
      local kiro = require "kiro"
      kiro.spawn(function() kiro.sleep(5); error("one task failed") end)
      kiro.spawn(function() kiro.sleep(30); print(kiro.chat("the other finished")) end)
    ]])
    local r = H.run({ H.kiro_rt, "run", script }, H.sim_env())
    assert.are.equal(1, r.code)
    assert.are.equal("You said: the other finished\n", r.out)
    assert.matches("%[ERROR kiro.tasks%] a task failed: .*one task failed\nstack traceback:", r.err)
  end)

  it("restarts a failing daemon with doubling backoff, then pauses daemon mode", function()
    local script = H.tmpdir() .. "/restarts.lua"
    H.write_file(script, [[
      local kiro = require "kiro"
      kiro.configure { restart_backoff_ms = 10, restart_max = 4, cooldown_ms = 60000 }
      assert(kiro.chat("x"))
      while kiro.stats().pools[1].state ~= "cooldown" do kiro.sleep(5) end
    ]])
    local r = H.run({ H.kiro_rt, "run", script },
      H.sim_env { KIRO_SIM_FAULT = "die-at-start", KIRO_LOG = "kiro.provider=info" })
    assert.are.equal(0, r.code, r.err)
    local delays = {}
    for ms in r.err:gmatch("restarting daemon for [^\n]* in (%d+) ms") do delays[#delays + 1] = tonumber(ms) end
    assert.are.same({ 10, 20, 40, 80 }, delays)
    assert.matches("failed 5 times within 60000 ms; daemon mode paused for 60000 ms", r.err)
  end)

  it("kiro-sim frees what it allocates, in every mode and fault (LeakSanitizer)", function()
    if not H.sanitized then
      pending("LeakSanitizer runs in the ASan build (make asan)")
      return
    end
    local req = '{"prompt":"a b c","stream":false}\n{"prompt":"d e","stream":true}\n'
    local runs = {
      { "daemon", {} }, { "chat", {} }, { "daemon", { KIRO_SIM_FAULT = "error" } },
      { "chat", { KIRO_SIM_FAULT = "error", KIRO_SIM_FAULT_MODE = "chat" } },
      { "daemon", { KIRO_SIM_FAULT = "noise,double-reply,always-stream" } },
      { "daemon", { KIRO_SIM_FAULT = "wrong-type" } },
      { "daemon", { KIRO_SIM_FAULT = "overlong", KIRO_SIM_OVERLONG_BYTES = "100" } },
      { "daemon", { KIRO_SIM_DONE = "separate", KIRO_SIM_FAULT = "silent-error" } },
    }
    for _, run in ipairs(runs) do
      local env = { ASAN_OPTIONS = "detect_leaks=1:exitcode=99", LSAN_OPTIONS = "exitcode=98" }
      for k, v in pairs(run[2]) do env[k] = v end
      local r = H.run({ H.sim, run[1] }, env, run[1] == "daemon" and req or "hello")
      assert.is_nil(r.err:find("LeakSanitizer", 1, true), r.err)
      assert.is_true(r.code ~= 98 and r.code ~= 99, run[1] .. " " .. tostring(run[2].KIRO_SIM_FAULT))
    end
  end)

  it("kiro.shutdown ends a script whose tasks still wait on what nothing is left to set", function()
    -- (they used to keep kiro.run turning, at full CPU, for ever: timeout ends that)
    local dir = H.tmpdir()
    H.write_file(dir .. "/wait.lua", [[
local kiro = require "kiro"
local ev = kiro.event()
kiro.spawn(function() ev:wait(); print("never") end)
kiro.spawn(function() kiro.sleep(50); kiro.shutdown() end)
]])
    local r = H.run({ "timeout", "-k", "1", "10", H.kiro_rt, "run", dir .. "/wait.lua" }, H.sim_env())
    assert.are.same({ 0, "", "" }, { r.code, r.out, r.err })
  end)

  it("stops a running script and its backends on SIGTERM", function()
    local env, log = H.sim_env()
    local script = H.tmpdir() .. "/loop.lua"
    H.write_file(script, [[
      local kiro = require "kiro"
      assert(kiro.chat("warm"))
      while true do kiro.sleep(50) end
    ]])
    local pid, wait_exit = spawn_bg({ H.kiro_rt, "run", script }, env)
    assert(H.wait_for(function() return H.count(H.sim_events(log), { event = "request" }) == 1 end, 5000))
    local daemon = H.pids(H.sim_events(log), { event = "start" })[1]
    os.execute("kill -TERM " .. pid)
    assert.are.equal(143, (wait_exit()))
    assert.is_false(H.alive(daemon))
  end)
end)
