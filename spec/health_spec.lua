-- Health checks: passive (process state) and active probes (opt-in).
local H = require "helper"

local daemon_pids = H.daemon_pids
local wait_for = H.wait_kiro

describe("health checks", function()
  after_each(function()
    -- Nothing may stay stopped: a SIGSTOPped child would never exit.
    for _, pid in ipairs(H.children()) do os.execute("kill -CONT " .. pid .. " 2>/dev/null") end
    H.check_leaks()
  end)

  it("a SIGSTOPped idle daemon is noticed and replaced", function()
    local kiro, log = H.setup({}, { health_interval_ms = 50, restart_backoff_ms = 10 })
    local f0 = kiro.stats().health_failures
    assert(kiro.chat("x"))
    local stopped = daemon_pids(log)[1]
    os.execute("kill -STOP " .. stopped)
    wait_for(kiro, function() return #daemon_pids(log) == 2 end, "a replacement daemon")
    wait_for(kiro, function() return not H.alive(stopped) end, "the stopped daemon to be killed")
    assert.are.equal(f0 + 1, kiro.stats().health_failures)
    assert.are.equal("You said: y", kiro.chat("y"))
  end)

  it("a daemon stopped mid-request: the request is served another way", function()
    local kiro, log = H.setup({ KIRO_SIM_LATENCY_MS = 400 }, { health_interval_ms = 50, log = "error" })
    local fb = kiro.stats().fallbacks
    local reply
    local why
    kiro.spawn(function() local m, c; reply, m, c = kiro.chat("please"); why = tostring(c) .. ": " .. tostring(m) end)
    kiro.spawn(function()
      wait_for(kiro, function() return H.count(H.sim_events(log), { event = "request" }) == 1 end, "the request")
      os.execute("kill -STOP " .. daemon_pids(log)[1])
    end)
    kiro.run()
    assert.are.equal("You said: please", reply, why)
    assert.are.equal(fb + 1, kiro.stats().fallbacks)
  end)

  -- A tracer's stop ('t') is not a SIGSTOP: strace or gdb attached to a
  -- backend must not get it killed (nor LeakSanitizer's look at an
  -- instrumented backend as it exits, which once failed a request here).
  it("a daemon or a oneshot child a tracer holds is left alone", function()
    local kiro, log = H.setup({ KIRO_SIM_LATENCY_MS = 700 }, { health_interval_ms = 50 })
    local f0 = kiro.stats().health_failures
    local function hold(pid)
      local tracer, wait_exit, dir = H.spawn_bg({ H.build .. "/kiro-test-peer", "trace", tostring(pid), "400" }, {})
      assert(tracer)
      H.wait_kiro(kiro, function()
        return (H.read_file(dir .. "/out") or ""):find("ready") or (H.read_file(dir .. "/rc") or ""):find("%d")
      end, "the tracer")
      if not (H.read_file(dir .. "/out") or ""):find("ready") then
        return false, (select(3, wait_exit()))
      end
      assert.are.equal("t", H.proc_state(pid))
      -- The loop runs (and health checks with it) while the tracer holds it.
      H.wait_kiro(kiro, function() return (H.read_file(dir .. "/rc") or ""):find("%d") end, "the tracer to let go")
      assert.are.equal(0, (wait_exit()))
      return true
    end
    local replies, held = {}, {}
    kiro.spawn(function() replies.daemon = kiro.chat("daemon") end)
    kiro.spawn(function()
      H.wait_kiro(kiro, function() return #daemon_pids(log) == 1 end, "the daemon")
      held.daemon = { hold(daemon_pids(log)[1]) }
    end)
    kiro.run()
    if not held.daemon[1] then return pending("ptrace is not permitted here: " .. tostring(held.daemon[2])) end
    kiro.spawn(function() replies.oneshot = kiro.chat("oneshot", { mode = "oneshot" }) end)
    kiro.spawn(function()
      local function oneshots() return H.pids(H.sim_events(log), { event = "start", mode = "chat" }) end
      H.wait_kiro(kiro, function() return #oneshots() == 1 end, "the oneshot child")
      held.oneshot = { hold(oneshots()[1]) }
    end)
    kiro.run()
    assert.are.equal("You said: daemon", replies.daemon)
    assert.are.equal("You said: oneshot", replies.oneshot)
    assert.are.equal(f0, kiro.stats().health_failures)
    assert.are.equal(1, #daemon_pids(log))
  end)

  it("an opt-in probe finds a daemon that stopped answering", function()
    local kiro, log = H.setup({ KIRO_SIM_FAULT = "hang", KIRO_SIM_FAULT_AFTER = 1 },
      { health_interval_ms = 50, probe_interval_ms = 100, probe_timeout_ms = 200,
        restart_backoff_ms = 10, log = "error" })
    local p0 = kiro.stats().probe_failures
    assert(kiro.chat("first")) -- served; the next request (a probe) hangs
    local hung = daemon_pids(log)[1]
    wait_for(kiro, function() return #daemon_pids(log) == 2 end, "a replacement daemon")
    assert.is_false(H.alive(hung))
    assert.is_true(kiro.stats().probe_failures > p0)
    assert.are.equal(1, H.count(H.sim_events(log), { event = "hang" }))
  end)

  it("probes keep a healthy daemon, and are not counted as requests", function()
    local kiro, log = H.setup({}, { health_interval_ms = 20, probe_interval_ms = 40, probe_prompt = "are you ok" })
    local s0 = kiro.stats()
    assert(kiro.chat("x"))
    wait_for(kiro, function()
      return H.count(H.sim_events(log), { event = "request", bytes = #"are you ok" }) >= 3
    end, "three probes")
    local s = kiro.stats()
    assert.are.equal(1, #daemon_pids(log))
    assert.are.equal(s0.requests + 1, s.requests)
    assert.are.equal(s0.probe_failures, s.probe_failures)
    assert.is_true(s.probes >= s0.probes + 3)
  end)

  it("probes are off by default", function()
    local kiro, log = H.setup({}, { health_interval_ms = 20 })
    assert.are.equal(0, kiro.core.config().probe_interval_ms)
    assert(kiro.chat("x"))
    kiro.sleep(100)
    assert.are.equal(1, H.count(H.sim_events(log), { event = "request" }))
  end)
end)
