-- Hostile backends, in-process: a reply belongs to exactly one request, a
-- backend that breaks the protocol is replaced, and what a backend leaves
-- behind (helpers holding its pipes, a stopped child) never holds a caller.
-- Each test is named after the defect it caught (issue 7).
local H = require "helper"

local daemon_pids = H.daemon_pids

-- Two tasks that take turns: caller 1 sends q1, caller 2 q2, caller 1 q3...
-- each call waits for the one before it. Returns every caller's replies.
local function alternate(kiro, n, call)
  local got = { {}, {} }
  local turn = { kiro.event(), kiro.event() }
  for who = 1, 2 do
    kiro.spawn(function()
      for i = who, n, 2 do
        turn[who]:wait()
        turn[who] = kiro.event()
        got[who][#got[who] + 1] = { i, call(i) }
        turn[3 - who]:set()
      end
    end)
  end
  turn[1]:set()
  kiro.run()
  return got
end

describe("hostile backends", function()
  after_each(H.check_leaks)

  it("always-stream: plain requests from alternating callers each get exactly their own whole reply", function()
    local kiro, log = H.setup { KIRO_SIM_FAULT = "always-stream" }
    local got = alternate(kiro, 20, function(i)
      local reply, msg = kiro.chat("q" .. i .. " part1 part2")
      return reply or msg
    end)
    for who = 1, 2 do
      assert.are.equal(10, #got[who])
      for _, r in ipairs(got[who]) do
        assert.are.equal(("You said: q%d part1 part2"):format(r[1]), r[2])
      end
    end
    assert.are.equal(1, #daemon_pids(log)) -- one daemon, never out of step
  end)

  it("dies mid-reply after a \"done\": false line: `crashed`, not the half as a success", function()
    local kiro, log = H.setup { KIRO_SIM_FAULT = "always-stream,crash-mid-stream" }
    local reply, msg, code = kiro.chat("half and half", { mode = "daemon" })
    assert.is_nil(reply)
    assert.are.equal("crashed", code)
    assert.matches("simulated crash", msg)
    -- In auto mode nothing had reached the caller: the policy serves it.
    assert.are.equal("You said: half and half", kiro.chat("half and half"))
    assert.are.equal(1, H.count(H.sim_events(log), { mode = "chat", event = "request" }))
  end)

  it("content of the wrong type is a `protocol` error and the daemon is replaced", function()
    local fault = H.tmpdir() .. "/fault"
    H.write_file(fault, "")
    local kiro, log = H.setup({ KIRO_SIM_FAULT = "wrong-type", KIRO_SIM_FAULT_FILE = fault },
                              { restart_backoff_ms = 10 })
    local reply, msg, code = kiro.chat("x", { mode = "daemon" })
    assert.is_nil(reply)
    assert.are.equal("protocol", code)
    -- "content" (jsonl) or an agent_message_chunk's "text" (acp)
    assert.matches('broke the protocol: [^:]*"%a+" is not a string', msg)
    local bad = daemon_pids(log)[1]
    H.wait_kiro(kiro, function() return not H.alive(bad) end, "the daemon to be replaced")
    os.remove(fault)
    assert.are.equal("You said: y", kiro.chat("y"))
    assert.are_not.equal(bad, H.sim_events(log)[#H.sim_events(log)].pid)
  end)

  it("a second reply line never reaches the next request: the daemon is replaced", function()
    local kiro, log = H.setup({ KIRO_SIM_FAULT = "double-reply" }, { restart_backoff_ms = 10 })
    for i = 1, 6 do
      assert.are.equal("You said: r" .. i, kiro.chat("r" .. i))
      local parts = {}
      for c in kiro.stream("s" .. i .. " t") do parts[#parts + 1] = c end
      assert.are.equal("You said: s" .. i .. " t", table.concat(parts))
    end
    -- Every extra line was caught as a protocol fault; none became a reply.
    assert.is_true(#daemon_pids(log) >= 2)
    assert.is_true(kiro.stats().daemon_restarts >= 1)
  end)

  it("a reply of one line without \"done\" ends a stream too #jsonl", function()
    local kiro = H.setup()
    -- A backend that ignores "stream" and answers in one line, like the
    -- seed's non-stream reply: the stream gets it whole and ends.
    local script = H.tmpdir() .. "/one-line.sh"
    H.write_file(script, "#!/bin/sh\nwhile read -r line; do printf '{\"content\": \"whole\"}\\n'; done\n")
    os.execute("chmod +x " .. H.q(script))
    local parts = {}
    for c in kiro.stream("x", { cli_path = script, mode = "daemon" }) do parts[#parts + 1] = c end
    assert.are.same({ "whole" }, parts)
    assert.are.equal("whole", kiro.chat("y", { cli_path = script, mode = "daemon" }))
  end)

  it("a helper left holding a oneshot's stdout is killed with it: the call does not wait for it", function()
    local kiro, log = H.setup({ KIRO_SIM_FAULT = "grandchild", KIRO_SIM_FAULT_MODE = "chat" },
                              { mode = "oneshot" })
    assert.are.equal("You said: quick", kiro.chat("quick"))
    local child = H.sim_events(log)[2].child
    assert.is_number(child)
    -- Killed (not merely waited out: it sleeps for an hour). Its end is
    -- what let EOF come; it may take a moment more to be reaped by init.
    assert.is_true(H.wait_for(function() return not H.alive(child) end, 2000))
  end)

  it("stopping a daemon stops its process group, grandchildren included", function()
    local kiro, log = H.setup { KIRO_SIM_FAULT = "grandchild" }
    assert.are.equal("You said: hi", kiro.chat("hi"))
    local child
    for _, e in ipairs(H.sim_events(log)) do if e.event == "grandchild" then child = e.child end end
    assert.is_true(H.alive(child))
    kiro.reset()
    assert.is_true(H.wait_for(function() return not H.alive(child) end, 2000))
  end)

  it("a SIGSTOPped oneshot child is health-checked: `crashed` at once, not the stall timeout", function()
    local kiro, log = H.setup({ KIRO_SIM_LATENCY_MS = 3000 },
                              { mode = "oneshot", health_interval_ms = 50, stall_timeout_ms = 120000 })
    local r, msg, code
    kiro.spawn(function() r, msg, code = kiro.chat("stop me") end)
    kiro.spawn(function()
      H.wait_kiro(kiro, function() return #H.pids(H.sim_events(log), { mode = "chat" }) == 1 end,
        "the oneshot to start")
      os.execute("kill -STOP " .. H.sim_events(log)[1].pid)
    end)
    kiro.run()
    assert.is_nil(r)
    assert.are.equal("crashed", code)
    assert.matches("stopped by a signal", msg)
    assert.is_true(kiro.stats().health_failures >= 1)
  end)

  it("backends get their three pipes and no other descriptor", function()
    local kiro, log = H.setup()
    assert(kiro.chat("fds"))
    -- The specs' own lua5.4 is a host kiro does not own: only kiro's own
    -- descriptors are its business here (kiro-rt sweeps the rest; cli_spec).
    for _, e in ipairs(H.sim_events(log)) do
      if e.event == "start" then assert.are.equal("0,1,2", e.fds) end
    end
  end)
end)

describe("hostile backends through the server", function()
  after_each(H.check_sims_gone)

  it("always-stream: 20 plain calls from alternating callers each print exactly their own whole reply", function()
    local env, log = H.sim_env { KIRO_SIM_FAULT = "always-stream" }
    for i = 1, 20 do
      -- Each call is a caller of its own (a process); odd and even ones
      -- also differ in how they ask.
      local args = { "--no-stream", "-m", ("q%d part1 part2"):format(i) }
      if i % 2 == 0 then table.insert(args, 1, "--raw") end
      local r = H.agent(args, env)
      assert.are.equal(0, r.code, r.err)
      assert.are.equal(("You said: q%d part1 part2\n"):format(i), r.out)
    end
    assert.are.equal(1, #daemon_pids(log)) -- one warm daemon served them all, in step
  end)

  it("a daemon killed after a \"done\": false line: `crashed` (exit 1), not the half with exit 0", function()
    local env = H.sim_env { KIRO_SIM_FAULT = "always-stream,crash-mid-stream" }
    local r = H.agent({ "--no-stream", "--mode", "daemon", "-m", "half and half" }, env)
    assert.are.equal(1, r.code)
    assert.are.equal("", r.out)
    assert.matches("^kiro%-rt: crashed: .*simulated crash", r.err)
    r = H.agent({ "--no-stream", "-m", "half and half" }, env) -- auto: served by oneshot
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("You said: half and half\n", r.out)
  end)
end)

describe("cool-down", function()
  after_each(H.check_leaks)

  it("never strands a queue: 8 tasks streaming through crash-looping daemons, none waits it out", function()
    local n, every = 60, 10
    local kiro, log = H.setup({ KIRO_SIM_FAULT = "crash-mid-stream", KIRO_SIM_FAULT_EVERY = every },
      { pool_max = 4, restart_max = 2, restart_backoff_ms = 5, cooldown_ms = 600000, timeout_ms = 30000,
        log = "error" })
    local outcomes = {}
    H.concurrently(kiro, 8, function(t)
      for i = 1, n do
        local prompt = ("t%d q%d a b"):format(t, i)
        local ok, err = pcall(function()
          local parts = {}
          for c in kiro.stream(prompt) do parts[#parts + 1] = c end
          assert.are.equal("You said: " .. prompt, table.concat(parts))
        end)
        local code = ok and "ok" or err.code
        outcomes[code] = (outcomes[code] or 0) + 1
      end
    end)
    -- Crashes after the first chunk end `crashed` (nothing may be resent);
    -- everything else is served. Nothing waited for the 10-minute cool-down.
    assert.is_nil(outcomes.timeout)
    assert.are.equal(8 * n, (outcomes.ok or 0) + (outcomes.crashed or 0))
    assert.is_true(outcomes.ok > 8 * n / 2)
    assert.are.equal("cooldown", kiro.stats().pools[1].state)
    assert.is_true(H.count(H.sim_events(log), { mode = "chat", event = "request" }) > 0)
  end)

  it("never strands a queue through the server either", function()
    local kiro = H.setup()
    local env, log = H.sim_env()
    -- A server whose daemons reach the cool-down quickly (and keep it).
    local script = H.tmpdir() .. "/serve.lua"
    H.write_file(script, [[
      local kiro = require "kiro"
      kiro.configure { restart_max = 2, restart_backoff_ms = 5, cooldown_ms = 600000, pool_max = 4 }
      assert(require("kiro.server").serve {}) -- the script is a kiro task
    ]])
    local pid, wait_exit = H.spawn_bg({ H.kiro_rt, "run", script }, env)
    assert(H.wait_for(function() return H.status(env) ~= nil end, 5000), "the server did not come up")
    local client = require "kiro.client"
    local n, outcomes = 40, {}
    local backend_env = { KIRO_SIM_FAULT = "crash-mid-stream", KIRO_SIM_FAULT_EVERY = "10", KIRO_SIM_LOG = log }
    H.concurrently(kiro, 8, function(t)
      local c = assert(client.connect(H.socket(env)))
      for i = 1, n do
        local prompt = ("t%d q%d a b"):format(t, i)
        local ok, err = pcall(function()
          local parts = {}
          for chunk in c:request(prompt, { cli = H.sim, env = backend_env, timeout_ms = 30000 }) do
            parts[#parts + 1] = chunk
          end
          assert.are.equal("You said: " .. prompt, table.concat(parts))
        end)
        local code = ok and "ok" or err.code
        outcomes[code] = (outcomes[code] or 0) + 1
      end
      c:close()
    end)
    assert.is_nil(outcomes.timeout)
    assert.are.equal(8 * n, (outcomes.ok or 0) + (outcomes.crashed or 0))
    assert.are.equal("cooldown", assert(H.status(env)).pools[1].state)
    assert.is_true(H.count(H.sim_events(log), { mode = "chat", event = "request" }) > 0)
    os.execute("kill -TERM " .. pid)
    assert.are.equal(0, (wait_exit()))
  end)
end)
