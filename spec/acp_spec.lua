-- The Agent Client Protocol as a backend protocol (SPEC 2.3): what only ACP
-- has. (Everything both protocols share runs twice: the spec_*_acp entries
-- of the suite are the JSON Lines specs again with KIRO_PROTOCOL=acp.)
local H = require "helper"

local function requests(log)
  local out = {}
  for _, e in ipairs(H.sim_events(log)) do
    if e.event == "request" then out[#out + 1] = e end
  end
  return out
end

describe("acp", function()
  after_each(H.check_leaks)

  it("warm agents: initialize once per process, a fresh session for every call", function()
    local kiro, log = H.setup({}, { protocol = "acp" })
    for i = 1, 3 do
      assert.are.equal("You said: call " .. i, kiro.chat("call " .. i))
    end
    local parts = {}
    for c in kiro.stream("a b c") do parts[#parts + 1] = c end
    assert.are.same({ "You", " said:", " a", " b", " c" }, parts)
    local ev = H.sim_events(log)
    assert.are.equal(1, H.count(ev, { event = "start", proto = "acp" }))
    local sessions = {}
    for _, r in ipairs(requests(log)) do
      assert.are.equal(1, r.turn) -- every call is independent
      sessions[r.session] = true
    end
    local n = 0
    for _ in pairs(sessions) do n = n + 1 end
    assert.are.equal(4, n)
    assert.are.equal("acp", kiro.stats().pools[1].protocol)
  end)

  it("auto: a CLI with no `daemon` but an `acp` gets warm ACP agents, no oneshot, found once", function()
    local kiro, log = H.setup({ KIRO_SIM_FAULT = "no-daemon" }, { protocol = "auto" })
    for i = 1, 3 do assert.are.equal("You said: " .. i, kiro.chat(tostring(i))) end
    local ev = H.sim_events(log)
    assert.are.equal(0, H.count(ev, { mode = "chat" }))
    assert.are.equal(1, H.count(ev, { event = "start", proto = "acp" }))
    assert.are.equal(3, H.count(ev, { event = "request", proto = "acp" }))
    local s = kiro.stats()
    assert.are.equal("acp", s.pools[1].protocol)
    assert.are.equal(0, s.fallbacks)
    assert.are.equal(0, s.daemon_restarts)
  end)

  it("auto: a known agent (gemini, copilot, ...) gets ACP and its own argv at once", function()
    local bin = H.tmpdir()
    assert(os.execute("ln -s " .. H.q(H.sim) .. " " .. H.q(bin .. "/gemini")))
    local kiro, log = H.setup({}, { protocol = "auto", cli_path = bin .. "/gemini" })
    assert.are.equal("You said: hi", kiro.chat("hi"))
    local ev = H.sim_events(log)
    assert.are.equal(1, H.count(ev, { event = "start" }))
    assert.are.equal(1, H.count(ev, { event = "start", proto = "acp" }))
  end)

  it("protocol per call, per configure and from KIRO_PROTOCOL; a bad one is misuse", function()
    local kiro, log = H.setup()
    assert.are.equal("You said: j", kiro.chat("j", { protocol = "jsonl" }))
    assert.are.equal("You said: a", kiro.chat("a", { protocol = "acp" }))
    local ev = H.sim_events(log)
    assert.are.equal(1, H.count(ev, { event = "start", proto = "acp" }))
    assert.are.equal(2, H.count(ev, { event = "start", mode = "daemon" }))
    assert.has_error(function() kiro.chat("x", { protocol = "smtp" }) end,
      "kiro.chat: protocol must be auto, jsonl or acp")
    assert.has_error(function() kiro.configure { protocol = "smtp" } end,
      'kiro.configure: protocol must be auto, jsonl or acp (got "smtp")')
    local script = 'local k = require "kiro"; print(k.chat("x", { cli_path = "' .. H.sim .. '" }))'
    local r = H.run({ "lua5.4", "-e", script }, { KIRO_PROTOCOL = "smtp" })
    assert.are.equal('nil\tKIRO_PROTOCOL must be auto, jsonl or acp (got "smtp")\tconfig\n', r.out)
  end)

  it("opts.session: a conversation's turns go to the same agent and session, the rest do not", function()
    local kiro, log = H.setup({}, { protocol = "acp", pool_max = 3 })
    -- Three tasks at once, so the pool has several agents to choose from.
    local done = 0
    for _, key in ipairs { "alice", "bob", false } do
      kiro.spawn(function()
        for i = 1, 3 do
          local opts = key and { session = key } or nil
          assert.are.equal("You said: " .. tostring(key) .. i, kiro.chat(tostring(key) .. i, opts))
        end
        done = done + 1
      end)
    end
    kiro.run()
    assert.are.equal(3, done)
    local by_session = {}
    for _, e in ipairs(H.sim_events(log)) do
      if e.event == "request" then
        local s = by_session[e.pid .. "/" .. e.session] or {}
        s[#s + 1] = e.turn
        by_session[e.pid .. "/" .. e.session] = s
      end
    end
    local shapes = {}
    for _, turns in pairs(by_session) do shapes[#shapes + 1] = table.concat(turns, ",") end
    table.sort(shapes)
    -- alice's and bob's turns 1, 2, 3 each in one session of one agent; the
    -- three independent calls each a session of their own.
    assert.are.same({ "1", "1", "1", "1,2,3", "1,2,3" }, shapes)
    assert.has_error(function() kiro.chat("x", { session = "" }) end,
      "kiro.chat: session must be a string of 1 to 256 bytes")
  end)

  it("session_lost when the agent holding a conversation dies; the next turn starts afresh", function()
    local kiro, log = H.setup({}, { protocol = "acp", restart_backoff_ms = 10 })
    assert.are.equal("You said: one", kiro.chat("one", { session = "s" }))
    local pid = H.daemon_pids(log)[1]
    os.execute("kill -KILL " .. pid)
    H.wait_kiro(kiro, function() return not H.alive(pid) and #H.daemon_pids(log) == 2 end, "a new agent")
    local r, msg, code = kiro.chat("two", { session = "s" })
    assert.is_nil(r)
    assert.are.equal("session_lost", code)
    assert.matches("conversation 's' is over: the agent that held it %(pid %d+%) went away", msg)
    assert.are.equal(0, kiro.stats().fallbacks) -- no oneshot for a conversation
    assert.are.equal("You said: three", kiro.chat("three", { session = "s" }))
    local last = H.sim_events(log)
    assert.are.equal(1, last[#last].turn) -- a new conversation
  end)

  it("conversations are bounded: past session_max, and after session_idle_ms, the caller hears so", function()
    local kiro = H.setup({}, { protocol = "acp", session_max = 2, session_idle_ms = 200, health_interval_ms = 20 })
    for _, k in ipairs { "a", "b", "c" } do assert(kiro.chat(k, { session = k })) end
    local r, msg, code = kiro.chat("a again", { session = "a" })
    assert.is_nil(r)
    assert.are.equal("session_lost", code)
    assert.matches("session_max %(2%) reached", msg)
    assert(kiro.chat("b again", { session = "b" })) -- b and c go on
    kiro.sleep(400)
    r, msg, code = kiro.chat("b late", { session = "b" })
    assert.is_nil(r)
    assert.are.equal("session_lost", code)
    assert.matches("unused for 200 ms %(session_idle_ms%)", msg)
  end)

  it("a policy may replay opts.history into a new conversation after session_lost", function()
    local kiro, log = H.setup({}, { protocol = "acp", restart_backoff_ms = 10, policy = function(f)
      if f.code == "session_lost" and f.opts.history then return "replay" end
      return require("kiro.policy").decide(f)
    end })
    local history = { { role = "user", content = "one" } }
    local reply = kiro.chat("one", { session = "s", history = {} })
    history[2] = { role = "assistant", content = reply }
    local pid = H.daemon_pids(log)[1]
    os.execute("kill -KILL " .. pid)
    H.wait_kiro(kiro, function() return #H.daemon_pids(log) == 2 end, "the agent to be replaced")
    assert.are.equal("You said: two", kiro.chat("two", { session = "s", history = history }))
    local ev = H.sim_events(log)
    local last = ev[#ev]
    assert.are.equal(1, last.turn) -- a new conversation...
    local transcript = "User: one\n\nAssistant: You said: one\n\nUser: two\n\nAssistant: "
    assert.are.equal(#transcript, last.bytes) -- ...whose first turn carried the past
    assert.are.equal("You said: three", kiro.chat("three", { session = "s" })) -- and it goes on
    assert.are.equal(2, H.sim_events(log)[#H.sim_events(log)].turn)
    assert.has_error(function() kiro.chat("x", { history = { { role = "robot", content = "" } } }) end)
  end)

  it("losing conversations while others are lost already (past session_max) is safe", function()
    local kiro, log = H.setup({}, { protocol = "acp", session_max = 1, restart_backoff_ms = 10 })
    assert(kiro.chat("a", { session = "a" }))
    assert(kiro.chat("b", { session = "b" })) -- a is dropped: [b, a (lost)]
    local pid = H.daemon_pids(log)[1]
    os.execute("kill -KILL " .. pid) -- b is lost too, and a goes
    H.wait_kiro(kiro, function() return #H.daemon_pids(log) == 2 end, "the agent to be replaced")
    local _, _, code = kiro.chat("b2", { session = "b" })
    assert.are.equal("session_lost", code)
    assert(kiro.chat("a2", { session = "a" })) -- forgotten past session_max: a new one
  end)

  it("an idle agent that holds a conversation is kept past pool_idle_ms", function()
    local kiro, log = H.setup({}, { protocol = "acp", pool_min = 0, pool_idle_ms = 50 })
    assert(kiro.chat("one", { session = "s" }))
    kiro.sleep(200)
    assert.are.equal("You said: two", kiro.chat("two", { session = "s" }))
    local ev = H.sim_events(log)
    assert.are.equal(2, ev[#ev].turn)
  end)

  it("a turn cancelled before it reached the agent does not cost the agent its life", function()
    local gate = H.tmpdir() .. "/gate"
    local kiro, log = H.setup({ KIRO_SIM_GATE = gate }, { protocol = "acp", pipeline_depth = 2, pool_max = 1,
                                                        drain_ms = 100 })
    local restarts = kiro.stats().daemon_restarts
    local first
    kiro.spawn(function()
      local parts = {}
      for c in kiro.stream("long one") do parts[#parts + 1] = c end
      first = table.concat(parts)
    end)
    kiro.spawn(function()
      local _, _, code = kiro.chat("queued", { timeout_ms = 150 }) -- behind the first, on the same agent
      assert.are.equal("timeout", code)
      kiro.sleep(300) -- past drain_ms: the agent must still be there
      H.write_file(gate, "")
    end)
    kiro.run()
    assert.are.equal("You said: long one", first)
    assert.are.equal(1, #H.daemon_pids(log))
    assert.are.equal(restarts, kiro.stats().daemon_restarts)
  end)

  it("auto: conversations and concurrent first calls wait for the protocol to be known", function()
    local kiro, log = H.setup({ KIRO_SIM_FAULT = "no-daemon" }, { protocol = "auto", pool_max = 4 })
    local s0 = kiro.stats()
    local got = {}
    for i = 1, 3 do
      kiro.spawn(function()
        local opts = { template = "default", session = i == 1 and "s" or nil }
        local r, msg = kiro.chat("c" .. i, opts)
        got[#got + 1] = r or msg
      end)
    end
    kiro.run()
    table.sort(got)
    assert.are.same({ "You said: c1", "You said: c2", "You said: c3" }, got)
    -- Found to be an ACP agent, it got the user's text as it is (no seed template).
    for _, e in ipairs(H.sim_events(log)) do
      if e.event == "request" and e.proto == "acp" then assert.are.equal(2, e.bytes) end
    end
    local s = kiro.stats()
    assert.are.equal(s0.fallbacks, s.fallbacks)
    assert.are.equal(s0.daemon_start_failures, s.daemon_start_failures)
    assert.are.equal(0, H.count(H.sim_events(log), { mode = "chat" }))
    -- A CLI that has `daemon`: a conversation gets the clear error, once that is known.
    kiro = H.setup({}, { protocol = "auto" })
    local r, msg, code = kiro.chat("x", { session = "t" })
    assert.is_nil(r)
    assert.are.equal("config", code)
    assert.matches("needs an ACP agent", msg)
  end)

  it("a model the ACP way: session/set_model in every session, a clear `config` error where it cannot", function()
    local kiro, log = H.setup({}, { protocol = "acp", acp_model = "session", model = "sim-smart" })
    assert.are.equal("[sim-smart] You said: a", kiro.chat("a"))
    assert.are.equal("[sim-smart] You said: b", kiro.chat("b", { session = "s" }))
    assert.are.equal("[sim-smart] You said: c", kiro.chat("c", { session = "s" }))
    local ev = H.sim_events(log)
    assert.is_true(H.count(ev, { event = "set_model", model = "sim-smart" }) >= 2)
    -- A model the agent does not list: refused before it is asked.
    local r, msg, code = kiro.chat("x", { model = "gpt-9" })
    assert.is_nil(r)
    assert.are.equal("config", code)
    assert.are.equal("the agent cannot use model gpt-9: it offers sim-fast, sim-smart", msg)
    -- An agent without session/set_model: its answer, quoted.
    kiro = H.setup({ KIRO_SIM_ACP_NO_SET_MODEL = 1 }, { protocol = "acp", acp_model = "session", model = "sim-fast" })
    r, msg, code = kiro.chat("y")
    assert.is_nil(r)
    assert.are.equal("config", code)
    assert.are.equal("the agent cannot use model sim-fast: Method not found", msg)
    assert.are.equal(0, kiro.stats().fallbacks) -- no oneshot: the model is the problem
    -- The default (argv): --model M at start, as for JSON Lines.
    kiro = H.setup({}, { protocol = "acp", model = "m1" })
    assert.are.equal("[m1] You said: z", kiro.chat("z"))
    assert.has_error(function() kiro.configure { acp_model = "ask" } end,
      'kiro.configure: acp_model must be argv or session (got "ask")')
  end)

  it("a conversation is never served oneshot: a clear `config` error, in Lua and from the CLI", function()
    local kiro = H.setup({}, { protocol = "acp" })
    local r, msg, code = kiro.chat("x", { session = "s", mode = "oneshot" })
    assert.is_nil(r)
    assert.are.equal("config", code)
    assert.matches("needs a long%-lived ACP agent", msg)
    local env = H.sim_env()
    local res = H.agent({ "--protocol", "acp", "--mode", "oneshot", "--session", "s", "-m", "x" }, env)
    assert.are.equal(2, res.code)
    assert.matches("%-%-session needs a long%-lived agent", res.err)
  end)

  it("a JSON Lines daemon has no conversations: opts.session is a clear error", function()
    local kiro = H.setup({}, { protocol = "jsonl" })
    local r, msg, code = kiro.chat("x", { session = "s" })
    assert.is_nil(r)
    assert.are.equal("config", code)
    assert.are.equal("a conversation (opts.session, --session) needs an ACP agent; this backend speaks JSON Lines", msg)
  end)

  it("a request from the agent mid-turn is answered at once (-32601), and the turn goes on", function()
    local kiro, log = H.setup({ KIRO_SIM_ACP_ASK = 1 }, { protocol = "acp" })
    assert.are.equal("You said: go on", kiro.chat("go on"))
    assert.are.equal(1, H.count(H.sim_events(log), { event = "asked", answer = "error", code = -32601 }))
  end)

  it("opts.on_update sees thoughts, plans and tool calls, in order with the chunks", function()
    local kiro = H.setup({ KIRO_SIM_ACP_UPDATES = 1 }, { protocol = "acp" })
    local seen = {}
    local function on_update(u)
      seen[#seen + 1] = u.sessionUpdate .. (u.status and ":" .. u.status or "")
        .. (u.content and ":" .. u.content.text or "")
    end
    for c in kiro.stream("a b", { on_update = on_update }) do seen[#seen + 1] = "chunk:" .. c end
    assert.are.same({
      "agent_thought_chunk:Thinking it over", "plan", "tool_call:pending", "tool_call_update:completed",
      "chunk:You", "agent_thought_chunk:Almost there", "chunk: said:", "chunk: a", "chunk: b",
    }, seen)
    -- kiro.chat: the updates as they come, the reply whole at the end.
    seen = {}
    assert.are.equal("You said: c", kiro.chat("c", { on_update = on_update }))
    assert.are.equal(5, #seen)
    -- Without a hook they are only activity.
    assert.are.equal("You said: d", kiro.chat("d"))
    assert.has_error(function() kiro.chat("e", { on_update = true }) end, "kiro.chat: on_update must be a function")
  end)

  it("a turn that ends other than end_turn says why: a stop_reason update", function()
    local kiro = H.setup({ KIRO_SIM_ACP_STOP = "max_tokens" }, { protocol = "acp" })
    local seen = {}
    assert.are.equal("You said: long", kiro.chat("long", { on_update = function(u) seen[#seen + 1] = u end }))
    assert.are.same({ { sessionUpdate = "stop_reason", stopReason = "max_tokens" } }, seen)
  end)

  it("a permission request is rejected by default (the first reject option)", function()
    local kiro, log = H.setup({ KIRO_SIM_ACP_PERMISSION = 1 }, { protocol = "acp" })
    assert.are.equal("You said: edit it", kiro.chat("edit it"))
    assert.are.equal(1, H.count(H.sim_events(log), { event = "permission", outcome = "sim-reject" }))
  end)

  it("a permission hook decides: allow, reject or an option's id, per call or configured", function()
    local kiro, log = H.setup({ KIRO_SIM_ACP_PERMISSION = 1 }, { protocol = "acp" })
    local asked
    local function allow(q) asked = q; return "allow" end
    assert.are.equal("You said: a", kiro.chat("a", { permission = allow }))
    assert.are.equal("sim-1", asked.toolCall.toolCallId)
    assert.are.equal(2, #asked.options)
    assert.are.equal("You said: b", kiro.chat("b", { permission = function() return "sim-reject" end }))
    kiro.configure { permission = function() return "allow" end }
    assert.are.equal("You said: c", kiro.chat("c"))
    -- An answer that names no option cancels the request; a hook that raises too, and its error goes on.
    assert.are.equal("You said: d", kiro.chat("d", { permission = function() return "maybe" end }))
    local ok, err = pcall(kiro.chat, "e", { permission = function() error("no way") end })
    assert.is_false(ok)
    assert.matches("no way", err)
    kiro.configure { permission = false }
    local outcomes
    H.wait_kiro(kiro, function() -- the cancelled call's answer reaches the agent after it returned
      outcomes = {}
      for _, e in ipairs(H.sim_events(log)) do
        if e.event == "permission" then outcomes[#outcomes + 1] = e.outcome end
      end
      return #outcomes == 5
    end, "five answers")
    assert.are.same({ "sim-allow", "sim-reject", "sim-allow", "cancelled", "cancelled" }, outcomes)
    assert.has_error(function() kiro.chat("f", { permission = "allow" }) end,
      "kiro.chat: permission must be a function")
  end)

  it("a trust list allows the tool calls it names (by kind or title pattern), rejects the rest, after any hook",
    function()
    local kiro, log = H.setup({ KIRO_SIM_ACP_PERMISSION = 1 }, { protocol = "acp" })
    local s0 = kiro.stats()
    -- kiro-sim asks about its edit by id alone: its kind and title come
    -- from the tool_call update it sent before.
    assert.are.equal("You said: a", kiro.chat("a", { trust = { kinds = { "edit" } } }))
    assert.are.equal("You said: b", kiro.chat("b", { trust = { kinds = { "read", "search" } } }))
    assert.are.equal("You said: c", kiro.chat("c", { trust = { titles = { "^Editing kiro%-sim" } } }))
    assert.are.equal("You said: d", kiro.chat("d", { trust = { titles = { "^Reading" }, kinds = {} } }))
    kiro.configure { trust = "all" }
    assert.are.equal("You said: e", kiro.chat("e"))
    assert.are.equal("You said: f", kiro.chat("f", { permission = function() return "reject" end }))
    kiro.configure { trust = false }
    assert.are.equal("You said: g", kiro.chat("g"))
    local outcomes = {}
    for _, e in ipairs(H.sim_events(log)) do
      if e.event == "permission" then outcomes[#outcomes + 1] = e.outcome end
    end
    assert.are.same({ "sim-allow", "sim-reject", "sim-allow", "sim-reject", "sim-allow", "sim-reject", "sim-reject" },
      outcomes)
    local s = kiro.stats()
    assert.are.equal(7, s.permission_requests - s0.permission_requests)
    assert.are.equal(1, s.permission_defaults - s0.permission_defaults) -- g: no list, no hook
    assert.has_error(function() kiro.chat("x", { trust = { kinds = { "bogus" } } }) end,
      'kiro.chat: trust.kinds: "bogus" is not an ACP tool kind (read, edit, delete, move, search, execute, think, '
      .. "fetch, switch_mode, other)")
    assert.has_error(function() kiro.chat("x", { trust = { titles = { "%" } } }) end,
      'kiro.chat: trust.titles: "%" is not a valid Lua pattern')
    assert.has_error(function() kiro.configure { trust = { kinds = "edit" } } end,
      "kiro.configure: trust.kinds must be an array of strings")
    assert.has_error(function() kiro.configure { trust = { tools = {} } } end,
      "kiro.configure: trust: unknown key 'tools' (it takes kinds and titles)")
    assert.has_error(function() kiro.configure { trust = true } end,
      'kiro.configure: trust must be "all" or { kinds = { KIND, ... }, titles = { PATTERN, ... } }')
  end)

  it("kiro-rt agent --trust-tools / --trust-all-tools: through the server and in-process; decisions logged at info",
    function()
    local env, log = H.sim_env { KIRO_PROTOCOL = "acp", KIRO_SIM_ACP_PERMISSION = "1", KIRO_LOG = "info" }
    local function outcomes()
      local t = {}
      for _, e in ipairs(H.sim_events(log)) do
        if e.event == "permission" then t[#t + 1] = e.outcome end
      end
      return t
    end
    local runs = {
      { "-m", "one", "--trust-tools", "read,edit" },
      { "-m", "two", "--trust-tools=read" },
      { "-m", "three", "--trust-all-tools", "--no-server" },
      { "-m", "four", "--no-server" },
    }
    local errs = {}
    for i, args in ipairs(runs) do
      local r = H.agent(args, env)
      assert.are.equal(0, r.code, r.err)
      assert.are.equal("You said: " .. args[2] .. "\n", r.out)
      errs[i] = r.err
    end
    assert.are.same({ "sim-allow", "sim-reject", "sim-allow", "sim-reject" }, outcomes())
    -- In-process, the decision and the tool's title are on stderr (through
    -- the server, in its log).
    assert.matches('permission allow: "Editing kiro-sim.conf" (kind edit, trusted)', errs[3], 1, true)
    assert.matches('permission reject: "Editing kiro-sim.conf" (no permission hook nor trust list)', errs[4], 1, true)
    local slog = H.server_log(env)
    assert.matches('permission allow: "Editing kiro-sim.conf" (kind edit, trusted)', slog, 1, true)
    assert.matches('permission reject: "Editing kiro-sim.conf" (kind edit, not in the trust list)', slog, 1, true)
    for _, bad in ipairs { { "--trust-tools", "bogus" }, { "--trust-tools=" }, { "--trust-tools" } } do
      local r = H.agent({ "-m", "x", table.unpack(bad) }, env)
      assert.are.equal(2, r.code, table.concat(bad, " "))
      assert.matches("trust%-tools", r.err)
    end
    assert.are.equal(4, #outcomes())
    -- On the wire, a trust list is checked at the door like every field.
    local kiro = H.setup()
    local c = H.raw_conn(kiro, H.socket(env))
    local cjson = require "cjson"
    for id, t in ipairs { { kinds = { "nope" } }, "some", { kinds = { "read" }, extra = true } } do
      c:send(cjson.encode { op = "request", id = id, prompt = "x", backend = { cli = H.sim }, trust = t } .. "\n")
    end
    H.wait_kiro(kiro, function() return #c.msgs == 3 end, "three answers")
    c:close()
    local said = {}
    for _, m in ipairs(c.msgs) do said[m.id] = m.error and m.error.message end
    assert.are.same({
      'bad request: trust.kinds: "nope" is not an ACP tool kind (read, edit, delete, move, search, execute, think, '
        .. "fetch, switch_mode, other)",
      'bad request: trust must be "all" or { kinds = { KIND, ... }, titles = { PATTERN, ... } }',
      "bad request: trust: unknown key 'extra' (it takes kinds and titles)",
    }, said)
  end)

  it("leaving a stream early cancels the agent's turn; the same agent serves the next call", function()
    local gate = H.tmpdir() .. "/gate"
    local kiro, log = H.setup({ KIRO_SIM_GATE = gate }, { protocol = "acp", drain_ms = 10000 })
    local restarts = kiro.stats().daemon_restarts
    for _ in kiro.stream("one two three") do break end
    H.wait_kiro(kiro, function() return H.count(H.sim_events(log), { event = "cancel" }) == 1 end,
      "the agent to see session/cancel")
    -- It answers the turn `cancelled`: the daemon is ready again, well
    -- before drain_ms, and the rest of the reply never came.
    H.wait_kiro(kiro, function() return kiro.stats().pools[1].daemons[1].state == "ready" end,
      "the cancelled turn to end")
    H.write_file(gate, "")
    assert.are.equal("You said: next", kiro.chat("next"))
    assert.are.equal(1, #H.daemon_pids(log)) -- not replaced: it stopped when told
    assert.are.equal(restarts, kiro.stats().daemon_restarts)
  end)

  it("an agent that needs credentials: `auth` with its methods, no oneshot, the agent stays warm", function()
    local kiro, log = H.setup({ KIRO_SIM_FAULT = "auth" }, { protocol = "acp" })
    for _ = 1, 2 do
      local r, msg, code = kiro.chat("hi")
      assert.is_nil(r)
      assert.are.equal("auth", code)
      assert.are.equal("Simulated agent needs credentials (auth methods: sim-key)", msg)
    end
    local ev = H.sim_events(log)
    assert.are.equal(0, H.count(ev, { mode = "chat" }))
    assert.are.equal(1, #H.daemon_pids(log))
    assert.are.equal(0, kiro.stats().fallbacks)
  end)

  it("kiro-rt agent --session: the server keeps the conversation between calls; an ACP agent gets no seed template",
    function()
    local env, log = H.sim_env()
    for i = 1, 3 do -- the first starts the server (the Lua client), the rest are warm (kiro-rt's C path)
      local r = H.agent({ "--protocol", "acp", "--session", "chat-1", "-m", "turn " .. i }, env)
      assert.are.equal(0, r.code, r.err)
      assert.are.equal("You said: turn " .. i .. "\n", r.out)
    end
    local r = H.agent({ "--protocol", "acp", "--session", "chat-1" }, env, "from stdin\n")
    assert.are.equal("You said: from stdin\n", r.out)
    local turns, sessions, bytes = {}, {}, {}
    for _, e in ipairs(H.sim_events(log)) do
      if e.event == "request" then
        turns[#turns + 1] = e.turn
        sessions[e.session] = true
        bytes[#bytes + 1] = e.bytes
      end
    end
    assert.are.same({ 1, 2, 3, 4 }, turns)
    assert.are.equal(1, #(function() local k = {} for s in pairs(sessions) do k[#k + 1] = s end return k end)())
    assert.are.same({ #"turn 1", #"turn 2", #"turn 3", #"from stdin" }, bytes) -- the text as it is
    r = H.agent({ "--session", "", "-m", "x" }, env)
    assert.are.equal(2, r.code)
    assert.matches("--session needs a key of 1 to 256 bytes", r.err)
  end)

  it("a server holding conversations does not exit for being idle", function()
    local env, log = H.sim_env { KIRO_SERVER_IDLE_MS = "200" }
    local r = H.agent({ "--protocol", "acp", "--session", "k", "-m", "a" }, env)
    assert.are.equal(0, r.code, r.err)
    local pid = assert(H.status(env)).pid
    H.wait_for(function() return false end, 600) -- three idle periods
    local s = assert(H.status(env), "the server exited, taking the conversation with it")
    assert.are.equal(pid, s.pid)
    assert.are.equal(1, s.pools[1].conversations)
    r = H.agent({ "--protocol", "acp", "--session", "k", "-m", "b" }, env)
    assert.are.equal("You said: b\n", r.out)
    local ev = H.sim_events(log)
    assert.are.equal(2, ev[#ev].turn)
  end)

  it("kiro-rt agent --protocol acp, through the server and in-process; status shows the protocol", function()
    local env, log = H.sim_env()
    for _ = 1, 2 do -- the first starts the server, the second is warm
      local r = H.agent({ "--protocol", "acp", "-m", "hi" }, env)
      assert.are.equal(0, r.code, r.err)
      assert.are.equal("You said: hi\n", r.out)
    end
    local r = H.agent({ "--protocol", "acp", "--no-server", "-m", "local" }, env)
    assert.are.equal("You said: local\n", r.out)
    local s = assert(H.status(env))
    assert.are.equal("acp", s.pools[1].protocol)
    local text = H.run({ H.kiro_rt, "status" }, env).out
    assert.matches("pool     " .. H.sim:gsub("%p", "%%%0") .. " %(acp, backend %x+%): ok", text)
    -- Pools of one CLI that differ in what they were asked (env, protocol) are told apart.
    assert.are.equal(0, H.agent({ "--protocol", "auto", "-m", "hi" }, env).code)
    local tags = {}
    for _, p in ipairs(assert(H.status(env)).pools) do tags[p.backend] = true end
    local n = 0
    for tag in pairs(tags) do n = n + 1; assert.matches("^%x%x%x%x%x%x%x%x$", tag) end
    assert.are.equal(#assert(H.status(env)).pools, n)
    assert.are.equal(2, H.count(H.sim_events(log), { event = "start", proto = "acp" }))
    env.KIRO_SIM_FAULT = "auth"
    r = H.agent({ "--protocol", "acp", "-m", "hi" }, env)
    assert.are.equal(1, r.code)
    assert.are.equal("kiro-rt: auth: Simulated agent needs credentials (auth methods: sim-key)\n", r.err)
    r = H.agent({ "--protocol", "smtp", "-m", "hi" }, env)
    assert.are.equal(2, r.code)
    assert.matches("--protocol must be auto, jsonl or acp %(got 'smtp'%)", r.err)
  end)
end)
