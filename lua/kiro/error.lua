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

return M
