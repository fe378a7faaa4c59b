-- Part of `make demo`: what a warm daemon buys, measured on this machine.
local kiro = require "kiro"

local function timed(label, fn)
  local t0 = kiro.core.hrtime()
  local reply = fn()
  print(("%-28s %8.1f ms   %s"):format(label, (kiro.core.hrtime() - t0) / 1e6, reply))
end

timed("oneshot (spawn per call)", function()
  return assert(kiro.chat("User: Hello\n\nAssistant: ", { mode = "oneshot" }))
end)
for i = 1, 3 do
  timed(("daemon call %d"):format(i), function()
    return assert(kiro.chat("User: Hello\n\nAssistant: "))
  end)
end
local s = kiro.stats()
print(("daemons: %d, requests: %d (daemon %d, oneshot %d), fallbacks: %d"):format(
  s.daemons, s.requests, s.daemon_requests, s.oneshot_requests, s.fallbacks))
