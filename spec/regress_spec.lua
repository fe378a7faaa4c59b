-- Regression tests, each named after what it caught.
local H = require "helper"

describe("regressions", function()
  after_each(H.check_leaks)

  -- UV_RUN_ONCE runs due timers before it polls; a step that fired a timer
  -- then slept in poll forever while a warm daemon kept the loop alive.
  it("timer-before-poll: sleep returns while an idle daemon holds the loop", function()
    local kiro = H.setup()
    assert(kiro.chat("warm")) -- leaves a daemon idle, its pipes watched
    for _ = 1, 20 do kiro.sleep(1) end
    local fired = false
    kiro.spawn(function() kiro.sleep(5); fired = true end)
    kiro.run()
    assert.is_true(fired)
  end)
end)
