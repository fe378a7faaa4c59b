-- Hot reload under load (SPEC 5.4): the server swaps its configuration
-- while requests are in flight; each finishes under the configuration it
-- started with, none is lost or answered twice, unchanged backends keep
-- their daemons, changed and removed ones go once their requests end, and
-- a file that does not check leaves the one in force serving.
local H = require "helper"
local cjson = require "cjson"

-- A directory with a policy plugin that tags each prompt with its `tag`,
-- and the path of a configuration file beside it.
local function setup_dir()
  local dir = H.tmpdir()
  assert(os.execute("mkdir " .. H.q(dir .. "/policies")))
  H.write_file(dir .. "/policies/tag.lua", [[
return function(o)
  return { route = function(req) req.prompt = "[" .. o.tag .. "] " .. req.prompt end }
end
]])
  return dir, dir .. "/config.lua"
end

-- A configuration whose policy tags prompts with `tag`; `sim` is the
-- backend every request goes to (its settings: extra, a Lua table body).
local function config_text(tag, extra)
  return ([[
return {
  backends = { sim = { cli_path = %q, pool_min = 2, pool_max = 2, pipeline_depth = 4, queue_max = 5000%s } },
  default_backend = "sim",
  policies = { { "tag", tag = %q } },
}
]]):format(H.sim, extra or "", tag)
end

local write_config = H.write_config

local function serve(path, knobs)
  local extra = { KIRO_CONFIG = path }
  for k, v in pairs(knobs or {}) do extra[k] = v end
  local env = H.sim_env(extra)
  local pid, wait, sdir = H.spawn_bg({ H.kiro_rt, "serve", "--stop-grace-ms", "10000" }, env)
  assert(H.wait_for(function() return H.status(env) end, 5000), "the server did not start")
  return env, pid, wait, sdir
end

