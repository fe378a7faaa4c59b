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

return template
