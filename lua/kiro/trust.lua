--- Trust lists: the tool calls an ACP agent may make without asking each
-- time, as the user chose them (like kiro-cli's --trust-tools). A list is
-- "all", or { kinds = { KIND, ... }, titles = { PATTERN, ... } }: a tool
-- call is trusted when its kind is listed or its title matches one of the
-- Lua patterns. Where no permission hook decides, a trusted tool call is
-- allowed and any other rejected.

local trust = {}

--- ACP's tool kinds (the schema's ToolKind): what `kinds` may name.
trust.KINDS = { "read", "edit", "delete", "move", "search", "execute", "think", "fetch", "switch_mode", "other" }
local is_kind = {}
for _, k in ipairs(trust.KINDS) do is_kind[k] = true end

local SHAPE = 'must be "all" or { kinds = { KIND, ... }, titles = { PATTERN, ... } }'

--- Checks a trust list.
---@param v any
---@return string|table|nil list v when it is one
---@return string? message what is wrong, naming the key ("trust ..." )
function trust.check(v)
  if v == "all" then return v end
  if type(v) ~= "table" then return nil, "trust " .. SHAPE end
  for key, list in pairs(v) do
    if key ~= "kinds" and key ~= "titles" then
      return nil, ("trust: unknown key '%s' (it takes kinds and titles)"):format(tostring(key))
    end
    if type(list) ~= "table" then return nil, ("trust.%s must be an array of strings"):format(key) end
    local n = 0
    for i, s in pairs(list) do
      n = n + 1
      if math.type(i) ~= "integer" or type(s) ~= "string" then
        return nil, ("trust.%s must be an array of strings"):format(key)
      end
      if key == "kinds" and not is_kind[s] then
        return nil, ("trust.kinds: %q is not an ACP tool kind (%s)"):format(s, table.concat(trust.KINDS, ", "))
      end
      if key == "titles" and not pcall(string.find, "", s) then
        return nil, ("trust.titles: %q is not a valid Lua pattern"):format(s)
      end
    end
    if n ~= #list then return nil, ("trust.%s must be an array of strings"):format(key) end
  end
  return v
end

--- Parses the command line's comma-separated kinds (--trust-tools).
---@param text string
---@return table|nil list { kinds = {...} }
---@return string? message
function trust.parse_kinds(text)
  local kinds = {}
  for k in (text .. ","):gmatch("([^,]*),") do
    if k ~= "" then kinds[#kinds + 1] = k end
  end
  if #kinds == 0 then return nil, "--trust-tools needs one or more tool kinds, comma-separated" end
  local list, err = trust.check { kinds = kinds }
  if not list then return nil, "--trust-tools: " .. err:gsub("^trust%.kinds: ", "") end
  return list
end

--- Whether a list trusts a tool call ({ kind =, title = }, as ACP gives them).
---@param list string|table|nil a checked list
---@param tool table
---@return boolean
function trust.allows(list, tool)
  if list == "all" then return true end
  if type(list) ~= "table" then return false end
  for _, k in ipairs(list.kinds or {}) do
    if tool.kind == k then return true end
  end
  if type(tool.title) == "string" then
    for _, p in ipairs(list.titles or {}) do
      if tool.title:find(p) then return true end
    end
  end
  return false
end

return trust
