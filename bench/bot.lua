-- kiro-rt bot against the fake Telegram Bot API (spec/hosts/telegram_fake.py)
-- and the fake Discord (spec/hosts/discord_fake.py), with kiro-sim behind
-- it. Run with `make bench` (lua5.4 bench/bot.lua).
--
--   latency  from an update reaching the Bot API to the bot's typing, and to
--            its first text (kiro-sim answers at once), medians of 20; the
--            same on Discord, from the gateway's MESSAGE_CREATE
--   memory   the bot's resident memory with 1,000 chats waiting for their
--            replies at once (kiro-sim holds them at a gate), per chat
--
-- Figures are from one run on one machine. BENCH_QUICK=1: 5 and 200.

local cjson = require "cjson"

local here = arg[0]:match("^(.*)/[^/]*$") or "."
local util = dofile(here .. "/util.lua")
local q, sh, progress, median = util.q, util.sh, util.progress, util.median
local function absolute(path)
  if path:sub(1, 1) == "/" then return path end
  local p = assert(io.popen("pwd"))
  local cwd = p:read("l")
  p:close()
  return cwd .. "/" .. path
end
local root = absolute(here .. "/..")
local build = absolute(os.getenv("KIRO_BUILD_DIR") or (root .. "/build"))
local quick = os.getenv("BENCH_QUICK") == "1"
local TOKEN = "123456:BENCH-token_abcdefghijklmnopqrstuvwxyz"

local tmp = util.tmpdir()
sh("mkdir -m 700 -p " .. q(tmp .. "/run"))

local function wait_for(pred, ms, what)
  local deadline = os.time() + ms / 1000 + 1
  while not pred() do
    if os.time() > deadline then error("bench: timed out waiting for " .. what) end
    os.execute("sleep 0.05")
  end
end

-- The fake Bot API.
sh(("python3 %s %s %s >/dev/null 2>&1 & echo $! > %s"):format(q(root .. "/spec/hosts/telegram_fake.py"),
  q(tmp .. "/port"), q(TOKEN), q(tmp .. "/fake.pid")))
wait_for(function() return util.read(tmp .. "/port") end, 10000, "the fake Bot API")
local base = "http://127.0.0.1:" .. util.read(tmp .. "/port")

local function curl(args)
  local p = assert(io.popen("curl -s " .. args))
  local out = p:read("a")
  p:close()
  return out
end
local function post(what, body)
  curl(("-X POST -H 'Content-Type: application/json' -d %s %s/control/%s"):format(q(cjson.encode(body)), base, what))
end
local function calls() return cjson.decode(curl(base .. "/control/calls")) end

local chats = quick and 200 or 1000
local ids = {}
for i = 1, chats do ids[i] = 10000 + i end
util.write(tmp .. "/config.lua", ([[
return {
  pool_max = 4, queue_max = 5000,
  channels = { telegram = { token = %q, api_root = %q, poll_timeout_s = 30,
                            allowed_chats = { 42, %s } } },
}
]]):format(TOKEN, base, table.concat(ids, ", ")))
sh("chmod 600 " .. q(tmp .. "/config.lua"))
local gate = tmp .. "/gate"
sh(("cd %s && env KIRO_CLI_PATH=%s XDG_RUNTIME_DIR=%s KIRO_SIM_GATE=%s KIRO_LOG=error %s bot --config %s "
  .. ">%s 2>&1 & echo $! > %s"):format(q(tmp), q(build .. "/kiro-sim"), q(tmp .. "/run"), q(gate),
  q(build .. "/kiro-rt"), q(tmp .. "/config.lua"), q(tmp .. "/bot.log"), q(tmp .. "/bot.pid")))
local bot_pid = util.read(tmp .. "/bot.pid"):match("%d+")

local function rss_kib()
  local s = util.read("/proc/" .. bot_pid .. "/status") or ""
  return tonumber(s:match("VmRSS:%s+(%d+)")) or 0
end

