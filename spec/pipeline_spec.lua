-- Pipelining (opt-in pipeline_depth): several requests on one daemon, whose
-- replies come back in order and never cross.
local H = require "helper"

local concurrently = H.concurrently

describe("pipelining", function()
  after_each(H.check_leaks)

  it("is off by default: one request per daemon at a time", function()
    local kiro = H.setup()
    assert.are.equal(1, kiro.core.config().pipeline_depth)
  end)

  it("sends several requests to one daemon; replies never cross", function()
    local kiro, log = H.setup({ KIRO_SIM_LATENCY_MS = 20 }, { pool_max = 1, pipeline_depth = 4 })
    local seen_in_flight
    kiro.spawn(function()
      kiro.sleep(0) -- after the eight below have been submitted
      seen_in_flight = kiro.stats().pools[1].daemons[1].in_flight
    end)
    local results = concurrently(kiro, 8, function(i) return kiro.chat("request number " .. i) end)
    for i = 1, 8 do assert.are.equal("You said: request number " .. i, results[i][1]) end
    assert.are.equal(4, seen_in_flight)
    assert.are.equal(1, #H.pids(H.sim_events(log), { event = "start" }))
  end)

  it("streams pipelined in order, each with its own chunks", function()
    local kiro = H.setup({ KIRO_SIM_CHUNK_DELAY_MS = 5 }, { pool_max = 1, pipeline_depth = 3 })
    local results = concurrently(kiro, 3, function(i)
      local t = {}
      for c in kiro.stream(("s%d a b"):format(i)) do t[#t + 1] = c end
      return t
    end)
    for i = 1, 3 do assert.are.same({ "You", " said:", " s" .. i, " a", " b" }, results[i][1]) end
  end)

  it("a crash mid-pipeline: every request it held goes to the policy (oneshot by default)", function()
    local kiro, log = H.setup({ KIRO_SIM_FAULT = "crash-before-chunk", KIRO_SIM_FAULT_AFTER = 2 },
      { pool_max = 1, pipeline_depth = 4, log = "error" })
    local results = concurrently(kiro, 4, function(i) return kiro.chat("p" .. i) end)
    for i = 1, 4 do assert.are.equal("You said: p" .. i, results[i][1]) end
    local ev = H.sim_events(log)
    assert.are.equal(2, H.count(ev, { mode = "chat", event = "request" })) -- p3 and p4
  end)

  it("a crash mid-pipeline with a failing policy: the held requests fail, none mixed", function()
    local kiro = H.setup({ KIRO_SIM_FAULT = "crash-before-chunk", KIRO_SIM_FAULT_AFTER = 2 },
      { pool_max = 1, pipeline_depth = 4, log = "error", policy = function() return "fail" end })
    local results = concurrently(kiro, 4, function(i) return kiro.chat("p" .. i) end)
    assert.are.equal("You said: p1", results[1][1])
    assert.are.equal("You said: p2", results[2][1])
    for i = 3, 4 do
      assert.is_nil(results[i][1])
      assert.are.equal("crashed", results[i][3])
    end
  end)

  it("a cancelled request in the pipeline is drained; the others are unharmed", function()
    local kiro, log = H.setup({ KIRO_SIM_CHUNK_DELAY_MS = 10 }, { pool_max = 1, pipeline_depth = 3 })
    local full, after
    kiro.spawn(function()
      local t = {}
      for c in kiro.stream("first one here") do t[#t + 1] = c end
      full = table.concat(t)
    end)
    kiro.spawn(function() for _ in kiro.stream("second is cut") do break end end)
    kiro.spawn(function() after = kiro.chat("third") end)
    kiro.run()
    assert.are.equal("You said: first one here", full)
    assert.are.equal("You said: third", after)
    assert.are.equal(1, #H.pids(H.sim_events(log), { event = "start" }))
  end)
end)
