-- Policy plugins (SPEC 5.3): hooks composed in order, kiro-rt's own plugins
-- (failover, route, redact), hooks stopped when they run too long, and
-- settings of a backend's own.
local H = require "helper"

describe("policy plugins", function()
  after_each(H.check_leaks)

  it("compose in order: route picks by prefix, redact cleans prompts and the log", function()
    local lines = {}
    local kiro = H.setup(nil, {
      backends = { a = { cli_path = H.sim, model = "A" }, b = { cli_path = H.sim, model = "B" } },
      default_backend = "a",
      log = function(level, target, msg) lines[#lines + 1] = level .. " " .. target .. " " .. msg end,
      policies = {
        { "route", rules = { { prefix = "/b ", strip = true, backend = "b" }, { min_chars = 40, model = "L" } } },
        { "redact", patterns = { "ACME%-%d+" } },
        { name = "shout", route = function(req) req.prompt = req.prompt:upper() end },
      },
    })
    -- (kiro-sim echoes what it was sent: the secrets never reached it)
    -- (redact runs after every route hook: nothing routes around it)
    assert.are.equal("[A] You said: HELLO [redacted]", kiro.chat("hello me@example.org"))
    assert.are.equal("[B] You said: HI [redacted] THERE [redacted]",
      kiro.chat("/b hi ACME-1234 there 4111 1111 1111 1111"))
    assert.are.equal("[L] You said: " .. ("X"):rep(40), kiro.chat(("x"):rep(40)))
    -- The log goes through redact too.
    kiro.log("error", "app", "token sk-abcdef0123456789 for me@example.org")
    assert.are.equal("error app token [redacted] for [redacted]", lines[#lines])
  end)

  it("a hook that runs too long is stopped and reported; one that raises too; the request goes the safe way",
    function()
      local kiro = H.setup(nil, {
        log = "off", policy_timeout_ms = 50,
        policies = { { name = "spin", route = function(req) if req.prompt == "spin" then while true do end end end } },
      })
      local t0 = kiro.now()
      local r, msg, code = kiro.chat("spin")
      assert.is_nil(r)
      assert.are.equal("policy", code)
      assert.matches("policy spin: route ran longer than 50 ms and was stopped", msg)
      assert.is_true(kiro.now() - t0 < 5000)
      assert.are.equal("You said: fine", kiro.chat("fine")) -- the next request is served
      kiro.configure { policies = { { name = "bad", route = function() error("no route") end } } }
      r, msg, code = kiro.chat("x")
      assert.is_nil(r)
      assert.are.equal("policy", code)
      assert.matches("policy bad: route failed: .*no route", msg)
      local text = kiro.metrics()
      assert.matches('kiro_policy_errors_total{policy="spin",hook="route",reason="timeout"} 1', text, 1, true)
      assert.matches('kiro_policy_errors_total{policy="bad",hook="route",reason="error"} 1', text, 1, true)
    end)

  it("decide: the first policy with an answer gives it; nil passes on to the next and to `policy`", function()
    local seen = {}
    local kiro, log = H.setup({ KIRO_SIM_FAULT = "crash-before-chunk", KIRO_SIM_FAULT_AFTER = 1 }, {
      log = "off",
      policies = {
        { name = "watch", decide = function(f) seen[#seen + 1] = f.code end }, -- nil: no opinion
        { name = "never", decide = function(f) if f.prompt == "never" then return "fail" end end },
      },
    })
    assert(kiro.chat("one"))
    assert.are.equal("You said: two", kiro.chat("two")) -- kiro's own policy: oneshot
    local r, _, code = kiro.chat("never")
    assert.is_nil(r)
    assert.are.equal(2, #seen)
    assert.are.equal(seen[2], code) -- failed as it was: no oneshot
    assert.are.equal(1, H.count(H.sim_events(log), { mode = "chat", event = "request" }))
  end)

  it("fail-over: A failing at start is skipped for B within the budget; after its cool-down A is tried and used",
    function()
      local dir = H.tmpdir()
      local broken, a_log = dir .. "/a-broken", dir .. "/a.log"
      H.write_file(broken, "")
      local kiro = H.setup(nil, {
        log = "off",
        backends = {
          a = { cli_path = H.sim, model = "A", pool_min = 0, restart_backoff_ms = 10, restart_backoff_max_ms = 20,
                env = { KIRO_SIM_FAULT = "die-at-start", KIRO_SIM_FAULT_FILE = broken, KIRO_SIM_LOG = a_log } },
          b = { cli_path = H.sim, model = "B" },
        },
        default_backend = "a",
        policies = { { "failover", chain = { "a", "b" }, failures = 2, cooldown_ms = 300 } },
      })
      local function a_starts() return H.count(H.sim_events(a_log), { event = "start" }) end
      -- (each time after A's pool's backoff: asked, A would start again)
      for i = 1, 2 do
        assert.are.equal("[B] You said: r" .. i, kiro.chat("r" .. i, { timeout_ms = 5000 }))
        assert.are.equal(i, a_starts())
        kiro.sleep(50)
      end
      -- The circuit is open: A is not even tried.
      assert.are.equal("[B] You said: r3", kiro.chat("r3", { timeout_ms = 5000 }))
      assert.are.equal(2, a_starts())
      -- A works again; after the cool-down one request tries it, and then all go there.
      os.remove(broken)
      kiro.sleep(350)
      assert.are.equal("[A] You said: r4", kiro.chat("r4", { timeout_ms = 5000 }))
      assert.are.equal("[A] You said: r5", kiro.chat("r5", { timeout_ms = 5000 }))
    end)

  it("permission and cacheable: the first policy's answer", function()
    local kiro, log = H.setup({ KIRO_SIM_ACP_PERMISSION = 1 }, {
      log = "off", protocol = "acp", cache = false,
      policies = {
        { name = "cache-faq", cacheable = function(prompt) if prompt:find("^faq") then return true end end },
        { name = "allow-all", permission = function() return "allow" end },
      },
    })
    assert(kiro.chat("faq one"))
    assert(kiro.chat("faq one"))
    assert(kiro.chat("other"))
    assert(kiro.chat("other"))
    assert.are.equal(3, H.count(H.sim_events(log), { event = "request" }))
    local outcomes = {}
    for _, e in ipairs(H.sim_events(log)) do
      if e.event == "permission" then outcomes[#outcomes + 1] = e.outcome end
    end
    assert.are.same({ "sim-allow", "sim-allow", "sim-allow" }, outcomes)
  end)

  it("a backend's own settings: its pool, its timeouts, over the runtime's", function()
    local kiro, log = H.setup(nil, {
      log = "off", pool_min = 0,
      backends = {
        warm = { cli_path = H.sim, model = "W", pool_min = 2, pool_max = 2 },
        slow = { cli_path = H.sim, model = "S", timeout_ms = 300, env = { KIRO_SIM_LATENCY_MS = "2000" } },
      },
    })
    assert.are.equal("[W] You said: hi", kiro.chat("hi", { backend = "warm" }))
    H.wait_kiro(kiro, function() return H.count(H.sim_events(log), { event = "start" }) == 2 end,
      "the warm backend's two daemons")
    local r, _, code = kiro.chat("hi", { backend = "slow", mode = "daemon" })
    assert.is_nil(r)
    assert.are.equal("timeout", code)
    -- The runtime's timeout is not the slow backend's.
    assert.are.equal(20000, kiro.option("timeout_ms"))
  end)

  it("failover: a trial after the cool-down that ends without a verdict (cancelled) leaves A to the next request",
    function()
      local dir = H.tmpdir()
      local broken = dir .. "/a-broken"
      H.write_file(broken, "")
      local kiro = H.setup(nil, {
        log = "off",
        backends = {
          a = { cli_path = H.sim, model = "A", pool_min = 0, restart_backoff_ms = 10, restart_backoff_max_ms = 20,
                env = { KIRO_SIM_FAULT = "die-at-start", KIRO_SIM_FAULT_FILE = broken } },
          b = { cli_path = H.sim, model = "B" },
        },
        default_backend = "a",
        policies = { { "failover", chain = { "a", "b" }, failures = 1, cooldown_ms = 100 } },
      })
      assert.are.equal("[B] You said: r1", kiro.chat("r1", { timeout_ms = 5000 })) -- A fails: open
      os.remove(broken)
      kiro.sleep(150)
      -- The trial goes to A, and is cancelled before it ends.
      local c = kiro.call("trial")
      c:cancel()
      -- No verdict: the next request tries A, which works now.
      assert.are.equal("[A] You said: r2", kiro.chat("r2", { timeout_ms = 5000 }))
    end)

  it("a route hook that breaks a template's variables fails the request; nothing of it reaches the backend",
    function()
      local kiro, log = H.setup(nil, {
        log = "off",
        templates = { t = { system = "Answer in {{lang}}." } },
        policies = { { name = "drop", route = function(req) req.vars.lang = nil end } },
      })
      local r, msg, code = kiro.chat("hello", { template = "t", vars = { lang = "fr" } })
      assert.are.same({ nil, "policy" }, { r, code })
      assert.matches("no value for {{lang}}", msg, 1, true)
      assert.are.equal(0, H.count(H.sim_events(log), { event = "request" }))
    end)

  it("redact cleans the history, the variables and the system prompt too", function()
    local kiro = H.setup(nil, {
      log = "off",
      -- (labels other than User/Assistant: kiro-sim echoes the whole prompt)
      templates = { t = { system = "Mail {{to}} about it.", labels = { user = "Q", assistant = "A" } } },
      policies = { "redact" },
    })
    local reply = kiro.chat("go", { template = "t", vars = { to = "bob@example.org" }, history = {
      { role = "user", content = "my key is sk-abcdef0123456789" }, { role = "assistant", content = "ok" } } })
    assert.is_nil(reply:find("example.org", 1, true), reply)
    assert.is_nil(reply:find("sk-abc", 1, true), reply)
    assert.matches("Mail [redacted] about it.", reply, 1, true)
  end)

  it("hooks that yield keep their own time limits; a plugin others can write is refused", function()
    local sleep = H.kiro().sleep
    local kiro = H.setup(nil, {
      log = "off", policy_timeout_ms = 1000,
      policies = { { name = "slow", route = function(req) sleep(tonumber(req.prompt:match("%d+"))) end } },
    })
    local got = {}
    for _, ms in ipairs { 20, 60 } do
      kiro.spawn(function() local r, m = kiro.chat("wait " .. ms); got[#got + 1] = r or m end)
    end
    assert.are.equal(0, kiro.run())
    table.sort(got)
    assert.are.same({ "You said: wait 20", "You said: wait 60" }, got)
    local dir = H.tmpdir()
    H.write_file(dir .. "/open.lua", "return { route = function() end }\n")
    assert(os.execute("chmod 666 " .. H.q(dir .. "/open.lua")))
    local ok, err = pcall(kiro.configure, { policies = { "open" }, policy_path = { dir } })
    assert.is_false(ok)
    assert.matches("open.lua: refused: others can write it", err, 1, true)
  end)

  it("policy_timeout_ms alone recomposes the policies in force; it reads no plugin again", function()
    local dir = H.tmpdir()
    H.write_file(dir .. "/tag.lua", 'return { route = function(req) req.prompt = "[t] " .. req.prompt end }\n')
    local kiro = H.setup(nil, { log = "off", policies = { "tag" }, policy_path = { dir } })
    assert.are.equal("You said: [t] x", kiro.chat("x"))
    H.write_file(dir .. "/tag.lua", "syntax error here\n")
    kiro.configure { policy_timeout_ms = 500 }
    assert.are.equal("You said: [t] y", kiro.chat("y"))
    assert.has_error(function() kiro.configure { policy_path = { {} } } end,
      "kiro.configure: policy_path must be a list of directories")
  end)

  it("a backend's checks: pool_min against the pool_max this configure leaves; env and args are strings", function()
    local kiro = H.setup(nil, { log = "off" })
    kiro.configure { pool_max = 8, backends = { a = { cli_path = H.sim, pool_min = 6 } } }
    for _, bad in ipairs {
      { { backends = { a = { cli_path = H.sim, pool_min = 6, pool_max = 2 } } },
        "backends.a.pool_min: 6 is more than its pool_max, 2" },
      { { backends = { a = { cli_path = H.sim, env = { X = 1 } } } },
        'backends.a.env: expected NAME = "value" strings' },
      { { backends = { a = { cli_path = H.sim, daemon_args = { "x", 2 } } } },
        "backends.a.daemon_args: expected a list of strings" },
      { { backends = { a = { model = "m" } } }, "backends.a: cli_path is missing" },
    } do
      local ok, err = pcall(kiro.configure, bad[1])
      assert.is_false(ok)
      assert.matches(bad[2], err, 1, true)
    end
    kiro.configure { pool_max = 4, backends = false }
  end)
end)
