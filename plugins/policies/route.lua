--- route: picks a backend, model or template by what a prompt looks like.
--
--   policies = {
--     { "route", rules = {
--         { prefix = "/big ", strip = true, backend = "big" },  -- a command word
--         { match = "```", template = "code" },                 -- a Lua pattern
--         { min_chars = 4000, backend = "long-context" },
--         { max_chars = 200, backend = "fast", model = "small" },
--     } },
--   }
--
-- The first rule whose every condition holds (prefix, match, min_chars,
-- max_chars) sets what it names (backend, model, template); strip takes the
-- prefix off the prompt. No rule: the request goes as it was asked.

local CONDITIONS = { prefix = "string", match = "string", min_chars = "number", max_chars = "number" }
local ACTIONS = { backend = "string", model = "string", template = "string", strip = "boolean" }

local function check(i, rule)
  local at = ("route: rules[%d]"):format(i)
  if type(rule) ~= "table" then error(at .. " must be a table", 0) end
  local cond, act = false, false
  for k, v in pairs(rule) do
    local want = CONDITIONS[k] or ACTIONS[k]
    if not want then
      error(("%s: %s is neither a condition (prefix, match, min_chars, max_chars) nor an action "
        .. "(backend, model, template, strip)"):format(at, tostring(k)), 0)
    end
    if type(v) ~= want then error(("%s.%s must be a %s"):format(at, k, want), 0) end
    if CONDITIONS[k] then cond = true elseif k ~= "strip" then act = true end
  end
  if not cond or not act then error(at .. " needs a condition and something to set", 0) end
  if rule.match and not pcall(string.find, "", rule.match) then
    error(("%s.match: %q is not a Lua pattern"):format(at, rule.match), 0)
  end
  if rule.strip and not rule.prefix then error(at .. ": strip needs a prefix", 0) end
end

local function holds(rule, prompt)
  local n = #prompt
  return (not rule.prefix or prompt:sub(1, #rule.prefix) == rule.prefix)
    and (not rule.match or prompt:find(rule.match) ~= nil)
    and (not rule.min_chars or n >= rule.min_chars)
    and (not rule.max_chars or n <= rule.max_chars)
end

return function(o)
  local rules = o.rules
  if type(rules) ~= "table" or #rules == 0 then error("route: rules must list one rule or more", 0) end
  for i, rule in ipairs(rules) do check(i, rule) end
  return {
    route = function(req)
      for _, rule in ipairs(rules) do
        if holds(rule, req.prompt) then
          if rule.strip then req.prompt = req.prompt:sub(#rule.prefix + 1) end
          req.backend = rule.backend or req.backend
          req.model = rule.model or req.model
          req.template = rule.template or req.template
          return
        end
      end
    end,
  }
end
