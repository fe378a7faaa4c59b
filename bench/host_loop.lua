-- Round trips through kiro driven two ways, for bench (f): by kiro.run (a
-- kiro task), or by a luv loop through kiro.host.luv (a luv coroutine).
-- Prints the mean kiro.chat round trip in us.
-- Usage: lua5.4 bench/host_loop.lua run|luv KIRO_SIM [N]
local kiro = require "kiro"
local how, sim, n = arg[1], arg[2], tonumber(arg[3]) or 10000
kiro.configure { cli_path = sim, env = false, mode = "daemon" }
local hrtime = kiro.core.hrtime
local us
local function calls()
  for _ = 1, 500 do assert(kiro.chat("ping")) end -- warm
  local t0 = hrtime()
  for _ = 1, n do assert(kiro.chat("ping")) end
  us = (hrtime() - t0) / 1e3 / n
end
if how == "luv" then
  local uv = require "luv"
  kiro.configure { host = kiro.host.luv() }
  coroutine.wrap(calls)()
  uv.run()
else
  kiro.spawn(calls)
  kiro.run()
end
print(("%.2f"):format(assert(us, "no figure")))
