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
  local labels = setmetatable({}, { __index = template.labels }) -- the caller's table stays as it is
  for role, label in pairs(opts.labels or {}) do labels[role] = label end
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


--- What a named template may set (kiro.configure's `templates`).
template.KEYS = { system = "string", max_turns = "number", max_chars = "number", labels = "table",
                  separator = "string" }

--- Checks a named template's settings: true, or nil and what is wrong.
---@param name any
---@param t any
---@return boolean|nil ok
---@return string? message
function template.check(name, t)
  local at = "templates." .. tostring(name)
  if type(name) ~= "string" or not name:match("^[%w_.-]+$") or name == "default" then
    return nil, ("templates: %q cannot name a template (letters, digits, _ . -; not default)"):format(tostring(name))
  end
  if type(t) ~= "table" then return nil, at .. " must be a table" end
  for k, v in pairs(t) do
    local want = template.KEYS[k]
    if not want then
      return nil, ("%s.%s: unknown setting (system, max_turns, max_chars, labels, separator)"):format(at, tostring(k))
    end
    if type(v) ~= want then return nil, ("%s.%s must be a %s"):format(at, k, want) end
    if want == "number" and (math.type(v) ~= "integer" or v < 1) then
      return nil, ("%s.%s must be an integer >= 1"):format(at, k)
    end
  end
  for role, label in pairs(t.labels or {}) do
    if not template.labels[role] or type(label) ~= "string" then
      return nil, ("%s.labels: %q = %q is not a role's label (system, user, assistant)")
        :format(at, tostring(role), tostring(label))
    end
  end
  return true
end

-- {{name}} filled from vars ({{date}}: today's, unless vars has one); nil
-- and the name of the first variable that has no value.
local function fill(text, vars)
  local missing
  local out = text:gsub("{{%s*([%w_]+)%s*}}", function(name)
    local v = vars and vars[name]
    if v == nil and name == "date" then v = os.date("%Y-%m-%d") end
    if v == nil then
      missing = missing or name
      return ""
    end
    return tostring(v)
  end)
  if missing then return nil, missing end
  return out
end

--- The history a template keeps: the last max_turns messages, then as
--- many of the newest as fit in max_chars (a message is kept whole or not
--- at all).
---@param history table[]
---@param t table the template
---@return table[]
function template.trim(history, t)
  local first = 1
  if t.max_turns and #history > t.max_turns then first = #history - t.max_turns + 1 end
  if t.max_chars then
    local used = 0
    for i = #history, first, -1 do
      used = used + #history[i].content
      if used > t.max_chars then
        first = i + 1
        break
      end
    end
  end
  return table.move(history, first, #history, 1, {})
end

--- A named template's form around one user turn, for a call: before and
--- after the user's text (its system prompt, with variables filled, and its
--- trimmed history go before). nil and a message for a variable with no
--- value.
---@param t table the template (kiro.configure's templates[name])
---@param name string its name, for the message
---@param history? table[] the call's opts.history
---@param vars? table the call's opts.vars
---@return string|nil before
---@return string after_or_message
function template.form(t, name, history, vars)
  local messages = {}
  if t.system then
    local system, missing = fill(t.system, vars)
    if not system then
      return nil, ("template %s: no value for {{%s}} (give it in opts.vars, or --var %s=VALUE)")
        :format(name, missing, missing)
    end
    messages[1] = { role = "system", content = system }
  end
  for _, m in ipairs(template.trim(history or {}, t)) do messages[#messages + 1] = m end
  local MARK = "\1kiro-rt-prompt\1"
  messages[#messages + 1] = { role = "user", content = MARK }
  local whole = template.render(messages, { labels = t.labels, separator = t.separator })
  local i, j = whole:find(MARK, 1, true)
  return whole:sub(1, i - 1), whole:sub(j + 1)
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
