-- kiro-rt bot on Discord, against a fake gateway and REST API that enforce
-- the real ones' limits and error shapes (spec/hosts/discord_fake.py):
-- replies streamed in 2000-character parts without a 429, retry_after
-- obeyed, a gateway connection dropped mid-reply and resumed with nothing
-- lost (after a drop, the gateway's closes, its RECONNECT and INVALID
-- SESSION, and heartbeats left unacknowledged), twenty channels at once,
-- strangers ignored, a refused token named, the token never in a log.
local H = require "helper"
local cjson = require "cjson"

local TOKEN = "MTA5ODc2NTQzMjEwOTg3NjU0.GxYzAb.secret-token_value_0123456789abcdef"

-- The fake Discord, started for the test (heartbeats every 400 ms, or
-- heartbeat_ms): its base URL and a client for its control endpoints (curl).
local function fake(heartbeat_ms)
  local port = H.fake_host("discord_fake", { TOKEN, tostring(heartbeat_ms or 400) })
  local api = H.fake_control("http://127.0.0.1:" .. port)
  -- The REST calls and messages of one channel.
  function api.chat(id)
    local calls, msgs = {}, {}
    for _, c in ipairs(api.get("calls")) do
      if c.kind == "rest" and c.channel == id then calls[#calls + 1] = c end
    end
    for _, m in ipairs(api.get("messages")) do if m.channel == id then msgs[#msgs + 1] = m end end
    return calls, msgs
  end
  -- A user's message, once the bot has a session to receive it in.
  function api.say(channel, author, content, guild)
    local r
    assert(H.wait_for(function()
      r = api.post("message", { channel_id = channel, author_id = author, content = content, guild_id = guild })
      return r and r.ok
    end, 15000), "the bot never identified")
    return r
  end
  -- A message from user 42 in channel 9001, answered (in whichever session
  -- is the latest): the texts of that channel's messages so far.
  function api.answered(text)
    local before = #select(2, api.chat("9001"))
    api.say("9001", "42", text)
    local msgs
    assert(H.wait_for(function()
      msgs = select(2, api.chat("9001"))
      return #msgs > before
    end, 20000), "no answer to " .. text)
    for i, m in ipairs(msgs) do msgs[i] = m.content end
    return msgs
  end
  -- Posts what ends the session (a close, an INVALID SESSION), then waits
  -- for the bot's new session: its IDENTIFY no sooner than 1 s after (as
  -- Discord asks: 1 to 5 s).
  function api.new_session_after(what, body)
    local before = api.get("state").identifies
    api.post(what, body)
    local sent = api.get("calls")
    sent = sent[#sent].t
    assert(H.wait_for(function() return api.get("state").identifies == before + 1 end, 20000),
      "no new session after " .. what)
    local identify
    for _, c in ipairs(api.get("calls")) do
      if c.kind == "gateway" and c.op == 2 and c.dir == "in" then identify = c.t end
    end
    assert.is_true(identify - sent >= 1000, ("IDENTIFY %.0f ms after %s"):format(identify - sent, what))
  end
  return api
end

local function config(api, extra, token)
  return H.write_config(H.tmpdir() .. "/config.lua", ([[
return {
  channels = { discord = {
    token = %q, api_root = %q,%s
    allowed_users = { "42" }, allowed_chats = { "9001" },
    stream_mode = "partial", draft_update_interval_ms = 1000,%s
  } },
}
]]):format(token or TOKEN, api.base .. "/api/v10",
    -- (where the gateway is, or else the bot asks the API: GET /gateway/bot)
    api.ask_gateway and "" or (" gateway_url = %q,"):format(api.base:gsub("^http", "ws") .. "/gateway"), extra or ""))
end

local bot = H.bot
local words = H.words
local function stop(b) return H.stop_bot(b, TOKEN) end

-- The parts of a channel's messages, joined as one text.
local function joined(msgs)
  local parts = {}
  for _, m in ipairs(msgs) do parts[#parts + 1] = m.content end
  return (table.concat(parts, " "):gsub("%s+", " "))
end

-- No 429, and every create or edit at least ~1 s after the one before.
local function paced(calls)
  H.paced(calls, function(c) return (c.route == "create" or c.route == "edit") and c.route or nil end)
end

describe("kiro-rt bot (Discord)", function()
  after_each(H.check_leaks)

  it("streams a 5,000-character reply in 2000-character parts: typing first, edits once a second, nothing after",
    function()
      local api = fake()
      local b = bot(config(api), { KIRO_SIM_CHUNK_DELAY_MS = "60" })
      local prompt = words(4990, 1)
      local want = ("You said: " .. prompt):gsub("%s+", " ")
      api.say("9001", "42", prompt)
      local msgs
      assert(H.wait_for(function()
        msgs = select(2, api.chat("9001"))
        return #msgs == 3 and joined(msgs) == want
      end, 40000), "the reply did not arrive whole")
      -- What `kiro-rt bot status` says of it.
      local r = H.run({ H.kiro_rt, "bot", "status", "--json" }, b.env)
      assert.are.equal(0, r.code, r.err)
      local st = cjson.decode(r.out)
      assert.are.equal(b.pid, st.pid)
      local ch = st.channels[1]
      assert.are.same({ "discord", "connected", 1, 1, 0 }, { ch.name, ch.state, ch.chats, ch.messages.answered,
        ch.rate_limited })
      assert.is_true(ch.calls.edit >= 2 and ch.calls.send == 3 and ch.calls.typing >= 1, r.out)
      assert.is_true(ch.typing_avg_ms >= 0 and ch.first_text_avg_ms >= ch.typing_avg_ms, r.out)
      r = H.run({ H.kiro_rt, "bot", "status" }, b.env)
      assert.matches("discord  connected, 1 chat(s), 0 replying", r.out, 1, true)
      assert.is_nil(r.out:find(TOKEN, 1, true))
      stop(b)
      r = H.run({ H.kiro_rt, "bot", "status" }, b.env)
      assert.are.same({ 1, "kiro-rt: no bot running\n" }, { r.code, r.err })
      local calls = api.chat("9001")
      assert.are.equal("typing", calls[1].route) -- typing before the first text
      paced(calls)
      for _, m in ipairs(msgs) do assert.is_true(utf8.len(m.content) <= 2000) end
      assert.is_true(msgs[1].edits >= 2, msgs[1].edits .. " edits") -- it grew as it came
      local last = calls[#calls]
      assert.is_true(last.route == "create" or last.route == "edit", last.route)
      assert.are.equal(msgs[3].content, last.content) -- the last call made the final text
      local state = api.get("state")
      assert.are.same({ 1, 0 }, { state.identifies, state.r429 })
      -- The heartbeat kept time: beats went out and were acknowledged.
      local beats = 0
      for _, c in ipairs(api.get("calls")) do
        if c.kind == "gateway" and c.op == 1 and c.dir == "in" then beats = beats + 1 end
      end
      assert.is_true(beats >= 3, beats .. " heartbeats")
    end)

  it("a gateway connection dropped mid-reply: the reply ends whole, the session resumes, what came meanwhile "
    .. "is answered", function()
    local api = fake(3000) -- (slow beats: a busy machine adds no connection to count)
    local b = bot(config(api), { KIRO_SIM_CHUNK_DELAY_MS = "100", KIRO_LOG = "info" })
    local first = words(600, 2)
    api.say("9001", "42", first)
    assert(H.wait_for(function() return #select(2, api.chat("9001")) == 1 end, 20000), "no first message")
    api.post("drop", {})
    api.say("9001", "42", "while you were away") -- stored for the session, replayed on RESUME
    local msgs
    assert(H.wait_for(function()
      msgs = select(2, api.chat("9001"))
      return #msgs == 2 and msgs[2].content == "You said: while you were away"
    end, 30000), "the message sent during the drop was not answered")
    local err = stop(b)
    assert.are.equal("You said: " .. first, msgs[1].content)
    local state = api.get("state")
    assert.are.same({ 1, 1, 1 }, { state.identifies, state.resumes, state.sessions })
    assert.is_true(state.connections >= 2)
    assert.matches("discord: session resumed", err, 1, true)
  end)

  it("the gateway's closes: 4000 is resumed at once; 4009 (session timed out) starts a new session after 1 to 5 s",
    function()
      local api = fake(3000) -- (slow beats: a busy machine adds no connection to count)
      local b = bot(config(api), { KIRO_LOG = "info" })
      api.answered("one")
      api.post("close", { code = 4000 })
      api.answered("two") -- (sent before RESUME, stored for the session: RESUME replays it)
      local state = api.get("state")
      assert.are.same({ 1, 1 }, { state.identifies, state.resumes })
      api.new_session_after("close", { code = 4009 })
      assert.are.same({ "You said: one", "You said: two", "You said: three" }, api.answered("three"))
      assert.are.equal(1, api.get("state").resumes)
      stop(b)
    end)

  it("the gateway's requests: RECONNECT (op 7) and a resumable INVALID SESSION (op 9) resume at "
    .. "resume_gateway_url; an unresumable one starts a new session after 1 to 5 s", function()
    local api = fake(3000) -- (slow beats: a busy machine adds no connection to count)
    local b = bot(config(api), { KIRO_LOG = "info" })
    -- The paths of the gateway connections, in order.
    local function paths()
      local p = {}
      for _, c in ipairs(api.get("calls")) do
        if c.kind == "gateway" and c.event == "connect" then p[#p + 1] = c.path end
      end
      return p
    end
    api.answered("one")
    api.post("op", { op = 7 })
    assert(H.wait_for(function() return api.get("state").resumes == 1 end, 20000), "no RESUME after op 7")
    api.answered("two")
    api.post("op", { op = 9, d = true })
    assert(H.wait_for(function() return api.get("state").resumes == 2 end, 20000), "no RESUME after op 9 (true)")
    api.answered("three")
    assert.are.same({ "/gateway", "/resume", "/resume" }, paths())
    api.new_session_after("op", { op = 9, d = false })
    assert.are.same({ "You said: one", "You said: two", "You said: three", "You said: four" }, api.answered("four"))
    local state = api.get("state")
    assert.are.same({ 2, 2, 2 }, { state.identifies, state.resumes, state.sessions })
    assert.are.same({ "/gateway", "/resume", "/resume", "/gateway" }, paths()) -- a new session: the gateway again
    stop(b)
  end)

  it("a connection whose heartbeats go unacknowledged is left for a resumed one", function()
    local api = fake()
    local b = bot(config(api), { KIRO_LOG = "info" })
    api.answered("one")
    api.post("mute", {})
    assert(H.wait_for(function() return api.get("state").resumes == 1 end, 20000), "no RESUME")
    assert.are.same({ "You said: one", "You said: two" }, api.answered("two"))
    local state = api.get("state")
    assert.are.same({ 1, 1, 2 }, { state.identifies, state.sessions, state.connections })
    assert.matches("discord: the gateway stopped answering heartbeats: reconnecting", stop(b), 1, true)
  end)

  it("obeys a retry_after of 5 s mid-reply: nothing to that channel until it passes, and the text is whole",
    function()
      local api = fake()
      local b = bot(config(api), { KIRO_SIM_CHUNK_DELAY_MS = "100" })
      local prompt = words(1200, 3)
      api.say("9001", "42", prompt)
      assert(H.wait_for(function() return #select(2, api.chat("9001")) == 1 end, 20000), "no first message")
      api.post("inject", { channel_id = "9001", retry_after = 5 })
      local msgs
      assert(H.wait_for(function()
        msgs = select(2, api.chat("9001"))
        return msgs[1] and msgs[1].content == "You said: " .. prompt
      end, 30000), "the reply did not arrive whole")
      stop(b)
      local held
      for _, c in ipairs((api.chat("9001"))) do
        if held then
          assert.is_true(c.t >= held + 5000, ("a %s %.0f ms into the 5 s"):format(c.route, c.t - held))
        elseif c.status == 429 then
          held = c.t
        end
      end
      assert.is_not_nil(held, "the 429 was not asked for")
      assert.are.equal(1, api.get("state").r429)
    end)

  it("answers 20 channels at once, each whole, under the global limit; a stranger gets nothing; the gateway's "
    .. "address from the API", function()
    local api = fake()
    api.ask_gateway = true
    local chats = {}
    for i = 1, 20 do chats[#chats + 1] = ('"%d"'):format(9100 + i) end
    local b = bot(config(api, "\n    allowed_chats = { " .. table.concat(chats, ", ") .. " },"),
      { KIRO_SIM_CHUNK_DELAY_MS = "30" })
    for i = 1, 20 do api.say(tostring(9100 + i), tostring(500 + i), words(400, i), "77") end
    api.say("9200", "666", "let me in", "77")
    assert(H.wait_for(function()
      local whole = 0
      for _, m in ipairs(api.get("messages")) do
        local i = tonumber(m.channel) - 9100
        if i >= 1 and i <= 20 and m.content == "You said: " .. words(400, i) then whole = whole + 1 end
      end
      return whole == 20
    end, 60000), "not every channel got its reply")
    for i = 1, 20 do paced((api.chat(tostring(9100 + i)))) end
    assert.are.same({}, (api.chat("9200"))) -- the stranger: no reply, no typing
    assert.are.equal(0, api.get("state").r429)
    local err = stop(b)
    assert.matches("user 666 in chat 9200 is not in allowed_users or allowed_chats: ignored", err, 1, true)
  end)

  it("follows its file (--watch): a channel added starts, one whose address changed starts anew, one removed "
    .. "stops; the others go on as they were", function()
    local TG = "123456:TEST-token_abcdefghijklmnopqrstuvwxyz"
    local tg1 = H.fake_control("http://127.0.0.1:" .. H.fake_host("telegram_fake", { TG }))
    local tg2 = H.fake_control("http://127.0.0.1:" .. H.fake_host("telegram_fake", { TG }))
    local api = fake(3000) -- (slow beats: a busy machine adds no connection to count)
    local path = H.tmpdir() .. "/config.lua"
    local function write(telegram_at, with_discord)
      H.write_config(path, ([[
return { channels = {
  telegram = { token = %q, api_root = %q, allowed_users = { 42 } },%s
} }
]]):format(TG, telegram_at.base, with_discord and ([[

  discord = { token = %q, api_root = %q, gateway_url = %q, allowed_users = { "42" } },]]):format(
        TOKEN, api.base .. "/api/v10", api.base:gsub("^http", "ws") .. "/gateway") or ""))
    end
    -- A Telegram message answered there.
    local function answered(tg, text)
      tg.post("update", { chat_id = 42, user_id = 42, text = text })
      assert(H.wait_for(function()
        for _, m in ipairs(tg.get("messages")) do if m.text == "You said: " .. text then return true end end
      end, 20000), "no answer to " .. text)
    end
    write(tg1, false)
    local b = bot(path, { KIRO_LOG = "info" }, { "--watch" })
    answered(tg1, "one")
    write(tg1, true) -- Discord added
    api.answered("two")
    write(tg2, true) -- Telegram elsewhere: the one polling tg1 ends, one polls tg2
    answered(tg2, "three")
    tg1.post("update", { chat_id = 42, user_id = 42, text = "nobody polls here now" })
    write(tg2, false) -- Discord removed: its session ends (1000)
    assert(H.wait_for(function() return not api.get("state").open end, 20000), "Discord's connection stays")
    answered(tg2, "four")
    local st = H.run({ H.kiro_rt, "bot", "status", "--json" }, b.env)
    assert.are.equal(0, st.code, st.err)
    st = cjson.decode(st.out)
    assert.are.same({ 1, "telegram", "polling" }, { #st.channels, st.channels[1].name, st.channels[1].state })
    local log = stop(b)
    assert.is_nil(log:find(TG, 1, true), "the Telegram token is in the log")
    local state = api.get("state")
    assert.are.same({ 1, 0, 1 }, { state.identifies, state.resumes, state.connections }) -- never restarted
    assert.are.same({ "You said: two" }, { select(2, api.chat("9001"))[1].content })
    local texts = {}
    for _, m in ipairs(tg1.get("messages")) do texts[#texts + 1] = m.text end
    assert.are.same({ "You said: one" }, texts) -- what came to tg1 after the change went unread
    assert.matches("telegram: its connection changed: starting it anew", log, 1, true)
    assert.matches("discord: no longer configured: stopping", log, 1, true)
  end)

  it("a token the gateway refuses (4004) stops the channel with the reason, and the token is not logged", function()
    local api = fake()
    local wrong = TOKEN:gsub("secret", "wrong!")
    local b = bot(config(api, nil, (wrong:gsub("!", "x"))), {})
    local code, _, err = b.wait() -- (within 15 s)
    b.stopped = true
    assert.are.equal(0, code, err) -- every channel ended: the bot ends
    assert.matches("discord: the token was refused (4004 Authentication failed); the channel stops", err, 1, true)
    assert.is_nil(err:find("wrongx", 1, true), "the token is in the log")
    assert.are.equal(1, api.get("state").identifies)
  end)
end)
