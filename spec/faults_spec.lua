-- Every kiro-sim fault, through the Lua API: what the caller sees, and what
-- happens to the daemon.
local H = require "helper"

local daemon_pids = H.daemon_pids
local wait_for = H.wait_kiro

-- kiro-sim with a fault that stays on until the returned file is removed.
local function switchable_fault(knobs, options)
  local fault = H.tmpdir() .. "/fault"
  H.write_file(fault, "")
  knobs.KIRO_SIM_FAULT_FILE = fault
  local kiro, log = H.setup(knobs, options)
  return kiro, log, fault
end

describe("faults", function()
  after_each(H.check_leaks)

  it("crash before the first chunk: answered via the policy (oneshot), daemon restarted", function()
    local kiro, log = H.setup({ KIRO_SIM_FAULT = "crash-before-chunk", KIRO_SIM_FAULT_AFTER = 1 },
                              { restart_backoff_ms = 10 })
    local s0 = kiro.stats()
    assert.are.equal("You said: one", kiro.chat("one"))
    assert.are.equal("You said: two", kiro.chat("two")) -- the daemon crashed on this one
    local s = kiro.stats()
    assert.are.equal(s0.fallbacks + 1, s.fallbacks)
    assert.are.equal((s0.fallbacks_by_reason.crashed or 0) + 1, s.fallbacks_by_reason.crashed)
    local ev = H.sim_events(log)
    assert.are.equal(1, H.count(ev, { mode = "daemon", event = "crash" }))
    assert.are.equal(1, H.count(ev, { mode = "chat", event = "request" }))
    -- A replacement daemon comes up on its own and serves the next request.
    wait_for(kiro, function() return #daemon_pids(log) == 2 end, "the restarted daemon")
    assert.are.equal("You said: three", kiro.chat("three"))
    assert.are.equal(s0.daemon_restarts + 1, kiro.stats().daemon_restarts)
    assert.are.equal(2, H.count(H.sim_events(log), { mode = "daemon", event = "request", n = 1 }))
  end)

  it("crash mid-stream: `crashed`, and the partial text is not repeated", function()
    local kiro, log = H.setup { KIRO_SIM_FAULT = "crash-mid-stream" }
    local fallbacks = kiro.stats().fallbacks
    local got = {}
    local ok, err = pcall(function()
      for c in kiro.stream("a b c d") do got[#got + 1] = c end
    end)
    assert.is_false(ok)
    assert.are.equal("crashed", err.code)
    assert.matches("simulated crash", err.message) -- stderr's tail is quoted
    assert.are.same({ "You" }, got)
    -- No fallback after output reached the caller: nothing was resent.
    assert.are.equal(0, H.count(H.sim_events(log), { mode = "chat" }))
    assert.are.equal(fallbacks, kiro.stats().fallbacks)
  end)

  it("hang: `timeout` within the limit; the rest is drained, and a hung daemon replaced", function()
    local kiro, log, fault = switchable_fault({ KIRO_SIM_FAULT = "hang" },
      { first_chunk_timeout_ms = 300, restart_backoff_ms = 10, drain_ms = 300 })
    local r, msg, code = kiro.chat("are you there?")
    assert.is_nil(r)
    assert.are.equal("timeout", code)
    assert.matches("first_chunk_timeout_ms", msg)
    local hung = daemon_pids(log)[1]
    wait_for(kiro, function() return not H.alive(hung) end, "the hung daemon to be killed")
    os.remove(fault)
    wait_for(kiro, function() return #daemon_pids(log) == 2 end, "a replacement daemon")
    assert.are.equal("You said: again", kiro.chat("again"))
    local served_by = H.sim_events(log)
    assert.are_not.equal(hung, served_by[#served_by].pid)
  end)

  it("a backend that answers errors only on stderr (no reply) times out", function()
    local kiro = H.setup({ KIRO_SIM_FAULT = "silent-error" }, { first_chunk_timeout_ms = 300 })
    local r, _, code = kiro.chat("x")
    assert.is_nil(r)
    assert.are.equal("timeout", code)
  end)

  it("a stream that stalls mid-reply ends with `timeout` (stall_timeout_ms)", function()
    local kiro = H.setup({ KIRO_SIM_CHUNK_DELAY_MS = 2000 }, { stall_timeout_ms = 200 })
    local got = {}
    local ok, err = pcall(function() for c in kiro.stream("a b c") do got[#got + 1] = c end end)
    assert.is_false(ok)
    assert.are.equal("timeout", err.code)
    assert.matches("stall_timeout_ms", err.message)
    assert.are.same({ "You" }, got)
  end)

  it("a slow reply ends with `timeout` at timeout_ms; the daemon drains it and stays", function()
    local kiro, log = H.setup({ KIRO_SIM_LATENCY_MS = 600 }, { pool_max = 1, drain_ms = 5000 })
    local t0 = kiro.core.now()
    local r, msg, code = kiro.chat("slow", { timeout_ms = 200 })
    assert.is_nil(r)
    assert.are.equal("timeout", code)
    assert.matches("%(timeout_ms%)", msg)
    assert.is_true(kiro.core.now() - t0 < 600) -- it did not wait for the reply
    assert.are.equal("You said: next", kiro.chat("next"))
    assert.are.equal(1, #daemon_pids(log)) -- the same daemon, once the late reply was read
  end)

  it("a cancelled reply that never finishes gets its daemon replaced (drain_ms)", function()
    -- (An ACP agent is told to stop; this one ignores it, as real ones may.)
    local gate = H.tmpdir() .. "/gate"
    local kiro, log = H.setup({ KIRO_SIM_GATE = gate, KIRO_SIM_ACP_IGNORE_CANCEL = 1 },
                              { drain_ms = 200, restart_backoff_ms = 10 })
    for _ in kiro.stream("a b c") do break end
    local stuck = daemon_pids(log)[1]
    wait_for(kiro, function() return not H.alive(stuck) end, "the undrainable daemon to be stopped")
    wait_for(kiro, function() return #daemon_pids(log) == 2 end, "a replacement daemon")
    H.write_file(gate, "")
    assert.are.equal("You said: next", kiro.chat("next"))
  end)

  it("non-JSON noise is skipped", function()
    local kiro = H.setup { KIRO_SIM_FAULT = "noise" }
    assert.are.equal("You said: through the noise", kiro.chat("through the noise"))
    local parts = {}
    for c in kiro.stream("x y") do parts[#parts + 1] = c end
    assert.are.equal("You said: x y", table.concat(parts))
  end)

  it("an overlong line is a `protocol` error and the daemon is replaced", function()
    local kiro, log, fault = switchable_fault(
      { KIRO_SIM_FAULT = "overlong", KIRO_SIM_OVERLONG_BYTES = 2 * 1024 * 1024 },
      { max_line_bytes = 1024 * 1024, restart_backoff_ms = 10 })
    local r, msg, code = kiro.chat("x")
    assert.is_nil(r)
    assert.are.equal("protocol", code)
    assert.matches("max_line_bytes", msg)
    local first = daemon_pids(log)[1]
    wait_for(kiro, function() return not H.alive(first) end, "the daemon to be stopped")
    os.remove(fault)
    wait_for(kiro, function() return #daemon_pids(log) == 2 end, "a replacement daemon")
    assert.are.equal("You said: ok", kiro.chat("ok"))
    local ev = H.sim_events(log)
    assert.are.equal(daemon_pids(log)[2], ev[#ev].pid) -- served by the replacement
  end)

  it("an {\"error\": ...} reply is a `backend` error and the daemon stays", function()
    local kiro, log, fault = switchable_fault { KIRO_SIM_FAULT = "error" }
    local r, msg, code = kiro.chat("x")
    assert.is_nil(r)
    assert.are.equal("backend", code)
    assert.are.equal("simulated backend failure", msg)
    os.remove(fault)
    assert.are.equal("You said: y", kiro.chat("y"))
    assert.are.equal(1, #daemon_pids(log))
  end)

  it("10 MB of stderr does not deadlock", function()
    local kiro = H.setup { KIRO_SIM_FAULT = "stderr-flood" }
    assert.are.equal("You said: loud", kiro.chat("loud"))
    local parts = {}
    for c in kiro.stream("louder still") do parts[#parts + 1] = c end
    assert.are.equal("You said: louder still", table.concat(parts))
  end)

  it("a CLI without a daemon mode (no `daemon`, no `acp`): every request answered by oneshot", function()
    local kiro, log = H.setup({ KIRO_SIM_FAULT = "no-daemon,no-acp" }, { log = "error" })
    local before = kiro.stats().fallbacks_by_reason.spawn or 0
    for i = 1, 3 do assert.are.equal("You said: q" .. i, kiro.chat("q" .. i)) end
    assert.are.equal(before + 3, kiro.stats().fallbacks_by_reason.spawn)
    assert.are.equal(3, H.count(H.sim_events(log), { mode = "chat", event = "request" }))
  end)

  it("a daemon that dies at start-up: backoff, intensity limit, oneshot only, recovery", function()
    local kiro, log, fault = switchable_fault({ KIRO_SIM_FAULT = "die-at-start" },
      { restart_backoff_ms = 10, restart_max = 3, restart_window_ms = 60000, cooldown_ms = 1500,
        log = "error" })
    assert.are.equal("You said: first", kiro.chat("first"))
    local function pool() return kiro.stats().pools[1] end
    wait_for(kiro, function() return pool().state == "cooldown" end, "the cool-down")
    -- Three restarts were allowed; the fourth failure paused daemon mode.
    assert.are.equal(4, #daemon_pids(log))
    assert.matches("simulated start%-up failure", pool().last_error)
    -- While paused, requests go straight to oneshot and no daemon is started.
    assert.are.equal("You said: during", kiro.chat("during"))
    assert.are.equal(4, #daemon_pids(log))
    -- The backend is fixed; after the cool-down daemon mode comes back.
    os.remove(fault)
    wait_for(kiro, function() return pool().state == "ok" and pool().live == 1 end, "recovery")
    local before = H.count(H.sim_events(log), { mode = "daemon", event = "request" })
    assert.are.equal("You said: after", kiro.chat("after"))
    assert.are.equal(before + 1, H.count(H.sim_events(log), { mode = "daemon", event = "request" }))
  end)
end)
