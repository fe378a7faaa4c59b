--- kiro.host.luv(): drive kiro from a luv loop, and let a luv program's
-- coroutines wait on kiro without stopping the loop.
--
--   local uv, kiro = require "luv", require "kiro"
--   kiro.configure { host = kiro.host.luv() }
--   coroutine.wrap(function()
--     for chunk in kiro.stream("hello") do io.write(chunk) end
--   end)()
--   uv.run()
--
-- kiro's descriptor is watched by a poll handle and its next timer by a
-- timer; each calls kiro.step(0). A coroutine that calls kiro.chat or
-- kiro.stream is suspended (coroutine.yield) and resumed when its call can
-- go on; the main thread cannot be suspended and blocks, as without a host.
-- The handles keep the loop alive only while kiro has work.

local uv = require "luv"

---@return table adapter
return function()
  local kiro = require "kiro"
  local poll, timer
  local armed, held = nil, nil -- the deadline the timer is set for (luv's clock); whether the handles hold the loop
  local adapter = {}

  local fired -- the timer's callback (below)
  -- The timer is set for kiro's next deadline, or earlier: one that comes
  -- early only costs a step, which sets it again. So it is left alone
  -- unless kiro's deadline comes before it (a round trip's deadlines are
  -- each later than the last: no timer call per round trip). The handles
  -- hold the loop only while kiro is busy.
  local function rearm(busy)
    local t = kiro.timeout_ms()
    if t and (not armed or uv.now() + t < armed) then
      timer:stop()
      timer:start(t, 0, fired)
      armed = uv.now() + t
    end
    if busy ~= held then
      held = busy
      if busy then
        poll:ref()
        timer:ref()
      else
        poll:unref()
        timer:unref()
      end
    end
  end

  -- kiro's timers change only when kiro runs: in a step, or in a call the
  -- program makes, which then waits (or spawns): each re-arms the timer.
  local stepping = false
  local function drive()
    stepping = true
    local ok, busy = pcall(kiro.step, 0)
    stepping = false
    rearm(ok and busy)
    if not ok then error(busy, 0) end
  end
  function fired()
    armed = nil
    drive()
  end

  function adapter.start()
    armed = nil
    if not poll then
      poll = uv.new_poll(kiro.pollfd())
      poll:start("r", drive)
      timer = uv.new_timer()
    end
    rearm(true)
  end

  function adapter.idle()
    if poll then rearm(false) end
  end

  adapter.can_wait = require("kiro.tasks").yieldable

  function adapter.wait(w)
    if not stepping then rearm(true) end -- a call made outside a step
    w.co = coroutine.running()
    coroutine.yield()
  end

  function adapter.wake(w)
    local co = w.co
    if co and coroutine.status(co) == "suspended" then
      w.co = nil
      local ok, err = coroutine.resume(co)
      if not ok then kiro.core.log("error", "kiro.host", "a luv coroutine failed: " .. tostring(err)) end
    end
  end

  --- Stops watching kiro (the handles are closed).
  function adapter.close()
    for _, h in ipairs { poll, timer } do
      if h and not h:is_closing() then h:close() end
    end
    poll, timer = nil, nil
  end

  return adapter
end
