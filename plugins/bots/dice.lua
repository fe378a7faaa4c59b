--- dice: an assistant with a command of its own, /roll (channels.NAME.bot = "dice").
--   /roll        one six-sided die
--   /roll 3d20   three twenty-sided dice, and their sum
-- A command is a function(args, chat) returning the answer: it runs in the
-- bot (no backend is asked), in turn with the chat's messages.

local function roll(args)
  local n, sides = args:match("^(%d*)d(%d+)$")
  if args == "" then n, sides = "1", "6" end
  n, sides = tonumber(n ~= "" and n or "1"), tonumber(sides)
  if not n or not sides or n < 1 or n > 100 or sides < 2 or sides > 1000 then
    return "Roll what? Try /roll, /roll d20 or /roll 3d6."
  end
  local dice, sum = {}, 0
  for i = 1, n do
    dice[i] = math.random(sides)
    sum = sum + dice[i]
  end
  if n == 1 then return ("🎲 %d"):format(sum) end
  return ("🎲 %s = %d"):format(table.concat(dice, " + "), sum)
end

return {
  system = "You are a cheerful game master. Keep answers short.",
  help = "I am a game master.",
  commands = { roll = roll },
}
