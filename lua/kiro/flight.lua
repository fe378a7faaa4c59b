--- The response cache and request coalescing. A cacheable request is a
-- flight: one backend call whose chunks every reader of it gets, each at
-- its own pace, from the first. Identical cacheable requests in flight share
-- it; a finished one fills the cache, and a cache hit is a flight that is
-- already complete. A request that is not cacheable is a plain call.

local core = require "kiro.core"
local call = require "kiro.call"
local config = require "kiro.config"
local tasks = require "kiro.tasks"

local flight = {}

local cfg = config.cfg
local flights = {}       -- key -> flight in progress
local replies            -- the response cache, made on first use
local coalesced = 0

local function reply_cache()
  replies = replies or require("kiro.cache").new {
    max_bytes = cfg.cache_max_bytes, ttl_ms = cfg.cache_ttl_ms, now = core.now,
  }
  return replies
end

config.on_change(function()
  if replies then
    replies.max_bytes, replies.ttl_ms = cfg.cache_max_bytes, cfg.cache_ttl_ms
    replies:trim()
  end
end)

---@class kiro.Flight
---@field key string the backend's key and the prompt
---@field chunks string[] the reply so far
---@field n integer how many chunks it holds
---@field done boolean
---@field readers integer readers that have not left
---@field waiters table[] wait records of readers waiting for more
---@field call? kiro.Call the backend call; nil for a cache hit
---@field msg? string the error message, once done
---@field code? string the error code, once done; nil on success
local Flight = {}
Flight.__index = Flight

--- Wakes every reader waiting for more of the reply.
function Flight:wake_all()
  local ws = self.waiters
  self.waiters = {}
  for _, w in ipairs(ws) do tasks.wake(w) end
end

--- The backend call is over: a reply that succeeded fills the cache, and
--- every reader waiting is woken.
---@param msg? string the error message
---@param code? string the error code; nil on success
function Flight:finish(msg, code)
  self.done, self.msg, self.code = true, msg, code
  if flights[self.key] == self then flights[self.key] = nil end
  if not code and self.call then reply_cache():put(self.key, self.chunks) end
  self:wake_all()
end

---@class kiro.Reader
local Reader = {}
Reader.__index = Reader
Reader.__close = function(r) r:cancel() end

