-- A plain Lua host whose SIGPIPE is left at its default (death): kiro is
-- loaded, and writes 1 MB prompts to a backend that exits without reading
-- them (/bin/true, oneshot): each write meets a closed pipe. Prints one
-- JSON line: the ignored-signal masks before and after loading kiro, and
-- the replies (the host is alive to print them).
local cjson = require "cjson"
local function ignored()
  for line in io.lines("/proc/self/status") do
    local mask = line:match("^SigIgn:%s+(%x+)")
    if mask then return mask end
  end
end
local before = ignored()
local kiro = require "kiro"
local after = ignored()
kiro.configure { cli_path = "/bin/true", mode = "oneshot", log = "error" }
local replies = {}
for i = 1, 5 do replies[i] = kiro.chat(("x"):rep(1000000)) or "failed" end
print(cjson.encode { before = before, after = after, replies = replies })
