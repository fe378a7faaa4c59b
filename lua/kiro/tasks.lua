--- Tasks: coroutines driven by kiro's loop, and the waiting they do.
--
-- A task that waits yields to the loop; any other caller that waits (a
-- plain script, a foreign coroutine) drives the loop itself until its wait
-- is over. Every event of the C core (a request's chunks and end, a
-- connection's lines) reaches the object it belongs to: obj:on_event(name, ...).

local core = require "kiro.core"
local errors = require "kiro.error"

local tasks = {}

local WAIT = setmetatable({}, { __name = "kiro.wait" })
local live = {}        -- coroutine -> true
local ntasks = 0
local ready, rhead, rtail = {}, 1, 0
local running = false
local spawn_args = setmetatable({}, { __mode = "k" }) -- first resume's arguments

local function schedule(co)
  rtail = rtail + 1
  ready[rtail] = co
end

--- The running kiro task, or nil outside one.
---@return thread?
function tasks.current()
  local co = coroutine.running()
  return live[co] and co or nil
end

--- Tasks started and not yet finished.
---@return integer
function tasks.count()
  return ntasks
end

--- Starts fn(...) as a kiro task; it runs when the loop runs.
---@param fn function
---@param ... any fn's arguments
---@return thread
function tasks.spawn(fn, ...)
  if type(fn) ~= "function" then errors.misuse("kiro.spawn", "expected a function") end
  local co = coroutine.create(fn)
  live[co] = true
  ntasks = ntasks + 1
  if select("#", ...) > 0 then spawn_args[co] = table.pack(...) end
  schedule(co)
  return co
end

local function step_task(co)
  local ok, res
  local args = spawn_args[co]
  if args then
    spawn_args[co] = nil
    ok, res = coroutine.resume(co, table.unpack(args, 1, args.n))
  else
    ok, res = coroutine.resume(co)
  end
  if coroutine.status(co) == "dead" then
    live[co] = nil
    ntasks = ntasks - 1
    if not ok then
      local msg = debug.traceback(co, tostring(res))
      coroutine.close(co)
      error(msg, 0)
    end
    coroutine.close(co) -- its stack goes now, with whatever it still pointed at
  elseif res ~= WAIT then
    schedule(co) -- a plain coroutine.yield(): let others run, then go on
  end
end

local function run_ready()
  while rhead <= rtail do
    local co = ready[rhead]
    ready[rhead] = nil
    rhead = rhead + 1
    step_task(co)
  end
  rhead, rtail = 1, 0
end

--- Runs the loop until no task is left; a task's error is raised here.
function tasks.run()
  if tasks.current() then errors.misuse("kiro.run", "called from inside a kiro task") end
  if running then errors.misuse("kiro.run", "already running") end
  running = true
  local ok, err = pcall(function()
    while ntasks > 0 do
      run_ready()
      if ntasks > 0 then core.step() end
    end
  end)
  running = false
  if not ok then error(err, 0) end
end

--- Waits until w.woken is set by tasks.wake(w).
---@param w table a wait record: { woken = false }
function tasks.block(w)
  local co = tasks.current()
  if co then
    w.task = co
    while not w.woken do coroutine.yield(WAIT) end
    w.task = nil
  else
    while not w.woken do core.step() end
  end
  w.woken = false
end

---@param w table a wait record given to tasks.block
function tasks.wake(w)
  if w.woken then return end
  w.woken = true
  if w.task then schedule(w.task) end
end

---@class kiro.Event
---@field done boolean
local Event = {}
Event.__index = Event

--- Suspends the calling task (or drives the loop for a plain caller) until
--- the event is set; returns at once if it is.
function Event:wait()
  if self.done then return end
  local w = { woken = false }
  self.waiters[#self.waiters + 1] = w
  while not self.done do tasks.block(w) end
end

--- Sets the event: every waiter goes on.
function Event:set()
  if self.done then return end
  self.done = true
  for _, w in ipairs(self.waiters) do tasks.wake(w) end
  self.waiters = {}
end

---@return boolean
function Event:is_set() return self.done end

--- A one-shot signal between tasks.
---@return kiro.Event
function tasks.event()
  return setmetatable({ done = false, waiters = {} }, Event)
end

--- Suspends the calling task (or blocks a plain caller) for ms.
---@param ms integer milliseconds
function tasks.sleep(ms)
  if math.type(ms) == nil then errors.misuse("kiro.sleep", "expected milliseconds") end
  local w = {}
  w.timer = core.timer(math.floor(ms), function() tasks.wake(w) end)
  tasks.block(w)
  w.timer:stop()
end

--- Forgets every task left waiting (kiro.reset outside any task, say after
--- a kiro.run that ended in an error).
function tasks.forget_all()
  for co in pairs(live) do coroutine.close(co) end
  live, ntasks, ready, rhead, rtail = {}, 0, {}, 1, 0
end

return tasks
