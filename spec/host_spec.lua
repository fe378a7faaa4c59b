-- Embedding: kiro driven from other event loops (kiro.pollfd, kiro.step,
-- kiro.timeout_ms, kiro.pollable) and the host adapters, each against the
-- real host from Debian's packages, run as a program of its own.
local H = require "helper"
local cjson = require "cjson"

local HOSTS = H.source .. "/spec/hosts/"

-- Runs a host program; its one JSON line of results.
local function host(program, env, ...)
  local argv = { "lua5.4", HOSTS .. program, ... }
  local r = H.run(argv, env)
  assert.are.equal(0, r.code, r.err)
  return cjson.decode(r.out)
end

describe("embedding", function()
  after_each(H.check_leaks)

  it("luv: a 50 ms timer keeps ticking while two 2 s streams run, the second through a crash and a fallback",
    function()
    -- Ten chunks 200 ms apart a stream; the daemon's second request
    -- crashes before its first chunk, and the call falls back to oneshot
    -- (which streams as slowly).
    local env, log = H.sim_env { KIRO_SIM_CHUNK_DELAY_MS = "200", KIRO_SIM_FAULT = "crash-before-chunk",
                                 KIRO_SIM_FAULT_AFTER = "1", KIRO_SIM_FAULT_MODE = "daemon" }
    local out = host("luv_stream.lua", env, "a b c d e f g h", "i j k l m n o p")
    assert.are.same({}, out.errors)
    assert.are.equal("You said: a b c d e f g h", out.streams[1].text)
    assert.are.equal("You said: i j k l m n o p", out.streams[2].text)
    assert.are.equal("You said: from a task", out.task) -- a kiro task ran under luv
    assert.are.equal(1, out.fallbacks)
    assert.are.equal(1, H.count(H.sim_events(log), { event = "crash" }))
    -- The timer: at least 80% of the ticks it was due.
    local due = math.floor(out.elapsed_ms / 50)
    assert.is_true(due >= 70, "the streams took " .. out.elapsed_ms .. " ms")
    assert.is_true(out.ticks >= 0.8 * due, ("%d ticks of %d due"):format(out.ticks, due))
    -- Chunks as they are produced, not in a lump: each stream's ten spread
    -- over more than a second.
    for i = 1, 2 do
      local a = out.streams[i].arrivals
      assert.are.equal(10, #a)
      assert.is_true(a[#a] - a[1] >= 1400, ("stream %d: chunks from %.0f to %.0f ms"):format(i, a[1], a[#a]))
    end
  end)

  it("cqueues: an echo server answers within milliseconds while four kiro streams run in its coroutines",
    function()
    -- (200 ms between chunks: a host frozen while kiro waits for one would
    -- keep an echo waiting that long; 120 ms leaves room for a busy machine)
    local env = H.sim_env { KIRO_SIM_CHUNK_DELAY_MS = "200" }
    local out = host("cqueues_echo.lua", env)
    for i = 1, 4 do
      assert.are.equal(12, out.streams[i].chunks)
      assert.are.equal(("You said: stream %d: one two three four five six seven eight"):format(i),
        out.streams[i].text)
    end
    assert.is_true(out.echoes >= 20, out.echoes .. " echoes") -- the streams took 1.8 s at least
    assert.is_true(out.slowest_ms < 120, ("the slowest echo took %.1f ms"):format(out.slowest_ms))
  end)

  it("copas (Debian's, 1.1): an echo server answers at once while four kiro streams run in its threads", function()
    local env = H.sim_env { KIRO_SIM_CHUNK_DELAY_MS = "200" } -- (as above)
    local out = host("copas_echo.lua", env)
    for i = 1, 4 do
      assert.are.equal(12, out.streams[i].chunks)
      assert.are.equal(("You said: stream %d: one two three four five six seven eight"):format(i),
        out.streams[i].text)
    end
    assert.is_true(out.echoes >= 100, out.echoes .. " echoes") -- back to back, for 2.2 s at least
    assert.is_true(out.slowest_ms < 120, ("the slowest echo took %.1f ms"):format(out.slowest_ms))
  end)

  it("kiro.pollfd, kiro.timeout_ms and kiro.step drive kiro from a loop of one's own", function()
    local kiro = H.setup({ KIRO_SIM_CHUNK_DELAY_MS = "20" })
    -- Nothing to do once what earlier tests left has closed: no step is due
    -- (nil: only I/O could bring work; else a timer's wait).
    while kiro.timeout_ms() == 0 do kiro.step(0) end
    local idle = kiro.timeout_ms()
    assert.is_true(idle == nil or idle > 0)
    assert.is_false(kiro.busy())
    local fd = kiro.pollfd()
    assert.are.equal("number", math.type(fd) and "number")
    local got, steps = {}, 0
    kiro.spawn(function()
      for chunk in kiro.stream("one two three") do got[#got + 1] = chunk end
    end)
    assert.is_true(kiro.busy())
    assert.are.equal(0, kiro.timeout_ms()) -- a task can run
    local p = kiro.pollable()
    assert.are.equal(fd, p:pollfd())
    assert.are.equal("r", p:events())
    while kiro.busy() do
      steps = steps + 1
      -- A step never waits longer than asked.
      local t0 = kiro.core.now()
      kiro.step(10)
      assert.is_true(kiro.core.now() - t0 < 200)
    end
    assert.are.same({ "You", " said:", " one", " two", " three" }, got)
    assert.is_true(steps > 2)
    assert.is_true(kiro.step(0) == false)
    local inside
    kiro.spawn(function() inside = select(2, pcall(kiro.step, 0)) end)
    kiro.run()
    assert.matches("kiro.step: called from inside a kiro task", inside)
  end)

  it("loading kiro leaves the host's SIGPIPE alone, and a write to a closed pipe does not kill the host", function()
    local out = host("sigpipe.lua", {})
    assert.are.equal(out.before, out.after)
    assert.are.same({ "", "", "", "", "" }, out.replies)
  end)

  it("log = function routes kiro's log lines to the host's logger; false brings stderr back", function()
    local r = H.run({ "lua5.4", HOSTS .. "log_sink.lua" }, H.sim_env())
    assert.are.equal(0, r.code, r.err)
    local got = cjson.decode(r.out)
    local text = table.concat(got, "\n")
    assert.matches("debug kiro.provider Starting Kiro CLI daemon", text, 1, true)
    assert.matches("debug kiro.provider Received response in", text, 1, true)
    assert.matches("error kiro.tasks a task failed: [^\n]*task boom\nstack traceback:", text)
    -- stderr: only the failed logger's note and what came after `log = false`.
    assert.are.equal("[ERROR kiro.log] the log function failed: " .. HOSTS .. "log_sink.lua:15: logger boom\n"
      .. "[WARN host] on stderr again\n", r.err)
    local kiro = H.setup()
    assert.has_error(function() kiro.configure { log = 5 } end, "kiro.configure: log must be a filter (a level, "
      .. "or target=level pairs), a function(level, target, message) that takes the log's lines, or false (stderr "
      .. "again)")
  end)

  it("a host adapter is checked", function()
    local kiro = H.setup()
    assert.has_error(function() kiro.configure { host = {} } end,
      "kiro.configure: host must be a host adapter (kiro.host.luv(), kiro.host.cqueues(), ...): "
        .. "a table with can_wait, wait, wake and start functions")
    assert.has_error(function() return kiro.host.nope end)
  end)
end)
