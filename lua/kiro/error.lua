--- The error model of kiro, in one place (README, "Errors"):
--
-- * a function that can fail at run time returns `nil, message, code`
--   (kiro.chat, call:next, core functions that touch the system);
-- * an iterator, or anything else that cannot return a triple, raises a
--   kiro.Error: a table with `code` and `message` that prints as
--   "kiro: code: message" (the kiro.stream iterator);
-- * misuse (a bad argument, an unknown option) raises a plain message at
--   the caller's level, as Lua's own functions do.
--
-- Codes: timeout, spawn, crashed, protocol, backend, cancelled, overloaded,
-- closed, auth, session_lost, config.

local M = {}

---@class kiro.Error
---@field code string    what went wrong, one of the codes above
---@field message string what went wrong, for people
local Error = {}
Error.__index = Error
Error.__name = "kiro.Error"
Error.__tostring = function(e) return ("kiro: %s: %s"):format(e.code, e.message) end
M.Error = Error

--- A kiro.Error.
---@param code string
---@param message string
---@return kiro.Error
function M.new(code, message)
  return setmetatable({ code = code, message = message }, Error)
end

--- Whether v is a kiro.Error.
---@param v any
---@return boolean
function M.is(v)
  return getmetatable(v) == Error
end

--- Raises a kiro.Error (for iterators and what cannot return a triple).
---@param code string
---@param message string
function M.raise(code, message)
  error(M.new(code, message), 0)
end

--- Raises misuse at the caller of the function that calls this: `fname: msg`.
---@param fname string the public function's name, e.g. "kiro.chat"
---@param msg string
---@param level? integer stack levels above that function (default 1: its caller)
function M.misuse(fname, msg, level)
  error(fname .. ": " .. msg, 2 + (level or 1))
end

-- Edits (insert, delete, substitute, swap two neighbours) from a to b.
local function distance(a, b)
  local prev2, prev = {}, {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    local cur = { [0] = i }
    for j = 1, #b do
      local cost = a:byte(i) == b:byte(j) and 0 or 1
      local d = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
      if i > 1 and j > 1 and a:byte(i) == b:byte(j - 1) and a:byte(i - 1) == b:byte(j) then
        d = math.min(d, prev2[j - 2] + 1)
      end
      cur[j] = d
    end
    prev2, prev = prev, cur
  end
  return prev[#b]
end

--- " (did you mean 'x'?)" for the name among `names` (a list, or a table
--- keyed by them) nearest to one that is not there, when one is near
--- enough to be a slip of the keyboard (or it is the start of one: a
--- unit left off); else "".
---@param name any
---@param names table
---@return string
function M.did_you_mean(name, names)
  if type(name) ~= "string" then return "" end
  local low = name:lower()
  local best, best_key
  local function try(c)
    if type(c) ~= "string" or c == name then return end -- (a name known elsewhere, not here)
    local d = distance(low, c:lower())
    if #name >= 4 and c:lower():find(low, 1, true) == 1 then d = math.min(d, 1) end
    if d > math.max(1, math.min(2, #name // 3)) then return end
    -- nearest first; then the one as long (a swap, not a letter lost); then by name
    local key = { d, math.abs(#c - #name), c }
    if not best_key or key[1] < best_key[1] or key[1] == best_key[1] and (key[2] < best_key[2]
        or key[2] == best_key[2] and key[3] < best_key[3]) then
      best, best_key = c, key
    end
  end
  for k, v in pairs(names) do
    if math.type(k) == "integer" then try(v) else try(k) end
  end
  return best and (" (did you mean '%s'?)"):format(best) or ""
end

return M
