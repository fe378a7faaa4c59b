--- redact: takes secrets out of prompts before they reach a backend, and out
-- of every line of the log.
--
--   policies = {
--     { "redact",
--       patterns = { "ACME%-%d+" },     -- Lua patterns of your own, redacted too
--       replacement = "[redacted]",
--       builtin = true },               -- the common secrets below (default true)
--   }
--
-- Built in: e-mail addresses, bearer tokens, API keys of the sk-... and
-- AKIA... forms, Telegram bot tokens, and card-like runs of 13 to 19 digits.

-- Each with a plain string any match holds, looked for first: most text
-- holds none, and a plain search costs far less than a pattern's.
local BUILTIN = {
  { "[%w._%%+-]+@[%w-]+%.[%w.-]*%a%a", "@" },        -- e-mail addresses
  { "[Bb]earer%s+[%w._~+/=-]+", "earer" },           -- Authorization: Bearer ...
  { "sk%-[%w_-]+", "sk-" },                          -- sk-... API keys
  { "AKIA%u%u%u%u%u%u%u%u%u%u%u%u%u%u%u%u", "AKIA" }, -- AWS access key ids
  { "%f[%d]%d%d%d%d%d%d+:[%w_-]+", ":" },            -- Telegram bot tokens (id:secret)
}

-- A run of digits, spaces and dashes with 13 to 19 digits: a card number.
local function cards(text, replacement)
  return (text:gsub("%f[%d][%d][%d %-]+%f[^%d %-]", function(run)
    local digits = select(2, run:gsub("%d", ""))
    if digits >= 13 and digits <= 19 then
      return replacement .. (run:match("[ %-]+$") or "")
    end
    return nil
  end))
end

return function(o)
  local replacement = o.replacement or "[redacted]"
  if type(replacement) ~= "string" then error("redact: replacement must be a string", 0) end
  local patterns = {} -- { pattern, hint (a plain string a match holds, or false) }
  if o.builtin ~= false then
    for _, p in ipairs(BUILTIN) do patterns[#patterns + 1] = p end
  end
  for i, p in ipairs(o.patterns or {}) do
    if type(p) ~= "string" or not pcall(string.find, "", p) then
      error(("redact: patterns[%d] is not a Lua pattern"):format(i), 0)
    end
    patterns[#patterns + 1] = { p, false }
  end
  local safe = replacement:gsub("%%", "%%%%")
  return {
    redact = function(text)
      for _, p in ipairs(patterns) do
        if not p[2] or text:find(p[2], 1, true) then text = text:gsub(p[1], safe) end
      end
      if o.builtin ~= false and text:find("%d%d%d%d") then text = cards(text, replacement) end
      return text
    end,
  }
end
