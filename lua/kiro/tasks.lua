--- Tasks: coroutines driven by kiro's loop, and the waiting they do.
--
-- A task that waits yields to the loop. Any other caller that waits (a
-- plain script, a foreign coroutine) drives the loop itself until its wait
-- is over, unless a host adapter is configured (kiro.configure{ host = }):
-- then a coroutine of the host's waits the host's way, and the host drives
-- kiro (kiro.pollfd, kiro.timeout_ms, kiro.step). Every event of the C core
-- (a request's chunks and end, a connection's lines) reaches the object it
-- belongs to: obj:on_event(name, ...).
--
-- A host adapter is a table:
--   can_wait()  whether the calling coroutine can be suspended the host's way
--   wait(w)     suspends the caller until wake(w); returns early at will
--               (kiro calls it again until w.woken); w is the caller's own
--               table, for the adapter's notes (w.co, ...)
--   wake(w)     w.woken was set: let its caller go on (may come before
--               wait; kiro calls it outside its loop's step)
--   start()     kiro has work (a task, a waiter): drive it until idle()
--   idle()      kiro has nothing left to drive (optional)

local core = require "kiro.core"
local errors = require "kiro.error"

local tasks = {}

local WAIT = setmetatable({}, { __name = "kiro.wait" })
local live = {}        -- coroutine -> true
local ntasks = 0
local ready, rhead, rtail = {}, 1, 0
local running = false
local spawn_args = setmetatable({}, { __mode = "k" }) -- first resume's arguments
local failed = 0          -- tasks that ended in an error, ever
local on_error = nil      -- kiro.configure{ on_task_error = fn }
local host = nil          -- kiro.configure{ host = adapter }
local waiting = 0         -- host coroutines waiting on kiro
local wakes, nwakes = {}, 0 -- wake functions of host waiters woken, called after the step
local driven = false      -- the host was told to drive kiro (start), not yet idle()
local stepping = false    -- inside tasks.step: it tells the host of idleness at its end

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

--- Whether the caller is a coroutine (not the main thread) that can
--- yield: one a host adapter may suspend (its can_wait, for hosts whose
--- coroutines are plain ones: luv, copas).
---@return boolean
function tasks.yieldable()
  local _, main = coroutine.running()
  return not main and coroutine.isyieldable()
end

--- Whether kiro has something to drive: tasks, or host coroutines waiting.
---@return boolean
function tasks.busy()
  return ntasks > 0 or waiting > 0
end

-- The host adapter hears when kiro gets work, and when it has none left.
local function check_host()
  if not host then return end
  local busy = tasks.busy()
  if busy and not driven then
    driven = true
    host.start()
  elseif not busy and driven then
    driven = false
    if host.idle then host.idle() end
  end
end

--- Sets the host adapter (nil: none; kiro then blocks its plain callers).
---@param adapter table|nil
function tasks.set_host(adapter)
  if host and driven and host.idle then host.idle() end
  host, driven = adapter, false
  check_host()
end

--- Sets the handler of task errors (nil: log them at error level).
---@param fn function|nil fn(err, traceback)
function tasks.set_error_handler(fn)
  on_error = fn
end

--- Tasks that ended in an error since the module loaded.
---@return integer
function tasks.failed()
  return failed
end

-- A task ended in an error: the others go on; the handler hears of it, or
-- the log does, with the task's traceback.
local function report(co, err)
  failed = failed + 1
  local trace = debug.traceback(co, tostring(err))
  if on_error then
    local ok, herr = pcall(on_error, err, trace)
    if ok then return end
    core.log("error", "kiro.tasks", "on_task_error raised: " .. tostring(herr))
  end
  core.log("error", "kiro.tasks", "a task failed: " .. trace)
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
  check_host()
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
    if not ok then report(co, res) end
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

-- Host waiters woken meanwhile go on (outside the loop's step, where a
-- host may resume a coroutine).
local function run_wakes()
  while nwakes > 0 do
    local list, n = wakes, nwakes
    wakes, nwakes = {}, 0
    for i = 1, n do
      local w = list[i]
      if w.host then w.host.wake(w) end
    end
  end
end

--- Runs the loop until no task is left. A task that fails does not stop
--- the others: its error goes to the handler (on_task_error), else to the
--- log with its traceback. Returns how many tasks failed meanwhile.
---@return integer failed
function tasks.run()
  if tasks.current() then errors.misuse("kiro.run", "called from inside a kiro task") end
  if running then errors.misuse("kiro.run", "already running") end
  running = true
  local before = failed
  local ok, err = pcall(function()
    while ntasks > 0 do
      run_ready()
      run_wakes()
      if ntasks > 0 and not core.step() and rhead > rtail and nwakes == 0 and core.shutting_down() then
        -- The runtime was shut down and nothing on its loop is left to
        -- wake the tasks still waiting (on an event, say): they end here,
        -- their to-be-closed variables closed, rather than wait for ever.
        core.log("debug", "kiro.tasks", ("%d task(s) still waiting at shutdown: ended"):format(ntasks))
        for co in pairs(live) do
          live[co] = nil
          coroutine.close(co)
        end
        ntasks = 0
      end
    end
  end)
  running = false
  check_host()
  if not ok then error(err, 0) end
  return failed - before
end

-- kiro.step's work (protected: `stepping` is reset whatever happens).
local function step_body(timeout_ms)
  if rhead <= rtail then run_ready() end
  if nwakes > 0 then run_wakes() end
  core.wait((rhead <= rtail or nwakes > 0) and 0 or timeout_ms)
  if rhead <= rtail then run_ready() end
  if nwakes > 0 then run_wakes() end
end

--- One step of the loop for a host that drives kiro: runs the tasks that
--- can run, waits for I/O or a timer timeout_ms at the most (nil: as long
--- as the loop needs; 0: not at all; not at all either when a task can
--- run), handles what came and runs the tasks it woke. Returns whether
--- kiro still has something to drive (tasks.busy).
---@param timeout_ms? integer
---@return boolean busy
function tasks.step(timeout_ms)
  if live[coroutine.running()] then errors.misuse("kiro.step", "called from inside a kiro task") end
  local outer = not stepping
  stepping = true
  local ok, err = pcall(step_body, timeout_ms)
  if outer then stepping = false end
  if host then check_host() end
  if not ok then error(err, 0) end
  return ntasks > 0 or waiting > 0
end

--- Milliseconds until kiro needs a step: 0 when it has work now, nil when
--- only I/O on kiro.pollfd() can give it some.
---@return integer|nil
function tasks.timeout_ms()
  if rhead <= rtail or nwakes > 0 then return 0 end
  local t = core.backend_timeout()
  if t < 0 then return nil end
  return t
end

-- A host coroutine's wait: the adapter suspends it until it is woken.
local function host_wait(h, w)
  while not w.woken do h.wait(w) end
end

--- Waits until w.woken is set by tasks.wake(w).
---@param w table a wait record: { woken = false }
function tasks.block(w)
  local co = tasks.current()
  if co then
    w.task = co
    while not w.woken do coroutine.yield(WAIT) end
    w.task = nil
  elseif host and host.can_wait() then -- the host's coroutine waits the host's way
    local h = host
    w.host = h
    waiting = waiting + 1
    check_host()
    local ok, err = pcall(host_wait, h, w)
    waiting = waiting - 1
    w.host = nil
    -- Woken inside a step, which tells the host at its end whether kiro is
    -- idle (this caller may well call again first); else now.
    if not stepping then check_host() end
    if not ok then error(err, 0) end
  else
    while not w.woken do core.step() end
  end
  w.woken = false
end

---@param w table a wait record given to tasks.block
function tasks.wake(w)
  if w.woken then return end
  w.woken = true
  if w.task then
    schedule(w.task)
  elseif w.host then
    nwakes = nwakes + 1
    wakes[nwakes] = w
  end
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

---@class kiro.Napper
---@field cut boolean
local Napper = {}
Napper.__index = Napper

--- Suspends the caller for ms, or until stop(); whether it was stopped
--- (once stopped, at once).
---@param ms number
---@return boolean stopped
function Napper:nap(ms)
  if self.cut then return true end
  local ev = tasks.event()
  self.ev = ev
  local t = core.timer(math.max(0, math.ceil(ms)), function() ev:set() end)
  ev:wait()
  t:stop()
  self.ev = nil
  return self.cut
end

--- Ends the nap under way, and every later one at once; calls what
--- on_stop was given.
function Napper:stop()
  self.cut = true
  if self.ev then self.ev:set() end
  local hooks = self.hooks
  self.hooks = nil
  for fn in pairs(hooks or {}) do fn() end
end

--- Has fn called once stop() is (at once if it was): something else to cut
--- short, a request under way say. Returns the function that takes it back.
---@param fn function
---@return function forget
function Napper:on_stop(fn)
  if self.cut then
    fn()
    return function() end
  end
  local hooks = self.hooks or {}
  self.hooks = hooks
  hooks[fn] = true
  return function() hooks[fn] = nil end
end

--- Whether v is a napper (tasks.napper), for an option that takes one.
---@param v any
---@return boolean
function tasks.is_napper(v)
  return getmetatable(v) == Napper
end

--- Naps that a stop cuts short (a loop that polls, backs off or beats a
--- heartbeat, and must end at once when told).
---@return kiro.Napper
function tasks.napper()
  return setmetatable({ cut = false }, Napper)
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
  check_host()
end

return tasks
