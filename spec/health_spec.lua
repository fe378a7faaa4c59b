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
    kiro.spawn(function() reply = kiro.chat("please") end)
    kiro.spawn(function()
      wait_for(kiro, function() return H.count(H.sim_events(log), { event = "request" }) == 1 end, "the request")
      os.execute("kill -STOP " .. daemon_pids(log)[1])
    end)
    kiro.run()
    assert.are.equal("You said: please", reply)
    assert.are.equal(fb + 1, kiro.stats().fallbacks)
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
