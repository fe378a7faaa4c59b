-- A cqueues TCP echo server (the host) answering a client every 20 ms
-- while four kiro streams run in its coroutines (kiro.host.cqueues).
-- Prints one JSON line: the slowest echo (ms), the echoes, and each
-- stream's chunk count and text.
local cqueues = require "cqueues"
local socket = require "cqueues.socket"
local cjson = require "cjson"
local kiro = require "kiro"

kiro.configure { host = kiro.host.cqueues() }
local cq = cqueues.new()
local out = { streams = {}, echoes = 0, slowest_ms = 0 }
local streaming, stop = 4, false
local srv = socket.listen { host = "127.0.0.1", port = 0 }
local _, _, port = srv:localname()
cq:wrap(function()
  while not stop do
    local con = srv:accept(0.02)
    if con then
      cq:wrap(function()
        for line in con:lines() do
          con:write(line, "\n")
          con:flush()
        end
        con:close()
      end)
    end
  end
  srv:close()
end)
for i = 1, 4 do
  cq:wrap(function()
    local n, text = 0, {}
    for chunk in kiro.stream(("stream %d: one two three four five six seven eight"):format(i)) do
      n = n + 1
      text[n] = chunk
    end
    out.streams[i] = { chunks = n, text = table.concat(text) }
    streaming = streaming - 1
  end)
end
cq:wrap(function()
  local c = socket.connect("127.0.0.1", port)
  local k = 0
  while streaming > 0 do -- echoes for as long as kiro streams
    k = k + 1
    local t = cqueues.monotime()
    c:write("ping ", k, "\n")
    c:flush()
    assert(c:read("*l") == "ping " .. k)
    out.slowest_ms = math.max(out.slowest_ms, (cqueues.monotime() - t) * 1000)
    out.echoes = k
    cqueues.sleep(0.02)
  end
  c:close()
  stop = true
end)
assert(cq:loop())
print(cjson.encode(out))
