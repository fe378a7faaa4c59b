--- discord: a bot on Discord (its gateway over a WebSocket, its REST API),
-- for `kiro-rt bot`.
--
--   channels = { discord = {
--     token = "MTA...",                 -- else $DISCORD_BOT_TOKEN
--     api_root = "https://discord.com/api/v10",
--     gateway_url = "wss://gateway.discord.gg", -- else the API's GET /gateway/bot
--     allowed_users = { "80351110224678912" }, allowed_chats = { "channel id" },
--     stream_mode = "partial",          -- off | partial (Discord has no drafts)
--     draft_update_interval_ms = 1000,
--   } }
--
-- The gateway: HELLO, a heartbeat every heartbeat_interval (a connection
-- that stops acknowledging is dropped), IDENTIFY with the guild-message,
-- direct-message and message-content intents, and after a drop RESUME on
-- resume_gateway_url, so no message is lost; a new session only when
-- Discord says the old one is gone. Close codes that no retry can mend
-- (a refused token, intents not enabled for the bot) stop the channel
-- with the reason.
--
-- REST: the X-RateLimit-* headers are read, not guessed: a route whose
-- bucket is spent waits for its reset before the call; a 429 holds that
-- chat for retry_after (kiro.reply), a global one every call; at most 50
-- calls a second in all (typing giving way to text when calls are
-- scarce). Replies mention nobody (allowed_mentions).
-- The token is a secret: no message, log line or status shows it.

local kiro = require "kiro"
local cjson = require "cjson"
local reply = require "kiro.reply"

local GLOBAL_PER_S = 50 -- REST calls a second, all channels together
local INTENTS = (1 << 9) | (1 << 12) | (1 << 15) -- GUILD_MESSAGES, DIRECT_MESSAGES, MESSAGE_CONTENT

-- Close codes after which a retry is futile, and what to do instead.
local FATAL = {
  [4004] = "the token was refused (4004 Authentication failed)",
  [4010] = "invalid shard (4010)", [4011] = "sharding required (4011)",
  [4012] = "invalid API version (4012)",
  [4013] = "invalid intents (4013)",
  [4014] = "intents not allowed (4014): enable the Message Content intent in the Developer Portal",
}
local NEW_SESSION = { [4007] = true, [4009] = true } -- invalid seq, session timed out