-- The daemons' pids of each pool, sorted, by the pool's backend tag.
local function daemon_pids(env)
  local out = {}
  for _, p in ipairs(H.status(env).pools) do
    local pids = {}
    for _, d in ipairs(p.daemons) do pids[#pids + 1] = d.pid end
    table.sort(pids)
    out[#out + 1] = table.concat(pids, ",")
  end
  table.sort(out)
  return table.concat(out, " ")
end

describe("hot reload", function()
  after_each(H.check_leaks)

  it("1,000 requests across 20 reloads: none lost, none answered twice, each under the policy it began with",
    function()
      local kiro = H.setup()
      local dir, path = setup_dir()
      local gate = dir .. "/gate"
      write_config(path, config_text("T0"))
      local env, pid, wait_serve = serve(path, { KIRO_SIM_GATE = gate })
      -- The warm daemons, before any reload.
      H.wait_kiro(kiro, function() return #H.status(env).pools == 1 and H.status(env).pools[1].live == 2 end,
        "two warm daemons")
      -- (kiro-rt agent is served by the server's default backend)
      local before = daemon_pids(env)
      local conns = {}
      for i = 1, 4 do conns[i] = H.raw_conn(kiro, H.socket(env)) end
      local tag_of, id, reloads = {}, 0, 0
      for round = 1, 20 do
        -- Alternate two policies; the change is seen (the file is watched)
        -- and, every fifth round, SIGHUP and kiro-rt reload come on top.
        local tag = round % 2 == 1 and "A" or "B"
        write_config(path, config_text(tag))
        reloads = reloads + 1
        H.wait_kiro(kiro, function() return H.status(env).config.reloads >= reloads end, "reload " .. round)
        if round % 5 == 0 then
          assert(os.execute("kill -HUP " .. pid))
          reloads = reloads + 1
          H.wait_kiro(kiro, function() return H.status(env).config.reloads >= reloads end, "SIGHUP " .. round)
          local r = H.run({ H.kiro_rt, "reload" }, env)
          assert.are.equal(0, r.code, r.err)
          reloads = reloads + 1
        end
        for _ = 1, 50 do
          id = id + 1
          tag_of[id] = tag
          conns[id % 4 + 1]:send(cjson.encode {
            op = "request", id = id, prompt = "r" .. id, stream = true, backend = {} } .. "\n")
        end
        -- Every request of the round has reached the server before the next reload.
        H.wait_kiro(kiro, function() return H.status(env).in_flight >= id end, "round " .. round .. " in flight")
      end
      assert.are.equal(1000, H.status(env).in_flight)
      H.write_file(gate, "")
      -- Every request ends once, with the reply its own policy made.
      local replies, ends = {}, {}
      H.wait_kiro(kiro, function()
        local n = 0
        for _, c in ipairs(conns) do
          for _, m in ipairs(c.msgs) do
            if m.done or m.error then n = n + 1 end
          end
        end
        return n >= 1000
      end, "1,000 replies")
      for _, c in ipairs(conns) do
        for _, m in ipairs(c.msgs) do
          if m.chunk then replies[m.id] = (replies[m.id] or "") .. m.chunk end
          if m.done or m.error then
            assert.is_nil(m.error, m.error and m.error.message)
            ends[m.id] = (ends[m.id] or 0) + 1
          end
        end
      end
      for i = 1, 1000 do
        assert.are.equal(1, ends[i], "request " .. i .. " ended " .. tostring(ends[i]) .. " times")
        assert.are.equal(("You said: [%s] r%d"):format(tag_of[i], i), replies[i])
      end
      -- The backend did not change: its daemons are the ones it had.
      assert.are.equal(before, daemon_pids(env))
      assert.is_true(H.status(env).config.reloads >= reloads)
      for _, c in ipairs(conns) do c:close() end
      assert.are.equal(0, H.run({ H.kiro_rt, "stop" }, env).code)
      assert.are.equal(0, (wait_serve()))
    end)

  it("a changed backend's daemons are replaced; a removed one's stop once its requests end", function()
    local kiro = H.setup()
    local dir, path = setup_dir()
    local gate = dir .. "/gate"
    write_config(path, config_text("A"))
    local env, _, wait_serve = serve(path, { KIRO_SIM_GATE = gate })
    H.wait_kiro(kiro, function() return H.status(env).pools[1].live == 2 end, "two warm daemons")
    local old = daemon_pids(env)
    -- One request under way on the old daemons, then the backend changes.
    local c = H.raw_conn(kiro, H.socket(env))
    c:send(cjson.encode { op = "request", id = 1, prompt = "held", stream = true, backend = {} } .. "\n")
    H.wait_kiro(kiro, function() return #c.msgs >= 1 end, "the first chunk")
    write_config(path, config_text("A", ", pipeline_depth = 2"))
    -- (--config names the server meant: another file's is refused, its own reloads)
    local other = dir .. "/other.lua"
    write_config(other, config_text("B"))
    for _, cmd in ipairs { "reload", "status", "stop" } do
      local r = H.run({ H.kiro_rt, cmd, "--config", other }, env)
      assert.are.same({ 1, ("kiro-rt: %s: the running server's configuration is %s, not %s"):format(cmd,
        H.realpath(path), H.realpath(other)) }, { r.code, (r.err:match("^[^(]*"):gsub("%s+$", "")) })
    end
    local r = H.run({ H.kiro_rt, "reload", "--config", path }, env)
    assert.are.equal(0, r.code, r.err)
    -- New daemons for the new definition; the old ones still serve what they hold.
    H.wait_kiro(kiro, function() return #H.status(env).pools == 2 end, "the new pool")
    c:send(cjson.encode { op = "request", id = 2, prompt = "new", stream = false, backend = {} } .. "\n")
    H.write_file(gate, "")
    H.wait_kiro(kiro, function()
      local n = 0
      for _, m in ipairs(c.msgs) do if m.done then n = n + 1 end end
      return n == 2
    end, "both replies")
    -- The old pool goes once its request ended: only the new daemons are left.
    H.wait_kiro(kiro, function() return #H.status(env).pools == 1 end, "the old pool to go")
    local new = daemon_pids(env)
    for p in old:gmatch("%d+") do
      assert.is_nil(new:find(p, 1, true))
      H.wait_kiro(kiro, function() return not H.alive(tonumber(p)) end, "old daemon " .. p .. " to exit")
    end
    c:close()
    assert.are.equal(0, H.run({ H.kiro_rt, "stop", "--config", path }, env).code)
    assert.are.equal(0, (wait_serve()))
  end)

  it("each broken file leaves the configuration in force serving, and says where through reload and status",
    function()
      local dir, path = setup_dir()
      write_config(path, config_text("A"))
      local env, _, wait_serve, sdir = serve(path)
      assert.are.equal("You said: [A] hi\n", H.agent({ "-m", "hi" }, env).out)
      H.write_file(dir .. "/policies/raises.lua",
        "local o = ...\nreturn function(opts)\n  error('cannot start: ' .. opts.why)\nend\n")
      local broken = {
        { "return {\n  pool_max = 2,\n  policies = {\n", ":4: unexpected symbol near <eof>" },
        { "return {\n  pool_max = 2,\n  poool_max = 3,\n}\n", ":3: poool_max: unknown option" },
        { "return {\n  pool_max = \"2\",\n}\n", ':2: pool_max: must be an integer from 1 to 1024, got "2"' },
        { "return {\n  pool_max = 2,\n  policies = { { \"raises\", why = \"no key\" } },\n}\n",
          ":3: policies: policies%[1%] %(raises%): .*/policies/raises.lua:3: cannot start: no key" },
        { config_text("B"), "refused: others can write it", "666" },
      }
      for i, b in ipairs(broken) do
        H.write_file(path, b[1])
        assert(os.execute(("chmod %s %s"):format(b[3] or "600", H.q(path))))
        local r = H.run({ H.kiro_rt, "reload" }, env)
        assert.are.equal(1, r.code, b[1])
        assert.matches("^kiro%-rt: reload: " .. path:gsub("%p", "%%%0") .. ".*" .. b[2], r.err)
        local st = H.status(env)
        assert.matches(b[2], st.config.last_error)
        assert.is_true(st.config.reload_errors >= i)
        assert.are.equal("You said: [A] still " .. i .. "\n", H.agent({ "-m", "still " .. i }, env).out)
      end
      write_config(path, config_text("B"))
      assert.are.equal(0, H.run({ H.kiro_rt, "reload" }, env).code)
      assert.are.equal("You said: [B] fixed\n", H.agent({ "-m", "fixed" }, env).out)
      assert.is_nil(H.status(env).config.last_error)
      -- `server` settings are the server's start's: a change says so.
      write_config(path, (config_text("B"):gsub("^return {", "return {\n  server = { idle_ms = 123456 },")))
      assert.are.equal(0, H.run({ H.kiro_rt, "reload" }, env).code)
      assert.matches("`server` settings changed; they take effect when the server starts again",
        H.read_file(sdir .. "/err"))
      assert.are.equal(0, H.run({ H.kiro_rt, "stop" }, env).code)
      assert.are.equal(0, (wait_serve()))
    end)

  it("run --watch reloads when the file or a plugin it loaded changes; SIGHUP reloads run too", function()
    local dir, path = setup_dir()
    write_config(path, config_text("A"))
    local flag = dir .. "/next"
    local script = dir .. "/watch.lua"
    H.write_file(script, ([[
      local kiro = require "kiro"
      local function step(n)
        while not io.open(%q .. n) do kiro.sleep(10) end
        print(kiro.chat("step " .. n))
        io.stdout:flush()
      end
      for n = 1, 3 do step(n) end
    ]]):format(flag))
    local env = H.sim_env { KIRO_LOG = "info" }
    local pid, wait_run, rdir = H.spawn_bg({ H.kiro_rt, "run", "--config", path, "--watch", script }, env)
    local function reloads()
      local _, n = (H.read_file(rdir .. "/err") or ""):gsub("reloaded ", "")
      return n
    end
    H.write_file(flag .. 1, "")
    assert(H.wait_for(function() return (H.read_file(rdir .. "/out") or ""):find("step 1") end, 5000))
    -- The file changes: its new policy tags the next reply.
    write_config(path, config_text("B"))
    assert(H.wait_for(function() return reloads() >= 1 end, 5000), "no reload on the file's change")
    H.write_file(flag .. 2, "")
    assert(H.wait_for(function() return (H.read_file(rdir .. "/out") or ""):find("step 2") end, 5000))
    -- A plugin it loaded changes: read again.
    local n = reloads()
    H.write_file(dir .. "/policies/tag.lua", [[
return function(o)
  return { route = function(req) req.prompt = "<" .. o.tag .. "> " .. req.prompt end }
end
]])
    assert(H.wait_for(function() return reloads() > n end, 5000), "no reload on the plugin's change")
    n = reloads()
    assert(os.execute("kill -HUP " .. pid)) -- and SIGHUP does not end it
    assert(H.wait_for(function() return reloads() > n end, 5000), "no reload on SIGHUP")
    H.write_file(flag .. 3, "")
    local code, out = wait_run()
    assert.are.equal(0, code)
    assert.are.equal("You said: [A] step 1\nYou said: [B] step 2\nYou said: <B> step 3\n", out)
  end)
end)
