-- A luv program (the host) with a 50 ms repeating timer, streaming replies
-- through kiro driven by kiro.host.luv, from a coroutine; and a kiro task
-- spawned under it. Prints one JSON line: the timer's ticks, how long it
-- ran, each chunk's arrival (ms since start) per stream, and the task's reply.
-- Usage: lua5.4 luv_stream.lua PROMPT [PROMPT...] (kiro-sim from the environment)
local uv = require "luv"
local cjson = require "cjson"
local kiro = require "kiro"

kiro.configure { host = kiro.host.luv() }
local t0 = uv.hrtime()
local function ms() return (uv.hrtime() - t0) / 1e6 end
local ticks = 0
local tick = uv.new_timer()
tick:start(50, 50, function() ticks = ticks + 1 end)

local out = { streams = {}, errors = {} }
coroutine.wrap(function()
  for i, prompt in ipairs(arg) do
    local arrivals, text = {}, {}
    local ok, err = pcall(function()
      for chunk in kiro.stream(prompt) do
        arrivals[#arrivals + 1] = ms()
        text[#text + 1] = chunk
      end
    end)
    out.streams[i] = { arrivals = arrivals, text = table.concat(text) }
    if not ok then out.errors[#out.errors + 1] = tostring(err) end
  end
  out.elapsed_ms, out.ticks = ms(), ticks
  tick:stop()
  tick:close()
end)()
kiro.spawn(function() out.task = kiro.chat("from a task") end)
uv.run()
out.fallbacks = kiro.stats().fallbacks
print(cjson.encode(out))
