-- The daemon pool: warm minimum, growth to pool_max, queueing, shrinking,
-- backpressure, and one pool per backend.
local H = require "helper"

local daemon_pids = H.daemon_pids
local concurrently = H.concurrently

describe("pool", function()
  after_each(H.check_leaks)

  it("keeps a warm minimum of daemons", function()
    local kiro, log = H.setup({}, { pool_min = 2 })
    assert(kiro.chat("x"))
    assert(H.wait_for(function() return #daemon_pids(log) == 2 end, 5000, kiro))
    assert.are.equal(2, kiro.stats().pools[1].live)
  end)

  it("grows on demand up to pool_max and queues the rest", function()
    local kiro, log = H.setup({ KIRO_SIM_LATENCY_MS = 150 }, { pool_min = 1, pool_max = 2 })
    local results = concurrently(kiro, 5, function(i) return kiro.chat("q" .. i) end)
    for i = 1, 5 do assert.are.equal("You said: q" .. i, results[i][1]) end
    assert.are.equal(2, #daemon_pids(log))
    assert.are.equal(5, H.count(H.sim_events(log), { mode = "daemon", event = "request" }))
  end)

  it("serves requests in parallel across daemons", function()
    local kiro, log = H.setup({ KIRO_SIM_LATENCY_MS = 100 }, { pool_max = 4 })
    concurrently(kiro, 4, function(i) return kiro.chat("p" .. i) end)
    -- Four daemons, each served exactly one of the four at once.
    local pids = daemon_pids(log)
    assert.are.equal(4, #pids)
    for _, pid in ipairs(pids) do
      assert.are.equal(1, H.count(H.sim_events(log), { pid = pid, event = "request" }))
    end
  end)

  it("shrinks back to the minimum when idle; stopped daemons exit cleanly", function()
    local kiro, log = H.setup({ KIRO_SIM_LATENCY_MS = 100 }, { pool_min = 1, pool_max = 3, pool_idle_ms = 100 })
    concurrently(kiro, 3, function(i) return kiro.chat("s" .. i) end)
    assert.are.equal(3, #daemon_pids(log))
    assert(H.wait_for(function() return kiro.stats().pools[1].live == 1 end, 5000, kiro), "no shrink")
    assert(H.wait_for(function()
      return H.count(H.sim_events(log), { event = "exit", status = 0 }) == 2
    end, 5000, kiro))
    assert.are.equal("You said: still here", kiro.chat("still here"))
    assert.are.equal(3, #daemon_pids(log)) -- served by the warm one
  end)

  it("fails at once with `overloaded` past queue_max", function()
    local kiro = H.setup({ KIRO_SIM_LATENCY_MS = 300 }, { pool_max = 1, queue_max = 1 })
    local results = concurrently(kiro, 3, function(i) return kiro.chat("o" .. i) end)
    local ok, overloaded = 0, 0
    for i = 1, 3 do
      if results[i][1] then ok = ok + 1 elseif results[i][3] == "overloaded" then overloaded = overloaded + 1 end
    end
    assert.are.equal(2, ok)
    assert.are.equal(1, overloaded)
  end)

  it("keeps one pool per backend (cli, model, env)", function()
    local kiro = H.setup()
    assert.are.equal("You said: a", kiro.chat("a"))
    assert.are.equal("[m] You said: a", kiro.chat("a", { model = "m" }))
    local s = kiro.stats()
    assert.are.equal(2, #s.pools)
    local models = {}
    for _, p in ipairs(s.pools) do models[#models + 1] = p.model or "(default)" end
    table.sort(models)
    assert.are.same({ "(default)", "m" }, models)
  end)

  it("a timeout while queued ends the request and leaves the queue sound", function()
    local kiro = H.setup({ KIRO_SIM_LATENCY_MS = 300 }, { pool_max = 1 })
    local results = concurrently(kiro, 2, function(i)
      return kiro.chat("t" .. i, { timeout_ms = i == 2 and 100 or 5000 })
    end)
    assert.are.equal("You said: t1", results[1][1])
    assert.are.equal("timeout", results[2][3])
    assert.are.equal("You said: t3", kiro.chat("t3"))
  end)

  it("a queued request has no stall clock, even after a pause and resume", function()
    -- One daemon streams the first reply a chunk every 100 ms (well within
    -- the stall bound); the second waits in the queue three times as long
    -- as stall_timeout_ms, paused and resumed meanwhile (flow control).
    local kiro = H.setup({ KIRO_SIM_CHUNK_DELAY_MS = 100 },
      { pool_min = 1, pool_max = 1, stall_timeout_ms = 300 })
    assert(kiro.chat("warm"))
    local first = kiro.call("a b c d e f g h i")
    local second = kiro.call("queued", { stream = false })
    second:pause(true)
    second:pause(false)
    local text = {}
    for chunk in function() return first:next() end do text[#text + 1] = chunk end
    assert.are.equal("You said: a b c d e f g h i", table.concat(text))
    local reply, msg, code = second:next()
    assert.are.equal("You said: queued", reply, tostring(code) .. ": " .. tostring(msg))
  end)
end)
