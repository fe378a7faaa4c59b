--- kiro: drive LLM command-line backends from Lua.
--
--   local kiro = require "kiro"
--   print(kiro.chat("User: Hello\n\nAssistant: "))
--   for chunk in kiro.stream("Tell me a story") do io.write(chunk) end
--
-- The C core owns the event loop, the processes, the pipes and the JSON
-- Lines codec; kiro.core is its private face, which may change with any
-- release. This file only assembles the public face from its parts:
--   kiro.tasks   the scheduler: tasks, waiting, events, sleep
--   kiro.config  options, their defaults, the backends calls name
--   kiro.call    one request and its fallback policy loop
--   kiro.flight  the response cache and request coalescing
--   kiro.exposition, kiro.metrics  Prometheus metrics
--   kiro.error   the error model
-- Errors (README, "Errors"): functions return nil, message, code;
-- iterators raise a kiro.Error; misuse raises at the caller.

local core = require "kiro.core"
local call = require "kiro.call"
local config = require "kiro.config"
local errors = require "kiro.error"
local flight = require "kiro.flight"
local tasks = require "kiro.tasks"

local kiro = {
  ---@type string
  version = core.version,
  template = require "kiro.template",
  ---@type kiro.Error the metatable of kiro's error objects
  Error = errors.Error,
  MAX_MS = config.MAX_MS,
  --- private: the C core's face under this module
  core = core,
}

--- Starts fn(...) as a kiro task (a coroutine driven by the loop).
---@type fun(fn: function, ...): thread
kiro.spawn = tasks.spawn
--- Runs the loop until no task is left; a task's error goes to the
--- handler (on_task_error) or the log, and the others go on. Returns how
--- many tasks failed.
---@type fun(): integer
kiro.run = tasks.run
--- For a host that drives kiro from its own loop (README, "Embedding"):
--- runs the tasks that can run, waits timeout_ms at the most for I/O or a
--- timer (nil: as long as kiro needs; 0: never), handles it, runs the tasks
--- it woke; returns whether kiro has more to drive.
---@type fun(timeout_ms?: integer): boolean
kiro.step = tasks.step
--- Milliseconds until kiro needs a step (0: now; nil: only when kiro.pollfd() turns readable).
---@type fun(): integer|nil
kiro.timeout_ms = tasks.timeout_ms
--- Whether kiro has tasks, or host coroutines waiting on it, to drive.
---@type fun(): boolean
kiro.busy = tasks.busy

--- A descriptor that turns readable when kiro has I/O to handle (libuv's
--- backend descriptor): a host watches it, and calls kiro.step(0).
---@return integer fd
function kiro.pollfd()
  return core.backend_fd()
end

local Pollable = {}
Pollable.__index = Pollable
--- cqueues' protocol: the descriptor to poll.
---@return integer
function Pollable.pollfd() return core.backend_fd() end
--- cqueues' protocol: poll for reading.
---@return string
function Pollable.events() return "r" end
--- cqueues' protocol: seconds until kiro needs a step, or nil.
---@return number|nil
function Pollable.timeout()
  local t = tasks.timeout_ms()
  return t and t / 1000
end

--- An object cqueues.poll() takes (pollfd, events, timeout): ready when kiro needs a step.
---@return table
function kiro.pollable()
  return setmetatable({}, Pollable)
end

--- Host adapters by name (kiro.host.luv, kiro.host.cqueues, ...), loaded when first named.
kiro.host = setmetatable({}, { __index = function(t, name)
  local ok, adapter = pcall(require, "kiro.host." .. tostring(name))
  if not ok then error(("kiro.host.%s: %s"):format(tostring(name), tostring(adapter)), 2) end
  rawset(t, name, adapter)
  return adapter
end })
--- Suspends the calling task (blocks a plain caller) for ms milliseconds.
---@type fun(ms: integer)
kiro.sleep = tasks.sleep
--- HTTP requests on kiro's loop (kiro.http.request).
kiro.http = require "kiro.http"
--- WebSocket connections on kiro's loop (kiro.websocket.connect).
kiro.websocket = require "kiro.websocket"
--- Milliseconds on a monotonic clock (the event loop's: the time of its
--- last turn), for measuring spans, not for dates.
---@type fun(): integer
kiro.now = core.now
--- A one-shot signal between tasks: ev:wait(), ev:set(), ev:is_set().
---@type fun(): kiro.Event
kiro.event = tasks.event
--- Naps that a stop cuts short: n:nap(ms) -> whether stopped, n:stop().
kiro.napper = tasks.napper
--- Sets runtime options (README, "Configuration"); unknown keys are misuse.
---@type fun(options: table)
kiro.configure = config.configure
--- The effective value of an option, after environment defaults.
---@type fun(name: string): any
kiro.option = config.option
--- Parses a KIRO_USE_DAEMON-style boolean: true, false, or nil, message.
---@type fun(name: string, value: string): boolean|nil, string?
kiro.parse_bool = config.parse_bool

