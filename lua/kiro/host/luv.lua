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
  local poll, timer, prepare
  local adapter = {}

  local rearm
  local function drive()
    rearm(kiro.step(0))
  end
  -- kiro's next timer armed; the handles hold the loop only while kiro is busy.
  function rearm(busy)
    timer:stop()
    local t = kiro.timeout_ms()
    if t then timer:start(t, 0, drive) end
    if busy then
      poll:ref()
      timer:ref()
    else
      poll:unref()
      timer:unref()
    end
  end

  function adapter.start()
    if not poll then
      poll = uv.new_poll(kiro.pollfd())
      poll:start("r", drive)
      timer = uv.new_timer()
      -- Before luv waits, kiro's next deadline is armed (kiro's timers change
      -- as it works, in calls the program makes between steps).
      prepare = uv.new_prepare()
      prepare:start(function() rearm(kiro.busy()) end)
      prepare:unref()
    end
    rearm(true)
  end

  function adapter.idle()
    if poll then rearm(false) end
  end

  function adapter.can_wait()
    local _, main = coroutine.running()
    return not main and coroutine.isyieldable()
  end

  function adapter.waiter()
    local co, woken, waiting = coroutine.running(), false, false
    local function wait()
      if woken then return end
      waiting = true
      coroutine.yield()
      waiting = false
    end
    local function wake()
      woken = true
      if waiting then
        local ok, err = coroutine.resume(co)
        if not ok then kiro.core.log("error", "kiro.host", "a luv coroutine failed: " .. tostring(err)) end
      end
    end
    return wait, wake
  end

  --- Stops watching kiro (the handles are closed).
  function adapter.close()
    for _, h in ipairs { poll, timer, prepare } do
      if h and not h:is_closing() then h:close() end
    end
    poll, timer, prepare = nil, nil, nil
  end

  return adapter
end
