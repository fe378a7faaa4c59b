--- A response cache bounded by bytes (least recently used goes first) and by
-- age (entries older than the TTL are never served).
--
--   local c = cache.new { max_bytes = 64 * 2^20, ttl_ms = 300000, now = clock }
--   c:put(key, chunks)      -- chunks: array of strings (a reply as streamed)
--   c:get(key) -> chunks    -- or nil
--   c.hits, c.misses, c.evictions, c.bytes, c.entries
-- bytes counts the text and an estimate of Lua's own overhead per entry.

---@class kiro.Cache
---@field max_bytes integer the byte bound
---@field ttl_ms integer the age bound: older entries are never served
---@field now fun(): integer the clock, in ms
---@field hits integer
---@field misses integer
---@field evictions integer
---@field bytes integer what the entries cost: their text and overhead
---@field entries integer
local cache = {}
cache.__index = cache

--- An empty cache.
---@param opts table max_bytes, ttl_ms, and now (the clock, in ms)
---@return kiro.Cache
function cache.new(opts)
  local self = setmetatable({
    max_bytes = opts.max_bytes, ttl_ms = opts.ttl_ms, now = opts.now,
    map = {}, bytes = 0, entries = 0, hits = 0, misses = 0, evictions = 0,
  }, cache)
  -- A ring with a sentinel: head.next is the most recently used.
  self.head = {}
  self.head.next, self.head.prev = self.head, self.head
  return self
end

local function unlink(e)
  e.prev.next, e.next.prev = e.next, e.prev
end

local function push_front(self, e)
  e.next, e.prev = self.head.next, self.head
  self.head.next.prev = e
  self.head.next = e
end

--- Drops key's entry, if there is one.
---@param key string
---@param evicted? boolean count it as an eviction
function cache:remove(key, evicted)
  local e = self.map[key]
  if not e then return end
  unlink(e)
  self.map[key] = nil
  self.bytes = self.bytes - e.size
  self.entries = self.entries - 1
  if evicted then self.evictions = self.evictions + 1 end
end

--- The chunks cached for key, now the most recently used; nil when there
--- are none or they are older than the TTL. Counts a hit or a miss.
---@param key string
---@return string[]|nil chunks
function cache:get(key)
  local e = self.map[key]
  if e and self.now() - e.at > self.ttl_ms then
    self:remove(key, true)
    e = nil
  end
  if not e then
    self.misses = self.misses + 1
    return nil
  end
  self.hits = self.hits + 1
  unlink(e)
  push_front(self, e)
  return e.chunks
end

-- What an entry costs in memory, not just its text: Lua's tables and string
-- headers (measured on Lua 5.4, x86_64), so max_bytes bounds real memory.
cache.ENTRY_OVERHEAD = 340
cache.CHUNK_OVERHEAD = 64

--- Caches a reply under key, as the most recently used, evicting others to
--- make room; false when it alone is larger than max_bytes.
---@param key string
---@param chunks string[] the reply as streamed
---@return boolean stored
function cache:put(key, chunks)
  local size = #key + cache.ENTRY_OVERHEAD
  for _, c in ipairs(chunks) do size = size + #c + cache.CHUNK_OVERHEAD end
  self:remove(key)
  if size > self.max_bytes then return false end
  local e = { key = key, chunks = chunks, size = size, at = self.now() }
  self.map[key] = e
  push_front(self, e)
  self.bytes = self.bytes + size
  self.entries = self.entries + 1
  self:trim()
  return true
end

--- Evicts least recently used entries until the byte bound holds.
function cache:trim()
  while self.bytes > self.max_bytes do
    self:remove(self.head.prev.key, true)
  end
end

--- Drops expired entries (a sweep; get() also checks age).
function cache:expire()
  local now = self.now()
  local e = self.head.prev
  while e ~= self.head do
    local prev = e.prev
    if now - e.at > self.ttl_ms then self:remove(e.key, true) end
    e = prev
  end
end

--- Drops every entry; the hit, miss and eviction counts stay.
function cache:clear()
  self.map, self.bytes, self.entries = {}, 0, 0
  self.head.next, self.head.prev = self.head, self.head
end

return cache