--- A reply, whole.
---@param prompt string
---@param opts? table model, mode, timeout_ms, first_chunk_timeout_ms, stall_timeout_ms, cli_path, env, cache
---@return string|nil reply, string? message, string? code
function kiro.chat(prompt, opts)
  opts = call.check_opts("kiro.chat", prompt, opts)
  -- (an error out of a hook, or a host's, takes the call with it: cancelled)
  local c <close> = flight.open(prompt, opts, false)
  local first, parts
  while true do
    local chunk, msg, code = c:next()
    if chunk then
      if not first then
        first = chunk
      else
        parts = parts or { first }
        parts[#parts + 1] = chunk
      end
    elseif code then
      return nil, msg, code
    else
      return parts and table.concat(parts) or first or ""
    end
  end
end

--- A reply, chunk by chunk: `for chunk in kiro.stream(prompt) do ... end`.
--- Raises a kiro.Error on failure; leaving the loop early (break, error,
--- return) cancels the request.
---@param prompt string
---@param opts? table as for kiro.chat
---@return function iterator, nil, nil, table closing value
function kiro.stream(prompt, opts)
  opts = call.check_opts("kiro.stream", prompt, opts)
  local c = flight.open(prompt, opts, true)
  local function iter()
    while true do
      local chunk, msg, code = c:next()
      if code then errors.raise(code, msg) end
      if chunk == nil or #chunk > 0 then return chunk end
    end
  end
  return iter, nil, nil, c
end

--- The request under chat and stream, for callers that relay it (like the
--- server): c:next() -> chunk, nil at the end, or nil, message, code;
--- c:cancel(); c:pause(on) (flow control).
---@param prompt string
---@param opts? table as for kiro.chat, plus stream (default true)
---@return kiro.Call|kiro.Reader
function kiro.call(prompt, opts)
  opts = call.check_opts("kiro.call", prompt, opts)
  return flight.open(prompt, opts, opts.stream ~= false)
end

--- Counters: requests, ok, errors, chunks, fallbacks, pools, cache, ...
---@return table
function kiro.stats()
  local s = core.stats()
  local cs = call.stats
  s.fallbacks, s.retries = cs.fallbacks, cs.retries
  s.fallbacks_by_reason = {}
  for k, v in pairs(cs.fallbacks_by_reason) do s.fallbacks_by_reason[k] = v end
  s.tasks, s.task_errors = tasks.count(), tasks.failed()
  s.cache = flight.stats()
  return s
end

--- Prometheus text exposition (format 0.0.4) of this runtime.
---@return string
function kiro.metrics()
  return require("kiro.exposition").render(kiro.stats(), kiro.version)
end

--- Ends every request (`cancelled`) and stops every backend; no request is
--- taken afterwards.
function kiro.shutdown() core.shutdown(false) end

--- Ends every request (`cancelled`), stops every backend, waits until each
--- one has exited, and empties the cache; the runtime stays usable (pools
--- start again on demand). Outside any task it also forgets tasks left
--- waiting (say, by a kiro.run that ended in an error).
function kiro.reset()
  core.shutdown(true)
  flight.clear()
  if tasks.current() then
    while core.stats().children > 0 do tasks.sleep(5) end
    return
  end
  while core.stats().children > 0 do core.step() end
  tasks.forget_all()
end

--- Writes through kiro's logger (KIRO_LOG): "[LEVEL target] message".
---@param level string error, warn, info, debug or trace
---@param target string
---@param msg string
function kiro.log(level, target, msg)
  if core.log_enabled(level, target) then core.log(level, target, msg) end
end

--- On SIGINT or SIGTERM: fn(signum), then every request ends and every
--- backend is stopped.
---@type fun(fn: fun(signum: integer))
kiro.on_signal = core.handle_signals

return kiro