--- The next chunk; nil at the end; nil, message, code on failure (as
--- kiro.Call:next).
---@return string|nil chunk, string? message, string? code
function Reader:next()
  local f = self.flight
  while true do
    if self.cancelled then return nil, "cancelled by caller", "cancelled" end
    if self.pos < f.n then
      self.pos = self.pos + 1
      call.observe_first(self, self:mode(), self.cli)
      return f.chunks[self.pos]
    end
    if f.done then
      self:leave()
      call.observe_end(self, self:mode(), f.code, self.cli, self.model)
      return nil, f.msg, f.code
    end
    if not f.pulling then
      -- Nobody is reading the backend call: this reader does, for everyone.
      f.pulling = true
      local c, msg, code = f.call:next()
      f.pulling = false
      if c then
        f.n = f.n + 1
        f.chunks[f.n] = c
        f:wake_all()
      else
        f:finish(msg, code)
      end
    else
      local w = { woken = false }
      self.w = w
      f.waiters[#f.waiters + 1] = w
      tasks.block(w)
      self.w = nil
    end
  end
end

--- How this reader was served: from the cache, by another caller's backend
--- call, or by its own.
---@return string mode "cache", "coalesced", "daemon" or "oneshot"
function Reader:mode()
  if not self.flight.call then return "cache" end
  if self.follower then return "coalesced" end
  return self.flight.call.mode
end

--- The reader is done with its flight, once: the last to leave cancels a
--- call still under way; otherwise another reader takes over pulling.
function Reader:leave()
  if self.left then return end
  self.left = true
  local f = self.flight
  f.readers = f.readers - 1
  if f.readers == 0 and not f.done then
    -- The last reader left: nobody wants this reply any more.
    if flights[f.key] == f then flights[f.key] = nil end
    f.call:cancel()
  elseif not f.done then
    f:wake_all() -- someone else takes over pulling
  end
end

--- Ends this reader `cancelled`; the flight goes on for its other readers.
function Reader:cancel()
  if self.cancelled or self.left then return end
  self.cancelled = true
  self:leave()
  if self.w then tasks.wake(self.w) end
end

--- No-op: a reader cannot hold its flight back for the others.
function Reader.pause() end

local function cacheable(prompt, opts, g)
  -- A conversation's turn, or a call that watches its agent's updates or
  -- answers its questions, is its own: never shared, never from the cache.
  if opts.session or opts.on_update or opts.permission or opts.trust then return false end
  if opts.cache ~= nil then return opts.cache end
  if g.chain.cacheable then
    local v = g.chain.cacheable(prompt, opts)
    if v ~= nil then return v end
  end
  local p = g.policy
  if type(p) == "table" and type(p.cacheable) == "function" then
    local v = p.cacheable(prompt, opts)
    if v ~= nil then return v end
  end
  local b = opts.named
  if b and b.cache ~= nil then return b.cache end
  return cfg.cache
end

--- Opens a request (opts checked): a plain call, or a reader of a shared
--- or cached flight. The cache is keyed by the backend's own key and the
--- prompt.
---@param prompt string
---@param opts table
---@param stream boolean
---@return kiro.Call|kiro.Reader
function flight.open(prompt, opts, stream)
  local g = config.current()
  if g.chain.route then -- the policies may change the request
    local routed, o, req = call.route(prompt, opts, g)
    if not routed then
      -- (a route hook before the one that failed may have picked a backend to try)
      if g.chain.finished then g.chain.finished { backend = req and req.backend, code = "policy", attempts = 0 } end
      return call.failed("policy", o)
    end
    prompt, opts = routed, o
  end
  if not cacheable(prompt, opts, g) then return call.open(prompt, opts, stream, nil, nil, g) end
  local cli, model = call.cli_of(opts), call.model_of(opts)
  local backend, owned
  if cli then backend, owned = config.backend(cli, model, opts.env, opts.protocol, opts.named, opts.backend_name, g) end
  if not backend then return call.open(prompt, opts, stream, nil, nil, g) end -- it fails the same way
  local key = backend:key() .. "\0" .. (opts.template or "") .. "\0" .. prompt
  local f = flights[key]
  local follower = f ~= nil
  if f then
    coalesced = coalesced + 1
  else
    local hit = reply_cache():get(key)
    if hit then
      f = setmetatable({ key = key, chunks = hit, n = #hit, done = true, readers = 0, waiters = {} }, Flight)
    else
      f = setmetatable({ key = key, chunks = {}, n = 0, done = false, readers = 0, waiters = {} }, Flight)
      f.call = call.open(prompt, opts, stream, backend, owned, g)
      f.call.flighted = true -- its readers are what metrics count
      flights[key] = f
      owned = false -- the call's now
    end
  end
  if owned then backend:close() end
  if not f.call or follower then -- served by another's call: no backend was asked for this one
    if g.chain.finished then g.chain.finished { backend = opts.name, code = "cache", attempts = 0 } end
  end
  f.readers = f.readers + 1
  return setmetatable({ flight = f, pos = 0, follower = follower, h0 = core.hrtime(),
    cli = cli, model = model }, Reader)
end

--- The cache's counters, and how many requests shared another's call.
---@return table stats hits, misses, evictions, bytes, entries, coalesced
function flight.stats()
  local c = replies or { hits = 0, misses = 0, evictions = 0, bytes = 0, entries = 0 }
  return { hits = c.hits, misses = c.misses, evictions = c.evictions, bytes = c.bytes,
           entries = c.entries, coalesced = coalesced }
end

--- Empties the cache (kiro.reset).
function flight.clear()
  if replies then replies:clear() end
end

return flight
