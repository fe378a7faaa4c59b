-- The Lua face (SPEC section 5): chat, stream, tasks, sleep, configure, stats.
local H = require "helper"

describe("kiro Lua API", function()
  after_each(H.check_leaks)

  it("chat returns the predicted reply from the daemon, asked for whole #jsonl", function()
    local kiro, log = H.setup()
    assert.are.equal("You said: Hello", kiro.chat("User: Hello\n\nAssistant: "))
    local ev = H.sim_events(log)
    assert.are.equal(1, H.count(ev, { mode = "daemon", event = "request", stream = 0 }))
  end)

  it("reuses one warm daemon for many calls", function()
    local kiro, log = H.setup()
    for i = 1, 5 do assert.are.equal("You said: n" .. i, kiro.chat("n" .. i)) end
    local ev = H.sim_events(log)
    assert.are.equal(1, #H.pids(ev, { event = "start" }))
    assert.are.equal(5, H.count(ev, { event = "request" }))
  end)

  it("stream yields the reply in several chunks", function()
    local kiro = H.setup()
    local chunks = {}
    for c in kiro.stream("User: one two three\n\nAssistant: ") do chunks[#chunks + 1] = c end
    assert.are.same({ "You", " said:", " one", " two", " three" }, chunks)
  end)

  it("accepts a stream that ends with a separate done line", function()
    local kiro = H.setup { KIRO_SIM_DONE = "separate" }
    local chunks = {}
    for c in kiro.stream("a b") do chunks[#chunks + 1] = c end
    assert.are.equal("You said: a b", table.concat(chunks))
    assert.are.equal("You said: x", kiro.chat("x")) -- and the daemon is in step
  end)

  it("passes the model to the backend", function()
    local kiro = H.setup()
    assert.are.equal("[m1] You said: hi", kiro.chat("hi", { model = "m1" }))
    kiro.configure { model = "m2" }
    assert.are.equal("[m2] You said: hi", kiro.chat("hi"))
  end)

  it("oneshot mode spawns the CLI per call and gives the same text", function()
    local kiro, log = H.setup({}, { mode = "oneshot" })
    assert.are.equal("You said: Hello", kiro.chat("User: Hello\n\nAssistant: "))
    local parts = {}
    for c in kiro.stream("p q") do parts[#parts + 1] = c end
    assert.are.equal("You said: p q", table.concat(parts))
    local ev = H.sim_events(log)
    assert.are.equal(0, H.count(ev, { mode = "daemon" }))
    assert.are.equal(2, #H.pids(ev, { mode = "chat", event = "start" }))
  end)

  it("strips ANSI escapes from oneshot output", function()
    local kiro = H.setup({ KIRO_SIM_FAULT = "ansi", KIRO_SIM_FAULT_MODE = "chat" }, { mode = "oneshot" })
    assert.are.equal("You said: colour me", kiro.chat("colour me"))
  end)

  it("streaming is real: the first chunk arrives before the backend writes the last", function()
    local gate = H.tmpdir() .. "/gate"
    local kiro = H.setup { KIRO_SIM_GATE = gate }
    local first
    for c in kiro.stream("alpha beta gamma") do
      if not first then
        first = c
        -- The backend is parked before its last chunk until this file exists:
        -- holding a chunk now proves it was relayed before the reply was complete.
        assert.is_nil(H.read_file(gate))
        H.write_file(gate, "")
      end
    end
    assert.are.equal("You", first)
  end)

  it("two tasks run at once: a slow stream does not delay a chat #jsonl", function()
    local gate = H.tmpdir() .. "/gate"
    local kiro = H.setup({ KIRO_SIM_GATE = gate }, { pool_max = 2 })
    local order = {}
    kiro.spawn(function()
      local n = 0
      for _ in kiro.stream("slow stream here") do n = n + 1 end
      order[#order + 1] = "stream done"
    end)
    kiro.spawn(function()
      -- The stream's backend waits for the gate, which only this task opens:
      -- if the chat were delayed by the stream, the run would never end.
      local r = assert(kiro.chat("quick")) -- not streamed, so not gated
      order[#order + 1] = "chat: " .. r
      H.write_file(gate, "")
    end)
    kiro.run()
    assert.are.same({ "chat: You said: quick", "stream done" }, order)
  end)

  it("chat from a task suspends only that task", function()
    local kiro = H.setup({ KIRO_SIM_LATENCY_MS = 200 }, { pool_max = 4 })
    local ticks, reply = 0, nil
    kiro.spawn(function() reply = kiro.chat("wait for me") end)
    kiro.spawn(function()
      while not reply do ticks = ticks + 1; kiro.sleep(10) end
    end)
    kiro.run()
    assert.are.equal("You said: wait for me", reply)
    assert.is_true(ticks > 1)
  end)

  it("breaking out of a stream cancels it and leaves the daemon usable", function()
    local kiro, log = H.setup({ KIRO_SIM_CHUNK_DELAY_MS = 20 }, { pool_max = 1 })
    for c in kiro.stream("one two three four five six") do
      assert.are.equal("You", c)
      break
    end
    assert.are.equal(1, kiro.stats().cancelled)
    -- The next request waits for the rest of the reply to be drained, then
    -- the same daemon serves it.
    assert.are.equal("You said: next", kiro.chat("next"))
    assert.are.equal(1, #H.pids(H.sim_events(log), { event = "start" }))
  end)

  it("kiro.call: a request to relay, with next() and cancel()", function()
    local kiro, log = H.setup({ KIRO_SIM_CHUNK_DELAY_MS = 20 }, { pool_max = 1 })
    local call = kiro.call("one two three")
    assert.are.equal("You", call:next())
    call:cancel()
    -- One error model: a method that can return a triple does.
    local c, msg, code = call:next()
    assert.is_nil(c)
    assert.are.equal("cancelled", code)
    assert.are.equal("cancelled by caller", msg)
    -- The daemon drains the rest and serves the next request.
    local whole = kiro.call("x", { stream = false })
    assert.are.equal("You said: x", whole:next())
    assert.is_nil(whole:next())
    assert.are.equal(1, #H.pids(H.sim_events(log), { event = "start" }))
  end)

  it("kiro.call: cancel() ends the call even when the rest of the reply has arrived", function()
    local kiro = H.setup()
    local call = kiro.call("one two three")
    assert.are.equal("You", call:next())
    kiro.sleep(200) -- the whole reply is in by now, unread
    call:cancel()
    local c, msg, code = call:next()
    assert.is_nil(c)
    assert.are.equal("cancelled", code)
    assert.are.equal("cancelled by caller", msg)
    assert.are.equal("cancelled", select(3, call:next())) -- and stays so
  end)

  it("works from a foreign coroutine by driving the loop", function()
    local kiro = H.setup()
    local co = coroutine.wrap(function() return kiro.chat("from a coroutine") end)
    assert.are.equal("You said: from a coroutine", co())
  end)

  it("sleep suspends a task and blocks a plain caller", function()
    local kiro = H.setup()
    local t0 = kiro.core.now()
    kiro.sleep(30)
    assert.is_true(kiro.core.now() - t0 >= 30)
    local seq = {}
    kiro.spawn(function() kiro.sleep(40); seq[#seq + 1] = "b" end)
    kiro.spawn(function() kiro.sleep(5); seq[#seq + 1] = "a" end)
    kiro.run()
    assert.are.same({ "a", "b" }, seq)
  end)

  it("napper: a nap runs its time unless stopped; a stop ends the nap under way and every later one", function()
    local kiro = H.setup()
    local n = kiro.napper()
    local t0 = kiro.core.now()
    assert.is_false(n:nap(20))
    assert.is_true(kiro.core.now() - t0 >= 20)
    local got
    kiro.spawn(function() got = { n:nap(60000), kiro.core.now() - t0 } end)
    kiro.spawn(function() kiro.sleep(10); n:stop() end)
    kiro.run()
    assert.is_true(got[1])
    assert.is_true(got[2] < 30000, got[2] .. " ms")
    assert.is_true(n:nap(60000)) -- at once
  end)

  it("a task that fails does not stop the others: its error and traceback go to on_task_error; run counts them",
    function()
    local kiro = H.setup()
    local heard, done = {}, {}
    kiro.configure { on_task_error = function(err, trace) heard[#heard + 1] = { err = err, trace = trace } end }
    local before = kiro.stats().task_errors
    kiro.spawn(function() kiro.sleep(5); error("task blew up") end)
    kiro.spawn(function() error({ code = "mine" }) end)
    kiro.spawn(function() kiro.sleep(20); done[#done + 1] = kiro.chat("still here") end)
    assert.are.equal(2, kiro.run())
    assert.are.same({ "You said: still here" }, done)
    assert.are.equal(2, #heard)
    assert.are.same({ code = "mine" }, heard[1].err) -- the error as raised, and its traceback
    assert.matches("task blew up", heard[2].err)
    assert.matches("stack traceback", heard[2].trace)
    assert.matches("api_spec.lua:%d+", heard[2].trace)
    assert.are.equal(before + 2, kiro.stats().task_errors)
    -- A handler that raises is logged, not raised; without one the log hears it.
    kiro.configure { on_task_error = function() error("handler broke") end }
    kiro.spawn(function() error("again") end)
    assert.are.equal(1, kiro.run())
    kiro.configure { on_task_error = false }
    kiro.spawn(function() error("logged") end)
    assert.are.equal(1, kiro.run())
    assert.has_error(function() kiro.configure { on_task_error = "log" } end,
      "kiro.configure: on_task_error must be a function")
  end)

  it("stream raises an error object with code and message", function()
    local kiro = H.setup({ KIRO_SIM_FAULT = "error" })
    local ok, err = pcall(function() for _ in kiro.stream("x") do end end)
    assert.is_false(ok)
    assert.are.equal("backend", err.code)
    assert.are.equal("simulated backend failure", err.message)
    assert.are.equal("kiro: backend: simulated backend failure", tostring(err))
  end)

  it("rejects bad arguments and unknown options clearly", function()
    local kiro = H.setup()
    assert.has_error(function() kiro.chat(42) end, "kiro.chat: prompt must be a string")
    assert.has_error(function() kiro.chat("x", { colour = 1 }) end, "kiro.chat: unknown option 'colour'")
    assert.has_error(function() kiro.chat("x", { mode = "turbo" }) end)
    assert.has_error(function() kiro.configure { nonsense = 1 } end, "kiro.configure: unknown option 'nonsense'")
    -- a slip of the keyboard, or a unit left off: the option meant is named
    assert.has_error(function() kiro.chat("x", { timeout = 5 }) end,
      "kiro.chat: unknown option 'timeout' (did you mean 'timeout_ms'?)")
    assert.has_error(function() kiro.chat("x", { modle = "m" }) end,
      "kiro.chat: unknown option 'modle' (did you mean 'model'?)")
    -- (kiro.call's option, not kiro.chat's: no suggestion of itself)
    assert.has_error(function() kiro.chat("x", { stream = true }) end, "kiro.chat: unknown option 'stream'")
    assert.has_error(function() kiro.configure { pool_maxx = 1 } end,
      "kiro.configure: unknown option 'pool_maxx' (did you mean 'pool_max'?)")
    assert.has_error(function() kiro.configure { pool_min = 5, pool_max = 2 } end)
    assert.has_error(function() kiro.configure { timeout_ms = -1 } end)
    assert.has_error(function() kiro.configure { log = "loud" } end)
  end)

  it("reports a missing backend as a spawn error", function()
    local kiro = H.setup({}, { cli_path = "/nonexistent/kiro-cli", log = "error" })
    local r, msg, code = kiro.chat("x")
    assert.is_nil(r)
    assert.are.equal("spawn", code)
    assert.matches("/nonexistent/kiro%-cli", msg)
  end)

  it("a prompt over max_request_bytes: nil, message, `overloaded`, and no backend is asked", function()
    local kiro, log = H.setup({}, { max_request_bytes = 1024 })
    local r, msg, code = kiro.chat(("p"):rep(1025))
    assert.is_nil(r)
    assert.are.equal("overloaded", code)
    assert.are.equal("the prompt is 1025 bytes; max_request_bytes is 1024", msg)
    assert.are.equal(0, #H.sim_events(log))
    assert.are.equal("You said: " .. ("p"):rep(1000), kiro.chat(("p"):rep(1000)))
    assert.has_error(function() kiro.configure { max_request_bytes = 12 } end,
      "kiro.configure: max_request_bytes must be an integer from 64 to 1099511627776")
    assert.has_error(function() kiro.configure { timeout_ms = 2 ^ 40 } end,
      "kiro.configure: timeout_ms must be an integer from 0 to 2147483647")
    assert.has_error(function() kiro.configure { pipeline_depth = 65 } end,
      "kiro.configure: pipeline_depth must be an integer from 1 to 64")
    assert.has_error(function() kiro.configure { close_fds = 1 } end,
      "kiro.configure: close_fds must be a boolean")
  end)

  it("counts requests, paths and daemons in stats", function()
    local kiro = H.setup()
    local before = kiro.stats()
    kiro.chat("a")
    kiro.chat("b", { mode = "oneshot" })
    local s = kiro.stats()
    assert.are.equal(before.requests + 2, s.requests)
    assert.are.equal(before.daemon_requests + 1, s.daemon_requests)
    assert.are.equal(before.oneshot_requests + 1, s.oneshot_requests)
    assert.are.equal(1, s.daemons)
    assert.are.equal(1, #s.pools)
    assert.are.equal("ok", s.pools[1].state)
    assert.are.equal(1, s.pools[1].daemons[1].served)
    assert.is_string(kiro.version)
  end)

  it("a timer past the longest duration waits that long, not at all", function()
    local kiro = H.setup()
    local fired = false
    local t = kiro.core.timer(math.maxinteger, function() fired = true end)
    kiro.sleep(50)
    t:stop()
    assert.is_false(fired) -- (libuv's clock wrapped past the end would have fired it at once)
  end)
end)
