-- kiro-rt bot on Telegram, against a fake Bot API server that enforces the
-- real one's limits and error shapes (spec/hosts/telegram_fake.py):
-- replies streamed without a 429, retry_after obeyed, long replies split,
-- twenty chats at once, strangers ignored, the token never in a log.
local H = require "helper"

local TOKEN = "123456:TEST-token_abcdefghijklmnopqrstuvwxyz"

-- The fake Bot API, started for the test: its base URL and a client for
-- its control endpoints (a plain HTTP client: curl).
local function fake()
  local api = H.fake_control("http://127.0.0.1:" .. H.fake_host("telegram_fake", { TOKEN }))
  -- The calls and messages of one chat.
  function api.chat(id)
    local calls, msgs = {}, {}
    for _, c in ipairs(api.get("calls")) do
      if c.chat == id and c.method ~= "update" then calls[#calls + 1] = c end
    end
    for _, m in ipairs(api.get("messages")) do if m.chat == id then msgs[#msgs + 1] = m end end
    return calls, msgs
  end
  return api
end

local function config(api, extra)
  return H.write_config(H.tmpdir() .. "/config.lua", ([[
return {
  channels = { telegram = {
    token = %q, api_root = %q, poll_timeout_s = 2,
    allowed_users = { 42 }, allowed_chats = { -1001 },
    stream_mode = "partial", draft_update_interval_ms = 1000,%s
  } },
}
]]):format(TOKEN, api.base, extra or ""))
end

local bot = H.bot
local words = H.words
local function stop(b) return H.stop_bot(b, TOKEN) end

-- Every call to a chat came at least ~1 s after the previous send or edit
-- there, and none was refused.
local function paced(calls)
  H.paced(calls, function(c)
    return (c.method == "sendMessage" or c.method == "editMessageText") and c.method or nil
  end)
end

describe("kiro-rt bot (Telegram)", function()
  after_each(H.check_leaks)

  it("streams a 5,000-character reply: typing first, edits once a second, two final messages, nothing after",
    function()
      local api = fake()
      local b = bot(config(api), { KIRO_SIM_CHUNK_DELAY_MS = "60" })
      local prompt = words(4990, 1)
      local want = "You said: " .. prompt
      api.post("update", { chat_id = 42, user_id = 42, text = prompt })
      local calls, msgs
      assert(H.wait_for(function()
        calls, msgs = api.chat(42)
        return #msgs == 2 and (msgs[1].text .. " " .. msgs[2].text):gsub("%s+", " ") == want:gsub("%s+", " ")
      end, 30000), "the reply did not arrive whole")
      stop(b) -- (whatever it had left to say is said by the time it exits)
      calls = api.chat(42)
      assert.are.equal("sendChatAction", calls[1].method) -- typing before the first text
      paced(calls)
      assert.is_true(utf8.len(msgs[1].text) <= 4096 and utf8.len(msgs[2].text) <= 4096)
      assert.is_true(msgs[1].edits >= 2, msgs[1].edits .. " edits") -- it grew as it came
      -- The last call is the one that made the final text.
      local last = calls[#calls]
      assert.is_true(last.method == "sendMessage" or last.method == "editMessageText", last.method)
      assert.are.equal(msgs[2].text, (last.text:gsub("^%s+", ""):gsub("%s+$", "")))
    end)

  it("obeys a retry_after of 5 s mid-reply: nothing to that chat until it passes, and the text is whole", function()
    local api = fake()
    -- (metrics on a port the system picks: the log says which)
    local b = bot(config(api), { KIRO_SIM_CHUNK_DELAY_MS = "100", KIRO_LOG = "info" },
      { "--metrics-listen", "127.0.0.1:0" })
    local port
    assert(H.wait_for(function()
      port = (H.read_file(b.dir .. "/err") or ""):match("metrics on http://127%.0%.0%.1:(%d+)/metrics")
      return port
    end, 10000), "no metrics endpoint")
    local prompt = words(1200, 2)
    api.post("update", { chat_id = 42, user_id = 42, text = prompt })
    assert(H.wait_for(function() return #select(2, api.chat(42)) == 1 end, 20000), "no first message")
    api.post("inject", { chat_id = 42, retry_after = 5 })
    local msgs
    assert(H.wait_for(function()
      msgs = select(2, api.chat(42))
      return msgs[1] and msgs[1].text == "You said: " .. prompt
    end, 30000), "the reply did not arrive whole")
    local calls = api.chat(42)
    local held
    for _, c in ipairs(calls) do
      if held then
        assert.is_true(c.t >= held + 5000, ("a %s %.0f ms into the 5 s"):format(c.method, c.t - held))
      elseif c.status == 429 then
        held = c.t
      end
    end
    assert.is_not_nil(held, "the 429 was not asked for")
    -- What the bot's metrics say of it.
    local r = H.run({ "curl", "-s", "http://127.0.0.1:" .. port .. "/metrics" }, {})
    assert.are.equal(0, r.code, r.err)
    for _, want in ipairs {
      'kiro_bot_messages_total{channel="telegram",outcome="answered"} 1',
      'kiro_bot_rate_limited_total{channel="telegram"} 1',
      'kiro_bot_calls_total{channel="telegram",kind="typing"} ',
      'kiro_bot_typing_seconds_count{channel="telegram"} 1',
      'kiro_bot_first_text_seconds_count{channel="telegram"} 1',
    } do
      assert.matches(want, r.out, 1, true)
    end
    stop(b)
  end)

  it("answers 20 chats at once, each whole, under the global limit; a stranger gets nothing", function()
    local api = fake()
    local chats = {}
    for i = 1, 20 do chats[#chats + 1] = 1000 + i end
    local path = config(api, "\n    allowed_chats = { " .. table.concat(chats, ", ") .. " },")
    -- (the line above replaces the list config() writes)
    local b = bot(path, { KIRO_SIM_CHUNK_DELAY_MS = "30" })
    for _, id in ipairs(chats) do
      api.post("update", { chat_id = id, user_id = id, text = words(400, id), chat_type = "group" })
    end
    api.post("update", { chat_id = 777, user_id = 777, text = "let me in" })
    assert(H.wait_for(function()
      local all = api.get("messages")
      local whole = 0
      for _, m in ipairs(all) do
        if m.chat >= 1001 and m.chat <= 1020 and m.text == "You said: " .. words(400, m.chat) then whole = whole + 1 end
      end
      return whole == 20
    end, 60000), "not every chat got its reply")
    for _, id in ipairs(chats) do paced((api.chat(id))) end
    local calls = api.chat(777)
    assert.are.same({}, calls) -- the stranger: no reply, no typing
    local err = stop(b)
    assert.matches("user 777 in chat 777 is not in allowed_users or allowed_chats: ignored", err, 1, true)
  end)

  it("60 chats at once, twice what Telegram allows a second: every reply whole, no second over 30 calls, no 429",
    function()
    local api = fake()
    local chats = {}
    for i = 1, 60 do chats[#chats + 1] = 2000 + i end
    local b = bot(config(api, "\n    allowed_chats = { " .. table.concat(chats, ", ") .. " },"),
      { KIRO_SIM_CHUNK_DELAY_MS = "20" })
    for _, id in ipairs(chats) do
      api.post("update", { chat_id = id, user_id = id, text = words(300, id), chat_type = "group" })
    end
    assert(H.wait_for(function()
      local whole = 0
      for _, m in ipairs(api.get("messages")) do
        if m.chat > 2000 and m.chat <= 2060 and m.text == "You said: " .. words(300, m.chat) then whole = whole + 1 end
      end
      return whole == 60
    end, 90000), "not every chat got its reply")
    stop(b)
    -- No second held more than 30 calls, and none was refused.
    local times = {}
    for _, c in ipairs(api.get("calls")) do
      if c.method ~= "update" and c.method ~= "getUpdates" then
        assert.are_not.equal(429, c.status, c.method)
        times[#times + 1] = c.t
      end
    end
    table.sort(times)
    for i = 31, #times do
      assert.is_true(times[i] - times[i - 30] >= 990, ("31 calls in %.0f ms"):format(times[i] - times[i - 30]))
    end
    for _, id in ipairs(chats) do paced((api.chat(id))) end
  end)

  it("draft mode: previews with sendMessageDraft in a private chat, then one final message; partial elsewhere",
    function()
      local api = fake()
      local b = bot(config(api, '\n    stream_mode = "draft",'), { KIRO_SIM_CHUNK_DELAY_MS = "100" })
      local prompt = words(300, 3)
      api.post("update", { chat_id = 42, user_id = 42, text = prompt, chat_type = "private" })
      api.post("update", { chat_id = -1001, user_id = 5, text = prompt, chat_type = "group" })
      assert(H.wait_for(function()
        local _, a = api.chat(42)
        local _, g = api.chat(-1001)
        return a[1] and a[1].text == "You said: " .. prompt and g[1] and g[1].text == "You said: " .. prompt
      end, 20000), "the replies did not arrive whole")
      stop(b)
      local calls, msgs = api.chat(42)
      local kinds = {}
      for _, c in ipairs(calls) do kinds[c.method] = (kinds[c.method] or 0) + 1 end
      assert.is_true((kinds.sendMessageDraft or 0) >= 2, "drafts: " .. tostring(kinds.sendMessageDraft))
      assert.are.same({ 1, nil }, { kinds.sendMessage, kinds.editMessageText })
      assert.are.equal(1, #msgs)
      assert.are.equal("sendMessage", calls[#calls].method) -- the final message is the last word
      paced(calls)
      calls = api.chat(-1001) -- a group: no drafts there, edits instead
      for _, c in ipairs(calls) do assert.are_not.equal("sendMessageDraft", c.method) end
    end)

  it("reloads on SIGHUP (who may talk), stops on SIGTERM with the reply under way finished; 409 is named", function()
    local api = fake()
    local path = config(api)
    local b = bot(path, { KIRO_SIM_CHUNK_DELAY_MS = "150", KIRO_LOG = "info" })
    api.post("update", { chat_id = 43, user_id = 43, text = "before" })
    assert(H.wait_for(function() return (H.read_file(b.dir .. "/err") or ""):find("user 43 in chat 43", 1, true) end,
      10000), "user 43 was not turned away")
    -- Let user 43 in, and tell the bot.
    H.write_file(path, (H.read_file(path):gsub("allowed_users = { 42 }", "allowed_users = { 42, 43 }")))
    assert(os.execute("kill -HUP " .. b.pid))
    assert(H.wait_for(function() return (H.read_file(b.dir .. "/err") or ""):find("reloaded", 1, true) end, 10000),
      "no reload")
    -- A second bot on the same token: one of them is told why polling fails.
    -- (Both would get what comes meanwhile, as from Telegram: nothing does.)
    local b2 = bot(path, {})
    assert(H.wait_for(function()
      local e1, e2 = H.read_file(b.dir .. "/err") or "", H.read_file(b2.dir .. "/err") or ""
      return (e1 .. e2):find("another instance is polling this bot", 1, true)
    end, 15000), "the 409 was not reported")
    stop(b2)
    local prompt = words(200, 4)
    api.post("update", { chat_id = 43, user_id = 43, text = prompt })
    -- SIGTERM as soon as the reply shows: it still ends whole.
    assert(H.wait_for(function() return #select(2, api.chat(43)) >= 1 end, 10000), "no reply to the newly allowed")
    stop(b)
    local _, msgs = api.chat(43)
    assert.are.equal(1, #msgs) -- "before" came while 43 was not allowed: no answer
    assert.are.equal("You said: " .. prompt, msgs[1].text)
  end)

  it("reloads that go wrong change nothing that runs: a channel that fails, one that will not load, one dropped "
    .. "and named again while it lets go", function()
    local api = fake()
    local dir = H.tmpdir()
    assert(os.execute("mkdir " .. H.q(dir .. "/channels")))
    -- Channels of the test's own, beside the file: one whose run fails,
    -- one that takes 500 ms to let go once stopped (its log says when).
    H.write_file(dir .. "/channels/boom.lua", [[
return function() return { run = function() error("boom at run", 0) end, stop = function() end } end
]])
    H.write_file(dir .. "/channels/slow.lua", [[
local kiro = require "kiro"
return function()
  local stop = kiro.napper()
  return {
    run = function()
      kiro.log("warn", "slow", "run begins")
      while not stop:nap(60000) do end
      kiro.sleep(500)
      kiro.log("warn", "slow", "run ends")
    end,
    stop = function() stop:stop() end,
  }
end
]])
    local path = dir .. "/config.lua"
    local function write(extra)
      H.write_config(path, ([[
return { channels = {
  telegram = { token = %q, api_root = %q, poll_timeout_s = 2, allowed_users = { 42 } },%s
} }
]]):format(TOKEN, api.base, extra or ""))
    end
    local n = 0
    local function answered()
      n = n + 1
      api.post("update", { chat_id = 42, user_id = 42, text = "hi " .. n })
      assert(H.wait_for(function() return #select(2, api.chat(42)) == n end, 20000), "no answer " .. n)
    end
    local log_has = function(b, text, count)
      return select(2, (H.read_file(b.dir .. "/err") or ""):gsub(text:gsub("%p", "%%%0"), "")) >= (count or 1)
    end
    write('\n  boom = {},')
    local b = bot(path, { KIRO_LOG = "info" })
    assert(H.wait_for(function() return log_has(b, "boom: the channel failed: boom at run") end, 10000),
      "boom's failure was not told")
    answered() -- the others go on
    -- Started anew by a reload (its address changed), it fails again: told again, nothing hangs.
    write('\n  boom = { api_root = "http://elsewhere" },')
    assert(os.execute("kill -HUP " .. b.pid))
    assert(H.wait_for(function() return log_has(b, "boom: the channel failed: boom at run", 2) end, 10000),
      "boom was not started anew")
    -- A file whose only channel will not load (no token): nothing changes.
    H.write_config(path, 'return { channels = { discord = { api_root = "http://127.0.0.1:1" } } }\n')
    assert(os.execute("kill -HUP " .. b.pid))
    assert(H.wait_for(function() return log_has(b, "would leave no channel running") end, 10000), "not refused")
    assert.matches("channels.discord: discord: a bot token is needed", H.read_file(b.dir .. "/err"), 1, true)
    answered()
    -- slow: started, dropped, named again at once: it begins again only once its old self has ended.
    write('\n  slow = {},')
    assert(os.execute("kill -HUP " .. b.pid))
    assert(H.wait_for(function() return log_has(b, "[WARN slow] run begins") end, 10000), "slow did not start")
    write()
    assert(os.execute("kill -HUP " .. b.pid))
    assert(H.wait_for(function() return log_has(b, "slow: no longer configured") end, 10000), "slow not dropped")
    write('\n  slow = {},')
    assert(os.execute("kill -HUP " .. b.pid))
    assert(H.wait_for(function() return log_has(b, "[WARN slow] run begins", 2) end, 10000), "slow not again")
    answered()
    local log = stop(b)
    local first = log:find("[WARN slow] run begins", 1, true)
    local ends = log:find("[WARN slow] run ends", first, true)
    local again = log:find("[WARN slow] run begins", first + 1, true)
    assert.is_true(ends < again, log) -- (the old one had let go before the new one began)
  end)

  it("an agent's tool call shows as progress under the draft; the final message is the reply alone", function()
    local api = fake()
    local b = bot(config(api), { KIRO_PROTOCOL = "acp", KIRO_SIM_ACP_UPDATES = "1", KIRO_SIM_ACP_TOOL_MS = "1500",
      KIRO_SIM_CHUNK_DELAY_MS = "100" })
    api.post("update", { chat_id = 42, user_id = 42, text = "look around please" })
    assert(H.wait_for(function()
      local _, msgs = api.chat(42)
      return msgs[1] and msgs[1].text == "You said: look around please"
    end, 20000), "no reply")
    stop(b)
    local calls = api.chat(42)
    local progress
    for _, c in ipairs(calls) do
      if type(c.text) == "string" and c.text:find("⏳ Reading project files", 1, true) then progress = c end
    end
    assert.is_not_nil(progress, "no progress shown")
    assert.are.equal("You said: look around please", select(2, api.chat(42))[1].text)
  end)
end)
