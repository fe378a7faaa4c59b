-- The console (plugins/channels/console.lua): `kiro-rt bot --console`, and
-- `kiro-rt agent` on a terminal with no -m: a conversation line by line,
-- replies streamed, commands in turn, Ctrl-C stopping a reply and not the
-- console, the end of input ending it.
local H = require "helper"

-- `kiro-rt agent` on a terminal of its own (script(1) gives it a
-- pseudo-terminal), typed at by feed, a shell script with helpers that wait
-- for the screen: seen TEXT [N] (N lines show TEXT), prompts N (N prompts
-- shown). Each gives up after 30 s (the assertions then say what was
-- missing), and the end of the typing ends the agent. script runs `$SHELL
-- -c`: "exec" makes the agent that shell, else a waiting dash (CI's shell,
-- with no SHELL set) dies of a Ctrl-C itself. Returns its screen.
local function terminal(dir, env, name, feed)
  H.write_file(dir .. "/" .. name .. ".sh", [[
tick() { i=$((i+1)); [ $i -lt 600 ] || exit 1; sleep 0.05; }
seen() { i=0; until [ "$(grep -cF -- "$1" out)" -ge "${2:-1}" ]; do tick; done; }
prompts() { i=0; until [ "$(grep -o '> ' out | wc -l)" -ge "$1" ]; do tick; done; }
]] .. feed .. "\nexec sleep 30\n")
  local r = H.run({ "sh", "-c", ("cd %s && rm -f in out && mkfifo in && : >out && { sh %s.sh >in & feed=$!; "
    .. "script -qec %s /dev/null <in >out; rc=$?; kill $feed; cat out; exit $rc; }"):format(
    H.q(dir), name, H.q("exec " .. H.kiro_rt .. " agent")) }, env)
  assert.are.equal(0, r.code, r.err .. r.out)
  return (r.out:gsub("\r", ""))
end

