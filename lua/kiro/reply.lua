--- kiro.reply: one streamed reply delivered to one chat, the way chat
-- services want it (CHANNELS.md's five behaviours), for every channel.
--
--   local r = reply.new(channel, chat, { stream_mode = "partial", interval_ms = 1000 })
--   kiro.spawn(function() r:run() end)          -- the writer
--   for chunk in kiro.stream(prompt) do r:add(chunk) end
--   r:finish()                                  -- or r:finish("backend failed")
--   r:wait()                                    -- everything delivered
--
-- The writer makes at most one call to the chat at a time, and at most one
-- send or edit per interval_ms; text that arrives meanwhile is merged into
-- the next edit, never dropped, and an edit never repeats the text shown.
-- Typing shows until the first text (renewed before it lapses). A reply
-- longer than the channel's limit is split at a paragraph, line or word
-- boundary (never inside a ``` block when it can be helped; a block that
-- must be cut is closed and opened again); each part ends as exactly one
-- message. A retry_after from the service holds every call to that chat
-- until it passes, the text kept. Text goes as plain text (no parse mode:
-- a cut entity cannot fail to parse).
--
-- stream_mode: "off" (typing, then the whole reply at the end), "partial"
-- (a message edited as the reply grows), "draft" (Telegram's
-- sendMessageDraft preview in private chats, then the final message;
-- elsewhere partial).
--
-- A channel is a table with:
--   limit            the longest message, in code points
--   typing_ms        how long a typing indicator lasts
--   typing(chat)                    -> true | nil, err
--   send(chat, text)                -> message id | nil, err
--   edit(chat, id, text)            -> true | nil, err
--   draft(chat, draft_id, text)     -> true | nil, err   (optional)
--   private(chat)                   -> whether drafts work there (optional)
--   done(chat)                      a reply is all out (optional)
--   progress = false                no progress lines (optional: a terminal
--                                   prints text as it comes, and takes none back)
--   min_interval_ms                 its own floor for interval_ms (optional: a
--                                   terminal has no pace to keep)
-- err: { message =, retry_after = seconds, not_modified = true, gone = true
-- (the message to edit is no more), permanent = true (retrying is futile),
-- skipped = true (not made: typing giving way to text, see reply.pacer) }.

local core = require "kiro.core"
local tasks = require "kiro.tasks"

local reply = {}

reply.MIN_INTERVAL_MS = 250   -- draft_update_interval_ms may not be below this
reply.INTERVAL_MS = 1000
reply.FIRST_CHARS = 8         -- the first draft waits for this much text (or the end)
reply.MAX_TRIES = 6           -- a failing call is tried this often (backing off), then left
reply.MARKER = "[reply interrupted]"

--- Hears what replies do, for metrics (kiro.bot sets it): observe(kind,
--- channel, seconds) with kind typing or first_text (seconds since the
--- reply began), or call (a service call: seconds nil, channel and the
--- call's kind), or rate_limited.
---@type fun(kind: string, channel: string, x: any)?
reply.observe = nil

local Reply = {}
Reply.__index = Reply

--- A reply to deliver.
---@param channel table
---@param chat any the channel's chat id
---@param settings? table stream_mode, interval_ms, typing (false: none)
---@return table reply
function reply.new(channel, chat, settings)
  settings = settings or {}
  local mode = settings.stream_mode or "partial"
  if mode == "draft" and not (channel.draft and channel.private and channel:private(chat)) then mode = "partial" end
  return setmetatable({
    ch = channel, chat = chat, mode = mode,
    -- (a channel with no pace of its own, a terminal, says so: min_interval_ms)
    interval = math.max(channel.min_interval_ms or reply.MIN_INTERVAL_MS,
      settings.interval_ms or channel.min_interval_ms or reply.INTERVAL_MS),
    text = "", done = false, failed = nil,
    start = 1,          -- where the part being shown begins (a byte offset in text)
    id = nil,           -- the message showing it, once sent
    shown = nil,        -- what that message (or draft) shows
    parts = {},         -- the messages that are final: ids
    next_at = 0,        -- no send or edit before this (core.now ms)
    blocked = 0,        -- no call at all before this (retry_after)
    typing_at = 0,      -- the next typing renewal
    draft_id = math.random(1, 2 ^ 31 - 1),
    typing = settings.typing ~= false, -- a command's answer shows none
    w = nil, finished = tasks.event(),
    calls = 0, t0 = core.now(), seen_typing = false, seen_text = false,
  }, Reply)
end

--- Text arrived.
---@param chunk string
function Reply:add(chunk)
  if self.done or chunk == "" then return end
  self.text = self.text .. chunk
  if self.w then tasks.wake(self.w) end
end

--- A line of progress (an agent's tool call) shown under the text while
--- the reply is under way; nil clears it. The final message never has it.
---@param line? string
function Reply:note(line)
  if self.done or line == self.status or self.ch.progress == false then return end
  self.status = line
  if self.w then tasks.wake(self.w) end
end

--- The reply is whole; with err, it failed (what came is kept, and marked).
---@param err? string
function Reply:finish(err)
  if self.done then return end
  self.done, self.failed = true, err
  if err and self.text:find("%S") then self.text = self.text .. "\n\n" .. reply.MARKER end
  if self.w then tasks.wake(self.w) end
end

--- Waits until the writer is done.
function Reply:wait()
  self.finished:wait()
end

--- Sleeps until ms from now, or until add/finish wakes it.
---@param ms number
function Reply:pause(ms)
  if ms <= 0 then return end
  local w = { woken = false }
  self.w = w
  local t = core.timer(math.ceil(ms), function() tasks.wake(w) end)
  tasks.block(w)
  t:stop()
  self.w = nil
end

-- Code points of s.
local function length(s)
  return utf8.len(s) or #s
end

-- The byte offset just past the first n code points of s.
local function cut_at(s, n)
  return (utf8.offset(s, n + 1) or #s + 1) - 1
end

--- Where to split text that is longer than limit (code points): the bytes
--- of the first part, and where the rest begins. At a paragraph, line or
--- word break if one is in the second half of the part; a ``` block is not
--- cut when the part can end before it; one that is cut is closed, and
--- opened again in the rest (reopen true).
---@param text string
---@param limit integer
---@return integer last byte of the first part
---@return integer first byte of the rest
---@return boolean reopen the rest opens a ``` block again
function reply.split(text, limit)
  local room = limit - 4 -- for a closing fence, when one is needed
  local max = cut_at(text, room)
  local head = text:sub(1, max)
  local best
  for _, sep in ipairs { "\n\n", "\n", " " } do
    local at, from = nil, 1
    while true do
      local i, j = head:find(sep, from, true)
      if not i then break end
      at, from = { i - 1, j + 1 }, j + 1
    end
    if at and at[1] >= room // 2 then
      best = at
      break
    end
  end
  best = best or { max, max + 1 }
  -- Inside a ``` block? (an odd number of fences before the cut)
  local part = text:sub(1, best[1])
  local _, fences = part:gsub("```", "")
  if fences % 2 == 1 then
    local open = 0
    for i in part:gmatch("()```") do open = i end
    local before = part:sub(1, open - 1):match("^(.-)%s*$")
    if #before > 0 then return #before, open, false end
    return best[1], best[2], true
  end
  return best[1], best[2], false
end

--- One call, until it goes through: true (and its result), or false once it
--- fails for good (logged). A retry_after holds the chat; "not modified"
--- is success; other failures back off and try again.
---@param what string the channel's method: typing, send, edit, draft
---@param ... any its arguments after the chat
---@return boolean ok, any result_or_error
function Reply:call(what, ...)
  local ch = self.ch
  for try = 1, reply.MAX_TRIES do
    while core.now() < self.blocked do self:pause(self.blocked - core.now()) end -- (new text wakes it early)
    self.calls = self.calls + 1
    local res, err = ch[what](ch, self.chat, ...)
    local observe = reply.observe
    if observe then observe("call", ch.name or "?", what) end
    if res then
      if observe then self:seen(what) end
      return true, res
    end
    err = type(err) == "table" and err or { message = tostring(err) }
    if err.not_modified then return true, nil end
    if err.skipped then return false, err end -- (typing given up for text: not a failure)
    if err.retry_after and observe then observe("rate_limited", ch.name or "?") end
    if err.retry_after then
      self.blocked = core.now() + math.ceil(err.retry_after * 1000) + 20
      core.log("warn", "kiro.channel", ("%s: chat %s: retry after %s s"):format(what, tostring(self.chat),
        tostring(err.retry_after)))
    elseif err.permanent or err.gone then
      core.log("warn", "kiro.channel", ("%s: chat %s: %s"):format(what, tostring(self.chat), tostring(err.message)))
      return false, err
    else
      core.log("warn", "kiro.channel", ("%s: chat %s: %s (try %d)"):format(what, tostring(self.chat),
        tostring(err.message), try))
      self:pause(math.min(30000, 500 * 2 ^ (try - 1)))
    end
  end
  return false, { message = "gave up" }
end

--- The first typing and the first text a user saw of this reply: timed.
---@param what string the call that went through
function Reply:seen(what)
  local kind = what == "typing" and not self.seen_typing and "typing"
    or what ~= "typing" and not self.seen_text and "first_text"
  if not kind then return end
  if kind == "typing" then self.seen_typing = true else self.seen_text = true end
  reply.observe(kind, self.ch.name or "?", (core.now() - self.t0) / 1000)
end

--- Shows t as the current part: a new message, an edit of the one there,
--- or (a draft, not final) a preview. The caller waited for next_at.
---@param t string
---@param final boolean the part's last text (a draft is not enough)
function Reply:show(t, final)
  if t == self.shown and (self.id or not final) then return end
  local ok, res
  if self.mode == "draft" and not final then
    self:call("draft", self.draft_id, t)
  elseif self.id then
    ok, res = self:call("edit", self.id, t)
    if not ok and res and res.gone then -- the message went: a new one carries the text
      self.id = nil
      ok, res = self:call("send", t)
      if ok then self.id = res end
    end
  else
    ok, res = self:call("send", t)
    if ok then self.id = res end
  end
  self.next_at = core.now() + self.interval
  self.shown = t
end

--- The current part is final: the next text starts a new message.
---@param next_start integer where the next part begins in the text
function Reply:close_part(next_start)
  self.parts[#self.parts + 1] = self.id
  self.id, self.shown, self.start = nil, nil, next_start
end

--- Nothing shown yet: typing is what the user sees.
---@return boolean
function Reply:silent()
  return #self.parts == 0 and not self.id and not self.shown
end

--- What is due: "split" (a part is full), "final", "update", or nil.
---@param rest string the text from the current part on
---@param shown string what an update would show (rest, and progress under it)
---@return string?
function Reply:due(rest, shown)
  if length(rest) > self.ch.limit then return "split" end
  if self.done then return "final" end
  if self.mode ~= "off" and shown ~= self.shown and length(shown) >= reply.FIRST_CHARS and shown:find("%S") then
    return "update"
  end
  return nil
end

--- A service's global pace, shared by every chat: at most per_s calls in
--- any second. p.wait() waits for room and takes it; p.spare() takes room
--- only while the second is less than two-thirds used, else says no at once
--- (typing: a cosmetic call gives way to text when calls are scarce).
---@param per_s integer
---@return table pacer
function reply.pacer(per_s)
  local recent, head = {}, 1 -- the times of the calls made, oldest at head
  local p = {}
  local function used(now)
    while head <= #recent and recent[head] + 1000 <= now do head = head + 1 end
    if head > 1000 then recent = table.move(recent, head, #recent, 1, {}); head = 1 end
    return #recent - head + 1
  end
  function p.wait()
    while used(core.now()) >= per_s do tasks.sleep(math.max(1, recent[head] + 1000 - core.now())) end
    recent[#recent + 1] = core.now()
  end
  function p.spare()
    if used(core.now()) * 3 >= per_s * 2 then return false end
    recent[#recent + 1] = core.now()
    return true
  end
  return p
end

--- The writer: delivers the reply as it grows, returns once it is all out.
function Reply:run()
  local ch = self.ch
  local ok, err = pcall(function()
    while true do
      local now = core.now()
      if self.typing and self:silent() and not self.done and now >= self.typing_at and now >= self.blocked then
        local _, err = self:call("typing")
        -- (typing that gave way to text is tried again in a second)
        local skipped = type(err) == "table" and err.skipped
        self.typing_at = core.now() + (skipped and 1000 or math.max(1000, ch.typing_ms - 1000))
      end
      local rest = self.text:sub(self.start)
      local shown = rest -- what an update shows: the text so far, and progress under it
      if self.status and not self.done and self.mode ~= "off" then
        shown = rest .. (rest:find("%S") and "\n\n" or "") .. self.status
      end
      local due = self:due(rest, shown)
      now = core.now()
      local typing_due = self.typing and self:silent() and math.max(self.typing_at, self.blocked) or math.huge
      if due and now < self.next_at then -- not yet: more text may come meanwhile
        self:pause(math.min(self.next_at, typing_due) - now)
      elseif due == "split" then
        local last, nxt, reopen = reply.split(rest, ch.limit)
        local part = rest:sub(1, last)
        if reopen then
          part = part .. "\n```"
          self.text = self.text:sub(1, self.start + nxt - 2) .. "```\n" .. self.text:sub(self.start + nxt - 1)
        end
        self:show(part, true)
        self:close_part(self.start + nxt - 1)
      elseif due == "final" then
        if rest:find("%S") then self:show(rest, true) end
        if self.id then self:close_part(#self.text + 1) end
        break
      elseif due == "update" then
        self:show(shown, false)
      else -- wait for text (and the next typing renewal)
        self:pause(math.min(typing_due, now + 3600000) - now)
      end
    end
  end)
  if ch.done then ch:done(self.chat) end -- (a console shows its prompt again)
  self.finished:set()
  if not ok then error(err, 0) end
end

return reply
