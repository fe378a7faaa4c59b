-- Backends own their pools: a backend nobody names any more stops its
-- daemons pool_idle_ms later and goes, and at most max_backends exist at
-- once (issue 8: each distinct env used to leave a pool and a warm daemon
-- behind for good).
local H = require "helper"

describe("backends", function()
  after_each(H.check_leaks)

  it("a backend nobody names any more stops its daemons after pool_idle_ms and goes", function()
    local kiro, log = H.setup({}, { pool_idle_ms = 100 })
    for i = 1, 6 do
      -- Six calls that differ only in env: six backends, six pools.
      assert.are.equal("You said: e" .. i, kiro.chat("e" .. i, { env = { KIRO_SPEC_SET = tostring(i) } }))
    end
    assert.are.equal(6, #H.daemon_pids(log))
    H.wait_kiro(kiro, function()
      local s = kiro.stats()
      return #s.pools == 0 and s.children == 0
    end, "the unused backends to go")
    -- Named again, one comes back (a new daemon), and serves.
    assert.are.equal("You said: again", kiro.chat("again", { env = { KIRO_SPEC_SET = "1" } }))
    assert.are.equal(7, #H.daemon_pids(log))
  end)

  it("one named again within pool_idle_ms keeps its warm daemon", function()
    local kiro, log = H.setup({}, { pool_idle_ms = 60000 })
    for _ = 1, 3 do assert(kiro.chat("x", { env = { KIRO_SPEC_SET = "warm" } })) end
    assert.are.equal(1, #H.daemon_pids(log))
    assert.are.equal(1, #kiro.stats().pools)
  end)

  it("the configured backend stays warm while it is configured", function()
    local kiro, log = H.setup({}, { pool_idle_ms = 50 })
    assert(kiro.chat("one"))
    kiro.sleep(200) -- well past pool_idle_ms: no timing is asserted, only that it stays
    assert(kiro.chat("two"))
    assert.are.equal(1, #H.daemon_pids(log))
  end)

  it("at most max_backends: the one unused longest goes; all in use, a new one is `overloaded`", function()
    local kiro, log = H.setup({ KIRO_SIM_LATENCY_MS = 200 }, { max_backends = 2, pool_idle_ms = 60000 })
    for i = 1, 4 do
      assert(kiro.chat("s" .. i, { env = { KIRO_SPEC_SET = tostring(i) } }))
      assert.is_true(kiro.stats().backends <= 2)
    end
    assert.are.equal(4, #H.daemon_pids(log))
    -- Two calls in flight hold both; a third backend finds no room.
    local results = H.concurrently(kiro, 3, function(i)
      if i == 3 then kiro.sleep(50) end
      return kiro.chat("c" .. i, { env = { KIRO_SPEC_SET = "busy" .. i } })
    end)
    assert.are.equal("You said: c1", results[1][1])
    assert.are.equal("You said: c2", results[2][1])
    assert.is_nil(results[3][1])
    assert.are.equal("overloaded", results[3][3])
    assert.matches("2 backends in use %(max_backends%)", results[3][2])
  end)
end)

describe("backends through the server", function()
  after_each(H.check_sims_gone)

  it("2,000 requests with 200 distinct KIRO_* sets: at most max_backends pools, then none, memory back", function()
    local kiro = H.setup()
    local env, log = H.sim_env()
    local script = H.tmpdir() .. "/serve.lua"
    H.write_file(script, [[
      local kiro = require "kiro"
      kiro.configure { max_backends = 16, pool_idle_ms = 300 }
      assert(require("kiro.server").serve {})
    ]])
    local pid, wait_exit = H.spawn_bg({ H.kiro_rt, "run", script }, env)
    assert(H.wait_for(function() return H.status(env) ~= nil end, 5000), "the server did not come up")
    local client = require "kiro.client"
    local most = 0
    local function load(n)
      H.concurrently(kiro, 4, function(t)
        local c = assert(client.connect(H.socket(env)))
        for i = t, n, 4 do
          local set = { KIRO_SPEC_SET = tostring(i % 200), KIRO_SIM_LOG = log }
          local parts = {}
          for chunk in c:request("q" .. i, { cli = H.sim, env = set, stream = false }) do parts[#parts + 1] = chunk end
          assert.are.equal("You said: q" .. i, table.concat(parts))
          if i % 100 == 0 then
            c:send { op = "status" }
            local s = assert(c:reply(5000))
            most = math.max(most, #s.pools)
          end
        end
        c:close()
      end)
      assert(H.wait_for(function()
        local s = H.status(env)
        return s and #s.pools == 0 and s.in_flight == 0
      end, 10000), "the pools to go once unused")
    end
    -- Where it starts: a server that has been through this once (its code
    -- in memory, the allocator's high water from 16 pools at once reached),
    -- so what is measured is whether anything accumulates.
    load(200)
    assert(H.wait_for(function() return H.status(env).settled end, 5000), "the server to settle")
    local base = assert(H.status(env)).rss_bytes
    load(2000)
    assert.is_true(most >= 1 and most <= 16, "pools seen at once: " .. most)
    -- At no moment were there more (the core's own high-water mark).
    local peak = assert(H.status(env)).backends_peak
    assert.is_true(peak >= most and peak <= 16, "backends alive at once, at most: " .. peak)
    -- Every daemon those 200 backends started has exited.
    for _, p in ipairs(H.pids(H.sim_events(log), { event = "start" })) do
      assert(H.wait_for(function() return not H.alive(p) end, 5000))
    end
    if not H.sanitized then -- ASan keeps freed memory in quarantine
      assert(H.wait_for(function()
        local s = H.status(env)
        return s.settled and s.rss_bytes <= base * 1.1
      end, 5000),
        ("resident %d kB, %d kB at the start"):format(H.status(env).rss_bytes >> 10, base >> 10))
    end
    os.execute("kill -TERM " .. pid)
    assert.are.equal(0, (wait_exit()))
  end)
end)
