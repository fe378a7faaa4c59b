-- Daemon round trips through the Lua API against kiro-sim, one at a time,
-- for bench (b): prints the mean kiro.chat round trip and the mean
-- kiro.stream one (a four-word prompt: four chunks), in us.
-- Usage: kiro-rt run bench/roundtrip.lua KIRO_SIM [N [PROTOCOL]]
local kiro = require "kiro"
local hrtime = kiro.core.hrtime
local sim, n, protocol = arg[1], tonumber(arg[2]) or 20000, arg[3] or "jsonl"
kiro.configure { cli_path = sim, env = false, mode = "daemon", protocol = protocol }
for _ = 1, 1000 do assert(kiro.chat("ping")) end -- warm
local t0 = hrtime()
for _ = 1, n do assert(kiro.chat("ping")) end
local chat_us = (hrtime() - t0) / 1e3 / n
local ns = n // 4
t0 = hrtime()
for _ = 1, ns do
  for _ in kiro.stream("ping pong ping pong") do end
end
print(("%.2f %.2f"):format(chat_us, (hrtime() - t0) / 1e3 / ns))
