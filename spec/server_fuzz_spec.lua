-- The server's door, attacked: a seeded generator of type-confused requests
-- and garbage lines. Whatever a client sends, the server stays up and answers
-- every request line with exactly one result or error on its id, and every
-- other line with an error. (Issue 7: 27 of 270 single-field mutations and
-- 97 of 2,000 generated requests used to end the server.)
-- KIRO_FUZZ_SEED replays a run; the seed is printed when a check fails.
local H = require "helper"
local cjson = require "cjson"

local SEED = tonumber(os.getenv("KIRO_FUZZ_SEED")) or os.time()
local REQUESTS, GARBAGE = 2000, 3000

-- A value of a random JSON type, sometimes hostile.
local function any_value(depth)
  depth = depth or 0
  local k = math.random(depth > 2 and 9 or 12)
  if k == 1 then return cjson.null
  elseif k == 2 then return math.random(2) == 1
  elseif k == 3 then return math.random(-1000, 1000)
  elseif k == 4 then return ({ 9223372036854775807, -9223372036854775807, 2 ^ 63, 1e308, -0.5, 0 })[math.random(6)]
  elseif k == 5 then return ""
  elseif k == 6 then return ({ "x", ("x"):rep(5000) })[math.random(2)]
  elseif k == 7 then return "a\0b"
  elseif k == 8 then return "\u{1F600}\n\"\\"
  elseif k == 9 then return "relative/path"
  elseif k == 10 then
    local t = {}
    for i = 1, math.random(0, 3) do t[i] = any_value(depth + 1) end
    return t
  else
    local t = {}
    for _ = 1, math.random(0, 3) do t["k" .. math.random(5)] = any_value(depth + 1) end
    if next(t) == nil then return cjson.empty_array end
    return t
  end
end

-- Fields of a valid request, each with values that fit and values that do
-- not. Models and environments come from a small set: every distinct pair
-- is a pool with a warm daemon.
local MUTATIONS = {
  { "id" }, { "prompt" }, { "stream" }, { "timeout_ms" }, { "first_chunk_timeout_ms" }, { "stall_timeout_ms" },
  { "backend" }, { "backend", "cli" }, { "backend", "model" }, { "backend", "mode" },
  { "backend", "env" }, { "backend", "env", "KIRO_FUZZ" }, { "trust" }, { "trust", "kinds" }, { "trust", "titles" },
}
-- Whole environments: none, valid, and wrong in each way.
local ENVS = { cjson.null, cjson.empty_array, { "a" }, { A = 1 }, { ["1X"] = "v" }, { ["A=B"] = "v" },
               { KIRO_FUZZ = "1" }, "str", 5, { KIRO_FUZZ = true } }
local FITTING = {
  prompt = function() return "fuzz " .. math.random(1e6) end,
  stream = function() return math.random(2) == 1 end,
  timeout_ms = function() return math.random(1000, 20000) end,
  model = function() return ({ "m1", "m2" })[math.random(2)] end,
  mode = function() return ({ "auto", "daemon", "oneshot", "auto", "daemon" })[math.random(5)] end,
  trust = function() return ({ "all", { kinds = { "read" } }, { titles = { "^R" } } })[math.random(3)] end,
  kinds = function() return { "edit", "read" } end,
  titles = function() return { "%w+", "[" } end,
}

local function base_request(id, sim)
  return {
    op = "request", id = id, prompt = FITTING.prompt(), stream = FITTING.stream(),
    timeout_ms = 20000, first_chunk_timeout_ms = 15000, stall_timeout_ms = 15000,
    backend = { cli = sim, mode = math.random(20) == 1 and "oneshot" or "auto" },
  }
end

