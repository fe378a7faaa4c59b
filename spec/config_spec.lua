-- The configuration file (SPEC 5.2): found (--config, $KIRO_CONFIG, the
-- user's XDG one), checked whole with file, line and key in every error,
-- refused when others can write it, and used by run, serve and the
-- in-process agent; `kiro-rt config check` prints what it gives.
local H = require "helper"

local function file(text, mode)
  local path = H.tmpdir() .. "/config.lua"
  H.write_file(path, text)
  assert(os.execute(("chmod %s %s"):format(mode or "600", H.q(path))))
  return path
end

local function check(path, env)
  return H.run({ H.kiro_rt, "config", "check", path }, env or H.sim_env())
end

describe("configuration file", function()
  after_each(H.check_leaks)

  it("config check prints what a file gives, secrets masked; the seed's keys load", function()
    local r = check(file([[
return {
  default_provider = "kiro",
  default_model = "kiro-production-model",
  pool_max = 3,
  env = { API_TOKEN = "s3cret", REGION = "eu" },
  channels = { telegram = { stream_mode = true, draft_update_interval_ms = 500 } },
  server = { idle_ms = 60000 },
}
]]))
    assert.are.equal(0, r.code, r.err)
    local got = assert(load(r.out:gsub("^%-%-[^\n]*\n", "")))()
    assert.are.equal("kiro-production-model", got.options.model)
    assert.are.equal(3, got.options.pool_max)
    assert.are.equal(1, got.options.pool_min) -- the defaults too: the configuration in force
    assert.are.same({ API_TOKEN = "********", REGION = "eu" }, got.options.env)
    assert.is_nil(r.out:find("s3cret", 1, true))
    assert.are.same({ telegram = { stream_mode = "partial", draft_update_interval_ms = 500 } }, got.channels)
    assert.are.same({ idle_ms = 60000 }, got.server)
  end)

  it("a broken file is an error naming the file, the line and the key; nothing of it is used", function()
    local cases = {
      { "return {\n  pool_max = \"4\",\n}\n", ':2: pool_max: must be an integer from 1 to 1024, got "4"$' },
      { "return {\n  pool_max = 3,\n  bogus = 1,\n}\n", ":3: bogus: unknown option$" },
      { "return {\n  defualt_model = \"m\",\n}\n",
        ":2: defualt_model: unknown option %(did you mean 'default_model'%?%)$" },
      { "return {\n  channels = { console = { sytem = \"x\" } },\n}\n",
        ":2: channels.console.sytem: unknown setting %(did you mean 'system'%?%)$" },
      { "return {\n  server = { idle = 5 },\n}\n", ":2: server.idle: unknown setting %(did you mean 'idle_ms'%?%)$" },
      { "return { pool_max = 3\n", ":2: '}' expected %(to close '{' at line 1%) near <eof>$" },
      { "local x = nil\nreturn x.y\n", ":2: attempt to index a nil value %(local 'x'%)$" },
      { "return 42\n", ": must return a table of settings %(it returned number%)$" },
      { "return {\n  channels = { telegram = { stream_mode = \"fast\" } },\n}\n",
        ':2: channels.telegram.stream_mode: expected off, partial or draft, got "fast"$' },
      { "return {\n  channels = { telegram = { draft_update_interval_ms = 100 } },\n}\n",
        ':2: channels.telegram.draft_update_interval_ms: expected an integer >= 250, got "100"$' },
      { "return {\n  server = {\n    idle_ms = -5,\n  },\n}\n",
        ':3: server.idle_ms: expected an integer >= 0, got "%-5"$' },
      { "return { policies = { \"nope\" } }\n", ':1: policies: policies%[1%]: no policy named "nope" %(looked for ' },
      { "return {\n  pool_max = 1,\n  policies = { { route = 1 } },\n}\n",
        ":3: policies: policies%[1%] %(policy1%): route must be a function$" },
      { "return {\n  templates = { bot = { sytem = \"x\" } },\n}\n",
        ":2: templates.bot.sytem: unknown setting" },
      { "return {\n  pool_max = 2,\n  backends = {\n    fast = { cli_path = \"/bin/x\", pool_max = \"4\" },\n  },\n}\n",
        ':4: backends.fast.pool_max: expected an integer from 1 to 1024, got "4"$' },
      { "return {\n  backends = {\n    fast = { cli_path = \"/bin/x\", pool_maks = 3 },\n  },\n}\n",
        ":3: backends.fast.pool_maks: unknown setting %(did you mean 'pool_max'%?%)$" },
      { "return {\n  backends = {\n    fast = { cli_path = \"/bin/x\", cache = 1 },\n  },\n}\n",
        ":3: backends.fast.cache: expected a boolean, got number$" },
      { "return { default_backend = \"nope\" }\n", ':1: default_backend: no backend is named "nope"$' },
      { "return { trust = { kinds = { \"nope\" } } }\n", ':1: trust.kinds: "nope" is not an ACP tool kind' },
    }
    for _, c in ipairs(cases) do
      local path = file(c[1])
      local r = check(path)
      assert.are.equal(1, r.code, c[1])
      assert.matches("^kiro%-rt: config: " .. path:gsub("%p", "%%%0") .. c[2], r.err:gsub("\n$", ""))
    end
    -- A plugin that raises as it loads: its own file and line too.
    local path = file("return {\n  policies = { { \"boom\", level = 3 } },\n}\n")
    local dir = path:match("^(.*)/")
    assert(os.execute("mkdir " .. H.q(dir .. "/policies")))
    H.write_file(dir .. "/policies/boom.lua", "return function(o)\n  error('no level ' .. o.level)\nend\n")
    local r = check(path)
    assert.are.equal(1, r.code)
    local plugin = dir:gsub("%p", "%%%0") .. "/policies/boom.lua"
    assert.matches(":2: policies: policies%[1%] %(boom%): " .. plugin .. ":2: no level 3", r.err)
    -- Others may write it: refused, as ssh refuses such a file.
    path = file("return { pool_max = 3 }\n", "666")
    r = check(path)
    assert.are.equal(1, r.code)
    assert.matches("refused: others can write it %(mode 666; chmod go%-w ", r.err)
    -- run and serve refuse to start on it, with the same message.
    r = H.run({ H.kiro_rt, "run", "--config", path, H.source .. "/spec/hosts/log_sink.lua" }, H.sim_env())
    assert.are.equal(2, r.code)
    assert.matches("config: .*refused: others can write it", r.err)
    r = H.run({ H.kiro_rt, "serve", "--config", path }, H.sim_env())
    assert.are.equal(2, r.code)
    assert.matches("config: .*refused: others can write it", r.err)
  end)

  it("run, serve and the in-process agent use it: --config, else $KIRO_CONFIG, else the user's", function()
    local script = H.tmpdir() .. "/show.lua"
    H.write_file(script, 'local kiro = require "kiro"\nprint(kiro.option("pool_max"), kiro.chat("hi"))\n')
    local named = file("return { default_model = \"sim-smart\", pool_max = 3 }\n")
    local env = H.sim_env()
    local r = H.run({ H.kiro_rt, "run", "--config", named, script }, env)
    assert.are.equal("3\t[sim-smart] You said: hi\n", r.out, r.err)
    r = H.run({ H.kiro_rt, "run", "--config=" .. named, script }, env)
    assert.are.equal("3\t[sim-smart] You said: hi\n", r.out, r.err)
    env = H.sim_env { KIRO_CONFIG = file("return { pool_max = 4 }\n") }
    r = H.run({ H.kiro_rt, "run", script }, env)
    assert.are.equal("4\tYou said: hi\n", r.out, r.err)
    local xdg = H.tmpdir()
    assert(os.execute("mkdir -p " .. H.q(xdg .. "/kiro-rt")))
    H.write_file(xdg .. "/kiro-rt/config.lua", "return { pool_max = 5 }\n")
    env = H.sim_env { XDG_CONFIG_HOME = xdg }
    r = H.run({ H.kiro_rt, "run", script }, env)
    assert.are.equal("5\tYou said: hi\n", r.out, r.err)
    r = H.agent({ "-m", "hi", "--no-server" }, H.sim_env { KIRO_CONFIG = named })
    assert.are.equal("[sim-smart] You said: hi\n", r.out, r.err)
    r = H.agent({ "-m", "hi", "--config", named }, H.sim_env())
    assert.are.equal(2, r.code)
    assert.matches("%-%-config is for an agent served in this process %(%-%-no%-server%)", r.err)
    -- serve: its options and its `server` settings, under the flags given.
    env = H.sim_env { KIRO_CONFIG = file("return { default_model = \"sim-fast\", server = { idle_ms = 90000 } }\n") }
    local _, wait_serve = H.spawn_bg({ H.kiro_rt, "serve", "--stop-grace-ms", "100" }, env)
    assert(H.wait_for(function() return H.status(env) end, 5000), "the server did not start")
    local st = H.status(env)
    assert.are.equal(90000, st.idle_ms)
    r = H.agent({ "-m", "through the server" }, env)
    assert.are.equal("[sim-fast] You said: through the server\n", r.out, r.err)
    assert.are.equal(0, H.run({ H.kiro_rt, "stop" }, env).code)
    assert.are.equal(0, (wait_serve()))
  end)

  it("SIGHUP reloads serve's and run's file; one that does not check changes nothing, and says so", function()
    local path = file("return { default_model = \"sim-fast\" }\n")
    local env = H.sim_env { KIRO_CONFIG = path, KIRO_SIM_CHUNK_DELAY_MS = "100" }
    local pid, wait_serve, sdir = H.spawn_bg({ H.kiro_rt, "serve", "--stop-grace-ms", "100" }, env)
    assert(H.wait_for(function() return H.status(env) end, 5000), "the server did not start")
    assert.are.equal("[sim-fast] You said: one\n", H.agent({ "-m", "one" }, env).out)
    -- A request under way when the file changes finishes as it began.
    local _, wait_slow = H.spawn_bg({ H.kiro_rt, "agent", "-m", "a slow one two three four five" }, env)
    H.write_file(path, "return { default_model = \"sim-smart\" }\n")
    assert(os.execute("kill -HUP " .. pid))
    -- (the file's change and the signal each reload it)
    assert(H.wait_for(function() return H.status(env).config.reloads >= 1 end, 5000), "no reload")
    local code, out = wait_slow()
    assert.are.equal(0, code)
    assert.matches("You said: a slow one two three four five\n$", out)
    assert.are.equal("[sim-smart] You said: two\n", H.agent({ "-m", "two" }, env).out)
    -- Broken: the configuration in force stays; status tells file, line and key.
    H.write_file(path, "return {\n  default_model = \"sim-fast\",\n  pool_max = 0,\n}\n")
    assert(os.execute("kill -HUP " .. pid))
    assert(H.wait_for(function() return H.status(env).config.reload_errors >= 1 end, 5000), "no failed reload")
    local st = H.status(env)
    assert.are.equal(path, st.config.path)
    assert.matches(":3: pool_max: must be an integer from 1 to 1024, got \"0\"$", st.config.last_error)
    assert.are.equal("[sim-smart] You said: three\n", H.agent({ "-m", "three" }, env).out)
    assert.matches("reload failed, the configuration in force stays", H.read_file(sdir .. "/err"))
    -- kiro-rt reload: the same, with the answer on the command line.
    local r = H.run({ H.kiro_rt, "reload" }, env)
    assert.are.equal(1, r.code)
    assert.matches("^kiro%-rt: reload: .*:3: pool_max: must be an integer from 1 to 1024", r.err)
    H.write_file(path, "return { default_model = \"sim-fast\" }\n")
    r = H.run({ H.kiro_rt, "reload" }, env)
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("kiro-rt: reloaded " .. path .. "\n", r.out)
    assert.are.equal("[sim-fast] You said: four\n", H.agent({ "-m", "four" }, env).out)
    assert.is_nil(H.status(env).config.last_error)
    assert.are.equal(0, H.run({ H.kiro_rt, "stop" }, env).code)
    assert.are.equal(0, (wait_serve()))
    r = H.run({ H.kiro_rt, "reload" }, env)
    assert.are.same({ 1, "kiro-rt: reload: no server running\n" }, { r.code, r.err })

    -- run: a script lives through SIGHUP, and sees the file's new options.
    local script = H.tmpdir() .. "/hup.lua"
    local flag = H.tmpdir() .. "/hupped"
    H.write_file(script, ([[
      local kiro = require "kiro"
      print(kiro.option("pool_max"))
      io.stdout:flush()
      while not io.open(%q) do kiro.sleep(10) end
      kiro.sleep(50)
      print(kiro.option("pool_max"))
    ]]):format(flag))
    H.write_file(path, "return { pool_max = 3 }\n")
    local rpid, wait_run, dir = H.spawn_bg({ H.kiro_rt, "run", script }, env)
    assert(H.wait_for(function() return (H.read_file(dir .. "/out") or ""):find("3") end, 5000))
    H.write_file(path, "return { pool_max = 7 }\n")
    assert(os.execute("kill -HUP " .. rpid))
    H.write_file(flag, "")
    local rcode, rout = wait_run()
    assert.are.equal(0, rcode)
    assert.are.equal("3\n7\n", rout)
  end)

  it("named backends: opts.backend, default_backend, kiro-rt agent --backend (the server's, or in-process)", function()
    local path = file(([[
return {
  backends = {
    fast = { cli_path = %q, model = "sim-fast" },
    agent = { cli_path = %q, protocol = "acp", model = "sim-smart", acp_model = "session" },
  },
}
]]):format(H.sim, H.sim))
    local script = H.tmpdir() .. "/named.lua"
    H.write_file(script, [[
      local kiro = require "kiro"
      print(kiro.chat("a", { backend = "fast" }))
      print(kiro.chat("b", { backend = "agent" }))
      print(kiro.chat("c", { backend = "fast", model = "m3" }))
      print(select(2, pcall(function() local r = kiro.chat("d", { backend = "nope" }); return r end)))
      print(kiro.chat("e")) -- no default_backend: KIRO_CLI_PATH's
      kiro.configure { default_backend = "fast" }
      print(kiro.chat("f"))
      local protocols = {}
      for _, p in ipairs(kiro.stats().pools) do protocols[#protocols + 1] = p.protocol end
      table.sort(protocols)
      print(table.concat(protocols, " "))
    ]])
    local env = H.sim_env()
    local r = H.run({ H.kiro_rt, "run", "--config", path, script }, env)
    assert.are.equal(0, r.code, r.err)
    assert.are.equal(table.concat({
      "[sim-fast] You said: a", "[sim-smart] You said: b", "[m3] You said: c",
      script .. ':5: kiro.chat: no backend is named "nope"', "You said: e", "[sim-fast] You said: f",
      "acp jsonl jsonl jsonl", "" }, "\n"), r.out)
    -- The agent: through the server, a backend of the server's; in-process, ours.
    env = H.sim_env { KIRO_CONFIG = path }
    local _, wait_serve = H.spawn_bg({ H.kiro_rt, "serve", "--stop-grace-ms", "100" }, env)
    assert(H.wait_for(function() return H.status(env) end, 5000), "the server did not start")
    r = H.agent({ "-m", "hi", "--backend", "agent" }, { XDG_RUNTIME_DIR = env.XDG_RUNTIME_DIR, KIRO_CLI_PATH = false })
    assert.are.equal("[sim-smart] You said: hi\n", r.out, r.err)
    local named = {} -- status names a configured backend's pool
    for _, p in ipairs(H.status(env).pools) do named[#named + 1] = p.name end
    assert.are.same({ "agent" }, named)
    assert.matches("\npool     agent: ", H.run({ H.kiro_rt, "status" }, env).out, 1, true)
    -- No backend of our own (no KIRO_CLI_PATH, no --backend): the server's default; here it has
    -- none but its KIRO_CLI_PATH, kiro-sim. Served in C (-m) and in Lua (stdin).
    local bare = { XDG_RUNTIME_DIR = env.XDG_RUNTIME_DIR, KIRO_CLI_PATH = false, PATH = "/usr/bin:/bin" }
    r = H.agent({ "-m", "bare" }, bare)
    assert.are.equal("You said: bare\n", r.out, r.err)
    r = H.agent({}, bare, "from stdin")
    assert.are.equal("You said: from stdin\n", r.out, r.err)
    r = H.agent({ "-m", "hi", "--backend", "nope" }, env)
    assert.are.equal(2, r.code)
    assert.are.equal(('kiro-rt: config: the server has no backend named "nope" (its configuration: %s)\n')
      :format(path), r.err)
    r = H.agent({ "-m", "hi", "--backend", "nope", "--no-server" }, env) -- (one line, no traceback)
    assert.are.same({ 2, ('kiro-rt: agent: no backend is named "nope" in %s'):format(path) },
      { r.code, r.err:match("^[^\n]*") })
    r = H.agent({ "-m", "hi", "--backend", "fast", "--no-server" }, env)
    assert.are.equal("[sim-fast] You said: hi\n", r.out, r.err)
    assert.are.equal(0, H.run({ H.kiro_rt, "stop" }, env).code)
    assert.are.equal(0, (wait_serve()))
    -- A server whose configuration names a default backend serves it to
    -- agents with none of their own.
    env = H.sim_env { KIRO_CONFIG = file(("return { backends = { fast = { cli_path = %q, model = \"sim-fast\" } }, "
      .. "default_backend = \"fast\" }\n"):format(H.sim)), KIRO_CLI_PATH = false }
    _, wait_serve = H.spawn_bg({ H.kiro_rt, "serve", "--stop-grace-ms", "100" }, env)
    assert(H.wait_for(function() return H.status(env) end, 5000), "the server did not start")
    bare.XDG_RUNTIME_DIR = env.XDG_RUNTIME_DIR
    r = H.agent({ "-m", "bare" }, bare)
    assert.are.equal("[sim-fast] You said: bare\n", r.out, r.err)
    assert.are.equal(0, H.run({ H.kiro_rt, "stop" }, env).code)
    assert.are.equal(0, (wait_serve()))
  end)

  it("serve reads its file again when it changes, written in place or replaced", function()
    local path = file("return { default_model = \"sim-fast\" }\n")
    local env = H.sim_env { KIRO_CONFIG = path }
    local _, wait_serve = H.spawn_bg({ H.kiro_rt, "serve", "--stop-grace-ms", "100" }, env)
    assert(H.wait_for(function() return H.status(env) end, 5000), "the server did not start")
    assert.are.equal("[sim-fast] You said: a\n", H.agent({ "-m", "a" }, env).out)
    H.write_file(path, "return { default_model = \"sim-smart\" }\n")
    assert(H.wait_for(function() return H.status(env).config.reloads >= 1 end, 5000), "no reload on a write")
    assert.are.equal("[sim-smart] You said: b\n", H.agent({ "-m", "b" }, env).out)
    -- An editor's way: a new file renamed over the old one.
    local before = H.status(env).config.reloads
    H.write_file(path .. ".new", "return { default_model = \"sim-fast\" }\n")
    assert(os.execute(("chmod 600 %s && mv %s %s"):format(H.q(path .. ".new"), H.q(path .. ".new"), H.q(path))))
    assert(H.wait_for(function() return H.status(env).config.reloads > before end, 5000), "no reload on a rename")
    assert.are.equal("[sim-fast] You said: c\n", H.agent({ "-m", "c" }, env).out)
    assert.are.equal(0, H.run({ H.kiro_rt, "stop" }, env).code)
    assert.are.equal(0, (wait_serve()))
  end)

  it("templates by name over the wire and in-process: agent --template NAME --var K=V; a plugin's too", function()
    -- (labels other than User/Assistant: kiro-sim echoes the whole prompt)
    local path = file([[
return {
  templates = { bot = { system = "You are {{user}}'s bot", labels = { user = "Q", assistant = "A" } } },
  policies = { "brief" },
}
]])
    local dir = path:match("^(.*)/")
    assert(os.execute("mkdir " .. H.q(dir .. "/policies")))
    H.write_file(dir .. "/policies/brief.lua",
      'return { templates = { brief = { system = "Be brief.", labels = { user = "Q", assistant = "A" } } } }\n')
    local want = "You said: System: You are ann's bot\n\nQ: hi\n\nA: \n"
    local r = H.agent({ "--no-server", "--config", path, "--template", "bot", "--var", "user=ann", "-m", "hi" },
      H.sim_env())
    assert.are.equal(want, r.out, r.err)
    r = H.agent({ "--no-server", "--config", path, "--template", "bot", "-m", "hi" }, H.sim_env())
    assert.are.equal(2, r.code)
    assert.matches("agent: template bot: no value for {{user}}", r.err)
    local env = H.sim_env { KIRO_CONFIG = path }
    local _, wait_serve = H.spawn_bg({ H.kiro_rt, "serve", "--stop-grace-ms", "100" }, env)
    assert(H.wait_for(function() return H.status(env) end, 5000), "the server did not start")
    r = H.agent({ "--template", "bot", "--var", "user=ann", "-m", "hi" }, env)
    assert.are.equal(want, r.out, r.err)
    r = H.agent({ "--template", "brief", "-m", "hi" }, env)
    assert.are.equal("You said: System: Be brief.\n\nQ: hi\n\nA: \n", r.out, r.err)
    r = H.agent({ "--template", "bot", "-m", "hi" }, env)
    assert.are.equal(2, r.code)
    assert.matches("config: template bot: no value for {{user}} (give it in opts.vars, or --var user=VALUE)", r.err,
      1, true)
    r = H.agent({ "--template", "nope", "-m", "hi" }, env)
    assert.are.same({ 2, 'kiro-rt: config: the server has no template named "nope" (its configuration: ' .. path
      .. ')\n' }, { r.code, r.err })
    assert.are.equal(0, H.run({ H.kiro_rt, "stop" }, env).code)
    assert.are.equal(0, (wait_serve()))
  end)
end)
