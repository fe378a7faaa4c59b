-- The fallback policy lives in Lua and can be replaced.
local H = require "helper"

describe("fallback policy", function()
  after_each(H.check_leaks)

  local crash = { KIRO_SIM_FAULT = "crash-before-chunk", KIRO_SIM_FAULT_AFTER = 1 }

  it("the default serves a crashed daemon's request by oneshot", function()
    local kiro, log = H.setup(crash, { log = "error" })
    assert(kiro.chat("one"))
    assert.are.equal("You said: two", kiro.chat("two"))
    assert.are.equal(1, H.count(H.sim_events(log), { mode = "chat", event = "request" }))
  end)

  it("mode = daemon never falls back", function()
    local kiro = H.setup(crash, { log = "error" })
    assert(kiro.chat("one"))
    local r, _, code = kiro.chat("two", { mode = "daemon" })
    assert.is_nil(r)
    assert.are.equal("crashed", code)
  end)

  it("a replacement policy is consulted with the failure's facts", function()
    local seen = {}
    local kiro = H.setup(crash, {
      log = "error",
      policy = function(f) seen[#seen + 1] = f; return "fail" end,
    })
    assert(kiro.chat("one"))
    local r, msg, code = kiro.chat("two")
    assert.is_nil(r)
    assert.are.equal("crashed", code)
    assert.matches("simulated crash", msg)
    assert.are.equal(1, #seen)
    local f = seen[1]
    assert.are.equal("crashed", f.code)
    assert.are.equal("daemon", f.mode)
    assert.are.equal("auto", f.requested_mode)
    assert.are.equal(1, f.attempt)
    assert.is_false(f.delivered)
    assert.are.equal("two", f.prompt)
    assert.is_true(f.remaining_ms > 0)
  end)

  it("retry sends the request to the pool again, within max attempts", function()
    local calls = 0
    local kiro, log = H.setup(crash, {
      log = "error", restart_backoff_ms = 0,
      policy = { decide = function() calls = calls + 1; return "retry" end },
    })
    assert(kiro.chat("one"))
    -- Each retry reaches a daemon (a fresh one spares its first request).
    local r = kiro.chat("two")
    assert.are.equal("You said: two", r)
    assert.is_true(calls >= 1)
    assert.are.equal(0, H.count(H.sim_events(log), { mode = "chat" }))
  end)

  it("never falls back once part of a reply reached the caller", function()
    local asked = 0
    local kiro, log = H.setup({ KIRO_SIM_FAULT = "crash-mid-stream" }, {
      log = "error", policy = function() asked = asked + 1; return "oneshot" end,
    })
    local got = {}
    local ok, err = pcall(function() for c in kiro.stream("a b c") do got[#got + 1] = c end end)
    assert.is_false(ok)
    assert.are.equal("crashed", err.code)
    assert.are.same({ "You" }, got)
    assert.are.equal(0, asked)
    assert.are.equal(0, H.count(H.sim_events(log), { mode = "chat" }))
  end)

  it("a policy that raises fails the request with the original error", function()
    local kiro = H.setup(crash, { log = "off", policy = function() error("policy bug") end })
    assert(kiro.chat("one"))
    local r, _, code = kiro.chat("two")
    assert.is_nil(r)
    assert.are.equal("crashed", code)
  end)

  it("rejects a policy that is not callable", function()
    local kiro = H.setup()
    assert.has_error(function() kiro.configure { policy = 42 } end)
    assert.has_error(function() kiro.configure { policy = {} } end)
  end)
end)
