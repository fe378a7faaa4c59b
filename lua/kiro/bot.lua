--- kiro.bot: chat bots on channels (`kiro-rt bot`): each configured channel
-- (a plugin in plugins/channels) hands over messages; each chat gets one
-- reply at a time, streamed with kiro.reply, with its own history.
--
-- A channel's settings (the configuration file's channels.NAME), besides
-- the channel's own (token, api_root, ...):
--   allowed_users, allowed_chats  who may talk to the bot (default: nobody;
--                                 others get no reply, and are logged once)
--   stream_mode, draft_update_interval_ms   kiro.reply's (partial, 1000)
--   backend, model, template, system        how replies are made: a named
--                                 backend and model; a named template (its
--                                 system prompt and trimming), else `system`
--                                 and the last 8 turns within 24,000 characters
--   on_busy = "queue" | "cancel"  a message while a reply runs waits its
--                                 turn (default), or stops that reply
--   bot = NAME                    a bot plugin (plugins/bots/NAME.lua): its
--                                 system prompt, /commands and help
-- Commands: /reset (forget the chat's history), /model NAME (this chat's
-- model; /model alone: back to the default), /stop (stop the reply under
-- way, or the one to the message before it, still waiting its turn).

local kiro = require "kiro"
local reply = require "kiro.reply"
local template = require "kiro.template"
local plugins = require "kiro.plugins"

local bot = {}

-- The bot's metrics (kiro.metrics() shows them; kiro-rt bot --metrics-listen
-- serves them), registered on first use.
local M
local function metrics()
  if M then return M end
  local m = require "kiro.metrics"
  local messages = m.counter("kiro_bot_messages_total",
    "Messages the bot took, by channel and outcome (answered, failed, command, ignored).", { "channel", "outcome" })
  local calls = m.counter("kiro_bot_calls_total",
    "Calls to the channels' services, by channel and kind (typing, send, edit, draft).", { "channel", "kind" })
  local limited = m.counter("kiro_bot_rate_limited_total",
    "Answers from a service to wait (retry_after, HTTP 429), by channel.", { "channel" })
  local typing = m.histogram("kiro_bot_typing_seconds", "From a message to its typing shown.", { "channel" })
  local first = m.histogram("kiro_bot_first_text_seconds", "From a message to its reply's first text.",
    { "channel" })
  M = {
    message = function(ch, outcome) m.add(m.at(messages, ch, outcome)) end,
    -- A channel's figures, for status.
    figures = function(ch)
      local function n(f, ...)
        local s = m.find(f, ...)
        return s and s.value or 0
      end
      local function avg_ms(f)
        local s = m.find(f, ch)
        return s and s.count > 0 and math.floor(s.sum / s.count * 1000 + 0.5) or nil
      end
      return {
        messages = { answered = n(messages, ch, "answered"), failed = n(messages, ch, "failed"),
                     command = n(messages, ch, "command"), ignored = n(messages, ch, "ignored") },
        calls = { typing = n(calls, ch, "typing"), send = n(calls, ch, "send"), edit = n(calls, ch, "edit"),
                  draft = n(calls, ch, "draft") },
        rate_limited = n(limited, ch), typing_avg_ms = avg_ms(typing), first_text_avg_ms = avg_ms(first),
      }
    end,
  }
  reply.observe = function(kind, ch, x)
    if kind == "call" then m.add(m.at(calls, ch, x))
    elseif kind == "rate_limited" then m.add(m.at(limited, ch))
    elseif kind == "typing" then m.record(m.at(typing, ch), x)
    else m.record(m.at(first, ch), x) end
  end
  return M
end

bot.MAX_TURNS, bot.MAX_CHARS = 8, 24000 -- the history a chat keeps, by default (as ZeroClaw)

local HELP = "Send me a message and I answer it. /reset forgets our conversation, /model NAME picks a model, "
  .. "/stop stops a reply."

-- An id, numbers as integers: 123, 123.0 and "123" are one id.
local function norm(v)
  return math.tointeger(tonumber(v)) or tostring(v)
end

-- Whether a set given as a list holds v.
local function listed(list, v)
  if v == nil then return false end
  v = norm(v)
  for _, x in ipairs(list or {}) do
    if norm(x) == v then return true end
  end
  return false
end

local Chat = {}
Chat.__index = Chat