describe("console", function()
  after_each(H.check_leaks)

  it("bot --console: each line a message, commands in turn, the history kept, the end of input ends it", function()
    local r = H.run({ H.kiro_rt, "bot", "--console" }, H.sim_env(),
      "hello there\n/model sim-fast\nsecond one\n\n/reset\n/model\nthird\n")
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("You said: hello there\nModel: sim-fast\n[sim-fast] You said: second one\nHistory cleared.\n"
      .. "Model: the default\nYou said: third\n", r.out)
    -- /stop right behind a message (typed ahead): that reply does not begin; the next one does
    r = H.run({ H.kiro_rt, "bot", "--console" }, H.sim_env(), "/stop\na b c d e f\n/stop\nnext\n")
    assert.are.same({ 0, "Nothing to stop.\n[stopped]\nYou said: next\n" }, { r.code, r.out })
  end)

  it("agent on a terminal: Ctrl-C stops the reply under way, the conversation goes on, Ctrl-D ends it", function()
    -- Each key is typed once the screen shows what it answers: Ctrl-C once
    -- the reply is under way (300 ms a word, 20 words), "after" once the
    -- reply says it was interrupted, Ctrl-D once "after" is answered.
    local long = {}
    for i = 1, 20 do long[i] = "w" .. i end
    local out = terminal(H.tmpdir(), H.sim_env { KIRO_SIM_CHUNK_DELAY_MS = "300", KIRO_USE_DAEMON = "true" }, "feed",
      ([[
printf '%%s\n' %q; seen 'You said: w1 w2'; printf '\003'
seen '[reply interrupted]'; printf 'after\n'; seen 'You said: after'; printf '\004']]):format(table.concat(long, " ")))
    assert.matches("You said: w1 w2", out, 1, true)
    assert.is_nil(out:find("You said: [^\n]*w20"), out) -- stopped before its end (the terminal echoes the line)
    assert.matches("[reply interrupted]", out, 1, true)
    assert.matches("You said: after\n", out, 1, true)
    assert.matches("> ", out, 1, true) -- a prompt: it is a terminal
  end)

  it("kiro-rt's own plugins come from beside it, never from the directory it runs in", function()
    -- (a directory that looks like a kiro-rt source tree: its plugins are not ours)
    local dir = H.tmpdir()
    assert(os.execute(("mkdir -p %s/lua/kiro %s/plugins/channels"):format(H.q(dir), H.q(dir))))
    H.write_file(dir .. "/lua/kiro/plugins.lua", "return {}\n")
    H.write_file(dir .. "/plugins/channels/console.lua", "os.exit(7)\n")
    local r = H.run({ "sh", "-c", ("cd %s && exec %s bot --console"):format(H.q(dir), H.q(H.kiro_rt)) }, H.sim_env(),
      "hi\n")
    assert.are.same({ 0, "You said: hi\n" }, { r.code, r.out })
  end)

  it("on a terminal: a line is edited, the arrow keys recall earlier ones (kept between runs), Ctrl-C at the "
    .. "prompt drops the line being typed", function()
    local dir = H.tmpdir()
    local env = H.sim_env()
    local function session(name, feed) return terminal(dir, env, name, feed) end
    local UP = [[\033[A]]
    local out = session("one", table.concat({
      "prompts 1; printf 'hello there\\n'; seen 'You said: hello there'",
      "prompts 2; printf 'abc'; seen 'abc'; printf '\\003'", -- (dropped: never sent)
      "prompts 3; printf '" .. UP .. "\\n'; seen 'You said: hello there' 2; printf '\\004'", -- the line before, again
    }, "\n"))
    local _, twice = out:gsub("You said: hello there\n", "")
    assert.are.equal(2, twice, out)
    assert.is_nil(out:find("You said: abc", 1, true), out)
    -- A new run: the arrow finds what the last one typed.
    out = session("two", "prompts 1; printf '" .. UP .. "\\n'; seen 'You said: hello there'; printf '\\004'")
    assert.matches("You said: hello there\n", out, 1, true)
    local history = env.XDG_STATE_HOME .. "/kiro-rt/console_history"
    assert.matches("hello", H.read_file(history), 1, true)
    assert.are.equal("600", H.run({ "stat", "-c", "%a", history }, {}).out:match("%d+"))
  end)

  it("with an ACP agent each chat is a session of its own: only the new text goes, the agent keeps the rest", function()
    local env, log = H.sim_env { KIRO_PROTOCOL = "acp" }
    local r = H.run({ H.kiro_rt, "bot", "--console" }, env, "one\ntwo\n/reset\nthree\n")
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("You said: one\nYou said: two\nHistory cleared.\nYou said: three\n", r.out)
    local turns = {}
    for _, e in ipairs(H.sim_events(log)) do
      if e.event == "request" then turns[#turns + 1] = e.turn end
    end
    assert.are.same({ 1, 2, 1 }, turns) -- /reset: a new session
  end)

  it("bot plugins: dice's own /roll, in turn with messages; assistant loads; an unknown one is named", function()
    local dir = H.tmpdir()
    H.write_config(dir .. "/config.lua", 'return { channels = { console = { bot = "dice" } } }\n')
    local r = H.run({ H.kiro_rt, "bot", "--console", "--config", dir .. "/config.lua" }, H.sim_env(),
      "/roll 3d6\nhi\n/roll x\n/help\n")
    assert.are.equal(0, r.code, r.err)
    local lines = {}
    for l in r.out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    local a, b, c, sum = lines[1]:match("^🎲 (%d) %+ (%d) %+ (%d) = (%d+)$")
    assert.is_not_nil(a, lines[1])
    assert.are.equal(tonumber(a) + tonumber(b) + tonumber(c), tonumber(sum))
    assert.are.same({ "You said: hi", "Roll what? Try /roll, /roll d20 or /roll 3d6." }, { lines[2], lines[3] })
    assert.matches("^I am a game master%..*Also: /roll$", lines[4])
    H.write_file(dir .. "/config.lua", 'return { channels = { console = { bot = "assistant" } } }\n')
    r = H.run({ H.kiro_rt, "bot", "--console", "--config", dir .. "/config.lua" }, H.sim_env(), "hello\n")
    assert.are.same({ 0, "You said: hello\n" }, { r.code, r.out })
    H.write_file(dir .. "/config.lua", 'return { channels = { console = { bot = "nope" } } }\n')
    r = H.run({ H.kiro_rt, "bot", "--console", "--config", dir .. "/config.lua" }, H.sim_env(), "hello\n")
    assert.are.equal(2, r.code)
    assert.matches('channels.console.bot: no bot named "nope"', r.err, 1, true)
  end)
end)
