-- The loop a user would write by hand (the peer of kiro.chat in bench (b)):
-- luv spawns kiro-sim's daemon, lua-cjson encodes each request and decodes
-- each reply, one request at a time. Prints the mean round trip in us.
-- Usage: lua5.4 bench/luv_peer.lua KIRO_SIM N
local uv = require "luv"
local cjson = require "cjson"

local sim, n = arg[1], tonumber(arg[2]) or 20000
local stdin, stdout = uv.new_pipe(false), uv.new_pipe(false)
local child
child = assert(uv.spawn(sim, { args = { "daemon" }, stdio = { stdin, stdout, 2 } }, function()
  -- the daemon saw its stdin close and left: the last handles go here,
  -- so uv.run returns with nothing open
  stdout:close()
  child:close()
end), "cannot spawn " .. sim)

local buf, i, t0 = "", -1000, nil -- 1000 warm-up rounds
local request = cjson.encode { prompt = "ping", stream = false } .. "\n"

local function send()
  if i == 0 then t0 = uv.hrtime() end
  if i == n then
    print(("%.2f"):format((uv.hrtime() - t0) / 1e3 / n))
    stdout:read_stop()
    stdin:close()
    return
  end
  stdin:write(request)
end

stdout:read_start(function(err, data)
  assert(not err, err)
  if not data then return end
  buf = buf .. data
  local nl = buf:find("\n", 1, true)
  while nl do
    local reply = cjson.decode(buf:sub(1, nl - 1))
    assert(reply.content == "You said: ping")
    buf = buf:sub(nl + 1)
    i = i + 1
    send()
    nl = buf:find("\n", 1, true)
  end
end)
send()
uv.run()
