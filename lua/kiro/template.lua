--- Prompt templating: chat messages to the prompt text the seed's backends
-- expect ("User: Hello\n\nAssistant: ").

local template = {}

template.labels = {
  system = "System",
  user = "User",
  assistant = "Assistant",
}

--- render(messages [, opts]) -> string
--- messages: an array of { role = "system"|"user"|"assistant", content = string }.
--- opts.labels: role -> label overrides; opts.separator (default "\n\n");
--- opts.reply_role (default "assistant"): the open turn appended at the end,
--- or false for none.
---@param messages table[] the chat, in order
---@param opts? table labels, separator, reply_role
---@return string prompt
function template.render(messages, opts)
  opts = opts or {}
  if type(messages) ~= "table" then
    error("template.render: messages must be an array of {role=, content=} tables", 2)
  end
  local labels = setmetatable(opts.labels or {}, { __index = template.labels })
  local sep = opts.separator or "\n\n"
  local parts = {}
  for i, m in ipairs(messages) do
    if type(m) ~= "table" then
      error(("template.render: message %d is not a table"):format(i), 2)
    end
    local label = labels[m.role]
    if not label then
      error(("template.render: message %d has unknown role %q"):format(i, tostring(m.role)), 2)
    end
    if type(m.content) ~= "string" then
      error(("template.render: message %d has no string content"):format(i), 2)
    end
    parts[#parts + 1] = label .. ": " .. m.content
  end
  local reply_role = opts.reply_role
  if reply_role == nil then reply_role = "assistant" end
  if reply_role then
    parts[#parts + 1] = labels[reply_role] .. ": "
  end
  return table.concat(parts, sep)
end

local parts = {}

--- The prompt form of one user turn, split where the user's text goes:
--- what goes before it and after it (template "default": render's seed
--- form, "User: " and "\n\nAssistant: "). kiro.call's opts.template puts it
--- around the prompt for backends that take a prompt text (JSON Lines,
--- oneshot); an ACP agent takes the text as it is.
---@param name string "default" (the only template so far)
---@return string? before, string? after nil for an unknown name
function template.parts(name)
  if name ~= "default" then return nil end
  if not parts[name] then
    local MARK = "\1kiro-rt-prompt\1"
    local whole = template.render { { role = "user", content = MARK } }
    local i, j = whole:find(MARK, 1, true)
    parts[name] = { whole:sub(1, i - 1), whole:sub(j + 1) }
  end
  return parts[name][1], parts[name][2]
end

return template
