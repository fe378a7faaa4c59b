--- telegram: a bot on Telegram's Bot API (long polling), for `kiro-rt bot`.
--
--   channels = { telegram = {
--     token = "123:ABC...",            -- else $TELEGRAM_BOT_TOKEN
--     api_root = "https://api.telegram.org", -- a self-hosted Bot API server, or a test's
--     allowed_users = { 12345 }, allowed_chats = { -100123 },
--     stream_mode = "partial",          -- off | partial | draft
--     draft_update_interval_ms = 1000,
--   } }
--
-- The token is a secret: it is in every URL, and no message, log line or
-- status shows it. Calls stay under Telegram's global limit (30 a second,
-- shared by every chat; typing gives way to text when calls are scarce);
-- each chat's own pace is kiro.reply's.

local kiro = require "kiro"
local cjson = require "cjson"
local reply = require "kiro.reply"

local POLL_S = 50          -- getUpdates' long poll (Telegram's cap)

-- An id as JSON gave it (lua-cjson reads numbers as floats): an integer.
local function id(v)
  return math.tointeger(v) or v
end
local GLOBAL_PER_S = 30    -- calls a second, all chats together

return function(settings)
  local token = settings.token or os.getenv("TELEGRAM_BOT_TOKEN")
  if type(token) ~= "string" or not token:match("^%d+:[%w_-]+$") then
    error("telegram: a bot token is needed (channels.telegram.token or TELEGRAM_BOT_TOKEN), as Telegram's"
      .. " BotFather gives it: digits, a colon, letters", 0)
  end
  local root = (settings.api_root or "https://api.telegram.org"):gsub("/+$", "")
  local poll_s = settings.poll_timeout_s or POLL_S
  local ch = { name = "telegram", limit = 4096, typing_ms = 5000, kinds = {}, state = "starting" }
  local secrets = { token }
  local stop = kiro.napper() -- stop() cuts its naps short; stop.cut once it is called

  local pace = reply.pacer(GLOBAL_PER_S) -- all chats together

  --- One Bot API call: its result, or nil and an error table (kiro.reply's).
  function ch.api(method, params, timeout_ms)
    if method ~= "getUpdates" and method ~= "sendChatAction" then pace.wait() end
    local r, msg = kiro.http.request {
      url = root .. "/bot" .. token .. "/" .. method, method = "POST",
      headers = { ["Content-Type"] = "application/json" }, body = cjson.encode(params or {}),
      timeout_ms = timeout_ms or 30000, max_bytes = 8 * 1024 * 1024, secrets = secrets,
      stop = method == "getUpdates" and stop or nil, -- (a stop ends the long poll, not a reply's calls)
    }
    if not r then return nil, { message = msg } end
    local ok, body = pcall(cjson.decode, r.body)
    if not ok or type(body) ~= "table" then
      return nil, { message = ("HTTP %d, not the Bot API's JSON"):format(r.status) }
    end
    if body.ok then return body.result end
    local desc = tostring(body.description or ("HTTP " .. r.status))
    local err = { message = desc, code = body.error_code }
    local p = type(body.parameters) == "table" and body.parameters or {}
    if body.error_code == 429 then
      err.retry_after = tonumber(p.retry_after) or tonumber(r.headers["retry-after"]) or 1
    elseif desc:find("message is not modified", 1, true) then
      err.not_modified = true
    elseif desc:find("message to edit not found", 1, true) then
      err.gone = true
    elseif body.error_code == 400 or body.error_code == 401 or body.error_code == 403 or body.error_code == 404 then
      err.permanent = true
    end
    return nil, err
  end

  function ch.typing(_, chat)
    if not pace.spare() then return nil, { skipped = true } end
    return ch.api("sendChatAction", { chat_id = chat, action = "typing" })
  end

  function ch.send(_, chat, text)
    local m, err = ch.api("sendMessage", { chat_id = chat, text = text })
    if not m then return nil, err end
    return id(m.message_id)
  end

  function ch.edit(_, chat, message, text)
    return ch.api("editMessageText", { chat_id = chat, message_id = message, text = text })
  end

  function ch.draft(_, chat, draft_id, text)
    return ch.api("sendMessageDraft", { chat_id = chat, draft_id = draft_id, text = text })
  end

  --- Drafts live only in chats with users.
  function ch.private(_, chat) return ch.kinds[chat] == "private" end

  --- Polls for updates until stop() and hands each text message over:
  --- on_message{ chat =, user =, text =, kind = }. A second poller (409)
  --- is reported plainly; other failures back off and poll again.
  function ch.run(_, on_message)
    local offset, backoff = nil, 1000
    ch.state = "polling"
    while not stop.cut do
      local updates, err = ch.api("getUpdates", { offset = offset, timeout = poll_s, allowed_updates = { "message" } },
        (poll_s + 15) * 1000)
      if stop.cut then break end
      if updates then
        ch.state = "polling"
        backoff = 1000
        for _, u in ipairs(updates) do
          offset = math.max(offset or 0, id(u.update_id) + 1)
          local m = u.message
          if type(m) == "table" and type(m.text) == "string" and type(m.chat) == "table" then
            local chat = id(m.chat.id)
            ch.kinds[chat] = m.chat.type
            on_message { chat = chat, user = type(m.from) == "table" and id(m.from.id) or nil, text = m.text,
                         kind = m.chat.type }
          end
        end
      else
        ch.state = "retrying: " .. err.message
        if err.code == 409 then
          kiro.log("error", "kiro.channel", "telegram: another instance is polling this bot (409 Conflict); "
            .. "only one may: trying again in " .. backoff // 1000 .. " s")
        else
          kiro.log("warn", "kiro.channel", "telegram: getUpdates: " .. err.message)
        end
        stop:nap(err.retry_after and err.retry_after * 1000 or backoff)
        backoff = math.min(backoff * 2, 60000)
      end
    end
  end

  function ch.stop()
    stop:stop()
  end

  return ch
end
