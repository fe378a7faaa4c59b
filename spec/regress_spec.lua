-- Regression tests, each named after what it caught.
local H = require "helper"

describe("regressions", function()
  after_each(H.check_leaks)

  -- UV_RUN_ONCE runs due timers before it polls; a step that fired a timer
  -- then slept in poll forever while a warm daemon kept the loop alive.
  it("timer-before-poll: sleep returns while an idle daemon holds the loop", function()
    local kiro = H.setup()
    assert(kiro.chat("warm")) -- leaves a daemon idle, its pipes watched
    -- Busy Lua work between steps, so the timer is already due when the
    -- next step starts.
    local t = os.clock()
    while os.clock() - t < 0.03 do end
    kiro.sleep(5)
    local fired = false
    kiro.spawn(function() kiro.sleep(5); fired = true end)
    kiro.run()
    assert.is_true(fired)
  end)
end)