-- Medians of 20 (5 quick) messages, one at a time: from the message
-- reaching the service to typing, and to the first text. send(i) sends the
-- i-th; kind(call) tells the service's log apart: "up" (the message), "typing",
-- "text", or nil.
local function latency(send, kind)
  local to_typing, to_text = {}, {}
  for i = 1, quick and 5 or 20 do
    local before = #calls()
    send(i)
    local seen
    wait_for(function()
      local all = calls()
      local at = {}
      for k = before + 1, #all do
        local what = kind(all[k])
        if what and not at[what] then at[what] = all[k].t end
      end
      if at.up and at.typing and at.text then seen = { at.typing - at.up, at.text - at.up } end
      return seen ~= nil
    end, 10000, "reply " .. i)
    to_typing[#to_typing + 1], to_text[#to_text + 1] = seen[1], seen[2]
    os.execute("sleep 1.1") -- (the chat's pace: one write a second)
  end
  return to_typing, to_text
end

-- (a) latency: one chat, one message at a time (the gate is open).
progress("(a) update to typing and to first text")
util.write(gate, "")
-- A first message, not counted: the bot is polling, its daemon warm.
post("update", { chat_id = 42, user_id = 42, text = "warm up" })
wait_for(function()
  for _, c in ipairs(calls()) do if c.method == "sendMessage" then return true end end
  return false
end, 20000, "the first reply")
os.execute("sleep 1.1")
local to_typing, to_text = latency(function(i)
  post("update", { chat_id = 42, user_id = 42, text = "hello number " .. i })
end, function(c)
  return c.method == "update" and "up" or c.method == "sendChatAction" and "typing"
    or c.method == "sendMessage" and "text" or nil
end)

-- (b) memory: every chat waits for its reply at once (the gate is shut).
progress(("(b) resident memory with %d chats waiting"):format(chats))
os.remove(gate)
local idle = rss_kib()
for i = 1, chats do
  post("update", { chat_id = ids[i], user_id = ids[i], text = "wait for me " .. i })
end
-- Every chat has been taken in once each has had its typing (30 calls a second, all chats together).
wait_for(function()
  local n = 0
  for _, c in ipairs(calls()) do if c.method == "sendChatAction" and c.chat > 10000 then n = n + 1 end end
  return n >= chats
end, chats * 100 + 30000, "typing in every chat")
local busy = rss_kib()
local p = io.popen("ls /proc/" .. bot_pid .. "/fd | wc -l")
local fds = tonumber(p:read("l"))
p:close()

util.write(gate, "")
sh("kill -TERM " .. bot_pid .. " 2>/dev/null; sleep 3; kill " .. util.read(tmp .. "/fake.pid"):match("%d+"))

-- (c) the same latency on Discord: from the gateway's MESSAGE_CREATE going
-- out to the bot's typing and its first message.
progress("(c) Discord: message to typing and to first text")
local DTOKEN = "MTA5ODc2NTQzMjEwOTg3NjU0.GxYzAb.bench-token_value_0123456789abcdef"
sh(("python3 %s %s %s >/dev/null 2>&1 & echo $! > %s"):format(q(root .. "/spec/hosts/discord_fake.py"),
  q(tmp .. "/dport"), q(DTOKEN), q(tmp .. "/dfake.pid")))
wait_for(function() return util.read(tmp .. "/dport") end, 10000, "the fake Discord")
base = "http://127.0.0.1:" .. util.read(tmp .. "/dport")
util.write(tmp .. "/dconfig.lua", ([[
return { channels = { discord = { token = %q, api_root = %q, gateway_url = %q, allowed_chats = { "42" } } } }
]]):format(DTOKEN, base .. "/api/v10", base:gsub("^http", "ws") .. "/gateway"))
sh("chmod 600 " .. q(tmp .. "/dconfig.lua"))
sh(("cd %s && env KIRO_CLI_PATH=%s XDG_RUNTIME_DIR=%s KIRO_LOG=error %s bot --config %s >%s 2>&1 & echo $! > %s")
  :format(q(tmp), q(build .. "/kiro-sim"), q(tmp .. "/run"), q(build .. "/kiro-rt"), q(tmp .. "/dconfig.lua"),
    q(tmp .. "/dbot.log"), q(tmp .. "/bot.pid")))
bot_pid = util.read(tmp .. "/bot.pid"):match("%d+")
local function say(i)
  local text = type(i) == "number" and "hello number " .. i or i
  local ok
  wait_for(function()
    ok = curl(("-X POST -d %s %s/control/message"):format(q(cjson.encode { channel_id = "42", author_id = "7",
      content = text }), base)):find('"ok": true', 1, true)
    return ok
  end, 20000, "the bot's gateway session")
end
say("warm up")
wait_for(function()
  for _, c in ipairs(calls()) do if c.route == "create" then return true end end
  return false
end, 20000, "the first Discord reply")
os.execute("sleep 1.1")
local d_typing, d_text = latency(say, function(c)
  return c.kind == "gateway" and c.t_name == "MESSAGE_CREATE" and "up" or c.route == "typing" and "typing"
    or c.route == "create" and "text" or nil
end)
sh("kill -TERM " .. bot_pid .. " 2>/dev/null; sleep 2; kill " .. util.read(tmp .. "/dfake.pid"):match("%d+"))
sh("rm -rf " .. q(tmp))

print(table.concat({
  "kiro-rt bot benchmark (fake Telegram Bot API, fake Discord; one run)",
  "",
  "(a) from an update reaching the Bot API (medians)",
  ("    to typing                          %8.1f ms   (goal <= 50 ms)"):format(median(to_typing)),
  ("    to the first text                  %8.1f ms"):format(median(to_text)),
  "",
  ("(b) resident memory, %d chats waiting for replies at once"):format(chats),
  ("    bot idle                           %8.0f KiB"):format(idle),
  ("    %d chats waiting               %8.0f KiB"):format(chats, busy),
  ("    per chat                           %8.1f KiB   (goal < 16 KiB)"):format((busy - idle) / chats),
  ("    descriptors open meanwhile         %8d"):format(fds),
  "",
  "(c) Discord: from MESSAGE_CREATE leaving the gateway (medians)",
  ("    to typing                          %8.1f ms   (goal <= 50 ms)"):format(median(d_typing)),
  ("    to the first text                  %8.1f ms"):format(median(d_text)),
}, "\n"))
