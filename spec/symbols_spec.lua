-- Layout and symbol hygiene. The core (src/core) knows nothing of Lua.
-- kiro.so exports its luaopen_ functions and nothing else,
-- kiro-rt exports nothing, so a C module loaded beside kiro keeps its own
-- functions even where their names are kiro's (issue 8: a module's
-- `log_write` used to call kiro's and print "[WARN m] hello").
local H = require "helper"

local function exported(path)
  local r = H.run({ "nm", "-D", "--defined-only", path }, {})
  assert.are.equal(0, r.code, r.err)
  local names = {}
  for name in r.out:gmatch("%x+ %a ([^\n]+)") do
    -- Copies of the C library's data (stdout, stderr) live in a program
    -- by copy relocation; they carry the library's version. A sanitizer
    -- build adds the sanitizers' own.
    if not name:find("@", 1, true) and not name:match("^__%a*san") then names[#names + 1] = name end
  end
  table.sort(names)
  return names
end

describe("layout", function()
  it("no file of the core includes a Lua header, and its unit tests link without liblua", function()
    for name in require("lfs").dir(H.source .. "/src/core") do
      if name:match("%.[ch]$") then
        local text = H.read_file(H.source .. "/src/core/" .. name)
        for inc in text:gmatch('#include%s*[<"]([^>"]+)[>"]') do
          assert.is_nil(inc:match("^lua") or inc:match("lauxlib") or inc:match("lualib"), name .. " includes " .. inc)
        end
      end
    end
    local r = H.run({ "ldd", H.build .. "/unit-tests" }, {})
    assert.are.equal(0, r.code, r.err)
    assert.is_nil(r.out:find("liblua", 1, true))
  end)
end)

describe("symbols", function()
  it("kiro.so exports only luaopen_ functions", function()
    assert.are.same({ "luaopen_kiro", "luaopen_kiro_core" }, exported(H.build .. "/kiro.so"))
  end)

  it("kiro-rt exports nothing of its own", function()
    assert.are.same({}, exported(H.kiro_rt))
  end)

  it("a foreign C module's log_write stays its own, under kiro-rt run and in a Lua host", function()
    local cpath = H.build .. "/test-modules/?.so;;"
    local script = H.tmpdir() .. "/foreign.lua"
    H.write_file(script, 'local kiro = require "kiro"; print((require "foreign"))')
    local r = H.run({ H.kiro_rt, "run", script }, { LUA_CPATH = cpath })
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("foreign 2 m: hello\n", r.out)
    assert.are.equal("", r.err)
    r = H.run({ "lua5.4", script }, { LUA_CPATH = H.build .. "/?.so;" .. cpath })
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("foreign 2 m: hello\n", r.out)
  end)
end)
