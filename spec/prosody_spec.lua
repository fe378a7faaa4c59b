-- plugins/prosody/mod_kiro.lua in a real Prosody (Debian's), with real
-- XMPP clients (Debian's python3-slixmpp, spec/hosts/xmpp_bot.py): two
-- users ask the bot at once and both get streamed answers while a third
-- user's pings are answered throughout; a SIGHUP reload keeps it working;
-- a second host shares the one kiro with call options of its own.
local H = require "helper"
local cjson = require "cjson"

local PYTHON = "/usr/bin/python3" -- Debian's, with python3-slixmpp

-- A Prosody of its own: config, accounts (as prosodyctl writes them), log.
local function prosody_setup()
  local dir = H.tmpdir()
  local port = H.free_port()
  local env, sim_log = H.sim_env()
  for _, user in ipairs { "localhost/alice", "localhost/bob", "localhost/carol", "other%2elocalhost/dave" } do
    local host, name = user:match("^(.*)/(.*)$")
    assert(os.execute("mkdir -p " .. H.q(dir .. "/data/" .. host .. "/accounts") .. " " .. H.q(dir .. "/certs")))
    H.write_file(("%s/data/%s/accounts/%s.dat"):format(dir, host, name), 'return { ["password"] = "pw"; };\n')
  end
  H.write_file(dir .. "/prosody.cfg.lua", ([[
pidfile = %q
data_path = %q
run_as_root = true
log = { { levels = { min = "info" }, to = "file", filename = %q } }
plugin_paths = { %q }
modules_enabled = { "roster", "saslauth", "disco", "ping", "posix" }
c2s_ports = { %d }
s2s_ports = { }
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_plain"
kiro = { cli_path = %q, env = { KIRO_SIM_CHUNK_DELAY_MS = "150", KIRO_SIM_LOG = %q } }
VirtualHost "localhost"
  modules_enabled = { "kiro" }
  kiro_draft_interval_ms = 100
VirtualHost "other.localhost"
  modules_enabled = { "kiro" }
  kiro_draft_interval_ms = 100
  kiro_call = { model = "sim-smart" }
]]):format(dir .. "/prosody.pid", dir .. "/data", dir .. "/prosody.log", H.source .. "/plugins/prosody", port,
    H.sim, sim_log))
  return { dir = dir, port = port, env = env, log = dir .. "/prosody.log" }
end

local function log_has(p, text)
  return (H.read_file(p.log) or ""):find(text, 1, true) ~= nil
end

-- The clients' round: askers at once, a pinger meanwhile; its JSON.
local function ask(p, askers, pinger, bot)
  local r = H.run({ PYTHON, H.source .. "/spec/hosts/xmpp_bot.py", tostring(p.port), bot or "bot@localhost",
                    table.concat(askers, ","), pinger }, {})
  assert.are.equal(0, r.code, r.err)
  return cjson.decode(r.out)
end

-- One user's answer: composing first, the text growing in corrections of
-- the first message, whole at the end, then active.
local function streamed(got, user, model)
  local want = ("%sYou said: hello from %s: one two three four five six"):format(model and "[" .. model .. "] " or "",
    user)
  assert.are.equal("composing", got[1].state)
  local first, texts, times = nil, {}, {}
  for _, m in ipairs(got) do
    if type(m.body) == "string" then
      if not first then first = m.id else assert.are.equal(first, m.replaces) end
      texts[#texts + 1], times[#times + 1] = m.body, m.ms
    end
  end
  assert.are.equal(want, texts[#texts])
  assert.are.equal("active", got[#got].state)
  assert.is_true(#texts >= 5, #texts .. " versions of the text")
  for i = 2, #texts do assert.is_true(#texts[i] > #texts[i - 1]) end -- it grows, never repeats
  assert.is_true(times[#times] - times[1] >= 1000, "the text came in a lump")
end

describe("prosody", function()
  after_each(H.check_leaks)

  it("two users ask the bot at once and get streamed answers; a third user's pings are answered throughout; "
    .. "a SIGHUP reload keeps it working", function()
    local p = prosody_setup()
    -- Under ASan, Prosody's own C modules leak at exit (it does so without
    -- kiro too): leaks are not checked in this process; errors still are.
    if H.sanitized then p.env.ASAN_OPTIONS = "detect_leaks=0:abort_on_error=0:exitcode=99" end
    local pid, wait_exit = H.spawn_bg({ "lua5.4", "/usr/bin/prosody", "--config", p.dir .. "/prosody.cfg.lua", "-F" },
      p.env)
    H.defer(function() os.execute("kill -TERM " .. pid .. " 2>/dev/null"); wait_exit() end)
    assert(H.wait_for(function() return log_has(p, "Activated service 'c2s' on [*]:" .. p.port)
      or log_has(p, "Activated service 'c2s' on [::]:" .. p.port) end, 15000), "prosody did not start: "
      .. tostring(H.read_file(p.log)))
    local out = ask(p, { "alice@localhost", "bob@localhost" }, "carol@localhost")
    streamed(out.answers["alice@localhost"], "alice")
    streamed(out.answers["bob@localhost"], "bob")
    -- At once: both answers took about as long as one.
    local a, b = out.answers["alice@localhost"], out.answers["bob@localhost"]
    assert.is_true(math.abs(a[#a].ms - b[#b].ms) < 500)
    local pings, slowest = out.pings_ms, 0
    for _, ms in ipairs(pings) do slowest = math.max(slowest, ms) end
    assert.is_true(#pings >= 10, #pings .. " pings") -- one every 50 ms or so, for 1.5 s
    assert.is_true(slowest < 250, ("the slowest ping took %.1f ms"):format(slowest))

    assert(os.execute("kill -HUP " .. pid))
    assert(H.wait_for(function() return log_has(p, "Reloading configuration file") end, 5000))
    out = ask(p, { "alice@localhost" })
    streamed(out.answers["alice@localhost"], "alice")
    -- Another host of the same Prosody: the one kiro, this host's call options.
    out = ask(p, { "dave@other.localhost" }, nil, "bot@other.localhost")
    streamed(out.answers["dave@other.localhost"], "dave", "sim-smart")

    assert(os.execute("kill -TERM " .. pid))
    local code, _, err = wait_exit()
    assert.are.equal(0, code, err)
    local errors = {}
    for line in (H.read_file(p.log) or ""):gmatch("[^\n]+") do
      if line:find("\terror\t", 1, true) then errors[#errors + 1] = line end
    end
    assert.are.same({}, errors)
  end)
end)
