--- kiro.host.cqueues(): drive kiro from a cqueues controller, and let its
-- coroutines wait on kiro without stopping the others.
--
--   local cqueues, kiro = require "cqueues", require "kiro"
--   kiro.configure { host = kiro.host.cqueues() }
--   local cq = cqueues.new()
--   cq:wrap(function()
--     for chunk in kiro.stream("hello") do io.write(chunk) end
--   end)
--   assert(cq:loop())
--
-- While kiro has work, a coroutine of the controller that first waited on
-- it polls kiro.pollable() (kiro's descriptor and next timer) and calls
-- kiro.step(0); it ends when kiro is idle, so cq:loop() can return. A
-- coroutine that calls kiro.chat or kiro.stream waits on a condition
-- variable; outside a controller's coroutine a call blocks, as without a
-- host.

local cqueues = require "cqueues"
local condition = require "cqueues.condition"

---@return table adapter
return function()
  local kiro = require "kiro"
  local pollable = kiro.pollable()
  local driving, idle = false, condition.new()
  local adapter = {}

  local function driver()
    while kiro.step(0) do
      cqueues.poll(pollable, idle)
    end
    driving = false
  end

  function adapter.start()
    local cq = cqueues.running()
    if driving or not cq then return end -- outside a controller: whoever waits drives
    driving = true
    cq:wrap(driver)
  end

  function adapter.idle()
    idle:signal() -- the driver looks again, and ends
  end

  function adapter.can_wait()
    return cqueues.running() ~= nil and coroutine.isyieldable()
  end

  function adapter.wait(w)
    if not driving then adapter.start() end
    w.cond = w.cond or condition.new()
    w.cond:wait()
  end

  function adapter.wake(w)
    if w.cond then w.cond:signal() end
  end

  return adapter
end
