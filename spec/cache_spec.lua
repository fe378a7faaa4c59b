-- The response cache and request coalescing (opt-in).
local H = require "helper"

local function requests(log)
  return H.count(H.sim_events(log), { event = "request" })
end

describe("response cache", function()
  after_each(H.check_leaks)

  it("is off by default", function()
    local kiro, log = H.setup()
    kiro.chat("same")
    kiro.chat("same")
    assert.are.equal(2, requests(log))
  end)

  it("a hit returns without touching a backend", function()
    local kiro, log = H.setup({}, { cache = true })
    local before = kiro.stats().cache
    assert.are.equal("You said: same", kiro.chat("same"))
    assert.are.equal("You said: same", kiro.chat("same"))
    assert.are.equal(1, requests(log))
    local c = kiro.stats().cache
    assert.are.equal(before.hits + 1, c.hits)
    assert.are.equal(before.misses + 1, c.misses)
    assert.is_true(c.bytes > 0)
  end)

  it("replays a cached reply to a stream as chunks", function()
    local kiro, log = H.setup({}, { cache = true })
    local function chunks()
      local t = {}
      for c in kiro.stream("one two three") do t[#t + 1] = c end
      return t
    end
    local first = chunks()
    assert.are.same({ "You", " said:", " one", " two", " three" }, first)
    assert.are.same(first, chunks())
    assert.are.equal(1, requests(log))
  end)

  it("is keyed by model and prompt", function()
    local kiro, log = H.setup({}, { cache = true })
    kiro.chat("p")
    kiro.chat("p", { model = "m" })
    kiro.chat("q")
    kiro.chat("p", { model = "m" })
    assert.are.equal(3, requests(log))
  end)

  it("can be turned on per request", function()
    local kiro, log = H.setup()
    kiro.chat("x", { cache = true })
    kiro.chat("x", { cache = true })
    kiro.chat("x")
    assert.are.equal(2, requests(log))
  end)

  it("can be turned on by the policy", function()
    local policy = { decide = require("kiro.policy").decide,
                     cacheable = function(prompt) return prompt:find("^faq:") ~= nil end }
    local kiro, log = H.setup({}, { policy = policy })
    kiro.chat("faq: hours")
    kiro.chat("faq: hours")
    kiro.chat("chat: hi")
    kiro.chat("chat: hi")
    assert.are.equal(3, requests(log))
  end)

  it("expires entries after the TTL", function()
    local kiro, log = H.setup({}, { cache = true, cache_ttl_ms = 100 })
    local ev0 = kiro.stats().cache.evictions
    kiro.chat("t")
    kiro.chat("t")
    kiro.sleep(150)
    kiro.chat("t")
    assert.are.equal(2, requests(log))
    assert.are.equal(ev0 + 1, kiro.stats().cache.evictions)
  end)

  it("evicts the least recently used past the byte bound", function()
    -- An entry here costs about 800 bytes (text and Lua's overhead).
    local kiro, log = H.setup({}, { cache = true, cache_max_bytes = 1200 })
    local p = function(c) return c:rep(60) end
    kiro.chat(p("a"))
    kiro.chat(p("b")) -- a is evicted
    assert.is_true(kiro.stats().cache.bytes <= 1200)
    kiro.chat(p("b")) -- hit
    kiro.chat(p("a")) -- miss again
    assert.are.equal(3, requests(log))
    assert.are.equal(1, kiro.stats().cache.entries)
  end)

  it("does not keep failures", function()
    local fault = H.tmpdir() .. "/fault"
    H.write_file(fault, "")
    local kiro, log = H.setup({ KIRO_SIM_FAULT = "error", KIRO_SIM_FAULT_FILE = fault }, { cache = true })
    assert.is_nil(kiro.chat("e"))
    os.remove(fault)
    assert.are.equal("You said: e", kiro.chat("e"))
    assert.are.equal(2, requests(log))
  end)
end)

describe("request coalescing", function()
  after_each(H.check_leaks)

  it("20 identical concurrent requests make one backend call", function()
    local kiro, log = H.setup({ KIRO_SIM_LATENCY_MS = 200 }, { cache = true })
    local c0 = kiro.stats().cache.coalesced
    local got = {}
    for i = 1, 20 do kiro.spawn(function() got[i] = kiro.chat("popular question") end) end
    kiro.run()
    for i = 1, 20 do assert.are.equal("You said: popular question", got[i]) end
    assert.are.equal(1, requests(log))
    assert.are.equal(c0 + 19, kiro.stats().cache.coalesced)
  end)

  it("stream callers each get every chunk", function()
    local kiro, log = H.setup({ KIRO_SIM_CHUNK_DELAY_MS = 30 }, { cache = true })
    local got = {}
    for i = 1, 5 do
      kiro.spawn(function()
        got[i] = {}
        for c in kiro.stream("a b c d") do got[i][#got[i] + 1] = c end
      end)
    end
    kiro.run()
    for i = 1, 5 do assert.are.same({ "You", " said:", " a", " b", " c", " d" }, got[i]) end
    assert.are.equal(1, requests(log))
  end)

  it("one caller leaving does not cut the others off", function()
    local kiro, log = H.setup({ KIRO_SIM_CHUNK_DELAY_MS = 30 }, { cache = true })
    local full
    kiro.spawn(function() for _ in kiro.stream("x y z") do break end end)
    kiro.spawn(function()
      local t = {}
      for c in kiro.stream("x y z") do t[#t + 1] = c end
      full = table.concat(t)
    end)
    kiro.run()
    assert.are.equal("You said: x y z", full)
    assert.are.equal(1, requests(log))
  end)

  it("when every caller leaves, the backend call is cancelled", function()
    local kiro = H.setup({ KIRO_SIM_CHUNK_DELAY_MS = 50 }, { cache = true, pool_max = 1 })
    local c0 = kiro.stats().cancelled
    for _ = 1, 3 do
      kiro.spawn(function() for _ in kiro.stream("p q r s") do break end end)
    end
    kiro.run()
    assert.are.equal(c0 + 1, kiro.stats().cancelled)
    assert.are.equal("You said: after", kiro.chat("after", { cache = false }))
  end)
end)
