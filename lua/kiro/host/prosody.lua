--- kiro.host.prosody(): drive kiro from Prosody's network loop, and let
-- Prosody's async threads (util.async runners: a session's stanza
-- processing, or a runner of one's own) wait on kiro without holding up
-- the server. Only loadable inside Prosody (it uses net.server).
--
--   local kiro = require "kiro"
--   kiro.configure { host = kiro.host.prosody() }
--   -- in an async runner: local reply = kiro.chat("...")
--
-- kiro's descriptor is watched with net.server.watchfd and its next timer
-- set with util.timer, each calling kiro.step(0). A thread that waits gets
-- a util.async waiter; outside a runner a call blocks, as without a host.

local server = require "net.server"
local timer = require "util.timer"
local async = require "util.async"

---@return table adapter
return function()
  local kiro = require "kiro"
  local watcher, task -- the descriptor's watcher; kiro's next timer (util.timer id)
  local adapter = {}

  local rearm
  local function drive()
    local ok, err = pcall(kiro.step, 0)
    rearm() -- whatever the step did: kiro's next timer stays set
    if not ok then error(err, 0) end
  end
  function rearm()
    if task then
      timer.stop(task)
      task = nil
    end
    local t = kiro.busy() and kiro.timeout_ms()
    if t then
      task = timer.add_task(t / 1000, function()
        task = nil
        drive()
      end)
    end
  end

  function adapter.start()
    if not watcher then watcher = server.watchfd(kiro.pollfd(), drive) end
    rearm()
  end

  function adapter.idle()
    rearm() -- no timer while idle; the watcher stays (Prosody's loop runs anyway)
  end

  function adapter.can_wait()
    return async.ready()
  end

  function adapter.wait(w)
    rearm() -- kiro's timers change with the call this thread just made
    local wait, done = async.waiter()
    w.done = done
    wait()
  end

  function adapter.wake(w)
    local done = w.done
    w.done = nil
    if done then done() end
  end

  --- Stops watching kiro (module unload).
  function adapter.close()
    if task then timer.stop(task) end
    if watcher then watcher:close() end
    watcher, task = nil, nil
  end

  return adapter
end
