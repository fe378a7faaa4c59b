--- kiro.host.copas(): let copas threads wait on kiro without stopping the
-- others. Written for the copas that Debian ships (1.1.x: no timers, no
-- sleep), which runs on Lua 5.4 from its 5.2 directory
-- (package.path = package.path .. ";/usr/share/lua/5.2/?.lua").
--
--   local copas, kiro = require "copas", require "kiro"
--   kiro.configure { host = kiro.host.copas() }
--   copas.addthread(function() print(kiro.chat("hello")) end)
--   while true do copas.step(0.05) end
--
-- A thread that calls kiro.chat or kiro.stream waits in copas.receive on a
-- socket-like object for kiro's descriptor: copas's select wakes it when
-- kiro has I/O, it steps kiro and looks whether its call can go on (its
-- `dirty` flag makes select skip the wait once it can). Waiting threads are
-- what drive kiro, and copas 1.x has no timers: kiro's own timers (request
-- deadlines, restarts) are served at copas's next step, so step copas with
-- a timeout (copas.step(0.05), copas.loop(0.05)). Outside a copas thread a
-- call blocks, as without a host.

local copas = require "copas"

---@return table adapter
return function()
  local kiro = require "kiro"
  local adapter = {}

  -- What copas waits on for w: kiro's descriptor, as LuaSocket's select
  -- and copas.receive take a socket.
  local function waitable(w)
    return {
      getfd = function() return kiro.pollfd() end,
      dirty = function() return w.woken or kiro.timeout_ms() == 0 end,
      receive = function()
        kiro.step(0)
        if w.woken then return "" end
        return nil, "timeout"
      end,
      close = function() end, -- copas closes what a thread that ends waited on
    }
  end

  adapter.can_wait = require("kiro.tasks").yieldable

  function adapter.wait(w)
    copas.receive(waitable(w))
  end

  function adapter.wake() end -- the waiter's `dirty` says so at copas's next select

  function adapter.start() end -- the waiters drive kiro

  return adapter
end