local function set_path(t, path, v)
  for i = 1, #path - 1 do
    if type(t[path[i]]) ~= "table" then t[path[i]] = {} end
    t = t[path[i]]
  end
  t[path[#path]] = v
end

-- One request: valid, or with one to three fields mutated.
local function gen_request(id, sim)
  local r = base_request(id, sim)
  if math.random(5) == 1 then return r end
  for _ = 1, math.random(3) do
    local path = MUTATIONS[math.random(#MUTATIONS)]
    local fit = FITTING[path[#path]]
    local v = (fit and math.random(3) == 1) and fit() or any_value()
    if path[#path] == "env" then v = ENVS[math.random(#ENVS)] end
    -- A confused id never collides with another request's.
    if path[1] == "id" and math.type(v) == "integer" then v = -id end
    set_path(r, path, v)
  end
  return r
end

-- A line that is never a request object.
local function gen_garbage()
  local k = math.random(8)
  if k == 1 then
    local b = {}
    for i = 1, math.random(1, 200) do
      local c = math.random(0, 255)
      b[i] = string.char(c == 10 and 32 or c)
    end
    return table.concat(b)
  elseif k == 2 then return ("["):rep(math.random(1, 3000))
  elseif k == 3 then return '{"op":"request","id":1,"prompt":"unterminated'
  elseif k == 4 then return cjson.encode(any_value())
  elseif k == 5 then return '{"op":' .. cjson.encode(any_value()) .. '}'
  elseif k == 6 then return ""
  elseif k == 7 then return "\xff\xfe\xc0\x80 not utf-8"
  elseif math.random(2) == 1 then return '{"op":"request","id":' .. ("9"):rep(400) .. "}"
  else return '{"op":"status"}'
  end
end

describe("server protocol fuzzer", function()
  after_each(H.check_leaks)

  it(("survives %d type-confused requests and %d garbage lines, answering every one (seed %d)")
    :format(REQUESTS, GARBAGE, SEED), function()
    local kiro = H.setup()
    math.randomseed(SEED)
    local env = H.sim_env()
    assert.are.equal(0, H.agent({ "-m", "warm" }, env).code)
    local pid = assert(H.status(env)).pid
    local conns = {}
    for i = 1, 4 do conns[i] = H.raw_conn(kiro, H.socket(env)) end
    -- What each connection was sent: requests by id, and lines that must
    -- each get one connection-level error (garbage, and status lines).
    local want = {}
    for i = 1, 4 do want[i] = { ids = {}, nreq = 0, errors = 0, status = 0 } end
    local nreq, ngarbage, id = 0, 0, 0
    while nreq < REQUESTS or ngarbage < GARBAGE do
      local i = math.random(4)
      local w = want[i]
      if nreq < REQUESTS and (ngarbage >= GARBAGE or math.random(5) <= 2) then
        id = id + 1
        local r = gen_request(id, H.sim)
        local ok, line = pcall(cjson.encode, r)
        if ok then
          nreq = nreq + 1
          w.nreq = w.nreq + 1
          if math.type(r.id) == "integer" then w.ids[r.id] = true end
          conns[i]:send(line .. "\n")
        end
      else
        ngarbage = ngarbage + 1
        local g = gen_garbage()
        local ok, v = pcall(cjson.decode, g)
        if ok and type(v) == "table" and v.op == "status" then w.status = w.status + 1
        else w.errors = w.errors + 1 end
        conns[i]:send(g .. "\n")
      end
    end
    -- Every line answered: one end (done or error) per request, one error
    -- or status per other line.
    local function tally(c)
      local t = { ended = {}, nended = 0, errors = 0, status = 0 }
      for _, m in ipairs(c.msgs) do
        if m.op == "error" then t.errors = t.errors + 1
        elseif m.op == "status" then t.status = t.status + 1
        elseif m.done or m.error then
          t.nended = t.nended + 1
          local mid = math.tointeger(m.id)
          if mid then t.ended[mid] = (t.ended[mid] or 0) + 1 end
        end
      end
      return t
    end
    H.wait_kiro(kiro, function()
      for i = 1, 4 do
        local t = tally(conns[i])
        if t.nended < want[i].nreq or t.errors + t.status < want[i].errors + want[i].status then
          return false
        end
      end
      return true
    end, "every line to be answered (seed " .. SEED .. ")")
    local outcomes = {}
    for i = 1, 4 do
      for _, m in ipairs(conns[i].msgs) do
        local k = m.done and "done" or m.error and m.error.code or m.op or "chunk"
        outcomes[k] = (outcomes[k] or 0) + 1
      end
    end
    -- The generator reached both sides of the door.
    assert.is_true(outcomes.done > 0 and outcomes.protocol > 0 and outcomes.error > 0, "seed " .. SEED)
    for i = 1, 4 do
      local t = tally(conns[i])
      assert.are.equal(want[i].nreq, t.nended, "seed " .. SEED)
      assert.are.equal(want[i].errors, t.errors, "seed " .. SEED)
      assert.are.equal(want[i].status, t.status, "seed " .. SEED)
      for rid in pairs(want[i].ids) do assert.are.equal(1, t.ended[rid], "id " .. rid .. ", seed " .. SEED) end
      assert.is_nil(conns[i].closed, "seed " .. SEED)
      conns[i]:close()
    end
    H.wait_kiro(kiro, function() return H.fd_count() <= H.fd_baseline end, "the connections to close")
    -- The same server, still serving.
    local s = assert(H.status(env))
    assert.are.equal(pid, s.pid)
    local r = H.agent({ "-m", "after" }, env)
    assert.are.equal("You said: after\n", r.out, r.err)
    assert.is_nil(H.server_log(env):find("internal error", 1, true), "seed " .. SEED)
  end)
end)
