-- mod_kiro: an XMPP bot on kiro-rt. A chat message to the bot's JID is
-- answered by the backend, streamed: "composing" while it is generated, the
-- text as one message corrected as it grows (XEP-0308, at most every
-- kiro_draft_interval_ms), and "active" once it is whole (XEP-0085). Each
-- user's messages are answered one at a time, in order; other users, and
-- the server, never wait on a reply.
--
-- prosody.cfg.lua:
--
--   plugin_paths = { "/path/to/kiro-rt/plugins/prosody" }
--   kiro = { cli_path = "/usr/bin/kiro-cli", model = "..." } -- kiro.configure's options
--   VirtualHost "example.org"
--     modules_enabled = { "kiro" }
--     kiro_bot = "bot@example.org"         -- default: bot@<host>
--     kiro_draft_interval_ms = 1000        -- default 1000, floor 100
--     kiro_call = { template = "default" } -- each call's options (kiro.stream's opts)
--
-- kiro is one runtime for the whole Prosody process: `kiro` (its options:
-- backends, policies, ...) belongs in the global section, and each host
-- picks what it needs with kiro_call (a named backend, a template, a
-- model). kiro (lua/kiro and kiro.so) must be on Prosody's Lua paths:
-- installed with `make install`, or named by LUA_PATH and LUA_CPATH.
-- Prosody's configuration is read again on reload (SIGHUP, prosodyctl
-- reload), and kiro's logs go to Prosody's log.

local kiro = require "kiro"
local st = require "util.stanza"
local async = require "util.async"
local ids = require "util.id"
local jid = require "util.jid"
local time = require "util.time"

local NS_CHATSTATES = "http://jabber.org/protocol/chatstates"
local NS_CORRECT = "urn:xmpp:message-correct:0"

-- The process's one kiro: its host adapter, and how many hosts use it.
local shared = module:shared("/*/kiro/runtime")
if not shared.adapter then shared.adapter, shared.hosts = kiro.host.prosody(), 0 end
shared.hosts = shared.hosts + 1
local adapter = shared.adapter
local bot, interval, call_opts

-- Prosody's options, checked by kiro as kiro.configure's and kiro.stream's.
local function configure()
  bot = jid.bare(module:get_option_string("kiro_bot", "bot@" .. module.host))
  interval = math.max(100, module:get_option_number("kiro_draft_interval_ms", 1000)) / 1000
  call_opts = module:get_option("kiro_call", {})
  local global = module:context("*"):get_option("kiro")
  local mine = module:get_option("kiro")
  if mine ~= nil and mine ~= global then
    module:log("warn", "kiro is configured once for the whole server: set `kiro` in the global section "
      .. "(this host's is not used); a host picks its backend, template or model with kiro_call")
  end
  local options = {}
  for k, v in pairs(global or {}) do options[k] = v end
  options.host = adapter
  kiro.configure(options) -- a `log` filter there counts: the lines that pass it go to Prosody's log
  kiro.configure { log = function(level, target, message)
    module:log(level == "trace" and "debug" or level, "%s: %s", target, message)
  end }
end
configure()
module:hook_global("config-reloaded", configure)

local function send(user, text, state, replaces, id)
  local m = st.message({ to = user, from = bot, type = "chat", id = id or ids.medium() })
  if text then m:text_tag("body", text) end
  if replaces then m:tag("replace", { xmlns = NS_CORRECT, id = replaces }):up() end
  if state then m:tag(state, { xmlns = NS_CHATSTATES }):up() end
  module:send(m)
end

-- One answer, streamed into one message that is corrected as it grows.
local function answer(stanza)
  local user, prompt = stanza.attr.from, stanza:get_child_text("body")
  send(user, nil, "composing")
  local parts, first, shown, last = {}, nil, nil, 0
  local function show(final)
    local text = table.concat(parts)
    if text == shown then
      if final then send(user, nil, "active") end
      return
    end
    local state = final and "active" or "composing"
    if first then
      send(user, text, state, first)
    else
      first = ids.medium()
      send(user, text, state, nil, first)
    end
    shown, last = text, time.now()
  end
  local ok, err = pcall(function()
    for chunk in kiro.stream(prompt, call_opts) do
      parts[#parts + 1] = chunk
      if time.now() - last >= interval then show(false) end
    end
  end)
  if not ok then
    module:log("warn", "%s", tostring(err))
    parts[#parts + 1] = (#parts > 0 and "\n" or "") .. "[" .. tostring(err) .. "]"
  end
  show(true)
end

-- A runner per user with messages to answer: theirs are answered in order,
-- one at a time; once it has none left it goes.
local runners = {}
local function done(runner, user)
  if runners[user] == runner and runner.state == "ready" and #runner.queue == 0 then runners[user] = nil end
end
module:hook("message/bare", function(event)
  local stanza = event.stanza
  if jid.bare(stanza.attr.to) ~= bot or stanza.attr.type == "error" or not stanza:get_child_text("body") then
    return nil
  end
  local user = jid.bare(stanza.attr.from)
  local runner = runners[user]
  if not runner then
    runner = async.runner(answer)
    runner:onerror(function(r, e)
      module:log("error", "answering %s: %s", user, e)
      done(r, user)
    end)
    runner:onready(function(r) done(r, user) end)
    runners[user] = runner
  end
  runner:run(stanza)
  done(runner, user) -- answered without waiting
  return true
end)

function module.unload()
  shared.hosts = shared.hosts - 1
  if shared.hosts > 0 then return end -- another host still uses it
  kiro.configure { host = false, log = false }
  adapter.close()
  kiro.reset()
  shared.adapter = nil
end
