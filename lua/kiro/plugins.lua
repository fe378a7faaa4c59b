--- Where plugins are found: `plugins/KIND/NAME.lua` (KIND: policies,
-- channels, bots), first in the directories a configuration names, then
-- among the ones kiro-rt ships: beside this file in a source tree
-- (lua/kiro/ -> plugins/), under an installed prefix (share/lua/5.4/kiro/
-- -> share/kiro-rt/plugins/), or, for the Lua built into kiro-rt, beside
-- its executable (bin/ -> share/kiro-rt/plugins, build/ -> plugins).

local core = require "kiro.core"

-- Where require found this module: its file, or ":kiro-rt:" (compiled in).
local _, loaded_from = ...

local plugins = {}

--- The directories kiro-rt's own plugins of a kind are in, in order:
--- those that exist, as absolute paths.
---@param kind string
---@return string[]
function plugins.shipped(kind)
  local candidates = {}
  -- (this file's own directory, when it was loaded from one: the Lua
  -- compiled into kiro-rt has none, whatever the directory it runs in holds)
  local file = type(loaded_from) == "string" and loaded_from ~= ":kiro-rt:" and core.realpath(loaded_from)
  local here = file and file:match("^(.*)/[^/]*$")
  if here then
    candidates[#candidates + 1] = here .. "/../../plugins/" .. kind
    candidates[#candidates + 1] = here .. "/../../../kiro-rt/plugins/" .. kind
  end
  local exe = core.exe()
  local bin = exe and exe:match("^(.*)/[^/]*$")
  if bin then
    candidates[#candidates + 1] = bin .. "/../share/kiro-rt/plugins/" .. kind
    candidates[#candidates + 1] = bin .. "/../plugins/" .. kind
  end
  local dirs, seen = {}, {}
  for _, d in ipairs(candidates) do
    d = core.realpath(d)
    if d and not seen[d] then
      seen[d] = true
      dirs[#dirs + 1] = d
    end
  end
  return dirs
end

--- The file of plugin `name` of a kind: the first `NAME.lua` in `path` (a
--- list of directories), then among kiro-rt's own; nil and where it looked.
---@param kind string
---@param name string
---@param path? string[]
---@return string|nil file, string? message
function plugins.find(kind, name, path)
  if type(name) ~= "string" or not name:match("^[%w_-]+$") then
    return nil, ("%q is not a plugin's name (letters, digits, _ -)"):format(tostring(name))
  end
  local looked = {}
  local dirs = {}
  for _, d in ipairs(path or {}) do dirs[#dirs + 1] = d end
  for _, d in ipairs(plugins.shipped(kind)) do dirs[#dirs + 1] = d end
  for _, d in ipairs(dirs) do
    local file = d .. "/" .. name .. ".lua"
    local f = io.open(file)
    if f then
      f:close()
      return file
    end
    looked[#looked + 1] = file
  end
  local one = ({ policies = "policy", channels = "channel", bots = "bot" })[kind] or kind
  return nil, ("no %s named %q (looked for %s)"):format(one, name, table.concat(looked, ", "))
end

--- Whether a file of code or configuration may be run: not one others can
--- write (as ssh refuses such files), and yours or root's. true, or nil
--- and why not.
---@param path string
---@return boolean|nil ok, string? message
function plugins.trusted(path)
  local uid, mode = core.file_owner(path)
  if not uid then return nil, mode end
  if mode & 18 ~= 0 then -- 0022: group or others may write it
    return nil, ("%s: refused: others can write it (mode %o; chmod go-w %s)"):format(path, mode, path)
  end
  if uid ~= core.getuid() and uid ~= 0 then
    return nil, ("%s: refused: it belongs to uid %d, neither you nor root"):format(path, uid)
  end
  return true
end

--- Loads a plugin file afresh in an environment of its own: what it returns.
--- A file others can write is refused (plugins.trusted).
---@param file string
---@return any|nil value, string? message
function plugins.load(file)
  local trusted, terr = plugins.trusted(file)
  if not trusted then return nil, terr end
  local chunk, err = loadfile(file, "t", setmetatable({}, { __index = _G }))
  if not chunk then return nil, err end
  local ok, v = pcall(chunk)
  if not ok then return nil, tostring(v) end
  return v
end

return plugins
