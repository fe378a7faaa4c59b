--- failover: a chain of backends, each behind a circuit breaker.
--
--   policies = {
--     { "failover", chain = { "primary", "spare" },  -- in order of preference
--       failures = 3,         -- failures within window_ms that open a backend's circuit
--       window_ms = 60000,
--       cooldown_ms = 30000,  -- an open circuit skips its backend this long; then one
--                             -- request tries it (half-open): success closes the circuit,
--                             -- failure opens it again
--       codes = { ... } },    -- the failure codes that count (default below)
--   }
--
-- A request for a backend of the chain goes to the first one from there on
-- whose circuit is closed (or half-open and not being tried). When it fails
-- before any of its reply reached the caller, the next such backend serves
-- it, within what is left of its timeout_ms; when none is left, the
-- policies after this one (and in the end kiro's own) decide.

local kiro = require "kiro"

local DEFAULT_CODES = { "spawn", "crashed", "timeout", "overloaded", "protocol", "backend", "auth" }

local function integer(o, key, default, min)
  local v = o[key]
  if v == nil then return default end
  if math.type(v) ~= "integer" or v < min then
    error(("failover: %s must be an integer >= %d, got %q"):format(key, min, tostring(v)), 0)
  end
  return v
end

return function(o)
  local chain = o.chain
  if type(chain) ~= "table" or #chain < 2 then
    error("failover: chain must list two backends or more, in order of preference", 0)
  end
  local failures = integer(o, "failures", 3, 1)
  local window_ms = integer(o, "window_ms", 60000, 1)
  local cooldown_ms = integer(o, "cooldown_ms", 30000, 0)
  local counts = {}
  for _, code in ipairs(o.codes or DEFAULT_CODES) do counts[code] = true end

  local at = {}    -- backend -> its place in the chain
  local state = {} -- backend -> { fails = { ms, ... }, open_until = ms|nil, trying = bool }
  for i, name in ipairs(chain) do
    if type(name) ~= "string" then error("failover: chain must list backend names", 0) end
    at[name] = i
    state[name] = { fails = {} }
  end

  -- Whether a request may go to the backend now; a half-open one takes
  -- one request at a time (marked here).
  local function take(name)
    local s = state[name]
    if not s.open_until then return true end
    if kiro.now() < s.open_until or s.trying then return false end
    s.trying = true
    kiro.log("info", "kiro.policy", ("failover: trying backend %s again after its cool-down"):format(name))
    return true
  end

  -- The first backend of the chain from place i on that may serve now.
  local function pick(i)
    for k = i, #chain do
      if take(chain[k]) then return chain[k] end
    end
    return nil
  end

  local function failed(name)
    local s, now = state[name], kiro.now()
    if s.trying then -- the one request after the cool-down failed: open again
      s.trying, s.open_until, s.fails = false, now + cooldown_ms, {}
      kiro.log("warn", "kiro.policy", ("failover: backend %s still fails; its circuit opens again for %d ms")
        :format(name, cooldown_ms))
      return
    end
    local kept = {}
    for _, t in ipairs(s.fails) do if now - t < window_ms then kept[#kept + 1] = t end end
    kept[#kept + 1] = now
    s.fails = kept
    if #kept >= failures and not s.open_until then
      s.open_until, s.fails = now + cooldown_ms, {}
      kiro.log("warn", "kiro.policy", ("failover: backend %s failed %d times within %d ms; its circuit opens for %d ms")
        :format(name, #kept, window_ms, cooldown_ms))
    end
  end

  local policy = {}

  function policy.route(req)
    local i = at[req.backend]
    if not i then return end
    local name = pick(i)
    if name then req.backend = name end -- all open: the one asked for, and its failure decides
  end

  function policy.decide(failure)
    local i = at[failure.backend]
    if not i then return nil end
    if counts[failure.code] then failed(failure.backend) end
    if failure.delivered or failure.remaining_ms <= 0 then return nil end
    local name = pick(i + 1)
    if name then return { backend = name } end
    return nil
  end

  function policy.finished(outcome)
    local s = state[outcome.backend]
    if not s then return end
    if outcome.code == nil then
      if s.open_until then
        kiro.log("info", "kiro.policy",
          ("failover: backend %s works again; its circuit closes"):format(outcome.backend))
      end
      s.open_until, s.trying, s.fails = nil, false, {}
    else
      -- The trial is over: a failure reopened the circuit already (decide);
      -- anything else (cancelled, a cache hit, ...) was no verdict, and the
      -- next request tries.
      s.trying = false
    end
  end

  return policy
end
