-- `require "kiro"` from a stock lua5.4, set up as the README says.
local H = require "helper"

describe("the kiro module in a stock lua5.4", function()
  local env = {
    LUA_PATH = H.source .. "/lua/?.lua;" .. H.source .. "/lua/?/init.lua;;",
    LUA_CPATH = H.build .. "/?.so;;",
    KIRO_CLI_PATH = H.sim,
  }

  it("loads and chats", function()
    local r = H.run({ "lua5.4", "-e", [[
      local kiro = require "kiro"
      io.write(kiro.chat("from lua5.4"), "|", kiro.version)
    ]] }, env)
    assert.are.equal(0, r.code, r.err)
    assert.matches("^You said: from lua5%.4|%d+%.%d+%.%d+$", r.out)
  end)

  it("says what is missing when only LUA_CPATH is set", function()
    local r = H.run({ "lua5.4", "-e", "require 'kiro'" }, { LUA_CPATH = env.LUA_CPATH, LUA_PATH = ";;" })
    assert.are_not.equal(0, r.code)
    assert.matches("add '<kiro%-rt>/lua/%?%.lua", r.err)
  end)

  it("stops its daemons when the state closes", function()
    local dir = H.tmpdir()
    local e = { KIRO_SIM_LOG = dir .. "/sim.log" }
    for k, v in pairs(env) do e[k] = v end
    local r = H.run({ "lua5.4", "-e", [[
      local kiro = require "kiro"
      kiro.configure { pool_min = 3 }
      assert(kiro.chat("x"))
      while kiro.stats().daemons < 3 do kiro.sleep(5) end
    ]] }, e)
    assert.are.equal(0, r.code, r.err)
    local ev = H.sim_events(dir .. "/sim.log")
    assert.are.equal(3, H.count(ev, { event = "start" }))
    -- lua5.4 returned only after every daemon had exited on stdin EOF.
    assert.are.equal(3, H.count(ev, { event = "exit", status = 0 }))
  end)
end)