--- The prompt for text, and the call's options: an ACP agent keeps the
--- conversation itself (a session per chat); any other backend gets the
--- history rendered in the prompt.
---@param text string the user's message
---@return string prompt, table opts
function Chat:request(text)
  local s = self.settings
  local opts = { backend = s.backend, model = self.model or s.model }
  local protocol = s.backend and (kiro.option("backends") or {})[s.backend]
  protocol = protocol and protocol.protocol or kiro.option("protocol")
  if protocol == "acp" then
    opts.session = ("%s:%s:%d"):format(self.channel.name, tostring(self.id), self.generation)
    return text, opts
  end
  if s.template then
    opts.template, opts.history = s.template, self.history
    return text, opts
  end
  local system = s.system or self.persona and self.persona.system
  local pre, post = template.form({ system = system, max_turns = bot.MAX_TURNS, max_chars = bot.MAX_CHARS },
    self.channel.name .. ".system", self.history, { chat = tostring(self.id) })
  if not pre then error(post, 0) end
  return pre .. text .. post, opts
end

--- Answers one message, streamed; returns once all of it is delivered:
--- nil, or why the reply broke off.
---@param text string
---@param stopped? boolean a /stop came before it began: it ends at once, stopped
---@return string? failure
function Chat:answer(text, stopped)
  local s = self.settings
  local r = reply.new(self.channel, self.id,
    { stream_mode = s.stream_mode, interval_ms = s.draft_update_interval_ms })
  self.reply = r
  kiro.spawn(function() r:run() end)
  local ok, call = pcall(function()
    if stopped then return nil end -- (a /stop came before it began)
    local prompt, opts = self:request(text)
    if opts.session then -- an agent: its tool calls show as progress in the draft
      opts.on_update = function(u)
        if u.sessionUpdate == "tool_call" then
          r:note("⏳ " .. tostring(u.title or u.kind or "working"))
        elseif u.sessionUpdate == "tool_call_update" and (u.status == "completed" or u.status == "failed") then
          r:note(nil)
        end
      end
    end
    return kiro.call(prompt, opts)
  end)
  local err
  if not ok then
    err = tostring(call)
  elseif not call then
    err = "stopped"
  else
    self.call = call
    while true do
      local chunk, msg, code = call:next()
      if chunk then
        r:add(chunk)
      else
        if code then err = code == "cancelled" and "stopped" or msg end
        break
      end
    end
    self.call = nil
  end
  if err and not r.text:find("%S") then r:add(err == "stopped" and "[stopped]" or "[error: " .. err .. "]") end
  local answer = r.text
  r:finish(err and r.text:find("%S") and answer ~= "[stopped]" and err or nil)
  r:wait()
  self.reply = nil
  if err then return err end
  self.history[#self.history + 1] = { role = "user", content = text }
  self.history[#self.history + 1] = { role = "assistant", content = answer }
end

--- A command's answer, or nil for a message that is not one (and true for
--- one answered without words: /stop).
---@param text string
---@return string? answer, boolean? handled
function Chat:command(text)
  local cmd, arg = text:match("^/(%a+)@?%S*%s*(.-)%s*$")
  local own = cmd and self.persona and self.persona.commands and self.persona.commands[cmd]
  if own then -- the bot plugin's
    local ok, answer = pcall(own, arg, { id = self.id, model = self.model })
    if not ok then
      kiro.log("error", "kiro.bot", ("/%s: %s"):format(cmd, tostring(answer)))
      return "/" .. cmd .. " failed."
    end
    return tostring(answer or "")
  end
  if cmd == "reset" then
    self.history, self.generation = {}, self.generation + 1
    return "History cleared."
  elseif cmd == "model" then
    self.model = arg ~= "" and arg or nil
    return self.model and ("Model: " .. self.model) or "Model: the default"
  elseif cmd == "stop" then
    if self.call then
      self.call:cancel()
      return nil, true
    end
    local last = self.queue[#self.queue]
    if type(last) == "string" and not last:match("^/") then -- a reply not yet begun (typed ahead): it won't
      self.queue[#self.queue] = { stopped = last }
      return nil, true
    end
    return "Nothing to stop."
  elseif cmd == "start" or cmd == "help" then
    local p = self.persona
    if not p then return HELP end
    local mine = {}
    for name in pairs(p.commands or {}) do mine[#mine + 1] = "/" .. name end
    table.sort(mine)
    return table.concat({ p.help or "", HELP, #mine > 0 and ("Also: " .. table.concat(mine, ", ")) or "" }, " ")
      :gsub("^%s+", ""):gsub("%s+$", "")
  end
  return nil
end

--- A short answer of the bot's own (a command's): sent whole, no typing.
---@param text string
function Chat:say(text)
  local r = reply.new(self.channel, self.id, { stream_mode = "off", typing = false })
  r:add(text)
  r:finish()
  r:run()
end

--- The chat's worker: its messages and commands, one at a time, in order.
function Chat:work()
  while #self.queue > 0 do
    local text = table.remove(self.queue, 1)
    local stopped = type(text) == "table"
    if stopped then text = text.stopped end
    local outcome = "answered"
    local ok, err = pcall(function()
      local answer = not stopped and self:command(text) -- (in turn with the messages around it)
      if answer then
        outcome = "command"
        self:say(answer)
      elseif self:answer(text, stopped) then
        outcome = "failed"
      end
    end)
    metrics().message(self.channel.name, ok and outcome or "failed")
    if not ok then
      kiro.log("error", "kiro.bot", ("%s: chat %s: %s"):format(self.channel.name, tostring(self.id), err))
    end
  end
  self.working = false
  local quiet = self.bot.quiet
  self.bot.quiet = nil
  if quiet then quiet:set() end -- (Bot:idle looks again)
end

local Bot = {}
Bot.__index = Bot

--- A message from a channel.
---@param entry table the channel's entry (Bot.channels): ch, settings, persona
---@param m table { chat =, user =, text =, kind = }
function Bot:on_message(entry, m)
  local ch, settings = entry.ch, entry.settings
  if not (ch.always_allowed or listed(settings.allowed_users, m.user) or listed(settings.allowed_chats, m.chat)) then
    local key = ch.name .. ":" .. tostring(m.user) .. ":" .. tostring(m.chat)
    metrics().message(ch.name, "ignored")
    if not self.ignored[key] then
      self.ignored[key] = true
      kiro.log("warn", "kiro.bot", ("%s: user %s in chat %s is not in allowed_users or allowed_chats: ignored")
        :format(ch.name, tostring(m.user), tostring(m.chat)))
    end
    return
  end
  self.messages = self.messages + 1
  local chats = self.chats[ch.name]
  local c = chats[m.chat]
  if not c then
    c = setmetatable({ channel = ch, id = m.chat, settings = settings, history = {}, queue = {}, generation = 1,
                       bot = self }, Chat)
    chats[m.chat] = c
  end
  c.channel, c.settings, c.persona = ch, settings, entry.persona -- (a reload's, from this message on)
  if m.text:match("^/stop%f[%A]") then -- at once, not after the reply it stops
    local answer = c:command(m.text)
    if answer then kiro.spawn(function() c:say(answer) end) end -- (the channel's reader goes on meanwhile)
    return
  end
  if c.call and settings.on_busy == "cancel" then c.call:cancel() end
  c.queue[#c.queue + 1] = m.text
  if not c.working then
    c.working = true
    kiro.spawn(function() c:work() end)
  end
end

--- A bot plugin (plugins/bots/NAME.lua, or the configuration's bots/
--- folder first): a table with `system` (its system prompt, under the
--- channel's own), `commands` ({ name = function(args, chat) -> answer },
--- each a /name command; chat: { id =, model = }) and `help`. nil for no
--- name; nil and a message for a plugin that will not load.
---@param name? string
---@param dir? string the configuration file's folder
---@return table|nil persona, string? message
function bot.persona(name, dir)
  if name == nil then return nil end
  local file, err = plugins.find("bots", name, dir and { dir .. "/bots" })
  if not file then return nil, err end
  local p, lerr = plugins.load(file)
  if lerr then return nil, lerr end
  if type(p) ~= "table" then return nil, file .. ": a bot plugin returns a table (system, commands, help)" end
  for k, v in pairs(p) do
    local want = ({ system = "string", help = "string", commands = "table" })[k]
    if type(v) ~= want then
      return nil, ("%s: %s %s"):format(file, tostring(k), want and ("must be a " .. want)
        or "is not a bot plugin's (system, commands, help)")
    end
  end
  for cmd, fn in pairs(p.commands or {}) do
    if type(cmd) ~= "string" or not cmd:match("^%a+$") or type(fn) ~= "function" then
      return nil, ("%s: commands.%s must be a function (and its name letters)"):format(file, tostring(cmd))
    end
  end
  return p
end

-- A channel's entry, made from its plugin (not yet running): { name =,
-- ch =, settings =, persona = }, or nil and a message.
local function channel(name, settings, dir)
  local file, err = plugins.find("channels", name, dir and { dir .. "/channels" })
  if not file then return nil, err end
  local make, lerr = plugins.load(file)
  if lerr then return nil, ("channels.%s: %s"):format(name, lerr) end
  local persona, perr = bot.persona(settings.bot, dir)
  if perr then return nil, ("channels.%s.bot: %s"):format(name, perr) end
  local ok, ch = pcall(make, settings)
  if not ok then return nil, ("channels.%s: %s"):format(name, tostring(ch)) end
  ch.name = ch.name or name
  return { name = name, ch = ch, settings = settings, persona = persona }
end

--- Runs a channel's entry, once the one it replaces has ended: its
--- messages go to the bot until it stops. The bot has ended once no
--- channel runs or waits to.
---@param c table the entry: name, ch, settings, persona
---@param after? table the ended event of the entry it replaces
function Bot:launch(c, after)
  self.channels[c.name] = c
  self.chats[c.ch.name] = self.chats[c.ch.name] or {}
  self.running = self.running + 1
  c.done, c.waiting = kiro.event(), after ~= nil
  kiro.spawn(function()
    if after then after:wait() end
    c.waiting = false
    if not c.stopped then
      local ok, err = pcall(c.ch.run, c.ch, function(m)
        local mok, merr = pcall(self.on_message, self, c, m)
        if not mok then kiro.log("error", "kiro.bot", ("%s: a message could not be taken: %s"):format(c.name, merr)) end
      end)
      if not ok then -- (its end is kept: a reload may start it anew)
        c.ch.state = "stopped: " .. tostring(err)
        kiro.log("error", "kiro.bot", ("%s: the channel failed: %s"):format(c.name, tostring(err)))
      end
    end
    c.done:set()
    self.running = self.running - 1
    if self.running == 0 then self.ended:set() end
  end)
end

-- Stops a channel's entry: no more messages; its replies under way finish.
local function halt(c)
  c.stopped = true
  c.ch:stop()
end

--- Starts the channels a configuration names (channels = { NAME = settings }):
--- each a plugin of plugins/channels. Returns the bot, or nil and a message.
---@param channels table
---@param dir? string the configuration file's folder: its channels/ and bots/ are searched first
---@return table|nil bot, string? message
function bot.start(channels, dir)
  metrics() -- (the replies' observer, from the first)
  local b = setmetatable({ channels = {}, chats = {}, ignored = {}, messages = 0, dir = dir, started = kiro.now(),
                           running = 0, ended = kiro.event(),
                           ending = {} }, Bot) -- (ending: channels dropped, by name: their ended events)
  local made = {}
  for name, settings in pairs(channels) do
    local c, err = channel(name, settings, dir)
    if not c then return nil, err end
    made[#made + 1] = c
  end
  for _, c in ipairs(made) do b:launch(c) end
  return b
end

--- Ctrl-C with no reply under way: whether a channel took it (a console's
--- prompt drops the line being typed), rather than the bot stopping.
---@return boolean
function Bot:interrupt()
  for _, c in pairs(self.channels) do
    if c.ch.interrupt and c.ch.interrupt() then return true end
  end
  return false
end

--- Stops every reply under way (a console's Ctrl-C); how many there were.
---@return integer
function Bot:cancel_replies()
  local n = 0
  for _, chats in pairs(self.chats) do
    for _, c in pairs(chats) do
      if c.call then
        c.call:cancel()
        n = n + 1
      end
    end
  end
  return n
end

-- The settings a running channel takes as they change (kiro.bot's own);
-- a change in any other (its token, where its service is) makes a new one.
local LIVE = { allowed_users = true, allowed_chats = true, stream_mode = true, draft_update_interval_ms = true,
               backend = true, model = true, template = true, system = true, on_busy = true, bot = true }

local function reconnects(before, after)
  for k, v in pairs(before) do
    if not LIVE[k] and v ~= after[k] then return true end
  end
  for k, v in pairs(after) do
    if not LIVE[k] and v ~= before[k] then return true end
  end
  return false
end

--- A reload's channels: a channel no longer named stops (its replies
--- under way finish); a new one starts; one whose connection changed (its
--- token, api_root, ...) is stopped and started anew once the old one has
--- ended (two pollers on one token would fight), as is one named again
--- while its old self is still ending; the others take their new settings
--- (who may talk, how replies stream, the model, the bot plugin) from
--- their next message on. A channel that will not load is logged, and the
--- one running under that name stays as it was; a file that would leave
--- no channel running changes nothing.
---@param channels table
function Bot:configure(channels)
  if self.stopped then return end
  -- First everything made, nothing yet stopped or started.
  local plan, runs = {}, 0
  for name, settings in pairs(channels) do
    local c = self.channels[name]
    if c and not reconnects(c.settings, settings) then
      plan[name] = { keep = c, settings = settings }
    else
      local new, err = channel(name, settings, self.dir)
      if new then
        plan[name] = { new = new, old = c }
        runs = runs + 1
      else
        kiro.log("error", "kiro.bot", err .. (c and " (the one running stays)" or " (not started)"))
        plan[name] = c and { keep = c }
      end
    end
    local kept = plan[name] and plan[name].keep
    if kept and not kept.done:is_set() then runs = runs + 1 end
  end
  if runs == 0 then
    kiro.log("error", "kiro.bot", "the configuration would leave no channel running: the channels running stay")
    return
  end
  for name, c in pairs(self.channels) do
    if not plan[name] then
      kiro.log("info", "kiro.bot", name .. ": no longer configured: stopping (replies under way finish)")
      self.channels[name], self.ending[name] = nil, c.done
      halt(c)
    end
  end
  for name, p in pairs(plan) do
    if p.settings then
      local persona, err = bot.persona(p.settings.bot, self.dir)
      if err then kiro.log("error", "kiro.bot", ("channels.%s.bot: %s (the one in use stays)"):format(name, err))
      else p.keep.persona = persona end
      p.keep.settings = p.settings
    elseif p.new then
      kiro.log("info", "kiro.bot", name .. (p.old and ": its connection changed: starting it anew" or ": starting"))
      if p.old then halt(p.old) end
      self:launch(p.new, p.old and p.old.done or self.ending[name])
      self.ending[name] = nil
    end
  end
end

--- Stops taking messages; replies under way finish.
function Bot:stop()
  self.stopped = true
  for _, c in pairs(self.channels) do halt(c) end
end

--- Waits until no reply is under way, ms at the most.
---@param ms integer
function Bot:idle(ms)
  local deadline = kiro.now() + ms
  while self:busy() > 0 and kiro.now() < deadline do
    local ev = self.quiet or kiro.event() -- (one for every waiter: a chat that ends sets it)
    self.quiet = ev
    local t = kiro.core.timer(math.min(math.max(1, deadline - kiro.now()), 2147483647), function() ev:set() end)
    ev:wait()
    t:stop()
    if self.quiet == ev then self.quiet = nil end
  end
end

--- What the bot is doing, channel by channel: its state (the channel's
--- own word: connected, polling, ...), chats, replies under way, messages
--- by outcome, calls by kind, 429s, and the mean time to typing and to the
--- first text.
---@return table
function Bot:status()
  local out = { pid = kiro.core.getpid(), version = kiro.version, uptime_ms = kiro.now() - self.started,
                channels = {} }
  local names = {}
  for name in pairs(self.channels) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    local entry = self.channels[name]
    local ch = entry.ch
    local st = metrics().figures(ch.name)
    st.name, st.state, st.chats, st.replying = ch.name, entry.waiting and "starting" or ch.state or "running", 0, 0
    for _, c in pairs(self.chats[ch.name]) do
      st.chats = st.chats + 1
      if c.working then st.replying = st.replying + 1 end
    end
    out.channels[#out.channels + 1] = st
  end
  return out
end

--- Answers `kiro-rt bot status` on a socket of the user's own (path):
--- the listener, or nil and why (another bot answers there).
---@param path string
---@return userdata|nil listener, string? message
function Bot:serve_status(path)
  local ok, err = require("kiro.server").clear_stale(path)
  if not ok then return nil, err end
  local b = self
  local conn_mt = { __index = {
    on_event = function(c, ev, msg)
      if ev ~= "line" then return end
      if type(msg) == "table" and msg.op == "status" then
        local st = b:status()
        st.op = "status"
        c.sock:send_json(st)
      else
        c.sock:send_json { op = "error", code = "protocol", message = "a bot answers {\"op\":\"status\"} only" }
      end
    end,
  } }
  local handler = {}
  function handler.on_event(_, ev, sock)
    if ev == "accept" then sock:attach(setmetatable({ sock = sock }, conn_mt)) end
  end
  return kiro.core.listen(path, handler, { json = true, max_line = 4096, max_conns = 16 })
end

--- Replies under way.
---@return integer
function Bot:busy()
  local n = 0
  for _, chats in pairs(self.chats) do
    for _, c in pairs(chats) do
      if c.working then n = n + 1 end
    end
  end
  return n
end

return bot