return function(settings)
  local token = settings.token or os.getenv("DISCORD_BOT_TOKEN")
  if type(token) ~= "string" or not token:match("^[%w_.-]+$") or #token < 20 then
    error("discord: a bot token is needed (channels.discord.token or DISCORD_BOT_TOKEN), as the Developer"
      .. " Portal gives it", 0)
  end
  local root = (settings.api_root or "https://discord.com/api/v10"):gsub("/+$", "")
  local ch = { name = "discord", limit = 2000, typing_ms = 10000, state = "connecting" }
  local secrets = { token }
  local stop = kiro.napper() -- stop() cuts its naps short; stop.cut once it is called
  local buckets = {} -- route -> { remaining =, reset_at = } as the headers said
  local held = 0     -- a global 429: no call before this
  local pace = reply.pacer(GLOBAL_PER_S) -- all channels together

  --- One REST call: the decoded body (true for 204), or nil and an error
  --- table (kiro.reply's). route names the bucket (a kind and a channel);
  --- until_stop, a napper whose stop ends it (not a reply's calls: those finish).
  function ch.api(method, path, body, route, kind, until_stop)
    local b = route and buckets[route]
    if b and b.remaining <= 0 and kiro.now() < b.reset_at then kiro.sleep(b.reset_at - kiro.now()) end
    while kiro.now() < held do kiro.sleep(held - kiro.now()) end
    if kind ~= "typing" then pace.wait() end
    local r, msg = kiro.http.request {
      url = root .. path, method = method, body = body and cjson.encode(body) or nil,
      headers = { Authorization = "Bot " .. token, ["Content-Type"] = body and "application/json" or nil,
                  ["User-Agent"] = "DiscordBot (https://github.com/kiro-rt, " .. kiro.core.version .. ")" },
      timeout_ms = 30000, max_bytes = 1 << 20, secrets = secrets, stop = until_stop,
    }
    if not r then return nil, { message = msg } end
    local h = r.headers
    if route and h["x-ratelimit-remaining"] then
      buckets[route] = { remaining = tonumber(h["x-ratelimit-remaining"]) or 0,
                         reset_at = kiro.now() + math.ceil((tonumber(h["x-ratelimit-reset-after"]) or 1) * 1000) }
    end
    if r.status == 204 then return true end
    local ok, res = pcall(cjson.decode, r.body)
    if not ok or type(res) ~= "table" then -- (a proxy's page: a 429 is still one)
      return nil, { message = ("HTTP %d, not Discord's JSON"):format(r.status),
                    retry_after = r.status == 429 and (tonumber(h["retry-after"]) or 1) or nil,
                    permanent = r.status < 500 and r.status ~= 429 }
    end
    if r.status < 300 then return res end
    local err = { message = ("%s (HTTP %d, code %s)"):format(tostring(res.message), r.status, tostring(res.code)) }
    if r.status == 429 then
      err.retry_after = tonumber(res.retry_after) or tonumber(h["retry-after"]) or 1
      if res.global or h["x-ratelimit-global"] then held = kiro.now() + math.ceil(err.retry_after * 1000) end
    elseif r.status == 404 and res.code == 10008 then
      err.gone = true
    elseif r.status < 500 then
      err.permanent = true
    end
    return nil, err
  end

  local function no_mentions(text) return { content = text, allowed_mentions = { parse = {} } } end

  function ch.typing(_, chat)
    if not pace.spare() then return nil, { skipped = true } end
    return ch.api("POST", "/channels/" .. chat .. "/typing", nil, "typing " .. chat, "typing")
  end

  function ch.send(_, chat, text)
    local m, err = ch.api("POST", "/channels/" .. chat .. "/messages", no_mentions(text), "create " .. chat)
    if not m then return nil, err end
    return m.id
  end

  function ch.edit(_, chat, message, text)
    return ch.api("PATCH", "/channels/" .. chat .. "/messages/" .. message, no_mentions(text), "edit " .. chat)
  end

  -- The gateway's address: the configured one, else the API's.
  local function gateway_url()
    if settings.gateway_url then return settings.gateway_url end
    local g, err = ch.api("GET", "/gateway/bot", nil, nil, nil, stop) -- (a stop ends it)
    if not g then return nil, err.message end
    return g.url
  end

  local function with_query(url)
    return url .. (url:find("?", 1, true) and "&" or "?") .. "v=10&encoding=json"
  end

  -- One gateway connection, until it ends: "resume", "new" (a new
  -- session), "stop", or a fatal message. state: session, seq, resume_url, me.
  local function connection(ws, state, on_message)
    ch.ws = ws -- (a stop closes it from now on)
    state.live = false -- until READY or RESUMED
    local hello = ws:receive(30000)
    local ok, h = pcall(cjson.decode, hello or "")
    local interval = ok and type(h) == "table" and h.op == 10 and type(h.d) == "table"
      and tonumber(h.d.heartbeat_interval)
    if not interval or interval < 1 or stop.cut then
      ch.ws = nil
      ws:release()
      if stop.cut then return "stop" end
      kiro.log("warn", "kiro.channel", "discord: the gateway did not say HELLO")
      return "resume"
    end
    local function send(op, d) return ws:send(cjson.encode { op = op, d = d }) end
    local over, acked = kiro.napper(), true
    -- The heartbeat: the first after interval x jitter, then each interval;
    -- a beat not acknowledged by the next means a dead connection.
    kiro.spawn(function()
      local next_ms = interval * math.random()
      while not over:nap(next_ms) do
        if not acked then
          kiro.log("warn", "kiro.channel", "discord: the gateway stopped answering heartbeats: reconnecting")
          ws:release()
          return
        end
        acked = false
        send(1, state.seq or cjson.null)
        next_ms = interval
      end
    end)
    if state.session then
      send(6, { token = token, session_id = state.session, seq = state.seq })
    else
      send(2, { token = token, intents = INTENTS,
                properties = { os = "linux", browser = "kiro-rt", device = "kiro-rt" } })
    end
    local outcome
    while true do
      local msg, _, code = ws:receive()
      if not msg then
        local c = ws.close_code
        outcome = stop.cut and "stop" or FATAL[c] or NEW_SESSION[c] and "new" or "resume"
        if code ~= "closed" and not stop.cut then
          kiro.log("warn", "kiro.channel", "discord: gateway connection lost: " .. tostring(ws.close_reason))
        elseif c and not FATAL[c] and not stop.cut then
          kiro.log("warn", "kiro.channel", ("discord: gateway closed (%d %s)"):format(c, ws.close_reason or ""))
        end
        break
      end
      local dok, p = pcall(cjson.decode, msg)
      if dok and type(p) == "table" then
        if math.type(p.s) then state.seq = p.s end
        if p.op == 0 then
          local d = p.d
          if p.t == "READY" then
            state.session, state.resume_url, state.me = d.session_id, d.resume_gateway_url, d.user and d.user.id
            state.live = true
            ch.state = "connected"
            kiro.log("info", "kiro.channel", "discord: connected, session started")
          elseif p.t == "RESUMED" then
            state.live = true
            ch.state = "connected"
            kiro.log("info", "kiro.channel", "discord: session resumed")
          elseif p.t == "MESSAGE_CREATE" and type(d) == "table" and type(d.author) == "table"
            and d.author.id ~= state.me and not d.author.bot and type(d.content) == "string" and d.content ~= "" then
            on_message { chat = d.channel_id, user = d.author.id, text = d.content,
                         kind = d.guild_id and d.guild_id ~= cjson.null and "guild" or "dm" }
          end
        elseif p.op == 11 then
          acked = true
        elseif p.op == 1 then
          send(1, state.seq or cjson.null)
        elseif p.op == 7 then -- reconnect (and resume)
          ws:close(4000, "reconnect")
        elseif p.op == 9 then -- invalid session
          if p.d ~= true then state.session, state.seq = nil, nil end
          ws:close(4000, "invalid session")
        end
      end
    end
    ch.ws = nil
    ch.state = "reconnecting"
    over:stop()
    ws:release()
    if outcome == "resume" and not state.session then outcome = "new" end -- (op 9: no session to resume)
    return outcome
  end

  --- Connects to the gateway and hands each message over until stop():
  --- on_message{ chat =, user =, text =, kind = }.
  function ch.run(_, on_message)
    local state, backoff = {}, 1000
    while not stop.cut do
      local base, err = state.session and state.resume_url, nil
      if not base then base, err = gateway_url() end
      local ws
      if base then
        ws, err = kiro.websocket.connect(with_query(base), { timeout_ms = 30000, max_bytes = 8 << 20, stop = stop })
      end
      if stop.cut then
        if ws then ws:release() end
        break
      end
      local outcome = ws and connection(ws, state, on_message)
      if outcome == "stop" then break end
      if outcome and outcome ~= "resume" and outcome ~= "new" then
        ch.state = "stopped: " .. outcome
        kiro.log("error", "kiro.channel", "discord: " .. outcome .. "; the channel stops")
        return
      end
      if outcome == "new" then state.session, state.seq = nil, nil end
      if not ws then
        kiro.log("warn", "kiro.channel", ("discord: gateway: %s; trying again in %d s"):format(
          tostring(err), backoff // 1000))
      end
      -- A connection that never got as far as READY or RESUMED counts as a
      -- failure: the pause doubles (IDENTIFYs are limited: 1000 a day). A
      -- new session waits 1 to 5 s first, as Discord asks.
      local pause = (ws and state.live) and 250 or backoff
      backoff = (ws and state.live) and 1000 or math.min(backoff * 2, 60000)
      if outcome == "new" then pause = math.max(pause, 1000 + math.random(4000)) end
      stop:nap(pause)
    end
  end

  function ch.stop()
    stop:stop()
    if ch.ws then ch.ws:close(1000, "stopping") end
  end

  return ch
end
