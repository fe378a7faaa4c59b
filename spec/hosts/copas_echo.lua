-- A copas TCP echo server (the host: Debian's copas, which runs on Lua 5.4
-- from its 5.2 directory) answering a client as fast as it asks while four
-- kiro streams run in copas threads (kiro.host.copas). Prints one JSON
-- line: the slowest echo (ms), the echoes, and each stream's chunk count
-- and text.
package.path = package.path .. ";/usr/share/lua/5.2/?.lua"
local copas = require "copas"
local socket = require "socket"
local cjson = require "cjson"
local kiro = require "kiro"

kiro.configure { host = kiro.host.copas() }
local out = { streams = {}, echoes = 0, slowest_ms = 0 }
local streaming = 4
local srv = assert(socket.bind("127.0.0.1", 0))
local _, port = srv:getsockname()
copas.addserver(srv, function(c)
  while true do
    local line = copas.receive(c, "*l")
    if not line then break end
    copas.send(c, line .. "\n")
  end
end)
for i = 1, 4 do
  copas.addthread(function()
    local n, text = 0, {}
    for chunk in kiro.stream(("stream %d: one two three four five six seven eight"):format(i)) do
      n = n + 1
      text[n] = chunk
    end
    out.streams[i] = { chunks = n, text = table.concat(text) }
    streaming = streaming - 1
  end)
end
local echoing = true
copas.addthread(function()
  local c = socket.tcp()
  copas.connect(c, "127.0.0.1", port)
  local k = 0
  while streaming > 0 do -- echoes for as long as kiro streams
    k = k + 1
    local t = socket.gettime()
    copas.send(c, "ping " .. k .. "\n")
    assert(copas.receive(c, "*l") == "ping " .. k)
    out.slowest_ms = math.max(out.slowest_ms, (socket.gettime() - t) * 1000)
    out.echoes = k
  end
  c:close()
  echoing = false
end)
while echoing do copas.step(0.05) end
print(cjson.encode(out))
