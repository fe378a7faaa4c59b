-- A real third-party ACP agent: the example agent of the ACP SDK (npm
-- @zed-industries/agent-client-protocol 0.4.5, typescript/examples/agent.ts,
-- installed by scripts/deps.sh through scripts/acp-example-agent.sh). Each
-- turn it streams three sentences a second apart, reads a file (a tool call)
-- and asks permission to edit another. Its turns take about five seconds,
-- so the scenarios run at once, each on an agent of its own.
local H = require "helper"

local dir = os.getenv("KIRO_ACP_EXAMPLE_DIR")
  or ((os.getenv("XDG_CACHE_HOME") or (os.getenv("HOME") .. "/.cache")) .. "/kiro-rt/acp-example")
local AGENT = dir .. "/agent.mjs"

local FIRST = "I'll help you with that. Let me start by reading some files to understand the current situation."
local SECOND = " Now I understand the project structure. I need to make some changes to improve it."
local ALLOWED = " Perfect! I've successfully updated the configuration. The changes have been applied."
local REJECTED = " I understand you prefer not to make that change. I'll skip the configuration update."

-- The agent as a CLI kiro-rt can start: node and the bundled agent.
local function agent_cli()
  assert(H.exists(AGENT), "the ACP SDK's example agent is not installed at " .. AGENT
    .. ": run `sh scripts/deps.sh` (or scripts/acp-example-agent.sh)")
  local p = assert(io.popen("command -v node"))
  local node = p:read("l")
  p:close()
  assert(node and node ~= "", "node is not on PATH: run `sh scripts/deps.sh`")
  local cli = H.tmpdir() .. "/example-agent"
  H.write_file(cli, ("#!/bin/sh\nexec %s %s\n"):format(H.q(node), H.q(AGENT)))
  assert(os.execute("chmod +x " .. H.q(cli)))
  return cli
end

describe("the ACP SDK's example agent", function()
  after_each(H.check_leaks)

  it("streams, asks permission (rejected by default, allowed by a hook or a trust list), shows its tool calls, "
    .. "can be cancelled",
    function()
    local cli = agent_cli()
    -- Through the command line too, at the same time: a server, an agent of its own.
    local env = H.sim_env { KIRO_CLI_PATH = cli }
    local _, wait_cli = H.spawn_bg({ H.kiro_rt, "agent", "--protocol", "acp", "-m", "hello" }, env)
    -- ...and one that trusts edits: its "edit" tool call is allowed.
    local _, wait_trusting = H.spawn_bg({ H.kiro_rt, "agent", "--protocol", "acp", "--trust-tools", "edit",
                                          "-m", "hello" }, env)

    local kiro = H.setup({}, { cli_path = cli, protocol = "acp", pool_max = 3,
                              first_chunk_timeout_ms = 20000, stall_timeout_ms = 20000 })
    local results = {}
    -- The default: the permission request is rejected.
    kiro.spawn(function()
      local parts, updates = {}, {}
      for c in kiro.stream("hi", { on_update = function(u)
        updates[#updates + 1] = u.sessionUpdate .. ":" .. tostring(u.toolCallId) .. ":" .. tostring(u.status)
      end }) do parts[#parts + 1] = c end
      results.rejected = { text = table.concat(parts), parts = #parts, updates = updates }
    end)
    -- A hook that allows: the agent edits, and says so.
    kiro.spawn(function()
      local asked
      local reply = kiro.chat("hi", { permission = function(q) asked = q; return "allow" end })
      results.allowed = { reply = reply, asked = asked }
    end)
    -- Cancelled while its permission request waits for an answer.
    kiro.spawn(function()
      local c = kiro.call("hi", { permission = function() error("not asked: the call is cancelled first") end })
      assert.are.equal(FIRST, c:next())
      assert.are.equal(SECOND, c:next())
      -- Its next step is the permission request: wait, without reading on,
      -- until all three agents have asked (this one's question then waits
      -- in the call, unanswered).
      local deadline = kiro.core.now() + 10000
      while kiro.stats().permission_requests < 3 and kiro.core.now() < deadline do kiro.sleep(10) end
      assert.are.equal(3, kiro.stats().permission_requests, "every agent asked permission")
      c:cancel()
      local chunk, msg, code = c:next()
      results.cancelled = { chunk = chunk, code = code, msg = msg }
    end)
    kiro.run()

    assert.are.equal(FIRST .. SECOND .. REJECTED, results.rejected.text)
    assert.are.equal(3, results.rejected.parts)
    assert.are.same({ "tool_call:call_1:pending", "tool_call_update:call_1:completed", "tool_call:call_2:pending" },
      results.rejected.updates)
    assert.are.equal(FIRST .. SECOND .. ALLOWED, results.allowed.reply)
    assert.are.equal("call_2", results.allowed.asked.toolCall.toolCallId)
    assert.are.same({ nil, "cancelled" }, { results.cancelled.chunk, results.cancelled.code })
    local s = kiro.stats()
    assert.are.equal(3, s.permission_requests)
    assert.are.equal(1, s.permission_defaults)

    -- The cancelled agent answered its turn (`end_turn`, against the spec,
    -- as this SDK version does): it is still usable, nothing was replaced.
    H.wait_kiro(kiro, function()
      for _, d in ipairs(kiro.stats().pools[1].daemons) do if d.state ~= "ready" then return false end end
      return true
    end, "every agent to be ready")
    assert.are.equal(0, kiro.stats().daemon_restarts)

    local code, out, err = wait_cli()
    assert.are.equal(0, code, err)
    assert.are.equal(FIRST .. SECOND .. REJECTED .. "\n", out)
    code, out, err = wait_trusting()
    assert.are.equal(0, code, err)
    assert.are.equal(FIRST .. SECOND .. ALLOWED .. "\n", out)
    local st = assert(H.status(env))
    assert.are.equal("acp", st.pools[1].protocol)
  end)
end)
